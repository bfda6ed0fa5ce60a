//! Marmot push, for our relay (no other relay takes marmot-push-v1 triggers): the `marmot` scenario (triggers at a
//! steady rate, each of `--tokens` APNs tokens, and the time from publishing one to each of its wakes arriving at a
//! local APNs stand-in; relay CPU per trigger beside the floor, the ECDHs alone) and the `marmot` door of `doors`
//! (fresh full triggers as fast as they can be made, from two addresses, past the unwrap budget).
//!
//! The relay must send APNs to the stand-in and let the triggers through: `[push.apns] endpoint =
//! "http://<--apns-listen>"` with any ES256 key, `[push.marmot] unwraps_per_minute` above the rate, and `[limits]
//! ip_events_per_minute = 0` (`scripts/marmot` does all of it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use nostr::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::client;
use crate::report::Report;
use crate::scenarios::{arrival_latencies, cpu_seconds, publish_at_rate};

/// The app's side, as the relay's tests make it: written once, from the spec.
#[allow(dead_code)]
#[path = "../../../tests/it/common/marmot.rs"]
mod encoder;

/// Which trigger (event id) each token belongs to, as the stand-in reads tokens from request paths.
type Owners = Arc<HashMap<String, String>>;

pub(crate) async fn marmot(
    url: &str,
    pid: Option<u32>,
    apns_listen: &str,
    count: usize,
    tokens: usize,
    rate: usize,
) -> Result<Report, String> {
    let server = crate::push::push_pubkey(url).await?;
    let (triggers, owners) = make_triggers(&server, count, tokens.clamp(1, 32));
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    stand_in(apns_listen, owners, arrived).await?;

    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let sent = publish_at_rate(url, triggers, rate).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    // Each wake's time from its trigger's publication.
    let latencies = arrival_latencies(&sent, &mut arrivals, count * tokens).await;
    let cpu = cpu_before.zip(pid.and_then(cpu_seconds)).map(|(b, a)| a - b);

    let mut report = Report::new("marmot");
    report.add("triggers published", count, &format!("of {tokens} token(s) each"));
    report.add("achieved rate", (count as f64 / publish_secs).round(), "/s");
    report.add("wakes arrived", latencies.len(), &format!("of {}", count * tokens));
    if let Some(cpu) = cpu.filter(|cpu| *cpu > 0.0) {
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
        report.add("triggers per relay CPU-second", (count as f64 / cpu).round(), "");
    }
    let ecdh = ecdh_seconds();
    report.add("floor: triggers per CPU-second, ECDHs alone", (1.0 / (ecdh * tokens as f64)).round(), "");
    report.latencies("publish to wake", latencies);
    Ok(report)
}

/// `count` triggers of `tokens` distinct APNs tokens each, made before any clock starts, and each token's trigger.
fn make_triggers(server: &PublicKey, count: usize, tokens: usize) -> (Vec<Event>, Owners) {
    let mut owners = HashMap::with_capacity(count * tokens);
    let triggers = (0..count)
        .map(|n| {
            let tokens: Vec<[u8; 32]> =
                (0..tokens).map(|t| Sha256::digest(format!("marmot bench {n} {t}")).into()).collect();
            let content: Vec<u8> = tokens.iter().flat_map(|t| encoder::encrypted_token(server, 0x01, t)).collect();
            let trigger = encoder::trigger(server, &content);
            owners.extend(tokens.iter().map(|t| (hex::encode(t), trigger.id.to_hex())));
            trigger
        })
        .collect();
    (triggers, Arc::new(owners))
}

/// An APNs stand-in on `listen` (HTTP/2 without TLS): every wake answered 200, and noted as its trigger's arrival.
async fn stand_in(
    listen: &str,
    owners: Owners,
    arrivals: mpsc::UnboundedSender<(String, Instant)>,
) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = Router::new()
        .route(
            "/3/device/{token}",
            axum::routing::post(
                |State((owners, arrivals)): State<(Owners, mpsc::UnboundedSender<(String, Instant)>)>,
                 Path(token): Path<String>| async move {
                    if let Some(id) = owners.get(&token) {
                        let _ = arrivals.send((id.clone(), Instant::now()));
                    }
                    "{}"
                },
            ),
        )
        .with_state((owners, arrivals));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
}

/// Seconds one ECDH (the x-only key lifted, the shared point computed) takes on this machine: the floor of a
/// trigger's cost is one per chunk.
fn ecdh_seconds() -> f64 {
    let secret = Keys::generate();
    let points: Vec<secp256k1::PublicKey> = (0..2_000)
        .map(|_| {
            let x_only = secp256k1::XOnlyPublicKey::from_byte_array(&Keys::generate().public_key().to_bytes());
            x_only.expect("a public key").public_key(secp256k1::Parity::Even)
        })
        .collect();
    let started = Instant::now();
    for point in &points {
        std::hint::black_box(secp256k1::ecdh::shared_secret_point(point, secret.secret_key()));
    }
    started.elapsed().as_secs_f64() / points.len() as f64
}

/// The `marmot` door's triggers, made before the flood starts (making one costs its 32 encryptions, which would
/// otherwise be timed with the bystander on the bench's core): `per_second` fresh full triggers for each second,
/// each 32 tokens to the relay's key, so that each one opened costs its 32 ECDHs.
pub(crate) async fn prepare(url: &str, seconds: u64, per_second: usize) -> Result<Vec<String>, String> {
    let server = crate::push::push_pubkey(url).await?;
    let count = per_second * seconds as usize;
    tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|n| {
                let token = |t: usize| -> [u8; 32] { Sha256::digest(format!("marmot flood {n} {t}")).into() };
                let tokens: Vec<u8> =
                    (0..32).flat_map(|t| encoder::encrypted_token(&server, 0x01, &token(t))).collect();
                json!(["EVENT", encoder::trigger(&server, &tokens)]).to_string()
            })
            .collect()
    })
    .await
    .map_err(|e| e.to_string())
}

/// The `marmot` door: the prepared triggers, as fast as the relay reads them, from two addresses so that the
/// per-address event rate is not what stops them: the unwrap budget is. Task `task` sends every other one.
pub(crate) async fn flood(
    url: &str,
    until: Instant,
    sent: &AtomicUsize,
    task: usize,
    triggers: &[String],
) -> Result<(), String> {
    let (mut tx, mut rx) = client::connect_from(url, IpAddr::from([127, 0, 1, task as u8 + 1])).await?;
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    for trigger in triggers.iter().skip(task).step_by(2).cycle() {
        if Instant::now() >= until {
            break;
        }
        tx.send(trigger.clone()).await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
