//! The relay's own notifications page (`/notifications`) and the signed-in person's devices behind it: listed,
//! tested and removed with NIP-98, each person seeing and touching only their own. (The page's script in a real
//! browser: `tests/browser.rs`.)

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use base64::Engine;
use nostr::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A request to `path` signed with NIP-98 by `signer` (`u` in the `http` form of the default public URL).
async fn signed(relay: &TestRelay, signer: &Keys, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let header = authorization(relay, signer, method, path, text.as_deref(), now());
    send(relay, &header, path, text).await
}

/// The `Authorization` header of a NIP-98 request.
fn authorization(relay: &TestRelay, signer: &Keys, method: &str, path: &str, body: Option<&str>, at: u64) -> String {
    let url = format!("{}{path}", relay.config.server.public_url.replacen("ws://", "http://", 1));
    let mut tags: Vec<Vec<String>> = vec![vec!["u".into(), url], vec!["method".into(), method.into()]];
    if let Some(text) = body {
        tags.push(vec!["payload".into(), hex::encode(Sha256::digest(text.as_bytes()))]);
    }
    let tags: Vec<Vec<&str>> = tags.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
    let tags: Vec<&[&str]> = tags.iter().map(Vec::as_slice).collect();
    let auth = sign(signer, 27235, "", &tags, at);
    format!("Nostr {}", base64::engine::general_purpose::STANDARD.encode(auth.as_json()))
}

/// Sends a request with `header` (a POST when there is a body); the status and the JSON answer.
async fn send(relay: &TestRelay, header: &str, path: &str, body: Option<String>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let request = match body {
        Some(text) => client.post(format!("{}{path}", relay.http_url())).body(text),
        None => client.get(format!("{}{path}", relay.http_url())),
    };
    let response = request.header("Authorization", header).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn the_page_is_served_and_linked() {
    let relay = TestRelay::start().await;
    let http = reqwest::Client::new();
    let front = http.get(relay.http_url()).send().await.unwrap().text().await.unwrap();
    assert!(front.contains("href=\"/notifications\""), "{front}");
    for (path, kind) in [
        ("/notifications", "text/html"),
        ("/notifications/app.js", "text/javascript"),
        ("/notifications/sw.js", "text/javascript"),
    ] {
        let response = http.get(format!("{}{path}", relay.http_url())).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
    let nip11 = relay.nip11().await;
    assert_eq!(nip11["push"]["web_client_url"], "https://njump.me/{nevent}");
}

async fn each_person_sees_tests_and_removes_only_their_devices() {
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let (user, stranger) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    register(&mut client, &relay, &user, registration(&apns_token(1), &user)).await;

    let (status, devices) = signed(&relay, &user, "GET", "/notifications/devices", None).await;
    assert_eq!(status, 200);
    assert_eq!(devices[0]["id"], apns_token(1));
    assert_eq!(devices[0]["platform"], "apns");
    assert_eq!(devices[0]["badge"], 0);
    let (_, theirs) = signed(&relay, &stranger, "GET", "/notifications/devices", None).await;
    assert_eq!(theirs, json!([]), "a stranger sees none of them");
    let unsigned = reqwest::get(format!("{}/notifications/devices", relay.http_url())).await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    // A test notification arrives even while the user is online (the page being open says so).
    register(&mut client, &relay, &user, json!({"online": 1})).await;
    let (status, _) =
        signed(&relay, &user, "POST", "/notifications/devices/test", Some(json!({"id": apns_token(1)}))).await;
    assert_eq!(status, 200);
    let request = apns.next().await;
    assert_eq!(request.path, format!("/3/device/{}", apns_token(1)));
    assert!(request.json()["aps"]["alert"]["body"].as_str().unwrap().starts_with("Test notification"));
    let (status, refused) =
        signed(&relay, &stranger, "POST", "/notifications/devices/test", Some(json!({"id": apns_token(1)}))).await;
    assert_eq!(status, 400, "{refused}");

    let (_, kept) =
        signed(&relay, &stranger, "POST", "/notifications/devices/remove", Some(json!({"id": apns_token(1)}))).await;
    assert_eq!(kept["removed"], false, "a stranger removes nothing");
    let (_, removed) =
        signed(&relay, &user, "POST", "/notifications/devices/remove", Some(json!({"id": apns_token(1)}))).await;
    assert_eq!(removed["removed"], true);
    let (_, devices) = signed(&relay, &user, "GET", "/notifications/devices", None).await;
    assert_eq!(devices, json!([]));
}

/// The test button once queued a push for every copy of one signed request (one header sent 300 times: 300 pushes)
/// and for every press. A signed request is now taken once, and a device gets one test per `test_interval_secs`.
async fn the_test_button_takes_each_signature_once_and_one_test_per_interval() {
    const TEST: &str = "/notifications/devices/test";
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let user = Keys::generate();
    let mut client = relay.client().await;
    register(&mut client, &relay, &user, registration(&apns_token(1), &user)).await;
    let body = json!({"id": apns_token(1)}).to_string();
    let header = authorization(&relay, &user, "POST", TEST, Some(&body), now());
    assert_eq!(send(&relay, &header, TEST, Some(body.clone())).await.0, 200);
    for _ in 0..3 {
        let (status, answer) = send(&relay, &header, TEST, Some(body.clone())).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains("already used"), "{answer}");
    }
    // Another signature (signed at another second: within one, the same request signed again is the same event).
    let fresh = authorization(&relay, &user, "POST", TEST, Some(&body), now() - 5);
    let (status, answer) = send(&relay, &fresh, TEST, Some(body.clone())).await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (429, "rate-limited: one test notification per device every 30 seconds")
    );
    assert!(apns.next().await.json()["aps"]["alert"]["body"].as_str().unwrap().starts_with("Test notification"));
    apns.expect_none().await;
}

crate::on_both_backends!(
    the_page_is_served_and_linked,
    each_person_sees_tests_and_removes_only_their_devices,
    the_test_button_takes_each_signature_once_and_one_test_per_interval,
);
