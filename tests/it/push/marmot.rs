//! Marmot push (marmot-push-v1) end to end: triggers gift-wrapped to the push key over a real WebSocket, made by an
//! encoder written from the spec (`common::marmot`), wake exactly the devices whose tokens they carry, silently,
//! at the APNs and FCM stand-ins; everything else a sender can send wakes nobody and is answered the same.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use nostr::prelude::*;
use serde_json::json;

use crate::common::marmot::*;
use crate::common::push::*;
use crate::common::standins::{Recorded, StandIn};
use crate::common::*;

const APP: &str = "org.example.marmot";
const FCM_TOKEN: &str = "fcm-marmot:APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ";

fn apns_bytes(n: u8) -> Vec<u8> {
    (0..32).map(|i| i ^ n).collect()
}

async fn marmot_relay(standin: &StandIn, adjust: impl FnOnce(&mut pushrelay::Config)) -> TestRelay {
    start_with(&standin.url, |c| {
        c.push.marmot.apns_topic = APP.into();
        adjust(c);
    })
    .await
}

/// A padding chunk: random bytes, which open for nobody.
fn padding() -> Vec<u8> {
    (0..CHUNK_LEN).map(|_| rand::random::<u8>()).collect()
}

fn assert_silent_apns(request: &Recorded, token: &[u8]) {
    assert_eq!(request.path, format!("/3/device/{}", hex::encode(token)));
    assert_eq!(request.header("apns-push-type"), "background");
    assert_eq!(request.header("apns-priority"), "5");
    assert_eq!(request.header("apns-topic"), APP);
    assert_eq!(request.json(), json!({"aps": {"content-available": 1}}));
}

fn assert_silent_fcm(request: &Recorded) {
    assert_eq!(request.path, format!("/v1/projects/{PROJECT}/messages:send"));
    let message = json!({"token": FCM_TOKEN, "data": {"content_available": "true"}, "android": {"priority": "high"}});
    assert_eq!(request.json(), json!({"message": message}));
}

async fn metric(relay: &TestRelay, series: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", relay.http_url())).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn triggers_wake_exactly_the_devices_they_carry() {
    let mut standin = StandIn::start().await;
    let relay = marmot_relay(&standin, |_| {}).await;
    let server = push_key(&relay);
    let mut client = relay.client().await;
    let other_server = Keys::generate().public_key();
    let content = [
        encrypted_token(&server, 0x01, &apns_bytes(1)),
        padding(),
        // The same device again (a fresh encryption): woken once.
        encrypted_token(&server, 0x01, &apns_bytes(1)),
        encrypted_token(&server, 0x02, FCM_TOKEN.as_bytes()),
        encrypted_token(&other_server, 0x01, &apns_bytes(9)),
    ]
    .concat();
    assert_eq!(client.publish(&trigger(&server, &content)).await, (true, String::new()));
    let mut requests = [standin.next().await, standin.next().await];
    requests.sort_by_key(|r| r.path.starts_with("/v1/"));
    assert_silent_apns(&requests[0], &apns_bytes(1));
    assert_silent_fcm(&requests[1]);
    standin.expect_none().await;

    // The same content under a new gift wrap (as anyone who saw it could send) wakes nobody.
    assert!(client.publish(&trigger(&server, &content)).await.0);
    standin.expect_none().await;

    // A full trigger: 32 chunks, over the relay's 64 KB content limit, its seal over NIP-44's short length.
    let mut full = vec![encrypted_token(&server, 0x01, &apns_bytes(2))];
    full.extend((1..32).map(|_| padding()));
    let full = trigger(&server, &full.concat());
    assert!(full.content.len() > 100_000, "{}", full.content.len());
    assert!(client.publish(&full).await.0);
    assert_silent_apns(&standin.next().await, &apns_bytes(2));

    assert_eq!(metric(&relay, r#"pushrelay_marmot_triggers_total{outcome="woken",reason=""}"#).await, 2);
    assert_eq!(metric(&relay, r#"pushrelay_marmot_triggers_total{outcome="duplicate",reason=""}"#).await, 1);
    assert_eq!(metric(&relay, r#"pushrelay_marmot_wakes_total{platform="apns",outcome="sent"}"#).await, 2);
    assert_eq!(metric(&relay, r#"pushrelay_marmot_wakes_total{platform="fcm",outcome="sent"}"#).await, 1);
    // Taken, not stored: even the push key's own reader would find no trigger.
    let mut reader = relay.client().await;
    assert!(reader.auth(&relay.push().keys().clone(), &relay.config.server.public_url).await.0);
    assert!(reader.req("wraps", &[json!({"kinds": [1059]})]).await.is_empty());
}

async fn malformed_triggers_are_answered_alike_and_wake_nobody() {
    let mut standin = StandIn::start().await;
    let relay = marmot_relay(&standin, |_| {}).await;
    let server = push_key(&relay);
    let mut client = relay.client().await;
    let token = || encrypted_token(&server, 0x01, &apns_bytes(3));
    let encoded = |chunks: &[u8]| STANDARD.encode(chunks);
    let version = version_tag;
    let malformed: Vec<(&str, Event)> = vec![
        ("kind", trigger_with(&server, 445, vec![version()], &encoded(&token()))),
        ("tags", trigger_with(&server, RUMOR_KIND, vec![], &encoded(&token()))),
        ("tags", trigger_with(&server, RUMOR_KIND, vec![version(), Tag::custom("x", ["y"])], &encoded(&token()))),
        ("tags", trigger_with(&server, RUMOR_KIND, vec![Tag::custom("v", ["mip05-v1"])], &encoded(&token()))),
        (
            "base64",
            trigger_with(&server, RUMOR_KIND, vec![version()], &STANDARD_NO_PAD.encode([token(), token()].concat())),
        ),
        ("size", trigger_with(&server, RUMOR_KIND, vec![version()], "")),
        ("size", trigger_with(&server, RUMOR_KIND, vec![version()], &encoded(&token()[..CHUNK_LEN - 1]))),
        ("size", trigger_with(&server, RUMOR_KIND, vec![version()], &encoded(&vec![token(); 33].concat()))),
        ("author", {
            let (sealer, someone) = (Keys::generate(), Keys::generate());
            let rumor = rumor(&someone.public_key(), RUMOR_KIND, vec![version()], &encoded(&token()));
            wrap(&server, &seal(&sealer, &server, &rumor))
        }),
        ("wrap", {
            // Addressed to our key, encrypted to another.
            let elsewhere = trigger(&Keys::generate().public_key(), &token());
            let to_us = EventBuilder::new(Kind::GiftWrap, elsewhere.content).tag(Tag::public_key(server));
            to_us.finalize(&Keys::generate()).unwrap()
        }),
    ];
    for (reason, event) in &malformed {
        assert_eq!(client.publish(event).await, (true, String::new()), "{reason}");
    }
    standin.expect_none().await;
    for reason in ["kind", "tags", "base64", "size", "author", "wrap"] {
        let series = format!(r#"pushrelay_marmot_triggers_total{{outcome="malformed",reason="{reason}"}}"#);
        let expected = malformed.iter().filter(|(r, _)| *r == reason).count() as u64;
        assert_eq!(metric(&relay, &series).await, expected, "{reason}");
    }
    // A gift wrap to anyone else is an ordinary event, stored as before.
    let friend = Keys::generate();
    let to_friend = trigger(&friend.public_key(), &token());
    assert_eq!(client.publish(&to_friend).await, (true, String::new()));
    let mut reader = relay.client().await;
    assert!(reader.auth(&friend, &relay.config.server.public_url).await.0);
    assert_eq!(reader.req_ids("wraps", &[json!({"kinds": [1059]})]).await, vec![id_of(&to_friend)]);
}

crate::on_both_backends!(
    triggers_wake_exactly_the_devices_they_carry,
    malformed_triggers_are_answered_alike_and_wake_nobody
);

/// The unwrap budget is spent before anything is decrypted, and one token is woken at most at its rate.
#[tokio::test]
async fn the_budget_and_each_tokens_rate_hold() {
    let mut standin = StandIn::start().await;
    let relay = marmot_relay(&standin, |c| {
        // Two at once, then one every half second.
        c.push.marmot.unwraps_per_minute = 120;
        c.push.marmot.wakes_per_token_per_minute = 1;
    })
    .await;
    let server = push_key(&relay);
    let mut client = relay.client().await;
    for n in [4, 4, 5] {
        // Each trigger is new content (a fresh encryption); the first two are for the same device.
        assert!(client.publish(&trigger(&server, &encrypted_token(&server, 0x01, &apns_bytes(n)))).await.0);
    }
    assert_silent_apns(&standin.next().await, &apns_bytes(4));
    standin.expect_none().await;
    assert_eq!(metric(&relay, r#"pushrelay_marmot_wakes_total{platform="apns",outcome="rate_limited"}"#).await, 1);
    assert_eq!(metric(&relay, r#"pushrelay_marmot_triggers_total{outcome="over_budget",reason=""}"#).await, 1);
}

/// The push key's inbox list names this relay and the configured inbox relays; a trigger published to one of those
/// (a second relay process, with its defaults: gift wraps only for their recipient, after AUTH) wakes the device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_list_is_served_and_inbox_relays_are_watched() {
    let mut standin = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut remote, inbox) = spawn_remote_relay(dir.path()).await;
    let relay = marmot_relay(&standin, |c| {
        c.push.marmot.inbox_relays = vec![inbox.clone()];
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
    })
    .await;
    let server = push_key(&relay);
    let mut client = relay.client().await;
    let lists = client.req("inbox", &[json!({"kinds": [10050], "authors": [server.to_hex()]})]).await;
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(lists[0]["tags"], json!([["relay", relay.config.server.public_url], ["relay", inbox]]));

    let status = || relay.handle.as_ref().unwrap().upstream_status().get(&inbox).cloned().unwrap_or_default();
    assert!(eventually(|| status().subscribed && status().authenticated).await, "{:?}", status());
    let mut there = Client::connect(&inbox).await;
    let sent = trigger(&server, &encrypted_token(&server, 0x02, FCM_TOKEN.as_bytes()));
    there.publish_ok(&sent).await;
    assert_silent_fcm(&standin.next().await);
    standin.expect_none().await;
    kill_hard(&mut remote);
}

/// Nothing of a trigger is kept: after its wakes, no decrypted token is in the database's files, in the relay's log
/// (every crate's, at debug) or in its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_decrypted_token_is_kept_anywhere() {
    let mut standin = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = apns_env(&standin.url);
    settings.extend([
        ("PUSHRELAY_PUSH__FCM__ENDPOINT", standin.url.clone()),
        (
            "PUSHRELAY_PUSH__FCM__SERVICE_ACCOUNT_FILE",
            fcm_service_account(&standin.url, dir.path()).display().to_string(),
        ),
        ("PUSHRELAY_PUSH__MARMOT__APNS_TOPIC", APP.to_owned()),
    ]);
    let log = dir.path().join("relay.log");
    let mut command = relay_command(dir.path(), &settings);
    let (mut relay, address) = spawn_relay_binary_logging(&mut command, "debug", Some(log.clone())).await;
    let server = PublicKey::from_hex(nip11(&format!("http://{address}")).await["self"].as_str().unwrap()).unwrap();
    let mut client = Client::connect(&format!("ws://{address}")).await;
    let apns = apns_bytes(7);
    let content = [encrypted_token(&server, 0x01, &apns), encrypted_token(&server, 0x02, FCM_TOKEN.as_bytes())];
    client.publish_ok(&trigger(&server, &content.concat())).await;
    let mut requests = [standin.next().await, standin.next().await];
    requests.sort_by_key(|r| r.path.starts_with("/v1/"));
    assert_silent_apns(&requests[0], &apns);
    assert_silent_fcm(&requests[1]);

    let metrics = reqwest::get(format!("http://{address}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"pushrelay_marmot_wakes_total{platform="fcm",outcome="sent"} 1"#), "{metrics}");
    kill_hard(&mut relay);
    assert!(std::fs::read_to_string(&log).unwrap().contains("DEBUG"), "the log is at debug");
    let needles = [apns.clone(), hex::encode(&apns).into_bytes(), FCM_TOKEN.as_bytes().to_vec()];
    let mut places = vec![("metrics".to_owned(), metrics.into_bytes())];
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("relay.")) {
            places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        places.len() >= 3,
        "the database, its log and the metrics: {:?}",
        places.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    for (place, bytes) in &places {
        for needle in &needles {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "a token in {place}");
        }
    }
}
