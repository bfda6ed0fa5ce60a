//! The hot functions of the write and read paths: parsing and checking an event (id and signature: the verify
//! ceiling), matching a filter, and finding the live subscriptions an event reaches. `cargo bench --bench hot_paths`.

use criterion::{Criterion, criterion_group, criterion_main};
use nostr::prelude::*;
use pushrelay::config::LimitsConfig;
use pushrelay::protocol::{Filter, VerifiedEvent};
use pushrelay::relay::auth::Reader;
use pushrelay::relay::subscriptions::{Outbox, SubscriptionIndex};
use serde_json::json;
use serde_json::value::RawValue;

fn note(keys: &Keys, i: usize) -> Event {
    let tags = [Tag::public_key(Keys::generate().public_key()), Tag::hashtag("nostr")];
    EventBuilder::new(Kind::TextNote, format!("a note of ordinary length, number {i}"))
        .tags(tags)
        .finalize(keys)
        .unwrap()
}

fn hot_paths(c: &mut Criterion) {
    let keys = Keys::generate();
    let event = note(&keys, 1);
    let raw = RawValue::from_string(event.as_json()).unwrap();
    let limits = LimitsConfig::default();
    c.bench_function("admit: parse, limits, id and signature", |b| {
        b.iter(|| {
            pushrelay::relay::admission::admit(&raw, &limits, None, pushrelay::clock::Clock::system().secs()).unwrap()
        })
    });
    c.bench_function("admit's parts: parse", |b| b.iter(|| Event::from_json(raw.get()).unwrap()));
    c.bench_function("admit's parts: id (serialize and hash)", |b| b.iter(|| event.verify_id()));
    c.bench_function("admit's parts: signature", |b| b.iter(|| event.verify_signature()));
    c.bench_function("admit's parts: canonical json", |b| b.iter(|| event.as_json()));

    let filter =
        Filter::from_json(&json!({"kinds": [1], "#t": ["nostr"], "authors": [keys.public_key().to_hex()]})).unwrap();
    c.bench_function("filter matches an event", |b| b.iter(|| filter.matches(&event)));

    // Fan-out: 10,000 live subscriptions to other authors; the event's cost is its look-ups, not the count.
    let index = SubscriptionIndex::default();
    let reader = std::sync::Arc::new(Reader::new(Vec::new(), None));
    let (outbox, _receiver) = Outbox::new(16, usize::MAX, reader, Default::default());
    for _ in 0..10_000 {
        let author = Keys::generate().public_key().to_hex();
        index.add(&outbox, "s", vec![Filter::from_json(&json!({"authors": [author], "kinds": [1]})).unwrap()]);
    }
    let verified = std::sync::Arc::new(VerifiedEvent::new(event.clone()));
    c.bench_function("fan-out: an event among 10,000 subscriptions to other authors", |b| {
        b.iter(|| index.publish(&verified))
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
