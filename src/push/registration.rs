//! The decrypted content of a kind 22456 event: a registration, a heartbeat, or a logout.
//! Every field is optional; a present field replaces the stored one, a missing one keeps it.

use nostr::event::Event;
use nostr::key::SecretKey;
use nostr::nips::{nip04, nip44};
use serde_json::{Map, Value};

use crate::config::PushConfig;
use crate::protocol::filter::parse_hash;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationUpdate {
    /// `Some("")` together with `online: 0` is a logout.
    pub device_id: Option<String>,
    pub kinds: Option<Vec<u16>>,
    pub p_tags: Option<Vec<String>>,
    pub e_tags: Option<Vec<String>>,
    pub authors: Option<Vec<String>>,
    pub exclude_authors: Option<Vec<String>>,
    pub relays: Option<Vec<String>>,
    pub online: Option<bool>,
}

impl RegistrationUpdate {
    pub fn is_logout(&self) -> bool {
        self.online == Some(false) && self.device_id.as_deref() == Some("")
    }

    /// True when the update changes some registration field (as opposed to presence only).
    pub fn has_fields(&self) -> bool {
        self.kinds.is_some()
            || self.p_tags.is_some()
            || self.e_tags.is_some()
            || self.authors.is_some()
            || self.exclude_authors.is_some()
            || self.relays.is_some()
    }
}

/// Decrypts the content with the relay's push key: NIP-04 when it has the `?iv=` form, NIP-44 v2 otherwise.
pub fn decrypt(event: &Event, push_key: &SecretKey) -> Result<String, String> {
    let content = event.content.as_str();
    let plaintext = if content.contains("?iv=") {
        nip04::decrypt(push_key, &event.pubkey, content)
    } else {
        nip44::decrypt(push_key, &event.pubkey, content)
    };
    plaintext.map_err(|_| "invalid: cannot decrypt".to_owned())
}

/// Parses decrypted content; `check_relay` judges each relay URL named in `relays`.
pub fn parse(
    plaintext: &str,
    limits: &PushConfig,
    check_relay: impl Fn(&str) -> Result<(), String>,
) -> Result<RegistrationUpdate, String> {
    let value: Value = serde_json::from_str(plaintext).map_err(|_| "invalid: content is not JSON".to_owned())?;
    let Value::Object(object) = value else {
        return Err("invalid: content must be a JSON object".into());
    };
    let mut update = RegistrationUpdate {
        device_id: string_field(&object, "deviceId")?,
        kinds: None,
        p_tags: pubkey_list(&object, "#p", limits.max_p_tags)?,
        e_tags: string_list(&object, "#e", limits.max_e_tags)?,
        authors: pubkey_list(&object, "authors", limits.max_authors)?,
        exclude_authors: pubkey_list(&object, "exclude_authors", limits.max_authors)?,
        relays: string_list(&object, "relays", limits.max_relays)?,
        online: None,
    };
    if let Some(kinds) = object.get("kinds") {
        let kinds = kinds.as_array().ok_or("invalid: kinds must be an array of integers")?;
        check_size("kinds", kinds.len(), limits.max_kinds)?;
        let kinds = kinds
            .iter()
            .map(|k| k.as_u64().and_then(|k| u16::try_from(k).ok()))
            .collect::<Option<Vec<u16>>>()
            .ok_or("invalid: kinds must be an array of integers from 0 to 65535")?;
        update.kinds = Some(kinds);
    }
    if let Some(online) = object.get("online") {
        update.online = Some(match online {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_u64() == Some(0) => false,
            Value::Number(n) if n.as_u64() == Some(1) => true,
            _ => return Err("invalid: online must be 0 or 1".into()),
        });
    }
    if let Some(relays) = &update.relays {
        for relay in relays {
            check_relay(relay).map_err(|e| format!("invalid: relays: {e}"))?;
        }
    }
    Ok(update)
}

fn check_size(field: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("invalid: too many entries in {field} (max {max})"));
    }
    Ok(())
}

fn string_field(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("invalid: {field} must be a string")),
    }
}

fn string_list(object: &Map<String, Value>, field: &str, max: usize) -> Result<Option<Vec<String>>, String> {
    let Some(value) = object.get(field) else { return Ok(None) };
    let wrong_type = || format!("invalid: {field} must be an array of strings");
    let items = value.as_array().ok_or_else(wrong_type)?;
    check_size(field, items.len(), max)?;
    items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong_type)).collect::<Result<_, _>>().map(Some)
}

/// A list of hex pubkeys, normalised to lowercase so that it compares equal to event tags.
fn pubkey_list(object: &Map<String, Value>, field: &str, max: usize) -> Result<Option<Vec<String>>, String> {
    let Some(items) = string_list(object, field, max)? else { return Ok(None) };
    items
        .into_iter()
        .map(|item| {
            let lower = item.to_ascii_lowercase();
            parse_hash(&lower).map(|_| lower).ok_or_else(|| format!("invalid: {field} must hold 64-digit hex pubkeys"))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PushConfig {
        PushConfig { max_kinds: 3, ..PushConfig::default() }
    }

    fn parse(text: &str, limits: &PushConfig) -> Result<RegistrationUpdate, String> {
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
            (r#"{"kinds":[1,2,3,4]}"#, "kinds"),
            (r#"{"deviceId":5}"#, "deviceId"),
            (r##"{"#p":["nothex"]}"##, "#p"),
            (r##"{"#e":[1]}"##, "#e"),
            (r#"{"relays":["https://not.a.relay"]}"#, "relays"),
            (r#"{"online":"yes"}"#, "online"),
        ] {
            let err = parse(text, &limits()).unwrap_err();
            assert!(err.starts_with("invalid:") && err.contains(field), "{text}: {err}");
        }
    }
}
