//! The delivery loop: takes due push jobs from the durable queue, a device at a time, and hands them to the
//! senders on a bounded pool of workers; records each outcome (done, retry later, device dead, dropped) through
//! the bookkeeper, which the loop starts and, once its last delivery has reported, closes.

pub mod bookkeeping;
pub mod callback;
pub mod gift_wrap;
pub mod senders;
pub mod stats;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::PushConfig;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::push::audience::Audience;
use crate::push::device::{Device, is_nip97};
use crate::push::matching::push_job::PushJob;
use crate::push::text;
use crate::store::StoreError;
use crate::store::jobs::{Job, JobQueue, JobUpdate};
use crate::store::registrations::BadgeChange;
use bookkeeping::{Badges, Bookkeeper};
use senders::{Notification, SendOutcome, Senders};
use stats::{Outcome, PushStats};

/// Jobs taken per round.
const CLAIM_BATCH: usize = 256;
/// A claimed job is due again after this long if its worker never reports (the lease); a restart releases it.
const LEASE: Duration = Duration::from_secs(120);
/// Longest sleep between looks at the queue when nothing wakes the loop.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the queue's size is checked against `max_queued_jobs`.
const SHED_INTERVAL: Duration = Duration::from_secs(5);
/// How long deliveries under way at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How often finished jobs older than `DEDUP_WINDOW` are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Finished jobs are kept this long, so that an event seen again later does not push twice.
const DEDUP_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Per-device limit: beyond it, a device's jobs wait and are then sent as one merged notification.
pub fn device_limiter(burst: u32, refill: Duration) -> DefaultKeyedRateLimiter<String> {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(refill.max(Duration::from_millis(1))).expect("a positive period").allow_burst(burst);
    RateLimiter::keyed(quota)
}

/// Delivery: the queue, the senders, and what limits and counts their work.
pub struct Delivery {
    pub config: PushConfig,
    pub queue: Arc<dyn JobQueue>,
    pub audience: Arc<Audience>,
    pub senders: Senders,
    pub device_limiter: DefaultKeyedRateLimiter<String>,
    pub stats: PushStats,
    /// Notification titles name the relay.
    pub relay_name: String,
    /// Woken when jobs were added, so that delivery does not wait for the next poll.
    pub wake: Arc<Notify>,
}

/// One delivery's view: the service, and the batching writers of this run of the loop.
#[derive(Clone)]
pub(super) struct Worker {
    delivery: Arc<Delivery>,
    books: Bookkeeper,
    badges: Badges,
}

impl Delivery {
    /// Runs until shutdown; then lets deliveries under way finish (`SHUTDOWN_GRACE`), and closes the bookkeeper once
    /// their outcomes are recorded. Jobs not yet taken wait in the queue for the next start.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let (books, recording) = Bookkeeper::start(self.queue.clone());
        let (badges, counting) = Badges::start(self.audience.clone());
        let worker = Worker { delivery: self.clone(), books, badges };
        let mut deliveries = JoinSet::new();
        self.rounds(&worker, &mut deliveries, &shutdown).await;
        let finished = async { while deliveries.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, finished).await.is_err() {
            deliveries.shutdown().await;
        }
        drop(worker);
        let _ = recording.await;
        let _ = counting.await;
    }

    async fn rounds(&self, worker: &Worker, deliveries: &mut JoinSet<()>, shutdown: &CancellationToken) {
        let workers = Arc::new(Semaphore::new(self.config.workers));
        let mut last_purge = tokio::time::Instant::now();
        let mut last_shed = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            if self.config.max_queued_jobs > 0 && last_shed.elapsed() > SHED_INTERVAL {
                last_shed = tokio::time::Instant::now();
                self.shed_oldest().await;
            }
            let jobs = self.claim().await;
            if jobs.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.idle_wait().await) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let mut by_device: BTreeMap<String, Vec<Job>> = BTreeMap::new();
            for job in jobs {
                by_device.entry(job.group_key.clone()).or_default().push(job);
            }
            for (device_id, jobs) in by_device {
                let permit = tokio::select! {
                    permit = workers.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = shutdown.cancelled() => return,
                };
                let worker = worker.clone();
                deliveries.spawn(async move {
                    worker.deliver(&device_id, jobs).await;
                    drop(permit);
                });
            }
            while deliveries.try_join_next().is_some() {}
            if last_purge.elapsed() > PURGE_INTERVAL {
                last_purge = tokio::time::Instant::now();
                let before = self.audience.clock.millis() - DEDUP_WINDOW.as_millis() as i64;
                if let Err(e) = self.queue.purge_finished(before).await {
                    tracing::error!("cannot purge finished push jobs: {e}");
                }
            }
        }
    }

    async fn claim(&self) -> Vec<Job> {
        let now_ms = self.audience.clock.millis();
        self.queue.claim_due(now_ms, CLAIM_BATCH, LEASE.as_millis() as i64).await.unwrap_or_else(|e| {
            tracing::error!("cannot take push jobs: {e}");
            Vec::new()
        })
    }

    /// Until the next job is due, at most `IDLE_POLL`.
    async fn idle_wait(&self) -> Duration {
        match self.queue.next_due().await {
            Ok(Some(due)) => {
                let wait = due - self.audience.clock.millis();
                Duration::from_millis(wait.clamp(0, IDLE_POLL.as_millis() as i64) as u64)
            }
            _ => IDLE_POLL,
        }
    }

    /// Keeps the queue within `max_queued_jobs`: the longest device queues' oldest waiting pushes go, counted and
    /// logged (`JobQueue::shed`).
    async fn shed_oldest(&self) {
        let keep = self.config.max_queued_jobs;
        match self.queue.shed(keep, self.audience.clock.millis()).await {
            Ok(0) => {}
            Ok(shed) => {
                tracing::warn!(
                    shed,
                    "push queue over max_queued_jobs ({keep}): the longest device queues' oldest pushes dropped"
                );
                self.stats.count("any", Outcome::Dropped("queue_full"), shed as usize);
            }
            Err(e) => tracing::error!("cannot shed push jobs: {e}"),
        }
    }
}

/// One device's claimed jobs, as the delivery reads them.
pub(super) struct Claimed {
    pub(super) ids: Vec<i64>,
    pub(super) pushes: Vec<PushJob>,
    /// The most attempts any of them had.
    attempts: u32,
    /// When the oldest was queued, and now (milliseconds).
    oldest_ms: i64,
    pub(super) now_ms: i64,
}

impl Claimed {
    pub(super) fn of(jobs: &[Job], now_ms: i64) -> Self {
        Self {
            ids: jobs.iter().map(|j| j.id).collect(),
            pushes: jobs.iter().filter_map(|j| serde_json::from_str(&j.payload).ok()).collect(),
            attempts: jobs.iter().map(|j| j.attempts).max().unwrap_or(0),
            oldest_ms: jobs.iter().map(|j| j.created_at).min().unwrap_or(now_ms),
            now_ms,
        }
    }
}

impl Worker {
    /// Sends one device's due jobs: one notification, merged when there are several.
    async fn deliver(&self, device_id: &str, jobs: Vec<Job>) {
        if is_nip97(device_id) {
            return self.deliver_wrapped(device_id, jobs).await;
        }
        if device_id.starts_with(crate::push::matching::push_job::CALLBACK_PREFIX) {
            return self.deliver_callbacks(device_id, jobs).await;
        }
        let claimed = Claimed::of(&jobs, self.delivery.audience.clock.millis());
        let Some(newest) = self.still_due(device_id, &claimed) else {
            return self.finish(&claimed.ids, claimed.now_ms).await;
        };
        if let Err(not_until) = self.delivery.device_limiter.check_key(&device_id.to_owned()) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return self.reschedule(&claimed.ids, claimed.now_ms + wait.as_millis() as i64 + 1, claimed.attempts).await;
        }
        let Some(device) = self.usable_device(device_id, &claimed).await else { return };
        // The badge counts the events notified: a merged notification of three adds three.
        let notified = claimed.pushes.len() as i64;
        let recipient = parse_hash(&newest.pubkey).unwrap_or_default();
        let notification = self.notification(device_id, &claimed, newest, &recipient, notified).await;
        let outcome = self.delivery.senders.send(&device, &notification).await;
        let not_shown = matches!(outcome, SendOutcome::Retry { .. } | SendOutcome::Failed(_));
        if not_shown && let Err(e) = self.count_badge(recipient, device_id, -notified).await {
            tracing::error!("cannot take back the badge count: {e}");
        }
        self.record(device_id, device.platform(), &claimed, outcome).await;
    }

    /// The newest push, unless there is no one to wake: the device was logged out or found dead since, or every
    /// pubkey it was for came online since (the app shows the event itself).
    fn still_due<'a>(&self, device_id: &str, claimed: &'a Claimed) -> Option<&'a PushJob> {
        let now = claimed.now_ms / 1000;
        let due = self.delivery.audience.registry.has_device(device_id)
            && claimed.pushes.iter().any(|p| {
                p.test || parse_hash(&p.pubkey).is_some_and(|pk| !self.delivery.audience.registry.is_online(&pk, now))
            });
        claimed.pushes.last().filter(|_| due)
    }

    /// The device the id names; one of no known form (no longer configured, say) finishes its jobs as dropped.
    pub(super) async fn usable_device(&self, device_id: &str, claimed: &Claimed) -> Option<Device> {
        let config = &self.delivery.config;
        match Device::parse_stored(device_id, &config.apns.bundle_ids, config.unifiedpush.allow_private_addresses) {
            Ok(device) => Some(device),
            Err(e) => {
                tracing::warn!("push job for an unusable device: {e}");
                self.finish(&claimed.ids, claimed.now_ms).await;
                self.delivery.stats.count("unknown", Outcome::Dropped("unusable_device"), claimed.ids.len());
                None
            }
        }
    }

    /// The notification: the event's text (or "N new messages" when merged) and the device's new badge count.
    async fn notification(
        &self,
        device_id: &str,
        claimed: &Claimed,
        newest: &PushJob,
        recipient: &crate::protocol::filter::Hash32,
        notified: i64,
    ) -> Notification {
        let body = if claimed.pushes.len() > 1 {
            text::merged(claimed.pushes.len())
        } else {
            let name = match newest.summary.actor(&newest.author) {
                Some(actor) => match parse_hash(actor) {
                    Some(actor) => self.delivery.audience.author_name(&actor).await,
                    None => None,
                },
                None => None,
            };
            text::body(name.as_deref(), newest.kind, &newest.summary)
        };
        let badge = match self.count_badge(*recipient, device_id, notified).await {
            Ok(badge) => badge,
            Err(e) => {
                tracing::error!("cannot count the badge: {e}");
                None
            }
        };
        Notification {
            title: self.delivery.relay_name.clone(),
            body,
            event_id: newest.event_id.clone(),
            kind: newest.kind,
            author: newest.author.clone(),
            badge,
            wrap: None,
        }
    }

    /// Records what the service said. Each outcome is counted once the queue has recorded it, so that the figures
    /// never run ahead of it.
    pub(super) async fn record(&self, device_id: &str, service: &'static str, claimed: &Claimed, outcome: SendOutcome) {
        let (ids, now_ms) = (&claimed.ids, claimed.now_ms);
        let shortened = crate::push::device::shorten(device_id);
        match outcome {
            SendOutcome::Delivered => {
                self.finish(ids, now_ms).await;
                self.delivery.stats.count(service, Outcome::Sent, 1);
                self.delivery.stats.count(service, Outcome::Merged, ids.len() - 1);
                self.delivery.stats.delivered(service);
            }
            SendOutcome::Retry { after, reason } => {
                self.delivery.stats.failed(service, &reason);
                let attempts = claimed.attempts + 1;
                if now_ms - claimed.oldest_ms > self.delivery.config.max_job_age_secs as i64 * 1000 {
                    tracing::warn!(device = shortened, "push given up after {attempts} attempts: {reason}");
                    self.finish(ids, now_ms).await;
                    return self.delivery.stats.count(service, Outcome::Dropped("too_old"), ids.len());
                }
                let delay = self.backoff(attempts).max(after.unwrap_or_default());
                tracing::info!(device = shortened, attempts, ?delay, "push will be retried: {reason}");
                self.reschedule(ids, now_ms + delay.as_millis() as i64, attempts).await;
                self.delivery.stats.count(service, Outcome::Retried, ids.len());
            }
            SendOutcome::DeadToken(reason) => {
                tracing::info!(device = shortened, "dead push token, device removed: {reason}");
                if let Err(e) = self.delivery.audience.registry.remove_device(device_id).await {
                    tracing::error!("cannot remove a dead device: {e}");
                }
                self.delivery.audience.changed();
                self.finish(ids, now_ms).await;
                self.delivery.stats.dead_token(service);
            }
            SendOutcome::Failed(reason) => {
                tracing::warn!(device = shortened, "push dropped: {reason}");
                self.delivery.stats.failed(service, &reason);
                self.finish(ids, now_ms).await;
                self.delivery.stats.count(service, Outcome::Dropped("refused"), ids.len());
            }
        }
    }

    /// Exponential back-off from `retry_initial_ms`, doubled per attempt up to `retry_max_ms`, with ±20 % jitter so
    /// that a service coming back is not hit by every retry at once.
    pub(super) fn backoff(&self, attempts: u32) -> Duration {
        let base = self.delivery.config.retry_initial_ms.saturating_mul(1 << attempts.saturating_sub(1).min(30));
        let capped = base.min(self.delivery.config.retry_max_ms) as f64;
        Duration::from_millis((capped * rand::random_range(0.8..1.2)) as u64)
    }

    /// Adds to (or takes from) the badge of `pubkey`'s registration of the device, batched with other deliveries'.
    async fn count_badge(&self, pubkey: Hash32, device_id: &str, count: i64) -> Result<Option<u32>, StoreError> {
        self.badges.write(BadgeChange { pubkey, device_id: device_id.to_owned(), count }).await
    }

    pub(super) async fn finish(&self, ids: &[i64], now_ms: i64) {
        let update = JobUpdate::Finished { ids: ids.to_vec(), at_ms: now_ms };
        if let Err(e) = self.books.write(update).await {
            tracing::error!("cannot record finished push jobs: {e}");
        }
    }

    pub(super) async fn reschedule(&self, ids: &[i64], due_ms: i64, attempts: u32) {
        let update = JobUpdate::Rescheduled { ids: ids.to_vec(), due_ms, attempts };
        if let Err(e) = self.books.write(update).await {
            tracing::error!("cannot reschedule push jobs: {e}");
        }
    }
}
