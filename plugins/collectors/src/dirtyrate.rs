//! The `dirtyrate` collector: the result of the last memory dirty-rate calculation of
//! each running domain (libvirt's `dirtyrate` statistics group, libvirt ≥ 7.2) — how
//! fast the guest writes to its memory, which decides whether a live migration
//! converges. The calculation itself is started by an operator or an orchestrator
//! (`virsh domdirtyrate-calc`); until one has run, only its status (`unstarted`) and
//! mode are reported.
//!
//! Cost: libvirt answers the group with one QEMU monitor query per running domain, so
//! the collector is off in the example configuration and meant for a slow interval.

use std::sync::Arc;

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, Labels,
    MetricDesc, Registry, Sample, StatsGroups, Unit,
};

use crate::params::{for_each_domain, index_labels, push, push_indexed};

const CALC_STATUS: u16 = 0;
const CALC_START: u16 = 1;
const CALC_PERIOD: u16 = 2;
const RATE: u16 = 3;
const VCPU_RATE: u16 = 4;

/// `dirtyrate.calc_mode` values: page sampling (the default), dirty bitmap, dirty ring.
const MODES: &[&str] = &["page-sampling", "dirty-bitmap", "dirty-ring"];

#[rustfmt::skip]
pub const METRICS: &[MetricDesc] = &[
    MetricDesc::gauge("vm_memory_dirty_rate_calc_status", "Status of the last memory dirty-rate calculation: 0 unstarted, 1 measuring, 2 measured", Unit::None)
        .labels(&["mode"])
        .json("dirtyrate.calc_status", Unit::None)
        .source("dirtyrate.calc_status", "7.2.0"),
    MetricDesc::gauge("vm_memory_dirty_rate_calc_start_seconds", "When the last dirty-rate calculation started, on QEMU's monotonic clock", Unit::Seconds)
        .json("dirtyrate.calc_start_time", Unit::Seconds)
        .source("dirtyrate.calc_start_time", "7.2.0"),
    MetricDesc::gauge("vm_memory_dirty_rate_calc_period_seconds", "How long the last dirty-rate calculation measured", Unit::Seconds)
        .json("dirtyrate.calc_period", Unit::Seconds)
        .statsd("dirtyrate.calc.period", Unit::Seconds)
        .source("dirtyrate.calc_period", "7.2.0"),
    MetricDesc::gauge("vm_memory_dirty_rate_bytes_per_second", "Memory the guest dirtied per second, as the last calculation measured", Unit::Mebibytes)
        .json("dirtyrate.megabytes_per_second", Unit::Mebibytes)
        .statsd("dirtyrate.bytes_per_second", Unit::Bytes)
        .source("dirtyrate.megabytes_per_second", "7.2.0"),
    MetricDesc::gauge("vm_vcpu_memory_dirty_rate_bytes_per_second", "Memory the virtual CPU dirtied per second, as the last calculation measured (dirty-ring mode only)", Unit::Mebibytes)
        .labels(&["vcpu"])
        .json("dirtyrate.vcpu[index=#vcpu].megabytes_per_second", Unit::Mebibytes)
        .statsd("vcpu.dirtyrate.bytes_per_second", Unit::Bytes)
        .source("dirtyrate.vcpu.<n>.megabytes_per_second", "7.2.0"),
];

/// Options of the `dirtyrate` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirtyRateOptions {}

pub struct DirtyRateCollector;

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "dirtyrate",
        "Result of the last memory dirty-rate calculation (libvirt >= 7.2)",
        |_o: DirtyRateOptions, _cx| Ok(CollectorPlugin::polled(DirtyRateCollector)),
    );
}

#[async_trait]
impl Collector for DirtyRateCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::DIRTYRATE
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        for_each_domain(cx, |domain, s| {
            if let Some(status) = domain.f64("dirtyrate.calc_status") {
                // An unknown mode (a newer libvirt) keeps its own name as the label.
                let mode = domain.str("dirtyrate.calc_mode").unwrap_or("");
                let mode = MODES.iter().find(|m| **m == mode).copied().unwrap_or(mode);
                s.push(Sample::labelled(CALC_STATUS, vec![Arc::from(mode)], status));
            }
            let none = &Labels::NONE;
            push(s, domain, "dirtyrate.calc_start_time", CALC_START, none);
            push(s, domain, "dirtyrate.calc_period", CALC_PERIOD, none);
            push(s, domain, "dirtyrate.megabytes_per_second", RATE, none);
            for n in domain.indices("dirtyrate.vcpu") {
                let field = ("dirtyrate.vcpu", n, "megabytes_per_second");
                push_indexed(s, domain, field, VCPU_RATE, &index_labels(n));
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use vadvisor_api::{FakeHypervisor, Hypervisor, TypedValue};

    #[test]
    fn declarations_are_valid() {
        for m in METRICS {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
        }
        // Prometheus and StatsD get bytes: libvirt's "megabytes" are MiB.
        assert_eq!(
            METRICS[RATE as usize].unit.convert(3.0, Unit::Bytes),
            3.0 * 1_048_576.0
        );
    }

    #[tokio::test]
    async fn reports_a_measured_rate_and_only_the_status_before_one() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "measured",
            &[
                ("dirtyrate.calc_status", TypedValue::Int(2)),
                ("dirtyrate.calc_start_time", TypedValue::LLong(1234)),
                ("dirtyrate.calc_period", TypedValue::Int(1)),
                (
                    "dirtyrate.calc_mode",
                    TypedValue::String("dirty-ring".into()),
                ),
                ("dirtyrate.megabytes_per_second", TypedValue::LLong(12)),
                (
                    "dirtyrate.vcpu.0.megabytes_per_second",
                    TypedValue::ULLong(5),
                ),
                (
                    "dirtyrate.vcpu.1.megabytes_per_second",
                    TypedValue::ULLong(7),
                ),
            ],
        );
        hv.put_domain(
            "u2",
            "never-calculated",
            &[
                ("dirtyrate.calc_status", TypedValue::Int(0)),
                ("dirtyrate.calc_start_time", TypedValue::LLong(0)),
                ("dirtyrate.calc_period", TypedValue::Int(0)),
                (
                    "dirtyrate.calc_mode",
                    TypedValue::String("page-sampling".into()),
                ),
            ],
        );
        hv.put_domain("u3", "shut-off", &[("state.state", TypedValue::Int(5))]);
        let dyn_hv: Arc<dyn Hypervisor> = hv;
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::DIRTYRATE,
            Instant::now() + Duration::from_secs(1),
        );
        let out = DirtyRateCollector.collect(&cx).await.unwrap();
        let find = |d: usize, m: u16, label: Option<&str>| {
            out.domains[d]
                .samples
                .iter()
                .find(|s| s.metric == m && label.is_none_or(|l| s.labels[0].as_ref() == l))
                .map(|s| s.value)
        };
        assert_eq!(find(0, CALC_STATUS, Some("dirty-ring")), Some(2.0));
        assert_eq!(find(0, RATE, None), Some(12.0));
        assert_eq!(find(0, VCPU_RATE, Some("1")), Some(7.0));
        assert_eq!(find(0, CALC_START, None), Some(1234.0));
        assert_eq!(find(1, CALC_STATUS, Some("page-sampling")), Some(0.0));
        assert_eq!(find(1, RATE, None), None, "no rate before a calculation");
        assert!(out.domains[2].samples.is_empty());
    }
}
