//! The job queue in SQLite. Every change goes through the write connection, like events.

use async_trait::async_trait;
use sqlx::{Connection, Row, SqliteConnection};

use super::{IMMEDIATE, SqliteStore, Synchronous, set_synchronous};
use crate::store::StoreError;
use crate::store::jobs::{Job, JobQueue, NewJob};

/// Inserts jobs on an open transaction (the event writer's, or `enqueue`'s own).
pub(super) async fn insert_jobs(conn: &mut SqliteConnection, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
    let mut added = 0;
    for job in jobs {
        added += sqlx::query(
            "INSERT INTO jobs (dedup_key, group_key, payload, created_at, due_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(&job.dedup_key)
        .bind(&job.group_key)
        .bind(&job.payload)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(added)
}

fn id_list(ids: &[i64]) -> String {
    serde_json::to_string(ids).expect("integers serialize")
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, jobs: &[NewJob], now_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        let mut tx = conn.begin_with(IMMEDIATE).await?;
        let added = insert_jobs(&mut tx, jobs, now_ms).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Job>, StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        let rows = sqlx::query(
            "UPDATE jobs SET leased = 1, due_at = ?1 + ?2
             WHERE id IN (SELECT id FROM jobs WHERE due_at <= ?1 AND leased = 0 ORDER BY due_at LIMIT ?3)
             RETURNING id, group_key, payload, attempts, created_at",
        )
        .bind(now_ms)
        .bind(lease_ms)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
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

    async fn finish(&self, ids: &[i64], now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        sqlx::query(
            "UPDATE jobs SET due_at = NULL, leased = 0, finished_at = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(now_ms)
        .bind(id_list(ids))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn reschedule(&self, ids: &[i64], due_ms: i64, attempts: u32) -> Result<(), StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        sqlx::query(
            "UPDATE jobs SET due_at = ?, leased = 0, attempts = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(due_ms)
        .bind(attempts as i64)
        .bind(id_list(ids))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT min(due_at) FROM jobs WHERE due_at IS NOT NULL AND leased = 0")
                .fetch_one(&self.readers)
                .await?;
        Ok(next)
    }

    async fn release_leases(&self, now_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        let released = sqlx::query("UPDATE jobs SET leased = 0, due_at = ? WHERE leased = 1")
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(released)
    }

    async fn purge_finished(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.writer.lock().await;
        set_synchronous(&mut conn, Synchronous::Normal).await?;
        let purged = sqlx::query("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?")
            .bind(before_ms)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(purged)
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE due_at IS NOT NULL").fetch_one(&self.readers).await?;
        Ok(count as u64)
    }
}
