//! What the relay promises operators: nothing acknowledged is lost, no push that was due is lost, and a fault in
//! what it depends on (the process killed, a push service down, the database locked or full or cut off, a watched
//! relay flapping) gives clear answers and passes. RELIABILITY.md says what each test proves, with its figures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::postgres::PgDatabase;
use crate::common::proxy::Proxy;
use crate::common::push::{apns_env, dm, eventually, register, registration};
use crate::common::standins::StandIn;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use nostr::prelude::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The ids among `ids` that the relay at `url` serves.
async fn stored_among(url: &str, ids: &[String]) -> Vec<String> {
    let mut client = Client::connect(url).await;
    let mut found = Vec::new();
    for chunk in ids.chunks(200) {
        found.extend(client.req_ids("check", &[json!({"ids": chunk, "limit": 500})]).await);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &[])).await;
    let url = format!("ws://{address}");

    // Four publishers stream pre-signed events, 32 in flight each, and note every OK true.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let keys = Keys::generate();
        let events: Vec<Event> = (0..2000).map(|i| note(&keys, &format!("stream {i}"))).collect();
        let acknowledged = acknowledged.clone();
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        publishers.push(tokio::spawn(async move {
            let (mut sink, mut stream) = socket.split();
            let mut queue = events.iter();
            let mut in_flight = 0;
            loop {
                while in_flight < 32 {
                    let Some(event) = queue.next() else { break };
                    if sink.send(Message::Text(json!(["EVENT", event]).to_string().into())).await.is_err() {
                        return;
                    }
                    in_flight += 1;
                }
                let Some(Ok(Message::Text(text))) = stream.next().await else { return };
                let answer: Value = serde_json::from_str(&text).unwrap();
                if answer[0] == "OK" {
                    in_flight -= 1;
                    if answer[2] == true {
                        acknowledged.lock().unwrap().push(answer[1].as_str().unwrap().to_owned());
                    }
                }
            }
        }));
    }
    assert!(
        eventually(|| acknowledged.lock().unwrap().len() >= 1500).await,
        "publishing is under way ({} acknowledged)",
        acknowledged.lock().unwrap().len()
    );
    kill_hard(&mut relay);
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() < 8000, "the kill came mid-stream");

    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &[])).await;
    let stored = stored_among(&format!("ws://{address}"), &acknowledged).await;
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(id)).collect();
    eprintln!("acknowledged before SIGKILL: {}, missing after restart: {}", acknowledged.len(), missing.len());
    assert!(missing.is_empty(), "{} acknowledged events lost, e.g. {}", missing.len(), missing[0]);
    kill_hard(&mut relay);
}

/// How many times each event id reached the stand-in and was answered 200.
fn delivered(service: &StandIn) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for push in service.pushes().iter().filter(|p| p.answered == 200) {
        *counts.entry(push.json()["event_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

/// `users` each register their own APNs device (offline), through `url`; the relay's push pubkey is `push_key`.
async fn register_devices(url: &str, push_key: &PublicKey, users: &[Keys]) {
    let mut client = Client::connect(url).await;
    for (n, user) in users.iter().enumerate() {
        let content = registration(&format!("{:02x}", n + 1).repeat(32), user);
        let event = registration_event(user, push_key, &content, Cipher::Nip04, now());
        assert_eq!(client.publish(&event).await, (true, String::new()));
    }
}

/// A direct message to each of `users`, published through `url`; their ids.
async fn message_each(url: &str, users: &[Keys]) -> Vec<String> {
    let friend = Keys::generate();
    let mut client = Client::connect(url).await;
    let mut messages = Vec::new();
    for user in users {
        let message = dm(&friend, user);
        client.publish_ok(&message).await;
        messages.push(id_of(&message));
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_queued_before_a_sigkill_are_delivered_once_after_the_restart() {
    let service = StandIn::start().await;
    service.go_down(503);
    let dir = tempfile::tempdir().unwrap();
    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &apns_env(&service.url))).await;
    let url = format!("ws://{address}");
    let push_key = PublicKey::from_hex(nip11(&format!("http://{address}/")).await["self"].as_str().unwrap()).unwrap();
    let users: Vec<Keys> = (0..10).map(|_| Keys::generate()).collect();
    register_devices(&url, &push_key, &users).await;
    let messages = message_each(&url, &users).await;
    // Every push has been tried (and refused) at least once: they are all in the queue.
    assert!(eventually(|| service.pushes().len() >= 10).await, "{} attempts", service.pushes().len());
    kill_hard(&mut relay);
    assert!(delivered(&service).is_empty());

    service.recover();
    let (mut relay, _) = spawn_relay_binary(&mut relay_command(dir.path(), &apns_env(&service.url))).await;
    assert!(eventually(|| delivered(&service).len() == 10).await, "delivered after restart: {:?}", delivered(&service));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered(&service);
    for id in &messages {
        assert_eq!(delivered.get(id), Some(&1), "event {id}: {delivered:?}");
    }
    kill_hard(&mut relay);
}

/// One message to a channel that 200 offline devices watch (a group's fan-out): the service answers the first 20
/// pushes, refuses the rest (503), and the process is killed mid-fan-out, once the answered pushes are recorded. After
/// the restart every device has had its push answered once: the jobs, written in the message's commit, lose none and
/// repeat none of what was answered and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_killed_midway_pushes_each_device_once_after_the_restart() {
    const DEVICES: usize = 200;
    let service = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = apns_env(&service.url);
    env.push(("PUSHRELAY_LIMITS__IP_REGISTRATIONS_PER_HOUR", "0".to_owned()));
    // Retries at most a second apart, so that the refused pushes are due soon after the restart.
    env.push(("PUSHRELAY_PUSH__RETRY_MAX_MS", "1000".to_owned()));
    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &env)).await;
    let url = format!("ws://{address}");
    let push_key = PublicKey::from_hex(nip11(&format!("http://{address}/")).await["self"].as_str().unwrap()).unwrap();
    let channel = "c".repeat(64);
    let mut client = Client::connect(&url).await;
    for n in 0..DEVICES {
        let user = Keys::generate();
        let content = json!({"kinds": [42], "deviceId": format!("{:064x}", n + 1), "#p": [user.public_key().to_hex()], "#e": [channel]});
        let event = registration_event(&user, &push_key, &content, Cipher::Nip04, now());
        assert_eq!(client.publish(&event).await, (true, String::new()));
    }
    // The first 20 pushes are answered, the next (and their retries until the kill) refused.
    for n in 0..2000 {
        service.answer_next(if n < 20 { 200 } else { 503 }, "{}");
    }
    client.publish_ok(&sign(&Keys::generate(), 42, "hello, channel", &[&["e", &channel, "", "root"]], now())).await;
    assert!(eventually(|| tried(&service) == DEVICES).await, "{} devices tried", tried(&service));
    // A push answered but killed before its job was recorded is sent again (at least once: the answer and the
    // record cannot be one step); the relay counts a push sent once its job is recorded, so wait for that count.
    let sent = || async { sent_by_metrics(&format!("http://{address}/metrics")).await };
    let mut recorded = sent().await;
    for _ in 0..100 {
        if recorded == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorded = sent().await;
    }
    assert_eq!(recorded, 20, "pushes recorded as sent before the kill");
    kill_hard(&mut relay);
    let answered_before = answered_by_device(&service).len();
    assert_eq!(answered_before, 20);

    service.forget_answers();
    let (mut relay, _) = spawn_relay_binary(&mut relay_command(dir.path(), &env)).await;
    let all = || answered_by_device(&service).len() == DEVICES;
    assert!(
        eventually(all).await,
        "{} of {DEVICES} devices pushed after the restart",
        answered_by_device(&service).len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answered = answered_by_device(&service);
    assert!(
        answered.values().all(|&n| n == 1),
        "answered {answered_before} before the kill; twice: {:?}",
        answered.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    kill_hard(&mut relay);
}

/// The APNs pushes the relay at `url` counts as sent (recorded in the queue), from its `/metrics`.
async fn sent_by_metrics(url: &str) -> u64 {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let prefix = "pushrelay_push_jobs_total{service=\"apns\",outcome=\"sent\"";
    let line = text.lines().find(|l| l.starts_with(prefix));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// How many distinct devices the service was asked to push to.
fn tried(service: &StandIn) -> usize {
    service.pushes().iter().map(|p| p.path.clone()).collect::<std::collections::HashSet<_>>().len()
}

/// Pushes answered 200, by device (the request's path names its token).
fn answered_by_device(service: &StandIn) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for push in service.pushes().iter().filter(|p| p.answered == 200) {
        *counts.entry(push.path.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_long_outage_delivers_every_due_push_once_after_recovery() {
    let service = StandIn::start().await;
    let relay = crate::common::push::start(&service.url).await;
    let push_key = relay.handle.as_ref().unwrap().push().unwrap().public_key();
    service.go_down(503);
    let users: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    register_devices(&relay.url, &push_key, &users).await;
    let messages = message_each(&relay.url, &users).await;
    // Each push refused at least twice over the outage.
    assert!(eventually(|| service.pushes().len() >= 40).await, "{} attempts", service.pushes().len());
    service.recover();
    let all_delivered = || delivered(&service).len() == 20;
    let mut waited = 0;
    while !all_delivered() && waited < 10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered(&service);
    for id in &messages {
        assert_eq!(delivered.get(id), Some(&1), "event {id}: {delivered:?}");
    }
    eprintln!("attempts during the outage and after: {}", service.pushes().len());
}

/// A relay that keeps at most five pushes waiting, and its push service, down (503).
async fn a_relay_that_keeps_five_waiting() -> (StandIn, TestRelay) {
    let service = StandIn::start().await;
    let relay = crate::common::push::start_with(&service.url, |c| {
        c.push.max_queued_jobs = 5;
        // After the first refusal a push waits about 4 s: the shedding (every 5 s) finds them all waiting.
        c.push.retry_initial_ms = 4000;
    })
    .await;
    service.go_down(503);
    (service, relay)
}

#[tokio::test]
async fn a_queue_past_its_size_sheds_the_oldest_and_says_so() {
    let (service, relay) = a_relay_that_keeps_five_waiting().await;
    let push = relay.push();
    let users: Vec<Keys> = (0..12).map(|_| Keys::generate()).collect();
    register_devices(&relay.url, &push.public_key(), &users).await;
    let messages = message_each(&relay.url, &users).await;
    let shed = || push.stats().dropped.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    while shed() < 7 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shed(), 7, "the seven oldest are shed");
    let metrics = reqwest::get(format!("{}/metrics", relay.http_url())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("reason=\"queue_full\"") && l.ends_with(" 7")),
        "the shedding is counted: {}",
        metrics.lines().filter(|l| l.contains("push_jobs")).collect::<Vec<_>>().join("\n")
    );

    service.recover();
    let started = Instant::now();
    while delivered(&service).len() < 5 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = delivered(&service);
    let newest: Vec<&String> = messages[7..].iter().collect();
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    assert!(newest.iter().all(|id| delivered.get(*id) == Some(&1)), "the newest five are delivered: {delivered:?}");
}

/// Shedding once took the oldest waiting pushes whoever they were for: one person's flood dropped another user's
/// waiting retry, which was never delivered. The longest device queues are cut first now.
async fn shedding_cuts_the_flooding_device_before_anyone_elses_push() {
    let (service, relay) = a_relay_that_keeps_five_waiting().await;
    let push = relay.push();
    let (alice, flooded) = (Keys::generate(), Keys::generate());
    register_devices(&relay.url, &push.public_key(), &[alice.clone(), flooded.clone()]).await;
    // Alice's message is the oldest in the queue; then twelve for the other device.
    let alices = message_each(&relay.url, std::slice::from_ref(&alice)).await;
    let flood: Vec<Event> = (0..12).map(|_| dm(&Keys::generate(), &flooded)).collect();
    relay.client().await.publish_all_ok(&flood).await;
    let shed = || push.stats().dropped.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    while shed() < 8 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shed(), 8, "13 waiting, 5 kept");
    service.recover();
    let started = Instant::now();
    while !delivered(&service).contains_key(&alices[0]) && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(delivered(&service).get(&alices[0]), Some(&1), "Alice's push is kept and delivered once");
}

#[tokio::test]
async fn a_locked_database_refuses_events_with_error_then_recovers() {
    let relay = TestRelay::start_with(|c| c.database.busy_timeout_ms = 300).await;
    let mut client = relay.client().await;
    let keys = Keys::generate();
    let before = note(&keys, "before the lock");
    client.publish_ok(&before).await;

    // Another process (a backup, say) holds the write lock.
    let locker = rusqlite::Connection::open(relay.db_path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let during = note(&keys, "during the lock");
    let started = Instant::now();
    let (accepted, reason) = client.publish(&during).await;
    assert!(!accepted && reason.starts_with("error:"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after the busy timeout, not held");
    // Readers are not blocked meanwhile.
    assert_eq!(client.req_ids("read", &[json!({"ids": [id_of(&before)]})]).await, vec![id_of(&before)]);

    locker.execute_batch("ROLLBACK").unwrap();
    client.publish_ok(&during).await;
    client.publish_ok(&note(&keys, "after the lock")).await;
    assert_eq!(client.req_ids("all", &[json!({"authors": [keys.public_key().to_hex()]})]).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_events_with_error_then_recovers() {
    // The database on a 16 MB tmpfs mounted in a mount namespace of the relay's own (root, as in CI), so that
    // nothing outside the test sees it; the test reaches it through /proc/<pid>/root.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let path = data.display().to_string();
    let relay_binary = env!("CARGO_BIN_EXE_pushrelay");
    let command = relay_command(
        dir.path(),
        &[
            ("PUSHRELAY_DATABASE__URL", format!("sqlite://{path}/relay.db")),
            ("PUSHRELAY_PUSH__SECRET_KEY_FILE", format!("{path}/push.key")),
            ("PUSHRELAY_PUSH__WEBPUSH__VAPID_KEY_FILE", format!("{path}/vapid.key")),
        ],
    );
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut wrapped = std::process::Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size=16m tmpfs '{path}' && exec \"$0\" \"$@\""))
        .arg(relay_binary)
        .args(&args)
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let (mut relay, address) = spawn_relay_binary(&mut wrapped).await;
    let url = format!("ws://{address}");
    let mut client = Client::connect(&url).await;
    let keys = Keys::generate();
    let before = note(&keys, "before the disk filled");
    client.publish_ok(&before).await;

    // Fill what is left of the file system.
    let filler_path = format!("/proc/{}/root{path}/filler", relay.id());
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(&filler_path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.flush();
    }
    let mut refused = None;
    for i in 0..200 {
        let (accepted, reason) =
            client.publish(&note(&keys, &format!("on a full disk {i} {}", "x".repeat(4000)))).await;
        if !accepted {
            refused = Some(reason);
            break;
        }
    }
    let reason = refused.expect("a write fails once the disk is full");
    assert!(reason.starts_with("error:"), "{reason}");
    // Still serving reads.
    assert_eq!(client.req_ids("read", &[json!({"ids": [id_of(&before)]})]).await, vec![id_of(&before)]);

    std::fs::remove_file(&filler_path).unwrap();
    client.publish_ok(&note(&keys, "after space came back")).await;
    assert!(client.req_ids("all", &[json!({"ids": [id_of(&before)]})]).await.contains(&id_of(&before)));
    kill_hard(&mut relay);
}

async fn postgres_through(proxy: &Proxy, database: &PgDatabase) -> String {
    let mut url = url::Url::parse(&database.url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.addr.port())).unwrap();
    url.to_string()
}

#[tokio::test]
async fn nodes_go_on_after_their_postgresql_connections_drop() {
    let database = PgDatabase::create().await;
    let server: std::net::SocketAddr = {
        let url = url::Url::parse(&database.url).unwrap();
        let host = url.host_str().unwrap().replace("localhost", "127.0.0.1");
        format!("{host}:{}", url.port().unwrap_or(5432)).parse().unwrap()
    };
    let proxy = Proxy::start(server).await;
    let through = postgres_through(&proxy, &database).await;
    let node = |name: &'static str| {
        let through = through.clone();
        move |c: &mut pushrelay::Config| {
            c.database.url = through;
            c.database.node_id = name.into();
        }
    };
    let a = TestRelay::start_with(node("a")).await;
    let b = TestRelay::start_with(node("b")).await;
    let keys = Keys::generate();
    let mut on_b = b.client().await;
    on_b.req("live", &[json!({"authors": [keys.public_key().to_hex()]})]).await;
    let mut on_a = a.client().await;
    let first = note(&keys, "before the cut");
    on_a.publish_ok(&first).await;
    assert_eq!(on_b.recv().await[2]["id"], id_of(&first));

    // The server goes away (every connection dropped, new ones refused), then comes back.
    proxy.cut();
    let (accepted, reason) = on_a.publish(&note(&keys, "while the database is gone")).await;
    assert!(!accepted && reason.starts_with("error:"), "{reason}");
    proxy.restore();

    let mut stored = None;
    for attempt in 0..50 {
        let event = note(&keys, &format!("after the database came back {attempt}"));
        if on_a.publish(&event).await.0 {
            stored = Some(event);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = stored.expect("the node writes again once the database is back");
    // The other node's listener reconnected: the event reaches its live subscriber.
    let seen = loop {
        let message = on_b.recv().await;
        if message[0] == "EVENT" && message[2]["id"] == id_of(&after) {
            break true;
        }
    };
    assert!(seen);
    assert!(on_b.req_ids("check", &[json!({"ids": [id_of(&first), id_of(&after)]})]).await.len() == 2);
}

/// A remote relay (ours, serving DMs without AUTH), a proxy in front of it and its URL through the proxy, and a push
/// relay sending to `apns` that may watch relays on loopback.
async fn watching_through_a_proxy(apns: &StandIn) -> (TestRelay, Proxy, String, TestRelay) {
    let remote = TestRelay::start_with(|c| c.auth.read_restricted_kinds = vec![]).await;
    let proxy = Proxy::start(remote.url.trim_start_matches("ws://").parse().unwrap()).await;
    let watched = format!("ws://{}", proxy.addr);
    let relay = crate::common::push::start_with(&apns.url, |c| {
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
    })
    .await;
    (remote, proxy, watched, relay)
}

#[tokio::test]
async fn a_flapping_watched_relay_misses_nothing_and_pushes_once() {
    let mut apns = StandIn::start().await;
    let (remote, proxy, watched, relay) = watching_through_a_proxy(&apns).await;
    // One device per message, so that no two pushes fall due together for a device (they would be merged).
    let push_key = relay.handle.as_ref().unwrap().push().unwrap().public_key();
    let users: Vec<Keys> = (0..20).map(|_| Keys::generate()).collect();
    let mut client = relay.client().await;
    for (n, user) in users.iter().enumerate() {
        let device = format!("{:02x}", n + 1).repeat(32);
        let content =
            json!({"kinds": [4], "deviceId": device, "#p": [user.public_key().to_hex()], "relays": [watched]});
        let event = registration_event(user, &push_key, &content, Cipher::Nip04, now());
        assert_eq!(client.publish(&event).await, (true, String::new()));
    }
    let status = || relay.handle.as_ref().unwrap().upstream_status();
    assert!(eventually(|| status().get(&watched).is_some_and(|s| s.subscribed)).await);

    // For six seconds the remote drops every connection each 1.5 s while messages arrive there every 300 ms.
    let friend = Keys::generate();
    let mut publisher = remote.client().await;
    let mut messages = Vec::new();
    let mut last_drop = Instant::now();
    for user in &users {
        let message = dm(&friend, user);
        publisher.publish_ok(&message).await;
        messages.push(id_of(&message));
        if last_drop.elapsed() > Duration::from_millis(1500) {
            proxy.drop_connections();
            last_drop = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let connections_while_flapping = proxy.connections();

    let mut pushed: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pushed.len() < messages.len() && Instant::now() < deadline {
        if let Some(request) = apns.try_next(Duration::from_secs(1)).await {
            *pushed.entry(request.json()["event_id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    apns.expect_none().await;
    eprintln!(
        "{} messages, {} pushed, {connections_while_flapping} connections while flapping, {} in all",
        messages.len(),
        pushed.len(),
        proxy.connections()
    );
    for id in &messages {
        assert_eq!(pushed.get(id), Some(&1), "message {id}");
    }
    assert!(connections_while_flapping <= 6, "{connections_while_flapping} connections in six seconds of flapping");
}

#[tokio::test]
async fn a_watched_relay_that_refuses_connections_is_retried_with_growing_back_off() {
    let apns = StandIn::start().await;
    let (_remote, proxy, watched, relay) = watching_through_a_proxy(&apns).await;
    proxy.cut();
    let mut client = relay.client().await;
    let user = Keys::generate();
    let mut content = registration(&"cd".repeat(32), &user);
    content["relays"] = json!([watched]);
    register(&mut client, &relay, &user, content).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Attempts at about 0, 1, 3 and 7 seconds (doubling from one second, with jitter).
    let attempts = proxy.connections();
    assert!((3..=5).contains(&attempts), "{attempts} connection attempts in ten seconds");
}

crate::on_both_backends!(shedding_cuts_the_flooding_device_before_anyone_elses_push,);
