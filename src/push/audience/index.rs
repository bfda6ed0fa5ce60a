//! The in-memory registration index the push matcher queries: registrations in slots, found by the `p` values and
//! by the `e`/`h` values they watch, by pubkey (with its presence; the registrations watching a pubkey through `p`
//! are in the same entry) and by device. Finding the devices for
//! an event costs a few hash look-ups per tag, however many devices are registered. The database is the source of
//! truth; this index is rebuilt from it at start and updated after every committed change.
//!
//! Memory is what a node's registrations cost (SCALING.md): each registration is held once, its lists as bytes
//! (`values`), and the maps hold slot numbers, not copies of its keys.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use super::values::TagValue;
use crate::protocol::VerifiedEvent;
use crate::protocol::event::GIFT_WRAP_KIND;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::push::device::Device;

/// One device of one pubkey, with what it wants to be woken for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub pubkey: Hash32,
    pub device_id: String,
    /// Where its notifications go (`Device::address`), held only when `address()` cannot rebuild it from the service
    /// and the id (a bundle-prefixed or upper-case APNs token, an embedded FCM, Web Push or NIP-97 id): for most
    /// registrations it is the id behind the service's name, and a second copy of the token would be a tenth of a
    /// registration's memory. The device itself is parsed from its id when a push is sent, for the same reason.
    pub address: Option<Box<str>>,
    /// The service (`Device::platform`).
    pub platform: &'static str,
    pub kinds: Box<[u16]>,
    /// Sorted, each once.
    pub p_tags: Box<[Hash32]>,
    pub e_tags: Box<[TagValue]>,
    /// Sorted, each once: looked up by binary search.
    pub authors: Box<[Hash32]>,
    pub exclude_authors: Box<[Hash32]>,
    pub relays: Box<[String]>,
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
            address: kept_address(device_id, &device),
            platform: device.platform(),
            kinds: Box::default(),
            p_tags: Box::default(),
            e_tags: Box::default(),
            authors: Box::default(),
            exclude_authors: Box::default(),
            relays: Box::default(),
            created_at: now,
            updated_at: now,
            only_from_authors: false,
            limit_mentions: false,
        }
    }

    /// Where its notifications go (`Device::address`): registrations with one address are one device to push.
    pub fn address(&self) -> std::borrow::Cow<'_, str> {
        match &self.address {
            Some(address) => address.as_ref().into(),
            None => format!("{}:{}", crate::push::device::address_prefix(self.platform), self.device_id).into(),
        }
    }

    /// NIP-97 devices have no presence: they are always treated as offline.
    pub fn has_presence(&self) -> bool {
        !crate::push::device::is_nip97(&self.device_id)
    }
}

/// `device`'s address, if `Registration::address` could not rebuild it from the service and `device_id`.
pub(super) fn kept_address(device_id: &str, device: &Device) -> Option<Box<str>> {
    let address = device.address();
    let prefix = crate::push::device::address_prefix(device.platform());
    let rebuilt = address.strip_prefix(prefix).and_then(|rest| rest.strip_prefix(':')) == Some(device_id);
    (!rebuilt).then(|| address.into())
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

/// Who is spared events that `p`-tag more than `max_mentions` pubkeys: those whose registration asks
/// (`limit_mentions`), or everyone (`[push] suppress_hellthreads`).
#[derive(Debug, Clone, Copy)]
pub struct Hellthreads {
    pub max_mentions: usize,
    pub for_everyone: bool,
}

/// Where a registration is kept.
type Slot = u32;

/// The slots under one key: most keys have one, which needs no allocation of its own. The list of several is
/// boxed so that every key costs 16 bytes, not 24 (four maps of a million keys each: SCALING.md).
#[derive(Debug, Clone)]
pub(super) enum Slots {
    One(Slot),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Slot>>),
}

const _: () = assert!(std::mem::size_of::<Slots>() == 16 && std::mem::size_of::<Option<Slots>>() == 16);

impl Slots {
    fn add(&mut self, slot: Slot) {
        match self {
            Self::One(one) if *one == slot => {}
            Self::One(one) => *self = Self::Many(Box::new(vec![*one, slot])),
            Self::Many(many) if !many.contains(&slot) => many.push(slot),
            Self::Many(_) => {}
        }
    }

    /// Removes the slot; true when none is left.
    fn remove(&mut self, slot: Slot) -> bool {
        match self {
            Self::One(one) => *one == slot,
            Self::Many(many) => {
                many.retain(|s| *s != slot);
                match many[..] {
                    [] => true,
                    [only] => {
                        *self = Self::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        let (one, many) = match self {
            Self::One(one) => (Some(*one), &[][..]),
            Self::Many(many) => (None, &many[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Slots>, key: K, slot: Slot) {
    map.entry(key).and_modify(|slots| slots.add(slot)).or_insert(Slots::One(slot));
}

fn remove<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Slots>, key: &K, slot: Slot) {
    if map.get_mut(key).is_some_and(|slots| slots.remove(slot)) {
        map.remove(key);
    }
}

/// What the index keeps of one pubkey, in one map entry: its registrations' slots (None once it has none left), the
/// registrations watching it through `p` (most registrations watch their own pubkey: one entry serves both, not
/// one in each of two maps of a million), its presence, and whether its lists (mute list, DM inbox relays) were
/// read from the store (kept here rather than as an entry of its own in the mute lists' map: a million registered
/// pubkeys, most without a list).
#[derive(Default)]
pub(super) struct OfPubkey {
    slots: Option<Slots>,
    watched_by: Option<Slots>,
    /// The presence's last heartbeat, in seconds, held in four bytes (until 2106; later times read as then): with
    /// the two flags the entry is 72 bytes, not 88, in a map of a million.
    heartbeat: u32,
    online: bool,
    lists_read: bool,
}

const _: () = assert!(std::mem::size_of::<OfPubkey>() == 40);

impl OfPubkey {
    fn presence(&self) -> Presence {
        Presence { online: self.online, last_heartbeat: i64::from(self.heartbeat) }
    }

    fn set_presence(&mut self, presence: Presence) {
        self.online = presence.online;
        self.heartbeat = presence.last_heartbeat.clamp(0, i64::from(u32::MAX)) as u32;
    }

    /// Holds nothing worth an entry.
    fn is_empty(&self) -> bool {
        self.slots.is_none() && self.watched_by.is_none() && self.presence() == Presence::default()
    }
}

/// Adds `slot` to the slots `at` (None: none yet).
fn add_to(at: &mut Option<Slots>, slot: Slot) {
    match at {
        Some(slots) => slots.add(slot),
        None => *at = Some(Slots::One(slot)),
    }
}

/// Takes `slot` from the slots `at`.
fn remove_from(at: &mut Option<Slots>, slot: Slot) {
    if at.as_mut().is_some_and(|slots| slots.remove(slot)) {
        *at = None;
    }
}

#[derive(Default)]
pub struct RegistrationIndex {
    slots: Vec<Option<Arc<Registration>>>,
    free: Vec<Slot>,
    by_pubkey: HashMap<Hash32, OfPubkey>,
    /// By a hash of the device id (the registrations hold the id itself, checked on each look-up).
    by_device: HashMap<u64, Slots>,
    by_e: HashMap<TagValue, Slots>,
    device_hasher: RandomState,
}

impl RegistrationIndex {
    pub fn insert(&mut self, registration: Registration) {
        let lists_read = self.lists_read(&registration.pubkey);
        self.remove(&registration.pubkey, &registration.device_id);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                Slot::try_from(self.slots.len() - 1).expect("fewer than 4 billion registrations")
            }
        };
        for p in &registration.p_tags {
            add_to(&mut self.by_pubkey.entry(*p).or_default().watched_by, slot);
        }
        for e in &registration.e_tags {
            add(&mut self.by_e, e.clone(), slot);
        }
        let of_pubkey = self.by_pubkey.entry(registration.pubkey).or_default();
        of_pubkey.lists_read |= lists_read;
        add_to(&mut of_pubkey.slots, slot);
        add(&mut self.by_device, self.device_hasher.hash_one(&registration.device_id), slot);
        self.slots[slot as usize] = Some(Arc::new(registration));
    }

    pub fn insert_all(&mut self, registrations: impl IntoIterator<Item = Registration>) {
        for registration in registrations {
            self.insert(registration);
        }
    }

    pub fn remove(&mut self, pubkey: &Hash32, device_id: &str) {
        let Some(slot) = self.slot_of(pubkey, device_id) else { return };
        let old = self.slots[slot as usize].take().expect("a slot found is filled");
        for p in &old.p_tags {
            self.change(p, |of| remove_from(&mut of.watched_by, slot));
        }
        for e in &old.e_tags {
            remove(&mut self.by_e, e, slot);
        }
        self.change(pubkey, |of| {
            remove_from(&mut of.slots, slot);
            // Lists are learnt only for registered pubkeys: once it is not, what was read may go stale.
            of.lists_read &= of.slots.is_some();
        });
        remove(&mut self.by_device, &self.device_hasher.hash_one(device_id), slot);
        self.free.push(slot);
    }

    /// Changes the pubkey's entry, if it has one, and drops it once it holds nothing.
    fn change(&mut self, pubkey: &Hash32, change: impl FnOnce(&mut OfPubkey)) {
        if let Some(of) = self.by_pubkey.get_mut(pubkey) {
            change(of);
            if of.is_empty() {
                self.by_pubkey.remove(pubkey);
            }
        }
    }

    fn slot_of(&self, pubkey: &Hash32, device_id: &str) -> Option<Slot> {
        self.slots_of(pubkey)?.iter().find(|slot| self.at(*slot).device_id == device_id)
    }

    fn slots_of(&self, pubkey: &Hash32) -> Option<&Slots> {
        self.by_pubkey.get(pubkey)?.slots.as_ref()
    }

    /// The pubkeys with registrations.
    pub(super) fn registered(&self) -> impl Iterator<Item = &Hash32> {
        self.by_pubkey.iter().filter(|(_, of)| of.slots.is_some()).map(|(pubkey, _)| pubkey)
    }

    fn at(&self, slot: Slot) -> &Arc<Registration> {
        self.slots[slot as usize].as_ref().expect("an indexed slot is filled")
    }

    /// The registrations of a device, by every pubkey.
    fn of_device<'a>(&'a self, device_id: &'a str) -> impl Iterator<Item = &'a Arc<Registration>> + 'a {
        let slots = self.by_device.get(&self.device_hasher.hash_one(device_id));
        slots.into_iter().flat_map(Slots::iter).map(|slot| self.at(slot)).filter(move |r| r.device_id == device_id)
    }

    /// Removes the device from every pubkey that registered it.
    pub fn remove_device(&mut self, device_id: &str) {
        let pubkeys: Vec<Hash32> = self.of_device(device_id).map(|r| r.pubkey).collect();
        for pubkey in pubkeys {
            self.remove(&pubkey, device_id);
        }
    }

    pub fn has_device(&self, device_id: &str) -> bool {
        self.of_device(device_id).next().is_some()
    }

    pub fn has_pubkey(&self, pubkey: &Hash32) -> bool {
        self.slots_of(pubkey).is_some()
    }

    pub fn pubkeys(&self) -> Vec<Hash32> {
        self.registered().copied().collect()
    }

    pub fn remove_pubkey(&mut self, pubkey: &Hash32) {
        for r in self.registrations_of(pubkey) {
            self.remove(pubkey, &r.device_id);
        }
    }

    pub fn set_presence(&mut self, pubkey: Hash32, presence: Presence) {
        match self.by_pubkey.contains_key(&pubkey) {
            true => self.change(&pubkey, |of| of.set_presence(presence)),
            false if presence == Presence::default() => {}
            false => self.by_pubkey.entry(pubkey).or_default().set_presence(presence),
        }
    }

    /// Records that the pubkey's lists were read from the store; false when the index keeps nothing of the pubkey
    /// (the caller remembers it elsewhere).
    pub fn mark_lists_read(&mut self, pubkey: &Hash32) -> bool {
        let Some(of) = self.by_pubkey.get_mut(pubkey).filter(|of| of.slots.is_some()) else { return false };
        of.lists_read = true;
        true
    }

    pub fn lists_read(&self, pubkey: &Hash32) -> bool {
        self.by_pubkey.get(pubkey).is_some_and(|of| of.lists_read)
    }

    pub fn presence(&self, pubkey: &Hash32) -> Presence {
        self.by_pubkey.get(pubkey).map(OfPubkey::presence).unwrap_or_default()
    }

    pub fn registrations_of(&self, pubkey: &Hash32) -> Vec<Arc<Registration>> {
        let slots = self.slots_of(pubkey);
        let mut found: Vec<Arc<Registration>> =
            slots.into_iter().flat_map(Slots::iter).map(|slot| self.at(slot).clone()).collect();
        found.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        found
    }

    fn all(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.slots.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The registrations `wanted` picks: (pubkey, device id, when last changed).
    pub fn devices_where(&self, wanted: impl Fn(&Registration) -> bool) -> Vec<(Hash32, String, i64)> {
        let picked = self.all().filter(|r| wanted(r));
        picked.map(|r| (r.pubkey, r.device_id.clone(), r.updated_at)).collect()
    }

    /// Registered devices per platform (apns, fcm, unifiedpush, webpush).
    pub fn platforms(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for registration in self.all() {
            *counts.entry(registration.platform).or_default() += 1;
        }
        counts
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let (mut via_p, mut via_e): (Vec<Slot>, Vec<Slot>) = (Vec::new(), Vec::new());
        let mut mentioned: Vec<&str> = Vec::new();
        for (letter, value) in event.indexed_tags() {
            match letter {
                'p' => {
                    mentioned.push(value);
                    let slots = parse_hash(value).and_then(|p| self.by_pubkey.get(&p)?.watched_by.as_ref());
                    via_p.extend(slots.into_iter().flat_map(Slots::iter));
                }
                'e' | 'h' => via_e.extend(self.by_e.get(&TagValue::new(value)).into_iter().flat_map(Slots::iter)),
                _ => {}
            }
        }
        via_e.sort_unstable();
        via_e.dedup();
        via_p.sort_unstable();
        via_p.dedup();
        via_p.retain(|slot| via_e.binary_search(slot).is_err());
        mentioned.sort_unstable();
        mentioned.dedup();
        // A hellthread reaches those who asked to be spared (or everyone, by the operator's choice) only through
        // the groups they watch, never through their `p` tag.
        let hellthread = mentioned.len() > rule.max_mentions;
        let spared = |r: &Registration| hellthread && (rule.for_everyone || r.limit_mentions);
        let author = event.pubkey();
        let kind = event.kind();
        let from_anyone = kind == GIFT_WRAP_KIND; // signed by a throwaway key, never a contact
        let mut found: Vec<Arc<Registration>> = via_e
            .iter()
            .map(|slot| self.at(*slot))
            .chain(via_p.iter().map(|slot| self.at(*slot)).filter(|r| !spared(r)))
            .filter(|r| {
                r.kinds.contains(&kind)
                    && r.pubkey != *author
                    && r.exclude_authors.binary_search(author).is_err()
                    && (!r.only_from_authors || from_anyone || r.authors.binary_search(author).is_ok())
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
            kinds: [1].into(),
            p_tags: [[pubkey; 32]].into(),
            relays: relays.into(),
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

    /// A pubkey's entry holds its registrations, those watching it and its presence; it goes once all are gone.
    #[test]
    fn a_pubkeys_entry_lives_while_anything_holds_it() {
        let mut index = RegistrationIndex::default();
        let watcher = Registration { p_tags: [[1; 32], [2; 32]].into(), ..registration(1, 1, &[]) };
        index.insert(watcher);
        index.set_presence([2; 32], Presence { online: true, last_heartbeat: 5 });
        assert!(index.mark_lists_read(&[1; 32]));
        assert!(!index.mark_lists_read(&[2; 32]), "watched, not registered");
        assert_eq!(index.by_pubkey.len(), 2);
        let author = Keys::generate();
        let event = VerifiedEvent::new(
            EventBuilder::new(Kind::from(1), "")
                .tags([Tag::parse(["p", &hex::encode([2; 32])]).unwrap()])
                .finalize(&author)
                .unwrap(),
        );
        assert_eq!(notified(&index, &event, false), [1]);
        index.remove(&[1; 32], &"01".repeat(32));
        assert_eq!(notified(&index, &event, false), Vec::<u8>::new());
        assert_eq!(index.by_pubkey.len(), 1, "pubkey 2's presence stays");
        assert_eq!(index.presence(&[2; 32]), Presence { online: true, last_heartbeat: 5 });
        index.set_presence([2; 32], Presence::default());
        assert!(index.by_pubkey.is_empty());
    }

    /// Whether the address is kept or rebuilt, it is the device's.
    #[test]
    fn a_registration_gives_its_devices_address() {
        let bundles = ["com.example.app".to_owned()];
        let token = "a1b2".repeat(16);
        let ids = [
            token.clone(),
            token.to_uppercase(),
            format!("com.example.app{token}"),
            format!("fcm-token:{}", "x".repeat(100)),
            "Embedded-FCM/FCM?instance=abc&token=def".to_owned(),
            "https://up.example/push/1".to_owned(),
            format!("nip97:apple:{token}"),
        ];
        for id in ids {
            let device = Device::parse_stored(&id, &bundles, false).unwrap();
            let registration = Registration::new([1; 32], &id, device.clone(), 0);
            assert_eq!(registration.address(), device.address(), "{id}");
            let rebuilt = registration.address.is_none();
            assert_eq!(
                rebuilt,
                [token.as_str(), "https://up.example/push/1"].contains(&id.as_str()) || id.starts_with("fcm"),
                "{id}"
            );
        }
    }

    #[test]
    fn hellthreads_spare_who_asked_except_through_their_groups() {
        let mut index = RegistrationIndex::default();
        index.insert(registration(1, 1, &[]));
        let mut spared = registration(2, 2, &[]);
        spared.limit_mentions = true;
        spared.kinds = [1, 9].into();
        spared.e_tags = [TagValue::new("group")].into();
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
        picky.kinds = [1, 1059].into();
        picky.only_from_authors = true;
        picky.authors = [friend.public_key().to_bytes()].into();
        index.insert(picky);
        assert_eq!(notified(&index, &event(&friend, 1, 1, None), false), vec![1]);
        assert!(notified(&index, &event(&stranger, 1, 1, None), false).is_empty());
        assert_eq!(notified(&index, &event(&stranger, 1059, 1, None), false), vec![1], "a wrap's signer is no contact");
    }
}
