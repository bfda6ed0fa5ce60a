//! The registration tables (`push_registrations`, `push_presence`) behind a trait of their own, so that each
//! database has one writer: on SQLite the store's write connection, on PostgreSQL the store's pool. The store keeps
//! rows; what they mean (merging updates, caps, presence rules, the in-memory index) belongs to whoever registers.

use async_trait::async_trait;

use super::StoreError;
use crate::protocol::filter::Hash32;

/// One device of one pubkey, as stored. The lists are kept as JSON text; the store encodes and decodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRow {
    pub pubkey: Hash32,
    pub device_id: String,
    pub kinds: Vec<u16>,
    pub p_tags: Vec<String>,
    pub e_tags: Vec<String>,
    pub authors: Vec<String>,
    pub exclude_authors: Vec<String>,
    pub relays: Vec<String>,
    pub platform: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub only_from_authors: bool,
    pub limit_mentions: bool,
}

/// One pubkey's presence, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceRow {
    pub pubkey: Hash32,
    pub online: bool,
    pub last_heartbeat: i64,
}

/// What `load_registrations` read.
#[derive(Debug, Default)]
pub struct RegistrationRows {
    pub registrations: Vec<RegistrationRow>,
    pub presence: Vec<PresenceRow>,
}

/// A device new to the pubkey, saved only while fewer than `max_pubkeys` pubkeys have registered it. Checked in the
/// change's transaction, against the table rather than a cache of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDeviceLimit {
    pub device_id: String,
    pub max_pubkeys: u64,
}

/// One registration event's effect on one pubkey, applied in one transaction, in this order.
#[derive(Debug, Clone)]
pub struct RegistrationChange {
    pub pubkey: Hash32,
    /// The event's `created_at`: the change is a replay, and nothing is written, when an event of the pubkey
    /// created later was already applied; otherwise it becomes the pubkey's newest applied. None: no such check
    /// (NIP-97 registrations, which carry their own freshness window).
    pub created_at: Option<i64>,
    pub limit: Option<SharedDeviceLimit>,
    /// Deletes every registration of the pubkey first (a logout).
    pub remove_all: bool,
    /// Inserted, or updated keeping their `created_at` and badge.
    pub save: Vec<RegistrationRow>,
    /// Sets the badge of every registration of the pubkey to 0.
    pub reset_badges: bool,
    /// `presence.pubkey` is the change's pubkey.
    pub presence: PresenceRow,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ChangeOutcome {
    Applied,
    /// An event created later was already applied: nothing written.
    Replay,
    /// The device reached its `SharedDeviceLimit`: nothing written.
    DeviceFull,
}

/// On PostgreSQL, every change is announced to the other nodes at its commit (see `postgres::REGISTRATIONS_CHANNEL`).
#[async_trait]
pub trait RegistrationStore: Send + Sync {
    /// Every registration and presence row, or one pubkey's.
    async fn load_registrations(&self, pubkey: Option<&Hash32>) -> Result<RegistrationRows, StoreError>;

    /// Every registration, handed to `visit` a row at a time, and then every presence row: a node's rows (a million
    /// of 0xchat's shape are gigabytes as rows) are never all in memory at once (SCALING.md).
    async fn each_registration(
        &self,
        visit: &mut (dyn FnMut(RegistrationRow) + Send),
    ) -> Result<Vec<PresenceRow>, StoreError>;

    /// The `created_at` of the newest change applied for the pubkey, if any.
    async fn last_applied(&self, pubkey: &Hash32) -> Result<Option<i64>, StoreError>;

    async fn apply_change(&self, change: &RegistrationChange) -> Result<ChangeOutcome, StoreError>;

    /// Deletes a device for every pubkey that registered it, or for `only` that pubkey; returns those pubkeys.
    async fn remove_device(&self, device_id: &str, only: Option<&Hash32>) -> Result<Vec<Hash32>, StoreError>;

    /// Adds each change's `count` (negative: takes away, down to 0) to the badge of the pubkey's registration of the
    /// device, all in one transaction (a fan-out's pushes are counted a batch at a time, not a commit each); returns
    /// each new badge in the changes' order, None where there is no such registration. A (pubkey, device) appears at
    /// most once (the registry sums a batch's changes of one registration).
    async fn add_to_badges(&self, changes: &[BadgeChange]) -> Result<Vec<Option<i64>>, StoreError>;
}

/// One registration's badge change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadgeChange {
    pub pubkey: Hash32,
    pub device_id: String,
    pub count: i64,
}

/// The statements the SQLite and PostgreSQL stores share (parameters in order of first use: rusqlite numbers `$n`
/// names that way).
pub(super) const SELECT_REGISTRATIONS: &str = "SELECT pubkey, device_id, kinds, p_tags, e_tags, authors,
     exclude_authors, relays, platform, created_at, updated_at, only_from_authors, limit_mentions
     FROM push_registrations";
pub(super) const SELECT_PRESENCE: &str = "SELECT pubkey, online, last_heartbeat FROM push_presence";
pub(super) const LAST_APPLIED: &str = "SELECT last_applied_at FROM push_presence WHERE pubkey = $1";
pub(super) const COUNT_DEVICE: &str = "SELECT COUNT(*) FROM push_registrations WHERE device_id = $1";
pub(super) const REMOVE_PUBKEY: &str = "DELETE FROM push_registrations WHERE pubkey = $1";
pub(super) const SAVE_REGISTRATION: &str = "INSERT INTO push_registrations
       (pubkey, device_id, kinds, p_tags, e_tags, authors, exclude_authors, relays, platform, created_at, updated_at,
        only_from_authors, limit_mentions)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
     ON CONFLICT (pubkey, device_id) DO UPDATE SET kinds = excluded.kinds, p_tags = excluded.p_tags,
       e_tags = excluded.e_tags, authors = excluded.authors, exclude_authors = excluded.exclude_authors,
       relays = excluded.relays, platform = excluded.platform, updated_at = excluded.updated_at,
       only_from_authors = excluded.only_from_authors, limit_mentions = excluded.limit_mentions";
pub(super) const RESET_BADGES: &str = "UPDATE push_registrations SET badge = 0 WHERE pubkey = $1";
/// Keeps the newest `last_applied_at`, whatever order changes commit in.
pub(super) const SAVE_PRESENCE: &str =
    "INSERT INTO push_presence (pubkey, online, last_heartbeat, last_applied_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (pubkey) DO UPDATE SET online = excluded.online, last_heartbeat = excluded.last_heartbeat,
     last_applied_at = CASE WHEN push_presence.last_applied_at > excluded.last_applied_at
         THEN push_presence.last_applied_at ELSE excluded.last_applied_at END";
pub(super) const REMOVE_DEVICE: &str = "DELETE FROM push_registrations WHERE device_id = $1 RETURNING pubkey";
pub(super) const REMOVE_REGISTRATION: &str =
    "DELETE FROM push_registrations WHERE device_id = $1 AND pubkey = $2 RETURNING pubkey";

/// A registration row as the tables hold it, lists as JSON text (read alike from either database).
pub(super) struct StoredRegistration {
    pubkey: Vec<u8>,
    device_id: String,
    kinds: String,
    p_tags: String,
    e_tags: String,
    authors: String,
    exclude_authors: String,
    relays: String,
    platform: String,
    created_at: i64,
    updated_at: i64,
    only_from_authors: i64,
    limit_mentions: i64,
}

/// What `#[derive(sqlx::FromRow)]` would write; the derive needs sqlx's proc macros, which the build goes without
/// (`store::migrations` says why).
impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for StoredRegistration
where
    &'static str: sqlx::ColumnIndex<R>,
    Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            pubkey: row.try_get("pubkey")?,
            device_id: row.try_get("device_id")?,
            kinds: row.try_get("kinds")?,
            p_tags: row.try_get("p_tags")?,
            e_tags: row.try_get("e_tags")?,
            authors: row.try_get("authors")?,
            exclude_authors: row.try_get("exclude_authors")?,
            relays: row.try_get("relays")?,
            platform: row.try_get("platform")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            only_from_authors: row.try_get("only_from_authors")?,
            limit_mentions: row.try_get("limit_mentions")?,
        })
    }
}

impl StoredRegistration {
    pub(super) fn decode(self) -> Result<RegistrationRow, StoreError> {
        let bad = |e: serde_json::Error| StoreError::new(format!("stored registration list is not JSON: {e}"));
        let list = |text: &str| serde_json::from_str::<Vec<String>>(text).map_err(bad);
        Ok(RegistrationRow {
            pubkey: pubkey(self.pubkey)?,
            kinds: serde_json::from_str(&self.kinds).map_err(bad)?,
            p_tags: list(&self.p_tags)?,
            e_tags: list(&self.e_tags)?,
            authors: list(&self.authors)?,
            exclude_authors: list(&self.exclude_authors)?,
            relays: list(&self.relays)?,
            device_id: self.device_id,
            platform: self.platform,
            created_at: self.created_at,
            updated_at: self.updated_at,
            only_from_authors: self.only_from_authors != 0,
            limit_mentions: self.limit_mentions != 0,
        })
    }
}

/// The list columns of a row, as stored: kinds, p_tags, e_tags, authors, exclude_authors, relays.
pub(super) fn encoded_lists(row: &RegistrationRow) -> [String; 6] {
    let json = |list: &[String]| serde_json::to_string(list).expect("strings serialize");
    [
        serde_json::to_string(&row.kinds).expect("integers serialize"),
        json(&row.p_tags),
        json(&row.e_tags),
        json(&row.authors),
        json(&row.exclude_authors),
        json(&row.relays),
    ]
}

/// Decodes what the two reads of `load_registrations` returned.
/// Presence rows as read.
pub(super) fn presence_rows(presence: Vec<(Vec<u8>, i64, i64)>) -> Result<Vec<PresenceRow>, StoreError> {
    presence
        .into_iter()
        .map(|(key, online, last_heartbeat)| {
            Ok(PresenceRow { pubkey: pubkey(key)?, online: online != 0, last_heartbeat })
        })
        .collect()
}

pub(super) fn decoded(
    registrations: Vec<StoredRegistration>,
    presence: Vec<(Vec<u8>, i64, i64)>,
) -> Result<RegistrationRows, StoreError> {
    Ok(RegistrationRows {
        registrations: registrations.into_iter().map(StoredRegistration::decode).collect::<Result<_, _>>()?,
        presence: presence_rows(presence)?,
    })
}

pub(super) fn pubkey(bytes: Vec<u8>) -> Result<Hash32, StoreError> {
    bytes.try_into().map_err(|_| StoreError::new("stored pubkey is not 32 bytes"))
}
