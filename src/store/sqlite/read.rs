//! Read-only connections for the queries a client can ask for (REQ, COUNT, negentropy), on rusqlite.
//!
//! Why not sqlx's pool, as before: sqlx runs a SQLite statement on the connection's own worker thread and hands each
//! row back over a channel, so a REQ that returned ten events cost a dozen thread wake-ups, and under `nostr-bench
//! req` those switches and the statement parsing (sqlx did not reuse the statement) were most of the relay's CPU
//! (BENCHMARKS.md). Here a query runs whole on a blocking thread with a cached statement: one hand-off each way.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use tokio::sync::Semaphore;

use crate::store::{StoreError, StoredEvent};

/// A query's text and its parameters, built together so that every value is bound, never spliced into the text.
#[derive(Default)]
pub(super) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self { text: text.to_owned(), values: Vec::new() }
    }

    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        self.text.push('?');
        self
    }
}

/// A fixed set of read-only connections, each used by one query at a time.
pub(super) struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    pub(super) fn open(path: &Path, count: usize, busy_timeout: Duration) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let connections = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(path, flags)?;
                conn.busy_timeout(busy_timeout)?;
                conn.pragma_update(None, "temp_store", "memory")?;
                conn.pragma_update(None, "cache_size", -32000)?;
                // Filters of one shape share a statement; a REQ's arms and conditions make a few dozen shapes.
                conn.set_prepared_statement_cache_capacity(128);
                Ok(conn)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self { permits: Semaphore::new(connections.len()), idle: Mutex::new(connections) })
    }

    /// Runs `work` on an idle connection on a blocking thread, waiting (as a task) for one to be free.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::new("the store is closed"))?;
        let conn = self.idle.lock().expect("reader list poisoned").pop().expect("a permit guarantees a connection");
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = work(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::new(format!("a read on the database failed: {e}")))?;
        self.idle.lock().expect("reader list poisoned").push(conn);
        result
    }

    /// The rows of `SELECT id, created_at, json ...`, in order, until they pass `max_bytes` of JSON (always at
    /// least one).
    pub(super) async fn events(&self, sql: Sql, max_bytes: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(&sql.text)?;
            let mut rows = statement.query(params_from_iter(&sql.values))?;
            let mut found = Vec::new();
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let json: String = row.get(2)?;
                bytes = bytes.saturating_add(json.len());
                if bytes > max_bytes && !found.is_empty() {
                    break;
                }
                let id: Vec<u8> = row.get(0)?;
                let id = id.try_into().map_err(|_| StoreError::new("stored id is not 32 bytes"))?;
                found.push(StoredEvent { id, created_at: row.get(1)?, json });
            }
            Ok(found)
        })
        .await
    }

    /// The one integer a query returns (a count).
    pub(super) async fn integer(&self, sql: Sql) -> Result<i64, StoreError> {
        self.read(move |conn| {
            Ok(conn.prepare_cached(&sql.text)?.query_row(params_from_iter(&sql.values), |row| row.get(0))?)
        })
        .await
    }

    /// Lets the connections go: queries already running finish, later ones fail.
    pub(super) fn close(&self) {
        self.permits.close();
    }
}
