//! The SQLite store: one write connection (rusqlite, on a blocking thread: `write.rs` says why), read-only
//! rusqlite connections for the queries clients ask (`read.rs`), and a small sqlx pool for the relay's own reads
//! (registrations, jobs, moderation lists). WAL mode lets readers run while the writer commits; `synchronous = FULL` makes every
//! event commit durable before the writer acknowledges it, and batching spreads that fsync over many events.

mod jobs;
mod read;
mod registrations;
mod write;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params, params_from_iter};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::DatabaseConfig;
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, SharedEvent, search};
use crate::store::jobs::{JobSource, jobs_of};
use crate::store::{
    ADD_MODERATION, CLEAR_MODERATION_LIST, EventStore, FORGET_SIGHTINGS, HOLD_LEASE, LIST_MODERATION, Leases,
    ModerationStore, RELEASE_LEASE, REMOVE_MODERATION, SIGHT, Sightings, StoreError, StoredEvent, Visibility,
    WriteOutcome, db_time,
};
use read::{Readers, Sql};
use write::{Synchronous, WriteConnection, delete_where, index_backlog, index_backlog_in_batch, write_event};

pub struct SqliteStore {
    writer: Arc<Mutex<WriteConnection>>,
    /// REQ, COUNT and negentropy.
    queries: Readers,
    readers: SqlitePool,
    /// Hides expired events from reads; dates the jobs a commit makes.
    clock: Clock,
    /// NIP-50: new events' content is indexed (`[database] search_index`), and a search ranks at most this many of
    /// the newest matches (`[database] search_candidates`).
    search_index: bool,
    search_candidates: usize,
    /// Events put in the search backlog since it was last indexed (changed only while the write connection is held).
    search_backlog: Arc<AtomicUsize>,
}

/// The search backlog is indexed in the commit that brings it to this many events (migration 0012 says why).
const BACKLOG_BATCH: usize = 1000;

impl SqliteStore {
    pub async fn open(path: &Path, config: &DatabaseConfig, clock: Clock) -> Result<Self, StoreError> {
        let busy_timeout = Duration::from_millis(config.busy_timeout_ms);
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| StoreError::new(format!("cannot create folder {}: {e}", folder.display())))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000");
        let mut migrator = SqliteConnection::connect_with(&options.clone().create_if_missing(true)).await?;
        super::migrations::migrator(super::migrations::SQLITE).run(&mut migrator).await?;
        migrator.close().await?;
        let owned = path.to_owned();
        let writer = tokio::task::spawn_blocking(move || WriteConnection::open(&owned, busy_timeout))
            .await
            .map_err(|e| StoreError::new(format!("opening the write connection failed: {e}")))??;
        let queries = Readers::open(path, config.readers(true) as usize, busy_timeout)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(2)
            // A SQLite connection does not drop like a network one; the check before each use was a round trip to
            // the connection's worker thread, two context switches, on every query.
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await?;
        let (search_index, search_candidates) = (config.search_index, config.search_candidates);
        let writer = Arc::new(Mutex::new(writer));
        let search_backlog = Arc::new(AtomicUsize::new(0));
        let store = Self { writer, queries, readers, clock, search_index, search_candidates, search_backlog };
        if store.search_index {
            // What a stop left in the backlog (or what was stored while search was off and noted before).
            store.search_backlog.store(1, Ordering::Relaxed);
            store.search_ready().await?;
        }
        Ok(store)
    }

    /// NIP-50: indexes the search backlog, if any, so that a search sees every event committed before it.
    async fn search_ready(&self) -> Result<(), StoreError> {
        if self.search_backlog.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let backlog = self.search_backlog.clone();
        self.write(move |conn| {
            // Not fsynced: the events are already durable, and a backlog lost in a power cut is indexed at start.
            conn.transaction(Synchronous::Normal, index_backlog)?;
            backlog.store(0, Ordering::Relaxed);
            Ok(())
        })
        .await
    }

    /// Runs `work` on the write connection on a blocking thread: one hand-off for a whole batch. The connection is
    /// taken before the hand-off, so that writers waiting for it wait as tasks: waiting on a blocking thread, the
    /// delivery workers' job bookkeeping piled up a hundred threads behind each event batch.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut WriteConnection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let mut conn = self.writer.clone().lock_owned().await;
        // A panic inside `work` rolls its transaction back as it unwinds; the connection stays sound.
        tokio::task::spawn_blocking(move || work(&mut conn))
            .await
            .map_err(|e| StoreError::new(format!("a write on the database failed: {e}")))?
    }

    /// One statement in its own transaction on the write connection; returns the rows it changed.
    async fn execute(&self, level: Synchronous, sql: &'static str, values: Vec<Value>) -> Result<u64, StoreError> {
        self.write(move |conn| {
            conn.transaction(level, |tx| Ok(tx.prepare_cached(sql)?.execute(params_from_iter(&values))? as u64))
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn write_batch(
        &self,
        batch: &[SharedEvent],
        job_source: Option<&Arc<dyn JobSource>>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let batch = batch.to_vec();
        let job_source = job_source.cloned();
        let now_ms = self.clock.millis();
        let search_index = self.search_index;
        let backlog = self.search_backlog.clone();
        self.write(move |conn| {
            let (mut added, mut indexed) = (0, false);
            let outcomes = conn.transaction(Synchronous::Full, |tx| {
                let mut outcomes = Vec::with_capacity(batch.len());
                for event in &batch {
                    let outcome = write_event(tx, event, search_index, &mut added)?;
                    if let (WriteOutcome::Stored, Some(source)) = (outcome, &job_source) {
                        jobs::insert_jobs(tx, &jobs_of(source.as_ref(), event), now_ms)?;
                    }
                    outcomes.push(outcome);
                }
                if added > 0 && backlog.load(Ordering::Relaxed) + added >= BACKLOG_BATCH {
                    indexed = index_backlog_in_batch(tx)?;
                }
                Ok(outcomes)
            })?;
            // Counted once committed: a failed batch left the backlog as it was.
            if indexed {
                backlog.store(0, Ordering::Relaxed);
            } else {
                backlog.fetch_add(added, Ordering::Relaxed);
            }
            Ok(outcomes)
        })
        .await
    }

    async fn query_filter(
        &self,
        filter: &Filter,
        visibility: Visibility<'_>,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if filter.limit == Some(0) || filter.is_empty_range() {
            return Ok(Vec::new());
        }
        let now = self.clock.secs();
        if let Some(terms) = filter.search.as_ref().map(search::Search::terms).filter(|terms| !terms.is_empty()) {
            self.search_ready().await?;
            // NIP-50: best match first (FTS5's bm25 rank), then newest, among the newest `search_candidates` matches:
            // FTS5 walks its index newest first and stops there. CROSS JOIN keeps the index as the outer loop: left
            // to itself, SQLite walked `events` by kind and ran the full-text query once per row, thousands of times
            // slower for a word every note holds (BENCHMARKS.md).
            let mut query = Sql::new(
                "SELECT e.id, e.created_at, e.json FROM (SELECT events_fts.rowid AS seq, events_fts.rank AS r \
                 FROM events_fts CROSS JOIN events e ON e.seq = events_fts.rowid WHERE events_fts MATCH ",
            );
            query.push_bind(search::fts5_query(terms)).push(" AND ");
            push_conditions(&mut query, &Filter { search: None, ..filter.clone() }, visibility, now, None);
            query.push(" ORDER BY events_fts.rowid DESC LIMIT ").push_bind(db_time(self.search_candidates as u64));
            query.push(") c JOIN events e ON e.seq = c.seq ORDER BY c.r, e.created_at DESC");
            if let Some(limit) = filter.limit {
                query.push(" LIMIT ").push_bind(db_time(limit));
            }
            return self.queries.events(query, max_bytes).await;
        }
        let arms = split_on_driver(filter);
        let (first, rest) = arms.split_first().expect("a filter yields at least one arm");
        let mut query = Sql::default();
        push_arm(&mut query, first, visibility, now);
        if let (true, Some(limit)) = (rest.is_empty() && !grouped(first), filter.limit) {
            // One arm comes in time order (from its index, or SQL's sort of a few rows past the limit); `newest`
            // makes NIP-01's tie-break within a second.
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            return self.queries.newest(query, limit, max_bytes).await;
        }
        for arm in rest {
            // An event carrying two of the tag values asked for is in two arms; UNION keeps it once.
            query.push(if filter.tags.is_empty() { " UNION ALL " } else { " UNION " });
            push_arm(&mut query, arm, visibility, now);
        }
        // By result column (time, then id): each arm delivers in time order from its index, and SQLite merges
        // the arms, so the limit stops every arm early.
        query.push(" ORDER BY 2 DESC, 1 ASC");
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(db_time(limit));
        }
        self.queries.events(query, max_bytes).await
    }

    async fn count(&self, filters: &[Filter], visibility: Visibility<'_>, at_most: u64) -> Result<u64, StoreError> {
        if filters.iter().any(|f| f.search.is_some()) {
            self.search_ready().await?;
        }
        let now = self.clock.secs();
        let mut query = Sql::new("SELECT COUNT(*) FROM (");
        let mut first = true;
        for filter in filters.iter().filter(|f| !f.is_empty_range()) {
            if !first {
                query.push(" UNION ");
            }
            first = false;
            query.push("SELECT e.id FROM events e WHERE ");
            push_conditions(&mut query, filter, visibility, now, None);
        }
        if first {
            return Ok(0);
        }
        // Counting stops past `at_most`: a COUNT over millions of rows costs no more than a bounded read.
        query.push(" LIMIT ").push_bind(db_time(at_most.saturating_add(1))).push(")");
        Ok(self.queries.integer(query).await? as u64)
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| delete_where(tx, "expires_at <= ?", params![db_time(now)]))
        })
        .await
    }

    async fn remove_event(&self, id: &Hash32) -> Result<bool, StoreError> {
        let id = *id;
        let removed = self
            .write(move |conn| conn.transaction(Synchronous::Full, |tx| delete_where(tx, "id = ?", params![&id[..]])))
            .await?;
        Ok(removed > 0)
    }

    async fn vacuum(&self) -> Result<(), StoreError> {
        self.write(|conn| conn.execute_batch("VACUUM; ANALYZE;")).await
    }

    async fn close(&self) {
        // Another process (`pushrelay import`) may have filled the backlog while the relay runs: the relay's count
        // does not see those rows, so the writer of them indexes them before it lets go.
        if let Err(e) = self.search_ready().await {
            tracing::warn!("indexing the search backlog at close failed: {e}");
        }
        self.queries.close();
        self.readers.close().await;
        // A checkpoint folds the WAL back into the main file so that a stopped relay leaves one tidy file.
        if let Err(e) = self.write(|conn| conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")).await {
            tracing::warn!("checkpoint at shutdown failed: {e}");
        }
    }
}

#[async_trait]
impl Leases for SqliteStore {
    async fn hold(&self, name: &str, node: &str, until: i64, now: i64) -> Result<bool, StoreError> {
        let (name, node) = (name.to_owned(), node.to_owned());
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                let held: Option<String> = tx
                    .prepare_cached(HOLD_LEASE)?
                    .query_row(params![name, node, until, now], |row| row.get(0))
                    .optional()?;
                Ok(held.is_some())
            })
        })
        .await
    }

    async fn release(&self, name: &str, node: &str) -> Result<(), StoreError> {
        self.execute(Synchronous::Normal, RELEASE_LEASE, vec![name.to_owned().into(), node.to_owned().into()]).await?;
        Ok(())
    }
}

#[async_trait]
impl Sightings for SqliteStore {
    async fn first_sighting(&self, hash: [u8; 32], now: i64, since: i64) -> Result<bool, StoreError> {
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                let seen: Option<i64> =
                    tx.prepare_cached(SIGHT)?.query_row(params![&hash[..], now, since], |row| row.get(0)).optional()?;
                Ok(seen.is_some())
            })
        })
        .await
    }

    async fn forget_sightings(&self, before: i64) -> Result<u64, StoreError> {
        self.execute(Synchronous::Normal, FORGET_SIGHTINGS, vec![before.into()]).await
    }
}

#[async_trait]
impl ModerationStore for SqliteStore {
    async fn moderation(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(LIST_MODERATION).fetch_all(&self.readers).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
    }

    async fn moderate(&self, list: &str, value: &str, reason: &str) -> Result<(), StoreError> {
        let values = vec![list.to_owned().into(), value.to_owned().into(), reason.to_owned().into()];
        self.execute(Synchronous::Full, ADD_MODERATION, values).await?;
        Ok(())
    }

    async fn clear_list(&self, list: &str) -> Result<(), StoreError> {
        self.execute(Synchronous::Full, CLEAR_MODERATION_LIST, vec![list.to_owned().into()]).await?;
        Ok(())
    }

    async fn unmoderate(&self, list: &str, value: &str) -> Result<(), StoreError> {
        self.execute(Synchronous::Full, REMOVE_MODERATION, vec![list.to_owned().into(), value.to_owned().into()])
            .await?;
        Ok(())
    }
}

/// Lists in a filter with this many values or fewer are split into one arm per value (see `split_on_driver`);
/// longer ones are one query that gathers and sorts.
const MAX_ARMS: usize = 32;

/// The field an index walk starts from (the first tag, else the authors, else the kinds), and the filter split on
/// its values: one filter per value, each an index range already in time order, which SQLite merges. A list in
/// one query (even of one value: SQLite cannot tell) makes it gather every match and sort, which grows with the
/// matches where a range does not (`cargo bench --bench store_queries`, BENCHMARKS.md).
fn split_on_driver(filter: &Filter) -> Vec<Cow<'_, Filter>> {
    let one_each = |set: &dyn Fn(&mut Filter, usize), count: usize| -> Vec<Cow<'_, Filter>> {
        (0..count)
            .map(|n| {
                let mut arm = filter.clone();
                set(&mut arm, n);
                Cow::Owned(arm)
            })
            .collect()
    };
    if let Some((letter, values)) = filter.tags.iter().next() {
        if (2..=MAX_ARMS).contains(&values.len()) {
            let set_value = |arm: &mut Filter, n: usize| {
                arm.tags.insert(*letter, vec![values[n].clone()]);
            };
            return one_each(&set_value, values.len());
        }
    } else if let Some(authors) = filter.authors.as_ref().filter(|a| (2..=MAX_ARMS).contains(&a.len())) {
        return one_each(&|arm, n| arm.authors = Some(vec![authors[n]]), authors.len());
    } else if let Some(kinds) =
        filter.kinds.as_ref().filter(|k| filter.authors.is_none() && (2..=MAX_ARMS).contains(&k.len()))
    {
        return one_each(&|arm, n| arm.kinds = Some(vec![kinds[n]]), kinds.len());
    }
    vec![Cow::Borrowed(filter)]
}

/// One `SELECT id, created_at, json` over the events a filter matches. A filter with tags is driven from the tag
/// index, which holds each tag's events newest first (filtering events by a tag subquery instead gathers every
/// event with the tag before it can sort, which grows with the tag's events; BENCHMARKS.md).
fn push_arm(query: &mut Sql, filter: &Filter, visibility: Visibility<'_>, now: u64) {
    let driving_tag = filter.tags.iter().next();
    match driving_tag {
        Some((letter, values)) => {
            // The tag row's copy of created_at, so that the order is the tag index's own.
            query.push(
                "SELECT e.id, d.created_at, e.json FROM tags d JOIN events e ON e.seq = d.event_seq WHERE d.name = ",
            );
            query.push_bind(letter.to_string());
            match values.as_slice() {
                [value] => query.push(" AND d.value = ").push_bind(value.clone()).push(" AND "),
                _ => query
                    .push(" AND d.value IN (SELECT value FROM json_each(")
                    .push_bind(serde_json::to_string(values).expect("strings serialize"))
                    .push(")) AND "),
            };
        }
        None => {
            query.push("SELECT e.id, e.created_at, e.json FROM events e WHERE ");
        }
    }
    push_conditions(query, filter, visibility, now, driving_tag.map(|(letter, _)| *letter));
    // Each (name, value) is stored once per event, so one driving value yields each event once; an event that
    // carries several of the values asked for would come once per value, and GROUP BY folds those.
    if grouped(filter) {
        query.push(" GROUP BY e.seq");
    }
}

/// Whether a filter's arm folds an event found under several of its driving tag's values into one row.
fn grouped(filter: &Filter) -> bool {
    filter.tags.iter().next().is_some_and(|(_, values)| values.len() > 1)
}

/// Appends a filter's conditions to a query over `events e`. Every value is a bound parameter; lists travel as
/// one JSON array parameter each, so that a filter with thousands of ids is still one short statement with a
/// stable text (and a cached plan).
/// `skip_tag`: a tag letter the query already joins on (its condition is not repeated).
fn push_conditions(query: &mut Sql, filter: &Filter, visibility: Visibility<'_>, now: u64, skip_tag: Option<char>) {
    query.push("(e.expires_at IS NULL OR e.expires_at > ").push_bind(db_time(now)).push(")");
    // One value is an equality, so that the planner can walk an index range in time order (`split_on_driver`).
    if let Some(ids) = &filter.ids {
        push_hashes_condition(query, "e.id", ids);
    }
    if let Some(authors) = &filter.authors {
        push_hashes_condition(query, "e.pubkey", authors);
    }
    match filter.kinds.as_deref() {
        Some([kind]) => {
            query.push(" AND e.kind = ").push_bind(i64::from(*kind));
        }
        Some(kinds) => {
            let kinds = serde_json::to_string(kinds).expect("integers serialize");
            query.push(" AND e.kind IN (SELECT value FROM json_each(").push_bind(kinds).push("))");
        }
        None => {}
    }
    if let Some(since) = filter.since {
        query.push(" AND e.created_at >= ").push_bind(db_time(since));
    }
    if let Some(until) = filter.until {
        query.push(" AND e.created_at <= ").push_bind(db_time(until));
    }
    for (letter, values) in filter.tags.iter().filter(|(letter, _)| Some(**letter) != skip_tag) {
        query
            .push(" AND e.seq IN (SELECT t.event_seq FROM tags t WHERE t.name = ")
            .push_bind(letter.to_string())
            .push(" AND t.value IN (SELECT value FROM json_each(")
            .push_bind(serde_json::to_string(values).expect("strings serialize"))
            .push(")))");
    }
    if let Some(terms) = filter.search.as_ref().map(search::Search::terms).filter(|terms| !terms.is_empty()) {
        query
            .push(" AND e.seq IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ")
            .push_bind(search::fts5_query(terms))
            .push(")");
    }
    push_group_conditions(query, visibility);
    if !visibility.restricted_kinds.is_empty() {
        push_restricted_conditions(query, visibility);
    }
}

/// Restricted kinds only to their parties. The kinds are compared one by one, not looked up in an `IN` list: SQLite
/// builds an `IN` list's table afresh each time a statement runs, and this condition is on every anonymous REQ
/// (what the list cost: BENCHMARKS.md). The list is the
/// relay's own and short, so the statement's text is still one per configuration. The parties' part is left out for
/// a reader who has not authenticated. A list longer than `COMPARED_KINDS` is looked up after all: each comparison
/// deepens the expression, and SQLite refuses one deeper than 1,000.
fn push_restricted_conditions(query: &mut Sql, visibility: Visibility<'_>) {
    const COMPARED_KINDS: usize = 64;
    let kinds = visibility.restricted_kinds;
    if kinds.len() <= COMPARED_KINDS {
        query.push(" AND ((");
        for (n, kind) in kinds.iter().enumerate() {
            query.push(if n == 0 { "e.kind <> " } else { " AND e.kind <> " }).push_bind(i64::from(*kind));
        }
    } else {
        let list = serde_json::to_string(kinds).expect("integers serialize");
        query.push(" AND (e.kind NOT IN (SELECT value FROM json_each(").push_bind(list).push(")");
    }
    query.push(")");
    if !visibility.viewers.is_empty() {
        let viewers = hex_list(visibility.viewers);
        query
            .push(" OR e.pubkey IN (SELECT unhex(value) FROM json_each(")
            .push_bind(viewers.clone())
            .push(")) OR e.seq IN (SELECT t.event_seq FROM tags t WHERE t.name = 'p' AND t.value IN (SELECT value FROM json_each(")
            .push_bind(viewers)
            .push(")))");
    }
    query.push(")");
}

/// NIP-29: events of the private groups the reader is not a member of (by the event's group, `events.grp`: NULL
/// for most rows, and SQLite builds the list's look-up once per statement), and the relay's metadata events (`d`
/// tag) of the groups it may not see.
fn push_group_conditions(query: &mut Sql, visibility: Visibility<'_>) {
    if !visibility.hidden_groups.is_empty() {
        query
            .push(" AND (e.grp IS NULL OR e.grp NOT IN (SELECT value FROM json_each(")
            .push_bind(serde_json::to_string(visibility.hidden_groups).expect("strings serialize"))
            .push(")))");
    }
    if !visibility.hidden_metadata.is_empty() {
        query
            .push(" AND NOT (e.kind BETWEEN 39000 AND 39003 AND e.d_tag IN (SELECT value FROM json_each(")
            .push_bind(serde_json::to_string(visibility.hidden_metadata).expect("strings serialize"))
            .push(")))");
    }
}

/// `column` (a 32-byte blob) equal to the one hash, or in the list.
fn push_hashes_condition(query: &mut Sql, column: &'static str, hashes: &[Hash32]) {
    match hashes {
        [hash] => query.push(" AND ").push(column).push(" = ").push_bind(hash.to_vec()),
        _ => query
            .push(" AND ")
            .push(column)
            .push(" IN (SELECT unhex(value) FROM json_each(")
            .push_bind(hex_list(hashes))
            .push("))"),
    };
}

fn hex_list(values: &[[u8; 32]]) -> String {
    serde_json::to_string(&values.iter().map(hex::encode).collect::<Vec<_>>()).expect("strings serialize")
}
