//! Running the relay for a community: the NIP-86 management API (NIP-98 authenticated) and configuration reload on
//! SIGHUP.

use std::process::Command;

use crate::common::*;
use base64::Engine;
use nostr::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const RELAY_HTTP_URL: &str = "http://127.0.0.1:7777/";

/// POSTs a NIP-86 request signed (NIP-98) by `signer`; returns the HTTP status and the JSON answer.
async fn manage(relay: &TestRelay, signer: &Keys, method: &str, params: Value) -> (u16, Value) {
    let body = json!({"method": method, "params": params}).to_string();
    let signed_for = body.clone();
    post(relay, signer, body, signed_for.as_bytes()).await
}

/// POSTs `body` with a NIP-98 authorization whose payload tag is the hash of `signed_for`.
async fn post(relay: &TestRelay, signer: &Keys, body: String, signed_for: &[u8]) -> (u16, Value) {
    let payload = hex::encode(Sha256::digest(signed_for));
    let auth = sign(signer, 27235, "", &[&["u", RELAY_HTTP_URL], &["method", "POST"], &["payload", &payload]], now());
    let response = reqwest::Client::new()
        .post(relay.http_url())
        .header("Content-Type", "application/nostr+json+rpc")
        .header("Authorization", format!("Nostr {}", base64::engine::general_purpose::STANDARD.encode(auth.as_json())))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn managed_relay(admin: &Keys) -> TestRelay {
    let admin = admin.public_key().to_hex();
    TestRelay::start_with(move |c| c.auth.admin_pubkeys = vec![admin]).await
}

async fn management_api_bans_allows_and_renames() {
    let admin = Keys::generate();
    let relay = managed_relay(&admin).await;
    let (status, methods) = manage(&relay, &admin, "supportedmethods", json!([])).await;
    assert_eq!(status, 200);
    assert!(methods["result"].as_array().unwrap().contains(&json!("banpubkey")));
    assert!(relay.nip11().await["supported_nips"].as_array().unwrap().contains(&json!(86)));

    let (spammer, author) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let (status, answer) = manage(&relay, &admin, "banpubkey", json!([spammer.public_key().to_hex(), "spam"])).await;
    assert_eq!((status, &answer["result"]), (200, &json!(true)), "{answer}");
    let (accepted, reason) = client.publish(&note(&spammer, "buy now")).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    let (_, banned) = manage(&relay, &admin, "listbannedpubkeys", json!([])).await;
    assert_eq!(banned["result"], json!([{"pubkey": spammer.public_key().to_hex(), "reason": "spam"}]));

    let unwanted = note(&author, "something the operator removes");
    client.publish_ok(&unwanted).await;
    manage(&relay, &admin, "banevent", json!([id_of(&unwanted), "illegal"])).await;
    assert!(client.req_ids("gone", &[json!({"ids": [id_of(&unwanted)]})]).await.is_empty());
    client.close("gone").await;
    let (accepted, reason) = client.publish(&unwanted).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    let (_, events) = manage(&relay, &admin, "listbannedevents", json!([])).await;
    assert_eq!(events["result"][0]["id"], id_of(&unwanted));

    let friend = Keys::generate().public_key().to_hex();
    manage(&relay, &admin, "allowpubkey", json!([friend, "member"])).await;
    let (_, allowed) = manage(&relay, &admin, "listallowedpubkeys", json!([])).await;
    assert_eq!(allowed["result"][0]["pubkey"], friend);

    manage(&relay, &admin, "changerelayname", json!(["Renamed relay"])).await;
    manage(&relay, &admin, "changerelaydescription", json!(["Now with a description"])).await;
    let document = relay.nip11().await;
    assert_eq!(
        (document["name"].as_str(), document["description"].as_str()),
        (Some("Renamed relay"), Some("Now with a description"))
    );

    let (_, unknown) = manage(&relay, &admin, "dropeverything", json!([])).await;
    assert!(unknown["error"].as_str().unwrap().contains("unsupported"));
}

async fn management_api_refuses_strangers_and_forged_requests() {
    let admin = Keys::generate();
    let relay = managed_relay(&admin).await;
    let (status, answer) = manage(&relay, &Keys::generate(), "supportedmethods", json!([])).await;
    assert_eq!(status, 401);
    assert!(answer["error"].as_str().unwrap().contains("not an administrator"));

    // A signed request whose body was changed on the way.
    let body = json!({"method": "banpubkey", "params": ["ab".repeat(32)]}).to_string();
    assert_eq!(post(&relay, &admin, body, b"something else").await.0, 401);

    // Without configured administrators the API is off.
    let closed = TestRelay::start().await;
    assert_eq!(manage(&closed, &admin, "supportedmethods", json!([])).await.0, 401);
}

crate::on_both_backends!(management_api_bans_allows_and_renames, management_api_refuses_strangers_and_forged_requests);

#[tokio::test]
async fn sighup_reloads_limits_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let write = |denied: &str, max_limit: u32| {
        std::fs::write(&config, format!("[limits]\nmax_limit = {max_limit}\n[policy]\nkind_denylist = [{denied}]\n"))
            .unwrap();
    };
    write("", 500);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushrelay"));
    command
        .arg("--config")
        .arg(&config)
        .env("PUSHRELAY_SERVER__BIND", "127.0.0.1:0")
        .env("PUSHRELAY_DATABASE__URL", format!("sqlite://{}/relay.db", dir.path().display()))
        .env("PUSHRELAY_PUSH__SECRET_KEY_FILE", dir.path().join("push.key"))
        .env("PUSHRELAY_PUSH__WEBPUSH__VAPID_KEY_FILE", dir.path().join("vapid.key"));
    let (mut child, address) = spawn_relay_binary(&mut command).await;
    let url = format!("ws://{address}");
    let keys = Keys::generate();
    Client::connect(&url).await.publish_ok(&sign(&keys, 30023, "an article", &[&["d", "a"]], now())).await;

    write("30023", 250);
    Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        if nip11(&format!("http://{address}/")).await["limitation"]["max_limit"] == 250 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the new limit is advertised");
    let (accepted, reason) =
        Client::connect(&url).await.publish(&sign(&keys, 30023, "another", &[&["d", "b"]], now())).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");

    // A broken file is refused; the relay keeps going with what it had.
    std::fs::write(&config, "[limits]\nmax_limit = \"lots\"\n").unwrap();
    Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(nip11(&format!("http://{address}/")).await["limitation"]["max_limit"], 250);
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(child.wait().unwrap().success());
}
