//! NIP-9a callbacks: one JSON `POST` per event to the URL a subscription named.
//!
//! The URL is chosen by whoever subscribes, so it is not trusted: the same checks and client as UnifiedPush
//! endpoints (`check_endpoint`, `stranger_client`), under the same switch.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use super::{SendOutcome, answer, check_endpoint, stranger_client};
use crate::config::UnifiedPushConfig;

pub struct CallbackSender {
    client: reqwest::Client,
    allow_private_addresses: bool,
}

impl CallbackSender {
    pub fn new(config: &UnifiedPushConfig) -> Result<Self, String> {
        let client = stranger_client(Duration::from_secs(config.timeout_secs), config.allow_private_addresses)
            .user_agent(concat!("pushrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("NIP-9a callback client: {e}"))?;
        Ok(Self { client, allow_private_addresses: config.allow_private_addresses })
    }

    /// Posts `body` (JSON) to `url`: 2xx delivered; 404 and 410 mean the callback is gone; 429 and 5xx are retried
    /// (honouring `Retry-After`); any other answer fails this one event.
    pub async fn post(&self, url: &str, body: String) -> SendOutcome {
        if let Err(reason) = check_endpoint(url, self.allow_private_addresses) {
            return SendOutcome::Failed(reason);
        }
        let sent = self.client.post(url).header(CONTENT_TYPE, "application/json").body(body).send().await;
        let answer = match answer(sent).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        match answer.status {
            status @ (StatusCode::NOT_FOUND | StatusCode::GONE) => SendOutcome::DeadToken(format!("callback {status}")),
            _ => answer.outcome(),
        }
    }
}
