//! Fan-out of stored events to stream clients. Each client has a bounded queue
//! (`client_buffer` events) that only receives events passing its filter; a client
//! whose queue is full — it stopped reading — is dropped and marked, so memory never
//! grows with a slow reader. Closing the hub (sink shutdown) ends every stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use vadvisor_api::LifecycleEvent;

use super::query::Filter;

/// An event as stream clients get it: with its history row id (`None` when it could
/// not be stored).
#[derive(Debug)]
pub struct LiveEvent {
    pub id: Option<i64>,
    pub event: Arc<LifecycleEvent>,
}

struct Client {
    key: u64,
    filter: Filter,
    tx: mpsc::Sender<Arc<LiveEvent>>,
    kicked: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    next_key: u64,
    clients: Vec<Client>,
    closed: bool,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Clients dropped for not reading.
    kicked_total: AtomicU64,
}

/// A client's end: its queue, and whether the hub dropped it for being too slow.
/// Dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    key: u64,
    pub rx: mpsc::Receiver<Arc<LiveEvent>>,
    kicked: Arc<AtomicBool>,
}

impl Subscription {
    /// True when the client was dropped because its queue was full.
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().clients.retain(|c| c.key != self.key);
    }
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client whose queue holds `capacity` events. After [`Hub::close`]
    /// the subscription ends at once.
    pub fn subscribe(self: &Arc<Self>, filter: Filter, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kicked = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        inner.next_key += 1;
        let key = inner.next_key;
        if !inner.closed {
            inner.clients.push(Client {
                key,
                filter,
                tx,
                kicked: kicked.clone(),
            });
        }
        Subscription {
            hub: self.clone(),
            key,
            rx,
            kicked,
        }
    }

    /// Queues the event for every client whose filter it passes; drops the clients
    /// whose queue is full. Returns how many were dropped.
    pub fn publish(&self, event: &Arc<LiveEvent>) -> usize {
        let e = &event.event;
        let mut dropped = 0;
        self.lock().clients.retain(|c| {
            if !c.filter.matches(&e.domain.uuid, &e.domain.name, e.event) {
                return true;
            }
            match c.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    c.kicked.store(true, Ordering::Release);
                    dropped += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if dropped > 0 {
            let total = self
                .kicked_total
                .fetch_add(dropped as u64, Ordering::Relaxed)
                + dropped as u64;
            tracing::warn!(
                dropped,
                total,
                "event stream clients stopped reading; disconnected"
            );
        }
        dropped
    }

    /// Connected stream clients.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Clients dropped so far for not reading.
    pub fn kicked_total(&self) -> u64 {
        self.kicked_total.load(Ordering::Relaxed)
    }

    /// Ends every stream (after what is queued) and refuses new ones.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.clients.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::query::{DomainMatch, TypeSet};
    use std::time::SystemTime;
    use vadvisor_api::DomainRef;

    fn live(id: i64, name: &str, event: u32) -> Arc<LiveEvent> {
        Arc::new(LiveEvent {
            id: Some(id),
            event: Arc::new(LifecycleEvent {
                at: SystemTime::now(),
                domain: DomainRef::new(format!("uuid-{name}"), name),
                event,
                detail: 0,
                reconciled: false,
            }),
        })
    }

    #[tokio::test]
    async fn delivers_only_what_passes_each_filter() {
        let hub = Hub::new();
        let mut all = hub.subscribe(Filter::all(), 8);
        let mut started_two = hub.subscribe(
            Filter {
                types: TypeSet::Only(1 << 2),
                domain: Some(DomainMatch::new("two")),
            },
            8,
        );
        for (i, (name, ev)) in [("one", 2), ("two", 5), ("two", 2)].into_iter().enumerate() {
            hub.publish(&live(i as i64, name, ev));
        }
        assert_eq!(all.rx.recv().await.and_then(|e| e.id), Some(0));
        assert_eq!(all.rx.len(), 2);
        assert_eq!(started_two.rx.recv().await.and_then(|e| e.id), Some(2));
        assert!(started_two.rx.is_empty());
    }

    #[tokio::test]
    async fn a_full_client_is_dropped_and_marked_others_continue() {
        let hub = Hub::new();
        let slow = hub.subscribe(Filter::all(), 3);
        let mut fast = hub.subscribe(Filter::all(), 3);
        for i in 0..3 {
            assert_eq!(hub.publish(&live(i, "one", 2)), 0);
            assert!(fast.rx.recv().await.is_some());
        }
        assert!(!slow.kicked());
        assert_eq!(hub.publish(&live(3, "one", 2)), 1);
        assert!(slow.kicked());
        assert_eq!(hub.clients(), 1);
        assert_eq!(hub.kicked_total(), 1);
        // The slow client's queue stays bounded: nothing more is queued for it.
        for i in 4..100 {
            hub.publish(&live(i, "one", 2));
            assert!(fast.rx.recv().await.is_some());
        }
        assert_eq!(slow.rx.len(), 3);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes_and_close_ends_streams() {
        let hub = Hub::new();
        let gone = hub.subscribe(Filter::all(), 4);
        let mut staying = hub.subscribe(Filter::all(), 4);
        drop(gone);
        assert_eq!(hub.clients(), 1);
        hub.publish(&live(1, "one", 2));
        hub.close();
        assert!(staying.rx.recv().await.is_some());
        assert!(staying.rx.recv().await.is_none());
        let mut late = hub.subscribe(Filter::all(), 4);
        assert!(late.rx.recv().await.is_none());
        assert_eq!(hub.clients(), 0);
    }
}
