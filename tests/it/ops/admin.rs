//! The admin commands, run as the binary against a relay's database: stats, devices, export, import, vacuum.

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use serde_json::{Value, json};

/// Runs `pushrelay <args>` on the relay's database; returns (success, stdout, stderr).
async fn pushrelay(relay: &TestRelay, database_url: &str, args: &[&str]) -> (bool, String, String) {
    let config = relay.dir.path().join("admin.toml");
    let toml = format!(
        "[database]\nurl = \"{database_url}\"\n[push]\nsecret_key_file = \"{}\"\n",
        relay.config.push.secret_key_file.display()
    );
    std::fs::write(&config, toml).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .await
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn stats_devices_export_import_and_vacuum() {
    let service = StandIn::start().await;
    // Only the test's events (Marmot's inbox list of the push key is the relay's own).
    let relay = start_with(&service.url, |c| c.push.marmot.enabled = false).await;
    let url = relay.config.database.url.clone();
    let (author, user) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let notes: Vec<Event> = (0..5).map(|i| note(&author, &format!("note {i}"))).collect();
    for event in &notes {
        client.publish_ok(event).await;
    }
    register(&mut client, &relay, &user, registration(&apns_token(4), &user)).await;

    let (ok, stats, _) = pushrelay(&relay, &url, &["stats"]).await;
    assert!(ok);
    assert!(stats.contains("events stored        5") && stats.contains("devices registered   1"), "{stats}");

    let (ok, devices, _) = pushrelay(&relay, &url, &["devices"]).await;
    assert!(ok && devices.contains("apns") && devices.contains(" 1"), "{devices}");
    let npub = user.public_key().to_bech32().unwrap();
    let (ok, mine, _) = pushrelay(&relay, &url, &["devices", "--pubkey", &npub]).await;
    assert!(ok && mine.contains("apns") && mine.contains("offline"), "{mine}");
    assert!(mine.contains(&apns_token(4)[..20]) && !mine.contains(&apns_token(4)), "tokens are shortened: {mine}");

    let (ok, exported, stderr) = pushrelay(&relay, &url, &["export"]).await;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = exported.lines().collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        let event = Event::from_json(line).unwrap();
        assert!(event.verify().is_ok());
    }

    // Into a new database: the same events, then nothing new on a second import.
    let file = relay.dir.path().join("export.jsonl");
    std::fs::write(&file, &exported).unwrap();
    let copy = format!("sqlite://{}", relay.dir.path().join("copy.db").display());
    let (ok, imported, _) = pushrelay(&relay, &copy, &["import", file.to_str().unwrap()]).await;
    assert!(ok && imported.contains("5 stored"), "{imported}");
    let (_, again, _) = pushrelay(&relay, &copy, &["import", file.to_str().unwrap()]).await;
    assert!(again.contains("0 stored, 5 already there"), "{again}");

    let (ok, vacuumed, stderr) = pushrelay(&relay, &url, &["vacuum"]).await;
    assert!(ok && vacuumed.contains("vacuumed"), "{stderr}");
}

#[tokio::test]
async fn a_large_import_applies_replacement_and_counts_refusals() {
    let relay = TestRelay::start().await;
    let authors: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    let mut lines = Vec::new();
    for i in 0..2_000u64 {
        let author = &authors[i as usize % authors.len()];
        lines.push(sign(author, 1, &format!("imported {i}"), &[], now() - 10_000 + i).as_json());
    }
    // Every author's profile twice: only the newer one stays.
    for author in &authors {
        lines.push(sign(author, 0, r#"{"name":"old"}"#, &[], now() - 100).as_json());
        lines.push(sign(author, 0, r#"{"name":"new"}"#, &[], now() - 50).as_json());
    }
    let mut forged: Value = serde_json::from_str(&lines[0]).unwrap();
    forged["content"] = json!("changed");
    lines.push(forged.to_string());
    let file = relay.dir.path().join("big.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();

    let url = relay.config.database.url.clone();
    let (ok, summary, stderr) = pushrelay(&relay, &url, &["import", file.to_str().unwrap()]).await;
    assert!(ok, "{stderr}");
    // The older profiles are stored, then replaced by the newer ones of the same batch.
    assert_eq!(summary.trim(), "2040 stored, 0 already there, 0 superseded or deleted, 1 refused");
    let mut client = relay.client().await;
    let profiles = client.req("p", &[json!({"kinds": [0], "limit": 100})]).await;
    assert_eq!(profiles.len(), 20);
    assert!(profiles.iter().all(|p| p["content"] == r#"{"name":"new"}"#));
}
