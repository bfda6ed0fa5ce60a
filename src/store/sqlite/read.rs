//! Read-only connections for the queries a client can ask for (REQ, COUNT, negentropy), on rusqlite.
//!
//! Why not sqlx's pool, as before: sqlx runs a SQLite statement on the connection's own worker thread and hands each
//! row back over a channel, so a REQ that returned ten events cost a dozen thread wake-ups, and under `nostr-bench
//! req` those switches and the statement parsing (sqlx did not reuse the statement) were most of the relay's CPU
//! (BENCHMARKS.md). Here a query runs whole on a blocking thread with a cached statement: one hand-off each way.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use tokio::sync::oneshot;

use crate::store::{StoreError, StoredEvent, db_time};

/// How many rows past its limit a query for the newest events reads (`Readers::newest`), for the second the limit
/// falls in; a second with more events than that is sorted by SQL instead.
const TIE_ROOM: usize = 32;

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

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// Read-only connections, each on a thread of its own that takes queries from one shared queue. (Not
/// `spawn_blocking` with a pool of connections: each query then woke a sleeping thread and was woken back; threads
/// that drain a queue run queries back to back while they wait, as the signature checks do.) The queue needs no
/// bound of its own: a connection awaits its query before it reads its next message, so it holds one place at most.
pub(super) struct Readers {
    queue: Mutex<Option<flume::Sender<Job>>>,
}

impl Readers {
    pub(super) fn open(path: &Path, count: usize, busy_timeout: Duration) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let (queue, jobs) = flume::unbounded::<Job>();
        for n in 0..count.max(1) {
            let conn = Connection::open_with_flags(path, flags)?;
            conn.busy_timeout(busy_timeout)?;
            conn.pragma_update(None, "temp_store", "memory")?;
            conn.pragma_update(None, "cache_size", -32000)?;
            // Pages read through the map are not copied into the connection's cache: more REQs per CPU-second under
            // `nostr-bench req` (BENCHMARKS.md). Address space only; the kernel's page cache holds the pages.
            conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
            // Without the query planner stability guarantee SQLite marks a statement to be prepared again whenever
            // a parameter it compared with a partial index's condition is bound (our `expires_at > ?` against
            // `events_by_expiry`): every REQ was parsed and planned anew, a tenth of the relay's CPU (BENCHMARKS.md).
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            // Filters of one shape share a statement; a REQ's arms and conditions make a few dozen shapes.
            conn.set_prepared_statement_cache_capacity(128);
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-read-{n}"))
                .spawn(move || {
                    for job in jobs.iter() {
                        job(&conn);
                    }
                })
                .map_err(|e| StoreError::new(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(Self { queue: Mutex::new(Some(queue)) })
    }

    /// Runs `work` on the next free connection's thread.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // A panic is caught so that the thread and its connection go on serving.
            let result = catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(StoreError::new("a read on the database panicked")));
            let _ = reply.send(result);
        });
        let queue = self.queue.lock().expect("reader queue poisoned").clone();
        queue.ok_or_else(closed)?.send(job).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// The rows of `SELECT id, created_at, json ...`, in order, until they pass `max_bytes` of JSON (always at
    /// least one).
    pub(super) async fn events(&self, sql: Sql, max_bytes: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| all_events(conn, &sql, max_bytes)).await
    }

    /// The newest `limit` events of `arm` (a `SELECT id, created_at, json ...` without its order), in NIP-01's
    /// order: newest first, within one second the lowest id first. The rows are read newest second first up to
    /// `TIE_ROOM` past the limit, and on only through the second the limit falls in, the tie-break made here: SQL's
    /// own sorted that second's rows, JSON and all (its cost: BENCHMARKS.md). Should that
    /// second run past the cap, the query runs again with SQL's tie-break.
    pub(super) async fn newest(
        &self,
        arm: Sql,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |conn| {
            let cap = limit.saturating_add(TIE_ROOM);
            let text = format!("{} ORDER BY 2 DESC LIMIT ?", arm.text);
            let mut statement = conn.prepare_cached(&text)?;
            let mut rows =
                statement.query(params_from_iter(arm.values.iter().chain([&Value::from(db_time(cap as u64))])))?;
            let mut newest = Newest::new(limit, max_bytes);
            let mut read = 0;
            while let Some(row) = rows.next()? {
                let event = stored_event(row)?;
                if !newest.wants(event.created_at) {
                    return Ok(newest.finish());
                }
                newest.add(event);
                read += 1;
            }
            if read < cap {
                return Ok(newest.finish());
            }
            let mut exact = arm;
            exact.push(" ORDER BY 2 DESC, 1 ASC LIMIT ").push_bind(db_time(limit as u64));
            all_events(conn, &exact, max_bytes)
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

    /// Lets the connections go: queries already queued finish, later ones fail, and each thread closes its
    /// connection and ends once the queue is empty.
    pub(super) fn close(&self) {
        self.queue.lock().expect("reader queue poisoned").take();
    }
}

/// Every row of a query, in its order, until `max_bytes` of JSON (the first row whatever its size).
fn all_events(conn: &Connection, sql: &Sql, max_bytes: usize) -> Result<Vec<StoredEvent>, StoreError> {
    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut rows = statement.query(params_from_iter(&sql.values))?;
    let mut found = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let event = stored_event(row)?;
        bytes = bytes.saturating_add(event.json.len());
        if bytes > max_bytes && !found.is_empty() {
            break;
        }
        found.push(event);
    }
    Ok(found)
}

/// A row of `SELECT id, created_at, json`. The id is copied from SQLite's buffer, not through a `Vec`: one
/// allocation fewer per row.
fn stored_event(row: &rusqlite::Row<'_>) -> Result<StoredEvent, StoreError> {
    let id = row.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
    let id = id.try_into().map_err(|_| StoreError::new("stored id is not 32 bytes"))?;
    Ok(StoredEvent { id, created_at: row.get(1)?, json: row.get(2)? })
}

/// The newest `limit` of events that arrive newest second first, ties in any order; at most `max_bytes` of JSON
/// beyond the first (then as many as fit), as `Readers::events` keeps. Holds no more than `limit` + 1 events.
struct Newest {
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    /// Newest second first, as they came.
    kept: Vec<StoredEvent>,
}

impl Newest {
    fn new(limit: usize, max_bytes: usize) -> Self {
        Self { limit, max_bytes, bytes: 0, kept: Vec::new() }
    }

    /// Whether an event of `created_at` may still be among the newest: once `limit` are kept, only one of the
    /// oldest second kept can (by a lower id), and every later row is older still.
    fn wants(&self, created_at: i64) -> bool {
        self.kept.len() < self.limit || self.kept.last().is_some_and(|last| created_at >= last.created_at)
    }

    fn add(&mut self, event: StoredEvent) {
        self.bytes = self.bytes.saturating_add(event.json.len());
        if self.bytes > self.max_bytes && !self.kept.is_empty() && self.kept.len() < self.limit {
            self.limit = self.kept.len();
        }
        self.kept.push(event);
        if self.kept.len() > self.limit {
            // One too many: the highest id of the oldest second goes.
            let second = self.kept.last().map_or(0, |last| last.created_at);
            let start = self.kept.partition_point(|e| e.created_at > second);
            let highest = (start..self.kept.len()).max_by_key(|&i| self.kept[i].id).unwrap_or(start);
            let gone = self.kept.remove(highest);
            self.bytes -= gone.json.len();
        }
    }

    fn finish(mut self) -> Vec<StoredEvent> {
        self.kept.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        self.kept
    }
}

fn closed() -> StoreError {
    StoreError::new("the store is closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(created_at: i64, id: u8, bytes: usize) -> StoredEvent {
        StoredEvent { id: [id; 32], created_at, json: "x".repeat(bytes) }
    }

    fn newest(limit: usize, max_bytes: usize, rows: &[(i64, u8)]) -> Vec<(i64, u8)> {
        let mut newest = Newest::new(limit, max_bytes);
        for &(created_at, id) in rows {
            if !newest.wants(created_at) {
                break;
            }
            newest.add(event(created_at, id, 10));
        }
        newest.finish().iter().map(|e| (e.created_at, e.id[0])).collect()
    }

    #[test]
    fn the_second_the_limit_falls_in_keeps_its_lowest_ids() {
        let rows = [(9, 5), (8, 7), (8, 3), (8, 9), (8, 1), (7, 2)];
        assert_eq!(newest(3, usize::MAX, &rows), [(9, 5), (8, 1), (8, 3)]);
        assert_eq!(newest(10, usize::MAX, &rows), [(9, 5), (8, 1), (8, 3), (8, 7), (8, 9), (7, 2)]);
        assert_eq!(newest(1, usize::MAX, &rows), [(9, 5)]);
    }

    #[test]
    fn bytes_cap_the_count_and_the_first_is_always_kept() {
        let rows = [(9, 5), (8, 7), (8, 3), (7, 2)];
        // 10 bytes each: 25 bytes hold two, and the last second's lowest id is the second of them.
        assert_eq!(newest(10, 25, &rows), [(9, 5), (8, 3)]);
        assert_eq!(newest(10, 5, &rows), [(9, 5)]);
    }
}
