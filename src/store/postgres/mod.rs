//! The PostgreSQL store, for several relay nodes on one database.
//!
//! Every write batch takes one transaction-level advisory lock, so that batches from all nodes commit one at a time,
//! as the single writer task does on SQLite: replacement and deletion rules see a settled database, and `seq`
//! order is commit order. Each committed event is announced with `pg_notify` inside its transaction, so that other
//! nodes hear of exactly what was committed (see `cluster`).

mod jobs;
mod nodes;
mod registrations;

pub use registrations::REGISTRATIONS_CHANNEL;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::clock::Clock;
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, SharedEvent, search};
use crate::store::jobs::{JobSource, jobs_of};
use crate::store::rules::{self, Address, Change, Facts, GIFT_WRAP_KIND, Named, Removal, Tombstone, Version};
use crate::store::{
    ADD_MODERATION, CLEAR_MODERATION_LIST, EventStore, FORGET_SIGHTINGS, HOLD_LEASE, LIST_MODERATION, Leases,
    ModerationStore, RELEASE_LEASE, REMOVE_MODERATION, SIGHT, Sightings, StoreError, StoredEvent, Visibility,
    WriteOutcome, collect_within, db_time,
};

/// The advisory lock every write batch holds (an arbitrary constant: "pushrelay" in ASCII, shortened).
const WRITE_LOCK: i64 = 0x7075_7368_7265_6c61;
/// The channel committed events are announced on.
pub const EVENTS_CHANNEL: &str = "pushrelay_events";
/// `pg_notify` payloads must stay under 8000 bytes; an announcement that would be bigger names the `seq` alone.
const NOTIFY_PAYLOAD_LIMIT: usize = 7900;

pub struct PgStore {
    pool: PgPool,
    /// This node's name, in announcements (so that it skips its own), in job leases and in `nodes`.
    node: String,
    /// Hides expired events from reads; dates the jobs a commit makes and this node's heartbeats.
    clock: Clock,
    /// NIP-50: new events' content is indexed (`[database] search_index`), and a search ranks at most this many of
    /// the newest matches (`[database] search_candidates`).
    search_index: bool,
    search_candidates: i64,
}

impl PgStore {
    pub async fn open(url: &str, connections: u32, node: String, clock: Clock) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1) + 2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| StoreError::new(format!("cannot connect to PostgreSQL: {e}")))?;
        // sqlx takes an advisory lock while migrating, so nodes starting together do not race.
        super::migrations::migrator(super::migrations::POSTGRES).run(&pool).await?;
        Ok(Self { pool, node, clock, search_index: true, search_candidates: 1000 })
    }

    /// Whether new events' content is indexed for search, and how many matches a search ranks at most.
    pub fn with_search(self, search_index: bool, search_candidates: usize) -> Self {
        Self { search_index, search_candidates: search_candidates.try_into().unwrap_or(i64::MAX), ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Events other nodes committed after `seq`, oldest first: what this node missed while it was not listening.
    pub async fn events_after(&self, seq: i64, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT seq, json FROM events WHERE seq > $1 AND node <> $2 ORDER BY seq LIMIT $3")
            .bind(seq)
            .bind(&self.node)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    /// The newest `seq`, where a node that starts listening begins.
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM events").fetch_one(&self.pool).await?)
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn write_batch(
        &self,
        batch: &[SharedEvent],
        job_source: Option<&Arc<dyn JobSource>>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let now_ms = self.clock.millis();
        for event in batch {
            let outcome = match write_event(&mut tx, &self.node, event, self.search_index).await? {
                Ok(seq) => {
                    announce(&mut tx, &self.node, seq, event).await?;
                    if let Some(source) = job_source {
                        jobs::insert_jobs(&mut tx, &jobs_of(source.as_ref(), event), now_ms).await?;
                    }
                    WriteOutcome::Stored
                }
                Err(outcome) => outcome,
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
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
        let mut query = QueryBuilder::new("");
        let terms = search_terms(filter);
        let searching = terms.is_some();
        match terms {
            // NIP-50: best match first, then newest, among the newest `search_candidates` matches (ranking every
            // match of a word most notes hold cost a tenth of a second a query).
            Some(terms) => {
                query.push("SELECT e.id, e.created_at, e.json FROM (SELECT e.seq, ts_rank(e.search, plainto_tsquery(");
                query.push("'simple', ").push_bind(terms).push(")) AS r FROM events e WHERE ");
                push_conditions(&mut query, filter, visibility, self.clock.secs());
                query.push(" ORDER BY e.seq DESC LIMIT ").push_bind(self.search_candidates);
                query.push(") c JOIN events e ON e.seq = c.seq ORDER BY c.r DESC, e.created_at DESC, e.id ASC");
            }
            None => {
                query.push("SELECT e.id, e.created_at, e.json FROM events e WHERE ");
                push_conditions(&mut query, filter, visibility, self.clock.secs());
                query.push(" ORDER BY e.created_at DESC, e.id ASC");
            }
        }
        if let Some(limit) = filter.limit {
            query.push(" LIMIT ").push_bind(db_time(limit));
        }
        // A search is planned for its own words each time (an unnamed statement): the cached generic plan cannot
        // tell a word every note holds from a rare one, and gathered every match from the GIN index for the newest
        // `search_candidates`, two orders of magnitude slower than a plan made with the word (BENCHMARKS.md).
        let rows = query.build().persistent(!searching).fetch(&self.pool).map(|row| {
            let row = row?;
            Ok(StoredEvent { id: hash(row.try_get(0)?)?, created_at: row.try_get(1)?, json: row.try_get(2)? })
        });
        collect_within(rows, max_bytes).await
    }

    async fn count(&self, filters: &[Filter], visibility: Visibility<'_>, at_most: u64) -> Result<u64, StoreError> {
        let now = self.clock.secs();
        let mut query = QueryBuilder::new("SELECT COUNT(*) FROM (");
        let mut first = true;
        for filter in filters.iter().filter(|f| !f.is_empty_range()) {
            if !first {
                query.push(" UNION ");
            }
            first = false;
            query.push("SELECT e.id FROM events e WHERE ");
            push_conditions(&mut query, filter, visibility, now);
        }
        if first {
            return Ok(0);
        }
        // Counting stops past `at_most`: a COUNT over millions of rows costs no more than a bounded read.
        query.push(" LIMIT ").push_bind(db_time(at_most.saturating_add(1))).push(") matching");
        let count: i64 = query.build().fetch_one(&self.pool).await?.try_get(0)?;
        Ok(count as u64)
    }

    async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
        let purged = sqlx::query("DELETE FROM events WHERE expires_at <= $1")
            .bind(db_time(now))
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(purged)
    }

    async fn remove_event(&self, id: &Hash32) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM events WHERE id = $1").bind(&id[..]).execute(&self.pool).await?;
        Ok(removed.rows_affected() > 0)
    }

    async fn vacuum(&self) -> Result<(), StoreError> {
        sqlx::query("VACUUM ANALYZE").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Leases for PgStore {
    async fn hold(&self, name: &str, node: &str, until: i64, now: i64) -> Result<bool, StoreError> {
        let held =
            sqlx::query(HOLD_LEASE).bind(name).bind(node).bind(until).bind(now).fetch_optional(&self.pool).await?;
        Ok(held.is_some())
    }

    async fn release(&self, name: &str, node: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_LEASE).bind(name).bind(node).execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Sightings for PgStore {
    async fn first_sighting(&self, hash: [u8; 32], now: i64, since: i64) -> Result<bool, StoreError> {
        let seen = sqlx::query(SIGHT).bind(&hash[..]).bind(now).bind(since).fetch_optional(&self.pool).await?;
        Ok(seen.is_some())
    }

    async fn forget_sightings(&self, before: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(FORGET_SIGHTINGS).bind(before).execute(&self.pool).await?.rows_affected())
    }
}

#[async_trait]
impl ModerationStore for PgStore {
    async fn moderation(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(LIST_MODERATION).fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))).collect()
    }

    async fn moderate(&self, list: &str, value: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query(ADD_MODERATION).bind(list).bind(value).bind(reason).execute(&self.pool).await?;
        Ok(())
    }

    async fn clear_list(&self, list: &str) -> Result<(), StoreError> {
        sqlx::query(CLEAR_MODERATION_LIST).bind(list).execute(&self.pool).await?;
        Ok(())
    }

    async fn unmoderate(&self, list: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(REMOVE_MODERATION).bind(list).bind(value).execute(&self.pool).await?;
        Ok(())
    }
}

/// Tells the other nodes, at commit, that this event is stored: whole when the payload as sent (the event's JSON
/// escaped inside it, so quotes and backslashes count twice) fits, else by its `seq` alone.
async fn announce(conn: &mut PgConnection, node: &str, seq: i64, event: &SharedEvent) -> Result<(), StoreError> {
    let by_seq = serde_json::json!({"node": node, "seq": seq});
    let mut whole = by_seq.clone();
    whole["event"] = serde_json::Value::String(event.json.to_string());
    let whole = whole.to_string();
    let payload = if whole.len() <= NOTIFY_PAYLOAD_LIMIT { whole } else { by_seq.to_string() };
    sqlx::query("SELECT pg_notify($1, $2)").bind(EVENTS_CHANNEL).bind(payload).execute(&mut *conn).await?;
    Ok(())
}

/// Stores one event under the NIP-01, NIP-09 and NIP-62 rules (`rules::plan`): its `seq` when stored, else why not.
async fn write_event(
    conn: &mut PgConnection,
    node: &str,
    event: &SharedEvent,
    search_index: bool,
) -> Result<Result<i64, WriteOutcome>, StoreError> {
    let plan = match rules::plan(event, &facts(conn, event).await?) {
        Ok(plan) => plan,
        Err(refused) => return Ok(Err(refused)),
    };
    for change in plan.before {
        apply(conn, change).await?;
    }
    let Some(seq) = insert(conn, node, event, plan.key, search_index).await? else {
        return Ok(Err(WriteOutcome::Duplicate));
    };
    for change in plan.after {
        apply(conn, change).await?;
    }
    Ok(Ok(seq))
}

/// The facts `rules::plan` decides from, read under the write lock (so other nodes' batches cannot slip in).
async fn facts(conn: &mut PgConnection, event: &SharedEvent) -> Result<Facts, StoreError> {
    let key = rules::replacement_key(event);
    let (id_deleted, vanished_until, address_deleted_until) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM deleted_events WHERE id = $1 AND pubkey = $2),
                (SELECT until FROM vanished WHERE pubkey = $2),
                (SELECT until FROM deleted_addresses WHERE pubkey = $2 AND kind = $3 AND d_tag = $4)",
    )
    .bind(&event.id()[..])
    .bind(&event.pubkey()[..])
    .bind(i32::from(event.kind()))
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let current = match key {
        Some(d_tag) => current_version(conn, event, d_tag).await?,
        None => None,
    };
    let named = named_events(conn, event).await?;
    Ok(Facts { id_deleted, vanished_until, address_deleted_until, current, named })
}

async fn current_version(
    conn: &mut PgConnection,
    event: &SharedEvent,
    d_tag: &str,
) -> Result<Option<Version>, StoreError> {
    let row = sqlx::query_as("SELECT seq, created_at, id FROM events WHERE pubkey = $1 AND kind = $2 AND d_tag = $3")
        .bind(&event.pubkey()[..])
        .bind(i32::from(event.kind()))
        .bind(d_tag)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(seq, created_at, id)| Version { seq, created_at, id }))
}

async fn named_events(conn: &mut PgConnection, event: &SharedEvent) -> Result<Vec<Named>, StoreError> {
    let ids = rules::named_ids(event);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Vec<u8>, Vec<u8>, i32)> = sqlx::query_as("SELECT id, pubkey, kind FROM events WHERE id = ANY($1)")
        .bind(bytes_list(&ids))
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(|(id, pubkey, kind)| Ok(Named { id: hash(id)?, pubkey, kind: kind as u16 })).collect()
}

/// Inserts the event with its tags and this node's name; its `seq`, or none when its id is already stored.
async fn insert(
    conn: &mut PgConnection,
    node: &str,
    event: &SharedEvent,
    key: Option<&str>,
    search_index: bool,
) -> Result<Option<i64>, StoreError> {
    let text = search::indexed_text(event.kind(), &event.event.content).filter(|_| search_index);
    Ok(sqlx::query_scalar(
        "INSERT INTO events (id, pubkey, created_at, kind, d_tag, json, expires_at, node, tags, search, grp)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_tsvector('simple', $10), $11)
         ON CONFLICT (id) DO NOTHING RETURNING seq",
    )
    .bind(&event.id()[..])
    .bind(&event.pubkey()[..])
    .bind(db_time(event.created_at()))
    .bind(i32::from(event.kind()))
    .bind(key)
    .bind(&*event.json)
    .bind(event.expiration().map(db_time))
    .bind(node)
    .bind(event.indexed_tags().map(|(letter, value)| tag_key(letter, value)).collect::<Vec<_>>())
    // PostgreSQL text cannot hold NUL, which a JSON string can (`\u0000`): it would fail the whole batch.
    .bind(text.map(|text| text.replace('\0', " ")))
    .bind(event.group())
    .fetch_optional(&mut *conn)
    .await?)
}

/// Carries out one change of a plan.
async fn apply(conn: &mut PgConnection, change: Change<'_>) -> Result<(), StoreError> {
    match change {
        Change::Remove(removal) => remove(conn, removal).await,
        Change::Remember(tombstone) => remember(conn, tombstone).await,
    }
}

async fn remove(conn: &mut PgConnection, removal: Removal<'_>) -> Result<(), StoreError> {
    let query = match removal {
        Removal::Seq(seq) => sqlx::query("DELETE FROM events WHERE seq = $1").bind(seq),
        Removal::Id(id) => sqlx::query("DELETE FROM events WHERE id = $1").bind(id.to_vec()),
        Removal::Address { address: Address { pubkey, kind, d_tag }, until } => {
            sqlx::query("DELETE FROM events WHERE pubkey = $1 AND kind = $2 AND d_tag = $3 AND created_at <= $4")
                .bind(pubkey.to_vec())
                .bind(i32::from(kind))
                .bind(d_tag)
                .bind(until)
        }
        Removal::Author { pubkey, until } => {
            sqlx::query("DELETE FROM events WHERE pubkey = $1 AND created_at <= $2").bind(pubkey.to_vec()).bind(until)
        }
        Removal::GiftWrapsTo { pubkey, until } => {
            sqlx::query("DELETE FROM events WHERE kind = $1 AND created_at <= $2 AND tags && $3")
                .bind(i32::from(GIFT_WRAP_KIND))
                .bind(until)
                .bind(vec![tag_key('p', &hex::encode(pubkey))])
        }
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

async fn remember(conn: &mut PgConnection, tombstone: Tombstone<'_>) -> Result<(), StoreError> {
    let query = match tombstone {
        Tombstone::Id { id, author } => {
            sqlx::query("INSERT INTO deleted_events (id, pubkey) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id.to_vec())
                .bind(author.to_vec())
        }
        Tombstone::Address { address: Address { pubkey, kind, d_tag }, until } => sqlx::query(
            "INSERT INTO deleted_addresses (pubkey, kind, d_tag, until) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pubkey, kind, d_tag) DO UPDATE SET until = GREATEST(deleted_addresses.until, excluded.until)",
        )
        .bind(pubkey.to_vec())
        .bind(i32::from(kind))
        .bind(d_tag)
        .bind(until),
        Tombstone::Vanished { pubkey, until } => sqlx::query(
            "INSERT INTO vanished (pubkey, until) VALUES ($1, $2)
             ON CONFLICT (pubkey) DO UPDATE SET until = GREATEST(vanished.until, excluded.until)",
        )
        .bind(pubkey.to_vec())
        .bind(until),
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Appends a filter's conditions to a query over `events e`; lists travel as one array parameter each, and tag
/// conditions are array overlaps the GIN index answers.
fn push_conditions(query: &mut QueryBuilder<Postgres>, filter: &Filter, visibility: Visibility<'_>, now: u64) {
    query.push("(e.expires_at IS NULL OR e.expires_at > ").push_bind(db_time(now)).push(")");
    if let Some(ids) = &filter.ids {
        query.push(" AND e.id = ANY(").push_bind(bytes_list(ids)).push(")");
    }
    if let Some(authors) = &filter.authors {
        query.push(" AND e.pubkey = ANY(").push_bind(bytes_list(authors)).push(")");
    }
    if let Some(kinds) = &filter.kinds {
        query.push(" AND e.kind = ANY(").push_bind(kinds.iter().map(|&k| i32::from(k)).collect::<Vec<_>>()).push(")");
    }
    if let Some(since) = filter.since {
        query.push(" AND e.created_at >= ").push_bind(db_time(since));
    }
    if let Some(until) = filter.until {
        query.push(" AND e.created_at <= ").push_bind(db_time(until));
    }
    for (letter, values) in &filter.tags {
        let keys: Vec<String> = values.iter().map(|value| tag_key(*letter, value)).collect();
        query.push(" AND e.tags && ").push_bind(keys);
    }
    if let Some(terms) = search_terms(filter) {
        query.push(" AND e.search @@ plainto_tsquery('simple', ").push_bind(terms).push(")");
    }
    // NIP-29: events of private groups the reader is not in, and metadata of groups it may not see.
    if !visibility.hidden_groups.is_empty() {
        query.push(" AND (e.grp IS NULL OR NOT (e.grp = ANY(").push_bind(visibility.hidden_groups.to_vec()).push(")))");
    }
    if !visibility.hidden_metadata.is_empty() {
        query
            .push(" AND NOT (e.kind BETWEEN 39000 AND 39003 AND e.d_tag = ANY(")
            .push_bind(visibility.hidden_metadata.to_vec())
            .push("))");
    }
    if !visibility.restricted_kinds.is_empty() {
        let kinds: Vec<i32> = visibility.restricted_kinds.iter().map(|&k| i32::from(k)).collect();
        let viewers: Vec<String> = visibility.viewers.iter().map(|v| tag_key('p', &hex::encode(v))).collect();
        query
            .push(" AND (NOT (e.kind = ANY(")
            .push_bind(kinds)
            .push(")) OR e.pubkey = ANY(")
            .push_bind(bytes_list(visibility.viewers))
            .push(") OR e.tags && ")
            .push_bind(viewers)
            .push(")");
    }
}

/// A filter's NIP-50 words, joined for `plainto_tsquery` (which requires them all); none when it has no words.
fn search_terms(filter: &Filter) -> Option<String> {
    let terms = filter.search.as_ref()?.terms();
    (!terms.is_empty()).then(|| terms.join(" "))
}

/// How a tag is kept in `events.tags`: `letter:value`.
fn tag_key(letter: char, value: &str) -> String {
    format!("{letter}:{value}")
}

fn bytes_list(values: &[Hash32]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.to_vec()).collect()
}

fn hash(bytes: Vec<u8>) -> Result<Hash32, StoreError> {
    bytes.try_into().map_err(|_| StoreError::new("stored id is not 32 bytes"))
}
