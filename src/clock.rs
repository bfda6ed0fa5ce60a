//! The one clock: wall time in Unix seconds or milliseconds, made by `app` and passed to every part that decides by
//! the time (the store's expiry and job times, admission's `created_at` window, presence, the push queue, watchers'
//! `since`). A test moves it forward instead of sleeping (`advance`); everything else reads the system clock
//! through it. Timers (how long to wait) stay on tokio's clock: they measure durations, not dates; and the times
//! in APNs' tokens stay on the system's, since Apple checks them against its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Cheap to clone; clones share how far the clock was moved.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds added to the system's time (0 but in tests).
    ahead_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Unix time in milliseconds (the job queue's and the nodes' columns).
    pub fn millis(&self) -> i64 {
        let system = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        system + self.ahead_ms.load(Ordering::Relaxed)
    }

    /// Unix time in seconds, as Nostr's `created_at` counts it.
    pub fn secs(&self) -> u64 {
        (self.millis() / 1000).max(0) as u64
    }

    /// Unix time in seconds as the database stores it (signed).
    pub fn db_secs(&self) -> i64 {
        self.millis().div_euclid(1000)
    }

    /// Moves this clock, and every clone of it, forward: what was due in `by` is due now.
    pub fn advance(&self, by: Duration) {
        self.ahead_ms.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.secs();
        clock.advance(Duration::from_secs(3600));
        assert!(other.secs() >= before + 3600);
        assert_eq!(other.db_secs(), other.secs() as i64);
    }
}
