//! Differential test: thousands of random events and hundreds of random REQs; the relay's answers must equal those
//! of a plain matcher written here, replacement rules, ordering and limits included.

use std::collections::{HashMap, HashSet};

use crate::common::*;
use nostr::prelude::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

const EVENTS: usize = 3000;
const REQS: usize = 300;
const DEFAULT_LIMIT: u64 = 40;
const MAX_LIMIT: u64 = 120;
const KINDS: &[u16] = &[1, 4, 7, 1111, 9735, 0, 10002, 30023];
const WORDS: &[&str] = &["nostr", "rust", "push", "relay", "'; DROP TABLE tags; --", "日本"];

async fn relay_answers_equal_a_plain_matcher() {
    let seed = std::env::var("DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261125);
    let mut rng = StdRng::seed_from_u64(seed);
    let relay = TestRelay::start_with(|c| {
        c.limits.default_limit = DEFAULT_LIMIT;
        c.limits.max_limit = MAX_LIMIT;
        c.limits.max_filters = 4;
        // Query semantics only: no read restrictions, no rate limits, nothing stored but what the test publishes
        // (Marmot's inbox list of the push key is the relay's own event).
        c.auth.read_restricted_kinds = vec![];
        c.push.marmot.enabled = false;
        c.limits.pubkey_events_per_minute = 0;
        c.limits.reqs_per_minute = 0;
    })
    .await;

    let keys: Vec<Keys> = (0..8).map(|_| Keys::generate()).collect();
    let base = now() - 100_000;
    let mut events: Vec<Event> = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let author = keys.choose(&mut rng).unwrap();
        let kind = *KINDS.choose(&mut rng).unwrap();
        let mut tags: Vec<Vec<String>> = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            match rng.random_range(0..3) {
                0 => tags.push(vec!["t".into(), WORDS.choose(&mut rng).unwrap().to_string()]),
                1 => tags.push(vec!["p".into(), keys.choose(&mut rng).unwrap().public_key().to_hex()]),
                _ => {
                    if let Some(target) = events.choose(&mut rng) {
                        tags.push(vec!["e".into(), target.id.to_hex()]);
                    }
                }
            }
        }
        if kind == 30023 && rng.random_bool(0.8) {
            tags.push(vec!["d".into(), ["a", "b", "c"].choose(&mut rng).unwrap().to_string()]);
        }
        // A narrow time range makes equal created_at common, so ties are exercised.
        let created_at = base + rng.random_range(0..400);
        let tag_refs: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
        let tag_slices: Vec<&[&str]> = tag_refs.iter().map(Vec::as_slice).collect();
        events.push(sign(author, kind, &format!("c{}", rng.random::<u32>()), &tag_slices, created_at));
    }

    let mut client = relay.client().await;
    for event in &events {
        client.send(json!(["EVENT", event])).await;
    }
    for _ in &events {
        assert_eq!(client.recv().await[0], "OK");
    }
    let model = Model::from(&events);

    let authors: Vec<String> = keys.iter().map(|k| k.public_key().to_hex()).collect();
    for round in 0..REQS {
        let filters: Vec<Value> =
            (0..rng.random_range(1..=3)).map(|_| random_filter(&mut rng, &events, &authors, base)).collect();
        let sub_id = format!("r{round}");
        let got = client.req_ids(&sub_id, &filters).await;
        client.close(&sub_id).await;
        let expected = model.answer(&filters);
        assert_eq!(got, expected, "seed {seed}, round {round}, filters {}", Value::Array(filters.clone()));
    }
}

fn random_filter(rng: &mut StdRng, events: &[Event], authors: &[String], base: u64) -> Value {
    let mut filter = serde_json::Map::new();
    let pick = |rng: &mut StdRng, values: Vec<Value>| -> Value {
        let n = rng.random_range(1..=3);
        Value::Array(values.sample(rng, n).cloned().collect())
    };
    let strings = |values: &[String]| values.iter().map(|v| json!(v)).collect::<Vec<_>>();
    if rng.random_bool(0.15) {
        let mut ids: Vec<String> = (0..4).map(|_| events.choose(rng).unwrap().id.to_hex()).collect();
        ids.push(format!("{:064x}", rng.random::<u64>()));
        filter.insert("ids".into(), json!(ids));
    }
    if rng.random_bool(0.4) {
        filter.insert("authors".into(), pick(rng, strings(authors)));
    }
    if rng.random_bool(0.5) {
        filter.insert("kinds".into(), pick(rng, KINDS.iter().map(|k| json!(k)).collect()));
    }
    if rng.random_bool(0.3) {
        filter.insert("#t".into(), pick(rng, WORDS.iter().map(|w| json!(w)).collect()));
    }
    if rng.random_bool(0.2) {
        filter.insert("#p".into(), pick(rng, strings(authors)));
    }
    if rng.random_bool(0.1) {
        filter.insert("#e".into(), pick(rng, events.iter().take(300).map(|e| json!(e.id.to_hex())).collect()));
    }
    if rng.random_bool(0.3) {
        filter.insert("since".into(), json!(base + rng.random_range(0..400)));
    }
    if rng.random_bool(0.3) {
        filter.insert("until".into(), json!(base + rng.random_range(0..400)));
    }
    match rng.random_range(0..4) {
        0 => {}
        1 => {
            filter.insert("limit".into(), json!(rng.random_range(0..10)));
        }
        2 => {
            filter.insert("limit".into(), json!(rng.random_range(0..60)));
        }
        _ => {
            filter.insert("limit".into(), json!(rng.random_range(100..1000)));
        }
    }
    Value::Object(filter)
}

/// The stored set as NIP-01 defines it, kept by brute force.
struct Model {
    stored: Vec<Event>,
}

impl Model {
    fn from(published: &[Event]) -> Self {
        let mut regular = Vec::new();
        let mut newest: HashMap<(PublicKey, u16, String), Event> = HashMap::new();
        let mut seen = HashSet::new();
        for event in published {
            if !seen.insert(event.id) {
                continue;
            }
            let kind = event.kind.as_u16();
            let key = match kind {
                0 | 3 | 10_000..=19_999 => Some(String::new()),
                30_000..=39_999 => {
                    Some(event.tags.iter().find(|t| t.kind() == "d").and_then(|t| t.content()).unwrap_or("").to_owned())
                }
                _ => None,
            };
            match key {
                None => regular.push(event.clone()),
                Some(d) => {
                    let slot = newest.entry((event.pubkey, kind, d)).or_insert_with(|| event.clone());
                    let wins =
                        (event.created_at, std::cmp::Reverse(event.id)) > (slot.created_at, std::cmp::Reverse(slot.id));
                    if wins {
                        *slot = event.clone();
                    }
                }
            }
        }
        regular.extend(newest.into_values());
        Self { stored: regular }
    }

    fn answer(&self, filters: &[Value]) -> Vec<String> {
        let mut chosen: Vec<&Event> = Vec::new();
        for filter in filters {
            let mut matching: Vec<&Event> = self.stored.iter().filter(|e| matches(filter, e)).collect();
            matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            let limit = filter.get("limit").and_then(Value::as_u64).unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
            chosen.extend(matching.into_iter().take(limit as usize));
        }
        chosen.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        chosen.dedup_by_key(|e| e.id);
        chosen.iter().map(|e| e.id.to_hex()).collect()
    }
}

fn matches(filter: &Value, event: &Event) -> bool {
    let listed = |key: &str, value: &Value| filter.get(key).is_none_or(|list| list.as_array().unwrap().contains(value));
    let created_at = event.created_at.as_secs();
    listed("ids", &json!(event.id.to_hex()))
        && listed("authors", &json!(event.pubkey.to_hex()))
        && listed("kinds", &json!(event.kind.as_u16()))
        && filter.get("since").is_none_or(|s| created_at >= s.as_u64().unwrap())
        && filter.get("until").is_none_or(|u| created_at <= u.as_u64().unwrap())
        && ["t", "p", "e"].iter().all(|letter| {
            filter.get(format!("#{letter}")).is_none_or(|values| {
                let values = values.as_array().unwrap();
                event
                    .tags
                    .iter()
                    .any(|t| t.kind() == *letter && t.content().is_some_and(|v| values.contains(&json!(v))))
            })
        })
}

crate::on_both_backends!(relay_answers_equal_a_plain_matcher,);
