//! What the operator sees: Prometheus metrics and the status page (rendered in headless Chromium).

use std::process::Command;

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use serde_json::json;

/// Publishes, reads and registers a little, so that every figure has something to count.
async fn some_traffic(relay: &TestRelay) {
    let keys = Keys::generate();
    let mut client = relay.client().await;
    for i in 0..3 {
        client.publish_ok(&note(&keys, &format!("traffic {i}"))).await;
    }
    client.req("traffic", &[json!({"authors": [keys.public_key().to_hex()]})]).await;
    let user = Keys::generate();
    register(&mut client, relay, &user, registration(&apns_token(3), &user)).await;
    client.publish_ok(&dm(&keys, &user)).await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let service = StandIn::start().await;
    let relay = start_with(&service.url, |_| {}).await;
    some_traffic(&relay).await;
    let text = reqwest::get(format!("{}/metrics", relay.http_url())).await.unwrap().text().await.unwrap();
    for expected in [
        "pushrelay_messages_in_total{verb=\"EVENT\"}",
        "pushrelay_messages_out_total{verb=\"EOSE\"}",
        "pushrelay_events_stored_total{class=\"regular\"}",
        "pushrelay_req_duration_seconds_bucket",
        "pushrelay_writer_batch_size_bucket",
        "pushrelay_subscriptions",
        "pushrelay_connections",
        "pushrelay_push_registrations",
        "pushrelay_push_pubkeys{presence=\"offline\"}",
        "pushrelay_push_jobs_total{service=\"apns\",outcome=\"queued\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

/// A relay process of its own (the recorder is process-wide: in-process relays share it) is asked for `/metrics`
/// before anything happened: every metric src/metrics.rs names is there, with each known label value, at 0.
#[tokio::test]
async fn a_fresh_relay_exports_every_metric_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &[])).await;
    let text = reqwest::get(format!("http://{address}/metrics")).await.unwrap().text().await.unwrap();
    kill_hard(&mut relay);
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let names: Vec<&str> = source
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ")?.split('"').nth(1))
        .filter(|n| n.starts_with("pushrelay_"))
        .collect();
    assert!(names.len() >= 15, "the names in src/metrics.rs: {names:?}");
    let series = |name: &str| {
        text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{', '_'])).count()
    };
    let missing: Vec<&&str> = names.iter().filter(|name| series(name) == 0).collect();
    assert!(missing.is_empty(), "{missing:?} missing from:\n{text}");
    for service in ["apns", "fcm", "unifiedpush", "webpush"] {
        for outcome in ["queued", "sent", "merged", "retried"] {
            let labels = format!("service=\"{service}\",outcome=\"{outcome}\"");
            assert!(text.lines().any(|l| l.contains(&labels) && l.ends_with(" 0")), "{labels} missing from:\n{text}");
        }
        for reason in ["too_old", "refused"] {
            let labels = format!("service=\"{service}\",outcome=\"dropped\",reason=\"{reason}\"}} 0");
            assert!(text.contains(&labels), "{labels} missing from:\n{text}");
        }
    }
    for reason in ["unusable_device", "queue_full", "intake_full"] {
        assert!(text.contains(&format!("reason=\"{reason}\"}} 0")), "{reason} missing from:\n{text}");
    }
    for expected in [
        "pushrelay_messages_in_total{verb=\"REQ\"} 0",
        "pushrelay_events_stored_total{class=\"addressable\"} 0",
        "pushrelay_slow_clients_total{reason=\"send_timeout\"} 0",
        "pushrelay_upstream_connections{state=\"watching\"} 0",
        "pushrelay_req_duration_seconds_count 0",
        "pushrelay_writer_batch_size_count 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = probe.local_addr().unwrap();
    drop(probe);
    let relay = TestRelay::start_with(|c| c.server.metrics_bind = Some(address)).await;
    let main = reqwest::get(format!("{}/metrics", relay.http_url())).await.unwrap();
    assert_eq!(main.status(), 404);
    let own = reqwest::get(format!("http://{address}/metrics")).await.unwrap();
    assert!(own.status().is_success());
    assert!(own.text().await.unwrap().contains("pushrelay_"));
}

#[tokio::test]
async fn the_status_page_shows_the_figures_in_a_browser() {
    let service = StandIn::start().await;
    let relay = start_with(&service.url, |c| c.relay.name = "Status test relay".into()).await;
    some_traffic(&relay).await;
    let url = format!("{}/status", relay.http_url());
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let (dom, shot) = tokio::task::spawn_blocking(move || {
        let chromium = |args: &[&str]| {
            let output = Command::new("chromium")
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,1400"])
                .args(args)
                .output()
                .expect("Chromium runs (Debian's chromium package: apt-get install chromium)");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let dom = chromium(&["--dump-dom", &url]);
        chromium(&[&format!("--screenshot={}", screenshot.display()), &url]);
        (dom, screenshot)
    })
    .await
    .unwrap();
    assert!(dom.contains("Status test relay: status"), "{dom}");
    let push_npub = relay.handle.as_ref().unwrap().push().unwrap().npub();
    assert!(dom.contains(&push_npub), "the push pubkey is shown");
    let figure = |label: &str| -> u64 {
        let after = dom.split(&format!("<td>{label}</td><td>")).nth(1).unwrap_or_else(|| panic!("{label} missing"));
        after.split('<').next().unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    assert!(figure("Accepted in the last hour") >= 3);
    assert_eq!(figure("Registered devices"), 1);
    assert_eq!(figure("NIP-9a subscriptions"), 0);
    assert!(dom.contains("<svg"), "a chart is drawn");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a screenshot was taken: {}", shot.display());
}
