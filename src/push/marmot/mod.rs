//! Marmot push (marmot-push-v1): apps of the Marmot protocol (MLS group chat over Nostr) wake each other's phones by
//! gift-wrapping a trigger to our push key, its content the members' device tokens, each encrypted to that key.
//! Opening a trigger and checking its shape (`trigger`), then each token on its own (`token`), within the bounds of
//! `guard`, and a silent wake to each token (`wake`); counted by outcome (`stats`).
//!
//! Nothing of a trigger is kept beyond its wakes: a decrypted token lives in memory for its send and its few
//! retries (never the job table, a log line, a metric label or a file); the database keeps only the SHA-256 of a
//! trigger's content, for the replay window, so that no node acts on it twice.

pub(crate) mod guard;
pub(crate) mod stats;
pub(crate) mod token;
pub(crate) mod trigger;
pub(crate) mod wake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use nostr::event::{EventBuilder, Kind, Tag};
use nostr::key::Keys;
use nostr::prelude::FinalizeEvent;
use nostr::types::Timestamp;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::hooks::RemoteEvents;
use crate::lifecycle::Lifecycle;
use crate::protocol::event::GIFT_WRAP_KIND;
use crate::protocol::{Filter, SharedEvent, VerifiedEvent};
use crate::push::delivery::Delivery;
use crate::store::Sightings;
use crate::upstream::{check_relay_url, normalise};
use guard::{Guard, Refused};
use stats::{MarmotStats, TriggerOutcome, WakeOutcome};
use token::Token;
use wake::WakeStyle;

/// The kind of the push key's inbox list (NIP-17's DM relays), where senders look for where to publish triggers.
pub(crate) const INBOX_LIST_KIND: u16 = 10050;
/// How often the replay memory and the per-token rates are tidied.
const TIDY_INTERVAL: Duration = Duration::from_secs(60);

pub struct Marmot {
    keys: Keys,
    pubkey_hex: String,
    guard: Guard,
    delivery: Arc<Delivery>,
    style: WakeStyle,
    pub(crate) stats: MarmotStats,
    lifecycle: Lifecycle,
    clock: Clock,
    /// This relay, then `[push.marmot] inbox_relays`: the inbox list's relays.
    inbox: Vec<String>,
    max_content_length: usize,
}

impl Marmot {
    pub(crate) fn start(
        config: &Config,
        keys: Keys,
        delivery: Arc<Delivery>,
        sightings: Arc<dyn Sightings>,
        lifecycle: &Lifecycle,
        clock: Clock,
    ) -> Arc<Self> {
        let marmot = &config.push.marmot;
        let style = WakeStyle {
            apns_topic: marmot.apns_topic.clone(),
            alert: Some(marmot.alert.clone()).filter(|text| !text.is_empty()),
            max_attempts: marmot.max_attempts,
        };
        let inbox = inbox_relays(config);
        let service = Arc::new(Self {
            pubkey_hex: keys.public_key().to_hex(),
            keys,
            guard: Guard::new(marmot, sightings),
            delivery,
            style,
            stats: MarmotStats::default(),
            lifecycle: lifecycle.clone(),
            clock,
            inbox,
            max_content_length: marmot.max_trigger_content_length,
        });
        lifecycle.spawn(service.clone().tidy(lifecycle.shutdown()));
        service
    }

    /// Whether the event is a trigger's gift wrap: kind 1059, addressed to the push key.
    pub fn is_trigger(&self, event: &VerifiedEvent) -> bool {
        event.kind() == GIFT_WRAP_KIND && event.indexed_tags().any(|(l, v)| l == 'p' && v == self.pubkey_hex)
    }

    /// The most content a trigger's gift wrap may carry (`[push.marmot] max_trigger_content_length`).
    pub fn max_content_length(&self) -> usize {
        self.max_content_length
    }

    /// Takes a trigger, from a client or a watched inbox relay: handled in the background, within the budget
    /// and the places in flight (both checked here, before anything is decrypted). Its sender learns nothing of
    /// what became of it.
    pub fn take(self: &Arc<Self>, wrap: SharedEvent) {
        match self.guard.admit() {
            Ok(permit) => {
                self.lifecycle.spawn(self.clone().handle(wrap, permit));
            }
            Err(refused) => self.stats.trigger(outcome_of(refused), ""),
        }
    }

    async fn handle(self: Arc<Self>, wrap: SharedEvent, _in_flight: OwnedSemaphorePermit) {
        let keys = self.keys.clone();
        let turn = self.guard.cpu().await;
        let opened = tokio::task::spawn_blocking(move || trigger::open(&keys, &wrap.event)).await;
        drop(turn);
        let content = match opened {
            Ok(Ok(content)) => content,
            Ok(Err(malformed)) => return self.stats.trigger(TriggerOutcome::Malformed, malformed.label()),
            Err(_) => return self.stats.trigger(TriggerOutcome::Failed, ""),
        };
        if let Err(refused) = self.guard.first_sighting(&content, self.clock.db_secs()).await {
            return self.stats.trigger(outcome_of(refused), "");
        }
        let keys = self.keys.clone();
        let turn = self.guard.cpu().await;
        let tokens = tokio::task::spawn_blocking(move || {
            // Padding chunks and chunks for other servers fail to open, by design: skipped alone.
            trigger::chunks(&content)
                .filter_map(|chunk| token::decrypt(keys.secret_key(), chunk).ok())
                .collect::<Vec<_>>()
        })
        .await;
        drop(turn);
        let Ok(tokens) = tokens else { return self.stats.trigger(TriggerOutcome::Failed, "") };
        let tokens = self.within_rate(tokens);
        if tokens.is_empty() {
            return self.stats.trigger(TriggerOutcome::NoToken, "");
        }
        self.stats.trigger(TriggerOutcome::Woken, "");
        let senders = &self.delivery.senders;
        join_all(tokens.iter().map(|token| async {
            let outcome = wake::wake(senders, &self.style, token).await;
            self.stats.wake(token.platform().label(), outcome);
        }))
        .await;
    }

    /// The tokens under their wake rate, each once (a trigger may carry one device's token many times, each a
    /// fresh encryption); the others are counted and dropped.
    fn within_rate(&self, tokens: Vec<Token>) -> Vec<Token> {
        let mut seen = std::collections::HashSet::new();
        let mut may = Vec::with_capacity(tokens.len());
        for token in tokens {
            let key = self.guard.key_of(&token);
            if !seen.insert(key) {
                continue;
            }
            if self.guard.may_wake(&key) {
                may.push(token);
            } else {
                self.stats.wake(token.platform().label(), WakeOutcome::RateLimited);
            }
        }
        may
    }

    /// The push key's inbox list (kind 10050): this relay and the configured inbox relays, signed now.
    pub fn inbox_list(&self) -> SharedEvent {
        let tags = self.inbox.iter().map(|url| Tag::parse(["relay", url.as_str()]).expect("a relay tag parses"));
        let event = EventBuilder::new(Kind::Custom(INBOX_LIST_KIND), "")
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(self.clock.secs()))
            .finalize(&self.keys)
            .expect("signing with the push key");
        Arc::new(VerifiedEvent::new(event))
    }

    /// What the upstream watchers follow for Marmot: each configured inbox relay, for gift wraps to the push key,
    /// live only (`limit: 0` stays through reconnects: a watcher that asked again for the two days gift wraps reach
    /// back would wake every device of every trigger again, each time the relay flapped).
    pub fn watches(&self) -> BTreeMap<String, Vec<Filter>> {
        let filter = Filter {
            kinds: Some(vec![GIFT_WRAP_KIND]),
            tags: [('p', vec![self.pubkey_hex.clone()])].into_iter().collect(),
            limit: Some(0),
            ..Filter::default()
        };
        self.inbox.iter().skip(1).map(|url| (url.clone(), vec![filter.clone()])).collect()
    }

    async fn tidy(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TIDY_INTERVAL) => {}
            }
            if let Err(e) = self.guard.tidy(self.clock.db_secs()).await {
                tracing::warn!("cannot forget old Marmot trigger hashes: {e}");
            }
        }
    }
}

/// Watched events, triggers first: a gift wrap to the push key from an inbox relay is Marmot's; everything else goes
/// on to `then` (the matcher, or the write path with `[upstream] store_events`).
pub struct TriggersFirst {
    pub marmot: Arc<Marmot>,
    pub then: Arc<dyn RemoteEvents>,
}

impl RemoteEvents for TriggersFirst {
    fn remote_event(&self, event: SharedEvent) {
        if self.marmot.is_trigger(&event) {
            self.marmot.take(event);
        } else {
            self.then.remote_event(event);
        }
    }
}

fn outcome_of(refused: Refused) -> TriggerOutcome {
    match refused {
        Refused::OverBudget => TriggerOutcome::OverBudget,
        Refused::Busy => TriggerOutcome::Busy,
        Refused::Duplicate => TriggerOutcome::Duplicate,
    }
}

/// This relay, then the configured inbox relays the watchers can follow: an inbox list naming a relay nobody
/// watches would send triggers where they are lost.
fn inbox_relays(config: &Config) -> Vec<String> {
    let own = &config.server.public_url;
    let mut inbox = vec![own.clone()];
    for url in config.push.marmot.inbox_relays.iter().filter(|url| normalise(url) != normalise(own)) {
        if !config.upstream.enabled {
            tracing::warn!(relay = %url, "[push.marmot] inbox_relays needs [upstream] enabled: left out of the inbox list");
        } else if let Err(why) = check_relay_url(url, &config.upstream) {
            tracing::warn!(relay = %url, "[push.marmot] inbox_relays: left out of the inbox list: {why}");
        } else if !inbox.contains(url) {
            inbox.push(url.clone());
        }
    }
    inbox
}

/// The sender's side, written from the spec for the integration tests and shared with these unit tests, so that it
/// is written once and the decoder is never tested against itself.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/it/common/marmot.rs"]
mod encoder;
