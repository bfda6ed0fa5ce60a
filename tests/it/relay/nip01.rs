//! NIP-01 over a real WebSocket against a real SQLite file: publishing, kinds, queries and live delivery.

use crate::common::*;
use nostr::prelude::*;
use serde_json::json;

async fn stored_event_is_acknowledged_and_served() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let event = note(&keys, "hello");
    client.publish_ok(&event).await;

    let events = client.req("s", &[json!({"ids": [id_of(&event)]})]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0], serde_json::to_value(&event).unwrap());
}

async fn duplicate_is_reported() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let event = note(&Keys::generate(), "twice");
    client.publish_ok(&event).await;
    let (accepted, message) = client.publish(&event).await;
    assert!(accepted);
    assert!(message.starts_with("duplicate:"), "{message}");
}

async fn ephemeral_events_reach_live_subscribers_but_are_not_stored() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let mut listener = relay.client().await;
    assert!(listener.req("live", &[json!({"kinds": [20001]})]).await.is_empty());

    let mut publisher = relay.client().await;
    let event = sign(&keys, 20001, "fleeting", &[], now());
    publisher.publish_ok(&event).await;

    let live = listener.recv().await;
    assert_eq!(live, json!(["EVENT", "live", event]));
    assert!(publisher.req("later", &[json!({"kinds": [20001]})]).await.is_empty());
}

async fn replaceable_keeps_the_newest_and_refuses_older() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let t = now() - 100;
    let v1 = sign(&keys, 0, "{\"name\":\"one\"}", &[], t);
    let v2 = sign(&keys, 0, "{\"name\":\"two\"}", &[], t + 10);
    client.publish_ok(&v1).await;
    client.publish_ok(&v2).await;

    let filter = json!({"authors": [keys.public_key().to_hex()], "kinds": [0]});
    assert_eq!(client.req_ids("a", std::slice::from_ref(&filter)).await, vec![id_of(&v2)]);

    // Older than what is stored: refused, and the stored one stays.
    let old = sign(&keys, 0, "{\"name\":\"old\"}", &[], t + 5);
    let (accepted, message) = client.publish(&old).await;
    assert!(!accepted);
    assert!(message.starts_with("duplicate:"), "{message}");
    // The replaced version is gone for good: sending it again is refused too.
    assert!(!client.publish(&v1).await.0);
    assert_eq!(client.req_ids("b", &[filter]).await, vec![id_of(&v2)]);
}

async fn replaceable_ties_keep_the_lowest_id() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let t = now() - 50;
    let a = sign(&keys, 10002, "a", &[], t);
    let b = sign(&keys, 10002, "b", &[], t);
    let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };
    let filter = json!({"authors": [keys.public_key().to_hex()], "kinds": [10002]});

    client.publish_ok(&high).await;
    client.publish_ok(&low).await;
    assert_eq!(client.req_ids("x", std::slice::from_ref(&filter)).await, vec![id_of(&low)]);
    assert!(!client.publish(&high).await.0, "higher id at the same time loses");
    assert_eq!(client.req_ids("y", &[filter]).await, vec![id_of(&low)]);
}

async fn addressable_is_replaced_per_d_tag() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let t = now() - 100;
    let a1 = sign(&keys, 30023, "a1", &[&["d", "a"]], t);
    let a2 = sign(&keys, 30023, "a2", &[&["d", "a"]], t + 1);
    let b1 = sign(&keys, 30023, "b1", &[&["d", "b"]], t);
    let none = sign(&keys, 30023, "no d tag", &[], t);
    let empty = sign(&keys, 30023, "empty d tag", &[&["d", ""]], t + 2);
    for event in [&a1, &a2, &b1, &none] {
        client.publish_ok(event).await;
    }
    let filter = json!({"authors": [keys.public_key().to_hex()]});
    let mut ids = client.req_ids("x", std::slice::from_ref(&filter)).await;
    ids.sort();
    let mut expected = vec![id_of(&a2), id_of(&b1), id_of(&none)];
    expected.sort();
    assert_eq!(ids, expected);
    client.close("x").await;

    // A missing d tag and an empty one are the same address.
    client.publish_ok(&empty).await;
    let ids = client.req_ids("y", &[filter]).await;
    assert!(ids.contains(&id_of(&empty)) && !ids.contains(&id_of(&none)));
    assert!(!client.publish(&a1).await.0);
}

async fn results_are_newest_first_with_ties_by_id_and_deduplicated_across_filters() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let t = now() - 1000;
    let mut events = vec![];
    for i in 0..6 {
        // Pairs share a created_at, so ties must be broken by id.
        events.push(sign(&keys, 1, &format!("n{i}"), &[&["t", if i % 2 == 0 { "even" } else { "odd" }]], t + i / 2));
    }
    for event in &events {
        client.publish_ok(event).await;
    }
    let mut expected = events.clone();
    expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let expected: Vec<String> = expected.iter().map(id_of).collect();

    // Two overlapping filters: every event once, in order.
    let got = client.req_ids("s", &[json!({"kinds": [1]}), json!({"#t": ["even"]})]).await;
    assert_eq!(got, expected);
}

/// Many events of one second, asked for by a limit that falls among them: the lowest ids of that second, whether
/// the second fits in what the store reads past the limit (`TIE_ROOM`, 32) or not.
async fn a_limit_within_one_busy_second_keeps_its_lowest_ids() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let t = now() - 1000;
    let mut events: Vec<Event> =
        (0..80).map(|i| sign(&Keys::generate(), 1, &format!("n{i}"), &[&["t", "busy"]], t)).collect();
    events.push(sign(&Keys::generate(), 1, "newer", &[&["t", "busy"]], t + 1));
    events.push(sign(&Keys::generate(), 1, "older", &[&["t", "busy"]], t - 1));
    client.publish_all_ok(&events).await;
    let mut expected = events.clone();
    expected.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let expected: Vec<String> = expected.iter().map(id_of).collect();
    for limit in [1, 5, 60, 81, 82, 100] {
        for filter in [json!({"#t": ["busy"], "limit": limit}), json!({"kinds": [1], "limit": limit})] {
            let got = client.req_ids("s", std::slice::from_ref(&filter)).await;
            assert_eq!(got, expected[..limit.min(expected.len())], "{filter}");
            client.close("s").await;
        }
    }
}

async fn limit_default_and_maximum() {
    let relay = TestRelay::start_with(|c| {
        c.limits.default_limit = 3;
        c.limits.max_limit = 5;
    })
    .await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let t = now() - 100;
    let events: Vec<Event> = (0..8).map(|i| sign(&keys, 1, &format!("{i}"), &[], t + i)).collect();
    for event in &events {
        client.publish_ok(event).await;
    }
    let newest: Vec<String> = events.iter().rev().map(id_of).collect();
    assert_eq!(client.req_ids("a", &[json!({"kinds": [1], "limit": 2})]).await, newest[..2]);
    assert_eq!(client.req_ids("b", &[json!({"kinds": [1]})]).await, newest[..3], "default limit");
    assert_eq!(client.req_ids("c", &[json!({"kinds": [1], "limit": 100})]).await, newest[..5], "max limit");
    // Limits apply per filter.
    let both = client.req_ids("d", &[json!({"kinds": [1], "limit": 1}), json!({"ids": [newest[7]]})]).await;
    assert_eq!(both, vec![newest[0].clone(), newest[7].clone()]);
}

async fn limit_zero_gives_eose_then_live_events() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    client.publish_ok(&note(&keys, "old")).await;
    assert!(client.req("z", &[json!({"kinds": [1], "limit": 0})]).await.is_empty());
    let fresh = note(&keys, "new");
    let mut publisher = relay.client().await;
    publisher.publish_ok(&fresh).await;
    assert_eq!(client.recv().await, json!(["EVENT", "z", fresh]));
}

async fn filters_by_every_field() {
    // Nothing stored but what the test publishes (Marmot's inbox list of the push key is the relay's own event).
    let relay = TestRelay::start_with(|c| c.push.marmot.enabled = false).await;
    let mut client = relay.client().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let t = now() - 1000;
    let a1 = sign(&alice, 1, "a1", &[&["p", &bob.public_key().to_hex()], &["t", "nostr"]], t);
    let a7 = sign(&alice, 7, "+", &[&["e", &id_of(&a1)]], t + 10);
    let b1 = sign(&bob, 1, "b1", &[&["t", "rust"], &["t", "nostr"]], t + 20);
    for event in [&a1, &a7, &b1] {
        client.publish_ok(event).await;
    }
    let ids = |events: &[&Event]| events.iter().map(|e| id_of(e)).collect::<Vec<_>>();
    let alice_hex = alice.public_key().to_hex();

    assert_eq!(client.req_ids("1", &[json!({"authors": [alice_hex]})]).await, ids(&[&a7, &a1]));
    assert_eq!(client.req_ids("2", &[json!({"kinds": [7]})]).await, ids(&[&a7]));
    assert_eq!(client.req_ids("3", &[json!({"#t": ["nostr"]})]).await, ids(&[&b1, &a1]));
    assert_eq!(client.req_ids("4", &[json!({"#t": ["nostr"], "#p": [bob.public_key().to_hex()]})]).await, ids(&[&a1]));
    assert_eq!(client.req_ids("5", &[json!({"#e": [id_of(&a1)]})]).await, ids(&[&a7]));
    assert_eq!(client.req_ids("6", &[json!({"since": t + 10})]).await, ids(&[&b1, &a7]));
    assert_eq!(client.req_ids("7", &[json!({"until": t + 10})]).await, ids(&[&a7, &a1]));
    assert_eq!(client.req_ids("8", &[json!({"since": t + 5, "until": t + 15})]).await, ids(&[&a7]));
    assert_eq!(client.req_ids("9", &[json!({"authors": [alice_hex], "kinds": [1]})]).await, ids(&[&a1]));
    assert!(client.req_ids("10", &[json!({"ids": []})]).await.is_empty());
    assert!(client.req_ids("11", &[json!({"since": t + 30, "until": t})]).await.is_empty());
}

async fn live_events_follow_eose_until_close() {
    let relay = TestRelay::start().await;
    let mut subscriber = relay.client().await;
    let mut publisher = relay.client().await;
    let keys = Keys::generate();
    let filter = json!({"authors": [keys.public_key().to_hex()], "kinds": [1]});
    assert!(subscriber.req("feed", &[filter]).await.is_empty());

    let first = note(&keys, "first");
    publisher.publish_ok(&first).await;
    assert_eq!(subscriber.recv().await, json!(["EVENT", "feed", first]));

    // Not matching: another kind, another author.
    publisher.publish_ok(&sign(&keys, 7, "+", &[], now())).await;
    publisher.publish_ok(&note(&Keys::generate(), "other")).await;
    subscriber.expect_silence().await;

    subscriber.close("feed").await;
    subscriber.expect_silence().await;
    publisher.publish_ok(&note(&keys, "after close")).await;
    subscriber.expect_silence().await;
}

/// Live events that follow one another within `live_flush_ms` are gathered into one write: none is lost, none
/// overtakes another, and a CLOSE still ends the flow.
async fn live_events_gathered_into_one_write_arrive_all_and_in_order() {
    let relay = TestRelay::start_with(|config| config.limits.live_flush_ms = 300).await;
    let mut subscriber = relay.client().await;
    let mut publisher = relay.client().await;
    let keys = Keys::generate();
    assert!(subscriber.req("feed", &[json!({"authors": [keys.public_key().to_hex()]})]).await.is_empty());
    let notes: Vec<_> = (0..6).map(|n| note(&keys, &format!("note {n}"))).collect();
    for event in &notes {
        publisher.publish_ok(event).await;
    }
    for event in &notes {
        assert_eq!(subscriber.recv().await, json!(["EVENT", "feed", event]));
    }
    subscriber.close("feed").await;
    publisher.publish_ok(&note(&keys, "after close")).await;
    subscriber.expect_silence().await;
}

async fn a_new_req_with_the_same_id_replaces_the_subscription() {
    let relay = TestRelay::start().await;
    let mut subscriber = relay.client().await;
    let mut publisher = relay.client().await;
    let keys = Keys::generate();
    subscriber.req("s", &[json!({"kinds": [1]})]).await;
    subscriber.req("s", &[json!({"kinds": [7]})]).await;
    publisher.publish_ok(&note(&keys, "kind 1")).await;
    subscriber.expect_silence().await;
    let reaction = sign(&keys, 7, "+", &[], now());
    publisher.publish_ok(&reaction).await;
    assert_eq!(subscriber.recv().await, json!(["EVENT", "s", reaction]));
}

async fn live_delivery_by_tag_and_by_id_and_unconstrained() {
    let relay = TestRelay::start().await;
    let mut subscriber = relay.client().await;
    let mut publisher = relay.client().await;
    let keys = Keys::generate();
    let target = note(&keys, "target");
    subscriber.req("tag", &[json!({"#t": ["pushrelay"]})]).await;
    subscriber.req("id", &[json!({"ids": [id_of(&target)]})]).await;
    subscriber.req("all", &[json!({})]).await;

    let tagged = sign(&keys, 1, "tagged", &[&["t", "pushrelay"]], now());
    publisher.publish_ok(&tagged).await;
    let mut got = vec![subscriber.recv().await, subscriber.recv().await];
    got.sort_by_key(|m| m[1].as_str().unwrap().to_owned());
    assert_eq!(got, vec![json!(["EVENT", "all", tagged]), json!(["EVENT", "tag", tagged])]);

    publisher.publish_ok(&target).await;
    let mut got = vec![subscriber.recv().await, subscriber.recv().await];
    got.sort_by_key(|m| m[1].as_str().unwrap().to_owned());
    assert_eq!(got, vec![json!(["EVENT", "all", target]), json!(["EVENT", "id", target])]);
    subscriber.expect_silence().await;
}

async fn restart_on_the_same_database_keeps_everything() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let events: Vec<Event> = (0..20).map(|i| sign(&keys, 1, &format!("{i}"), &[&["t", "keep"]], now() - i)).collect();
    let profile = sign(&keys, 0, "{}", &[], now());
    {
        let mut client = relay.client().await;
        for event in events.iter().chain([&profile]) {
            client.publish_ok(event).await;
        }
    }
    let relay = relay.restart().await;
    let mut client = relay.client().await;
    let ids = client.req_ids("r", &[json!({"#t": ["keep"], "limit": 100})]).await;
    assert_eq!(ids, events.iter().map(id_of).collect::<Vec<_>>());
    assert_eq!(client.req_ids("p", &[json!({"kinds": [0]})]).await, vec![id_of(&profile)]);
    assert!(client.publish(&events[0]).await.1.starts_with("duplicate:"));
}

async fn many_publishers_at_once_are_all_committed() {
    let relay = TestRelay::start().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = relay.url.clone();
        tasks.push(tokio::spawn(async move {
            let keys = Keys::generate();
            let mut client = Client::connect(&url).await;
            let events: Vec<Event> = (0..50).map(|i| note(&keys, &format!("{i}"))).collect();
            // Pipelined: all sent before any answer is read.
            for event in &events {
                client.send(json!(["EVENT", event])).await;
            }
            for _ in &events {
                let answer = client.recv().await;
                assert_eq!(answer[2], true, "{answer}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = relay.client().await;
    assert_eq!(client.req("all", &[json!({"kinds": [1], "limit": 500})]).await.len(), 400);
}

crate::on_both_backends!(
    stored_event_is_acknowledged_and_served,
    duplicate_is_reported,
    ephemeral_events_reach_live_subscribers_but_are_not_stored,
    replaceable_keeps_the_newest_and_refuses_older,
    replaceable_ties_keep_the_lowest_id,
    addressable_is_replaced_per_d_tag,
    results_are_newest_first_with_ties_by_id_and_deduplicated_across_filters,
    a_limit_within_one_busy_second_keeps_its_lowest_ids,
    limit_default_and_maximum,
    limit_zero_gives_eose_then_live_events,
    filters_by_every_field,
    live_events_follow_eose_until_close,
    live_events_gathered_into_one_write_arrive_all_and_in_order,
    a_new_req_with_the_same_id_replaces_the_subscription,
    live_delivery_by_tag_and_by_id_and_unconstrained,
    restart_on_the_same_database_keeps_everything,
    many_publishers_at_once_are_all_committed,
);
