//! One task per client connection: reads messages, answers them, and relays live events from its outbox.
//!
//! Events are pipelined: each EVENT (and AUTH) becomes a future (verify off-thread, then wait for the writer's
//! commit) so that a publisher sending many events gets them committed in shared batches; reading pauses once
//! `max_pending_events` are in flight. A REQ is answered inline: stored events, EOSE, then live events. The
//! connection opens with a NIP-42 challenge.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitSink};
use futures_util::{FutureExt, SinkExt, StreamExt};
use governor::DefaultDirectRateLimiter;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RelayState;
use super::admission::RefusedEvent;
use super::auth::{self, Reader};
use super::negentropy::Reconciliations;
use super::pace::{AWAITED_WITHIN, Pace};
use super::rate::{ClientAddress, ConnectionSlot};
use super::subscriptions::{Outbox, Outgoing, SubscriptionKey};
use crate::groups::Verdict;
use crate::protocol::message::{self, ClientMessage, ParseError, event_id_of};
use crate::protocol::{Filter, KindClass, Refusal};
use crate::store::{StoreError, WriteOutcome};

/// How long a closing connection waits for its in-flight events to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection waits for its close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection's sending half, with how long a send may make no progress (`[limits] send_timeout_secs`): a
/// client that stops reading fills its socket, and then the send waits; past the timeout the connection closes,
/// so that neither its memory nor shutdown waits on it.
struct Sink {
    inner: SplitSink<WebSocket, Message>,
    timeout: Duration,
}

/// What the futures of one connection need to know about it.
struct Peer {
    /// What per-IP limits count this connection under.
    ip: IpAddr,
    reader: Arc<Reader>,
    challenge: String,
    pace: Pace,
}

/// `slot` holds the connection's place in the per-IP count until the connection ends.
pub async fn serve(socket: WebSocket, state: Arc<RelayState>, address: ClientAddress, slot: ConnectionSlot) {
    let _slot = slot;
    let connection_id = state.next_connection_id();
    tracing::info!(connection_id, peer = %address, "connection opened");
    metrics::gauge!(crate::metrics::CONNECTIONS).increment(1);
    let config = state.config();
    let limits = &config.limits;
    let (sink, mut stream) = socket.split();
    let mut sink = Sink { inner: sink, timeout: Duration::from_secs(limits.send_timeout_secs.max(1)) };
    let reader = Arc::new(Reader::new(config.read_restricted_kinds(), state.groups.clone()));
    let peer = Arc::new(Peer { ip: address.key, reader, challenge: auth::new_challenge(), pace: Pace::default() });
    let mut session = Session {
        state: state.clone(),
        live: None,
        overflowed: CancellationToken::new(),
        peer: peer.clone(),
        subscriptions: HashMap::new(),
        reconciliations: Reconciliations::default(),
        req_limiter: state.rate_limits().req_limiter(),
    };
    let mut pending: FuturesUnordered<BoxFuture<'static, String>> = FuturesUnordered::new();
    let mut live = LiveFlush::new(Duration::from_millis(limits.live_flush_ms));
    // Made once, not at each turn of the loop: a live event wakes this task, and whatever the loop builds anew
    // for each wake-up is paid once per delivery (BENCHMARKS.md, fan-out).
    let shutdown = state.shutdown.clone().cancelled_owned();
    let overflowed = session.overflowed.clone().cancelled_owned();
    tokio::pin!(shutdown, overflowed);

    if send(&mut sink, message::auth(&peer.challenge)).await.is_err() {
        return;
    }
    let reason = loop {
        // In this order: the socket is read last, so that a wake-up for a live event or an answer does not also
        // try a read that would find nothing; what is read is answered first, so the client's own work leads.
        tokio::select! {
            biased;
            _ = &mut shutdown => break End::Shutdown,
            _ = &mut overflowed => {
                metrics::counter!(crate::metrics::SLOW_CLIENTS, "reason" => "outbox_full").increment(1);
                let _ = send(&mut sink, message::notice(&Refusal::error("disconnected for reading too slowly"))).await;
                break End::TooSlow;
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                // Answers that are ready together leave in one write.
                let ready = std::iter::from_fn(|| pending.next().now_or_never().flatten());
                if send_all(&mut sink, std::iter::once(reply).chain(ready)).await.is_err() { break End::SendFailed; }
            }
            Some(event) = next_live(&mut session.live), if live.held.is_none() && session.live.is_some() => {
                if let Some(first) = live.hold_or_send(event) {
                    let ready = std::iter::from_fn(|| session.live.as_mut()?.1.try_recv());
                    if send_all(&mut sink, std::iter::once(first).chain(ready)).await.is_err() { break End::SendFailed; }
                }
            }
            // Made anew at each turn: kept across turns, a timer would add a quarter of a KiB to every connection.
            () = tokio::time::sleep_until(live.due), if live.held.is_some() => {
                let first = live.release();
                let ready = std::iter::from_fn(|| session.live.as_mut()?.1.try_recv());
                if send_all(&mut sink, first.into_iter().chain(ready)).await.is_err() { break End::SendFailed; }
            }
            incoming = stream.next(), if pending.len() < limits.max_pending_events => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Err(()) = session.handle(text.as_str(), &mut sink, &mut pending).await {
                        break End::SendFailed;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    if send(&mut sink, message::notice(&Refusal::invalid("binary messages are not supported"))).await.is_err() {
                        break End::SendFailed;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break End::ClosedByClient,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    tracing::info!(connection_id, "websocket error: {e}");
                    break End::ProtocolError;
                }
            },
        }
    };

    // Events already in flight are answered if the client is still there: their commit may already be under way.
    // A client whose socket failed or stalled gets nothing more (its events are committed all the same).
    if reason != End::SendFailed {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(reply) = pending.next().await {
                let _ = send(&mut sink, reply).await;
            }
        })
        .await;
    }
    for key in session.subscriptions.into_values() {
        state.subscriptions.remove(key);
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.inner.close()).await;
    metrics::gauge!(crate::metrics::CONNECTIONS).decrement(1);
    tracing::info!(connection_id, peer = %address, reason = reason.as_str(), "connection closed");
}

/// Why a connection ended, as its closing log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    TooSlow,
    /// A write to the client failed or made no progress: nothing more is sent.
    SendFailed,
    ClosedByClient,
    ProtocolError,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "relay shutting down",
            Self::TooSlow => "too slow reading",
            Self::SendFailed => "send failed",
            Self::ClosedByClient => "closed by client",
            Self::ProtocolError => "protocol error",
        }
    }
}

/// Gathers live events into fewer writes: an event that follows the last write within `window` is held (the rest
/// wait in the outbox, under its limits) until the window ends, then leaves with whatever followed it. Under a busy
/// feed this is most of the CPU of fan-out: a write costs a system call and the TCP stack's work however small it
/// is (BENCHMARKS.md).
struct LiveFlush {
    window: Duration,
    last: Option<Instant>,
    held: Option<String>,
    due: Instant,
}

impl LiveFlush {
    fn new(window: Duration) -> Self {
        Self { window, last: None, held: None, due: Instant::now() }
    }

    /// The event to write now, or None when it is held until `due`.
    fn hold_or_send(&mut self, event: String) -> Option<String> {
        let now = Instant::now();
        match self.last.map(|last| last + self.window).filter(|due| *due > now) {
            Some(due) => {
                self.held = Some(event);
                self.due = due;
                None
            }
            None => {
                self.last = Some(now);
                Some(event)
            }
        }
    }

    /// The held event, its window over.
    fn release(&mut self) -> Option<String> {
        self.last = Some(Instant::now());
        self.held.take()
    }
}

async fn send(sink: &mut Sink, text: String) -> Result<(), ()> {
    send_all(sink, std::iter::once(text)).await
}

/// Sends messages with one flush at the end, so that many small ones (OKs, stored events) share a write. Each
/// step (a message into the write buffer, which writes out past 8 KiB, or the flush) must finish within the sink's
/// timeout.
async fn send_all(sink: &mut Sink, texts: impl Iterator<Item = String>) -> Result<(), ()> {
    let timeout = sink.timeout;
    for text in texts {
        crate::metrics::count_out(&text);
        match tokio::time::timeout(timeout, sink.inner.feed(Message::Text(text.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(()),
            Err(_) => {
                stalled();
                return Err(());
            }
        }
    }
    match tokio::time::timeout(timeout, sink.inner.flush()).await {
        Ok(result) => result.map_err(|_| ()),
        Err(_) => {
            stalled();
            Err(())
        }
    }
}

fn stalled() {
    metrics::counter!(crate::metrics::SLOW_CLIENTS, "reason" => "send_timeout").increment(1);
    tracing::info!("a send made no progress within the send timeout: closing the connection");
}

/// What a REQ, COUNT or NEG-OPEN would open, for the limits that apply to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opens {
    Nothing,
    Subscription,
    Reconciliation,
}

/// The next live event, once the connection has an outbox.
async fn next_live(live: &mut Option<(Arc<Outbox>, Outgoing)>) -> Option<String> {
    match live {
        Some((_, outgoing)) => outgoing.recv().await,
        None => std::future::pending().await,
    }
}

struct Session {
    state: Arc<RelayState>,
    /// The outbox live events arrive in, and its receiving end: made at the first REQ, since a channel is a
    /// kilobyte and most of a relay's connections may sit idle (memory per idle connection, BENCHMARKS.md).
    live: Option<(Arc<Outbox>, Outgoing)>,
    /// Cancelled when the outbox overflowed (`Outbox::overflowed`).
    overflowed: CancellationToken,
    peer: Arc<Peer>,
    subscriptions: HashMap<String, SubscriptionKey>,
    reconciliations: Reconciliations,
    req_limiter: Option<DefaultDirectRateLimiter>,
}

impl Session {
    /// The connection's outbox, made now if this is its first subscription.
    fn outbox(&mut self) -> &Arc<Outbox> {
        let (reader, overflowed) = (&self.peer.reader, &self.overflowed);
        let limits = &self.state.config().limits;
        let (queue, bytes) = (limits.max_outgoing_queue, limits.max_outgoing_bytes);
        &self.live.get_or_insert_with(|| Outbox::new(queue, bytes, reader.clone(), overflowed.clone())).0
    }

    /// Handles one text message. Err means the socket is gone.
    async fn handle(
        &mut self,
        text: &str,
        sink: &mut Sink,
        pending: &mut FuturesUnordered<BoxFuture<'static, String>>,
    ) -> Result<(), ()> {
        let config = self.state.config();
        let limits = &config.limits;
        if text.len() > limits.max_message_length {
            let reason = Refusal::invalid(format!("message too large (max {} bytes)", limits.max_message_length));
            return send(sink, message::notice(&reason)).await;
        }
        let parsed = ClientMessage::parse(text);
        let verb = match &parsed {
            Ok(ClientMessage::Event(_)) => "EVENT",
            Ok(ClientMessage::Auth(_)) => "AUTH",
            Ok(ClientMessage::Req { .. }) => "REQ",
            Ok(ClientMessage::Count { .. }) => "COUNT",
            Ok(ClientMessage::Close { .. }) => "CLOSE",
            Ok(ClientMessage::NegOpen { .. }) => "NEG-OPEN",
            Ok(ClientMessage::NegMsg { .. }) => "NEG-MSG",
            Ok(ClientMessage::NegClose { .. }) => "NEG-CLOSE",
            Err(_) => "invalid",
        };
        crate::metrics::count_in(verb);
        match parsed {
            Ok(ClientMessage::Event(raw)) => {
                pending.push(process_event(self.state.clone(), self.peer.clone(), raw).boxed());
                Ok(())
            }
            Ok(ClientMessage::Auth(raw)) => {
                pending.push(authenticate(self.state.clone(), self.peer.clone(), raw).boxed());
                Ok(())
            }
            Ok(ClientMessage::Req { sub_id, filters }) => self.subscribe(sub_id, filters, sink).await,
            Ok(ClientMessage::Count { sub_id, filters }) => self.count(sub_id, filters, sink).await,
            Ok(ClientMessage::Close { sub_id }) => {
                if let Some(key) = self.subscriptions.remove(&sub_id) {
                    self.state.subscriptions.remove(key);
                }
                Ok(())
            }
            Ok(ClientMessage::NegOpen { sub_id, filter, message: first }) => {
                if let Some(reason) = self.refusal(&sub_id, std::slice::from_ref(&filter), Opens::Reconciliation) {
                    return send(sink, message::neg_err(&sub_id, &reason)).await;
                }
                let answer = self.reconciliations.open(&self.state, &self.peer.reader, sub_id, filter, first).await;
                send(sink, answer).await
            }
            Ok(ClientMessage::NegMsg { sub_id, message: query }) => {
                if self.req_limiter.as_ref().is_some_and(|l| l.check().is_err()) {
                    self.reconciliations.close(&sub_id);
                    return send(
                        sink,
                        message::neg_err(&sub_id, &Refusal::rate_limited("too many requests, slow down")),
                    )
                    .await;
                }
                let answer = self.reconciliations.message(sub_id, query).await;
                send(sink, answer).await
            }
            Ok(ClientMessage::NegClose { sub_id }) => {
                self.reconciliations.close(&sub_id);
                Ok(())
            }
            Err(ParseError::NegError { sub_id, reason }) => send(sink, message::neg_err(&sub_id, &reason)).await,
            Err(ParseError::Notice(reason)) => send(sink, message::notice(&reason)).await,
            Err(ParseError::Closed { sub_id, reason }) => send(sink, message::closed(&sub_id, &reason)).await,
            Err(ParseError::Event { event_id, reason }) => send(sink, message::refused(&event_id, &reason)).await,
        }
    }

    /// Why a REQ or COUNT cannot be served, if it cannot: the answer for a CLOSED.
    fn refusal(&self, sub_id: &str, filters: &[Filter], opens: Opens) -> Option<Refusal> {
        let (opens_subscription, is_negentropy) = (opens != Opens::Nothing, opens == Opens::Reconciliation);
        let config = self.state.config();
        let limits = &config.limits;
        if sub_id.chars().count() > limits.max_subid_length {
            return Some(Refusal::invalid(format!(
                "subscription id longer than {} characters",
                limits.max_subid_length
            )));
        }
        if filters.len() > limits.max_filters {
            return Some(Refusal::invalid(format!("too many filters (max {})", limits.max_filters)));
        }
        if let Some(why) =
            filters.iter().find_map(|f| f.search_refusal(limits.max_search_terms, limits.max_search_length))
        {
            return Some(why);
        }
        if is_negentropy
            && !self.reconciliations.is_open(sub_id)
            && self.reconciliations.open_count() >= limits.max_negentropy_sessions
        {
            let max = limits.max_negentropy_sessions;
            return Some(Refusal::rate_limited(format!("too many open reconciliations (max {max})")));
        }
        if opens_subscription
            && !self.subscriptions.contains_key(sub_id)
            && self.subscriptions.len() + self.reconciliations.open_count() >= limits.max_subscriptions
        {
            return Some(Refusal::rate_limited(format!(
                "too many open subscriptions (max {})",
                limits.max_subscriptions
            )));
        }
        if self.req_limiter.as_ref().is_some_and(|l| l.check().is_err()) {
            return Some(Refusal::rate_limited("too many requests, slow down"));
        }
        if !config.database.search_index && filters.iter().any(|f| f.search.is_some()) {
            return Some(Refusal::blocked("search (NIP-50) is turned off on this relay"));
        }
        let reader = &self.peer.reader;
        let asks_restricted = filters
            .iter()
            .any(|f| f.kinds.as_ref().is_some_and(|kinds| kinds.iter().any(|k| reader.is_restricted(*k))));
        if asks_restricted && reader.pubkeys().is_empty() {
            return Some(Refusal::auth_required("these kinds are served only to their author and recipients"));
        }
        if reader.pubkeys().is_empty()
            && let Some(group) = reader.private_group_in(filters)
        {
            return Some(Refusal::auth_required(format!("group {group} is private: only its members may read it")));
        }
        None
    }

    async fn subscribe(&mut self, sub_id: String, mut filters: Vec<Filter>, sink: &mut Sink) -> Result<(), ()> {
        if let Some(reason) = self.refusal(&sub_id, &filters, Opens::Subscription) {
            return send(sink, message::closed(&sub_id, &reason)).await;
        }
        let config = self.state.config();
        let limits = &config.limits;
        for filter in &mut filters {
            filter.limit = Some(filter.limit.unwrap_or(limits.default_limit).min(limits.max_limit));
        }
        // A REQ with a known id replaces that subscription.
        if let Some(old) = self.subscriptions.remove(&sub_id) {
            self.state.subscriptions.remove(old);
        }
        // Live delivery starts before the query, so that nothing committed in between is missed; the outbox holds
        // those events until the stored ones and EOSE have been sent.
        let outbox = self.outbox().clone();
        let key = self.state.subscriptions.add(&outbox, &sub_id, filters.clone());
        self.subscriptions.insert(sub_id.clone(), key);
        let scope = self.peer.reader.scope();
        let started = std::time::Instant::now();
        let visibility = self.peer.reader.visibility(&scope);
        match self.state.store.query(&filters, visibility, limits.max_req_bytes).await {
            Ok(events) => {
                let prefix = message::event_prefix(&sub_id);
                let stored = events.iter().map(|stored| message::event_after(&prefix, &stored.json));
                send_all(sink, stored.chain(std::iter::once(message::eose(&sub_id)))).await?;
                crate::metrics::record_req_seconds(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                tracing::error!(sub_id, "query failed: {e}");
                self.subscriptions.remove(&sub_id);
                self.state.subscriptions.remove(key);
                send(sink, message::closed(&sub_id, &Refusal::error("could not query the database"))).await
            }
        }
    }

    async fn count(&mut self, sub_id: String, filters: Vec<Filter>, sink: &mut Sink) -> Result<(), ()> {
        if let Some(reason) = self.refusal(&sub_id, &filters, Opens::Nothing) {
            return send(sink, message::closed(&sub_id, &reason)).await;
        }
        let scope = self.peer.reader.scope();
        let max = self.state.config().limits.max_count;
        match self.state.store.count(&filters, self.peer.reader.visibility(&scope), max).await {
            Ok(count) => send(sink, message::count(&sub_id, count.min(max), count > max)).await,
            Err(e) => {
                tracing::error!(sub_id, "count failed: {e}");
                send(sink, message::closed(&sub_id, &Refusal::error("could not query the database"))).await
            }
        }
    }
}

/// Admits, stores or relays one event, and returns the message that answers it.
async fn process_event(state: Arc<RelayState>, peer: Arc<Peer>, raw: Box<RawValue>) -> String {
    let (_in_flight, awaited) = peer.pace.start(AWAITED_WITHIN);
    if !state.rate_limits().allow_event_from_ip(peer.ip) {
        let Some(id) = event_id_of(&raw) else {
            return message::notice(&Refusal::rate_limited("too many events from your address"));
        };
        return message::refused(&id, &Refusal::rate_limited("too many events from your address, slow down"));
    }
    let event = match state.verifier.admit(raw, state.config(), state.clock.secs()).await {
        Ok(event) => Arc::new(event),
        Err(RefusedEvent { event_id: Some(id), reason }) => return message::refused(&id, &reason),
        Err(RefusedEvent { event_id: None, reason }) => return message::notice(&reason),
    };
    let id = event.event.id.to_hex();
    if let Err(reason) = state.policy().check(&event, &peer.reader, state.clock.secs()) {
        return message::refused(&id, &reason);
    }
    if !state.rate_limits().allow_event_from_pubkey(event.pubkey()) {
        return message::refused(&id, &Refusal::rate_limited("too many events from this author, slow down"));
    }
    if let Some(consumer) = &state.consumer
        && let Some(answer) = consumer.consume(&event, peer.ip).await
    {
        return match answer {
            Ok(said) => message::ok(&id, true, &said),
            Err(reason) => message::refused(&id, &reason),
        };
    }
    if let Some(groups) = &state.groups
        && let Some(verdict) = groups.handle(&event, &state.writer, &state.store).await
    {
        return match verdict {
            Verdict::Refused(reason) | Verdict::Pending(reason) => message::refused(&id, &reason),
            Verdict::Written(outcome) => answer_write(&id, outcome),
        };
    }
    if event.class() == KindClass::Ephemeral {
        crate::store::writer::tell(&state.listeners, std::slice::from_ref(&event));
        return message::ok(&id, true, "");
    }
    let written = if awaited { state.writer.write_awaited(event).await } else { state.writer.write(event).await };
    answer_write(&id, written)
}

/// The `OK` for an event handed to the writer.
fn answer_write(id: &str, outcome: Result<WriteOutcome, StoreError>) -> String {
    match outcome {
        Ok(WriteOutcome::Stored) => message::ok(id, true, ""),
        Ok(WriteOutcome::Duplicate) => {
            message::ok(id, true, &Refusal::duplicate("already have this event").to_string())
        }
        Ok(WriteOutcome::Superseded) => message::refused(id, &Refusal::duplicate("a newer version is already stored")),
        Ok(WriteOutcome::Deleted) => message::refused(id, &Refusal::blocked("this event was deleted by its author")),
        Err(_) => message::refused(id, &Refusal::error("could not store the event")),
    }
}

/// Checks a NIP-42 AUTH event; on success the connection may read what is addressed to that pubkey.
async fn authenticate(state: Arc<RelayState>, peer: Arc<Peer>, raw: Box<RawValue>) -> String {
    let event = match state.verifier.admit(raw, state.config(), state.clock.secs()).await {
        Ok(event) => event,
        Err(RefusedEvent { event_id: Some(id), reason }) => return message::refused(&id, &reason),
        Err(RefusedEvent { event_id: None, reason }) => return message::notice(&reason),
    };
    let id = event.event.id.to_hex();
    let config = state.config();
    let auth = &config.auth;
    match auth::check_auth_event(
        &event.event,
        &peer.challenge,
        &config.server.public_url,
        auth.max_clock_skew_secs,
        state.clock.secs(),
    ) {
        Ok(()) => {
            peer.reader.authenticate(*event.pubkey());
            message::ok(&id, true, "")
        }
        Err(reason) => message::refused(&id, &reason),
    }
}
