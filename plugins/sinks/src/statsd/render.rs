//! Batches → StatsD points: every sample of a metric that declares a StatsD name,
//! converted from the metric's unit to the StatsD unit and named by [`Namer`], plus the
//! `up` gauge of every VM (1 if Running, else 0). Samples of metrics without a StatsD
//! declaration are skipped. When two collector instances report the same series, the
//! newer batch wins.

use std::collections::BTreeMap;
use std::time::SystemTime;

use vadvisor_api::{Batch, DomainRef, DomainState, MetricKind};

use super::naming::{Namer, SeriesId};

/// One value to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub series: SeriesId,
    /// In the StatsD unit.
    pub value: f64,
    pub kind: MetricKind,
}

/// What the latest batches hold.
#[derive(Debug, Default)]
pub struct Rendered {
    /// In series order.
    pub points: Vec<Point>,
    /// Every VM in the batches.
    pub domains: Vec<DomainRef>,
}

pub fn render<'a>(batches: impl IntoIterator<Item = &'a Batch>, namer: Namer) -> Rendered {
    let mut points: BTreeMap<SeriesId, (SystemTime, Point)> = BTreeMap::new();
    let mut domains: BTreeMap<DomainRef, Option<(SystemTime, DomainState)>> = BTreeMap::new();
    let mut put = |at: SystemTime, point: Point| match points.get(&point.series) {
        Some((seen, _)) if *seen > at => {}
        _ => {
            points.insert(point.series.clone(), (at, point));
        }
    };
    for batch in batches {
        for ds in &batch.domains {
            let state = domains.entry(ds.domain.clone()).or_default();
            if let Some(s) = ds.state {
                if state.is_none_or(|(at, _)| at <= batch.at) {
                    *state = Some((batch.at, s));
                }
            }
            for sample in &ds.samples {
                let Some(desc) = batch.metrics.get(usize::from(sample.metric)) else {
                    continue;
                };
                let Some(statsd) = desc.statsd else { continue };
                let series = namer.domain(&ds.domain, statsd.name, desc.labels, &sample.labels);
                let value = desc.unit.convert(sample.value, statsd.unit);
                put(
                    batch.at,
                    Point {
                        series,
                        value,
                        kind: desc.kind,
                    },
                );
            }
        }
        for sample in &batch.host {
            let Some(desc) = batch.metrics.get(usize::from(sample.metric)) else {
                continue;
            };
            let Some(statsd) = desc.statsd else { continue };
            let series = namer.host(statsd.name, desc.labels, &sample.labels);
            let value = desc.unit.convert(sample.value, statsd.unit);
            put(
                batch.at,
                Point {
                    series,
                    value,
                    kind: desc.kind,
                },
            );
        }
    }
    for (domain, state) in &domains {
        if let Some((at, state)) = state {
            let value = if state.is_running() { 1.0 } else { 0.0 };
            put(
                *at,
                Point {
                    series: namer.up(domain),
                    value,
                    kind: MetricKind::Gauge,
                },
            );
        }
    }
    Rendered {
        points: points.into_values().map(|(_, p)| p).collect(),
        domains: domains.into_keys().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::naming::TagStyle;
    use std::sync::Arc;
    use std::time::Duration;
    use vadvisor_api::{DomainSamples, MetricDesc, Sample, Unit};

    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
            .statsd("cpu.total", Unit::Milliseconds),
        MetricDesc::gauge("vm_memory_actual_balloon_bytes", "h", Unit::Kibibytes)
            .statsd("memory.bytes", Unit::Bytes),
        MetricDesc::counter("vm_network_receive_bytes_total", "h", Unit::Bytes)
            .labels(&["interface"])
            .statsd("network.receive.bytes.total", Unit::Bytes),
        MetricDesc::gauge("vm_no_statsd_bytes", "h", Unit::Bytes),
    ];

    fn batch(id: &str, at: SystemTime, domains: Vec<DomainSamples>) -> Batch {
        Batch {
            collector: id.into(),
            metrics: Arc::from(METRICS),
            at,
            domains,
            host: vec![Sample::new(1, 4.0)],
        }
    }

    fn domain(uuid: &str, state: Option<u32>, samples: Vec<Sample>) -> DomainSamples {
        let mut d = DomainSamples::new(DomainRef::new(uuid, "n"));
        d.state = state.map(|s| DomainState::new(s, 1));
        d.samples = samples;
        d
    }

    fn find<'a>(r: &'a Rendered, key: &str) -> Option<&'a Point> {
        r.points.iter().find(|p| p.series.key == key)
    }

    #[test]
    fn names_units_kinds_and_up() {
        let at = SystemTime::now();
        let b = batch(
            "cpu",
            at,
            vec![
                domain(
                    "u1",
                    Some(1),
                    vec![
                        Sample::new(0, 123_456_789_012.0),
                        Sample::new(1, 1_048_576.0),
                        Sample::labelled(2, vec!["vnet0".into()], 1000.0),
                        Sample::new(3, 5.0),
                        Sample::new(99, 5.0),
                    ],
                ),
                domain("u2", Some(3), vec![]),
                domain("u3", None, vec![]),
            ],
        );
        let r = render(
            [&b],
            Namer {
                style: TagStyle::None,
            },
        );
        let cpu = find(&r, "u1.cpu.total").unwrap();
        assert_eq!(
            (cpu.value, cpu.kind),
            (123_456.789_012, MetricKind::Counter)
        );
        assert_eq!(
            find(&r, "u1.memory.bytes").unwrap().value,
            1_073_741_824.0,
            "KiB sent as bytes"
        );
        assert_eq!(
            find(&r, "u1.vnet0.network.receive.bytes.total")
                .unwrap()
                .value,
            1000.0
        );
        assert_eq!(find(&r, "host.memory.bytes").unwrap().value, 4096.0);
        assert_eq!(find(&r, "u1.up").unwrap().value, 1.0);
        assert_eq!(find(&r, "u2.up").unwrap().value, 0.0, "paused is not up");
        assert!(find(&r, "u3.up").is_none(), "unknown state: no up");
        assert_eq!(r.points.len(), 6, "{:?}", r.points);
        assert_eq!(r.domains.len(), 3);
    }

    #[test]
    fn the_newer_batch_wins_for_the_same_series() {
        let t0 = SystemTime::now();
        let t1 = t0 + Duration::from_secs(1);
        let fast = batch(
            "cpu/fast",
            t1,
            vec![domain("u1", Some(1), vec![Sample::new(0, 2e6)])],
        );
        let slow = batch(
            "cpu",
            t0,
            vec![domain("u1", Some(5), vec![Sample::new(0, 1e6)])],
        );
        for order in [[&fast, &slow], [&slow, &fast]] {
            let r = render(
                order,
                Namer {
                    style: TagStyle::None,
                },
            );
            assert_eq!(find(&r, "u1.cpu.total").unwrap().value, 2.0);
            assert_eq!(find(&r, "u1.up").unwrap().value, 1.0);
        }
    }
}
