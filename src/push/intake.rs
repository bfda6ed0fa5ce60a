//! Intake of registrations: kind 22456 events addressed to the relay's push key, taken out of the relay's path
//! (`EventConsumer`), checked, decrypted and applied to the registry; and other nodes' changes to the same
//! registrations (`SharedRegistrations`), read again on tasks of the application's lifecycle.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nostr::key::Keys;

use super::audience::Audience;
use super::registration;
use super::registry::{Applied, ApplyError};
use crate::config::PushConfig;
use crate::hooks::{EventConsumer, SharedRegistrations};
use crate::lifecycle::Lifecycle;
use crate::protocol::SharedEvent;
use crate::protocol::filter::Hash32;
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
}

/// Past this many addresses, the per-address limiter forgets those back at full allowance.
const FORGET_ADDRESSES_PAST: usize = 10_000;

impl Intake {
    pub fn new(keys: Keys, audience: Arc<Audience>, config: &crate::Config, lifecycle: Lifecycle) -> Self {
        let pubkey_hex = keys.public_key().to_hex();
        let (push, own_url) = (config.push.clone(), normalise(&config.server.public_url));
        let subscriptions_per_ip = NonZeroU32::new(config.limits.ip_subscriptions_per_hour)
            .map(|per_hour| RateLimiter::keyed(Quota::per_hour(per_hour)));
        Self { keys, pubkey_hex, audience, config: push, lifecycle, own_url, subscriptions_per_ip }
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

    async fn register(&self, event: &SharedEvent) -> (bool, String) {
        let now = self.audience.now();
        let window = self.config.registration_window_secs as i64;
        let created_at = crate::store::db_time(event.created_at());
        if (created_at - now).abs() > window {
            return (false, format!("invalid: created_at must be within {window} seconds of now"));
        }
        let update = match self.read(event).await {
            Ok(update) => update,
            Err(reason) => return (false, reason),
        };
        let notes = update.notes.join("; ");
        match self.audience.registry.apply(*event.pubkey(), Some(created_at), update, now).await {
            Ok(Applied::Applied) => {
                self.audience.load_lists_once(event.pubkey()).await;
                self.audience.changed();
                (true, notes)
            }
            Ok(Applied::Replay) => (true, "duplicate: a newer registration was already applied".into()),
            Err(ApplyError::Refused(reason)) => (false, reason),
            Err(ApplyError::Database(e)) => {
                tracing::error!("saving a registration failed: {e}");
                (false, "error: could not save the registration".into())
            }
        }
    }

    /// Why a NIP-9a subscription is refused, if it is: malformed, one too many for its pubkey (a new version of one
    /// it holds does not count), for the relay, or of the broad kind for the relay, or one too many from the
    /// client's address this hour. A valid one is left to the relay to store; the matcher takes it up after.
    fn check_subscription(&self, event: &SharedEvent, from: IpAddr) -> Option<String> {
        let callbacks = &self.audience.callbacks;
        let subscription = match callbacks.parse(event) {
            Ok(subscription) => subscription,
            Err(why) => return Some(why),
        };
        let max = self.config.max_subscriptions_per_pubkey;
        if callbacks.count_of(&subscription.pubkey, &subscription.d, self.audience.clock.secs()) >= max {
            return Some(format!("blocked: this pubkey has too many push subscriptions (max {max})"));
        }
        let is_new = !callbacks.has(&subscription.pubkey, &subscription.d);
        if is_new && callbacks.len() >= self.config.max_subscriptions {
            return Some("rate-limited: this relay holds as many push subscriptions as it may".into());
        }
        // A broad filter is a candidate for every event of its kinds (or with its word): their number is what a
        // stranger could make every commit pay for.
        let was_broad = callbacks.is_broad(&subscription.pubkey, &subscription.d);
        if subscription.is_broad() && !was_broad && callbacks.broad_count() >= self.config.max_broad_subscriptions {
            return Some(
                "rate-limited: this relay holds as many push subscriptions with a filter naming no ids, authors or \
                 tags as it may"
                    .into(),
            );
        }
        if let Some(limiter) = &self.subscriptions_per_ip {
            if limiter.len() > FORGET_ADDRESSES_PAST {
                limiter.retain_recent();
            }
            if limiter.check_key(&from).is_err() {
                return Some("rate-limited: too many push subscriptions from your address, slow down".into());
            }
        }
        None
    }

    /// Decrypts and parses the content on a blocking thread (NIP-44 and the relay checks are CPU work).
    async fn read(&self, event: &SharedEvent) -> Result<registration::RegistrationUpdate, String> {
        let secret = self.keys.secret_key().clone();
        let limits = self.config.clone();
        let upstream = self.audience.upstream.clone();
        let shared = event.clone();
        tokio::task::spawn_blocking(move || {
            let check_relay = |relay: &str| crate::upstream::check_relay_url(relay, &upstream).map(|_| ());
            registration::decrypt(&shared.event, &secret)
                .and_then(|plain| registration::parse(&plain, &limits, check_relay))
        })
        .await
        .unwrap_or_else(|_| Err("error: could not read the registration".into()))
    }
}

#[async_trait]
impl EventConsumer for Intake {
    async fn consume(&self, event: &SharedEvent, from: IpAddr) -> Option<(bool, String)> {
        if event.kind() == super::nip9a::SUBSCRIPTION_KIND {
            let refused = self.check_subscription(event, from);
            if refused.is_none() {
                // The subscriber's mute list applies to its subscription: known before it is live.
                self.audience.load_lists_once(event.pubkey()).await;
            }
            return refused.map(|why| (false, why));
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
