//! Authors' display names for notification text, remembered: one message to a group of ten thousand names its
//! author ten thousand times, and each would otherwise be a query of the store. A profile (kind 0) accepted here,
//! on another node or from a watched relay forgets its author's entry; entries also expire (`TTL`), for what comes
//! by no such way (a deleted profile), and their number is bounded (`MAX_ENTRIES`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::filter::Hash32;

/// How long a name is trusted without a look at the store.
const TTL: Duration = Duration::from_secs(60);
/// Names remembered at most; past it, the expired go, and if none has expired, all.
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct Names {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Hash32, (Option<String>, Instant)>,
    /// Counts profiles seen: a name read before one arrived is not kept after it.
    generation: u64,
}

impl Names {
    /// The remembered name (`Some(None)`: the author has no name), unless unknown or expired.
    pub fn get(&self, author: &Hash32) -> Option<Option<String>> {
        let inner = self.inner.lock().expect("names lock");
        inner.entries.get(author).filter(|(_, at)| at.elapsed() < TTL).map(|(name, _)| name.clone())
    }

    /// To pass to `put` with what the store says now.
    pub fn generation(&self) -> u64 {
        self.inner.lock().expect("names lock").generation
    }

    /// Remembers a name read from the store, unless a profile arrived since `generation` was taken.
    pub fn put(&self, author: Hash32, name: Option<String>, generation: u64) {
        let mut inner = self.inner.lock().expect("names lock");
        if inner.generation != generation {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if inner.entries.len() >= MAX_ENTRIES {
                inner.entries.clear();
            }
        }
        inner.entries.insert(author, (name, Instant::now()));
    }

    /// A profile of the author arrived: its name is read again next time.
    pub fn forget(&self, author: &Hash32) {
        let mut inner = self.inner.lock().expect("names lock");
        inner.generation += 1;
        inner.entries.remove(author);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_seen_while_the_store_was_read_keeps_the_old_name_out() {
        let names = Names::default();
        let author = [7; 32];
        let before = names.generation();
        names.forget(&author);
        names.put(author, Some("old".into()), before);
        assert_eq!(names.get(&author), None);
        names.put(author, Some("new".into()), names.generation());
        assert_eq!(names.get(&author), Some(Some("new".into())));
        names.forget(&author);
        assert_eq!(names.get(&author), None);
    }

    #[test]
    fn the_entries_stay_bounded() {
        let names = Names::default();
        for n in 0..MAX_ENTRIES as u32 + 10 {
            let mut author = [0; 32];
            author[..4].copy_from_slice(&n.to_be_bytes());
            names.put(author, None, names.generation());
        }
        assert!(names.inner.lock().unwrap().entries.len() <= MAX_ENTRIES);
    }
}
