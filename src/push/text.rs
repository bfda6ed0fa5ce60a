//! The words of a notification: from the event's kind, the author's public profile, and, for kinds whose content
//! is public, a short summary of the event taken when its push job is made. Encrypted kinds stay generic: their
//! text is never read.

use serde::{Deserialize, Serialize};

use super::zap;
use crate::protocol::VerifiedEvent;

/// Longest note line a notification quotes, in characters.
const NOTE_LINE_CHARS: usize = 120;
/// Longest reaction shown (an emoji, or a short word).
const REACTION_CHARS: usize = 16;

/// Kinds whose content is encrypted: nothing of it is ever shown, matched against mute words or stored in a job.
pub fn is_encrypted(kind: u16) -> bool {
    matches!(kind, 4 | 14 | 44 | 1059 | 1060)
}

/// What a notification can say beyond the kind, taken from the event when the job is made (the delivery later
/// does not have the event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Summary {
    #[default]
    Generic,
    /// The first line of a note, already cut to length.
    Note {
        line: String,
    },
    Reaction {
        reaction: String,
    },
    /// `zapper`: the pubkey (hex) of the zap request, not the wallet that signed the receipt.
    Zap {
        zapper: Option<String>,
        sats: Option<u64>,
    },
}

impl Summary {
    pub fn of(event: &VerifiedEvent) -> Self {
        let content = event.event.content.as_str();
        match event.kind() {
            kind if is_encrypted(kind) => Self::Generic,
            1 | 1111 => match first_line(content, NOTE_LINE_CHARS) {
                line if line.is_empty() => Self::Generic,
                line => Self::Note { line },
            },
            7 => Self::Reaction {
                reaction: match content.trim() {
                    "" | "+" => "👍".to_owned(),
                    "-" => "👎".to_owned(),
                    other => first_line(other, REACTION_CHARS),
                },
            },
            zap::ZAP_RECEIPT_KIND => match (zap::zapper(event), zap::sats(event)) {
                (None, None) => Self::Generic,
                (zapper, sats) => Self::Zap { zapper, sats },
            },
            _ => Self::Generic,
        }
    }

    /// Whose name the notification shows: the event's author, except for a zap receipt, whose author is the
    /// recipient's wallet: there it is the zapper, if known.
    pub fn actor<'a>(&'a self, author: &'a str) -> Option<&'a str> {
        match self {
            Self::Zap { zapper, .. } => zapper.as_deref(),
            _ => Some(author),
        }
    }
}

/// The line for one event of this kind when there is nothing more to say.
fn describe(kind: u16) -> &'static str {
    match kind {
        4 | 14 | 44 | 1059 | 1060 => "New message",
        zap::ZAP_RECEIPT_KIND => "New zap",
        7 => "New reaction",
        9..=12 | 42 => "New group message",
        _ => "New mention",
    }
}

/// The notification body: "Alice zapped you 1,000 sats", "Alice reacted 🤙", "Alice: gm everyone",
/// "Alice: New message". `name` is the display name of the actor (the author, or the zapper) where known.
pub fn body(name: Option<&str>, kind: u16, summary: &Summary) -> String {
    let someone = name.unwrap_or("Someone");
    match summary {
        Summary::Zap { sats: Some(sats), .. } => format!("{someone} zapped you {} sats", thousands(*sats)),
        Summary::Zap { sats: None, .. } => format!("{someone} zapped you"),
        Summary::Reaction { reaction } => format!("{someone} reacted {reaction}"),
        Summary::Note { line } => match name {
            Some(name) => format!("{name}: {line}"),
            None => line.clone(),
        },
        Summary::Generic => match name {
            Some(name) => format!("{name}: {}", describe(kind)),
            None => describe(kind).to_owned(),
        },
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

/// The first non-empty line, at most `max_chars` characters, with an ellipsis when cut.
fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut cut: String = line.chars().take(max_chars).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}

/// 1234567 → "1,234,567".
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_by_kind_and_name() {
        assert_eq!(body(Some("Alice"), 1059, &Summary::Generic), "Alice: New message");
        assert_eq!(body(None, 9735, &Summary::Generic), "New zap");
        assert_eq!(body(None, 9, &Summary::Generic), "New group message");
        assert_eq!(body(None, 1, &Summary::Generic), "New mention");
        assert_eq!(merged(3), "3 new messages");
    }

    #[test]
    fn summaries_say_more() {
        let zap = Summary::Zap { zapper: None, sats: Some(1000) };
        assert_eq!(body(Some("Alice"), 9735, &zap), "Alice zapped you 1,000 sats");
        assert_eq!(body(None, 9735, &Summary::Zap { zapper: None, sats: None }), "Someone zapped you");
        assert_eq!(body(Some("Bob"), 7, &Summary::Reaction { reaction: "🤙".into() }), "Bob reacted 🤙");
        assert_eq!(body(Some("Bob"), 1, &Summary::Note { line: "gm".into() }), "Bob: gm");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(first_line("\n  hello world  \nsecond", 5), "hello…");
    }

    #[test]
    fn names_come_from_the_profile() {
        let profile = |content: &str| serde_json::json!({"content": content}).to_string();
        assert_eq!(profile_name(&profile(r#"{"name":"alice","display_name":"Alice"}"#)).as_deref(), Some("Alice"));
        assert_eq!(profile_name(&profile(r#"{"name":" bob ","display_name":""}"#)).as_deref(), Some("bob"));
        assert_eq!(profile_name(&profile("not json")), None);
    }
}
