//! The registration tables in PostgreSQL, shared by every node: each change is announced on
//! `REGISTRATIONS_CHANNEL` inside its transaction, so that the other nodes re-read that pubkey (see `cluster`).

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::postgres::PgConnection;

use super::PgStore;
use crate::protocol::filter::Hash32;
use crate::store::StoreError;
use crate::store::registrations::{
    BadgeChange, COUNT_DEVICE, ChangeOutcome, LAST_APPLIED, PresenceRow, REMOVE_DEVICE, REMOVE_PUBKEY,
    REMOVE_REGISTRATION, RESET_BADGES, RegistrationChange, RegistrationRow, RegistrationRows, RegistrationStore,
    SAVE_PRESENCE, SAVE_REGISTRATION, SELECT_PRESENCE, SELECT_REGISTRATIONS, StoredRegistration, decoded,
    encoded_lists, presence_rows, pubkey,
};

/// `ADD_TO_BADGE` for a batch of (pubkey, device, count).
const ADD_TO_BADGES: &str = "UPDATE push_registrations AS r SET badge = GREATEST(r.badge + c.n, 0)
     FROM UNNEST($1::bytea[], $2::text[], $3::int8[]) AS c(pubkey, device_id, n)
     WHERE r.pubkey = c.pubkey AND r.device_id = c.device_id
     RETURNING r.pubkey, r.device_id, r.badge";

/// The channel registration changes are announced on, with `<node> <pubkey hex>`.
pub const REGISTRATIONS_CHANNEL: &str = "pushrelay_registrations";

#[async_trait]
impl RegistrationStore for PgStore {
    async fn load_registrations(&self, pubkey: Option<&Hash32>) -> Result<RegistrationRows, StoreError> {
        let (registrations, presence) = match pubkey {
            Some(pubkey) => {
                let registrations = format!("{SELECT_REGISTRATIONS} WHERE pubkey = $1");
                let presence = format!("{SELECT_PRESENCE} WHERE pubkey = $1");
                (
                    sqlx::query_as(sqlx::AssertSqlSafe(registrations)).bind(&pubkey[..]).fetch_all(&self.pool).await?,
                    sqlx::query_as(sqlx::AssertSqlSafe(presence)).bind(&pubkey[..]).fetch_all(&self.pool).await?,
                )
            }
            None => (
                sqlx::query_as(SELECT_REGISTRATIONS).fetch_all(&self.pool).await?,
                sqlx::query_as(SELECT_PRESENCE).fetch_all(&self.pool).await?,
            ),
        };
        decoded(registrations, presence)
    }

    async fn each_registration(
        &self,
        visit: &mut (dyn FnMut(RegistrationRow) + Send),
    ) -> Result<Vec<PresenceRow>, StoreError> {
        let mut rows = sqlx::query_as::<_, StoredRegistration>(SELECT_REGISTRATIONS).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            visit(row.decode()?);
        }
        presence_rows(sqlx::query_as(SELECT_PRESENCE).fetch_all(&self.pool).await?)
    }

    async fn last_applied(&self, pubkey: &Hash32) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(LAST_APPLIED).bind(&pubkey[..]).fetch_optional(&self.pool).await?)
    }

    async fn apply_change(&self, change: &RegistrationChange) -> Result<ChangeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = apply(&mut tx, change).await?;
        if outcome == ChangeOutcome::Applied {
            self.announce(&mut tx, &change.pubkey).await?;
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn remove_device(&self, device_id: &str, only: Option<&Hash32>) -> Result<Vec<Hash32>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let removed: Vec<Vec<u8>> = match only {
            Some(key) => {
                let remove = sqlx::query_scalar(REMOVE_REGISTRATION).bind(device_id).bind(&key[..]);
                remove.fetch_all(&mut *tx).await?
            }
            None => sqlx::query_scalar(REMOVE_DEVICE).bind(device_id).fetch_all(&mut *tx).await?,
        };
        let removed = removed.into_iter().map(pubkey).collect::<Result<Vec<_>, _>>()?;
        for pubkey in &removed {
            self.announce(&mut tx, pubkey).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn add_to_badges(&self, changes: &[BadgeChange]) -> Result<Vec<Option<i64>>, StoreError> {
        // One statement for the batch (a round trip per change would bound a fan-out by the network's latency);
        // RETURNING comes in no set order, so the rows are matched back by their key.
        let pubkeys: Vec<&[u8]> = changes.iter().map(|c| &c.pubkey[..]).collect();
        let devices: Vec<&str> = changes.iter().map(|c| c.device_id.as_str()).collect();
        let counts: Vec<i64> = changes.iter().map(|c| c.count).collect();
        let rows: Vec<(Vec<u8>, String, i64)> =
            sqlx::query_as(ADD_TO_BADGES).bind(pubkeys).bind(devices).bind(counts).fetch_all(&self.pool).await?;
        let badges: std::collections::HashMap<(Vec<u8>, String), i64> =
            rows.into_iter().map(|(pubkey, device_id, badge)| ((pubkey, device_id), badge)).collect();
        Ok(changes.iter().map(|c| badges.get(&(c.pubkey.to_vec(), c.device_id.clone())).copied()).collect())
    }
}

impl PgStore {
    /// Tells the other nodes, at the commit of `conn`'s transaction, that this pubkey's registrations changed.
    async fn announce(&self, conn: &mut PgConnection, pubkey: &Hash32) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REGISTRATIONS_CHANNEL)
            .bind(format!("{} {}", self.node, hex::encode(pubkey)))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The change on an open transaction, in the order `RegistrationChange` gives.
async fn apply(conn: &mut PgConnection, change: &RegistrationChange) -> Result<ChangeOutcome, StoreError> {
    let pubkey = &change.pubkey[..];
    let last_applied: Option<i64> = sqlx::query_scalar(LAST_APPLIED).bind(pubkey).fetch_optional(&mut *conn).await?;
    if let Some(created_at) = change.created_at
        && last_applied.is_some_and(|last| created_at < last)
    {
        return Ok(ChangeOutcome::Replay);
    }
    if let Some(limit) = &change.limit {
        let sharing: i64 = sqlx::query_scalar(COUNT_DEVICE).bind(&limit.device_id).fetch_one(&mut *conn).await?;
        if sharing >= limit.max_pubkeys as i64 {
            return Ok(ChangeOutcome::DeviceFull);
        }
    }
    if change.remove_all {
        sqlx::query(REMOVE_PUBKEY).bind(pubkey).execute(&mut *conn).await?;
    }
    for row in &change.save {
        save(conn, row).await?;
    }
    if change.reset_badges {
        sqlx::query(RESET_BADGES).bind(pubkey).execute(&mut *conn).await?;
    }
    sqlx::query(SAVE_PRESENCE)
        .bind(pubkey)
        .bind(i64::from(change.presence.online))
        .bind(change.presence.last_heartbeat)
        .bind(change.created_at.unwrap_or(0))
        .execute(&mut *conn)
        .await?;
    Ok(ChangeOutcome::Applied)
}

async fn save(conn: &mut PgConnection, row: &RegistrationRow) -> Result<(), StoreError> {
    let [kinds, p_tags, e_tags, authors, exclude_authors, relays] = encoded_lists(row);
    sqlx::query(SAVE_REGISTRATION)
        .bind(&row.pubkey[..])
        .bind(&row.device_id)
        .bind(kinds)
        .bind(p_tags)
        .bind(e_tags)
        .bind(authors)
        .bind(exclude_authors)
        .bind(relays)
        .bind(&row.platform)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(i64::from(row.only_from_authors))
        .bind(i64::from(row.limit_mentions))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
