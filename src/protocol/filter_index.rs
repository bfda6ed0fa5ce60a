//! Filters filed under their most selective field, so that a new event is checked only against the filters that
//! could want it: the relay's live subscriptions and push's NIP-9a subscriptions both keep one. The rule of which
//! field files a filter is here once: its ids, else its authors, else the tag with the fewest values, else its
//! search's first word, else its kinds; a filter with none of these is a candidate for every event.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use super::filter::Hash32;
use super::search::ContentWords;
use super::{Filter, VerifiedEvent};

/// The keys (a subscription's) filed under each value; `K` is whatever names what holds the filter.
pub struct FilterIndex<K> {
    by_id: HashMap<Hash32, HashSet<K>>,
    by_author: HashMap<Hash32, HashSet<K>>,
    by_tag: HashMap<char, HashMap<String, HashSet<K>>>,
    by_word: HashMap<String, HashSet<K>>,
    by_kind: HashMap<u16, HashSet<K>>,
    unindexed: HashSet<K>,
}

impl<K> Default for FilterIndex<K> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            by_author: HashMap::new(),
            by_tag: HashMap::new(),
            by_word: HashMap::new(),
            by_kind: HashMap::new(),
            unindexed: HashSet::new(),
        }
    }
}

/// The candidates for one event: those filed under what it is about (its id, author or a tag value), and those
/// filed under what it is like (its kind, a word of its content, or nothing), apart.
pub struct Candidates<K> {
    pub about: HashSet<K>,
    pub like: HashSet<K>,
}

impl<K: Hash + Eq + Clone> FilterIndex<K> {
    /// Files (`insert`) or unfiles `key`'s `filter` under its most selective field.
    pub fn file(&mut self, key: &K, filter: &Filter, insert: bool) {
        if let Some(ids) = &filter.ids {
            apply(&mut self.by_id, ids.iter().copied(), key, insert);
        } else if let Some(authors) = &filter.authors {
            apply(&mut self.by_author, authors.iter().copied(), key, insert);
        } else if let Some((letter, values)) = filter.tags.iter().min_by_key(|(_, values)| values.len()) {
            let by_value = self.by_tag.entry(*letter).or_default();
            apply(by_value, values.iter().cloned(), key, insert);
            if by_value.is_empty() {
                self.by_tag.remove(letter);
            }
        } else if let Some(word) = filter.search.as_ref().and_then(|search| search.terms().first()) {
            apply(&mut self.by_word, [word.clone()], key, insert);
        } else if let Some(kinds) = &filter.kinds {
            apply(&mut self.by_kind, kinds.iter().copied(), key, insert);
        } else if insert {
            self.unindexed.insert(key.clone());
        } else {
            self.unindexed.remove(key);
        }
    }

    /// The keys whose filters could want `event`; `words`, its content words, are split only if a filter was filed
    /// under a word. The caller checks each candidate's whole filter.
    pub fn candidates(&self, event: &VerifiedEvent, words: &ContentWords) -> Candidates<K> {
        let collect = |set: &mut HashSet<K>, keys: Option<&HashSet<K>>| set.extend(keys.into_iter().flatten().cloned());
        let mut about = HashSet::new();
        collect(&mut about, self.by_id.get(event.id()));
        collect(&mut about, self.by_author.get(event.pubkey()));
        for (letter, value) in event.indexed_tags() {
            collect(&mut about, self.by_tag.get(&letter).and_then(|values| values.get(value)));
        }
        let mut like = self.unindexed.clone();
        collect(&mut like, self.by_kind.get(&event.kind()));
        if !self.by_word.is_empty() {
            for word in words.get().into_iter().flatten() {
                collect(&mut like, self.by_word.get(word));
            }
        }
        like.retain(|key| !about.contains(key));
        Candidates { about, like }
    }
}

fn apply<V: Hash + Eq, K: Hash + Eq + Clone>(
    map: &mut HashMap<V, HashSet<K>>,
    values: impl IntoIterator<Item = V>,
    key: &K,
    insert: bool,
) {
    for value in values {
        if insert {
            map.entry(value).or_default().insert(key.clone());
        } else if let Some(keys) = map.get_mut(&value) {
            keys.remove(key);
            if keys.is_empty() {
                map.remove(&value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;
    use serde_json::json;

    use super::*;

    fn filter(json: serde_json::Value) -> super::Filter {
        super::Filter::from_json(&json).unwrap()
    }

    #[test]
    fn each_filter_is_found_through_its_most_selective_field_only() {
        let keys = Keys::generate();
        let tags = [Tag::parse(["p", "alice"]).unwrap()];
        let event = EventBuilder::new(Kind::TextNote, "Pizza tonight").tags(tags).finalize(&keys).unwrap();
        let event = VerifiedEvent::new(event);
        let mut index = FilterIndex::default();
        index.file(&1, &filter(json!({"authors": [keys.public_key().to_hex()], "kinds": [7]})), true);
        index.file(&2, &filter(json!({"#p": ["alice"], "kinds": [1]})), true);
        index.file(&3, &filter(json!({"kinds": [1], "search": "pizza"})), true);
        index.file(&4, &filter(json!({"kinds": [1]})), true);
        index.file(&5, &filter(json!({"kinds": [7]})), true);
        index.file(&6, &filter(json!({"since": 1})), true);
        index.file(&7, &filter(json!({"search": "beer"})), true);
        let found = index.candidates(&event, &ContentWords::new(1, &event.event.content));
        assert_eq!(found.about, HashSet::from([1, 2]));
        assert_eq!(found.like, HashSet::from([3, 4, 6]));
        index.file(&2, &filter(json!({"#p": ["alice"], "kinds": [1]})), false);
        index.file(&6, &filter(json!({"since": 1})), false);
        let found = index.candidates(&event, &ContentWords::new(1, &event.event.content));
        assert_eq!((found.about, found.like), (HashSet::from([1]), HashSet::from([3, 4])));
    }
}
