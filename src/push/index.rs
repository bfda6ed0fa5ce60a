//! The in-memory registration index the push matcher queries: registrations keyed by the `p` values and by the
//! `e`/`h` values they watch, plus every pubkey's presence. Finding the devices for an event costs a few hash
//! look-ups per tag, however many devices are registered. The database is the source of truth; this index is
//! rebuilt from it at start and updated after every committed change.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::device::Device;
use super::inbox::{INBOX_KINDS, INBOX_RELAYS_KIND};
use super::mutes::MUTE_LIST_KIND;
use crate::protocol::filter::Hash32;
use crate::protocol::{Filter, VerifiedEvent};

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
        !super::device::is_nip97(&self.device_id)
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

type Key = (Hash32, String);

/// The kind of NIP-59 gift wraps.
const GIFT_WRAP_KIND: u16 = 1059;

/// Who is spared events that `p`-tag more than `max_mentions` pubkeys: those whose registration asks
/// (`limit_mentions`), or everyone (`[push] suppress_hellthreads`).
#[derive(Debug, Clone, Copy)]
pub struct Hellthreads {
    pub max_mentions: usize,
    pub for_everyone: bool,
}

/// What the registrations watching one relay want there.
#[derive(Default)]
struct Wanted {
    kinds: BTreeSet<u16>,
    p: BTreeSet<String>,
    e: BTreeSet<String>,
    pubkeys: BTreeSet<Hash32>,
}

impl Wanted {
    fn add(&mut self, r: &Registration, kinds: &[u16], p: &[String]) {
        self.add_for(r.pubkey, kinds, p, &r.e_tags);
    }

    fn add_for(&mut self, pubkey: Hash32, kinds: &[u16], p: &[String], e: &[String]) {
        self.kinds.extend(kinds);
        self.p.extend(p.iter().cloned());
        self.e.extend(e.iter().cloned());
        self.pubkeys.insert(pubkey);
    }
}

/// The relays one pubkey is watched on, at most `max`.
struct RelaySlots {
    taken: Vec<String>,
    max: usize,
}

impl RelaySlots {
    /// Whether `relay` is (or now becomes) one of the pubkey's watched relays.
    fn take(&mut self, relay: &String) -> bool {
        if self.taken.contains(relay) {
            return true;
        }
        if self.taken.len() >= self.max {
            return false;
        }
        self.taken.push(relay.clone());
        true
    }
}

/// How much the watch plan may ask for (`[upstream]`).
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits {
    /// Values per filter (`max_values_per_filter`).
    pub max_values: usize,
    /// Relays watched for one pubkey (`max_relays_per_pubkey`).
    pub per_pubkey: usize,
    /// Relays in all (`max_connections`).
    pub relays: usize,
}

#[derive(Default)]
pub struct RegistrationIndex {
    registrations: HashMap<Key, Arc<Registration>>,
    by_pubkey: HashMap<Hash32, HashSet<String>>,
    by_device: HashMap<String, HashSet<Hash32>>,
    by_p: HashMap<String, HashSet<Key>>,
    by_e: HashMap<String, HashSet<Key>>,
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

    /// Per relay named in the registrations of offline pubkeys, the filters that find their events there: the
    /// union of their kinds with their `#p` values, and with their `#e` values as `e` and as `h` tags, and their
    /// lists (mute lists, kind 10000, and DM inbox relays, kind 10050, by those pubkeys), in chunks of at most
    /// `limits.max_values` values. A pubkey's DM inbox relays (`inbox`) are watched too, for the gift-wrap kinds
    /// its registrations want, `p`-tagging it. A pubkey is watched on its first `limits.per_pubkey` relays (its
    /// devices' in order, then its inbox relays), and of all relays the `limits.relays` most pubkeys want are kept:
    /// one registration naming many dead relays cannot take the slots everyone else's watching needs.
    pub fn watch_plan(
        &self,
        now: i64,
        timeout_secs: i64,
        limits: PlanLimits,
        inbox: &dyn Fn(&Hash32) -> Vec<String>,
    ) -> BTreeMap<String, Vec<Filter>> {
        let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
        for (pubkey, devices) in &self.by_pubkey {
            let online = self.presence(pubkey).is_online(now, timeout_secs);
            let mut devices: Vec<&String> = devices.iter().collect();
            devices.sort();
            let registrations: Vec<&Registration> = devices
                .into_iter()
                .map(|device_id| &*self.registrations[&(*pubkey, device_id.clone())])
                .filter(|r| !r.kinds.is_empty() && (!online || !r.has_presence()))
                .collect();
            let mut slots = RelaySlots { taken: Vec::new(), max: limits.per_pubkey };
            for r in &registrations {
                for relay in r.relays.iter().filter(|relay| slots.take(relay)) {
                    wanted.entry(relay.clone()).or_default().add(r, &r.kinds, &r.p_tags);
                }
            }
            let inbox_relays = inbox(pubkey);
            for r in &registrations {
                let kinds: Vec<u16> = r.kinds.iter().copied().filter(|k| INBOX_KINDS.contains(k)).collect();
                if kinds.is_empty() {
                    continue;
                }
                let me = [hex::encode(pubkey)];
                for relay in inbox_relays.iter().filter(|relay| slots.take(relay)) {
                    wanted.entry(relay.clone()).or_default().add_for(*pubkey, &kinds, &me, &[]);
                }
            }
        }
        if wanted.len() > limits.relays {
            let mut by_demand: Vec<(String, usize)> =
                wanted.iter().map(|(url, w)| (url.clone(), w.pubkeys.len())).collect();
            by_demand.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let kept: HashSet<String> = by_demand.into_iter().take(limits.relays).map(|(url, _)| url).collect();
            wanted.retain(|url, _| kept.contains(url));
        }
        let max_values = limits.max_values.max(1);
        wanted
            .into_iter()
            .map(|(relay, w)| {
                let kinds: Vec<u16> = w.kinds.into_iter().collect();
                let p: Vec<String> = w.p.into_iter().collect();
                let e: Vec<String> = w.e.into_iter().collect();
                let filter = |letter: char, values: &[String]| Filter {
                    kinds: Some(kinds.clone()),
                    tags: BTreeMap::from([(letter, values.to_vec())]),
                    ..Filter::default()
                };
                let mut filters: Vec<Filter> = p.chunks(max_values).map(|chunk| filter('p', chunk)).collect();
                for chunk in e.chunks(max_values) {
                    filters.push(filter('e', chunk));
                    filters.push(filter('h', chunk));
                }
                let pubkeys: Vec<Hash32> = w.pubkeys.into_iter().collect();
                filters.extend(pubkeys.chunks(max_values).map(|chunk| Filter {
                    authors: Some(chunk.to_vec()),
                    kinds: Some(vec![MUTE_LIST_KIND, INBOX_RELAYS_KIND]),
                    ..Filter::default()
                }));
                (relay, filters)
            })
            .collect()
    }

    /// The registrations an event should notify now (spec: Matching): a `p` tag in its `#p` or an `e`/`h` tag in
    /// its `#e`, its kind in `kinds`, an author other than the pubkey itself and not excluded, and the pubkey
    /// offline.
    pub fn matching(
        &self,
        event: &VerifiedEvent,
        now: i64,
        timeout_secs: i64,
        rule: Hellthreads,
    ) -> Vec<Arc<Registration>> {
        let (mut via_p, mut via_e): (HashSet<&Key>, HashSet<&Key>) = (HashSet::new(), HashSet::new());
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
mod tests {
    use super::*;
    use nostr::prelude::{EventBuilder, FinalizeEvent, Keys, Kind, Tag};

    fn registration(pubkey: u8, device: u8, relays: &[String]) -> Registration {
        let device_id = format!("{device:02x}").repeat(32);
        let device = Device::parse(&device_id, &[], false).unwrap();
        Registration {
            kinds: vec![1],
            p_tags: vec![hex::encode([pubkey; 32])],
            relays: relays.to_vec(),
            ..Registration::new([pubkey; 32], &device_id, device, 0)
        }
    }

    #[test]
    fn one_pubkey_naming_many_relays_cannot_take_everyones_slots() {
        let mut index = RegistrationIndex::default();
        let dead: Vec<String> = (0..40).map(|n| format!("wss://dead{n:02}.example")).collect();
        // Mallory's two devices name 40 relays between them.
        index.insert(registration(1, 1, &dead[..20]));
        index.insert(registration(1, 2, &dead[20..]));
        for (pubkey, relay) in [(2, "wss://a.example"), (3, "wss://a.example"), (4, "wss://b.example")] {
            index.insert(registration(pubkey, pubkey, &[relay.to_owned()]));
        }
        let plan = |per_pubkey, relays| {
            let limits = PlanLimits { max_values: 100, per_pubkey, relays };
            index.watch_plan(0, 180, limits, &|_| Vec::new()).into_keys().collect::<Vec<_>>()
        };
        let all = plan(10, 100);
        assert_eq!(all.len(), 12, "{all:?}");
        assert!(all.iter().filter(|url| url.contains("dead")).all(|url| dead[..10].contains(url)), "{all:?}");
        let few = plan(10, 4);
        assert!(few.contains(&"wss://a.example".to_owned()) && few.contains(&"wss://b.example".to_owned()), "{few:?}");
        assert_eq!(few.len(), 4);
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
