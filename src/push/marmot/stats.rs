//! What Marmot push counts, for `/status` and the metrics: triggers by outcome, wakes by platform and outcome.
//! Never a token, a hash or anything else that could tie a trigger to a device.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::{MARMOT_TRIGGERS, MARMOT_WAKES};

/// What became of one trigger (`MARMOT_TRIGGERS{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TriggerOutcome {
    /// At least one of its tokens was under its rate, and woken (each wake's fate is counted apart).
    Woken,
    /// Opened, but no chunk held a token for us (padding, another server's tokens), or every token was over its
    /// rate.
    NoToken,
    Duplicate,
    /// Not a trigger (`trigger::Malformed`, counted under its own `reason` too).
    Malformed,
    OverBudget,
    Busy,
    /// Opening it failed unexpectedly (a panic on its thread).
    Failed,
}

impl TriggerOutcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Woken => "woken",
            Self::NoToken => "no_token",
            Self::Duplicate => "duplicate",
            Self::Malformed => "malformed",
            Self::OverBudget => "over_budget",
            Self::Busy => "busy",
            Self::Failed => "failed",
        }
    }
}

/// What became of one wake (`MARMOT_WAKES{platform,outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WakeOutcome {
    Sent,
    /// Over `wakes_per_token_per_minute`.
    RateLimited,
    /// The service refused it for good, said the token is dead, or every try failed.
    Failed,
    /// The platform's sender is not configured.
    Unconfigured,
}

impl WakeOutcome {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::RateLimited => "rate_limited",
            Self::Failed => "failed",
            Self::Unconfigured => "unconfigured",
        }
    }
}

#[derive(Default)]
pub(crate) struct MarmotStats {
    triggers: Mutex<BTreeMap<&'static str, u64>>,
    wakes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl MarmotStats {
    pub(super) fn trigger(&self, outcome: TriggerOutcome, reason: &'static str) {
        *self.triggers.lock().expect("stats lock").entry(outcome.label()).or_default() += 1;
        metrics::counter!(MARMOT_TRIGGERS, "outcome" => outcome.label(), "reason" => reason).increment(1);
    }

    pub(super) fn wake(&self, platform: &'static str, outcome: WakeOutcome) {
        *self.wakes.lock().expect("stats lock").entry((platform, outcome.label())).or_default() += 1;
        metrics::counter!(MARMOT_WAKES, "platform" => platform, "outcome" => outcome.label()).increment(1);
    }

    /// Triggers by outcome, as `/status` lists them: `woken 3, duplicate 1`.
    pub(crate) fn triggers(&self) -> String {
        let triggers = self.triggers.lock().expect("stats lock");
        listed(triggers.iter().map(|(outcome, n)| (outcome.to_string(), *n)))
    }

    /// Wakes by platform and outcome: `apns sent 2, fcm sent 1`.
    pub(crate) fn wakes(&self) -> String {
        let wakes = self.wakes.lock().expect("stats lock");
        listed(wakes.iter().map(|((platform, outcome), n)| (format!("{platform} {outcome}"), *n)))
    }
}

fn listed(counts: impl Iterator<Item = (String, u64)>) -> String {
    let parts: Vec<String> = counts.map(|(what, n)| format!("{what} {n}")).collect();
    if parts.is_empty() { "none yet".into() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MARMOT_MALFORMED, MARMOT_TRIGGER_OUTCOMES, MARMOT_WAKE_OUTCOMES};
    use crate::push::marmot::trigger::Malformed;

    #[test]
    fn every_label_is_primed() {
        use TriggerOutcome as T;
        for outcome in [T::Woken, T::NoToken, T::Duplicate, T::OverBudget, T::Busy, T::Failed] {
            assert!(MARMOT_TRIGGER_OUTCOMES.contains(&outcome.label()), "{outcome:?}");
        }
        for wake in [WakeOutcome::Sent, WakeOutcome::RateLimited, WakeOutcome::Failed, WakeOutcome::Unconfigured] {
            assert!(MARMOT_WAKE_OUTCOMES.contains(&wake.label()), "{wake:?}");
        }
        use Malformed as M;
        let all = [M::Wrap, M::Seal, M::SealSignature, M::Rumor, M::Kind, M::Author, M::Tags, M::Base64, M::Size];
        for malformed in all {
            assert!(MARMOT_MALFORMED.contains(&malformed.label()), "{malformed:?}");
        }
    }
}
