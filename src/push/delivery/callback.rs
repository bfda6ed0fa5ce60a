//! Delivery to NIP-9a callbacks: one `POST` per job, never merged, no badge and no presence (a callback is a
//! server, not a phone). Outcomes are recorded through the delivery loop's bookkeeper, like every push.

use super::Worker;
use super::senders::SendOutcome;
use super::stats::Outcome;
use crate::push::matching::push_job::{CALLBACK_PREFIX, PushJob};
use crate::store::jobs::Job;

/// The service name callbacks are counted under.
const SERVICE: &str = "callback";

impl Worker {
    /// Sends one callback's due jobs, in queue order, one request each. A retry postpones this job and the ones
    /// after it (the callback is unwell); a dead callback ends every subscription posting to it.
    pub(super) async fn deliver_callbacks(&self, group_key: &str, jobs: Vec<Job>) {
        let callback = group_key.strip_prefix(CALLBACK_PREFIX).unwrap_or(group_key);
        let now_ms = self.delivery.audience.clock.millis();
        if !self.delivery.audience.callbacks.has_callback(callback) {
            // Every subscription with this callback ended since: nothing to tell.
            let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
            return self.finish(&ids, now_ms).await;
        }
        for (n, job) in jobs.iter().enumerate() {
            // A payload of no known form (written by another version) cannot be sent: dropped, counted refused.
            let Ok(push) = serde_json::from_str::<PushJob>(&job.payload) else {
                self.finish(&[job.id], now_ms).await;
                self.delivery.stats.count(SERVICE, Outcome::Dropped("refused"), 1);
                continue;
            };
            let body = post_body(&push, self.delivery.audience.callbacks.relay_url());
            match self.delivery.senders.callback.post(callback, body).await {
                SendOutcome::Delivered => {
                    self.finish(&[job.id], now_ms).await;
                    self.delivery.stats.count(SERVICE, Outcome::Sent, 1);
                    self.delivery.stats.delivered(SERVICE);
                }
                SendOutcome::Retry { after, reason } => {
                    self.delivery.stats.failed(SERVICE, &reason);
                    let attempts = job.attempts + 1;
                    if now_ms - job.created_at > self.delivery.config.max_job_age_secs as i64 * 1000 {
                        tracing::warn!(callback, "NIP-9a POST given up after {attempts} attempts: {reason}");
                        self.finish(&[job.id], now_ms).await;
                        self.delivery.stats.count(SERVICE, Outcome::Dropped("too_old"), 1);
                        continue;
                    }
                    let due_ms = now_ms + self.backoff(attempts).max(after.unwrap_or_default()).as_millis() as i64;
                    tracing::info!(callback, attempts, "NIP-9a POST will be retried: {reason}");
                    self.reschedule(&[job.id], due_ms, attempts).await;
                    self.delivery.stats.count(SERVICE, Outcome::Retried, 1);
                    for later in &jobs[n + 1..] {
                        self.reschedule(&[later.id], due_ms, later.attempts).await;
                    }
                    return;
                }
                SendOutcome::DeadToken(reason) => {
                    tracing::info!(callback, "dead NIP-9a callback, its subscriptions deleted: {reason}");
                    self.delivery.audience.remove_callback(callback).await;
                    let ids: Vec<i64> = jobs[n..].iter().map(|j| j.id).collect();
                    self.finish(&ids, now_ms).await;
                    self.delivery.stats.dead_token(SERVICE);
                    return;
                }
                SendOutcome::Failed(reason) => {
                    tracing::warn!(callback, "NIP-9a POST dropped: {reason}");
                    self.delivery.stats.failed(SERVICE, &reason);
                    self.finish(&[job.id], now_ms).await;
                    self.delivery.stats.count(SERVICE, Outcome::Dropped("refused"), 1);
                }
            }
        }
    }
}

/// `{"id": "<event id>", "relay": "<this relay>"}`, with `"event"` (the event's JSON as accepted) when the
/// subscription asked for it.
fn post_body(push: &PushJob, relay_url: &str) -> String {
    let quoted = |text: &str| serde_json::to_string(text).expect("a string serializes");
    let (id, relay) = (quoted(&push.event_id), quoted(relay_url));
    match &push.event {
        Some(event) => format!(r#"{{"id":{id},"relay":{relay},"event":{event}}}"#),
        None => format!(r#"{{"id":{id},"relay":{relay}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_event_and_the_relay() {
        let mut push = PushJob {
            device_id: "nip9a:https://cb.example/".into(),
            pubkey: "ab".into(),
            event_id: "cd".into(),
            kind: 1,
            author: "ef".into(),
            summary: Default::default(),
            event: None,
            test: false,
        };
        let relay = "wss://relay.example.com/";
        let body: serde_json::Value = serde_json::from_str(&post_body(&push, relay)).unwrap();
        assert_eq!(body, serde_json::json!({"id": "cd", "relay": relay}));
        push.event = Some(r#"{"id":"cd","kind":1}"#.into());
        let body: serde_json::Value = serde_json::from_str(&post_body(&push, relay)).unwrap();
        assert_eq!(body, serde_json::json!({"id": "cd", "relay": relay, "event": {"id": "cd", "kind": 1}}));
    }
}
