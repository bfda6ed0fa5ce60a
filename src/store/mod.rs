//! Durable storage of events behind one small trait, so that another database can be added without touching the
//! protocol code. Writes go through the single [`writer`] task; reads go straight to the store.

pub mod jobs;
mod migrations;
pub mod postgres;
pub mod registrations;
mod rules;
mod sqlite;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use futures_util::{Stream, TryStreamExt};

use crate::clock::Clock;
use crate::config::DatabaseConfig;
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, SharedEvent};
use jobs::{JobQueue, JobSource};
use registrations::RegistrationStore;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// What became of one event handed to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Stored,
    /// The same id is already stored.
    Duplicate,
    /// A replaceable or addressable event older than the version already stored.
    Superseded,
    /// Its author deleted it (NIP-09) or asked to vanish (NIP-62) before it arrived.
    Deleted,
}

/// Kinds that only some readers may see: an event of such a kind is visible to its author and to the pubkeys it
/// `p`-tags, when they are among `viewers` (the pubkeys the connection authenticated as, NIP-42).
/// NIP-29 adds the groups the reader may not see: events whose group (first `h` tag, `VerifiedEvent::group`) is one
/// of `hidden_groups` (private groups it is not a member of, deleted ones), and the group metadata events (kinds
/// 39000-39003) whose `d` is one of `hidden_metadata`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Visibility<'a> {
    pub restricted_kinds: &'a [u16],
    pub viewers: &'a [Hash32],
    pub hidden_groups: &'a [String],
    pub hidden_metadata: &'a [String],
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub message: String,
    /// The database could not be written or reached at all (locked past the busy timeout, disk full, I/O error,
    /// connection lost): the same for every event of a batch, so the writer refuses the batch whole instead of
    /// retrying it event by event.
    pub unavailable: bool,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), unavailable: false }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
            _ => false,
        };
        Self { message: e.to_string(), unavailable }
    }
}

/// Database error codes that say the database, not the statement, is the trouble. PostgreSQL: connection
/// exceptions (08), insufficient resources such as a full disk (53), an operator intervention such as a restart (57).
/// SQLite (primary result codes): busy (5), locked (6), I/O error (10), full (13), cannot open (14).
fn unavailable_code(code: &str) -> bool {
    match code.parse::<i64>() {
        Ok(sqlite) if code.len() < 5 => matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14),
        _ => ["08", "53", "57"].iter().any(|class| code.starts_with(class)),
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::new(e.to_string())
    }
}

/// A stored event as a query returns it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: Hash32,
    pub created_at: i64,
    pub json: String,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Applies a batch in one transaction, in order, so that later events see earlier ones (replacement), with
    /// the jobs `job_source` derives from each stored event in the same transaction. Only the writer task calls
    /// this.
    async fn write_batch(
        &self,
        batch: &[SharedEvent],
        job_source: Option<&Arc<dyn JobSource>>,
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Events matching one filter and visible to the reader, newest first (ties: lowest id first), at most
    /// `filter.limit` of them, and no more than fit in `max_bytes` of JSON (the newest one always). Expired events
    /// are never returned.
    async fn query_filter(
        &self,
        filter: &Filter,
        visibility: Visibility<'_>,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The number of distinct visible events matching any of the filters (NIP-45); `limit` is ignored. Counting
    /// stops past `at_most`: a larger answer is `at_most + 1`.
    async fn count(&self, filters: &[Filter], visibility: Visibility<'_>, at_most: u64) -> Result<u64, StoreError>;

    /// Deletes events whose expiration has passed; returns how many.
    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError>;

    /// Deletes one event, whoever wrote it (an operator's ban); true if it was there.
    async fn remove_event(&self, id: &Hash32) -> Result<bool, StoreError>;

    /// Gives free space back and refreshes the planner's statistics (`pushrelay vacuum`).
    async fn vacuum(&self) -> Result<(), StoreError>;

    /// Flushes and closes connections.
    async fn close(&self);
}

impl dyn EventStore {
    /// Events matching any of the filters, de-duplicated, newest first; each filter contributes at most its limit
    /// and its share of `max_bytes`.
    pub async fn query(
        &self,
        filters: &[Filter],
        visibility: Visibility<'_>,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let share = max_bytes / filters.len().max(1);
        let per_filter = try_join_all(filters.iter().map(|f| self.query_filter(f, visibility, share))).await?;
        if filters.iter().any(|f| f.search.is_some()) {
            // NIP-50: results stay in each filter's order (best match first), filter by filter.
            let mut seen = std::collections::HashSet::new();
            return Ok(per_filter.into_iter().flatten().filter(|e| seen.insert(e.id)).collect());
        }
        let mut events: Vec<StoredEvent> = per_filter.into_iter().flatten().collect();
        events.sort_unstable_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        events.dedup_by(|a, b| a.id == b.id);
        Ok(events)
    }
}

/// Reads rows as they come until their JSON adds up to `max_bytes` (the first always), so that a read's memory is
/// bounded in bytes, whatever its limit and however large its events.
pub(crate) async fn collect_within(
    mut events: impl Stream<Item = Result<StoredEvent, StoreError>> + Unpin,
    max_bytes: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut found = Vec::new();
    let mut bytes = 0usize;
    while let Some(event) = events.try_next().await? {
        bytes = bytes.saturating_add(event.json.len());
        if bytes > max_bytes && !found.is_empty() {
            break;
        }
        found.push(event);
    }
    Ok(found)
}

/// Named leases held by one node at a time until they lapse: which node watches which remote relay.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes or renews the lease `name` for `node` until `until` (seconds); false when another node holds it and
    /// its lease has not lapsed at `now`.
    async fn hold(&self, name: &str, node: &str, until: i64, now: i64) -> Result<bool, StoreError>;

    /// Gives the lease up, if `node` holds it.
    async fn release(&self, name: &str, node: &str) -> Result<(), StoreError>;
}

/// Content hashes seen recently, shared by every node on the database (Marmot push triggers acted on: their
/// SHA-256, never their content).
#[async_trait]
pub trait Sightings: Send + Sync {
    /// Records `hash` as seen at `now`; true when it is new, or was last seen before `since`.
    async fn first_sighting(&self, hash: [u8; 32], now: i64, since: i64) -> Result<bool, StoreError>;

    /// Forgets what was seen before `before`.
    async fn forget_sightings(&self, before: i64) -> Result<u64, StoreError>;
}

const SIGHT: &str = "INSERT INTO sightings (hash, seen_at) VALUES ($1, $2)
     ON CONFLICT (hash) DO UPDATE SET seen_at = excluded.seen_at WHERE sightings.seen_at < $3
     RETURNING seen_at";
const FORGET_SIGHTINGS: &str = "DELETE FROM sightings WHERE seen_at < $1";

/// The operator's moderation lists (NIP-86), kept in the database so that every node sees them.
#[async_trait]
pub trait ModerationStore: Send + Sync {
    /// Every entry: (list, value, reason).
    async fn moderation(&self) -> Result<Vec<(String, String, String)>, StoreError>;

    async fn moderate(&self, list: &str, value: &str, reason: &str) -> Result<(), StoreError>;

    /// Empties a list (for the single-value ones: the relay's name and description).
    async fn clear_list(&self, list: &str) -> Result<(), StoreError>;

    async fn unmoderate(&self, list: &str, value: &str) -> Result<(), StoreError>;
}

const LIST_MODERATION: &str = "SELECT list, value, reason FROM moderation ORDER BY list, value";
const ADD_MODERATION: &str = "INSERT INTO moderation (list, value, reason) VALUES ($1, $2, $3)
     ON CONFLICT (list, value) DO UPDATE SET reason = excluded.reason";
const CLEAR_MODERATION_LIST: &str = "DELETE FROM moderation WHERE list = $1";
const REMOVE_MODERATION: &str = "DELETE FROM moderation WHERE list = $1 AND value = $2";

/// The same statements serve SQLite and PostgreSQL (sqlx reads `$n` placeholders on both).
const HOLD_LEASE: &str = "INSERT INTO upstream_leases (relay, node, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (relay) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
     WHERE upstream_leases.node = excluded.node OR upstream_leases.expires_at < $4
     RETURNING node";
const RELEASE_LEASE: &str = "DELETE FROM upstream_leases WHERE relay = $1 AND node = $2";

/// Events, the job queue, leases, moderation and registrations, kept in one database so that events and jobs change
/// in one transaction, with one writer per database: on SQLite, two connections writing at once wait on each other
/// through SQLite's busy handler, which sleeps in growing steps (a push's badge update waiting on the event commits
/// once put publish-to-APNs latency in seconds; queued behind them, in milliseconds: BENCHMARKS.md).
pub trait Store: EventStore + JobQueue + Leases + ModerationStore + RegistrationStore + Sightings {}

impl<T: EventStore + JobQueue + Leases + ModerationStore + RegistrationStore + Sightings> Store for T {}

/// Opens the store named by `[database] url` (`sqlite://PATH` or `postgres://...`), creating and migrating it as
/// needed; the PostgreSQL store is also returned as such, for what only it does (listening to other nodes).
/// `node` names this relay among several on one PostgreSQL database.
pub async fn open(
    config: &DatabaseConfig,
    node: &str,
    clock: Clock,
) -> Result<(Arc<dyn Store>, Option<Arc<PgStore>>), StoreError> {
    if config.is_postgres() {
        let store = PgStore::open(&config.url, config.readers(false), node.to_owned(), clock).await?;
        let store = Arc::new(store.with_search(config.search_index, config.search_candidates));
        return Ok((store.clone(), Some(store)));
    }
    let path = config.sqlite_path().map_err(StoreError::new)?;
    Ok((Arc::new(SqliteStore::open(&path, config, clock).await?), None))
}

/// Clamps an unsigned protocol timestamp into the signed integer databases store.
pub(crate) fn db_time(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}
