//! Registrations and presence: stored in the relay's database (through the store's `RegistrationStore`, so that
//! each database has one writer), mirrored in the in-memory index.
//!
//! Changes are serialised by one lock so that the database and the index change in the same order; the index is
//! updated only after the database commit, so what the matcher sees is always something that was saved. On
//! PostgreSQL the store announces every change to the other nodes, which reload that pubkey (see `cluster`).

use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;

use super::index::{Hellthreads, Presence, Registration, RegistrationIndex};
use super::update::RegistrationUpdate;
use super::values;
use crate::config::PushConfig;
use crate::protocol::filter::Hash32;
use crate::protocol::{Refusal, VerifiedEvent};
use crate::push::device::{Device, shorten};
use crate::store::StoreError;
use crate::store::registrations::{
    BadgeChange, ChangeOutcome, PresenceRow, RegistrationChange, RegistrationRow, RegistrationStore, SharedDeviceLimit,
};

#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Older than a registration event already applied for this pubkey: nothing changed.
    Replay,
}

#[derive(Debug)]
pub enum ApplyError {
    /// The update is not acceptable; the text is the `OK false` reason.
    Refused(Refusal),
    Database(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        Self::Database(e)
    }
}

/// A change to store, and what the index becomes once it is stored.
struct Planned {
    change: RegistrationChange,
    targets: Vec<Registration>,
    presence: Presence,
}

pub struct Registry {
    store: Arc<dyn RegistrationStore>,
    index: RwLock<RegistrationIndex>,
    changes: Mutex<()>,
    config: PushConfig,
}

impl Registry {
    /// Reads the registrations in the relay's database (already migrated by the store) into the index.
    pub async fn open(store: Arc<dyn RegistrationStore>, config: PushConfig) -> Result<Self, StoreError> {
        let registry = Self { store, index: RwLock::default(), changes: Mutex::new(()), config };
        registry.load().await?;
        Ok(registry)
    }

    /// Reads every registration and presence into a new index.
    pub async fn load(&self) -> Result<(), StoreError> {
        // Under the change lock, so that a change made here meanwhile is not overwritten by an older snapshot.
        let _serialised = self.changes.lock().await;
        let mut index = RegistrationIndex::default();
        // Each row becomes its compact registration before the next is read.
        let presence = self.store.each_registration(&mut |row| index.insert_all(self.registration(row))).await?;
        for presence in presence {
            index.set_presence(presence.pubkey, stored_presence(&presence));
        }
        tracing::info!(registrations = index.len(), "push registrations loaded");
        *self.index.write().expect("registration index lock") = index;
        Ok(())
    }

    /// Re-reads one pubkey's registrations and presence, after another node changed them.
    pub async fn reload(&self, pubkey: &Hash32) -> Result<(), StoreError> {
        let _serialised = self.changes.lock().await;
        let rows = self.store.load_registrations(Some(pubkey)).await?;
        let registrations = self.registrations(rows.registrations);
        let mut index = self.index.write().expect("registration index lock");
        index.remove_pubkey(pubkey);
        for registration in registrations {
            index.insert(registration);
        }
        for presence in rows.presence {
            index.set_presence(presence.pubkey, stored_presence(&presence));
        }
        Ok(())
    }

    /// The stored rows whose device this configuration accepts (a bundle id since removed, say, is skipped).
    fn registrations(&self, rows: Vec<RegistrationRow>) -> Vec<Registration> {
        rows.into_iter().filter_map(|row| self.registration(row)).collect()
    }

    fn registration(&self, row: RegistrationRow) -> Option<Registration> {
        match self.parse_device(&row.device_id) {
            Ok(device) => Some(registration_from_row(row, device)),
            Err(e) => {
                tracing::warn!(device = shorten(&row.device_id), "stored registration skipped: {e}");
                None
            }
        }
    }

    /// Applies one decrypted registration event of `pubkey`, created at `created_at`, at relay time `now`. Without
    /// `created_at` (NIP-97, whose events carry their own freshness window) no replay is checked.
    pub async fn apply(
        &self,
        pubkey: Hash32,
        created_at: Option<i64>,
        update: RegistrationUpdate,
        now: i64,
    ) -> Result<Applied, ApplyError> {
        let _serialised = self.changes.lock().await;
        let planned = match self.plan(pubkey, created_at, &update, now) {
            Ok(planned) => planned,
            Err(refusal) => return self.replay_or(pubkey, created_at, refusal).await,
        };
        match self.store.apply_change(&planned.change).await? {
            ChangeOutcome::Applied => {}
            ChangeOutcome::Replay => return Ok(Applied::Replay),
            ChangeOutcome::DeviceFull => return Err(ApplyError::Refused(self.device_full())),
        }
        let mut index = self.index.write().expect("registration index lock");
        if planned.change.remove_all {
            index.remove_pubkey(&pubkey);
        }
        for registration in planned.targets {
            index.insert(registration);
        }
        index.set_presence(pubkey, planned.presence);
        Ok(Applied::Applied)
    }

    /// What an update changes, from the index as it is (under the change lock); Err: the refusal.
    fn plan(
        &self,
        pubkey: Hash32,
        created_at: Option<i64>,
        update: &RegistrationUpdate,
        now: i64,
    ) -> Result<Planned, Refusal> {
        let (current, presence) = {
            let index = self.index.read().expect("registration index lock");
            (index.registrations_of(&pubkey), index.presence(&pubkey))
        };
        let logout = update.is_logout();
        let (targets, limit) =
            if logout { (Vec::new(), None) } else { self.updated_registrations(pubkey, &current, update, now)? };
        let presence = match update.online {
            Some(true) => Presence { online: true, last_heartbeat: now },
            Some(false) => Presence { online: false, ..presence },
            None => presence,
        };
        let change = RegistrationChange {
            pubkey,
            created_at,
            limit,
            remove_all: logout,
            save: targets.iter().map(row_of).collect(),
            reset_badges: update.online == Some(true),
            presence: PresenceRow { pubkey, online: presence.online, last_heartbeat: presence.last_heartbeat },
        };
        Ok(Planned { change, targets, presence })
    }

    /// A replay is answered as one even when the update would also be refused: replays are checked first.
    async fn replay_or(
        &self,
        pubkey: Hash32,
        created_at: Option<i64>,
        refusal: Refusal,
    ) -> Result<Applied, ApplyError> {
        let Some(created_at) = created_at else { return Err(ApplyError::Refused(refusal)) };
        match self.store.last_applied(&pubkey).await? {
            Some(last) if created_at < last => Ok(Applied::Replay),
            _ => Err(ApplyError::Refused(refusal)),
        }
    }

    fn device_full(&self) -> Refusal {
        Refusal::blocked(format!(
            "this device is registered by too many pubkeys (max {})",
            self.config.max_pubkeys_per_device
        ))
    }

    /// The registrations an update rewrites: the named device (new or existing), or, with no device id, every
    /// device of the pubkey; with, for a device new to the pubkey, the limit of pubkeys sharing it, which the store
    /// checks in the change's transaction. Err: the refusal.
    fn updated_registrations(
        &self,
        pubkey: Hash32,
        current: &[Arc<Registration>],
        update: &RegistrationUpdate,
        now: i64,
    ) -> Result<(Vec<Registration>, Option<SharedDeviceLimit>), Refusal> {
        let Some(device_id) = &update.device_id else {
            if !update.has_fields() {
                return Ok((Vec::new(), None));
            }
            return Ok((current.iter().map(|r| merged((**r).clone(), update, now)).collect(), None));
        };
        if device_id.is_empty() {
            return Err(Refusal::invalid("deviceId is empty (a logout also sends online: 0)"));
        }
        let device = self.parse_device(device_id)?;
        if let Some(existing) = current.iter().find(|r| r.device_id == *device_id) {
            return Ok((vec![merged((**existing).clone(), update, now)], None));
        }
        if current.len() >= self.config.max_devices_per_pubkey {
            let max = self.config.max_devices_per_pubkey;
            return Err(Refusal::blocked(format!("this pubkey has too many devices (max {max})")));
        }
        let limit =
            SharedDeviceLimit { device_id: device_id.clone(), max_pubkeys: self.config.max_pubkeys_per_device as u64 };
        Ok((vec![merged(Registration::new(pubkey, device_id, device, now), update, now)], Some(limit)))
    }

    fn parse_device(&self, device_id: &str) -> Result<Device, Refusal> {
        Device::parse_stored(device_id, &self.config.apns.bundle_ids, self.config.unifiedpush.allow_private_addresses)
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

    /// Every NIP-97 device: (pubkey, device id, when last registered).
    pub fn nip97_devices(&self) -> Vec<(Hash32, String, i64)> {
        let index = self.index.read().expect("registration index lock");
        index.devices_where(|r| crate::push::device::is_nip97(&r.device_id))
    }

    pub fn has_device(&self, device_id: &str) -> bool {
        self.index.read().expect("registration index lock").has_device(device_id)
    }

    /// Forgets a device whose push service called its token dead, for every pubkey that registered it.
    pub async fn remove_device(&self, device_id: &str) -> Result<(), StoreError> {
        let _serialised = self.changes.lock().await;
        self.store.remove_device(device_id, None).await?;
        self.index.write().expect("registration index lock").remove_device(device_id);
        Ok(())
    }

    /// Removes one pubkey's registration of a device (its owner's choice); false when there was none.
    pub async fn remove_registration(&self, pubkey: &Hash32, device_id: &str) -> Result<bool, StoreError> {
        let _serialised = self.changes.lock().await;
        let removed = !self.store.remove_device(device_id, Some(pubkey)).await?.is_empty();
        self.index.write().expect("registration index lock").remove(pubkey, device_id);
        Ok(removed)
    }

    /// Adds `count` notifications (negative: takes them back) to the badge of `pubkey`'s registration of the
    /// device; returns the new badge number, or None when the registration is gone.
    pub async fn add_to_badge(&self, pubkey: &Hash32, device_id: &str, count: i64) -> Result<Option<u32>, StoreError> {
        let change = BadgeChange { pubkey: *pubkey, device_id: device_id.to_owned(), count };
        Ok(self.add_to_badges(vec![change]).await?.pop().flatten())
    }

    /// `add_to_badge` for many registrations in one transaction; the changes of one registration are summed, and
    /// each gets the badge after all of them.
    pub async fn add_to_badges(&self, changes: Vec<BadgeChange>) -> Result<Vec<Option<u32>>, StoreError> {
        let mut merged: Vec<BadgeChange> = Vec::with_capacity(changes.len());
        let mut at: std::collections::HashMap<(Hash32, &str), usize> = std::collections::HashMap::new();
        let places: Vec<usize> = changes
            .iter()
            .map(|change| {
                *at.entry((change.pubkey, change.device_id.as_str()))
                    .and_modify(|i| merged[*i].count += change.count)
                    .or_insert_with(|| {
                        merged.push(change.clone());
                        merged.len() - 1
                    })
            })
            .collect();
        let badges = self.store.add_to_badges(&merged).await?;
        let badge = |i: usize| badges.get(i).copied().flatten().map(|b| u32::try_from(b).unwrap_or(u32::MAX));
        Ok(places.into_iter().map(badge).collect())
    }

    /// What the upstream watchers should subscribe to now (see `RegistrationIndex::watch_plan`).
    pub fn watch_plan(
        &self,
        now: i64,
        limits: super::watch_plan::PlanLimits,
        inbox: &dyn Fn(&Hash32) -> Vec<String>,
    ) -> std::collections::BTreeMap<String, Vec<crate::protocol::Filter>> {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        self.index.read().expect("registration index lock").watch_plan(now, timeout, limits, inbox)
    }

    /// Records that the pubkey's lists were read; false when no registration or presence of it is kept.
    pub fn mark_lists_read(&self, pubkey: &Hash32) -> bool {
        self.index.write().expect("registration index lock").mark_lists_read(pubkey)
    }

    pub fn lists_read(&self, pubkey: &Hash32) -> bool {
        self.index.read().expect("registration index lock").lists_read(pubkey)
    }

    pub fn is_online(&self, pubkey: &Hash32, now: i64) -> bool {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        self.index.read().expect("registration index lock").presence(pubkey).is_online(now, timeout)
    }

    /// The registrations an event should notify now: what the push matcher asks.
    pub fn matching(&self, event: &VerifiedEvent, now: i64) -> Vec<Arc<Registration>> {
        let timeout = self.config.heartbeat_timeout_secs as i64;
        let rule =
            Hellthreads { max_mentions: self.config.max_mentions, for_everyone: self.config.suppress_hellthreads };
        self.index.read().expect("registration index lock").matching(event, now, timeout, rule)
    }
}

fn merged(mut registration: Registration, update: &RegistrationUpdate, now: i64) -> Registration {
    if let Some(kinds) = &update.kinds {
        registration.kinds = kinds.as_slice().into();
    }
    if let Some(p_tags) = &update.p_tags {
        registration.p_tags = values::pubkeys(p_tags);
    }
    if let Some(e_tags) = &update.e_tags {
        registration.e_tags = values::tag_values(e_tags);
    }
    if let Some(authors) = &update.authors {
        registration.authors = values::pubkeys(authors);
    }
    if let Some(exclude_authors) = &update.exclude_authors {
        registration.exclude_authors = values::pubkeys(exclude_authors);
    }
    if let Some(relays) = &update.relays {
        registration.relays = relays.as_slice().into();
    }
    registration.only_from_authors = update.only_from_authors.unwrap_or(registration.only_from_authors);
    registration.limit_mentions = update.limit_mentions.unwrap_or(registration.limit_mentions);
    // A registration that never named `#p` (YakiHonne's) is for its signer (README, "Push registration"); an empty
    // list is taken the same way, so that such registrations stored earlier mend themselves at the app's next
    // heartbeat.
    if update.p_tags.is_none() && registration.p_tags.is_empty() {
        registration.p_tags = [registration.pubkey].into();
    }
    registration.updated_at = now;
    registration
}

fn row_of(r: &Registration) -> RegistrationRow {
    RegistrationRow {
        pubkey: r.pubkey,
        device_id: r.device_id.clone(),
        kinds: r.kinds.to_vec(),
        p_tags: values::hex_list(&r.p_tags),
        e_tags: values::text_list(&r.e_tags),
        authors: values::hex_list(&r.authors),
        exclude_authors: values::hex_list(&r.exclude_authors),
        relays: r.relays.to_vec(),
        platform: r.platform.to_owned(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        only_from_authors: r.only_from_authors,
        limit_mentions: r.limit_mentions,
    }
}

fn registration_from_row(row: RegistrationRow, device: Device) -> Registration {
    Registration {
        pubkey: row.pubkey,
        address: super::index::kept_address(&row.device_id, &device),
        device_id: row.device_id,
        platform: device.platform(),
        kinds: row.kinds.into(),
        p_tags: values::pubkeys(&row.p_tags),
        e_tags: values::tag_values(&row.e_tags),
        authors: values::pubkeys(&row.authors),
        exclude_authors: values::pubkeys(&row.exclude_authors),
        relays: row.relays.into(),
        created_at: row.created_at,
        updated_at: row.updated_at,
        only_from_authors: row.only_from_authors,
        limit_mentions: row.limit_mentions,
    }
}

fn stored_presence(row: &PresenceRow) -> Presence {
    Presence { online: row.online, last_heartbeat: row.last_heartbeat }
}
