//! The `block` collector: per disk target, read/write/flush requests, bytes and times,
//! capacity, allocation and physical size, and errors — from libvirt's `block`
//! statistics group. A disk without media or statistics is reported with what it has.

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin, MetricDesc,
    Registry, Sample, StatsGroups, TypedValue, Unit,
};

use crate::devices::{device_labels, interned_pair};
use crate::params::{for_each_domain, push_field};

const D: &[&str] = &["device"];

/// (key suffix after `block.N.`, metric) in declaration order; the last metric is info.
const KEYS: &[&str] = &[
    "rd.reqs",
    "rd.bytes",
    "rd.times",
    "wr.reqs",
    "wr.bytes",
    "wr.times",
    "fl.reqs",
    "fl.times",
    "capacity",
    "allocation",
    "physical",
    "errors",
];
const INFO: u16 = 12;

pub const METRICS: &[MetricDesc] = &[
    MetricDesc::counter(
        "vm_disk_read_requests_total",
        "Cumulative count of disk read requests",
        Unit::Count,
    )
    .labels(D)
    .json("diskio[name=device].rd_reqs", Unit::Count)
    .statsd("disk.read.requests.total", Unit::Count)
    .source("block.<n>.rd.reqs", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_read_bytes_total",
        "Cumulative count of disk reads in bytes",
        Unit::Bytes,
    )
    .labels(D)
    .json("diskio[name=device].rd_bytes", Unit::Bytes)
    .statsd("disk.read.bytes.total", Unit::Bytes)
    .source("block.<n>.rd.bytes", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_read_time_seconds_total",
        "Total time spent on disk reads",
        Unit::Nanoseconds,
    )
    .labels(D)
    .json("diskio[name=device].rd_times", Unit::Nanoseconds)
    .statsd("disk.read.time.total", Unit::Milliseconds)
    .source("block.<n>.rd.times", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_write_requests_total",
        "Cumulative count of disk write requests",
        Unit::Count,
    )
    .labels(D)
    .json("diskio[name=device].wr_reqs", Unit::Count)
    .statsd("disk.write.requests.total", Unit::Count)
    .source("block.<n>.wr.reqs", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_write_bytes_total",
        "Cumulative count of disk writes in bytes",
        Unit::Bytes,
    )
    .labels(D)
    .json("diskio[name=device].wr_bytes", Unit::Bytes)
    .statsd("disk.write.bytes.total", Unit::Bytes)
    .source("block.<n>.wr.bytes", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_write_time_seconds_total",
        "Total time spent on disk writes",
        Unit::Nanoseconds,
    )
    .labels(D)
    .json("diskio[name=device].wr_times", Unit::Nanoseconds)
    .statsd("disk.write.time.total", Unit::Milliseconds)
    .source("block.<n>.wr.times", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_flush_requests_total",
        "Cumulative count of disk flush requests",
        Unit::Count,
    )
    .labels(D)
    .json("diskio[name=device].fl_reqs", Unit::Count)
    .statsd("disk.flush.requests.total", Unit::Count)
    .source("block.<n>.fl.reqs", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_flush_time_seconds_total",
        "Total time spent on disk flushes",
        Unit::Nanoseconds,
    )
    .labels(D)
    .json("diskio[name=device].fl_times", Unit::Nanoseconds)
    .statsd("disk.flush.time.total", Unit::Milliseconds)
    .source("block.<n>.fl.times", "1.2.9"),
    MetricDesc::gauge(
        "vm_disk_capacity_bytes",
        "Logical size of the disk as the guest sees it",
        Unit::Bytes,
    )
    .labels(D)
    .json("diskio[name=device].capacity", Unit::Bytes)
    .statsd("disk.capacity.bytes", Unit::Bytes)
    .source("block.<n>.capacity", "1.2.9"),
    MetricDesc::gauge(
        "vm_disk_allocation_bytes",
        "Host storage allocated to the disk (highest written offset for qcow2)",
        Unit::Bytes,
    )
    .labels(D)
    .json("diskio[name=device].allocation", Unit::Bytes)
    .statsd("disk.allocation.bytes", Unit::Bytes)
    .source("block.<n>.allocation", "1.2.9"),
    MetricDesc::gauge(
        "vm_disk_physical_bytes",
        "Host storage the disk's image occupies",
        Unit::Bytes,
    )
    .labels(D)
    .json("diskio[name=device].physical", Unit::Bytes)
    .statsd("disk.physical.bytes", Unit::Bytes)
    .source("block.<n>.physical", "1.2.9"),
    MetricDesc::counter(
        "vm_disk_errors_total",
        "I/O errors reported for the disk (Xen only)",
        Unit::Count,
    )
    .labels(D)
    .json("diskio[name=device].errors", Unit::Count)
    .statsd("disk.errors.total", Unit::Count)
    .source("block.<n>.errors", "1.2.9"),
    MetricDesc::gauge(
        "vm_disk_info",
        "Disk identity: target device and the host path of its source (value 1)",
        Unit::None,
    )
    .labels(&["device", "path"])
    .source("block.<n>.name, block.<n>.path", "1.2.9"),
];

/// Options of the `block` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockOptions {}

pub struct BlockCollector;

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "block",
        "Per-disk I/O, sizes and errors",
        |_o: BlockOptions, _cx| Ok(CollectorPlugin::polled(BlockCollector)),
    );
}

#[async_trait]
impl Collector for BlockCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::BLOCK
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        for_each_domain(cx, |domain, samples| {
            for (labels, disk) in device_labels(domain, "block") {
                for (i, suffix) in KEYS.iter().enumerate() {
                    push_field(samples, &disk, suffix, i as u16, &labels);
                }
                let path = disk.get("path").and_then(TypedValue::as_str);
                let info = interned_pair(&labels[0], path.unwrap_or(""));
                samples.push(Sample::labelled(INFO, info, 1.0));
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
        assert_eq!(KEYS.len() + 1, METRICS.len());
        for (i, m) in METRICS.iter().enumerate() {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
            if let Some(k) = KEYS.get(i) {
                assert!(m.source.ends_with(k), "{} vs {k}", m.source);
            }
        }
    }

    #[tokio::test]
    async fn reports_disks_including_a_cdrom_without_media() {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("block.count", TypedValue::UInt(2)),
                ("block.0.name", TypedValue::String("vda".into())),
                (
                    "block.0.path",
                    TypedValue::String("/var/lib/x.qcow2".into()),
                ),
                ("block.0.rd.bytes", TypedValue::ULLong(4096)),
                ("block.0.wr.times", TypedValue::ULLong(3_000_000)),
                ("block.0.capacity", TypedValue::ULLong(67_108_864)),
                ("block.1.name", TypedValue::String("hdc".into())),
            ],
        );
        let dyn_hv: Arc<dyn Hypervisor> = hv;
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::BLOCK,
            Instant::now() + Duration::from_secs(1),
        );
        let out = BlockCollector.collect(&cx).await.unwrap();
        let s = &out.domains[0].samples;
        let find = |m: u16, dev: &str| {
            s.iter()
                .find(|x| x.metric == m && &*x.labels[0] == dev)
                .map(|x| x.value)
        };
        assert_eq!(find(1, "vda"), Some(4096.0));
        assert_eq!(find(5, "vda"), Some(3e6));
        assert_eq!(find(8, "vda"), Some(67_108_864.0));
        assert_eq!(find(1, "hdc"), None);
        let info: Vec<_> = s
            .iter()
            .filter(|x| x.metric == INFO)
            .map(|x| (x.labels[0].to_string(), x.labels[1].to_string()))
            .collect();
        assert_eq!(
            info,
            vec![
                ("vda".into(), "/var/lib/x.qcow2".into()),
                ("hdc".into(), String::new())
            ]
        );
    }
}
