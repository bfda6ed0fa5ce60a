//! Watching other relays: registrations name the relays where their users' messages may land, and those events
//! never pass through this relay's write path. The manager keeps at most one client connection per remote relay,
//! shared by every registration that names it, with subscriptions built from the offline registrations; the events
//! that arrive are verified and handed to the push matcher.
//!
//! This module knows nothing of push: it asks a `WatchSource` what to watch and gives events to `RemoteEvents`.

pub mod parts;
mod remote;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::UpstreamConfig;
use crate::hooks::{RemoteEvents, WatchSource};
use crate::lifecycle::Lifecycle;
use crate::protocol::{Filter, KindClass, SharedEvent, VerifiedEvent};
use crate::report::{Reporter, Section};
use crate::store::Leases;
use crate::store::writer::Writer;
use parts::WatchAs;

/// Presence changes by timeout, not by message: the plan is also recomputed this often.
const REPLAN_EVERY: Duration = Duration::from_secs(30);

/// With `[upstream] store_events`, remote events take the ordinary write path: stored, fanned out to local
/// subscribers and matched in the same commit. Ephemeral ones are never stored and go straight on.
pub struct StoreFirst {
    pub writer: Writer,
    pub then: Arc<dyn RemoteEvents>,
    /// Writes under way, at most `[upstream] max_pending_writes`: a task each, so bounded.
    pub writes: Arc<tokio::sync::Semaphore>,
    /// Those tasks are the application's, which waits for them at shutdown.
    pub lifecycle: Lifecycle,
    /// Events this refuses are passed on but not stored: every stored event meets the relay's own limits and
    /// policy whatever its door (a blocked author's event, or one over the content limit, refused when published
    /// here, was once stored when a watched relay served it), and what concerns a NIP-29 group hosted here must take
    /// the group's own checks, which a remote relay's copy has not.
    pub storable: Option<Storable>,
}

/// Whether a remote event may be stored here, or why not (see `StoreFirst::storable`).
pub type Storable = Arc<dyn Fn(&VerifiedEvent) -> Result<(), crate::protocol::Refusal> + Send + Sync>;

impl RemoteEvents for StoreFirst {
    fn remote_event(&self, event: SharedEvent) {
        if event.class() == KindClass::Ephemeral {
            return self.then.remote_event(event);
        }
        if let Some(Err(why)) = self.storable.as_ref().map(|storable| storable(&event)) {
            tracing::debug!(id = %event.event.id, "a watched relay's event is not stored: {why}");
            return self.then.remote_event(event);
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            // Pushed all the same: the write path is busy, the notification need not wait for it.
            tracing::warn!(id = %event.event.id, "not stored: [upstream] max_pending_writes events are being written");
            return self.then.remote_event(event);
        };
        let writer = self.writer.clone();
        self.lifecycle.spawn(async move {
            if let Err(e) = writer.write(event).await {
                tracing::error!("cannot store an event from a watched relay: {e}");
            }
            drop(permit);
        });
    }
}

/// The state of one remote relay connection, for status and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteStatus {
    pub connected: bool,
    /// The subscriptions were sent and the relay answered EOSE for them.
    pub subscribed: bool,
    pub last_error: Option<String>,
    /// Events received and passed on.
    pub events: u64,
    /// CLOSED and NOTICE answers (auth-required: among them).
    pub refusals: u64,
    /// Subscriptions the remote refuses now (`"private [4, 1059]"`), with its reason; asked again after AUTH or
    /// after `refused_retry_secs`.
    pub refused: BTreeMap<String, String>,
    /// The remote accepted our NIP-42 AUTH (as the push key) on the current connection.
    pub authenticated: bool,
}

pub type StatusBoard = Arc<Mutex<BTreeMap<String, RemoteStatus>>>;

/// Checks a relay URL named in a registration, without DNS: `wss://` (or `ws://` when allowed), and not a
/// loopback or private literal address unless allowed.
pub fn check_relay_url(relay: &str, config: &UpstreamConfig) -> Result<url::Url, String> {
    if relay.len() > config.max_relay_url_length {
        return Err(format!("a relay URL is longer than {} characters", config.max_relay_url_length));
    }
    let url = url::Url::parse(relay).map_err(|_| format!("{relay:?} is not a URL"))?;
    match url.scheme() {
        "wss" => {}
        "ws" if config.allow_insecure => {}
        _ => return Err(format!("{relay:?} is not a wss:// URL")),
    }
    if !config.allow_private_addresses {
        crate::net::check_literal_host(&url)?;
    }
    Ok(url)
}

pub struct Upstream {
    config: UpstreamConfig,
    /// The key the watchers authenticate with, and the kinds they ask for apart.
    watch_as: Arc<WatchAs>,
    own_url: String,
    pub status: StatusBoard,
    /// Which node watches which relay, when several share one database.
    leases: Arc<dyn Leases>,
    node: String,
    clock: Clock,
}

impl Upstream {
    pub fn new(
        config: UpstreamConfig,
        watch_as: WatchAs,
        own_url: &str,
        leases: Arc<dyn Leases>,
        node: String,
        clock: Clock,
    ) -> Arc<Self> {
        let (own_url, status, watch_as) = (normalise(own_url), StatusBoard::default(), Arc::new(watch_as));
        Arc::new(Self { config, watch_as, own_url, status, leases, node, clock })
    }

    /// The relays of the plan this node holds (or now takes) the lease for; the others are another node's.
    async fn held(&self, plan: BTreeMap<String, Vec<Filter>>) -> BTreeMap<String, Vec<Filter>> {
        let now = self.clock.db_secs();
        let until = now + crate::store::db_time(self.config.lease_secs);
        let mut held = BTreeMap::new();
        for (url, filters) in plan {
            if normalise(&url) == self.own_url {
                continue; // its events reach the matcher through the write path already
            }
            match self.leases.hold(&url, &self.node, until, now).await {
                Ok(true) => {
                    held.insert(url, filters);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(relay = %url, "cannot renew the watch lease: {e}"),
            }
        }
        held
    }

    async fn release(&self, url: &str) {
        if let Err(e) = self.leases.release(url, &self.node).await {
            tracing::warn!(relay = %url, "cannot release the watch lease: {e}");
        }
    }

    /// Runs until shutdown: keeps one connection per watched relay, with up-to-date subscriptions.
    pub async fn run(self: Arc<Self>, source: Arc<dyn WatchSource>, sink: Arc<dyn RemoteEvents>, lifecycle: Lifecycle) {
        let shutdown = lifecycle.shutdown();
        let mut remotes: HashMap<String, (watch::Sender<Vec<Filter>>, JoinHandle<()>)> = HashMap::new();
        let wake = source.plan_changed();
        // Leases are renewed at every round, so rounds come at least three times per lease.
        let round = REPLAN_EVERY.min(Duration::from_secs(self.config.lease_secs.max(3) / 3));
        loop {
            let plan = self.held(source.watch_plan()).await;
            let mut dropped = Vec::new();
            remotes.retain(|url, (_, task)| {
                let keep = plan.contains_key(url) && !task.is_finished();
                if !keep {
                    task.abort();
                    self.status.lock().expect("status lock").remove(url);
                    dropped.push(url.clone());
                }
                keep
            });
            for url in dropped.iter().filter(|url| !plan.contains_key(*url)) {
                self.release(url).await;
            }
            for (url, filters) in plan {
                if let Some((plan_tx, _)) = remotes.get(&url) {
                    plan_tx.send_if_modified(|current| {
                        let changed = *current != filters;
                        *current = filters.clone();
                        changed
                    });
                    continue;
                }
                if remotes.len() >= self.config.max_connections {
                    tracing::warn!(relay = %url, "not watched: [upstream] max_connections reached");
                    continue;
                }
                let (plan_tx, plan_rx) = watch::channel(filters);
                let target =
                    remote::Target { url: url.clone(), config: self.config.clone(), clock: self.clock.clone() };
                let task = lifecycle.spawn(remote::watch(
                    target,
                    self.watch_as.clone(),
                    plan_rx,
                    sink.clone(),
                    self.status.clone(),
                    shutdown.clone(),
                ));
                remotes.insert(url, (plan_tx, task));
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(round) => {}
                _ = wake.notified() => {
                    // Debounced: a burst of heartbeats becomes one update.
                    tokio::time::sleep(Duration::from_millis(self.config.debounce_ms)).await;
                }
            }
        }
        for (url, (_, task)) in remotes {
            let _ = task.await;
            // Another node may take it over at once.
            self.release(&url).await;
        }
    }
}

/// A relay URL as compared with another: case, surrounding space and trailing slashes do not count.
pub fn normalise(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[async_trait::async_trait]
impl Reporter for Upstream {
    /// Counts only. The relays are named by encrypted registrations, and what happens when this relay dials them
    /// ("connection refused", "cannot resolve") would tell anyone who registers which hosts and ports answer from
    /// here: a port scanner. The names and errors are in `details`, for administrators.
    async fn report(&self) -> Section {
        let board = self.status.lock().expect("status lock").clone();
        let count = |f: fn(&RemoteStatus) -> bool| board.values().filter(|s| f(s)).count().to_string();
        let events: u64 = board.values().map(|s| s.events).sum();
        let rows = vec![
            ("Relays watched".into(), board.len().to_string()),
            ("Connected".into(), count(|s| s.connected)),
            ("Failing".into(), count(|s| !s.connected)),
            ("Events received".into(), events.to_string()),
        ];
        Section { title: "Watched relays".into(), rows, chart: None }
    }

    async fn details(&self) -> Option<Section> {
        let board = self.status.lock().expect("status lock").clone();
        let mut rows: Vec<(String, String)> = board
            .into_iter()
            .map(|(url, s)| {
                let state = if s.subscribed {
                    "watching"
                } else if s.connected {
                    "connected"
                } else {
                    "disconnected"
                };
                let error = s.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default();
                let refused: String = s.refused.iter().map(|(part, why)| format!(", refuses {part}: {why}")).collect();
                (url, format!("{state}, {} events, {} refusals{refused}{error}", s.events, s.refusals))
            })
            .collect();
        if rows.is_empty() {
            rows.push(("None".into(), "no offline registration names a relay".into()));
        }
        Some(Section { title: "Watched relays".into(), rows, chart: None })
    }

    fn set_gauges(&self) {
        let board = self.status.lock().expect("status lock");
        let count = |f: fn(&RemoteStatus) -> bool| board.values().filter(|s| f(s)).count() as f64;
        let gauge = |state: &'static str, value: f64| {
            metrics::gauge!(crate::metrics::UPSTREAM_CONNECTIONS, "state" => state).set(value)
        };
        gauge("watching", count(|s| s.subscribed));
        gauge("connected", count(|s| s.connected && !s.subscribed));
        gauge("disconnected", count(|s| !s.connected));
        for part in [parts::Part::Public, parts::Part::Private] {
            let refusing = board.values().filter(|s| s.refused.keys().any(|k| k.starts_with(part.name()))).count();
            metrics::gauge!(crate::metrics::UPSTREAM_REFUSED, "subscription" => part.name()).set(refusing as f64);
        }
    }
}
