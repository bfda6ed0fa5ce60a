//! Several nodes on one PostgreSQL database behave as one relay: live delivery across nodes, registrations and
//! push jobs shared (each push sent once), and watched relays shared out and taken over.

use std::sync::Arc;
use std::time::Duration;

use crate::common::postgres::PgDatabase;
use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use serde_json::json;
use sqlx::Connection;

/// A node on `database`, pushing to `service`, sharing its push key with the other nodes (kept in `keys`).
async fn node(name: &str, database: &PgDatabase, service: &StandIn, keys: &std::path::Path) -> TestRelay {
    let (url, name, keys) = (database.url.clone(), name.to_owned(), keys.to_owned());
    start_with(&service.url, move |c| {
        c.database.url = url;
        c.database.node_id = name;
        c.push.secret_key_file = keys.join("push.key");
        c.upstream.allow_insecure = true;
        c.upstream.allow_private_addresses = true;
        c.upstream.debounce_ms = 50;
        c.upstream.lease_secs = 3;
    })
    .await
}

struct Cluster {
    service: StandIn,
    a: TestRelay,
    b: TestRelay,
    _database: Arc<PgDatabase>,
    _keys: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let database = PgDatabase::create().await;
    let service = StandIn::start().await;
    let keys = tempfile::tempdir().unwrap();
    let a = node("node-a", &database, &service, keys.path()).await;
    let b = node("node-b", &database, &service, keys.path()).await;
    Cluster { service, a, b, _database: database, _keys: keys }
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_live_subscribers_on_the_other() {
    let c = cluster().await;
    let author = Keys::generate();
    let mut subscriber = c.b.client().await;
    subscriber.req("live", &[json!({"authors": [author.public_key().to_hex()]})]).await;

    let small = note(&author, "hello from node a");
    c.a.client().await.publish_ok(&small).await;
    let delivered = subscriber.recv().await;
    assert_eq!((delivered[0].as_str(), delivered[2]["id"].as_str()), (Some("EVENT"), Some(id_of(&small).as_str())));

    // Too big to travel in the announcement: read from the database by the other node.
    let big = note(&author, &"x".repeat(20_000));
    c.a.client().await.publish_ok(&big).await;
    assert_eq!(subscriber.recv().await[2]["id"], id_of(&big));

    // Ephemeral events are not stored, but still cross.
    let ephemeral = sign(&author, 20001, "typing", &[], now());
    c.a.client().await.publish_ok(&ephemeral).await;
    assert_eq!(subscriber.recv().await[2]["id"], id_of(&ephemeral));
}

#[tokio::test]
async fn a_device_registered_on_one_node_gets_one_push_for_an_event_on_the_other() {
    let mut c = cluster().await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    assert_eq!(push_key(&c.a), push_key(&c.b), "one push identity");
    register(&mut c.a.client().await, &c.a, &user, registration(&apns_token(7), &user)).await;
    // Node b learns of the registration from node a's announcement.
    let b_push = c.b.push();
    assert!(eventually(|| !b_push.registry().registrations_of(user.public_key().as_bytes()).is_empty()).await);

    for _ in 0..5 {
        let message = dm(&friend, &user);
        c.b.client().await.publish_ok(&message).await;
        let request = c.service.next().await;
        assert_eq!(request.json()["event_id"], id_of(&message));
    }
    // Both nodes' workers ran over the one queue; none sent anything twice.
    c.service.expect_none().await;
}

/// A Marmot trigger acted on by one node, replayed to the other under a new gift wrap, wakes nobody: the nodes share
/// the hash of what they acted on (never the tokens) through the database.
#[tokio::test]
async fn a_marmot_trigger_replayed_to_the_other_node_wakes_nobody() {
    use crate::common::marmot::{encrypted_token, trigger};
    let mut c = cluster().await;
    let server = push_key(&c.a);
    let content = encrypted_token(&server, 0x01, &[7; 32]);
    c.a.client().await.publish_ok(&trigger(&server, &content)).await;
    assert_eq!(c.service.next().await.path, format!("/3/device/{}", hex::encode([7; 32])));
    c.b.client().await.publish_ok(&trigger(&server, &content)).await;
    c.service.expect_none().await;
}

#[tokio::test]
async fn a_watched_relay_is_taken_over_when_its_node_goes() {
    let mut c = cluster().await;
    let remote = TestRelay::start_with(|c| c.auth.read_restricted_kinds = vec![]).await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    let content =
        json!({"kinds": [4], "deviceId": apns_token(8), "#p": [user.public_key().to_hex()], "relays": [remote.url]});
    register(&mut c.a.client().await, &c.a, &user, content).await;

    // One node (either) holds the remote relay; the other does not connect to it.
    let watching = |relay: &TestRelay| {
        relay.handle.as_ref().unwrap().upstream_status().get(&remote.url).is_some_and(|s| s.subscribed)
    };
    let mut owner = None;
    for _ in 0..200 {
        match (watching(&c.a), watching(&c.b)) {
            (true, false) => owner = Some('a'),
            (false, true) => owner = Some('b'),
            (true, true) => panic!("both nodes watch the same relay"),
            (false, false) => {}
        }
        if owner.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (gone, survivor) = match owner.expect("a node watches the remote relay") {
        'a' => (c.a, c.b),
        _ => (c.b, c.a),
    };
    let message = dm(&friend, &user);
    remote.client().await.publish_ok(&message).await;
    assert_eq!(c.service.next().await.json()["event_id"], id_of(&message));

    let mut gone = gone;
    gone.handle.take().unwrap().shutdown().await;
    let mut took_over = false;
    for _ in 0..200 {
        if watching(&survivor) {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        took_over,
        "the other node takes the relay over: {:?}",
        survivor.handle.as_ref().unwrap().upstream_status()
    );
    let after = dm(&friend, &user);
    remote.client().await.publish_ok(&after).await;
    assert_eq!(c.service.next().await.json()["event_id"], id_of(&after));
    c.service.expect_none().await;
}

#[tokio::test]
async fn a_watched_relay_is_taken_over_when_its_node_is_killed() {
    let database = PgDatabase::create().await;
    let mut service = StandIn::start().await;
    let keys = tempfile::tempdir().unwrap();
    let remote = TestRelay::start_with(|c| c.auth.read_restricted_kinds = vec![]).await;

    // Node a runs as its own process, so that it can really be killed.
    let config = keys.path().join("config.toml");
    std::fs::write(&config, "[server]\n").unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"));
    command
        .arg("--config")
        .arg(&config)
        .env("PUSHRELAY_SERVER__BIND", "127.0.0.1:0")
        .env("PUSHRELAY_DATABASE__URL", &database.url)
        .env("PUSHRELAY_DATABASE__NODE_ID", "node-a")
        .env("PUSHRELAY_PUSH__SECRET_KEY_FILE", keys.path().join("push.key"))
        .env("PUSHRELAY_PUSH__WEBPUSH__VAPID_KEY_FILE", keys.path().join("vapid.key"))
        .env("PUSHRELAY_UPSTREAM__ALLOW_INSECURE", "true")
        .env("PUSHRELAY_UPSTREAM__ALLOW_PRIVATE_ADDRESSES", "true")
        .env("PUSHRELAY_UPSTREAM__DEBOUNCE_MS", "50")
        .env("PUSHRELAY_UPSTREAM__LEASE_SECS", "3");
    let (mut node_a, address) = spawn_relay_binary(&mut command).await;

    let (user, friend) = (Keys::generate(), Keys::generate());
    let push_key = pushrelay::push::keys::load_or_create(&keys.path().join("push.key")).unwrap().public_key();
    let content =
        json!({"kinds": [4], "deviceId": apns_token(9), "#p": [user.public_key().to_hex()], "relays": [remote.url]});
    let registration = registration_event(&user, &push_key, &content, Cipher::Nip44, now());
    let (accepted, reason) = Client::connect(&format!("ws://{address}")).await.publish(&registration).await;
    assert!(accepted, "{reason}");

    let mut leases = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let mut held_by_a = false;
    for _ in 0..200 {
        let holder: Option<String> = sqlx::query_scalar("SELECT node FROM upstream_leases WHERE relay = $1")
            .bind(&remote.url)
            .fetch_optional(&mut leases)
            .await
            .unwrap();
        if holder.as_deref() == Some("node-a") {
            held_by_a = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(held_by_a, "node a watches the remote relay");

    let b = node("node-b", &database, &service, keys.path()).await;
    let watching = || b.handle.as_ref().unwrap().upstream_status().get(&remote.url).is_some_and(|s| s.subscribed);
    assert!(!watching(), "node b leaves the relay to node a");
    node_a.kill().unwrap();
    node_a.wait().unwrap();
    // The lease (3 s) lapses; node b, renewing every second, takes the relay over.
    let mut took_over = false;
    for _ in 0..200 {
        if watching() {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(took_over, "node b takes over: {:?}", b.handle.as_ref().unwrap().upstream_status());
    let message = dm(&friend, &user);
    remote.client().await.publish_ok(&message).await;
    assert_eq!(service.next().await.json()["event_id"], id_of(&message));
    service.expect_none().await;
}

/// A node process configured with nothing but the database, its address and the key files: the node id is left
/// to the relay.
fn bare_node(database: &PgDatabase, keys: &std::path::Path) -> std::process::Command {
    bare_relay_command(keys, &database.url)
}

/// A node process, killed when the test ends (even by a panic).
struct NodeProcess {
    child: std::process::Child,
    url: String,
}

impl NodeProcess {
    async fn spawn(mut command: std::process::Command) -> Self {
        let (child, address) = spawn_relay_binary(&mut command).await;
        Self { child, url: format!("ws://{address}") }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        kill_hard(&mut self.child);
    }
}

#[tokio::test]
async fn two_unconfigured_nodes_on_one_host_hear_each_other_and_release_what_the_gone_hold() {
    let database = PgDatabase::create().await;
    let keys = tempfile::tempdir().unwrap();
    let a = NodeProcess::spawn(bare_node(&database, keys.path())).await;

    // What a node that died holds (its id is in no live row) and what node a holds (live).
    let mut db = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let a_id: String = sqlx::query_scalar("SELECT node FROM nodes").fetch_one(&mut db).await.unwrap();
    let far = pushrelay::clock::Clock::system().millis() + 3_600_000;
    for (key, holder) in [("gone-job", "gone-node"), ("live-job", a_id.as_str())] {
        sqlx::query(
            "INSERT INTO jobs (dedup_key, group_key, payload, created_at, due_at, leased_by) VALUES ($1, 'd', '{}', 0, $2, $3)",
        )
        .bind(key)
        .bind(far)
        .bind(holder)
        .execute(&mut db)
        .await
        .unwrap();
    }
    for (relay, holder) in [("wss://gone.example", "gone-node"), ("wss://live.example", a_id.as_str())] {
        sqlx::query("INSERT INTO upstream_leases (relay, node, expires_at) VALUES ($1, $2, $3)")
            .bind(relay)
            .bind(holder)
            .bind(far / 1000)
            .execute(&mut db)
            .await
            .unwrap();
    }

    let b = NodeProcess::spawn(bare_node(&database, keys.path())).await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT node FROM nodes ORDER BY node").fetch_all(&mut db).await.unwrap();
    assert_eq!(ids.len(), 2, "two nodes, two ids: {ids:?}");

    let author = Keys::generate();
    let mut subscriber = Client::connect(&b.url).await;
    subscriber.req("live", &[json!({"authors": [author.public_key().to_hex()]})]).await;
    let event = note(&author, "published on a");
    Client::connect(&a.url).await.publish_ok(&event).await;
    let delivered = subscriber.recv().await;
    assert_eq!((delivered[0].as_str(), delivered[2]["id"].as_str()), (Some("EVENT"), Some(id_of(&event).as_str())));

    // The gone node's job was due again at once (a worker may have taken it since); the live node's is untouched.
    let leased: Vec<(String, Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT dedup_key, leased_by, due_at FROM jobs ORDER BY dedup_key")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(leased[0].1.as_deref() != Some("gone-node") && leased[0].2 != Some(far), "{leased:?}");
    assert_eq!(leased[1], ("live-job".to_owned(), Some(a_id.clone()), Some(far)));
    let watched: Vec<String> =
        sqlx::query_scalar("SELECT relay FROM upstream_leases ORDER BY relay").fetch_all(&mut db).await.unwrap();
    assert_eq!(watched, ["wss://live.example"], "the gone node's relay is free, the live node's kept");

    // Node a dies; once it has not been seen for 20 s, node b's heartbeat releases what it held.
    drop(a);
    let mut released = false;
    for _ in 0..80 {
        let holder: Option<String> = sqlx::query_scalar("SELECT leased_by FROM jobs WHERE dedup_key = 'live-job'")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let relays: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upstream_leases").fetch_one(&mut db).await.unwrap();
        if holder.as_deref() != Some(a_id.as_str()) && relays == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(released, "node a's leases are released after it is gone");
    let ids: Vec<String> = sqlx::query_scalar("SELECT node FROM nodes").fetch_all(&mut db).await.unwrap();
    assert_eq!(ids.len(), 1, "node a is forgotten: {ids:?}");
    drop(b);
}

#[tokio::test]
async fn a_node_refuses_the_id_of_a_live_node() {
    let database = PgDatabase::create().await;
    let keys = tempfile::tempdir().unwrap();
    let _a = NodeProcess::spawn(bare_node(&database, keys.path())).await;
    let mut db = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let a_id: String = sqlx::query_scalar("SELECT node FROM nodes").fetch_one(&mut db).await.unwrap();

    let mut twin = bare_node(&database, keys.path());
    twin.env("PUSHRELAY_DATABASE__NODE_ID", &a_id);
    let output = tokio::task::spawn_blocking(move || twin.output().unwrap()).await.unwrap();
    assert!(!output.status.success(), "a second node with the id {a_id} must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("{a_id:?}")) && stderr.contains("[database] node_id"), "{stderr}");
}

/// Publishes `make(attempt)` on `client` until it is accepted (another node's change takes a moment to arrive);
/// every refusal on the way must start with `refused_as`.
async fn accepted_eventually(client: &mut Client, make: impl Fn(u64) -> Event, refused_as: &str) {
    for attempt in 0..50 {
        let (accepted, reason) = client.publish(&make(attempt)).await;
        if accepted {
            return;
        }
        assert!(reason.starts_with(refused_as), "{reason}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never accepted");
}

#[tokio::test]
async fn a_group_made_on_one_node_is_in_force_on_the_other() {
    let c = cluster().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mut on_a = c.a.client().await;
    on_a.publish_ok(&sign(&alice, 9007, "", &[&["h", "hq"], &["private"]], now())).await;
    // Node b learns of the group from node a's metadata events: a join there is taken.
    let mut on_b = c.b.client().await;
    let join = |n: u64| sign(&bob, 9021, &n.to_string(), &[&["h", "hq"]], now());
    accepted_eventually(&mut on_b, join, "invalid:").await;
    // ...and node a of the member node b added.
    let post = |n: u64| sign(&bob, 9, &format!("hello {n}"), &[&["h", "hq"]], now());
    accepted_eventually(&mut on_a, post, "restricted:").await;
    let (accepted, _) = on_b.publish(&sign(&Keys::generate(), 9, "stranger", &[&["h", "hq"]], now())).await;
    assert!(!accepted);
    // Private on both: an outsider on node b sees none of it.
    assert!(on_b.req("k", &[json!({"kinds": [9]})]).await.is_empty());
}
