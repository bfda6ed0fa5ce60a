//! One task per client connection: reads messages, answers them, and relays live events from its outbox.
//!
//! Events are pipelined: each EVENT becomes a future (verify off-thread, then wait for the writer's commit) so that
//! a publisher sending many events gets them committed in shared batches; reading pauses once
//! `max_pending_events` are in flight. A REQ is answered inline: stored events, EOSE, then live events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;

use super::RelayState;
use super::admission::{Refusal, admit};
use super::subscriptions::{Outbox, SubscriptionKey};
use crate::protocol::message::{self, ClientMessage, ParseError};
use crate::protocol::{Filter, KindClass};
use crate::store::WriteOutcome;

/// How long a closing connection waits for its in-flight events to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Sink = SplitSink<WebSocket, Message>;

pub async fn serve(socket: WebSocket, state: Arc<RelayState>, peer: SocketAddr) {
    let connection_id = state.next_connection_id();
    tracing::info!(connection_id, %peer, "connection opened");
    let limits = &state.config.limits;
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outgoing) = Outbox::new(limits.max_outgoing_queue);
    let mut session = Session { state: state.clone(), outbox, subscriptions: HashMap::new() };
    let mut pending: FuturesUnordered<BoxFuture<'static, String>> = FuturesUnordered::new();

    let reason = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break "relay shutting down",
            _ = session.outbox.overflowed.cancelled() => {
                let _ = send(&mut sink, message::notice("error: disconnected for reading too slowly")).await;
                break "too slow reading";
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                if send(&mut sink, reply).await.is_err() { break "send failed"; }
            }
            Some(live) = outgoing.recv() => {
                if send(&mut sink, live).await.is_err() { break "send failed"; }
            }
            incoming = stream.next(), if pending.len() < limits.max_pending_events => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Err(()) = session.handle(text.as_str(), &mut sink, &mut pending).await {
                        break "send failed";
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if send(&mut sink, message::notice("invalid: binary messages are not supported")).await.is_err() {
                        break "send failed";
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "closed by client",
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    tracing::info!(connection_id, "websocket error: {e}");
                    break "protocol error";
                }
            },
        }
    };

    // Events already in flight are answered if the client is still there: their commit may already be under way.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(reply) = pending.next().await {
            let _ = send(&mut sink, reply).await;
        }
    })
    .await;
    for key in session.subscriptions.into_values() {
        state.subscriptions.remove(key);
    }
    let _ = sink.close().await;
    tracing::info!(connection_id, %peer, reason, "connection closed");
}

async fn send(sink: &mut Sink, text: String) -> Result<(), ()> {
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}

struct Session {
    state: Arc<RelayState>,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<String, SubscriptionKey>,
}

impl Session {
    /// Handles one text message. Err means the socket is gone.
    async fn handle(
        &mut self,
        text: &str,
        sink: &mut Sink,
        pending: &mut FuturesUnordered<BoxFuture<'static, String>>,
    ) -> Result<(), ()> {
        let limits = &self.state.config.limits;
        if text.len() > limits.max_message_length {
            let reason = format!("invalid: message too large (max {} bytes)", limits.max_message_length);
            return send(sink, message::notice(&reason)).await;
        }
        match ClientMessage::parse(text) {
            Ok(ClientMessage::Event(raw)) => {
                pending.push(process_event(self.state.clone(), raw).boxed());
                Ok(())
            }
            Ok(ClientMessage::Req { sub_id, filters }) => self.subscribe(sub_id, filters, sink).await,
            Ok(ClientMessage::Close { sub_id }) => {
                if let Some(key) = self.subscriptions.remove(&sub_id) {
                    self.state.subscriptions.remove(key);
                }
                Ok(())
            }
            Err(ParseError::Notice(reason)) => send(sink, message::notice(&reason)).await,
            Err(ParseError::Closed { sub_id, reason }) => send(sink, message::closed(&sub_id, &reason)).await,
        }
    }

    async fn subscribe(&mut self, sub_id: String, mut filters: Vec<Filter>, sink: &mut Sink) -> Result<(), ()> {
        let limits = &self.state.config.limits;
        let refusal = if sub_id.chars().count() > limits.max_subid_length {
            Some(format!("invalid: subscription id longer than {} characters", limits.max_subid_length))
        } else if filters.len() > limits.max_filters {
            Some(format!("invalid: too many filters (max {})", limits.max_filters))
        } else if !self.subscriptions.contains_key(&sub_id) && self.subscriptions.len() >= limits.max_subscriptions {
            Some(format!("rate-limited: too many open subscriptions (max {})", limits.max_subscriptions))
        } else {
            None
        };
        if let Some(reason) = refusal {
            return send(sink, message::closed(&sub_id, &reason)).await;
        }
        for filter in &mut filters {
            filter.limit = Some(filter.limit.unwrap_or(limits.default_limit).min(limits.max_limit));
        }
        // A REQ with a known id replaces that subscription.
        if let Some(old) = self.subscriptions.remove(&sub_id) {
            self.state.subscriptions.remove(old);
        }
        // Live delivery starts before the query, so that nothing committed in between is missed; the outbox holds
        // those events until the stored ones and EOSE have been sent.
        let key = self.state.subscriptions.add(&self.outbox, &sub_id, filters.clone());
        self.subscriptions.insert(sub_id.clone(), key);
        match self.state.store.query(&filters).await {
            Ok(events) => {
                for stored in events {
                    send(sink, message::event(&sub_id, &stored.json)).await?;
                }
                send(sink, message::eose(&sub_id)).await
            }
            Err(e) => {
                tracing::error!(sub_id, "query failed: {e}");
                self.subscriptions.remove(&sub_id);
                self.state.subscriptions.remove(key);
                send(sink, message::closed(&sub_id, "error: could not query the database")).await
            }
        }
    }
}

/// Admits, stores or relays one event, and returns the message that answers it.
async fn process_event(state: Arc<RelayState>, raw: Box<RawValue>) -> String {
    let admitted = verify_off_thread(&state, raw).await;
    let event = match admitted {
        Ok(event) => Arc::new(event),
        Err(Refusal { event_id: Some(id), reason }) => return message::ok(&id, false, &reason),
        Err(Refusal { event_id: None, reason }) => return message::notice(&reason),
    };
    let id = event.event.id.to_hex();
    if let Some(consumer) = &state.consumer
        && let Some((accepted, reason)) = consumer.consume(&event).await
    {
        return message::ok(&id, accepted, &reason);
    }
    if event.class() == KindClass::Ephemeral {
        state.subscriptions.publish(&event);
        return message::ok(&id, true, "");
    }
    match state.writer.write(event).await {
        Ok(WriteOutcome::Stored) => message::ok(&id, true, ""),
        Ok(WriteOutcome::Duplicate) => message::ok(&id, true, "duplicate: already have this event"),
        Ok(WriteOutcome::Superseded) => message::ok(&id, false, "duplicate: a newer version is already stored"),
        Err(_) => message::ok(&id, false, "error: could not store the event"),
    }
}

async fn verify_off_thread(
    state: &Arc<RelayState>,
    raw: Box<RawValue>,
) -> Result<crate::protocol::VerifiedEvent, Refusal> {
    let _slot = state.verify_slots.acquire().await.expect("the semaphore is never closed");
    let config = state.config.clone();
    tokio::task::spawn_blocking(move || admit(&raw, &config.limits)).await.unwrap_or_else(|e| {
        tracing::error!("event check panicked: {e}");
        Err(Refusal { event_id: None, reason: "error: could not check the event".into() })
    })
}
