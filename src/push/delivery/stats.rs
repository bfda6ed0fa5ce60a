//! What became of push jobs: counters (also exported to Prometheus), each sender's last success and error, and
//! pushes per minute for the status page.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::activity::Timeline;
use crate::clock::Clock;

/// Counters of what happened to push jobs, the senders' health, and pushes per minute.
pub struct PushStats {
    pub sent: AtomicU64,
    pub merged: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub dead_tokens: AtomicU64,
    health: Mutex<BTreeMap<&'static str, SenderHealth>>,
    pub timeline: Timeline,
    clock: Clock,
}

/// When a sender last delivered, and its last error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderHealth {
    pub last_success: Option<u64>,
    pub last_error: Option<(u64, String)>,
}

#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Sent,
    Merged,
    Retried,
    /// With why: `unusable_device`, `too_old` (retried past `max_job_age_secs`), `refused` (by the service, or no
    /// sender configured) or `queue_full` (shed beyond `max_queued_jobs`).
    Dropped(&'static str),
}

impl PushStats {
    pub fn new(clock: Clock) -> Self {
        Self {
            sent: AtomicU64::default(),
            merged: AtomicU64::default(),
            retried: AtomicU64::default(),
            dropped: AtomicU64::default(),
            dead_tokens: AtomicU64::default(),
            health: Mutex::default(),
            timeline: Timeline::new(clock.clone()),
            clock,
        }
    }

    /// `n` jobs for `service` ended so (Prometheus: `pushrelay_push_jobs_total`).
    pub(super) fn count(&self, service: &'static str, outcome: Outcome, n: usize) {
        let (counter, name, reason) = match outcome {
            Outcome::Sent => (&self.sent, "sent", ""),
            Outcome::Merged => (&self.merged, "merged", ""),
            Outcome::Retried => (&self.retried, "retried", ""),
            Outcome::Dropped(reason) => (&self.dropped, "dropped", reason),
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!(crate::metrics::PUSH_JOBS, "service" => service, "outcome" => name, "reason" => reason)
            .increment(n as u64);
    }

    pub(super) fn delivered(&self, service: &'static str) {
        self.health.lock().expect("health lock").entry(service).or_default().last_success = Some(self.clock.secs());
        self.timeline.add(1);
    }

    pub(super) fn failed(&self, service: &'static str, reason: &str) {
        self.health.lock().expect("health lock").entry(service).or_default().last_error =
            Some((self.clock.secs(), reason.to_owned()));
    }

    pub(super) fn dead_token(&self, service: &'static str) {
        self.dead_tokens.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::DEAD_TOKENS, "service" => service).increment(1);
    }

    /// Each sender that sent or failed since start.
    pub fn health(&self) -> BTreeMap<&'static str, SenderHealth> {
        self.health.lock().expect("health lock").clone()
    }
}
