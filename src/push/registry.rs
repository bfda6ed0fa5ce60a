//! Registrations and presence: stored in the relay's database, mirrored in the in-memory index.
//!
//! Changes are serialised by one lock so that the database and the index change in the same order; the index is
//! updated only after the database commit, so what the matcher sees is always something that was saved.
//!
//! The same statements serve SQLite and PostgreSQL through sqlx's Any driver. On PostgreSQL every change is also
//! announced (`pg_notify` in its transaction) so that the other nodes reload that pubkey (see `cluster`).

use std::sync::{Arc, RwLock};

use sqlx::AnyConnection;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::Mutex;

use super::device::{Device, shorten};
use super::index::{Presence, Registration, RegistrationIndex};
use super::registration::RegistrationUpdate;
use crate::config::{DatabaseConfig, PushConfig};
use crate::protocol::VerifiedEvent;
use crate::protocol::filter::Hash32;
use crate::store::{IMMEDIATE, WriteTurn, WriteTurns};

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Older than a registration event already applied for this pubkey: nothing changed.
    Replay,
}

#[derive(Debug)]
pub enum ApplyError {
    /// The update is not acceptable; the text is the `OK false` reason.
    Refused(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// The channel registration changes are announced on, with `<node> <pubkey hex>`.
pub const REGISTRATIONS_CHANNEL: &str = "pushrelay_registrations";

pub struct Registry {
    pool: AnyPool,
    /// PostgreSQL: several nodes may share the registrations, so changes are announced.
    shared: bool,
    node: String,
    index: RwLock<RegistrationIndex>,
    changes: Mutex<()>,
    config: PushConfig,
    turns: Option<Arc<dyn WriteTurns>>,
}

impl Registry {
    /// Opens the registrations in the relay's database (already migrated by the store) and loads the index.
    /// `turns`: the store's turns at writing, when the relay runs (see `store::WriteTurns`); a command beside a running
    /// relay has none and waits for SQLite's lock as any other process.
    pub async fn open(
        database: &DatabaseConfig,
        config: PushConfig,
        node: String,
        turns: Option<Arc<dyn WriteTurns>>,
    ) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let shared = database.is_postgres();
        let pragmas = format!("PRAGMA busy_timeout = {}; PRAGMA synchronous = NORMAL", database.busy_timeout_ms);
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            // SQLite connections do not drop; the check before each use cost a round trip to the worker thread.
            .test_before_acquire(shared)
            .after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    if !shared {
                        // Registrations and heartbeats are re-sent by the app, so `synchronous = NORMAL` (safe
                        // against a crash of the relay, not of the machine) spares an fsync per heartbeat.
                        conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    }
                    Ok(())
                })
            })
            .connect(&database.url)
            .await?;
        let registry = Self { pool, shared, node, index: RwLock::default(), changes: Mutex::new(()), config, turns };
        registry.load().await?;
        Ok(registry)
    }

    /// Reads every registration and presence into a new index.
    pub async fn load(&self) -> Result<(), sqlx::Error> {
        // Under the change lock, so that a change made here meanwhile is not overwritten by an older snapshot.
        let _serialised = self.changes.lock().await;
        let mut index = RegistrationIndex::default();
        for registration in self.read_registrations(None).await? {
            index.insert(registration);
        }
        for (pubkey, presence) in self.read_presence(None).await? {
            index.set_presence(pubkey, presence);
        }
        tracing::info!(registrations = index.len(), "push registrations loaded");
        *self.index.write().expect("registration index lock") = index;
        Ok(())
    }

    /// Re-reads one pubkey's registrations and presence, after another node changed them.
    pub async fn reload(&self, pubkey: &Hash32) -> Result<(), sqlx::Error> {
        let _serialised = self.changes.lock().await;
        let registrations = self.read_registrations(Some(pubkey)).await?;
        let presence = self.read_presence(Some(pubkey)).await?;
        let mut index = self.index.write().expect("registration index lock");
        index.remove_pubkey(pubkey);
        for registration in registrations {
            index.insert(registration);
        }
        for (pubkey, presence) in presence {
            index.set_presence(pubkey, presence);
        }
        Ok(())
    }

    async fn read_registrations(&self, pubkey: Option<&Hash32>) -> Result<Vec<Registration>, sqlx::Error> {
        let rows = match pubkey {
            Some(pubkey) => {
                sqlx::query("SELECT * FROM push_registrations WHERE pubkey = $1")
                    .bind(&pubkey[..])
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query("SELECT * FROM push_registrations").fetch_all(&self.pool).await?,
        };
        let mut registrations = Vec::with_capacity(rows.len());
        for row in rows {
            let device_id: String = row.try_get("device_id")?;
            match self.parse_device(&device_id) {
                Ok(device) => registrations.push(registration_from_row(&row, device)?),
                Err(e) => tracing::warn!(device = shorten(&device_id), "stored registration skipped: {e}"),
            }
        }
        Ok(registrations)
    }

    async fn read_presence(&self, pubkey: Option<&Hash32>) -> Result<Vec<(Hash32, Presence)>, sqlx::Error> {
        const COLUMNS: &str = "SELECT pubkey, online, last_heartbeat FROM push_presence";
        let rows = match pubkey {
            Some(pubkey) => {
                let sql = format!("{COLUMNS} WHERE pubkey = $1");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&pubkey[..]).fetch_all(&self.pool).await?
            }
            None => sqlx::query(COLUMNS).fetch_all(&self.pool).await?,
        };
        rows.iter()
            .map(|row| {
                let online: i64 = row.try_get("online")?;
                let presence = Presence { online: online != 0, last_heartbeat: row.try_get("last_heartbeat")? };
                Ok((hash(row.try_get("pubkey")?)?, presence))
            })
            .collect()
    }

    /// Tells the other nodes (PostgreSQL only) that this pubkey's registrations changed, at the commit of `conn`'s
    /// transaction.
    async fn announce(&self, conn: &mut AnyConnection, pubkey: &Hash32) -> Result<(), sqlx::Error> {
        if self.shared {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REGISTRATIONS_CHANNEL)
                .bind(format!("{} {}", self.node, hex::encode(pubkey)))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Applies one decrypted registration event of `pubkey`, created at `created_at`, at relay time `now`.
    pub async fn apply(
        &self,
        pubkey: Hash32,
        created_at: i64,
        update: RegistrationUpdate,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        let _serialised = self.changes.lock().await;
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin_with(if self.shared { "BEGIN" } else { IMMEDIATE }).await?;
        let last_applied: Option<i64> =
            sqlx::query_scalar("SELECT last_applied_at FROM push_presence WHERE pubkey = $1")
                .bind(&pubkey[..])
                .fetch_optional(&mut *tx)
                .await?;
        if last_applied.is_some_and(|last| created_at < last) {
            return Ok(Applied::Replay);
        }

        let (current, presence) = {
            let index = self.index.read().expect("registration index lock");
            (index.registrations_of(&pubkey), index.presence(&pubkey))
        };
        let logout = update.is_logout();
        let targets = if logout {
            sqlx::query("DELETE FROM push_registrations WHERE pubkey = $1").bind(&pubkey[..]).execute(&mut *tx).await?;
            Vec::new()
        } else {
            self.updated_registrations(&mut tx, pubkey, &current, &update, now).await?
        };
        for registration in &targets {
            save(&mut tx, registration).await?;
        }
        if update.online == Some(true) {
            sqlx::query("UPDATE push_registrations SET badge = 0 WHERE pubkey = $1")
                .bind(&pubkey[..])
                .execute(&mut *tx)
                .await?;
        }
        let presence = match update.online {
            Some(true) => Presence { online: true, last_heartbeat: now },
            Some(false) => Presence { online: false, ..presence },
            None => presence,
        };
        sqlx::query(
            "INSERT INTO push_presence (pubkey, online, last_heartbeat, last_applied_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (pubkey) DO UPDATE SET online = excluded.online, last_heartbeat = excluded.last_heartbeat,
             last_applied_at = CASE WHEN push_presence.last_applied_at > excluded.last_applied_at
                 THEN push_presence.last_applied_at ELSE excluded.last_applied_at END",
        )
        .bind(&pubkey[..])
        .bind(i64::from(presence.online))
        .bind(presence.last_heartbeat)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        self.announce(&mut tx, &pubkey).await?;
        tx.commit().await?;

        let mut index = self.index.write().expect("registration index lock");
        if logout {
            index.remove_pubkey(&pubkey);
        }
        for registration in targets {
            index.insert(registration);
        }
        index.set_presence(pubkey, presence);
        Ok(Applied::Applied)
    }

    /// The registrations an update rewrites: the named device (new or existing), or, with no device id, every
    /// device of the pubkey.
    async fn updated_registrations(
        &self,
        tx: &mut AnyConnection,
        pubkey: Hash32,
        current: &[Arc<Registration>],
        update: &RegistrationUpdate,
        now: i64,
    ) -> Result<Vec<Registration>, ApplyError> {
        let Some(device_id) = &update.device_id else {
            if !update.has_fields() {
                return Ok(Vec::new());
            }
            return Ok(current.iter().map(|r| merged((**r).clone(), update, now)).collect());
        };
        if device_id.is_empty() {
            return Err(ApplyError::Refused("invalid: deviceId is empty (a logout also sends online: 0)".into()));
        }
        let device = self.parse_device(device_id).map_err(ApplyError::Refused)?;
        if let Some(existing) = current.iter().find(|r| r.device_id == *device_id) {
            return Ok(vec![merged((**existing).clone(), update, now)]);
        }
        if current.len() >= self.config.max_devices_per_pubkey {
            return Err(ApplyError::Refused(format!(
                "blocked: this pubkey has too many devices (max {})",
                self.config.max_devices_per_pubkey
            )));
        }
        let sharing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_registrations WHERE device_id = $1")
            .bind(device_id)
            .fetch_one(&mut *tx)
            .await?;
        if sharing >= self.config.max_pubkeys_per_device as i64 {
            return Err(ApplyError::Refused(format!(
                "blocked: this device is registered by too many pubkeys (max {})",
                self.config.max_pubkeys_per_device
            )));
        }
        let fresh = Registration {
            pubkey,
            device_id: device_id.clone(),
            device,
            kinds: Vec::new(),
            p_tags: Vec::new(),
            e_tags: Vec::new(),
            authors: Vec::new(),
            exclude_authors: Vec::new(),
            relays: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        Ok(vec![merged(fresh, update, now)])
    }

    fn parse_device(&self, device_id: &str) -> Result<Device, String> {
        Device::parse(device_id, &self.config.apns.bundle_ids, self.config.unifiedpush.allow_private_addresses)
    }

    pub fn registrations_of(&self, pubkey: &Hash32) -> Vec<Arc<Registration>> {
        self.index.read().expect("registration index lock").registrations_of(pubkey)
    }

    /// Registered devices, and registered pubkeys online and offline now.
    pub fn census(&self, now: i64) -> (usize, usize, usize) {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        let index = self.index.read().expect("registration index lock");
        let pubkeys = index.pubkeys();
        let online = pubkeys.iter().filter(|p| index.presence(p).is_online(now, timeout)).count();
        (index.len(), online, pubkeys.len() - online)
    }

    pub fn platforms(&self) -> std::collections::BTreeMap<&'static str, usize> {
        self.index.read().expect("registration index lock").platforms()
    }

    pub fn has_pubkey(&self, pubkey: &Hash32) -> bool {
        self.index.read().expect("registration index lock").has_pubkey(pubkey)
    }

    pub fn pubkeys(&self) -> Vec<Hash32> {
        self.index.read().expect("registration index lock").pubkeys()
    }

    pub fn has_device(&self, device_id: &str) -> bool {
        self.index.read().expect("registration index lock").has_device(device_id)
    }

    /// Forgets a device whose push service called its token dead, for every pubkey that registered it.
    pub async fn remove_device(&self, device_id: &str) -> Result<(), sqlx::Error> {
        let _serialised = self.changes.lock().await;
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin_with(if self.shared { "BEGIN" } else { IMMEDIATE }).await?;
        let pubkeys: Vec<Vec<u8>> =
            sqlx::query_scalar("DELETE FROM push_registrations WHERE device_id = $1 RETURNING pubkey")
                .bind(device_id)
                .fetch_all(&mut *tx)
                .await?;
        for pubkey in pubkeys {
            self.announce(&mut tx, &hash(pubkey)?).await?;
        }
        tx.commit().await?;
        self.index.write().expect("registration index lock").remove_device(device_id);
        Ok(())
    }

    /// Adds `count` notifications (negative: takes them back) to the badge of `pubkey`'s registration of the
    /// device; returns the new badge number, or None when the registration is gone.
    pub async fn add_to_badge(&self, pubkey: &Hash32, device_id: &str, count: i64) -> Result<Option<u32>, sqlx::Error> {
        let _turn = self.write_turn().await;
        let badge: Option<i64> = sqlx::query_scalar(
            "UPDATE push_registrations SET badge = CASE WHEN badge + $1 < 0 THEN 0 ELSE badge + $1 END
             WHERE pubkey = $2 AND device_id = $3 RETURNING badge",
        )
        .bind(count)
        .bind(&pubkey[..])
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(badge.map(|b| u32::try_from(b).unwrap_or(u32::MAX)))
    }

    /// What the upstream watchers should subscribe to now (see `RegistrationIndex::watch_plan`).
    pub fn watch_plan(
        &self,
        now: i64,
        limits: super::index::PlanLimits,
        inbox: &dyn Fn(&Hash32) -> Vec<String>,
    ) -> std::collections::BTreeMap<String, Vec<crate::protocol::Filter>> {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        self.index.read().expect("registration index lock").watch_plan(now, timeout, limits, inbox)
    }

    pub fn is_online(&self, pubkey: &Hash32, now: i64) -> bool {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        self.index.read().expect("registration index lock").presence(pubkey).is_online(now, timeout)
    }

    /// The registrations an event should notify now: what the push matcher asks.
    pub fn matching(&self, event: &VerifiedEvent, now: i64) -> Vec<Arc<Registration>> {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        self.index.read().expect("registration index lock").matching(event, now, timeout)
    }

    /// The store's turn at writing, if the relay gave this registry its turns.
    async fn write_turn(&self) -> Option<WriteTurn> {
        match &self.turns {
            Some(turns) => Some(turns.write_turn().await),
            None => None,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn merged(mut registration: Registration, update: &RegistrationUpdate, now: i64) -> Registration {
    let replace = |field: &mut Vec<String>, new: &Option<Vec<String>>| {
        if let Some(new) = new {
            field.clone_from(new);
        }
    };
    if let Some(kinds) = &update.kinds {
        registration.kinds.clone_from(kinds);
    }
    replace(&mut registration.p_tags, &update.p_tags);
    replace(&mut registration.e_tags, &update.e_tags);
    replace(&mut registration.authors, &update.authors);
    replace(&mut registration.exclude_authors, &update.exclude_authors);
    replace(&mut registration.relays, &update.relays);
    // A registration that never named `#p` (YakiHonne's) is for its signer (spec: "What the decrypted content
    // says"); an empty list is taken the same way, so that such registrations stored earlier mend themselves at the
    // app's next heartbeat.
    if update.p_tags.is_none() && registration.p_tags.is_empty() {
        registration.p_tags = vec![hex::encode(registration.pubkey)];
    }
    registration.updated_at = now;
    registration
}

async fn save(tx: &mut AnyConnection, r: &Registration) -> Result<(), sqlx::Error> {
    let json = |list: &[String]| serde_json::to_string(list).expect("strings serialize");
    sqlx::query(
        "INSERT INTO push_registrations
           (pubkey, device_id, kinds, p_tags, e_tags, authors, exclude_authors, relays, platform, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (pubkey, device_id) DO UPDATE SET kinds = excluded.kinds, p_tags = excluded.p_tags,
           e_tags = excluded.e_tags, authors = excluded.authors, exclude_authors = excluded.exclude_authors,
           relays = excluded.relays, platform = excluded.platform, updated_at = excluded.updated_at",
    )
    .bind(&r.pubkey[..])
    .bind(&r.device_id)
    .bind(serde_json::to_string(&r.kinds).expect("integers serialize"))
    .bind(json(&r.p_tags))
    .bind(json(&r.e_tags))
    .bind(json(&r.authors))
    .bind(json(&r.exclude_authors))
    .bind(json(&r.relays))
    .bind(r.device.platform())
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn registration_from_row(row: &AnyRow, device: Device) -> Result<Registration, sqlx::Error> {
    let list = |column: &str| -> Result<Vec<String>, sqlx::Error> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let kinds: String = row.try_get("kinds")?;
    Ok(Registration {
        pubkey: hash(row.try_get("pubkey")?)?,
        device_id: row.try_get("device_id")?,
        device,
        kinds: serde_json::from_str(&kinds).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        p_tags: list("p_tags")?,
        e_tags: list("e_tags")?,
        authors: list("authors")?,
        exclude_authors: list("exclude_authors")?,
        relays: list("relays")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn hash(bytes: Vec<u8>) -> Result<Hash32, sqlx::Error> {
    bytes.try_into().map_err(|_| sqlx::Error::Decode("stored pubkey is not 32 bytes".into()))
}
