//! Devices through HTTP (`hooks::DeviceRegistrar`): NIP-97's registrations, and what the notifications page shows a
//! signed-in person of their own devices: the list, removing one, and a test notification.

use async_trait::async_trait;

use super::PushService;
use super::device::is_nip97;
use super::text::Summary;
use crate::hooks::{DeviceRegistrar, DeviceSummary};
use crate::protocol::filter::Hash32;
use crate::protocol::{Refusal, SharedEvent};
use crate::push::matching::push_job::PushJob;
use crate::store::jobs::NewJob;

#[async_trait]
impl DeviceRegistrar for PushService {
    async fn register_device(&self, event: &SharedEvent) -> Result<bool, Refusal> {
        self.intake.register_nip97(event).await
    }

    async fn devices_of(&self, pubkey: &Hash32) -> Vec<DeviceSummary> {
        let registry = &self.audience.registry;
        let mut devices = Vec::new();
        for r in registry.registrations_of(pubkey) {
            // Adding nothing reads the badge where it is kept.
            let badge = registry.add_to_badge(pubkey, &r.device_id, 0).await.ok().flatten();
            devices.push(DeviceSummary {
                platform: r.platform,
                protocol: if is_nip97(&r.device_id) { "nip97" } else { "0xchat" },
                updated_at: r.updated_at,
                badge,
                id: r.device_id.clone(),
            });
        }
        devices
    }

    async fn remove_device(&self, pubkey: &Hash32, device_id: &str) -> Result<bool, Refusal> {
        let removed = self.audience.registry.remove_registration(pubkey, device_id).await.map_err(|e| {
            tracing::error!("removing a device failed: {e}");
            Refusal::error("could not remove the device")
        })?;
        self.audience.changed();
        Ok(removed)
    }

    async fn send_test(&self, pubkey: &Hash32, device_id: &str) -> Result<(), Refusal> {
        if !self.audience.registry.registrations_of(pubkey).iter().any(|r| r.device_id == device_id) {
            return Err(Refusal::invalid("not one of your devices"));
        }
        let now_ms = self.audience.clock.millis();
        let interval_ms = self.test_interval_secs.max(1) as i64 * 1000;
        let push = PushJob {
            device_id: device_id.to_owned(),
            pubkey: hex::encode(pubkey),
            event_id: "0".repeat(64),
            kind: 1,
            author: self.public_key().to_hex(),
            summary: Summary::Note { line: "Test notification: this device gets your notifications".into() },
            event: None,
            test: true,
        };
        // One test per device in each `[push] test_interval_secs`: the queue's key refuses a second (a test button
        // pressed in a loop once queued 20,000 jobs in 10 s).
        let job = NewJob {
            dedup_key: format!("test:{device_id}:{}", now_ms / interval_ms),
            group_key: device_id.to_owned(),
            payload: serde_json::to_string(&push).expect("a job serializes"),
        };
        let queued = self.delivery.queue.enqueue(&[job], now_ms).await.map_err(|e| {
            tracing::error!("queueing a test notification failed: {e}");
            Refusal::error("could not queue the test notification")
        })?;
        if queued == 0 {
            let every = self.test_interval_secs;
            return Err(Refusal::rate_limited(format!("one test notification per device every {every} seconds")));
        }
        self.delivery.wake.notify_one();
        Ok(())
    }
}
