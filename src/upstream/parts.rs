//! What one watcher asks a remote relay for, in two subscriptions: public kinds, and the kinds a remote may serve
//! only to their parties after NIP-42 AUTH (DMs, gift wraps). A remote that refuses the private part (`CLOSED
//! auth-required:`) then costs the public part nothing. The watcher answers a remote's AUTH challenge with the
//! relay's own key (so that a remote wanting AUTH for any read serves public kinds), re-asks what was refused for
//! want of AUTH once it is accepted, and re-asks anything else refused only after `[upstream] refused_retry_secs`.

use std::collections::BTreeMap;
use std::time::Duration;

use nostr::prelude::*;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::protocol::refusal::Prefix;
use crate::protocol::{Filter, KindClass};

/// After a reconnect, `since` reaches this far before the connection was lost: clocks and commit order are not exact.
const SINCE_MARGIN: u64 = 60;
/// Gift wraps carry a `created_at` up to two days in the past (NIP-59), so their filters reach back that much more.
const GIFT_WRAP_BACKDATE: u64 = 2 * 24 * 3600;
const GIFT_WRAP_KINDS: [u16; 2] = [1059, 1060];
const AUTH_KIND: u16 = 22242;

/// Which of the two subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Public,
    Private,
}

impl Part {
    pub fn id(self) -> &'static str {
        match self {
            Self::Public => "pushrelay",
            Self::Private => "pushrelay-private",
        }
    }

    fn of_id(id: &str) -> Option<Self> {
        [Self::Public, Self::Private].into_iter().find(|part| part.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// Who the watcher is on remote relays: the key it authenticates with, and the kinds it asks for apart.
#[derive(Clone, Default)]
pub struct WatchAs {
    pub keys: Option<Keys>,
    /// `[auth] read_restricted_kinds`: what this relay gates, and what remotes commonly gate too.
    pub private_kinds: Vec<u16>,
}

/// Splits the planned filters by kind: each filter's private kinds go to the private part, the rest to the public.
pub fn split(filters: &[Filter], private_kinds: &[u16]) -> BTreeMap<Part, Vec<Filter>> {
    let mut parts: BTreeMap<Part, Vec<Filter>> = BTreeMap::new();
    for filter in filters {
        let Some(kinds) = &filter.kinds else {
            parts.entry(Part::Public).or_default().push(filter.clone());
            continue;
        };
        let (private, public): (Vec<u16>, Vec<u16>) = kinds.iter().partition(|k| private_kinds.contains(k));
        for (part, kinds) in [(Part::Public, public), (Part::Private, private)] {
            if !kinds.is_empty() {
                parts.entry(part).or_default().push(Filter { kinds: Some(kinds), ..filter.clone() });
            }
        }
    }
    parts
}

/// The REQ for one part: new events only at first; after a gap, everything since it began. Filters for replaceable
/// kinds (lists) ask for the current version, whenever it was published.
pub fn req(part: Part, filters: &[Filter], live_until: Option<u64>) -> String {
    let mut message = vec![json!("REQ"), json!(part.id())];
    message.extend(filters.iter().map(|f| {
        let mut filter = f.clone();
        let replaceable =
            filter.kinds.as_ref().is_some_and(|k| k.iter().all(|&k| KindClass::of(k) == KindClass::Replaceable));
        match live_until {
            _ if replaceable => {}
            None => filter.limit = Some(0),
            Some(moment) => {
                let wraps = filter.kinds.as_ref().is_some_and(|k| k.iter().any(|k| GIFT_WRAP_KINDS.contains(k)));
                let reach = SINCE_MARGIN + if wraps { GIFT_WRAP_BACKDATE } else { 0 };
                filter.since = Some(moment.saturating_sub(reach));
            }
        }
        filter.to_json()
    }));
    Value::Array(message).to_string()
}

/// One connection's subscriptions: what is asked, what the remote refused and when to ask again, and AUTH.
pub struct Subscriptions {
    pub parts: BTreeMap<Part, Vec<Filter>>,
    /// Refused parts: why, and when to ask again (None: once AUTH is accepted).
    refused: BTreeMap<Part, (String, Option<Instant>)>,
    /// The id of the AUTH event sent, until the remote answers it.
    auth_pending: Option<EventId>,
    authenticated: bool,
    retry_after: Duration,
}

/// What the connection should send now.
pub type Outgoing = Vec<String>;

impl Subscriptions {
    pub fn new(filters: &[Filter], watch_as: &WatchAs, retry_after: Duration) -> Self {
        Self {
            parts: split(filters, &watch_as.private_kinds),
            refused: BTreeMap::new(),
            auth_pending: None,
            authenticated: false,
            retry_after,
        }
    }

    /// Every filter asked for, in either part: what an arriving event must match.
    pub fn all_filters(&self) -> impl Iterator<Item = &Filter> {
        self.parts.values().flatten()
    }

    /// The REQs for every part; a new plan replaces what was asked (same ids), and forgets refusals.
    pub fn replan(&mut self, filters: &[Filter], watch_as: &WatchAs, live_until: Option<u64>) -> Outgoing {
        let old = std::mem::take(&mut self.parts);
        self.parts = split(filters, &watch_as.private_kinds);
        self.refused.clear();
        let mut out: Outgoing = old
            .keys()
            .filter(|part| !self.parts.contains_key(part))
            .map(|part| json!(["CLOSE", part.id()]).to_string())
            .collect();
        out.extend(self.parts.iter().map(|(part, filters)| req(*part, filters, live_until)));
        out
    }

    /// A `CLOSED` for one of the parts: refused until AUTH is accepted (when it was for want of AUTH and AUTH may
    /// still come), else until the retry time. Returns the part's name, for status.
    pub fn closed(&mut self, sub_id: &str, reason: &str, now: Instant) -> Option<Part> {
        let part = Part::of_id(sub_id)?;
        let after_auth = Prefix::of(reason) == Some(Prefix::AuthRequired) && !self.authenticated;
        let retry = if after_auth { None } else { Some(now + self.retry_after) };
        self.refused.insert(part, (reason.to_owned(), retry));
        Some(part)
    }

    /// The remote's AUTH challenge: the AUTH message to send, signed with the relay's key, if it has one and the
    /// challenge is one a relay makes (`signable_challenge`).
    pub fn challenge(&mut self, challenge: &str, relay_url: &str, watch_as: &WatchAs) -> Option<String> {
        let keys = watch_as.keys.as_ref()?;
        if !signable_challenge(challenge) {
            tracing::warn!(relay = relay_url, "AUTH challenge not signed: it could be used as something else");
            return None;
        }
        let event = EventBuilder::new(Kind::from(AUTH_KIND), "")
            .tags([Tag::parse(["relay", relay_url]).ok()?, Tag::parse(["challenge", challenge]).ok()?])
            .finalize(keys)
            .ok()?;
        self.auth_pending = Some(event.id);
        Some(json!(["AUTH", event]).to_string())
    }

    /// An `OK` from the remote: if it accepts our AUTH, the parts refused for want of it are asked again.
    pub fn ok(&mut self, event_id: &str, accepted: bool, live_until: Option<u64>) -> Outgoing {
        if self.auth_pending.is_none_or(|id| id.to_hex() != event_id) {
            return Vec::new();
        }
        self.auth_pending = None;
        self.authenticated = accepted;
        let waiting: Vec<Part> =
            self.refused.iter().filter(|(_, (_, retry))| retry.is_none()).map(|(part, _)| *part).collect();
        let now = Instant::now();
        waiting.into_iter().filter_map(|part| self.ask_again(part, accepted, now, live_until)).collect()
    }

    /// Whether the remote accepted our AUTH on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// When the next refused part is due to be asked again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.refused.values().filter_map(|(_, retry)| *retry).min()
    }

    /// The REQs of refused parts whose retry time has come.
    pub fn due(&mut self, now: Instant, live_until: Option<u64>) -> Outgoing {
        let due: Vec<Part> = self
            .refused
            .iter()
            .filter(|(_, (_, retry))| retry.is_some_and(|at| at <= now))
            .map(|(part, _)| *part)
            .collect();
        due.into_iter().filter_map(|part| self.ask_again(part, true, now, live_until)).collect()
    }

    fn ask_again(&mut self, part: Part, now_or_later: bool, now: Instant, live_until: Option<u64>) -> Option<String> {
        if !now_or_later {
            // AUTH was refused: ask again only at the retry time.
            if let Some((_, retry)) = self.refused.get_mut(&part) {
                *retry = Some(now + self.retry_after);
            }
            return None;
        }
        self.refused.remove(&part);
        Some(req(part, self.parts.get(&part)?, live_until))
    }

    /// The refused parts with their kinds and the remote's reason, for status ("private [4, 1059]: auth-required:
    /// ...").
    pub fn refusals(&self) -> BTreeMap<String, String> {
        self.refused
            .iter()
            .map(|(part, (reason, _))| {
                let mut kinds: Vec<u16> = self
                    .parts
                    .get(part)
                    .into_iter()
                    .flatten()
                    .flat_map(|f| f.kinds.iter().flatten().copied())
                    .collect();
                kinds.sort_unstable();
                kinds.dedup();
                (format!("{} {kinds:?}", part.name()), reason.clone())
            })
            .collect()
    }
}

/// Whether the relay's key may sign this challenge: relays send a random token, and a kind 22242 event with a
/// challenge of another shape could serve a stranger as something else. NIP-97 registrations are kind 22242 events
/// with `relay` and `challenge` tags too: a hostile relay's challenge `unifiedpush:https://...`, signed, would
/// register a device in the relay's name. So no `:` (NIP-97's `system:token`), nothing but printable ASCII, and at
/// most 256 characters.
fn signable_challenge(challenge: &str) -> bool {
    challenge.len() <= 256 && challenge.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kinds: &[u16]) -> Filter {
        Filter {
            kinds: Some(kinds.to_vec()),
            tags: BTreeMap::from([('p', vec!["ab".repeat(32)])]),
            ..Filter::default()
        }
    }

    #[test]
    fn private_kinds_are_asked_for_apart() {
        let parts = split(&[filter(&[1, 4, 7, 1059]), filter(&[10000])], &[4, 1059, 1060, 14]);
        assert_eq!(parts[&Part::Public], [filter(&[1, 7]), filter(&[10000])]);
        assert_eq!(parts[&Part::Private], [filter(&[4, 1059])]);
        assert!(!split(&[filter(&[1])], &[4]).contains_key(&Part::Private));
    }

    #[test]
    fn refused_for_want_of_auth_is_asked_again_once_auth_is_accepted() {
        let watch_as = WatchAs { keys: Some(Keys::generate()), private_kinds: vec![4] };
        let mut subs = Subscriptions::new(&[filter(&[1, 4])], &watch_as, Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(subs.closed("pushrelay-private", "auth-required: log in", now), Some(Part::Private));
        assert_eq!(subs.next_retry(), None, "waits for AUTH, not for the clock");
        let auth: Value = serde_json::from_str(&subs.challenge("c", "wss://r.example", &watch_as).unwrap()).unwrap();
        let id = auth[1]["id"].as_str().unwrap();
        let again = subs.ok(id, true, Some(1));
        assert_eq!(again.len(), 1);
        assert!(again[0].starts_with(r#"["REQ","pushrelay-private""#), "{again:?}");
        // Refused again once authenticated: asked again only at the retry time.
        subs.closed("pushrelay-private", "auth-required: still not for you", now);
        assert_eq!(subs.next_retry(), Some(now + Duration::from_secs(600)));
        assert!(subs.due(now, Some(1)).is_empty());
        assert_eq!(subs.due(now + Duration::from_secs(601), Some(1)).len(), 1);
    }

    /// A hostile relay's challenge shaped as a NIP-97 device (`unifiedpush:https://...`), signed by the push key,
    /// would have been a registration in the relay's name.
    #[test]
    fn only_a_relays_kind_of_challenge_is_signed() {
        let watch_as = WatchAs { keys: Some(Keys::generate()), private_kinds: vec![4] };
        let mut subs = Subscriptions::new(&[filter(&[1, 4])], &watch_as, Duration::from_secs(600));
        for refused in ["unifiedpush:https://evil.example/up", "google:token", "a b", &"x".repeat(257)] {
            assert_eq!(subs.challenge(refused, "wss://r.example", &watch_as), None, "{refused}");
        }
        for signed in ["c", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "f5b1c6e0-6a4d-4e2b-9f0a-3c1d2e4f5a6b", "abc+/="] {
            assert!(subs.challenge(signed, "wss://r.example", &watch_as).is_some(), "{signed}");
        }
    }
}
