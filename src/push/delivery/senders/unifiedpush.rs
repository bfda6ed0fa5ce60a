//! UnifiedPush: the body is POSTed to the distributor's endpoint as is.
//!
//! The endpoint is chosen by whoever registers, so it is not trusted (see `check_endpoint`).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;

use super::{Notification, SendOutcome, Sender, answer, check_endpoint, stranger_client};
use crate::config::UnifiedPushConfig;
use crate::push::device::Device;

pub struct UnifiedPushSender {
    client: reqwest::Client,
    allow_private_addresses: bool,
}

impl UnifiedPushSender {
    pub fn new(config: &UnifiedPushConfig) -> Result<Self, String> {
        let client = stranger_client(Duration::from_secs(config.timeout_secs), config.allow_private_addresses)
            .build()
            .map_err(|e| format!("UnifiedPush client: {e}"))?;
        Ok(Self { client, allow_private_addresses: config.allow_private_addresses })
    }
}

#[async_trait]
impl Sender for UnifiedPushSender {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let Device::UnifiedPush { endpoint } = device else {
            return SendOutcome::Failed("not a UnifiedPush device".into());
        };
        if let Err(reason) = check_endpoint(endpoint, self.allow_private_addresses) {
            return SendOutcome::Failed(reason);
        }
        let sent = self
            .client
            .post(endpoint)
            .header("TTL", "86400")
            .header("Urgency", "high")
            // NIP-97 apps get the wrapped event itself; 0xchat's the body its app decodes.
            .body(notification.wrap.clone().unwrap_or_else(|| notification.android_body().to_string()))
            .send()
            .await;
        let answer = match answer(sent).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let status = answer.status;
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => SendOutcome::DeadToken(format!("UnifiedPush {status}")),
            _ => answer.outcome(),
        }
    }
}
