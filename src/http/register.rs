//! NIP-97's `POST /register`: `{"events": [<kind 22242 event>, ...]}`, one event per account on a device. Each
//! event is checked like any event (parse, id, signature, limits, off the async threads), counted against the
//! sender's per-IP event rate, and handed to the registrar (push); the answer has one entry per event, in order.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::client_ip::ClientIpRule;
use crate::protocol::Refusal;
use crate::relay::RelayState;
use crate::relay::admission::RefusedEvent;

#[derive(serde::Deserialize)]
struct Request {
    events: Vec<Box<RawValue>>,
}

pub(super) async fn handle(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(client_ip): Extension<Arc<ClientIpRule>>,
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(registrar) = state.registrar.clone() else { return StatusCode::NOT_FOUND.into_response() };
    let config = state.config();
    let body = match super::read_bounded(&config, body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Ok(Request { events }) = serde_json::from_slice(&body) else {
        let error = "body must be {\"events\": [<kind 22242 event>, ...]}";
        return (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    };
    let client = client_ip.client(peer, &headers);
    let mut answers = Vec::with_capacity(events.len());
    for raw in events {
        let limits = state.rate_limits();
        if !limits.allow_event_from_ip(client.key) || !limits.allow_registration_from_ip(client.key) {
            answers.push(entry(None, Err(Refusal::rate_limited("slow down"))));
            continue;
        }
        let answer = match state.verifier.admit(raw, config.clone(), state.clock.secs()).await {
            Ok(event) => {
                let pubkey = event.event.pubkey.to_hex();
                let outcome = match state.policy().check_author(event.pubkey()) {
                    Ok(()) => registrar.register_device(&Arc::new(event)).await,
                    Err(reason) => Err(reason),
                };
                entry(Some(pubkey), outcome)
            }
            Err(RefusedEvent { reason, .. }) => entry(None, Err(reason)),
        };
        answers.push(answer);
    }
    Json(answers).into_response()
}

/// One event's answer: `added`, `replaced`, or `error` with why (README, "NIP-97: `POST /register`").
fn entry(pubkey: Option<String>, outcome: Result<bool, Refusal>) -> Value {
    let mut answer = match outcome {
        Ok(replaced) => json!({"result": if replaced { "replaced" } else { "added" }}),
        Err(refusal) => json!({"result": "error", "error": refusal.to_string()}),
    };
    if let Some(pubkey) = pubkey {
        answer["pubkey"] = pubkey.into();
    }
    answer
}
