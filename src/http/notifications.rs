//! The relay's own page for turning on notifications in a browser (`/notifications`), its script and service
//! worker, and the signed-in person's devices: listed, removed, sent a test, each request signed with NIP-98 by the
//! person (anyone's pubkey; each sees and touches only their own devices). Plain HTML, CSS and JavaScript, compiled
//! into the binary: nothing to build or vendor.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::nip98::{self, Request, UsedAuthorizations};
use crate::protocol::Refusal;
use crate::protocol::filter::Hash32;
use crate::relay::RelayState;

const PAGE: &str = include_str!("notifications/index.html");
const SCRIPT: &str = include_str!("notifications/app.js");
const WORKER: &str = include_str!("notifications/sw.js");

pub(super) const DEVICES: &str = "/notifications/devices";
pub(super) const REMOVE: &str = "/notifications/devices/remove";
pub(super) const TEST: &str = "/notifications/devices/test";

pub(super) async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

pub(super) async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// Served with a scope of the whole origin, so that it may be registered from the page.
pub(super) async fn worker() -> Response {
    let headers = [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")];
    (headers, [("service-worker-allowed", "/")], WORKER).into_response()
}

/// `GET /notifications/devices`: the signer's devices.
pub(super) async fn devices(State(state): State<Arc<RelayState>>, headers: HeaderMap) -> Response {
    let Some(registrar) = state.registrar.clone() else { return StatusCode::NOT_FOUND.into_response() };
    match signed_by(&state, &headers, &Method::GET, DEVICES) {
        Ok(pubkey) => Json(registrar.devices_of(&pubkey).await).into_response(),
        Err(reason) => unauthorized(reason),
    }
}

/// `POST /notifications/devices/remove` with `{"id": "<device id>"}`.
pub(super) async fn remove(
    State(state): State<Arc<RelayState>>,
    Extension(used): Extension<Arc<UsedAuthorizations>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    act(&state, &used, &headers, body, REMOVE, |registrar, pubkey, id| async move {
        registrar.remove_device(&pubkey, &id).await.map(|removed| json!({"removed": removed}))
    })
    .await
}

/// `POST /notifications/devices/test` with `{"id": "<device id>"}`.
pub(super) async fn test(
    State(state): State<Arc<RelayState>>,
    Extension(used): Extension<Arc<UsedAuthorizations>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    act(&state, &used, &headers, body, TEST, |registrar, pubkey, id| async move {
        registrar.send_test(&pubkey, &id).await.map(|()| json!({"queued": true}))
    })
    .await
}

/// A signed request about one of the signer's devices; each signature is taken once.
async fn act<F, Fut>(
    state: &RelayState,
    used: &UsedAuthorizations,
    headers: &HeaderMap,
    body: Body,
    path: &str,
    action: F,
) -> Response
where
    F: FnOnce(Arc<dyn crate::hooks::DeviceRegistrar>, Hash32, String) -> Fut,
    Fut: std::future::Future<Output = Result<Value, Refusal>>,
{
    let Some(registrar) = state.registrar.clone() else { return StatusCode::NOT_FOUND.into_response() };
    let body = match super::read_bounded(&state.config(), body).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let request = Request { method: &Method::POST, path, body: &body };
    let pubkey = match nip98::signer_once(&state.config(), headers, &request, state.clock.secs(), used) {
        Ok(pubkey) => pubkey,
        Err(reason) => return unauthorized(reason),
    };
    let Some(id) = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["id"].as_str().map(str::to_owned)) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "body must be {\"id\": \"<device id>\"}"})))
            .into_response();
    };
    match action(registrar, pubkey, id).await {
        Ok(answer) => Json(answer).into_response(),
        Err(refusal) => super::refused(&refusal),
    }
}

fn signed_by(state: &RelayState, headers: &HeaderMap, method: &Method, path: &str) -> Result<Hash32, String> {
    nip98::signer(&state.config(), headers, &Request { method, path, body: b"" }, state.clock.secs())
}

fn unauthorized(reason: String) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": reason}))).into_response()
}
