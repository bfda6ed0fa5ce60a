//! The job queue in SQLite. Every change goes through the write connection, like events.

use async_trait::async_trait;
use rusqlite::{Transaction, params};

use super::SqliteStore;
use super::write::Synchronous;
use crate::store::StoreError;
use crate::store::jobs::{Job, JobQueue, JobUpdate, NewJob};

/// Inserts jobs on an open transaction (the event writer's, or `enqueue`'s own).
pub(super) fn insert_jobs(tx: &Transaction, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO jobs (dedup_key, group_key, payload, created_at, due_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (dedup_key) DO NOTHING",
    )?;
    let mut added = 0;
    for job in jobs {
        added += insert.execute(params![job.dedup_key, job.group_key, job.payload, now_ms, now_ms])? as u64;
    }
    Ok(added)
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
        let jobs = jobs.to_vec();
        self.write(move |conn| conn.transaction(Synchronous::Normal, |tx| insert_jobs(tx, &jobs, now_ms))).await
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Job>, StoreError> {
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                let mut claim = tx.prepare_cached(
                    "UPDATE jobs SET leased = 1, due_at = ?1 + ?2
                     WHERE id IN (SELECT id FROM jobs WHERE due_at <= ?1 AND leased = 0 ORDER BY due_at LIMIT ?3)
                     RETURNING id, group_key, payload, attempts, created_at",
                )?;
                let jobs = claim.query_map(params![now_ms, lease_ms, limit as i64], |row| {
                    Ok(Job {
                        id: row.get(0)?,
                        group_key: row.get(1)?,
                        payload: row.get(2)?,
                        attempts: row.get(3)?,
                        created_at: row.get(4)?,
                    })
                })?;
                Ok(jobs.collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
    }

    async fn record(&self, updates: &[JobUpdate]) -> Result<(), StoreError> {
        let updates = updates.to_vec();
        // A statement per job, by its key: cheaper than one per batch over `json_each`, whose ephemeral table SQLite
        // builds at each call.
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                for update in &updates {
                    match update {
                        JobUpdate::Finished { ids, at_ms } => {
                            let mut finish = tx.prepare_cached(
                                "UPDATE jobs SET due_at = NULL, leased = 0, finished_at = ? WHERE id = ?",
                            )?;
                            for id in ids {
                                finish.execute(params![at_ms, id])?;
                            }
                        }
                        JobUpdate::Rescheduled { ids, due_ms, attempts } => {
                            let mut reschedule =
                                tx.prepare_cached("UPDATE jobs SET due_at = ?, leased = 0, attempts = ? WHERE id = ?")?;
                            for id in ids {
                                reschedule.execute(params![due_ms, attempts, id])?;
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT min(due_at) FROM jobs WHERE due_at IS NOT NULL AND leased = 0")
                .fetch_one(&self.readers)
                .await?;
        Ok(next)
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.execute(
            Synchronous::Normal,
            "UPDATE jobs SET leased = 0, due_at = ? WHERE leased = 1",
            vec![now_ms.into()],
        )
        .await
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.execute(
            Synchronous::Normal,
            "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
            vec![before_ms.into()],
        )
        .await
    }

    async fn shed(&self, keep: u64, now_ms: i64) -> Result<u64, StoreError> {
        self.execute(
            Synchronous::Normal,
            // `newer`: how many jobs of the same device are newer; the largest first is the longest queues' oldest.
            "UPDATE jobs SET due_at = NULL, finished_at = ? WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY group_key ORDER BY id DESC) AS newer
                     FROM jobs WHERE due_at IS NOT NULL AND leased = 0)
                 ORDER BY newer DESC, id
                 LIMIT max((SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL) - ?, 0))",
            vec![now_ms.into(), (keep as i64).into()],
        )
        .await
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL").fetch_one(&self.readers).await?;
        Ok(count as u64)
    }
}
