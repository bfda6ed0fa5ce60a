//! Sending one wake to one decrypted token, through the APNs and FCM senders the other pushes use. The token is in
//! memory only, so a wake is never queued durably: it is tried at most `max_attempts` times, a few seconds apart,
//! while its trigger's place in flight is held, and then dropped.

use std::time::Duration;

use super::stats::WakeOutcome;
use super::token::{Platform, Token};
use crate::push::delivery::senders::{SendOutcome, Senders};

/// The longest wait between tries, whatever a service's `Retry-After` says: a wake is only worth its moment.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

/// How a wake is sent: the operator's settings.
pub(super) struct WakeStyle {
    pub(super) apns_topic: String,
    /// A visible notification's text; None: silent.
    pub(super) alert: Option<String>,
    pub(super) max_attempts: u32,
}

pub(super) async fn wake(senders: &Senders, style: &WakeStyle, token: &Token) -> WakeOutcome {
    let address = token.address();
    let alert = style.alert.as_deref();
    let mut wait = FIRST_RETRY_WAIT;
    for attempt in 1..=style.max_attempts.max(1) {
        let sent = match token.platform() {
            Platform::Apns => match senders.apns() {
                Some(apns) => apns.wake(&address, &style.apns_topic, alert).await,
                None => return WakeOutcome::Unconfigured,
            },
            Platform::Fcm => match senders.fcm() {
                Some(fcm) => fcm.wake(&address, alert).await,
                None => return WakeOutcome::Unconfigured,
            },
        };
        match sent {
            SendOutcome::Delivered => return WakeOutcome::Sent,
            SendOutcome::Retry { after, .. } if attempt < style.max_attempts => {
                tokio::time::sleep(after.unwrap_or(wait).min(MAX_RETRY_WAIT)).await;
                wait *= 2;
            }
            // Why is not logged: a service's answer may quote the token.
            _ => return WakeOutcome::Failed,
        }
    }
    WakeOutcome::Failed
}
