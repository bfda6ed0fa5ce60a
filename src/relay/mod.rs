//! The NIP-01 relay: client connections, admission of events, and live subscriptions.

pub mod admission;
pub mod auth;
pub mod connection;
pub mod moderation;
pub mod negentropy;
mod pace;
pub mod rate;
pub mod subscriptions;
pub mod verifier;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::groups::Groups;
use crate::hooks::{DeviceRegistrar, EventConsumer};
use crate::protocol::Refusal;
use crate::protocol::VerifiedEvent;
use crate::report::Reporter;
use crate::store::writer::{AcceptListener, Writer};
use crate::store::{EventStore, ModerationStore};
use admission::Policy;
use auth::Reader;
use moderation::Moderation;
use rate::{ConnectionCounter, RateLimits};
use subscriptions::SubscriptionIndex;
use verifier::Verifier;

/// The configuration file's settings and the moderation lists, and what follows from them.
struct Settings {
    file: Arc<Config>,
    moderation: Arc<Moderation>,
    applied: Arc<Config>,
    policy: Arc<Policy>,
    rate_limits: Arc<RateLimits>,
}

impl Settings {
    fn new(file: Arc<Config>, moderation: Moderation) -> Self {
        let applied = Arc::new(moderation.applied_to((*file).clone()));
        Self {
            policy: Arc::new(Policy::new(&applied, &moderation)),
            rate_limits: Arc::new(RateLimits::new(&applied.limits)),
            moderation: Arc::new(moderation),
            applied,
            file,
        }
    }
}

/// What the application hands the relay: the store and the writer, the live subscriptions, who hears of accepted
/// events, who consumes some events (push registrations), and the application's shutdown signal.
pub struct RelayWiring {
    pub store: Arc<dyn EventStore>,
    pub writer: Writer,
    pub subscriptions: Arc<SubscriptionIndex>,
    pub listeners: Vec<Arc<dyn AcceptListener>>,
    pub consumer: Option<Arc<dyn EventConsumer>>,
    /// Push's device registration for `POST /register` (NIP-97), when push is on.
    pub registrar: Option<Arc<dyn DeviceRegistrar>>,
    /// NIP-29 groups, when `[groups] enabled`.
    pub groups: Option<Arc<Groups>>,
    /// Gift wraps allowed more content than `[limits] max_content_length` (push's Marmot triggers).
    pub large_wraps: Option<admission::LargeWraps>,
    pub moderation_store: Arc<dyn ModerationStore>,
    pub shutdown: CancellationToken,
    pub clock: Clock,
}

/// What every connection shares.
pub struct RelayState {
    /// The configuration file's settings (before moderation) and the moderation lists, from which the applied
    /// configuration and policy are derived; all replaced together on a reload.
    settings: RwLock<Settings>,
    pub store: Arc<dyn EventStore>,
    pub writer: Writer,
    pub subscriptions: Arc<SubscriptionIndex>,
    /// Told of every accepted ephemeral event (stored ones are told by the writer).
    pub listeners: Vec<Arc<dyn AcceptListener>>,
    pub consumer: Option<Arc<dyn EventConsumer>>,
    /// Push's device registration for `POST /register` (NIP-97), when push is on.
    pub registrar: Option<Arc<dyn DeviceRegistrar>>,
    /// NIP-29 groups hosted here: their events are checked (and their actions carried out) before the writer.
    pub groups: Option<Arc<Groups>>,
    /// Fields the NIP-11 document adds to what the configuration says (the relay's own pubkey as `self`, say).
    nip11_extra: OnceLock<serde_json::Map<String, serde_json::Value>>,
    /// Where the operator's moderation lists are kept (NIP-86).
    pub moderation_store: Arc<dyn ModerationStore>,
    pub connections_per_ip: Arc<ConnectionCounter>,
    /// The id and signature checks, one thread per core, so that a flood of events queues there.
    pub verifier: Verifier,
    /// Cancelled to close every connection at shutdown.
    pub shutdown: CancellationToken,
    /// The application's clock: admission's `created_at` window, policy, NIP-42 and NIP-98 skew.
    pub clock: Clock,
    /// Tracks connection tasks, so that shutdown can wait for their last acknowledgements.
    pub connections: TaskTracker,
    next_connection_id: AtomicU64,
    /// The parts that report on themselves (status page, gauges), set once everything is wired.
    reporters: OnceLock<Vec<Arc<dyn Reporter>>>,
}

impl RelayState {
    pub fn new(config: Arc<Config>, wiring: RelayWiring) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let connections_per_ip = ConnectionCounter::new(config.limits.max_connections_per_ip);
        Self {
            settings: RwLock::new(Settings::new(config, Moderation::default())),
            store: wiring.store,
            writer: wiring.writer,
            subscriptions: wiring.subscriptions,
            listeners: wiring.listeners,
            consumer: wiring.consumer,
            registrar: wiring.registrar,
            groups: wiring.groups,
            nip11_extra: OnceLock::new(),
            moderation_store: wiring.moderation_store,
            connections_per_ip,
            verifier: Verifier::start(cores, wiring.large_wraps),
            shutdown: wiring.shutdown,
            clock: wiring.clock,
            connections: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            reporters: OnceLock::new(),
        }
    }

    /// The configuration as it applies now (the file's, reloaded on SIGHUP, with the operator's NIP-86 changes).
    pub fn config(&self) -> Arc<Config> {
        self.settings.read().expect("settings lock").applied.clone()
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.settings.read().expect("settings lock").policy.clone()
    }

    /// Whether an event that came by another door than a client's EVENT (a watched relay's copy, with `[upstream]
    /// store_events`) may be stored: the limits, the operator's policy as for a client that did not authenticate, the
    /// author's event rate, and NIP-29's own checks for what concerns a group hosted here (which a remote copy has
    /// not passed). Its id and signature were checked where it came in.
    pub fn admits_from_elsewhere(&self, event: &VerifiedEvent) -> Result<(), Refusal> {
        let (config, now) = (self.config(), self.clock.secs());
        admission::check_limits(&event.event, &config.limits, now)?;
        let anonymous = Reader::new(config.read_restricted_kinds(), self.groups.clone());
        self.policy().check(event, &anonymous, now)?;
        if self.groups.as_ref().is_some_and(|groups| groups.concerns(event)) {
            return Err(Refusal::blocked("a group hosted here takes its events from its members only"));
        }
        if !self.rate_limits().allow_event_from_pubkey(event.pubkey()) {
            return Err(Refusal::rate_limited("too many events from this author"));
        }
        Ok(())
    }

    pub fn rate_limits(&self) -> Arc<RateLimits> {
        self.settings.read().expect("settings lock").rate_limits.clone()
    }

    pub fn moderation(&self) -> Arc<Moderation> {
        self.settings.read().expect("settings lock").moderation.clone()
    }

    /// Takes a reloaded configuration file: the keys of `[relay]`, `[limits]`, `[policy]` and `[auth]` apply at
    /// once (limits to new messages and connections); the others need a restart, and a change to them is logged.
    pub fn reload(&self, file: Config) {
        let mut settings = self.settings.write().expect("settings lock");
        let old = &settings.file;
        for (section, changed) in [
            ("server", format!("{:?}", old.server) != format!("{:?}", file.server)),
            ("database", format!("{:?}", old.database) != format!("{:?}", file.database)),
            ("push", format!("{:?}", old.push) != format!("{:?}", file.push)),
            ("upstream", format!("{:?}", old.upstream) != format!("{:?}", file.upstream)),
        ] {
            if changed {
                tracing::warn!("[{section}] changed in the configuration file: it takes effect at the next restart");
            }
        }
        let keep = |new: Config| Config {
            server: old.server.clone(),
            database: old.database.clone(),
            push: old.push.clone(),
            upstream: old.upstream.clone(),
            ..new
        };
        let file = keep(file);
        self.connections_per_ip.set_limit(file.limits.max_connections_per_ip);
        *settings = Settings::new(Arc::new(file), (*settings.moderation).clone());
        tracing::info!("configuration reloaded");
    }

    /// Takes the moderation lists as they now are in the database.
    pub fn set_moderation(&self, moderation: Moderation) {
        let mut settings = self.settings.write().expect("settings lock");
        if *settings.moderation != moderation {
            *settings = Settings::new(settings.file.clone(), moderation);
        }
    }

    /// Reads the moderation lists from the database again (at start, after a change, and periodically, for the
    /// changes made through other nodes).
    pub async fn refresh_moderation(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.moderation_store.moderation().await?;
        self.set_moderation(Moderation::from_rows(rows));
        Ok(())
    }

    pub fn set_nip11_extra(&self, extra: serde_json::Map<String, serde_json::Value>) {
        let _ = self.nip11_extra.set(extra);
    }

    pub fn nip11_extra(&self) -> &serde_json::Map<String, serde_json::Value> {
        static EMPTY: OnceLock<serde_json::Map<String, serde_json::Value>> = OnceLock::new();
        self.nip11_extra.get().unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new))
    }

    pub fn set_reporters(&self, reporters: Vec<Arc<dyn Reporter>>) {
        let _ = self.reporters.set(reporters);
    }

    pub fn reporters(&self) -> &[Arc<dyn Reporter>] {
        self.reporters.get().map_or(&[], Vec::as_slice)
    }

    fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
