//! The watch plan: per remote relay, the filters the upstream watchers subscribe with, from the registrations of
//! offline pubkeys, in three steps: gather what each relay is wanted for (each pubkey on at most
//! `limits.per_pubkey` relays), cap the relays to the `limits.relays` most pubkeys want, and chunk each relay's
//! values into filters of at most `limits.max_values` values.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::inbox::{INBOX_KINDS, INBOX_RELAYS_KIND};
use super::index::{Registration, RegistrationIndex};
use super::mutes::MUTE_LIST_KIND;
use super::values::TagValue;
use crate::protocol::Filter;
use crate::protocol::filter::Hash32;

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

/// What the registrations watching one relay want there.
#[derive(Default)]
struct Wanted {
    kinds: BTreeSet<u16>,
    p: BTreeSet<String>,
    e: BTreeSet<String>,
    pubkeys: BTreeSet<Hash32>,
}

impl Wanted {
    fn add(&mut self, r: &Registration) {
        self.add_for(r.pubkey, &r.kinds, &r.p_tags, &r.e_tags);
    }

    fn add_for(&mut self, pubkey: Hash32, kinds: &[u16], p: &[Hash32], e: &[TagValue]) {
        self.kinds.extend(kinds);
        self.p.extend(p.iter().map(hex::encode));
        self.e.extend(e.iter().map(TagValue::to_string));
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

impl RegistrationIndex {
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
        let mut wanted = self.gather(now, timeout_secs, limits.per_pubkey, inbox);
        cap(&mut wanted, limits.relays);
        let max_values = limits.max_values.max(1);
        wanted.into_iter().map(|(relay, w)| (relay, chunk(w, max_values))).collect()
    }

    /// What each relay is wanted for, by offline pubkeys' registrations and their inbox relays.
    fn gather(
        &self,
        now: i64,
        timeout_secs: i64,
        per_pubkey: usize,
        inbox: &dyn Fn(&Hash32) -> Vec<String>,
    ) -> BTreeMap<String, Wanted> {
        let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
        for pubkey in self.registered() {
            let online = self.presence(pubkey).is_online(now, timeout_secs);
            let mut registrations = self.registrations_of(pubkey);
            registrations.retain(|r| !r.kinds.is_empty() && (!online || !r.has_presence()));
            let mut slots = RelaySlots { taken: Vec::new(), max: per_pubkey };
            for r in &registrations {
                for relay in r.relays.iter().filter(|relay| slots.take(relay)) {
                    wanted.entry(relay.clone()).or_default().add(r);
                }
            }
            let inbox_relays = inbox(pubkey);
            for r in &registrations {
                let kinds: Vec<u16> = r.kinds.iter().copied().filter(|k| INBOX_KINDS.contains(k)).collect();
                if kinds.is_empty() {
                    continue;
                }
                for relay in inbox_relays.iter().filter(|relay| slots.take(relay)) {
                    wanted.entry(relay.clone()).or_default().add_for(*pubkey, &kinds, &[*pubkey], &[]);
                }
            }
        }
        wanted
    }
}

/// Keeps the `max` relays most pubkeys want (ties by URL).
fn cap(wanted: &mut BTreeMap<String, Wanted>, max: usize) {
    if wanted.len() <= max {
        return;
    }
    let mut by_demand: Vec<(String, usize)> = wanted.iter().map(|(url, w)| (url.clone(), w.pubkeys.len())).collect();
    by_demand.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kept: HashSet<String> = by_demand.into_iter().take(max).map(|(url, _)| url).collect();
    wanted.retain(|url, _| kept.contains(url));
}

/// One relay's filters: its kinds with its `#p` values, with its `#e` values as `e` and as `h`, and its pubkeys'
/// lists, each at most `max_values` values.
fn chunk(w: Wanted, max_values: usize) -> Vec<Filter> {
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
    filters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::audience::index::tests::registration;

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
}
