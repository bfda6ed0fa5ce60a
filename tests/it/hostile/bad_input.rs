//! Bad input gets a clear answer and never costs the client its connection (unless it is absurdly large), and never
//! harms the relay or other clients.

use crate::common::*;
use nostr::prelude::*;
use serde_json::{Value, json};

/// After any bad message, the same connection must still work.
async fn assert_still_serving(client: &mut Client) {
    let event = note(&Keys::generate(), "still here");
    client.publish_ok(&event).await;
}

async fn expect_notice(client: &mut Client, text: &str) -> String {
    client.send_text(text).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "NOTICE", "for {text}: {answer}");
    answer[1].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn malformed_messages_get_a_notice_and_the_connection_stays() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    for text in [
        "not json",
        "{\"an\":\"object\"}",
        "[]",
        "[42]",
        "[\"EVENT\"]",
        "[\"EVENT\",{},{}]",
        "[\"REQ\"]",
        "[\"REQ\",7,{}]",
        "[\"CLOSE\"]",
        "[\"HELLO\",1]",
        "[\"EVENT\",{\"no\":\"id\"}]",
    ] {
        let notice = expect_notice(&mut client, text).await;
        assert!(notice.starts_with("invalid:"), "{text} -> {notice}");
    }
    assert_still_serving(&mut client).await;
}

#[tokio::test]
async fn events_with_wrong_fields_are_refused_with_invalid() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let good = serde_json::to_value(note(&keys, "x")).unwrap();

    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut with = |name, field: &str, value: Value| {
        let mut event = good.clone();
        event[field] = value;
        cases.push((name, event));
    };
    with("kind as string", "kind", json!("1"));
    with("created_at negative", "created_at", json!(-5));
    with("tags not arrays", "tags", json!(["p"]));
    with("content number", "content", json!(12));
    with("pubkey short", "pubkey", json!("abcd"));
    with("sig not hex", "sig", json!("zz"));
    with("kind too large", "kind", json!(70000));
    with("empty tag", "tags", json!([[]]));
    for (name, event) in cases {
        let (accepted, message) = client.publish_raw(json!(["EVENT", event])).await;
        assert!(!accepted, "{name}");
        assert!(message.starts_with("invalid:"), "{name}: {message}");
    }
    assert_still_serving(&mut client).await;
}

#[tokio::test]
async fn wrong_id_and_wrong_signature_are_refused() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let event = serde_json::to_value(note(&keys, "original")).unwrap();

    let mut tampered = event.clone();
    tampered["content"] = json!("changed");
    let (accepted, message) = client.publish_raw(json!(["EVENT", tampered])).await;
    assert!(!accepted);
    assert_eq!(message, "invalid: event id does not match the event");

    // Correct id for the content, but signed by nobody.
    let other = serde_json::to_value(note(&keys, "other")).unwrap();
    let mut forged = event.clone();
    forged["sig"] = other["sig"].clone();
    let (accepted, message) = client.publish_raw(json!(["EVENT", forged])).await;
    assert!(!accepted);
    assert_eq!(message, "invalid: bad signature");

    assert!(client.req("s", &[json!({"authors": [keys.public_key().to_hex()]})]).await.is_empty());
}

#[tokio::test]
async fn limits_on_tags_content_and_time_are_enforced() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_event_tags = 3;
        c.limits.max_content_length = 10;
        c.limits.created_at_lower_limit = 3600;
        c.limits.created_at_upper_limit = 60;
    })
    .await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let cases = [
        sign(&keys, 1, "x", &[&["t", "1"], &["t", "2"], &["t", "3"], &["t", "4"]], now()),
        sign(&keys, 1, "eleven char", &[], now()),
        sign(&keys, 1, "old", &[], now() - 7200),
        sign(&keys, 1, "future", &[], now() + 600),
    ];
    for event in &cases {
        let (accepted, message) = client.publish(event).await;
        assert!(!accepted);
        assert!(message.starts_with("invalid:"), "{message}");
    }
    // At the limits: accepted. Content is counted in characters, not bytes.
    client.publish_ok(&sign(&keys, 1, "ünïcödé!!!", &[&["t", "1"], &["t", "2"], &["t", "3"]], now() - 3000)).await;
}

#[tokio::test]
async fn oversized_messages_are_refused_and_huge_ones_close_only_that_connection() {
    let relay = TestRelay::start_with(|c| c.limits.max_message_length = 2000).await;
    let mut client = relay.client().await;
    let big = note(&Keys::generate(), &"x".repeat(3000));
    client.send(json!(["EVENT", big])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "NOTICE");
    assert!(answer[1].as_str().unwrap().starts_with("invalid: message too large"), "{answer}");
    assert_still_serving(&mut client).await;

    // Far over the limit: the connection is closed, the relay is unharmed.
    let mut reckless = relay.client().await;
    reckless.send_text(&format!("[\"REQ\",\"s\",{{\"#t\":[\"{}\"]}}]", "y".repeat(20_000))).await;
    assert!(reckless.try_recv(TIMEOUT).await.is_none(), "connection should close");
    let mut fresh = relay.client().await;
    assert_still_serving(&mut fresh).await;
    assert_still_serving(&mut client).await;
}

#[tokio::test]
async fn too_many_subscriptions_and_filters_are_closed() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_subscriptions = 2;
        c.limits.max_filters = 2;
        c.limits.max_subid_length = 8;
    })
    .await;
    let mut client = relay.client().await;
    client.req("a", &[json!({})]).await;
    client.req("b", &[json!({})]).await;
    client.send(json!(["REQ", "c", {}])).await;
    let answer = client.recv().await;
    assert_eq!(answer.as_array().unwrap()[0..2], [json!("CLOSED"), json!("c")]);
    assert!(answer[2].as_str().unwrap().starts_with("rate-limited:"), "{answer}");
    // Replacing an open subscription is still allowed, and closing one frees a slot.
    client.req("a", &[json!({"kinds": [1]})]).await;
    client.close("b").await;
    client.req("c", &[json!({})]).await;

    client.send(json!(["REQ", "d", {}, {}, {}])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("invalid: too many filters"), "{answer}");

    client.send(json!(["REQ", "much-too-long-id", {}])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("invalid:"), "{answer}");
}

#[tokio::test]
async fn bad_filters_are_closed_with_invalid() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    for filter in
        [json!({"kinds": "1"}), json!({"ids": ["xyz"]}), json!({"#tag": ["a"]}), json!({"limit": -1}), json!(5)]
    {
        client.send(json!(["REQ", "bad", filter])).await;
        let answer = client.recv().await;
        assert_eq!(answer.as_array().unwrap()[0..2], [json!("CLOSED"), json!("bad")], "{filter}");
        assert!(answer[2].as_str().unwrap().starts_with("invalid:"), "{answer}");
    }
    assert_still_serving(&mut client).await;
}

#[tokio::test]
async fn a_filter_with_thousands_of_ids_is_served() {
    let relay = TestRelay::start_with(|c| c.limits.max_message_length = 1 << 20).await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let stored = note(&keys, "needle");
    client.publish_ok(&stored).await;
    let mut ids: Vec<String> = (0..5000u32).map(|i| format!("{:064x}", i)).collect();
    ids.push(id_of(&stored));
    assert_eq!(client.req_ids("many", &[json!({"ids": ids})]).await, vec![id_of(&stored)]);
}

#[tokio::test]
async fn tag_values_that_look_like_sql_are_just_values() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let nasty = "x'); DROP TABLE events; --";
    let event = sign(&keys, 1, "sql", &[&["t", nasty], &["r", "\" OR 1=1 --"]], now());
    client.publish_ok(&event).await;
    assert_eq!(client.req_ids("a", &[json!({"#t": [nasty]})]).await, vec![id_of(&event)]);
    assert!(client.req_ids("b", &[json!({"#t": ["' OR '1'='1"]})]).await.is_empty());
    assert_eq!(client.req_ids("c", &[json!({"#r": ["\" OR 1=1 --"]})]).await, vec![id_of(&event)]);
    assert_eq!(client.req("d", &[json!({"kinds": [1]})]).await.len(), 1, "the table is still there");
}

#[tokio::test]
async fn unicode_and_json_escapes_round_trip() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let content = "emoji 🤙, quotes \" and \\ backslash, newline\n, tab\t, nul \u{0}, bell \u{7}, ünï, 漢字, \u{2028}";
    let event = sign(&keys, 1, content, &[&["t", "日本"]], now());
    // Sent with escapes where serde_json chooses them; the id must still verify.
    client.publish_ok(&event).await;
    let got = client.req("u", &[json!({"#t": ["日本"]})]).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["content"], content);
    assert_eq!(got[0], serde_json::to_value(&event).unwrap());

    // The same event with every non-ASCII character written as a \u escape is the same event.
    let escaped = serde_json::to_string(&json!(["EVENT", event])).unwrap();
    let escaped: String = escaped
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect()
            }
        })
        .collect();
    client.send_text(&escaped).await;
    let answer = client.recv().await;
    assert_eq!(answer[2], true, "{answer}");
    assert!(answer[3].as_str().unwrap().starts_with("duplicate:"));
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_without_slowing_others() {
    let relay = TestRelay::start_with(|c| c.limits.max_outgoing_queue = 8).await;
    // A subscriber that never reads: its socket buffers fill, then its queue, then it is cut off.
    let mut sluggard = relay.client().await;
    sluggard.req("all", &[json!({})]).await;
    let mut reader = relay.client().await;
    reader.req("all", &[json!({"kinds": [1]})]).await;

    let mut publisher = relay.client().await;
    let keys = Keys::generate();
    let filler = "z".repeat(60_000);
    for i in 0..200 {
        let event = sign(&keys, 1, &format!("{i} {filler}"), &[], now());
        publisher.publish_ok(&event).await;
        let got = reader.recv().await;
        assert_eq!(got[2]["id"], id_of(&event));
    }
    // The sluggard eventually finds a NOTICE about being too slow, then the end of the connection.
    let mut saw_notice = false;
    while let Some(message) = sluggard.try_recv(TIMEOUT).await {
        if message[0] == "NOTICE" {
            saw_notice = true;
        }
    }
    assert!(saw_notice);
}

/// An EVENT cut short or otherwise not JSON, whose id can still be read, is answered with `OK false` for that id (a
/// client waiting on its OK learns at once); without a readable id it is a NOTICE, as before.
#[tokio::test]
async fn an_event_that_is_not_json_gets_ok_false_when_its_id_is_readable() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let event = serde_json::to_string(&note(&Keys::generate(), "x")).unwrap();
    let cut = format!(r#"["EVENT",{}"#, &event[..event.len() - 10]);
    client.send_text(&cut).await;
    let answer = client.recv().await;
    let id = serde_json::from_str::<Value>(&event).unwrap()["id"].clone();
    assert_eq!((answer[0].as_str(), &answer[1], answer[2].as_bool()), (Some("OK"), &id, Some(false)), "{answer}");
    assert!(answer[3].as_str().unwrap().starts_with("invalid:"), "{answer}");
    let notice = expect_notice(&mut client, r#"["EVENT",{"content":"no id"#).await;
    assert!(notice.starts_with("invalid:"), "{notice}");
    assert_still_serving(&mut client).await;
}
