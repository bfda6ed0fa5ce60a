//! Parsing and checking an event's id and signature. CPU-bound: callers run it off the async threads.

use nostr::event::Event;
use serde_json::value::RawValue;

/// Parses an event, answering with the NIP-01 `invalid:` reason when it is malformed.
pub fn parse_event(raw: &RawValue) -> Result<Event, String> {
    Event::from_json(raw.get()).map_err(|e| format!("invalid: malformed event: {e}"))
}

/// Checks that the id is the hash of the content and that the signature is the author's.
pub fn verify_event(event: &Event) -> Result<(), &'static str> {
    if !event.verify_id() {
        return Err("invalid: event id does not match the event");
    }
    if !event.verify_signature() {
        return Err("invalid: bad signature");
    }
    Ok(())
}
