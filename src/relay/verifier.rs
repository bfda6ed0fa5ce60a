//! The id and signature checks, on a few threads of their own (one per core) that take events from one queue.
//!
//! Why not `spawn_blocking` per event: with a permit per core in front of it, each check handed its thread back to
//! an empty queue, so the thread slept and was woken for the next event, two context switches per event. Threads
//! that drain a shared queue keep working for as long as events wait, and the queue is bounded by the connections'
//! own limits (`max_pending_events` each).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::admission::{LargeWraps, RefusedEvent, admit};
use crate::config::Config;
use crate::protocol::Refusal;
use crate::protocol::VerifiedEvent;

struct Check {
    raw: Box<RawValue>,
    config: Arc<Config>,
    /// The clock's time when the event arrived, for the `created_at` window.
    now: u64,
    reply: oneshot::Sender<Result<VerifiedEvent, RefusedEvent>>,
}

/// A handle on the checking threads; they end once every handle is dropped.
#[derive(Clone)]
pub struct Verifier {
    queue: flume::Sender<Check>,
}

impl Verifier {
    /// `large`: gift wraps that may carry more content than the configured limit (Marmot triggers).
    pub fn start(threads: usize, large: Option<LargeWraps>) -> Self {
        let (queue, checks) = flume::unbounded::<Check>();
        for n in 0..threads.max(1) {
            let (checks, large) = (checks.clone(), large.clone());
            std::thread::Builder::new()
                .name(format!("verify-{n}"))
                .spawn(move || {
                    for Check { raw, config, now, reply } in checks.iter() {
                        let outcome =
                            catch_unwind(AssertUnwindSafe(|| admit(&raw, &config.limits, large.as_ref(), now)))
                                .unwrap_or_else(|_| {
                                    tracing::error!("event check panicked");
                                    Err(RefusedEvent {
                                        event_id: None,
                                        reason: Refusal::error("could not check the event"),
                                    })
                                });
                        // The connection may have gone; nothing waits for this answer then.
                        let _ = reply.send(outcome);
                    }
                })
                .expect("a thread can be started");
        }
        Self { queue }
    }

    /// Parses and checks an event against the configured limits off the async threads (`admission::admit`).
    pub async fn admit(
        &self,
        raw: Box<RawValue>,
        config: Arc<Config>,
        now: u64,
    ) -> Result<VerifiedEvent, RefusedEvent> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || RefusedEvent { event_id: None, reason: Refusal::error("the relay is shutting down") };
        self.queue.send(Check { raw, config, now, reply }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}
