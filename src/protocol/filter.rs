//! NIP-01 filters: strict parsing from JSON and matching against an event.
//!
//! The same `Filter` drives the store's SQL and the live fan-out, so both agree on what matches.

use std::collections::BTreeMap;

use nostr::event::Event;
use serde_json::{Map, Value};

use super::refusal::Refusal;
use super::search::{ContentWords, Search};

pub type Hash32 = [u8; 32];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub ids: Option<Vec<Hash32>>,
    pub authors: Option<Vec<Hash32>>,
    pub kinds: Option<Vec<u16>>,
    /// Single-letter tag queries (`#e`, `#p`, ...): an event must carry one of the values for every letter.
    pub tags: BTreeMap<char, Vec<String>>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub limit: Option<u64>,
    /// NIP-50: words the content must hold; results come best match first.
    pub search: Option<Search>,
}

impl Filter {
    /// Parses one filter object. Unknown keys are ignored, as NIP-01 relays commonly do.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or("a filter must be a JSON object")?;
        let mut filter = Filter {
            ids: hashes(object, "ids")?,
            authors: hashes(object, "authors")?,
            kinds: None,
            tags: BTreeMap::new(),
            since: integer(object, "since")?,
            until: integer(object, "until")?,
            limit: integer(object, "limit")?,
            search: match object.get("search") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(Search::new(text.clone())),
                Some(_) => return Err("search: expected a string".into()),
            },
        };
        if let Some(kinds) = object.get("kinds") {
            let kinds = kinds.as_array().ok_or("kinds: expected an array")?;
            filter.kinds = Some(
                kinds
                    .iter()
                    .map(|k| {
                        k.as_u64()
                            .and_then(|k| u16::try_from(k).ok())
                            .ok_or_else(|| "kinds: expected integers from 0 to 65535".to_owned())
                    })
                    .collect::<Result<_, _>>()?,
            );
        }
        for (key, values) in object {
            let Some(letter) = key.strip_prefix('#') else { continue };
            let mut chars = letter.chars();
            let (Some(letter), None) = (chars.next(), chars.next()) else {
                return Err(format!("{key}: tag filters take a single letter"));
            };
            if !letter.is_ascii_alphabetic() {
                return Err(format!("{key}: tag filters take a single letter"));
            }
            let values = values.as_array().ok_or_else(|| format!("{key}: expected an array of strings"))?;
            let values = values
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{key}: expected an array of strings")))
                .collect::<Result<_, _>>()?;
            filter.tags.insert(letter, values);
        }
        Ok(filter)
    }

    /// The filter as NIP-01 JSON, for sending to another relay.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        let hex_list = |list: &[Hash32]| Value::from(list.iter().map(hex::encode).collect::<Vec<_>>());
        if let Some(ids) = &self.ids {
            object.insert("ids".into(), hex_list(ids));
        }
        if let Some(authors) = &self.authors {
            object.insert("authors".into(), hex_list(authors));
        }
        if let Some(kinds) = &self.kinds {
            object.insert("kinds".into(), Value::from(kinds.clone()));
        }
        for (letter, values) in &self.tags {
            object.insert(format!("#{letter}"), Value::from(values.clone()));
        }
        for (key, value) in [("since", self.since), ("until", self.until), ("limit", self.limit)] {
            if let Some(value) = value {
                object.insert(key.into(), Value::from(value));
            }
        }
        if let Some(search) = &self.search {
            object.insert("search".into(), Value::from(search.text()));
        }
        Value::Object(object)
    }

    /// The number of ids, authors, kinds and tag values in the filter, for size limits.
    pub fn value_count(&self) -> usize {
        self.ids.as_ref().map_or(0, Vec::len)
            + self.authors.as_ref().map_or(0, Vec::len)
            + self.kinds.as_ref().map_or(0, Vec::len)
            + self.tags.values().map(Vec::len).sum::<usize>()
    }

    /// Why the filter's NIP-50 `search` is more than a relay with these limits runs, if it is: at most `max_terms`
    /// distinct words in at most `max_length` bytes.
    pub fn search_refusal(&self, max_terms: usize, max_length: usize) -> Option<Refusal> {
        let search = self.search.as_ref()?;
        if search.text().len() > max_length {
            return Some(Refusal::invalid(format!("search longer than {max_length} bytes")));
        }
        let terms = search.terms().len();
        (terms > max_terms).then(|| Refusal::invalid(format!("search has {terms} different words (max {max_terms})")))
    }

    /// True when no stored event can match whatever the store holds, e.g. `since` after `until`.
    pub fn is_empty_range(&self) -> bool {
        matches!((self.since, self.until), (Some(since), Some(until)) if since > until)
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.matches_with(event, &ContentWords::new(event.kind.as_u16(), &event.content))
    }

    /// `matches`, with the event's content words shared between the filters that look at one event.
    pub fn matches_with(&self, event: &Event, words: &ContentWords) -> bool {
        let listed = |list: &Option<Vec<Hash32>>, value: &Hash32| list.as_ref().is_none_or(|l| l.contains(value));
        if !listed(&self.ids, event.id.as_bytes())
            || !listed(&self.authors, event.pubkey.as_bytes())
            || !self.kinds.as_ref().is_none_or(|kinds| kinds.contains(&event.kind.as_u16()))
        {
            return false;
        }
        let created_at = event.created_at.as_secs();
        if self.since.is_some_and(|since| created_at < since) || self.until.is_some_and(|until| created_at > until) {
            return false;
        }
        self.tags.iter().all(|(letter, values)| {
            event.tags.iter().any(|tag| {
                let tag = tag.as_slice();
                tag.len() >= 2 && is_letter(&tag[0], *letter) && values.iter().any(|v| *v == tag[1])
            })
        }) && self.search.as_ref().is_none_or(|search| words.has_all(search.terms()))
    }
}

fn is_letter(name: &str, letter: char) -> bool {
    let mut chars = name.chars();
    chars.next() == Some(letter) && chars.next().is_none()
}

fn hashes(object: &Map<String, Value>, key: &str) -> Result<Option<Vec<Hash32>>, String> {
    let Some(values) = object.get(key) else { return Ok(None) };
    let values = values.as_array().ok_or_else(|| format!("{key}: expected an array of hex strings"))?;
    values
        .iter()
        .map(|v| {
            v.as_str().and_then(parse_hash).ok_or_else(|| format!("{key}: expected 64-character lowercase hex strings"))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Parses a 64-digit lowercase hex string, the only form NIP-01 allows for ids and pubkeys.
pub fn parse_hash(text: &str) -> Option<Hash32> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn integer(object: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("{key}: expected a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_all_fields() {
        let id = "a".repeat(64);
        let filter = Filter::from_json(&json!({
            "ids": [id], "authors": [], "kinds": [1, 30023], "#e": ["x"], "#t": ["y", "z"],
            "since": 5, "until": 10, "limit": 3, "search": "pizza"
        }))
        .unwrap();
        assert_eq!(filter.ids.unwrap().len(), 1);
        assert_eq!(filter.authors, Some(vec![]));
        assert_eq!(filter.kinds, Some(vec![1, 30023]));
        assert_eq!(filter.tags.len(), 2);
        assert_eq!((filter.since, filter.until, filter.limit), (Some(5), Some(10), Some(3)));
        assert_eq!(filter.search.as_ref().map(Search::text), Some("pizza"));
    }

    #[test]
    fn round_trips_through_json() {
        let json = json!({"ids": ["a".repeat(64)], "kinds": [1, 7], "#p": ["x"], "since": 5, "limit": 3});
        let filter = Filter::from_json(&json).unwrap();
        assert_eq!(filter.to_json(), json);
        assert_eq!(Filter::from_json(&filter.to_json()).unwrap(), filter);
    }

    #[test]
    fn rejects_wrong_types_and_forms() {
        for bad in [
            json!([]),
            json!({"ids": "abc"}),
            json!({"ids": ["abc"]}),
            json!({"authors": ["A".repeat(64)]}),
            json!({"kinds": [70000]}),
            json!({"kinds": ["1"]}),
            json!({"since": -1}),
            json!({"limit": 1.5}),
            json!({"#ee": ["x"]}),
            json!({"#1": ["x"]}),
            json!({"#e": [1]}),
        ] {
            assert!(Filter::from_json(&bad).is_err(), "{bad}");
        }
    }
}
