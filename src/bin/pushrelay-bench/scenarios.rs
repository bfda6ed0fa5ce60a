//! The scenarios. Each prepares its events first, then measures, and reports what a relay operator compares.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nostr::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;

use crate::client::{self, Receiver, Sender};
use crate::events;
use crate::report::Report;

/// Events per author: enough authors that per-author rate limits (600 a minute on ours) are not what is measured.
const EVENTS_PER_AUTHOR: usize = 20;

pub(crate) fn progress(total: usize, what: &str) -> ProgressBar {
    ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}}"))
            .expect("a valid template"),
    )
}

/// The relay's CPU time so far (user + system), from `/proc/<pid>/stat`, in seconds (clock ticks of 1/100 s).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The relay's resident memory, from `/proc/<pid>/status`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub(crate) struct Published {
    pub accepted: usize,
    refused: usize,
    latencies: Vec<Duration>,
    pub refusal: Option<String>,
}

/// Publishes `events` over `connections` connections with `window` EVENTs in flight on each, timing each OK.
pub(crate) async fn publish(
    url: &str,
    events: Vec<Event>,
    connections: usize,
    window: usize,
) -> Result<Published, String> {
    let bar = progress(events.len(), "events");
    let share = events.len().div_ceil(connections.max(1)).max(1);
    let mut tasks = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        let part: Vec<Event> = events.by_ref().take(share).collect();
        let (mut tx, mut rx) = client::connect(url).await?;
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent: HashMap<String, Instant> = HashMap::new();
            let mut outcome = Published { accepted: 0, refused: 0, latencies: Vec::new(), refusal: None };
            let mut queue = part.into_iter();
            loop {
                while sent.len() < window {
                    let Some(event) = queue.next() else { break };
                    sent.insert(event.id.to_hex(), Instant::now());
                    tx.send(json!(["EVENT", event]).to_string()).await?;
                }
                if sent.is_empty() {
                    return Ok::<_, String>(outcome);
                }
                let message = rx.next().await.ok_or("the relay closed the connection")?;
                if message[0] != "OK" {
                    continue;
                }
                let Some(started) = message[1].as_str().and_then(|id| sent.remove(id)) else { continue };
                outcome.latencies.push(started.elapsed());
                if message[2] == true {
                    outcome.accepted += 1;
                } else {
                    outcome.refused += 1;
                    outcome.refusal.get_or_insert_with(|| message[3].as_str().unwrap_or("").to_owned());
                }
                bar.inc(1);
            }
        }));
    }
    let mut total = Published { accepted: 0, refused: 0, latencies: Vec::new(), refusal: None };
    for task in tasks {
        let part = task.await.map_err(|e| e.to_string())??;
        total.accepted += part.accepted;
        total.refused += part.refused;
        total.latencies.extend(part.latencies);
        total.refusal = total.refusal.or(part.refusal);
    }
    bar.finish_and_clear();
    Ok(total)
}

pub(crate) async fn ingest(
    url: &str,
    pid: Option<u32>,
    count: usize,
    connections: usize,
    window: usize,
) -> Result<Report, String> {
    let events = events::notes(count, &events::keys(count.div_ceil(EVENTS_PER_AUTHOR)));
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let published = publish(url, events, connections, window).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report::new("ingest");
    report.add("events", count, "");
    report.add("accepted", published.accepted, "");
    report.add("refused", published.refused, "");
    if let Some(reason) = published.refusal {
        report.add("first refusal", reason, "");
    }
    report.add("seconds", (elapsed * 100.0).round() / 100.0, "s");
    report.add("events per second", (published.accepted as f64 / elapsed).round(), "/s");
    if let (Some(before), Some(after)) = (cpu_before, pid.and_then(cpu_seconds)) {
        let cpu = after - before;
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
        report.add("events per relay cpu-second", (published.accepted as f64 / cpu.max(0.01)).round(), "");
    }
    report.latencies("OK latency", published.latencies);
    Ok(report)
}

pub(crate) async fn req(
    url: &str,
    pid: Option<u32>,
    populate: usize,
    requests: usize,
    connections: usize,
    search: Option<&str>,
) -> Result<Report, String> {
    let authors = events::keys(populate.div_ceil(EVENTS_PER_AUTHOR).max(1));
    let events = events::notes(populate, &authors);
    let ids: Vec<String> = events.iter().map(|e| e.id.to_hex()).collect();
    if !events.is_empty() {
        let published = publish(url, events, 8, 64).await?;
        if published.accepted == 0 {
            return Err(format!("the relay accepted none of the events: {:?}", published.refusal));
        }
    }
    // The mix: an author's notes, a hashtag's, ten ids; as clients ask for a profile page, a topic, a thread.
    let filters: Vec<serde_json::Value> = (0..requests)
        .map(|i| match (search, i % 3) {
            // Notes say "benchmark note {n} xxx...": each number is one note's word, "benchmark" every note's.
            (Some("rare"), _) => json!({"search": format!("benchmark {}", (i * 7919) % populate.max(1)), "limit": 20}),
            (Some(_), _) => json!({"search": "benchmark", "kinds": [1], "limit": 20}),
            (None, 0) => json!({"authors": [authors[(i * 31) % authors.len()].public_key().to_hex()], "kinds": [1], "limit": 20}),
            (None, 1) => json!({"#t": [format!("topic{}", i % 10)], "limit": 50}),
            (None, _) => json!({"ids": (0..10).filter_map(|k| ids.get((i * 97 + k * 13) % ids.len().max(1))).collect::<Vec<_>>()}),
        })
        .collect();
    let bar = progress(requests, "REQs");
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let share = filters.len().div_ceil(connections.max(1)).max(1);
    let mut tasks = Vec::new();
    for part in filters.chunks(share) {
        let part = part.to_vec();
        let (mut tx, mut rx) = client::connect(url).await?;
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(part.len());
            let mut returned = 0usize;
            // One subscription id throughout: each REQ replaces the last (NIP-01). A CLOSE between REQs made every
            // relay tried answer 40 ms later, which measures the TCP exchange, not the relay.
            let sub = "q";
            for filter in part {
                let asked = Instant::now();
                tx.send(json!(["REQ", sub, filter]).to_string()).await?;
                loop {
                    let message = rx.next().await.ok_or("the relay closed the connection")?;
                    match (message[0].as_str(), message[1].as_str()) {
                        (Some("EVENT"), Some(s)) if s == sub => returned += 1,
                        (Some("EOSE" | "CLOSED"), Some(s)) if s == sub => break,
                        _ => {}
                    }
                }
                latencies.push(asked.elapsed());
                bar.inc(1);
            }
            tx.send(json!(["CLOSE", sub]).to_string()).await?;
            Ok::<_, String>((latencies, returned))
        }));
    }
    let (mut latencies, mut returned) = (Vec::new(), 0);
    for task in tasks {
        let (part, count) = task.await.map_err(|e| e.to_string())??;
        latencies.extend(part);
        returned += count;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report::new("req");
    report.add("populated", populate, "events");
    report.add("requests", requests, "");
    report.add("events returned", returned, "");
    report.add("requests per second", (requests as f64 / elapsed).round(), "/s");
    if let (Some(before), Some(after)) = (cpu_before, pid.and_then(cpu_seconds)) {
        report.add("relay cpu", ((after - before) * 100.0).round() / 100.0, "s");
    }
    report.latencies("REQ to EOSE", latencies);
    Ok(report)
}

pub(crate) async fn fanout(
    url: &str,
    pid: Option<u32>,
    subscribers: usize,
    rate: usize,
    seconds: usize,
) -> Result<Report, String> {
    let count = rate * seconds;
    let events = events::notes(count, &events::keys(count.div_ceil(EVENTS_PER_AUTHOR).max(1)));
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<(String, Instant)>();
    let since = Timestamp::now().as_secs().saturating_sub(count as u64 + 5);
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let (mut tx, mut rx) = client::connect(url).await?;
        tx.send(json!(["REQ", "live", {"kinds": [1], "since": since, "limit": 0}]).to_string()).await?;
        let eose = async { while rx.next().await.is_some_and(|m| m[0] != "EOSE") {} };
        tokio::time::timeout(Duration::from_secs(10), eose)
            .await
            .map_err(|_| format!("subscriber {i} got no EOSE within 10 s"))?;
        let arrived = arrived.clone();
        readers.push(tokio::spawn(async move {
            let _keep_open: Sender = tx;
            let mut rx: Receiver = rx;
            while let Some(message) = rx.next().await {
                if message[0] == "EVENT"
                    && let Some(id) = message[2]["id"].as_str()
                {
                    let _ = arrived.send((id.to_owned(), Instant::now()));
                }
            }
        }));
        if i % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    drop(arrived);
    let cpu_before = pid.and_then(cpu_seconds);
    let sent = publish_at_rate(url, events, rate).await?;
    let latencies = arrival_latencies(&sent, &mut arrivals, count * subscribers).await;
    let cpu = cpu_before.zip(pid.and_then(cpu_seconds)).map(|(b, a)| a - b);
    for reader in readers {
        reader.abort();
    }
    let mut report = Report::new("fanout");
    report.add("subscribers", subscribers, "");
    report.add("events published", count, "");
    report.add("deliveries", latencies.len(), &format!("of {}", count * subscribers));
    report.add("deliveries per second", (latencies.len() as f64 / seconds.max(1) as f64).round(), "/s");
    if let Some(cpu) = cpu {
        report.add("relay cpu", (cpu * 100.0).round() / 100.0, "s");
    }
    report.latencies("delivery", latencies);
    Ok(report)
}

/// Publishes `events` on one connection at a steady `rate` (OKs are read and ignored); when each was sent.
pub(crate) async fn publish_at_rate(
    url: &str,
    events: Vec<Event>,
    rate: usize,
) -> Result<HashMap<String, Instant>, String> {
    let (mut publisher, mut acks) = client::connect(url).await?;
    tokio::spawn(async move { while acks.next().await.is_some() {} });
    let mut sent = HashMap::with_capacity(events.len());
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let bar = progress(events.len(), "published");
    for event in events {
        ticks.tick().await;
        sent.insert(event.id.to_hex(), Instant::now());
        publisher.send(json!(["EVENT", event]).to_string()).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(sent)
}

/// How long after its sending each arrival (event id, when) came, until `expected` arrived or none came for 5 s.
pub(crate) async fn arrival_latencies(
    sent: &HashMap<String, Instant>,
    arrivals: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    expected: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        match tokio::time::timeout(Duration::from_secs(5), arrivals.recv()).await {
            Ok(Some((id, at))) => latencies.extend(sent.get(&id).map(|s| at.saturating_duration_since(*s))),
            _ => break,
        }
    }
    latencies
}

/// The ceiling of ingest: how many events (id and signature, as the relay checks them) all cores verify a second.
pub(crate) fn verify(count: usize) -> Result<Report, String> {
    let events = events::notes(count, &events::keys(count.div_ceil(EVENTS_PER_AUTHOR).max(1)));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let verified: usize = std::thread::scope(|scope| {
        let shares: Vec<_> = events
            .chunks(count.div_ceil(threads).max(1))
            .map(|share| scope.spawn(move || share.iter().filter(|e| e.verify().is_ok()).count()))
            .collect();
        shares.into_iter().map(|share| share.join().expect("verifying does not panic")).sum()
    });
    let elapsed = started.elapsed().as_secs_f64();
    if verified != count {
        return Err(format!("only {verified} of {count} events verified"));
    }
    let mut report = Report::new("verify");
    report.add("events", count, "");
    report.add("threads", threads, "");
    report.add("events per second", (count as f64 / elapsed).round(), "/s");
    report.add("events per core-second", (count as f64 / elapsed / threads as f64).round(), "/s");
    Ok(report)
}

pub(crate) async fn idle(url: &str, pid: Option<u32>, connections: usize) -> Result<Report, String> {
    let pid = pid.ok_or("idle needs --pid: it reads the relay's memory")?;
    let before = rss_kib(pid).ok_or("cannot read the relay's memory from /proc")?;
    let target: url::Url = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let port = target.port().unwrap_or(80);
    let bar = progress(connections, "connections");
    let mut open = Vec::with_capacity(connections);
    for i in 0..connections {
        // Spread over loopback addresses: relays limit connections per address.
        let source = Ipv4Addr::new(127, 1, (i / 100 / 250) as u8, (1 + (i / 100) % 250) as u8);
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).map_err(|e| format!("bind {source}: {e}"))?;
        let host: IpAddr =
            target.host_str().unwrap_or("127.0.0.1").parse().map_err(|_| "idle needs an IP address in --url")?;
        let stream = socket.connect(SocketAddr::new(host, port)).await.map_err(|e| format!("connection {i}: {e}"))?;
        let (socket, _) =
            tokio_tungstenite::client_async(url, stream).await.map_err(|e| format!("connection {i}: {e}"))?;
        open.push(socket);
        bar.inc(1);
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid).ok_or("cannot read the relay's memory from /proc")?;
    let mut report = Report::new("idle");
    report.add("connections", open.len(), "");
    report.add("relay rss before", before, "KiB");
    report.add("relay rss after", after, "KiB");
    report.add(
        "per connection",
        ((after.saturating_sub(before)) as f64 / connections.max(1) as f64 * 10.0).round() / 10.0,
        "KiB",
    );
    drop(open);
    Ok(report)
}
