//! The Nostr wire protocol as this relay speaks it: messages, filters and verified events.
//! Knows nothing of sockets, storage or push.

pub mod event;
pub mod filter;
pub mod filter_index;
pub mod message;
pub mod refusal;
pub mod search;
pub mod verify;

pub use event::{KindClass, SharedEvent, VerifiedEvent};
pub use filter::Filter;
pub use refusal::Refusal;
