//! What one registration changes: each field optional (a present field replaces the stored one, a missing one keeps
//! it). The intake makes it from a kind 22456 event's content or a NIP-97 event; the registry applies it.

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
    /// `only_from_authors`: notify only for events by `authors` (gift wraps excepted).
    pub only_from_authors: Option<bool>,
    /// YakiHonne's `enableMaxMentions`: skip hellthreads (more than `[push] max_mentions` `p` tags).
    pub limit_mentions: Option<bool>,
    /// What was left out of an honest but over-long or partly unusable registration ("relays: kept the first 16
    /// of 20"): it is applied all the same, and the app is told in the OK message.
    pub notes: Vec<String>,
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
            || self.only_from_authors.is_some()
            || self.limit_mentions.is_some()
    }
}
