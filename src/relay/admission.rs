//! What an event must satisfy before it is written: form, configured limits, id and signature (`admit`, run on a
//! blocking thread since the signature check is CPU work), then the operator's policy (`Policy`).

use std::collections::HashSet;

use nostr::event::Event;
use serde_json::value::RawValue;

use super::auth::Reader;
use super::moderation::Moderation;
use crate::config::{Config, LimitsConfig};
use crate::protocol::event::GIFT_WRAP_KIND;
use crate::protocol::filter::{Hash32, parse_hash};
use crate::protocol::message::event_id_of;
use crate::protocol::verify::{parse_event, verify_event};
use crate::protocol::{Refusal, VerifiedEvent};

/// An event refused, and why; `event_id` is absent when the message did not even carry a readable id.
#[derive(Debug)]
pub struct RefusedEvent {
    pub event_id: Option<String>,
    pub reason: Refusal,
}

/// Gift wraps to one pubkey that may carry more content than `[limits] max_content_length`: Marmot push triggers
/// to the push key (32 encrypted tokens make about 109,000 characters). `app` wires it from push's settings.
#[derive(Debug, Clone)]
pub struct LargeWraps {
    /// The recipient, as `p` tags carry it (hex).
    pub to: String,
    pub max_content_length: usize,
}

impl LargeWraps {
    fn covers(&self, event: &Event) -> bool {
        // Any `p` tag naming the key, a relay hint after it or not, as the push side reads them.
        let names_key = |t: &[String]| t.first().is_some_and(|n| n == "p") && t.get(1).is_some_and(|v| *v == self.to);
        event.kind.as_u16() == GIFT_WRAP_KIND && event.tags.iter().any(|t| names_key(t.as_slice()))
    }
}

/// `now`: the relay clock's Unix time, for the `created_at` window.
pub fn admit(
    raw: &RawValue,
    limits: &LimitsConfig,
    large: Option<&LargeWraps>,
    now: u64,
) -> Result<VerifiedEvent, RefusedEvent> {
    let event = parse_event(raw).map_err(|reason| RefusedEvent { event_id: event_id_of(raw), reason })?;
    let refuse = |reason: Refusal| RefusedEvent { event_id: Some(event.id.to_hex()), reason };
    match large.filter(|large| large.covers(&event)) {
        Some(large) => {
            let limits = LimitsConfig { max_content_length: large.max_content_length, ..limits.clone() };
            check_limits(&event, &limits, now)
        }
        None => check_limits(&event, limits, now),
    }
    .map_err(refuse)?;
    verify_event(&event).map_err(refuse)?;
    Ok(VerifiedEvent::new(event))
}

/// The configured limits an event must keep, whatever door it came by (a client's EVENT, a watched relay's copy):
/// tags, content length, the `created_at` window.
pub fn check_limits(event: &Event, limits: &LimitsConfig, now: u64) -> Result<(), Refusal> {
    if event.tags.len() > limits.max_event_tags {
        return Err(Refusal::invalid(format!("too many tags (max {})", limits.max_event_tags)));
    }
    if event.content.chars().count() > limits.max_content_length {
        return Err(Refusal::invalid(format!("content too long (max {} characters)", limits.max_content_length)));
    }
    let created_at = event.created_at.as_secs();
    if limits.created_at_lower_limit > 0 && created_at < now.saturating_sub(limits.created_at_lower_limit) {
        return Err(Refusal::invalid("created_at is too far in the past"));
    }
    if limits.created_at_upper_limit > 0 && created_at > now.saturating_add(limits.created_at_upper_limit) {
        return Err(Refusal::invalid("created_at is too far in the future"));
    }
    Ok(())
}

/// The operator's rules on who may publish what, checked after an event is verified.
pub struct Policy {
    kind_allowlist: HashSet<u16>,
    kind_denylist: HashSet<u16>,
    blocked_authors: HashSet<Hash32>,
    banned_events: HashSet<Hash32>,
    restrict_writes: bool,
    writers: HashSet<Hash32>,
    public_url: String,
}

const VANISH_KIND: u16 = 62;

impl Policy {
    /// The configuration's lists, with the operator's NIP-86 bans and allowances added.
    pub fn new(config: &Config, moderation: &Moderation) -> Self {
        let pubkeys = |list: &[String]| list.iter().filter_map(|p| parse_hash(p)).collect::<HashSet<_>>();
        let mut blocked_authors = pubkeys(&config.policy.pubkey_blocklist);
        blocked_authors.extend(moderation.banned_pubkeys.keys());
        let mut writers = pubkeys(&config.auth.write_allowlist);
        writers.extend(moderation.allowed_pubkeys.keys());
        Self {
            kind_allowlist: config.policy.kind_allowlist.iter().copied().collect(),
            kind_denylist: config.policy.kind_denylist.iter().copied().collect(),
            blocked_authors,
            banned_events: moderation.banned_events.keys().copied().collect(),
            restrict_writes: config.auth.restrict_writes,
            writers,
            public_url: config.server.public_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn restricts_writes(&self) -> bool {
        self.restrict_writes
    }

    /// Whether `publisher` (the connection, as far as it authenticated) may publish `event` now.
    /// Whether the operator lets this pubkey act here at all (blocked authors; with `restrict_writes`, the
    /// writers): for requests signed by the pubkey itself outside a connection (NIP-97's `POST /register`).
    pub fn check_author(&self, pubkey: &Hash32) -> Result<(), Refusal> {
        if self.blocked_authors.contains(pubkey) {
            return Err(Refusal::blocked("this author may not publish here"));
        }
        if self.restrict_writes && !self.writers.contains(pubkey) {
            return Err(Refusal::restricted("this pubkey may not publish here"));
        }
        Ok(())
    }

    pub fn check(&self, event: &VerifiedEvent, publisher: &Reader, now: u64) -> Result<(), Refusal> {
        let kind = event.kind();
        if (!self.kind_allowlist.is_empty() && !self.kind_allowlist.contains(&kind))
            || self.kind_denylist.contains(&kind)
        {
            return Err(Refusal::blocked(format!("kind {kind} is not accepted here")));
        }
        if self.blocked_authors.contains(event.pubkey()) {
            return Err(Refusal::blocked("this author may not publish here"));
        }
        if self.banned_events.contains(event.id()) {
            return Err(Refusal::blocked("this event is banned here"));
        }
        if event.expiration().is_some_and(|at| at <= now) {
            return Err(Refusal::invalid("this event has already expired"));
        }
        if event.event.is_protected() && !publisher.is_authenticated_as(event.pubkey()) {
            return Err(Refusal::auth_required("this event may only be published by its author"));
        }
        if self.restrict_writes {
            if publisher.pubkeys().is_empty() {
                return Err(Refusal::auth_required("this relay accepts events from authenticated users only"));
            }
            if !publisher.is_authenticated_as(event.pubkey()) || !self.writers.contains(event.pubkey()) {
                return Err(Refusal::restricted("this pubkey may not publish here"));
            }
        }
        if kind == VANISH_KIND && !self.is_vanish_for_us(event) {
            return Err(Refusal::blocked("this request to vanish is for another relay"));
        }
        Ok(())
    }

    /// NIP-62: a request to vanish names the relays it is for in `relay` tags, or `ALL_RELAYS`.
    fn is_vanish_for_us(&self, event: &VerifiedEvent) -> bool {
        event
            .event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|t| t[0] == "relay")
            .filter_map(|t| t.get(1))
            .any(|url| url == "ALL_RELAYS" || url.trim_end_matches('/').eq_ignore_ascii_case(&self.public_url))
    }
}
