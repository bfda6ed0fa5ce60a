//! `pushrelay import`: events from a JSON Lines file (one event per line, as `pushrelay export` or other relays
//! write them) into the store, each verified, de-duplicated and subject to NIP-01 replacement and NIP-09 deletion
//! as if published. Never pushed: the store is written without a job source.

use std::io::BufRead;

use crate::clock::Clock;
use crate::protocol::verify::verify_event;
use crate::protocol::{KindClass, SharedEvent, VerifiedEvent};
use crate::store::{EventStore, WriteOutcome};

/// Lines verified and written together: one transaction, and one verification task per core, per batch.
const BATCH: usize = 2000;
/// Refusals reported by line, beyond which they are only counted.
const REPORTED_REFUSALS: usize = 10;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub stored: u64,
    /// Already in the store.
    pub duplicates: u64,
    /// Older than the stored version of a replaceable or addressable event, or deleted by its author.
    pub superseded: u64,
    /// Not an event, a bad id or signature, ephemeral, or expired.
    pub refused: u64,
    /// The first few refusals, as "line N: reason".
    pub refusals: Vec<String>,
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stored, {} already there, {} superseded or deleted, {} refused",
            self.stored, self.duplicates, self.superseded, self.refused
        )
    }
}

/// Imports every line of `input`; `progress` is told how many bytes were read after each batch.
pub async fn import(
    store: &dyn EventStore,
    input: impl BufRead,
    mut progress: impl FnMut(u64),
) -> Result<ImportSummary, String> {
    let mut summary = ImportSummary::default();
    let mut lines = input.lines();
    let mut line_number = 0usize;
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let mut bytes = 0u64;
        for line in lines.by_ref().take(BATCH) {
            let line = line.map_err(|e| format!("cannot read the input: {e}"))?;
            line_number += 1;
            bytes += line.len() as u64 + 1;
            if !line.trim().is_empty() {
                batch.push((line_number, line));
            }
        }
        if bytes == 0 {
            return Ok(summary);
        }
        let checked = check_all(batch).await;
        let mut events: Vec<SharedEvent> = Vec::with_capacity(checked.len());
        for (line_number, result) in checked {
            match result {
                Ok(event) => events.push(event),
                Err(reason) => summary.refuse(line_number, &reason),
            }
        }
        let outcomes = store.write_batch(&events, None).await.map_err(|e| format!("cannot write to the store: {e}"))?;
        for outcome in outcomes {
            match outcome {
                WriteOutcome::Stored => summary.stored += 1,
                WriteOutcome::Duplicate => summary.duplicates += 1,
                WriteOutcome::Superseded | WriteOutcome::Deleted => summary.superseded += 1,
            }
        }
        progress(bytes);
    }
}

impl ImportSummary {
    fn refuse(&mut self, line_number: usize, reason: &str) {
        self.refused += 1;
        if self.refusals.len() < REPORTED_REFUSALS {
            self.refusals.push(format!("line {line_number}: {reason}"));
        }
    }
}

/// Parses and verifies lines on blocking threads, one share per core; results in line order.
async fn check_all(lines: Vec<(usize, String)>) -> Vec<(usize, Result<SharedEvent, String>)> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let share = lines.len().div_ceil(cores).max(1);
    let mut shares = Vec::new();
    let mut lines = lines.into_iter().peekable();
    while lines.peek().is_some() {
        let part: Vec<(usize, String)> = lines.by_ref().take(share).collect();
        shares.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(|(n, line)| (n, check(&line))).collect::<Vec<_>>()
        }));
    }
    let mut checked = Vec::new();
    for share in shares {
        checked.extend(share.await.expect("verification does not panic"));
    }
    checked
}

fn check(line: &str) -> Result<SharedEvent, String> {
    let event = nostr::event::Event::from_json(line).map_err(|e| format!("not an event: {e}"))?;
    verify_event(&event).map_err(|refusal| refusal.to_string())?;
    let event = VerifiedEvent::new(event);
    if event.class() == KindClass::Ephemeral {
        return Err("ephemeral events are not stored".into());
    }
    if event.expiration().is_some_and(|at| at <= Clock::system().secs()) {
        return Err("expired".into());
    }
    Ok(std::sync::Arc::new(event))
}
