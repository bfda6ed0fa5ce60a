//! The writes deliveries make, taken together. Each kind of write has one task, which writes whatever requests wait
//! in one call (one transaction): sixteen workers finishing together cost one commit, not sixteen, each of which (on
//! SQLite) would queue behind the event writer for the one write connection; a fan-out to ten thousand devices
//! counts their badges in tens of commits, not ten thousand.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::push::audience::Audience;
use crate::store::StoreError;
use crate::store::jobs::{JobQueue, JobUpdate};
use crate::store::registrations::BadgeChange;

/// Requests written together at most.
const MAX_BATCH: usize = 256;

type Reply<R> = oneshot::Sender<Result<R, StoreError>>;
type Written<R> = Pin<Box<dyn Future<Output = Result<Vec<R>, StoreError>> + Send>>;

/// A handle on one batching task; the task ends once every handle is dropped (the delivery loop drops its own last,
/// once its deliveries have reported, and awaits the task).
pub struct Batched<T, R> {
    requests: mpsc::UnboundedSender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batched<T, R> {
    fn clone(&self) -> Self {
        Self { requests: self.requests.clone() }
    }
}

/// What became of push jobs (finished, or due again later).
pub type Bookkeeper = Batched<JobUpdate, ()>;
/// Badge counts: each request's answer is the registration's new badge (None once it is gone).
pub type Badges = Batched<BadgeChange, Option<u32>>;

impl Bookkeeper {
    pub fn start(queue: Arc<dyn JobQueue>) -> (Self, JoinHandle<()>) {
        Batched::with_writer(move |updates: Vec<JobUpdate>| {
            let queue = queue.clone();
            Box::pin(async move {
                let n = updates.len();
                queue.record(&updates).await.map(|()| vec![(); n])
            })
        })
    }
}

impl Badges {
    pub fn start(audience: Arc<Audience>) -> (Self, JoinHandle<()>) {
        Batched::with_writer(move |changes: Vec<BadgeChange>| {
            let audience = audience.clone();
            Box::pin(async move { audience.registry.add_to_badges(changes).await })
        })
    }
}

impl<T: Send + 'static, R: Send + 'static> Batched<T, R> {
    /// The handle, and the task to await once every handle is dropped. `write` answers each request in order.
    fn with_writer(write: impl FnMut(Vec<T>) -> Written<R> + Send + 'static) -> (Self, JoinHandle<()>) {
        let (requests, waiting) = mpsc::unbounded_channel();
        (Self { requests }, tokio::spawn(run(write, waiting)))
    }

    /// Writes one request; returns its answer once it is committed (with others that were waiting).
    pub async fn write(&self, request: T) -> Result<R, StoreError> {
        let (reply, written) = oneshot::channel();
        let stopped = || StoreError::new("push bookkeeping has stopped");
        self.requests.send((request, reply)).map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

async fn run<T, R>(mut write: impl FnMut(Vec<T>) -> Written<R>, mut waiting: mpsc::UnboundedReceiver<(T, Reply<R>)>) {
    let mut requests = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut requests, MAX_BATCH).await > 0 {
        let (batch, replies): (Vec<T>, Vec<Reply<R>>) = requests.drain(..).unzip();
        match write(batch).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
