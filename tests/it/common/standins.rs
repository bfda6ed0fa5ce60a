//! Local stand-ins for APNs, FCM (with its OAuth token endpoint) and UnifiedPush endpoints: one small HTTP server
//! that speaks HTTP/1.1 and HTTP/2 with prior knowledge (as APNs needs), records every request, and answers with
//! whatever the test queued (200 by default). `/token` answers like Google's OAuth token endpoint.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the stand-in answered with.
    pub answered: u16,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or_else(|| panic!("no {name} header"))
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    answers: Mutex<VecDeque<(u16, String)>>,
    /// While set, every push request is answered with this status (an outage).
    outage: Mutex<Option<u16>>,
    arrived: Notify,
}

pub(crate) struct StandIn {
    pub url: String,
    shared: Arc<Shared>,
    seen: usize,
}

pub(crate) const TOKEN_PATH: &str = "/token";
pub(crate) const ACCESS_TOKEN: &str = "stand-in-access-token";

impl StandIn {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener).await
    }

    /// Serves on a listener the test bound already (to know the port before the stand-in runs).
    pub(crate) async fn serve(listener: tokio::net::TcpListener) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(record).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, shared, seen: 0 }
    }

    /// Queues the answer to the next request (after the ones already queued).
    pub(crate) fn answer_next(&self, status: u16, body: &str) {
        self.shared.answers.lock().unwrap().push_back((status, body.to_owned()));
    }

    /// Drops the answers queued and not yet given.
    pub(crate) fn forget_answers(&self) {
        self.shared.answers.lock().unwrap().clear();
    }

    /// Answers every push request with `status` until `recover` (token requests still succeed).
    pub(crate) fn go_down(&self, status: u16) {
        *self.shared.outage.lock().unwrap() = Some(status);
    }

    pub(crate) fn recover(&self) {
        *self.shared.outage.lock().unwrap() = None;
    }

    /// Every request so far, other than token requests.
    pub(crate) fn pushes(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.path != TOKEN_PATH).cloned().collect()
    }

    /// The next request not yet returned, other than token requests, waiting up to `wait`.
    pub(crate) async fn try_next(&mut self, wait: Duration) -> Option<Recorded> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.shared.arrived.notified();
            let found = {
                let requests = self.shared.requests.lock().unwrap();
                let next = requests.iter().enumerate().skip(self.seen).find(|(_, r)| r.path != TOKEN_PATH);
                next.map(|(i, r)| (i, r.clone()))
            };
            if let Some((index, request)) = found {
                self.seen = index + 1;
                return Some(request);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    pub(crate) async fn next(&mut self) -> Recorded {
        self.try_next(Duration::from_secs(10)).await.expect("a request reached the stand-in")
    }

    /// Asserts that no further request arrives for a while.
    pub(crate) async fn expect_none(&mut self) {
        if let Some(request) = self.try_next(Duration::from_millis(700)).await {
            panic!("expected no push, got {} {}", request.method, request.path);
        }
    }

    pub(crate) fn token_requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.path == TOKEN_PATH).cloned().collect()
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == TOKEN_PATH {
        shared.requests.lock().unwrap().push(Recorded { method, path, version, headers, body, answered: 200 });
        shared.arrived.notify_waiters();
        let token = serde_json::json!({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"});
        return axum::Json(token).into_response();
    }
    let outage = *shared.outage.lock().unwrap();
    let (status, answer) = match outage {
        Some(status) => (status, "{\"reason\":\"ServiceUnavailable\"}".to_owned()),
        None => shared.answers.lock().unwrap().pop_front().unwrap_or((200, "{}".to_owned())),
    };
    shared.requests.lock().unwrap().push(Recorded { method, path, version, headers, body, answered: status });
    shared.arrived.notify_waiters();
    (StatusCode::from_u16(status).unwrap(), answer).into_response()
}
