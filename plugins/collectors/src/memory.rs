//! The `memory` collector: balloon size and maximum, and the guest memory statistics the
//! balloon driver reports (unused, available, usable, rss, swap, faults, caches, …) —
//! from libvirt's `balloon` statistics group. Values libvirt gives in KiB are declared
//! in KiB: Prometheus gets bytes, the REST JSON keeps vAdvisor's KiB.

use serde::Deserialize;
use vadvisor_api::metric::Alias;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, Labels,
    MetricDesc, Registry, StatsGroups, Unit,
};

use crate::params::{for_each_domain, push};

/// (libvirt key, metric) pairs, in declaration order.
const KEYS: &[&str] = &[
    "balloon.current",
    "balloon.maximum",
    "balloon.swap_in",
    "balloon.swap_out",
    "balloon.major_fault",
    "balloon.minor_fault",
    "balloon.unused",
    "balloon.available",
    "balloon.usable",
    "balloon.rss",
    "balloon.disk_caches",
    "balloon.last-update",
    "balloon.hugetlb_pgalloc",
    "balloon.hugetlb_pgfail",
];

/// The metrics of the `memory` collector, in the order of `KEYS`.
pub const METRICS: &[MetricDesc] = &[
    MetricDesc::gauge(
        "vm_memory_actual_balloon_bytes",
        "Current balloon size: memory the guest has",
        Unit::Kibibytes,
    )
    .json("memory.actual", Unit::Kibibytes)
    .json_also("balloon.current")
    .statsd("memory.bytes", Unit::Bytes)
    .aliases(&[Alias {
        name: "vm_memory_bytes",
        help: "VM Memory in bytes",
        unit: Unit::Bytes,
        labels: &[],
    }])
    .source("balloon.current", "1.2.9"),
    MetricDesc::gauge(
        "vm_memory_maximum_bytes",
        "Maximum memory the balloon may give the guest",
        Unit::Kibibytes,
    )
    .json("balloon.maximum", Unit::Kibibytes)
    .statsd("memory.maximum.bytes", Unit::Bytes)
    .source("balloon.maximum", "1.2.9"),
    MetricDesc::counter(
        "vm_memory_swap_in_bytes_total",
        "Memory the guest swapped in",
        Unit::Kibibytes,
    )
    .json("memory.swap_in", Unit::Kibibytes)
    .statsd("memory.swap.in.bytes", Unit::Bytes)
    .source("balloon.swap_in", "1.2.9"),
    MetricDesc::counter(
        "vm_memory_swap_out_bytes_total",
        "Memory the guest swapped out",
        Unit::Kibibytes,
    )
    .json("memory.swap_out", Unit::Kibibytes)
    .statsd("memory.swap.out.bytes", Unit::Bytes)
    .source("balloon.swap_out", "1.2.9"),
    MetricDesc::counter(
        "vm_memory_major_faults_total",
        "Page faults in the guest that needed disk I/O",
        Unit::Count,
    )
    .json("memory.major_fault", Unit::Count)
    .statsd("memory.major.faults", Unit::Count)
    .source("balloon.major_fault", "1.2.9"),
    MetricDesc::counter(
        "vm_memory_minor_faults_total",
        "Page faults in the guest served without disk I/O",
        Unit::Count,
    )
    .json("memory.minor_fault", Unit::Count)
    .statsd("memory.minor.faults", Unit::Count)
    .source("balloon.minor_fault", "1.2.9"),
    MetricDesc::gauge(
        "vm_memory_unused_bytes",
        "Memory left completely unused by the guest",
        Unit::Kibibytes,
    )
    .json("memory.unused", Unit::Kibibytes)
    .statsd("memory.unused.bytes", Unit::Bytes)
    .source("balloon.unused", "1.2.9"),
    MetricDesc::gauge(
        "vm_memory_available_bytes",
        "Memory the guest sees as usable in total",
        Unit::Kibibytes,
    )
    .json("memory.available", Unit::Kibibytes)
    .statsd("memory.available.bytes", Unit::Bytes)
    .source("balloon.available", "1.2.9"),
    MetricDesc::gauge(
        "vm_memory_usable_bytes",
        "Memory the guest could use without swapping",
        Unit::Kibibytes,
    )
    .json("memory.usable", Unit::Kibibytes)
    .statsd("memory.usable.bytes", Unit::Bytes)
    .source("balloon.usable", "2.1.0"),
    MetricDesc::gauge(
        "vm_memory_rss_bytes",
        "Resident set size of the QEMU process on the host",
        Unit::Kibibytes,
    )
    .json("memory.rss", Unit::Kibibytes)
    .statsd("memory.rss.bytes", Unit::Bytes)
    .source("balloon.rss", "1.2.9"),
    MetricDesc::gauge(
        "vm_memory_disk_caches_bytes",
        "Guest memory used by caches that can be reclaimed",
        Unit::Kibibytes,
    )
    .json("memory.disk_caches", Unit::Kibibytes)
    .statsd("memory.disk.caches.bytes", Unit::Bytes)
    .source("balloon.disk_caches", "4.6.0"),
    MetricDesc::gauge(
        "vm_memory_stats_last_update_timestamp_seconds",
        "When the guest last updated its memory statistics",
        Unit::Seconds,
    )
    .json("memory.last_update", Unit::Seconds)
    .source("balloon.last-update", "2.1.0"),
    MetricDesc::counter(
        "vm_memory_hugetlb_pgalloc_total",
        "Successful huge page allocations in the guest",
        Unit::Count,
    )
    .json("memory.hugetlb_pgalloc", Unit::Count)
    .statsd("memory.hugetlb.pgalloc", Unit::Count)
    .source("balloon.hugetlb_pgalloc", "5.4.0"),
    MetricDesc::counter(
        "vm_memory_hugetlb_pgfail_total",
        "Failed huge page allocations in the guest",
        Unit::Count,
    )
    .json("memory.hugetlb_pgfail", Unit::Count)
    .statsd("memory.hugetlb.pgfail", Unit::Count)
    .source("balloon.hugetlb_pgfail", "5.4.0"),
];

/// Options of the `memory` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryOptions {}

pub struct MemoryCollector;

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "memory",
        "Balloon and guest memory statistics",
        |_o: MemoryOptions, _cx| Ok(CollectorPlugin::polled(MemoryCollector)),
    );
}

#[async_trait]
impl Collector for MemoryCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::BALLOON
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        for_each_domain(cx, |domain, samples| {
            for (i, key) in KEYS.iter().enumerate() {
                push(samples, domain, key, i as u16, &Labels::NONE);
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use vadvisor_api::{FakeHypervisor, Hypervisor, TypedValue};

    #[test]
    fn declarations_are_valid_and_match_keys() {
        assert_eq!(KEYS.len(), METRICS.len());
        for (k, m) in KEYS.iter().zip(METRICS) {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(*k, m.source, "{}", m.name);
        }
    }

    #[tokio::test]
    async fn reports_what_the_balloon_has() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("balloon.current", TypedValue::ULLong(1_048_576)),
                ("balloon.maximum", TypedValue::ULLong(2_097_152)),
                ("balloon.rss", TypedValue::ULLong(512_000)),
                ("balloon.usable", TypedValue::ULLong(700_000)),
            ],
        );
        hv.put_domain("u2", "no-balloon", &[("state.state", TypedValue::Int(1))]);
        let dyn_hv: Arc<dyn Hypervisor> = hv;
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::BALLOON,
            Instant::now() + Duration::from_secs(1),
        );
        let out = MemoryCollector.collect(&cx).await.unwrap();
        let one = &out.domains[0];
        let v = |m: u16| one.samples.iter().find(|s| s.metric == m).map(|s| s.value);
        assert_eq!(v(0), Some(1_048_576.0));
        assert_eq!(v(9), Some(512_000.0));
        assert_eq!(v(8), Some(700_000.0));
        assert_eq!(v(6), None, "absent stats are omitted, not zero");
        assert!(out.domains[1].samples.is_empty());
        // Prometheus gets bytes from the declared unit.
        assert_eq!(METRICS[0].unit.convert(1.0, Unit::Bytes), 1024.0);
    }
}
