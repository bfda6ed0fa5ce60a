//! Recording what became of push jobs. Deliveries hand their outcomes to one task, which writes whatever outcomes
//! wait in one transaction: sixteen workers finishing together cost one commit, not sixteen, each of which (on
//! SQLite) would queue behind the event writer for the one write connection.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::StoreError;
use crate::store::jobs::{JobQueue, JobUpdate};

/// Outcomes written together at most.
const MAX_BATCH: usize = 256;

type Request = (JobUpdate, oneshot::Sender<Result<(), StoreError>>);

/// A handle on the recording task; it ends once every handle is dropped (the delivery loop drops its own last,
/// once its deliveries have reported, and awaits the task).
#[derive(Clone)]
pub struct Bookkeeper {
    requests: mpsc::UnboundedSender<Request>,
}

impl Bookkeeper {
    /// The handle, and the task to await once every handle is dropped.
    pub fn start(queue: Arc<dyn JobQueue>) -> (Self, JoinHandle<()>) {
        let (requests, waiting) = mpsc::unbounded_channel();
        (Self { requests }, tokio::spawn(run(queue, waiting)))
    }

    /// Records one outcome; returns once it is committed (with others that were waiting).
    pub async fn record(&self, update: JobUpdate) -> Result<(), StoreError> {
        let (reply, recorded) = oneshot::channel();
        let stopped = || StoreError::new("push bookkeeping has stopped");
        self.requests.send((update, reply)).map_err(|_| stopped())?;
        recorded.await.map_err(|_| stopped())?
    }
}

async fn run(queue: Arc<dyn JobQueue>, mut waiting: mpsc::UnboundedReceiver<Request>) {
    let mut requests = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut requests, MAX_BATCH).await > 0 {
        let (updates, replies): (Vec<JobUpdate>, Vec<_>) = requests.drain(..).unzip();
        let recorded = queue.record(&updates).await;
        for reply in replies {
            let _ = reply.send(recorded.clone());
        }
    }
}
