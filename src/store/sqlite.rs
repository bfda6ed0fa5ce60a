//! The SQLite store: one write connection (used only by the writer task) and a pool of read-only connections.
//! WAL mode lets readers run while the writer commits; `synchronous = FULL` makes every commit durable before the
//! writer acknowledges it, and batching spreads that fsync over many events.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use super::{EventStore, StoreError, StoredEvent, WriteOutcome, db_time};
use crate::protocol::{Filter, KindClass, SharedEvent};

pub struct SqliteStore {
    writer: Mutex<SqliteConnection>,
    readers: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path, read_connections: u32) -> Result<Self, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| StoreError(format!("cannot create folder {}: {e}", folder.display())))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000");
        let mut writer = SqliteConnection::connect_with(&options.clone().create_if_missing(true)).await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(read_connections.max(1))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer: Mutex::new(writer), readers })
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn write_batch(&self, batch: &[SharedEvent]) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for event in batch {
            outcomes.push(write_event(&mut tx, event).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn query_filter(&self, filter: &Filter) -> Result<Vec<StoredEvent>, StoreError> {
        if filter.limit == Some(0) || filter.is_empty_range() {
            return Ok(Vec::new());
        }
        let mut query = filter_query(filter);
        let rows = query.build().fetch_all(&self.readers).await?;
        rows.into_iter()
            .map(|row| {
                let id: Vec<u8> = row.try_get(0)?;
                Ok(StoredEvent {
                    id: id.try_into().map_err(|_| StoreError("stored id is not 32 bytes".into()))?,
                    created_at: row.try_get(1)?,
                    json: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.readers.close().await;
        let mut writer = self.writer.lock().await;
        // A checkpoint folds the WAL back into the main file so that a stopped relay leaves one tidy file.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut *writer).await {
            tracing::warn!("checkpoint at shutdown failed: {e}");
        }
    }
}

async fn write_event(conn: &mut SqliteConnection, event: &SharedEvent) -> Result<WriteOutcome, StoreError> {
    let replacement_key = match event.class() {
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(event.d_tag()),
        KindClass::Regular | KindClass::Ephemeral => None,
    };
    if let Some(d_tag) = replacement_key {
        let current = sqlx::query("SELECT seq, created_at, id FROM events WHERE pubkey = ? AND kind = ? AND d_tag = ?")
            .bind(&event.pubkey()[..])
            .bind(event.kind())
            .bind(d_tag)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(current) = current {
            let (seq, created_at, id): (i64, i64, Vec<u8>) =
                (current.try_get(0)?, current.try_get(1)?, current.try_get(2)?);
            if id == event.id() {
                return Ok(WriteOutcome::Duplicate);
            }
            // Newest wins; on equal created_at the lowest id wins (NIP-01).
            let incoming_time = db_time(event.created_at());
            if created_at > incoming_time || (created_at == incoming_time && id[..] < event.id()[..]) {
                return Ok(WriteOutcome::Superseded);
            }
            delete_event(conn, seq).await?;
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO events (id, pubkey, created_at, kind, d_tag, json) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING RETURNING seq",
    )
    .bind(&event.id()[..])
    .bind(&event.pubkey()[..])
    .bind(db_time(event.created_at()))
    .bind(event.kind())
    .bind(replacement_key)
    .bind(&*event.json)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(inserted) = inserted else { return Ok(WriteOutcome::Duplicate) };
    let seq: i64 = inserted.try_get(0)?;
    let tags: Vec<(String, &str)> = event.indexed_tags().map(|(letter, value)| (letter.to_string(), value)).collect();
    if !tags.is_empty() {
        // One statement for all tags: the pairs travel as a JSON array and SQLite unpacks them.
        let tags = serde_json::to_string(&tags).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query(
            "INSERT INTO tags (event_seq, name, value, created_at)
             SELECT ?, value ->> 0, value ->> 1, ? FROM json_each(?)",
        )
        .bind(seq)
        .bind(db_time(event.created_at()))
        .bind(tags)
        .execute(&mut *conn)
        .await?;
    }
    Ok(WriteOutcome::Stored)
}

async fn delete_event(conn: &mut SqliteConnection, seq: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM tags WHERE event_seq = ?").bind(seq).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM events WHERE seq = ?").bind(seq).execute(&mut *conn).await?;
    Ok(())
}

/// Compiles a filter to SQL. Every value is a bound parameter; lists travel as one JSON array parameter each, so
/// that a filter with thousands of ids is still one short statement with a stable text (and a cached plan).
fn filter_query(filter: &Filter) -> QueryBuilder<Sqlite> {
    let mut query = QueryBuilder::new("SELECT e.id, e.created_at, e.json FROM events e WHERE 1 = 1");
    if let Some(ids) = &filter.ids {
        query.push(" AND e.id IN (SELECT unhex(value) FROM json_each(").push_bind(hex_list(ids)).push("))");
    }
    if let Some(authors) = &filter.authors {
        query.push(" AND e.pubkey IN (SELECT unhex(value) FROM json_each(").push_bind(hex_list(authors)).push("))");
    }
    if let Some(kinds) = &filter.kinds {
        let kinds = serde_json::to_string(kinds).expect("integers serialize");
        query.push(" AND e.kind IN (SELECT value FROM json_each(").push_bind(kinds).push("))");
    }
    if let Some(since) = filter.since {
        query.push(" AND e.created_at >= ").push_bind(db_time(since));
    }
    if let Some(until) = filter.until {
        query.push(" AND e.created_at <= ").push_bind(db_time(until));
    }
    for (letter, values) in &filter.tags {
        query
            .push(" AND e.seq IN (SELECT t.event_seq FROM tags t WHERE t.name = ")
            .push_bind(letter.to_string())
            .push(" AND t.value IN (SELECT value FROM json_each(")
            .push_bind(serde_json::to_string(values).expect("strings serialize"))
            .push(")))");
    }
    query.push(" ORDER BY e.created_at DESC, e.id ASC");
    if let Some(limit) = filter.limit {
        query.push(" LIMIT ").push_bind(db_time(limit));
    }
    query
}

fn hex_list(values: &[[u8; 32]]) -> String {
    serde_json::to_string(&values.iter().map(hex::encode).collect::<Vec<_>>()).expect("strings serialize")
}
