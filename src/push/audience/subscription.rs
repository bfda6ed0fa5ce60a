//! NIP-9a push subscriptions: an addressable kind 30390 event, in plain tags, asks the relay to `POST` to a callback
//! URL whenever a newly accepted event matches one of its filters (see README, "NIP-9a subscriptions").
//!
//! This module reads one event into a `Subscription`, or says why not, in the words the relay answers `OK false`
//! with (`invalid:` for a malformed event; the per-pubkey cap, `blocked:`, is the intake's).

use crate::config::PushConfig;
use crate::protocol::Refusal;
use crate::protocol::filter::Hash32;
use crate::protocol::search::ContentWords;
use crate::protocol::{Filter, VerifiedEvent};

/// How large a filter a subscription may hold: it is kept in memory and checked against every event, inside the
/// writer's commit. The search limits are the relay's for a REQ (`[limits] max_search_terms`, `max_search_length`).
#[derive(Debug, Clone)]
pub struct FilterBounds {
    /// Bytes of one `filter` or `ignore` tag's JSON (`[push] max_subscription_filter_length`).
    pub max_length: usize,
    pub max_search_terms: usize,
    pub max_search_length: usize,
}

impl Default for FilterBounds {
    fn default() -> Self {
        Self { max_length: 2048, max_search_terms: 16, max_search_length: 1024 }
    }
}

/// The kind of a NIP-9a push subscription.
pub const SUBSCRIPTION_KIND: u16 = crate::protocol::event::PUSH_SUBSCRIPTION_KIND;

/// What a subscription asks for, read from its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub pubkey: Hash32,
    pub d: String,
    pub event_id: Hash32,
    pub created_at: u64,
    pub callback: String,
    /// An event matching one of these, and none of `ignores`, is posted.
    pub filters: Vec<Filter>,
    pub ignores: Vec<Filter>,
    /// Put the whole event in the POST.
    pub include_event: bool,
    /// NIP-40: the subscription ends then.
    pub expires_at: Option<u64>,
}

impl Subscription {
    pub fn key(&self) -> (Hash32, String) {
        (self.pubkey, self.d.clone())
    }

    /// Whether a filter names no ids, authors or tag values (only kinds, and perhaps words): such a subscription is
    /// a candidate for every event of those kinds.
    pub fn is_broad(&self) -> bool {
        self.filters.iter().any(|f| f.ids.is_none() && f.authors.is_none() && f.tags.is_empty())
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether `event` is one to post: it matches a filter and no ignore, and is not the subscriber's own.
    pub fn wants(&self, event: &VerifiedEvent) -> bool {
        self.wants_sparing(event, false, &ContentWords::new(event.kind(), &event.event.content))
    }

    /// With `spare_mentions` (the event is a hellthread and the operator spares everyone them), a filter that selects
    /// by `#p` counts only if it also selects by a group (`#e` or `#h`): as registrations, notified through groups only.
    /// `words`: the event's content words, split once for every subscription that looks at it.
    pub fn wants_sparing(&self, event: &VerifiedEvent, spare_mentions: bool, words: &ContentWords) -> bool {
        let counts = |f: &crate::protocol::Filter| {
            !spare_mentions || !f.tags.contains_key(&'p') || f.tags.contains_key(&'e') || f.tags.contains_key(&'h')
        };
        event.pubkey() != &self.pubkey
            && self.filters.iter().any(|f| counts(f) && f.matches_with(&event.event, words))
            && !self.ignores.iter().any(|f| f.matches_with(&event.event, words))
    }
}

/// A relay URL as the relay names itself in a POST and compares `relay` tags: lowercase scheme and host, no default
/// port, `/` for an empty path (`WSS://Relay.Example.com:443` is `wss://relay.example.com/`). None when not a URL.
pub fn normalise_relay_url(url: &str) -> Option<String> {
    url::Url::parse(url.trim()).ok().map(String::from)
}

/// Two relay URLs name the same relay (normalised, a trailing slash aside).
fn same_relay(tag: &str, own: &str) -> bool {
    normalise_relay_url(tag).is_some_and(|tag| tag.trim_end_matches('/') == own.trim_end_matches('/'))
}

/// Reads a kind 30390 event. `own_url` is this relay's normalised public URL.
pub fn parse(
    event: &VerifiedEvent,
    own_url: &str,
    config: &PushConfig,
    bounds: &FilterBounds,
) -> Result<Subscription, Refusal> {
    let allow_private = config.unifiedpush.allow_private_addresses;
    let tags: Vec<&[String]> = event.event.tags.iter().map(|t| t.as_slice()).collect();
    let values = |name: &str| -> Vec<Option<&String>> {
        tags.iter().filter(|t| t[0] == name).map(|t| t.get(1)).collect::<Vec<_>>()
    };
    let d = match values("d").first() {
        Some(Some(d)) => (*d).clone(),
        _ => return Err(Refusal::invalid("a push subscription needs a d tag")),
    };
    if !values("relay").iter().flatten().any(|url| same_relay(url, own_url)) {
        return Err(Refusal::invalid(format!(
            "this push subscription names other relays only (relay tags must include {own_url})"
        )));
    }
    let filters = filters_of(&values("filter"), "filter", config.max_subscription_filters, bounds)?;
    if filters.is_empty() {
        return Err(Refusal::invalid("a push subscription needs at least one filter tag"));
    }
    let ignores = filters_of(&values("ignore"), "ignore", config.max_subscription_filters, bounds)?;
    let callback = match values("callback").as_slice() {
        [Some(callback)] => (*callback).clone(),
        _ => return Err(Refusal::invalid("a push subscription needs exactly one callback tag")),
    };
    check_callback(&callback, config.max_callback_length, allow_private)?;
    Ok(Subscription {
        pubkey: *event.pubkey(),
        d,
        event_id: *event.id(),
        created_at: event.created_at(),
        callback,
        filters,
        ignores,
        include_event: tags.iter().any(|t| t[0] == "include_event"),
        expires_at: event.expiration(),
    })
}

/// The filters of the `filter` (or `ignore`) tags: NIP-01 filter JSON, none matching every event.
fn filters_of(
    values: &[Option<&String>],
    name: &str,
    max: usize,
    bounds: &FilterBounds,
) -> Result<Vec<Filter>, Refusal> {
    if values.len() > max {
        return Err(Refusal::invalid(format!("a push subscription may have at most {max} {name} tags")));
    }
    let mut filters = Vec::with_capacity(values.len());
    for (n, value) in values.iter().enumerate() {
        let n = n + 1;
        let json =
            value.ok_or_else(|| Refusal::invalid(format!("{name} tag {n} is not a NIP-01 filter: it is empty")))?;
        if json.len() > bounds.max_length {
            return Err(Refusal::invalid(format!("{name} tag {n} is longer than {} bytes", bounds.max_length)));
        }
        let filter = serde_json::from_str(json)
            .map_err(|e| e.to_string())
            .and_then(|value| Filter::from_json(&value))
            .map_err(|why| Refusal::invalid(format!("{name} tag {n} is not a NIP-01 filter: {why}")))?;
        if filter.ids.is_none() && filter.authors.is_none() && filter.kinds.is_none() && filter.tags.is_empty() {
            return Err(Refusal::invalid(format!("{name} tag {n} matches every event")));
        }
        if let Some(why) = filter.search_refusal(bounds.max_search_terms, bounds.max_search_length) {
            return Err(Refusal::new(why.prefix(), format!("{} (in {name} tag {n})", why.message())));
        }
        filters.push(filter);
    }
    Ok(filters)
}

/// A callback is chosen by whoever subscribes, so it is not trusted: `https://` (plain `http://` too with
/// `allow_private`), not too long, and not an address literal on a private network. A name is checked as the
/// client connects (`senders::CheckedResolver`).
fn check_callback(callback: &str, max_length: usize, allow_private: bool) -> Result<(), Refusal> {
    if callback.len() > max_length {
        return Err(Refusal::invalid(format!("callback is longer than {max_length} characters")));
    }
    let https_only = || Refusal::invalid("callback must be an https:// URL");
    let url = url::Url::parse(callback).map_err(|_| https_only())?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(https_only()),
    }
    if url.host().is_none() {
        return Err(https_only());
    }
    if !allow_private && crate::net::check_literal_host(&url).is_err() {
        return Err(Refusal::invalid(format!("callback {callback} is on a non-public address")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;

    use super::*;

    const OWN: &str = "wss://relay.example.com/";

    fn event(tags: &[&[&str]]) -> VerifiedEvent {
        let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
        let event = EventBuilder::new(Kind::Custom(SUBSCRIPTION_KIND), "").tags(tags);
        VerifiedEvent::new(event.finalize(&Keys::generate()).unwrap())
    }

    fn config(allow_private: bool) -> PushConfig {
        let mut config = PushConfig::default();
        config.unifiedpush.allow_private_addresses = allow_private;
        config
    }

    fn refusal(tags: &[&[&str]]) -> String {
        parse(&event(tags), OWN, &config(false), &FilterBounds::default()).unwrap_err().to_string()
    }

    const D: &[&str] = &["d", "x"];
    const RELAY: &[&str] = &["relay", "wss://relay.example.com"];
    const FILTER: &[&str] = &["filter", r#"{"kinds":[1]}"#];
    const CALLBACK: &[&str] = &["callback", "https://push.example.com/cb"];

    #[test]
    fn relay_urls_are_normalised() {
        assert_eq!(normalise_relay_url("WSS://Relay.Example.com:443").unwrap(), OWN);
        assert_eq!(normalise_relay_url("ws://127.0.0.1:7777").unwrap(), "ws://127.0.0.1:7777/");
        assert!(same_relay("wss://RELAY.example.com:443/", OWN));
        assert!(!same_relay("wss://relay.example.com:444/", OWN));
        assert!(!same_relay("not a url", OWN));
    }

    #[test]
    fn a_full_subscription_is_read() {
        let ignore: &[&str] = &["ignore", r##"{"#t":["spam"]}"##];
        let tags = [D, &["relay", "wss://other.example"], &["relay", "WSS://relay.example.com:443/"], FILTER, ignore];
        let event = event(&[&tags[..], &[CALLBACK, &["include_event"], &["expiration", "2000000000"]]].concat());
        let sub = parse(&event, OWN, &config(false), &FilterBounds::default()).unwrap();
        assert_eq!((sub.d.as_str(), sub.callback.as_str()), ("x", "https://push.example.com/cb"));
        assert_eq!((sub.filters.len(), sub.ignores.len(), sub.include_event), (1, 1, true));
        assert_eq!(sub.expires_at, Some(2_000_000_000));
        assert_eq!(sub.event_id, *event.id());
    }

    #[test]
    fn every_refusal_says_why() {
        let cases: Vec<(Vec<&[&str]>, &str)> = vec![
            (vec![RELAY, FILTER, CALLBACK], "invalid: a push subscription needs a d tag"),
            (vec![D, &["relay", "wss://other.example"], FILTER, CALLBACK], "invalid: this push subscription names"),
            (vec![D, FILTER, CALLBACK], "invalid: this push subscription names other relays only"),
            (vec![D, RELAY, CALLBACK], "invalid: a push subscription needs at least one filter tag"),
            (vec![D, RELAY, &["filter", "{}"], CALLBACK], "invalid: filter tag 1 matches every event"),
            (vec![D, RELAY, FILTER, &["filter", "{"], CALLBACK], "invalid: filter tag 2 is not a NIP-01 filter"),
            (vec![D, RELAY, FILTER, &["filter", r#"{"kinds":"x"}"#], CALLBACK], "invalid: filter tag 2 is not"),
            (vec![D, RELAY, FILTER, &["ignore", "[]"], CALLBACK], "invalid: ignore tag 1 is not a NIP-01 filter"),
            (vec![D, RELAY, FILTER], "invalid: a push subscription needs exactly one callback tag"),
            (vec![D, RELAY, FILTER, CALLBACK, CALLBACK], "invalid: a push subscription needs exactly one callback"),
            (vec![D, RELAY, FILTER, &["callback", "ftp://x.example/"]], "invalid: callback must be an https:// URL"),
            (vec![D, RELAY, FILTER, &["callback", "http://x.example/"]], "invalid: callback must be an https:// URL"),
            (vec![D, RELAY, FILTER, &["callback", "nonsense"]], "invalid: callback must be an https:// URL"),
            (vec![D, RELAY, FILTER, &["callback", "https://127.0.0.1/"]], "invalid: callback https://127.0.0.1/ is on"),
            (vec![D, RELAY, FILTER, &["callback", "https://[::1]/x"]], "non-public address"),
            (vec![D, RELAY, FILTER, &["callback", "https://localhost/x"]], "non-public address"),
        ];
        for (tags, expected) in cases {
            let why = refusal(&tags);
            assert!(why.starts_with("invalid: ") && why.contains(expected), "{tags:?}: {why}");
        }
        let long = format!("https://x.example/{}", "a".repeat(1024));
        assert_eq!(
            refusal(&[D, RELAY, FILTER, &["callback", &long]]),
            "invalid: callback is longer than 1024 characters"
        );
        let long = format!(r##"{{"kinds":[1],"#t":["{}"]}}"##, "x".repeat(2048));
        assert_eq!(
            refusal(&[D, RELAY, CALLBACK, &["filter", &long]]),
            "invalid: filter tag 1 is longer than 2048 bytes"
        );
        let wordy =
            format!(r#"{{"kinds":[1],"search":"{}"}}"#, (0..17).map(|n| format!("w{n}")).collect::<Vec<_>>().join(" "));
        assert_eq!(
            refusal(&[D, RELAY, CALLBACK, &["filter", &wordy]]),
            "invalid: search has 17 different words (max 16) (in filter tag 1)"
        );
        let many = vec![FILTER; 17];
        assert_eq!(
            refusal(&[&[D, RELAY, CALLBACK][..], &many].concat()),
            "invalid: a push subscription may have at most 16 filter tags"
        );
    }

    #[test]
    fn private_callbacks_and_plain_http_with_the_switch() {
        let tags: &[&[&str]] = &[D, RELAY, FILTER, &["callback", "http://127.0.0.1:9/cb"]];
        assert!(parse(&event(tags), OWN, &config(true), &FilterBounds::default()).is_ok());
        assert!(parse(&event(tags), OWN, &config(false), &FilterBounds::default()).is_err());
    }

    #[test]
    fn spared_hellthreads_reach_filters_by_group_only() {
        let by_p: &[&str] = &["filter", r##"{"kinds":[1],"#p":["aa"]}"##];
        let by_group: &[&str] = &["filter", r##"{"kinds":[1],"#p":["aa"],"#h":["g"]}"##];
        let event = |tags: &[&[&str]]| {
            let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
            VerifiedEvent::new(EventBuilder::new(Kind::from(1u16), "").tags(tags).finalize(&Keys::generate()).unwrap())
        };
        let mention = event(&[&["p", "aa"], &["h", "g"]]);
        let bounds = FilterBounds::default();
        let p_only = parse(&self::event(&[D, RELAY, by_p, CALLBACK]), OWN, &config(false), &bounds).unwrap();
        let grouped = parse(&self::event(&[D, RELAY, by_group, CALLBACK]), OWN, &config(false), &bounds).unwrap();
        let words = ContentWords::new(1, "");
        assert!(p_only.wants_sparing(&mention, false, &words) && !p_only.wants_sparing(&mention, true, &words));
        assert!(grouped.wants_sparing(&mention, true, &words), "through the group");
    }

    #[test]
    fn own_events_and_ignored_ones_are_not_wanted() {
        let ignore: &[&str] = &["ignore", r##"{"#t":["spam"]}"##];
        let sub = parse(&event(&[D, RELAY, FILTER, ignore, CALLBACK]), OWN, &config(false), &FilterBounds::default())
            .unwrap();
        let by = |keys: &Keys, tags: &[&[&str]]| {
            let tags = tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap());
            VerifiedEvent::new(EventBuilder::new(Kind::from(1u16), "hi").tags(tags).finalize(keys).unwrap())
        };
        let stranger = Keys::generate();
        assert!(sub.wants(&by(&stranger, &[])));
        assert!(!sub.wants(&by(&stranger, &[&["t", "spam"]])));
        let mut own = sub.clone();
        own.pubkey = stranger.public_key().to_bytes();
        assert!(!own.wants(&by(&stranger, &[])));
    }
}
