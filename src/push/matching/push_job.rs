//! What a queued push carries from the matcher to the delivery: enough to build the notification without the event
//! itself (the event only where the delivery carries it whole).

use serde::{Deserialize, Serialize};

use crate::push::text::Summary;

/// The group key (and device id) of the jobs of one NIP-9a callback: this prefix, then its URL.
pub const CALLBACK_PREFIX: &str = "nip9a:";

/// What a push job carries: enough to build the notification without the event itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushJob {
    pub device_id: String,
    /// The registered pubkey the event is for.
    pub pubkey: String,
    pub event_id: String,
    pub kind: u16,
    pub author: String,
    #[serde(default)]
    pub summary: Summary,
    /// The event's JSON, for deliveries that carry the event itself (NIP-97's gift wrap, a NIP-9a subscription with `include_event`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A test notification its owner asked for: sent even while the pubkey is online.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}
