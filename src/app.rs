//! Wiring: opens the store, starts the writer and the HTTP server, and shuts them down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::activity::EventActivity;
use crate::cluster::{self, EphemeralAnnouncer, SharedRegistrations};
use crate::config::Config;
use crate::push::{PushService, dispatch};
use crate::relay::subscriptions::SubscriptionIndex;
use crate::relay::{EventConsumer, RelayState};
use crate::report::Reporter;
use crate::store::EventStore;
use crate::store::Leases;
use crate::store::jobs::JobSource;
use crate::store::writer::{AcceptListener, Writer};
use crate::upstream::parts::WatchAs;
use crate::upstream::{RemoteEvents, RemoteStatus, StatusBoard, StoreFirst, Upstream};
use crate::{http, store};

/// A running relay.
pub struct RelayHandle {
    pub local_addr: SocketAddr,
    state: Arc<RelayState>,
    push: Option<Arc<PushService>>,
    upstream_status: Option<StatusBoard>,
    done: JoinHandle<()>,
}

impl RelayHandle {
    /// Starts a relay on `config.server.bind` (port 0 picks a free port: see `local_addr`).
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        // Two TLS providers are compiled in (through different crates); name the one to use, or rustls refuses.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = Arc::new(config);
        let node = config.database.node();
        let (store, postgres) = store::open(&config.database, &node).await?;
        if let Some(postgres) = &postgres {
            // Refuses an id a live node has, and releases the leases of nodes that are gone (under a random id, a
            // node never restarts under its old one to release its own).
            postgres.join().await?;
        }
        // No worker survives a restart, so every job one held is due again now. (Only the relay does this: an
        // admin command opening the same database must not take leases from a running relay's workers.)
        store.release_leases(store::unix_now_ms()).await?;
        let subscriptions = Arc::new(SubscriptionIndex::default());
        let push = if config.push.enabled {
            let push = PushService::start(&config, store.clone()).await.map_err(anyhow::Error::msg)?;
            let pubkey = push.public_key();
            tracing::info!(pubkey = %pubkey.to_hex(), npub = %push.npub(), "push pubkey");
            Some(push)
        } else {
            None
        };
        let consumer = push.clone().map(|p| p as Arc<dyn EventConsumer>);
        let mut nip11_extra = serde_json::Map::new();
        if let Some(push) = &push {
            nip11_extra.insert("self".into(), push.public_key().to_hex().into());
            nip11_extra.insert("push".into(), push.nip11());
        }
        let activity = Arc::new(EventActivity::default());
        let mut listeners: Vec<Arc<dyn AcceptListener>> = vec![subscriptions.clone(), activity.clone()];
        listeners.extend(push.clone().map(|p| p as Arc<dyn AcceptListener>));
        // What the other nodes on the same PostgreSQL database hear of this one's events, and tell it of theirs.
        let peers_listeners = listeners.clone();
        if let Some(postgres) = &postgres {
            listeners.push(Arc::new(EphemeralAnnouncer { pool: postgres.pool().clone(), node: node.clone() }));
        }
        let job_source = push.clone().map(|p| p as Arc<dyn JobSource>);
        let events: Arc<dyn EventStore> = store.clone();
        let (writer, writer_task) =
            Writer::spawn(events.clone(), config.database.max_batch, listeners.clone(), job_source);
        let state = Arc::new(RelayState::new(
            config.clone(),
            events,
            writer,
            subscriptions,
            listeners,
            consumer,
            store.clone(),
        ));
        state.set_nip11_extra(nip11_extra);
        state.refresh_moderation().await?;
        let delivery = push.clone().map(|p| tokio::spawn(dispatch::run(p, state.shutdown.clone())));
        let liveness = postgres.clone().map(|p| tokio::spawn(p.keep_alive(state.shutdown.clone())));
        let leaving = postgres.clone();
        let peers = match postgres {
            Some(postgres) => {
                // Read before this node serves anyone: whatever the others commit from now on reaches it.
                let since = cluster::starting_seq(&postgres).await?;
                let registrations = push.clone().map(|p| Arc::new(p) as Arc<dyn SharedRegistrations>);
                let shutdown = state.shutdown.clone();
                Some(tokio::spawn(cluster::listen(
                    postgres,
                    node.clone(),
                    since,
                    peers_listeners,
                    registrations,
                    shutdown,
                )))
            }
            None => None,
        };
        let upstream = push.clone().filter(|_| config.upstream.enabled).map(|push| {
            let leases: Arc<dyn Leases> = store.clone();
            // Watchers authenticate to remotes as the relay's push key, and ask for what this relay gates apart.
            let watch_as =
                WatchAs { keys: Some(push.keys().clone()), private_kinds: config.auth.read_restricted_kinds.clone() };
            let url = &config.server.public_url;
            let upstream = Upstream::new(config.upstream.clone(), watch_as, url, leases, node.clone());
            let sink: Arc<dyn RemoteEvents> = if config.upstream.store_events {
                Arc::new(StoreFirst {
                    writer: state.writer.clone(),
                    then: push.clone(),
                    writes: Arc::new(tokio::sync::Semaphore::new(config.upstream.max_pending_writes)),
                })
            } else {
                push.clone()
            };
            let task = tokio::spawn(upstream.clone().run(push, sink, state.shutdown.clone()));
            (upstream, task)
        });
        let upstream_status = upstream.as_ref().map(|(u, _)| u.status.clone());
        let mut reporters: Vec<Arc<dyn Reporter>> = vec![activity];
        reporters.extend(push.clone().map(|p| p as Arc<dyn Reporter>));
        reporters.extend(upstream.as_ref().map(|(u, _)| u.clone() as Arc<dyn Reporter>));
        state.set_reporters(reporters);
        crate::metrics::handle();
        let app = http::router(state.clone()).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.bind))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, public_url = %config.server.public_url, "relay listening");

        let handshake_timeout = Duration::from_secs(config.server.handshake_timeout_secs.max(1));
        let metrics_server = match config.server.metrics_bind {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {address} for metrics: {e}"))?;
                tracing::info!(address = %listener.local_addr()?, "metrics listening");
                let app = http::metrics_router(state.clone());
                Some(tokio::spawn(http::serve::serve(listener, app, handshake_timeout, state.shutdown.clone())))
            }
            None => None,
        };
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let shutdown = state.shutdown.clone();
        let connections = state.connections.clone();
        let done = tokio::spawn(async move {
            http::serve::serve(listener, app, handshake_timeout, shutdown).await;
            // Connections answer their in-flight events before they end; only then may the writer stop.
            connections.close();
            connections.wait().await;
            let _ = housekeeping.await;
            if let Some(metrics_server) = metrics_server {
                let _ = metrics_server.await;
            }
            if let Some(delivery) = delivery {
                let _ = delivery.await;
            }
            if let Some((_, watching)) = upstream {
                let _ = watching.await;
            }
            if let Some(peers) = peers {
                let _ = peers.await;
            }
            // The writer ends once the last handle to it (held by the relay state) is gone and its queue is empty.
            if writer_task.await.is_err() {
                tracing::error!("the writer task panicked");
            }
            if let Some(liveness) = liveness {
                let _ = liveness.await;
            }
            if let Some(postgres) = leaving
                && let Err(e) = postgres.leave().await
            {
                tracing::warn!("cannot tell the other nodes this one stopped: {e}");
            }
            store.close().await;
            tracing::info!("relay stopped");
        });
        Ok(Self { local_addr, state, push, upstream_status, done })
    }

    /// Applies a reloaded configuration file (SIGHUP): see `RelayState::reload` for which keys take effect.
    pub fn reload(&self, config: Config) {
        self.state.reload(config);
    }

    /// The push service, when `[push] enabled`.
    pub fn push(&self) -> Option<&Arc<PushService>> {
        self.push.as_ref()
    }

    /// The watched remote relays and their state, when `[upstream] enabled`.
    pub fn upstream_status(&self) -> BTreeMap<String, RemoteStatus> {
        self.upstream_status.as_ref().map(|s| s.lock().expect("status lock").clone()).unwrap_or_default()
    }

    /// Stops accepting, closes connections once their pending events are answered, commits, and waits.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let Self { state, push, done, .. } = self;
        drop((state, push));
        let _ = done.await;
    }
}

/// Periodic chores until shutdown: purging expired events (NIP-40), forgetting idle rate-limit keys, and reading
/// the moderation lists again (other nodes may have changed them).
async fn housekeeping(state: Arc<RelayState>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(state.config().database.purge_interval_secs));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match state.store.purge_expired(store::unix_now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired events purged"),
            Err(e) => tracing::error!("purging expired events failed: {e}"),
        }
        state.rate_limits().forget_idle();
        if let Err(e) = state.refresh_moderation().await {
            tracing::error!("cannot read the moderation lists: {e}");
        }
    }
}
