//! A verified event as the relay passes it around: the parsed event plus its JSON, serialized once.

use std::sync::Arc;

use nostr::event::Event;

use super::filter::Hash32;

/// NIP-9a push subscriptions (kind 30390): served only to their author while push is on, which the configuration
/// knows (`Config::read_restricted_kinds`) and push acts on.
pub const PUSH_SUBSCRIPTION_KIND: u16 = 30390;
/// NIP-59's gift wrap: signed by a throwaway key, addressed by its `p` tag.
pub const GIFT_WRAP_KIND: u16 = 1059;

/// How NIP-01 says a kind is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindClass {
    Regular,
    /// Newest per pubkey and kind.
    Replaceable,
    /// Newest per pubkey, kind and `d` tag.
    Addressable,
    /// Delivered to live subscribers, never stored.
    Ephemeral,
}

impl KindClass {
    pub fn of(kind: u16) -> Self {
        match kind {
            0 | 3 | 10_000..=19_999 => Self::Replaceable,
            20_000..=29_999 => Self::Ephemeral,
            30_000..=39_999 => Self::Addressable,
            _ => Self::Regular,
        }
    }
}

/// An event whose id and signature have been checked.
#[derive(Debug)]
pub struct VerifiedEvent {
    pub event: Event,
    /// The canonical JSON of the event, shared by the store and every subscriber it is sent to.
    pub json: Box<str>,
}

pub type SharedEvent = Arc<VerifiedEvent>;

impl VerifiedEvent {
    pub fn new(event: Event) -> Self {
        let json = event.as_json().into_boxed_str();
        Self { event, json }
    }

    /// An event read back from the relay's own store: it was verified when it was accepted.
    pub fn from_stored(json: &str) -> Option<Self> {
        Event::from_json(json).ok().map(Self::new)
    }

    pub fn id(&self) -> &Hash32 {
        self.event.id.as_bytes()
    }

    pub fn pubkey(&self) -> &Hash32 {
        self.event.pubkey.as_bytes()
    }

    pub fn kind(&self) -> u16 {
        self.event.kind.as_u16()
    }

    pub fn created_at(&self) -> u64 {
        self.event.created_at.as_secs()
    }

    pub fn class(&self) -> KindClass {
        KindClass::of(self.kind())
    }

    /// The value of the first `d` tag, or "" when there is none (NIP-01's rule for addressable events).
    pub fn d_tag(&self) -> &str {
        self.event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .find(|t| t[0] == "d")
            .and_then(|t| t.get(1))
            .map_or("", String::as_str)
    }

    /// NIP-40: when the event stops being served, if it has an `expiration` tag.
    pub fn expiration(&self) -> Option<u64> {
        self.event.tags.expiration().map(|t| t.as_secs())
    }

    /// Whether `pubkey` is one of the event's parties: its author or a pubkey it `p`-tags. Events of read-restricted
    /// kinds (DMs, gift wraps) are served, and pushed, only to their parties; the store's SQL visibility condition
    /// is the same rule for queries.
    pub fn is_party(&self, pubkey: &Hash32) -> bool {
        if self.pubkey() == pubkey {
            return true;
        }
        let hex = hex::encode(pubkey);
        self.indexed_tags().any(|(letter, value)| letter == 'p' && value == hex)
    }

    /// NIP-29: the group the event belongs to, its first `h` tag's value (a relay hosting groups refuses events
    /// naming a group of its own and another).
    pub fn group(&self) -> Option<&str> {
        self.indexed_tags().find(|(letter, _)| *letter == 'h').map(|(_, value)| value)
    }

    /// The (letter, first value) pairs of single-letter tags: what tag filters can query.
    pub fn indexed_tags(&self) -> impl Iterator<Item = (char, &str)> {
        self.event.tags.iter().filter_map(|tag| {
            let tag = tag.as_slice();
            let mut name = tag[0].chars();
            match (name.next(), name.next(), tag.get(1)) {
                (Some(letter), None, Some(value)) if letter.is_ascii_alphabetic() => Some((letter, value.as_str())),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_classes_follow_nip01() {
        assert_eq!(KindClass::of(0), KindClass::Replaceable);
        assert_eq!(KindClass::of(1), KindClass::Regular);
        assert_eq!(KindClass::of(3), KindClass::Replaceable);
        assert_eq!(KindClass::of(41), KindClass::Regular);
        assert_eq!(KindClass::of(9999), KindClass::Regular);
        assert_eq!(KindClass::of(10_002), KindClass::Replaceable);
        assert_eq!(KindClass::of(22_456), KindClass::Ephemeral);
        assert_eq!(KindClass::of(30_023), KindClass::Addressable);
        assert_eq!(KindClass::of(40_000), KindClass::Regular);
    }
}
