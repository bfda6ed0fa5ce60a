//! Watching users' relays: a second relay (our own, with its own database) plays the remote; a device registered
//! on the first names it, and events published only there still push, once.

use std::time::Duration;

use crate::common::push::{dm, fixture};
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use pushrelay::Config;
use serde_json::{Value, json};

/// The push relay: APNs at `apns_url`, watching relays on loopback allowed.
async fn push_relay(apns_url: &str) -> TestRelay {
    push_relay_with(apns_url, |_| {}).await
}

async fn push_relay_with(apns_url: &str, adjust: impl FnOnce(&mut Config)) -> TestRelay {
    let apns_url = apns_url.to_owned();
    TestRelay::start_with(move |c: &mut Config| {
        c.push.apns.endpoint = apns_url;
        c.push.apns.key_file = Some(fixture("apns_test_key.p8").into());
        c.push.apns.key_id = "KEYID12345".into();
        c.push.apns.team_id = "TEAM123456".into();
        c.push.apns.topic = "com.example.app".into();
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
        adjust(c);
    })
    .await
}

async fn register(relay: &TestRelay, user: &Keys, relays: &[&str]) -> (bool, String) {
    let push_key = relay.handle.as_ref().unwrap().push().unwrap().public_key();
    let content = json!({
        "kinds": [4],
        "deviceId": "ab".repeat(32),
        "#p": [user.public_key().to_hex()],
        "relays": relays,
    });
    let mut client = relay.client().await;
    client.publish(&registration_event(user, &push_key, &content, Cipher::Nip04, now())).await
}

/// Waits until the push relay follows `remote` live (subscribed and past EOSE).
async fn wait_until_watching(relay: &TestRelay, remote: &str) {
    for _ in 0..200 {
        if relay.handle.as_ref().unwrap().upstream_status().get(remote).is_some_and(|s| s.subscribed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never watching {remote}: {:?}", relay.handle.as_ref().unwrap().upstream_status());
}

/// The remote: our own relay, with its own database, serving DMs without AUTH as many relays do. (One that gates
/// them answers the watcher `CLOSED auth-required:`, which is logged and shown in the status.)
async fn remote_relay() -> TestRelay {
    TestRelay::start_with(|c| c.auth.read_restricted_kinds = vec![]).await
}

#[tokio::test]
async fn an_event_only_on_a_watched_relay_pushes_once() {
    let mut apns = StandIn::start().await;
    let remote = remote_relay().await;
    let relay = push_relay(&apns.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    assert_eq!(register(&relay, &user, &[&remote.url]).await, (true, String::new()));
    wait_until_watching(&relay, &remote.url).await;

    let message = dm(&friend, &user);
    remote.client().await.publish_ok(&message).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&message));
    apns.expect_none().await;

    // Published on both relays: still one push.
    let both = dm(&friend, &user);
    remote.client().await.publish_ok(&both).await;
    relay.client().await.publish_ok(&both).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&both));
    apns.expect_none().await;

    // Events that do not concern the user, or forged ones, push nothing.
    remote.client().await.publish_ok(&note(&friend, "unrelated")).await;
    apns.expect_none().await;
}

#[tokio::test]
async fn a_mute_list_kept_on_a_watched_relay_silences_there_too() {
    let mut apns = StandIn::start().await;
    let remote = remote_relay().await;
    let relay = push_relay(&apns.url).await;
    let (user, friend, spammer) = (Keys::generate(), Keys::generate(), Keys::generate());
    // Published on the remote only, before the user registered here.
    let mute_list = sign(&user, 10000, "", &[&["p", &spammer.public_key().to_hex()]], now() - 3600);
    remote.client().await.publish_ok(&mute_list).await;
    assert_eq!(register(&relay, &user, &[&remote.url]).await, (true, String::new()));
    wait_until_watching(&relay, &remote.url).await;

    remote.client().await.publish_ok(&dm(&spammer, &user)).await;
    let welcome = dm(&friend, &user);
    remote.client().await.publish_ok(&welcome).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&welcome));
    apns.expect_none().await;
}

#[tokio::test]
async fn with_store_events_remote_events_are_also_served_here() {
    let mut apns = StandIn::start().await;
    let remote = remote_relay().await;
    let apns_url = apns.url.clone();
    let mut relay = push_relay(&apns_url).await;
    // Same relay again with store_events on (a fresh database is fine for this check).
    relay.handle.take().unwrap().shutdown().await;
    let mut config = relay.config.clone();
    config.upstream.store_events = true;
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    let relay = TestRelay::reopen_with(relay, config).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    assert!(register(&relay, &user, &[&remote.url]).await.0);
    wait_until_watching(&relay, &remote.url).await;
    let message = dm(&friend, &user);
    remote.client().await.publish_ok(&message).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&message));
    let mut reader = relay.client().await;
    assert!(reader.auth(&user, &relay.config.server.public_url).await.0);
    assert_eq!(reader.req_ids("dm", &[json!({"kinds": [4]})]).await, vec![id_of(&message)]);
}

#[tokio::test]
async fn the_watch_survives_the_remote_restarting() {
    let mut apns = StandIn::start().await;
    let remote = remote_relay().await;
    let remote_url = remote.url.clone();
    let relay = push_relay(&apns.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    assert!(register(&relay, &user, &[&remote_url]).await.0);
    wait_until_watching(&relay, &remote_url).await;

    // The remote goes away and comes back on the same address.
    let mut remote = remote;
    remote.handle.take().unwrap().shutdown().await;
    let address = remote_url.trim_start_matches("ws://").to_owned();
    let mut config = remote.config.clone();
    config.server.bind = address.parse().unwrap();
    let remote = TestRelay::reopen_with(remote, config).await;
    assert_eq!(remote.url, remote_url);

    let message = dm(&friend, &user);
    // Published right away, possibly before the watcher is back: `since` covers the gap.
    remote.client().await.publish_ok(&message).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&message));
    apns.expect_none().await;
}

#[tokio::test]
async fn online_users_are_not_watched() {
    let apns = StandIn::start().await;
    let remote = remote_relay().await;
    let relay = push_relay(&apns.url).await;
    let user = Keys::generate();
    assert!(register(&relay, &user, &[&remote.url]).await.0);
    wait_until_watching(&relay, &remote.url).await;
    let push_key = relay.handle.as_ref().unwrap().push().unwrap().public_key();
    let heartbeat = registration_event(&user, &push_key, &json!({"online": 1}), Cipher::Nip04, now());
    relay.client().await.publish_ok(&heartbeat).await;
    for _ in 0..100 {
        if relay.handle.as_ref().unwrap().upstream_status().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still watching: {:?}", relay.handle.as_ref().unwrap().upstream_status());
}

#[tokio::test]
async fn a_remote_that_requires_auth_is_reported() {
    let apns = StandIn::start().await;
    let gated = TestRelay::start().await; // serves DMs only after AUTH, like this relay's defaults
    let relay = push_relay(&apns.url).await;
    let user = Keys::generate();
    assert!(register(&relay, &user, &[&gated.url]).await.0);
    for _ in 0..200 {
        let status = relay.handle.as_ref().unwrap().upstream_status();
        if let Some(remote) = status.get(&gated.url).filter(|s| s.refusals > 0) {
            assert!(remote.last_error.as_deref().unwrap().starts_with("auth-required:"), "{remote:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no refusal seen: {:?}", relay.handle.as_ref().unwrap().upstream_status());
}

#[tokio::test]
async fn relays_on_private_addresses_or_plain_ws_are_left_out_by_default() {
    let apns = StandIn::start().await;
    let relay = TestRelay::start_with(|c| c.push.apns.endpoint = apns.url.clone()).await;
    let user = Keys::generate();
    let relays_of_user = || {
        relay.handle.as_ref().unwrap().push().unwrap().registry().registrations_of(user.public_key().as_bytes())[0]
            .relays
            .clone()
    };
    for bad in ["wss://127.0.0.1:7777", "wss://localhost/", "ws://relay.example.com", "not a url"] {
        // The registration stands (the app's user still gets pushes), without that relay, and the app is told.
        let (accepted, reason) = register(&relay, &user, &[bad, "wss://relay.example.com"]).await;
        assert!(accepted, "{bad}");
        assert!(reason.starts_with("relays: left out"), "{bad}: {reason}");
        assert_eq!(*relays_of_user(), ["wss://relay.example.com"]);
    }
    assert_eq!(register(&relay, &user, &["wss://relay.example.com"]).await, (true, String::new()));
    let _: Value = relay.nip11().await;
}

#[tokio::test]
async fn the_relay_never_watches_itself() {
    let apns = StandIn::start().await;
    let relay = push_relay(&apns.url).await;
    let own = relay.config.server.public_url.clone();
    let remote = remote_relay().await;
    let user = Keys::generate();
    assert!(register(&relay, &user, &[&own, &remote.url]).await.0);
    wait_until_watching(&relay, &remote.url).await;
    let watched: Vec<String> = relay.handle.as_ref().unwrap().upstream_status().into_keys().collect();
    assert_eq!(watched, vec![remote.url.clone()]);
}

/// GETs `/status/relays` with a NIP-98 authorization signed by `signer`, if any; returns the status and the page.
async fn relay_details(relay: &TestRelay, signer: Option<&Keys>) -> (u16, String) {
    use base64::Engine;
    let mut request = reqwest::Client::new().get(format!("{}/status/relays", relay.http_url()));
    if let Some(signer) = signer {
        // The u tag names the relay's public URL (its http:// form), which the test relays leave at the default.
        let auth = sign(signer, 27235, "", &[&["u", "http://127.0.0.1:7777/status/relays"], &["method", "GET"]], now());
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth.as_json());
        request = request.header("Authorization", format!("Nostr {encoded}"));
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_public_status_page_does_not_name_watched_relays_nor_their_errors() {
    let apns = StandIn::start().await;
    let admin = Keys::generate();
    let admin_hex = admin.public_key().to_hex();
    let relay = push_relay_with(&apns.url, move |c| c.auth.admin_pubkeys = vec![admin_hex]).await;
    let remote = remote_relay().await;
    // A name that never resolves: its error ("cannot resolve ...") is what a port scanner would read.
    let unreachable = "wss://unreachable-relay-name.invalid";
    assert!(register(&relay, &Keys::generate(), &[&remote.url, unreachable]).await.0);
    wait_until_watching(&relay, &remote.url).await;
    for _ in 0..200 {
        if relay.handle.as_ref().unwrap().upstream_status().get(unreachable).is_some_and(|s| s.last_error.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let page = reqwest::get(format!("{}/status", relay.http_url())).await.unwrap().text().await.unwrap();
    let remote_port = remote.url.rsplit(':').next().unwrap();
    assert!(!page.contains(&remote.url) && !page.contains(&format!(":{remote_port}")), "{page}");
    assert!(!page.contains("unreachable-relay-name") && !page.contains("resolve"), "{page}");
    for (label, value) in [("Relays watched", 2), ("Connected", 1), ("Failing", 1)] {
        assert!(page.contains(&format!("<td>{label}</td><td>{value}</td>")), "{label} = {value}: {page}");
    }

    assert_eq!(relay_details(&relay, None).await.0, 401, "no authorization");
    assert_eq!(relay_details(&relay, Some(&Keys::generate())).await.0, 401, "not an administrator");
    let (status, details) = relay_details(&relay, Some(&admin)).await;
    assert_eq!(status, 200, "{details}");
    assert!(details.contains(&remote.url) && details.contains("watching"), "{details}");
    assert!(details.contains(unreachable) && details.contains("cannot resolve"), "{details}");
}

/// Registers `user` for `kinds`, watching `relays`, on one APNs device.
async fn register_kinds(relay: &TestRelay, user: &Keys, kinds: &[u16], relays: &[&str]) {
    let push_key = relay.handle.as_ref().unwrap().push().unwrap().public_key();
    let content =
        json!({"kinds": kinds, "deviceId": "ab".repeat(32), "#p": [user.public_key().to_hex()], "relays": relays});
    let mut client = relay.client().await;
    client.publish_ok(&registration_event(user, &push_key, &content, Cipher::Nip04, now())).await;
}

/// 0xchat's kinds include DMs; the remote (a real second relay process, with its defaults) serves DMs only after
/// NIP-42 AUTH. The private kinds are asked for apart, so their refusal costs the public mention nothing; the
/// watcher answers the remote's challenge with the push key, and the remote then serves the private subscription
/// (showing the push key nothing of the user's DMs, as a push is a read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_gates_dms_still_yields_public_mentions_and_is_authenticated_to() {
    let mut apns = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut remote, remote_url) = spawn_remote_relay(dir.path()).await;
    let relay = push_relay(&apns.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register_kinds(&relay, &user, &[1, 4], &[&remote_url]).await;
    let status = || relay.handle.as_ref().unwrap().upstream_status().get(&remote_url).cloned().unwrap_or_default();
    let served = || status().subscribed && status().authenticated && status().refused.is_empty();
    assert!(crate::common::push::eventually(served).await, "{:?}", status());

    let mut there = Client::connect(&remote_url).await;
    there.publish_ok(&dm(&friend, &user)).await;
    let mention = sign(&friend, 1, "hello", &[&["p", &user.public_key().to_hex()]], now());
    there.publish_ok(&mention).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&mention));
    apns.expect_none().await;
    kill_hard(&mut remote);
}

/// A remote whose AUTH the watcher cannot satisfy (it names another URL for itself): the private subscription
/// stays refused (shown per relay, and counted in `/metrics`) and is asked again only later; public kinds flow.
#[tokio::test]
async fn a_refused_private_subscription_is_shown_and_costs_public_kinds_nothing() {
    let mut apns = StandIn::start().await;
    let remote = TestRelay::start().await;
    let relay = push_relay(&apns.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register_kinds(&relay, &user, &[1, 4, 1059], &[&remote.url]).await;
    let status = || relay.handle.as_ref().unwrap().upstream_status().get(&remote.url).cloned().unwrap_or_default();
    assert!(
        crate::common::push::eventually(|| status().subscribed && !status().refused.is_empty()).await,
        "{:?}",
        status()
    );
    let refused = status().refused;
    assert!(refused.keys().eq(["private [4, 1059]"]), "{refused:?}");
    assert!(refused.values().all(|why| why.starts_with("auth-required:")), "{refused:?}");
    let metrics = reqwest::get(format!("{}/metrics", relay.http_url())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"pushrelay_upstream_refused_relays{subscription="private"} 1"#), "{metrics}");

    let mention = sign(&friend, 1, "hello", &[&["p", &user.public_key().to_hex()]], now());
    remote.client().await.publish_ok(&mention).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&mention));
}

/// NIP-17: a user's DM inbox relays (kind 10050), which 0xchat leaves out of `relays`, are watched for the gift
/// wraps the registration wants.
#[tokio::test]
async fn dm_inbox_relays_from_a_kind_10050_list_are_watched() {
    let mut apns = StandIn::start().await;
    let inbox = remote_relay().await;
    let relay = push_relay(&apns.url).await;
    let user = Keys::generate();
    register_kinds(&relay, &user, &[1059], &[]).await;
    relay.client().await.publish_ok(&sign(&user, 10050, "", &[&["relay", &inbox.url]], now())).await;
    wait_until_watching(&relay, &inbox.url).await;

    let wrap = sign(&Keys::generate(), 1059, "sealed", &[&["p", &user.public_key().to_hex()]], now() - 3600);
    inbox.client().await.publish_ok(&wrap).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&wrap));
}

/// Every stored event meets the relay's own limits and policy whatever its door: a blocked author's DM and a DM over
/// the content limit, both refused when published here, were stored when a watched relay served them (with
/// `store_events`). Now they are pushed as any watched event is, and not stored.
#[tokio::test]
async fn with_store_events_watched_events_meet_the_relays_own_rules() {
    let mut apns = StandIn::start().await;
    let remote = remote_relay().await;
    let (user, friend, blocked) = (Keys::generate(), Keys::generate(), Keys::generate());
    let blocked_hex = blocked.public_key().to_hex();
    let relay = push_relay_with(&apns.url, |c| {
        c.upstream.store_events = true;
        c.limits.max_content_length = 2000;
        c.policy.pubkey_blocklist = vec![blocked_hex];
    })
    .await;
    assert!(register(&relay, &user, &[&remote.url]).await.0);
    wait_until_watching(&relay, &remote.url).await;

    let user_hex = user.public_key().to_hex();
    let too_long = sign(&friend, 4, &"x".repeat(5000), &[&["p", &user_hex]], now());
    let (from_blocked, fine) = (dm(&blocked, &user), dm(&friend, &user));
    let mut client = remote.client().await;
    for event in [&from_blocked, &too_long, &fine] {
        client.publish_ok(event).await;
    }
    while apns.next().await.json()["event_id"] != id_of(&fine) {}
    let mut reader = relay.client().await;
    assert!(reader.auth(&user, &relay.config.server.public_url).await.0);
    assert_eq!(reader.req_ids("dm", &[json!({"kinds": [4]})]).await, vec![id_of(&fine)]);
}
