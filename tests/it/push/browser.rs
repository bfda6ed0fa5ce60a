//! The notifications page in a real headless Chromium (Debian's `chromium`, which the test command installs when
//! missing). The page is loaded inside a wrapper, served by this test, that puts stand-ins where a person's browser
//! has real parts: `window.nostr` (a NIP-07 signer whose keys live in this test), the service worker's push
//! subscription (a real P-256 key pair pointing at a Web Push stand-in) and the permission prompt. The page's own
//! script, fetched from the relay, then runs as it would for a person: sign in, turn notifications on, see the
//! device, send it a test, remove it. Errors on the page's console fail the test.

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use crate::common::push::*;
use crate::common::standins::StandIn;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nostr::nips::nip44;
use nostr::prelude::*;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};
use tokio::sync::mpsc;

struct Person {
    keys: Keys,
    report: mpsc::Sender<Value>,
    page: String,
}

/// The wrapper page: the stand-ins, the relay's page body, its script from the relay, and the steps a person takes.
fn wrapper(relay_http: &str, relay_page: &str, pubkey: &str, subscription: &Value) -> String {
    let body = relay_page.split("<body>").nth(1).unwrap().split("<script").next().unwrap();
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><script>
const errors = [];
window.addEventListener("error", (e) => errors.push("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => errors.push("rejection: " + e.reason));
const consoleError = console.error;
console.error = (...args) => {{ errors.push("console: " + args.join(" ")); consoleError(...args); }};
const call = (path, body) => fetch(path, {{ method: "POST", body: JSON.stringify(body) }}).then((r) => r.json());
window.nostr = {{
  getPublicKey: async () => "{pubkey}",
  signEvent: (event) => call("/sign", event),
  nip44: {{ encrypt: (pubkey, text) => call("/encrypt", {{ pubkey, text }}).then((r) => r.ciphertext) }},
}};
const subscription = {{ toJSON: () => ({subscription}) }};
const worker = {{ pushManager: {{ subscribe: async () => subscription, getSubscription: async () => null }} }};
Object.defineProperty(navigator, "serviceWorker", {{ value: {{
  register: async () => worker, ready: Promise.resolve(worker), getRegistration: async () => undefined,
}} }});
window.Notification = {{ requestPermission: async () => "granted" }};
</script></head><body>{body}
<script src="{relay_http}/notifications/app.js"></script>
<script>
const wait = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (check) => {{ for (let i = 0; i < 150; i++) {{ if (check()) return true; await wait(100); }} return false; }};
const status = () => document.getElementById("status").textContent;
const rows = () => [...document.querySelectorAll("#devices tr")].map((row) => row.textContent);
const press = (label) => [...document.querySelectorAll("#devices button")].find((b) => b.textContent === label).click();
(async () => {{
  const seen = {{}};
  document.getElementById("sign-in").click();
  await until(() => !document.getElementById("signed-in").hidden);
  document.getElementById("enable").click();
  await until(() => status().includes("will be notified") || status().startsWith("Could not"));
  seen.enabled = status();
  await until(() => rows().some((row) => row.includes("this browser")));
  seen.devices = rows();
  press("Send a test");
  await until(() => status().includes("Test notification sent") || document.getElementById("status").className);
  seen.tested = status();
  press("Remove");
  await until(() => rows().some((row) => row.includes("No devices registered")));
  seen.removed = rows();
  seen.errors = errors;
  await call("/report", seen);
}})().catch((e) => call("/report", {{ fatal: String(e), errors }}));
</script></body></html>"##
    )
}

async fn serve_person(person: Arc<Person>) -> String {
    async fn sign_event(State(person): State<Arc<Person>>, body: String) -> String {
        let unsigned: Value = serde_json::from_str(&body).unwrap();
        let tags: Vec<Tag> = unsigned["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Tag::parse(t.as_array().unwrap().iter().map(|v| v.as_str().unwrap())).unwrap())
            .collect();
        let event = EventBuilder::new(
            Kind::from(unsigned["kind"].as_u64().unwrap() as u16),
            unsigned["content"].as_str().unwrap(),
        )
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(unsigned["created_at"].as_u64().unwrap()))
        .finalize(&person.keys)
        .unwrap();
        event.as_json()
    }
    async fn encrypt(State(person): State<Arc<Person>>, body: String) -> String {
        let asked: Value = serde_json::from_str(&body).unwrap();
        let to = PublicKey::from_hex(asked["pubkey"].as_str().unwrap()).unwrap();
        let text = asked["text"].as_str().unwrap();
        let ciphertext = nip44::encrypt(person.keys.secret_key(), &to, text, nip44::Version::V2).unwrap();
        json!({"ciphertext": ciphertext}).to_string()
    }
    async fn report(State(person): State<Arc<Person>>, body: String) -> &'static str {
        let _ = person.report.send(serde_json::from_str(&body).unwrap()).await;
        "{}"
    }
    async fn page(State(person): State<Arc<Person>>) -> axum::response::Html<String> {
        axum::response::Html(person.page.clone())
    }
    let app = Router::new()
        .route("/", get(page))
        .route("/sign", post(sign_event))
        .route("/encrypt", post(encrypt))
        .route("/report", post(report))
        .with_state(person);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Headless Chromium on `url`, with a profile of its own (removed with it); killed when dropped.
struct Chromium(Child, #[allow(dead_code)] tempfile::TempDir);

impl Chromium {
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .spawn()
            .expect("Chromium runs (Debian's chromium package: apt-get install chromium)");
        Self(child, profile)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_turns_notifications_on_tests_and_removes_their_browser() {
    let mut webpush = StandIn::start().await;
    // The page signs NIP-98 requests for the relay's own address, which is its public URL here.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let relay = start_with(&webpush.url, |c| {
        c.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        c.server.public_url = format!("ws://127.0.0.1:{port}");
        c.push.webpush.subject = "mailto:ops@example.org".into();
    })
    .await;
    let relay_http = relay.http_url();
    let relay_page = reqwest::get(format!("{relay_http}/notifications")).await.unwrap().text().await.unwrap();

    let secret = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).unwrap();
    let point = secret.public_key().to_encoded_point(false);
    let subscription = json!({
        "endpoint": format!("{}/wp/browser", webpush.url),
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())},
    });
    let keys = Keys::generate();
    let (report, mut reports) = mpsc::channel(1);
    let page = wrapper(&relay_http, &relay_page, &keys.public_key().to_hex(), &subscription);
    let person = Arc::new(Person { keys: keys.clone(), report, page });
    let url = serve_person(person).await;

    let _browser = Chromium::open(&url);
    let seen = tokio::time::timeout(Duration::from_secs(60), reports.recv()).await.expect("the page reports").unwrap();
    assert!(seen.get("fatal").is_none(), "{seen:#}");
    assert_eq!(seen["errors"], json!([]), "no errors on the page's console: {seen:#}");
    assert!(seen["enabled"].as_str().unwrap().contains("will be notified"), "{seen:#}");
    let devices = seen["devices"].to_string();
    assert!(devices.contains("webpush") && devices.contains("this browser"), "{devices}");
    assert!(seen["tested"].as_str().unwrap().contains("Test notification sent"), "{seen:#}");
    assert!(seen["removed"].to_string().contains("No devices registered"), "{seen:#}");

    // The registration the page published was applied as any app's (the device was listed from the registry),
    // and the test notification reached the Web Push stand-in.
    let pushed = webpush.next().await;
    assert_eq!(pushed.path, "/wp/browser");
    assert!(pushed.header("authorization").starts_with("vapid "));
    let push = relay.push();
    assert!(push.registry().registrations_of(keys.public_key().as_bytes()).is_empty(), "removed");
}
