//! A durable job queue beside the events: work that must not be lost (push notifications) is written in the same
//! transaction as the event that caused it, and taken by workers with a lease. The store knows nothing of what the
//! jobs mean; a `JobSource` derives them from events.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use async_trait::async_trait;

use super::StoreError;
use crate::protocol::SharedEvent;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// One job per key, ever (until finished jobs are purged): the same event cannot cause the same job twice.
    pub dedup_key: String,
    /// Jobs of one group (one device) are taken together, so that they can be merged.
    pub group_key: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub group_key: String,
    pub payload: String,
    pub attempts: u32,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// What became of jobs a worker took; outcomes recorded together are written in one transaction
/// (`JobQueue::record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobUpdate {
    /// Done or given up at `at_ms`; kept, for de-duplication, until purged.
    Finished { ids: Vec<i64>, at_ms: i64 },
    /// Put back, due at `due_ms`, having been tried `attempts` times.
    Rescheduled { ids: Vec<i64>, due_ms: i64, attempts: u32 },
}

/// Derives the jobs a newly stored event causes; called inside the transaction that stores the event, through
/// `jobs_of`.
pub trait JobSource: Send + Sync {
    fn jobs_for(&self, event: &SharedEvent) -> Vec<NewJob>;
}

/// The boundary between the write path and what derives jobs (push reads strangers' tags and content): a panic
/// there costs the event its jobs, never its write. Counted and logged with the event's id.
pub fn jobs_of(source: &dyn JobSource, event: &SharedEvent) -> Vec<NewJob> {
    match catch_unwind(AssertUnwindSafe(|| source.jobs_for(event))) {
        Ok(jobs) => jobs,
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            tracing::error!(id = %event.event.id, "event stored without its jobs: deriving them panicked: {why}");
            metrics::counter!(crate::metrics::JOB_SOURCE_FAILURES).increment(1);
            Vec::new()
        }
    }
}

/// The text a panic carried, if it carried one.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("")
}

/// All times are milliseconds since the epoch.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Adds jobs (those whose key was seen before are ignored); returns how many were new.
    async fn enqueue(&self, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError>;

    /// Takes up to `limit` due jobs, oldest due first, and leases them for `lease_ms`.
    async fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Job>, StoreError>;

    /// Applies outcomes, all in one transaction.
    async fn record(&self, updates: &[JobUpdate]) -> Result<(), StoreError>;

    /// When the next unleased job falls due, if any.
    async fn next_due(&self) -> Result<Option<i64>, StoreError>;

    /// Releases every lease: called at start, when no worker can still hold one.
    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Forgets finished jobs older than `before_ms`.
    async fn purge_finished(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Jobs not yet finished.
    async fn pending(&self) -> Result<u64, StoreError>;

    /// Finishes jobs not yet taken until `keep` unfinished ones are left (a queue past its size), from the devices
    /// with the most waiting first, each device's oldest first: a flood to one device (or one callback) is cut down
    /// before anyone else's push is touched, and a device with one waiting push loses it only when every device is
    /// down to one. Returns how many.
    async fn shed(&self, keep: u64, now_ms: i64) -> Result<u64, StoreError>;
}
