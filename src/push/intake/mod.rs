//! Intake of registrations: kind 22456 events addressed to the relay's push key, taken out of the relay's path
//! (`EventConsumer`), checked, decrypted and applied to the registry; and other nodes' changes to the same
//! registrations (`SharedRegistrations`), read again on tasks of the application's lifecycle. Marmot's triggers
//! (gift wraps to the push key) are handed to `push::marmot` here.

pub mod content;
pub mod nip97;
pub mod nip9a;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nostr::key::Keys;

use crate::config::PushConfig;
use crate::hooks::{EventConsumer, SharedRegistrations};
use crate::lifecycle::Lifecycle;
use crate::protocol::filter::Hash32;
use crate::protocol::{Refusal, SharedEvent};
use crate::push::audience::Audience;
use crate::push::audience::registry::{Applied, ApplyError};
use crate::push::marmot::Marmot;
use crate::upstream::normalise;

/// The kind of the encrypted registration events the app sends.
pub const REGISTRATION_KIND: u16 = 22456;

pub struct Intake {
    keys: Keys,
    /// The push pubkey as it appears in `p` tags.
    pubkey_hex: String,
    pub(super) audience: Arc<Audience>,
    pub(super) config: PushConfig,
    lifecycle: Lifecycle,
    /// `[server] public_url`, normalised: registrations naming this relay need no watcher for it.
    own_url: String,
    /// NIP-9a subscriptions accepted per client address (`[limits] ip_subscriptions_per_hour`).
    subscriptions_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Marmot push, when `[push.marmot] enabled`: gift wraps to the push key are its triggers.
    marmot: Option<Arc<Marmot>>,
}

impl Intake {
    pub fn new(
        keys: Keys,
        audience: Arc<Audience>,
        config: &crate::Config,
        lifecycle: Lifecycle,
        marmot: Option<Arc<Marmot>>,
    ) -> Self {
        let pubkey_hex = keys.public_key().to_hex();
        let (push, own_url) = (config.push.clone(), normalise(&config.server.public_url));
        let subscriptions_per_ip = NonZeroU32::new(config.limits.ip_subscriptions_per_hour)
            .map(|per_hour| RateLimiter::keyed(Quota::per_hour(per_hour)));
        Self { keys, pubkey_hex, audience, config: push, lifecycle, own_url, subscriptions_per_ip, marmot }
    }

    /// The relay's push key, as events carry it.
    pub(super) fn own_pubkey(&self) -> Hash32 {
        self.keys.public_key().to_bytes()
    }

    pub(super) fn is_own_url(&self, url: &str) -> bool {
        normalise(url) == self.own_url
    }

    fn is_addressed_to_us(&self, event: &SharedEvent) -> bool {
        event.kind() == REGISTRATION_KIND && event.indexed_tags().any(|(l, v)| l == 'p' && v == self.pubkey_hex)
    }

    /// Applies a registration; the message of an accepted one says what was ignored in it, if anything.
    async fn register(&self, event: &SharedEvent) -> Result<String, Refusal> {
        let now = self.audience.now();
        let window = self.config.registration_window_secs as i64;
        let created_at = crate::store::db_time(event.created_at());
        if (created_at - now).abs() > window {
            return Err(Refusal::invalid(format!("created_at must be within {window} seconds of now")));
        }
        let update = self.read(event).await?;
        let notes = update.notes.join("; ");
        match self.audience.registry.apply(*event.pubkey(), Some(created_at), update, now).await {
            Ok(Applied::Applied) => {
                self.audience.load_lists_once(event.pubkey()).await;
                self.audience.changed();
                Ok(notes)
            }
            Ok(Applied::Replay) => Ok(Refusal::duplicate("a newer registration was already applied").to_string()),
            Err(ApplyError::Refused(reason)) => Err(reason),
            Err(ApplyError::Database(e)) => {
                tracing::error!("saving a registration failed: {e}");
                Err(Refusal::error("could not save the registration"))
            }
        }
    }

    /// Decrypts and parses the content on a blocking thread (NIP-44 and the relay checks are CPU work).
    async fn read(&self, event: &SharedEvent) -> Result<crate::push::audience::update::RegistrationUpdate, Refusal> {
        let secret = self.keys.secret_key().clone();
        let limits = self.config.clone();
        let upstream = self.audience.upstream.clone();
        let shared = event.clone();
        tokio::task::spawn_blocking(move || {
            let check_relay = |relay: &str| crate::upstream::check_relay_url(relay, &upstream).map(|_| ());
            content::decrypt(&shared.event, &secret).and_then(|plain| content::parse(&plain, &limits, check_relay))
        })
        .await
        .unwrap_or_else(|_| Err(Refusal::error("could not read the registration")))
    }
}

#[async_trait]
impl EventConsumer for Intake {
    async fn consume(&self, event: &SharedEvent, from: IpAddr) -> Option<Result<String, Refusal>> {
        if event.kind() == crate::push::audience::subscription::SUBSCRIPTION_KIND {
            return self.consume_subscription(event, from).await;
        }
        // A Marmot trigger is taken, never stored, and answered alike whatever it holds: its sender learns nothing.
        if let Some(marmot) = self.marmot.as_ref().filter(|marmot| marmot.is_trigger(event)) {
            marmot.take(event.clone());
            return Some(Ok(String::new()));
        }
        if !self.is_addressed_to_us(event) {
            return None;
        }
        Some(self.register(event).await)
    }
}

/// Registrations made through other nodes on the same PostgreSQL database.
impl SharedRegistrations for Intake {
    fn changed(&self, pubkey: Hash32) {
        let audience = self.audience.clone();
        self.lifecycle.spawn(async move {
            if let Err(e) = audience.registry.reload(&pubkey).await {
                tracing::error!("cannot reload changed registrations: {e}");
            }
            audience.load_lists_once(&pubkey).await;
            audience.changed();
        });
    }

    fn resync(&self) {
        let audience = self.audience.clone();
        self.lifecycle.spawn(async move {
            if let Err(e) = audience.registry.load().await {
                tracing::error!("cannot reload registrations: {e}");
            }
            audience.changed();
        });
    }
}
