//! The write connection and the statements of the write path, on rusqlite.
//!
//! Why not sqlx here, as for reads: sqlx runs each SQLite statement on a worker thread and waits for it over a
//! channel, two context switches per statement. An event costs four or five statements (deletion check,
//! replacement look-up, insert, tags, jobs), so a batch of 500 cost thousands of switches, which was most of the
//! relay's CPU under ingest. Here a whole batch runs on one blocking thread with cached prepared statements.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, ToSql, Transaction, TransactionBehavior, params};

use crate::protocol::{VerifiedEvent, search};
use crate::store::rules::{self, Address, Change, Facts, GIFT_WRAP_KIND, Named, Removal, Tombstone, Version};
use crate::store::{StoreError, WriteOutcome, db_time};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let unavailable = e.sqlite_error_code().is_some_and(|code| {
            matches!(code, DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | ReadOnly)
        });
        Self { message: e.to_string(), unavailable }
    }
}

/// How hard a commit on the write connection waits for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Synchronous {
    /// Events: `OK true` promises the event survives a power cut, so each commit is fsynced.
    Full,
    /// Job bookkeeping (claim, finish, retry): losing the last of these on a power cut can only repeat a push
    /// (delivery is at-least-once), and an fsync for each would throttle delivery. Still safe against a crash of
    /// the relay itself (WAL).
    Normal,
}

/// The one connection that writes events, jobs, leases, moderation and registrations. (One rather than several:
/// two writing connections wait on each other through SQLite's busy handler, which sleeps.)
pub(super) struct WriteConnection {
    conn: Connection,
    synchronous: Synchronous,
}

impl WriteConnection {
    pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        conn.pragma_update(None, "synchronous", "full")?;
        conn.pragma_update(None, "temp_store", "memory")?;
        conn.pragma_update(None, "cache_size", -32000)?;
        // The commit that fills the WAL to this many pages copies them into the database. SQLite's default made
        // that nearly every batch; with 64 MB a page changed by many batches is copied once, which measured less
        // relay CPU under ingest (BENCHMARKS.md).
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        // ...and the WAL file is cut back to this size after a checkpoint that emptied it.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn, synchronous: Synchronous::Full })
    }

    /// Runs `work` in one immediate transaction (the write lock taken up front: a deferred transaction that reads
    /// first fails at once with SQLITE_BUSY_SNAPSHOT when another process, an admin command, committed in between)
    /// and commits it at the given durability. Each caller names the level it needs, so no path can leave the event
    /// writer with a weaker one.
    pub(super) fn transaction<T>(
        &mut self,
        level: Synchronous,
        work: impl FnOnce(&Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.synchronous != level {
            let pragma = match level {
                Synchronous::Full => "full",
                Synchronous::Normal => "normal",
            };
            self.conn.pragma_update(None, "synchronous", pragma)?;
            self.synchronous = level;
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let result = work(&tx)?;
        tx.commit()?;
        Ok(result)
    }

    /// A statement outside any transaction (VACUUM cannot run in one).
    pub(super) fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch(sql)?)
    }
}

/// Writes one event on the batch's transaction: reads what the NIP rules need, then carries out their plan.
/// `search_index`: index the content for NIP-50 search, through the backlog (counted in `backlog`).
pub(super) fn write_event(
    tx: &Transaction,
    event: &VerifiedEvent,
    search_index: bool,
    backlog: &mut usize,
) -> Result<WriteOutcome, StoreError> {
    let plan = match rules::plan(event, &facts(tx, event)?) {
        Ok(plan) => plan,
        Err(refused) => return Ok(refused),
    };
    for change in plan.before {
        apply(tx, change)?;
    }
    if !insert(tx, event, plan.key, search_index, backlog)? {
        return Ok(WriteOutcome::Duplicate);
    }
    for change in plan.after {
        apply(tx, change)?;
    }
    Ok(WriteOutcome::Stored)
}

/// The facts `rules::plan` decides from, read on the batch's transaction (so earlier events of the batch count).
fn facts(tx: &Transaction, event: &VerifiedEvent) -> Result<Facts, StoreError> {
    let key = rules::replacement_key(event);
    let (id_deleted, vanished_until, address_deleted_until) = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deleted_events WHERE id = ?1 AND pubkey = ?2),
                    (SELECT until FROM vanished WHERE pubkey = ?2),
                    (SELECT until FROM deleted_addresses WHERE pubkey = ?2 AND kind = ?3 AND d_tag = ?4)",
        )?
        .query_row(params![&event.id()[..], &event.pubkey()[..], event.kind(), key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let current = match key {
        Some(d_tag) => current_version(tx, event, d_tag)?,
        None => None,
    };
    let named = named_events(tx, event)?;
    Ok(Facts { id_deleted, vanished_until, address_deleted_until, current, named })
}

fn current_version(tx: &Transaction, event: &VerifiedEvent, d_tag: &str) -> Result<Option<Version>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT seq, created_at, id FROM events WHERE pubkey = ? AND kind = ? AND d_tag = ?")?
        .query_row(params![&event.pubkey()[..], event.kind(), d_tag], |row| {
            Ok(Version { seq: row.get(0)?, created_at: row.get(1)?, id: row.get(2)? })
        })
        .optional()?)
}

fn named_events(tx: &Transaction, event: &VerifiedEvent) -> Result<Vec<Named>, StoreError> {
    let mut named = Vec::new();
    for id in rules::named_ids(event) {
        let stored = tx
            .prepare_cached("SELECT pubkey, kind FROM events WHERE id = ?")?
            .query_row(params![&id[..]], |row| Ok(Named { id, pubkey: row.get(0)?, kind: row.get(1)? }))
            .optional()?;
        named.extend(stored);
    }
    Ok(named)
}

/// Inserts the event and its tags; false when its id is already stored.
fn insert(
    tx: &Transaction,
    event: &VerifiedEvent,
    key: Option<&str>,
    search_index: bool,
    backlog: &mut usize,
) -> Result<bool, StoreError> {
    let created_at = db_time(event.created_at());
    // The new row's seq from `last_insert_rowid`, not `RETURNING seq`: SQLite runs a RETURNING clause as a trigger,
    // and a statement with a trigger that may abort (the replacement key's unique index) keeps a statement journal,
    // a copy of every B-tree page the insert changes (its cost per stored event: BENCHMARKS.md).
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (id, pubkey, created_at, kind, d_tag, json, expires_at, grp)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            &event.id()[..],
            &event.pubkey()[..],
            created_at,
            event.kind(),
            key,
            &*event.json,
            event.expiration().map(db_time),
            event.group()
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    let seq = tx.last_insert_rowid();
    // Each (name, value) once per event: the tag-driven queries rely on it.
    let tags: BTreeSet<(char, &str)> = event.indexed_tags().collect();
    if !tags.is_empty() {
        let mut insert =
            tx.prepare_cached("INSERT INTO tags (event_seq, name, value, created_at) VALUES (?, ?, ?, ?)")?;
        let mut letter = [0u8; 4];
        for (name, value) in tags {
            insert.execute(params![seq, &*name.encode_utf8(&mut letter), value, created_at])?;
        }
    }
    if search_index && search::indexed_text(event.kind(), &event.event.content).is_some() {
        tx.prepare_cached("INSERT INTO search_backlog (seq) VALUES (?)")?.execute(params![seq])?;
        *backlog += 1;
    }
    Ok(true)
}

/// NIP-50: puts the content of every event in the backlog into the full-text index, in this one transaction, and
/// empties the backlog; returns how many events it indexed. (Migration 0012 says why the index is kept in bulk.)
pub(super) fn index_backlog(tx: &Transaction) -> Result<usize, StoreError> {
    #[derive(serde::Deserialize)]
    struct Content<'a> {
        #[serde(borrow)]
        content: std::borrow::Cow<'a, str>,
    }
    let mut backlog =
        tx.prepare_cached("SELECT e.seq, e.kind, e.json FROM search_backlog b JOIN events e USING (seq)")?;
    let mut index = tx.prepare_cached("INSERT INTO events_fts (rowid, content) VALUES (?, ?)")?;
    let mut rows = backlog.query([])?;
    let mut indexed = 0;
    while let Some(row) = rows.next()? {
        let (seq, kind): (i64, u16) = (row.get(0)?, row.get(1)?);
        let json = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
        // Every stored event's JSON was read once already; one that cannot be is left out of the index, not allowed
        // to stop the indexing of the rest.
        let Ok(content) = serde_json::from_str::<Content>(json) else {
            tracing::warn!(seq, "a stored event's content could not be read for the search index");
            continue;
        };
        if let Some(text) = search::indexed_text(kind, &content.content) {
            index.execute(params![seq, text])?;
            indexed += 1;
        }
    }
    drop(rows);
    tx.prepare_cached("DELETE FROM search_backlog")?.execute([])?;
    Ok(indexed)
}

/// `index_backlog` inside a batch's transaction, under a savepoint: if the indexing fails, it alone is rolled
/// back (logged; the backlog waits for the next try) and the batch's events are committed all the same.
pub(super) fn index_backlog_in_batch(tx: &Transaction) -> Result<bool, StoreError> {
    tx.execute_batch("SAVEPOINT search_backlog")?;
    match index_backlog(tx) {
        Ok(_) => {
            tx.execute_batch("RELEASE search_backlog")?;
            Ok(true)
        }
        Err(e) => {
            tracing::error!("indexing the search backlog failed: {e}");
            tx.execute_batch("ROLLBACK TO search_backlog; RELEASE search_backlog")?;
            Ok(false)
        }
    }
}

/// Carries out one change of a plan.
fn apply(tx: &Transaction, change: Change) -> Result<(), StoreError> {
    match change {
        Change::Remove(removal) => remove(tx, removal),
        Change::Remember(tombstone) => remember(tx, tombstone),
    }
}

fn remove(tx: &Transaction, removal: Removal) -> Result<(), StoreError> {
    match removal {
        Removal::Seq(seq) => delete_where(tx, "seq = ?", params![seq]),
        Removal::Id(id) => delete_where(tx, "id = ?", params![&id[..]]),
        Removal::Address { address: Address { pubkey, kind, d_tag }, until } => delete_where(
            tx,
            "pubkey = ? AND kind = ? AND d_tag = ? AND created_at <= ?",
            params![&pubkey[..], kind, d_tag, until],
        ),
        Removal::Author { pubkey, until } => {
            delete_where(tx, "pubkey = ? AND created_at <= ?", params![&pubkey[..], until])
        }
        Removal::GiftWrapsTo { pubkey, until } => delete_where(
            tx,
            "kind = ? AND created_at <= ? AND seq IN (SELECT event_seq FROM tags WHERE name = 'p' AND value = ?)",
            params![GIFT_WRAP_KIND, until, hex::encode(pubkey)],
        ),
    }?;
    Ok(())
}

fn remember(tx: &Transaction, tombstone: Tombstone) -> Result<(), StoreError> {
    match tombstone {
        Tombstone::Id { id, author } => tx
            .prepare_cached("INSERT INTO deleted_events (id, pubkey) VALUES (?, ?) ON CONFLICT DO NOTHING")?
            .execute(params![&id[..], &author[..]]),
        Tombstone::Address { address: Address { pubkey, kind, d_tag }, until } => tx
            .prepare_cached(
                "INSERT INTO deleted_addresses (pubkey, kind, d_tag, until) VALUES (?, ?, ?, ?)
                 ON CONFLICT (pubkey, kind, d_tag) DO UPDATE SET until = max(until, excluded.until)",
            )?
            .execute(params![&pubkey[..], kind, d_tag, until]),
        Tombstone::Vanished { pubkey, until } => tx
            .prepare_cached(
                "INSERT INTO vanished (pubkey, until) VALUES (?, ?)
                 ON CONFLICT (pubkey) DO UPDATE SET until = max(until, excluded.until)",
            )?
            .execute(params![&pubkey[..], until]),
    }?;
    Ok(())
}

/// Deletes the events matching `condition` (a fixed SQL fragment over `events`, with `params` for its
/// placeholders) together with their tags; returns how many events.
pub(super) fn delete_where(
    conn: &Connection,
    condition: &'static str,
    params: &[&dyn ToSql],
) -> Result<u64, StoreError> {
    // The tag rows are keyed by (name, value, created_at, event), so each removed event's rows are found from its
    // own tags (an unindexed tag matches no row). One statement per event: with the event's time and number bound,
    // SQLite finds each row by its whole key (a row-value IN over all the events used only the tag's name and value).
    // Read and deleted as the rows come (SQLite lets one statement change a table while another reads another),
    // so a purge of many events holds one event's JSON at a time.
    let mut removed = conn.prepare_cached(&format!("SELECT seq, created_at, json FROM events WHERE {condition}"))?;
    let mut delete_tags = conn.prepare_cached(
        "DELETE FROM tags WHERE event_seq = ?1 AND created_at = ?2
         AND (name, value) IN (SELECT t.value ->> 0, t.value ->> 1 FROM json_each(?3, '$.tags') t)",
    )?;
    let mut delete_text = conn.prepare_cached("DELETE FROM events_fts WHERE rowid = ?")?;
    let mut delete_backlog = conn.prepare_cached("DELETE FROM search_backlog WHERE seq = ?")?;
    let mut rows = removed.query(params)?;
    while let Some(row) = rows.next()? {
        // In the index or still in its backlog (a seq freed here may be given to the next event stored).
        delete_text.execute(params![row.get::<_, i64>(0)?])?;
        delete_backlog.execute(params![row.get::<_, i64>(0)?])?;
        delete_tags.execute(params![
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?
        ])?;
    }
    drop(rows);
    let deleted = conn.prepare_cached(&format!("DELETE FROM events WHERE {condition}"))?.execute(params)?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nostr::prelude::*;

    use crate::protocol::{SharedEvent, VerifiedEvent};
    use crate::store::EventStore;
    use crate::store::sqlite::SqliteStore;

    fn tagged(keys: &Keys, content: &str) -> SharedEvent {
        let me = keys.public_key().to_hex();
        let tags = [["t", "nostr"], ["p", me.as_str()], ["long", "x"]].map(|tag| Tag::parse(tag).unwrap());
        Arc::new(VerifiedEvent::new(EventBuilder::new(Kind::TextNote, content).tags(tags).finalize(keys).unwrap()))
    }

    fn tag_rows(path: &std::path::Path) -> Vec<(String, String, i64)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut rows = conn.prepare("SELECT name, value, event_seq FROM tags ORDER BY event_seq, name").unwrap();
        rows.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    /// A store on a new SQLite file in a folder of its own (kept while the folder value lives).
    async fn fresh_store() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let store = SqliteStore::open(&path, &Default::default(), crate::clock::Clock::system()).await.unwrap();
        (dir, path, store)
    }

    fn note(keys: &Keys, content: &str) -> SharedEvent {
        Arc::new(VerifiedEvent::new(EventBuilder::new(Kind::TextNote, content).finalize(keys).unwrap()))
    }

    fn rows(path: &std::path::Path, sql: &str) -> i64 {
        rusqlite::Connection::open(path).unwrap().query_row(sql, [], |row| row.get(0)).unwrap()
    }

    async fn searched(store: &SqliteStore, words: &str) -> Vec<String> {
        let filter = crate::protocol::Filter::from_json(&serde_json::json!({"search": words})).unwrap();
        let store: &dyn EventStore = store;
        let found = store.query(&[filter], Default::default(), 1 << 20).await.unwrap();
        found.iter().map(|e| hex::encode(e.id)).collect()
    }

    /// The search index is kept in bulk (migration 0012): a stored event waits in the backlog, and a search (or
    /// a COUNT with one) indexes the backlog first, so it still finds every event committed before it.
    #[tokio::test]
    async fn a_search_indexes_the_backlog_before_it_reads() {
        let (_dir, path, store) = fresh_store().await;
        let keys = Keys::generate();
        let (pizza, pasta) = (note(&keys, "pizza tonight"), note(&keys, "pasta tomorrow"));
        store.write_batch(&[pizza.clone(), pasta.clone()], None).await.unwrap();
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 2);
        assert_eq!(searched(&store, "pizza").await, [hex::encode(pizza.id())]);
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 0);
        let filter = crate::protocol::Filter::from_json(&serde_json::json!({"search": "tomorrow"})).unwrap();
        store.write_batch(&[note(&keys, "tomorrow again")], None).await.unwrap();
        assert_eq!(store.count(&[filter], Default::default(), 100).await.unwrap(), 2);
    }

    /// An event removed while in the backlog is never indexed, and the event stored next (which SQLite may give
    /// the freed seq) is indexed with its own words.
    #[tokio::test]
    async fn an_event_removed_from_the_backlog_is_never_indexed() {
        let (_dir, _path, store) = fresh_store().await;
        let keys = Keys::generate();
        let (gone, next) = (note(&keys, "gone words"), note(&keys, "next words"));
        store.write_batch(std::slice::from_ref(&gone), None).await.unwrap();
        assert!(store.remove_event(gone.id()).await.unwrap());
        store.write_batch(std::slice::from_ref(&next), None).await.unwrap();
        assert!(searched(&store, "gone").await.is_empty());
        assert_eq!(searched(&store, "words").await, [hex::encode(next.id())]);
    }

    /// What a stop (or a crash) left in the backlog is indexed when the store opens; and a backlog of
    /// `BACKLOG_BATCH` events is indexed in the commit that fills it, with no search asking.
    #[tokio::test]
    async fn the_backlog_is_indexed_at_start_and_when_full() {
        let (_dir, path, store) = fresh_store().await;
        let keys = Keys::generate();
        store.write_batch(&[note(&keys, "left behind")], None).await.unwrap();
        drop(store);
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 1);
        let store = SqliteStore::open(&path, &Default::default(), crate::clock::Clock::system()).await.unwrap();
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 0);
        assert_eq!(rows(&path, "SELECT count(*) FROM events_fts WHERE events_fts MATCH 'behind'"), 1);
        let batch: Vec<SharedEvent> = (0..super::super::BACKLOG_BATCH).map(|n| note(&keys, &format!("n{n}"))).collect();
        store.write_batch(&batch, None).await.unwrap();
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 0);
        assert_eq!(rows(&path, "SELECT count(*) FROM events_fts WHERE events_fts MATCH 'n999'"), 1);
    }

    /// A store that closes (`pushrelay import` at its end, the relay at shutdown) leaves no backlog: another
    /// process's store would not know of it.
    #[tokio::test]
    async fn closing_the_store_indexes_its_backlog() {
        let (_dir, path, store) = fresh_store().await;
        store.write_batch(&[note(&Keys::generate(), "imported words")], None).await.unwrap();
        store.close().await;
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), 0);
        assert_eq!(rows(&path, "SELECT count(*) FROM events_fts WHERE events_fts MATCH 'imported'"), 1);
    }

    /// A failure while indexing the backlog inside a batch costs the batch nothing: its events are committed, and
    /// the backlog is indexed later (here by the next search, once the fault is gone).
    #[tokio::test]
    async fn a_failed_indexing_does_not_cost_the_batch_its_events() {
        let (_dir, path, store) = fresh_store().await;
        let fault = "CREATE TRIGGER fault BEFORE DELETE ON search_backlog BEGIN SELECT RAISE(ABORT, 'fault'); END";
        rusqlite::Connection::open(&path).unwrap().execute_batch(fault).unwrap();
        let keys = Keys::generate();
        let batch: Vec<SharedEvent> = (0..super::super::BACKLOG_BATCH).map(|n| note(&keys, &format!("n{n}"))).collect();
        let outcomes = store.write_batch(&batch, None).await.unwrap();
        assert!(outcomes.iter().all(|o| *o == crate::store::WriteOutcome::Stored));
        assert_eq!(rows(&path, "SELECT count(*) FROM events"), super::super::BACKLOG_BATCH as i64);
        assert_eq!(rows(&path, "SELECT count(*) FROM search_backlog"), super::super::BACKLOG_BATCH as i64);
        rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TRIGGER fault").unwrap();
        assert_eq!(searched(&store, "n7").await.len(), 1);
    }

    /// Tag rows are keyed by tag, not by event: a removed event's rows must be found from its JSON, and only
    /// those go (another event with the same tags keeps its rows).
    #[tokio::test]
    async fn removing_an_event_removes_exactly_its_tag_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let config = crate::config::DatabaseConfig::default();
        let store = SqliteStore::open(&path, &config, crate::clock::Clock::system()).await.unwrap();
        let keys = Keys::generate();
        let (gone, kept) = (tagged(&keys, "gone"), tagged(&keys, "kept"));
        store.write_batch(&[gone.clone(), kept.clone()], None).await.unwrap();
        assert_eq!(tag_rows(&path).len(), 4, "t and p for each event; the long tag is not indexed");
        assert!(store.remove_event(gone.id()).await.unwrap());
        let rows = tag_rows(&path);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|(_, _, seq)| *seq == 2), "only the kept event's rows remain: {rows:?}");
    }
}
