//! What notifications say, and when there is none: mute lists, the age cut-off, bulk import, zap / reaction / note
//! texts, badge counts, and Web Push to browsers, each seen at a local stand-in of the push service.

use crate::common::push::*;
use crate::common::standins::{Recorded, StandIn};
use crate::common::*;
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use nostr::prelude::*;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};

/// DMs, notes, reactions and zaps that tag the user; no per-device limit getting in the way.
async fn scenario() -> Scenario {
    let mut scenario = Scenario::new(|_| apns_token(1), |c| c.push.device_burst = 100).await;
    let user = scenario.user.clone();
    let content =
        json!({"kinds": [1, 4, 7, 1059, 9735], "deviceId": apns_token(1), "#p": [user.public_key().to_hex()]});
    register(&mut scenario.client, &scenario.relay, &user, content).await;
    scenario
}

fn tagging(user: &Keys) -> String {
    user.public_key().to_hex()
}

/// The APNs request of the next push, with the event id and the alert text.
async fn next_push(service: &mut StandIn) -> (String, String, Value) {
    let body = service.next().await.json();
    let text = body["aps"]["alert"]["body"].as_str().unwrap().to_owned();
    (body["event_id"].as_str().unwrap().to_owned(), text, body)
}

#[tokio::test]
async fn muted_authors_threads_hashtags_and_words_push_nothing() {
    let mut s = scenario().await;
    let (spammer, user) = (Keys::generate(), s.user.clone());
    let thread = id_of(&note(&s.friend, "a thread the user is tired of"));
    let me = tagging(&user);
    let mute_list = |created_at, muted_author: &str| {
        sign(
            &user,
            10000,
            "",
            &[&["p", muted_author], &["e", &thread], &["t", "politics"], &["word", "crypto"]],
            created_at,
        )
    };
    s.client.publish_ok(&mute_list(now(), &spammer.public_key().to_hex())).await;

    for muted in [
        dm(&spammer, &user),
        sign(&s.friend, 1, "a reply in that thread", &[&["p", &me], &["e", &thread, "", "reply"]], now()),
        sign(&s.friend, 1, "what about the election", &[&["p", &me], &["t", "Politics"]], now()),
        sign(&s.friend, 1, "Crypto is up again", &[&["p", &me]], now()),
    ] {
        s.client.publish_ok(&muted).await;
    }
    let welcome = sign(&s.friend, 1, "welcome to nostr", &[&["p", &me]], now());
    s.client.publish_ok(&welcome).await;
    let (event_id, text, _) = next_push(&mut s.service).await;
    assert_eq!((event_id.as_str(), text.as_str()), (id_of(&welcome).as_str(), "welcome to nostr"));
    s.service.expect_none().await;

    // A newer list without the spammer lifts that mute for the next event.
    s.client.publish_ok(&mute_list(now() + 1, &Keys::generate().public_key().to_hex())).await;
    let forgiven = dm(&spammer, &user);
    s.client.publish_ok(&forgiven).await;
    assert_eq!(next_push(&mut s.service).await.0, id_of(&forgiven));
}

#[tokio::test]
async fn week_old_events_push_nothing_but_backdated_gift_wraps_do() {
    let mut s = scenario().await;
    let me = tagging(&s.user);
    let eight_days_old = sign(&s.friend, 4, "old?iv=x", &[&["p", &me]], now() - 8 * 24 * 3600);
    s.client.publish_ok(&eight_days_old).await;
    s.service.expect_none().await;
    // NIP-59 dates gift wraps up to two days back, so 40 hours is still news.
    let gift_wrap = sign(&Keys::generate(), 1059, "sealed", &[&["p", &me]], now() - 40 * 3600);
    s.client.publish_ok(&gift_wrap).await;
    let (event_id, text, _) = next_push(&mut s.service).await;
    assert_eq!((event_id, text.as_str()), (id_of(&gift_wrap), "New message"));
}

#[tokio::test]
async fn an_import_of_matching_events_pushes_nothing() {
    let mut s = scenario().await;
    let me = tagging(&s.user);
    let events: Vec<Event> =
        (0..3).map(|i| sign(&s.friend, 1, &format!("imported {i}"), &[&["p", &me]], now())).collect();
    let file = s.relay.dir.path().join("events.jsonl");
    let lines: Vec<String> = events.iter().map(|e| e.as_json()).chain(["not an event".to_owned()]).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let config = s.relay.dir.path().join("import.toml");
    std::fs::write(&config, format!("[database]\nurl = \"sqlite://{}\"\n", s.relay.db_path().display())).unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"))
        .arg("--config")
        .arg(&config)
        .arg("import")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("3 stored") && stdout.contains("1 refused"), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 4: not an event"));

    // Stored and served, but nobody was woken.
    let stored = s.client.req_ids("imported", &[json!({"authors": [s.friend.public_key().to_hex()]})]).await;
    assert_eq!(stored.len(), 3);
    s.client.close("imported").await;
    s.service.expect_none().await;
    // A live event still pushes: the device was there all along.
    let live = dm(&s.friend, &s.user);
    s.client.publish_ok(&live).await;
    assert_eq!(next_push(&mut s.service).await.0, id_of(&live));
}

#[tokio::test]
async fn zaps_reactions_and_notes_say_who_and_what() {
    let mut s = scenario().await;
    let (alice, bob, wallet) = (Keys::generate(), Keys::generate(), Keys::generate());
    let me = tagging(&s.user);
    s.client.publish_ok(&sign(&alice, 0, r#"{"display_name":"Alice"}"#, &[], now())).await;
    s.client.publish_ok(&sign(&bob, 0, r#"{"name":"Bob"}"#, &[], now())).await;

    // The receipt is signed by the recipient's wallet; the zapper is the author of the zap request inside it.
    let request = sign(&alice, 9734, "", &[&["p", &me], &["amount", "1000000"], &["relays", "wss://r.example"]], now());
    let receipt = sign(
        &wallet,
        9735,
        "",
        &[
            &["p", &me],
            &["bolt11", "lnbc10u1pjq9lqhpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfq"],
            &["description", &request.as_json()],
        ],
        now(),
    );
    s.client.publish_ok(&receipt).await;
    assert_eq!(next_push(&mut s.service).await.1, "Alice zapped you 1,000 sats");

    s.client.publish_ok(&sign(&bob, 7, "🤙", &[&["p", &me]], now())).await;
    assert_eq!(next_push(&mut s.service).await.1, "Bob reacted 🤙");

    let long = format!("gm {}\nsecond line", "x".repeat(300));
    s.client.publish_ok(&sign(&bob, 1, &long, &[&["p", &me]], now())).await;
    let text = next_push(&mut s.service).await.1;
    assert!(text.starts_with("Bob: gm xxx") && text.ends_with('…') && !text.contains("second"), "{text}");
    assert!(text.chars().count() < 140, "{text}");

    // Encrypted kinds never show their content.
    s.client.publish_ok(&sign(&bob, 4, "secret words?iv=x", &[&["p", &me]], now())).await;
    assert_eq!(next_push(&mut s.service).await.1, "Bob: New message");
}

/// On both databases: PostgreSQL counts a batch of badges in one statement, SQLite a statement each.
async fn badges_count_up_while_offline_and_restart_after_being_online() {
    let mut s = scenario().await;
    let user = s.user.clone();
    for expected in [1, 2, 3] {
        s.client.publish_ok(&dm(&s.friend, &user)).await;
        assert_eq!(next_push(&mut s.service).await.2["aps"]["badge"], expected);
    }
    register(&mut s.client, &s.relay, &user, json!({"online": 1})).await;
    register(&mut s.client, &s.relay, &user, json!({"online": 0})).await;
    s.client.publish_ok(&dm(&s.friend, &user)).await;
    assert_eq!(next_push(&mut s.service).await.2["aps"]["badge"], 1);

    // FCM carries it as the notification count, tagged with the event id (a repeat replaces the first showing).
    let mut fcm = Scenario::new(|_| "fcm-token-for-badges-0123456789".to_owned(), |_| {}).await;
    let user = fcm.user.clone();
    let event = dm(&fcm.friend, &user);
    fcm.client.publish_ok(&event).await;
    let message = fcm.service.next().await.json();
    assert_eq!(message["message"]["android"]["notification"]["notification_count"], 1);
    assert_eq!(message["message"]["android"]["notification"]["tag"], event.id.to_hex());
}

/// A browser's push subscription: its key pair and authentication secret, as `PushManager.subscribe` makes them.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
    endpoint: String,
}

impl Browser {
    fn new(endpoint: String) -> Self {
        let secret = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).unwrap();
        Self { secret, auth: rand::random(), endpoint }
    }

    fn public_key(&self) -> Vec<u8> {
        self.secret.public_key().to_encoded_point(false).as_bytes().to_vec()
    }

    /// The device id an app registers: `webpush:` + base64url of `PushSubscription.toJSON()`.
    fn device_id(&self) -> String {
        let subscription = json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {"p256dh": URL_SAFE_NO_PAD.encode(self.public_key()), "auth": URL_SAFE_NO_PAD.encode(self.auth)},
        });
        format!("webpush:{}", URL_SAFE_NO_PAD.encode(subscription.to_string()))
    }

    /// RFC 8291 decryption, written here from the RFC (RustCrypto primitives) so that it checks the relay's
    /// encryption (the web-push crate, on OpenSSL) against an independent reading of the standard.
    fn decrypt(&self, body: &[u8]) -> Vec<u8> {
        let (salt, rest) = body.split_at(16);
        let key_id_length = rest[4] as usize;
        let (server_key, ciphertext) = rest[5..].split_at(key_id_length);
        let server_public = p256::PublicKey::from_sec1_bytes(server_key).expect("keyid is the server's P-256 key");
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), server_public.as_affine());

        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend(self.public_key());
        key_info.extend(server_key);
        let mut ikm = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&self.auth), shared.raw_secret_bytes())
            .expand(&key_info, &mut ikm)
            .unwrap();
        let content = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &ikm);
        let (mut key, mut nonce) = ([0u8; 16], [0u8; 12]);
        content.expand(b"Content-Encoding: aes128gcm\0", &mut key).unwrap();
        content.expand(b"Content-Encoding: nonce\0", &mut nonce).unwrap();
        let cipher = aes_gcm::Aes128Gcm::new_from_slice(&key).unwrap();
        let mut record = cipher.decrypt(&nonce.into(), ciphertext).expect("the record decrypts");
        // The last record ends with the delimiter 2, then optional zero padding.
        while record.last() == Some(&0) {
            record.pop();
        }
        assert_eq!(record.pop(), Some(2), "last-record delimiter");
        record
    }
}

/// Checks the VAPID header (RFC 8292) against the key the relay advertises; returns the JWT's claims.
fn verify_vapid(request: &Recorded, advertised_key: &str) -> Value {
    let authorization = request.header("authorization").strip_prefix("vapid ").expect("a vapid authorization");
    let field = |name: &str| {
        authorization.split(',').find_map(|part| part.trim().strip_prefix(name)).expect("t= and k=").to_owned()
    };
    let (token, key) = (field("t="), field("k="));
    assert_eq!(key, advertised_key);
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    let decoding =
        DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(&point[1..33]), &URL_SAFE_NO_PAD.encode(&point[33..]))
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("JWT signed with the VAPID key").claims
}

#[tokio::test]
async fn web_push_reaches_a_browser_encrypted_and_signed() {
    let service = StandIn::start().await;
    let browser = Browser::new(format!("{}/wpush/v2/subscription-1", service.url));
    let mut s =
        Scenario::new(|_| browser.device_id(), |c| c.push.webpush.subject = "mailto:ops@example.org".into()).await;
    s.service = service;
    let advertised = s.relay.nip11().await["push"]["vapid_public_key"].as_str().expect("advertised").to_owned();

    let (user, friend) = (s.user.clone(), s.friend.clone());
    s.client.publish_ok(&sign(&friend, 0, r#"{"name":"Frank"}"#, &[], now())).await;
    let message = dm(&friend, &user);
    s.client.publish_ok(&message).await;
    let request = s.service.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/wpush/v2/subscription-1"));
    assert_eq!(request.header("content-encoding"), "aes128gcm");
    assert_eq!(request.header("urgency"), "high");
    assert!(request.header("ttl").parse::<u64>().unwrap() > 0);

    let claims = verify_vapid(&request, &advertised);
    let origin = url::Url::parse(&browser.endpoint).unwrap().origin().ascii_serialization();
    assert_eq!(claims["aud"], origin, "the endpoint's origin, port included");
    assert_eq!(claims["sub"], "mailto:ops@example.org");
    let expires = claims["exp"].as_u64().unwrap();
    assert!(expires > now() && expires <= now() + 24 * 3600, "exp within 24 hours");

    let payload: Value = serde_json::from_slice(&browser.decrypt(&request.body)).unwrap();
    assert_eq!(payload["notification"], json!({"title": "pushrelay", "body": "Frank: New message"}));
    assert_eq!(payload["data"]["event_id"], id_of(&message));
    assert_eq!(payload["data"]["kind"], "4");
}

#[tokio::test]
async fn web_push_subscriptions_gone_at_the_service_are_dropped() {
    let service = StandIn::start().await;
    let browser = Browser::new(format!("{}/wpush/gone", service.url));
    let mut s =
        Scenario::new(|_| browser.device_id(), |c| c.push.webpush.subject = "https://relay.example".into()).await;
    s.service = service;
    s.service.answer_next(410, "");
    let (user, friend) = (s.user.clone(), s.friend.clone());
    s.client.publish_ok(&dm(&friend, &user)).await;
    s.service.next().await;
    let push = s.push();
    assert!(eventually(|| push.registry().registrations_of(&user.public_key().to_bytes()).is_empty()).await);
}

#[tokio::test]
async fn web_push_endpoints_on_private_addresses_are_refused_by_default() {
    let service = StandIn::start().await;
    let relay = start_with(&service.url, |c| {
        c.push.unifiedpush.allow_private_addresses = false;
        c.push.webpush.subject = "mailto:ops@example.org".into();
    })
    .await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    // A plain http:// endpoint is not even a valid subscription without the switch.
    let plain = Browser::new(format!("{}/wpush/x", service.url));
    let content = json!({"kinds": [4], "deviceId": plain.device_id(), "#p": [tagging(&user)]});
    let refused = registration_event(&user, &push_key(&relay), &content, Cipher::Nip44, now());
    let (accepted, reason) = client.publish(&refused).await;
    assert!(!accepted && reason.starts_with("invalid: deviceId"), "{reason}");
    // An https:// endpoint on loopback registers, but nothing is sent to it.
    let loopback = Browser::new("https://127.0.0.1:9/wpush/x".to_owned());
    register(
        &mut client,
        &relay,
        &user,
        json!({"kinds": [4], "deviceId": loopback.device_id(), "#p": [tagging(&user)]}),
    )
    .await;
    client.publish_ok(&dm(&friend, &user)).await;
    let push = relay.push();
    assert!(eventually(|| push.stats().dropped.load(std::sync::atomic::Ordering::Relaxed) == 1).await);
}

crate::on_both_backends!(badges_count_up_while_offline_and_restart_after_being_online);
