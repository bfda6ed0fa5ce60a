//! HTTP front: the WebSocket upgrade on `/`, the NIP-11 document, and a small page for browsers.

pub mod client_ip;
mod nip11;
mod nip86;
mod nip98;
mod notifications;
mod register;
pub mod serve;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Extension, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::routing::post;
use axum::{Json, Router};
use tower_http::cors::{Any, CorsLayer};

use crate::relay::{RelayState, connection};
use client_ip::ClientIpRule;

/// Frames above this many multiples of `max_message_length` close the connection outright; anything between the
/// limit and this is refused with a NOTICE and the connection stays open.
const HARD_FRAME_LIMIT_FACTOR: usize = 4;

/// Err when `[server] trusted_proxies` does not parse (a configuration that skipped validation).
pub fn router(state: Arc<RelayState>) -> Result<Router, String> {
    let client_ip = Arc::new(ClientIpRule::new(&state.config().server)?);
    let cors = CorsLayer::new().allow_origin(Any).allow_headers(Any).allow_methods([Method::GET, Method::POST]);
    let mut router = Router::new().route("/", get(root).post(nip86::handle));
    if state.config().server.status_page {
        router = router.route("/status", get(status::page)).route("/status/relays", get(status::relays));
    }
    if state.config().server.metrics_bind.is_none() {
        router = router.route("/metrics", get(status::metrics));
    }
    if state.registrar.is_some() {
        router = router
            .route("/register", post(register::handle))
            .route("/notifications", get(notifications::page))
            .route("/notifications/app.js", get(notifications::script))
            .route("/notifications/sw.js", get(notifications::worker))
            .route(notifications::DEVICES, get(notifications::devices))
            .route(notifications::REMOVE, post(notifications::remove))
            .route(notifications::TEST, post(notifications::test));
    }
    let used_authorizations = Arc::new(nip98::UsedAuthorizations::default());
    Ok(router.layer(cors).layer(Extension(client_ip)).layer(Extension(used_authorizations)).with_state(state))
}

/// Reads a request body: at most `[server] max_body_bytes`, within the request-head deadline (a slow body is not
/// waited for).
async fn read_bounded(config: &crate::Config, body: Body) -> Result<Bytes, Response> {
    let refuse =
        |status: StatusCode, reason: &str| (status, Json(serde_json::json!({"error": reason}))).into_response();
    let deadline = std::time::Duration::from_secs(config.server.handshake_timeout_secs.max(1));
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, config.server.max_body_bytes)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large or was cut off")),
        Err(_) => Err(refuse(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time")),
    }
}

/// A refusal as an HTTP answer: 429 when it asks the caller to slow down, 400 otherwise; `{"error": "<prefix>:
/// <message>"}` either way.
fn refused(refusal: &crate::protocol::Refusal) -> Response {
    let status = match refusal.prefix() {
        crate::protocol::refusal::Prefix::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(serde_json::json!({"error": refusal.to_string()}))).into_response()
}

/// `/metrics` alone, for `[server] metrics_bind` (an address only the monitoring system reaches).
pub fn metrics_router(state: Arc<RelayState>) -> Router {
    Router::new().route("/metrics", get(status::metrics)).with_state(state)
}

async fn root(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(client_ip): Extension<Arc<ClientIpRule>>,
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
) -> Response {
    if let Ok(upgrade) = upgrade {
        let peer = client_ip.client(peer, &headers);
        let Some(slot) = state.connections_per_ip.try_open(peer.key) else {
            tracing::info!(%peer, "connection refused: too many from this address");
            return (StatusCode::TOO_MANY_REQUESTS, "too many connections from your address\n").into_response();
        };
        let hard_limit = state.config().limits.max_message_length.saturating_mul(HARD_FRAME_LIMIT_FACTOR);
        let tracker = state.connections.clone();
        return upgrade
            .max_message_size(hard_limit)
            .max_frame_size(hard_limit)
            // A small read buffer keeps idle connections cheap (the memory per idle connection: BENCHMARKS.md); it
            // grows only while a large message passes. Messages sent together (OKs, a REQ's events) are
            // gathered up to 8 KiB per write instead of one write each (BENCHMARKS.md).
            .read_buffer_size(2048)
            .write_buffer_size(8192)
            .on_upgrade(move |socket| tracker.track_future(connection::serve(socket, state, peer, slot)));
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/nostr+json") {
        return nip11::document(&state.config(), state.nip11_extra());
    }
    Html(page(&state)).into_response()
}

fn page(state: &RelayState) -> String {
    let config = state.config();
    let relay = &config.relay;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name}</title></head><body>\
         <h1>{name}</h1><p>{description}</p>\
         <p>This is a Nostr relay. Add <code>{url}</code> to your Nostr client to use it.</p>{notifications}\
         </body></html>",
        name = escape(&relay.name),
        description = escape(&relay.description),
        url = escape(&config.server.public_url),
        notifications = match state.registrar {
            Some(_) => "<p><a href=\"/notifications\">Get notifications in this browser</a></p>",
            None => "",
        },
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
