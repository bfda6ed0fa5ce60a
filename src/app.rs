//! Wiring: opens the store, starts the writer and the HTTP server, and shuts them down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::activity::EventActivity;
use crate::clock::Clock;
use crate::cluster::{self, EphemeralAnnouncer};
use crate::config::Config;
use crate::groups::Groups;
use crate::hooks::{DeviceRegistrar, EventConsumer, ReadGate, RemoteEvents, SharedRegistrations};
use crate::lifecycle::Lifecycle;
use crate::protocol::VerifiedEvent;
use crate::push::PushService;
use crate::push::marmot::TriggersFirst;
use crate::relay::admission::LargeWraps;
use crate::relay::subscriptions::SubscriptionIndex;
use crate::relay::{RelayState, RelayWiring};
use crate::report::Reporter;
use crate::store::jobs::JobSource;
use crate::store::writer::{AcceptListener, Batching, Writer};
use crate::store::{EventStore, Leases, PgStore, Store};
use crate::upstream::parts::WatchAs;
use crate::upstream::{RemoteStatus, StatusBoard, StoreFirst, Upstream};
use crate::{http, store};

/// A running relay.
pub struct RelayHandle {
    pub local_addr: SocketAddr,
    state: Arc<RelayState>,
    push: Option<Arc<PushService>>,
    upstream_status: Option<StatusBoard>,
    clock: Clock,
    done: JoinHandle<()>,
}

/// What every part of one run of the relay shares: the lifecycle its tasks run under, the clock, the node's name.
struct Run {
    lifecycle: Lifecycle,
    clock: Clock,
    node: String,
}

/// What start-up opened, handed to the orderly stop.
struct Opened {
    store: Arc<dyn Store>,
    postgres: Option<Arc<PgStore>>,
    writer_task: JoinHandle<()>,
}

impl RelayHandle {
    /// Starts a relay on `config.server.bind` (port 0 picks a free port: see `local_addr`).
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        Self::start_with_clock(config, Clock::system()).await
    }

    /// Starts a relay that reads the time from `clock` (tests move it instead of sleeping).
    pub async fn start_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        // Two TLS providers are compiled in (through different crates); name the one to use, or rustls refuses.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = Arc::new(config);
        let run = Run { lifecycle: Lifecycle::new(), clock: clock.clone(), node: config.database.node() };
        let (store, postgres) = open_store(&config, &run).await?;
        // Read before anything is loaded from the database: whatever other nodes commit from now on reaches this one.
        let since = match &postgres {
            Some(postgres) => Some(cluster::starting_seq(postgres).await?),
            None => None,
        };
        let groups = load_groups(&config, &store, &run).await?;
        let push = start_push(&config, &store, &groups, &run).await?;
        let activity = Arc::new(EventActivity::new(clock.clone()));
        let parts = Parts { push: &push, groups: &groups, activity: &activity };
        let (state, writer_task, peers_listeners) = relay_state(&config, &store, &postgres, parts, &run).await?;
        start_peers(&postgres, since, &push, peers_listeners, &run).await?;
        publish_marmot_inbox(&push, &state).await;
        let upstream = start_upstream(&config, &state, &store, &push, &run);
        let Run { lifecycle, .. } = run;
        let upstream_status = upstream.as_ref().map(|u| u.status.clone());
        let mut reporters: Vec<Arc<dyn Reporter>> = vec![activity];
        reporters.extend(push.clone().map(|p| p as Arc<dyn Reporter>));
        reporters.extend(upstream.map(|u| u as Arc<dyn Reporter>));
        state.set_reporters(reporters);
        crate::metrics::handle();
        let app = http::router(state.clone()).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.bind))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, public_url = %config.server.public_url, "relay listening");
        start_metrics_server(&config, &state, &lifecycle).await?;
        lifecycle.spawn(housekeeping(state.clone()));
        let opened = Opened { store, postgres, writer_task };
        let done = tokio::spawn(serve_then_stop(listener, app, state.clone(), lifecycle, opened));
        Ok(Self { local_addr, state, push, upstream_status, clock, done })
    }

    /// Applies a reloaded configuration file (SIGHUP): see `RelayState::reload` for which keys take effect.
    pub fn reload(&self, config: Config) {
        self.state.reload(config);
    }

    /// The push service, when `[push] enabled`.
    pub fn push(&self) -> Option<&Arc<PushService>> {
        self.push.as_ref()
    }

    /// The clock the relay reads the time from.
    pub fn clock(&self) -> &Clock {
        &self.clock
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

/// Opens the database; on PostgreSQL, joins the other nodes. Leases held by workers that no longer run are freed.
async fn open_store(config: &Config, run: &Run) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<PgStore>>)> {
    let (store, postgres) = store::open(&config.database, &run.node, run.clock.clone()).await?;
    if let Some(postgres) = &postgres {
        // Refuses an id a live node has, and releases the leases of nodes that are gone (under a random id, a
        // node never restarts under its old one to release its own).
        postgres.join().await?;
    }
    // No worker survives a restart, so every job one held is due again now. (Only the relay does this: an admin
    // command opening the same database must not take leases from a running relay's workers.)
    store.release_leases(run.clock.millis()).await?;
    Ok((store, postgres))
}

/// NIP-29 groups, when `[groups] enabled`, signed with the relay's own key (the push key's file, so that NIP-11's
/// `self` is one pubkey whether push is on or not).
async fn load_groups(config: &Config, store: &Arc<dyn Store>, run: &Run) -> anyhow::Result<Option<Arc<Groups>>> {
    if !config.groups.enabled {
        return Ok(None);
    }
    let keys = crate::push::keys::load_or_create(&config.push.secret_key_file).map_err(anyhow::Error::msg)?;
    let events: Arc<dyn EventStore> = store.clone();
    let groups = Groups::load(&config.groups, keys, &events, run.clock.clone()).await?;
    Ok(Some(groups))
}

/// Push and its tasks (the intake of unwritten events' jobs, the delivery loop), when `[push] enabled`.
async fn start_push(
    config: &Config,
    store: &Arc<dyn Store>,
    groups: &Option<Arc<Groups>>,
    run: &Run,
) -> anyhow::Result<Option<Arc<PushService>>> {
    if !config.push.enabled {
        return Ok(None);
    }
    let gate = groups.clone().map(|g| g as Arc<dyn ReadGate>);
    let push = PushService::start(config, store.clone(), &run.lifecycle, run.clock.clone(), gate)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!(pubkey = %push.public_key().to_hex(), npub = %push.npub(), "push pubkey");
    Ok(Some(push))
}

/// Marmot senders look for the push key's inbox list (kind 10050) to know where to send triggers: stored at each
/// start, so that it names the relays configured now.
async fn publish_marmot_inbox(push: &Option<Arc<PushService>>, state: &RelayState) {
    let Some(marmot) = push.as_ref().and_then(|push| push.marmot.as_ref()) else { return };
    if let Err(e) = state.writer.write_awaited(marmot.inbox_list()).await {
        tracing::error!("cannot store the push key's inbox list (kind 10050): {e}");
    }
}

/// The parts the relay hands events to, besides the store.
struct Parts<'a> {
    push: &'a Option<Arc<PushService>>,
    groups: &'a Option<Arc<Groups>>,
    activity: &'a Arc<EventActivity>,
}

/// The relay's shared state and its writer, with everyone who hears of accepted events; also returns the
/// listeners that hear of other nodes' events. Starts the delivery loop.
async fn relay_state(
    config: &Arc<Config>,
    store: &Arc<dyn Store>,
    postgres: &Option<Arc<PgStore>>,
    parts: Parts<'_>,
    run: &Run,
) -> anyhow::Result<(Arc<RelayState>, JoinHandle<()>, Vec<Arc<dyn AcceptListener>>)> {
    let Parts { push, groups, activity } = parts;
    let subscriptions = Arc::new(SubscriptionIndex::default());
    // Groups first: a group's new members and metadata are in force before anyone is sent its events.
    let mut listeners: Vec<Arc<dyn AcceptListener>> = Vec::new();
    listeners.extend(groups.clone().map(|g| g as Arc<dyn AcceptListener>));
    listeners.extend([subscriptions.clone() as Arc<dyn AcceptListener>, activity.clone()]);
    listeners.extend(push.as_ref().map(|p| p.matching.clone() as Arc<dyn AcceptListener>));
    // What the other nodes on the same PostgreSQL database hear of this one's events, and tell it of theirs.
    let peers_listeners = listeners.clone();
    if let Some(postgres) = postgres {
        let announcer = EphemeralAnnouncer::start(postgres.pool().clone(), run.node.clone(), &run.lifecycle);
        listeners.push(Arc::new(announcer));
    }
    let job_source = push.as_ref().map(|p| p.matching.clone() as Arc<dyn JobSource>);
    let events: Arc<dyn EventStore> = store.clone();
    let batching = Batching {
        max_batch: config.database.max_batch,
        commit_delay: Duration::from_millis(config.database.commit_delay_ms),
    };
    let (writer, writer_task) = Writer::spawn(events.clone(), batching, listeners.clone(), job_source);
    let wiring = RelayWiring {
        store: events,
        writer,
        subscriptions,
        listeners,
        consumer: push.as_ref().map(|p| p.intake.clone() as Arc<dyn EventConsumer>),
        registrar: push.clone().map(|p| p as Arc<dyn DeviceRegistrar>),
        groups: groups.clone(),
        large_wraps: push.as_ref().and_then(|push| {
            let marmot = push.marmot.as_ref()?;
            Some(LargeWraps { to: push.public_key().to_hex(), max_content_length: marmot.max_content_length() })
        }),
        moderation_store: store.clone(),
        shutdown: run.lifecycle.shutdown(),
        clock: run.clock.clone(),
    };
    let state = Arc::new(RelayState::new(config.clone(), wiring));
    let mut nip11_extra = serde_json::Map::new();
    if let Some(groups) = groups {
        nip11_extra.insert("self".into(), hex::encode(groups.public_key()).into());
    }
    if let Some(push) = push {
        nip11_extra.insert("self".into(), push.public_key().to_hex().into());
        nip11_extra.insert("push".into(), push.nip11());
    }
    state.set_nip11_extra(nip11_extra);
    state.refresh_moderation().await?;
    Ok((state, writer_task, peers_listeners))
}

/// On PostgreSQL: this node's heartbeat, and listening to the other nodes.
async fn start_peers(
    postgres: &Option<Arc<PgStore>>,
    since: Option<i64>,
    push: &Option<Arc<PushService>>,
    listeners: Vec<Arc<dyn AcceptListener>>,
    run: &Run,
) -> anyhow::Result<()> {
    let (Some(postgres), Some(since)) = (postgres, since) else { return Ok(()) };
    let (lifecycle, node) = (&run.lifecycle, &run.node);
    lifecycle.spawn(postgres.clone().keep_alive(lifecycle.shutdown()));
    let registrations = push.as_ref().map(|p| p.intake.clone() as Arc<dyn SharedRegistrations>);
    let shutdown = lifecycle.shutdown();
    lifecycle.spawn(cluster::listen(postgres.clone(), node.clone(), since, listeners, registrations, shutdown));
    Ok(())
}

/// Watching the relays registrations name, when push and `[upstream] enabled` are on.
fn start_upstream(
    config: &Config,
    state: &Arc<RelayState>,
    store: &Arc<dyn Store>,
    push: &Option<Arc<PushService>>,
    run: &Run,
) -> Option<Arc<Upstream>> {
    let lifecycle = &run.lifecycle;
    let push = push.clone().filter(|_| config.upstream.enabled)?;
    let leases: Arc<dyn Leases> = store.clone();
    // Watchers authenticate to remotes as the relay's push key, and ask for what this relay gates apart.
    let watch_as =
        WatchAs { keys: Some(push.keys().clone()), private_kinds: config.auth.read_restricted_kinds.clone() };
    let url = &config.server.public_url;
    let upstream = Upstream::new(config.upstream.clone(), watch_as, url, leases, run.node.clone(), run.clock.clone());
    let sink: Arc<dyn RemoteEvents> = if config.upstream.store_events {
        Arc::new(StoreFirst {
            writer: state.writer.clone(),
            then: push.matching.clone(),
            writes: Arc::new(tokio::sync::Semaphore::new(config.upstream.max_pending_writes)),
            lifecycle: lifecycle.clone(),
            storable: {
                let state = state.clone();
                Some(Arc::new(move |event: &VerifiedEvent| state.admits_from_elsewhere(event))
                    as crate::upstream::Storable)
            },
        })
    } else {
        push.matching.clone()
    };
    let sink: Arc<dyn RemoteEvents> = match &push.marmot {
        Some(marmot) => Arc::new(TriggersFirst { marmot: marmot.clone(), then: sink }),
        None => sink,
    };
    lifecycle.spawn(upstream.clone().run(push.audience.clone(), sink, lifecycle.clone()));
    Some(upstream)
}

/// `/metrics` on an address of its own, when `[server] metrics_bind` is set.
async fn start_metrics_server(config: &Config, state: &Arc<RelayState>, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    let Some(address) = config.server.metrics_bind else { return Ok(()) };
    let listener =
        TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address} for metrics: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    let app = http::metrics_router(state.clone());
    lifecycle.spawn(http::serve::serve(listener, app, handshake_timeout(config), lifecycle.shutdown()));
    Ok(())
}

fn handshake_timeout(config: &Config) -> Duration {
    Duration::from_secs(config.server.handshake_timeout_secs.max(1))
}

/// Serves until shutdown, then stops in order: connections answer their in-flight events; the background tasks
/// end; the writer drains its queue (it ends once the last handle to it, held by the relay state, is gone); this
/// node leaves the cluster; the store closes.
async fn serve_then_stop(
    listener: TcpListener,
    app: axum::Router,
    state: Arc<RelayState>,
    lifecycle: Lifecycle,
    opened: Opened,
) {
    let config = state.config();
    http::serve::serve(listener, app, handshake_timeout(&config), lifecycle.shutdown()).await;
    let connections = state.connections.clone();
    drop(state);
    connections.close();
    connections.wait().await;
    lifecycle.wait().await;
    let Opened { store, postgres, writer_task } = opened;
    if writer_task.await.is_err() {
        tracing::error!("the writer task panicked");
    }
    if let Some(postgres) = postgres
        && let Err(e) = postgres.leave().await
    {
        tracing::warn!("cannot tell the other nodes this one stopped: {e}");
    }
    store.close().await;
    tracing::info!("relay stopped");
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
        match state.store.purge_expired(state.clock.secs()).await {
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
