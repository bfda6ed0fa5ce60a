//! One remote relay: connect, subscribe with the planned filters (with `since` covering the time since the last
//! event seen, so a reconnect misses nothing), verify what arrives, pass it on; reconnect with back-off.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::parts::{self, Subscriptions, WatchAs};
use super::{StatusBoard, check_relay_url};
use crate::clock::Clock;
use crate::config::UpstreamConfig;
use crate::hooks::RemoteEvents;
use crate::protocol::verify::{parse_event, verify_event};
use crate::protocol::{Filter, VerifiedEvent};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A connection that lasted this long was a good one: the back-off starts again from `FIRST_BACKOFF`. A relay
/// that drops connections sooner (flapping) is retried ever more slowly; `since` still covers the gaps.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// The relay one watcher follows, the limits it keeps to, and the clock its `since` is read from.
pub(super) struct Target {
    pub url: String,
    pub config: UpstreamConfig,
    pub clock: Clock,
}

/// The last moment a relay was known to be followed live (the next subscription's `since`); None before the first
/// subscription, which then asks for new events only.
struct Followed {
    until: Option<u64>,
    clock: Clock,
}

impl Followed {
    /// Anything heard from the relay once it is followed: followed until now.
    fn heard(&mut self) {
        if self.until.is_some() {
            self.until = Some(self.clock.secs());
        }
    }

    /// The stored events were all sent (EOSE): followed from now on.
    fn caught_up(&mut self) {
        self.until = Some(self.clock.secs());
    }
}

pub(super) async fn watch(
    target: Target,
    watch_as: Arc<WatchAs>,
    mut plan: watch::Receiver<Vec<Filter>>,
    sink: std::sync::Arc<dyn RemoteEvents>,
    status: StatusBoard,
    shutdown: CancellationToken,
) {
    let Target { url, config, clock } = target;
    let mut backoff = FIRST_BACKOFF;
    let mut live_until = Followed { until: None, clock };
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = session(&url, &config, &watch_as, &mut plan, &*sink, &status, &mut live_until) => outcome,
        };
        if started.elapsed() >= STABLE_SESSION {
            backoff = FIRST_BACKOFF;
        }
        let error = match outcome {
            Ok(()) => return, // nothing left to watch here
            Err(e) => e,
        };
        tracing::info!(relay = %url, "upstream connection lost: {error}");
        set_status(&status, &url, |s| {
            s.connected = false;
            s.subscribed = false;
            s.refused.clear();
            s.authenticated = false;
            s.last_error = Some(error);
        });
        let jittered = backoff.mul_f64(rand::random_range(0.8..1.2));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(jittered) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn set_status(status: &StatusBoard, url: &str, change: impl FnOnce(&mut super::RemoteStatus)) {
    change(status.lock().expect("status lock").entry(url.to_owned()).or_default());
}

/// One connection's life. Ok when there is nothing left to watch; Err(reason) when the connection failed.
async fn session(
    url: &str,
    config: &UpstreamConfig,
    watch_as: &WatchAs,
    plan: &mut watch::Receiver<Vec<Filter>>,
    sink: &dyn RemoteEvents,
    status: &StatusBoard,
    live_until: &mut Followed,
) -> Result<(), String> {
    let parsed = check_relay_url(url, config)?;
    let mut socket = tokio::time::timeout(CONNECT_TIMEOUT, connect(&parsed, config))
        .await
        .map_err(|_| "connection timed out".to_owned())??;
    set_status(status, url, |s| {
        s.connected = true;
        s.last_error = None;
    });
    let filters = plan.borrow_and_update().clone();
    if filters.is_empty() {
        return Ok(());
    }
    let mut subs = Subscriptions::new(&filters, watch_as, Duration::from_secs(config.refused_retry_secs.max(1)));
    let first: Vec<String> =
        subs.parts.iter().map(|(part, filters)| parts::req(*part, filters, live_until.until)).collect();
    send_all(&mut socket, first).await?;
    let mut window_start = tokio::time::Instant::now();
    let mut window_events = 0u32;
    loop {
        let retry_at = subs.next_retry();
        let out = tokio::select! {
            changed = plan.changed() => {
                if changed.is_err() {
                    return Ok(()); // the manager stopped watching this relay
                }
                let filters = plan.borrow_and_update().clone();
                if filters.is_empty() {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
                // Same subscription ids: the remote replaces the old subscriptions (NIP-01).
                let out = subs.replan(&filters, watch_as, Some(live_until.clock.secs()));
                set_status(status, url, |s| s.refused = subs.refusals());
                out
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                let out = subs.due(tokio::time::Instant::now(), live_until.until);
                set_status(status, url, |s| s.refused = subs.refusals());
                out
            }
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => return Err("closed by the remote relay".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                };
                if window_start.elapsed() > Duration::from_secs(1) {
                    window_start = tokio::time::Instant::now();
                    window_events = 0;
                }
                window_events += 1;
                if window_events > config.max_events_per_sec {
                    return Err("flooding: too many messages per second".into());
                }
                handle(Remote { url, watch_as, sink, status }, &text, &mut subs, live_until).await
            }
        };
        send_all(&mut socket, out).await?;
    }
}

async fn send_all(socket: &mut Socket, messages: Vec<String>) -> Result<(), String> {
    for message in messages {
        socket.feed(Message::Text(message.into())).await.map_err(|e| e.to_string())?;
    }
    socket.flush().await.map_err(|e| e.to_string())
}

/// The remote relay a message came from, and where what it says goes.
#[derive(Clone, Copy)]
struct Remote<'a> {
    url: &'a str,
    watch_as: &'a WatchAs,
    sink: &'a dyn RemoteEvents,
    status: &'a StatusBoard,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket to one of the addresses the host resolved to when it was checked: the name is resolved
/// once, here, so that a second answer (DNS rebinding) cannot send the connection into the relay's own network.
/// The URL still names the host, for TLS (SNI, certificate) and the `Host` header.
pub(super) async fn connect(url: &url::Url, config: &UpstreamConfig) -> Result<Socket, String> {
    let addresses = crate::net::resolve_checked(url, config.allow_private_addresses).await?;
    // The library's default would take 64 MiB messages from a relay that strangers chose.
    let limits = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let mut last_error = String::new();
    for address in addresses {
        match tokio::net::TcpStream::connect(address).await {
            Ok(stream) => {
                // Small messages both ways (REQ, events): no Nagle delay.
                let _ = stream.set_nodelay(true);
                let (socket, _) =
                    tokio_tungstenite::client_async_tls_with_config(url.as_str(), stream, Some(limits), None)
                        .await
                        .map_err(|e| format!("cannot connect: {e}"))?;
                return Ok(socket);
            }
            Err(e) => last_error = format!("cannot connect to {address}: {e}"),
        }
    }
    Err(last_error)
}

/// One message from the remote; returns what to send back (AUTH, subscriptions asked again).
async fn handle(remote: Remote<'_>, text: &str, subs: &mut Subscriptions, live_until: &mut Followed) -> Vec<String> {
    let Remote { url, watch_as, sink, status } = remote;
    live_until.heard();
    let Ok(Value::Array(message)) = serde_json::from_str::<Value>(text) else { return Vec::new() };
    let field = |n: usize| message.get(n).and_then(Value::as_str).unwrap_or("");
    match field(0) {
        "EVENT" => {
            let Some(raw) = message.get(2).map(Value::to_string) else { return Vec::new() };
            let verified = tokio::task::spawn_blocking(move || {
                let raw = serde_json::value::RawValue::from_string(raw).ok()?;
                let event = parse_event(&raw).ok()?;
                verify_event(&event).ok()?;
                Some(VerifiedEvent::new(event))
            })
            .await
            .ok()
            .flatten();
            // A remote relay is not trusted: the event must be genuine and match what was asked for.
            let Some(event) = verified.filter(|e| subs.all_filters().any(|f| f.matches(&e.event))) else {
                tracing::debug!(relay = %url, "upstream event dropped: not verified or not asked for");
                return Vec::new();
            };
            set_status(status, url, |s| s.events += 1);
            sink.remote_event(std::sync::Arc::new(event));
            Vec::new()
        }
        "EOSE" => {
            live_until.caught_up();
            set_status(status, url, |s| s.subscribed = true);
            Vec::new()
        }
        "CLOSED" => {
            let reason = field(2).to_owned();
            tracing::warn!(relay = %url, "upstream relay refused {}: {reason}", field(1));
            subs.closed(field(1), &reason, tokio::time::Instant::now());
            set_status(status, url, |s| {
                s.refusals += 1;
                s.refused = subs.refusals();
                s.last_error = Some(reason);
            });
            Vec::new()
        }
        "NOTICE" => {
            tracing::warn!(relay = %url, "upstream relay says: {text}");
            set_status(status, url, |s| {
                s.refusals += 1;
                s.last_error = Some(field(1).to_owned());
            });
            Vec::new()
        }
        "AUTH" => subs.challenge(field(1), url, watch_as).into_iter().collect(),
        "OK" => {
            let accepted = message.get(2).and_then(Value::as_bool).unwrap_or(false);
            if !accepted {
                tracing::info!(relay = %url, "upstream relay refused our AUTH: {}", field(3));
            }
            let again = subs.ok(field(1), accepted, live_until.until);
            set_status(status, url, |s| {
                s.refused = subs.refusals();
                s.authenticated = subs.is_authenticated();
            });
            again
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relay whose name leads to loopback, where a server listens, is not dialled; allowed (tests), it is, at
    /// the address the name resolved to.
    #[tokio::test]
    async fn a_relay_on_a_non_public_address_is_not_dialled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("ws://localhost:{}/", listener.local_addr().unwrap().port())).unwrap();
        let accepted = || tokio::time::timeout(Duration::from_millis(300), listener.accept());
        let mut config = UpstreamConfig { allow_insecure: true, ..UpstreamConfig::default() };
        let Err(error) = connect(&url, &config).await else { panic!("a loopback relay was dialled") };
        assert!(error.contains("loopback") || error.contains("non-public"), "{error}");
        assert!(accepted().await.is_err(), "nothing reached the server");

        let allowed = url.clone();
        config.allow_private_addresses = true;
        let attempt = tokio::spawn(async move { connect(&allowed, &config).await.map(drop) });
        assert!(accepted().await.is_ok(), "the server was reached");
        attempt.abort();
    }
}
