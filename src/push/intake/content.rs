//! The decrypted content of a kind 22456 event: a registration, a heartbeat, or a logout.
//! Every field is optional; a present field replaces the stored one, a missing one keeps it.

use nostr::event::Event;
use nostr::key::SecretKey;
use nostr::nips::{nip04, nip44};
use serde_json::{Map, Value};

use crate::config::PushConfig;
use crate::protocol::Refusal;
use crate::protocol::filter::parse_hash;
use crate::push::audience::update::RegistrationUpdate;

/// Decrypts the content with the relay's push key: NIP-04 when it has the `?iv=` form, NIP-44 v2 otherwise.
pub fn decrypt(event: &Event, push_key: &SecretKey) -> Result<String, Refusal> {
    let content = event.content.as_str();
    let plaintext = if content.contains("?iv=") {
        nip04::decrypt(push_key, &event.pubkey, content)
    } else {
        nip44::decrypt(push_key, &event.pubkey, content)
    };
    plaintext.map_err(|_| Refusal::invalid("cannot decrypt"))
}

/// Parses decrypted content; `check_relay` judges each relay URL named in `relays`. Only malformed content is
/// refused (not JSON, a field of the wrong type, an entry that is not a pubkey where one is due): a list longer
/// than its cap is kept to its first entries, and relays that may not be watched are left out, each said in `notes`.
/// An app re-sends the same registration on every reconnect, so a refusal would cost its user every push.
pub fn parse(
    plaintext: &str,
    limits: &PushConfig,
    check_relay: impl Fn(&str) -> Result<(), String>,
) -> Result<RegistrationUpdate, Refusal> {
    let value: Value = serde_json::from_str(plaintext).map_err(|_| Refusal::invalid("content is not JSON"))?;
    let Value::Object(object) = value else {
        return Err(Refusal::invalid("content must be a JSON object"));
    };
    let mut notes = Vec::new();
    let mut update = RegistrationUpdate {
        device_id: string_field(&object, "deviceId")?,
        kinds: None,
        p_tags: pubkey_list(&object, "#p", limits.max_p_tags, &mut notes)?,
        e_tags: string_list(&object, "#e", limits.max_e_tags, &mut notes)?,
        authors: pubkey_list(&object, "authors", limits.max_authors, &mut notes)?,
        exclude_authors: pubkey_list(&object, "exclude_authors", limits.max_authors, &mut notes)?,
        relays: None,
        online: None,
        only_from_authors: flag(&object, "only_from_authors")?,
        limit_mentions: flag(&object, "enableMaxMentions")?,
        notes: Vec::new(),
    };
    if let Some(kinds) = object.get("kinds") {
        let kinds = kinds.as_array().ok_or_else(|| Refusal::invalid("kinds must be an array of integers"))?;
        let mut kinds = kinds
            .iter()
            .map(|k| k.as_u64().and_then(|k| u16::try_from(k).ok()))
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| Refusal::invalid("kinds must be an array of integers from 0 to 65535"))?;
        keep_first("kinds", &mut kinds, limits.max_kinds, &mut notes);
        update.kinds = Some(kinds);
    }
    update.online = flag(&object, "online")?;
    // Relays are judged before the cap, so that an unusable one does not take a usable one's place.
    if let Some(relays) = string_list(&object, "relays", usize::MAX, &mut notes)? {
        let mut usable = Vec::with_capacity(relays.len());
        for relay in relays {
            match check_relay(&relay) {
                Ok(()) if !usable.contains(&relay) => usable.push(relay),
                Ok(()) => {}
                Err(e) => notes.push(format!("relays: left out {e}")),
            }
        }
        keep_first("relays", &mut usable, limits.max_relays, &mut notes);
        update.relays = Some(usable);
    }
    update.notes = notes;
    Ok(update)
}

/// Keeps the first `max` entries of an over-long list, and says so.
fn keep_first<T>(field: &str, list: &mut Vec<T>, max: usize, notes: &mut Vec<String>) {
    if list.len() > max {
        notes.push(format!("{field}: kept the first {max} of {}", list.len()));
        list.truncate(max);
    }
}

/// A yes-or-no field: `true`/`false`, or `1`/`0` as the apps send `online`.
fn flag(object: &Map<String, Value>, field: &str) -> Result<Option<bool>, Refusal> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(Refusal::invalid(format!("{field} must be true or false (or 1 or 0)"))),
    }
}

fn string_field(object: &Map<String, Value>, field: &str) -> Result<Option<String>, Refusal> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Refusal::invalid(format!("{field} must be a string"))),
    }
}

fn string_list(
    object: &Map<String, Value>,
    field: &str,
    max: usize,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<String>>, Refusal> {
    let Some(value) = object.get(field) else { return Ok(None) };
    let wrong_type = || Refusal::invalid(format!("{field} must be an array of strings"));
    let items = value.as_array().ok_or_else(wrong_type)?;
    let mut items: Vec<String> =
        items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong_type)).collect::<Result<_, _>>()?;
    keep_first(field, &mut items, max, notes);
    Ok(Some(items))
}

/// A list of hex pubkeys, normalised to lowercase so that it compares equal to event tags.
fn pubkey_list(
    object: &Map<String, Value>,
    field: &str,
    max: usize,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<String>>, Refusal> {
    let Some(items) = string_list(object, field, max, notes)? else { return Ok(None) };
    items
        .into_iter()
        .map(|item| {
            let lower = item.to_ascii_lowercase();
            parse_hash(&lower)
                .map(|_| lower)
                .ok_or_else(|| Refusal::invalid(format!("{field} must hold 64-digit hex pubkeys")))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::refusal::Prefix;

    fn limits() -> PushConfig {
        PushConfig { max_kinds: 3, ..PushConfig::default() }
    }

    fn parse(text: &str, limits: &PushConfig) -> Result<RegistrationUpdate, Refusal> {
        let upstream = crate::config::UpstreamConfig::default();
        super::parse(text, limits, |relay| crate::upstream::check_relay_url(relay, &upstream).map(|_| ()))
    }

    #[test]
    fn parses_a_full_registration() {
        let pk = "ab".repeat(32);
        let update = parse(
            &format!(
                r##"{{"kinds":[4,1059],"deviceId":"tok","relays":["wss://r.example"],"#p":["{}"],"#e":["group"],
                "authors":[],"exclude_authors":["{pk}"],"unknown":true}}"##,
                pk.to_uppercase()
            ),
            &limits(),
        )
        .unwrap();
        assert_eq!(update.kinds, Some(vec![4, 1059]));
        assert_eq!(update.p_tags, Some(vec![pk.clone()]), "normalised to lowercase");
        assert_eq!(update.e_tags, Some(vec!["group".into()]));
        assert_eq!(update.authors, Some(vec![]));
        assert_eq!(update.online, None);
        assert!(update.has_fields());
        assert!(update.notes.is_empty());
        assert_eq!((update.only_from_authors, update.limit_mentions), (None, None), "absent: unchanged");
        let options = parse(r#"{"only_from_authors":true,"enableMaxMentions":1}"#, &limits()).unwrap();
        assert_eq!((options.only_from_authors, options.limit_mentions), (Some(true), Some(true)));
        assert!(options.has_fields());
    }

    #[test]
    fn over_long_lists_are_kept_to_their_caps_and_unusable_relays_left_out() {
        let relays: Vec<String> = (0..20).map(|n| format!("wss://r{n}.example")).collect();
        let mut named = vec!["https://not.a.relay".to_owned(), "wss://10.0.0.1".to_owned()];
        named.extend(relays.iter().cloned());
        let text = serde_json::json!({"kinds": [1, 4, 7, 9735], "relays": named}).to_string();
        let update = parse(&text, &limits()).unwrap();
        assert_eq!(update.kinds, Some(vec![1, 4, 7]));
        assert_eq!(update.relays.as_deref(), Some(&relays[..16]));
        let notes = update.notes.join("; ");
        for said in ["kinds: kept the first 3 of 4", "relays: kept the first 16 of 20", "not.a.relay", "10.0.0.1"] {
            assert!(notes.contains(said), "{notes}");
        }
    }

    #[test]
    fn heartbeats_and_logout() {
        assert_eq!(parse(r#"{"online":1}"#, &limits()).unwrap().online, Some(true));
        assert!(!parse(r#"{"online":1}"#, &limits()).unwrap().has_fields());
        assert!(parse(r#"{"online":0,"deviceId":""}"#, &limits()).unwrap().is_logout());
        assert!(!parse(r#"{"online":0}"#, &limits()).unwrap().is_logout());
    }

    #[test]
    fn names_the_wrong_field() {
        for (text, field) in [
            (r#"[1]"#, "object"),
            (r#"{"kinds":"4"}"#, "kinds"),
            (r#"{"deviceId":5}"#, "deviceId"),
            (r##"{"#p":["nothex"]}"##, "#p"),
            (r##"{"#e":[1]}"##, "#e"),
            (r#"{"online":"yes"}"#, "online"),
            (r#"{"only_from_authors":"yes"}"#, "only_from_authors"),
            (r#"{"enableMaxMentions":[]}"#, "enableMaxMentions"),
        ] {
            let err = parse(text, &limits()).unwrap_err();
            assert!(err.prefix() == Prefix::Invalid && err.message().contains(field), "{text}: {err}");
        }
    }
}
