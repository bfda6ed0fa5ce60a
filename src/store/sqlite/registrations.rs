//! The registration tables in SQLite: changes go through the write connection, like events and jobs, so the file has
//! one writer; reads go to the read pool.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use rusqlite::{OptionalExtension, Transaction, params};

use super::SqliteStore;
use super::write::Synchronous;
use crate::protocol::filter::Hash32;
use crate::store::StoreError;
use crate::store::registrations::{
    BadgeChange, COUNT_DEVICE, ChangeOutcome, LAST_APPLIED, PresenceRow, REMOVE_DEVICE, REMOVE_PUBKEY,
    REMOVE_REGISTRATION, RESET_BADGES, RegistrationChange, RegistrationRow, RegistrationRows, RegistrationStore,
    SAVE_PRESENCE, SAVE_REGISTRATION, SELECT_PRESENCE, SELECT_REGISTRATIONS, StoredRegistration, decoded,
    encoded_lists, presence_rows, pubkey,
};

/// One badge change (PostgreSQL's store takes a batch in one statement, with `UNNEST`, which SQLite lacks).
const ADD_TO_BADGE: &str = "UPDATE push_registrations SET badge = CASE WHEN badge + $1 < 0 THEN 0 ELSE badge + $1 END
     WHERE pubkey = $2 AND device_id = $3 RETURNING badge";

// Registrations and heartbeats are re-sent by the apps, so their commits are `Synchronous::Normal`: safe against a
// crash of the relay, not of the machine, and no fsync per heartbeat.

#[async_trait]
impl RegistrationStore for SqliteStore {
    async fn load_registrations(&self, pubkey: Option<&Hash32>) -> Result<RegistrationRows, StoreError> {
        let (registrations, presence) = match pubkey {
            Some(pubkey) => {
                let registrations = format!("{SELECT_REGISTRATIONS} WHERE pubkey = $1");
                let presence = format!("{SELECT_PRESENCE} WHERE pubkey = $1");
                (
                    sqlx::query_as(sqlx::AssertSqlSafe(registrations))
                        .bind(&pubkey[..])
                        .fetch_all(&self.readers)
                        .await?,
                    sqlx::query_as(sqlx::AssertSqlSafe(presence)).bind(&pubkey[..]).fetch_all(&self.readers).await?,
                )
            }
            None => (
                sqlx::query_as(SELECT_REGISTRATIONS).fetch_all(&self.readers).await?,
                sqlx::query_as(SELECT_PRESENCE).fetch_all(&self.readers).await?,
            ),
        };
        decoded(registrations, presence)
    }

    async fn each_registration(
        &self,
        visit: &mut (dyn FnMut(RegistrationRow) + Send),
    ) -> Result<Vec<PresenceRow>, StoreError> {
        let mut rows = sqlx::query_as::<_, StoredRegistration>(SELECT_REGISTRATIONS).fetch(&self.readers);
        while let Some(row) = rows.try_next().await? {
            visit(row.decode()?);
        }
        presence_rows(sqlx::query_as(SELECT_PRESENCE).fetch_all(&self.readers).await?)
    }

    async fn last_applied(&self, pubkey: &Hash32) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(LAST_APPLIED).bind(&pubkey[..]).fetch_optional(&self.readers).await?)
    }

    async fn apply_change(&self, change: &RegistrationChange) -> Result<ChangeOutcome, StoreError> {
        let change = change.clone();
        self.write(move |conn| conn.transaction(Synchronous::Normal, |tx| apply(tx, &change))).await
    }

    async fn remove_device(&self, device_id: &str, only: Option<&Hash32>) -> Result<Vec<Hash32>, StoreError> {
        let (device_id, only) = (device_id.to_owned(), only.copied());
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                let read = |row: &rusqlite::Row| row.get::<_, Vec<u8>>(0);
                let removed: Vec<Vec<u8>> = match only {
                    Some(key) => tx
                        .prepare_cached(REMOVE_REGISTRATION)?
                        .query_map(params![device_id, &key[..]], read)?
                        .collect::<Result<_, _>>()?,
                    None => tx
                        .prepare_cached(REMOVE_DEVICE)?
                        .query_map(params![device_id], read)?
                        .collect::<Result<_, _>>()?,
                };
                removed.into_iter().map(pubkey).collect()
            })
        })
        .await
    }

    async fn add_to_badges(&self, changes: &[BadgeChange]) -> Result<Vec<Option<i64>>, StoreError> {
        let changes = changes.to_vec();
        self.write(move |conn| {
            conn.transaction(Synchronous::Normal, |tx| {
                let mut add = tx.prepare_cached(ADD_TO_BADGE)?;
                let mut badges = Vec::with_capacity(changes.len());
                for BadgeChange { pubkey, device_id, count } in &changes {
                    badges.push(add.query_row(params![count, &pubkey[..], device_id], |row| row.get(0)).optional()?);
                }
                Ok(badges)
            })
        })
        .await
    }
}

/// The change on the write connection's transaction, in the order `RegistrationChange` gives.
fn apply(tx: &Transaction, change: &RegistrationChange) -> Result<ChangeOutcome, StoreError> {
    let pubkey = &change.pubkey[..];
    let last_applied: Option<i64> =
        tx.prepare_cached(LAST_APPLIED)?.query_row(params![pubkey], |row| row.get(0)).optional()?;
    if let Some(created_at) = change.created_at
        && last_applied.is_some_and(|last| created_at < last)
    {
        return Ok(ChangeOutcome::Replay);
    }
    if let Some(limit) = &change.limit {
        let sharing: i64 = tx.prepare_cached(COUNT_DEVICE)?.query_row(params![limit.device_id], |row| row.get(0))?;
        if sharing >= limit.max_pubkeys as i64 {
            return Ok(ChangeOutcome::DeviceFull);
        }
    }
    if change.remove_all {
        tx.prepare_cached(REMOVE_PUBKEY)?.execute(params![pubkey])?;
    }
    for row in &change.save {
        save(tx, row)?;
    }
    if change.reset_badges {
        tx.prepare_cached(RESET_BADGES)?.execute(params![pubkey])?;
    }
    let presence = &change.presence;
    tx.prepare_cached(SAVE_PRESENCE)?.execute(params![
        pubkey,
        presence.online,
        presence.last_heartbeat,
        change.created_at.unwrap_or(0)
    ])?;
    Ok(ChangeOutcome::Applied)
}

fn save(tx: &Transaction, row: &RegistrationRow) -> Result<(), StoreError> {
    let [kinds, p_tags, e_tags, authors, exclude_authors, relays] = encoded_lists(row);
    tx.prepare_cached(SAVE_REGISTRATION)?.execute(params![
        &row.pubkey[..],
        row.device_id,
        kinds,
        p_tags,
        e_tags,
        authors,
        exclude_authors,
        relays,
        row.platform,
        row.created_at,
        row.updated_at,
        i64::from(row.only_from_authors),
        i64::from(row.limit_mentions)
    ])?;
    Ok(())
}
