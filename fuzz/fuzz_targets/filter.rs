//! Any JSON a client sends as a filter: parsed, matched against an event, and written back out. A filter that
//! parses must read back to one that matches the same way. Nothing may panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use nostr::prelude::*;
use pushrelay::protocol::Filter;

static EVENT: LazyLock<Event> = LazyLock::new(|| {
    let keys = Keys::parse("6b911fd37cdf5c81d4c0adb1ab7fa822ed253ab0ad9aa18d77257c88b29b718e").unwrap();
    EventBuilder::new(Kind::TextNote, "hello")
        .tags([Tag::hashtag("nostr"), Tag::public_key(keys.public_key()), Tag::identifier("a")])
        .custom_created_at(Timestamp::from_secs(1_700_000_000))
        .finalize(&keys)
        .unwrap()
});

fuzz_target!(|text: &str| {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { return };
    let Ok(filter) = Filter::from_json(&value) else { return };
    let matched = filter.matches(&EVENT);
    let again = Filter::from_json(&filter.to_json()).expect("a filter's own JSON parses");
    assert_eq!(again.matches(&EVENT), matched, "{text}");
});
