//! NIP-97 (`POST /register`, Amethyst's push server protocol) end to end: the per-event answers, and each event
//! delivered gift-wrapped to UnifiedPush, FCM and APNs stand-ins that open the wrap with the recipient's key.

mod common;

use common::push::*;
use common::standins::StandIn;
use common::*;
use nostr::nips::nip44;
use nostr::prelude::*;
use serde_json::{Value, json};

/// A kind 22242 registration of `user`'s device `challenge`, watched for on `relays`.
fn registration97(user: &Keys, challenge: &str, relays: &[&str], created_at: u64) -> Event {
    let mut tags: Vec<Vec<&str>> = relays.iter().map(|r| vec!["relay", *r]).collect();
    tags.push(vec!["challenge", challenge]);
    let tags: Vec<&[&str]> = tags.iter().map(Vec::as_slice).collect();
    sign(user, 22242, "", &tags, created_at)
}

/// POSTs `{"events": events}` to `/register`; the status and the JSON answer.
async fn post_register(relay: &TestRelay, events: &[Value]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/register", relay.http_url()))
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn register97(relay: &TestRelay, user: &Keys, challenge: &str) {
    let (status, answer) = post_register(relay, &[json!(registration97(user, challenge, &[], now()))]).await;
    assert_eq!(status, 200);
    assert_eq!(answer[0]["result"], "added", "{answer}");
}

/// Opens a wrap as the app does: a kind 1059 event with no tags, signed by a throwaway key, whose content is the
/// event NIP-44 encrypted to `recipient`. Returns the event inside, checked.
fn open_wrap(wrap_json: &str, recipient: &Keys) -> Event {
    let wrap = Event::from_json(wrap_json).expect("the wrap is an event");
    wrap.verify().expect("the wrap is signed");
    assert_eq!(wrap.kind, Kind::GiftWrap);
    assert!(wrap.tags.is_empty(), "no p tag: the push service must not learn the recipient");
    let inner =
        nip44::decrypt(recipient.secret_key(), &wrap.pubkey, &wrap.content).expect("encrypted to the recipient");
    let event = Event::from_json(inner).expect("the wrapped event");
    event.verify().expect("the wrapped event is genuine");
    event
}

async fn register_answers_each_event_in_order() {
    let service = StandIn::start().await;
    let relay = start(&service.url).await;
    let user = Keys::generate();
    let endpoint = format!("unifiedpush:{}/up/97", service.url);
    let good = registration97(&user, &endpoint, &[], now());
    let mut forged = json!(registration97(&user, "google:another_token_000000", &[], now()));
    forged["sig"] = json!("00".repeat(64));
    let events = [
        json!(good),
        json!(registration97(&user, &endpoint, &[], now() - 3600)),
        json!(sign(&user, 1, "", &[&["challenge", &endpoint]], now())),
        forged,
        json!(registration97(&user, "fax:123", &[], now())),
    ];
    let (status, answer) = post_register(&relay, &events).await;
    assert_eq!(status, 200);
    let results: Vec<&str> = answer.as_array().unwrap().iter().map(|a| a["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["added", "error", "error", "error", "error"], "{answer}");
    assert_eq!(answer[0]["pubkey"], user.public_key().to_hex());
    for (n, said) in
        [(1, "invalid: created_at"), (2, "invalid: expected a kind 22242"), (3, "invalid:"), (4, "challenge")]
    {
        let error = answer[n]["error"].as_str().unwrap();
        assert!(error.contains(said), "{n}: {error}");
    }
    // The same device again: replaced. A body of another shape: 400.
    let (_, again) = post_register(&relay, &[json!(registration97(&user, &endpoint, &[], now()))]).await;
    assert_eq!(again[0]["result"], "replaced");
    let response = reqwest::Client::new()
        .post(format!("{}/register", relay.http_url()))
        .body("{\"foo\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

async fn unifiedpush_gets_a_wrap_only_the_recipient_opens() {
    let mut service = StandIn::start().await;
    let relay = start(&service.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register97(&relay, &user, &format!("unifiedpush:{}/up/97", service.url)).await;
    let mut client = relay.client().await;
    let message = dm(&friend, &user);
    client.publish_ok(&message).await;
    let request = service.next().await;
    assert_eq!(request.path, "/up/97");
    let body = String::from_utf8(request.body.to_vec()).unwrap();
    assert_eq!(open_wrap(&body, &user), message);
    let wrap = Event::from_json(&body).unwrap();
    assert!(![user.public_key(), friend.public_key(), push_key(&relay)].contains(&wrap.pubkey), "a throwaway key");
    assert!(nip44::decrypt(friend.secret_key(), &wrap.pubkey, &wrap.content).is_err(), "only the recipient opens it");
}

async fn fcm_and_apns_carry_the_wrapped_event() {
    let mut service = StandIn::start().await;
    let relay = start(&service.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register97(&relay, &user, "google:fcm_token_for_nip97_app").await;
    let mut client = relay.client().await;
    let reply = sign(&friend, 1, "hello", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&reply).await;
    let message = service.next().await.json()["message"].clone();
    assert_eq!(message["token"], "fcm_token_for_nip97_app");
    assert!(message.get("notification").is_none(), "data only: the app builds its notification");
    assert_eq!(open_wrap(message["data"]["encryptedEvent"].as_str().unwrap(), &user), reply);

    let (other, token) = (Keys::generate(), apns_token(7));
    register97(&relay, &other, &format!("apple:{token}")).await;
    let reaction = sign(&friend, 7, "+", &[&["p", &other.public_key().to_hex()]], now());
    client.publish_ok(&reaction).await;
    let request = service.next().await;
    assert_eq!(request.path, format!("/3/device/{token}"));
    assert_eq!(request.header("apns-topic"), "com.example.default");
    let payload = request.json();
    assert!(payload["aps"]["alert"]["body"].is_string(), "a visible alert beside the wrap");
    assert_eq!(open_wrap(payload["encryptedEvent"].as_str().unwrap(), &other), reaction);
}

async fn devices_have_no_presence_and_fixed_kinds() {
    let mut service = StandIn::start().await;
    let relay = start(&service.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register97(&relay, &user, &format!("unifiedpush:{}/up/97", service.url)).await;
    let mut client = relay.client().await;
    // The user's 0xchat-protocol heartbeat says online: a NIP-97 device is pushed all the same.
    register(&mut client, &relay, &user, json!({"online": 1})).await;
    let mention = sign(&friend, 1, "hi", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&mention).await;
    assert_eq!(open_wrap(std::str::from_utf8(&service.next().await.body).unwrap(), &user), mention);
    // A long-form article tagging the user is not of the kinds NIP-97 notifies.
    client.publish_ok(&sign(&friend, 30023, "essay", &[&["d", "x"], &["p", &user.public_key().to_hex()]], now())).await;
    service.expect_none().await;
}

async fn one_token_through_two_protocols_is_pushed_once() {
    let mut service = StandIn::start().await;
    let relay = start(&service.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let token = "shared_fcm_token_0123456789";
    let mut client = relay.client().await;
    register(&mut client, &relay, &user, registration(token, &user)).await;
    register97(&relay, &user, &format!("google:{token}")).await;
    client.publish_ok(&dm(&friend, &user)).await;
    assert_eq!(service.next().await.json()["message"]["token"], token);
    service.expect_none().await;
}

async fn unwatchable_relays_are_skipped_and_dead_endpoints_dropped() {
    let mut service = StandIn::start().await;
    let relay = start(&service.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let endpoint = format!("unifiedpush:{}/up/97", service.url);
    let own = relay.config.server.public_url.clone();
    let named = [own.as_str(), "ws://10.0.0.1", "https://not.a.relay", "wss://ok.example"];
    let (_, answer) = post_register(&relay, &[json!(registration97(&user, &endpoint, &named, now()))]).await;
    assert_eq!(answer[0]["result"], "added", "unwatchable relays are no reason to refuse: {answer}");
    let push = relay.handle.as_ref().unwrap().push().unwrap().clone();
    assert_eq!(push.registry().registrations_of(user.public_key().as_bytes())[0].relays, ["wss://ok.example"]);

    service.answer_next(404, "");
    relay.client().await.publish_ok(&dm(&friend, &user)).await;
    service.next().await;
    assert!(eventually(|| push.registry().registrations_of(user.public_key().as_bytes()).is_empty()).await);
}

/// What a stranger may POST: entries that are not events get an error each, an oversized body a 413, and the
/// relay goes on answering.
async fn hostile_register_bodies_are_answered_not_obeyed() {
    let service = StandIn::start().await;
    let relay = start(&service.url).await;
    let entries = [json!("not an event"), json!(42), json!({"kind": 22242}), json!(null)];
    let (status, answer) = post_register(&relay, &entries).await;
    assert_eq!(status, 200);
    let answers = answer.as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert!(
        answers.iter().all(|a| a["result"] == "error" && a["error"].as_str().unwrap().starts_with("invalid")),
        "{answer}"
    );
    let huge = json!({"events": [ "x".repeat(100 * 1024) ]}).to_string();
    let response =
        reqwest::Client::new().post(format!("{}/register", relay.http_url())).body(huge).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    register97(&relay, &Keys::generate(), &format!("unifiedpush:{}/up/after", service.url)).await;
}

crate::on_both_backends!(
    register_answers_each_event_in_order,
    hostile_register_bodies_are_answered_not_obeyed,
    unifiedpush_gets_a_wrap_only_the_recipient_opens,
    fcm_and_apns_carry_the_wrapped_event,
    devices_have_no_presence_and_fixed_kinds,
    one_token_through_two_protocols_is_pushed_once,
    unwatchable_relays_are_skipped_and_dead_endpoints_dropped,
);
