//! Live subscriptions, indexed so that a new event meets only the subscriptions that could want it.
//!
//! Each filter is filed under its most selective field (`protocol::filter_index`: its ids, else its authors, else the
//! values of one of its tags, else its search's first word, else its kinds); only a filter with none of these is
//! tried against every event. A candidate is then checked with the full filter, so the index only has to avoid false
//! negatives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::Reader;
use crate::protocol::filter_index::{Candidates, FilterIndex};
use crate::protocol::search::ContentWords;
use crate::protocol::{Filter, SharedEvent, message};
use crate::store::writer::AcceptListener;

/// The sending side of a connection's outgoing queue, bounded in messages and in bytes.
pub struct Outbox {
    queue: mpsc::Sender<String>,
    /// Bytes queued and not yet taken by the connection, and the most it may hold.
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Who reads this connection: restricted kinds are delivered only where this reader may see them.
    pub reader: Arc<Reader>,
    /// Cancelled when the queue overflowed: the connection reads too slowly and is to be dropped.
    pub overflowed: CancellationToken,
}

impl Outbox {
    pub fn new(
        capacity: usize,
        max_bytes: usize,
        reader: Arc<Reader>,
        overflowed: CancellationToken,
    ) -> (Arc<Self>, Outgoing) {
        let (queue, receiver) = mpsc::channel(capacity);
        let bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Self { queue, bytes: bytes.clone(), max_bytes, reader, overflowed };
        (Arc::new(outbox), Outgoing { receiver, bytes })
    }

    /// Never waits: a client that does not keep up is cut off rather than allowed to slow the sender down.
    fn push(&self, message: String) {
        let len = message.len();
        if self.bytes.fetch_add(len, Ordering::Relaxed).saturating_add(len) > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed.cancel();
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(message) {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            self.overflowed.cancel();
        }
    }
}

/// The connection's side of its outbox: taking a message gives its bytes back.
pub struct Outgoing {
    receiver: mpsc::Receiver<String>,
    bytes: Arc<AtomicUsize>,
}

impl Outgoing {
    pub async fn recv(&mut self) -> Option<String> {
        let message = self.receiver.recv().await?;
        self.bytes.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }

    pub fn try_recv(&mut self) -> Option<String> {
        let message = self.receiver.try_recv().ok()?;
        self.bytes.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }
}

pub type SubscriptionKey = u64;

struct LiveSubscription {
    outbox: Arc<Outbox>,
    /// `["EVENT",<sub_id>,`, quoted once.
    prefix: String,
    filters: Vec<Filter>,
}

#[derive(Default)]
pub struct SubscriptionIndex {
    inner: RwLock<Index>,
}

#[derive(Default)]
struct Index {
    next_key: SubscriptionKey,
    subscriptions: HashMap<SubscriptionKey, LiveSubscription>,
    filed: FilterIndex<SubscriptionKey>,
}

impl SubscriptionIndex {
    pub fn add(&self, outbox: &Arc<Outbox>, sub_id: &str, filters: Vec<Filter>) -> SubscriptionKey {
        let mut index = self.inner.write().expect("subscription index lock");
        let key = index.next_key;
        index.next_key += 1;
        for filter in &filters {
            index.filed.file(&key, filter, true);
        }
        let subscription = LiveSubscription { outbox: outbox.clone(), prefix: message::event_prefix(sub_id), filters };
        index.subscriptions.insert(key, subscription);
        key
    }

    pub fn remove(&self, key: SubscriptionKey) {
        let mut index = self.inner.write().expect("subscription index lock");
        if let Some(subscription) = index.subscriptions.remove(&key) {
            for filter in &subscription.filters {
                index.filed.file(&key, filter, false);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().expect("subscription index lock").subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the event to every live subscription with a matching filter.
    pub fn publish(&self, event: &SharedEvent) {
        let index = self.inner.read().expect("subscription index lock");
        // The content is split into words once for every search that looks at this event.
        let words = ContentWords::new(event.kind(), &event.event.content);
        let Candidates { about, like } = index.filed.candidates(event, &words);
        let candidates = about.into_iter().chain(like);
        for key in candidates {
            let subscription = &index.subscriptions[&key];
            if subscription.filters.iter().any(|f| f.matches_with(&event.event, &words))
                && subscription.outbox.reader.may_see(event)
            {
                subscription.outbox.push(message::event_after(&subscription.prefix, &event.json));
            }
        }
    }
}

impl AcceptListener for SubscriptionIndex {
    fn accepted(&self, events: &[SharedEvent]) {
        for event in events {
            self.publish(event);
        }
    }
}
