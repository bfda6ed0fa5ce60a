//! The NIP write rules, decided once for every database: what storing an event does.
//!
//! NIP-01 replacement (newest `created_at` wins, ties to the lowest id), NIP-09 deletion (by `e` and `a` tag, only
//! the author's own events and never a deletion, tombstones so that a deleted id or address is refused if it arrives
//! later) and NIP-62 vanish (everything of the author up to the request, gift wraps addressed to it) are decided
//! here, from the event and the few [`Facts`] a store reads in its write transaction. [`plan`] says what to change
//! and in what order; each store runs the plan with its own SQL and knows none of the rules.

use crate::protocol::filter::{Hash32, parse_hash};
use crate::protocol::{KindClass, VerifiedEvent};
use crate::store::{WriteOutcome, db_time};

const DELETION_KIND: u16 = 5;
const VANISH_KIND: u16 = 62;
pub(super) use crate::protocol::event::GIFT_WRAP_KIND;

/// The replacement key an event is stored under: `""` for replaceable kinds, the `d` value for addressable ones,
/// none for the rest (so the database's unique index on `(pubkey, kind, d_tag)` ignores them).
pub(super) fn replacement_key(event: &VerifiedEvent) -> Option<&str> {
    match event.class() {
        KindClass::Replaceable => Some(""),
        KindClass::Addressable => Some(event.d_tag()),
        KindClass::Regular | KindClass::Ephemeral => None,
    }
}

/// The ids a deletion names by `e` tag: the stores look up their authors and kinds for [`Facts::named`].
pub(super) fn named_ids(event: &VerifiedEvent) -> Vec<Hash32> {
    if event.kind() != DELETION_KIND {
        return Vec::new();
    }
    event.indexed_tags().filter(|(letter, _)| *letter == 'e').filter_map(|(_, value)| parse_hash(value)).collect()
}

/// What the store read, in the write's transaction, about an arriving event.
#[derive(Debug, Default)]
pub(super) struct Facts {
    /// A deletion by the event's author named its id.
    pub id_deleted: bool,
    /// Up to when the author asked to vanish, if ever.
    pub vanished_until: Option<i64>,
    /// Up to when the author deleted the event's address (its replacement key), if ever.
    pub address_deleted_until: Option<i64>,
    /// The version stored under the event's replacement key.
    pub current: Option<Version>,
    /// The stored events among [`named_ids`].
    pub named: Vec<Named>,
}

/// A stored version of a replaceable or addressable event.
#[derive(Debug)]
pub(super) struct Version {
    pub seq: i64,
    pub created_at: i64,
    pub id: Vec<u8>,
}

/// A stored event a deletion names.
#[derive(Debug)]
pub(super) struct Named {
    pub id: Hash32,
    pub pubkey: Vec<u8>,
    pub kind: u16,
}

/// What storing an event does, in this order: `before`, the insert under `key`, then `after`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan<'e> {
    pub before: Vec<Change<'e>>,
    /// The replacement key the event is inserted under.
    pub key: Option<&'e str>,
    /// Only when the insert stored the event: an id already stored makes the outcome `Duplicate`, and nothing more
    /// happens.
    pub after: Vec<Change<'e>>,
}

/// One change to what is stored besides the event itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change<'e> {
    /// Deletes stored events (and their tags).
    Remove(Removal<'e>),
    /// Remembers a deletion or a request to vanish, so that what it covers is refused if it arrives later.
    Remember(Tombstone<'e>),
}

/// Stored events to delete.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Removal<'e> {
    /// The row with this `seq`: the older version an event replaces.
    Seq(i64),
    /// The event with this id.
    Id(Hash32),
    /// The versions of an address created up to `until`.
    Address { address: Address<'e>, until: i64 },
    /// Everything the pubkey signed up to `until`.
    Author { pubkey: &'e Hash32, until: i64 },
    /// Gift wraps `p`-tagging the pubkey, created up to `until`.
    GiftWrapsTo { pubkey: &'e Hash32, until: i64 },
}

/// What deletions and requests to vanish leave behind. The stores keep the latest `until` of each address and pubkey.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tombstone<'e> {
    /// This id, when `author` signs it.
    Id { id: Hash32, author: &'e Hash32 },
    /// The versions of an address created up to `until`.
    Address { address: Address<'e>, until: i64 },
    /// Everything the pubkey signs with a `created_at` up to `until`.
    Vanished { pubkey: &'e Hash32, until: i64 },
}

/// A replacement key with its author: `(pubkey, kind, d_tag)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Address<'e> {
    pub pubkey: &'e Hash32,
    pub kind: u16,
    pub d_tag: &'e str,
}

/// What storing `event` does, given `facts`, or why it is refused.
pub(super) fn plan<'e>(event: &'e VerifiedEvent, facts: &Facts) -> Result<Plan<'e>, WriteOutcome> {
    if is_deleted(event, facts) {
        return Err(WriteOutcome::Deleted);
    }
    let mut plan = Plan { before: Vec::new(), key: replacement_key(event), after: Vec::new() };
    if let Some(current) = &facts.current {
        plan.before.push(Change::Remove(Removal::Seq(replaces(event, current)?)));
    }
    if event.kind() == VANISH_KIND {
        // Before the insert: the request is among the author's events up to its own time, and must stay.
        vanish(event, &mut plan.before);
    }
    if event.kind() == DELETION_KIND {
        // After the insert, so that a deletion already stored (a duplicate) is not applied again.
        delete(event, facts, &mut plan.after);
    }
    Ok(plan)
}

/// True when a deletion (NIP-09) or a request to vanish (NIP-62) already covers the event. Deletions themselves
/// cannot be deleted by id.
fn is_deleted(event: &VerifiedEvent, facts: &Facts) -> bool {
    let created_at = db_time(event.created_at());
    let covers = |until: Option<i64>| until.is_some_and(|until| until >= created_at);
    (facts.id_deleted && event.kind() != DELETION_KIND)
        || covers(facts.vanished_until)
        || covers(facts.address_deleted_until)
}

/// The `seq` of the stored version `event` replaces, or why the event is refused.
fn replaces(event: &VerifiedEvent, current: &Version) -> Result<i64, WriteOutcome> {
    let created_at = db_time(event.created_at());
    if current.id == event.id() {
        return Err(WriteOutcome::Duplicate);
    }
    // Newest wins; on equal created_at the lowest id wins (NIP-01).
    if current.created_at > created_at || (current.created_at == created_at && current.id[..] < event.id()[..]) {
        return Err(WriteOutcome::Superseded);
    }
    Ok(current.seq)
}

/// NIP-62: everything of the pubkey up to the request's `created_at`, and the gift wraps addressed to it, go, and
/// such events are refused from now on.
fn vanish<'e>(request: &'e VerifiedEvent, changes: &mut Vec<Change<'e>>) {
    let (pubkey, until) = (request.pubkey(), db_time(request.created_at()));
    changes.push(Change::Remember(Tombstone::Vanished { pubkey, until }));
    changes.push(Change::Remove(Removal::Author { pubkey, until }));
    changes.push(Change::Remove(Removal::GiftWrapsTo { pubkey, until }));
}

/// NIP-09: the author's own events named by `e` tags go (the ids are remembered, so that they are refused if they
/// arrive later), and the versions of the author's addresses named by `a` tags up to the deletion's `created_at`.
fn delete<'e>(deletion: &'e VerifiedEvent, facts: &Facts, changes: &mut Vec<Change<'e>>) {
    let author = deletion.pubkey();
    let until = db_time(deletion.created_at());
    for (letter, value) in deletion.indexed_tags() {
        match letter {
            'e' => {
                let Some(id) = parse_hash(value) else { continue };
                changes.push(Change::Remember(Tombstone::Id { id, author }));
                let own =
                    |named: &Named| named.id == id && named.pubkey[..] == author[..] && named.kind != DELETION_KIND;
                if facts.named.iter().any(own) {
                    changes.push(Change::Remove(Removal::Id(id)));
                }
            }
            'a' => {
                let Some((kind, pubkey, d_tag)) = parse_address(value) else { continue };
                if pubkey != *author || kind == DELETION_KIND {
                    continue;
                }
                let address = Address { pubkey: author, kind, d_tag };
                changes.push(Change::Remember(Tombstone::Address { address, until }));
                changes.push(Change::Remove(Removal::Address { address, until }));
            }
            _ => {}
        }
    }
}

/// Parses an `a` tag value, `<kind>:<pubkey hex>:<d tag>`.
fn parse_address(value: &str) -> Option<(u16, Hash32, &str)> {
    let mut parts = value.splitn(3, ':');
    let kind = parts.next()?.parse().ok()?;
    let pubkey = parse_hash(parts.next()?)?;
    Some((kind, pubkey, parts.next().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use nostr::event::FinalizeEvent;
    use nostr::prelude::{EventBuilder, Keys, Kind, Tag, Timestamp};

    use super::*;

    fn event(keys: &Keys, kind: u16, tags: &[[String; 2]], created_at: u64) -> VerifiedEvent {
        let tags = tags.iter().map(|t| Tag::parse(t).unwrap());
        let event = EventBuilder::new(Kind::from(kind), "")
            .tags(tags)
            .custom_created_at(Timestamp::from_secs(created_at))
            .finalize(keys)
            .unwrap();
        VerifiedEvent::new(event)
    }

    fn version(seq: i64, created_at: i64, id: &[u8]) -> Facts {
        Facts { current: Some(Version { seq, created_at, id: id.to_vec() }), ..Facts::default() }
    }

    #[test]
    fn newest_version_wins_and_ties_go_to_the_lowest_id() {
        let profile = event(&Keys::generate(), 0, &[], 100);
        let replaces = plan(&profile, &version(7, 99, &[0xff; 32])).unwrap();
        assert_eq!(replaces.before, [Change::Remove(Removal::Seq(7))]);
        assert_eq!(replaces.key, Some(""));
        assert_eq!(plan(&profile, &version(7, 101, &[0xff; 32])), Err(WriteOutcome::Superseded));
        assert_eq!(plan(&profile, &version(7, 100, &[0; 32])), Err(WriteOutcome::Superseded));
        assert!(plan(&profile, &version(7, 100, &[0xff; 32])).is_ok());
        assert_eq!(plan(&profile, &version(7, 100, profile.id())), Err(WriteOutcome::Duplicate));
    }

    #[test]
    fn tombstones_refuse_what_they_cover_but_never_a_deletion_by_id() {
        let keys = Keys::generate();
        let note = event(&keys, 1, &[], 100);
        let by_id = Facts { id_deleted: true, ..Facts::default() };
        assert_eq!(plan(&note, &by_id), Err(WriteOutcome::Deleted));
        assert!(plan(&event(&keys, DELETION_KIND, &[], 100), &by_id).is_ok());
        let vanished = |until| Facts { vanished_until: Some(until), ..Facts::default() };
        assert_eq!(plan(&note, &vanished(100)), Err(WriteOutcome::Deleted));
        assert!(plan(&note, &vanished(99)).is_ok());
        let article = event(&keys, 30_023, &[["d".to_owned(), "a".to_owned()]], 100);
        let address = Facts { address_deleted_until: Some(100), ..Facts::default() };
        assert_eq!(plan(&article, &address), Err(WriteOutcome::Deleted));
    }

    #[test]
    fn a_deletion_removes_only_its_authors_events_after_its_insert() {
        let (keys, other) = (Keys::generate(), Keys::generate());
        let (own, theirs, deletion) = (event(&keys, 1, &[], 1), event(&other, 1, &[], 1), event(&keys, 5, &[], 1));
        let named = |e: &VerifiedEvent| Named { id: *e.id(), pubkey: e.pubkey().to_vec(), kind: e.kind() };
        let facts = Facts { named: vec![named(&own), named(&theirs), named(&deletion)], ..Facts::default() };
        let (author, stranger) = (keys.public_key().to_hex(), other.public_key().to_hex());
        let e = |e: &VerifiedEvent| ["e".to_owned(), hex::encode(e.id())];
        let a = |address: String| ["a".to_owned(), address];
        let tags = [
            e(&own),
            e(&theirs),
            e(&deletion),
            a(format!("30023:{author}:a")),
            a(format!("30023:{stranger}:b")),
            a(format!("5:{author}:")),
        ];
        let request = event(&keys, DELETION_KIND, &tags, 50);
        let plan = plan(&request, &facts).unwrap();
        assert!(plan.before.is_empty());
        let author = request.pubkey();
        let address = Address { pubkey: author, kind: 30_023, d_tag: "a" };
        assert_eq!(
            plan.after,
            [
                Change::Remember(Tombstone::Id { id: *own.id(), author }),
                Change::Remove(Removal::Id(*own.id())),
                Change::Remember(Tombstone::Id { id: *theirs.id(), author }),
                Change::Remember(Tombstone::Id { id: *deletion.id(), author }),
                Change::Remember(Tombstone::Address { address, until: 50 }),
                Change::Remove(Removal::Address { address, until: 50 }),
            ]
        );
    }

    #[test]
    fn a_request_to_vanish_clears_before_its_own_insert() {
        let request = event(&Keys::generate(), VANISH_KIND, &[["relay".to_owned(), "ALL_RELAYS".to_owned()]], 100);
        let plan = plan(&request, &Facts::default()).unwrap();
        let pubkey = request.pubkey();
        assert_eq!(
            plan.before,
            [
                Change::Remember(Tombstone::Vanished { pubkey, until: 100 }),
                Change::Remove(Removal::Author { pubkey, until: 100 }),
                Change::Remove(Removal::GiftWrapsTo { pubkey, until: 100 }),
            ]
        );
        assert!(plan.after.is_empty());
    }
}
