//! The SQL behind the common REQ filters, on a SQLite store of 100,000 events: an author's notes, a hashtag's
//! newest, a `#p` mention list, ten ids. Each is one `query_filter` call, as the relay makes per filter.
//! `cargo bench --bench store_queries`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use nostr::prelude::*;
use pushrelay::config::DatabaseConfig;
use pushrelay::protocol::{Filter, SharedEvent, VerifiedEvent};
use pushrelay::store::{EventStore, Visibility};
use serde_json::json;

const EVENTS: usize = 100_000;
const AUTHORS: usize = 2_000;

fn store_queries(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = DatabaseConfig {
        url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        ..DatabaseConfig::default()
    };
    let store: Arc<dyn EventStore> =
        runtime.block_on(pushrelay::store::open(&config, "bench", pushrelay::clock::Clock::system())).unwrap().0;

    // Notes by 2,000 authors over the last 100,000 seconds, each mentioning another author and carrying one of
    // 100 hashtags.
    let authors: Vec<Keys> = (0..AUTHORS).map(|_| Keys::generate()).collect();
    let now = Timestamp::now().as_secs();
    let events: Vec<SharedEvent> = (0..EVENTS)
        .map(|i| {
            let tags =
                [Tag::public_key(authors[(i * 7) % AUTHORS].public_key()), Tag::hashtag(format!("t{}", i % 100))];
            let event = EventBuilder::new(Kind::TextNote, format!("note {i}"))
                .tags(tags)
                .custom_created_at(Timestamp::from_secs(now - (EVENTS - i) as u64))
                .finalize(&authors[i % AUTHORS])
                .unwrap();
            Arc::new(VerifiedEvent::new(event))
        })
        .collect();
    for batch in events.chunks(1000) {
        runtime.block_on(store.write_batch(batch, None)).unwrap();
    }

    let ids: Vec<String> = (0..10).map(|k| events[k * 9_973].event.id.to_hex()).collect();
    let cases = [
        (
            "an author's notes, newest 20",
            json!({"authors": [authors[17].public_key().to_hex()], "kinds": [1], "limit": 20}),
        ),
        ("a hashtag's newest 50 (1,000 matches)", json!({"#t": ["t42"], "limit": 50})),
        (
            "mentions of a pubkey, newest 50",
            json!({"#p": [authors[17].public_key().to_hex()], "kinds": [1], "limit": 50}),
        ),
        ("ten ids", json!({"ids": ids})),
        ("the newest 100 notes", json!({"kinds": [1], "limit": 100})),
        ("the newest 100 of kinds 1, 6 and 7", json!({"kinds": [1, 6, 7], "limit": 100})),
        (
            "three authors' notes, newest 50",
            json!({"authors": [authors[1].public_key().to_hex(), authors[2].public_key().to_hex(), authors[3].public_key().to_hex()], "kinds": [1], "limit": 50}),
        ),
    ];
    // What a reader who has not authenticated sees on a relay with the default `[auth] read_restricted_kinds`.
    let restricted = [4, 1059, 1060, 14];
    let anonymous = Visibility { restricted_kinds: &restricted, ..Visibility::default() };
    let hashtag = json!({"#t": ["t42"], "limit": 10});
    let cases = cases.into_iter().map(|(name, filter)| (name, filter, Visibility::default())).chain([(
        "a hashtag's newest 10, as a reader who has not authenticated",
        hashtag,
        anonymous,
    )]);
    for (name, filter, visibility) in cases {
        let filter = Filter::from_json(&filter).unwrap();
        let found = runtime.block_on(store.query_filter(&filter, visibility, usize::MAX)).unwrap();
        assert!(!found.is_empty(), "{name} finds nothing");
        c.bench_function(name, |b| {
            b.iter(|| runtime.block_on(store.query_filter(&filter, visibility, usize::MAX)).unwrap())
        });
    }
}

criterion_group!(benches, store_queries);
criterion_main!(benches);
