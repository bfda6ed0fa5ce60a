//! A Marmot push trigger (marmot-push-v1): a kind 1059 gift wrap to the push key, holding a kind 13 seal, holding
//! an unsigned kind 446 rumor whose content is the concatenated EncryptedToken chunks. Opening one costs two NIP-44
//! decryptions and a signature check, and its sender is anonymous by design, so everything the spec says makes a
//! trigger malformed is checked here, before a single chunk's ECDH. Synchronous: callers run it off the async
//! threads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nostr::event::{Event, Kind, Tag, UnsignedEvent};
use nostr::key::Keys;
use nostr::nips::nip44;

use super::token::{CHUNK_LEN, MAX_CHUNKS};

/// The rumor's kind.
pub(crate) const RUMOR_KIND: u16 = 446;
/// The value of the rumor's one tag, `v`; the superseded MIP-05 draft had none and is not accepted.
pub(crate) const VERSION: &str = "marmot-push-v1";
/// The most decoded content a trigger may carry: 32 chunks (34,688 bytes).
pub(crate) const MAX_CONTENT: usize = CHUNK_LEN * MAX_CHUNKS;
/// Its standard padded base64: longer content is refused before decoding.
const MAX_ENCODED: usize = MAX_CONTENT.div_ceil(3) * 4;
/// Over twice the wrap content of a full 32-chunk trigger (about 109 KB, the seal inside it needing NIP-44's
/// extended length): NIP-44 itself admits up to 4 GiB, so the bound is ours to set before decrypting.
const MAX_WRAP_CONTENT: usize = 256 * 1024;

/// Why a gift wrap is not a trigger. Each is counted, never logged with its content, and wakes nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not a kind 1059 event, too large, or not decryptable with the push key.
    Wrap,
    /// The wrap's plaintext is not a kind 13 event, or its content is not decryptable with the push key.
    Seal,
    /// The seal's id or signature does not verify.
    SealSignature,
    /// The seal's plaintext is not an unsigned event.
    Rumor,
    /// The rumor is not kind 446.
    Kind,
    /// The rumor's pubkey is not the seal's signer.
    Author,
    /// Tags other than exactly one `["v", "marmot-push-v1"]`.
    Tags,
    /// Content that is not standard padded base64.
    Base64,
    /// Decoded content empty, not whole chunks, or more than 32 of them.
    Size,
}

impl Malformed {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Wrap => "wrap",
            Self::Seal => "seal",
            Self::SealSignature => "seal_signature",
            Self::Rumor => "rumor",
            Self::Kind => "kind",
            Self::Author => "author",
            Self::Tags => "tags",
            Self::Base64 => "base64",
            Self::Size => "size",
        }
    }
}

/// The decoded content of a trigger gift-wrapped to `keys` (the push key): whole chunks, 1 to 32 of them. The wrap's
/// own signature is the relay's to have checked.
pub(crate) fn open(keys: &Keys, wrap: &Event) -> Result<Vec<u8>, Malformed> {
    let seal = open_wrap(keys, wrap)?;
    let rumor = open_seal(keys, &seal)?;
    check_rumor(&rumor, &seal)?;
    decode(&rumor.content)
}

/// The content's chunks, each of `CHUNK_LEN` bytes (what `open` returns has no remainder).
pub(crate) fn chunks(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content.chunks_exact(CHUNK_LEN)
}

fn open_wrap(keys: &Keys, wrap: &Event) -> Result<Event, Malformed> {
    if wrap.kind.as_u16() != Kind::GiftWrap.as_u16() || wrap.content.len() > MAX_WRAP_CONTENT {
        return Err(Malformed::Wrap);
    }
    let json = nip44::decrypt(keys.secret_key(), &wrap.pubkey, &wrap.content).map_err(|_| Malformed::Wrap)?;
    let seal = Event::from_json(json).map_err(|_| Malformed::Seal)?;
    if seal.kind.as_u16() != Kind::Seal.as_u16() {
        return Err(Malformed::Seal);
    }
    seal.verify().map_err(|_| Malformed::SealSignature)?;
    Ok(seal)
}

fn open_seal(keys: &Keys, seal: &Event) -> Result<UnsignedEvent, Malformed> {
    let json = nip44::decrypt(keys.secret_key(), &seal.pubkey, &seal.content).map_err(|_| Malformed::Seal)?;
    UnsignedEvent::from_json(json).map_err(|_| Malformed::Rumor)
}

/// The seal's signature is what vouches for the rumor, so the rumor must be by the same key.
fn check_rumor(rumor: &UnsignedEvent, seal: &Event) -> Result<(), Malformed> {
    if rumor.kind.as_u16() != RUMOR_KIND {
        return Err(Malformed::Kind);
    }
    if rumor.pubkey != seal.pubkey {
        return Err(Malformed::Author);
    }
    if !is_version_only(&rumor.tags) {
        return Err(Malformed::Tags);
    }
    Ok(())
}

fn is_version_only(tags: &[Tag]) -> bool {
    match tags {
        [tag] => tag.as_slice() == ["v", VERSION],
        _ => false,
    }
}

/// Base64's STANDARD engine requires canonical padding and refuses the URL-safe alphabet, as the spec asks.
fn decode(content: &str) -> Result<Vec<u8>, Malformed> {
    if content.len() > MAX_ENCODED {
        return Err(Malformed::Size);
    }
    let bytes = STANDARD.decode(content).map_err(|_| Malformed::Base64)?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(CHUNK_LEN) || bytes.len() > MAX_CONTENT {
        return Err(Malformed::Size);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE;

    use super::*;
    use crate::push::marmot::encoder;

    fn content(count: usize) -> Vec<u8> {
        let mut content = vec![0u8; count * CHUNK_LEN];
        rand::fill(&mut content[..]);
        content
    }

    fn refused(server: &Keys, kind: u16, tags: Vec<Tag>, content: &str) -> Malformed {
        open(server, &encoder::trigger_with(&server.public_key(), kind, tags, content)).unwrap_err()
    }

    #[test]
    fn a_trigger_opens_to_its_chunks() {
        let server = Keys::generate();
        let sent = content(3);
        let opened = open(&server, &encoder::trigger(&server.public_key(), &sent)).unwrap();
        assert_eq!(opened, sent);
        assert_eq!(chunks(&opened).collect::<Vec<_>>(), sent.chunks(CHUNK_LEN).collect::<Vec<_>>());
    }

    /// The seal of a full trigger is over 65,535 bytes: the wrap carries it with NIP-44's extended length prefix.
    #[test]
    fn a_full_trigger_opens() {
        let server = Keys::generate();
        let sent = content(MAX_CHUNKS);
        let wrap = encoder::trigger(&server.public_key(), &sent);
        let seal = nip44::decrypt(server.secret_key(), &wrap.pubkey, &wrap.content).unwrap();
        assert!(seal.len() > 65_535, "{}", seal.len());
        assert_eq!(open(&server, &wrap).unwrap().len(), MAX_CONTENT);
    }

    #[test]
    fn a_wrap_for_another_key_or_of_another_kind_is_refused() {
        let (server, other) = (Keys::generate(), Keys::generate());
        let wrap = encoder::trigger(&other.public_key(), &content(1));
        assert_eq!(open(&server, &wrap).unwrap_err(), Malformed::Wrap);
        let seal = encoder::seal(&other, &server.public_key(), &encoder::rumor(&other.public_key(), 446, vec![], ""));
        assert_eq!(open(&server, &seal).unwrap_err(), Malformed::Wrap);
    }

    #[test]
    fn a_seal_that_does_not_verify_is_refused() {
        let (server, sealer) = (Keys::generate(), Keys::generate());
        let b64 = STANDARD.encode(content(1));
        let rumor = encoder::rumor(&sealer.public_key(), RUMOR_KIND, vec![encoder::version_tag()], &b64);
        let mut seal = encoder::seal(&sealer, &server.public_key(), &rumor);
        seal.sig = encoder::seal(&sealer, &server.public_key(), &rumor).sig;
        assert_eq!(open(&server, &encoder::wrap(&server.public_key(), &seal)).unwrap_err(), Malformed::SealSignature);
    }

    #[test]
    fn a_rumor_of_another_kind_is_refused() {
        let server = Keys::generate();
        let b64 = STANDARD.encode(content(1));
        assert_eq!(refused(&server, 445, vec![encoder::version_tag()], &b64), Malformed::Kind);
    }

    #[test]
    fn a_rumor_by_another_key_than_the_seals_is_refused() {
        let (server, sealer, other) = (Keys::generate(), Keys::generate(), Keys::generate());
        let b64 = STANDARD.encode(content(1));
        let rumor = encoder::rumor(&other.public_key(), RUMOR_KIND, vec![encoder::version_tag()], &b64);
        let wrap = encoder::wrap(&server.public_key(), &encoder::seal(&sealer, &server.public_key(), &rumor));
        assert_eq!(open(&server, &wrap).unwrap_err(), Malformed::Author);
    }

    #[test]
    fn tags_other_than_the_version_alone_are_refused() {
        let server = Keys::generate();
        let b64 = STANDARD.encode(content(1));
        let cases = [
            vec![],
            vec![encoder::version_tag(), Tag::custom("encoding", ["base64"])],
            vec![Tag::custom("v", ["mip05-v1"])],
            vec![Tag::custom("v", [VERSION, "extra"])],
        ];
        for tags in cases {
            assert_eq!(refused(&server, RUMOR_KIND, tags.clone(), &b64), Malformed::Tags, "{tags:?}");
        }
    }

    #[test]
    fn content_that_is_not_standard_padded_base64_is_refused() {
        let server = Keys::generate();
        // One chunk is 1084 bytes, one more than a multiple of 3: its encoding ends in "==".
        let padded = STANDARD.encode(content(1));
        let unpadded = padded.trim_end_matches('=');
        // Leading bytes fb ff fb encode to "+//7" in the standard alphabet, "-__7" in the URL-safe one.
        let mut bytes = content(1);
        bytes[..3].copy_from_slice(&[0xfb, 0xff, 0xfb]);
        let url_safe = URL_SAFE.encode(bytes);
        for text in [unpadded, url_safe.as_str(), "not base64!"] {
            assert_eq!(refused(&server, RUMOR_KIND, vec![encoder::version_tag()], text), Malformed::Base64);
        }
    }

    #[test]
    fn content_that_is_not_one_to_32_whole_chunks_is_refused() {
        let server = Keys::generate();
        for bytes in [vec![], content(1)[..CHUNK_LEN - 1].to_vec(), content(MAX_CHUNKS + 1)] {
            let b64 = STANDARD.encode(&bytes);
            let refusal = refused(&server, RUMOR_KIND, vec![encoder::version_tag()], &b64);
            assert_eq!(refusal, Malformed::Size, "{} bytes", bytes.len());
        }
    }
}
