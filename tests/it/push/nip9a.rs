//! NIP-9a push subscriptions end to end: a user publishes a kind 30390 event over a real WebSocket, someone
//! publishes a matching event, and the local callback stand-in receives the POST (or, where the rules say so,
//! nothing).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use pushrelay::Config;
use pushrelay::hooks::RemoteEvents;
use pushrelay::protocol::VerifiedEvent;
use serde_json::{Value, json};

/// The relay's public URL as it names itself in a POST (`[server] public_url`, normalised).
const RELAY_URL: &str = "ws://127.0.0.1:7777/";

struct Setup {
    callback: StandIn,
    relay: TestRelay,
    client: Client,
    user: Keys,
    friend: Keys,
}

impl Setup {
    async fn new(adjust: impl FnOnce(&mut Config)) -> Self {
        let callback = StandIn::start().await;
        let relay = start_with(&callback.url, adjust).await;
        let client = relay.client().await;
        Self { callback, relay, client, user: Keys::generate(), friend: Keys::generate() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.callback.url)
    }

    /// A subscription by the user naming this relay, posting to `path` on the stand-in.
    fn subscription(&self, d: &str, filters: &[Value], path: &str, extra: &[&[&str]]) -> Event {
        subscription(&self.user, &self.relay, d, filters, &self.url(path), extra)
    }

    /// A note by the friend mentioning the user (distinct each call).
    fn mention(&self) -> Event {
        let content = format!("hello {}", rand::random::<u64>());
        sign(&self.friend, 1, &content, &[&["p", &self.user.public_key().to_hex()]], now())
    }

    fn mentions_filter(&self) -> Value {
        json!({"kinds": [1], "#p": [self.user.public_key().to_hex()]})
    }

    fn push(&self) -> Arc<pushrelay::push::PushService> {
        self.relay.push()
    }

    /// A client authenticated as `keys`.
    async fn authenticated(&self, keys: &Keys) -> Client {
        let mut client = self.relay.client().await;
        assert!(client.auth(keys, &self.relay.config.server.public_url).await.0);
        client
    }
}

fn subscription(
    user: &Keys,
    relay: &TestRelay,
    d: &str,
    filters: &[Value],
    callback: &str,
    extra: &[&[&str]],
) -> Event {
    let filters: Vec<String> = filters.iter().map(Value::to_string).collect();
    let (d_tag, relay_tag) = (["d", d], ["relay", relay.config.server.public_url.as_str()]);
    let mut tags: Vec<&[&str]> = vec![&d_tag, &relay_tag];
    let filter_tags: Vec<[&str; 2]> = filters.iter().map(|f| ["filter", f.as_str()]).collect();
    tags.extend(filter_tags.iter().map(|t| &t[..]));
    let callback_tag = ["callback", callback];
    tags.push(&callback_tag);
    tags.extend_from_slice(extra);
    sign(user, 30390, "", &tags, now())
}

async fn nip9a_posts_id_and_relay_to_the_callback() {
    let mut s = Setup::new(|_| {}).await;
    let sub = s.subscription("a", &[s.mentions_filter()], "/cb/1", &[]);
    assert_eq!(s.client.publish(&sub).await, (true, String::new()));

    let mention = s.mention();
    s.client.publish_ok(&mention).await;
    let request = s.callback.next().await;
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/cb/1"));
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.json(), json!({"id": id_of(&mention), "relay": RELAY_URL}));

    // The user's own note, and a kind the filter does not name, post nothing.
    let own = sign(&s.user, 1, "me", &[&["p", &s.user.public_key().to_hex()]], now());
    s.client.publish_ok(&own).await;
    let reaction = sign(&s.friend, 7, "+", &[&["p", &s.user.public_key().to_hex()]], now());
    s.client.publish_ok(&reaction).await;
    s.callback.expect_none().await;
}

async fn nip9a_include_event_and_ignore() {
    let mut s = Setup::new(|_| {}).await;
    let ignore = json!({"#t": ["spam"]}).to_string();
    let sub = s.subscription("a", &[s.mentions_filter()], "/cb/1", &[&["include_event"], &["ignore", &ignore]]);
    s.client.publish_ok(&sub).await;

    let mention = s.mention();
    s.client.publish_ok(&mention).await;
    let body = s.callback.next().await.json();
    assert_eq!(body["id"], id_of(&mention));
    assert_eq!(body["event"], serde_json::to_value(&mention).unwrap());

    let p = s.user.public_key().to_hex();
    s.client.publish_ok(&sign(&s.friend, 1, "buy now", &[&["p", &p], &["t", "spam"]], now())).await;
    s.callback.expect_none().await;
}

async fn nip9a_callback_404_and_410_end_the_subscription() {
    let mut s = Setup::new(|_| {}).await;
    let sub = s.subscription("a", &[s.mentions_filter()], "/cb/gone", &[]);
    s.client.publish_ok(&sub).await;
    let mut author = s.authenticated(&s.user).await;
    assert_eq!(author.req_ids("before", &[json!({"kinds": [30390]})]).await, vec![id_of(&sub)]);

    s.callback.answer_next(404, "");
    s.client.publish_ok(&s.mention()).await;
    assert_eq!(s.callback.next().await.answered, 404);
    let push = s.push();
    assert!(eventually(|| push.audience.callbacks.is_empty()).await, "the subscription ended");
    assert!(author.req_ids("after", &[json!({"kinds": [30390]})]).await.is_empty(), "its event was deleted");
    s.client.publish_ok(&s.mention()).await;
    s.callback.expect_none().await;

    // 410 likewise.
    s.client.publish_ok(&s.subscription("b", &[s.mentions_filter()], "/cb/gone2", &[])).await;
    s.callback.answer_next(410, "");
    s.client.publish_ok(&s.mention()).await;
    assert_eq!(s.callback.next().await.answered, 410);
    assert!(eventually(|| push.audience.callbacks.is_empty()).await, "the subscription ended");
    s.client.publish_ok(&s.mention()).await;
    s.callback.expect_none().await;
}

async fn nip9a_callback_503_is_retried_then_delivered_once() {
    let mut s = Setup::new(|_| {}).await;
    s.client.publish_ok(&s.subscription("a", &[s.mentions_filter()], "/cb/1", &[])).await;
    s.callback.answer_next(503, "");
    s.callback.answer_next(503, "");
    let mention = s.mention();
    s.client.publish_ok(&mention).await;
    for answered in [503, 503, 200] {
        let request = s.callback.next().await;
        assert_eq!(request.answered, answered);
        assert_eq!(request.json()["id"], id_of(&mention));
    }
    s.callback.expect_none().await;
    let push = s.push();
    assert!(eventually(|| push.stats().sent.load(Ordering::Relaxed) == 1).await);
}

async fn nip9a_refusals() {
    let mut s = Setup::new(|c| c.push.max_subscriptions_per_pubkey = 2).await;
    let kinds = &[json!({"kinds": [1]})];
    let cb = s.url("/cb");
    let (user, relay) = (&s.user, &s.relay);
    let bad: Vec<(Event, &str)> = vec![
        (
            sign(
                user,
                30390,
                "",
                &[&["d", "x"], &["relay", "wss://other.example"], &["filter", "{\"kinds\":[1]}"], &["callback", &cb]],
                now(),
            ),
            "invalid: this push subscription names other relays only",
        ),
        (subscription(user, relay, "x", &[], &cb, &[]), "invalid: a push subscription needs at least one filter tag"),
        (subscription(user, relay, "x", &[json!({})], &cb, &[]), "invalid: filter tag 1 matches every event"),
        (
            subscription(user, relay, "x", kinds, &cb, &[&["filter", "{\"kinds\":"]]),
            "invalid: filter tag 2 is not a NIP-01 filter",
        ),
        (
            subscription(user, relay, "x", kinds, &cb, &[&["callback", &cb]]),
            "invalid: a push subscription needs exactly one callback tag",
        ),
        (
            subscription(user, relay, "x", kinds, "ftp://push.example/cb", &[]),
            "invalid: callback must be an https:// URL",
        ),
    ];
    for (event, expected) in bad {
        let (accepted, reason) = s.client.publish(&event).await;
        assert!(!accepted && reason.starts_with(expected), "{expected}: {reason}");
    }

    // The cap: two subscriptions, a new version of one of them, then a third refused.
    s.client.publish_ok(&subscription(user, relay, "a", kinds, &cb, &[])).await;
    s.client.publish_ok(&subscription(user, relay, "b", kinds, &cb, &[])).await;
    let newer = sign(
        user,
        30390,
        "",
        &[&["d", "a"], &["relay", "ws://127.0.0.1:7777/"], &["filter", "{\"kinds\":[7]}"], &["callback", &cb]],
        now() + 1,
    );
    s.client.publish_ok(&newer).await;
    let (accepted, reason) = s.client.publish(&subscription(user, relay, "c", kinds, &cb, &[])).await;
    assert!(!accepted);
    assert_eq!(reason, "blocked: this pubkey has too many push subscriptions (max 2)");
}

async fn nip9a_private_callbacks_are_refused_by_default() {
    let relay = TestRelay::start_with(|_| {}).await;
    let (mut client, user) = (relay.client().await, Keys::generate());
    let kinds = &[json!({"kinds": [1]})];
    for (callback, expected) in [
        ("http://127.0.0.1/cb", "invalid: callback must be an https:// URL"),
        ("https://127.0.0.1/cb", "invalid: callback https://127.0.0.1/cb is on a non-public address"),
        ("https://10.0.0.1/cb", "invalid: callback https://10.0.0.1/cb is on a non-public address"),
    ] {
        let (accepted, reason) = client.publish(&subscription(&user, &relay, "a", kinds, callback, &[])).await;
        assert!(!accepted && reason == expected, "{callback}: {reason}");
    }
}

async fn nip9a_subscriptions_are_served_only_to_their_author() {
    let mut s = Setup::new(|_| {}).await;
    let stranger = Keys::generate();
    let mut anonymous = s.relay.client().await;
    anonymous.send(json!(["REQ", "subs", {"kinds": [30390]}])).await;
    let answer = anonymous.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("auth-required:"), "{answer}");

    let mut other = s.authenticated(&stranger).await;
    assert!(other.req_ids("open", &[json!({"authors": [s.user.public_key().to_hex()]})]).await.is_empty());
    let sub = s.subscription("a", &[s.mentions_filter()], "/cb/1", &[]);
    s.client.publish_ok(&sub).await;
    other.expect_silence().await;
    assert!(other.req_ids("subs", &[json!({"kinds": [30390]})]).await.is_empty());

    let mut author = s.authenticated(&s.user).await;
    assert_eq!(author.req_ids("subs", &[json!({"kinds": [30390]})]).await, vec![id_of(&sub)]);
}

async fn nip9a_read_gating_keeps_others_dms_from_subscribers() {
    let mut s = Setup::new(|_| {}).await;
    s.client.publish_ok(&s.subscription("a", &[json!({"kinds": [4]})], "/cb/dm", &[])).await;
    let stranger = Keys::generate();
    s.client.publish_ok(&dm(&s.friend, &stranger)).await;
    s.callback.expect_none().await;
    let to_user = dm(&s.friend, &s.user);
    s.client.publish_ok(&to_user).await;
    assert_eq!(s.callback.next().await.json()["id"], id_of(&to_user));
}

async fn nip9a_deletion_by_address_ends_it() {
    let mut s = Setup::new(|_| {}).await;
    s.client.publish_ok(&s.subscription("a", &[s.mentions_filter()], "/cb/1", &[])).await;
    s.client.publish_ok(&s.mention()).await;
    s.callback.next().await;
    let address = format!("30390:{}:a", s.user.public_key().to_hex());
    s.client.publish_ok(&sign(&s.user, 5, "", &[&["a", &address]], now())).await;
    s.client.publish_ok(&s.mention()).await;
    s.callback.expect_none().await;
}

async fn nip9a_expiration_ends_it() {
    let mut s = Setup::new(|_| {}).await;
    let expiration = (now() + 10).to_string();
    s.client.publish_ok(&s.subscription("a", &[s.mentions_filter()], "/cb/1", &[&["expiration", &expiration]])).await;
    s.client.publish_ok(&s.mention()).await;
    s.callback.next().await;
    // Less than the delivery loop's lease (120 s), so that the first job, finished or not, is not taken again.
    s.relay.clock().advance(std::time::Duration::from_secs(30));
    s.client.publish_ok(&s.mention()).await;
    s.callback.expect_none().await;
}

async fn nip9a_subscriptions_are_read_again_at_start() {
    let mut callback = StandIn::start().await;
    let relay = start(&callback.url).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let filter = json!({"kinds": [1], "#p": [user.public_key().to_hex()]});
    let sub = subscription(&user, &relay, "a", &[filter], &format!("{}/cb/1", callback.url), &[]);
    relay.client().await.publish_ok(&sub).await;
    let relay = relay.restart().await;
    let mention = sign(&friend, 1, "after the restart", &[&["p", &user.public_key().to_hex()]], now());
    relay.client().await.publish_ok(&mention).await;
    assert_eq!(callback.next().await.json()["id"], id_of(&mention));
}

async fn nip9a_watched_relay_events_are_not_forwarded() {
    let mut s = Setup::new(|_| {}).await;
    s.client.publish_ok(&s.subscription("a", &[s.mentions_filter()], "/cb/1", &[])).await;
    s.push().matching.remote_event(Arc::new(VerifiedEvent::new(s.mention())));
    s.callback.expect_none().await;
}

/// 500 subscriptions from throwaway keys, each filter carrying a 60,000-word search, held a bystander's `OK` for
/// 2.3 s: every subscription was scanned, and every search split again, inside the writer's commit for every event.
/// A filter tag now has a size and its search the REQ's limits, the relay a cap on subscriptions, and matching looks
/// only at subscriptions filed under what the event has (here: the first word of a search).
async fn nip9a_filters_are_bounded_and_matched_by_index() {
    let mut s = Setup::new(|c| c.push.max_subscriptions = 2).await;
    let wordy = json!({"kinds": [1], "search": vec!["ab"; 20_000].join(" ")});
    let (accepted, why) = s.client.publish(&s.subscription("a", &[wordy], "/cb/1", &[])).await;
    assert_eq!((accepted, why.as_str()), (false, "invalid: filter tag 1 is longer than 2048 bytes"));

    let pizza = json!({"kinds": [1], "search": "pizza party"});
    s.client.publish_ok(&s.subscription("a", &[pizza], "/cb/pizza", &[])).await;
    let other = subscription(&Keys::generate(), &s.relay, "b", &[json!({"kinds": [7]})], &s.url("/cb/7"), &[]);
    s.client.publish_ok(&other).await;
    let third = subscription(&Keys::generate(), &s.relay, "c", &[json!({"kinds": [1]})], &s.url("/cb/3"), &[]);
    let (accepted, why) = s.client.publish(&third).await;
    assert_eq!(
        (accepted, why.as_str()),
        (false, "rate-limited: this relay holds as many push subscriptions as it may")
    );
    // A new version of one in force is no new subscription (a second later: within one, the lower id wins).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.client.publish_ok(&s.subscription("a", &[json!({"kinds": [1], "search": "Pizza"})], "/cb/pizza", &[])).await;

    s.client.publish_ok(&note(&s.friend, "no food here")).await;
    let pizza_note = note(&s.friend, "PIZZA for everyone");
    s.client.publish_ok(&pizza_note).await;
    let request = s.callback.next().await;
    assert_eq!((request.path.as_str(), request.json()["id"].clone()), ("/cb/pizza", json!(id_of(&pizza_note))));
    s.callback.expect_none().await;
}

/// Found with `scripts/doors`: 10,000 subscriptions whose filters name only a kind and words, made from one address,
/// were each a candidate for every note, and held every note's `OK` for 80 ms. Such broad subscriptions are capped on
/// the relay, and one address makes at most `ip_subscriptions_per_hour`.
async fn nip9a_broad_subscriptions_and_one_address_are_capped() {
    let mut s = Setup::new(|c| {
        c.push.max_broad_subscriptions = 1;
        c.limits.ip_subscriptions_per_hour = 3;
    })
    .await;
    s.client.publish_ok(&s.subscription("a", &[json!({"kinds": [1]})], "/cb/a", &[])).await;
    let broad = subscription(&Keys::generate(), &s.relay, "b", &[json!({"kinds": [1]})], &s.url("/cb/b"), &[]);
    let (accepted, why) = s.client.publish(&broad).await;
    assert!(!accepted && why.starts_with("rate-limited: this relay holds as many push subscriptions with a filter"));
    for d in ["c", "d"] {
        s.client.publish_ok(&s.subscription(d, &[s.mentions_filter()], &format!("/cb/{d}"), &[])).await;
    }
    let (accepted, why) = s.client.publish(&s.subscription("e", &[s.mentions_filter()], "/cb/e", &[])).await;
    assert_eq!(
        (accepted, why.as_str()),
        (false, "rate-limited: too many push subscriptions from your address, slow down")
    );
}

/// 300 subscriptions from 30 throwaway keys, each a different path on one host: one ordinary note by anyone made
/// 300 POSTs to that host. One event now POSTs to at most `max_callbacks_per_host` callbacks on one host, those that
/// asked for it by id, author or tag first.
async fn nip9a_one_event_posts_to_one_host_a_bounded_number_of_times() {
    let mut s = Setup::new(|c| c.push.max_callbacks_per_host = 3).await;
    for n in 0..5 {
        let broad =
            subscription(&Keys::generate(), &s.relay, "x", &[json!({"kinds": [1]})], &s.url(&format!("/cb/{n}")), &[]);
        s.client.publish_ok(&broad).await;
    }
    s.client.publish_ok(&s.subscription("mine", &[s.mentions_filter()], "/cb/mine", &[])).await;
    s.client.publish_ok(&s.mention()).await;
    let mut paths: Vec<String> = Vec::new();
    for _ in 0..3 {
        paths.push(s.callback.next().await.path);
    }
    s.callback.expect_none().await;
    assert!(paths.contains(&"/cb/mine".to_owned()), "the subscription that asked by #p goes first: {paths:?}");
    let metrics = reqwest::get(format!("{}/metrics", s.relay.http_url())).await.unwrap().text().await.unwrap();
    let capped = r#"pushrelay_push_jobs_total{service="callback",outcome="dropped",reason="host_cap"}"#;
    assert!(metrics.lines().any(|l| l.starts_with(capped) && !l.ends_with(" 0")), "{metrics}");
}

async fn nip9a_is_listed_in_nip11() {
    let relay = TestRelay::start().await;
    let document = relay.nip11().await;
    assert_eq!(document["supported_nip_names"], json!(["9a"]));
    assert!(document["supported_nips"].as_array().unwrap().iter().all(serde_json::Value::is_u64));
    assert_eq!(document["read_restricted_kinds"], json!([4, 1059, 1060, 14, 9009, 30390]));
    let off = TestRelay::start_with(|c| c.push.enabled = false).await;
    let document = off.nip11().await;
    assert_eq!(document["supported_nips"], json!([1, 4, 9, 11, 17, 29, 40, 42, 45, 50, 59, 62, 70, 77]));
    assert_eq!(document["supported_nip_names"], json!([]));
    assert_eq!(document["read_restricted_kinds"], json!([4, 1059, 1060, 14, 9009]));
}

/// Typed clients read the whole document or nothing: rust-nostr's reader refuses a `supported_nips` entry that is
/// not an integer (it once held the string "9a"), and a pubkey that is not one.
async fn nip11_is_read_by_the_nostr_crate() {
    use nostr::nips::nip11::RelayInformationDocument;
    for relay in [TestRelay::start().await, TestRelay::start_with(|c| c.relay.pubkey = Some(hex_pubkey())).await] {
        let document = relay.nip11().await;
        let read = RelayInformationDocument::from_json(document.to_string()).expect("rust-nostr reads our NIP-11");
        assert!(read.supported_nips.unwrap().contains(&97));
    }
}

fn hex_pubkey() -> String {
    Keys::generate().public_key().to_hex()
}

crate::on_both_backends!(
    nip9a_posts_id_and_relay_to_the_callback,
    nip9a_include_event_and_ignore,
    nip9a_callback_404_and_410_end_the_subscription,
    nip9a_callback_503_is_retried_then_delivered_once,
    nip9a_refusals,
    nip9a_private_callbacks_are_refused_by_default,
    nip9a_subscriptions_are_served_only_to_their_author,
    nip9a_read_gating_keeps_others_dms_from_subscribers,
    nip9a_deletion_by_address_ends_it,
    nip9a_expiration_ends_it,
    nip9a_subscriptions_are_read_again_at_start,
    nip9a_watched_relay_events_are_not_forwarded,
    nip9a_is_listed_in_nip11,
    nip9a_filters_are_bounded_and_matched_by_index,
    nip9a_one_event_posts_to_one_host_a_bounded_number_of_times,
    nip9a_broad_subscriptions_and_one_address_are_capped,
    nip11_is_read_by_the_nostr_crate,
);
