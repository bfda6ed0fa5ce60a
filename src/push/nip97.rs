//! NIP-97's device registrations: a kind 22242 event, POSTed to `/register` (see `http::register`), registers one
//! device of its signer. The device becomes a row beside the 0xchat protocol's (its id `nip97:` and the event's
//! `challenge`), so that the one matcher, queue, retries, dead-token handling, read gating and mute lists serve it;
//! it has no presence, wants the fixed kinds below `p`-tagging its user, and is watched for on the event's `relay`s.

use super::device::{Device, NIP97_PREFIX};
use super::intake::Intake;
use super::registration::RegistrationUpdate;
use super::registry::{Applied, ApplyError};
use crate::protocol::SharedEvent;

/// The kind of the registration events.
pub const REGISTER_KIND: u16 = 22242;
/// What notifies a NIP-97 device (spec): notes, DMs, reposts, reactions, zaps, gift wraps. Kind 14 never stands
/// alone: it travels inside a gift wrap.
pub const NIP97_KINDS: [u16; 6] = [1, 4, 6, 7, 9735, 1059];

impl Intake {
    /// Registers the device a kind 22242 event names: `Ok(true)` when it was registered for the pubkey already.
    pub async fn register_nip97(&self, event: &SharedEvent) -> Result<bool, String> {
        if event.kind() != REGISTER_KIND {
            return Err(format!("invalid: expected a kind {REGISTER_KIND} event"));
        }
        let now = self.audience.now();
        let window = self.config.registration_window_secs as i64;
        if (crate::store::db_time(event.created_at()) - now).abs() > window {
            return Err(format!("invalid: created_at must be within {window} seconds of now"));
        }
        let tag = |name: &'static str| event.event.tags.iter().filter_map(move |t| tag_value(t.as_slice(), name));
        let challenges: Vec<&str> = tag("challenge").collect();
        let [challenge] = challenges[..] else { return Err("invalid: expected one challenge tag".into()) };
        Device::parse_challenge(challenge, self.config.unifiedpush.allow_private_addresses)?;
        let device_id = format!("{NIP97_PREFIX}{challenge}");
        let pubkey = *event.pubkey();
        let replaced = self.audience.registry.registrations_of(&pubkey).iter().any(|r| r.device_id == device_id);
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
                Err("error: could not save the registration".into())
            }
        }
    }

    /// The relays of `relay` tags that can be watched, at most `[push] max_relays`: the others (this relay, a private
    /// address, not `ws://`/`wss://`) are skipped, never a reason to refuse (spec).
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

fn tag_value<'a>(tag: &'a [String], name: &str) -> Option<&'a str> {
    match tag {
        [first, value, ..] if first == name => Some(value.as_str()),
        _ => None,
    }
}
