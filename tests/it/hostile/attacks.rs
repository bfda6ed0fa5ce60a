//! Attacks tried (RELIABILITY.md, "Attacks tried"): what a stranger can send to stop, blind or eavesdrop the relay,
//! each over a real socket against a relay with its defaults.

use std::time::Duration;

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use negentropy::{Negentropy, NegentropyStorageVector};
use nostr::prelude::*;
use serde_json::json;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A zap receipt whose invoice has a multi-byte character where the amount's multiplier would be, p-tagging a
/// user whose offline device wants zaps. It once stopped every later write on PostgreSQL and was refused on SQLite.
async fn a_zap_receipt_with_a_multibyte_invoice_is_stored_and_pushed() {
    let mut s = Scenario::apns().await;
    let (me, wallet) = (s.user.public_key().to_hex(), Keys::generate());
    for invoice in ["lné1", "lnbc2500€1pvjluez", "ln🤙1"] {
        let receipt = sign(&wallet, 9735, "", &[&["p", &me], &["bolt11", invoice]], now());
        s.client.publish_ok(&receipt).await;
        let pushed = s.service.next().await.json();
        assert_eq!(pushed["event_id"], id_of(&receipt), "{invoice}");
    }
    // The writer goes on: anyone's next event is stored, and readable.
    let mut other = s.relay.client().await;
    let after = note(&Keys::generate(), "after the receipts");
    other.publish_ok(&after).await;
    assert_eq!(other.req_ids("after", &[json!({"ids": [id_of(&after)]})]).await, vec![id_of(&after)]);
}

/// Mallory registers her own device for Alice's `p` tag and for DMs and gift wraps. A push is a read: Alice's DMs
/// (stored or ephemeral) wake only Alice's device; Alice's public mentions wake both.
async fn another_users_dms_never_wake_your_phone() {
    let mut service = StandIn::start().await;
    // 20004 stands for an ephemeral restricted kind.
    let relay = start_with(&service.url, |c| {
        c.push.device_burst = 100;
        c.auth.read_restricted_kinds.push(20004);
    })
    .await;
    let (alice, mallory, friend) = (Keys::generate(), Keys::generate(), Keys::generate());
    let alice_hex = alice.public_key().to_hex();
    let mut client = relay.client().await;
    let wants = |device: String| json!({"kinds": [1, 4, 1059, 20004], "deviceId": device, "#p": [alice_hex]});
    register(&mut client, &relay, &alice, wants(apns_token(1))).await;
    register(&mut client, &relay, &mallory, wants(apns_token(2))).await;

    let private = [
        dm(&friend, &alice),
        sign(&Keys::generate(), 1059, "wrapped", &[&["p", &alice_hex]], now()),
        sign(&friend, 20004, "ephemeral secret", &[&["p", &alice_hex]], now()),
    ];
    for event in &private {
        client.publish_ok(event).await;
        let pushed = service.next().await;
        assert_eq!(pushed.path, format!("/3/device/{}", apns_token(1)), "kind {}", event.kind);
        assert_eq!(pushed.json()["event_id"], id_of(event));
    }
    service.expect_none().await;

    let mention = sign(&friend, 1, "hello alice", &[&["p", &alice_hex]], now());
    client.publish_ok(&mention).await;
    let mut devices = vec![service.next().await.path, service.next().await.path];
    devices.sort();
    assert_eq!(devices, [format!("/3/device/{}", apns_token(1)), format!("/3/device/{}", apns_token(2))]);
}

/// The same through a watched relay that serves DMs to anyone: Mallory's registration names it, and still
/// Alice's DMs there never reach Mallory's phone, while public mentions do.
#[tokio::test]
async fn another_users_dms_on_a_watched_relay_never_wake_your_phone() {
    let mut service = StandIn::start().await;
    let remote = TestRelay::start_with(|c| c.auth.read_restricted_kinds = vec![]).await;
    let relay = start_with(&service.url, |c| {
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
    })
    .await;
    let (alice, mallory, friend) = (Keys::generate(), Keys::generate(), Keys::generate());
    let alice_hex = alice.public_key().to_hex();
    let mut client = relay.client().await;
    let content = json!({"kinds": [1, 4], "deviceId": apns_token(2), "#p": [alice_hex], "relays": [remote.url]});
    register(&mut client, &relay, &mallory, content).await;
    let status = || relay.handle.as_ref().unwrap().upstream_status();
    assert!(eventually(|| status().get(&remote.url).is_some_and(|s| s.subscribed)).await);

    let mut there = remote.client().await;
    there.publish_ok(&dm(&friend, &alice)).await;
    let mention = sign(&friend, 1, "hello alice", &[&["p", &alice_hex]], now());
    there.publish_ok(&mention).await;
    assert_eq!(service.next().await.json()["event_id"], id_of(&mention));
    service.expect_none().await;
}

/// Publishes `count` notes of about 60 KB each; returns their ids.
async fn fill(relay: &TestRelay, count: usize) -> Vec<String> {
    let mut publisher = relay.client().await;
    let events = filler_notes(count);
    publisher.publish_all_ok(&events).await;
    events.iter().map(id_of).collect()
}

/// Notes of 60 KB each.
fn filler_notes(count: usize) -> Vec<Event> {
    let filler = "z".repeat(60_000);
    (0..count).map(|i| sign(&Keys::generate(), 1, &format!("{i} {filler}"), &[], now())).collect()
}

/// A raw WebSocket that asks for everything and then never reads.
async fn sluggard(url: &str) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let req = json!(["REQ", "all", {"kinds": [1], "limit": 500}]);
    socket.send(Message::Text(req.to_string().into())).await.unwrap();
    socket
}

/// Reads what a stalled socket still holds: whether EOSE came, and whether the relay ended the connection.
async fn drain(mut socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> (bool, bool) {
    let mut eose = false;
    loop {
        match tokio::time::timeout(TIMEOUT, socket.next()).await {
            Err(_) => return (eose, false),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return (eose, true),
            Ok(Some(Ok(Message::Text(text)))) => eose |= text.starts_with(r#"["EOSE""#),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A client that asks for 24 MB of stored events and never reads fills its socket; the relay's send then makes no
/// progress, and after `send_timeout_secs` the relay closes the connection instead of holding it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_after_the_send_timeout() {
    let relay = TestRelay::start_with(|c| {
        c.limits.send_timeout_secs = 2;
        c.limits.max_req_bytes = 64 << 20;
        c.limits.pubkey_events_per_minute = 0;
    })
    .await;
    fill(&relay, 400).await;
    let socket = sluggard(&relay.url).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (eose, ended) = drain(socket).await;
    assert!(!eose && ended, "eose {eose}, ended {ended}");
    // Everyone else is served.
    let mut other = relay.client().await;
    assert_eq!(other.req("one", &[json!({"kinds": [1], "limit": 1})]).await.len(), 1);
}

/// SIGTERM with a client that never reads: the relay still ends, within the send timeout and the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_relay_whatever_clients_do() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [("PUSHRELAY_LIMITS__SEND_TIMEOUT_SECS", "3".to_owned())];
    let (mut relay, address) = spawn_relay_binary(&mut relay_command(dir.path(), &extra)).await;
    let url = format!("ws://{address}");
    let mut publisher = Client::connect(&url).await;
    publisher.publish_all_ok(&filler_notes(400)).await;
    let _stalled = sluggard(&url).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = std::time::Instant::now();
    std::process::Command::new("kill").arg("-TERM").arg(relay.id().to_string()).status().unwrap();
    let mut exited = None;
    while exited.is_none() && asked.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        exited = relay.try_wait().unwrap();
    }
    let took = asked.elapsed();
    if exited.is_none() {
        kill_hard(&mut relay);
    }
    eprintln!("exited {exited:?} {took:?} after SIGTERM");
    assert!(exited.is_some_and(|status| status.success()) && took < Duration::from_secs(15), "{took:?}");
}

/// Live events queue for a client in bytes: 40 events of 60 KB against a 256 KB budget cut a client that does not
/// read, though its message count (100,000) is nowhere near reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_live_events_are_bounded_in_bytes() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_outgoing_queue = 100_000;
        c.limits.max_outgoing_bytes = 256 * 1024;
        c.limits.send_timeout_secs = 60;
    })
    .await;
    let (mut socket, _) = tokio_tungstenite::connect_async(&relay.url).await.unwrap();
    let req = json!(["REQ", "live", {"kinds": [1], "limit": 0}]);
    socket.send(Message::Text(req.to_string().into())).await.unwrap();
    // The live events pile up while the client does not read (the kernel takes the first few megabytes).
    fill(&relay, 300).await;
    let mut notice = false;
    let mut events = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(TIMEOUT, socket.next()).await {
        if let Message::Text(text) = message {
            notice |= text.contains("reading too slowly");
            events += usize::from(text.starts_with(r#"["EVENT""#));
        }
    }
    assert!(notice && events < 300, "notice {notice}, {events} events");
}

/// The REQ's results are bounded in bytes: a filter's newest events up to `max_req_bytes`, and at least one.
async fn a_req_returns_at_most_its_byte_budget() {
    let relay = TestRelay::start_with(|c| c.limits.max_req_bytes = 150_000).await;
    let ids = fill(&relay, 5).await;
    let mut client = relay.client().await;
    let got = client.req_ids("big", &[json!({"kinds": [1]})]).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|id| ids.contains(id)));
    // Two filters share the budget; each still gets its newest event.
    let got = client.req_ids("two", &[json!({"ids": [ids[0]]}), json!({"ids": [ids[1]]})]).await;
    assert_eq!(got.len(), 2, "{got:?}");
}

/// COUNT stops at `max_count` and says the answer is approximate (NIP-45).
async fn count_stops_at_its_limit() {
    let relay = TestRelay::start_with(|c| c.limits.max_count = 5).await;
    let mut client = relay.client().await;
    let author = Keys::generate();
    for i in 0..8 {
        client.publish_ok(&sign(&author, 1, &format!("{i}"), &[], now())).await;
    }
    client.send(json!(["COUNT", "c", {"authors": [author.public_key().to_hex()]}])).await;
    assert_eq!(client.recv().await, json!(["COUNT", "c", {"count": 5, "approximate": true}]));
    client.send(json!(["COUNT", "d", {"authors": [author.public_key().to_hex()], "limit": 1}, {"ids": []}])).await;
    assert_eq!(client.recv().await[2]["approximate"], true);
    client.send(json!(["COUNT", "e", {"authors": [Keys::generate().public_key().to_hex()]}])).await;
    assert_eq!(client.recv().await, json!(["COUNT", "e", {"count": 0}]));
}

/// NIP-77: a connection holds at most `max_negentropy_sessions` reconciliations, and NEG-MSG is rate limited.
#[tokio::test]
async fn reconciliations_per_connection_are_bounded() {
    let relay = TestRelay::start_with(|c| c.limits.reqs_per_minute = 4).await;
    let mut client = relay.client().await;
    let mut storage = NegentropyStorageVector::new();
    storage.seal().unwrap();
    let first = hex::encode(Negentropy::owned(storage, 0).unwrap().initiate().unwrap());
    for sub in ["n1", "n2", "n3"] {
        client.send(json!(["NEG-OPEN", sub, {"kinds": [1]}, first])).await;
    }
    assert_eq!(client.recv().await[0], "NEG-MSG");
    assert_eq!(client.recv().await[0], "NEG-MSG");
    let third = client.recv().await;
    assert_eq!((third[0].as_str(), third[1].as_str()), (Some("NEG-ERR"), Some("n3")));
    assert!(third[2].as_str().unwrap().starts_with("rate-limited:"), "{third}");
    // Past the request rate, NEG-MSG is refused and its reconciliation closed.
    let mut refused = 0;
    for _ in 0..6 {
        client.send(json!(["NEG-MSG", "n1", first])).await;
        let answer = client.recv().await;
        refused += usize::from(answer[0] == "NEG-ERR" && answer[2].as_str().unwrap().starts_with("rate-limited:"));
    }
    assert!(refused >= 1, "{refused}");
}

/// An HTTP body is read only from a request that could be an administrator's, up to `max_body_bytes`, and
/// within the request deadline.
#[tokio::test]
async fn http_bodies_are_bounded_and_read_only_with_authorization() {
    let relay = TestRelay::start_with(|c| {
        c.auth.admin_pubkeys = vec![Keys::generate().public_key().to_hex()];
        c.server.max_body_bytes = 1024;
        c.server.handshake_timeout_secs = 1;
    })
    .await;
    let address = relay.url.trim_start_matches("ws://").to_owned();
    let ask = |head: String, body: Vec<u8>, wait: Duration| {
        let address = address.clone();
        async move {
            let mut socket = TcpStream::connect(&address).await.unwrap();
            socket.write_all(head.as_bytes()).await.unwrap();
            let _ = socket.write_all(&body).await;
            let mut answer = vec![0u8; 256];
            let read = tokio::time::timeout(wait, socket.read(&mut answer)).await.expect("an answer in time");
            String::from_utf8_lossy(&answer[..read.unwrap_or(0)]).into_owned()
        }
    };
    let head = |length: usize, authorization: bool| {
        let auth = if authorization { "Authorization: Nostr e30=\r\n" } else { "" };
        format!("POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: {length}\r\n{auth}\r\n")
    };
    let wait = Duration::from_secs(5);
    // A stranger's 10 MB body: refused at once, unread.
    let answer = ask(head(10 << 20, false), vec![b'x'; 64 * 1024], wait).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Too large, with an Authorization header.
    let answer = ask(head(4096, true), vec![b'x'; 4096], wait).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A body that never comes: cut off at the deadline.
    let answer = ask(head(500, true), b"{".to_vec(), wait).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A UnifiedPush endpoint (chosen by whoever registers) that answers with an endless body: the relay reads the
/// start of it and moves on.
#[tokio::test]
async fn an_endless_answer_from_a_push_endpoint_is_read_only_in_part() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/up/endless", listener.local_addr().unwrap());
    let endless = axum::Router::new().fallback(|| async {
        let chunks = futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::body::Body::from_stream(chunks))
    });
    tokio::spawn(async move { axum::serve(listener, endless).await });
    let s = Scenario::new(|_| endpoint.clone(), |_| {}).await;
    let mut client = s.relay.client().await;
    client.publish_ok(&dm(&s.friend, &s.user)).await;
    // The 500 is read as such (a retry is scheduled) rather than the relay reading for ever.
    assert!(eventually(|| s.count(|stats| &stats.retried) >= 1).await);
}

/// A watched relay that sends a message larger than `[upstream] max_message_bytes` loses its connection.
#[tokio::test]
async fn a_huge_message_from_a_watched_relay_ends_that_connection() {
    let service = StandIn::start().await;
    let remote = TestRelay::start_with(|c| {
        c.auth.read_restricted_kinds = vec![];
        c.limits.max_content_length = 300_000;
        c.limits.max_message_length = 1 << 20;
    })
    .await;
    let relay = start_with(&service.url, |c| {
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
        c.upstream.max_message_bytes = 64 * 1024;
    })
    .await;
    let user = Keys::generate();
    let mut client = relay.client().await;
    let content =
        json!({"kinds": [1], "deviceId": apns_token(1), "#p": [user.public_key().to_hex()], "relays": [remote.url]});
    register(&mut client, &relay, &user, content).await;
    let status = || relay.handle.as_ref().unwrap().upstream_status();
    assert!(eventually(|| status().get(&remote.url).is_some_and(|s| s.subscribed)).await);
    let huge = sign(&Keys::generate(), 1, &"h".repeat(200_000), &[&["p", &user.public_key().to_hex()]], now());
    remote.client().await.publish_ok(&huge).await;
    let too_long =
        || status().get(&remote.url).and_then(|s| s.last_error.clone()).is_some_and(|e| e.contains("too long"));
    assert!(eventually(too_long).await, "{:?}", status());
}

/// pg_notify carries an event whole only when the escaped announcement fits; an event under the size limit but
/// full of quotes (each escaped twice) once failed its commit on PostgreSQL for good.
#[tokio::test]
async fn an_event_full_of_quotes_is_stored_on_postgresql() {
    crate::common::postgres::on_postgres(async {
        let relay = TestRelay::start().await;
        let mut client = relay.client().await;
        let quotes = sign(&Keys::generate(), 1, &"\"\\".repeat(2500), &[], now());
        client.publish_ok(&quotes).await;
        assert_eq!(client.req_ids("q", &[json!({"ids": [id_of(&quotes)]})]).await, vec![id_of(&quotes)]);
    })
    .await;
}

/// A flood of matching ephemeral events while the queue cannot take them (its table locked by another session):
/// one batch waits in the intake, `max_pending_intake` (1) more are held, the rest are dropped and counted; none
/// costs a task or memory, and the held ones are pushed once the queue frees.
#[tokio::test]
async fn a_flood_of_ephemeral_pushes_waits_in_a_bounded_intake() {
    crate::common::postgres::on_postgres(async {
        let mut s = Scenario::new(
            |_| apns_token(1),
            |c| {
                c.push.max_pending_intake = 1;
                c.push.device_burst = 100;
            },
        )
        .await;
        let me = s.user.public_key().to_hex();
        let content = json!({"kinds": [20001], "deviceId": apns_token(1), "#p": [me]});
        register(&mut s.client, &s.relay, &s.user.clone(), content).await;
        let url = s.relay.postgres.as_ref().unwrap().url.clone();
        let mut locker = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();
        for i in 0..6 {
            s.client.publish_ok(&sign(&s.friend, 20001, &format!("ping {i}"), &[&["p", &me]], now())).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let metrics = reqwest::get(format!("{}/metrics", s.relay.http_url())).await.unwrap().text().await.unwrap();
        let dropped: u64 = metrics
            .lines()
            .find(|line| line.contains(r#"reason="intake_full""#))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0);
        assert!(dropped >= 3, "{dropped} dropped");
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
        // The two held (sent one by one, or merged into one notification), and nothing of the dropped.
        s.service.next().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pushes = s.service.pushes().len();
        assert!((1..=2).contains(&pushes), "{pushes} pushes");
    })
    .await;
}

crate::on_both_backends!(
    a_zap_receipt_with_a_multibyte_invoice_is_stored_and_pushed,
    another_users_dms_never_wake_your_phone,
    a_req_returns_at_most_its_byte_budget,
    count_stops_at_its_limit,
);
