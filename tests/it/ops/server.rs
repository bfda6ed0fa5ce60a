//! The HTTP face (NIP-11, the browser page), the binary's configuration handling, and clean shutdown.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use nostr::prelude::*;
use serde_json::{Value, json};

#[tokio::test]
async fn nip11_document_advertises_the_configured_limits_with_cors() {
    let relay = TestRelay::start_with(|c| {
        c.relay.name = "Community relay".into();
        c.relay.contact = Some("mailto:op@example.com".into());
        c.limits.max_limit = 321;
    })
    .await;
    let response =
        reqwest::Client::new().get(relay.http_url()).header("Accept", "application/nostr+json").send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/nostr+json");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["name"], "Community relay");
    assert_eq!(document["contact"], "mailto:op@example.com");
    assert_eq!(document["software"], "pushrelay");
    assert!(document["supported_nips"].as_array().unwrap().contains(&json!(1)));
    let limitation = &document["limitation"];
    assert_eq!(limitation["max_limit"], 321);
    for key in [
        "max_message_length",
        "max_subscriptions",
        "default_limit",
        "max_event_tags",
        "max_content_length",
        "created_at_lower_limit",
        "created_at_upper_limit",
    ] {
        assert!(limitation[key].is_u64(), "{key} missing: {limitation}");
    }

    // CORS preflight, as a web client's browser sends it.
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, relay.http_url())
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "accept")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn a_browser_gets_a_page_naming_the_relay() {
    let relay = TestRelay::start_with(|c| c.relay.name = "<Our> relay".into()).await;
    let response = reqwest::get(relay.http_url()).await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("&lt;Our&gt; relay"), "{page}");
    assert!(page.contains(&relay.config.server.public_url));
}

#[tokio::test]
async fn shutdown_commits_every_acknowledged_event() {
    let relay = TestRelay::start().await;
    let keys = Keys::generate();
    let events: Vec<Event> = (0..300).map(|i| note(&keys, &format!("{i}"))).collect();
    let mut client = relay.client().await;
    for event in &events {
        client.send(json!(["EVENT", event])).await;
    }
    // Shut down while the events are in flight, collecting every OK that arrives.
    let url = relay.url.clone();
    let mut relay = relay;
    let shutdown = tokio::spawn(relay.handle.take().unwrap().shutdown());
    let mut acknowledged = Vec::new();
    while let Some(answer) = client.try_recv(Duration::from_secs(5)).await {
        if answer[0] == "OK" && answer[2] == true {
            acknowledged.push(answer[1].as_str().unwrap().to_owned());
        }
    }
    shutdown.await.unwrap();
    assert!(Client::try_connect(&url).await.is_none(), "no longer accepting");

    let relay = TestRelay::reopen(relay).await;
    let mut client = relay.client().await;
    let stored = client.req_ids("all", &[json!({"limit": 500})]).await;
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged event {id} was lost");
    }
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushrelay"))
}

#[test]
fn a_malformed_config_is_a_one_line_error_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[limits]\nmax_subscriptions = \"many\"\n").unwrap();
    let output = binary().arg("--config").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.toml") && stderr.contains("max_subscriptions"), "{stderr}");

    let output = binary().arg("--config").arg(dir.path().join("absent.toml")).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr).unwrap().contains("absent.toml"));
}

#[tokio::test]
async fn the_binary_takes_environment_overrides_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[server]\nbind = \"127.0.0.1:1\"\n").unwrap();
    let mut command = binary();
    command
        .arg("--config")
        .arg(&config)
        .env("PUSHRELAY_SERVER__BIND", "127.0.0.1:0")
        .env("PUSHRELAY_DATABASE__URL", format!("sqlite://{}/db/relay.db", dir.path().display()))
        .env("PUSHRELAY_RELAY__NAME", "from the environment");
    let (mut child, address) = spawn_relay_binary(&mut command).await;

    let document = nip11(&format!("http://{address}/")).await;
    assert_eq!(document["name"], "from the environment");
    let mut client = Client::connect(&format!("ws://{address}")).await;
    client.publish_ok(&note(&Keys::generate(), "before the signal")).await;

    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(dir.path().join("db/relay.db").exists());
}
