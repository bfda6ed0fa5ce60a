//! `[groups]`: NIP-29 relay-based groups hosted by this relay.

use serde::Deserialize;

/// NIP-29 `create-invite`: served only to its author (`Config::read_restricted_kinds`).
pub const INVITE_KIND: u16 = 9009;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// Host NIP-29 groups: kind 9007 creates one, the relay signs its metadata (39000-39003) with its own key
    /// (`[push] secret_key_file`, NIP-11 `self`).
    pub enabled: bool,
    /// Hex pubkeys that may create groups; empty: anyone.
    pub creators: Vec<String>,
    /// A group event older than this many seconds is refused (NIP-29 "late publication").
    pub late_publication_secs: u64,
    /// The most groups the relay hosts (deleted ones count: their ids stay taken).
    pub max_groups: usize,
    /// The most groups one pubkey may create.
    pub max_groups_per_creator: usize,
    /// The most members one group may have.
    pub max_members: usize,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            creators: Vec::new(),
            late_publication_secs: 3600,
            max_groups: 1_000,
            max_groups_per_creator: 100,
            max_members: 5_000,
        }
    }
}
