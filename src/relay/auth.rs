//! NIP-42: the challenge, the check of AUTH events, and what an authenticated reader may see.

use std::sync::{Arc, RwLock};

use nostr::event::Event;

use crate::groups::Groups;
use crate::protocol::Refusal;
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
) -> Result<(), Refusal> {
    if event.kind.as_u16() != AUTH_KIND {
        return Err(Refusal::invalid(format!("AUTH needs a kind {AUTH_KIND} event")));
    }
    if event.created_at.as_secs().abs_diff(now) > max_skew_secs {
        return Err(Refusal::invalid("AUTH event created_at is too far from now"));
    }
    let tag = |name: &str| event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1));
    if tag("challenge").map(String::as_str) != Some(challenge) {
        return Err(Refusal::invalid("AUTH challenge does not match"));
    }
    if tag("relay").is_none_or(|url| normalise_url(url) != normalise_url(public_url)) {
        return Err(Refusal::invalid("AUTH relay URL is not this relay"));
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
    /// NIP-29 groups hosted here, whose private ones only their members read.
    groups: Option<Arc<Groups>>,
}

/// What one query may see: the reader's pubkeys as they are now, and the groups hidden from them.
pub struct ReadScope {
    pub viewers: Vec<Hash32>,
    hidden_groups: Vec<String>,
    hidden_metadata: Vec<String>,
}

impl Reader {
    pub fn new(restricted_kinds: Vec<u16>, groups: Option<Arc<Groups>>) -> Self {
        Self { restricted_kinds, pubkeys: RwLock::default(), groups }
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

    /// A snapshot of what the reader may see, for one query.
    pub fn scope(&self) -> ReadScope {
        let viewers = self.pubkeys();
        let (hidden_groups, hidden_metadata) = self.groups.as_ref().map(|g| g.hidden_for(&viewers)).unwrap_or_default();
        ReadScope { viewers, hidden_groups, hidden_metadata }
    }

    /// What the store may show this reader, given a snapshot of what it may see.
    pub fn visibility<'a>(&'a self, scope: &'a ReadScope) -> Visibility<'a> {
        Visibility {
            restricted_kinds: &self.restricted_kinds,
            viewers: &scope.viewers,
            hidden_groups: &scope.hidden_groups,
            hidden_metadata: &scope.hidden_metadata,
        }
    }

    /// A private group the filters ask for by `#h` or `#d`, when the reader has not authenticated: it is told to.
    pub fn private_group_in(&self, filters: &[crate::protocol::Filter]) -> Option<String> {
        let groups = self.groups.as_ref()?;
        filters.iter().find_map(|filter| groups.private_group_in(filter))
    }

    /// The live-delivery twin of the store's visibility rule.
    pub fn may_see(&self, event: &VerifiedEvent) -> bool {
        let pubkeys = self.pubkeys.read().expect("reader lock");
        (!self.is_restricted(event.kind()) || pubkeys.iter().any(|pubkey| event.is_party(pubkey)))
            && self.groups.as_ref().is_none_or(|groups| groups.may_read(&pubkeys, event))
    }
}
