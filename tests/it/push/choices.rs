//! Per-registration choices and the operator's hellthread switch, over real sockets with an APNs stand-in:
//! YakiHonne's `enableMaxMentions`, `[push] suppress_hellthreads` (groups still notify), and `only_from_authors`
//! (gift wraps excepted).

use crate::common::push::*;
use crate::common::standins::StandIn;
use crate::common::*;
use nostr::prelude::*;
use serde_json::json;

/// A note by `author` that `p`-tags `user` and `others` more pubkeys, plus whatever `extra` tags.
fn mention(author: &Keys, user: &Keys, others: usize, extra: &[&[&str]]) -> Event {
    tagging(author, 1, user, others, extra)
}

/// An event of `kind` by `author` that `p`-tags `user` and `others` more pubkeys, plus whatever `extra` tags.
fn tagging(author: &Keys, kind: u16, user: &Keys, others: usize, extra: &[&[&str]]) -> Event {
    let mut names: Vec<String> = (0..others).map(|_| Keys::generate().public_key().to_hex()).collect();
    names.push(user.public_key().to_hex());
    let mut tags: Vec<Vec<&str>> = names.iter().map(|p| vec!["p", p.as_str()]).collect();
    tags.extend(extra.iter().map(|t| t.to_vec()));
    let tags: Vec<&[&str]> = tags.iter().map(Vec::as_slice).collect();
    sign(author, kind, &format!("hello {}", rand::random::<u32>()), &tags, now())
}

async fn registration_that_asks_is_spared_hellthreads() {
    let mut apns = StandIn::start().await;
    let relay = start_with(&apns.url, |c| c.push.max_mentions = 3).await;
    let mut client = relay.client().await;
    let (asks, does_not, friend) = (Keys::generate(), Keys::generate(), Keys::generate());
    let yakihonne = json!({"kinds": [1], "deviceId": apns_token(1), "enableMaxMentions": true});
    register(&mut client, &relay, &asks, yakihonne).await;
    register(&mut client, &relay, &does_not, json!({"kinds": [1], "deviceId": apns_token(2)})).await;

    // Four mentions (the user and three more) is past the limit of three: only who did not ask is woken.
    client.publish_ok(&mention(&friend, &asks, 3, &[])).await;
    client.publish_ok(&mention(&friend, &does_not, 3, &[])).await;
    let woken = apns.next().await;
    assert_eq!(woken.path, format!("/3/device/{}", apns_token(2)));
    apns.expect_none().await;
    // Within the limit, both are.
    client.publish_ok(&mention(&friend, &asks, 2, &[])).await;
    assert_eq!(apns.next().await.path, format!("/3/device/{}", apns_token(1)));
}

async fn the_operator_spares_everyone_but_groups_still_notify() {
    let mut apns = StandIn::start().await;
    let relay = start_with(&apns.url, |c| c.push.suppress_hellthreads = true).await;
    let mut client = relay.client().await;
    let (user, friend) = (Keys::generate(), Keys::generate());
    register(&mut client, &relay, &user, registration(&apns_token(1), &user)).await;
    // Eleven mentions, past the default ten: nothing, though the user registered kind 9 and is tagged.
    client.publish_ok(&tagging(&friend, 9, &user, 10, &[])).await;
    apns.expect_none().await;
    // The same crowd in a group the user watches (`#e`, matched against `h`): notified through the group.
    let in_group = tagging(&friend, 9, &user, 10, &[&["h", "group-1"]]);
    client.publish_ok(&in_group).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&in_group));
    // A DM tags one pubkey: never a hellthread.
    let message = dm(&friend, &user);
    client.publish_ok(&message).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&message));
}

async fn only_from_authors_lets_contacts_and_gift_wraps_through() {
    let mut apns = StandIn::start().await;
    let relay = start(&apns.url).await;
    let mut client = relay.client().await;
    let (user, friend, stranger) = (Keys::generate(), Keys::generate(), Keys::generate());
    let mut content = registration(&apns_token(1), &user);
    content["kinds"] = json!([1, 1059]);
    content["authors"] = json!([friend.public_key().to_hex()]);
    content["only_from_authors"] = json!(true);
    register(&mut client, &relay, &user, content).await;

    client.publish_ok(&mention(&stranger, &user, 0, &[])).await;
    apns.expect_none().await;
    let from_friend = mention(&friend, &user, 0, &[]);
    client.publish_ok(&from_friend).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&from_friend));
    // A gift wrap is signed by a throwaway key, never a contact.
    let wrap = sign(&stranger, 1059, "sealed", &[&["p", &user.public_key().to_hex()]], now());
    client.publish_ok(&wrap).await;
    assert_eq!(apns.next().await.json()["event_id"], id_of(&wrap));

    // A wrong type is refused with the field's name.
    let bad = registration_event(&user, &push_key(&relay), &json!({"only_from_authors": "yes"}), Cipher::Nip04, now());
    let (accepted, reason) = client.publish(&bad).await;
    assert!(!accepted && reason.starts_with("invalid:") && reason.contains("only_from_authors"), "{reason}");
}

crate::on_both_backends!(
    registration_that_asks_is_spared_hellthreads,
    the_operator_spares_everyone_but_groups_still_notify,
    only_from_authors_lets_contacts_and_gift_wraps_through,
);
