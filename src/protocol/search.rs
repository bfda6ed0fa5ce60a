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

/// A NIP-50 search as a filter asks for it: its text (sent on as it came) and its distinct words, read once when the
/// filter is parsed, so that neither the stores nor live matching split it again per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    text: String,
    terms: Vec<String>,
}

impl Search {
    pub fn new(text: String) -> Self {
        let terms = terms(&text);
        Self { text, terms }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The distinct words, lower-cased, in their first order: every one must be in the content.
    pub fn terms(&self) -> &[String] {
        &self.terms
    }
}

/// The words a search asks for, lower-cased, each once (a repeated word asks nothing more, and both databases' ranking
/// grows with every term): every word must be in the content. NIP-50's extensions (`include:spam`, `domain:`,
/// `language:`, `sentiment:`, `nsfw:`) are not supported, and the NIP says to ignore those a relay does not support;
/// other `a:b` tokens (a `nostr:` URI) are words.
pub fn terms(search: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    search
        .split_whitespace()
        .filter(|token| !is_extension(token))
        .flat_map(words)
        .filter(|word| seen.insert(word.clone()))
        .collect()
}

fn is_extension(token: &str) -> bool {
    const EXTENSIONS: &[&str] = &["include", "domain", "language", "sentiment", "nsfw"];
    token.split_once(':').is_some_and(|(key, value)| !value.is_empty() && EXTENSIONS.contains(&key))
}

/// The words of a text: runs of letters and digits, lower-cased.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The words of one event's content, split at most once however many searches look at it (live subscriptions and
/// NIP-9a filters share one per event), and only if one does. Only the indexed start of the content counts, as in
/// the stores.
pub struct ContentWords<'a> {
    kind: u16,
    content: &'a str,
    words: std::sync::OnceLock<Option<std::collections::HashSet<String>>>,
}

impl<'a> ContentWords<'a> {
    pub fn new(kind: u16, content: &'a str) -> Self {
        Self { kind, content, words: std::sync::OnceLock::new() }
    }

    /// The content's words; none for kinds that are never searched.
    pub fn get(&self) -> Option<&std::collections::HashSet<String>> {
        self.words.get_or_init(|| indexed_text(self.kind, self.content).map(|text| words(text).collect())).as_ref()
    }

    /// True when the content holds every term (no terms: every searchable event matches).
    pub fn has_all(&self, terms: &[String]) -> bool {
        if terms.is_empty() {
            return searchable(self.kind);
        }
        self.get().is_some_and(|present| terms.iter().all(|term| present.contains(term)))
    }
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
        assert_eq!(terms("Spam spam SPAM eggs spam"), ["spam", "eggs"], "each word once");
    }

    #[test]
    fn content_words_are_split_once_and_only_for_searchable_kinds() {
        let words = ContentWords::new(1, "Pizza party tonight");
        assert!(words.has_all(&terms("party pizza")) && !words.has_all(&terms("pizza beer")));
        assert!(!ContentWords::new(4, "pizza").has_all(&terms("pizza")), "encrypted kinds are never found");
        let search = Search::new("a A b".into());
        assert_eq!((search.text(), search.terms()), ("a A b", &["a".to_owned(), "b".to_owned()][..]));
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
