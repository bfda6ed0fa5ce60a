//! NIP-97's device registrations: a kind 22242 event, POSTed to `/register` (see `http::register`), registers one
//! device of its signer. The device becomes a row beside the 0xchat protocol's (its id `nip97:` and the event's
//! `challenge`), so that the one matcher, queue, retries, dead-token handling, read gating and mute lists serve it;
//! it has no presence, wants the fixed kinds below `p`-tagging its user, and is watched for on the event's `relay`s.

use std::sync::Arc;

use super::Intake;
use crate::protocol::{Refusal, SharedEvent};
use crate::push::audience::Audience;
use crate::push::audience::registry::{Applied, ApplyError};
use crate::push::audience::update::RegistrationUpdate;
use crate::push::device::{Device, NIP97_PREFIX};
use tokio_util::sync::CancellationToken;

/// The kind of the registration events.
pub const REGISTER_KIND: u16 = 22242;
/// What notifies a NIP-97 device (README, "NIP-97"): notes, DMs, reposts, reactions, zaps, gift wraps. Kind 14 never stands
/// alone: it travels inside a gift wrap.
pub const NIP97_KINDS: [u16; 6] = [1, 4, 6, 7, 9735, 1059];

impl Intake {
    /// Registers the device a kind 22242 event names: `Ok(true)` when it was registered for the pubkey already.
    pub async fn register_nip97(&self, event: &SharedEvent) -> Result<bool, Refusal> {
        if event.kind() != REGISTER_KIND {
            return Err(Refusal::invalid(format!("expected a kind {REGISTER_KIND} event")));
        }
        // The relay's own key signs its AUTH on watched relays (kind 22242 too): never a registration.
        if event.pubkey() == &self.own_pubkey() {
            return Err(Refusal::blocked("this relay's own key registers no device"));
        }
        let now = self.audience.now();
        let window = self.config.registration_window_secs as i64;
        if (crate::store::db_time(event.created_at()) - now).abs() > window {
            return Err(Refusal::invalid(format!("created_at must be within {window} seconds of now")));
        }
        let tag = |name: &'static str| event.event.tags.iter().filter_map(move |t| tag_value(t.as_slice(), name));
        let challenges: Vec<&str> = tag("challenge").collect();
        let [challenge] = challenges[..] else { return Err(Refusal::invalid("expected one challenge tag")) };
        let max = self.config.nip97_max_challenge_length;
        if challenge.chars().count() > max {
            return Err(Refusal::invalid(format!("challenge longer than {max} characters")));
        }
        Device::parse_challenge(challenge, self.config.unifiedpush.allow_private_addresses)?;
        // A NIP-42 AUTH event has this kind and these tags: one a client signed for another relay (whose challenge
        // was `unifiedpush:<URL>`) names that relay, never this one.
        if self.config.nip97_require_own_relay && !tag("relay").any(|relay| self.is_own_url(relay)) {
            return Err(Refusal::invalid("a registration must name this relay in a relay tag"));
        }
        let device_id = format!("{NIP97_PREFIX}{challenge}");
        let pubkey = *event.pubkey();
        let replaced = self.audience.registry.registrations_of(&pubkey).iter().any(|r| r.device_id == device_id);
        if !replaced && !self.room_for_a_device().await {
            return Err(Refusal::rate_limited("this relay holds as many NIP-97 devices as it may"));
        }
        let update = RegistrationUpdate {
            device_id: Some(device_id),
            kinds: Some(NIP97_KINDS.to_vec()),
            p_tags: Some(vec![hex::encode(pubkey)]),
            relays: Some(self.watchable(tag("relay"))),
            ..RegistrationUpdate::default()
        };
        match self.audience.registry.apply(pubkey, None, update, now).await {
            Ok(Applied::Applied | Applied::Replay) => {
                self.audience.load_lists_once(&pubkey).await;
                self.audience.changed();
                Ok(replaced)
            }
            Err(ApplyError::Refused(reason)) => Err(reason),
            Err(ApplyError::Database(e)) => {
                tracing::error!("saving a NIP-97 registration failed: {e}");
                Err(Refusal::error("could not save the registration"))
            }
        }
    }

    /// Whether one more NIP-97 device may be kept: under `[push] nip97_max_devices`, once expired ones are forgotten.
    async fn room_for_a_device(&self) -> bool {
        let max = self.config.nip97_max_devices;
        self.audience.registry.nip97_devices().len() < max
            || (forget_expired(&self.audience, self.config.nip97_device_ttl_days).await > 0
                && self.audience.registry.nip97_devices().len() < max)
    }

    /// The relays of `relay` tags that can be watched, at most `[push] max_relays`: the others (this relay, a private
    /// address, not `ws://`/`wss://`) are skipped, never a reason to refuse (README, "NIP-97").
    fn watchable<'a>(&self, named: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut relays: Vec<String> = Vec::new();
        for relay in named {
            let usable = crate::upstream::check_relay_url(relay, &self.audience.upstream).is_ok()
                && !self.is_own_url(relay)
                && !relays.iter().any(|r| r == relay);
            if usable && relays.len() < self.config.max_relays {
                relays.push(relay.to_owned());
            }
        }
        relays
    }
}

/// Forgets NIP-97 devices not registered again within `[push] nip97_device_ttl_days` (apps register at every start),
/// hourly and whenever the cap is reached, so that abandoned and throwaway registrations do not hold memory and disk
/// for ever.
pub async fn expire_devices(audience: Arc<Audience>, ttl_days: u64, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        forget_expired(&audience, ttl_days).await;
    }
}

/// Forgets the NIP-97 devices last registered more than `ttl_days` ago; returns how many.
async fn forget_expired(audience: &Audience, ttl_days: u64) -> usize {
    let before = audience.now() - (ttl_days * 24 * 3600) as i64;
    let stale: Vec<_> = audience.registry.nip97_devices().into_iter().filter(|d| d.2 < before).collect();
    for (pubkey, device_id, _) in &stale {
        if let Err(e) = audience.registry.remove_registration(pubkey, device_id).await {
            tracing::error!("cannot forget an expired NIP-97 device: {e}");
        }
    }
    if !stale.is_empty() {
        tracing::info!(devices = stale.len(), "NIP-97 devices not registered again within {ttl_days} days forgotten");
        audience.changed();
    }
    stale.len()
}

/// How often expired NIP-97 devices are looked for.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

fn tag_value<'a>(tag: &'a [String], name: &str) -> Option<&'a str> {
    match tag {
        [first, value, ..] if first == name => Some(value.as_str()),
        _ => None,
    }
}
