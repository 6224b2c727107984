//! The `cpu` collector: domain CPU time (total, user, system) and, per vCPU, time,
//! state, wait and delay, plus current and maximum vCPU counts — from libvirt's
//! `cpu-total` and `vcpu` statistics groups.

use serde::Deserialize;
use vadvisor_api::metric::Alias;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, Labels,
    MetricDesc, Registry, StatsGroups, Unit,
};

use crate::params::{for_each_domain, index_labels, push, push_field};

const VCPU_STATES: &[&str] = &["Offline", "Running", "Blocked"];

pub const CPU_TIME: u16 = 0;
pub const CPU_USER: u16 = 1;
pub const CPU_SYSTEM: u16 = 2;
pub const VCPU_TIME: u16 = 3;
pub const VCPU_STATE: u16 = 4;
pub const VCPU_WAIT: u16 = 5;
pub const VCPU_DELAY: u16 = 6;
pub const VCPUS_CURRENT: u16 = 7;
pub const VCPUS_MAXIMUM: u16 = 8;

/// The metrics of the `cpu` collector, indexed by the constants above.
pub const METRICS: &[MetricDesc] = &[
    MetricDesc::counter("vm_cpu_time_seconds_total", "CPU time used by the domain (all vCPUs and the hypervisor threads)", Unit::Nanoseconds)
        .json("cpu.usage.cpu_time", Unit::Milliseconds)
        .statsd("cpu.total", Unit::Milliseconds)
        .aliases(&[Alias { name: "vm_cpu_milliseconds_total", help: "Overall VM CPU time in milliseconds", unit: Unit::Milliseconds, labels: &[] }])
        .source("cpu.time", "1.2.9"),
    MetricDesc::counter("vm_cpu_user_time_seconds_total", "CPU time the domain spent in user mode", Unit::Nanoseconds)
        .json("cpu.usage.user_time", Unit::Milliseconds)
        .statsd("cpu.user.total", Unit::Milliseconds)
        .aliases(&[Alias { name: "vm_cpu_user_milliseconds_total", help: "Overall VM User CPU time in milliseconds", unit: Unit::Milliseconds, labels: &[] }])
        .source("cpu.user", "1.2.9"),
    MetricDesc::counter("vm_cpu_system_time_seconds_total", "CPU time the domain spent in kernel mode", Unit::Nanoseconds)
        .json("cpu.usage.system_time", Unit::Milliseconds)
        .statsd("cpu.system.total", Unit::Milliseconds)
        .aliases(&[Alias { name: "vm_cpu_system_milliseconds_total", help: "Overall VM System CPU time in milliseconds", unit: Unit::Milliseconds, labels: &[] }])
        .source("cpu.system", "1.2.9"),
    MetricDesc::counter("vm_vcpu_time_seconds_total", "Time the virtual CPU ran on a host CPU", Unit::Nanoseconds)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].vcpu_time", Unit::Milliseconds)
        .statsd("vcpu.total", Unit::Milliseconds)
        .aliases(&[Alias { name: "vm_vcpu_milliseconds_total", help: "Overall CPU time on the virtual CPU in milliseconds", unit: Unit::Milliseconds, labels: &["cpu"] }])
        .source("vcpu.<n>.time", "1.2.9"),
    MetricDesc::gauge("vm_vcpu_state", "State of the virtual CPU: 0 offline, 1 running, 2 blocked", Unit::None)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].state", Unit::None)
        .states(VCPU_STATES)
        .source("vcpu.<n>.state", "1.2.9"),
    MetricDesc::counter("vm_vcpu_wait_seconds_total", "Time the virtual CPU wanted to run but the host scheduler ran something else (needs schedstats)", Unit::Nanoseconds)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].wait_time", Unit::Milliseconds)
        .statsd("vcpu.wait.total", Unit::Milliseconds)
        .source("vcpu.<n>.wait", "1.3.2"),
    MetricDesc::counter("vm_vcpu_delay_seconds_total", "Time the virtual CPU waited in the host run queue (steal time seen by the guest)", Unit::Nanoseconds)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].delay_time", Unit::Milliseconds)
        .statsd("vcpu.delay.total", Unit::Milliseconds)
        .source("vcpu.<n>.delay", "7.2.0"),
    MetricDesc::gauge("vm_vcpus_current", "Number of virtual CPUs currently online", Unit::Count)
        .json("cpu.vcpus.current", Unit::Count)
        .statsd("vcpus.current", Unit::Count)
        .source("vcpu.current", "1.2.9"),
    MetricDesc::gauge("vm_vcpus_maximum", "Maximum number of virtual CPUs", Unit::Count)
        .json("cpu.vcpus.maximum", Unit::Count)
        .statsd("vcpus.maximum", Unit::Count)
        .source("vcpu.maximum", "1.2.9"),
];

/// Options of the `cpu` collector.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuOptions {
    /// Report per-vCPU series (time, state, wait, delay).
    pub per_vcpu: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self { per_vcpu: true }
    }
}

pub struct CpuCollector {
    options: CpuOptions,
}

impl CpuCollector {
    pub fn new(options: CpuOptions) -> Self {
        Self { options }
    }
}

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "cpu",
        "Domain and per-vCPU CPU time and state",
        |o: CpuOptions, _cx| Ok(CollectorPlugin::polled(CpuCollector::new(o))),
    );
}

#[async_trait]
impl Collector for CpuCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        // `vcpu.current`/`vcpu.maximum` come from the vcpu group too.
        StatsGroups::CPU_TOTAL | StatsGroups::VCPU
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        for_each_domain(cx, |domain, s| {
            let none = &Labels::NONE;
            push(s, domain, "cpu.time", CPU_TIME, none);
            push(s, domain, "cpu.user", CPU_USER, none);
            push(s, domain, "cpu.system", CPU_SYSTEM, none);
            push(s, domain, "vcpu.current", VCPUS_CURRENT, none);
            push(s, domain, "vcpu.maximum", VCPUS_MAXIMUM, none);
            if self.options.per_vcpu {
                // Indices come from the keys present, so gaps (hot-unplugged vCPUs) are fine.
                for (n, vcpu) in domain.devices("vcpu") {
                    let labels = index_labels(n);
                    for (field, metric) in [
                        ("time", VCPU_TIME),
                        ("state", VCPU_STATE),
                        ("wait", VCPU_WAIT),
                        ("delay", VCPU_DELAY),
                    ] {
                        push_field(s, &vcpu, field, metric, &labels);
                    }
                }
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

    fn cx(hv: Arc<FakeHypervisor>, c: &CpuCollector) -> CollectContext {
        let hv: Arc<dyn Hypervisor> = hv;
        CollectContext::new(
            hv,
            c.stats_groups(),
            Instant::now() + Duration::from_secs(1),
        )
    }

    #[test]
    fn declarations_are_valid() {
        for m in METRICS {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[tokio::test]
    async fn reports_totals_and_non_contiguous_vcpus() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("state.state", TypedValue::Int(1)),
                ("state.reason", TypedValue::Int(1)),
                ("cpu.time", TypedValue::ULLong(3_000_000_000)),
                ("cpu.user", TypedValue::ULLong(1_000_000_000)),
                ("cpu.system", TypedValue::ULLong(500_000_000)),
                ("vcpu.current", TypedValue::UInt(2)),
                ("vcpu.maximum", TypedValue::UInt(4)),
                ("vcpu.0.state", TypedValue::Int(1)),
                ("vcpu.0.time", TypedValue::ULLong(10)),
                ("vcpu.3.state", TypedValue::Int(2)),
                ("vcpu.3.time", TypedValue::ULLong(20)),
                ("vcpu.3.wait", TypedValue::ULLong(7)),
            ],
        );
        // A domain that lacks everything but its state is reported with what it has.
        hv.put_domain("u2", "two", &[("state.state", TypedValue::Int(3))]);
        let c = CpuCollector::new(CpuOptions::default());
        let out = c.collect(&cx(hv, &c)).await.unwrap();
        assert_eq!(out.domains.len(), 2);
        let one = &out.domains[0];
        assert_eq!(one.state.map(|s| s.name()), Some("Running"));
        let find = |m: u16, label: Option<&str>| {
            one.samples
                .iter()
                .find(|s| s.metric == m && s.labels.first().map(|l| &**l) == label)
                .map(|s| s.value)
        };
        assert_eq!(find(CPU_TIME, None), Some(3e9));
        assert_eq!(find(CPU_SYSTEM, None), Some(5e8));
        assert_eq!(find(VCPU_TIME, Some("3")), Some(20.0));
        assert_eq!(find(VCPU_STATE, Some("3")), Some(2.0));
        assert_eq!(find(VCPU_WAIT, Some("3")), Some(7.0));
        assert_eq!(find(VCPU_WAIT, Some("0")), None);
        assert_eq!(find(VCPUS_MAXIMUM, None), Some(4.0));
        let two = &out.domains[1];
        assert_eq!(two.state.map(|s| s.name()), Some("Paused"));
        assert!(two.samples.is_empty());
    }

    #[tokio::test]
    async fn per_vcpu_can_be_switched_off() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("cpu.time", TypedValue::ULLong(1)),
                ("vcpu.0.time", TypedValue::ULLong(1)),
            ],
        );
        let c = CpuCollector::new(CpuOptions { per_vcpu: false });
        let out = c.collect(&cx(hv, &c)).await.unwrap();
        assert!(out.domains[0].samples.iter().all(|s| s.metric != VCPU_TIME));
    }

    #[tokio::test]
    async fn hypervisor_errors_fail_the_run() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.set_down(Some("libvirtd not running"));
        let c = CpuCollector::new(CpuOptions::default());
        assert!(c.collect(&cx(hv, &c)).await.is_err());
    }
}
