//! How the parts of the relay report on themselves to the operator: a section of the status page each, and the
//! Prometheus gauges that describe their state (set just before `/metrics` is rendered). The HTTP side knows only
//! this trait; push and the upstream watchers implement it.

use async_trait::async_trait;

/// One part's figures: rows of (label, value), and optionally a per-minute series for a chart.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, String)>,
    pub chart: Option<Chart>,
}

#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub label: String,
    /// Counts per minute, oldest first.
    pub per_minute: Vec<u64>,
}

#[async_trait]
pub trait Reporter: Send + Sync {
    /// The public figures, for everyone who opens `/status`: nothing a stranger could learn from that they should
    /// not (what registrations name, what is reachable from here).
    async fn report(&self) -> Section;

    /// Details for administrators only (`/status/relays`, NIP-98), if this part has any.
    async fn details(&self) -> Option<Section> {
        None
    }

    /// Sets the gauges that describe this part's state now.
    fn set_gauges(&self) {}
}

/// "3 minutes ago", from a time in seconds since the epoch.
pub fn ago(then: u64, now: u64) -> String {
    match now.saturating_sub(then) {
        0..=59 => format!("{} s ago", now.saturating_sub(then)),
        s @ 60..=3599 => format!("{} min ago", s / 60),
        s @ 3600..=172_799 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}
