//! NIP-77 negentropy reconciliation: a client and this relay find which events each has that the other lacks,
//! exchanging fingerprints of ranges instead of ids (the rust-nostr `negentropy` crate does the protocol). The
//! relay only answers; what a client then uploads arrives as ordinary EVENTs.

use std::collections::HashMap;

use negentropy::{Id, Negentropy, NegentropyStorageVector};

use super::RelayState;
use super::auth::Reader;
use crate::protocol::message;
use crate::protocol::refusal::Prefix;
use crate::protocol::{Filter, Refusal};

type Session = Negentropy<'static, NegentropyStorageVector>;

/// The open reconciliations of one connection, by subscription id.
#[derive(Default)]
pub struct Reconciliations {
    sessions: HashMap<String, Session>,
}

impl Reconciliations {
    pub fn open_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_open(&self, sub_id: &str) -> bool {
        self.sessions.contains_key(sub_id)
    }

    /// NEG-OPEN: the events matching `filter` that the reader may see, then the answer to the first message.
    pub async fn open(
        &mut self,
        state: &RelayState,
        reader: &Reader,
        sub_id: String,
        mut filter: Filter,
        first: Vec<u8>,
    ) -> String {
        self.sessions.remove(&sub_id);
        let config = state.config();
        let cap = config.limits.max_negentropy_records;
        filter.limit = Some(cap as u64 + 1);
        let scope = reader.scope();
        let events = match state.store.query_filter(&filter, reader.visibility(&scope), usize::MAX).await {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(sub_id, "negentropy query failed: {e}");
                return message::neg_err(&sub_id, &Refusal::error("could not query the database"));
            }
        };
        if events.len() > cap {
            return message::neg_err(
                &sub_id,
                &Refusal::blocked(format!("more than {cap} events match; narrow the filter")),
            );
        }
        // Hex doubles the size, and the envelope needs a little room.
        let frame_limit = (config.limits.max_message_length as u64 / 2).saturating_sub(256).max(4096);
        let built = tokio::task::spawn_blocking(move || -> Result<(Session, Vec<u8>), String> {
            let mut storage = NegentropyStorageVector::with_capacity(events.len());
            for event in &events {
                storage
                    .insert(event.created_at.max(0) as u64, Id::from_byte_array(event.id))
                    .map_err(|e| e.to_string())?;
            }
            storage.seal().map_err(|e| e.to_string())?;
            let mut session = Negentropy::owned(storage, frame_limit).map_err(|e| e.to_string())?;
            let answer = session.reconcile(&first).map_err(|e| e.to_string())?;
            Ok((session, answer))
        })
        .await;
        match built {
            Ok(Ok((session, answer))) => {
                self.sessions.insert(sub_id.clone(), session);
                message::neg_msg(&sub_id, &answer)
            }
            Ok(Err(e)) => message::neg_err(&sub_id, &Refusal::invalid(e.to_string())),
            Err(_) => message::neg_err(&sub_id, &Refusal::error("reconciliation failed")),
        }
    }

    /// NEG-MSG: the next round of an open reconciliation.
    pub async fn message(&mut self, sub_id: String, query: Vec<u8>) -> String {
        let Some(mut session) = self.sessions.remove(&sub_id) else {
            return message::neg_err(&sub_id, &Refusal::new(Prefix::Closed, "no reconciliation open with this id"));
        };
        let round = tokio::task::spawn_blocking(move || {
            let answer = session.reconcile(&query);
            (session, answer)
        })
        .await;
        match round {
            Ok((session, Ok(answer))) => {
                self.sessions.insert(sub_id.clone(), session);
                message::neg_msg(&sub_id, &answer)
            }
            Ok((_, Err(e))) => message::neg_err(&sub_id, &Refusal::invalid(e.to_string())),
            Err(_) => message::neg_err(&sub_id, &Refusal::error("reconciliation failed")),
        }
    }

    pub fn close(&mut self, sub_id: &str) {
        self.sessions.remove(sub_id);
    }
}
