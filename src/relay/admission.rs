//! What an event must satisfy before it is written: form, configured limits, id and signature.
//! Runs on a blocking thread (see `connection::verify_off_thread`), since the signature check is CPU work.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

use crate::config::LimitsConfig;
use crate::protocol::VerifiedEvent;
use crate::protocol::message::event_id_of;
use crate::protocol::verify::{parse_event, verify_event};

/// Why an event was refused; `event_id` is absent when the message did not even carry a readable id.
#[derive(Debug)]
pub struct Refusal {
    pub event_id: Option<String>,
    pub reason: String,
}

pub fn admit(raw: &RawValue, limits: &LimitsConfig) -> Result<VerifiedEvent, Refusal> {
    let event = parse_event(raw).map_err(|reason| Refusal { event_id: event_id_of(raw), reason })?;
    let refuse = |reason: String| Refusal { event_id: Some(event.id.to_hex()), reason };
    if event.tags.len() > limits.max_event_tags {
        return Err(refuse(format!("invalid: too many tags (max {})", limits.max_event_tags)));
    }
    if event.content.chars().count() > limits.max_content_length {
        return Err(refuse(format!("invalid: content too long (max {} characters)", limits.max_content_length)));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let created_at = event.created_at.as_secs();
    if limits.created_at_lower_limit > 0 && created_at < now.saturating_sub(limits.created_at_lower_limit) {
        return Err(refuse("invalid: created_at is too far in the past".into()));
    }
    if limits.created_at_upper_limit > 0 && created_at > now.saturating_add(limits.created_at_upper_limit) {
        return Err(refuse("invalid: created_at is too far in the future".into()));
    }
    verify_event(&event).map_err(|reason| refuse(reason.into()))?;
    Ok(VerifiedEvent::new(event))
}
