//! Push: the relay as a push server (see README, "Push notifications"). This part consumes kind 22456
//! registrations addressed to the relay's push key and keeps devices and presence. It hooks into the relay only
//! through `relay::EventConsumer`.

pub mod device;
pub mod index;
pub mod keys;
pub mod registration;
pub mod registry;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nostr::key::{Keys, PublicKey};
use nostr::nips::nip19::ToBech32;

use crate::config::PushConfig;
use crate::protocol::SharedEvent;
use crate::relay::EventConsumer;
use registry::{Applied, ApplyError, Registry};

/// The kind of the encrypted registration events the app sends.
pub const REGISTRATION_KIND: u16 = 22456;

pub struct PushService {
    keys: Keys,
    /// The push pubkey as it appears in `p` tags.
    pubkey_hex: String,
    registry: Registry,
    config: PushConfig,
}

impl PushService {
    /// Loads (or creates) the push key and the registrations stored in the relay's SQLite file.
    pub async fn start(config: &PushConfig, database: &Path) -> Result<Arc<Self>, String> {
        let keys = keys::load_or_create(&config.secret_key_file)?;
        let registry = Registry::open(database, config.clone())
            .await
            .map_err(|e| format!("cannot open push registrations: {e}"))?;
        let pubkey_hex = keys.public_key().to_hex();
        Ok(Arc::new(Self { keys, pubkey_hex, registry, config: config.clone() }))
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    pub fn npub(&self) -> String {
        self.keys.public_key().to_bech32().expect("a public key always encodes")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub async fn close(&self) {
        self.registry.close().await;
    }

    fn is_addressed_to_us(&self, event: &SharedEvent) -> bool {
        event.kind() == REGISTRATION_KIND && event.indexed_tags().any(|(l, v)| l == 'p' && v == self.pubkey_hex)
    }

    async fn register(&self, event: &SharedEvent) -> (bool, String) {
        let now = unix_now();
        let window = self.config.registration_window_secs as i64;
        let created_at = crate::store::db_time(event.created_at());
        if (created_at - now).abs() > window {
            return (false, format!("invalid: created_at must be within {window} seconds of now"));
        }
        let secret = self.keys.secret_key().clone();
        let limits = self.config.clone();
        let shared = event.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            registration::decrypt(&shared.event, &secret).and_then(|plain| registration::parse(&plain, &limits))
        })
        .await
        .unwrap_or_else(|_| Err("error: could not read the registration".into()));
        let update = match parsed {
            Ok(update) => update,
            Err(reason) => return (false, reason),
        };
        match self.registry.apply(*event.pubkey(), created_at, update, now).await {
            Ok(Applied::Applied) => (true, String::new()),
            Ok(Applied::Replay) => (true, "duplicate: a newer registration was already applied".into()),
            Err(ApplyError::Refused(reason)) => (false, reason),
            Err(ApplyError::Database(e)) => {
                tracing::error!("saving a registration failed: {e}");
                (false, "error: could not save the registration".into())
            }
        }
    }
}

#[async_trait]
impl EventConsumer for PushService {
    async fn consume(&self, event: &SharedEvent) -> Option<(bool, String)> {
        if !self.is_addressed_to_us(event) {
            return None;
        }
        Some(self.register(event).await)
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
