//! The operator's moderation decisions (NIP-86): banned and allowed pubkeys, banned events, and the relay's name
//! and description, read from the database (where every node sees them) and merged into the configuration's lists.

use std::collections::HashMap;

use crate::config::Config;
use crate::protocol::filter::{Hash32, parse_hash};

pub const BANNED_PUBKEYS: &str = "banned_pubkey";
pub const ALLOWED_PUBKEYS: &str = "allowed_pubkey";
pub const BANNED_EVENTS: &str = "banned_event";
pub const RELAY_NAME: &str = "relay_name";
pub const RELAY_DESCRIPTION: &str = "relay_description";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moderation {
    pub banned_pubkeys: HashMap<Hash32, String>,
    pub allowed_pubkeys: HashMap<Hash32, String>,
    pub banned_events: HashMap<Hash32, String>,
    pub relay_name: Option<String>,
    pub relay_description: Option<String>,
}

impl Moderation {
    /// From the database's (list, value, reason) rows; rows of unknown lists or malformed values are ignored.
    pub fn from_rows(rows: Vec<(String, String, String)>) -> Self {
        let mut moderation = Self::default();
        for (list, value, reason) in rows {
            match list.as_str() {
                BANNED_PUBKEYS => moderation.banned_pubkeys.extend(parse_hash(&value).map(|k| (k, reason))),
                ALLOWED_PUBKEYS => moderation.allowed_pubkeys.extend(parse_hash(&value).map(|k| (k, reason))),
                BANNED_EVENTS => moderation.banned_events.extend(parse_hash(&value).map(|k| (k, reason))),
                RELAY_NAME => moderation.relay_name = Some(value),
                RELAY_DESCRIPTION => moderation.relay_description = Some(value),
                _ => {}
            }
        }
        moderation
    }

    /// The configuration as it applies: the file's, with the name and description the operator set over NIP-86.
    pub fn applied_to(&self, mut config: Config) -> Config {
        if let Some(name) = &self.relay_name {
            config.relay.name.clone_from(name);
        }
        if let Some(description) = &self.relay_description {
            config.relay.description.clone_from(description);
        }
        config
    }
}
