//! Web Push for browsers (RFC 8030): the notification, encrypted to the subscription's keys with `aes128gcm`
//! (RFC 8291), POSTed to the browser vendor's push service with a VAPID signature (RFC 8292).
//!
//! The web-push crate builds the encrypted body and the signature; the request goes out on our own reqwest client
//! so that endpoints stay checked (like UnifiedPush endpoints, they are chosen by whoever registers) and tests can
//! use a local stand-in.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use web_push::{ContentEncoding, PartialVapidSignatureBuilder, SubscriptionInfo, Urgency, WebPushMessageBuilder};

use super::{Notification, SendOutcome, Sender, answer, check_endpoint, stranger_client};
use crate::push::device::Device;

/// How long the push service keeps a message for a browser that is not running.
const TTL_SECS: u32 = 24 * 3600;

pub struct WebPushSender {
    client: reqwest::Client,
    vapid: PartialVapidSignatureBuilder,
    /// The VAPID `sub` claim: how the push service reaches the operator.
    subject: String,
    allow_private_addresses: bool,
}

impl WebPushSender {
    pub fn new(
        vapid: PartialVapidSignatureBuilder,
        subject: String,
        timeout: Duration,
        allow_private_addresses: bool,
    ) -> Result<Self, String> {
        let client =
            stranger_client(timeout, allow_private_addresses).build().map_err(|e| format!("Web Push client: {e}"))?;
        Ok(Self { client, vapid, subject, allow_private_addresses })
    }

    /// The encrypted, signed message for one subscription.
    fn message(&self, subscription: &SubscriptionInfo, body: &[u8]) -> Result<web_push::WebPushMessage, String> {
        let endpoint = url::Url::parse(&subscription.endpoint).map_err(|e| format!("bad endpoint: {e}"))?;
        let mut signature = self.vapid.clone().add_sub_info(subscription);
        // The audience is the endpoint's origin, port included (the crate's default leaves the port out).
        signature.add_claim("aud", endpoint.origin().ascii_serialization());
        signature.add_claim("sub", self.subject.as_str());
        let signature = signature.build().map_err(|e| format!("cannot sign the VAPID token: {e}"))?;
        let mut message = WebPushMessageBuilder::new(subscription);
        message.set_ttl(TTL_SECS);
        message.set_urgency(Urgency::High);
        message.set_vapid_signature(signature);
        message.set_payload(ContentEncoding::Aes128Gcm, body);
        message.build().map_err(|e| format!("cannot encrypt for this subscription: {e}"))
    }
}

#[async_trait]
impl Sender for WebPushSender {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let Device::WebPush { endpoint, p256dh, auth } = device else {
            return SendOutcome::Failed("not a Web Push device".into());
        };
        if let Err(reason) = check_endpoint(endpoint, self.allow_private_addresses) {
            return SendOutcome::Failed(reason);
        }
        let subscription = SubscriptionInfo::new(endpoint.as_str(), p256dh.as_str(), auth.as_str());
        let body = notification.android_body().to_string();
        let message = match self.message(&subscription, body.as_bytes()) {
            Ok(message) => message,
            Err(reason) => return SendOutcome::Failed(reason),
        };
        let Some(payload) = message.payload else {
            return SendOutcome::Failed("the message has no payload".into());
        };
        let mut request = self
            .client
            .post(endpoint)
            .header("TTL", message.ttl.to_string())
            .header("Urgency", "high")
            .header(reqwest::header::CONTENT_ENCODING, payload.content_encoding.to_str())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        for (name, value) in payload.crypto_headers {
            request = request.header(name, value);
        }
        let answer = match answer(request.body(payload.content).send().await).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        match answer.status {
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                SendOutcome::DeadToken(format!("Web Push {}: subscription expired", answer.status))
            }
            _ => answer.outcome(),
        }
    }
}
