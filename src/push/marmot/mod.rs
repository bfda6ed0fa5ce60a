//! Marmot push (marmot-push-v1): apps of the Marmot protocol (MLS group chat over Nostr) wake each other's phones by
//! gift-wrapping a trigger to our push key, its content the members' device tokens, each encrypted to that key.
//! Opening a trigger and checking its shape (`trigger`), then each token on its own (`token`); nothing of either is
//! kept beyond the wake it is sent.

pub(crate) mod token;
pub(crate) mod trigger;

/// The sender's side, written from the spec for the integration tests and shared with these unit tests, so that it
/// is written once and the decoder is never tested against itself.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/it/common/marmot.rs"]
mod encoder;
