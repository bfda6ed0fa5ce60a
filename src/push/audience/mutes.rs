//! Mute lists (NIP-51 kind 10000) of registered pubkeys: an event from a muted author, in a muted thread, with a
//! muted hashtag or containing a muted word is not pushed to the muting pubkey.
//!
//! Only the public tags can be read; private items are encrypted to the user and stay unknown to the relay. Each
//! list is kept as hash sets, so checking an event costs a look-up per tag (and per word of its content when the
//! list mutes words), however long the list.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::protocol::VerifiedEvent;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::push::text::is_encrypted;

pub const MUTE_LIST_KIND: u16 = 10_000;

/// One pubkey's newest mute list.
#[derive(Debug, Default)]
pub struct MuteList {
    created_at: u64,
    id: Hash32,
    authors: HashSet<Hash32>,
    threads: HashSet<Hash32>,
    hashtags: HashSet<String>,
    /// Single words, lower case: matched against the words of the content.
    words: HashSet<String>,
    /// Entries with spaces or punctuation, lower case: matched as substrings.
    phrases: Vec<String>,
}

impl MuteList {
    pub fn from_event(event: &VerifiedEvent) -> Self {
        let mut list = Self { created_at: event.created_at(), id: *event.id(), ..Self::default() };
        for tag in event.event.tags.iter().map(|t| t.as_slice()) {
            let Some(value) = tag.get(1) else { continue };
            match tag[0].as_str() {
                "p" => list.authors.extend(parse_hash(value)),
                "e" => list.threads.extend(parse_hash(value)),
                "t" => {
                    list.hashtags.insert(value.trim_start_matches('#').to_lowercase());
                }
                "word" => {
                    let word = value.trim().to_lowercase();
                    if word.chars().all(char::is_alphanumeric) {
                        list.words.extend(Some(word).filter(|w| !w.is_empty()));
                    } else {
                        list.phrases.push(word);
                    }
                }
                _ => {}
            }
        }
        list
    }

    /// NIP-01's order for replaceable events: newer `created_at`, then the lower id.
    fn is_newer_than(&self, other: &Self) -> bool {
        (self.created_at, std::cmp::Reverse(self.id)) > (other.created_at, std::cmp::Reverse(other.id))
    }

    pub fn silences(&self, event: &VerifiedEvent) -> bool {
        if self.authors.contains(event.pubkey()) || self.threads.contains(event.id()) {
            return true;
        }
        let tagged = event.indexed_tags().any(|(letter, value)| match letter {
            'e' => parse_hash(value).is_some_and(|id| self.threads.contains(&id)),
            't' if !self.hashtags.is_empty() => self.hashtags.contains(&value.to_lowercase()),
            _ => false,
        });
        tagged || self.mutes_words_of(event)
    }

    fn mutes_words_of(&self, event: &VerifiedEvent) -> bool {
        if (self.words.is_empty() && self.phrases.is_empty()) || is_encrypted(event.kind()) {
            return false;
        }
        let content = event.event.content.to_lowercase();
        content.split(|c: char| !c.is_alphanumeric()).any(|word| self.words.contains(word))
            || self.phrases.iter().any(|phrase| content.contains(phrase.as_str()))
    }
}

/// The newest mute list of every pubkey the push side serves.
#[derive(Default)]
pub struct MuteLists {
    lists: RwLock<HashMap<Hash32, Arc<MuteList>>>,
    /// What every pubkey without a list shares (most have none; a list each would cost every registration).
    none: Arc<MuteList>,
}

impl MuteLists {
    /// Keeps the list if it is newer than the one known for its author; returns whether it was kept.
    pub fn offer(&self, event: &VerifiedEvent) -> bool {
        if event.kind() != MUTE_LIST_KIND {
            return false;
        }
        let list = MuteList::from_event(event);
        let mut lists = self.lists.write().expect("mute lists lock");
        match lists.get(event.pubkey()) {
            Some(known) if !list.is_newer_than(known) => false,
            _ => {
                lists.insert(*event.pubkey(), Arc::new(list));
                true
            }
        }
    }

    /// Records that `pubkey`'s stored list was looked for, found or not (an empty list, replaced by any real one).
    /// Registered pubkeys are recorded in the registry's index instead (`Audience::load_lists`).
    pub fn mark_checked(&self, pubkey: &Hash32) {
        self.lists.write().expect("mute lists lock").entry(*pubkey).or_insert_with(|| self.none.clone());
    }

    pub fn knows(&self, pubkey: &Hash32) -> bool {
        self.lists.read().expect("mute lists lock").contains_key(pubkey)
    }

    /// Whether `pubkey` muted what this event is or is about.
    pub fn silences(&self, pubkey: &Hash32, event: &VerifiedEvent) -> bool {
        let list = self.lists.read().expect("mute lists lock").get(pubkey).cloned();
        list.is_some_and(|list| list.silences(event))
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;

    use super::*;

    fn event(keys: &Keys, kind: u16, content: &str, tags: &[&[&str]], created_at: u64) -> VerifiedEvent {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        let event = EventBuilder::new(Kind::from(kind), content)
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at))
            .finalize(keys)
            .unwrap();
        VerifiedEvent::new(event)
    }

    #[test]
    fn each_kind_of_entry_silences() {
        let (me, spammer, friend) = (Keys::generate(), Keys::generate(), Keys::generate());
        let thread = "ab".repeat(32);
        let list = event(
            &me,
            MUTE_LIST_KIND,
            "",
            &[
                &["p", &spammer.public_key().to_hex()],
                &["e", &thread],
                &["t", "Politics"],
                &["word", "Crypto"],
                &["word", "buy now"],
            ],
            1000,
        );
        let lists = MuteLists::default();
        assert!(lists.offer(&list));
        let me = me.public_key().to_bytes();
        let silenced = |e: &VerifiedEvent| lists.silences(&me, e);
        assert!(silenced(&event(&spammer, 1, "hello", &[], 2000)));
        assert!(silenced(&event(&friend, 1, "reply", &[&["e", &thread]], 2000)));
        assert!(silenced(&event(&friend, 1, "news", &[&["t", "politics"]], 2000)));
        assert!(silenced(&event(&friend, 1, "All about CRYPTO!", &[], 2000)));
        assert!(silenced(&event(&friend, 1, "Buy now, while it lasts", &[], 2000)));
        assert!(!silenced(&event(&friend, 1, "cryptography is fine", &[], 2000)));
        assert!(!silenced(&event(&friend, 4, "crypto", &[], 2000)), "encrypted content is never read");
        assert!(!silenced(&event(&friend, 1, "hello", &[&["t", "nostr"]], 2000)));
    }

    #[test]
    fn only_a_newer_list_replaces() {
        let me = Keys::generate();
        let spammer = Keys::generate().public_key().to_hex();
        let lists = MuteLists::default();
        assert!(lists.offer(&event(&me, MUTE_LIST_KIND, "", &[&["p", &spammer]], 2000)));
        assert!(!lists.offer(&event(&me, MUTE_LIST_KIND, "", &[], 1000)));
        assert!(lists.offer(&event(&me, MUTE_LIST_KIND, "", &[], 3000)));
        assert!(lists.knows(&me.public_key().to_bytes()));
    }
}
