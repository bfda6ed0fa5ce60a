//! NIP-97 deliveries: each event, as JSON, NIP-44 encrypted to its recipient from a fresh random key and wrapped as
//! a kind 1059 event signed by that key, with no `p` tag (the push service carrying it must not learn who receives
//! it). One notification per event, never merged and without a badge: the app opens each wrap itself.

use governor::clock::{Clock as _, DefaultClock};
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip44;
use nostr::prelude::{EventBuilder, FinalizeEvent, Kind};

use super::senders::Notification;
use super::{Claimed, Worker};
use crate::push::text;
use crate::store::jobs::Job;

/// The wrap's JSON: `event_json` encrypted to `recipient` from a throwaway key that signs the wrap.
pub fn gift_wrap(event_json: &str, recipient: &PublicKey) -> Result<String, String> {
    let throwaway = Keys::generate();
    let content = nip44::encrypt(throwaway.secret_key(), recipient, event_json, nip44::Version::V2)
        .map_err(|e| format!("cannot encrypt the event: {e}"))?;
    let wrap = EventBuilder::new(Kind::GiftWrap, content).finalize(&throwaway).map_err(|e| e.to_string())?;
    Ok(wrap.as_json())
}

impl Worker {
    /// Sends a NIP-97 device's due jobs one by one, each outcome recorded on its own, each counted against the
    /// device's rate: past it, that job and the ones after it wait (a device's endpoint once got every job a round
    /// claimed, whatever its rate).
    pub(super) async fn deliver_wrapped(&self, device_id: &str, jobs: Vec<Job>) {
        let now_ms = self.delivery.audience.clock.millis();
        let all = Claimed::of(&jobs, now_ms);
        if !self.delivery.audience.registry.has_device(device_id) {
            return self.finish(&all.ids, now_ms).await;
        }
        let Some(device) = self.usable_device(device_id, &all).await else { return };
        for (n, job) in jobs.iter().enumerate() {
            if let Err(not_until) = self.delivery.device_limiter.check_key(&device_id.to_owned()) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let due_ms = now_ms + wait.as_millis() as i64 + 1;
                for later in &jobs[n..] {
                    self.reschedule(&[later.id], due_ms, later.attempts).await;
                }
                return;
            }
            let claimed = Claimed::of(std::slice::from_ref(job), now_ms);
            // A device found dead by an earlier job of this round gets nothing more.
            let Some(push) = claimed.pushes.first().filter(|_| self.delivery.audience.registry.has_device(device_id))
            else {
                self.finish(&claimed.ids, now_ms).await;
                continue;
            };
            let wrapped = match (&push.event, PublicKey::from_hex(&push.pubkey)) {
                (Some(event), Ok(recipient)) => gift_wrap(event, &recipient).map(Some),
                // A test notification its owner asked for carries no event: a plain alert.
                _ if push.test => Ok(None),
                _ => Err("the job carries no event to wrap".into()),
            };
            let wrap = match wrapped {
                Ok(wrap) => wrap,
                Err(e) => {
                    tracing::warn!("NIP-97 push dropped: {e}");
                    self.finish(&claimed.ids, now_ms).await;
                    continue;
                }
            };
            let notification = Notification {
                title: self.delivery.relay_name.clone(),
                body: text::body(None, push.kind, &push.summary),
                event_id: push.event_id.clone(),
                kind: push.kind,
                author: push.author.clone(),
                badge: None,
                wrap,
            };
            let outcome = self.delivery.senders.send(&device, &notification).await;
            self.record(device_id, device.platform(), &claimed, outcome).await;
        }
    }
}
