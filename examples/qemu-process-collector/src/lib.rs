//! An example third-party collector: for every running domain, figures about its QEMU
//! process read from `/proc` — threads, open file descriptors, resident memory and CPU
//! time of the whole process (vCPUs, I/O threads and emulator together).
//!
//! It uses the tick's shared statistics only to learn which domains run (no extra
//! libvirt call) and finds each QEMU process from libvirt's pid file
//! (`<pid_dir>/<domain name>.pid`). Its metrics reach every sink — REST JSON under
//! `qemu`, Prometheus, StatsD — from the declarations below, with no sink change.

use std::path::PathBuf;

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin,
    DomainSamples, MetricDesc, Registry, Sample, StatsGroups, Unit,
};

const THREADS: u16 = 0;
const FDS: u16 = 1;
const RSS: u16 = 2;
const CPU: u16 = 3;

const METRICS: &[MetricDesc] = &[
    MetricDesc::gauge(
        "vm_qemu_threads",
        "Threads of the domain's QEMU process",
        Unit::Count,
    )
    .json("qemu.threads", Unit::Count)
    .statsd("qemu.threads", Unit::Count)
    .source("/proc/<pid>/stat num_threads", "any"),
    MetricDesc::gauge(
        "vm_qemu_open_fds",
        "Open file descriptors of the domain's QEMU process",
        Unit::Count,
    )
    .json("qemu.open_fds", Unit::Count)
    .statsd("qemu.open_fds", Unit::Count)
    .source("/proc/<pid>/fd", "any"),
    MetricDesc::gauge(
        "vm_qemu_resident_memory_bytes",
        "Resident memory of the domain's QEMU process",
        Unit::Bytes,
    )
    .json("qemu.rss_bytes", Unit::Bytes)
    .statsd("qemu.rss.bytes", Unit::Bytes)
    .source("/proc/<pid>/statm resident", "any"),
    MetricDesc::counter(
        "vm_qemu_cpu_seconds_total",
        "CPU time of the domain's QEMU process (all threads)",
        Unit::Seconds,
    )
    .json("qemu.cpu_seconds", Unit::Seconds)
    .statsd("qemu.cpu.seconds", Unit::Seconds)
    .source("/proc/<pid>/stat utime+stime", "any"),
];

/// Options: `pid_dir` (where libvirt writes `<name>.pid`) and `proc` (the /proc root).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuProcessOptions {
    pub pid_dir: PathBuf,
    pub proc: PathBuf,
}

impl Default for QemuProcessOptions {
    fn default() -> Self {
        Self {
            pid_dir: "/var/run/libvirt/qemu".into(),
            proc: "/proc".into(),
        }
    }
}

pub struct QemuProcessCollector {
    options: QemuProcessOptions,
}

/// Registers the `qemu_process` collector type.
pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "qemu_process",
        "Per-VM QEMU process figures from /proc",
        |o: QemuProcessOptions, _cx| {
            Ok(CollectorPlugin::polled(QemuProcessCollector { options: o }))
        },
    );
}

/// Figures of one process; `None` for what could not be read.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub threads: Option<f64>,
    pub open_fds: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub cpu_seconds: Option<f64>,
}

/// Parses `/proc/<pid>/stat`: fields after the `(comm)` — which may hold spaces and
/// parentheses — so split at the last `)`.
fn parse_stat(stat: &str, ticks_per_second: f64) -> (Option<f64>, Option<f64>) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (None, None);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15, num_threads 20.
    let num = |field: usize| fields.get(field - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = match (num(14), num(15)) {
        (Some(u), Some(s)) => Some((u + s) / ticks_per_second),
        _ => None,
    };
    (num(20), cpu)
}

impl QemuProcessCollector {
    fn read(&self, name: &str) -> Option<ProcessFigures> {
        let pid_file = self.options.pid_dir.join(format!("{name}.pid"));
        let pid: u32 = std::fs::read_to_string(pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let dir = self.options.proc.join(pid.to_string());
        let (threads, cpu_seconds) = std::fs::read_to_string(dir.join("stat"))
            .map(|s| parse_stat(&s, 100.0))
            .unwrap_or((None, None));
        let open_fds = std::fs::read_dir(dir.join("fd"))
            .ok()
            .map(|d| d.count() as f64);
        let rss_bytes = std::fs::read_to_string(dir.join("statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map(|pages| pages * 4096.0);
        Some(ProcessFigures {
            threads,
            open_fds,
            rss_bytes,
            cpu_seconds,
        })
    }
}

#[async_trait]
impl Collector for QemuProcessCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        // Only to know the running domains: shared with the other collectors' call.
        StatsGroups::STATE
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        let stats = cx.domain_stats().await?;
        let mut out = Collected::default();
        for domain in stats.iter() {
            let mut ds = DomainSamples::new(domain.domain.clone());
            match self.read(&domain.domain.name) {
                Some(f) => {
                    for (metric, value) in [
                        (THREADS, f.threads),
                        (FDS, f.open_fds),
                        (RSS, f.rss_bytes),
                        (CPU, f.cpu_seconds),
                    ] {
                        if let Some(v) = value {
                            ds.samples.push(Sample::new(metric, v));
                        }
                    }
                }
                None => ds.errors.push("no QEMU pid file or process".into()),
            }
            out.domains.push(ds);
        }
        Ok(out)
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
        for m in METRICS {
            m.validate().unwrap();
        }
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat =
            "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 100 0";
        let (threads, cpu) = parse_stat(stat, 100.0);
        assert_eq!(threads, Some(7.0));
        assert_eq!(cpu, Some(3.0));
        assert_eq!(parse_stat("garbage", 100.0), (None, None));
    }

    #[tokio::test]
    async fn reads_a_fake_proc_tree() {
        let root = std::env::temp_dir().join(format!("qpc-test-{}", std::process::id()));
        let (pids, proc_dir) = (root.join("pids"), root.join("proc"));
        std::fs::create_dir_all(proc_dir.join("42/fd")).unwrap();
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::write(pids.join("vm1.pid"), "42\n").unwrap();
        std::fs::write(
            proc_dir.join("42/stat"),
            "42 (qemu) S 1 1 1 0 -1 0 0 0 0 0 100 100 0 0 20 0 5 0 1 0",
        )
        .unwrap();
        std::fs::write(proc_dir.join("42/statm"), "1000 256 0 0 0 0 0").unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(proc_dir.join("42/fd").join(fd), "").unwrap();
        }
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain("u1", "vm1", &[("state.state", TypedValue::Int(1))]);
        hv.put_domain("u2", "vm2", &[("state.state", TypedValue::Int(1))]);
        let dyn_hv: Arc<dyn Hypervisor> = hv;
        let c = QemuProcessCollector {
            options: QemuProcessOptions {
                pid_dir: pids,
                proc: proc_dir,
            },
        };
        let cx = CollectContext::new(
            dyn_hv,
            c.stats_groups(),
            Instant::now() + Duration::from_secs(1),
        );
        let out = c.collect(&cx).await.unwrap();
        let vm1 = &out.domains[0];
        let v = |m: u16| vm1.samples.iter().find(|s| s.metric == m).map(|s| s.value);
        assert_eq!(v(THREADS), Some(5.0));
        assert_eq!(v(FDS), Some(3.0));
        assert_eq!(v(RSS), Some(256.0 * 4096.0));
        assert_eq!(v(CPU), Some(2.0));
        assert!(
            out.domains[1].samples.is_empty() && !out.domains[1].errors.is_empty(),
            "vm2 has no pid file"
        );
        let _ = std::fs::remove_dir_all(root);
    }
}
