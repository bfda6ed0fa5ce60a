//! APNs over HTTP/2 with token (JWT) authentication.
//!
//! Written on reqwest rather than the a2 crate because a2 cannot be pointed at another endpoint (its hosts are
//! hard-coded), and tests need a local stand-in. An `https://` endpoint is reached with TLS and ALPN h2; an
//! `http://` one with HTTP/2 prior knowledge.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Notification, SendOutcome, Sender, answer};
use crate::config::ApnsConfig;
use crate::push::device::Device;

/// Apple accepts a provider token for an hour and asks that it be renewed at most every 20 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// Apple refuses payloads above this.
const MAX_PAYLOAD: usize = 4096;
/// How long APNs keeps trying to reach an offline phone.
const EXPIRATION: Duration = Duration::from_secs(24 * 3600);

pub struct ApnsSender {
    client: reqwest::Client,
    endpoint: String,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    default_topic: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl ApnsSender {
    pub fn new(config: &ApnsConfig) -> Result<Option<Self>, String> {
        let Some(key_file) = config.key_file.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(None);
        };
        let pem = std::fs::read(key_file).map_err(|e| format!("[push.apns] key_file {}: {e}", key_file.display()))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| format!("[push.apns] key_file {}: not a PKCS#8 P-256 key: {e}", key_file.display()))?;
        if config.key_id.is_empty() || config.team_id.is_empty() {
            return Err("[push.apns] key_id and team_id are required with key_file".into());
        }
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let builder = if config.endpoint.starts_with("http://") { builder.http2_prior_knowledge() } else { builder };
        Ok(Some(Self {
            client: builder.build().map_err(|e| format!("APNs client: {e}"))?,
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            key,
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            default_topic: config.topic.clone(),
            token: Mutex::new(None),
        }))
    }

    /// The provider token, signed anew once it is 50 minutes old.
    async fn bearer(&self) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, issued)) = cached.as_ref()
            && issued.elapsed() < TOKEN_LIFETIME
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let token = jsonwebtoken::encode(&header, &json!({"iss": self.team_id, "iat": iat}), &self.key)
            .map_err(|e| format!("cannot sign the APNs token: {e}"))?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }
}

/// The payload, serialized: a visible alert (apps without a notification-service extension need one),
/// `mutable-content` so an extension may enrich it, and the ids the app needs to fetch the event.
fn payload(notification: &Notification) -> Vec<u8> {
    let mut body = notification.body.clone();
    loop {
        let mut payload = json!({
            "aps": {
                "alert": {"title": notification.title, "body": body},
                "mutable-content": 1,
                "sound": "default",
            },
            "event_id": notification.event_id,
            "kind": notification.kind,
            "author": notification.author,
        });
        if let Some(badge) = notification.badge {
            payload["aps"]["badge"] = badge.into();
        }
        // NIP-97: the wrapped event rides beside the alert while the payload stays within Apple's limit.
        if let Some(wrap) = &notification.wrap {
            let mut with_wrap = payload.clone();
            with_wrap["encryptedEvent"] = wrap.as_str().into();
            let with_wrap = serde_json::to_vec(&with_wrap).expect("JSON serializes");
            if with_wrap.len() <= MAX_PAYLOAD {
                return with_wrap;
            }
        }
        let serialized = serde_json::to_vec(&payload).expect("JSON serializes");
        if serialized.len() <= MAX_PAYLOAD || body.is_empty() {
            return serialized;
        }
        body.truncate(body.floor_char_boundary(body.len() / 2));
    }
}

#[async_trait]
impl Sender for ApnsSender {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let Device::Apns { topic, token } = device else {
            return SendOutcome::Failed("not an APNs device".into());
        };
        let topic = topic.as_deref().unwrap_or(&self.default_topic);
        if topic.is_empty() {
            return SendOutcome::Failed("no apns-topic: set [push.apns] topic".into());
        }
        let request = Request { token, topic, kind: Kind::Alert, collapse_id: Some(&notification.event_id) };
        self.post(&request, payload(notification)).await
    }
}

/// What an APNs request is, beside its payload.
struct Request<'a> {
    token: &'a str,
    topic: &'a str,
    kind: Kind,
    collapse_id: Option<&'a str>,
}

enum Kind {
    /// Shown to the person: immediate priority.
    Alert,
    /// A silent wake (`content-available`): Apple asks for priority 5 and the `background` type.
    Background,
}

impl ApnsSender {
    /// A Marmot wake: silent unless `alert` is given; the token, lowercase hex, is held only for this call.
    pub async fn wake(&self, token: &str, topic: &str, alert: Option<&str>) -> SendOutcome {
        let topic = if topic.is_empty() { self.default_topic.as_str() } else { topic };
        if topic.is_empty() {
            return SendOutcome::Failed("no apns-topic: set [push.marmot] apns_topic".into());
        }
        let (kind, payload) = match alert {
            None => (Kind::Background, json!({"aps": {"content-available": 1}})),
            Some(text) => (Kind::Alert, json!({"aps": {"alert": {"body": text}, "sound": "default"}})),
        };
        let payload = serde_json::to_vec(&payload).expect("JSON serializes");
        self.post(&Request { token, topic, kind, collapse_id: None }, payload).await
    }

    async fn post(&self, request: &Request<'_>, payload: Vec<u8>) -> SendOutcome {
        let bearer = match self.bearer().await {
            Ok(bearer) => bearer,
            Err(e) => return SendOutcome::Failed(e),
        };
        let expiration = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| (d + EXPIRATION).as_secs());
        let (push_type, priority) = match request.kind {
            Kind::Alert => ("alert", "10"),
            Kind::Background => ("background", "5"),
        };
        let mut post = self
            .client
            .post(format!("{}/3/device/{}", self.endpoint, request.token))
            .bearer_auth(bearer)
            .header("apns-topic", request.topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority)
            .header("apns-expiration", expiration.to_string());
        if let Some(collapse_id) = request.collapse_id {
            post = post.header("apns-collapse-id", collapse_id);
        }
        let answer = match answer(post.header(CONTENT_TYPE, "application/json").body(payload).send().await).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let (status, body) = (answer.status, answer.body.as_str());
        let reason = serde_json::from_str::<Value>(body).ok().and_then(|v| v["reason"].as_str().map(str::to_owned));
        match (status, reason.as_deref()) {
            (StatusCode::GONE, _) | (StatusCode::BAD_REQUEST, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => {
                SendOutcome::DeadToken(format!("APNs {status}: {}", reason.unwrap_or_default()))
            }
            (StatusCode::FORBIDDEN, Some("ExpiredProviderToken" | "InvalidProviderToken")) => {
                self.forget_token().await;
                SendOutcome::Retry { after: None, reason: format!("APNs {status}: provider token refused") }
            }
            _ => answer.outcome(),
        }
    }
}
