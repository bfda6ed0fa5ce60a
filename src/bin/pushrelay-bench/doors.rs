//! The `doors` scenario, for our relay: a flood at each door a stranger reaches without an account, one door at a
//! time, while a bystander on another loopback address (127.0.0.2, so that per-address limits are the flood's alone)
//! publishes a note and then asks for the newest notes, again and again. What it reports is the bystander's time to
//! `OK` and to `EOSE` during each flood, beside the same with no flood (RELIABILITY.md, "Attacks tried"):
//! - `search`: REQs whose `search` has 20,000 words, REQs with the most words allowed, live searches held open;
//! - `nip9a`: kind 30390 subscriptions from throwaway keys, each with the most and largest filters allowed, all
//!   matching the bystander's notes and posting to one host (so the per-host cap is what bounds each note's POSTs);
//! - `test`: the devices page's test button, one NIP-98 header replayed and fresh ones, for a registered device;
//! - `nip97`: `POST /register` of registrations with the longest challenges and relay URLs, and AUTH events made
//!   for another relay;
//! - `marmot`: fresh 32-token Marmot triggers to the push key (made before the flood), from two addresses, past the
//!   unwrap budget.
//!
//! Callbacks and endpoints are on `flood.invalid`, which never resolves: the relay queues and retries them.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use nostr::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{self, Receiver};
use crate::report::Report;
use crate::scenarios::cpu_seconds;

/// The doors, in the order they are tried (the test button's device is registered before NIP-97's per-address
/// allowance is spent).
pub(crate) const DOORS: [&str; 5] = ["search", "nip9a", "test", "nip97", "marmot"];
/// Words every bystander note and every flood search share, so that the searches rank and match them.
const WORDS: [&str; 16] = [
    "bystander",
    "note",
    "about",
    "pizza",
    "party",
    "tonight",
    "with",
    "friends",
    "and",
    "music",
    "under",
    "the",
    "stars",
    "bring",
    "your",
    "own",
];
/// Fresh Marmot triggers made for each second of the flood: twice the default unwrap budget (6,000 a minute).
const MARMOT_PER_SECOND: usize = 200;
/// How often the bystander publishes and reads (its author stays under the per-author rate).
const BYSTANDER_EVERY: Duration = Duration::from_millis(150);

pub(crate) async fn doors(url: &str, pid: Option<u32>, seconds: u64, only: Option<&str>) -> Result<Report, String> {
    let mut report = Report::new("doors");
    populate(url).await?;
    let quiet = bystander(url, Duration::from_secs(seconds.min(5))).await?;
    report.latencies("quiet OK", quiet.0);
    report.latencies("quiet EOSE", quiet.1);
    for door in DOORS.into_iter().filter(|door| only.is_none_or(|only| only == *door)) {
        // Marmot's triggers are made before the clock starts: making them is the bench's work, not the relay's.
        let triggers = match door {
            "marmot" => Arc::new(crate::marmot::prepare(url, seconds, MARMOT_PER_SECOND).await?),
            _ => Arc::default(),
        };
        let cpu = pid.and_then(cpu_seconds);
        let sent = Arc::new(AtomicUsize::new(0));
        let until = Instant::now() + Duration::from_secs(seconds);
        let flood = tokio::spawn(flood(door, url.to_owned(), until, sent.clone(), triggers));
        let (ok, eose) = bystander(url, Duration::from_secs(seconds)).await?;
        flood.await.map_err(|e| format!("the {door} flood failed: {e}"))??;
        report.add(&format!("{door} requests"), sent.load(Ordering::Relaxed), "");
        report.latencies(&format!("{door} OK"), ok);
        report.latencies(&format!("{door} EOSE"), eose);
        if let (Some(before), Some(after)) = (cpu, pid.and_then(cpu_seconds)) {
            report.add(&format!("{door} relay CPU"), ((after - before) * 100.0).round() / 100.0, "s");
        }
    }
    Ok(report)
}

/// Notes holding the shared words, so that searches have something to rank.
async fn populate(url: &str) -> Result<(), String> {
    let authors: Vec<Keys> = (0..50).map(|_| Keys::generate()).collect();
    let notes: Vec<Event> = (0..2000)
        .map(|n| {
            let text = format!("{} {n}", WORDS.join(" "));
            EventBuilder::new(Kind::TextNote, text).finalize(&authors[n % authors.len()]).expect("signing works")
        })
        .collect();
    crate::scenarios::publish(url, notes, 4, 64).await.map(|_| ())
}

/// The bystander: a note, its `OK`; a REQ for the newest five notes, its `EOSE`; for `span`.
async fn bystander(url: &str, span: Duration) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let (mut tx, mut rx) = client::connect_from(url, IpAddr::from([127, 0, 0, 2])).await?;
    let keys = Keys::generate();
    let (mut ok, mut eose) = (Vec::new(), Vec::new());
    let until = Instant::now() + span;
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let note =
            EventBuilder::new(Kind::TextNote, format!("{} {n}", WORDS.join(" "))).finalize(&keys).expect("signs");
        let started = Instant::now();
        tx.send(json!(["EVENT", note]).to_string()).await?;
        wait_for(&mut rx, |m| m[0] == "OK" && m[1] == note.id.to_hex()).await?;
        ok.push(started.elapsed());
        let started = Instant::now();
        tx.send(json!(["REQ", "newest", {"kinds": [1], "limit": 5}]).to_string()).await?;
        wait_for(&mut rx, |m| m[0] == "EOSE" || m[0] == "CLOSED").await?;
        eose.push(started.elapsed());
        tx.send(json!(["CLOSE", "newest"]).to_string()).await?;
        tokio::time::sleep(BYSTANDER_EVERY).await;
    }
    Ok((ok, eose))
}

async fn wait_for(rx: &mut Receiver, wanted: impl Fn(&Value) -> bool) -> Result<Value, String> {
    loop {
        let message = rx.next().await.ok_or("the relay closed the connection")?;
        if wanted(&message) {
            return Ok(message);
        }
    }
}

/// One door's flood, from several tasks, until `until`; `sent` counts its requests.
async fn flood(
    door: &'static str,
    url: String,
    until: Instant,
    sent: Arc<AtomicUsize>,
    triggers: Arc<Vec<String>>,
) -> Result<(), String> {
    let tasks = if door == "search" { 4 } else { 2 };
    let mut handles = Vec::new();
    let device = if door == "test" { Some(register_test_device(&url).await?) } else { None };
    for task in 0..tasks {
        let (url, sent, device, triggers) = (url.clone(), sent.clone(), device.clone(), triggers.clone());
        handles.push(tokio::spawn(async move {
            match door {
                "search" => search_flood(&url, until, &sent).await,
                "nip9a" => nip9a_flood(&url, until, &sent, task).await,
                "test" => test_flood(&url, until, &sent, device.expect("registered")).await,
                "marmot" => crate::marmot::flood(&url, until, &sent, task, &triggers).await,
                _ => nip97_flood(&url, until, &sent, task).await,
            }
        }));
    }
    for handle in handles {
        handle.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// A 20,000-word search, then the largest search allowed, each answered, with twenty live searches held open.
async fn search_flood(url: &str, until: Instant, sent: &AtomicUsize) -> Result<(), String> {
    let (mut tx, mut rx) = client::connect(url).await?;
    let allowed = WORDS.join(" ");
    for n in 0..19 {
        tx.send(json!(["REQ", format!("live{n}"), {"search": allowed, "limit": 1}]).to_string()).await?;
        wait_for(&mut rx, |m| m[0] == "EOSE" || m[0] == "CLOSED").await?;
    }
    let huge = vec!["party"; 20_000].join(" ");
    while Instant::now() < until {
        for search in [&huge, &allowed] {
            tx.send(json!(["REQ", "flood", {"search": search, "limit": 100}]).to_string()).await?;
            sent.fetch_add(1, Ordering::Relaxed);
            wait_for(&mut rx, |m| (m[0] == "EOSE" || m[0] == "CLOSED") && m[1] == "flood").await?;
        }
    }
    Ok(())
}

/// Subscriptions from throwaway keys, each with sixteen filters of the largest search allowed, posting to one host.
async fn nip9a_flood(url: &str, until: Instant, sent: &AtomicUsize, task: usize) -> Result<(), String> {
    let (mut tx, mut rx) = client::connect(url).await?;
    let filter = json!({"kinds": [1], "search": WORDS.join(" ")}).to_string();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let callback = format!("https://flood.invalid/cb/{task}/{n}");
        let mut tags = vec![Tag::identifier("x"), tag(&["relay", url]), tag(&["callback", &callback])];
        tags.extend((0..16).map(|_| tag(&["filter", &filter])));
        let event = EventBuilder::new(Kind::Custom(30390), "").tags(tags).finalize(&Keys::generate());
        let event = event.map_err(|e| e.to_string())?;
        tx.send(json!(["EVENT", event]).to_string()).await?;
        sent.fetch_add(1, Ordering::Relaxed);
        wait_for(&mut rx, |m| m[0] == "OK").await?;
    }
    Ok(())
}

fn tag(parts: &[&str]) -> Tag {
    Tag::parse(parts.iter().copied()).expect("a tag")
}

/// A NIP-97 device of a fresh key, for the test button's flood: (its keys, its device id).
async fn register_test_device(url: &str) -> Result<(Keys, String), String> {
    let keys = Keys::generate();
    let challenge = "unifiedpush:https://flood.invalid/up/test";
    let event = nip97_event(&keys, url, challenge, &[])?;
    let answer = post_json(url, "/register", &json!({"events": [event]}), None).await?;
    if answer.1[0]["result"] != "added" {
        return Err(format!("the test device was not registered: {}", answer.1));
    }
    Ok((keys, format!("nip97:{challenge}")))
}

/// The test button for the device: one signed request sent again and again, and a fresh one each second.
async fn test_flood(
    url: &str,
    until: Instant,
    sent: &AtomicUsize,
    (keys, device): (Keys, String),
) -> Result<(), String> {
    const PATH: &str = "/notifications/devices/test";
    let body = json!({"id": device});
    let replayed = nip98(url, &keys, PATH, &body, Timestamp::now().as_secs())?;
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let header = if n.is_multiple_of(10) {
            nip98(url, &keys, PATH, &body, Timestamp::now().as_secs() - n % 50)?
        } else {
            replayed.clone()
        };
        post_json(url, PATH, &body, Some(&header)).await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Registrations with the longest challenges and relay URLs, each from a fresh key, and AUTH events made for another
/// relay, ten to a request.
async fn nip97_flood(url: &str, until: Instant, sent: &AtomicUsize, task: usize) -> Result<(), String> {
    let long_relays: Vec<String> = (0..16).map(|n| format!("wss://flood.invalid/{n}/{}", "r".repeat(230))).collect();
    let relays: Vec<&str> = long_relays.iter().map(String::as_str).collect();
    let mut n = 0;
    while Instant::now() < until {
        let mut events = Vec::new();
        for _ in 0..5 {
            n += 1;
            let challenge = format!("unifiedpush:https://flood.invalid/up/{task}/{n}/{}", "u".repeat(440));
            events.push(nip97_event(&Keys::generate(), url, &challenge, &relays)?);
            let auth_tags = [tag(&["relay", "wss://evil.invalid"]), tag(&["challenge", &challenge])];
            let auth = EventBuilder::new(Kind::Custom(22242), "").tags(auth_tags).finalize(&Keys::generate());
            events.push(serde_json::to_value(auth.map_err(|e| e.to_string())?).expect("an event is JSON"));
        }
        post_json(url, "/register", &json!({"events": events}), None).await?;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A NIP-97 registration made at `url`, naming it and `relays`.
fn nip97_event(keys: &Keys, url: &str, challenge: &str, relays: &[&str]) -> Result<Value, String> {
    let mut tags = vec![tag(&["relay", url]), tag(&["challenge", challenge])];
    tags.extend(relays.iter().map(|relay| tag(&["relay", relay])));
    let event = EventBuilder::new(Kind::Custom(22242), "").tags(tags).finalize(keys).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(event).expect("an event is JSON"))
}

/// A NIP-98 `Authorization` header for a POST of `body` to `path`, signed at `at`.
fn nip98(url: &str, keys: &Keys, path: &str, body: &Value, at: u64) -> Result<String, String> {
    let u = format!("{}{path}", http_url(url));
    let payload = hex::encode(Sha256::digest(body.to_string().as_bytes()));
    let tags = [tag(&["u", &u]), tag(&["method", "POST"]), tag(&["payload", &payload])];
    let event = EventBuilder::new(Kind::HttpAuth, "").tags(tags).custom_created_at(Timestamp::from_secs(at));
    let event = event.finalize(keys).map_err(|e| e.to_string())?;
    Ok(format!("Nostr {}", base64::engine::general_purpose::STANDARD.encode(event.as_json())))
}

fn http_url(url: &str) -> String {
    url.trim_end_matches('/').replacen("ws://", "http://", 1).replacen("wss://", "https://", 1)
}

/// POSTs JSON to `path` on the relay's HTTP port: its status and its JSON answer.
async fn post_json(url: &str, path: &str, body: &Value, authorization: Option<&str>) -> Result<(u16, Value), String> {
    let mut request = reqwest::Client::new().post(format!("{}{path}", http_url(url))).body(body.to_string());
    if let Some(header) = authorization {
        request = request.header("Authorization", header);
    }
    let response = request.send().await.map_err(|e| format!("POST {path}: {e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}
