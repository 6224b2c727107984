//! The `prometheus` sink: `GET <path>` (default `/metrics`) on the shared HTTP server,
//! in OpenMetrics 1.0.0 when the scraper asks for it, else the classic text format
//! 0.0.4. This module owns the options, the registration, the sink's loop (which keeps
//! the latest batches and counts lifecycle events) and the scrape handler. A scrape
//! renders from what the loop kept and never waits on libvirt — except with
//! `live: true`, where each scrape runs one fresh collection shared by concurrent
//! scrapes (vAdvisor's behaviour).
//!
//! What a scrape contains:
//! - every metric of every collector's latest batch: `uuid`, `name` (option
//!   `name_label`), then the metric's own labels, values in base units; with
//!   `vadvisor_names`, the declared aliases too (vAdvisor's `vm_cpu_milliseconds_total`,
//!   `vm_memory_bytes` in bytes, `vm_vcpu_milliseconds_total{cpu}`, …); host samples
//!   without `uuid`/`name`;
//! - `vm_up` (1 iff Running; 0 for `vm_up_grace` after a VM stops being reported),
//!   `vm_state_code` and `vm_state_reason_code` (libvirt's numeric state and reason:
//!   two gauges rather than one series per state, so a state change does not churn
//!   series), `vm_info{uuid,name}` 1;
//! - `vm_lifecycle_events_total{event_type,reason}`;
//! - `vadvisor_*` self-metrics and `process_*` (read at most once a second).
//!
//! No series appears twice: when two collector instances (or an alias and a family)
//! give the same name and labels, the newest batch wins (see [`families`]).
//!
//! Module map: [`state`] the snapshot, `vm_up` memory and the cached per-VM part;
//! [`families`] collector families, aliases and de-duplication; [`encode`] the two
//! formats; [`events`] `vm_lifecycle_events_total`; [`selfmetrics`] `vadvisor_*`;
//! [`process`] `process_*`; [`reference`] the list of those own families for the metric
//! reference; `body` the zero-copy response body.

mod body;
pub mod encode;
pub mod events;
pub mod families;
pub mod process;
pub mod reference;
pub mod selfmetrics;
pub mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use vadvisor_api::axum::body::{Body, Bytes};
use vadvisor_api::axum::http::{header, HeaderMap};
use vadvisor_api::axum::response::{IntoResponse, Response};
use vadvisor_api::axum::routing::get;
use vadvisor_api::{
    async_trait, Health, Hypervisor, LiveCollect, OptionError, Record, Registry, Sink, SinkInput,
};

use body::Chunks;
use encode::{Encoder, Format};
use families::LabelOptions;
use process::ProcessStats;
use selfmetrics::SelfStats;
use state::{State, StateOptions};

/// Options of the `prometheus` sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusOptions {
    /// HTTP path of the exposition.
    pub path: String,
    /// Collect afresh on every scrape instead of serving the collectors' latest batches.
    pub live: bool,
    /// Add `name="<domain name>"` to every per-VM series (after `uuid`).
    pub name_label: bool,
    /// How long a VM that is no longer reported keeps `vm_up 0`.
    #[serde(with = "humantime_serde")]
    pub vm_up_grace: Duration,
    /// Also export vAdvisor's family names (`vm_cpu_milliseconds_total`, `vm_memory_bytes`, …).
    pub vadvisor_names: bool,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            path: "/metrics".into(),
            live: false,
            name_label: true,
            vm_up_grace: Duration::from_secs(600),
            vadvisor_names: true,
        }
    }
}

fn check_path(path: &str) -> Result<(), OptionError> {
    let ok = path.starts_with('/')
        && !path.contains("//")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OptionError::at(
            &["path"],
            format!("`{path}` is not a plain URL path (like /metrics)"),
        ))
    }
}

pub fn register(registry: &mut Registry) {
    registry.add_sink(
        "prometheus",
        "Prometheus exposition on /metrics (OpenMetrics or text 0.0.4), with vAdvisor's family names",
        |o: PrometheusOptions, cx| {
            check_path(&o.path)?;
            let shared = Arc::new(Shared {
                state: Mutex::new(State::new(StateOptions {
                    labels: LabelOptions { name_label: o.name_label, aliases: o.vadvisor_names },
                    grace: o.vm_up_grace,
                })),
                process: Mutex::new(None),
                live: o.live.then(|| cx.live.clone()),
                health: cx.health.clone(),
                hypervisor: cx.hypervisor.clone(),
            });
            let s = shared.clone();
            cx.http
                .route(&o.path, get(move |headers: HeaderMap| scrape(s.clone(), headers)))
                .map_err(|e| OptionError::at(&["path"], e))?;
            Ok(Box::new(PrometheusSink { shared }))
        },
    );
}

/// How long one reading of `/proc/self` serves scrapes (reading it costs ~50 µs).
const PROCESS_TTL: Duration = Duration::from_secs(1);

struct Shared {
    state: Mutex<State>,
    /// The last `/proc/self` reading and when it was taken.
    process: Mutex<Option<(Instant, ProcessStats)>>,
    /// Set in live mode.
    live: Option<Arc<dyn LiveCollect>>,
    health: Arc<Health>,
    hypervisor: Arc<dyn Hypervisor>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process figures, read at most once per [`PROCESS_TTL`].
    fn process(&self, now: Instant) -> ProcessStats {
        let mut cached = self.process.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, stats)) if now.saturating_duration_since(*at) < PROCESS_TTL => stats.clone(),
            _ => {
                let stats = ProcessStats::read();
                *cached = Some((now, stats.clone()));
                stats
            }
        }
    }
}

struct PrometheusSink {
    shared: Arc<Shared>,
}

#[async_trait]
impl Sink for PrometheusSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let live = self.shared.live.is_some();
        loop {
            tokio::select! {
                _ = input.shutdown.cancelled() => return Ok(()),
                record = input.records.recv() => match record {
                    // In live mode scrapes collect for themselves.
                    Some(Record::Batch(b)) if !live => self.shared.state().ingest(b, Instant::now()),
                    Some(Record::Event(e)) => self.shared.state().count_event(&e),
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }
}

async fn scrape(shared: Arc<Shared>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let fresh = match &shared.live {
        Some(live) => Some(live.collect_now().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "prometheus sink: live collection failed; exporting no VM data");
            Arc::from(Vec::new())
        })),
        None => None,
    };
    let collectors = shared.health.collectors();
    // A collector whose last run failed has its (older) batch withheld; in live mode
    // the fresh collection is all there is.
    let withheld: Vec<String> = match fresh {
        Some(_) => Vec::new(),
        None => collectors
            .iter()
            .filter(|(_, h)| !h.last_success)
            .map(|(id, _)| id.clone())
            .collect(),
    };
    let now = Instant::now();
    let (vm_part, batch_times) = {
        let mut state = shared.state();
        if let Some(batches) = &fresh {
            state.replace_all(batches, now);
        }
        (
            state.render(format, &withheld, now),
            state.batch_times(&withheld),
        )
    };

    let libvirt = shared.hypervisor.status();
    let sink_drops = shared.health.sinks();
    let mut tail = String::with_capacity(8 * 1024);
    let mut enc = Encoder::new(&mut tail, format);
    SelfStats {
        collectors: &collectors,
        batch_times: &batch_times,
        libvirt: &libvirt,
        sink_drops: &sink_drops,
    }
    .render(&mut enc);
    shared.process(now).render(&mut enc);
    enc.finish();

    let body = Body::new(Chunks::new([vm_part, Bytes::from(tail)]));
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

#[cfg(test)]
mod tests;
