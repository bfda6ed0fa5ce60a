//! The NIP-11 relay information document, built from the configuration so that what is advertised is what is
//! enforced.

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::config::Config;

/// The NIPs this relay implements completely.
pub const SUPPORTED_NIPS: &[u16] = &[1, 9, 11, 40, 42, 45, 62, 70, 77];
/// NIP-86 management, advertised when administrators are configured (the API is off otherwise).
const MANAGEMENT_NIP: u16 = 86;
/// NIP-9a push subscriptions, advertised (as a string: the NIP's name is not a number) when push is on.
const PUSH_SUBSCRIPTIONS_NIP: &str = "9a";

pub fn document(config: &Config, extra: &Map<String, Value>) -> Response {
    let relay = &config.relay;
    let limits = &config.limits;
    let restrict_writes = config.auth.restrict_writes;
    let mut supported_nips: Vec<Value> = SUPPORTED_NIPS.iter().map(|&nip| Value::from(nip)).collect();
    if !config.auth.admin_pubkeys.is_empty() {
        supported_nips.push(Value::from(MANAGEMENT_NIP));
    }
    if config.push.enabled {
        supported_nips.push(Value::from(PUSH_SUBSCRIPTIONS_NIP));
    }
    let mut body: Value = json!({
        "name": relay.name,
        "description": relay.description,
        "pubkey": relay.pubkey,
        "contact": relay.contact,
        "software": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": supported_nips,
        "limitation": {
            "max_message_length": limits.max_message_length,
            "max_subscriptions": limits.max_subscriptions,
            "max_negentropy_records": limits.max_negentropy_records,
            "max_negentropy_sessions": limits.max_negentropy_sessions,
            "max_req_bytes": limits.max_req_bytes,
            "max_count": limits.max_count,
            "max_filters": limits.max_filters,
            "max_subid_length": limits.max_subid_length,
            "max_limit": limits.max_limit,
            "default_limit": limits.default_limit,
            "max_event_tags": limits.max_event_tags,
            "max_content_length": limits.max_content_length,
            "created_at_lower_limit": limits.created_at_lower_limit,
            "created_at_upper_limit": limits.created_at_upper_limit,
            "max_connections_per_ip": limits.max_connections_per_ip,
            "ip_events_per_minute": limits.ip_events_per_minute,
            "pubkey_events_per_minute": limits.pubkey_events_per_minute,
            "reqs_per_minute": limits.reqs_per_minute,
            "auth_required": restrict_writes,
            "payment_required": false,
            "restricted_writes": restrict_writes,
        },
        "read_restricted_kinds": config.read_restricted_kinds(),
        "kind_allowlist": config.policy.kind_allowlist,
        "kind_denylist": config.policy.kind_denylist,
    });
    body.as_object_mut().expect("the document is an object").extend(extra.clone());
    ([(header::CONTENT_TYPE, "application/nostr+json")], Json(body)).into_response()
}
