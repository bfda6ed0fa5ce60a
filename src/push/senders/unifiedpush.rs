//! UnifiedPush: the body is POSTed to the distributor's endpoint as is.
//!
//! The endpoint is chosen by whoever registers, so it is not trusted: it must be `https://` and must not resolve to
//! a loopback, private or link-local address (else the relay could be made to call into its own network), unless
//! `[push.unifiedpush] allow_private_addresses` (tests).

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;

use super::{Notification, SendOutcome, Sender, answer};
use crate::config::UnifiedPushConfig;
use crate::push::device::Device;

pub struct UnifiedPushSender {
    client: reqwest::Client,
    allow_private_addresses: bool,
}

impl UnifiedPushSender {
    pub fn new(config: &UnifiedPushConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            // A redirect could lead to an address the checks below never saw.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("UnifiedPush client: {e}"))?;
        Ok(Self { client, allow_private_addresses: config.allow_private_addresses })
    }

    async fn check_endpoint(&self, endpoint: &str) -> Result<(), String> {
        if self.allow_private_addresses {
            return Ok(());
        }
        let url = url::Url::parse(endpoint).map_err(|e| format!("bad endpoint: {e}"))?;
        if url.scheme() != "https" {
            return Err("UnifiedPush endpoints must be https://".into());
        }
        let host = url.host_str().ok_or("endpoint has no host")?;
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses =
            tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(format!("endpoint {host} resolves to a non-public address"));
            }
        }
        Ok(())
    }
}

/// False for loopback, private, link-local, unique-local, shared (CGNAT) and unspecified addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[async_trait]
impl Sender for UnifiedPushSender {
    async fn send(&self, device: &Device, notification: &Notification) -> SendOutcome {
        let Device::UnifiedPush { endpoint } = device else {
            return SendOutcome::Failed("not a UnifiedPush device".into());
        };
        if let Err(reason) = self.check_endpoint(endpoint).await {
            return SendOutcome::Failed(reason);
        }
        let sent = self
            .client
            .post(endpoint)
            .header("TTL", "86400")
            .header("Urgency", "high")
            .body(notification.android_body().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
