//! NIP-86 relay management over HTTP: JSON-RPC-like requests (`{"method": .., "params": [..]}`) POSTed to `/` with
//! `Content-Type: application/nostr+json+rpc`, authenticated with a NIP-98 event (kind 27235) whose `u` tag is
//! this relay's URL, `method` tag `POST` and `payload` tag the SHA-256 of the body, signed by a pubkey in
//! `[auth] admin_pubkeys`. Decisions are kept in the database and applied at once (other nodes within a minute).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::protocol::filter::parse_hash;
use crate::relay::RelayState;
use crate::relay::moderation::{ALLOWED_PUBKEYS, BANNED_EVENTS, BANNED_PUBKEYS, RELAY_DESCRIPTION, RELAY_NAME};
use crate::store::unix_now;

pub const CONTENT_TYPE: &str = "application/nostr+json+rpc";
const HTTP_AUTH_KIND: u16 = 27235;
/// How far the NIP-98 event's `created_at` may be from now.
const MAX_SKEW_SECS: u64 = 60;
const METHODS: &[&str] = &[
    "supportedmethods",
    "banpubkey",
    "listbannedpubkeys",
    "allowpubkey",
    "listallowedpubkeys",
    "banevent",
    "allowevent",
    "listbannedevents",
    "changerelayname",
    "changerelaydescription",
];

pub async fn handle(State(state): State<Arc<RelayState>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if let Err(reason) = authorize(&state, &headers, &body) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": reason}))).into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return answer(Err(format!("not JSON: {e}"))),
    };
    let method = request["method"].as_str().unwrap_or("");
    let params: Vec<Value> = request["params"].as_array().cloned().unwrap_or_default();
    answer(call(&state, method, &params).await)
}

/// Reads a request body, once the request could be an administrator's: at most `[server] max_body_bytes`, within
/// the request-head deadline. A stranger's body is never read, and a slow one is not waited for.
async fn read_body(state: &RelayState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let config = state.config();
    let refuse = |status: StatusCode, reason: &str| (status, Json(json!({"error": reason}))).into_response();
    if config.auth.admin_pubkeys.is_empty() || !headers.contains_key(header::AUTHORIZATION) {
        return Err(refuse(StatusCode::UNAUTHORIZED, "expected Authorization: Nostr <base64 of a kind 27235 event>"));
    }
    let deadline = Duration::from_secs(config.server.handshake_timeout_secs.max(1));
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, config.server.max_body_bytes)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large or was cut off")),
        Err(_) => Err(refuse(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time")),
    }
}

fn answer(outcome: Result<Value, String>) -> Response {
    let body = match outcome {
        Ok(result) => json!({"result": result}),
        Err(error) => json!({"result": null, "error": error}),
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

/// The NIP-98 check: a valid event of the right kind, time, URL, method and payload, by an administrator.
fn authorize(state: &RelayState, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let config = state.config();
    if config.auth.admin_pubkeys.is_empty() {
        return Err("the management API is off: no [auth] admin_pubkeys".into());
    }
    let encoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Nostr "))
        .ok_or("expected Authorization: Nostr <base64 of a kind 27235 event>")?;
    let json =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| "authorization is not base64")?;
    let event = nostr::event::Event::from_json(&json).map_err(|_| "authorization is not an event")?;
    crate::protocol::verify::verify_event(&event).map_err(str::to_owned)?;
    if event.kind.as_u16() != HTTP_AUTH_KIND {
        return Err(format!("authorization event must be kind {HTTP_AUTH_KIND}"));
    }
    if event.created_at.as_secs().abs_diff(unix_now()) > MAX_SKEW_SECS {
        return Err("authorization event is too old or too new".into());
    }
    let tag = |name: &str| {
        event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1)).map(String::as_str)
    };
    if !tag("u").is_some_and(|u| same_url(u, &config.server.public_url)) {
        return Err("authorization u tag must be this relay's URL".into());
    }
    if !tag("method").is_some_and(|m| m.eq_ignore_ascii_case("POST")) {
        return Err("authorization method tag must be POST".into());
    }
    if tag("payload") != Some(hex::encode(Sha256::digest(body)).as_str()) {
        return Err("authorization payload tag must be the SHA-256 of the body".into());
    }
    let pubkey = event.pubkey.to_hex();
    if !config.auth.admin_pubkeys.iter().any(|admin| admin.eq_ignore_ascii_case(&pubkey)) {
        return Err("this pubkey is not an administrator here".into());
    }
    Ok(())
}

/// The `u` tag names the relay's HTTP URL; `public_url` is its WebSocket form (ws → http, wss → https).
fn same_url(u: &str, public_url: &str) -> bool {
    let http = public_url.replacen("wss://", "https://", 1).replacen("ws://", "http://", 1);
    let normal = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    normal(u) == normal(&http) || normal(u) == normal(public_url)
}

async fn call(state: &RelayState, method: &str, params: &[Value]) -> Result<Value, String> {
    let text = |i: usize| params.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
    let hash =
        |i: usize| parse_hash(&text(i)).map(hex::encode).ok_or_else(|| format!("param {i}: expected 64 hex digits"));
    let store = &state.moderation_store;
    let done = |result: Result<(), crate::store::StoreError>| result.map_err(|e| format!("error: {e}"));
    let outcome = match method {
        "supportedmethods" => return Ok(json!(METHODS)),
        "banpubkey" => done(store.moderate(BANNED_PUBKEYS, &hash(0)?, &text(1)).await),
        "allowpubkey" => done(store.moderate(ALLOWED_PUBKEYS, &hash(0)?, &text(1)).await),
        "banevent" => {
            let id = hash(0)?;
            done(store.moderate(BANNED_EVENTS, &id, &text(1)).await)?;
            let raw = parse_hash(&id).expect("checked above");
            state.store.remove_event(&raw).await.map(|_| ()).map_err(|e| format!("error: {e}"))
        }
        "allowevent" => done(store.unmoderate(BANNED_EVENTS, &hash(0)?).await),
        "changerelayname" | "changerelaydescription" => {
            let list = if method == "changerelayname" { RELAY_NAME } else { RELAY_DESCRIPTION };
            let value = params.first().and_then(Value::as_str).ok_or("param 0: expected a string")?;
            done(store.clear_list(list).await)?;
            done(store.moderate(list, value, "").await)
        }
        "listbannedpubkeys" | "listallowedpubkeys" | "listbannedevents" => {
            let (list, key) = match method {
                "listbannedpubkeys" => (BANNED_PUBKEYS, "pubkey"),
                "listallowedpubkeys" => (ALLOWED_PUBKEYS, "pubkey"),
                _ => (BANNED_EVENTS, "id"),
            };
            let rows = store.moderation().await.map_err(|e| format!("error: {e}"))?;
            let entries: Vec<Value> = rows
                .into_iter()
                .filter(|(l, _, _)| l == list)
                .map(|(_, v, reason)| json!({key: v, "reason": reason}))
                .collect();
            return Ok(Value::Array(entries));
        }
        _ => return Err(format!("unsupported method: {method:?}")),
    };
    outcome?;
    state.refresh_moderation().await.map_err(|e| format!("error: {e}"))?;
    Ok(json!(true))
}
