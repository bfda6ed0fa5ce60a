//! Push delivery end to end: a device registers over a real WebSocket, goes offline, someone publishes a matching
//! event, and the local APNs / FCM / UnifiedPush stand-in receives exactly the request the real service expects.

use std::time::Duration;

use crate::common::push::*;
use crate::common::standins::{ACCESS_TOKEN, StandIn, TOKEN_PATH};
use crate::common::*;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use nostr::prelude::*;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

async fn apns_gets_exactly_the_request_apple_expects() {
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let (user, alice) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    client.publish_ok(&sign(&alice, 0, r#"{"name":"alice","display_name":"Alice"}"#, &[], now())).await;
    register(&mut client, &relay, &user, registration(&format!("{BUNDLE}{}", apns_token(1)), &user)).await;

    let message = dm(&alice, &user);
    client.publish_ok(&message).await;
    let request = apns.next().await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/3/device/{}", apns_token(1)));
    assert_eq!(request.version, axum::http::Version::HTTP_2);
    assert_eq!(request.header("apns-topic"), BUNDLE);
    assert_eq!(request.header("apns-push-type"), "alert");
    assert_eq!(request.header("apns-priority"), "10");
    assert!(request.header("apns-expiration").parse::<u64>().unwrap() > now());
    assert_eq!(request.header("apns-collapse-id"), id_of(&message));
    let claims = verify_apns_jwt(&request);
    assert_eq!(claims["iss"], TEAM_ID);
    assert!(claims["iat"].as_u64().unwrap().abs_diff(now()) < 60);

    assert!(request.body.len() < 4096);
    let body = request.json();
    assert_eq!(body["aps"]["alert"]["body"], "Alice: New message");
    assert_eq!(body["aps"]["alert"]["title"], "pushrelay");
    assert_eq!(body["aps"]["mutable-content"], 1);
    assert!(body["aps"]["sound"].is_string());
    assert_eq!(body["event_id"], id_of(&message));
    assert_eq!(body["kind"], 4);
    assert_eq!(body["author"], alice.public_key().to_hex());
    assert!(!request.body.windows(10).any(|w| w == b"ciphertext"), "never the message itself");
    apns.expect_none().await;

    // A bare hex token goes to the default topic.
    let other = Keys::generate();
    register(&mut client, &relay, &other, registration(&apns_token(2), &other)).await;
    client.publish_ok(&dm(&alice, &other)).await;
    let request = apns.next().await;
    assert_eq!(request.path, format!("/3/device/{}", apns_token(2)));
    assert_eq!(request.header("apns-topic"), "com.example.default");
}

async fn fcm_gets_oauth_and_both_message_forms() {
    let mut fcm = StandIn::start().await;
    let relay = start(&fcm.url).await;
    let (user, embedded_user, zapper) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    register(&mut client, &relay, &user, registration("fcm-token:APA91b_stand_in", &user)).await;
    let embedded = "Embedded-FCM/FCM?v2&instance=default&token=embedded:TOKEN";
    register(&mut client, &relay, &embedded_user, registration(embedded, &embedded_user)).await;

    let zap = sign(&zapper, 9735, "", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&zap).await;
    let request = fcm.next().await;
    assert_eq!(request.path, format!("/v1/projects/{PROJECT}/messages:send"));
    assert_eq!(request.header("authorization"), format!("Bearer {ACCESS_TOKEN}"));
    let message = &request.json()["message"];
    assert_eq!(message["token"], "fcm-token:APA91b_stand_in");
    assert_eq!(message["notification"]["body"], "New zap");
    assert_eq!(message["data"]["msgType"], "0");
    assert_eq!(message["data"]["event_id"], id_of(&zap));

    // The access token came from the service account's token_uri with a signed JWT grant.
    let grant = &fcm.token_requests()[0];
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&grant.body).into_owned().collect();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    // gcp_auth pads its base64url segments, which jsonwebtoken's decoder refuses; the signature is checked over
    // the segments exactly as sent.
    let assertion = &form["assertion"];
    let parts: Vec<&str> = assertion.split('.').collect();
    let key = DecodingKey::from_rsa_pem(&std::fs::read(fixture("fcm_test_key.pub.pem")).unwrap()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = parts[2].trim_end_matches('=');
    assert!(jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key, Algorithm::RS256).unwrap());
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1].trim_end_matches('=')).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], format!("{}{TOKEN_PATH}", fcm.url));
    assert!(claims["scope"].as_str().unwrap().contains("firebase.messaging"));

    // FCM inside UnifiedPush: a data-only message whose data.b is the Android body.
    let group_message = sign(&zapper, 9, "hello group", &[&["h", "group-1"]], now());
    client.publish_ok(&group_message).await;
    let mut bodies = [fcm.next().await.json(), fcm.next().await.json()];
    bodies.sort_by_key(|b| b["message"]["token"].as_str().unwrap().to_owned());
    let embedded_message = &bodies[0]["message"];
    assert_eq!(embedded_message["token"], "embedded:TOKEN");
    assert!(embedded_message.get("notification").is_none());
    let decoded = base64::engine::general_purpose::STANDARD.decode(embedded_message["data"]["b"].as_str().unwrap());
    let decoded: Value = serde_json::from_slice(&decoded.unwrap()).unwrap();
    assert_eq!(decoded["notification"]["body"], "New group message");
    assert_eq!(decoded["data"]["msgType"], "0");
    assert_eq!(bodies[1]["message"]["notification"]["body"], "New group message");
}

async fn unifiedpush_endpoints_get_the_body_as_is() {
    let mut up = Scenario::new(|s| format!("{}/up/device-1", s.url), |_| {}).await;
    let reaction = sign(&up.friend, 7, "🤙", &[&["p", &up.user.public_key().to_hex()]], now());
    up.client.publish_ok(&reaction).await;
    let request = up.service.next().await;
    assert_eq!(request.path, "/up/device-1");
    let body = request.json();
    assert_eq!(body["notification"]["body"], "Someone reacted 🤙");
    assert_eq!(body["data"]["msgType"], "0");
}

async fn private_unifiedpush_endpoints_are_refused_by_default() {
    let mut endpoint = StandIn::start().await;
    let relay = start_with(&endpoint.url, |c| c.push.unifiedpush.allow_private_addresses = false).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    // A plain http:// endpoint is not even a valid device id without the switch.
    let event = registration_event(
        &user,
        &push_key(&relay),
        &registration(&format!("{}/up/x", endpoint.url), &user),
        Cipher::Nip04,
        now(),
    );
    let (accepted, reason) = client.publish(&event).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");
    // An https:// endpoint on loopback registers, but nothing is sent to it.
    register(&mut client, &relay, &user, registration("https://127.0.0.1:9/up/x", &user)).await;
    client.publish_ok(&dm(&friend, &user)).await;
    endpoint.expect_none().await;
    let push = relay.push();
    assert!(eventually(|| push.stats().dropped.load(Ordering::Relaxed) == 1).await);
}

async fn online_users_other_kinds_own_and_excluded_authors_get_nothing() {
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let (user, friend, pest, awake) = (Keys::generate(), Keys::generate(), Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let mut content = registration(&apns_token(1), &user);
    content["exclude_authors"] = json!([pest.public_key().to_hex()]);
    register(&mut client, &relay, &user, content).await;
    register(&mut client, &relay, &awake, registration(&apns_token(2), &awake)).await;
    register(&mut client, &relay, &awake, json!({"online": 1})).await;

    client.publish_ok(&dm(&friend, &awake)).await;
    client.publish_ok(&sign(&friend, 1, "a note", &[&["p", &user.public_key().to_hex()]], now())).await;
    client.publish_ok(&dm(&user, &user)).await;
    client.publish_ok(&dm(&pest, &user)).await;
    apns.expect_none().await;

    // The one that should arrive does.
    client.publish_ok(&dm(&friend, &user)).await;
    assert_eq!(apns.next().await.path, format!("/3/device/{}", apns_token(1)));
}

async fn ephemeral_events_push_too() {
    let mut apns = Scenario::apns().await;
    register(&mut apns.client, &apns.relay, &apns.user, json!({"kinds": [21000]})).await;
    let ring = sign(&apns.friend, 21000, "ring", &[&["p", &apns.user.public_key().to_hex()]], now());
    apns.client.publish_ok(&ring).await;
    assert_eq!(apns.service.next().await.json()["kind"], 21000);
}

async fn a_dead_token_drops_the_device() {
    let mut apns = Scenario::apns().await;
    apns.service.answer_next(410, r#"{"reason":"Unregistered"}"#);
    apns.client.publish_ok(&dm(&apns.friend, &apns.user)).await;
    apns.service.next().await;
    let push = apns.push();
    assert!(eventually(|| push.registry().registrations_of(apns.user.public_key().as_bytes()).is_empty()).await);
    apns.client.publish_ok(&dm(&apns.friend, &apns.user)).await;
    apns.service.expect_none().await;
}

async fn fcm_unregistered_drops_the_device() {
    let mut fcm = Scenario::new(|_| "fcm-token:gone_for_good".into(), |_| {}).await;
    fcm.service.answer_next(
        404,
        r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
    );
    fcm.client.publish_ok(&dm(&fcm.friend, &fcm.user)).await;
    fcm.service.next().await;
    let push = fcm.push();
    assert!(eventually(|| !push.registry().has_device("fcm-token:gone_for_good")).await);
    fcm.client.publish_ok(&dm(&fcm.friend, &fcm.user)).await;
    fcm.service.expect_none().await;
}

async fn service_unavailable_twice_then_success_delivers_once() {
    let mut apns = Scenario::apns().await;
    apns.service.answer_next(503, r#"{"reason":"ServiceUnavailable"}"#);
    apns.service.answer_next(429, r#"{"reason":"TooManyRequests"}"#);
    let message = dm(&apns.friend, &apns.user);
    apns.client.publish_ok(&message).await;
    for _ in 0..3 {
        assert_eq!(apns.service.next().await.json()["event_id"], id_of(&message));
    }
    apns.service.expect_none().await;
    assert_eq!(apns.count(|s| &s.sent), 1);
}

async fn a_restart_between_enqueue_and_send_still_delivers_once() {
    // First life: the push service cannot be reached, so the job waits in the queue.
    let parked = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = parked.local_addr().unwrap();
    drop(parked);
    let relay = start(&format!("http://{address}")).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    register(&mut client, &relay, &user, registration(&apns_token(1), &user)).await;
    let message = dm(&friend, &user);
    client.publish_ok(&message).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut relay = relay;
    relay.handle.take().unwrap().shutdown().await;

    // Second life: the service is there now, on the same address.
    let mut apns = StandIn::serve(tokio::net::TcpListener::bind(address).await.unwrap()).await;
    let relay = TestRelay::reopen(relay).await;
    let request = apns.next().await;
    assert_eq!(request.json()["event_id"], id_of(&message));
    apns.expect_none().await;
    drop(relay);
}

async fn bursts_beyond_the_device_limit_are_merged() {
    let mut apns = Scenario::new(
        |_| apns_token(1),
        |c| {
            c.push.device_burst = 1;
            c.push.device_refill_secs = 1;
        },
    )
    .await;
    for _ in 0..4 {
        apns.client.publish_ok(&dm(&apns.friend, &apns.user)).await;
    }
    let mut bodies = Vec::new();
    while let Some(request) = apns.service.try_next(Duration::from_secs(3)).await {
        bodies.push(request.json()["aps"]["alert"]["body"].as_str().unwrap().to_owned());
    }
    assert!(bodies.len() >= 2 && bodies.len() < 4, "{bodies:?}");
    assert_eq!(bodies[0], "New message");
    let merged: usize = bodies[1..].iter().map(|b| b.split(' ').next().unwrap().parse::<usize>().unwrap_or(1)).sum();
    assert_eq!(merged, 3, "every event is in some notification: {bodies:?}");
    assert!(bodies[1..].iter().any(|b| b.ends_with("new messages")), "{bodies:?}");
}

async fn without_credentials_jobs_fail_fast_and_are_counted() {
    let mut apns = Scenario::new(|_| apns_token(1), |c| c.push.apns.key_file = None).await;
    apns.client.publish_ok(&dm(&apns.friend, &apns.user)).await;
    assert!(eventually(|| apns.count(|s| &s.dropped) == 1).await);
    assert_eq!(apns.push().pending_jobs().await, 0, "not retried forever");
    apns.service.expect_none().await;
}

async fn an_event_matching_a_device_twice_is_pushed_once() {
    let mut apns = Scenario::apns().await;
    let user = apns.user.public_key().to_hex();
    let both = sign(&apns.friend, 9, "hi @user", &[&["p", &user], &["h", "group-1"]], now());
    apns.client.publish_ok(&both).await;
    assert_eq!(apns.service.next().await.json()["event_id"], id_of(&both));
    apns.service.expect_none().await;
}

async fn a_push_still_failing_past_its_age_limit_is_dropped_and_counted() {
    let mut apns = Scenario::new(|_| apns_token(1), |c| c.push.max_job_age_secs = 1).await;
    for _ in 0..100 {
        apns.service.answer_next(503, r#"{"reason":"ServiceUnavailable"}"#);
    }
    apns.client.publish_ok(&dm(&apns.friend, &apns.user)).await;
    assert!(eventually(|| apns.count(|s| &s.dropped) == 1).await);
    assert!(apns.count(|s| &s.retried) >= 1);
    assert_eq!(apns.push().pending_jobs().await, 0);
    while apns.service.try_next(Duration::from_millis(300)).await.is_some() {}
    apns.service.expect_none().await;
}

/// YakiHonne's registration exactly as the app sends it: `online: 1` inside, no `#p`, `#e`, `authors` or `relays`,
/// a bare hex APNs token, `deviceOs` and `enableMaxMentions`, and a heartbeat every three minutes. It is for its
/// signer: while the app beats, no push; once the app goes to the background, a mention of the signer is pushed.
async fn yakihonnes_registration_as_sent_pushes_its_signers_mentions() {
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let token = apns_token(9);
    let content = json!({
        "online": 1,
        "kinds": [1, 4, 6, 7, 9735, 1059],
        "deviceId": token,
        "deviceOs": "ios",
        "enableMaxMentions": true,
    });
    let (accepted, reason) =
        client.publish(&registration_event(&user, &push_key(&relay), &content, Cipher::Nip04, now())).await;
    assert!(accepted && reason.is_empty(), "{reason}");
    let push = relay.push();
    let registered = push.registry().registrations_of(user.public_key().as_bytes());
    assert_eq!(*registered[0].p_tags, [user.public_key().to_bytes()], "a registration without #p is for its signer");
    // Three minutes after a beat, the user is still in the app: the default timeout outlasts YakiHonne's beat.
    let beat = now() as i64;
    assert!(push.registry().is_online(user.public_key().as_bytes(), beat + 185));
    let mention = sign(&friend, 1, "hi", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&mention).await;
    apns.expect_none().await;

    // To the background; the next mention is pushed, to the bare token with the default topic.
    let background = registration_event(&user, &push_key(&relay), &json!({"online": 0}), Cipher::Nip04, now() + 1);
    client.publish_ok(&background).await;
    let mention = sign(&friend, 1, "are you there", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&mention).await;
    let request = apns.next().await;
    assert_eq!(request.path, format!("/3/device/{token}"));
    assert_eq!(request.header("apns-topic"), "com.example.default");
    assert_eq!(request.json()["event_id"], id_of(&mention));
}

crate::on_both_backends!(
    yakihonnes_registration_as_sent_pushes_its_signers_mentions,
    apns_gets_exactly_the_request_apple_expects,
    fcm_gets_oauth_and_both_message_forms,
    unifiedpush_endpoints_get_the_body_as_is,
    private_unifiedpush_endpoints_are_refused_by_default,
    online_users_other_kinds_own_and_excluded_authors_get_nothing,
    ephemeral_events_push_too,
    a_dead_token_drops_the_device,
    fcm_unregistered_drops_the_device,
    service_unavailable_twice_then_success_delivers_once,
    a_restart_between_enqueue_and_send_still_delivers_once,
    bursts_beyond_the_device_limit_are_merged,
    without_credentials_jobs_fail_fast_and_are_counted,
    an_event_matching_a_device_twice_is_pushed_once,
    a_push_still_failing_past_its_age_limit_is_dropped_and_counted,
);
