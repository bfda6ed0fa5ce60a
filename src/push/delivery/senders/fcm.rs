//! FCM HTTP v1, authenticated with an OAuth2 access token obtained from the service account (gcp_auth, which uses
//! the `token_uri` in the service-account file and caches the token until it nears expiry).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use gcp_auth::{CustomServiceAccount, TokenProvider};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Notification, SendOutcome, Sender, answer};
use crate::config::FcmConfig;
use crate::push::device::Device;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

pub struct FcmSender {
    client: reqwest::Client,
    endpoint: String,
    auth: Arc<CustomServiceAccount>,
    project_id: String,
}

impl FcmSender {
    pub fn new(config: &FcmConfig) -> Result<Option<Self>, String> {
        let Some(file) = config.service_account_file.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(None);
        };
        let auth = CustomServiceAccount::from_file(file)
            .map_err(|e| format!("[push.fcm] service_account_file {}: {e}", file.display()))?;
        let project_id = auth
            .project_id()
            .ok_or_else(|| format!("[push.fcm] service_account_file {}: no project_id", file.display()))?
            .to_owned();
        Ok(Some(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("FCM client: {e}"))?,
            endpoint: config.endpoint.trim_end_matches('/').to_owned(),
            auth: Arc::new(auth),
            project_id,
        }))
    }
}

/// A bare FCM token gets a notification the system shows; FCM inside UnifiedPush gets a data-only message whose
/// `data.b` is the base64 of the body the UnifiedPush app decodes.
fn message(device: &Device, notification: &Notification) -> Option<Value> {
    match device {
        // NIP-97: a data-only message; the app opens the wrap and builds its own notification.
        Device::Fcm { token } if notification.wrap.is_some() => Some(json!({
            "token": token,
            "data": {"encryptedEvent": notification.wrap},
            "android": {"priority": "high"},
        })),
        Device::Fcm { token } => {
            // The event id as the tag: a push sent again (answered but not recorded before a crash: delivery is at
            // least once) replaces its first showing instead of appearing twice, as APNs' collapse id does. Not a
            // `collapse_key`: FCM keeps at most four of those per device while it is offline.
            let mut android = json!({"priority": "high", "notification": {"tag": notification.event_id}});
            if let Some(badge) = notification.badge {
                android["notification"]["notification_count"] = json!(badge);
            }
            Some(json!({
                "token": token,
                "notification": {"title": notification.title, "body": notification.body},
                "data": notification.android_body()["data"],
                "android": android,
            }))
        }
        Device::EmbeddedFcm { token, .. } => {
            let body = base64::engine::general_purpose::STANDARD.encode(notification.android_body().to_string());
            Some(json!({"token": token, "data": {"b": body}, "android": {"priority": "high"}}))
        }
        _ => None,
    }
}

#[async_trait]
impl Sender for FcmSender {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let Some(message) = message(device, notification) else {
            return SendOutcome::Failed("not an FCM device".into());
        };
        self.post(&message).await
    }
}

impl FcmSender {
    /// A Marmot wake: a data-only message at high priority (the app fetches its messages), with a notification
    /// block only when the operator asks for a visible `alert`; the token is held only for this call.
    pub async fn wake(&self, token: &str, alert: Option<&str>) -> SendOutcome {
        let mut message = json!({
            "token": token,
            "data": {"content_available": "true"},
            "android": {"priority": "high"},
        });
        if let Some(text) = alert {
            message["notification"] = json!({"body": text});
        }
        self.post(&message).await
    }

    async fn post(&self, message: &Value) -> SendOutcome {
        let token = match self.auth.token(&[SCOPE]).await {
            Ok(token) => token,
            Err(e) => return SendOutcome::Retry { after: None, reason: format!("FCM access token: {e}") },
        };
        let sent = self
            .client
            .post(format!("{}/v1/projects/{}/messages:send", self.endpoint, self.project_id))
            .bearer_auth(token.as_str())
            .json(&json!({"message": message}))
            .send()
            .await;
        let answer = match answer(sent).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let (status, body) = (answer.status, answer.body.as_str());
        let error_code = serde_json::from_str::<Value>(body).ok().and_then(|v| {
            v["error"]["details"].as_array()?.iter().find_map(|d| d["errorCode"].as_str().map(str::to_owned))
        });
        match error_code.as_deref() {
            Some("UNREGISTERED" | "SENDER_ID_MISMATCH") => {
                SendOutcome::DeadToken(format!("FCM {status}: {}", error_code.unwrap_or_default()))
            }
            _ if status == StatusCode::NOT_FOUND => SendOutcome::DeadToken(format!("FCM {status}")),
            _ => answer.outcome(),
        }
    }
}
