//! Sink plugins and what connects them to the core: the [`Bus`] that fans records out
//! without ever blocking a collector, the per-sink [`RecordStream`] that counts what a
//! lagging sink missed, the shared HTTP server's `HttpRoutes` (feature `http`), and
//! [`LiveCollect`] for sinks that offer a fresh collection on request.

#[cfg(feature = "http")]
use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
#[cfg(feature = "http")]
use axum::routing::MethodRouter;
#[cfg(feature = "http")]
use axum::Router;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::health::SinkHealth;
use crate::model::{Batch, Record};
use crate::options::OptionError;

/// The fan-out channel from collectors to sinks. Publishing never blocks: a sink that
/// falls behind by more than the capacity loses the oldest records and counts them.
#[derive(Clone, Debug)]
pub struct Bus {
    tx: broadcast::Sender<Record>,
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn publish(&self, record: Record) {
        // An error only means nobody listens right now.
        let _ = self.tx.send(record);
    }

    pub fn subscribe(&self, health: Arc<SinkHealth>) -> RecordStream {
        RecordStream {
            rx: self.tx.subscribe(),
            health,
        }
    }
}

/// A sink's view of the bus.
pub struct RecordStream {
    rx: broadcast::Receiver<Record>,
    health: Arc<SinkHealth>,
}

impl RecordStream {
    /// The next record; `None` once the bus is closed. Records lost to lag are counted.
    pub async fn recv(&mut self) -> Option<Record> {
        loop {
            match self.rx.recv().await {
                Ok(record) => return Some(record),
                Err(broadcast::error::RecvError::Lagged(n)) => self.health.add_dropped(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next record if one is already waiting, without waiting; `None` when none is
    /// (or the bus is closed: [`recv`](Self::recv) tells). Lets a sink take the records
    /// published together (a tick's batches) in one go. Records lost to lag are counted.
    pub fn try_recv(&mut self) -> Option<Record> {
        loop {
            match self.rx.try_recv() {
                Ok(record) => return Some(record),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.health.add_dropped(n),
                Err(_) => return None,
            }
        }
    }
}

/// What a running sink receives.
pub struct SinkInput {
    pub id: Arc<str>,
    pub records: RecordStream,
    pub shutdown: CancellationToken,
}

/// A sink owns its loop: it reads every record from `input.records` until shutdown.
#[async_trait]
pub trait Sink: Send + 'static {
    /// Opens what the sink needs (files, databases) before the agent serves or
    /// collects; an error stops the agent's start, located at the sink's options.
    /// Not called when a config is only checked. The default opens nothing.
    async fn start(&mut self) -> Result<(), OptionError> {
        Ok(())
    }

    async fn run(self: Box<Self>, input: SinkInput) -> Result<(), String>;
}

/// Runs one fresh collection of every polled collector on request, shared by
/// concurrent callers (implemented by the core's scheduler).
#[async_trait]
pub trait LiveCollect: Send + Sync + 'static {
    async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String>;
}

/// Whether `path` belongs to the agent itself: `/healthz` (open even with basic auth,
/// for container health checks) and everything under `/-/`. A sink may not shadow it.
pub fn is_core_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.eq_ignore_ascii_case("/healthz") || path == "/-" || path.starts_with("/-/")
}

/// Routes that HTTP sinks add to the one shared server.
#[cfg(feature = "http")]
#[derive(Clone, Default)]
pub struct HttpRoutes {
    router: Router,
    paths: BTreeSet<String>,
}

#[cfg(feature = "http")]
impl HttpRoutes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; a path another sink already serves is an error, not a panic.
    pub fn route(&mut self, path: &str, handler: MethodRouter) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("HTTP path `{path}` must start with `/`"));
        }
        if is_core_path(path) {
            return Err(format!(
                "HTTP path `{path}` is the agent's own endpoint (`/healthz`, `/-/…`); choose another path"
            ));
        }
        if !self.paths.insert(path.to_string()) {
            return Err(format!(
                "HTTP path `{path}` is already served by another sink"
            ));
        }
        let router = std::mem::take(&mut self.router);
        self.router = router.route(path, handler);
        Ok(())
    }

    /// Adds every route of `other` (another sink's); a path both serve is an error and
    /// leaves `self` unchanged.
    pub fn merge(&mut self, other: HttpRoutes) -> Result<(), String> {
        if let Some(p) = other.paths.iter().find(|p| self.paths.contains(*p)) {
            return Err(format!("HTTP path `{p}` is already served by another sink"));
        }
        self.paths.extend(other.paths);
        let router = std::mem::take(&mut self.router);
        self.router = router.merge(other.router);
        Ok(())
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    pub fn into_router(self) -> Router {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DomainRef, LifecycleEvent};
    use std::time::SystemTime;

    fn event() -> Record {
        Record::Event(Arc::new(LifecycleEvent {
            at: SystemTime::now(),
            domain: DomainRef::new("u", "n"),
            event: 2,
            detail: 0,
            reconciled: false,
        }))
    }

    #[tokio::test]
    async fn lagging_sink_counts_drops_and_publisher_never_blocks() {
        let bus = Bus::new(4);
        let health = Arc::new(SinkHealth::default());
        let mut stream = bus.subscribe(health.clone());
        for _ in 0..10 {
            bus.publish(event());
        }
        assert!(stream.recv().await.is_some());
        assert_eq!(health.dropped(), 6);
    }

    #[test]
    fn try_recv_takes_what_is_waiting_counts_drops_and_never_waits() {
        let bus = Bus::new(4);
        let health = Arc::new(SinkHealth::default());
        let mut stream = bus.subscribe(health.clone());
        assert!(stream.try_recv().is_none(), "nothing waiting");
        for _ in 0..3 {
            bus.publish(event());
        }
        assert!(stream.try_recv().is_some());
        assert!(stream.try_recv().is_some());
        assert!(stream.try_recv().is_some());
        assert!(stream.try_recv().is_none(), "all three taken");
        assert_eq!(health.dropped(), 0);
        for _ in 0..7 {
            bus.publish(event());
        }
        let mut taken = 0;
        while stream.try_recv().is_some() {
            taken += 1;
        }
        assert_eq!(
            (taken, health.dropped()),
            (4, 3),
            "the lagged ones are counted"
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn duplicate_routes_are_errors() {
        let mut routes = HttpRoutes::new();
        routes
            .route("/a", axum::routing::get(|| async { "a" }))
            .unwrap();
        let err = routes
            .route("/a", axum::routing::get(|| async { "b" }))
            .unwrap_err();
        assert!(err.contains("already served"));
        assert!(routes
            .route("nope", axum::routing::get(|| async { "" }))
            .is_err());
    }

    #[cfg(feature = "http")]
    #[test]
    fn core_endpoints_cannot_be_shadowed() {
        let mut routes = HttpRoutes::new();
        for path in ["/healthz", "/healthz/", "/HEALTHZ", "/-/reload", "/-/"] {
            let err = routes
                .route(path, axum::routing::get(|| async { "x" }))
                .unwrap_err();
            assert!(err.contains("the agent's own endpoint"), "{path}: {err}");
        }
        routes
            .route("/healthz2", axum::routing::get(|| async { "x" }))
            .unwrap();
        routes
            .route("/metrics", axum::routing::get(|| async { "x" }))
            .unwrap();
    }
}
