//! One remote relay: connect, subscribe with the planned filters (with `since` covering the time since the last
//! event seen, so a reconnect misses nothing), verify what arrives, pass it on; reconnect with back-off.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::{RemoteEvents, StatusBoard, check_relay_url};
use crate::config::UpstreamConfig;
use crate::protocol::verify::{parse_event, verify_event};
use crate::protocol::{Filter, KindClass, VerifiedEvent};
use crate::store::unix_now;

const SUBSCRIPTION: &str = "pushrelay";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A connection that lasted this long was a good one: the back-off starts again from `FIRST_BACKOFF`. A relay
/// that drops connections sooner (flapping) is retried ever more slowly; `since` still covers the gaps.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// After a reconnect, `since` reaches this far before the connection was lost: clocks and commit order are not exact.
const SINCE_MARGIN: u64 = 60;
/// Gift wraps carry a `created_at` up to two days in the past (NIP-59), so their filters reach back that much more.
const GIFT_WRAP_BACKDATE: u64 = 2 * 24 * 3600;
const GIFT_WRAP_KINDS: [u16; 2] = [1059, 1060];

pub(super) async fn watch(
    url: String,
    config: UpstreamConfig,
    mut plan: watch::Receiver<Vec<Filter>>,
    sink: std::sync::Arc<dyn RemoteEvents>,
    status: StatusBoard,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    // The last moment this relay was known to be followed live; None before the first subscription, which then asks
    // for new events only.
    let mut live_until: Option<u64> = None;
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = session(&url, &config, &mut plan, &*sink, &status, &mut live_until) => outcome,
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

/// The REQ for the planned filters: new events only at first; after a gap, everything since it began. Filters for
/// replaceable kinds (lists) ask for the current version, whenever it was published.
fn req(filters: &[Filter], live_until: Option<u64>) -> String {
    let mut message = vec![json!("REQ"), json!(SUBSCRIPTION)];
    message.extend(filters.iter().map(|f| {
        let mut filter = f.clone();
        let replaceable =
            filter.kinds.as_ref().is_some_and(|k| k.iter().all(|&k| KindClass::of(k) == KindClass::Replaceable));
        match live_until {
            _ if replaceable => {}
            None => filter.limit = Some(0),
            Some(moment) => {
                let wraps = filter.kinds.as_ref().is_some_and(|k| k.iter().any(|k| GIFT_WRAP_KINDS.contains(k)));
                let reach = SINCE_MARGIN + if wraps { GIFT_WRAP_BACKDATE } else { 0 };
                filter.since = Some(moment.saturating_sub(reach));
            }
        }
        filter.to_json()
    }));
    Value::Array(message).to_string()
}

/// One connection's life. Ok when there is nothing left to watch; Err(reason) when the connection failed.
async fn session(
    url: &str,
    config: &UpstreamConfig,
    plan: &mut watch::Receiver<Vec<Filter>>,
    sink: &dyn RemoteEvents,
    status: &StatusBoard,
    live_until: &mut Option<u64>,
) -> Result<(), String> {
    let parsed = check_relay_url(url, config)?;
    let mut socket = tokio::time::timeout(CONNECT_TIMEOUT, connect(&parsed, config))
        .await
        .map_err(|_| "connection timed out".to_owned())??;
    set_status(status, url, |s| {
        s.connected = true;
        s.last_error = None;
    });
    let mut filters = plan.borrow_and_update().clone();
    if filters.is_empty() {
        return Ok(());
    }
    socket.send(Message::Text(req(&filters, *live_until).into())).await.map_err(|e| e.to_string())?;
    let mut window_start = tokio::time::Instant::now();
    let mut window_events = 0u32;
    loop {
        tokio::select! {
            changed = plan.changed() => {
                if changed.is_err() {
                    return Ok(()); // the manager stopped watching this relay
                }
                filters = plan.borrow_and_update().clone();
                if filters.is_empty() {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
                // Same subscription id: the remote replaces the old subscription (NIP-01).
                socket.send(Message::Text(req(&filters, Some(unix_now())).into())).await.map_err(|e| e.to_string())?;
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
                handle(url, &text, &filters, sink, status, live_until).await;
            }
        }
    }
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

async fn handle(
    url: &str,
    text: &str,
    filters: &[Filter],
    sink: &dyn RemoteEvents,
    status: &StatusBoard,
    live_until: &mut Option<u64>,
) {
    if live_until.is_some() {
        *live_until = Some(unix_now());
    }
    let Ok(Value::Array(message)) = serde_json::from_str::<Value>(text) else { return };
    match message.first().and_then(Value::as_str) {
        Some("EVENT") => {
            let Some(raw) = message.get(2).map(Value::to_string) else { return };
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
            let Some(event) = verified.filter(|e| filters.iter().any(|f| f.matches(&e.event))) else {
                tracing::debug!(relay = %url, "upstream event dropped: not verified or not asked for");
                return;
            };
            set_status(status, url, |s| s.events += 1);
            sink.remote_event(std::sync::Arc::new(event));
        }
        Some("EOSE") => {
            *live_until = Some(unix_now());
            set_status(status, url, |s| s.subscribed = true);
        }
        Some("CLOSED") | Some("NOTICE") => {
            let reason = message.last().and_then(Value::as_str).unwrap_or("").to_owned();
            tracing::warn!(relay = %url, "upstream relay says: {text}");
            set_status(status, url, |s| {
                s.refusals += 1;
                s.last_error = Some(reason);
            });
        }
        Some("AUTH") => {} // no authentication upstream; restricted kinds will come CLOSED auth-required
        _ => {}
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
