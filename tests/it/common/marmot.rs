//! Marmot push (marmot-push-v1) as an app sends it, written from the spec and independently of the relay's code:
//! encrypted tokens, and the gift-wrapped kind 446 triggers that carry them. The relay's unit tests compile this
//! same file (`src/push/marmot/mod.rs`), so the sender's side is written once and no test checks the relay's
//! decoder against the decoder itself.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use nostr::event::{Event, EventBuilder, FinalizeEvent, Kind, Tag, UnsignedEvent};
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip44;
use nostr::types::Timestamp;
use secp256k1::{Parity, XOnlyPublicKey, ecdh};
use sha2::Sha256;

/// The size of one EncryptedToken.
pub(crate) const CHUNK_LEN: usize = 1084;
/// The size of a token's plaintext: platform, length, token, padding.
pub(crate) const PLAINTEXT_LEN: usize = 1024;
/// The trigger rumor's kind.
pub(crate) const RUMOR_KIND: u16 = 446;
/// The value of the rumor's one tag, `["v", VERSION]`.
pub(crate) const VERSION: &str = "marmot-push-v1";

/// An EncryptedToken of `token` for `platform` (0x01 APNs, 0x02 FCM; any byte is written as given), to `server`.
pub(crate) fn encrypted_token(server: &PublicKey, platform: u8, token: &[u8]) -> Vec<u8> {
    assert!(3 + token.len() <= PLAINTEXT_LEN, "a token fits in the plaintext");
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    rand::fill(&mut plaintext[..]);
    plaintext[0] = platform;
    plaintext[1..3].copy_from_slice(&(token.len() as u16).to_be_bytes());
    plaintext[3..3 + token.len()].copy_from_slice(token);
    encrypt_plaintext(server, &plaintext)
}

/// An EncryptedToken of any 1024 bytes, for plaintexts an honest app would not write.
pub(crate) fn encrypt_plaintext(server: &PublicKey, plaintext: &[u8; PLAINTEXT_LEN]) -> Vec<u8> {
    let ephemeral = Keys::generate();
    let server_point =
        XOnlyPublicKey::from_byte_array(server.as_bytes()).expect("an x-only key").public_key(Parity::Even);
    let shared = ecdh::shared_secret_point(&server_point, ephemeral.secret_key());
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"marmot-push-token-v1".as_slice()), &shared[..32])
        .expand(b"marmot-push-token-encryption", &mut key)
        .expect("a 32-byte key");
    let nonce: [u8; 12] = rand::random();
    let mut ciphertext = *plaintext;
    let tag = ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[], &mut ciphertext)
        .expect("ChaCha20-Poly1305 encrypts");
    let mut chunk = Vec::with_capacity(CHUNK_LEN);
    chunk.extend_from_slice(&ephemeral.public_key().to_bytes());
    chunk.extend_from_slice(&nonce);
    chunk.extend_from_slice(&ciphertext);
    chunk.extend_from_slice(&tag);
    chunk
}

/// A well-formed trigger to `server` carrying `content` (concatenated chunks).
pub(crate) fn trigger(server: &PublicKey, content: &[u8]) -> Event {
    trigger_with(server, RUMOR_KIND, vec![version_tag()], &STANDARD.encode(content))
}

/// A trigger whose rumor has the kind, tags and content string given (malformed ones too), by the seal's signer.
pub(crate) fn trigger_with(server: &PublicKey, kind: u16, tags: Vec<Tag>, content: &str) -> Event {
    let sealer = Keys::generate();
    wrap(server, &seal(&sealer, server, &rumor(&sealer.public_key(), kind, tags, content)))
}

/// The rumor's one tag.
pub(crate) fn version_tag() -> Tag {
    Tag::custom("v", [VERSION])
}

/// An unsigned rumor, with its id as NIP-59 senders write it.
pub(crate) fn rumor(author: &PublicKey, kind: u16, tags: Vec<Tag>, content: &str) -> UnsignedEvent {
    let mut rumor = UnsignedEvent::new(*author, Timestamp::now(), Kind::from_u16(kind), tags, content);
    rumor.ensure_id();
    rumor
}

/// The kind 13 seal of `rumor`, encrypted to `server` and signed by `sealer`.
pub(crate) fn seal(sealer: &Keys, server: &PublicKey, rumor: &UnsignedEvent) -> Event {
    let content = nip44::encrypt(sealer.secret_key(), server, rumor.as_json(), nip44::Version::V2).expect("encrypts");
    EventBuilder::new(Kind::Seal, content).finalize(sealer).expect("signs")
}

/// The kind 1059 gift wrap of `seal` to `server`, from a fresh key.
pub(crate) fn wrap(server: &PublicKey, seal: &Event) -> Event {
    let wrapper = Keys::generate();
    let content = nip44::encrypt(wrapper.secret_key(), server, seal.as_json(), nip44::Version::V2).expect("encrypts");
    EventBuilder::new(Kind::GiftWrap, content).tag(Tag::public_key(*server)).finalize(&wrapper).expect("signs")
}
