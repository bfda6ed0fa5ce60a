//! The in-memory registration index the push matcher queries: registrations keyed by the `p` values and by the
//! `e`/`h` values they watch, plus every pubkey's presence. Finding the devices for an event costs a few hash
//! look-ups per tag, however many devices are registered. The database is the source of truth; this index is
//! rebuilt from it at start and updated after every committed change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::protocol::VerifiedEvent;
use crate::protocol::event::GIFT_WRAP_KIND;
use crate::protocol::filter::Hash32;
use crate::push::device::Device;

/// One device of one pubkey, with what it wants to be woken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub pubkey: Hash32,
    pub device_id: String,
    pub device: Device,
    pub kinds: Vec<u16>,
    pub p_tags: Vec<String>,
    pub e_tags: Vec<String>,
    pub authors: Vec<String>,
    pub exclude_authors: Vec<String>,
    pub relays: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Notify only for events by `authors` (gift wraps excepted).
    pub only_from_authors: bool,
    /// Skip hellthreads (YakiHonne's `enableMaxMentions`).
    pub limit_mentions: bool,
}

impl Registration {
    /// A device new to the pubkey, wanting nothing yet.
    pub fn new(pubkey: Hash32, device_id: &str, device: Device, now: i64) -> Self {
        Self {
            pubkey,
            device_id: device_id.to_owned(),
            device,
            kinds: Vec::new(),
            p_tags: Vec::new(),
            e_tags: Vec::new(),
            authors: Vec::new(),
            exclude_authors: Vec::new(),
            relays: Vec::new(),
            created_at: now,
            updated_at: now,
            only_from_authors: false,
            limit_mentions: false,
        }
    }

    /// NIP-97 devices have no presence: they are always treated as offline.
    pub fn has_presence(&self) -> bool {
        !crate::push::device::is_nip97(&self.device_id)
    }
}

/// Presence belongs to the pubkey (heartbeats carry no device id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// The last word was `online: 1` (and not a later `online: 0`).
    pub online: bool,
    /// When that last `online: 1` arrived (relay time, seconds).
    pub last_heartbeat: i64,
}

impl Presence {
    /// Online from the last heartbeat until `online: 0` or until the timeout passes without a heartbeat.
    pub fn is_online(&self, now: i64, timeout_secs: i64) -> bool {
        self.online && now < self.last_heartbeat.saturating_add(timeout_secs)
    }
}

/// A registration's key: its pubkey and its device id.
pub(super) type RegistrationKey = (Hash32, String);

/// Who is spared events that `p`-tag more than `max_mentions` pubkeys: those whose registration asks
/// (`limit_mentions`), or everyone (`[push] suppress_hellthreads`).
#[derive(Debug, Clone, Copy)]
pub struct Hellthreads {
    pub max_mentions: usize,
    pub for_everyone: bool,
}

#[derive(Default)]
pub struct RegistrationIndex {
    pub(super) registrations: HashMap<RegistrationKey, Arc<Registration>>,
    pub(super) by_pubkey: HashMap<Hash32, HashSet<String>>,
    by_device: HashMap<String, HashSet<Hash32>>,
    by_p: HashMap<String, HashSet<RegistrationKey>>,
    by_e: HashMap<String, HashSet<RegistrationKey>>,
    presence: HashMap<Hash32, Presence>,
}

impl RegistrationIndex {
    pub fn insert(&mut self, registration: Registration) {
        let key = (registration.pubkey, registration.device_id.clone());
        self.remove(&key.0, &key.1);
        for p in &registration.p_tags {
            self.by_p.entry(p.clone()).or_default().insert(key.clone());
        }
        for e in &registration.e_tags {
            self.by_e.entry(e.clone()).or_default().insert(key.clone());
        }
        self.by_pubkey.entry(key.0).or_default().insert(key.1.clone());
        self.by_device.entry(key.1.clone()).or_default().insert(key.0);
        self.registrations.insert(key, Arc::new(registration));
    }

    pub fn remove(&mut self, pubkey: &Hash32, device_id: &str) {
        let key = (*pubkey, device_id.to_owned());
        let Some(old) = self.registrations.remove(&key) else { return };
        for (map, values) in [(&mut self.by_p, &old.p_tags), (&mut self.by_e, &old.e_tags)] {
            for value in values {
                if let Some(keys) = map.get_mut(value) {
                    keys.remove(&key);
                    if keys.is_empty() {
                        map.remove(value);
                    }
                }
            }
        }
        if let Some(devices) = self.by_pubkey.get_mut(pubkey) {
            devices.remove(device_id);
            if devices.is_empty() {
                self.by_pubkey.remove(pubkey);
            }
        }
        if let Some(pubkeys) = self.by_device.get_mut(device_id) {
            pubkeys.remove(pubkey);
            if pubkeys.is_empty() {
                self.by_device.remove(device_id);
            }
        }
    }

    /// Removes the device from every pubkey that registered it.
    pub fn remove_device(&mut self, device_id: &str) {
        for pubkey in self.by_device.get(device_id).cloned().unwrap_or_default() {
            self.remove(&pubkey, device_id);
        }
    }

    pub fn has_device(&self, device_id: &str) -> bool {
        self.by_device.contains_key(device_id)
    }

    pub fn has_pubkey(&self, pubkey: &Hash32) -> bool {
        self.by_pubkey.contains_key(pubkey)
    }

    pub fn pubkeys(&self) -> Vec<Hash32> {
        self.by_pubkey.keys().copied().collect()
    }

    pub fn remove_pubkey(&mut self, pubkey: &Hash32) {
        for device_id in self.by_pubkey.get(pubkey).cloned().unwrap_or_default() {
            self.remove(pubkey, &device_id);
        }
    }

    pub fn set_presence(&mut self, pubkey: Hash32, presence: Presence) {
        self.presence.insert(pubkey, presence);
    }

    pub fn presence(&self, pubkey: &Hash32) -> Presence {
        self.presence.get(pubkey).copied().unwrap_or_default()
    }

    pub fn registrations_of(&self, pubkey: &Hash32) -> Vec<Arc<Registration>> {
        let mut found: Vec<Arc<Registration>> = self
            .by_pubkey
            .get(pubkey)
            .into_iter()
            .flatten()
            .map(|device_id| self.registrations[&(*pubkey, device_id.clone())].clone())
            .collect();
        found.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        found
    }

    pub fn len(&self) -> usize {
        self.registrations.len()
    }

    /// The registrations `wanted` picks: (pubkey, device id, when last changed).
    pub fn devices_where(&self, wanted: impl Fn(&Registration) -> bool) -> Vec<(Hash32, String, i64)> {
        let picked = self.registrations.values().filter(|r| wanted(r));
        picked.map(|r| (r.pubkey, r.device_id.clone(), r.updated_at)).collect()
    }

    /// Registered devices per platform (apns, fcm, unifiedpush, webpush).
    pub fn platforms(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for registration in self.registrations.values() {
            *counts.entry(registration.device.platform()).or_default() += 1;
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty()
    }

    /// The registrations an event should notify now (README, "Push delivery"): a `p` tag in its `#p` or an `e`/`h` tag in
    /// its `#e`, its kind in `kinds`, an author other than the pubkey itself and not excluded, and the pubkey
    /// offline.
    pub fn matching(
        &self,
        event: &VerifiedEvent,
        now: i64,
        timeout_secs: i64,
        rule: Hellthreads,
    ) -> Vec<Arc<Registration>> {
        let (mut via_p, mut via_e): (HashSet<&RegistrationKey>, HashSet<&RegistrationKey>) =
            (HashSet::new(), HashSet::new());
        let mut mentioned: HashSet<&str> = HashSet::new();
        for (letter, value) in event.indexed_tags() {
            match letter {
                'p' => {
                    mentioned.insert(value);
                    via_p.extend(self.by_p.get(value).into_iter().flatten());
                }
                'e' | 'h' => via_e.extend(self.by_e.get(value).into_iter().flatten()),
                _ => {}
            }
        }
        // A hellthread reaches those who asked to be spared (or everyone, by the operator's choice) only through
        // the groups they watch, never through their `p` tag.
        let hellthread = mentioned.len() > rule.max_mentions;
        let spared = |r: &Registration| hellthread && (rule.for_everyone || r.limit_mentions);
        let author = event.event.pubkey.to_hex();
        let kind = event.kind();
        let from_anyone = kind == GIFT_WRAP_KIND; // signed by a throwaway key, never a contact
        let mut found: Vec<Arc<Registration>> = via_e
            .iter()
            .map(|key| &self.registrations[*key])
            .chain(via_p.difference(&via_e).map(|key| &self.registrations[*key]).filter(|r| !spared(r)))
            .filter(|r| {
                r.kinds.contains(&kind)
                    && r.pubkey != *event.pubkey()
                    && !r.exclude_authors.contains(&author)
                    && (!r.only_from_authors || from_anyone || r.authors.contains(&author))
                    && !(r.has_presence() && self.presence(&r.pubkey).is_online(now, timeout_secs))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.pubkey, &a.device_id).cmp(&(b.pubkey, &b.device_id)));
        found
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use nostr::prelude::{EventBuilder, FinalizeEvent, Keys, Kind, Tag};

    pub(in crate::push::audience) fn registration(pubkey: u8, device: u8, relays: &[String]) -> Registration {
        let device_id = format!("{device:02x}").repeat(32);
        let device = Device::parse(&device_id, &[], false).unwrap();
        Registration {
            kinds: vec![1],
            p_tags: vec![hex::encode([pubkey; 32])],
            relays: relays.to_vec(),
            ..Registration::new([pubkey; 32], &device_id, device, 0)
        }
    }

    /// An event by `author` of `kind`, `p`-tagging `mentions` pubkeys (1, 2, ...) and `h`-tagging `group`.
    fn event(author: &Keys, kind: u16, mentions: u8, group: Option<&str>) -> VerifiedEvent {
        let mut tags: Vec<Tag> = (1..=mentions).map(|n| Tag::parse(["p", &hex::encode([n; 32])]).unwrap()).collect();
        tags.extend(group.map(|g| Tag::parse(["h", g]).unwrap()));
        let event = EventBuilder::new(Kind::from(kind), "").tags(tags).finalize(author).unwrap();
        VerifiedEvent::new(event)
    }

    fn notified(index: &RegistrationIndex, event: &VerifiedEvent, for_everyone: bool) -> Vec<u8> {
        let rule = Hellthreads { max_mentions: 3, for_everyone };
        index.matching(event, 0, 180, rule).iter().map(|r| r.pubkey[0]).collect()
    }

    #[test]
    fn hellthreads_spare_who_asked_except_through_their_groups() {
        let mut index = RegistrationIndex::default();
        index.insert(registration(1, 1, &[]));
        let mut spared = registration(2, 2, &[]);
        spared.limit_mentions = true;
        spared.kinds = vec![1, 9];
        spared.e_tags = vec!["group".into()];
        index.insert(spared);
        let author = Keys::generate();
        assert_eq!(notified(&index, &event(&author, 1, 3, None), false), vec![1, 2], "three mentions: no hellthread");
        assert_eq!(notified(&index, &event(&author, 1, 4, None), false), vec![1], "only who asked is spared");
        assert!(notified(&index, &event(&author, 1, 4, None), true).is_empty(), "the operator spares everyone");
        assert_eq!(notified(&index, &event(&author, 9, 4, Some("group")), true), vec![2], "groups still notify");
    }

    #[test]
    fn only_from_authors_lets_gift_wraps_through() {
        let mut index = RegistrationIndex::default();
        let (friend, stranger) = (Keys::generate(), Keys::generate());
        let mut picky = registration(1, 1, &[]);
        picky.kinds = vec![1, 1059];
        picky.only_from_authors = true;
        picky.authors = vec![friend.public_key().to_hex()];
        index.insert(picky);
        assert_eq!(notified(&index, &event(&friend, 1, 1, None), false), vec![1]);
        assert!(notified(&index, &event(&stranger, 1, 1, None), false).is_empty());
        assert_eq!(notified(&index, &event(&stranger, 1059, 1, None), false), vec![1], "a wrap's signer is no contact");
    }
}
