//! Push: the relay as a push server (see README, "Push"). It consumes kind 22456 registrations addressed to the
//! relay's push key and keeps devices and presence; it turns accepted events into durable push jobs (in the same
//! commit as the event) and delivers them through APNs, FCM and UnifiedPush. It hooks into the relay through
//! `relay::EventConsumer`, and into the write path through `store::jobs::JobSource` and
//! `store::writer::AcceptListener`.

mod bookkeeping;
pub mod device;
pub mod dispatch;
pub mod inbox;
pub mod index;
pub mod jobs;
pub mod keys;
pub mod mutes;
pub mod registration;
pub mod registry;
pub mod senders;
pub mod text;
pub mod zap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use governor::DefaultKeyedRateLimiter;
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip19::ToBech32;
use tokio::sync::{Notify, mpsc};

use crate::config::{Config, PushConfig};
use crate::hooks::{EventConsumer, RemoteEvents, SharedRegistrations, WatchSource};
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, KindClass, SharedEvent, VerifiedEvent};
use crate::store::jobs::{JobQueue, JobSource, NewJob};
use crate::store::writer::AcceptListener;
use crate::store::{EventStore, Store, Visibility, unix_now_ms};
use bookkeeping::Bookkeeper;
use dispatch::PushStats;
use inbox::{INBOX_RELAYS_KIND, InboxRelays};
use jobs::Matcher;
use mutes::{MUTE_LIST_KIND, MuteLists};
use registry::{Applied, ApplyError, Registry};
use senders::Senders;

/// The kind of the encrypted registration events the app sends.
pub const REGISTRATION_KIND: u16 = 22456;

pub struct PushService {
    keys: Keys,
    /// The push pubkey as it appears in `p` tags.
    pubkey_hex: String,
    registry: Registry,
    /// Registered pubkeys' mute lists, consulted by the matcher.
    mutes: MuteLists,
    /// Registered pubkeys' NIP-17 DM inbox relays, which the watch plan adds.
    inbox: InboxRelays,
    config: PushConfig,
    /// `[auth] read_restricted_kinds`, as at start: who may be pushed an event is who may read it.
    read_restricted_kinds: Vec<u16>,
    /// Judges the relays registrations name, which the upstream watchers will dial.
    upstream: crate::config::UpstreamConfig,
    /// Notified when what the upstream watchers should watch may have changed.
    plan_changed: Arc<Notify>,
    /// Notification titles name the relay.
    relay_name: String,
    queue: Arc<dyn JobQueue>,
    /// Records delivery outcomes in the queue, several to a transaction.
    bookkeeper: Bookkeeper,
    /// For the authors' profile names.
    events: Arc<dyn EventStore>,
    senders: Senders,
    /// The Web Push public key browsers subscribe with, when Web Push is on.
    vapid_public_key: Option<String>,
    /// Woken when jobs were added, so that delivery does not wait for the next poll.
    wake: Arc<Notify>,
    /// Jobs of ephemeral and watched events, on their way to the queue through one task (`intake`): bounded, so
    /// that a flood of such events holds no more than `[push] max_pending_intake` batches.
    intake: mpsc::Sender<Vec<NewJob>>,
    /// Set when a stored event's commit carried jobs: only then does its commit wake the delivery loop (whose look
    /// at the queue is a write, which would otherwise follow every batch of the writer).
    jobs_committed: AtomicBool,
    device_limiter: DefaultKeyedRateLimiter<String>,
    stats: PushStats,
}

impl PushService {
    /// Loads (or creates) the push key, the registrations stored in the relay's database, and the senders.
    pub async fn start(config: &Config, store: Arc<dyn Store>) -> Result<Arc<Self>, String> {
        let push = &config.push;
        let keys = keys::load_or_create(&push.secret_key_file)?;
        let registry = Registry::open(store.clone(), push.clone())
            .await
            .map_err(|e| format!("cannot open push registrations: {e}"))?;
        let pubkey_hex = keys.public_key().to_hex();
        let (webpush, vapid_public_key) = match web_push_sender(config)? {
            Some((sender, public_key)) => (Some(sender), Some(public_key)),
            None => (None, None),
        };
        let wake = Arc::new(Notify::new());
        let (intake, waiting) = mpsc::channel(push.max_pending_intake.max(1));
        tokio::spawn(take_in(store.clone(), wake.clone(), waiting));
        let service = Arc::new(Self {
            keys,
            pubkey_hex,
            registry,
            mutes: MuteLists::default(),
            inbox: InboxRelays::default(),
            config: push.clone(),
            read_restricted_kinds: config.auth.read_restricted_kinds.clone(),
            upstream: config.upstream.clone(),
            plan_changed: Arc::new(Notify::new()),
            relay_name: config.relay.name.clone(),
            queue: store.clone(),
            bookkeeper: Bookkeeper::start(store.clone()),
            events: store,
            senders: Senders::from_config(push, webpush)?,
            vapid_public_key,
            wake,
            intake,
            jobs_committed: AtomicBool::new(false),
            device_limiter: dispatch::device_limiter(push.device_burst, Duration::from_secs(push.device_refill_secs)),
            stats: PushStats::default(),
        });
        service.load_lists(&service.registry.pubkeys()).await;
        Ok(service)
    }

    fn matcher(&self) -> Matcher<'_> {
        Matcher {
            registry: &self.registry,
            mutes: &self.mutes,
            max_event_age_secs: self.config.max_event_age_secs,
            read_restricted_kinds: &self.read_restricted_kinds,
        }
    }

    /// Reads the newest stored mute list and DM inbox relay list of each pubkey (those published here; watched
    /// relays send theirs later). A pubkey without a mute list is remembered as checked, so that its heartbeats do
    /// not ask again.
    async fn load_lists(&self, pubkeys: &[Hash32]) {
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
                self.mutes.mark_checked(pubkey);
            }
        }
    }

    /// Keeps the mute lists and DM inbox relays of registered pubkeys among accepted or remote events.
    fn learn_lists(&self, events: &[SharedEvent]) {
        for event in events.iter().filter(|e| [MUTE_LIST_KIND, INBOX_RELAYS_KIND].contains(&e.kind())) {
            if self.registry.has_pubkey(event.pubkey()) {
                self.offer_list(event);
            }
        }
    }

    fn offer_list(&self, event: &VerifiedEvent) {
        self.mutes.offer(event);
        let check = |url: &str| crate::upstream::check_relay_url(url, &self.upstream).is_ok();
        if self.inbox.offer(event, self.config.max_relays, check) {
            self.plan_changed.notify_one();
        }
    }

    pub fn stats(&self) -> &PushStats {
        &self.stats
    }

    /// Jobs not yet delivered, retried or dropped.
    pub async fn pending_jobs(&self) -> u64 {
        self.queue.pending().await.unwrap_or(0)
    }

    /// The relay's push keypair, which also signs its NIP-42 AUTH on watched relays.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// What the NIP-11 document says of push: the VAPID public key web clients subscribe with.
    pub fn nip11(&self) -> serde_json::Value {
        serde_json::json!({"vapid_public_key": self.vapid_public_key})
    }

    pub fn npub(&self) -> String {
        self.keys.public_key().to_bech32().expect("a public key always encodes")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn is_addressed_to_us(&self, event: &SharedEvent) -> bool {
        event.kind() == REGISTRATION_KIND && event.indexed_tags().any(|(l, v)| l == 'p' && v == self.pubkey_hex)
    }

    async fn register(&self, event: &SharedEvent) -> (bool, String) {
        let now = unix_now();
        let window = self.config.registration_window_secs as i64;
        let created_at = crate::store::db_time(event.created_at());
        if (created_at - now).abs() > window {
            return (false, format!("invalid: created_at must be within {window} seconds of now"));
        }
        let secret = self.keys.secret_key().clone();
        let limits = self.config.clone();
        let upstream = self.upstream.clone();
        let shared = event.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let check_relay = |relay: &str| crate::upstream::check_relay_url(relay, &upstream).map(|_| ());
            registration::decrypt(&shared.event, &secret)
                .and_then(|plain| registration::parse(&plain, &limits, check_relay))
        })
        .await
        .unwrap_or_else(|_| Err("error: could not read the registration".into()));
        let update = match parsed {
            Ok(update) => update,
            Err(reason) => return (false, reason),
        };
        let notes = update.notes.join("; ");
        match self.registry.apply(*event.pubkey(), created_at, update, now).await {
            Ok(Applied::Applied) => {
                if !self.mutes.knows(event.pubkey()) {
                    self.load_lists(&[*event.pubkey()]).await;
                }
                self.plan_changed.notify_one();
                (true, notes)
            }
            Ok(Applied::Replay) => (true, "duplicate: a newer registration was already applied".into()),
            Err(ApplyError::Refused(reason)) => (false, reason),
            Err(ApplyError::Database(e)) => {
                tracing::error!("saving a registration failed: {e}");
                (false, "error: could not save the registration".into())
            }
        }
    }
}

/// Inside the writer's transaction: the jobs a stored event causes, committed with it.
impl JobSource for PushService {
    fn jobs_for(&self, event: &SharedEvent) -> Vec<NewJob> {
        let jobs = self.matcher().jobs_for(event, unix_now());
        if !jobs.is_empty() {
            self.jobs_committed.store(true, Ordering::Relaxed);
        }
        jobs
    }
}

/// After the commit: wake the delivery loop. Ephemeral events were not written, so their jobs are queued here.
impl AcceptListener for PushService {
    fn accepted(&self, events: &[SharedEvent]) {
        self.learn_lists(events);
        let ephemeral: Vec<NewJob> = events
            .iter()
            .filter(|e| e.class() == KindClass::Ephemeral)
            .flat_map(|e| self.matcher().jobs_for(e, unix_now()))
            .collect();
        self.enqueue_later(ephemeral);
    }

    /// Another node made the jobs (it matched the event in its commit); only mute lists are of interest here.
    fn accepted_elsewhere(&self, events: &[SharedEvent]) {
        self.learn_lists(events);
    }
}

/// Registrations made through other nodes on the same PostgreSQL database.
impl SharedRegistrations for Arc<PushService> {
    fn changed(&self, pubkey: Hash32) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(e) = service.registry.reload(&pubkey).await {
                tracing::error!("cannot reload changed registrations: {e}");
            }
            if !service.mutes.knows(&pubkey) {
                service.load_lists(&[pubkey]).await;
            }
            service.plan_changed.notify_one();
        });
    }

    fn resync(&self) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(e) = service.registry.load().await {
                tracing::error!("cannot reload registrations: {e}");
            }
            service.plan_changed.notify_one();
        });
    }
}

/// Events from watched relays go to the same matcher and queue; the queue's key (event id and device) makes an
/// event seen here and there push once.
impl RemoteEvents for PushService {
    fn remote_event(&self, event: SharedEvent) {
        self.learn_lists(std::slice::from_ref(&event));
        self.enqueue_later(self.matcher().jobs_for(&event, unix_now()));
    }
}

impl WatchSource for PushService {
    fn watch_plan(&self) -> BTreeMap<String, Vec<Filter>> {
        let limits = index::PlanLimits {
            max_values: self.upstream.max_values_per_filter,
            per_pubkey: self.upstream.max_relays_per_pubkey,
            relays: self.upstream.max_connections,
        };
        self.registry.watch_plan(unix_now(), limits, &|pubkey| self.inbox.of(pubkey))
    }

    fn plan_changed(&self) -> Arc<Notify> {
        self.plan_changed.clone()
    }
}

impl PushService {
    /// Queues jobs without making the caller wait (publishing never waits on the queue), then wakes the loop; with
    /// none, wakes it only if a commit since the last wake carried jobs.
    fn enqueue_later(&self, jobs: Vec<NewJob>) {
        if jobs.is_empty() {
            if self.jobs_committed.swap(false, Ordering::Relaxed) {
                self.wake.notify_one();
            }
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(jobs)) = self.intake.try_send(jobs) {
            tracing::warn!(jobs = jobs.len(), "pushes dropped: [push] max_pending_intake batches are waiting");
            let dropped = jobs.len() as u64;
            let reason = "intake_full";
            metrics::counter!(crate::metrics::PUSH_JOBS, "service" => "any", "outcome" => "dropped", "reason" => reason)
                .increment(dropped);
        }
    }
}

/// Queues the jobs of ephemeral and watched events, as many batches to a transaction as are waiting, and wakes the
/// delivery loop. Ends when the push service is dropped.
async fn take_in(queue: Arc<dyn Store>, wake: Arc<Notify>, mut waiting: mpsc::Receiver<Vec<NewJob>>) {
    let mut batches = Vec::new();
    while waiting.recv_many(&mut batches, 64).await > 0 {
        let jobs: Vec<NewJob> = batches.drain(..).flatten().collect();
        if let Err(e) = queue.enqueue(&jobs, unix_now_ms()).await {
            tracing::error!(jobs = jobs.len(), "cannot queue pushes: {e}");
        }
        wake.notify_one();
    }
}

#[async_trait]
impl EventConsumer for PushService {
    async fn consume(&self, event: &SharedEvent) -> Option<(bool, String)> {
        if !self.is_addressed_to_us(event) {
            return None;
        }
        Some(self.register(event).await)
    }
}

/// The Web Push sender and its public key, unless no VAPID subject can be named (then browsers get no pushes).
fn web_push_sender(config: &Config) -> Result<Option<(senders::WebPushSender, String)>, String> {
    let webpush = &config.push.webpush;
    let subject = match webpush.subject.as_str() {
        "" => match config.server.public_url.strip_prefix("wss://") {
            Some(host) => format!("https://{}", host.split('/').next().unwrap_or(host)),
            None => {
                tracing::warn!("Web Push is off: set [push.webpush] subject (a mailto: or https: URL)");
                return Ok(None);
            }
        },
        subject => subject.to_owned(),
    };
    let vapid = keys::load_or_create_vapid(&webpush.vapid_key_file)?;
    let sender = senders::WebPushSender::new(
        vapid.signer,
        subject,
        Duration::from_secs(webpush.timeout_secs),
        config.push.unifiedpush.allow_private_addresses,
    )?;
    Ok(Some((sender, vapid.public_key)))
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[async_trait]
impl crate::report::Reporter for PushService {
    async fn report(&self) -> crate::report::Section {
        use std::sync::atomic::Ordering::Relaxed;
        let now = unix_now() as u64;
        let (registrations, online, offline) = self.registry.census(unix_now());
        let mut rows = vec![
            ("Push pubkey".to_owned(), self.npub()),
            ("Registered devices".to_owned(), registrations.to_string()),
            ("Pubkeys online / offline".to_owned(), format!("{online} / {offline}")),
            ("Pushes waiting".to_owned(), self.pending_jobs().await.to_string()),
            (
                "Sent / merged / retried / dropped".to_owned(),
                format!(
                    "{} / {} / {} / {}",
                    self.stats.sent.load(Relaxed),
                    self.stats.merged.load(Relaxed),
                    self.stats.retried.load(Relaxed),
                    self.stats.dropped.load(Relaxed)
                ),
            ),
            ("Dead tokens removed".to_owned(), self.stats.dead_tokens.load(Relaxed).to_string()),
        ];
        for (service, health) in self.stats.health() {
            let success = health.last_success.map_or("never".to_owned(), |t| crate::report::ago(t, now));
            let error =
                health.last_error.map_or("none".to_owned(), |(t, e)| format!("{} ({e})", crate::report::ago(t, now)));
            rows.push((format!("Sender {service}"), format!("last success {success}; last error {error}")));
        }
        crate::report::Section {
            title: "Push".into(),
            rows,
            chart: Some(crate::report::Chart {
                label: "pushes sent per minute".into(),
                per_minute: self.stats.timeline.series(),
            }),
        }
    }

    fn set_gauges(&self) {
        let (registrations, online, offline) = self.registry.census(unix_now());
        metrics::gauge!(crate::metrics::REGISTRATIONS).set(registrations as f64);
        metrics::gauge!(crate::metrics::PUBKEYS, "presence" => "online").set(online as f64);
        metrics::gauge!(crate::metrics::PUBKEYS, "presence" => "offline").set(offline as f64);
    }
}
