//! NIP-77: a client reconciles its set of events with the relay's using negentropy, and learns which the relay lacks
//! and which it lacks itself, without either side sending every id.

use crate::common::*;
use negentropy::{Id, Negentropy, NegentropyStorageVector};
use nostr::prelude::*;
use serde_json::{Value, json};

fn id_bytes(event: &Event) -> [u8; 32] {
    event.id.to_bytes()
}

async fn reconciliation_finds_what_each_side_lacks() {
    let relay = TestRelay::start().await;
    let author = Keys::generate();
    let events: Vec<Event> = (0..300).map(|i| sign(&author, 1, &format!("note {i}"), &[], now() - 1000 + i)).collect();
    let (relay_only, rest) = events.split_at(40);
    let (both, client_only) = rest.split_at(200);
    let mut client = relay.client().await;
    client.publish_all_ok(&events[..240]).await;

    // The client's side: the events it holds, as the negentropy crate wants them.
    let mut storage = NegentropyStorageVector::new();
    for event in both.iter().chain(client_only) {
        storage.insert(event.created_at.as_secs(), Id::from_byte_array(id_bytes(event))).unwrap();
    }
    storage.seal().unwrap();
    let mut negentropy = Negentropy::owned(storage, 0).unwrap();
    let first = negentropy.initiate().unwrap();
    let filter = json!({"authors": [author.public_key().to_hex()]});
    client.send(json!(["NEG-OPEN", "sync", filter, hex::encode(first)])).await;

    let (mut have, mut need) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    loop {
        let answer: Value = client.recv().await;
        assert_eq!(answer[0], "NEG-MSG", "{answer}");
        let bytes = hex::decode(answer[2].as_str().unwrap()).unwrap();
        rounds += 1;
        match negentropy.reconcile_with_ids(&bytes, &mut have, &mut need).unwrap() {
            Some(next) => client.send(json!(["NEG-MSG", "sync", hex::encode(next)])).await,
            None => break,
        }
    }
    client.send(json!(["NEG-CLOSE", "sync"])).await;
    let ids = |list: &[Id]| {
        let mut ids: Vec<String> = list.iter().map(|id| hex::encode(id.to_bytes())).collect();
        ids.sort();
        ids
    };
    let expected = |list: &[Event]| {
        let mut ids: Vec<String> = list.iter().map(id_of).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&have), expected(client_only), "what only the client has");
    assert_eq!(ids(&need), expected(relay_only), "what only the relay has");
    assert!(rounds < 10, "{rounds} rounds");

    // A message for a reconciliation that is not open, and a malformed one.
    client.send(json!(["NEG-MSG", "sync", "00"])).await;
    let closed = client.recv().await;
    assert_eq!(
        (closed[0].as_str(), closed[2].as_str().map(|r| r.starts_with("closed:"))),
        (Some("NEG-ERR"), Some(true))
    );
    client.send(json!(["NEG-OPEN", "bad", filter, "not hex"])).await;
    let invalid = client.recv().await;
    assert_eq!(invalid[0], "NEG-ERR");
    assert!(invalid[2].as_str().unwrap().starts_with("invalid:"));
}

async fn a_filter_over_too_many_events_is_refused() {
    let relay = TestRelay::start_with(|c| c.limits.max_negentropy_records = 5).await;
    let author = Keys::generate();
    let mut client = relay.client().await;
    for i in 0..6 {
        client.publish_ok(&note(&author, &format!("n{i}"))).await;
    }
    let mut storage = NegentropyStorageVector::new();
    storage.seal().unwrap();
    let first = Negentropy::owned(storage, 0).unwrap().initiate().unwrap();
    client.send(json!(["NEG-OPEN", "big", {"authors": [author.public_key().to_hex()]}, hex::encode(first)])).await;
    let refused = client.recv().await;
    assert_eq!(refused[0], "NEG-ERR");
    assert!(refused[2].as_str().unwrap().starts_with("blocked:"), "{refused}");
}

crate::on_both_backends!(reconciliation_finds_what_each_side_lacks, a_filter_over_too_many_events_is_refused);
