//! The NIP-01 relay: client connections, admission of events, and live subscriptions.

pub mod admission;
pub mod auth;
pub mod connection;
pub mod rate;
pub mod subscriptions;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::protocol::SharedEvent;
use crate::report::Reporter;
use crate::store::EventStore;
use crate::store::writer::{AcceptListener, Writer};
use admission::Policy;
use rate::{ConnectionCounter, RateLimits};
use subscriptions::SubscriptionIndex;

/// Takes certain verified events out of the relay's path (push registrations addressed to the relay): such an
/// event is answered by the consumer and never stored nor delivered to any subscription.
#[async_trait]
pub trait EventConsumer: Send + Sync {
    /// The `OK` answer (accepted, message) if the event is the consumer's; None lets the relay handle it.
    async fn consume(&self, event: &SharedEvent) -> Option<(bool, String)>;
}

/// What every connection shares.
pub struct RelayState {
    pub config: Arc<Config>,
    pub store: Arc<dyn EventStore>,
    pub writer: Writer,
    pub subscriptions: Arc<SubscriptionIndex>,
    /// Told of every accepted ephemeral event (stored ones are told by the writer).
    pub listeners: Vec<Arc<dyn AcceptListener>>,
    pub consumer: Option<Arc<dyn EventConsumer>>,
    /// Fields the NIP-11 document adds to what the configuration says (the relay's own pubkey as `self`, say).
    pub nip11_extra: serde_json::Map<String, serde_json::Value>,
    pub policy: Policy,
    pub rate_limits: RateLimits,
    pub connections_per_ip: Arc<ConnectionCounter>,
    /// Bounds concurrent signature checks to the number of cores, so that a flood of events queues here instead of
    /// spawning hundreds of blocking threads.
    pub verify_slots: Semaphore,
    /// Cancelled to close every connection at shutdown.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, so that shutdown can wait for their last acknowledgements.
    pub connections: TaskTracker,
    next_connection_id: AtomicU64,
    /// The parts that report on themselves (status page, gauges), set once everything is wired.
    reporters: OnceLock<Vec<Arc<dyn Reporter>>>,
}

impl RelayState {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn EventStore>,
        writer: Writer,
        subscriptions: Arc<SubscriptionIndex>,
        listeners: Vec<Arc<dyn AcceptListener>>,
        consumer: Option<Arc<dyn EventConsumer>>,
        nip11_extra: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            store,
            writer,
            subscriptions,
            listeners,
            consumer,
            nip11_extra,
            policy: Policy::new(&config),
            rate_limits: RateLimits::new(&config.limits),
            connections_per_ip: ConnectionCounter::new(config.limits.max_connections_per_ip),
            verify_slots: Semaphore::new(cores),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            next_connection_id: AtomicU64::new(1),
            reporters: OnceLock::new(),
            config,
        }
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
