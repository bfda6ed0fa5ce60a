//! NIP-97 (`POST /register`, Amethyst's push server protocol) end to end: the per-event answers, and each event
//! delivered gift-wrapped to UnifiedPush, FCM and APNs stand-ins that open the wrap with the recipient's key.

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::nips::nip44;
use nostr::prelude::*;
use serde_json::{Value, json};

/// The test relays' public URL: a registration names it (`[push] nip97_require_own_relay`).
const OWN_URL: &str = "ws://127.0.0.1:7777";

/// A kind 22242 registration of `user`'s device `challenge`, made at this relay and watched for on `relays`.
fn registration97(user: &Keys, challenge: &str, relays: &[&str], created_at: u64) -> Event {
    let mut tags: Vec<Vec<&str>> = [OWN_URL].iter().chain(relays).map(|r| vec!["relay", *r]).collect();
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

/// A NIP-97 device's pushes (wrapped, never merged) were all sent in the round that claimed them, whatever the
/// device's rate: an attacker's own endpoint got 65 POSTs in 20 s. Each is counted now: `device_burst` at once, then
/// one per `device_refill_secs`.
async fn wrapped_pushes_keep_the_devices_rate() {
    let mut service = StandIn::start().await;
    let relay = start_with(&service.url, |c| {
        c.push.device_burst = 3;
        c.push.device_refill_secs = 3600;
    })
    .await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register97(&relay, &user, &format!("unifiedpush:{}/up/97", service.url)).await;
    let user_hex = user.public_key().to_hex();
    let mentions: Vec<Event> =
        (0..10).map(|n| sign(&friend, 1, &format!("hello {n}"), &[&["p", &user_hex]], now())).collect();
    relay.client().await.publish_all_ok(&mentions).await;
    for _ in 0..3 {
        assert_eq!(service.next().await.path, "/up/97");
    }
    service.expect_none().await;
}

/// Kind 22242 is NIP-42 AUTH's kind as well, with the same tags. A hostile relay's challenge `unifiedpush:<URL>`,
/// signed by a victim's client as any challenge is, was accepted here as the victim's registration (ten times: then
/// the victim's own was refused); so was one signed by the relay's own key, which answers watched relays' AUTH. A
/// registration must now name this relay, and the relay's key registers nothing.
async fn an_auth_event_for_another_relay_is_no_registration() {
    let service = StandIn::start().await;
    let relay = start(&service.url).await;
    let victim = Keys::generate();
    let evil = format!("unifiedpush:{}/up/evil", service.url);
    let auth = sign(&victim, 22242, "", &[&["relay", "wss://evil.example"], &["challenge", &evil]], now());
    let (_, answer) = post_register(&relay, &[json!(auth)]).await;
    assert_eq!(answer[0]["error"], "invalid: a registration must name this relay in a relay tag", "{answer}");
    let push_secret = std::fs::read_to_string(relay.dir.path().join("push.key")).unwrap();
    let relay_keys = Keys::parse(push_secret.trim()).unwrap();
    let (_, answer) = post_register(&relay, &[json!(registration97(&relay_keys, &evil, &[], now()))]).await;
    assert_eq!(answer[0]["error"], "blocked: this relay's own key registers no device", "{answer}");
    let push = relay.push();
    assert!(push.registry().nip97_devices().is_empty());
    register97(&relay, &victim, &format!("unifiedpush:{}/up/mine", service.url)).await;
}

/// 3,000 anonymous registrations from one address (a fresh key each, 16 relay tags of 3.5 KB) took 620 MiB of
/// memory and 257 MiB of disk. Now a challenge and a relay URL have a length, an address a rate, the relay a cap, and
/// a device not registered again within its time is forgotten.
async fn nip97_registrations_are_bounded() {
    let service = StandIn::start().await;
    let relay = start_with(&service.url, |c| {
        c.limits.ip_registrations_per_hour = 6;
        c.push.nip97_max_devices = 3;
    })
    .await;
    let endpoint = |n: usize| format!("unifiedpush:{}/up/{n}", service.url);
    let users: Vec<Keys> = (0..5).map(|_| Keys::generate()).collect();
    let long_challenge = endpoint(0) + &"x".repeat(600);
    let long_relay = format!("wss://relay.example/{}", "x".repeat(300));
    let first = [
        json!(registration97(&users[0], &long_challenge, &[], now())),
        json!(registration97(&users[0], &endpoint(0), &[&long_relay, "wss://ok.example"], now())),
    ];
    let (_, answer) = post_register(&relay, &first).await;
    assert_eq!(answer[0]["error"], "invalid: challenge longer than 512 characters", "{answer}");
    assert_eq!(answer[1]["result"], "added", "{answer}");
    let push = relay.push();
    let relays = push.registry().registrations_of(users[0].public_key().as_bytes())[0].relays.clone();
    assert_eq!(*relays, ["wss://ok.example"], "the over-long relay URL is left out");

    let (_, answer) =
        post_register(&relay, &[1, 2, 3].map(|n| json!(registration97(&users[n], &endpoint(n), &[], now())))).await;
    let results: Vec<&str> = answer.as_array().unwrap().iter().map(|a| a["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["added", "added", "error"], "{answer}");
    assert_eq!(answer[2]["error"], "rate-limited: this relay holds as many NIP-97 devices as it may");
    // Thirty-one days on, the three were not registered again: they make room.
    relay.clock().advance(std::time::Duration::from_secs(31 * 24 * 3600));
    let later = relay.clock().secs();
    let (_, answer) = post_register(&relay, &[json!(registration97(&users[4], &endpoint(4), &[], later))]).await;
    assert_eq!(answer[0]["result"], "added", "{answer}");
    assert_eq!(push.registry().nip97_devices().len(), 1);
    // Six from this address in the hour: the seventh is refused whatever it is.
    let (_, answer) = post_register(&relay, &[json!(registration97(&users[4], &endpoint(4), &[], later))]).await;
    assert_eq!(answer[0]["error"], "rate-limited: slow down", "{answer}");
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
    let push = relay.push();
    assert_eq!(*push.registry().registrations_of(user.public_key().as_bytes())[0].relays, ["wss://ok.example"]);

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
    wrapped_pushes_keep_the_devices_rate,
    an_auth_event_for_another_relay_is_no_registration,
    nip97_registrations_are_bounded,
);
