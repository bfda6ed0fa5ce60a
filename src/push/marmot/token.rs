//! One Marmot push token (marmot-push-v1): a 1084-byte EncryptedToken chunk of a trigger, opened with the push
//! secret key into the platform and native token a wake is sent to. Apps encrypt their device token to our key
//! (ECDH on secp256k1, HKDF-SHA256, ChaCha20-Poly1305) so that neither the group members who pass it around nor the
//! relays that carry a trigger learn it; only we can open it, and the token lives in memory only until it is sent.

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, Key, KeyInit, Nonce};
use hkdf::Hkdf;
use secp256k1::{Parity, SecretKey, XOnlyPublicKey, ecdh};
use sha2::Sha256;

/// The size of one EncryptedToken: ephemeral x-only key (32), nonce (12), ciphertext and tag (1040).
pub(crate) const CHUNK_LEN: usize = 1084;
/// The most chunks one trigger may carry, padding chunks included.
pub(crate) const MAX_CHUNKS: usize = 32;

const POINT_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const PLAINTEXT_LEN: usize = 1024;
/// Platform byte and big-endian u16 token length.
const HEADER_LEN: usize = 3;
const MAX_TOKEN_LEN: usize = PLAINTEXT_LEN - HEADER_LEN;
const SALT: &[u8] = b"marmot-push-token-v1";
const INFO: &[u8] = b"marmot-push-token-encryption";

/// The push service a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    Apns,
    Fcm,
}

impl Platform {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0x01 => Some(Self::Apns),
            0x02 => Some(Self::Fcm),
            _ => None,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
        }
    }
}

/// A decrypted native token. It never leaves memory: its `Debug` shows the platform only, and its bytes are
/// overwritten when it is dropped (the address string a sender is handed for one request is not: it lives as long as
/// that request).
pub(crate) struct Token {
    platform: Platform,
    bytes: Vec<u8>,
}

impl Token {
    pub(crate) fn platform(&self) -> Platform {
        self.platform
    }

    /// The native token's bytes (APNs: the raw 32; FCM: the string's UTF-8).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// What the service is addressed with: APNs takes the raw token as lowercase hex, FCM its registration string
    /// (checked to be UTF-8 when decrypted).
    pub(crate) fn address(&self) -> String {
        match self.platform {
            Platform::Apns => hex::encode(&self.bytes),
            Platform::Fcm => String::from_utf8_lossy(&self.bytes).into_owned(),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("platform", &self.platform).finish_non_exhaustive()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Why a chunk gave no token. Random padding chunks fail here too, by design: a failure is skipped, never logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkError {
    BadLength,
    BadPoint,
    ZeroSecret,
    Tag,
    Platform,
    TokenLength,
    NotUtf8,
}

/// Opens one chunk with the push secret key.
pub(crate) fn decrypt(secret: &SecretKey, chunk: &[u8]) -> Result<Token, ChunkError> {
    if chunk.len() != CHUNK_LEN {
        return Err(ChunkError::BadLength);
    }
    let (ephemeral, rest) = chunk.split_first_chunk::<POINT_LEN>().ok_or(ChunkError::BadLength)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>().ok_or(ChunkError::BadLength)?;
    let (ciphertext, tag) = sealed.split_last_chunk::<TAG_LEN>().ok_or(ChunkError::BadLength)?;
    let mut cipher_key = chunk_key(secret, ephemeral)?;
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&cipher_key));
    wipe(&mut cipher_key);
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    plaintext.copy_from_slice(ciphertext);
    let opened = cipher.decrypt_in_place_detached(
        Nonce::from_slice(nonce),
        &[],
        &mut plaintext,
        chacha20poly1305::Tag::from_slice(tag),
    );
    let token = opened.map_err(|_| ChunkError::Tag).and_then(|()| parse(&plaintext));
    wipe(&mut plaintext);
    token
}

/// The chunk's ChaCha20-Poly1305 key: ECDH with the sender's ephemeral key lifted to even Y (BIP-340), whose X
/// alone goes, unhashed, into HKDF. The X is the same whichever Y either side's point has, which is what lets the
/// sender use our x-only Nostr key.
fn chunk_key(secret: &SecretKey, ephemeral: &[u8; POINT_LEN]) -> Result<[u8; 32], ChunkError> {
    let point = XOnlyPublicKey::from_byte_array(ephemeral).map_err(|_| ChunkError::BadPoint)?.public_key(Parity::Even);
    let mut xy = ecdh::shared_secret_point(&point, secret);
    let mut shared_x = [0u8; 32];
    shared_x.copy_from_slice(&xy[..32]);
    wipe(&mut xy);
    // The spec forbids feeding an all-zero X to HKDF, however unlikely a valid point makes it.
    let result = if shared_x == [0u8; 32] { Err(ChunkError::ZeroSecret) } else { Ok(key(&shared_x)) };
    wipe(&mut shared_x);
    result
}

/// HKDF-SHA256: Extract with the marmot-push-v1 salt over the shared X, Expand with its info to 32 bytes.
fn key(shared_x: &[u8; 32]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(SALT), shared_x).expand(INFO, &mut okm).expect("32 bytes is a valid HKDF-SHA256 length");
    okm
}

/// Platform, length and token out of the 1024 bytes; what follows the token is padding.
fn parse(plaintext: &[u8; PLAINTEXT_LEN]) -> Result<Token, ChunkError> {
    let platform = Platform::from_byte(plaintext[0]).ok_or(ChunkError::Platform)?;
    let len = usize::from(u16::from_be_bytes([plaintext[1], plaintext[2]]));
    if !(1..=MAX_TOKEN_LEN).contains(&len) {
        return Err(ChunkError::TokenLength);
    }
    let token = Token { platform, bytes: plaintext[HEADER_LEN..HEADER_LEN + len].to_vec() };
    if platform == Platform::Fcm && std::str::from_utf8(&token.bytes).is_err() {
        return Err(ChunkError::NotUtf8);
    }
    Ok(token)
}

/// Overwrites secret bytes. `black_box` asks the compiler (best effort: it promises nothing) not to drop the
/// writes as dead, memory about to be freed being what they overwrite; no new crate for zeroizing.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use nostr::key::Keys;

    use super::*;
    use crate::push::marmot::encoder;

    /// The check value the spec gives for its HKDF.
    #[test]
    fn key_matches_the_spec_vector() {
        let shared_x: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(hex::encode(key(&shared_x)), "954b9d7be996c0e74517fe49e41e1278f44395d2855a52f50b5e322976dd168d");
    }

    #[test]
    fn an_apns_token_opens_as_lowercase_hex() {
        let server = Keys::generate();
        let device: [u8; 32] = rand::random();
        let chunk = encoder::encrypted_token(&server.public_key(), 0x01, &device);
        let token = decrypt(server.secret_key(), &chunk).unwrap();
        assert_eq!(token.platform(), Platform::Apns);
        assert_eq!(token.address(), hex::encode(device));
    }

    #[test]
    fn an_fcm_token_opens_as_its_string() {
        let server = Keys::generate();
        let device = format!("dGVzdC1kZXZpY2U6{}:APA91b{}", "x".repeat(12), "Zq3-_k9".repeat(18));
        let chunk = encoder::encrypted_token(&server.public_key(), 0x02, device.as_bytes());
        let token = decrypt(server.secret_key(), &chunk).unwrap();
        assert_eq!(token.platform(), Platform::Fcm);
        assert_eq!(token.address(), device);
    }

    #[test]
    fn the_longest_token_opens() {
        let server = Keys::generate();
        let chunk = encoder::encrypted_token(&server.public_key(), 0x01, &[0xab; MAX_TOKEN_LEN]);
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap().address(), "ab".repeat(MAX_TOKEN_LEN));
    }

    #[test]
    fn debug_shows_no_token() {
        let server = Keys::generate();
        let chunk = encoder::encrypted_token(&server.public_key(), 0x01, &[0xcd; 32]);
        let shown = format!("{:?}", decrypt(server.secret_key(), &chunk).unwrap());
        assert!(shown.contains("Apns") && !shown.contains("cdcd"), "{shown}");
    }

    #[test]
    fn random_bytes_do_not_open() {
        let server = Keys::generate();
        let mut chunk = vec![0u8; CHUNK_LEN];
        rand::fill(&mut chunk[..]);
        assert!(decrypt(server.secret_key(), &chunk).is_err());
    }

    #[test]
    fn a_chunk_for_another_server_fails_its_tag() {
        let (server, other) = (Keys::generate(), Keys::generate());
        let chunk = encoder::encrypted_token(&other.public_key(), 0x01, &[1; 32]);
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::Tag);
    }

    #[test]
    fn a_changed_byte_fails_the_tag() {
        let server = Keys::generate();
        let mut chunk = encoder::encrypted_token(&server.public_key(), 0x01, &[1; 32]);
        chunk[100] ^= 1;
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::Tag);
    }

    #[test]
    fn a_wrong_length_or_point_is_refused() {
        let server = Keys::generate();
        let mut chunk = encoder::encrypted_token(&server.public_key(), 0x01, &[1; 32]);
        assert_eq!(decrypt(server.secret_key(), &chunk[..CHUNK_LEN - 1]).unwrap_err(), ChunkError::BadLength);
        // Above the field's prime: no point has this X.
        chunk[..POINT_LEN].fill(0xff);
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::BadPoint);
    }

    #[test]
    fn an_unknown_platform_is_refused() {
        let server = Keys::generate();
        let chunk = encoder::encrypted_token(&server.public_key(), 0x03, &[1; 32]);
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::Platform);
    }

    #[test]
    fn a_token_length_out_of_range_is_refused() {
        let server = Keys::generate();
        for len in [0u16, 1022, u16::MAX] {
            let mut plaintext = [0u8; PLAINTEXT_LEN];
            plaintext[0] = 0x01;
            plaintext[1..3].copy_from_slice(&len.to_be_bytes());
            let chunk = encoder::encrypt_plaintext(&server.public_key(), &plaintext);
            assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::TokenLength, "{len}");
        }
    }

    #[test]
    fn an_fcm_token_that_is_not_utf8_is_refused() {
        let server = Keys::generate();
        let chunk = encoder::encrypted_token(&server.public_key(), 0x02, &[0xff, 0xfe, 0x41]);
        assert_eq!(decrypt(server.secret_key(), &chunk).unwrap_err(), ChunkError::NotUtf8);
    }
}
