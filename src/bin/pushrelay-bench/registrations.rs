//! The `registrations` scenario, for our relay: offline devices registered over the WebSocket (kind 22456, NIP-04, a
//! fresh pubkey and device each), and what they cost the relay: resident memory per registration and registrations
//! per relay CPU-second (SCALING.md). Two shapes: `small` (one `#p`, one `#e`, one kind) and `0xchat` (0xchat's
//! real shape: 200 contacts in `authors`, 64 `#p`, 20 `#e`, six kinds; no relays, so that nothing is watched).
//!
//! `group` registers devices of the third shape, `group` (each watching one public channel through `#e`), then
//! publishes one message to the channel and times every push to the APNs stand-in: the fan-out of issue 36.
//!
//! The relay must not limit the publisher's address: `[limits] ip_events_per_minute = 0`; for `group`, APNs at the
//! tool's stand-in (`scripts/scale` sets both).

use std::time::{Duration, Instant};

use nostr::nips::nip04;
use nostr::prelude::*;
use serde_json::{Value, json};

use crate::report::Report;
use crate::scenarios::{arrival_latencies, cpu_seconds, publish, publish_at_rate, rss_kib};

/// The public channel (NIP-28) every `group` device watches.
const CHANNEL: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

pub(crate) async fn registrations(url: &str, pid: Option<u32>, count: usize, shape: &str) -> Result<Report, String> {
    let pid = pid.ok_or("registrations needs --pid: it reads the relay's memory")?;
    let push_key = crate::push::push_pubkey(url).await?;
    let events = make(&push_key, count, shape)?;
    let (rss_before, cpu_before) = (rss_kib(pid).ok_or("cannot read /proc")?, cpu_seconds(pid));
    let started = Instant::now();
    let published = publish(url, events, 4, 64).await?;
    let elapsed = started.elapsed().as_secs_f64();
    if published.accepted != count {
        return Err(format!("{} of {count} registrations accepted: {:?}", published.accepted, published.refusal));
    }
    let cpu = cpu_before.zip(cpu_seconds(pid)).map(|(b, a)| a - b);
    // Let the allocator settle (freed batches returned) before reading the resident size.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid).ok_or("cannot read /proc")?;
    let mut report = Report::new("registrations");
    report.add("shape", shape, "");
    report.add("registrations", count, "");
    report.add("achieved rate", (count as f64 / elapsed).round(), "/s");
    if let Some(cpu) = cpu.filter(|cpu| *cpu > 0.0) {
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
        report.add("registrations per relay CPU-second", (count as f64 / cpu).round(), "");
    }
    report.add("relay rss before", rss_before, "KiB");
    report.add("relay rss after", rss_after, "KiB");
    let per = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / count.max(1) as f64;
    report.add("rss per registration", per.round(), "bytes");
    Ok(report)
}

pub(crate) async fn group(
    url: &str,
    pid: Option<u32>,
    others: &[u32],
    apns_listen: &str,
    count: usize,
) -> Result<Report, String> {
    // The CPU of the relay and of the other nodes sharing the fan-out, together.
    let cpu_seconds =
        |pid: u32| std::iter::once(pid).chain(others.iter().copied()).map(cpu_seconds).sum::<Option<f64>>();
    let push_key = crate::push::push_pubkey(url).await?;
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    crate::push::apns_stand_in(apns_listen, arrived).await?;
    let registered = publish(url, make(&push_key, count, "group")?, 4, 64).await?;
    if registered.accepted != count {
        return Err(format!("{} of {count} registrations accepted: {:?}", registered.accepted, registered.refusal));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let message = EventBuilder::new(Kind::ChannelMessage, "hello, channel")
        .tag(Tag::parse(["e", CHANNEL, "", "root"]).map_err(|e| e.to_string())?)
        .finalize(&Keys::generate())
        .map_err(|e| e.to_string())?;
    let cpu_before = pid.and_then(cpu_seconds);
    let sent = publish_at_rate(url, vec![message], 1).await?;
    let latencies = arrival_latencies(&sent, &mut arrivals, count).await;
    let cpu = cpu_before.zip(pid.and_then(cpu_seconds)).map(|(b, a)| a - b);
    let mut report = Report::new("group");
    report.add("offline devices in the channel", count, "");
    if !others.is_empty() {
        report.add("nodes", 1 + others.len(), "");
    }
    report.add("pushes arrived", latencies.len(), &format!("of {count}"));
    if let Some(cpu) = cpu.filter(|cpu| *cpu > 0.0) {
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
        report.add("pushes per relay CPU-second", (latencies.len() as f64 / cpu).round(), "");
    }
    report.latencies("publish to push", latencies);
    Ok(report)
}

/// The registrations, encrypted and signed before any clock starts.
fn make(push_key: &PublicKey, count: usize, shape: &str) -> Result<Vec<Event>, String> {
    let contacts: Vec<String> = (0..200).map(|_| Keys::generate().public_key().to_hex()).collect();
    (0..count)
        .map(|n| {
            let user = Keys::generate();
            let content = content(&user, n, shape, &contacts)?;
            let encrypted = nip04::encrypt(user.secret_key(), push_key, content.to_string())
                .map_err(|e| format!("cannot encrypt a registration: {e}"))?;
            EventBuilder::new(Kind::from(22456), encrypted)
                .tag(Tag::public_key(*push_key))
                .finalize(&user)
                .map_err(|e| format!("cannot sign a registration: {e}"))
        })
        .collect()
}

/// One registration's content. In the 0xchat shape, the contacts are shared by every user (as friends' lists
/// overlap) and the groups are each user's own.
fn content(user: &Keys, n: usize, shape: &str, contacts: &[String]) -> Result<Value, String> {
    let me = user.public_key().to_hex();
    let device = format!("{n:064x}");
    let group = |g: usize| format!("{:064x}", n * 100 + g);
    match shape {
        "small" => Ok(json!({"kinds": [4], "deviceId": device, "#p": [me], "#e": [group(0)]})),
        "group" => Ok(json!({"kinds": [42], "deviceId": device, "#p": [me], "#e": [CHANNEL]})),
        "0xchat" => {
            let mut p: Vec<String> = contacts[..63].to_vec();
            p.insert(0, me);
            Ok(json!({
                "kinds": [4, 1059, 9735, 1, 7, 42],
                "deviceId": device,
                "#p": p,
                "#e": (0..20).map(group).collect::<Vec<_>>(),
                "authors": contacts,
            }))
        }
        other => Err(format!("unknown shape {other:?}: small or 0xchat")),
    }
}
