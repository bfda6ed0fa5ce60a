//! The application's lifecycle, owned by `app` and handed to every part that runs tasks: one shutdown signal, and
//! the tracker of the background tasks started under it, which shutdown waits for before the writer drains and the
//! store closes (an untracked task could still be writing when the store is closed under it).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Lifecycle {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a background task that shutdown waits for. It must end once `shutdown()` is cancelled (or sooner).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// The shutdown signal, for tasks to select on.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Signals every part to stop.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits for every background task started so far; none may be started after.
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}
