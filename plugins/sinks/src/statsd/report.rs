//! One send's worth of StatsD entries from the sink's state: the latest batches rendered
//! to points, counters as cumulative gauges or as deltas, `up` 0 for vanished VMs.
//! Pure and synchronous: the network is [`super::transport`]'s job.

use std::sync::Arc;
use std::time::Instant;

use vadvisor_api::{Batch, MetricKind};

use super::counters::DeltaTracker;
use super::encode::Encoder;
use super::latest::Latest;
use super::naming::Namer;
use super::options::{CounterMode, StatsdOptions};
use super::presence::Presence;
use super::render::render;

/// The state carried from one send to the next.
pub struct Reporter {
    latest: Latest,
    presence: Presence,
    deltas: DeltaTracker,
    encoder: Encoder,
    namer: Namer,
    counters: CounterMode,
}

impl Reporter {
    pub fn new(o: &StatsdOptions) -> Self {
        Self {
            latest: Latest::new(o.interval),
            presence: Presence::new(),
            deltas: DeltaTracker::new(),
            encoder: Encoder::new(&o.prefix),
            namer: Namer { style: o.tags },
            counters: o.counters,
        }
    }

    pub fn ingest(&mut self, batch: Arc<Batch>, now: Instant) {
        self.latest.insert(batch, now);
    }

    /// The entries of one send (a line, or a negative-gauge pair, each).
    pub fn entries(&mut self, now: Instant) -> Vec<String> {
        self.latest.expire(now);
        let rendered = render(self.latest.batches(), self.namer);
        let mut entries = Vec::with_capacity(rendered.points.len());
        for p in &rendered.points {
            let entry = match (p.kind, self.counters) {
                (MetricKind::Counter, CounterMode::Delta) => self
                    .deltas
                    .delta(&p.series, p.value)
                    .and_then(|d| self.encoder.count(&p.series, d)),
                _ => self.encoder.gauge(&p.series, p.value),
            };
            entries.extend(entry);
        }
        self.deltas.end_send();
        for gone in self.presence.update(&rendered.domains) {
            entries.extend(self.encoder.gauge(&self.namer.up(&gone), 0.0));
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::naming::TagStyle;
    use std::time::{Duration, SystemTime};
    use vadvisor_api::{DomainRef, DomainSamples, DomainState, MetricDesc, Sample, Unit};

    const U: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
            .statsd("cpu.total", Unit::Milliseconds),
        MetricDesc::gauge("vm_temperature_celsius_x", "h", Unit::Count)
            .statsd("temperature", Unit::Count),
        MetricDesc::counter("vm_disk_read_bytes_total", "h", Unit::Bytes)
            .labels(&["device"])
            .statsd("disk.read.bytes.total", Unit::Bytes),
    ];

    fn batch(cpu_ns: f64, temp: f64, disk: f64, running: bool) -> Arc<Batch> {
        let mut d = DomainSamples::new(DomainRef::new(U, "test"));
        d.state = Some(DomainState::new(if running { 1 } else { 3 }, 1));
        d.samples = vec![
            Sample::new(0, cpu_ns),
            Sample::new(1, temp),
            Sample::labelled(2, vec!["vda".into()], disk),
        ];
        Arc::new(Batch {
            collector: "cpu".into(),
            metrics: Arc::from(METRICS),
            at: SystemTime::now(),
            domains: vec![d],
            host: vec![],
        })
    }

    fn opts(counters: CounterMode, tags: TagStyle) -> StatsdOptions {
        StatsdOptions {
            host: "h".into(),
            counters,
            tags,
            ..StatsdOptions::default()
        }
    }

    #[test]
    fn gauge_mode_sends_cumulative_totals_as_gauges() {
        let mut r = Reporter::new(&opts(CounterMode::Gauge, TagStyle::None));
        let now = Instant::now();
        r.ingest(batch(2_500_000.0, -3.0, 4096.0, true), now);
        assert_eq!(
            r.entries(now),
            vec![
                format!("vm.{U}.cpu.total:2.5|g"),
                format!("vm.{U}.temperature:0|g\nvm.{U}.temperature:-3|g"),
                format!("vm.{U}.up:1|g"),
                format!("vm.{U}.vda.disk.read.bytes.total:4096|g"),
            ]
        );
    }

    #[test]
    fn delta_mode_first_send_increase_and_restart() {
        let mut r = Reporter::new(&opts(CounterMode::Delta, TagStyle::None));
        let now = Instant::now();
        r.ingest(batch(5e9, 1.0, 1000.0, true), now);
        let first = r.entries(now);
        assert_eq!(
            first,
            vec![format!("vm.{U}.temperature:1|g"), format!("vm.{U}.up:1|g")],
            "no counters on the first send"
        );
        r.ingest(batch(7.5e9, 2.0, 1500.0, true), now);
        let second = r.entries(now);
        assert!(
            second.contains(&format!("vm.{U}.cpu.total:2500|c")),
            "{second:?}"
        );
        assert!(
            second.contains(&format!("vm.{U}.vda.disk.read.bytes.total:500|c")),
            "{second:?}"
        );
        // The same batch again (no new collection): zero deltas.
        let third = r.entries(now);
        assert!(
            third.contains(&format!("vm.{U}.cpu.total:0|c")),
            "{third:?}"
        );
        // The VM restarted: totals went down; baselines reset, nothing sent for them.
        r.ingest(batch(1e9, 2.0, 10.0, true), now);
        let fourth = r.entries(now);
        assert!(!fourth.iter().any(|l| l.contains("|c")), "{fourth:?}");
        r.ingest(batch(2e9, 2.0, 30.0, true), now);
        let fifth = r.entries(now);
        assert!(
            fifth.contains(&format!("vm.{U}.cpu.total:1000|c")),
            "{fifth:?}"
        );
        assert!(
            fifth.contains(&format!("vm.{U}.vda.disk.read.bytes.total:20|c")),
            "{fifth:?}"
        );
    }

    #[test]
    fn dogstatsd_lines() {
        let mut r = Reporter::new(&opts(CounterMode::Gauge, TagStyle::Dogstatsd));
        let now = Instant::now();
        r.ingest(batch(1e6, 1.0, 7.0, false), now);
        let e = r.entries(now);
        assert!(
            e.contains(&format!("vm.up:0|g|#uuid:{U},name:test")),
            "{e:?}"
        );
        assert!(
            e.contains(&format!(
                "vm.disk.read.bytes.total:7|g|#uuid:{U},name:test,device:vda"
            )),
            "{e:?}"
        );
        assert!(
            e.contains(&format!("vm.cpu.total:1|g|#uuid:{U},name:test")),
            "{e:?}"
        );
    }

    #[test]
    fn a_vanished_vm_is_reported_down() {
        let mut r = Reporter::new(&opts(CounterMode::Gauge, TagStyle::None));
        let t0 = Instant::now();
        r.ingest(batch(1e6, 1.0, 7.0, true), t0);
        assert_eq!(r.entries(t0).len(), 4);
        let empty = Arc::new(Batch {
            collector: "cpu".into(),
            metrics: Arc::from(METRICS),
            at: SystemTime::now(),
            domains: vec![],
            host: vec![],
        });
        r.ingest(empty, t0);
        assert_eq!(r.entries(t0), vec![format!("vm.{U}.up:0|g")]);
        // A stale batch counts as gone too.
        let mut r = Reporter::new(&opts(CounterMode::Gauge, TagStyle::None));
        r.ingest(batch(1e6, 1.0, 7.0, true), t0);
        assert_eq!(r.entries(t0).len(), 4);
        assert_eq!(
            r.entries(t0 + Duration::from_secs(46)),
            vec![format!("vm.{U}.up:0|g")]
        );
    }
}
