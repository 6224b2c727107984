//! The `host` collector: the hypervisor host itself — logical CPUs, sockets, cores and
//! frequency (`virNodeGetInfo`), CPU time by mode (`virNodeGetCPUStats`), memory total,
//! free, buffers and cached (`virNodeGetMemoryStats`, `virNodeGetFreeMemory`) — and what
//! the active (running or paused) domains ask of it: vCPUs allocated, memory assigned
//! (current balloon) and configured maximum, from the tick's shared bulk statistics.
//! Overcommit is one division away, e.g. `host_vcpus_allocated / host_cpus`.

use std::sync::Arc;

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, MetricDesc,
    NodeStats, Registry, Sample, StatsGroups, Unit,
};

pub const METRICS: &[MetricDesc] = &[
    MetricDesc::gauge(
        "host_cpus",
        "Logical CPUs of the host (virNodeGetInfo cpus)",
        Unit::Count,
    )
    .statsd("cpus", Unit::Count)
    .source("virNodeGetInfo cpus", "0.1.0"),
    MetricDesc::gauge(
        "host_cpu_sockets",
        "CPU sockets of the host (all NUMA cells)",
        Unit::Count,
    )
    .statsd("cpu.sockets", Unit::Count)
    .source("virNodeGetInfo nodes*sockets", "0.1.0"),
    MetricDesc::gauge(
        "host_cpu_cores",
        "Physical CPU cores of the host (all NUMA cells)",
        Unit::Count,
    )
    .statsd("cpu.cores", Unit::Count)
    .source("virNodeGetInfo nodes*sockets*cores", "0.1.0"),
    MetricDesc::gauge(
        "host_cpu_frequency_hertz",
        "Expected CPU frequency (0 if unknown)",
        Unit::None,
    )
    .statsd("cpu.frequency.hertz", Unit::None)
    .source("virNodeGetInfo mhz", "0.1.0"),
    MetricDesc::counter(
        "host_cpu_seconds_total",
        "CPU time of the whole host by mode (kernel, user, idle, iowait)",
        Unit::Nanoseconds,
    )
    .labels(&["mode"])
    .statsd("cpu.time.total", Unit::Milliseconds)
    .source("virNodeGetCPUStats", "0.9.3"),
    MetricDesc::gauge(
        "host_memory_total_bytes",
        "Memory of the host",
        Unit::Kibibytes,
    )
    .statsd("memory.total.bytes", Unit::Bytes)
    .source("virNodeGetInfo memory", "0.1.0"),
    MetricDesc::gauge(
        "host_memory_free_bytes",
        "Free memory of the host",
        Unit::Bytes,
    )
    .statsd("memory.free.bytes", Unit::Bytes)
    .source("virNodeGetFreeMemory", "0.3.3"),
    MetricDesc::gauge(
        "host_memory_buffers_bytes",
        "Memory of the host used for buffers",
        Unit::Kibibytes,
    )
    .statsd("memory.buffers.bytes", Unit::Bytes)
    .source("virNodeGetMemoryStats buffers", "0.9.3"),
    MetricDesc::gauge(
        "host_memory_cached_bytes",
        "Memory of the host used as page cache",
        Unit::Kibibytes,
    )
    .statsd("memory.cached.bytes", Unit::Bytes)
    .source("virNodeGetMemoryStats cached", "0.9.3"),
    MetricDesc::gauge(
        "host_domains_active",
        "Domains running or paused on the host",
        Unit::Count,
    )
    .statsd("domains.active", Unit::Count)
    .source("state.state", "1.2.9"),
    MetricDesc::gauge(
        "host_vcpus_allocated",
        "Virtual CPUs online in the active domains",
        Unit::Count,
    )
    .statsd("vcpus.allocated", Unit::Count)
    .source("vcpu.current", "1.2.9"),
    MetricDesc::gauge(
        "host_memory_assigned_bytes",
        "Memory the active domains have now (current balloon)",
        Unit::Kibibytes,
    )
    .statsd("memory.assigned.bytes", Unit::Bytes)
    .source("balloon.current", "1.2.9"),
    MetricDesc::gauge(
        "host_memory_assigned_maximum_bytes",
        "Memory the active domains may grow to (configured maximum)",
        Unit::Kibibytes,
    )
    .statsd("memory.assigned.maximum.bytes", Unit::Bytes)
    .source("balloon.maximum", "1.2.9"),
];

/// Options of the `host` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostOptions {}

pub struct HostCollector;

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "host",
        "The hypervisor host: CPUs, CPU time, memory, and what the domains are given",
        |_o: HostOptions, _cx| Ok(CollectorPlugin::polled(HostCollector)),
    );
}

/// The samples of the node's own figures (metrics 0..=8).
fn node_samples(n: &NodeStats) -> Vec<Sample> {
    let i = &n.info;
    let cells = u64::from(i.nodes.max(1));
    let sockets = cells * u64::from(i.sockets);
    let mut out = vec![
        Sample::new(0, f64::from(i.cpus)),
        Sample::new(1, sockets as f64),
        Sample::new(2, (sockets * u64::from(i.cores)) as f64),
        Sample::new(3, f64::from(i.mhz) * 1e6),
    ];
    for (mode, ns) in &n.cpu {
        let mode: Arc<str> = mode.as_str().into();
        out.push(Sample::labelled(4, vec![mode], *ns as f64));
    }
    let total = n.memory.get("total").copied().unwrap_or(i.memory_kib);
    out.push(Sample::new(5, total as f64));
    let free = n
        .free_memory
        .or_else(|| n.memory.get("free").map(|kib| kib * 1024));
    if let Some(free) = free {
        out.push(Sample::new(6, free as f64));
    }
    for (key, metric) in [("buffers", 7), ("cached", 8)] {
        if let Some(v) = n.memory.get(key) {
            out.push(Sample::new(metric, *v as f64));
        }
    }
    out
}

#[async_trait]
impl Collector for HostCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::VCPU | StatsGroups::BALLOON
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        let (node, stats) = tokio::join!(cx.hypervisor().node_stats(), cx.domain_stats());
        let mut host = node_samples(&node?);
        let (mut active, mut vcpus, mut mem, mut max) = (0u64, 0.0, 0.0, 0.0);
        for d in stats?.iter() {
            // Running, blocked, paused, shutting down, crashed, suspended: not shut off.
            if d.state().is_some_and(|s| s.state != 5) {
                active += 1;
                vcpus += d.f64("vcpu.current").unwrap_or(0.0);
                mem += d.f64("balloon.current").unwrap_or(0.0);
                max += d.f64("balloon.maximum").unwrap_or(0.0);
            }
        }
        host.extend([
            Sample::new(9, active as f64),
            Sample::new(10, vcpus),
            Sample::new(11, mem),
            Sample::new(12, max),
        ]);
        Ok(Collected {
            domains: Vec::new(),
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};
    use vadvisor_api::{FakeHypervisor, Hypervisor, NodeInfo, TypedValue};

    #[test]
    fn declarations_are_valid() {
        for m in METRICS {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[tokio::test]
    async fn node_figures_and_what_active_domains_are_given() {
        let hv = Arc::new(FakeHypervisor::new());
        let node = NodeStats {
            info: NodeInfo {
                model: "x86_64".into(),
                memory_kib: 8 * 1024 * 1024,
                cpus: 8,
                mhz: 2400,
                nodes: 1,
                sockets: 2,
                cores: 2,
                threads: 2,
            },
            cpu: BTreeMap::from([("idle".to_string(), 5_000_000_000), ("user".to_string(), 7)]),
            memory: BTreeMap::from([
                ("total".to_string(), 8 * 1024 * 1024),
                ("cached".to_string(), 1024),
            ]),
            free_memory: Some(4096),
        };
        hv.set_node(Some(node), None);
        let dom = |vcpus: u32, kib: u64, state: i32| {
            vec![
                ("state.state", TypedValue::Int(state)),
                ("vcpu.current", TypedValue::UInt(vcpus)),
                ("balloon.current", TypedValue::ULLong(kib)),
                ("balloon.maximum", TypedValue::ULLong(kib * 2)),
            ]
        };
        hv.put_domain("a", "a", &dom(2, 1024, 1));
        hv.put_domain("b", "b", &dom(4, 2048, 3));
        hv.put_domain("c", "c", &dom(16, 4096, 5));
        let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
        let cx = CollectContext::new(
            dyn_hv,
            HostCollector.stats_groups(),
            Instant::now() + Duration::from_secs(1),
        );
        let out = HostCollector.collect(&cx).await.expect("collect");
        assert!(out.domains.is_empty());
        let v = |m: u16| out.host.iter().find(|s| s.metric == m).map(|s| s.value);
        assert_eq!(v(0), Some(8.0));
        assert_eq!(v(1), Some(2.0));
        assert_eq!(v(2), Some(4.0));
        assert_eq!(v(3), Some(2.4e9));
        assert_eq!(
            v(5),
            Some(8.0 * 1024.0 * 1024.0),
            "KiB, Prometheus renders bytes"
        );
        assert_eq!(v(6), Some(4096.0), "virNodeGetFreeMemory bytes");
        assert_eq!(v(7), None, "no buffers figure");
        assert_eq!(v(8), Some(1024.0));
        assert_eq!(v(9), Some(2.0), "running + paused; shut off not counted");
        assert_eq!(v(10), Some(6.0));
        assert_eq!(v(11), Some(3072.0));
        assert_eq!(v(12), Some(6144.0));
        let modes: Vec<&str> = out
            .host
            .iter()
            .filter(|s| s.metric == 4)
            .map(|s| &*s.labels[0])
            .collect();
        assert_eq!(modes, ["idle", "user"]);

        // No node statistics: the run fails (and says why), nothing half-made.
        hv.set_node(None, None);
        let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::NONE,
            Instant::now() + Duration::from_secs(1),
        );
        assert!(HostCollector.collect(&cx).await.is_err());
    }
}
