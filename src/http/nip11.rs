//! The NIP-11 relay information document, built from the configuration so that what is advertised is what is
//! enforced.

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::config::Config;

/// The NIPs this relay implements whatever its configuration: NIP-01 (with what NIP-02, 16, 20 and 33 added to it),
/// deletion, the information document, expiration, AUTH, COUNT, vanish, protected events, negentropy.
pub(super) const SUPPORTED_NIPS: &[u16] = &[1, 9, 11, 40, 42, 45, 62, 70, 77];

/// Every NIP the relay implements as configured: the fixed ones, then those that depend on a setting (NIP-04 and
/// NIP-17/59 when their kinds are served only to their parties, NIP-29 with groups, NIP-50 with the search index, NIP-86 and NIP-98 with
/// administrators, NIP-97 with push). Only numbers: NIP-11 says `supported_nips` is a list of integers, and typed
/// clients (rust-nostr's `RelayInformationDocument`) refuse the whole document when one entry is not; NIP-9a, whose
/// name is not a number, is listed in [`supported_nip_names`].
pub(super) fn supported_nips(config: &Config) -> Vec<u16> {
    let restricted = config.read_restricted_kinds();
    let mut numbers: Vec<u16> = SUPPORTED_NIPS.to_vec();
    if restricted.contains(&4) {
        numbers.push(4);
    }
    if restricted.contains(&1059) {
        numbers.extend([17, 59]);
    }
    if config.groups.enabled {
        numbers.push(29);
    }
    if config.database.search_index {
        numbers.push(50);
    }
    if !config.auth.admin_pubkeys.is_empty() {
        numbers.extend([86, 98]);
    }
    if config.push.enabled {
        numbers.extend([97, 98]);
    }
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

/// The NIPs implemented whose names are not numbers (NIP-9a with push), in the document's own field
/// `supported_nip_names`, beside the integers of `supported_nips`.
pub(super) fn supported_nip_names(config: &Config) -> Vec<&'static str> {
    if config.push.enabled { vec!["9a"] } else { Vec::new() }
}

pub(super) fn document(config: &Config, extra: &Map<String, Value>) -> Response {
    let relay = &config.relay;
    let limits = &config.limits;
    let restrict_writes = config.auth.restrict_writes;
    let supported_nips = supported_nips(config);
    let mut body: Value = json!({
        "name": relay.name,
        "description": relay.description,
        "pubkey": relay.pubkey,
        "contact": relay.contact,
        "software": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": supported_nips,
        "supported_nip_names": supported_nip_names(config),
        "limitation": {
            "max_message_length": limits.max_message_length,
            "max_subscriptions": limits.max_subscriptions,
            "max_negentropy_records": limits.max_negentropy_records,
            "max_negentropy_sessions": limits.max_negentropy_sessions,
            "max_req_bytes": limits.max_req_bytes,
            "max_count": limits.max_count,
            "max_filters": limits.max_filters,
            "max_subid_length": limits.max_subid_length,
            "max_search_terms": limits.max_search_terms,
            "max_search_length": limits.max_search_length,
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
            "ip_registrations_per_hour": limits.ip_registrations_per_hour,
            "ip_subscriptions_per_hour": limits.ip_subscriptions_per_hour,
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
