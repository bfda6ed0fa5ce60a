//! The words of a notification, from the event's kind and the author's public profile only.

/// The line for one event of this kind. Encrypted kinds stay generic: their text is never read.
pub fn describe(kind: u16) -> &'static str {
    match kind {
        4 | 14 | 44 | 1059 | 1060 => "New message",
        9735 => "New zap",
        7 => "New reaction",
        9..=12 | 42 => "New group message",
        _ => "New mention",
    }
}

/// "Alice: New message" when the author's profile has a name, else just the line.
pub fn body(author_name: Option<&str>, kind: u16) -> String {
    match author_name {
        Some(name) => format!("{name}: {}", describe(kind)),
        None => describe(kind).to_owned(),
    }
}

/// The text of several notifications merged into one.
pub fn merged(count: usize) -> String {
    format!("{count} new messages")
}

/// The display name (else the name) from a kind 0 profile's content, trimmed to a sensible length.
pub fn profile_name(profile_json: &str) -> Option<String> {
    let profile: serde_json::Value = serde_json::from_str(profile_json).ok()?;
    let content: serde_json::Value = serde_json::from_str(profile["content"].as_str()?).ok()?;
    ["display_name", "name"]
        .iter()
        .filter_map(|key| content[key].as_str())
        .map(|name| name.trim())
        .find(|name| !name.is_empty())
        .map(|name| name.chars().take(48).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_by_kind_and_name() {
        assert_eq!(body(Some("Alice"), 1059), "Alice: New message");
        assert_eq!(body(None, 9735), "New zap");
        assert_eq!(body(None, 9), "New group message");
        assert_eq!(body(None, 1), "New mention");
        assert_eq!(merged(3), "3 new messages");
    }

    #[test]
    fn names_come_from_the_profile() {
        let profile = |content: &str| serde_json::json!({"content": content}).to_string();
        assert_eq!(profile_name(&profile(r#"{"name":"alice","display_name":"Alice"}"#)).as_deref(), Some("Alice"));
        assert_eq!(profile_name(&profile(r#"{"name":" bob ","display_name":""}"#)).as_deref(), Some("bob"));
        assert_eq!(profile_name(&profile("not json")), None);
    }
}
