//! How a registration holds what it watches, compactly, since every registration of a node lives in memory (a big
//! host's node holds a million: SCALING.md): pubkeys as their 32 bytes rather than 64 hex characters in a `String`
//! per list and per map, tag values as an id's 32 bytes when they are one, and each list boxed to its length.

use std::fmt;

use crate::protocol::filter::{Hash32, parse_hash};

/// A `#e` / `#h` value a registration watches: an event id (64 lowercase hex digits, held as its bytes) or any other
/// text (a NIP-29 group id). It equals an event's tag value exactly when its text does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TagValue {
    Id(Hash32),
    Text(Box<str>),
}

impl TagValue {
    pub fn new(value: &str) -> Self {
        match is_lower_hex_id(value).then(|| parse_hash(value)).flatten() {
            Some(id) => Self::Id(id),
            None => Self::Text(value.into()),
        }
    }
}

/// Only the lowercase form is held as bytes, so that the value reads back as it was written.
fn is_lower_hex_id(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Display for TagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => f.write_str(&hex::encode(id)),
            Self::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for TagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Hex pubkeys as bytes, sorted and each once (so that a look-up is a binary search); an entry that is not a pubkey
/// is left out (intake refuses them, so none is stored).
pub fn pubkeys(list: &[String]) -> Box<[Hash32]> {
    let mut keys: Vec<Hash32> = list.iter().filter_map(|hex| parse_hash(hex)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_boxed_slice()
}

pub fn tag_values(list: &[String]) -> Box<[TagValue]> {
    list.iter().map(|value| TagValue::new(value)).collect()
}

pub fn hex_list(keys: &[Hash32]) -> Vec<String> {
    keys.iter().map(hex::encode).collect()
}

pub fn text_list(values: &[TagValue]) -> Vec<String> {
    values.iter().map(TagValue::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written() {
        let id = "ab".repeat(32);
        for value in [id.as_str(), &id.to_ascii_uppercase(), "my-group", ""] {
            let held = TagValue::new(value);
            assert_eq!(held.to_string(), value);
            assert_eq!(TagValue::new(value), held);
        }
        assert!(matches!(TagValue::new(&id), TagValue::Id(_)));
        assert_ne!(TagValue::new(&id), TagValue::new(&id.to_ascii_uppercase()), "as a string comparison would say");
        let keys = pubkeys(&["02".repeat(32), "01".repeat(32), "02".repeat(32), "nope".into()]);
        assert_eq!(hex_list(&keys), vec!["01".repeat(32), "02".repeat(32)]);
    }
}
