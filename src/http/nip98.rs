//! NIP-98 HTTP authentication, for what only the operator may do over HTTP (the NIP-86 management API, the
//! watched relays' details): an `Authorization: Nostr <base64 event>` header carrying a kind 27235 event, signed
//! within a minute of now by a pubkey in `[auth] admin_pubkeys`, whose `u` tag is the URL asked for, `method` tag
//! the request's method, and `payload` tag the SHA-256 of the body (required with a body; checked when given).

use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::protocol::filter::Hash32;

const HTTP_AUTH_KIND: u16 = 27235;
/// How far the NIP-98 event's `created_at` may be from now.
const MAX_SKEW_SECS: u64 = 60;

/// Ok when the request (`method` on `path` of this relay, with `body`) is authorised by an administrator.
/// `now`: the relay clock's Unix time.
pub(super) fn authorize(
    config: &Config,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<(), String> {
    if config.auth.admin_pubkeys.is_empty() {
        return Err("administration over HTTP is off: no [auth] admin_pubkeys".into());
    }
    let pubkey = hex::encode(signer(config, headers, &Request { method, path, body }, now)?);
    if !config.auth.admin_pubkeys.iter().any(|admin| admin.eq_ignore_ascii_case(&pubkey)) {
        return Err("this pubkey is not an administrator here".into());
    }
    Ok(())
}

/// What a NIP-98 event must name: the method, the path on this relay, the body's hash.
pub(super) struct Request<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub body: &'a [u8],
}

/// The pubkey that signed the request's NIP-98 authorization (anyone's: the caller decides what it may see).
pub(super) fn signer(config: &Config, headers: &HeaderMap, request: &Request, now: u64) -> Result<Hash32, String> {
    checked_event(config, headers, request, now).map(|event| event.pubkey.to_bytes())
}

/// `signer`, for a request that changes or costs something: its authorization is taken once, and a replay of the
/// same header within its minute (one header sent 300 times once queued 300 test pushes) is refused.
pub(super) fn signer_once(
    config: &Config,
    headers: &HeaderMap,
    request: &Request,
    now: u64,
    used: &UsedAuthorizations,
) -> Result<Hash32, String> {
    let event = checked_event(config, headers, request, now)?;
    used.first_use(event.id.to_bytes(), event.created_at.as_secs(), now)?;
    Ok(event.pubkey.to_bytes())
}

/// The authorizations already taken by `signer_once`, each kept until it could no longer be accepted (its
/// `created_at` more than `MAX_SKEW_SECS` ago), at most `MAX_REMEMBERED`: past that, new ones are refused for the
/// minute it takes the oldest to expire, so the memory a stranger can make us hold is bounded.
#[derive(Default)]
pub(super) struct UsedAuthorizations {
    seen: std::sync::Mutex<std::collections::HashMap<Hash32, u64>>,
}

/// How many authorizations `UsedAuthorizations` keeps at most (40 bytes each, and a map entry).
const MAX_REMEMBERED: usize = 100_000;

impl UsedAuthorizations {
    fn first_use(&self, id: Hash32, created_at: u64, now: u64) -> Result<(), String> {
        let mut seen = self.seen.lock().expect("authorizations lock");
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, at| at.saturating_add(MAX_SKEW_SECS) >= now);
        }
        if seen.contains_key(&id) {
            return Err("this authorization was already used: sign each request anew".into());
        }
        if seen.len() >= MAX_REMEMBERED {
            return Err("too many signed requests: try again in a minute".into());
        }
        seen.insert(id, created_at);
        Ok(())
    }
}

/// The request's NIP-98 event, checked: kind, signature, time, URL, method and body.
fn checked_event(
    config: &Config,
    headers: &HeaderMap,
    request: &Request,
    now: u64,
) -> Result<nostr::event::Event, String> {
    let Request { method, path, body } = *request;
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Nostr "))
        .ok_or("expected Authorization: Nostr <base64 of a kind 27235 event>")?;
    let json =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| "authorization is not base64")?;
    let event = nostr::event::Event::from_json(&json).map_err(|_| "authorization is not an event")?;
    crate::protocol::verify::verify_event(&event).map_err(|refusal| refusal.to_string())?;
    if event.kind.as_u16() != HTTP_AUTH_KIND {
        return Err(format!("authorization event must be kind {HTTP_AUTH_KIND}"));
    }
    if event.created_at.as_secs().abs_diff(now) > MAX_SKEW_SECS {
        return Err("authorization event is too old or too new".into());
    }
    let tag = |name: &str| {
        event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1)).map(String::as_str)
    };
    if !tag("u").is_some_and(|u| same_url(u, &config.server.public_url, path)) {
        return Err(format!("authorization u tag must be this relay's URL for {path}"));
    }
    if !tag("method").is_some_and(|m| m.eq_ignore_ascii_case(method.as_str())) {
        return Err(format!("authorization method tag must be {method}"));
    }
    let digest = hex::encode(Sha256::digest(body));
    match tag("payload") {
        Some(payload) if payload == digest => {}
        None if body.is_empty() => {}
        _ => return Err("authorization payload tag must be the SHA-256 of the body".into()),
    }
    Ok(event)
}

/// The `u` tag names `path` on the relay's HTTP URL; `public_url` is its WebSocket form (ws → http, wss → https),
/// and either form is taken.
fn same_url(u: &str, public_url: &str, path: &str) -> bool {
    let http = public_url.replacen("wss://", "https://", 1).replacen("ws://", "http://", 1);
    let normal = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    let at = |base: &str| normal(&format!("{}{path}", base.trim_end_matches('/')));
    normal(u) == at(&http) || normal(u) == at(public_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorization_is_taken_once_and_forgotten_when_it_could_no_longer_be_used() {
        let used = UsedAuthorizations::default();
        assert!(used.first_use([1; 32], 1000, 1000).is_ok());
        assert!(used.first_use([1; 32], 1000, 1030).unwrap_err().contains("already used"));
        assert!(used.first_use([2; 32], 1000, 1030).is_ok());
        let full = UsedAuthorizations::default();
        for n in 0..MAX_REMEMBERED as u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            full.first_use(id, 1000, 1000).unwrap();
        }
        assert!(full.first_use([9; 32], 1000, 1010).unwrap_err().contains("try again"));
        assert!(full.first_use([9; 32], 1100, 1100).is_ok(), "the expired ones made room");
    }

    #[test]
    fn the_u_tag_names_the_path_on_either_form_of_the_public_url() {
        assert!(same_url("http://127.0.0.1:7777/", "ws://127.0.0.1:7777", "/"));
        assert!(same_url("https://relay.example.com", "wss://relay.example.com/", "/"));
        assert!(same_url("https://relay.example.com/status/relays", "wss://relay.example.com", "/status/relays"));
        assert!(same_url("wss://relay.example.com/status/relays/", "wss://relay.example.com/", "/status/relays"));
        assert!(!same_url("https://relay.example.com/", "wss://relay.example.com", "/status/relays"));
        assert!(!same_url("https://relay.example.com/status/relays", "wss://relay.example.com", "/"));
        assert!(!same_url("https://other.example.com/status/relays", "wss://relay.example.com", "/status/relays"));
    }
}
