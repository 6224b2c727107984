//! The `net` collector: per interface, received and transmitted bytes, packets, errors
//! and drops — from libvirt's `interface` statistics group. `tx_dropped` comes from
//! `tx.drop` (vAdvisor reported `rx.drop` there).

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, MetricDesc,
    Registry, StatsGroups, Unit,
};

use crate::devices::device_labels;
use crate::params::{for_each_domain, push_field};

const I: &[&str] = &["interface"];

const KEYS: &[&str] = &[
    "rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes", "tx.pkts", "tx.errs", "tx.drop",
];

pub const METRICS: &[MetricDesc] = &[
    MetricDesc::counter(
        "vm_network_receive_bytes_total",
        "Cumulative count of bytes received",
        Unit::Bytes,
    )
    .labels(I)
    .json("network.interfaces[name=interface].rx_bytes", Unit::Bytes)
    .statsd("network.receive.bytes.total", Unit::Bytes)
    .source("net.<n>.rx.bytes", "1.2.9"),
    MetricDesc::counter(
        "vm_network_receive_packets_total",
        "Cumulative count of packets received",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].rx_packets", Unit::Count)
    .statsd("network.receive.packets.total", Unit::Count)
    .source("net.<n>.rx.pkts", "1.2.9"),
    MetricDesc::counter(
        "vm_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].rx_errors", Unit::Count)
    .statsd("network.receive.errors.total", Unit::Count)
    .source("net.<n>.rx.errs", "1.2.9"),
    MetricDesc::counter(
        "vm_network_receive_dropped_packets_total",
        "Cumulative count of packets dropped while receiving",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].rx_dropped", Unit::Count)
    .statsd("network.receive.dropped.packets.total", Unit::Count)
    .source("net.<n>.rx.drop", "1.2.9"),
    MetricDesc::counter(
        "vm_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        Unit::Bytes,
    )
    .labels(I)
    .json("network.interfaces[name=interface].tx_bytes", Unit::Bytes)
    .statsd("network.transmit.bytes.total", Unit::Bytes)
    .source("net.<n>.tx.bytes", "1.2.9"),
    MetricDesc::counter(
        "vm_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].tx_packets", Unit::Count)
    .statsd("network.transmit.packets.total", Unit::Count)
    .source("net.<n>.tx.pkts", "1.2.9"),
    MetricDesc::counter(
        "vm_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].tx_errors", Unit::Count)
    .statsd("network.transmit.errors.total", Unit::Count)
    .source("net.<n>.tx.errs", "1.2.9"),
    MetricDesc::counter(
        "vm_network_transmit_dropped_packets_total",
        "Cumulative count of packets dropped while transmitting",
        Unit::Count,
    )
    .labels(I)
    .json("network.interfaces[name=interface].tx_dropped", Unit::Count)
    .statsd("network.transmit.dropped.packets.total", Unit::Count)
    .source("net.<n>.tx.drop", "1.2.9"),
];

/// Options of the `net` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetOptions {}

pub struct NetCollector;

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "net",
        "Per-interface traffic, errors and drops",
        |_o: NetOptions, _cx| Ok(CollectorPlugin::polled(NetCollector)),
    );
}

#[async_trait]
impl Collector for NetCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::INTERFACE
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        for_each_domain(cx, |domain, samples| {
            for (labels, interface) in device_labels(domain, "net") {
                for (i, suffix) in KEYS.iter().enumerate() {
                    push_field(samples, &interface, suffix, i as u16, &labels);
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

    #[test]
    fn declarations_are_valid() {
        for (k, m) in KEYS.iter().zip(METRICS) {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
            assert!(m.source.ends_with(k));
        }
    }

    #[tokio::test]
    async fn transmit_drops_come_from_tx_drop() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("net.count", TypedValue::UInt(1)),
                ("net.0.name", TypedValue::String("vnet0".into())),
                ("net.0.rx.drop", TypedValue::ULLong(1)),
                ("net.0.tx.drop", TypedValue::ULLong(7)),
                ("net.0.tx.bytes", TypedValue::ULLong(2000)),
            ],
        );
        let dyn_hv: Arc<dyn Hypervisor> = hv;
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::INTERFACE,
            Instant::now() + Duration::from_secs(1),
        );
        let out = NetCollector.collect(&cx).await.unwrap();
        let s = &out.domains[0].samples;
        let v = |m: u16| s.iter().find(|x| x.metric == m).map(|x| x.value);
        assert_eq!(v(3), Some(1.0));
        assert_eq!(v(7), Some(7.0));
        assert_eq!(v(4), Some(2000.0));
        assert!(s.iter().all(|x| &*x.labels[0] == "vnet0"));
    }
}
