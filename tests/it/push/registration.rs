//! Push registration (kind 22456) over a real WebSocket, with real NIP-04 / NIP-44 encrypted events, against the
//! relay's SQLite file: registrations, heartbeats, presence, logout, errors, replays and restarts.

use std::sync::Arc;
use std::time::Duration;

use crate::common::push::try_register;
use crate::common::*;
use nostr::prelude::*;
use pushrelay::protocol::VerifiedEvent;
use pushrelay::push::audience::index::Registration;
use pushrelay::push::audience::values::TagValue;
use serde_json::{Value, json};

const BUNDLE: &str = "com.example.app";

fn apns_device(n: u8) -> String {
    format!("{BUNDLE}{}", format!("{n:02x}").repeat(32))
}

async fn start() -> TestRelay {
    start_with_timeout(180).await
}

async fn start_with_timeout(heartbeat_timeout_secs: u64) -> TestRelay {
    TestRelay::start_with(|c| {
        c.push.heartbeat_timeout_secs = heartbeat_timeout_secs;
        c.push.apns.bundle_ids = vec![BUNDLE.into()];
        c.push.max_kinds = 16;
        c.push.max_devices_per_pubkey = 2;
        c.push.max_pubkeys_per_device = 2;
    })
    .await
}

fn full_registration(device_id: &str, user: &Keys) -> Value {
    json!({
        "kinds": [4, 1059, 9735, 7],
        "deviceId": device_id,
        "relays": ["wss://relay.example.com"],
        "#p": [user.public_key().to_hex()],
        "#e": ["group-1"],
        "authors": [Keys::generate().public_key().to_hex()],
    })
}

fn registrations(relay: &TestRelay, user: &Keys) -> Vec<Arc<Registration>> {
    relay.push().registry().registrations_of(user.public_key().as_bytes())
}

fn online(relay: &TestRelay, user: &Keys) -> bool {
    relay.push().registry().is_online(user.public_key().as_bytes(), relay.clock().db_secs())
}

/// The devices that an event from `author` p-tagging `user` would notify now.
fn notified_by_dm(relay: &TestRelay, author: &Keys, user: &Keys, kind: u16) -> Vec<String> {
    let event = sign(author, kind, "ciphertext", &[&["p", &user.public_key().to_hex()]], now());
    let event = VerifiedEvent::new(event);
    relay.push().registry().matching(&event, relay.clock().db_secs()).iter().map(|r| r.device_id.clone()).collect()
}

async fn nip11_advertises_the_push_pubkey_as_self() {
    let relay = start().await;
    let document = relay.nip11().await;
    assert_eq!(document["self"], relay.push().public_key().to_hex());
}

async fn a_full_registration_is_applied_with_either_cipher() {
    let relay = start().await;
    let mut client = relay.client().await;
    for (cipher, n) in [(Cipher::Nip04, 1), (Cipher::Nip44, 2)] {
        let user = Keys::generate();
        let content = full_registration(&apns_device(n), &user);
        let event = registration_event(&user, &relay.push().public_key(), &content, cipher, now());
        assert_eq!(client.publish(&event).await, (true, String::new()));

        let stored = registrations(&relay, &user);
        assert_eq!(stored.len(), 1);
        let r = &stored[0];
        assert_eq!(r.device_id, apns_device(n));
        assert_eq!((r.address().into_owned(), r.platform), (format!("apns:{}", format!("{n:02x}").repeat(32)), "apns"));
        assert_eq!(*r.kinds, [4, 1059, 9735, 7]);
        assert_eq!(*r.p_tags, [user.public_key().to_bytes()]);
        assert_eq!(*r.e_tags, [TagValue::new("group-1")]);
        assert_eq!(*r.relays, ["wss://relay.example.com"]);
        assert_eq!(r.authors.len(), 1);
        assert!(!online(&relay, &user), "a registration alone says nothing of presence");
    }
}

async fn every_device_form_is_recognised() {
    let relay = start().await;
    let mut client = relay.client().await;
    for (device_id, platform) in [
        (apns_device(3), "apns"),
        ("Embedded-FCM/FCM?v2&instance=default&token=fcm:TOKEN_abc".to_string(), "fcm"),
        ("https://up.example.org/push/abc".to_string(), "unifiedpush"),
        ("cXyZ:APA91bFakeFcmToken_0123456789".to_string(), "fcm"),
    ] {
        let user = Keys::generate();
        let (accepted, reason) =
            try_register(&mut client, &relay, &user, json!({"deviceId": device_id, "kinds": [4]})).await;
        assert!(accepted, "{device_id}: {reason}");
        assert_eq!(registrations(&relay, &user)[0].platform, platform, "{device_id}");
    }
}

async fn registrations_are_never_stored_nor_delivered_but_other_22456_events_are_ephemeral() {
    let relay = start().await;
    let mut watcher = relay.client().await;
    assert!(watcher.req("spy", &[json!({"kinds": [22456]})]).await.is_empty());
    let mut client = relay.client().await;
    let user = Keys::generate();
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(1), &user)).await.0);
    assert!(try_register(&mut client, &relay, &user, json!({"online": 1})).await.0);
    watcher.expect_silence().await;
    assert!(client.req("later", &[json!({"kinds": [22456]})]).await.is_empty());
    client.close("later").await;

    // Addressed to some other push server: an ordinary ephemeral event.
    let elsewhere = Keys::generate().public_key();
    let other = registration_event(&user, &elsewhere, &json!({"online": 1}), Cipher::Nip04, now());
    client.publish_ok(&other).await;
    assert_eq!(watcher.recv().await, json!(["EVENT", "spy", other]));
    assert!(client.req("again", &[json!({"kinds": [22456]})]).await.is_empty());
}

async fn heartbeat_online_zero_and_timeout_drive_presence() {
    let relay = start_with_timeout(2).await;
    let mut client = relay.client().await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(1), &user)).await.0);
    assert_eq!(notified_by_dm(&relay, &friend, &user, 4), vec![apns_device(1)], "offline until a heartbeat");

    assert!(try_register(&mut client, &relay, &user, json!({"online": 1})).await.0);
    assert!(online(&relay, &user));
    assert!(notified_by_dm(&relay, &friend, &user, 4).is_empty(), "online devices get nothing");

    assert!(try_register(&mut client, &relay, &user, json!({"online": 0})).await.0);
    assert!(!online(&relay, &user));
    assert_eq!(registrations(&relay, &user).len(), 1, "going to the background keeps the device");

    // Older apps put online: 1 in the registration itself.
    assert!(try_register(&mut client, &relay, &user, json!({"online": 1, "kinds": [4]})).await.0);
    assert!(online(&relay, &user));
    relay.clock().advance(Duration::from_secs(3));
    assert!(!online(&relay, &user), "no heartbeat within the timeout: offline");
    assert_eq!(notified_by_dm(&relay, &friend, &user, 4), vec![apns_device(1)]);
}

async fn matching_respects_kinds_self_and_excluded_authors() {
    let relay = start().await;
    let mut client = relay.client().await;
    let (user, friend, pest) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut content = full_registration(&apns_device(1), &user);
    content["exclude_authors"] = json!([pest.public_key().to_hex()]);
    assert!(try_register(&mut client, &relay, &user, content).await.0);
    assert_eq!(notified_by_dm(&relay, &friend, &user, 1059), vec![apns_device(1)]);
    assert!(notified_by_dm(&relay, &friend, &user, 1).is_empty(), "kind not registered");
    assert!(notified_by_dm(&relay, &user, &user, 4).is_empty(), "own events");
    assert!(notified_by_dm(&relay, &pest, &user, 4).is_empty(), "excluded author");

    // A group message: its h tag names a watched group.
    let group_message = VerifiedEvent::new(sign(&friend, 9, "hi all", &[&["h", "group-1"]], now()));
    assert!(relay.push().registry().matching(&group_message, now() as i64).is_empty(), "kind 9 not registered");
    assert!(try_register(&mut client, &relay, &user, json!({"kinds": [9]})).await.0);
    assert_eq!(relay.push().registry().matching(&group_message, now() as i64).len(), 1);
}

async fn partial_updates_keep_the_other_fields() {
    let relay = start().await;
    let mut client = relay.client().await;
    let user = Keys::generate();
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(1), &user)).await.0);
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(2), &user)).await.0);
    let before = registrations(&relay, &user);

    // Named device: only that one changes, only in the field sent.
    assert!(try_register(&mut client, &relay, &user, json!({"deviceId": apns_device(1), "kinds": [1]})).await.0);
    let after = registrations(&relay, &user);
    assert_eq!(*after[0].kinds, [1]);
    assert_eq!(after[0].p_tags, before[0].p_tags);
    assert_eq!(after[0].relays, before[0].relays);
    assert_eq!(after[1].kinds, before[1].kinds);

    // No device id: every device of the pubkey takes the field.
    assert!(try_register(&mut client, &relay, &user, json!({"#e": ["group-2"], "whatever": 1})).await.0);
    for r in registrations(&relay, &user) {
        assert_eq!(*r.e_tags, [TagValue::new("group-2")]);
    }
    // An empty kinds list notifies nothing.
    assert!(try_register(&mut client, &relay, &user, json!({"kinds": []})).await.0);
    assert!(notified_by_dm(&relay, &Keys::generate(), &user, 4).is_empty());
}

async fn logout_drops_every_device_of_the_pubkey() {
    let relay = start().await;
    let mut client = relay.client().await;
    let (user, other) = (Keys::generate(), Keys::generate());
    for (who, n) in [(&user, 1), (&user, 2), (&other, 3)] {
        assert!(try_register(&mut client, &relay, who, full_registration(&apns_device(n), who)).await.0);
    }
    assert!(try_register(&mut client, &relay, &user, json!({"online": 0, "deviceId": ""})).await.0);
    assert!(registrations(&relay, &user).is_empty());
    assert_eq!(registrations(&relay, &other).len(), 1, "other users keep theirs");
}

async fn bad_registrations_are_refused_and_change_nothing() {
    let relay = start().await;
    let mut client = relay.client().await;
    let user = Keys::generate();
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(1), &user)).await.0);
    let before = registrations(&relay, &user);
    let push_key = relay.push().public_key();

    // Encrypted to another key: the relay cannot read it.
    let stranger = Keys::generate().public_key();
    let mut unreadable = registration_event(&user, &stranger, &json!({"kinds": [1]}), Cipher::Nip04, now());
    unreadable = sign(&user, 22456, &unreadable.content, &[&["p", &push_key.to_hex()]], now());
    assert_eq!(client.publish(&unreadable).await, (false, "invalid: cannot decrypt".into()));
    let garbage = sign(&user, 22456, "not encrypted at all", &[&["p", &push_key.to_hex()]], now());
    assert_eq!(client.publish(&garbage).await, (false, "invalid: cannot decrypt".into()));

    for (content, field) in [
        (json!([1, 2]), "object"),
        (json!("text"), "object"),
        (json!({"kinds": "4"}), "kinds"),
        (json!({"deviceId": 12}), "deviceId"),
        (json!({"#p": "abc"}), "#p"),
        (json!({"relays": [1]}), "relays"),
        (json!({"online": "yes"}), "online"),
        (json!({"deviceId": "bad device id"}), "deviceId"),
        (json!({"deviceId": format!("org.unknown.app{}", "ab".repeat(32))}), "bundle id"),
    ] {
        let (accepted, reason) = try_register(&mut client, &relay, &user, content.clone()).await;
        assert!(!accepted, "{content}");
        assert!(reason.starts_with("invalid:") && reason.contains(field), "{content}: {reason}");
    }
    assert_eq!(registrations(&relay, &user), before);
}

async fn replays_and_stale_events_change_nothing() {
    let relay = start().await;
    let mut client = relay.client().await;
    let user = Keys::generate();
    let push_key = relay.push().public_key();
    let t = now();
    let newer =
        registration_event(&user, &push_key, &json!({"deviceId": apns_device(1), "kinds": [4]}), Cipher::Nip04, t);
    let older =
        registration_event(&user, &push_key, &json!({"deviceId": apns_device(1), "kinds": [7]}), Cipher::Nip04, t - 30);
    assert_eq!(client.publish(&newer).await, (true, String::new()));
    let (accepted, reason) = client.publish(&older).await;
    assert!(accepted);
    assert!(reason.starts_with("duplicate:"), "{reason}");
    assert_eq!(*registrations(&relay, &user)[0].kinds, [4]);

    // Outside the window around now (default 600 s): refused.
    let stale = registration_event(&user, &push_key, &json!({"online": 1}), Cipher::Nip04, t - 3600);
    let (accepted, reason) = client.publish(&stale).await;
    assert!(!accepted);
    assert!(reason.starts_with("invalid:"), "{reason}");
    assert!(!online(&relay, &user));
}

async fn caps_on_devices_per_pubkey_and_pubkeys_per_device() {
    let relay = start().await;
    let mut client = relay.client().await;
    let user = Keys::generate();
    for n in 1..=2 {
        assert!(try_register(&mut client, &relay, &user, json!({"deviceId": apns_device(n)})).await.0);
    }
    let (accepted, reason) = try_register(&mut client, &relay, &user, json!({"deviceId": apns_device(3)})).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    // Updating a device it already has is still fine.
    assert!(try_register(&mut client, &relay, &user, json!({"deviceId": apns_device(2), "kinds": [4]})).await.0);

    let shared = apns_device(9);
    for _ in 0..2 {
        assert!(try_register(&mut client, &relay, &Keys::generate(), json!({"deviceId": shared})).await.0);
    }
    let (accepted, reason) = try_register(&mut client, &relay, &Keys::generate(), json!({"deviceId": shared})).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
}

async fn a_restart_keeps_registrations_presence_and_the_key() {
    let relay = start_with_timeout(60).await;
    let mut client = relay.client().await;
    let (user, sleeper, friend) = (Keys::generate(), Keys::generate(), Keys::generate());
    let push_key = relay.push().public_key();
    assert!(try_register(&mut client, &relay, &user, full_registration(&apns_device(1), &user)).await.0);
    assert!(try_register(&mut client, &relay, &user, json!({"online": 1})).await.0);
    assert!(try_register(&mut client, &relay, &sleeper, full_registration(&apns_device(2), &sleeper)).await.0);
    drop(client);

    let relay = relay.restart().await;
    assert_eq!(relay.push().public_key(), push_key, "same push identity");
    assert_eq!(registrations(&relay, &user).len(), 1);
    assert!(online(&relay, &user), "still within its heartbeat timeout");
    assert!(!online(&relay, &sleeper), "a restart marks no one online");
    assert_eq!(notified_by_dm(&relay, &friend, &sleeper, 4), vec![apns_device(2)], "index rebuilt");
    assert!(notified_by_dm(&relay, &friend, &user, 4).is_empty());
}

#[test]
fn the_keys_command_prints_the_pubkey_nip11_advertises() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("push.key");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"))
        .args(["--config", "config.toml", "keys"])
        .env("PUSHRELAY_PUSH__SECRET_KEY_FILE", &key_file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let keys = Keys::parse(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    assert!(stdout.contains(&keys.public_key().to_hex()), "{stdout}");
    assert!(stdout.contains(&keys.public_key().to_bech32().unwrap()), "{stdout}");
}

crate::on_both_backends!(
    nip11_advertises_the_push_pubkey_as_self,
    a_full_registration_is_applied_with_either_cipher,
    every_device_form_is_recognised,
    registrations_are_never_stored_nor_delivered_but_other_22456_events_are_ephemeral,
    heartbeat_online_zero_and_timeout_drive_presence,
    matching_respects_kinds_self_and_excluded_authors,
    partial_updates_keep_the_other_fields,
    logout_drops_every_device_of_the_pubkey,
    bad_registrations_are_refused_and_change_nothing,
    replays_and_stale_events_change_nothing,
    caps_on_devices_per_pubkey_and_pubkeys_per_device,
    a_restart_keeps_registrations_presence_and_the_key,
);
