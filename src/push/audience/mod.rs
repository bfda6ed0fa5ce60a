//! Who push serves and what they asked for: the registrations (`Registry`), their mute lists and NIP-17 DM inbox
//! relays, and the watch plan derived from them. Intake changes it, the write path's matcher and the delivery loop
//! read it; the upstream manager asks it what to watch (`WatchSource`).

pub mod callback_index;
pub mod inbox;
pub mod index;
pub mod mutes;
pub mod names;
pub mod registry;
pub mod subscription;
pub mod update;
pub mod values;
pub mod watch_plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::UpstreamConfig;
use crate::hooks::WatchSource;
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, SharedEvent, VerifiedEvent};
use crate::store::{EventStore, Visibility};
use callback_index::CallbackIndex;
use inbox::{INBOX_RELAYS_KIND, InboxRelays};
use mutes::{MUTE_LIST_KIND, MuteLists};
use names::Names;
use registry::Registry;

/// Profiles (NIP-01's kind 0), whose name notifications show.
const PROFILE_KIND: u16 = 0;

pub struct Audience {
    pub registry: Registry,
    /// NIP-9a subscriptions (kind 30390), read from the stored events.
    pub callbacks: CallbackIndex,
    /// Registered pubkeys' mute lists, consulted by the matcher.
    pub mutes: MuteLists,
    /// Registered pubkeys' NIP-17 DM inbox relays, which the watch plan adds.
    inbox: InboxRelays,
    /// Judges the relays registrations name, which the upstream watchers will dial; caps the watch plan.
    pub upstream: UpstreamConfig,
    /// `[push] max_relays`: inbox relays kept per pubkey.
    max_relays: usize,
    /// Notified when what the upstream watchers should watch may have changed.
    plan_changed: Arc<Notify>,
    /// Watched whatever the registrations say (Marmot's inbox relays), set once at start.
    always_watched: std::sync::OnceLock<BTreeMap<String, Vec<Filter>>>,
    /// For the lists and profiles published here.
    events: Arc<dyn EventStore>,
    /// Authors' names, as notifications show them.
    names: Names,
    pub clock: Clock,
}

impl Audience {
    pub fn new(
        registry: Registry,
        callbacks: CallbackIndex,
        upstream: UpstreamConfig,
        max_relays: usize,
        events: Arc<dyn EventStore>,
        clock: Clock,
    ) -> Self {
        let (mutes, inbox, plan_changed) = (MuteLists::default(), InboxRelays::default(), Arc::default());
        let always_watched = std::sync::OnceLock::new();
        let names = Names::default();
        Self {
            registry,
            callbacks,
            mutes,
            inbox,
            upstream,
            max_relays,
            plan_changed,
            always_watched,
            events,
            names,
            clock,
        }
    }

    /// Relays and filters the watchers follow whatever the registrations say (Marmot's inbox relays); set once.
    pub fn watch_always(&self, watches: BTreeMap<String, Vec<Filter>>) {
        let _ = self.always_watched.set(watches);
        self.plan_changed.notify_one();
    }

    /// Reads the stored NIP-9a subscriptions, then their subscribers' lists.
    pub async fn load_callbacks(&self) {
        self.callbacks.load(self.events.as_ref(), self.clock.secs()).await;
        self.load_lists(&self.callbacks.pubkeys()).await;
    }

    /// A NIP-9a callback is dead: every subscription posting to it ends, as if its author had deleted it.
    pub async fn remove_callback(&self, callback: &str) {
        for subscription in self.callbacks.remove_callback(callback) {
            if let Err(e) = self.events.remove_event(&subscription.event_id).await {
                tracing::error!("cannot delete a dead NIP-9a subscription: {e}");
            }
        }
    }

    /// The clock's time as the registry counts it (seconds, signed).
    pub fn now(&self) -> i64 {
        self.clock.db_secs()
    }

    /// Registrations or presence changed: the watchers may need another plan.
    pub fn changed(&self) {
        self.plan_changed.notify_one();
    }

    /// Reads the newest stored mute list and DM inbox relay list of each pubkey (those published here; watched
    /// relays send theirs later). Each pubkey is remembered as read, so that its heartbeats do not ask again: in the
    /// registry's entry of a registered pubkey, among the mute lists for the others (NIP-9a subscribers).
    pub async fn load_lists(&self, pubkeys: &[Hash32]) {
        for chunk in pubkeys.chunks(256) {
            let filter = Filter {
                authors: Some(chunk.to_vec()),
                kinds: Some(vec![MUTE_LIST_KIND, INBOX_RELAYS_KIND]),
                limit: Some(2 * chunk.len() as u64),
                ..Filter::default()
            };
            match self.events.query_filter(&filter, Visibility::default(), usize::MAX).await {
                Ok(found) => {
                    for stored in found {
                        if let Some(event) = VerifiedEvent::from_stored(&stored.json) {
                            self.offer_list(&event);
                        }
                    }
                }
                Err(e) => tracing::error!("cannot read mute lists: {e}"),
            }
            for pubkey in chunk {
                if !self.registry.mark_lists_read(pubkey) {
                    self.mutes.mark_checked(pubkey);
                }
            }
        }
    }

    /// Loads a pubkey's lists unless they were read already.
    pub async fn load_lists_once(&self, pubkey: &Hash32) {
        if !self.registry.lists_read(pubkey) && !self.mutes.knows(pubkey) {
            self.load_lists(&[*pubkey]).await;
        }
    }

    /// Keeps the mute lists and DM inbox relays of registered pubkeys among accepted or remote events; forgets the
    /// remembered names of the authors of profiles among them.
    pub fn learn_lists(&self, events: &[SharedEvent]) {
        for event in events.iter().filter(|e| e.kind() == PROFILE_KIND) {
            self.names.forget(event.pubkey());
        }
        for event in events.iter().filter(|e| [MUTE_LIST_KIND, INBOX_RELAYS_KIND].contains(&e.kind())) {
            if self.registry.has_pubkey(event.pubkey()) || self.callbacks.has_pubkey(event.pubkey()) {
                self.offer_list(event);
            }
        }
    }

    fn offer_list(&self, event: &VerifiedEvent) {
        self.mutes.offer(event);
        let check = |url: &str| crate::upstream::check_relay_url(url, &self.upstream).is_ok();
        if self.inbox.offer(event, self.max_relays, check) {
            self.changed();
        }
    }

    /// The author's display name from the newest stored profile (kind 0), for notification text.
    pub async fn author_name(&self, author: &Hash32) -> Option<String> {
        if let Some(name) = self.names.get(author) {
            return name;
        }
        let generation = self.names.generation();
        let filter = Filter {
            authors: Some(vec![*author]),
            kinds: Some(vec![PROFILE_KIND]),
            limit: Some(1),
            ..Filter::default()
        };
        let found = self.events.query_filter(&filter, Visibility::default(), usize::MAX).await.ok()?;
        let name = found.last().and_then(|profile| crate::push::text::profile_name(&profile.json));
        self.names.put(*author, name.clone(), generation);
        name
    }
}

impl WatchSource for Audience {
    fn watch_plan(&self) -> BTreeMap<String, Vec<Filter>> {
        let limits = watch_plan::PlanLimits {
            max_values: self.upstream.max_values_per_filter,
            per_pubkey: self.upstream.max_relays_per_pubkey,
            relays: self.upstream.max_connections,
        };
        let mut plan = self.registry.watch_plan(self.now(), limits, &|pubkey| self.inbox.of(pubkey));
        for (relay, filters) in self.always_watched.get().into_iter().flatten() {
            plan.entry(relay.clone()).or_default().extend(filters.iter().cloned());
        }
        plan
    }

    fn plan_changed(&self) -> Arc<Notify> {
        self.plan_changed.clone()
    }
}
