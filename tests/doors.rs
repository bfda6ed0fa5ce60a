//! The new doors tried as an attacker (RELIABILITY.md, "Attacks tried"): NIP-50 search, NIP-9a, NIP-97, the devices
//! page's test button and watched relays, each over a real socket against a relay with its defaults unless named.

mod common;

use common::*;
use nostr::prelude::*;
use serde_json::json;

/// A REQ whose search repeats one word thousands of times cost the square of its words on SQLite (20,000 words: over
/// two minutes, and everyone's REQs waited). A repeated word now counts once; past `max_search_terms` different words
/// or `max_search_length` bytes the REQ (and a COUNT) is refused at once, and the connection goes on.
async fn a_search_of_thousands_of_words_is_refused_and_a_repeated_word_counts_once() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let pizza = note(&Keys::generate(), "a pizza party");
    client.publish_ok(&pizza).await;

    let repeated = vec!["pizza"; 150].join(" "); // 899 bytes, one word
    assert_eq!(client.req_ids("one", &[json!({"search": repeated})]).await, vec![id_of(&pizza)]);

    let huge = vec!["party"; 20_000].join(" ");
    client.send(json!(["REQ", "huge", {"search": huge}])).await;
    assert_eq!(client.recv().await, json!(["CLOSED", "huge", "invalid: search longer than 1024 bytes"]));
    let many: Vec<String> = (0..17).map(|n| format!("w{n}")).collect();
    client.send(json!(["COUNT", "many", {"search": many.join(" ")}])).await;
    assert_eq!(client.recv().await, json!(["CLOSED", "many", "invalid: search has 17 different words (max 16)"]));

    let document = relay.nip11().await;
    assert_eq!(document["limitation"]["max_search_terms"], 16);
    assert_eq!(document["limitation"]["max_search_length"], 1024);
    // A live search still gets new events that hold its words.
    client.req("live", &[json!({"search": "Party"})]).await;
    let later = note(&Keys::generate(), "another PARTY");
    let mut other = relay.client().await;
    other.publish_ok(&later).await;
    assert_eq!(client.recv().await, json!(["EVENT", "live", serde_json::to_value(&later).unwrap()]));
}

crate::on_both_backends!(a_search_of_thousands_of_words_is_refused_and_a_repeated_word_counts_once,);
