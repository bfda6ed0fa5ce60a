//! Beyond NIP-01, over a real WebSocket: deletion (NIP-09), expiration (NIP-40), AUTH and read gating (NIP-42),
//! COUNT (NIP-45), protected events (NIP-70), requests to vanish (NIP-62), policy lists and rate limits.

use std::time::Duration;

use crate::common::*;
use nostr::prelude::*;
use serde_json::{Value, json};

fn by(keys: &Keys) -> Value {
    json!({"authors": [keys.public_key().to_hex()]})
}

// ---- NIP-09 ----

async fn deletion_by_id_removes_only_the_authors_own_events() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let (alice, mallory) = (Keys::generate(), Keys::generate());
    let doomed = note(&alice, "regret");
    let kept = note(&alice, "fine");
    client.publish_ok(&doomed).await;
    client.publish_ok(&kept).await;

    // Someone else's deletion does nothing.
    client.publish_ok(&sign(&mallory, 5, "", &[&["e", &id_of(&doomed)]], now())).await;
    assert_eq!(client.req_ids("a", &[by(&alice)]).await.len(), 2);
    client.close("a").await;

    let deletion = sign(&alice, 5, "oops", &[&["e", &id_of(&doomed)]], now());
    client.publish_ok(&deletion).await;
    let ids = client.req_ids("b", &[by(&alice)]).await;
    assert!(!ids.contains(&id_of(&doomed)));
    assert!(ids.contains(&id_of(&kept)));
    assert!(ids.contains(&id_of(&deletion)), "the deletion itself is stored and served");
    client.close("b").await;

    // Sent again, the deleted event is refused.
    assert_eq!(client.publish(&doomed).await, (false, "blocked: this event was deleted by its author".into()));
    // Mallory's "deletion" did not block anything.
    let mallory_target = note(&alice, "not mallory's to delete");
    client.publish_ok(&sign(&mallory, 5, "", &[&["e", &id_of(&mallory_target)]], now())).await;
    client.publish_ok(&mallory_target).await;
}

async fn a_deletion_that_arrives_first_blocks_the_event_later() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    let event = note(&alice, "late");
    client.publish_ok(&sign(&alice, 5, "", &[&["e", &id_of(&event)]], now())).await;
    let (accepted, reason) = client.publish(&event).await;
    assert!(!accepted);
    assert!(reason.starts_with("blocked:"), "{reason}");
}

async fn deleting_a_deletion_does_nothing() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    let event = note(&alice, "gone");
    client.publish_ok(&event).await;
    let deletion = sign(&alice, 5, "", &[&["e", &id_of(&event)]], now());
    client.publish_ok(&deletion).await;
    client.publish_ok(&sign(&alice, 5, "undo", &[&["e", &id_of(&deletion)]], now())).await;
    let ids = client.req_ids("a", &[json!({"kinds": [5], "authors": [alice.public_key().to_hex()]})]).await;
    assert!(ids.contains(&id_of(&deletion)));
    client.close("a").await;
    assert!(!client.publish(&event).await.0, "still deleted");
}

async fn deletion_by_address_covers_versions_up_to_its_time() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    let t = now() - 100;
    let article = sign(&alice, 30023, "v1", &[&["d", "post"]], t);
    let other = sign(&alice, 30023, "other", &[&["d", "other"]], t);
    client.publish_ok(&article).await;
    client.publish_ok(&other).await;
    let address = format!("30023:{}:post", alice.public_key().to_hex());
    client.publish_ok(&sign(&alice, 5, "", &[&["a", &address]], t + 10)).await;

    let kinds = json!({"kinds": [30023], "authors": [alice.public_key().to_hex()]});
    assert_eq!(client.req_ids("a", std::slice::from_ref(&kinds)).await, vec![id_of(&other)]);
    client.close("a").await;
    // An older version is refused; a version newer than the deletion is welcome.
    let (accepted, reason) = client.publish(&sign(&alice, 30023, "v0.5", &[&["d", "post"]], t + 5)).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    let newer = sign(&alice, 30023, "v2", &[&["d", "post"]], t + 20);
    client.publish_ok(&newer).await;
    assert_eq!(client.req_ids("b", &[kinds]).await.len(), 2);
}

// ---- NIP-40 ----

#[tokio::test]
async fn expired_events_are_refused_and_expiring_ones_vanish_on_time_then_are_purged() {
    let relay = TestRelay::start_with(|c| c.database.purge_interval_secs = 1).await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    let stale = sign(&alice, 1, "stale", &[&["expiration", &(now() - 1).to_string()]], now() - 10);
    let (accepted, reason) = client.publish(&stale).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");

    let expires = now() + 2;
    let fleeting = sign(&alice, 1, "fleeting", &[&["expiration", &expires.to_string()]], now());
    client.publish_ok(&fleeting).await;
    assert_eq!(client.req_ids("a", &[by(&alice)]).await, vec![id_of(&fleeting)]);
    client.close("a").await;
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(client.req_ids("b", &[by(&alice)]).await.is_empty(), "not served once expired");
    client.close("b").await;

    // The purge task removes it from the database file.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", relay.db_path().display())).await.unwrap();
    let mut remaining = 1;
    for _ in 0..50 {
        remaining = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE expires_at IS NOT NULL")
            .fetch_one(&db)
            .await
            .unwrap();
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(remaining, 0);
}

// ---- NIP-42 ----

async fn auth_checks_kind_challenge_relay_and_time() {
    let relay = TestRelay::start().await;
    let url = relay.config.server.public_url.clone();
    let mut client = relay.client().await;
    let alice = Keys::generate();
    let challenge = client.challenge.clone();
    assert!(!challenge.is_empty());

    for (event, why) in [
        (sign(&alice, 22242, "", &[&["relay", &url], &["challenge", "wrong"]], now()), "challenge"),
        (sign(&alice, 22242, "", &[&["relay", "wss://elsewhere.example"], &["challenge", &challenge]], now()), "relay"),
        (sign(&alice, 1, "", &[&["relay", &url], &["challenge", &challenge]], now()), "kind"),
        (sign(&alice, 22242, "", &[&["relay", &url], &["challenge", &challenge]], now() - 3600), "created_at"),
    ] {
        let (accepted, reason) = client.publish_raw(json!(["AUTH", event])).await;
        assert!(!accepted, "{why}");
        assert!(reason.starts_with("invalid:") && reason.contains(why), "{why}: {reason}");
    }
    assert_eq!(client.auth(&alice, &format!("{url}/")).await, (true, String::new()), "trailing slash is fine");
}

async fn direct_messages_are_served_only_to_their_author_and_recipient() {
    let relay = TestRelay::start().await;
    let url = relay.config.server.public_url.clone();
    let (alice, bob, eve) = (Keys::generate(), Keys::generate(), Keys::generate());
    let (mut publisher, dm, public) = publish_a_dm_and_a_note(&relay, &alice, &bob).await;

    // Unauthenticated: asking for the kind is refused; an open filter hides it.
    let mut anonymous = relay.client().await;
    anonymous.send(json!(["REQ", "dms", {"kinds": [4]}])).await;
    let answer = anonymous.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("auth-required:"), "{answer}");
    assert_eq!(anonymous.req_ids("all", &[by(&alice)]).await, vec![id_of(&public)]);

    let mut bob_client = relay.client().await;
    assert!(bob_client.auth(&bob, &url).await.0);
    assert_eq!(bob_client.req_ids("dms", &[json!({"kinds": [4]})]).await, vec![id_of(&dm)]);
    let mut alice_client = relay.client().await;
    assert!(alice_client.auth(&alice, &url).await.0);
    assert_eq!(alice_client.req_ids("dms", &[json!({"kinds": [4]})]).await, vec![id_of(&dm)]);
    let mut eve_client = relay.client().await;
    assert!(eve_client.auth(&eve, &url).await.0);
    assert!(eve_client.req_ids("dms", &[json!({"kinds": [4]})]).await.is_empty());

    // Live delivery follows the same rule; anonymous's open subscription sees nothing either.
    let dm2 = sign(&alice, 4, "ciphertext 2", &[&["p", &bob.public_key().to_hex()]], now());
    publisher.publish_ok(&dm2).await;
    assert_eq!(bob_client.recv().await, json!(["EVENT", "dms", dm2]));
    eve_client.expect_silence().await;
    anonymous.expect_silence().await;

    // COUNT follows it as well.
    bob_client.send(json!(["COUNT", "n", {"kinds": [4]}])).await;
    assert_eq!(bob_client.recv().await, json!(["COUNT", "n", {"count": 2}]));
    eve_client.send(json!(["COUNT", "n", {"kinds": [4]}])).await;
    assert_eq!(eve_client.recv().await, json!(["COUNT", "n", {"count": 0}]));
    anonymous.send(json!(["COUNT", "n", {"kinds": [4]}])).await;
    let answer = anonymous.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("auth-required:"));
}

/// An operator's long list of restricted kinds (past the point where the SQLite store compares them one by one)
/// hides and serves them the same way.
async fn a_long_list_of_restricted_kinds_hides_them_the_same_way() {
    let relay = TestRelay::start_with(|c| c.auth.read_restricted_kinds.extend(20_100..20_300)).await;
    let url = relay.config.server.public_url.clone();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let (_, dm, public) = publish_a_dm_and_a_note(&relay, &alice, &bob).await;
    let mut anonymous = relay.client().await;
    assert_eq!(anonymous.req_ids("all", &[by(&alice)]).await, vec![id_of(&public)]);
    let mut bob_client = relay.client().await;
    assert!(bob_client.auth(&bob, &url).await.0);
    assert_eq!(bob_client.req_ids("dms", &[json!({"kinds": [4]})]).await, vec![id_of(&dm)]);
}

/// A DM from `author` to `recipient` and a public note of the author's, both stored; with the client that sent them.
async fn publish_a_dm_and_a_note(relay: &TestRelay, author: &Keys, recipient: &Keys) -> (Client, Event, Event) {
    let mut publisher = relay.client().await;
    let dm = sign(author, 4, "ciphertext", &[&["p", &recipient.public_key().to_hex()]], now());
    let public = note(author, "hello world");
    publisher.publish_ok(&dm).await;
    publisher.publish_ok(&public).await;
    (publisher, dm, public)
}

async fn restricted_writes_admit_only_authenticated_allowed_authors() {
    let (writer, outsider) = (Keys::generate(), Keys::generate());
    let allowed = writer.public_key().to_hex();
    let relay = TestRelay::start_with(move |c| {
        c.auth.restrict_writes = true;
        c.auth.write_allowlist = vec![allowed];
    })
    .await;
    let url = relay.config.server.public_url.clone();
    let mut client = relay.client().await;
    let (accepted, reason) = client.publish(&note(&writer, "before auth")).await;
    assert!(!accepted && reason.starts_with("auth-required:"), "{reason}");

    let mut other = relay.client().await;
    assert!(other.auth(&outsider, &url).await.0);
    let (accepted, reason) = other.publish(&note(&outsider, "not on the list")).await;
    assert!(!accepted && reason.starts_with("restricted:"), "{reason}");

    assert!(client.auth(&writer, &url).await.0);
    client.publish_ok(&note(&writer, "allowed")).await;
}

// ---- NIP-45 ----

async fn count_counts_distinct_matches_across_filters() {
    let relay = TestRelay::start().await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    for i in 0..5 {
        client.publish_ok(&sign(&alice, 1, &format!("{i}"), &[&["t", if i < 2 { "x" } else { "y" }]], now())).await;
    }
    client.publish_ok(&sign(&alice, 7, "+", &[&["t", "x"]], now())).await;
    client.send(json!(["COUNT", "c", {"kinds": [1]}, {"#t": ["x"]}])).await;
    assert_eq!(client.recv().await, json!(["COUNT", "c", {"count": 6}]));
    client.send(json!(["COUNT", "d", {"kinds": [1], "#t": ["y"], "limit": 1}])).await;
    assert_eq!(client.recv().await, json!(["COUNT", "d", {"count": 3}]), "limit does not cap a count");
    client.send(json!(["COUNT", "e", {"kinds": "1"}])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("invalid:"));
}

// ---- NIP-70 ----

async fn protected_events_are_accepted_only_from_their_authenticated_author() {
    let relay = TestRelay::start().await;
    let url = relay.config.server.public_url.clone();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let protected = sign(&alice, 1, "members only", &[&["-"]], now());
    let mut client = relay.client().await;
    let (accepted, reason) = client.publish(&protected).await;
    assert!(!accepted && reason.starts_with("auth-required:"), "{reason}");
    assert!(client.auth(&bob, &url).await.0);
    let (accepted, reason) = client.publish(&protected).await;
    assert!(!accepted && reason.starts_with("auth-required:"), "bob may not republish alice's: {reason}");
    assert!(client.auth(&alice, &url).await.0);
    client.publish_ok(&protected).await;
}

// ---- NIP-62 ----

async fn a_request_to_vanish_deletes_everything_up_to_its_time() {
    let relay = TestRelay::start().await;
    let url = relay.config.server.public_url.clone();
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    let t = now() - 100;
    let old_note = sign(&alice, 1, "old", &[], t);
    let profile = sign(&alice, 0, "{}", &[], t);
    let wrap = sign(&bob, 1059, "sealed", &[&["p", &alice.public_key().to_hex()]], t);
    let bobs = note(&bob, "bob stays");
    for event in [&old_note, &profile, &wrap, &bobs] {
        client.publish_ok(event).await;
    }
    let elsewhere = sign(&alice, 62, "", &[&["relay", "wss://other.example"]], t + 10);
    let (accepted, reason) = client.publish(&elsewhere).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");

    client.publish_ok(&sign(&alice, 62, "bye", &[&["relay", &url]], t + 10)).await;
    assert_eq!(
        client.req_ids("a", &[json!({"kinds": [0, 1], "authors": [alice.public_key().to_hex()]})]).await.len(),
        0
    );
    client.close("a").await;
    assert!(client.auth(&alice, &url).await.0);
    assert!(client.req_ids("w", &[json!({"kinds": [1059]})]).await.is_empty(), "gift wraps to alice are gone");
    client.close("w").await;
    assert_eq!(client.req_ids("b", &[by(&bob), json!({"kinds": [1]})]).await, vec![id_of(&bobs)]);
    client.close("b").await;
    let (accepted, reason) = client.publish(&old_note).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    client.publish_ok(&note(&alice, "a fresh start")).await;
}

// ---- admission ----

async fn kind_lists_and_blocked_pubkeys_are_refused_with_blocked() {
    let banned = Keys::generate();
    let banned_hex = banned.public_key().to_hex();
    let relay = TestRelay::start_with(move |c| {
        c.policy.kind_denylist = vec![7];
        c.policy.kind_allowlist = vec![0, 1, 7];
        c.policy.pubkey_blocklist = vec![banned_hex];
    })
    .await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    for event in [sign(&alice, 7, "+", &[], now()), sign(&alice, 30023, "x", &[], now()), note(&banned, "hi")] {
        let (accepted, reason) = client.publish(&event).await;
        assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    }
    client.publish_ok(&note(&alice, "allowed")).await;
}

async fn a_flooding_author_is_rate_limited_while_others_are_not() {
    let relay = TestRelay::start_with(|c| c.limits.pubkey_events_per_minute = 20).await;
    let (flooder, neighbour) = (Keys::generate(), Keys::generate());
    let mut loud = relay.client().await;
    let mut quiet = relay.client().await;
    let mut limited = 0;
    for i in 0..60 {
        let (accepted, reason) = loud.publish(&note(&flooder, &format!("{i}"))).await;
        if !accepted {
            assert!(reason.starts_with("rate-limited:"), "{reason}");
            limited += 1;
        }
        if i % 10 == 0 {
            quiet.publish_ok(&note(&neighbour, &format!("{i}"))).await;
        }
    }
    // A burst of 20, then refusals (one more may slip through per 3 s of a slow run).
    assert!(limited >= 30, "only {limited} refused");
    loud.publish_ok(&note(&neighbour, "the connection still works for others' events")).await;
}

async fn per_ip_event_rate_and_per_connection_req_rate() {
    let relay = TestRelay::start_with(|c| {
        c.limits.ip_events_per_minute = 5;
        c.limits.reqs_per_minute = 3;
    })
    .await;
    let mut client = relay.client().await;
    let alice = Keys::generate();
    for i in 0..5 {
        client.publish_ok(&note(&alice, &format!("{i}"))).await;
    }
    let (accepted, reason) = client.publish(&note(&Keys::generate(), "sixth")).await;
    assert!(!accepted && reason.starts_with("rate-limited:"), "{reason}");

    for i in 0..3 {
        client.req(&format!("s{i}"), &[json!({"limit": 1})]).await;
    }
    client.send(json!(["REQ", "s4", {}])).await;
    let answer = client.recv().await;
    assert_eq!(answer[0], "CLOSED");
    assert!(answer[2].as_str().unwrap().starts_with("rate-limited:"), "{answer}");
}

async fn connections_past_the_per_ip_limit_are_refused() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(relay.client().await);
    }
    assert!(Client::try_connect(&relay.url).await.is_none(), "fourth connection refused");
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        again = Client::try_connect(&relay.url).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("a slot frees when a connection closes");
    again.publish_ok(&note(&Keys::generate(), "in")).await;
    open[0].publish_ok(&note(&Keys::generate(), "still fine")).await;
}

async fn nip11_lists_the_supported_nips_and_the_new_limits() {
    let relay = TestRelay::start().await;
    let document = relay.nip11().await;
    assert_eq!(document["supported_nips"], json!([1, 4, 9, 11, 17, 29, 40, 42, 45, 50, 59, 62, 70, 77, 97, 98]));
    assert_eq!(document["supported_nip_names"], json!(["9a"]));
    let per_address =
        ["ip_registrations_per_hour", "ip_subscriptions_per_hour", "max_search_terms", "max_search_length"];
    for key in ["max_connections_per_ip", "ip_events_per_minute", "pubkey_events_per_minute", "reqs_per_minute"]
        .into_iter()
        .chain(per_address)
    {
        assert!(document["limitation"][key].is_u64(), "{key}");
    }
    assert_eq!(document["read_restricted_kinds"], json!([4, 1059, 1060, 14, 9009, 30390]));
}

crate::on_both_backends!(
    deletion_by_id_removes_only_the_authors_own_events,
    a_deletion_that_arrives_first_blocks_the_event_later,
    deleting_a_deletion_does_nothing,
    deletion_by_address_covers_versions_up_to_its_time,
    auth_checks_kind_challenge_relay_and_time,
    direct_messages_are_served_only_to_their_author_and_recipient,
    a_long_list_of_restricted_kinds_hides_them_the_same_way,
    restricted_writes_admit_only_authenticated_allowed_authors,
    count_counts_distinct_matches_across_filters,
    protected_events_are_accepted_only_from_their_authenticated_author,
    a_request_to_vanish_deletes_everything_up_to_its_time,
    kind_lists_and_blocked_pubkeys_are_refused_with_blocked,
    a_flooding_author_is_rate_limited_while_others_are_not,
    per_ip_event_rate_and_per_connection_req_rate,
    connections_past_the_per_ip_limit_are_refused,
    nip11_lists_the_supported_nips_and_the_new_limits,
);
