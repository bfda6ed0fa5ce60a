//! One NIP-29 group as the relay keeps it, and its metadata events (kinds 39000-39003) both ways: built from the
//! state after a change, and read back into the state at start or when another node wrote them. Those events are
//! the durable form of the state: the relay writes all four after every change.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::protocol::VerifiedEvent;
use crate::protocol::filter::{Hash32, parse_hash};

pub const METADATA_KIND: u16 = 39000;
pub const ADMINS_KIND: u16 = 39001;
pub const MEMBERS_KIND: u16 = 39002;
pub const ROLES_KIND: u16 = 39003;

/// May do everything to the group: moderate, edit it, give roles, delete it.
pub const ADMIN: &str = "admin";
/// May add and remove plain members, delete events and make invites.
pub const MODERATOR: &str = "moderator";

/// How many recent event ids of a group `previous` tags may name.
const RECENT: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub picture: String,
    pub about: String,
    /// Only members read its events and metadata.
    pub private: bool,
    /// Join requests need an invite code or an admin's approval.
    pub closed: bool,
    /// Only members read its metadata.
    pub hidden: bool,
    /// Every member, with its roles (none for a plain member).
    pub members: BTreeMap<Hash32, Vec<String>>,
    /// Codes of `create-invite` events, each good for any number of joins.
    pub invites: HashSet<String>,
    /// The first four bytes of the ids of its newest events, for `previous` tags.
    pub recent: VecDeque<[u8; 4]>,
    /// Events its moderators deleted lately, refused if they are sent again (kept in memory: late publication
    /// bounds how long a copy could come back).
    pub removed: VecDeque<Hash32>,
    /// `created_at` of its metadata events as last written: the next ones are later, so that they replace these.
    pub written_at: u64,
}

impl Group {
    pub fn new(id: &str) -> Self {
        Self { id: id.to_owned(), ..Self::default() }
    }

    /// Whether the two differ in anything the metadata events say (or the invites), not in recent ids.
    pub fn same_state(&self, other: &Group) -> bool {
        (&self.name, &self.picture, &self.about, self.private, self.closed, self.hidden, &self.members, &self.invites)
            == (
                &other.name,
                &other.picture,
                &other.about,
                other.private,
                other.closed,
                other.hidden,
                &other.members,
                &other.invites,
            )
    }

    pub fn roles_of(&self, pubkey: &Hash32) -> Option<&[String]> {
        self.members.get(pubkey).map(Vec::as_slice)
    }

    pub fn is_member(&self, pubkey: &Hash32) -> bool {
        self.members.contains_key(pubkey)
    }

    pub fn has_role(&self, pubkey: &Hash32, role: &str) -> bool {
        self.roles_of(pubkey).is_some_and(|roles| roles.iter().any(|r| r == role))
    }

    /// Whether one of `readers` may read the group's events.
    pub fn readable_by(&self, readers: &[Hash32]) -> bool {
        !self.private || readers.iter().any(|r| self.is_member(r))
    }

    /// Whether one of `readers` may read the group's metadata.
    pub fn metadata_readable_by(&self, readers: &[Hash32]) -> bool {
        !(self.private || self.hidden) || readers.iter().any(|r| self.is_member(r))
    }

    /// Notes a stored event of the group, for later `previous` tags.
    pub fn saw(&mut self, id: &Hash32) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back([id[0], id[1], id[2], id[3]]);
    }

    /// Remembers an event its moderators deleted.
    pub fn forbid(&mut self, id: &Hash32) {
        if self.removed.len() == RECENT {
            self.removed.pop_front();
        }
        self.removed.push_back(*id);
    }

    /// Whether `prefix` (eight hex digits) starts the id of one of its recent events.
    pub fn knows_prefix(&self, prefix: &str) -> bool {
        let mut bytes = [0u8; 4];
        prefix.len() == 8 && hex::decode_to_slice(prefix, &mut bytes).is_ok() && self.recent.contains(&bytes)
    }

    /// The tags of its four metadata events, in kind order (39000 metadata, 39001 admins, 39002 members, 39003
    /// roles), each starting with its `d` tag.
    pub fn metadata_tags(&self) -> [(u16, Vec<Vec<String>>); 4] {
        let d = || vec!["d".to_owned(), self.id.clone()];
        let mut metadata = vec![d()];
        for (name, value) in [("name", &self.name), ("picture", &self.picture), ("about", &self.about)] {
            if !value.is_empty() {
                metadata.push(vec![name.to_owned(), value.clone()]);
            }
        }
        // Only members post, whatever the other flags: `restricted` says so.
        metadata.push(vec![if self.private { "private" } else { "public" }.to_owned()]);
        metadata.push(vec![if self.closed { "closed" } else { "open" }.to_owned()]);
        metadata.push(vec!["restricted".to_owned()]);
        if self.hidden {
            metadata.push(vec!["hidden".to_owned()]);
        }
        let mut admins = vec![d()];
        let mut members = vec![d()];
        for (pubkey, roles) in &self.members {
            let hex = hex::encode(pubkey);
            if !roles.is_empty() {
                admins.push([vec!["p".to_owned(), hex.clone()], roles.clone()].concat());
            }
            members.push(vec!["p".to_owned(), hex]);
        }
        let roles = vec![
            d(),
            vec!["role".into(), ADMIN.into(), "edits the group, gives roles, removes anyone, deletes the group".into()],
            vec!["role".into(), MODERATOR.into(), "adds and removes members, deletes events, makes invites".into()],
        ];
        [(METADATA_KIND, metadata), (ADMINS_KIND, admins), (MEMBERS_KIND, members), (ROLES_KIND, roles)]
    }

    /// Takes what one of its metadata events says (written by the relay, here or on another node).
    pub fn apply_metadata(&mut self, event: &VerifiedEvent) {
        let tags: Vec<&[String]> = event.event.tags.iter().map(|t| t.as_slice()).collect();
        let value = |name: &str| tags.iter().find(|t| t[0] == name).and_then(|t| t.get(1)).cloned();
        let listed = || -> BTreeMap<Hash32, Vec<String>> {
            tags.iter()
                .filter(|t| t[0] == "p")
                .filter_map(|t| Some((parse_hash(t.get(1)?)?, t[2..].to_vec())))
                .collect()
        };
        match event.kind() {
            METADATA_KIND => {
                self.name = value("name").unwrap_or_default();
                self.picture = value("picture").unwrap_or_default();
                self.about = value("about").unwrap_or_default();
                let flag = |name: &str| tags.iter().any(|t| t[0] == name);
                (self.private, self.closed, self.hidden) = (flag("private"), flag("closed"), flag("hidden"));
            }
            ADMINS_KIND => {
                let admins = listed();
                for (pubkey, roles) in &mut self.members {
                    *roles = admins.get(pubkey).cloned().unwrap_or_default();
                }
                for (pubkey, roles) in admins {
                    self.members.entry(pubkey).or_insert(roles);
                }
            }
            MEMBERS_KIND => {
                let members = listed();
                self.members.retain(|pubkey, _| members.contains_key(pubkey));
                for pubkey in members.into_keys() {
                    self.members.entry(pubkey).or_default();
                }
            }
            _ => {}
        }
        self.written_at = self.written_at.max(event.created_at());
    }
}

/// The value of an event's first tag called `name`.
pub fn tag_value<'a>(event: &'a VerifiedEvent, name: &str) -> Option<&'a str> {
    event.event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1)).map(String::as_str)
}

/// NIP-29 group ids: `a-z0-9-_`, here at most 64 characters.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
