//! Whether a client publishes one event at a time, waiting on each answer: the writer then commits its event
//! without `[database] commit_delay_ms`, which would slow such a client down to one event per delay with nothing
//! to share the commit with (`store::writer::Writer::write_awaited`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Within how long of our last answer a client's next event, with nothing else of its in flight, shows a client
/// waiting on us: a round trip on its own host or network. A feed of events arrives unrelated to our answers.
pub(super) const AWAITED_WITHIN: Duration = Duration::from_millis(2);

/// One connection's events in flight and when the last was answered.
#[derive(Default)]
pub(super) struct Pace {
    in_flight: AtomicUsize,
    answered: Mutex<Option<Instant>>,
}

impl Pace {
    /// Counts an event in flight until the guard drops (its answer is ready), and says whether its client is
    /// waiting on it: nothing else in flight, and our last answer less than `within` ago.
    pub(super) fn start(&self, within: Duration) -> (InFlight<'_>, bool) {
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        let answered = *self.answered.lock().expect("pace lock");
        (InFlight(self), alone && answered.is_some_and(|at| at.elapsed() < within))
    }
}

/// An event in flight; dropped when its answer is ready.
pub(super) struct InFlight<'a>(&'a Pace);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.0.answered.lock().expect("pace lock") = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn an_event_right_after_an_answer_with_nothing_else_in_flight_is_awaited() {
        let pace = Pace::default();
        let (first, awaited) = pace.start(LONG);
        assert!(!awaited, "a connection's first event follows no answer");
        drop(first);
        let (second, awaited) = pace.start(LONG);
        assert!(awaited);
        // A third while the second is in flight: the client did not wait.
        let (_third, awaited) = pace.start(LONG);
        assert!(!awaited);
        drop(second);
    }

    #[test]
    fn an_event_long_after_the_answer_is_not_awaited() {
        let pace = Pace::default();
        drop(pace.start(LONG).0);
        assert!(!pace.start(Duration::ZERO).1);
    }
}
