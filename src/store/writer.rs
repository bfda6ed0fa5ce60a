//! The writer task: the only code that writes events. It takes whatever requests are waiting, commits them in one
//! transaction, tells the commit listener (live fan-out) about the stored ones, and only then answers each request,
//! so that an `OK true` always means "committed".

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::jobs::{JobSource, panic_message};
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
    /// Its client sends nothing more until it has the answer (`Writer::write_awaited`).
    awaited: bool,
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
        batching: Batching,
        listeners: Vec<Arc<dyn AcceptListener>>,
        job_source: Option<Arc<dyn JobSource>>,
    ) -> (Self, JoinHandle<()>) {
        let (requests, queue) = mpsc::channel(batching.max_batch * 4);
        let task = tokio::spawn(run(store, queue, batching, listeners, job_source));
        (Self { requests }, task)
    }

    /// Queues an event and waits until it is committed (or refused).
    pub async fn write(&self, event: SharedEvent) -> Result<WriteOutcome, StoreError> {
        self.submit(event, false).await
    }

    /// As `write`, for an event whose client sends nothing more until it has the answer (one publishing an event at
    /// a time): its commit is not held back by `Batching::commit_delay`, which would only slow that client down
    /// to one event per delay, with no other event to share the commit.
    pub async fn write_awaited(&self, event: SharedEvent) -> Result<WriteOutcome, StoreError> {
        self.submit(event, true).await
    }

    async fn submit(&self, event: SharedEvent, awaited: bool) -> Result<WriteOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::new("the writer has stopped");
        self.requests.send(WriteRequest { event, reply, awaited }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// How the writer gathers events into commits.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Most events in one transaction (`[database] max_batch`).
    pub max_batch: usize,
    /// A commit does not start sooner than this after the one before (`[database] commit_delay_ms`): the events
    /// that arrive meanwhile wait and share it. An event after a quiet spell is committed at once, and so is one
    /// its client is waiting on (`Writer::write_awaited`), with whatever was gathered before it.
    pub commit_delay: Duration,
}

async fn run(
    store: Arc<dyn EventStore>,
    mut queue: mpsc::Receiver<WriteRequest>,
    batching: Batching,
    listeners: Vec<Arc<dyn AcceptListener>>,
    job_source: Option<Arc<dyn JobSource>>,
) {
    let max_batch = batching.max_batch;
    let mut requests = Vec::with_capacity(max_batch);
    let mut last_start: Option<Instant> = None;
    while queue.recv_many(&mut requests, max_batch).await > 0 {
        let hold = last_start.map(|start| start + batching.commit_delay).filter(|due| *due > Instant::now());
        if let Some(due) = hold
            && !requests.iter().any(|r| r.awaited)
        {
            gather(&mut queue, &mut requests, max_batch, due).await;
        }
        last_start = Some(Instant::now());
        let events: Vec<SharedEvent> = requests.iter().map(|r| r.event.clone()).collect();
        let outcomes = commit(&*store, &events, job_source.as_ref()).await;
        let stored: Vec<SharedEvent> = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(WriteOutcome::Stored)))
            .map(|(event, _)| event.clone())
            .collect();
        metrics::histogram!(crate::metrics::WRITER_BATCH).record(events.len() as f64);
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
            tell(&listeners, &stored);
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

/// Takes the requests that arrive until `due`, or until the batch is full. A durable commit costs a WAL write and
/// an fsync whatever it holds (its CPU for a one-note commit on SQLite: BENCHMARKS.md), so under a steady
/// trickle of events, one commit per event was most of the relay's CPU. An awaited request ends the gathering:
/// its client sends nothing until it has the answer, so waiting on could only slow it.
async fn gather(queue: &mut mpsc::Receiver<WriteRequest>, requests: &mut Vec<WriteRequest>, max: usize, due: Instant) {
    let more = async {
        let mut seen = requests.len();
        while requests.len() < max && queue.recv_many(requests, max - requests.len()).await > 0 {
            if requests[seen..].iter().any(|r| r.awaited) {
                break;
            }
            seen = requests.len();
        }
    };
    let _ = tokio::time::timeout_at(due, more).await;
}

/// Commits a batch: whole when it can, else one by one so that only the culprit is refused. A panic in a commit
/// (its transaction rolled back as it unwound) answers that commit's events `error:`; the writer goes on.
async fn commit(
    store: &dyn EventStore,
    events: &[SharedEvent],
    job_source: Option<&Arc<dyn JobSource>>,
) -> Vec<Result<WriteOutcome, StoreError>> {
    let attempt = |batch: &[SharedEvent]| {
        let batch = batch.to_vec();
        async move {
            AssertUnwindSafe(store.write_batch(&batch, job_source)).catch_unwind().await.unwrap_or_else(|panic| {
                metrics::counter!(crate::metrics::WRITER_PANICS).increment(1);
                Err(StoreError::new(format!("the write panicked: {}", panic_message(panic.as_ref()))))
            })
        }
    };
    match attempt(events).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if e.unavailable => {
            tracing::error!(batch = events.len(), "batch not committed, the database is unavailable: {e}");
            vec![Err(e); events.len()]
        }
        Err(e) => {
            // One bad event must not fail its neighbours: retry each alone, so only the culprit gets the error.
            tracing::warn!(batch = events.len(), "batch commit failed, retrying one by one: {e}");
            let mut outcomes = Vec::with_capacity(events.len());
            for event in events {
                outcomes.push(attempt(std::slice::from_ref(event)).await.map(|o| o[0]));
            }
            outcomes
        }
    }
}

/// Tells every listener of accepted events. A listener that panics misses these events; the others, the writer
/// and the connection that called go on.
pub fn tell(listeners: &[Arc<dyn AcceptListener>], events: &[SharedEvent]) {
    guarded(listeners, events, |listener| listener.accepted(events));
}

/// Tells every listener of events another node accepted, as `tell` does.
pub fn tell_elsewhere(listeners: &[Arc<dyn AcceptListener>], events: &[SharedEvent]) {
    guarded(listeners, events, |listener| listener.accepted_elsewhere(events));
}

fn guarded(listeners: &[Arc<dyn AcceptListener>], events: &[SharedEvent], call: impl Fn(&dyn AcceptListener)) {
    for listener in listeners {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(listener.as_ref()))) {
            metrics::counter!(crate::metrics::WRITER_PANICS).increment(1);
            let first = events.first().map(|e| e.event.id.to_hex()).unwrap_or_default();
            tracing::error!(events = events.len(), first, "a listener panicked: {}", panic_message(panic.as_ref()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Filter, VerifiedEvent};
    use crate::store::{StoredEvent, Visibility};
    use nostr::prelude::*;

    /// The real SQLite store, except that a batch holding an event whose content is "panic" panics; it notes the
    /// size of each batch it is given.
    struct Panicking(crate::store::sqlite::SqliteStore, std::sync::Mutex<Vec<usize>>);

    #[async_trait::async_trait]
    impl EventStore for Panicking {
        async fn write_batch(
            &self,
            batch: &[SharedEvent],
            job_source: Option<&Arc<dyn JobSource>>,
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            self.1.lock().unwrap().push(batch.len());
            assert!(batch.iter().all(|e| e.event.content != "panic"), "a panic in the store");
            self.0.write_batch(batch, job_source).await
        }
        async fn query_filter(&self, f: &Filter, v: Visibility<'_>, b: usize) -> Result<Vec<StoredEvent>, StoreError> {
            self.0.query_filter(f, v, b).await
        }
        async fn count(&self, f: &[Filter], v: Visibility<'_>, at_most: u64) -> Result<u64, StoreError> {
            self.0.count(f, v, at_most).await
        }
        async fn purge_expired(&self, now: u64) -> Result<u64, StoreError> {
            self.0.purge_expired(now).await
        }
        async fn remove_event(&self, id: &crate::protocol::filter::Hash32) -> Result<bool, StoreError> {
            self.0.remove_event(id).await
        }
        async fn vacuum(&self) -> Result<(), StoreError> {
            self.0.vacuum().await
        }
        async fn close(&self) {
            self.0.close().await
        }
    }

    /// A listener that panics on every batch.
    struct Fragile;
    impl AcceptListener for Fragile {
        fn accepted(&self, _: &[SharedEvent]) {
            panic!("a panic in a listener");
        }
    }

    fn event(content: &str) -> SharedEvent {
        let keys = Keys::generate();
        Arc::new(VerifiedEvent::new(EventBuilder::new(Kind::TextNote, content).finalize(&keys).unwrap()))
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<Panicking> {
        let config = crate::config::DatabaseConfig::default();
        let path = dir.path().join("relay.db");
        let store = crate::store::sqlite::SqliteStore::open(&path, &config, crate::clock::Clock::system()).await;
        Arc::new(Panicking(store.unwrap(), Default::default()))
    }

    #[tokio::test]
    async fn the_writer_survives_a_panic_in_a_batch_or_a_listener() {
        let dir = tempfile::tempdir().unwrap();
        let batching = Batching { max_batch: 16, commit_delay: Duration::ZERO };
        let (writer, _task) = Writer::spawn(store(&dir).await, batching, vec![Arc::new(Fragile)], None);
        // Three at once, so that they share a batch: only the culprit is refused.
        let (a, bad, b) = (event("a"), event("panic"), event("b"));
        let (a, bad, b) = tokio::join!(writer.write(a), writer.write(bad), writer.write(b));
        assert_eq!((a.unwrap(), b.unwrap()), (WriteOutcome::Stored, WriteOutcome::Stored));
        assert!(bad.unwrap_err().to_string().contains("panicked"));
        assert_eq!(writer.write(event("after")).await.unwrap(), WriteOutcome::Stored);
    }

    /// A writer on a fresh store that notes its batches.
    async fn delayed(dir: &tempfile::TempDir, max_batch: usize, commit_delay: Duration) -> (Writer, Arc<Panicking>) {
        let store = store(dir).await;
        let (writer, _task) = Writer::spawn(store.clone(), Batching { max_batch, commit_delay }, vec![], None);
        (writer, store)
    }

    /// Writes `contents` one after another, 50 ms apart, each without waiting for the one before.
    async fn staggered(writer: &Writer, contents: &[&str]) -> Vec<Result<WriteOutcome, StoreError>> {
        let mut writes = Vec::new();
        for content in contents {
            let (writer, event) = (writer.clone(), event(content));
            writes.push(tokio::spawn(async move { writer.write(event).await }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        futures_util::future::join_all(writes).await.into_iter().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn events_that_follow_a_commit_within_the_delay_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let delay = Duration::from_secs(2);
        let (writer, store) = delayed(&dir, 16, delay).await;
        // After a quiet spell an event is committed at once, not after the delay.
        let first = tokio::time::timeout(delay, writer.write(event("first"))).await;
        assert_eq!(first.expect("committed before the delay").unwrap(), WriteOutcome::Stored);
        let outcomes = staggered(&writer, &["a", "b", "c"]).await;
        assert!(outcomes.iter().all(|o| matches!(o, Ok(WriteOutcome::Stored))), "{outcomes:?}");
        assert_eq!(*store.1.lock().unwrap(), [1, 3]);
    }

    #[tokio::test]
    async fn a_full_batch_does_not_wait_out_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, store) = delayed(&dir, 2, Duration::from_secs(600)).await;
        writer.write(event("first")).await.unwrap();
        let outcomes = tokio::time::timeout(Duration::from_secs(60), staggered(&writer, &["a", "b"])).await;
        assert!(outcomes.expect("committed once full").iter().all(|o| matches!(o, Ok(WriteOutcome::Stored))));
        assert_eq!(*store.1.lock().unwrap(), [1, 2]);
    }

    #[tokio::test]
    async fn an_event_its_client_waits_on_is_not_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, store) = delayed(&dir, 16, Duration::from_secs(600)).await;
        writer.write(event("first")).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(60), writer.write_awaited(event("second"))).await;
        assert_eq!(second.expect("committed at once").unwrap(), WriteOutcome::Stored);
        assert_eq!(*store.1.lock().unwrap(), [1, 1]);
    }

    #[tokio::test]
    async fn an_event_its_client_waits_on_ends_a_gathering_and_shares_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, store) = delayed(&dir, 16, Duration::from_secs(600)).await;
        writer.write(event("first")).await.unwrap();
        let held = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(event("held")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let awaited = tokio::time::timeout(Duration::from_secs(60), writer.write_awaited(event("awaited"))).await;
        assert_eq!(awaited.expect("committed at once").unwrap(), WriteOutcome::Stored);
        assert_eq!(held.await.unwrap().unwrap(), WriteOutcome::Stored);
        assert_eq!(*store.1.lock().unwrap(), [1, 2]);
    }
}
