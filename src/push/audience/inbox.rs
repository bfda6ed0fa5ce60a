//! NIP-17 DM inbox relays (kind 10050) of registered pubkeys: where their gift-wrapped DMs are sent. 0xchat leaves
//! them out of a registration's `relays`, so the watch plan adds them for the gift-wrap kinds a registration wants.
//! The list is the user's own signed event, learned like mute lists: from this relay's store, from events accepted
//! here, and from the relays watched for the user.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::protocol::VerifiedEvent;
use crate::protocol::filter::Hash32;

pub const INBOX_RELAYS_KIND: u16 = 10_050;
/// The kinds that travel to inbox relays (NIP-17 gift wraps, NIP-59).
pub const INBOX_KINDS: [u16; 2] = [1059, 1060];

/// NIP-01's order for replaceable events: newer `created_at`, then the lower id.
type Version = (u64, std::cmp::Reverse<Hash32>);

#[derive(Default)]
pub struct InboxRelays {
    /// Per pubkey: the newest list's version and its relays, each as `check` let it through.
    lists: RwLock<HashMap<Hash32, (Version, Vec<String>)>>,
}

impl InboxRelays {
    /// Keeps the relays of a kind 10050 list newer than the one known for its author, at most `max` of them, those
    /// `check` accepts (a stranger signs the list: the same rules as a registration's relays). Returns whether kept.
    pub fn offer(&self, event: &VerifiedEvent, max: usize, check: impl Fn(&str) -> bool) -> bool {
        if event.kind() != INBOX_RELAYS_KIND {
            return false;
        }
        let order = (event.created_at(), std::cmp::Reverse(*event.id()));
        let mut lists = self.lists.write().expect("inbox relays lock");
        if lists.get(event.pubkey()).is_some_and(|(known, _)| *known >= order) {
            return false;
        }
        let mut relays: Vec<String> = Vec::new();
        for tag in event.event.tags.iter().map(|t| t.as_slice()) {
            if let ("relay", Some(url)) = (tag[0].as_str(), tag.get(1))
                && relays.len() < max
                && !relays.contains(url)
                && check(url)
            {
                relays.push(url.clone());
            }
        }
        lists.insert(*event.pubkey(), (order, relays));
        true
    }

    pub fn of(&self, pubkey: &Hash32) -> Vec<String> {
        self.lists.read().expect("inbox relays lock").get(pubkey).map(|(_, relays)| relays.clone()).unwrap_or_default()
    }
}
