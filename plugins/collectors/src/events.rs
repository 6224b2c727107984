//! The `events` collector: forwards libvirt's domain lifecycle events
//! (`VIR_DOMAIN_EVENT_ID_LIFECYCLE`, including those the backend reconciles after a
//! reconnect) to the sinks as `Record::Event`, in the order they arrive.
//!
//! A hypervisor without events leaves it idle until shutdown (logged once). When the
//! subscription falls behind, the lost events are counted and logged once; when it
//! closes (the backend restarts its event loop), it subscribes again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use vadvisor_api::{
    async_trait, CollectError, CollectorPlugin, EventSource, MetricDesc, Record, Registry,
    SourceContext, Unit,
};

/// Declared for the documentation; the Prometheus sink counts the events itself.
pub const METRICS: &[MetricDesc] = &[MetricDesc::counter(
    "vm_lifecycle_events_total",
    "Domain lifecycle events received from libvirt, by event type and reason",
    Unit::Count,
)
.labels(&["event_type", "reason"])
.source("VIR_DOMAIN_EVENT_ID_LIFECYCLE", "0.8.0")];

/// Wait before subscribing again after the event channel closed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// Options of the `events` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsOptions {}

#[derive(Default)]
pub struct EventsCollector {
    lost: Arc<AtomicU64>,
}

impl EventsCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events lost because this subscription fell behind (shared with the running copy).
    pub fn lost(&self) -> Arc<AtomicU64> {
        self.lost.clone()
    }
}

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "events",
        "Domain lifecycle events (defined, started, stopped, …) as they happen",
        |_o: EventsOptions, _cx| Ok(CollectorPlugin::push(EventsCollector::new())),
    );
}

#[async_trait]
impl EventSource for EventsCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), CollectError> {
        let mut warned_lag = false;
        loop {
            let Some(mut rx) = cx.hypervisor.lifecycle_events() else {
                tracing::info!(collector = %cx.id, "the hypervisor delivers no lifecycle events; the collector is idle");
                cx.shutdown.cancelled().await;
                return Ok(());
            };
            loop {
                let received = tokio::select! {
                    _ = cx.shutdown.cancelled() => return Ok(()),
                    r = rx.recv() => r,
                };
                match received {
                    Ok(event) => cx.emit(Record::Event(Arc::new(event))),
                    Err(RecvError::Lagged(n)) => {
                        let total = self.lost.fetch_add(n, Ordering::Relaxed) + n;
                        if !warned_lag {
                            tracing::warn!(collector = %cx.id, lost = n, total,
                                "lifecycle events were lost because the collector fell behind (logged once)");
                            warned_lag = true;
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
            tracing::info!(collector = %cx.id, "the lifecycle event channel closed; subscribing again");
            tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use vadvisor_api::hypervisor::{ConnectionStatus, DomainStats, StatsGroups};
    use vadvisor_api::{
        Bus, CancellationToken, DomainRef, FakeHypervisor, Hypervisor, HypervisorError,
        LifecycleEvent, SinkHealth,
    };

    fn ev(event: u32, detail: u32) -> LifecycleEvent {
        LifecycleEvent {
            at: SystemTime::now(),
            domain: DomainRef::new("u1", "one"),
            event,
            detail,
            reconciled: false,
        }
    }

    fn context(hv: Arc<dyn Hypervisor>, bus: &Bus) -> (SourceContext, CancellationToken) {
        let shutdown = CancellationToken::new();
        (
            SourceContext {
                id: "events".into(),
                hypervisor: hv,
                bus: bus.clone(),
                shutdown: shutdown.clone(),
            },
            shutdown,
        )
    }

    #[test]
    fn declarations_are_valid() {
        for m in METRICS {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[tokio::test]
    async fn forwards_every_event_in_order_including_unknown_codes() {
        let hv = Arc::new(FakeHypervisor::new());
        let bus = Bus::new(64);
        let mut records = bus.subscribe(Arc::new(SinkHealth::default()));
        let (cx, shutdown) = context(hv.clone(), &bus);
        let task = tokio::spawn(Box::new(EventsCollector::new()).run(cx));
        // Let the collector subscribe first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = [ev(0, 0), ev(2, 0), ev(6, 1), ev(42, 7), ev(5, 1)];
        for e in &sent {
            hv.emit_event(e.clone());
        }
        for want in &sent {
            match tokio::time::timeout(Duration::from_secs(2), records.recv()).await {
                Ok(Some(Record::Event(got))) => assert_eq!(&*got, want),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        shutdown.cancel();
        assert!(matches!(task.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn lagging_subscription_counts_lost_events() {
        let hv = Arc::new(FakeHypervisor::new());
        let bus = Bus::new(4096);
        let (cx, shutdown) = context(hv.clone(), &bus);
        let collector = EventsCollector::new();
        let lost = collector.lost();
        // The fake's channel holds 1024 events: emit more while the collector (on this
        // same single-threaded runtime) cannot read.
        let task = tokio::spawn(Box::new(collector).run(cx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..1500 {
            hv.emit_event(ev(2, i % 5));
        }
        let counted = async {
            while lost.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), counted)
            .await
            .expect("lost events counted");
        assert_eq!(lost.load(Ordering::Relaxed), 1500 - 1024);
        shutdown.cancel();
        assert!(matches!(task.await, Ok(Ok(()))));
    }

    /// A hypervisor without events.
    struct NoEvents;

    #[async_trait]
    impl Hypervisor for NoEvents {
        async fn domain_stats(&self, _: StatsGroups) -> Result<Vec<DomainStats>, HypervisorError> {
            Ok(Vec::new())
        }
        fn status(&self) -> ConnectionStatus {
            ConnectionStatus::default()
        }
    }

    #[tokio::test]
    async fn without_events_it_idles_until_shutdown() {
        let bus = Bus::new(4);
        let (cx, shutdown) = context(Arc::new(NoEvents), &bus);
        let task = tokio::spawn(Box::new(EventsCollector::new()).run(cx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(1), task).await;
        assert!(matches!(r, Ok(Ok(Ok(())))));
    }
}
