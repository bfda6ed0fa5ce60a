//! Senders: one small module per push service behind one trait, each with a configurable endpoint so that tests
//! can point it at a local stand-in.

mod apns;
mod callback;
mod fcm;
mod unifiedpush;
mod webpush;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use crate::config::PushConfig;
use crate::push::device::Device;
pub use apns::ApnsSender;
pub use callback::CallbackSender;
pub use fcm::FcmSender;
pub use unifiedpush::UnifiedPushSender;
pub use webpush::WebPushSender;

/// What a notification says. Never the plaintext of an encrypted event: the text comes from the kind and the
/// author's public profile; the app fetches the event by id to show more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// The newest event the notification is about.
    pub event_id: String,
    pub kind: u16,
    pub author: String,
    /// The number the app icon shows: notifications since the pubkey was last online, this one included.
    pub badge: Option<u32>,
    /// NIP-97: the event gift-wrapped to its recipient (a kind 1059 event's JSON), which the app opens itself.
    pub wrap: Option<String>,
}

impl Notification {
    /// The body the Android app decodes (README, "Push registration": device ids): `notification` plus `data.msgType`.
    pub fn android_body(&self) -> Value {
        json!({
            "notification": {"title": self.title, "body": self.body},
            "data": {"msgType": "0", "event_id": self.event_id, "kind": self.kind.to_string(), "author": self.author},
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered,
    /// Worth trying again (429, 5xx, timeouts), not before `after` when the service said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The service says the token is dead: the device is to be forgotten.
    DeadToken(String),
    /// Will not work however often it is tried.
    Failed(String),
}

#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome;
}

/// Every configured sender; a device goes to the one its form names.
pub struct Senders {
    apns: Option<ApnsSender>,
    fcm: Option<FcmSender>,
    unifiedpush: UnifiedPushSender,
    webpush: Option<WebPushSender>,
    /// NIP-9a callbacks.
    pub callback: CallbackSender,
}

impl Senders {
    /// A sender whose credentials are absent is left out with one warning: its jobs then fail fast.
    pub fn from_config(config: &PushConfig, webpush: Option<WebPushSender>) -> Result<Self, String> {
        let apns = ApnsSender::new(&config.apns)?;
        if apns.is_none() {
            tracing::warn!("APNs is not configured ([push.apns] key_file): iOS devices get no pushes");
        }
        let fcm = FcmSender::new(&config.fcm)?;
        if fcm.is_none() {
            tracing::warn!("FCM is not configured ([push.fcm] service_account_file): FCM devices get no pushes");
        }
        let callback = CallbackSender::new(&config.unifiedpush)?;
        Ok(Self { apns, fcm, unifiedpush: UnifiedPushSender::new(&config.unifiedpush)?, webpush, callback })
    }

    /// APNs, when configured (Marmot's wakes are sent to its `wake`).
    pub fn apns(&self) -> Option<&ApnsSender> {
        self.apns.as_ref()
    }

    /// FCM, when configured.
    pub fn fcm(&self) -> Option<&FcmSender> {
        self.fcm.as_ref()
    }

    pub async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let sender: Option<&dyn Sender> = match device {
            Device::Apns { .. } => self.apns.as_ref().map(|s| s as &dyn Sender),
            Device::Fcm { .. } | Device::EmbeddedFcm { .. } => self.fcm.as_ref().map(|s| s as &dyn Sender),
            Device::UnifiedPush { .. } => Some(&self.unifiedpush),
            Device::WebPush { .. } => self.webpush.as_ref().map(|s| s as &dyn Sender),
        };
        match sender {
            Some(sender) => sender.send(device, notification).await,
            None => SendOutcome::Failed(format!("{} is not configured", device.platform())),
        }
    }
}

/// Endpoints that whoever registers chooses (UnifiedPush, Web Push) are not trusted: they must be `https://` and
/// must not lead to a loopback, private or link-local address (else the relay could be made to call into its own
/// network), unless `allow_private_addresses` (tests). An address literal is checked here; a name is checked by
/// `CheckedResolver` as the client connects, on the very addresses it connects to.
fn check_endpoint(endpoint: &str, allow_private_addresses: bool) -> Result<(), String> {
    if allow_private_addresses {
        return Ok(());
    }
    let url = url::Url::parse(endpoint).map_err(|e| format!("bad endpoint: {e}"))?;
    if url.scheme() != "https" {
        return Err("push endpoints must be https://".into());
    }
    crate::net::check_literal_host(&url)
}

/// The HTTP client for endpoints strangers choose: no redirects (one could lead to an address never checked), and
/// unless `allow_private_addresses`, a resolver that refuses names resolving to non-public addresses and hands the
/// connection only the addresses it checked. Checking the name first and letting the client resolve it again
/// would let a DNS answer that changes in between (rebinding) through.
fn stranger_client(timeout: Duration, allow_private_addresses: bool) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
    if allow_private_addresses { builder } else { builder.dns_resolver(Arc::new(CheckedResolver)) }
}

/// Resolves once, refuses the name if any address is not public, and returns only those checked addresses.
struct CheckedResolver;

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let addresses = crate::net::resolve_host(&host, 0, false).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    &line[..line.floor_char_boundary(200)]
}

/// How much of an answer's body is read: enough for any service's error JSON. Endpoints are chosen by strangers
/// (UnifiedPush, Web Push), and one could answer with an endless body.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// An HTTP answer, its body read up to `MAX_ANSWER_BYTES`.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// Reads the answer to a request; a request that got none (connection refused, timeout) is to be retried.
async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Answer, SendOutcome> {
    let response = sent.map_err(|e| SendOutcome::Retry { after: None, reason: format!("request failed: {e}") })?;
    let (status, headers) = (response.status(), response.headers().clone());
    Ok(Answer { status, headers, body: read_at_most(response, MAX_ANSWER_BYTES).await })
}

/// The start of a body, as text: at most `max` bytes are read, however much the server sends.
async fn read_at_most(mut response: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(max - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

impl Answer {
    /// The common reading of an answer: 2xx delivered, 429 and 5xx retried (honouring `Retry-After`), anything
    /// else failed. Service-specific answers (dead tokens) are read by each sender before falling back to this.
    fn outcome(&self) -> SendOutcome {
        let summary = || format!("{}: {}", self.status, first_line(&self.body));
        if self.status.is_success() {
            SendOutcome::Delivered
        } else if self.status == StatusCode::TOO_MANY_REQUESTS || self.status.is_server_error() {
            SendOutcome::Retry { after: retry_after(&self.headers), reason: summary() }
        } else {
            SendOutcome::Failed(summary())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for stranger-chosen endpoints, pointed (past `check_endpoint`) at a name that resolves to
    /// loopback where a server listens: the connection is refused at resolution, and nothing reaches the server.
    #[tokio::test]
    async fn the_stranger_client_connects_only_to_checked_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
        let accepted = || tokio::time::timeout(Duration::from_millis(300), listener.accept());

        let checked = stranger_client(Duration::from_secs(5), false).build().unwrap();
        let error = checked.post(&url).body("x").send().await.unwrap_err();
        assert!(format!("{error:?}").contains("non-public"), "{error:?}");
        assert!(accepted().await.is_err(), "no connection reached the server");

        // allow_private_addresses (tests): the same request goes through.
        let open = stranger_client(Duration::from_secs(5), true).build().unwrap();
        let request = tokio::spawn(async move { open.post(&url).body("x").send().await });
        assert!(accepted().await.is_ok(), "the server was reached");
        request.abort();
    }
}
