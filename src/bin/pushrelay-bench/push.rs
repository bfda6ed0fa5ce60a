//! The `push` scenario, for our relay (no other relay pushes): devices registered offline, then direct messages to
//! them at a steady rate, and the time from publishing each to its request arriving at a local APNs stand-in.
//!
//! The relay must send APNs to the stand-in: `[push.apns] endpoint = "http://<--apns-listen>"`, with any ES256 key
//! (the tests' `tests/fixtures/apns_test_key.p8` does), and a `device_burst` above the pushes one device gets, or
//! bursts are merged (as they are meant to be) and fewer requests arrive.

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use nostr::nips::nip04;
use nostr::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::report::Report;
use crate::scenarios::{arrival_latencies, cpu_seconds, publish, publish_at_rate};

type Arrivals = mpsc::UnboundedSender<(String, Instant)>;

/// The relay's push pubkey, from its NIP-11 document (`self`).
pub(crate) async fn push_pubkey(url: &str) -> Result<PublicKey, String> {
    let http = url.replacen("ws://", "http://", 1).replacen("wss://", "https://", 1);
    let document: Value = reqwest::Client::new()
        .get(&http)
        .header("Accept", "application/nostr+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot read the relay's NIP-11 document: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the relay's NIP-11 document is not JSON: {e}"))?;
    let key = document["self"].as_str().ok_or("the relay advertises no push pubkey (NIP-11 `self`)")?;
    PublicKey::from_hex(key).map_err(|e| format!("NIP-11 `self` is not a pubkey: {e}"))
}

/// An APNs stand-in on `listen`, HTTP/2 without TLS (as the relay speaks to an `http://` endpoint): every request
/// is answered 200, and its event id noted with the time it arrived.
pub(crate) async fn apns_stand_in(listen: &str, arrivals: Arrivals) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = Router::new()
        .fallback(|State(arrivals): State<Arrivals>, body: Bytes| async move {
            let at = Instant::now();
            let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(id) = payload["event_id"].as_str() {
                let _ = arrivals.send((id.to_owned(), at));
            }
            "{}"
        })
        .with_state(arrivals);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

pub(crate) async fn push(
    url: &str,
    pid: Option<u32>,
    apns_listen: &str,
    devices: usize,
    count: usize,
    rate: usize,
) -> Result<Report, String> {
    let push_key = push_pubkey(url).await?;
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    apns_stand_in(apns_listen, arrived).await?;

    // Registrations (all offline: no heartbeat) and the messages, encrypted and signed before any clock starts.
    let users: Vec<Keys> = (0..devices.max(1)).map(|_| Keys::generate()).collect();
    let registrations = users
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let content = json!({"kinds": [4], "deviceId": format!("{n:064x}"), "#p": [user.public_key().to_hex()]});
            let encrypted = nip04::encrypt(user.secret_key(), &push_key, content.to_string())
                .map_err(|e| format!("cannot encrypt a registration: {e}"))?;
            EventBuilder::new(Kind::from(22456), encrypted)
                .tag(Tag::public_key(push_key))
                .finalize(user)
                .map_err(|e| format!("cannot sign a registration: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let senders: Vec<Keys> = (0..16).map(|_| Keys::generate()).collect();
    let messages = (0..count)
        .map(|i| {
            let to = users[(i * 7919) % users.len()].public_key();
            EventBuilder::new(Kind::EncryptedDirectMessage, format!("ciphertext {i}?iv=AAAAAAAAAAAAAAAAAAAAAA=="))
                .tag(Tag::public_key(to))
                .finalize(&senders[i % senders.len()])
                .map_err(|e| format!("cannot sign a message: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let registered = publish(url, registrations, 4, 64).await?;
    if registered.accepted != users.len() {
        return Err(format!(
            "{} of {} registrations accepted: {:?}",
            registered.accepted,
            users.len(),
            registered.refusal
        ));
    }
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let sent = publish_at_rate(url, messages, rate).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let latencies = arrival_latencies(&sent, &mut arrivals, count).await;
    let cpu = cpu_before.zip(pid.and_then(cpu_seconds)).map(|(b, a)| a - b);

    let mut report = Report::new("push");
    report.add("devices", users.len(), "");
    report.add("events published", count, "");
    report.add("achieved rate", (count as f64 / publish_secs).round(), "/s");
    report.add("pushes arrived", latencies.len(), &format!("of {count}"));
    if let Some(cpu) = cpu {
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
    }
    report.latencies("publish to APNs", latencies);
    Ok(report)
}
