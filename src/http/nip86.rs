//! NIP-86 relay management over HTTP: JSON-RPC-like requests (`{"method": .., "params": [..]}`) POSTed to `/` with
//! `Content-Type: application/nostr+json+rpc`, authenticated with NIP-98 (`nip98.rs`: a kind 27235 event whose
//! `u` tag is this relay's URL, `method` tag `POST` and `payload` tag the SHA-256 of the body, signed by a pubkey
//! in `[auth] admin_pubkeys`). Decisions are kept in the database and applied at once (other nodes within a minute).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::protocol::filter::parse_hash;
use crate::relay::RelayState;
use crate::relay::moderation::{ALLOWED_PUBKEYS, BANNED_EVENTS, BANNED_PUBKEYS, RELAY_DESCRIPTION, RELAY_NAME};

pub(super) const CONTENT_TYPE: &str = "application/nostr+json+rpc";
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

pub(super) async fn handle(State(state): State<Arc<RelayState>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(&state, &headers, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if let Err(reason) =
        super::nip98::authorize(&state.config(), &headers, &Method::POST, "/", &body, state.clock.secs())
    {
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
    super::read_bounded(&config, body).await
}

/// A store failure as NIP-86's `error` text (NIP-01's prefix, as everywhere).
fn failed(error: crate::store::StoreError) -> String {
    crate::protocol::Refusal::error(error.to_string()).to_string()
}

fn answer(outcome: Result<Value, String>) -> Response {
    let body = match outcome {
        Ok(result) => json!({"result": result}),
        Err(error) => json!({"result": null, "error": error}),
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

async fn call(state: &RelayState, method: &str, params: &[Value]) -> Result<Value, String> {
    let text = |i: usize| params.get(i).and_then(Value::as_str).unwrap_or("").to_owned();
    let hash =
        |i: usize| parse_hash(&text(i)).map(hex::encode).ok_or_else(|| format!("param {i}: expected 64 hex digits"));
    let store = &state.moderation_store;
    let done = |result: Result<(), crate::store::StoreError>| result.map_err(failed);
    let outcome = match method {
        "supportedmethods" => return Ok(json!(METHODS)),
        "banpubkey" => done(store.moderate(BANNED_PUBKEYS, &hash(0)?, &text(1)).await),
        "allowpubkey" => done(store.moderate(ALLOWED_PUBKEYS, &hash(0)?, &text(1)).await),
        "banevent" => {
            let id = hash(0)?;
            done(store.moderate(BANNED_EVENTS, &id, &text(1)).await)?;
            let raw = parse_hash(&id).expect("checked above");
            state.store.remove_event(&raw).await.map(|_| ()).map_err(failed)
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
            let rows = store.moderation().await.map_err(failed)?;
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
    state.refresh_moderation().await.map_err(failed)?;
    Ok(json!(true))
}
