//! Publish-to-push latency under load: N offline devices are registered, then matching direct messages are
//! published at a steady rate, and a local APNs stand-in (HTTP/2, on loopback) notes when each push arrives.
//! Prints latency percentiles from the moment the EVENT was sent to the moment the APNs request arrived.
//!
//! `cargo bench --bench push_latency -- [--devices 1000] [--events 5000] [--rate 1000]`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use futures_util::{SinkExt, StreamExt};
use nostr::nips::nip04;
use nostr::prelude::*;
use pushrelay::{Config, RelayHandle};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn apns_stand_in(arrivals: Arrivals) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .fallback(|State(arrivals): State<Arrivals>, body: Bytes| async move {
            let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(id) = payload["event_id"].as_str() {
                arrivals.lock().unwrap().entry(id.to_owned()).or_insert_with(Instant::now);
            }
            "{}"
        })
        .with_state(arrivals);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn sign(keys: &Keys, kind: u16, content: &str, tags: Vec<Tag>) -> Event {
    EventBuilder::new(Kind::from(kind), content).tags(tags).finalize(keys).unwrap()
}

fn main() {
    let devices = arg("--devices", 1000);
    let events = arg("--events", 5000);
    let rate = arg("--rate", 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(devices, events, rate));
}

async fn run(devices: usize, events: usize, rate: usize) {
    let arrivals: Arrivals = Arc::default();
    let apns_url = apns_stand_in(arrivals.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.bind = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("relay.db").display());
    config.push.secret_key_file = dir.path().join("push.key");
    config.push.apns.endpoint = apns_url;
    config.push.apns.key_file = Some(format!("{}/tests/fixtures/apns_test_key.p8", env!("CARGO_MANIFEST_DIR")).into());
    config.push.apns.key_id = "KEYID12345".into();
    config.push.apns.team_id = "TEAM123456".into();
    config.push.apns.topic = "com.example.app".into();
    config.push.device_burst = 10_000;
    config.limits.ip_events_per_minute = 0;
    config.limits.pubkey_events_per_minute = 0;
    config.limits.max_pending_events = 1024;
    let relay = RelayHandle::start(config).await.unwrap();
    let url = format!("ws://{}", relay.local_addr);
    let push_key = relay.push().unwrap().public_key();

    // Registrations, all offline (no heartbeat).
    let users: Vec<Keys> = (0..devices).map(|_| Keys::generate()).collect();
    let mut registrations = Vec::with_capacity(devices);
    for (n, user) in users.iter().enumerate() {
        let content = json!({"kinds": [4], "deviceId": format!("{n:064x}"), "#p": [user.public_key().to_hex()]});
        let encrypted = nip04::encrypt(user.secret_key(), &push_key, content.to_string()).unwrap();
        registrations.push(sign(user, 22456, &encrypted, vec![Tag::public_key(push_key)]));
    }
    publish_all(&url, &registrations).await;
    eprintln!("registered {devices} devices");

    // Direct messages to random registered users, signed before the clock starts.
    let senders: Vec<Keys> = (0..16).map(|_| Keys::generate()).collect();
    let messages: Vec<Event> = (0..events)
        .map(|i| {
            let to = users[rand::random_range(0..devices)].public_key();
            sign(&senders[i % senders.len()], 4, &format!("ciphertext {i}?iv=x"), vec![Tag::public_key(to)])
        })
        .collect();

    let (mut socket, _) = connect_async(&url).await.unwrap();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(events);
    let (mut sink, mut stream) = {
        let _challenge = socket.next().await;
        socket.split()
    };
    let reader = tokio::spawn(async move { while stream.next().await.is_some() {} });
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    for (i, message) in messages.iter().enumerate() {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        sent_at.insert(message.id.to_hex(), Instant::now());
        sink.send(Message::Text(json!(["EVENT", message]).to_string().into())).await.unwrap();
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().unwrap().len() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();

    let mut latencies: Vec<f64> = {
        let arrivals = arrivals.lock().unwrap();
        sent_at
            .iter()
            .filter_map(|(id, sent)| arrivals.get(id).map(|at| at.duration_since(*sent).as_secs_f64() * 1000.0))
            .collect()
    };
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "devices={devices} events={events} offered_rate={rate}/s achieved_rate={:.0}/s delivered={}",
        events as f64 / publish_secs,
        latencies.len()
    );
    println!(
        "publish-to-APNs latency ms: p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        latencies.last().unwrap()
    );
    relay.shutdown().await;
}

/// Publishes events on one connection, pipelined, and waits for every OK.
async fn publish_all(url: &str, events: &[Event]) {
    let (mut socket, _) = connect_async(url).await.unwrap();
    let _challenge = socket.next().await;
    for chunk in events.chunks(500) {
        for event in chunk {
            socket.send(Message::Text(json!(["EVENT", event]).to_string().into())).await.unwrap();
        }
        let mut answered = 0;
        while answered < chunk.len() {
            if let Some(Ok(Message::Text(text))) = socket.next().await {
                let reply: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(reply[2], true, "{reply}");
                answered += 1;
            }
        }
    }
}
