//! `pushrelay export`: every stored event as JSON Lines, newest first, read in pages so that memory stays flat.

use std::collections::HashSet;
use std::io::Write;

use crate::protocol::Filter;
use crate::protocol::filter::Hash32;
use crate::store::{EventStore, Visibility};

const PAGE: u64 = 5000;

/// Writes every event (expired ones aside) to `out`; returns how many.
pub async fn export(store: &dyn EventStore, out: &mut impl Write) -> Result<u64, String> {
    let mut written = 0;
    let mut until: Option<u64> = None;
    // Events of the second a page ended on, already written: the next page starts at that second again.
    let mut at_boundary: HashSet<Hash32> = HashSet::new();
    let mut page_size = PAGE;
    loop {
        let filter = Filter { until, limit: Some(page_size), ..Filter::default() };
        let page = store.query_filter(&filter, Visibility::default(), usize::MAX).await.map_err(|e| e.to_string())?;
        let fresh: Vec<_> = page.iter().filter(|e| !at_boundary.contains(&e.id)).collect();
        if fresh.is_empty() {
            if page.len() as u64 == page_size {
                // A full page of one second, all written already: more of that second may follow.
                page_size *= 2;
                continue;
            }
            return Ok(written);
        }
        for event in &fresh {
            writeln!(out, "{}", event.json).map_err(|e| format!("cannot write: {e}"))?;
            written += 1;
        }
        let last = page.last().expect("the page is not empty").created_at;
        if Some(last as u64) != until {
            at_boundary.clear();
        }
        at_boundary.extend(page.iter().filter(|e| e.created_at == last).map(|e| e.id));
        until = Some(last as u64);
    }
}
