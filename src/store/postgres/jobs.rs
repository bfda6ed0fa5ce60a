//! The job queue in PostgreSQL, shared by every node: jobs are claimed with `FOR UPDATE SKIP LOCKED`, so each is
//! taken by one node; a claim leases the job to the node until `due_at`, after which any node may take it again.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::store::StoreError;
use crate::store::jobs::{Job, JobQueue, JobUpdate, NewJob};

/// Inserts jobs on an open transaction (the event writer's, or `enqueue`'s own).
pub(super) async fn insert_jobs(conn: &mut PgConnection, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
    if jobs.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&NewJob) -> &String| jobs.iter().map(|j| f(j).clone()).collect::<Vec<String>>();
    let added = sqlx::query(
        "INSERT INTO jobs (dedup_key, group_key, payload, created_at, due_at)
         SELECT d, g, p, $4, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(d, g, p)
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(column(|j| &j.dedup_key))
    .bind(column(|j| &j.group_key))
    .bind(column(|j| &j.payload))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(added)
}

#[async_trait]
impl JobQueue for PgStore {
    async fn enqueue(&self, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_jobs(&mut conn, jobs, now_ms).await
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "UPDATE jobs SET leased_by = $3, due_at = $1 + $2
             WHERE id IN (SELECT id FROM jobs WHERE due_at <= $1 ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING id, group_key, payload, attempts, created_at",
        )
        .bind(now_ms)
        .bind(lease_ms)
        .bind(&self.node)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Job {
                    id: row.try_get(0)?,
                    group_key: row.try_get(1)?,
                    payload: row.try_get(2)?,
                    attempts: row.try_get::<i64, _>(3)? as u32,
                    created_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    async fn record(&self, updates: &[JobUpdate]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for update in updates {
            let statement = match update {
                JobUpdate::Finished { ids, at_ms } => {
                    sqlx::query("UPDATE jobs SET due_at = NULL, leased_by = NULL, finished_at = $1 WHERE id = ANY($2)")
                        .bind(*at_ms)
                        .bind(ids)
                }
                JobUpdate::Rescheduled { ids, due_ms, attempts } => {
                    sqlx::query("UPDATE jobs SET due_at = $1, leased_by = NULL, attempts = $2 WHERE id = ANY($3)")
                        .bind(*due_ms)
                        .bind(i64::from(*attempts))
                        .bind(ids)
                }
            };
            statement.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT min(due_at) FROM jobs WHERE due_at IS NOT NULL").fetch_one(&self.pool).await?)
    }

    /// Only this node's leases: the other nodes' workers may still hold theirs. (A relay's start first releases
    /// those of every node that is not live: `PgStore::join`.)
    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let released =
            sqlx::query("UPDATE jobs SET leased_by = NULL, due_at = $1 WHERE leased_by = $2 AND due_at IS NOT NULL")
                .bind(now_ms)
                .bind(&self.node)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(released)
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(purged)
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL").fetch_one(&self.pool).await?;
        Ok(pending as u64)
    }

    async fn shed(&self, keep: u64, now_ms: i64) -> Result<u64, StoreError> {
        let shed = sqlx::query(
            // `newer`: how many jobs of the same device are newer; the largest first is the longest queues' oldest.
            // (A window function cannot be read FOR UPDATE: the outer conditions are checked again on each row the
            // UPDATE locks, so a job leased meanwhile is left alone.)
            "UPDATE jobs SET due_at = NULL, finished_at = $1
             WHERE due_at IS NOT NULL AND leased_by IS NULL AND id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY group_key ORDER BY id DESC) AS newer
                     FROM jobs WHERE due_at IS NOT NULL AND leased_by IS NULL) AS ranked
                 ORDER BY newer DESC, id
                 LIMIT GREATEST((SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL) - $2, 0))",
        )
        .bind(now_ms)
        .bind(keep as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(shed)
    }
}
