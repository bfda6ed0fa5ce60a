//! Parsing and checking an event's id and signature. CPU-bound: callers run it off the async threads.

use nostr::event::Event;
use serde_json::value::RawValue;

use super::refusal::Refusal;

/// Parses an event, answering with NIP-01's `invalid` refusal when it is malformed.
pub fn parse_event(raw: &RawValue) -> Result<Event, Refusal> {
    Event::from_json(raw.get()).map_err(|e| Refusal::invalid(format!("malformed event: {e}")))
}

/// Checks that the id is the hash of the content and that the signature is the author's.
pub fn verify_event(event: &Event) -> Result<(), Refusal> {
    if !event.verify_id() {
        return Err(Refusal::invalid("event id does not match the event"));
    }
    if !event.verify_signature() {
        return Err(Refusal::invalid("bad signature"));
    }
    Ok(())
}
