//! Counts per minute over the last hour (events accepted, pushes sent), for the status page's chart.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::clock::Clock;
use crate::protocol::SharedEvent;
use crate::report::{Chart, Reporter, Section};
use crate::store::writer::AcceptListener;

pub const MINUTES: usize = 60;

pub struct Timeline {
    clock: Clock,
    /// (minute since the epoch, count), oldest first, at most `MINUTES` entries.
    minutes: Mutex<VecDeque<(u64, u64)>>,
}

impl Timeline {
    pub fn new(clock: Clock) -> Self {
        Self { clock, minutes: Mutex::default() }
    }

    pub fn add(&self, count: u64) {
        let minute = self.clock.secs() / 60;
        let mut minutes = self.minutes.lock().expect("timeline lock");
        match minutes.back_mut() {
            Some((last, total)) if *last == minute => *total += count,
            _ => minutes.push_back((minute, count)),
        }
        while minutes.len() > MINUTES {
            minutes.pop_front();
        }
    }

    /// The counts of the last `MINUTES` minutes, oldest first, the current minute last.
    pub fn series(&self) -> Vec<u64> {
        let now = self.clock.secs() / 60;
        let minutes = self.minutes.lock().expect("timeline lock");
        (0..MINUTES as u64)
            .rev()
            .map(|ago| minutes.iter().find(|(m, _)| *m == now - ago).map_or(0, |(_, count)| *count))
            .collect()
    }
}

/// Counts every accepted event (stored or ephemeral, here or on another node).
pub struct EventActivity {
    pub timeline: Timeline,
}

impl EventActivity {
    pub fn new(clock: Clock) -> Self {
        Self { timeline: Timeline::new(clock) }
    }
}

impl AcceptListener for EventActivity {
    fn accepted(&self, events: &[SharedEvent]) {
        self.timeline.add(events.len() as u64);
    }
}

#[async_trait::async_trait]
impl Reporter for EventActivity {
    async fn report(&self) -> Section {
        let per_minute = self.timeline.series();
        Section {
            title: "Events".into(),
            rows: vec![("Accepted in the last hour".into(), per_minute.iter().sum::<u64>().to_string())],
            chart: Some(Chart { label: "events accepted per minute".into(), per_minute }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_current_minute() {
        let timeline = Timeline::new(Clock::system());
        timeline.add(2);
        timeline.add(3);
        let series = timeline.series();
        assert_eq!(series.len(), MINUTES);
        assert_eq!(*series.last().unwrap(), 5);
    }
}
