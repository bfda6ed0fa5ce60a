//! NIP-50 search: what a `search` string asks for, and whether an event's content has it. The stores turn the same
//! terms into their full-text queries (SQLite FTS5, PostgreSQL `tsquery`), and live subscriptions match with
//! [`content_matches`], which splits words as both databases' tokenizers do (letters and digits, case folded).

/// Kinds whose content is encrypted: never indexed, never a search result.
const ENCRYPTED_KINDS: &[u16] = &[4, 13, 1059, 1060];

/// The most bytes of an event's content that are indexed: a search looks at the start of very long contents.
pub const MAX_INDEXED_BYTES: usize = 65_536;

/// Whether events of this kind are indexed for search.
pub fn searchable(kind: u16) -> bool {
    !ENCRYPTED_KINDS.contains(&kind)
}

/// The text the stores index for an event: its content, cut at a character boundary within `MAX_INDEXED_BYTES`;
/// none for encrypted kinds and empty contents.
pub fn indexed_text(kind: u16, content: &str) -> Option<&str> {
    if !searchable(kind) || content.is_empty() {
        return None;
    }
    let mut end = content.len().min(MAX_INDEXED_BYTES);
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    Some(&content[..end])
}

/// The words a search asks for, lower-cased: every word must be in the content. NIP-50's extensions (`include:spam`,
/// `domain:`, `language:`, `sentiment:`, `nsfw:`) are not supported, and the NIP says to ignore those a relay does
/// not support; other `a:b` tokens (a `nostr:` URI) are words.
pub fn terms(search: &str) -> Vec<String> {
    search.split_whitespace().filter(|token| !is_extension(token)).flat_map(words).collect()
}

fn is_extension(token: &str) -> bool {
    const EXTENSIONS: &[&str] = &["include", "domain", "language", "sentiment", "nsfw"];
    token.split_once(':').is_some_and(|(key, value)| !value.is_empty() && EXTENSIONS.contains(&key))
}

/// The words of a text: runs of letters and digits, lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// True when every term is a word of `content` (no terms: everything matches).
pub fn content_matches(terms: &[String], content: &str) -> bool {
    if terms.is_empty() {
        return true;
    }
    let present: std::collections::HashSet<String> = words(content).collect();
    terms.iter().all(|term| present.contains(term))
}

/// The terms as an FTS5 query: each a quoted string (quotes doubled), all required.
pub fn fts5_query(terms: &[String]) -> String {
    terms.iter().map(|t| format!("\"{}\"", t.replace('"', "\"\""))).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_ignored_and_words_folded() {
        assert_eq!(terms("Best nostr:apps include:spam language:en nsfw:false"), ["best", "nostr", "apps"]);
        assert_eq!(terms("  "), Vec::<String>::new());
        assert_eq!(terms("don't"), ["don", "t"]);
    }

    #[test]
    fn content_must_hold_every_term() {
        let t = terms("Pizza party");
        assert!(content_matches(&t, "a PIZZA, then a party!"));
        assert!(!content_matches(&t, "pizza alone"));
        assert!(content_matches(&[], "anything"));
    }

    #[test]
    fn fts5_queries_quote_every_term() {
        assert_eq!(fts5_query(&terms(r#"a"b OR c"#)), r#""a" "b" "or" "c""#);
    }
}
