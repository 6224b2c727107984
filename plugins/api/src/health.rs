//! Self-observation shared between the core and sinks: per-collector run health,
//! per-sink drop counts, HTTP server limit hits and the figures a sink reports about
//! itself ([`SinkReport`]), kept for the Prometheus sink and the health endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::metric::MetricKind;

/// Health of one collector instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectorHealth {
    pub last_duration: Duration,
    pub last_success: bool,
    pub last_run: Option<SystemTime>,
    pub runs: u64,
    pub errors: u64,
    /// Per-domain collection errors (a domain reported with partial data).
    pub domain_errors: u64,
    /// libvirt calls made during the collector's last tick (shared by every collector
    /// of that tick: one bulk call when the host supports it).
    pub last_tick_libvirt_calls: u64,
    /// The collector's configured interval (zero until the scheduler records it).
    pub interval: Duration,
    /// When the collector's last run started (its tick).
    pub last_start: Option<SystemTime>,
    /// Time between the starts of its last two runs: the actual period, more than
    /// `interval` when ticks were skipped because collections took too long (zero until
    /// it ran twice).
    pub last_period: Duration,
}

/// Counters of one sink instance.
#[derive(Debug, Default)]
pub struct SinkHealth {
    dropped: AtomicU64,
}

impl SinkHealth {
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One figure a sink reports about itself: exported in `/metrics` as
/// `name{sink="<id>",labels…}` (families merged across sinks) and shown in `/healthz`.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkFigure {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// A sink's own figures (e.g. the remote-write sink's sent, retried and dropped
/// samples). Must be cheap and never block: it is read on every scrape.
pub trait SinkReport: Send + Sync + 'static {
    fn figures(&self) -> Vec<SinkFigure>;
    /// What `/healthz` shows under `sinks.<id>`; never secrets.
    fn health(&self) -> serde_json::Value;
}

/// Registered reports by sink id.
#[derive(Default)]
struct Reports(RwLock<BTreeMap<String, Arc<dyn SinkReport>>>);

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        f.debug_list().entries(map.keys()).finish()
    }
}

/// The registry of health figures for the whole agent.
#[derive(Debug, Default)]
pub struct Health {
    collectors: RwLock<BTreeMap<String, CollectorHealth>>,
    sinks: RwLock<BTreeMap<String, Arc<SinkHealth>>>,
    reports: Reports,
    /// Per-domain collection errors by domain UUID.
    domains: RwLock<BTreeMap<String, DomainHealth>>,
    /// How often each HTTP server limit was hit (connections shed, timeouts, …).
    limit_hits: RwLock<BTreeMap<String, u64>>,
    http_connections: AtomicU64,
}

/// Collection health of one domain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainHealth {
    pub name: String,
    /// Runs that reported this domain with partial data.
    pub errors: u64,
    /// The last sample this domain got, from any collector.
    pub last_sample: Option<SystemTime>,
    /// The last sample without any collection error (all its figures fresh).
    pub last_complete: Option<SystemTime>,
}

/// The entry of `key`, made only when it is new (no key copy per update on the hot path).
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted just above")
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records one collector run.
    pub fn record_run(&self, collector: &str, took: Duration, success: bool, domain_errors: u64) {
        let mut map = self.collectors.write().unwrap_or_else(|e| e.into_inner());
        let entry = entry(&mut map, collector);
        entry.last_duration = took;
        entry.last_success = success;
        entry.last_run = Some(SystemTime::now());
        entry.runs += 1;
        entry.domain_errors += domain_errors;
        if !success {
            entry.errors += 1;
        }
    }

    /// Records that a run of the collector started at `at` (its tick's start), and so
    /// the time since the previous run's start.
    pub fn record_start(&self, collector: &str, at: SystemTime) {
        let mut map = self.collectors.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(collector.to_string()).or_default();
        if let Some(period) = entry.last_start.and_then(|t| at.duration_since(t).ok()) {
            entry.last_period = period;
        }
        entry.last_start = Some(at);
    }

    /// Records a collector's configured interval (the scheduler does, before its first run).
    pub fn record_interval(&self, collector: &str, interval: Duration) {
        let mut map = self.collectors.write().unwrap_or_else(|e| e.into_inner());
        map.entry(collector.to_string()).or_default().interval = interval;
    }

    /// Reads one collector's health without copying the whole table.
    pub fn with_collector<R>(
        &self,
        collector: &str,
        f: impl FnOnce(&CollectorHealth) -> R,
    ) -> Option<R> {
        let map = self.collectors.read().unwrap_or_else(|e| e.into_inner());
        map.get(collector).map(f)
    }

    /// Records that a domain got a sample at `at`, with `errors` problems (0: complete).
    pub fn record_domain(&self, uuid: &str, name: &str, at: SystemTime, errors: u64) {
        let mut map = self.domains.write().unwrap_or_else(|e| e.into_inner());
        let entry = entry(&mut map, uuid);
        if entry.name != name {
            entry.name = name.to_string();
        }
        entry.errors += errors;
        entry.last_sample = Some(entry.last_sample.map_or(at, |t| t.max(at)));
        if errors == 0 {
            entry.last_complete = Some(entry.last_complete.map_or(at, |t| t.max(at)));
        }
    }

    /// Forgets domains without a sample since `cutoff` (they vanished).
    pub fn forget_domains_before(&self, cutoff: SystemTime) {
        let mut map = self.domains.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, d| d.last_sample.is_some_and(|t| t >= cutoff));
    }

    pub fn domains(&self) -> BTreeMap<String, DomainHealth> {
        self.domains
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records how many libvirt calls the collector's last tick made.
    pub fn record_tick_calls(&self, collector: &str, calls: u64) {
        let mut map = self.collectors.write().unwrap_or_else(|e| e.into_inner());
        entry(&mut map, collector).last_tick_libvirt_calls = calls;
    }

    pub fn collectors(&self) -> BTreeMap<String, CollectorHealth> {
        self.collectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn sink(&self, id: &str) -> Arc<SinkHealth> {
        let mut map = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    /// Counts `n` hits of an HTTP server limit (`limit` names it).
    pub fn record_limit_hit(&self, limit: &str, n: u64) {
        let mut map = self.limit_hits.write().unwrap_or_else(|e| e.into_inner());
        *map.entry(limit.to_string()).or_default() += n;
    }

    pub fn limit_hits(&self) -> BTreeMap<String, u64> {
        self.limit_hits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Open connections of the HTTP server.
    pub fn set_http_connections(&self, n: u64) {
        self.http_connections.store(n, Ordering::Relaxed);
    }

    pub fn http_connections(&self) -> u64 {
        self.http_connections.load(Ordering::Relaxed)
    }

    pub fn sinks(&self) -> BTreeMap<String, u64> {
        let map = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.dropped())).collect()
    }

    /// Registers (or replaces) the report of sink `id`.
    pub fn add_report(&self, id: &str, report: Arc<dyn SinkReport>) {
        let mut map = self.reports.0.write().unwrap_or_else(|e| e.into_inner());
        map.insert(id.to_string(), report);
    }

    /// Every sink report, by sink id.
    pub fn reports(&self) -> Vec<(String, Arc<dyn SinkReport>)> {
        let map = self.reports.0.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_and_errors() {
        let h = Health::new();
        h.record_run("cpu", Duration::from_millis(3), true, 0);
        h.record_run("cpu", Duration::from_millis(5), false, 2);
        let c = &h.collectors()["cpu"];
        assert_eq!((c.runs, c.errors, c.domain_errors), (2, 1, 2));
        assert!(!c.last_success);
        assert_eq!(c.last_duration, Duration::from_millis(5));
        h.sink("rest").add_dropped(4);
        let t = SystemTime::now();
        h.record_domain("u1", "one", t, 1);
        assert_eq!(h.domains()["u1"].last_complete, None);
        h.record_domain("u1", "one", t, 0);
        assert_eq!(h.domains()["u1"].errors, 1);
        assert_eq!(h.domains()["u1"].last_complete, Some(t));
        h.forget_domains_before(t + Duration::from_secs(1));
        assert!(h.domains().is_empty());
        // The actual period: between the starts of the last two runs.
        h.record_start("cpu", t);
        assert_eq!(h.collectors()["cpu"].last_period, Duration::ZERO, "one run");
        h.record_start("cpu", t + Duration::from_millis(1000));
        h.record_start("cpu", t + Duration::from_millis(3000));
        let c = &h.collectors()["cpu"];
        assert_eq!(c.last_period, Duration::from_secs(2), "a skipped tick");
        assert_eq!(c.last_start, Some(t + Duration::from_secs(3)));
        assert_eq!(h.sinks()["rest"], 4);
        h.record_limit_hit("header_timeout", 2);
        h.record_limit_hit("header_timeout", 1);
        assert_eq!(h.limit_hits()["header_timeout"], 3);
    }
}

/// A read-only view of the agent's [`Health`], for sinks: they report it, they never
/// record into it.
#[derive(Clone, Debug)]
pub struct HealthView(Arc<Health>);

impl HealthView {
    pub fn new(health: Arc<Health>) -> Self {
        Self(health)
    }

    /// Per-collector run health, by instance id.
    pub fn collectors(&self) -> BTreeMap<String, CollectorHealth> {
        self.0.collectors()
    }

    /// Reads one collector's health without copying the whole table.
    pub fn with_collector<R>(
        &self,
        collector: &str,
        f: impl FnOnce(&CollectorHealth) -> R,
    ) -> Option<R> {
        self.0.with_collector(collector, f)
    }

    /// Records each sink lost to lag, by instance id.
    pub fn sinks(&self) -> BTreeMap<String, u64> {
        self.0.sinks()
    }

    /// Per-domain collection health, by UUID.
    pub fn domains(&self) -> BTreeMap<String, DomainHealth> {
        self.0.domains()
    }

    /// Times each HTTP server limit was hit.
    pub fn limit_hits(&self) -> BTreeMap<String, u64> {
        self.0.limit_hits()
    }

    /// Open connections of the HTTP server.
    pub fn http_connections(&self) -> u64 {
        self.0.http_connections()
    }

    /// Every sink's own figures, by sink id.
    pub fn reports(&self) -> Vec<(String, Arc<dyn SinkReport>)> {
        self.0.reports()
    }

    /// Publishes a sink's own figures (the one thing a sink adds to the agent's health:
    /// about itself, under its own id).
    pub fn add_report(&self, id: &str, report: Arc<dyn SinkReport>) {
        self.0.add_report(id, report)
    }

    /// Counts hits of a limit the sink enforces (e.g. refused event streams); the one
    /// thing a sink records, so that every limit shows in the same self-metric.
    pub fn record_limit_hit(&self, limit: &str, n: u64) {
        self.0.record_limit_hit(limit, n)
    }
}

impl From<Arc<Health>> for HealthView {
    fn from(health: Arc<Health>) -> Self {
        Self(health)
    }
}
