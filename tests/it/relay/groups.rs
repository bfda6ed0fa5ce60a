//! NIP-29 groups hosted by the relay, as a client (nostr-tools-like flows over a real WebSocket) sees them: create,
//! join, post, leave, moderation by role, closed and private groups, what outsiders cannot read (REQ, COUNT,
//! negentropy, live) and who is pushed.

use crate::common::push::{apns_token, register, registration};
use crate::common::standins::StandIn;
use crate::common::*;
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use nostr::prelude::*;
use serde_json::{Value, json};

fn group_event(keys: &Keys, kind: u16, group: &str, content: &str, tags: &[&[&str]]) -> Event {
    let h = ["h", group];
    let mut all: Vec<&[&str]> = vec![&h];
    all.extend_from_slice(tags);
    sign(keys, kind, content, &all, now())
}

async fn relay_pubkey(relay: &TestRelay) -> String {
    relay.nip11().await["self"].as_str().expect("NIP-11 self").to_owned()
}

/// The stored events a filter matches, the subscription closed again (later changes must not arrive on it).
async fn once(client: &mut Client, filter: Value) -> Vec<Value> {
    let events = client.req("once", &[filter]).await;
    client.close("once").await;
    events
}

fn tagged_pubkeys(event: &Value) -> Vec<String> {
    let tags = event["tags"].as_array().unwrap();
    tags.iter().filter(|t| t[0] == "p").map(|t| t[1].as_str().unwrap().to_owned()).collect()
}

/// The ids a NIP-77 reconciliation says the relay has, for a client that has nothing.
async fn reconcile_ids(client: &mut Client, filter: Value) -> Vec<String> {
    let mut storage = NegentropyStorageVector::new();
    storage.seal().unwrap();
    let mut negentropy = Negentropy::owned(storage, 0).unwrap();
    client.send(json!(["NEG-OPEN", "n", filter, hex::encode(negentropy.initiate().unwrap())])).await;
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let answer = client.recv().await;
        assert_eq!(answer[0], "NEG-MSG", "{answer}");
        let bytes = hex::decode(answer[2].as_str().unwrap()).unwrap();
        match negentropy.reconcile_with_ids(&bytes, &mut have, &mut need).unwrap() {
            Some(next) => client.send(json!(["NEG-MSG", "n", hex::encode(next)])).await,
            None => break,
        }
    }
    client.send(json!(["NEG-CLOSE", "n"])).await;
    need.iter().map(|id: &Id| hex::encode(id.to_bytes())).collect()
}

async fn a_group_is_created_joined_posted_in_and_left() {
    let relay = TestRelay::start().await;
    let relay_key = relay_pubkey(&relay).await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    client.publish_ok(&group_event(&alice, 9007, "pizza", "", &[&["name", "Pizza Lovers"]])).await;
    let metadata = once(&mut client, json!({"kinds": [39000], "#d": ["pizza"]})).await;
    assert_eq!(metadata.len(), 1);
    assert_eq!(metadata[0]["pubkey"], relay_key, "signed by the relay's own key (NIP-11 self)");
    assert!(metadata[0]["tags"].as_array().unwrap().contains(&json!(["name", "Pizza Lovers"])));
    let admins = once(&mut client, json!({"kinds": [39001], "#d": ["pizza"]})).await;
    assert!(admins[0]["tags"].as_array().unwrap().contains(&json!(["p", alice.public_key().to_hex(), "admin"])));

    // Not a member yet: refused, with the way in.
    let (accepted, reason) = client.publish(&group_event(&bob, 9, "pizza", "hi", &[])).await;
    assert!(!accepted && reason.starts_with("restricted:") && reason.contains("9021"), "{reason}");
    client.publish_ok(&group_event(&bob, 9021, "pizza", "let me in", &[])).await;
    let (accepted, reason) = client.publish(&group_event(&bob, 9021, "pizza", "again", &[])).await;
    assert!(!accepted && reason.starts_with("duplicate:"), "{reason}");
    let members = once(&mut client, json!({"kinds": [39002], "#d": ["pizza"]})).await;
    assert!(tagged_pubkeys(&members[0]).contains(&bob.public_key().to_hex()));
    let put = once(&mut client, json!({"kinds": [9000], "#h": ["pizza"], "authors": [relay_key]})).await;
    assert_eq!(tagged_pubkeys(&put[0]), [bob.public_key().to_hex()], "the relay's put-user for the join");

    let first = group_event(&bob, 9, "pizza", "hi all", &[]);
    client.publish_ok(&first).await;
    // Timeline references: a known prefix passes, an unknown one and a late event do not.
    let prefix = &id_of(&first)[..8];
    client.publish_ok(&group_event(&bob, 9, "pizza", "in context", &[&["previous", prefix]])).await;
    let (accepted, reason) = client.publish(&group_event(&bob, 9, "pizza", "?", &[&["previous", "deadbeef"]])).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");
    let late = sign(&bob, 9, "from yesterday", &[&["h", "pizza"]], now() - 86_400);
    let (accepted, reason) = client.publish(&late).await;
    assert!(!accepted && reason.contains("late publication"), "{reason}");

    // Metadata is the relay's own; a plain member moderates nothing; an unknown group takes no actions.
    let forged = sign(&alice, 39000, "", &[&["d", "pizza"], &["name", "mine"]], now());
    let (accepted, reason) = client.publish(&forged).await;
    assert!(!accepted && reason.starts_with("restricted:"), "{reason}");
    let kick = group_event(&bob, 9001, "pizza", "", &[&["p", &alice.public_key().to_hex()]]);
    let (accepted, reason) = client.publish(&kick).await;
    assert!(!accepted && reason.starts_with("restricted:"), "{reason}");
    let (accepted, reason) = client.publish(&group_event(&bob, 9021, "nowhere", "", &[])).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");
    let (accepted, reason) = client.publish(&group_event(&bob, 9007, "pizza", "", &[])).await;
    assert!(!accepted && reason.starts_with("duplicate:"), "{reason}");

    // An admin edits the group; the member leaves and can no longer post.
    client.publish_ok(&group_event(&alice, 9002, "pizza", "", &[&["about", "pies"], &["closed"]])).await;
    let metadata = once(&mut client, json!({"kinds": [39000], "#d": ["pizza"]})).await;
    let tags = metadata[0]["tags"].as_array().unwrap();
    assert!(tags.contains(&json!(["about", "pies"])) && tags.contains(&json!(["closed"])), "{tags:?}");
    client.publish_ok(&group_event(&bob, 9022, "pizza", "bye", &[])).await;
    let (accepted, _) = client.publish(&group_event(&bob, 9, "pizza", "still here?", &[])).await;
    assert!(!accepted);
    // One group per event: a second h tag cannot carry a post into another group.
    let (accepted, reason) = client.publish(&group_event(&alice, 9, "pizza", "sneaky", &[&["h", "other"]])).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");
    // Events naming a group not hosted here are ordinary events.
    client.publish_ok(&group_event(&bob, 9, "elsewhere", "hello", &[])).await;
}

async fn a_private_closed_group_is_invisible_to_outsiders() {
    let relay = TestRelay::start().await;
    let (alice, dave, carol) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut owner = relay.client().await;
    assert!(owner.auth(&alice, &relay.config.server.public_url).await.0);
    owner.publish_ok(&group_event(&alice, 9007, "secret", "", &[&["private"], &["closed"]])).await;
    let message = group_event(&alice, 9, "secret", "the plan", &[]);
    owner.publish_ok(&message).await;

    // An outsider, not authenticated: told to authenticate when asking for the group; sees nothing otherwise.
    let mut outsider = relay.client().await;
    outsider.send(json!(["REQ", "h", {"#h": ["secret"]}])).await;
    let closed = outsider.recv().await;
    assert_eq!((closed[0].as_str(), closed[1].as_str()), (Some("CLOSED"), Some("h")));
    assert!(closed[2].as_str().unwrap().starts_with("auth-required:"), "{closed}");
    assert!(once(&mut outsider, json!({"kinds": [9]})).await.is_empty());
    assert!(once(&mut outsider, json!({"kinds": [39000, 39001, 39002]})).await.is_empty());
    outsider.send(json!(["COUNT", "c", {"kinds": [9]}])).await;
    assert_eq!(outsider.recv().await[2]["count"], 0);
    assert!(reconcile_ids(&mut outsider, json!({"kinds": [9]})).await.is_empty(), "negentropy hides it too");
    // Authenticated, but not a member: nothing either, and a live subscription stays silent.
    assert!(outsider.auth(&carol, &relay.config.server.public_url).await.0);
    assert!(once(&mut outsider, json!({"#h": ["secret"]})).await.is_empty());
    assert!(outsider.req("live", &[json!({"kinds": [9]})]).await.is_empty());

    // A closed group: a join request without a code waits for an admin (kept, answered false).
    let (accepted, reason) = outsider.publish(&group_event(&carol, 9021, "secret", "please", &[])).await;
    assert!(!accepted && reason.contains("approval"), "{reason}");
    let pending = once(&mut owner, json!({"kinds": [9021], "#h": ["secret"]})).await;
    assert_eq!(pending.len(), 1, "the admin sees the request");
    // Invite codes are served to their author alone.
    owner.publish_ok(&group_event(&alice, 9009, "secret", "", &[&["code", "c0de"]])).await;
    assert!(once(&mut outsider, json!({"kinds": [9009], "#h": ["secret"]})).await.is_empty());
    assert_eq!(once(&mut owner, json!({"kinds": [9009], "#h": ["secret"]})).await.len(), 1);

    // With the code, dave is in and reads the group, live too.
    let mut member = relay.client().await;
    assert!(member.auth(&dave, &relay.config.server.public_url).await.0);
    member.publish_ok(&group_event(&dave, 9021, "secret", "", &[&["code", "c0de"]])).await;
    assert_eq!(member.req_ids("live", &[json!({"kinds": [9], "#h": ["secret"]})]).await, [id_of(&message)]);
    let next = group_event(&alice, 9, "secret", "step two", &[]);
    owner.publish_ok(&next).await;
    let live = member.recv().await;
    assert_eq!((live[0].as_str(), live[2]["id"].as_str()), (Some("EVENT"), Some(id_of(&next).as_str())));
    outsider.expect_silence().await;
    outsider.close("live").await;
    member.close("live").await;

    // An admin approves carol (put-user); removing dave ends his reading.
    owner.publish_ok(&group_event(&alice, 9000, "secret", "", &[&["p", &carol.public_key().to_hex()]])).await;
    assert_eq!(once(&mut outsider, json!({"kinds": [9], "#h": ["secret"]})).await.len(), 2);
    owner.publish_ok(&group_event(&alice, 9001, "secret", "", &[&["p", &dave.public_key().to_hex()]])).await;
    assert!(once(&mut member, json!({"kinds": [9], "#h": ["secret"]})).await.is_empty());
}

async fn tricks_let_nothing_into_or_out_of_a_private_group() {
    let relay = TestRelay::start().await;
    let (alice, dave, eve) = (Keys::generate(), Keys::generate(), Keys::generate());
    let url = relay.config.server.public_url.clone();
    // An outsider watching from before the group exists: its creation (name, flags) is already the group's.
    let mut outsider = relay.client().await;
    assert!(outsider.auth(&eve, &url).await.0);
    assert!(outsider.req("live", &[json!({"kinds": [9007, 9, 39000]})]).await.is_empty());
    let mut owner = relay.client().await;
    assert!(owner.auth(&alice, &url).await.0);
    owner.publish_ok(&group_event(&alice, 9007, "vault", "", &[&["private"], &["closed"], &["name", "Vault"]])).await;
    outsider.expect_silence().await;

    // A second h tag, or a first one without a value, carries nothing in.
    let sneak = sign(&eve, 9, "in", &[&["h", "nowhere"], &["h", "vault"]], now());
    let (accepted, reason) = outsider.publish(&sneak).await;
    assert!(!accepted && reason.starts_with("invalid:"), "{reason}");
    let (accepted, reason) = outsider.publish(&sign(&eve, 9, "in", &[&["h"], &["h", "vault"]], now())).await;
    assert!(!accepted && reason.starts_with("restricted:"), "{reason}");

    // An invite code admits one join.
    owner.publish_ok(&group_event(&alice, 9009, "vault", "", &[&["code", "once"]])).await;
    let mut member = relay.client().await;
    assert!(member.auth(&dave, &url).await.0);
    member.publish_ok(&group_event(&dave, 9021, "vault", "", &[&["code", "once"]])).await;
    let (accepted, reason) = outsider.publish(&group_event(&eve, 9021, "vault", "", &[&["code", "once"]])).await;
    assert!(!accepted && reason.contains("approval"), "{reason}");

    // A deleted event does not come back.
    let post = group_event(&dave, 9, "vault", "oops", &[]);
    member.publish_ok(&post).await;
    owner.publish_ok(&group_event(&alice, 9005, "vault", "", &[&["e", &id_of(&post)]])).await;
    let (accepted, reason) = member.publish(&post).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    outsider.expect_silence().await;
    outsider.close("live").await;

    // An id that stored events already use is not taken for a new group.
    owner.publish_ok(&group_event(&eve, 9, "squatted", "first!", &[])).await;
    let (accepted, reason) = owner.publish(&group_event(&alice, 9007, "squatted", "", &[])).await;
    assert!(!accepted && reason.starts_with("duplicate:"), "{reason}");

    // Deleted: nothing of it is served, to members or anyone.
    owner.publish_ok(&group_event(&alice, 9008, "vault", "", &[])).await;
    for client in [&mut owner, &mut member, &mut outsider] {
        assert!(once(client, json!({"#h": ["vault"], "kinds": [9, 9000, 9007, 9021]})).await.is_empty());
        assert!(once(client, json!({"#d": ["vault"]})).await.is_empty());
    }
}

async fn moderators_and_admins_act_within_their_roles() {
    let relay = TestRelay::start().await;
    let (alice, mo, pat) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    client.publish_ok(&group_event(&alice, 9007, "club", "", &[])).await;
    let as_moderator = [&["p", &mo.public_key().to_hex() as &str, "moderator"] as &[&str]];
    client.publish_ok(&group_event(&alice, 9000, "club", "", &as_moderator)).await;
    client.publish_ok(&group_event(&mo, 9000, "club", "", &[&["p", &pat.public_key().to_hex()]])).await;
    let post = group_event(&pat, 9, "club", "spam", &[]);
    client.publish_ok(&post).await;
    // A moderator deletes events and removes plain members, but gives no roles and edits nothing.
    client.publish_ok(&group_event(&mo, 9005, "club", "", &[&["e", &id_of(&post)]])).await;
    assert!(once(&mut client, json!({"ids": [id_of(&post)]})).await.is_empty());
    let promote = [&["p", &pat.public_key().to_hex() as &str, "admin"] as &[&str]];
    let (accepted, _) = client.publish(&group_event(&mo, 9000, "club", "", &promote)).await;
    assert!(!accepted);
    let (accepted, _) = client.publish(&group_event(&mo, 9002, "club", "", &[&["name", "mine"]])).await;
    assert!(!accepted);
    let (accepted, _) =
        client.publish(&group_event(&mo, 9001, "club", "", &[&["p", &alice.public_key().to_hex()]])).await;
    assert!(!accepted, "a moderator cannot remove an admin");
    client.publish_ok(&group_event(&mo, 9001, "club", "", &[&["p", &pat.public_key().to_hex()]])).await;
    // The admin deletes the group: its events go, its id stays taken, nobody posts in it.
    client.publish_ok(&group_event(&alice, 9008, "club", "", &[])).await;
    assert!(once(&mut client, json!({"kinds": [39000], "#d": ["club"]})).await.is_empty());
    let (accepted, reason) = client.publish(&group_event(&alice, 9, "club", "anyone?", &[])).await;
    assert!(!accepted && reason.starts_with("blocked:"), "{reason}");
    let (accepted, _) = client.publish(&group_event(&pat, 9007, "club", "", &[])).await;
    assert!(!accepted);
}

async fn groups_survive_a_restart() {
    let relay = TestRelay::start().await;
    let (alice, bob) = (Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    client.publish_ok(&group_event(&alice, 9007, "kept", "", &[&["private"]])).await;
    client.publish_ok(&group_event(&bob, 9021, "kept", "", &[])).await;
    let first = group_event(&bob, 9, "kept", "before", &[]);
    client.publish_ok(&first).await;
    drop(client);
    let relay = relay.restart().await;
    let mut client = relay.client().await;
    let prefix = &id_of(&first)[..8];
    client.publish_ok(&group_event(&bob, 9, "kept", "after", &[&["previous", prefix]])).await;
    let (accepted, _) = client.publish(&group_event(&Keys::generate(), 9, "kept", "stranger", &[])).await;
    assert!(!accepted, "membership survives");
    assert!(once(&mut client, json!({"kinds": [9]})).await.is_empty(), "still private");
    assert!(client.auth(&bob, &relay.config.server.public_url).await.0);
    assert_eq!(once(&mut client, json!({"kinds": [9]})).await.len(), 2);
}

async fn only_creators_the_operator_lists_create_groups() {
    let creator = Keys::generate();
    let relay = TestRelay::start_with(|c| c.groups.creators = vec![creator.public_key().to_hex()]).await;
    let mut client = relay.client().await;
    let (accepted, reason) = client.publish(&group_event(&Keys::generate(), 9007, "mine", "", &[])).await;
    assert!(!accepted && reason.starts_with("restricted:"), "{reason}");
    client.publish_ok(&group_event(&creator, 9007, "mine", "", &[])).await;
    let off = TestRelay::start_with(|c| c.groups.enabled = false).await;
    let mut client = off.client().await;
    // Without groups, a 9007 is an ordinary event, and NIP-29 is not claimed.
    client.publish_ok(&group_event(&creator, 9007, "mine", "", &[])).await;
    assert!(!off.nip11().await["supported_nips"].as_array().unwrap().contains(&json!(29)));
}

/// An offline member registered for the group is pushed its messages; a registered outsider is not.
async fn private_group_messages_push_only_to_members() {
    let mut apns = StandIn::start().await;
    let relay = crate::common::push::start(&apns.url).await;
    let (alice, member, outsider) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut client = relay.client().await;
    // Both registered for group-1 (`#e`, matched against `h`), on devices of their own.
    register(&mut client, &relay, &member, registration(&apns_token(1), &member)).await;
    register(&mut client, &relay, &outsider, registration(&apns_token(2), &outsider)).await;
    client.publish_ok(&group_event(&alice, 9007, "group-1", "", &[&["private"]])).await;
    client.publish_ok(&group_event(&member, 9021, "group-1", "", &[])).await;
    let message = group_event(&alice, 9, "group-1", "dinner at eight", &[]);
    client.publish_ok(&message).await;
    let push = apns.next().await;
    assert_eq!(push.json()["event_id"], id_of(&message));
    assert!(push.path.ends_with(&apns_token(1)), "pushed to the member's device: {}", push.path);
    apns.expect_none().await;
}

crate::on_both_backends!(
    a_group_is_created_joined_posted_in_and_left,
    a_private_closed_group_is_invisible_to_outsiders,
    tricks_let_nothing_into_or_out_of_a_private_group,
    moderators_and_admins_act_within_their_roles,
    groups_survive_a_restart,
    only_creators_the_operator_lists_create_groups,
    private_group_messages_push_only_to_members,
);
