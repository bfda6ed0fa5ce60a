//! Several relay nodes on one PostgreSQL database behaving as one relay.
//!
//! Each node announces what it commits: the store sends every stored event on `pushrelay_events` inside the
//! event's transaction (so an announcement means a commit), and the pubkeys whose push registrations changed inside
//! the change's; this module sends ephemeral events. Each node listens, and hands other nodes' events to
//! its live subscriptions (and to push, for mute lists) and reloads changed registrations. After a lost
//! connection it catches up from the last `seq` it saw, so no stored event is missed (ephemeral ones sent while
//! it was away are gone, as ephemeral events are).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hooks::SharedRegistrations;
use crate::lifecycle::Lifecycle;
use crate::protocol::filter::parse_hash;
use crate::protocol::{KindClass, SharedEvent, VerifiedEvent};
use crate::store::PgStore;
use crate::store::postgres::{EVENTS_CHANNEL, REGISTRATIONS_CHANNEL};
use crate::store::writer::{AcceptListener, tell_elsewhere};

/// Events read per catch-up query.
const CATCH_UP_BATCH: i64 = 1000;

/// Where a starting node begins to follow the others: the newest `seq` now.
pub async fn starting_seq(store: &PgStore) -> Result<i64, crate::store::StoreError> {
    store.last_seq().await
}

/// Announces this node's ephemeral events (stored ones are announced by the store at commit).
pub struct EphemeralAnnouncer {
    node: String,
    /// Announcements waiting for the one task that sends them: bounded, so that a flood of ephemeral events holds
    /// bounded memory and no task each (beyond it they are not announced, and logged).
    waiting: mpsc::Sender<String>,
}

/// Announcements waiting at most; ephemeral events are fire-and-forget.
const ANNOUNCEMENTS_WAITING: usize = 4096;

impl EphemeralAnnouncer {
    pub fn start(pool: PgPool, node: String, lifecycle: &Lifecycle) -> Self {
        let (waiting, mut queue) = mpsc::channel::<String>(ANNOUNCEMENTS_WAITING);
        let shutdown = lifecycle.shutdown();
        lifecycle.spawn(async move {
            loop {
                let payload = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    payload = queue.recv() => match payload { Some(payload) => payload, None => return },
                };
                let notify = sqlx::query("SELECT pg_notify($1, $2)").bind(EVENTS_CHANNEL).bind(payload);
                if let Err(e) = notify.execute(&pool).await {
                    tracing::warn!("cannot announce an ephemeral event to the other nodes: {e}");
                }
            }
        });
        Self { node, waiting }
    }
}

impl AcceptListener for EphemeralAnnouncer {
    fn accepted(&self, events: &[SharedEvent]) {
        for event in events.iter().filter(|e| e.class() == KindClass::Ephemeral) {
            let payload = serde_json::json!({"node": self.node, "event": &*event.json}).to_string();
            if self.waiting.try_send(payload).is_err() {
                tracing::warn!(id = %event.event.id, "ephemeral event not announced to the other nodes: too many waiting");
            }
        }
    }

    fn accepted_elsewhere(&self, _events: &[SharedEvent]) {}
}

/// Listens until shutdown; reconnects (and catches up) when the connection is lost. `last_seq` must be read before
/// the node serves anyone (see `starting_seq`), so that whatever is committed from then on reaches it.
pub async fn listen(
    store: Arc<PgStore>,
    node: String,
    mut last_seq: i64,
    listeners: Vec<Arc<dyn AcceptListener>>,
    registrations: Option<Arc<dyn SharedRegistrations>>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut listener = match connect(store.pool()).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!("cannot listen to the other nodes: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Whatever changed while this node was not listening (at first: since it read `last_seq` and loaded the
        // registrations, before it listened).
        catch_up(&store, &mut last_seq, &listeners).await;
        if let Some(registrations) = &registrations {
            registrations.resync();
        }
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return,
                notification = listener.try_recv() => notification,
            };
            match notification {
                Ok(Some(notification)) => {
                    handle(&store, &node, &notification, &mut last_seq, &listeners, registrations.as_deref()).await
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("lost the connection to the other nodes: {e}");
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([EVENTS_CHANNEL, REGISTRATIONS_CHANNEL]).await?;
    Ok(listener)
}

async fn handle(
    store: &PgStore,
    node: &str,
    notification: &PgNotification,
    last_seq: &mut i64,
    listeners: &[Arc<dyn AcceptListener>],
    registrations: Option<&dyn SharedRegistrations>,
) {
    if notification.channel() == REGISTRATIONS_CHANNEL {
        let mut parts = notification.payload().split(' ');
        if let (Some(from), Some(pubkey)) = (parts.next(), parts.next().and_then(parse_hash))
            && from != node
            && let Some(registrations) = registrations
        {
            registrations.changed(pubkey);
        }
        return;
    }
    let Ok(announced) = serde_json::from_str::<serde_json::Value>(notification.payload()) else { return };
    let seq = announced["seq"].as_i64();
    // An event committed between this connection's LISTEN and its catch-up is in both: the catch-up handed it over.
    // (Stored events commit one batch at a time, so announcements come in `seq` order.)
    let caught_up = seq.is_some_and(|seq| seq <= *last_seq);
    if let Some(seq) = seq {
        *last_seq = (*last_seq).max(seq);
    }
    if announced["node"].as_str() == Some(node) || caught_up {
        return;
    }
    let json = match (announced["event"].as_str(), seq) {
        (Some(json), _) => Some(json.to_owned()),
        // Too big to announce whole: read it.
        (None, Some(seq)) => match store.events_after(seq - 1, 1).await {
            Ok(rows) => rows.into_iter().find(|(found, _)| *found == seq).map(|(_, json)| json),
            Err(e) => {
                tracing::warn!("cannot read an announced event: {e}");
                None
            }
        },
        (None, None) => None,
    };
    if let Some(event) = json.as_deref().and_then(VerifiedEvent::from_stored) {
        tell_elsewhere(listeners, &[Arc::new(event)]);
    }
}

/// Hands over every event committed after `last_seq`.
async fn catch_up(store: &PgStore, last_seq: &mut i64, listeners: &[Arc<dyn AcceptListener>]) {
    loop {
        let rows = match store.events_after(*last_seq, CATCH_UP_BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot catch up with the other nodes: {e}");
                return;
            }
        };
        let Some((newest, _)) = rows.last() else { return };
        *last_seq = *newest;
        let events: Vec<SharedEvent> =
            rows.iter().filter_map(|(_, json)| VerifiedEvent::from_stored(json)).map(Arc::new).collect();
        tell_elsewhere(listeners, &events);
    }
}
