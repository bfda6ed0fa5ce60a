//! The seams through which push hooks into the relay, the upstream watchers and the cluster, in one neutral place:
//! each of those modules calls a trait defined here, push implements it, and `app` wires the two together, so that
//! neither side imports the other. (The store's own seams, `store::jobs::JobSource` and
//! `store::writer::AcceptListener`, stay with the store: every module may know the store.) ARCHITECTURE.md has the
//! table of every seam: who calls it, when, and on which thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, Refusal, SharedEvent, VerifiedEvent};

/// Takes certain verified events out of the relay's path (push registrations addressed to the relay): such an
/// event is answered by the consumer and never stored nor delivered to any subscription.
#[async_trait]
pub trait EventConsumer: Send + Sync {
    /// The `OK` answer if the event is the consumer's (accepted, with a message that may be empty, or refused);
    /// None lets the relay handle it. `from`: the client's address as the relay's per-address limits count it,
    /// for the consumer's own.
    async fn consume(&self, event: &SharedEvent, from: std::net::IpAddr) -> Option<Result<String, Refusal>>;
}

/// What the push side does when another node changed registrations.
pub trait SharedRegistrations: Send + Sync {
    /// Re-reads one pubkey's registrations and presence.
    fn changed(&self, pubkey: Hash32);
    /// Re-reads them all (after this node missed announcements).
    fn resync(&self);
}

/// What to watch: per remote relay URL, the filters to subscribe with now (without `since`).
pub trait WatchSource: Send + Sync {
    fn watch_plan(&self) -> BTreeMap<String, Vec<Filter>>;
    /// Notified whenever the plan may have changed (registrations, presence).
    fn plan_changed(&self) -> Arc<Notify>;
}

/// Where verified events from remote relays go.
pub trait RemoteEvents: Send + Sync {
    fn remote_event(&self, event: SharedEvent);
}

/// Devices through HTTP: NIP-97's `POST /register` (the caller verified each event and the operator's policy for
/// its author), and a person's own devices on the notifications page (the caller checked their NIP-98 signature).
#[async_trait]
pub trait DeviceRegistrar: Send + Sync {
    /// `Ok(true)` when the device was registered for the pubkey already (replaced), `Ok(false)` when added.
    async fn register_device(&self, event: &SharedEvent) -> Result<bool, Refusal>;
    /// The pubkey's devices.
    async fn devices_of(&self, pubkey: &Hash32) -> Vec<DeviceSummary>;
    /// Removes the pubkey's registration of a device; false when it had none.
    async fn remove_device(&self, pubkey: &Hash32, device_id: &str) -> Result<bool, Refusal>;
    /// Queues a test notification to one of the pubkey's devices (sent even while the pubkey is online).
    async fn send_test(&self, pubkey: &Hash32, device_id: &str) -> Result<(), Refusal>;
}

/// One of a person's devices as the notifications page lists it (serialized as the page reads it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceSummary {
    /// The device id as registered (0xchat's `deviceId`, NIP-97's challenge).
    pub id: String,
    /// `apns`, `fcm`, `unifiedpush` or `webpush`.
    pub platform: &'static str,
    /// `0xchat` (kind 22456) or `nip97`.
    pub protocol: &'static str,
    pub updated_at: i64,
    /// The unread count the device's app badge shows, where one is kept.
    pub badge: Option<u32>,
}

/// Who may read an event beyond the kinds' own rule: NIP-29 private groups (`groups::Groups`). Push asks it before
/// notifying a registered pubkey, since a push is a read.
pub trait ReadGate: Send + Sync {
    fn may_read(&self, pubkey: &Hash32, event: &VerifiedEvent) -> bool;
}
