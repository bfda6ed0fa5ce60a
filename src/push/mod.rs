//! Push: the relay as a push server (see README, "Push"), its folders its parts, around what they share:
//! - `audience/`: the registrations, presence, the lists registered pubkeys published, NIP-9a subscriptions in
//!   force and the watch plan;
//! - `intake/`: kind 22456 registrations addressed to the relay's push key, NIP-97 and NIP-9a, and other nodes'
//!   changes;
//! - `matching/`: the jobs an event causes, written in the event's commit (or, for events not written, queued by
//!   one bounded task);
//! - `delivery/`: the loop that takes due jobs and sends them through APNs, FCM, UnifiedPush, Web Push and NIP-9a
//!   callbacks, recording outcomes through the bookkeeper;
//! - `marmot/`: Marmot apps' gift-wrapped triggers, opened and sent as wakes straight from memory (no job, no
//!   registration: the tokens arrive encrypted in each trigger).
//!
//! At the root, the leaves they all use (`keys`, `device`, `text`, `zap`) and the devices people manage over HTTP
//! (`registrar`). `PushService` starts the parts and hands each to `app`, which wires them to the relay, the write
//! path, the watchers and the cluster through the traits of `hooks.rs` and the store's own.

pub mod audience;
pub mod delivery;
pub mod device;
pub mod intake;
pub mod keys;
pub mod marmot;
pub mod matching;
pub mod registrar;
pub mod text;
pub mod zap;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip19::ToBech32;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::Config;
use crate::hooks::ReadGate;
use crate::lifecycle::Lifecycle;
use crate::store::Store;
use audience::Audience;
use audience::callback_index::CallbackIndex;
use audience::registry::Registry;
use delivery::Delivery;
use delivery::senders::Senders;
use delivery::stats::PushStats;
use intake::Intake;
use marmot::Marmot;
use matching::Matching;

pub use intake::REGISTRATION_KIND;

/// The three parts, started together; `app` hands each to what calls it.
pub struct PushService {
    keys: Keys,
    /// The Web Push public key browsers subscribe with, when Web Push is on.
    vapid_public_key: Option<String>,
    web_client_url: String,
    /// `[push] test_interval_secs`: one test notification per device in each such span.
    test_interval_secs: u64,
    pub audience: Arc<Audience>,
    pub intake: Arc<Intake>,
    pub matching: Arc<Matching>,
    delivery: Arc<Delivery>,
    /// Marmot push, when `[push.marmot] enabled`.
    pub marmot: Option<Arc<Marmot>>,
}

impl PushService {
    /// Loads (or creates) the push key, the registrations stored in the relay's database, and the senders; starts
    /// the intake task and the delivery loop on the lifecycle.
    pub async fn start(
        config: &Config,
        store: Arc<dyn Store>,
        lifecycle: &Lifecycle,
        clock: Clock,
        gate: Option<Arc<dyn ReadGate>>,
    ) -> Result<Arc<Self>, String> {
        let push = &config.push;
        let keys = keys::load_or_create(&push.secret_key_file)?;
        let registry = Registry::open(store.clone(), push.clone())
            .await
            .map_err(|e| format!("cannot open push registrations: {e}"))?;
        let (webpush, vapid_public_key) = match web_push_sender(config)? {
            Some((sender, public_key)) => (Some(sender), Some(public_key)),
            None => (None, None),
        };
        let bounds = audience::subscription::FilterBounds {
            max_length: push.max_subscription_filter_length,
            max_search_terms: config.limits.max_search_terms,
            max_search_length: config.limits.max_search_length,
        };
        let callbacks = CallbackIndex::new(&config.server.public_url, push.clone(), bounds);
        let upstream = config.upstream.clone();
        let audience =
            Arc::new(Audience::new(registry, callbacks, upstream, push.max_relays, store.clone(), clock.clone()));
        audience.load_lists(&audience.registry.pubkeys()).await;
        audience.load_callbacks().await;
        let wake = Arc::new(Notify::new());
        let matching = Matching::start(config, audience.clone(), store.clone(), wake.clone(), gate, lifecycle);
        let delivery = Arc::new(Delivery {
            config: push.clone(),
            queue: store.clone(),
            audience: audience.clone(),
            senders: Senders::from_config(push, webpush)?,
            device_limiter: delivery::device_limiter(push.device_burst, Duration::from_secs(push.device_refill_secs)),
            stats: PushStats::new(clock.clone()),
            relay_name: config.relay.name.clone(),
            wake,
        });
        lifecycle.spawn(delivery.clone().run(lifecycle.shutdown()));
        lifecycle.spawn(intake::nip97::expire_devices(
            audience.clone(),
            push.nip97_device_ttl_days,
            lifecycle.shutdown(),
        ));
        let marmot = push.marmot.enabled.then(|| {
            let sightings: Arc<dyn crate::store::Sightings> = store.clone();
            Marmot::start(config, keys.clone(), delivery.clone(), sightings, lifecycle, clock.clone())
        });
        if let Some(marmot) = &marmot {
            audience.watch_always(marmot.watches());
        }
        let intake = Arc::new(Intake::new(keys.clone(), audience.clone(), config, lifecycle.clone(), marmot.clone()));
        let web_client_url = push.webpush.web_client_url.clone();
        let matching = Arc::new(matching);
        let test_interval_secs = push.test_interval_secs;
        Ok(Arc::new(Self {
            keys,
            vapid_public_key,
            web_client_url,
            test_interval_secs,
            audience,
            intake,
            matching,
            delivery,
            marmot,
        }))
    }

    pub fn stats(&self) -> &PushStats {
        &self.delivery.stats
    }

    /// Jobs not yet delivered, retried or dropped.
    pub async fn pending_jobs(&self) -> u64 {
        self.delivery.queue.pending().await.unwrap_or(0)
    }

    /// The relay's push keypair, which also signs its NIP-42 AUTH on watched relays.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// What the NIP-11 document says of push: the VAPID public key web clients subscribe with.
    /// and where a click on a notification the relay's `/notifications` page shows goes.
    pub fn nip11(&self) -> serde_json::Value {
        serde_json::json!({"vapid_public_key": self.vapid_public_key, "web_client_url": self.web_client_url})
    }

    pub fn npub(&self) -> String {
        self.keys.public_key().to_bech32().expect("a public key always encodes")
    }

    pub fn registry(&self) -> &Registry {
        &self.audience.registry
    }
}

/// The Web Push sender and its public key, unless no VAPID subject can be named (then browsers get no pushes).
fn web_push_sender(config: &Config) -> Result<Option<(delivery::senders::WebPushSender, String)>, String> {
    let webpush = &config.push.webpush;
    let subject = match webpush.subject.as_str() {
        "" => match config.server.public_url.strip_prefix("wss://") {
            Some(host) => format!("https://{}", host.split('/').next().unwrap_or(host)),
            None => {
                tracing::warn!("Web Push is off: set [push.webpush] subject (a mailto: or https: URL)");
                return Ok(None);
            }
        },
        subject => subject.to_owned(),
    };
    let vapid = keys::load_or_create_vapid(&webpush.vapid_key_file)?;
    let sender = delivery::senders::WebPushSender::new(
        vapid.signer,
        subject,
        Duration::from_secs(webpush.timeout_secs),
        config.push.unifiedpush.allow_private_addresses,
    )?;
    Ok(Some((sender, vapid.public_key)))
}

#[async_trait]
impl crate::report::Reporter for PushService {
    async fn report(&self) -> crate::report::Section {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.audience.clock.secs();
        let (registrations, online, offline) = self.registry().census(self.audience.now());
        let mut rows = vec![
            ("Push pubkey".to_owned(), self.npub()),
            ("Registered devices".to_owned(), registrations.to_string()),
            ("Pubkeys online / offline".to_owned(), format!("{online} / {offline}")),
            ("NIP-9a subscriptions".to_owned(), self.audience.callbacks.len().to_string()),
            ("Pushes waiting".to_owned(), self.pending_jobs().await.to_string()),
            (
                "Sent / merged / retried / dropped".to_owned(),
                format!(
                    "{} / {} / {} / {}",
                    self.stats().sent.load(Relaxed),
                    self.stats().merged.load(Relaxed),
                    self.stats().retried.load(Relaxed),
                    self.stats().dropped.load(Relaxed)
                ),
            ),
            ("Dead tokens removed".to_owned(), self.stats().dead_tokens.load(Relaxed).to_string()),
        ];
        if let Some(marmot) = &self.marmot {
            rows.push(("Marmot triggers".to_owned(), marmot.stats.triggers()));
            rows.push(("Marmot wakes".to_owned(), marmot.stats.wakes()));
        }
        for (service, health) in self.stats().health() {
            let success = health.last_success.map_or("never".to_owned(), |t| crate::report::ago(t, now));
            let error =
                health.last_error.map_or("none".to_owned(), |(t, e)| format!("{} ({e})", crate::report::ago(t, now)));
            rows.push((format!("Sender {service}"), format!("last success {success}; last error {error}")));
        }
        crate::report::Section {
            title: "Push".into(),
            rows,
            chart: Some(crate::report::Chart {
                label: "pushes sent per minute".into(),
                per_minute: self.stats().timeline.series(),
            }),
        }
    }

    fn set_gauges(&self) {
        let (registrations, online, offline) = self.registry().census(self.audience.now());
        metrics::gauge!(crate::metrics::REGISTRATIONS).set(registrations as f64);
        metrics::gauge!(crate::metrics::PUBKEYS, "presence" => "online").set(online as f64);
        metrics::gauge!(crate::metrics::PUBKEYS, "presence" => "offline").set(offline as f64);
    }
}
