//! Which nodes are live on this database (the `nodes` table): each node registers at start and renews its
//! `last_seen`; a node not seen for `LIVE_SECS` is gone, and its job and upstream leases are released (by the next
//! node that starts, or by a live node's next heartbeat) instead of waiting out their lease time.

use std::time::Duration;

use super::PgStore;
use crate::store::StoreError;

/// How often a running node renews `last_seen`.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(5);
/// A node not seen for this long is gone. Several heartbeats, so that a busy node is not taken for dead; short, so
/// that a node restarted at once under the same configured id is refused only briefly.
pub(super) const LIVE_SECS: i64 = 20;
/// Serialises registrations, so that two nodes starting together with one id cannot both see it free.
const NODES_LOCK: i64 = 0x7075_7368_6e6f_6465;

const NOW: &str = "EXTRACT(EPOCH FROM clock_timestamp())::BIGINT";

impl PgStore {
    /// Registers this node as live, refusing to when a live node already has its id; then releases the job and
    /// upstream leases of every node that is not live (this node's own from an earlier run included).
    pub async fn join(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(NODES_LOCK).execute(&mut *tx).await?;
        let seen_ago: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {NOW} - last_seen FROM nodes WHERE node = $1 AND last_seen > {NOW} - $2"
        )))
        .bind(&self.node)
        .bind(LIVE_SECS)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(seen_ago) = seen_ago {
            return Err(StoreError::new(format!(
                "node id {:?} is taken by a live node (seen {}s ago): give each node its own [database] node_id, or \
                 leave it empty for a unique one (if that node has just died, it is gone after {LIVE_SECS}s)",
                self.node,
                seen_ago.max(0)
            )));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO nodes (node, started_at, last_seen) VALUES ($1, {NOW}, {NOW})
             ON CONFLICT (node) DO UPDATE SET started_at = excluded.started_at, last_seen = excluded.last_seen"
        )))
        .bind(&self.node)
        .execute(&mut *tx)
        .await?;
        // Live: seen lately, and not this node (whose leases are from a run that is over).
        let not_live = format!("NOT IN (SELECT node FROM nodes WHERE node <> $1 AND last_seen > {NOW} - {LIVE_SECS})");
        let jobs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET leased_by = NULL, due_at = $2 WHERE due_at IS NOT NULL AND leased_by {not_live}"
        )))
        .bind(&self.node)
        .bind(self.clock.millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let relays = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM upstream_leases WHERE node {not_live}")))
            .bind(&self.node)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Their leases are released: nothing more to remember of them (a node without a configured id has a new
        // one at each start, so rows would pile up).
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM nodes WHERE last_seen <= {NOW} - {LIVE_SECS}")))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(node = %self.node, released_jobs = jobs, released_relays = relays, "joined the other nodes");
        Ok(())
    }

    /// Says this node is still live (and registers it again if its row was lost).
    pub async fn renew(&self) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO nodes (node, started_at, last_seen) VALUES ($1, {NOW}, {NOW})
             ON CONFLICT (node) DO UPDATE SET last_seen = excluded.last_seen"
        )))
        .bind(&self.node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the nodes that stopped being live since, releasing their job and upstream leases: a node killed
    /// just before another started (or restarted under a new id) looked live then.
    pub async fn reap(&self) -> Result<(), StoreError> {
        let (nodes, jobs, relays): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH gone AS (DELETE FROM nodes WHERE last_seen <= {NOW} - {LIVE_SECS} RETURNING node),
                  jobs_released AS (UPDATE jobs SET leased_by = NULL, due_at = $1
                                    WHERE due_at IS NOT NULL AND leased_by IN (SELECT node FROM gone) RETURNING 1),
                  relays_released AS (DELETE FROM upstream_leases WHERE node IN (SELECT node FROM gone) RETURNING 1)
             SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM jobs_released),
                    (SELECT COUNT(*) FROM relays_released)"
        )))
        .bind(self.clock.millis())
        .fetch_one(&self.pool)
        .await?;
        if nodes > 0 {
            tracing::info!(nodes, released_jobs = jobs, released_relays = relays, "nodes gone: their leases released");
        }
        Ok(())
    }

    /// Says this node is gone (a clean stop), so that what it still leases is released by the next node to start.
    pub async fn leave(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM nodes WHERE node = $1").bind(&self.node).execute(&self.pool).await?;
        Ok(())
    }

    /// Renews `last_seen` every `HEARTBEAT` until shutdown, and reaps the nodes gone meanwhile (the relay leaves
    /// once its work is done: `leave`).
    pub async fn keep_alive(self: std::sync::Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = self.renew().await {
                tracing::warn!("cannot tell the other nodes this one is live: {e}");
            }
            if let Err(e) = self.reap().await {
                tracing::warn!("cannot release the leases of nodes that are gone: {e}");
            }
        }
    }
}
