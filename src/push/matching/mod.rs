//! Matching on the write path: the jobs a stored event causes, written in its commit (`JobSource`); after a commit,
//! the lists registered pubkeys published and the jobs of ephemeral events (`AcceptListener`); and the events of
//! watched relays (`RemoteEvents`). Jobs of events that were not written go to the queue through one bounded
//! intake task, so that publishing never waits on the queue.

pub mod matcher;
pub mod push_job;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::hooks::{ReadGate, RemoteEvents};
use crate::lifecycle::Lifecycle;
use crate::protocol::{KindClass, SharedEvent};
use crate::push::audience::Audience;
use crate::push::audience::subscription::SUBSCRIPTION_KIND;
use crate::store::jobs::{JobQueue, JobSource, NewJob};
use crate::store::writer::AcceptListener;
use matcher::Matcher;

/// NIP-09 deletion requests and NIP-62 requests to vanish.
const DELETION_KIND: u16 = 5;
const VANISH_KIND: u16 = 62;

/// Intake batches taken into one transaction at most.
const INTAKE_BATCHES: usize = 64;

pub struct Matching {
    audience: Arc<Audience>,
    /// Events older than this many seconds are not pushed.
    max_event_age_secs: u64,
    /// The relay's read-restricted kinds (`Config::read_restricted_kinds`), as at start: who may be pushed an event
    /// is who may read it.
    read_restricted_kinds: Vec<u16>,
    /// `[push] max_mentions` when the operator spares everyone hellthreads (NIP-9a filters by `#p` among them).
    spare_hellthreads: Option<usize>,
    /// Jobs of ephemeral and watched events, on their way to the queue through the intake task: bounded, so that a
    /// flood of such events holds no more than `[push] max_pending_intake` batches.
    intake: mpsc::Sender<Vec<NewJob>>,
    /// Set when a stored event's commit carried jobs: only then does its commit wake the delivery loop (whose look
    /// at the queue is a write, which would otherwise follow every batch of the writer).
    jobs_committed: AtomicBool,
    /// The delivery loop's wake-up.
    wake: Arc<Notify>,
    /// Who may read what beyond the kinds' rule (NIP-29 private groups), when the relay hosts groups.
    gate: Option<Arc<dyn ReadGate>>,
}

impl Matching {
    /// Starts the intake task on the lifecycle.
    pub fn start(
        config: &Config,
        audience: Arc<Audience>,
        queue: Arc<dyn JobQueue>,
        wake: Arc<Notify>,
        gate: Option<Arc<dyn ReadGate>>,
        lifecycle: &Lifecycle,
    ) -> Self {
        let (intake, waiting) = mpsc::channel(config.push.max_pending_intake.max(1));
        let clock = audience.clock.clone();
        let shutdown = lifecycle.shutdown();
        let take_in = take_in(queue, wake.clone(), waiting, clock, shutdown);
        lifecycle.spawn(take_in);
        Self {
            audience,
            max_event_age_secs: config.push.max_event_age_secs,
            read_restricted_kinds: config.read_restricted_kinds(),
            spare_hellthreads: config.push.suppress_hellthreads.then_some(config.push.max_mentions),
            intake,
            jobs_committed: AtomicBool::new(false),
            wake,
            gate,
        }
    }

    fn matcher(&self) -> Matcher<'_> {
        Matcher {
            registry: &self.audience.registry,
            mutes: &self.audience.mutes,
            callbacks: &self.audience.callbacks,
            max_event_age_secs: self.max_event_age_secs,
            read_restricted_kinds: &self.read_restricted_kinds,
            spare_hellthreads: self.spare_hellthreads,
            gate: self.gate.as_deref(),
        }
    }

    /// The jobs of an event accepted here: registrations' and NIP-9a callbacks'.
    fn jobs_for(&self, event: &SharedEvent) -> Vec<NewJob> {
        self.matcher().jobs_for_accepted(event, self.audience.now())
    }

    /// Kind 30390 events change the NIP-9a subscriptions, deletions and vanish requests end them.
    fn follow_subscriptions(&self, events: &[SharedEvent]) {
        let callbacks = &self.audience.callbacks;
        for event in events {
            match event.kind() {
                SUBSCRIPTION_KIND => callbacks.offer(event, self.audience.clock.secs()),
                DELETION_KIND => callbacks.forget_deleted(event),
                VANISH_KIND => callbacks.remove_pubkey(event.pubkey()),
                _ => {}
            }
        }
    }

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

/// Inside the writer's transaction: the jobs a stored event causes, committed with it.
impl JobSource for Matching {
    fn jobs_for(&self, event: &SharedEvent) -> Vec<NewJob> {
        let jobs = Matching::jobs_for(self, event);
        if !jobs.is_empty() {
            self.jobs_committed.store(true, Ordering::Relaxed);
        }
        jobs
    }
}

/// After the commit: wake the delivery loop. Ephemeral events were not written, so their jobs are queued here.
impl AcceptListener for Matching {
    fn accepted(&self, events: &[SharedEvent]) {
        self.follow_subscriptions(events);
        self.audience.learn_lists(events);
        let ephemeral: Vec<NewJob> =
            events.iter().filter(|e| e.class() == KindClass::Ephemeral).flat_map(|e| self.jobs_for(e)).collect();
        self.enqueue_later(ephemeral);
    }

    /// Another node made the jobs (it matched the event in its commit); only mute lists are of interest here.
    fn accepted_elsewhere(&self, events: &[SharedEvent]) {
        self.follow_subscriptions(events);
        self.audience.learn_lists(events);
    }
}

/// Events from watched relays go to the same matcher and queue; the queue's key (event id and device) makes an
/// event seen here and there push once.
impl RemoteEvents for Matching {
    fn remote_event(&self, event: SharedEvent) {
        self.audience.learn_lists(std::slice::from_ref(&event));
        self.enqueue_later(self.matcher().jobs_for(&event, self.audience.now()));
    }
}

/// Queues the jobs of ephemeral and watched events, as many batches to a transaction as are waiting, and wakes the
/// delivery loop. At shutdown, queues what is waiting and ends (the store is closed after).
async fn take_in(
    queue: Arc<dyn JobQueue>,
    wake: Arc<Notify>,
    mut waiting: mpsc::Receiver<Vec<NewJob>>,
    clock: crate::clock::Clock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut batches = Vec::new();
    loop {
        let stopping = tokio::select! {
            taken = waiting.recv_many(&mut batches, INTAKE_BATCHES) => taken == 0,
            _ = shutdown.cancelled() => {
                while let Ok(batch) = waiting.try_recv() {
                    batches.push(batch);
                }
                true
            }
        };
        let jobs: Vec<NewJob> = batches.drain(..).flatten().collect();
        if !jobs.is_empty() {
            if let Err(e) = queue.enqueue(&jobs, clock.millis()).await {
                tracing::error!(jobs = jobs.len(), "cannot queue pushes: {e}");
            }
            wake.notify_one();
        }
        if stopping {
            return;
        }
    }
}
