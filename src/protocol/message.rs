//! Client-to-relay messages (parsed strictly) and relay-to-client messages (formatted).

use serde_json::value::RawValue;

use super::filter::Filter;
use super::refusal::Refusal;

#[derive(Debug)]
pub enum ClientMessage {
    /// The event is kept raw: it is parsed and verified off the async threads.
    Event(Box<RawValue>),
    Req {
        sub_id: String,
        filters: Vec<Filter>,
    },
    Close {
        sub_id: String,
    },
    /// NIP-45.
    Count {
        sub_id: String,
        filters: Vec<Filter>,
    },
    /// NIP-42: the signed kind 22242 event, checked off the async threads like any event.
    Auth(Box<RawValue>),
    /// NIP-77: start reconciling the events matching `filter`, with the client's first negentropy message.
    NegOpen {
        sub_id: String,
        filter: Filter,
        message: Vec<u8>,
    },
    NegMsg {
        sub_id: String,
        message: Vec<u8>,
    },
    NegClose {
        sub_id: String,
    },
}

/// Why a message was refused, and to whom the answer goes.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing in the message says what it was about: answer with a NOTICE.
    Notice(Refusal),
    /// A REQ whose subscription id is known: answer with CLOSED.
    Closed { sub_id: String, reason: Refusal },
    /// A NIP-77 message whose subscription id is known: answer with NEG-ERR.
    NegError { sub_id: String, reason: Refusal },
    /// An EVENT that is not valid JSON but whose id could be read: answer with `OK false` for that id.
    Event { event_id: String, reason: Refusal },
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let parts: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| match event_id_in_text(text) {
            Some(event_id) => ParseError::Event { event_id, reason: Refusal::invalid("the event is not valid JSON") },
            None => ParseError::Notice(Refusal::invalid("message is not a JSON array")),
        })?;
        let verb: &str = parts
            .first()
            .and_then(|v| serde_json::from_str(v.get()).ok())
            .ok_or_else(|| ParseError::Notice(Refusal::invalid("message must start with a verb string")))?;
        match verb {
            "EVENT" => match parts.as_slice() {
                [_, event] => Ok(Self::Event((*event).to_owned())),
                _ => Err(ParseError::Notice(Refusal::invalid("EVENT takes exactly one event"))),
            },
            "AUTH" => match parts.as_slice() {
                [_, event] => Ok(Self::Auth((*event).to_owned())),
                _ => Err(ParseError::Notice(Refusal::invalid("AUTH takes exactly one event"))),
            },
            "REQ" | "COUNT" => {
                let sub_id = sub_id(&parts, verb)?;
                let filters = parts[2..]
                    .iter()
                    .map(|raw| {
                        serde_json::from_str(raw.get())
                            .map_err(|e| e.to_string())
                            .and_then(|value| Filter::from_json(&value))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ParseError::Closed { sub_id: sub_id.clone(), reason: Refusal::invalid(e) })?;
                if filters.is_empty() {
                    let reason = Refusal::invalid(format!("{verb} needs at least one filter"));
                    return Err(ParseError::Closed { sub_id, reason });
                }
                Ok(if verb == "REQ" { Self::Req { sub_id, filters } } else { Self::Count { sub_id, filters } })
            }
            "CLOSE" => match parts.as_slice() {
                [_, _] => Ok(Self::Close { sub_id: sub_id(&parts, "CLOSE")? }),
                _ => Err(ParseError::Notice(Refusal::invalid("CLOSE takes exactly one subscription id"))),
            },
            "NEG-OPEN" | "NEG-MSG" => {
                let sub_id = sub_id(&parts, verb)?;
                let refuse = |reason: &str| ParseError::NegError {
                    sub_id: sub_id.clone(),
                    reason: Refusal::invalid(reason.to_owned()),
                };
                let (filter, message) = match (verb, parts.as_slice()) {
                    ("NEG-OPEN", [_, _, filter, message]) => (Some(*filter), *message),
                    ("NEG-MSG", [_, _, message]) => (None, *message),
                    _ => return Err(refuse(&format!("{verb} has the wrong number of elements"))),
                };
                let message = serde_json::from_str::<String>(message.get())
                    .ok()
                    .and_then(|hex_text| hex::decode(hex_text).ok())
                    .ok_or_else(|| refuse("the negentropy message must be a hex string"))?;
                match filter {
                    Some(raw) => {
                        let filter = serde_json::from_str(raw.get())
                            .map_err(|e| e.to_string())
                            .and_then(|value| Filter::from_json(&value))
                            .map_err(|e| refuse(&e))?;
                        Ok(Self::NegOpen { sub_id, filter, message })
                    }
                    None => Ok(Self::NegMsg { sub_id, message }),
                }
            }
            "NEG-CLOSE" => match parts.as_slice() {
                [_, _] => Ok(Self::NegClose { sub_id: sub_id(&parts, verb)? }),
                _ => Err(ParseError::Notice(Refusal::invalid("NEG-CLOSE takes exactly one subscription id"))),
            },
            other => Err(ParseError::Notice(Refusal::invalid(format!("unknown message type {}", quote(other))))),
        }
    }
}

fn sub_id(parts: &[&RawValue], verb: &str) -> Result<String, ParseError> {
    parts
        .get(1)
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ParseError::Notice(Refusal::invalid(format!("{verb} needs a subscription id string"))))
}

/// Best effort to find the id of an event that failed to parse, so that the client gets an `OK` it can match.
pub fn event_id_of(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(raw.get())
        .ok()
        .map(|e| e.id)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The id of an EVENT message that is not valid JSON, read from its text: the first `"id"` key after the verb with
/// a 64-digit hex string value. Best effort, so that a client whose event got mangled still gets an `OK` it can
/// match instead of a NOTICE.
fn event_id_in_text(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix('[')?.trim_start().strip_prefix("\"EVENT\"")?;
    let mut search = rest;
    while let Some(at) = search.find("\"id\"") {
        let after = search[at + 4..].trim_start();
        if let Some(value) = after.strip_prefix(':').map(str::trim_start).and_then(|v| v.strip_prefix('"'))
            && let Some(id) = value.get(..64).filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit()))
            && value[64..].starts_with('"')
        {
            return Some(id.to_ascii_lowercase());
        }
        search = &search[at + 4..];
    }
    None
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialize")
}

pub fn ok(event_id: &str, accepted: bool, message: &str) -> String {
    format!(r#"["OK",{},{accepted},{}]"#, quote(event_id), quote(message))
}

/// `OK false` with the refusal.
pub fn refused(event_id: &str, refusal: &Refusal) -> String {
    ok(event_id, false, &refusal.to_string())
}

pub fn event(sub_id: &str, event_json: &str) -> String {
    event_after(&event_prefix(sub_id), event_json)
}

/// `["EVENT",<sub_id>,`: the start of every event sent to one subscription, quoted once for all of them.
pub fn event_prefix(sub_id: &str) -> String {
    format!(r#"["EVENT",{},"#, quote(sub_id))
}

/// An event message from its subscription's `event_prefix`: one allocation, no formatting.
pub fn event_after(prefix: &str, event_json: &str) -> String {
    let mut message = String::with_capacity(prefix.len() + event_json.len() + 1);
    message.push_str(prefix);
    message.push_str(event_json);
    message.push(']');
    message
}

pub fn eose(sub_id: &str) -> String {
    format!(r#"["EOSE",{}]"#, quote(sub_id))
}

pub fn closed(sub_id: &str, reason: &Refusal) -> String {
    format!(r#"["CLOSED",{},{}]"#, quote(sub_id), quote(&reason.to_string()))
}

pub fn neg_msg(sub_id: &str, message: &[u8]) -> String {
    format!(r#"["NEG-MSG",{},"{}"]"#, quote(sub_id), hex::encode(message))
}

pub fn neg_err(sub_id: &str, reason: &Refusal) -> String {
    format!(r#"["NEG-ERR",{},{}]"#, quote(sub_id), quote(&reason.to_string()))
}

/// NIP-45: `approximate` when counting stopped at the relay's limit.
pub fn count(sub_id: &str, count: u64, approximate: bool) -> String {
    if approximate {
        format!(r#"["COUNT",{},{{"count":{count},"approximate":true}}]"#, quote(sub_id))
    } else {
        format!(r#"["COUNT",{},{{"count":{count}}}]"#, quote(sub_id))
    }
}

pub fn auth(challenge: &str) -> String {
    format!(r#"["AUTH",{}]"#, quote(challenge))
}

pub fn notice(refusal: &Refusal) -> String {
    format!(r#"["NOTICE",{}]"#, quote(&refusal.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_verb() {
        assert!(matches!(ClientMessage::parse(r#"["EVENT",{"id":"x"}]"#), Ok(ClientMessage::Event(_))));
        match ClientMessage::parse(r#"["REQ","s",{"kinds":[1]},{}]"#).unwrap() {
            ClientMessage::Req { sub_id, filters } => assert_eq!((sub_id.as_str(), filters.len()), ("s", 2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ClientMessage::parse(r#"["CLOSE","s"]"#), Ok(ClientMessage::Close { .. })));
        assert!(matches!(ClientMessage::parse(r#"["COUNT","c",{}]"#), Ok(ClientMessage::Count { .. })));
        assert!(matches!(ClientMessage::parse(r#"["AUTH",{"kind":22242}]"#), Ok(ClientMessage::Auth(_))));
    }

    #[test]
    fn malformed_messages_get_notices() {
        for bad in
            ["", "{}", "[]", "[1]", r#"["EVENT"]"#, r#"["REQ"]"#, r#"["REQ",5,{}]"#, r#"["NOPE"]"#, "[\"EVENT\",{}"]
        {
            assert!(matches!(ClientMessage::parse(bad), Err(ParseError::Notice(_))), "{bad}");
        }
    }

    #[test]
    fn an_event_that_is_not_json_is_answered_by_its_id_when_it_can_be_read() {
        let id = "ab".repeat(32);
        let broken = format!(r#"["EVENT",{{"id": "{id}","pubkey":"x","content":"unterminated}}]"#);
        assert_eq!(
            ClientMessage::parse(&broken).unwrap_err(),
            ParseError::Event { event_id: id, reason: Refusal::invalid("the event is not valid JSON") }
        );
        // No readable id, or not an EVENT: a NOTICE, as before.
        for bad in [r#"["EVENT",{"id":"short","content":"x}]"#, r#"["REQ",{"id":"ab"#] {
            assert!(matches!(ClientMessage::parse(bad), Err(ParseError::Notice(_))), "{bad}");
        }
    }

    #[test]
    fn bad_filters_close_the_subscription() {
        assert_eq!(
            ClientMessage::parse(r#"["REQ","s",{"kinds":"x"}]"#).unwrap_err(),
            ParseError::Closed { sub_id: "s".into(), reason: Refusal::invalid("kinds: expected an array") }
        );
        assert!(matches!(ClientMessage::parse(r#"["REQ","s"]"#), Err(ParseError::Closed { .. })));
    }

    #[test]
    fn formats_escape_strings() {
        assert_eq!(notice(&Refusal::invalid("a\"b")), r#"["NOTICE","invalid: a\"b"]"#);
        assert_eq!(ok("ab", false, "invalid: x"), r#"["OK","ab",false,"invalid: x"]"#);
    }
}
