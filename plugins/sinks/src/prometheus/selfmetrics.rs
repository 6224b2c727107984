//! The agent's own figures (`vadvisor_*`): per-collector run health (node_exporter
//! style duration and success, plus run, error and per-domain error counts), when the
//! exported data of each collector was collected, the libvirt connection, records the
//! sinks lost, what sinks report about themselves (e.g. remote-write delivery), the HTTP
//! server's connections and limit hits, and build information. Rendered fresh on every
//! scrape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vadvisor_api::{CollectorHealth, ConnectionStatus, HealthView, MetricKind, SinkFigure};

use super::emit::Emit;

/// Everything the self-metrics are made of, gathered once per scrape.
pub struct SelfStats<'a> {
    pub collectors: &'a BTreeMap<String, CollectorHealth>,
    /// Collection time of the batch exported for each collector instance.
    pub batch_times: &'a [(Arc<str>, SystemTime)],
    pub libvirt: &'a ConnectionStatus,
    pub sink_drops: &'a BTreeMap<String, u64>,
    /// Figures sinks report about themselves, by sink id.
    pub sink_figures: &'a [(String, Vec<SinkFigure>)],
}

/// Help of `vadvisor_collector_period_seconds`.
const PERIOD_HELP: &str = "Time between the starts of the collector's last two runs: its actual period, above its interval when collections take longer and ticks are skipped (0 until it ran twice)";

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl SelfStats<'_> {
    pub fn render(&self, enc: &mut impl Emit) {
        use MetricKind::{Counter, Gauge};
        enc.family(
            "vadvisor_build_info",
            "vadvisor build information (value 1)",
            Gauge,
        );
        enc.sample(
            "vadvisor_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );

        enc.family(
            "vadvisor_libvirt_up",
            "Whether the agent is connected to libvirt (1) or not (0)",
            Gauge,
        );
        enc.sample(
            "vadvisor_libvirt_up",
            &[],
            if self.libvirt.connected { 1.0 } else { 0.0 },
        );
        enc.family(
            "vadvisor_libvirt_reconnects_total",
            "Successful libvirt connections after the first one",
            Counter,
        );
        enc.sample(
            "vadvisor_libvirt_reconnects_total",
            &[],
            self.libvirt.reconnects as f64,
        );
        enc.family(
            "vadvisor_libvirt_calls_total",
            "libvirt API calls made",
            Counter,
        );
        enc.sample(
            "vadvisor_libvirt_calls_total",
            &[],
            self.libvirt.calls as f64,
        );

        type Figure = fn(&CollectorHealth) -> f64;
        let per_collector: [(&str, &str, MetricKind, Figure); 7] = [
            (
                "vadvisor_collector_duration_seconds",
                "How long the collector's last run took",
                Gauge,
                |h| h.last_duration.as_secs_f64(),
            ),
            (
                "vadvisor_collector_period_seconds",
                PERIOD_HELP,
                Gauge,
                |h| h.last_period.as_secs_f64(),
            ),
            (
                "vadvisor_collector_success",
                "Whether the collector's last run succeeded (1) or failed (0)",
                Gauge,
                |h| if h.last_success { 1.0 } else { 0.0 },
            ),
            (
                "vadvisor_collector_runs_total",
                "Runs of the collector",
                Counter,
                |h| h.runs as f64,
            ),
            (
                "vadvisor_collector_errors_total",
                "Failed runs of the collector",
                Counter,
                |h| h.errors as f64,
            ),
            (
                "vadvisor_collector_libvirt_calls",
                "libvirt calls made during the collector's last tick (shared by the collectors of that tick)",
                Gauge,
                |h| h.last_tick_libvirt_calls as f64,
            ),
            (
                "vadvisor_domain_collection_errors_total",
                "Domains the collector reported with partial data because of an error",
                Counter,
                |h| h.domain_errors as f64,
            ),
        ];
        for (name, help, kind, figure) in per_collector {
            enc.family(name, help, kind);
            for (id, h) in self.collectors {
                enc.sample(name, &[("collector", id.as_str())], figure(h));
            }
        }

        let name = "vadvisor_collector_last_batch_timestamp_seconds";
        enc.family(
            name,
            "When the data exported for the collector was collected (start of its tick)",
            Gauge,
        );
        for (id, at) in self.batch_times {
            enc.sample(name, &[("collector", &**id)], unix_seconds(*at));
        }

        let name = "vadvisor_sink_dropped_records_total";
        enc.family(
            name,
            "Records a sink lost because it fell behind the collectors",
            Counter,
        );
        for (id, n) in self.sink_drops {
            enc.sample(name, &[("sink", id.as_str())], *n as f64);
        }

        // Sink figures: one family per name, in first-seen order, a `sink` label first.
        let mut names: Vec<&SinkFigure> = Vec::new();
        for (_, figures) in self.sink_figures {
            for f in figures {
                if !names.iter().any(|n| n.name == f.name) {
                    names.push(f);
                }
            }
        }
        for family in names {
            enc.family(family.name, family.help, family.kind);
            for (id, figures) in self.sink_figures {
                for f in figures.iter().filter(|f| f.name == family.name) {
                    enc.begin(f.name);
                    enc.label("sink", id);
                    for (k, v) in &f.labels {
                        enc.label(k, v);
                    }
                    enc.value(f.value);
                }
            }
        }
    }
}

/// Every `vadvisor_*` family in `/metrics` order, gathered from the agent's health and
/// the hypervisor's status (shared by the scrape and the `remote_write` sink).
pub fn render_agent(
    health: &HealthView,
    libvirt: &ConnectionStatus,
    batch_times: &[(Arc<str>, SystemTime)],
    enc: &mut impl Emit,
) {
    let collectors = health.collectors();
    let sink_drops = health.sinks();
    let sink_figures: Vec<_> = health
        .reports()
        .into_iter()
        .map(|(id, r)| (id, r.figures()))
        .collect();
    SelfStats {
        collectors: &collectors,
        batch_times,
        libvirt,
        sink_drops: &sink_drops,
        sink_figures: &sink_figures,
    }
    .render(enc);
    render_http(health, enc);
}

/// The HTTP server's open connections and how often its limits were hit.
pub fn render_http(health: &HealthView, enc: &mut impl Emit) {
    let name = "vadvisor_http_connections";
    enc.family(
        name,
        "Open connections of the HTTP server",
        MetricKind::Gauge,
    );
    enc.sample(name, &[], health.http_connections() as f64);
    let name = "vadvisor_http_limit_hits_total";
    enc.family(
        name,
        "Times an HTTP server limit was hit: connections_shed, connections_refused (max_connections), header_timeout, idle_timeout, event_streams (max stream clients), auth_throttled (429 after repeated login failures)",
        MetricKind::Counter,
    );
    for (limit, n) in health.limit_hits() {
        enc.sample(name, &[("limit", limit.as_str())], n as f64);
    }
}
