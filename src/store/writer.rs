//! The writer task: the only code that writes events. It takes whatever requests are waiting, commits them in one
//! transaction, tells the commit listener (live fan-out) about the stored ones, and only then answers each request,
//! so that an `OK true` always means "committed".

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::jobs::JobSource;
use super::{EventStore, StoreError, WriteOutcome};
use crate::protocol::SharedEvent;

/// Told about newly accepted events: stored ones after their commit (by the writer), ephemeral ones at once (by
/// the relay). Live fan-out and the push matcher listen.
pub trait AcceptListener: Send + Sync {
    fn accepted(&self, events: &[SharedEvent]);

    /// Events another relay node on the same database accepted (see `cluster`): by default, the same as ours.
    fn accepted_elsewhere(&self, events: &[SharedEvent]) {
        self.accepted(events);
    }
}

struct WriteRequest {
    event: SharedEvent,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// A cheap, cloneable handle for submitting events to the writer task.
#[derive(Clone)]
pub struct Writer {
    requests: mpsc::Sender<WriteRequest>,
}

impl Writer {
    /// Starts the writer task. It ends once every `Writer` handle is dropped and the queue is drained.
    /// `listeners` hear of every committed batch; `job_source` adds jobs to the commit of each stored event.
    pub fn spawn(
        store: Arc<dyn EventStore>,
        max_batch: usize,
        listeners: Vec<Arc<dyn AcceptListener>>,
        job_source: Option<Arc<dyn JobSource>>,
    ) -> (Self, JoinHandle<()>) {
        let (requests, queue) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(store, queue, max_batch, listeners, job_source));
        (Self { requests }, task)
    }

    /// Queues an event and waits until it is committed (or refused).
    pub async fn write(&self, event: SharedEvent) -> Result<WriteOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::new("the writer has stopped");
        self.requests.send(WriteRequest { event, reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    mut queue: mpsc::Receiver<WriteRequest>,
    max_batch: usize,
    listeners: Vec<Arc<dyn AcceptListener>>,
    job_source: Option<Arc<dyn JobSource>>,
) {
    let mut requests = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut requests, max_batch).await > 0 {
        let events: Vec<SharedEvent> = requests.iter().map(|r| r.event.clone()).collect();
        let events_len = events.len();
        let outcomes = match store.write_batch(&events, job_source.as_ref()).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) if e.unavailable => {
                tracing::error!(batch = events.len(), "batch not committed, the database is unavailable: {e}");
                vec![Err(e); events.len()]
            }
            Err(e) => {
                // One bad event must not fail its neighbours: retry each alone, so only the culprit gets the error.
                tracing::warn!(batch = events.len(), "batch commit failed, retrying one by one: {e}");
                let mut outcomes = Vec::with_capacity(events.len());
                for event in &events {
                    outcomes
                        .push(store.write_batch(std::slice::from_ref(event), job_source.as_ref()).await.map(|o| o[0]));
                }
                outcomes
            }
        };
        let stored: Vec<SharedEvent> = events
            .into_iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(WriteOutcome::Stored)))
            .map(|(event, _)| event)
            .collect();
        metrics::histogram!(crate::metrics::WRITER_BATCH).record(events_len as f64);
        for event in &stored {
            let class = match event.class() {
                crate::protocol::KindClass::Regular => "regular",
                crate::protocol::KindClass::Replaceable => "replaceable",
                crate::protocol::KindClass::Addressable => "addressable",
                crate::protocol::KindClass::Ephemeral => "ephemeral",
            };
            metrics::counter!(crate::metrics::EVENTS_STORED, "class" => class).increment(1);
        }
        if !stored.is_empty() {
            for listener in &listeners {
                listener.accepted(&stored);
            }
        }
        for (request, outcome) in requests.drain(..).zip(outcomes) {
            if let Err(e) = &outcome {
                tracing::error!(id = %request.event.event.id, "event not stored: {e}");
            }
            // The publisher may have gone away; its event is committed all the same.
            let _ = request.reply.send(outcome);
        }
    }
}
