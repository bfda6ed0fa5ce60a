//! NIP-42: the challenge, the check of AUTH events, and what an authenticated reader may see.

use std::sync::RwLock;

use nostr::event::Event;

use crate::protocol::VerifiedEvent;
use crate::protocol::filter::Hash32;
use crate::store::Visibility;

const AUTH_KIND: u16 = 22242;

/// A fresh random challenge for a new connection.
pub fn new_challenge() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Checks a (verified) AUTH event against the connection's challenge and the relay's URL.
pub fn check_auth_event(
    event: &Event,
    challenge: &str,
    public_url: &str,
    max_skew_secs: u64,
    now: u64,
) -> Result<(), String> {
    if event.kind.as_u16() != AUTH_KIND {
        return Err(format!("invalid: AUTH needs a kind {AUTH_KIND} event"));
    }
    if event.created_at.as_secs().abs_diff(now) > max_skew_secs {
        return Err("invalid: AUTH event created_at is too far from now".into());
    }
    let tag = |name: &str| event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1));
    if tag("challenge").map(String::as_str) != Some(challenge) {
        return Err("invalid: AUTH challenge does not match".into());
    }
    if tag("relay").is_none_or(|url| normalise_url(url) != normalise_url(public_url)) {
        return Err("invalid: AUTH relay URL is not this relay".into());
    }
    Ok(())
}

fn normalise_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// One connection as a reader: the pubkeys it authenticated as, and so which restricted events it may see.
/// Shared between the connection (for queries) and its outbox (for live delivery).
pub struct Reader {
    restricted_kinds: Vec<u16>,
    pubkeys: RwLock<Vec<Hash32>>,
}

impl Reader {
    pub fn new(restricted_kinds: Vec<u16>) -> Self {
        Self { restricted_kinds, pubkeys: RwLock::default() }
    }

    pub fn authenticate(&self, pubkey: Hash32) {
        let mut pubkeys = self.pubkeys.write().expect("reader lock");
        if !pubkeys.contains(&pubkey) {
            pubkeys.push(pubkey);
        }
    }

    pub fn pubkeys(&self) -> Vec<Hash32> {
        self.pubkeys.read().expect("reader lock").clone()
    }

    pub fn is_authenticated_as(&self, pubkey: &Hash32) -> bool {
        self.pubkeys.read().expect("reader lock").contains(pubkey)
    }

    pub fn is_restricted(&self, kind: u16) -> bool {
        self.restricted_kinds.contains(&kind)
    }

    /// What the store may show this reader, given a snapshot of its pubkeys.
    pub fn visibility<'a>(&'a self, viewers: &'a [Hash32]) -> Visibility<'a> {
        Visibility { restricted_kinds: &self.restricted_kinds, viewers }
    }

    /// The live-delivery twin of the store's visibility rule.
    pub fn may_see(&self, event: &VerifiedEvent) -> bool {
        !self.is_restricted(event.kind())
            || self.pubkeys.read().expect("reader lock").iter().any(|pubkey| event.is_party(pubkey))
    }
}
