//! Push test set-up shared by the delivery and notification tests: a relay whose push services all live at one
//! local stand-in, a registered offline device, and the checks of what the stand-in received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use nostr::prelude::*;
use pushrelay::Config;
use pushrelay::push::delivery::stats::PushStats;
use serde_json::{Value, json};

use super::standins::{Recorded, StandIn, TOKEN_PATH};
use super::*;

pub(crate) const BUNDLE: &str = "com.example.app";
pub(crate) const KEY_ID: &str = "KEYID12345";
pub(crate) const TEAM_ID: &str = "TEAM123456";
pub(crate) const PROJECT: &str = "test-project";

pub(crate) fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn apns_token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Points every sender at `standin` and makes retries quick.
pub(crate) fn push_config(config: &mut Config, url: &str, dir: &std::path::Path) {
    let push = &mut config.push;
    push.apns.endpoint = url.to_owned();
    push.apns.key_file = Some(fixture("apns_test_key.p8").into());
    push.apns.key_id = KEY_ID.into();
    push.apns.team_id = TEAM_ID.into();
    push.apns.topic = "com.example.default".into();
    push.apns.bundle_ids = vec![BUNDLE.into()];
    push.fcm.endpoint = url.to_owned();
    push.fcm.service_account_file = Some(fcm_service_account(url, dir));
    push.unifiedpush.allow_private_addresses = true;
    push.retry_initial_ms = 100;
}

/// A Firebase service-account file in `dir` whose tokens come from the stand-in at `url`.
pub(crate) fn fcm_service_account(url: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let account = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "stand-in",
        "private_key": std::fs::read_to_string(fixture("fcm_test_key.pem")).unwrap(),
        "client_email": "pushrelay@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": format!("{url}{TOKEN_PATH}"),
    });
    let account_file = dir.join("service-account.json");
    std::fs::write(&account_file, account.to_string()).unwrap();
    account_file
}

/// APNs settings for the relay binary, sending to `url`.
pub(crate) fn apns_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PUSHRELAY_PUSH__APNS__ENDPOINT", url.to_owned()),
        ("PUSHRELAY_PUSH__APNS__KEY_FILE", fixture("apns_test_key.p8")),
        ("PUSHRELAY_PUSH__APNS__KEY_ID", KEY_ID.to_owned()),
        ("PUSHRELAY_PUSH__APNS__TEAM_ID", TEAM_ID.to_owned()),
        ("PUSHRELAY_PUSH__APNS__TOPIC", "com.example.app".to_owned()),
        ("PUSHRELAY_PUSH__RETRY_INITIAL_MS", "100".to_owned()),
        ("PUSHRELAY_PUSH__RETRY_MAX_MS", "400".to_owned()),
    ]
}

/// A relay whose push services all live at `url`.
pub(crate) async fn start(url: &str) -> TestRelay {
    start_with(url, |_| {}).await
}

pub(crate) async fn start_with(url: &str, adjust: impl FnOnce(&mut Config)) -> TestRelay {
    let key_dir = tempfile::tempdir().unwrap().keep();
    TestRelay::start_with(|c| {
        push_config(c, url, &key_dir);
        adjust(c);
    })
    .await
}

pub(crate) fn push_key(relay: &TestRelay) -> PublicKey {
    relay.push().public_key()
}

/// Sends `user`'s registration (NIP-04, created now) with this content; the relay's answer.
pub(crate) async fn try_register(
    client: &mut Client,
    relay: &TestRelay,
    user: &Keys,
    content: Value,
) -> (bool, String) {
    client.publish(&registration_event(user, &push_key(relay), &content, Cipher::Nip04, now())).await
}

/// Registers what `content` says for `user`, which must be accepted.
pub(crate) async fn register(client: &mut Client, relay: &TestRelay, user: &Keys, content: Value) {
    let (accepted, reason) = try_register(client, relay, user, content).await;
    assert!(accepted, "registration refused: {reason}");
}

pub(crate) fn registration(device_id: &str, user: &Keys) -> Value {
    json!({
        "kinds": [4, 1059, 9735, 7, 9],
        "deviceId": device_id,
        "#p": [user.public_key().to_hex()],
        "#e": ["group-1"],
    })
}

/// A new direct message each call (distinct content, so distinct ids within one second).
pub(crate) fn dm(from: &Keys, to: &Keys) -> Event {
    let content = format!("ciphertext{}?iv=abc", rand::random::<u64>());
    sign(from, 4, &content, &[&["p", &to.public_key().to_hex()]], now())
}

/// A stand-in for every push service, a relay sending to it, and a user with one device registered (offline).
pub(crate) struct Scenario {
    pub service: StandIn,
    pub relay: TestRelay,
    pub client: Client,
    pub user: Keys,
    pub friend: Keys,
}

impl Scenario {
    /// `device` names the user's device id given the stand-in; `adjust` changes the relay's configuration.
    pub(crate) async fn new(device: impl FnOnce(&StandIn) -> String, adjust: impl FnOnce(&mut Config)) -> Self {
        let service = StandIn::start().await;
        let relay = start_with(&service.url, adjust).await;
        let (user, friend) = (Keys::generate(), Keys::generate());
        let mut client = relay.client().await;
        register(&mut client, &relay, &user, registration(&device(&service), &user)).await;
        Self { service, relay, client, user, friend }
    }

    pub(crate) async fn apns() -> Self {
        Self::new(|_| apns_token(1), |_| {}).await
    }

    pub(crate) fn push(&self) -> std::sync::Arc<pushrelay::push::PushService> {
        self.relay.push()
    }

    pub(crate) fn count(&self, counter: fn(&PushStats) -> &AtomicU64) -> u64 {
        counter(self.push().stats()).load(Ordering::Relaxed)
    }
}

/// Waits (up to 5 s) for something the delivery loop does in the background.
pub(crate) async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

pub(crate) fn verify_apns_jwt(request: &Recorded) -> Value {
    let bearer = request.header("authorization").strip_prefix("Bearer ").expect("bearer token");
    let header = jsonwebtoken::decode_header(bearer).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(KEY_ID));
    let key = DecodingKey::from_ec_pem(&std::fs::read(fixture("apns_test_key.pub.pem")).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(bearer, &key, &validation).expect("JWT signed with the APNs key").claims
}
