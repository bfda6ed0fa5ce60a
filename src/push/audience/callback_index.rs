//! The NIP-9a subscriptions in force, in memory, keyed (pubkey, `d`). The stored kind 30390 events are the truth
//! (replacement, deletion, expiration and author-only serving are the store's and the relay's); this index is read
//! from them at start and follows the events accepted after.
//!
//! Matching runs inside the writer's commit, for every event, so it must not grow with what strangers registered:
//! each filter is filed under its most selective field (ids, else authors, else a tag's values, else its first search
//! word, else kinds), as the relay's live subscriptions are, and an event is checked only against the
//! subscriptions filed under its id, author, tag values, words and kind. (500 subscriptions each carrying a
//! 60,000-word search, scanned whole for every event, once held a bystander's `OK` for 2.3 s.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use super::subscription::{self as nip9a, FilterBounds, SUBSCRIPTION_KIND, Subscription};
use crate::config::PushConfig;
use crate::protocol::Refusal;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::protocol::filter_index::{Candidates, FilterIndex};
use crate::protocol::search::ContentWords;
use crate::protocol::{Filter, VerifiedEvent};
use crate::store::{EventStore, Visibility};

/// A subscription's key: its author and its `d`.
type SubscriptionKey = (Hash32, String);

pub struct CallbackIndex {
    /// This relay's normalised public URL: what `relay` tags must name, and what a POST says.
    relay_url: String,
    config: PushConfig,
    bounds: FilterBounds,
    inner: RwLock<Inner>,
}

/// The subscriptions, and where their filters are filed. Ids, authors and tag values name what an event is about; a
/// word or a kind only what it is like, so subscriptions found through them come after the others (`matching`).
#[derive(Default)]
struct Inner {
    subscriptions: HashMap<SubscriptionKey, Arc<Subscription>>,
    filed: FilterIndex<SubscriptionKey>,
}

impl Inner {
    fn insert(&mut self, key: SubscriptionKey, subscription: Arc<Subscription>) {
        self.remove(&key);
        for filter in &subscription.filters {
            self.filed.file(&key, filter, true);
        }
        self.subscriptions.insert(key, subscription);
    }

    fn remove(&mut self, key: &SubscriptionKey) -> Option<Arc<Subscription>> {
        let subscription = self.subscriptions.remove(key)?;
        for filter in &subscription.filters {
            self.filed.file(key, filter, false);
        }
        Some(subscription)
    }

    /// Removes every subscription `ends` picks; returns them.
    fn remove_where(&mut self, ends: impl Fn(&SubscriptionKey, &Subscription) -> bool) -> Vec<Arc<Subscription>> {
        let keys: Vec<SubscriptionKey> =
            self.subscriptions.iter().filter(|(k, s)| ends(k, s)).map(|(k, _)| k.clone()).collect();
        keys.iter().filter_map(|key| self.remove(key)).collect()
    }
}

impl CallbackIndex {
    pub fn new(public_url: &str, config: PushConfig, bounds: FilterBounds) -> Self {
        let relay_url = nip9a::normalise_relay_url(public_url).unwrap_or_else(|| public_url.to_owned());
        Self { relay_url, config, bounds, inner: RwLock::default() }
    }

    pub fn relay_url(&self) -> &str {
        &self.relay_url
    }

    /// `[push] max_callbacks_per_host`: what one event may make the relay POST to one host.
    pub fn max_per_host(&self) -> usize {
        self.config.max_callbacks_per_host
    }

    /// Reads a kind 30390 event as a subscription to this relay, or says why it is not one.
    pub fn parse(&self, event: &VerifiedEvent) -> Result<Subscription, Refusal> {
        nip9a::parse(event, &self.relay_url, &self.config, &self.bounds)
    }

    /// Reads every stored subscription; ones that are not valid (stored before push was on, or imported) or have
    /// expired are left out.
    pub async fn load(&self, events: &dyn EventStore, now: u64) {
        let filter = Filter { kinds: Some(vec![SUBSCRIPTION_KIND]), ..Filter::default() };
        match events.query_filter(&filter, Visibility::default(), usize::MAX).await {
            Ok(found) => {
                for stored in found {
                    if let Some(event) = VerifiedEvent::from_stored(&stored.json) {
                        self.offer(&event, now);
                    }
                }
            }
            Err(e) => tracing::error!("cannot read NIP-9a subscriptions: {e}"),
        }
    }

    /// A kind 30390 event was accepted: the newest per (pubkey, `d`) is the subscription; a newer event that is not
    /// a valid subscription here ends the older one.
    pub fn offer(&self, event: &VerifiedEvent, now: u64) {
        let key = (*event.pubkey(), event.d_tag().to_owned());
        let mut inner = self.inner.write().expect("callback index lock");
        // Expired ones go here (NIP-40): the store stops serving them, and they no longer count against a cap.
        inner.remove_where(|_, s| s.is_expired(now));
        if let Some(known) = inner.subscriptions.get(&key)
            && (known.created_at, known.event_id) >= (event.created_at(), *event.id())
        {
            return;
        }
        match self.parse(event) {
            Ok(subscription) if !subscription.is_expired(now) => inner.insert(key, Arc::new(subscription)),
            Ok(_) => {
                inner.remove(&key);
            }
            Err(why) => {
                tracing::debug!("kind 30390 event not acted on: {why}");
                inner.remove(&key);
            }
        }
    }

    /// A NIP-09 deletion by its author ends the subscriptions it names: by id (`e`) or by address (`a`,
    /// `30390:<pubkey>:<d>`, for versions up to the deletion's time).
    pub fn forget_deleted(&self, deletion: &VerifiedEvent) {
        let author = deletion.pubkey();
        let mut inner = self.inner.write().expect("callback index lock");
        for tag in deletion.event.tags.iter().map(|t| t.as_slice()) {
            match (tag[0].as_str(), tag.get(1)) {
                ("e", Some(id)) => {
                    let Some(id) = parse_hash(id) else { continue };
                    inner.remove_where(|_, s| s.pubkey == *author && s.event_id == id);
                }
                ("a", Some(address)) => {
                    let mut parts = address.splitn(3, ':');
                    let (Some(kind), Some(pubkey), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
                        continue;
                    };
                    if kind != SUBSCRIPTION_KIND.to_string() || parse_hash(pubkey).as_ref() != Some(author) {
                        continue;
                    }
                    let key = (*author, d.to_owned());
                    if inner.subscriptions.get(&key).is_some_and(|s| s.created_at <= deletion.created_at()) {
                        inner.remove(&key);
                    }
                }
                _ => {}
            }
        }
    }

    /// NIP-62: the pubkey vanished.
    pub fn remove_pubkey(&self, pubkey: &Hash32) {
        self.inner.write().expect("callback index lock").remove_where(|(owner, _), _| owner == pubkey);
    }

    /// The callback is dead: every subscription posting to it ends. Returns them (their events are to be deleted).
    pub fn remove_callback(&self, callback: &str) -> Vec<Arc<Subscription>> {
        self.inner.write().expect("callback index lock").remove_where(|_, s| s.callback == callback)
    }

    pub fn has_callback(&self, callback: &str) -> bool {
        self.inner.read().expect("callback index lock").subscriptions.values().any(|s| s.callback == callback)
    }

    /// The pubkey's subscriptions in force other than the one with `d` `except_d` (which a new version would
    /// replace).
    pub fn count_of(&self, pubkey: &Hash32, except_d: &str, now: u64) -> usize {
        let inner = self.inner.read().expect("callback index lock");
        let counted = |((owner, d), s): &(&SubscriptionKey, &Arc<Subscription>)| {
            owner == pubkey && d != except_d && !s.is_expired(now)
        };
        inner.subscriptions.iter().filter(counted).count()
    }

    /// The subscriptions that want `event` (not expired, not the subscriber's own): first those that asked for it
    /// by its id, author or a tag, then those that asked by a word or its kind, each ordered by (pubkey, `d`).
    /// `spare_mentions`: see `Subscription::wants_sparing`.
    pub fn matching(&self, event: &VerifiedEvent, now: u64, spare_mentions: bool) -> Vec<Arc<Subscription>> {
        let inner = self.inner.read().expect("callback index lock");
        let words = ContentWords::new(event.kind(), &event.event.content);
        let Candidates { about, like } = inner.filed.candidates(event, &words);
        let wanted = |keys: HashSet<SubscriptionKey>| {
            let mut found: Vec<Arc<Subscription>> = keys
                .iter()
                .filter_map(|key| inner.subscriptions.get(key))
                .filter(|s| !s.is_expired(now) && s.wants_sparing(event, spare_mentions, &words))
                .cloned()
                .collect();
            found.sort_by(|a, b| (a.pubkey, &a.d).cmp(&(b.pubkey, &b.d)));
            found
        };
        let mut found = wanted(about);
        found.extend(wanted(like));
        found
    }

    /// Whether the pubkey's subscription with this `d` is a broad one (`Subscription::is_broad`).
    pub fn is_broad(&self, pubkey: &Hash32, d: &str) -> bool {
        let inner = self.inner.read().expect("callback index lock");
        inner.subscriptions.get(&(*pubkey, d.to_owned())).is_some_and(|s| s.is_broad())
    }

    /// The broad subscriptions in force.
    pub fn broad_count(&self) -> usize {
        self.inner.read().expect("callback index lock").subscriptions.values().filter(|s| s.is_broad()).count()
    }

    /// Whether the pubkey has a subscription with this `d` in force.
    pub fn has(&self, pubkey: &Hash32, d: &str) -> bool {
        self.inner.read().expect("callback index lock").subscriptions.contains_key(&(*pubkey, d.to_owned()))
    }

    pub fn has_pubkey(&self, pubkey: &Hash32) -> bool {
        self.inner.read().expect("callback index lock").subscriptions.keys().any(|(owner, _)| owner == pubkey)
    }

    /// The pubkeys that subscribed (their mute lists apply to their subscriptions).
    pub fn pubkeys(&self) -> Vec<Hash32> {
        let inner = self.inner.read().expect("callback index lock");
        let mut pubkeys: Vec<Hash32> = inner.subscriptions.keys().map(|(owner, _)| *owner).collect();
        pubkeys.sort_unstable();
        pubkeys.dedup();
        pubkeys
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("callback index lock").subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;

    use super::*;

    fn index() -> CallbackIndex {
        CallbackIndex::new("wss://relay.example.com", PushConfig::default(), FilterBounds::default())
    }

    fn signed(keys: &Keys, kind: u16, tags: &[&[&str]], created_at: u64) -> VerifiedEvent {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        let builder =
            EventBuilder::new(Kind::Custom(kind), "").tags(tags).custom_created_at(Timestamp::from_secs(created_at));
        VerifiedEvent::new(builder.finalize(keys).unwrap())
    }

    fn subscription(keys: &Keys, d: &str, kind: &str, callback: &str, created_at: u64) -> VerifiedEvent {
        let filter = format!(r#"{{"kinds":[{kind}]}}"#);
        let tags: &[&[&str]] =
            &[&["d", d], &["relay", "wss://relay.example.com/"], &["filter", &filter], &["callback", callback]];
        signed(keys, SUBSCRIPTION_KIND, tags, created_at)
    }

    #[test]
    fn the_newest_version_per_d_wins() {
        let (index, user, other) = (index(), Keys::generate(), Keys::generate());
        index.offer(&subscription(&user, "a", "1", "https://cb.example/1", 100), 100);
        index.offer(&subscription(&user, "a", "7", "https://cb.example/1", 90), 100);
        let note = signed(&other, 1, &[], 100);
        assert_eq!(index.matching(&note, 100, false).len(), 1, "an older version changes nothing");
        index.offer(&subscription(&user, "a", "7", "https://cb.example/1", 110), 100);
        assert!(index.matching(&note, 100, false).is_empty(), "the newer one replaced it");
        index.offer(&subscription(&user, "b", "1", "https://cb.example/2", 100), 100);
        assert_eq!((index.len(), index.count_of(user.public_key().as_bytes(), "a", 100)), (2, 1));
        assert!(index.matching(&signed(&user, 1, &[], 100), 100, false).is_empty(), "own events are skipped");
    }

    #[test]
    fn deletions_vanishing_and_dead_callbacks_end_subscriptions() {
        let (index, user, other) = (index(), Keys::generate(), Keys::generate());
        let by_id = subscription(&user, "a", "1", "https://cb.example/1", 100);
        index.offer(&by_id, 100);
        index.offer(&subscription(&user, "b", "1", "https://cb.example/2", 100), 100);
        index.offer(&subscription(&other, "c", "1", "https://cb.example/2", 100), 100);
        let id = by_id.event.id.to_hex();
        index.forget_deleted(&signed(&other, 5, &[&["e", &id]], 200));
        assert_eq!(index.len(), 3, "only the author deletes");
        index.forget_deleted(&signed(&user, 5, &[&["e", &id]], 200));
        assert_eq!(index.len(), 2);
        let address = format!("30390:{}:b", user.public_key().to_hex());
        index.forget_deleted(&signed(&user, 5, &[&["a", &address]], 50));
        assert_eq!(index.len(), 2, "a deletion older than the version does not cover it");
        index.forget_deleted(&signed(&user, 5, &[&["a", &address]], 200));
        assert_eq!(index.len(), 1);
        assert!(index.has_callback("https://cb.example/2"));
        assert_eq!(index.remove_callback("https://cb.example/2").len(), 1);
        assert!(index.is_empty());
        index.offer(&subscription(&user, "d", "1", "https://cb.example/3", 100), 100);
        index.remove_pubkey(user.public_key().as_bytes());
        assert!(index.is_empty());
    }

    #[test]
    fn expired_and_invalid_versions_end_the_subscription() {
        let (index, user, other) = (index(), Keys::generate(), Keys::generate());
        let tags: &[&[&str]] = &[
            &["d", "a"],
            &["relay", "wss://relay.example.com"],
            &["filter", r#"{"kinds":[1]}"#],
            &["callback", "https://cb.example/1"],
            &["expiration", "150"],
        ];
        index.offer(&signed(&user, SUBSCRIPTION_KIND, tags, 100), 100);
        assert_eq!(index.matching(&signed(&other, 1, &[], 100), 100, false).len(), 1);
        assert!(index.matching(&signed(&other, 1, &[], 100), 150, false).is_empty(), "expired");
        assert_eq!(index.count_of(user.public_key().as_bytes(), "b", 150), 0, "an expired one does not count");
        index.offer(&signed(&user, SUBSCRIPTION_KIND, &[&["d", "a"]], 200), 200);
        assert!(index.is_empty(), "an invalid newer version ends it");
    }
}
