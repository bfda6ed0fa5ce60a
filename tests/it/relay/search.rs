//! NIP-50 search over real WebSockets, on both databases: words anywhere in a note's content, best match first,
//! with the filter's other fields and its limit; encrypted kinds never found; deleted events gone from the index;
//! live subscriptions with a search get only matching new events; unsupported extensions are ignored; a search of
//! too many words is refused (RELIABILITY.md, "Attacks tried").

use crate::common::*;
use nostr::prelude::*;
use serde_json::json;

/// The ids a REQ finds, its subscription closed again (new notes must not arrive on it).
async fn found(client: &mut Client, filter: serde_json::Value) -> Vec<String> {
    let ids = client.req_ids("s", &[filter]).await;
    client.close("s").await;
    ids
}

async fn search_finds_notes_by_their_words_best_match_first() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let base = now() - 100;
    let party = sign(&alice, 1, "Pizza party tonight, bring pizza!", &[], base);
    let recipe = sign(&bob, 1, "My pizza recipe", &[], base + 1);
    let other = sign(&bob, 1, "Nothing to see here", &[], base + 2);
    let article = sign(&alice, 30023, "A long read about pizza ovens", &[&["d", "ovens"]], base + 3);
    let secret = sign(&alice, 4, "pizza?iv=abc", &[&["p", &bob.public_key().to_hex()]], base + 4);
    let profile = sign(&bob, 0, r#"{"name":"pizzaiolo bob","about":"I make pizza"}"#, &[], base + 5);
    for event in [&party, &recipe, &other, &article, &secret, &profile] {
        client.publish_ok(event).await;
    }

    let notes = found(&mut client, json!({"search": "pizza", "kinds": [1]})).await;
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0], id_of(&party), "the note saying pizza twice ranks first");
    assert_eq!(found(&mut client, json!({"search": "PIZZA party"})).await, [id_of(&party)]);
    let all = found(&mut client, json!({"search": "pizza"})).await;
    assert_eq!(all.len(), 4, "notes, the article, the profile; never the encrypted DM: {all:?}");
    assert!(!all.contains(&id_of(&secret)));
    assert_eq!(found(&mut client, json!({"search": "pizza", "kinds": [1], "limit": 1})).await.len(), 1);
    assert_eq!(found(&mut client, json!({"search": "pizza", "authors": [bob.public_key().to_hex()]})).await.len(), 2);
    assert_eq!(found(&mut client, json!({"search": "pizza include:spam language:en", "kinds": [1]})).await.len(), 2);
    assert!(found(&mut client, json!({"search": "sushi"})).await.is_empty());
    client.send(json!(["COUNT", "c", {"search": "pizza", "kinds": [1]}])).await;
    assert_eq!(client.recv().await[2]["count"], 2);
    client.send(json!(["REQ", "bad", {"search": 5}])).await;
    let closed = client.recv().await;
    assert_eq!(closed[0], "CLOSED");
    assert!(closed[2].as_str().unwrap().starts_with("invalid: search"), "{closed}");

    // Deleted: gone from the results.
    client.publish_ok(&sign(&alice, 5, "", &[&["e", &id_of(&party)]], now())).await;
    assert_eq!(found(&mut client, json!({"search": "pizza", "kinds": [1]})).await, [id_of(&recipe)]);

    // Live: a search subscription gets matching new notes only.
    let mut watcher = relay.client().await;
    assert!(watcher.req("live", &[json!({"search": "pizza", "kinds": [1]})]).await.len() == 1);
    client.publish_ok(&note(&alice, "nothing relevant")).await;
    let hot = note(&alice, "fresh pizza");
    client.publish_ok(&hot).await;
    let live = watcher.recv().await;
    assert_eq!(live[2]["id"], id_of(&hot));
}

async fn search_can_be_turned_off() {
    let relay = TestRelay::start_with(|c| c.database.search_index = false).await;
    let mut client = relay.client().await;
    client.publish_ok(&note(&Keys::generate(), "pizza")).await;
    client.send(json!(["REQ", "s", {"search": "pizza"}])).await;
    let closed = client.recv().await;
    assert_eq!(closed[0], "CLOSED");
    assert!(closed[2].as_str().unwrap().starts_with("blocked:"), "{closed}");
    assert_eq!(client.req("k", &[json!({"kinds": [1]})]).await.len(), 1, "other reads go on");
    assert!(!relay.nip11().await["supported_nips"].as_array().unwrap().contains(&json!(50)));
}

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

crate::on_both_backends!(
    search_finds_notes_by_their_words_best_match_first,
    search_can_be_turned_off,
    a_search_of_thousands_of_words_is_refused_and_a_repeated_word_counts_once,
);
