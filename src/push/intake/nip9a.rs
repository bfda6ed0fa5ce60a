//! NIP-9a's intake: a kind 30390 subscription published here is checked before the relay stores it (the form, by
//! `audience::subscription`; the caps, here), and the subscriber's lists are read before it is live. Once stored,
//! the matcher's listener files it in the audience's `CallbackIndex`.

use std::net::IpAddr;

use super::Intake;
use crate::protocol::{Refusal, SharedEvent};

/// Past this many addresses, the per-address limiter forgets those back at full allowance.
const FORGET_ADDRESSES_PAST: usize = 10_000;

impl Intake {
    /// The `OK` for a refused subscription; None lets the relay store an accepted one.
    pub(super) async fn consume_subscription(
        &self,
        event: &SharedEvent,
        from: IpAddr,
    ) -> Option<Result<String, Refusal>> {
        let refused = self.check_subscription(event, from);
        if refused.is_none() {
            // The subscriber's mute list applies to its subscription: known before it is live.
            self.audience.load_lists_once(event.pubkey()).await;
        }
        refused.map(Err)
    }

    /// Why a NIP-9a subscription is refused, if it is: malformed, one too many for its pubkey (a new version of one
    /// it holds does not count), for the relay, or of the broad kind for the relay, or one too many from the
    /// client's address this hour. A valid one is left to the relay to store; the matcher takes it up after.
    fn check_subscription(&self, event: &SharedEvent, from: IpAddr) -> Option<Refusal> {
        let callbacks = &self.audience.callbacks;
        let subscription = match callbacks.parse(event) {
            Ok(subscription) => subscription,
            Err(why) => return Some(why),
        };
        let max = self.config.max_subscriptions_per_pubkey;
        if callbacks.count_of(&subscription.pubkey, &subscription.d, self.audience.clock.secs()) >= max {
            return Some(Refusal::blocked(format!("this pubkey has too many push subscriptions (max {max})")));
        }
        let is_new = !callbacks.has(&subscription.pubkey, &subscription.d);
        if is_new && callbacks.len() >= self.config.max_subscriptions {
            return Some(Refusal::rate_limited("this relay holds as many push subscriptions as it may"));
        }
        // A broad filter is a candidate for every event of its kinds (or with its word): their number is what a
        // stranger could make every commit pay for.
        let was_broad = callbacks.is_broad(&subscription.pubkey, &subscription.d);
        if subscription.is_broad() && !was_broad && callbacks.broad_count() >= self.config.max_broad_subscriptions {
            return Some(Refusal::rate_limited(
                "this relay holds as many push subscriptions with a filter naming no ids, authors or tags as it may",
            ));
        }
        if let Some(limiter) = &self.subscriptions_per_ip {
            if limiter.len() > FORGET_ADDRESSES_PAST {
                limiter.retain_recent();
            }
            if limiter.check_key(&from).is_err() {
                return Some(Refusal::rate_limited("too many push subscriptions from your address, slow down"));
            }
        }
        None
    }
}
