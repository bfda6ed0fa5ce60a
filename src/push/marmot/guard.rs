//! What keeps Marmot triggers from costing the relay more than the operator allows: senders are anonymous by
//! design and each trigger costs two NIP-44 decryptions and up to 32 ECDHs, so every bound is checked before the
//! work it saves. A global budget of unwraps per minute (before any decryption), a cap on triggers in flight, the
//! replay memory (this node's, then the database's, which every node shares), and a wake rate per device token.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::token::Token;
use crate::config::MarmotConfig;
use crate::store::{Sightings, StoreError};

/// Past this many tokens, the per-token limiter forgets those whose rate has recovered (it keeps one entry each).
const FORGET_TOKENS_PAST: usize = 100_000;

pub(super) struct Guard {
    unwraps: DefaultDirectRateLimiter,
    in_flight: Arc<Semaphore>,
    /// Triggers being opened or decrypted at once: no more than the cores, so that a burst of them queues here
    /// instead of crowding every other client off the CPU (64 at once on one core held a bystander's OK at 570 ms).
    cpu: Semaphore,
    wakes: DefaultKeyedRateLimiter<[u8; 32]>,
    /// Mixed into the per-token key, so that what the limiter keeps is no fingerprint anyone else can compute.
    salt: [u8; 32],
    seen: Mutex<HashMap<[u8; 32], i64>>,
    max_seen: usize,
    window: i64,
    sightings: Arc<dyn Sightings>,
}

/// Why a trigger is not acted on, before or after it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The unwrap budget of the minute is spent.
    OverBudget,
    /// `max_in_flight` triggers are being handled.
    Busy,
    /// Its content was acted on within the replay window.
    Duplicate,
}

impl Guard {
    pub(super) fn new(config: &MarmotConfig, sightings: Arc<dyn Sightings>) -> Self {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        // A second's worth at once at most: governor's default burst is the whole minute's, which let a flood open
        // 6,000 triggers back to back.
        let second = NonZeroU32::new(config.unwraps_per_minute / 60).unwrap_or(NonZeroU32::MIN);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            unwraps: RateLimiter::direct(per_minute(config.unwraps_per_minute).allow_burst(second)),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            cpu: Semaphore::new(cores),
            wakes: RateLimiter::keyed(
                per_minute(config.wakes_per_token_per_minute)
                    .allow_burst(NonZeroU32::new(config.wakes_per_token_per_minute / 60).unwrap_or(NonZeroU32::MIN)),
            ),
            salt: rand::random(),
            seen: Mutex::new(HashMap::new()),
            max_seen: config.max_replay_hashes,
            window: config.replay_window_secs as i64,
            sightings,
        }
    }

    /// A place among the triggers in flight and one unwrap of the budget, both or neither; checked before any
    /// decryption.
    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| Refused::Busy)?;
        self.unwraps.check().map_err(|_| Refused::OverBudget)?;
        Ok(permit)
    }

    /// A turn on the CPU, for opening a trigger or decrypting its chunks.
    pub(super) async fn cpu(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.cpu.acquire().await.expect("the CPU semaphore is never closed")
    }

    /// Whether content with this hash is new within the window, here and on every node of the database. A hash
    /// this node cannot remember (memory full of recent ones) counts as over the budget: remembering is the bound.
    pub(super) async fn first_sighting(&self, content: &[u8], now: i64) -> Result<(), Refused> {
        let hash: [u8; 32] = Sha256::digest(content).into();
        self.remember(hash, now)?;
        match self.sightings.first_sighting(hash, now, now - self.window).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refused::Duplicate),
            // The database is the cluster's memory; without it this node's own still stops its replays.
            Err(e) => {
                tracing::warn!("cannot record a Marmot trigger's hash: {e}");
                Ok(())
            }
        }
    }

    fn remember(&self, hash: [u8; 32], now: i64) -> Result<(), Refused> {
        let mut seen = self.seen.lock().expect("replay memory lock");
        if seen.get(&hash).is_some_and(|&at| at >= now - self.window) {
            return Err(Refused::Duplicate);
        }
        if seen.len() >= self.max_seen {
            seen.retain(|_, at| *at >= now - self.window);
            if seen.len() >= self.max_seen {
                return Err(Refused::OverBudget);
            }
        }
        seen.insert(hash, now);
        Ok(())
    }

    /// Whether the token (its `key_of`) may be woken now (`wakes_per_token_per_minute`, a second's worth at once at
    /// most).
    pub(super) fn may_wake(&self, key: &[u8; 32]) -> bool {
        self.wakes.check_key(key).is_ok()
    }

    /// What stands for the token here: its salted SHA-256, no fingerprint anyone else can compute.
    pub(super) fn key_of(&self, token: &Token) -> [u8; 32] {
        let mut key = Sha256::new();
        key.update(self.salt);
        key.update([token.platform() as u8]);
        key.update(token.bytes());
        key.finalize().into()
    }

    /// Forgets hashes older than the window, here and in the database, and tokens whose rate has recovered.
    pub(super) async fn tidy(&self, now: i64) -> Result<(), StoreError> {
        self.seen.lock().expect("replay memory lock").retain(|_, at| *at >= now - self.window);
        if self.wakes.len() > FORGET_TOKENS_PAST {
            self.wakes.retain_recent();
        }
        self.sightings.forget_sightings(now - self.window).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDatabase;

    #[async_trait::async_trait]
    impl Sightings for NoDatabase {
        async fn first_sighting(&self, _: [u8; 32], _: i64, _: i64) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn forget_sightings(&self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    fn guard(config: MarmotConfig) -> Guard {
        Guard::new(&config, Arc::new(NoDatabase))
    }

    #[test]
    fn the_budget_and_the_places_in_flight_are_checked_before_anything_is_opened() {
        // 120 a minute: two at once, then one every half second.
        let guard = guard(MarmotConfig { unwraps_per_minute: 120, max_in_flight: 1, ..MarmotConfig::default() });
        let held = guard.admit().expect("the first is admitted");
        assert_eq!(guard.admit().unwrap_err(), Refused::Busy);
        drop(held);
        assert!(guard.admit().is_ok());
        assert_eq!(guard.admit().unwrap_err(), Refused::OverBudget);
    }

    #[tokio::test]
    async fn content_is_acted_on_once_within_the_window_and_memory_is_bounded() {
        let guard = guard(MarmotConfig { replay_window_secs: 60, max_replay_hashes: 2, ..MarmotConfig::default() });
        assert_eq!(guard.first_sighting(b"a", 1000).await, Ok(()));
        assert_eq!(guard.first_sighting(b"a", 1059).await, Err(Refused::Duplicate));
        assert_eq!(guard.first_sighting(b"b", 1000).await, Ok(()));
        assert_eq!(guard.first_sighting(b"c", 1000).await, Err(Refused::OverBudget), "memory full of recent ones");
        assert_eq!(guard.first_sighting(b"a", 1061).await, Ok(()), "the window has passed");
    }
}
