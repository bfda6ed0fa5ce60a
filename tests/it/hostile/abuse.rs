//! Abuse: each test throws one kind of hostile traffic at a relay with its default limits and checks that the
//! hostile client gets a clear refusal (or is cut off) while the relay stays up and other clients are served.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::push::try_register;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use nostr::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A client on `source` (a loopback address of its own) completes a REQ and an EVENT.
async fn served_from(relay: &TestRelay, source: Ipv4Addr) {
    let mut client = Client::connect_from(&relay.url, source).await;
    let keys = Keys::generate();
    let event = note(&keys, "still served");
    client.publish_ok(&event).await;
    assert_eq!(client.req_ids("s", &[json!({"ids": [id_of(&event)]})]).await, vec![id_of(&event)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_from_one_address_stop_at_its_limit() {
    let relay = TestRelay::start().await;
    let limit = relay.config.limits.max_connections_per_ip;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match tokio_tungstenite::connect_async(&relay.url).await {
            Ok((socket, _)) => held.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
    assert_eq!((held.len(), refused), (limit, 2000 - limit));
    // Another address is served as usual while the 200 are held.
    served_from(&relay, Ipv4Addr::new(127, 0, 0, 2)).await;
    drop(held);
    // Once they are gone, the address may connect again.
    let started = Instant::now();
    while Client::try_connect(&relay.url).await.is_none() {
        assert!(started.elapsed() < TIMEOUT, "the address's slots are given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the server closes `stream` within `wait` (reads end), while the client keeps trickling bytes.
async fn closed_while_trickling(mut stream: TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n").await;
    let mut buffer = [0u8; 1024];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return true;
                }
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_cut_off_and_others_are_served() {
    let relay = TestRelay::start_with(|c| c.server.handshake_timeout_secs = 1).await;
    let address: SocketAddr = relay.url.trim_start_matches("ws://").parse().unwrap();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let stream = TcpStream::connect(address).await.unwrap();
        slow.push(tokio::spawn(closed_while_trickling(stream, Duration::from_secs(4))));
    }
    // One that connects and says nothing at all.
    let mut silent = TcpStream::connect(address).await.unwrap();
    served_from(&relay, Ipv4Addr::new(127, 0, 0, 3)).await;
    for client in slow {
        assert!(client.await.unwrap(), "a slow-loris client was cut off within four seconds");
    }
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent client was cut off: {read:?}");
    served_from(&relay, Ipv4Addr::new(127, 0, 0, 3)).await;
}

#[tokio::test]
async fn a_ten_megabyte_frame_closes_only_its_connection() {
    let relay = TestRelay::start().await;
    let mut bystander = relay.client().await;
    let (mut reckless, _) = tokio_tungstenite::connect_async(&relay.url).await.unwrap();
    let content = "x".repeat(10 * 1024 * 1024);
    // The relay may close the connection before the frame is all written, so the send itself may fail.
    let _ = reckless.send(Message::Text(format!("[\"EVENT\",{{\"content\":\"{content}\"}}]").into())).await;
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match reckless.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                Some(Ok(_)) => {}
            }
        }
    });
    assert!(closed.await.unwrap_or(false), "the connection is closed");
    let event = note(&Keys::generate(), "after the big frame");
    bystander.publish_ok(&event).await;
    served_from(&relay, Ipv4Addr::new(127, 0, 0, 4)).await;
}

#[tokio::test]
async fn a_req_with_a_thousand_filters_is_closed() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let filters: Vec<serde_json::Value> = (0..1000).map(|k| json!({"kinds": [k]})).collect();
    let mut request = vec![json!("REQ"), json!("many")];
    request.extend(filters);
    client.send(serde_json::Value::Array(request)).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED", "{answer}");
    assert!(answer[2].as_str().unwrap().starts_with("invalid: too many filters"), "{answer}");
    let event = note(&Keys::generate(), "same connection, still served");
    client.publish_ok(&event).await;
}

#[tokio::test]
async fn registrations_naming_a_thousand_relays_or_internal_addresses_keep_only_what_may_be_watched() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let user = Keys::generate();
    let device = "ab".repeat(32);
    let relays_of_user = || relay.push().registry().registrations_of(user.public_key().as_bytes())[0].relays.clone();
    for internal in ["wss://10.0.0.1", "wss://192.168.1.1/", "wss://[::1]/", "wss://169.254.169.254", "wss://localhost"]
    {
        let (accepted, reason) =
            try_register(&mut client, &relay, &user, json!({"deviceId": device, "relays": [internal]})).await;
        assert!(accepted && reason.starts_with("relays: left out"), "{internal}: {reason}");
        assert!(relays_of_user().is_empty(), "{internal}");
    }
    assert!(relay.handle.as_ref().unwrap().upstream_status().is_empty(), "nothing watched");
    // An over-long list is kept to `max_relays`, and the app is told.
    let many: Vec<String> = (0..1000).map(|n| format!("wss://relay{n}.example.com")).collect();
    let (accepted, reason) =
        try_register(&mut client, &relay, &user, json!({"deviceId": device, "relays": many.clone()})).await;
    assert!(accepted && reason == "relays: kept the first 16 of 1000", "{reason}");
    assert_eq!(*relays_of_user(), many[..16]);
}

#[tokio::test]
async fn a_registration_changes_only_its_signers_devices() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let (user, attacker) = (Keys::generate(), Keys::generate());
    let device = "ab".repeat(32);
    let registered = json!({"deviceId": device, "kinds": [4], "#p": [user.public_key().to_hex()]});
    assert!(try_register(&mut client, &relay, &user, registered).await.0);

    // The attacker, signing with its own key, names the user's device id: it registers a device of its own.
    let hijack = json!({"deviceId": device, "kinds": [1], "#p": [attacker.public_key().to_hex()], "authors": []});
    assert!(try_register(&mut client, &relay, &attacker, hijack).await.0);
    let user_devices = || relay.push().registry().registrations_of(user.public_key().as_bytes());
    assert_eq!(user_devices().len(), 1);
    assert_eq!(*user_devices()[0].kinds, [4], "the user's registration is untouched");
    assert_eq!(*user_devices()[0].p_tags, [user.public_key().to_bytes()]);

    // Its logout drops its own registrations only.
    assert!(try_register(&mut client, &relay, &attacker, json!({"online": 0, "deviceId": ""})).await.0);
    assert!(relay.push().registry().registrations_of(attacker.public_key().as_bytes()).is_empty());
    assert_eq!(user_devices().len(), 1, "the user's device is still registered");
    assert!(relay.push().registry().has_device(&device));
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket with the given forwarding header; Err(HTTP status) when the relay refuses it.
async fn connect_forwarded(url: &str, header: &'static str, value: &str) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(header, value.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limits() {
    let relay = TestRelay::start_with(|c| {
        c.limits.max_connections_per_ip = 1;
        c.limits.ip_events_per_minute = 2;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let xff = "x-forwarded-for";
    let _first = connect_forwarded(&relay.url, xff, "203.0.113.1").await.expect("one client");
    let _second = connect_forwarded(&relay.url, xff, "203.0.113.2").await.expect("another client: its own slot");
    assert_eq!(connect_forwarded(&relay.url, xff, "203.0.113.1").await.err(), Some(429), "the first's slot is taken");
    // What the client put left of what the proxy appended is not believed.
    assert_eq!(connect_forwarded(&relay.url, xff, "198.51.100.9, 203.0.113.2").await.err(), Some(429));
    // RFC 7239, quoted IPv6; addresses in one /64 share their slot.
    let forwarded = "forwarded";
    let _third = connect_forwarded(&relay.url, forwarded, "for=\"[2001:db8:1:2::1]:4711\"").await.expect("IPv6");
    let same_network = connect_forwarded(&relay.url, forwarded, "for=\"[2001:db8:1:2::ff]\"").await;
    assert_eq!(same_network.err(), Some(429), "the same /64");
    let _fourth = connect_forwarded(&relay.url, xff, "2001:db8:1:3::1").await.expect("another /64");

    // The per-IP event rate counts the forwarded client too.
    let author = Keys::generate();
    let mut flooder = forwarded_client(&relay.url, "203.0.113.50").await;
    for i in 0..2 {
        flooder.publish_ok(&note(&author, &format!("within the rate {i}"))).await;
    }
    let (accepted, reason) = flooder.publish(&note(&author, "past the rate")).await;
    assert!(!accepted && reason.starts_with("rate-limited:"), "{reason}");
    let mut other = forwarded_client(&relay.url, "203.0.113.51").await;
    other.publish_ok(&note(&Keys::generate(), "another client behind the same proxy is served")).await;
}

/// A greeted `Client` whose connection names `ip` in `X-Forwarded-For`.
async fn forwarded_client(url: &str, ip: &str) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("x-forwarded-for", ip.parse().unwrap());
    Client::connect_request(request).await
}

#[tokio::test]
async fn forwarding_headers_from_a_peer_that_is_not_a_trusted_proxy_change_nothing() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections_per_ip = 1).await;
    let _first = connect_forwarded(&relay.url, "x-forwarded-for", "203.0.113.1").await.expect("one client");
    for (header, value) in [("x-forwarded-for", "203.0.113.2"), ("forwarded", "for=203.0.113.3")] {
        assert_eq!(connect_forwarded(&relay.url, header, value).await.err(), Some(429), "{header}: {value}");
    }
}
