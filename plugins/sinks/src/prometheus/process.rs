//! The usual `process_*` families (as every Prometheus client library exports them),
//! read from `/proc/self`: CPU seconds, resident and virtual memory, start time, open
//! and maximum file descriptors. A figure that cannot be read is left out.

use std::sync::OnceLock;

use vadvisor_api::MetricKind;

use super::emit::Emit;

/// Clock ticks per second of `/proc` times (USER_HZ; 100 on every Linux ABI, as the
/// Go client's procfs assumes too).
const USER_HZ: f64 = 100.0;

/// One reading of the process figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self`.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        let (cpu_seconds, start_ticks) = stat.as_deref().map(parse_stat).unwrap_or_default();
        let kib = |key| {
            status
                .as_deref()
                .and_then(|s| status_kib(s, key))
                .map(|k| k * 1024.0)
        };
        Self {
            cpu_seconds,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            start_time_seconds: start_ticks.and_then(|t| boot_time().map(|b| b + t / USER_HZ)),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as f64),
            max_fds: limits.as_deref().and_then(max_open_files),
        }
    }

    pub fn render(&self, enc: &mut impl Emit) {
        let families: [(&'static str, &'static str, MetricKind, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                MetricKind::Counter,
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricKind::Gauge,
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricKind::Gauge,
                self.virtual_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                MetricKind::Gauge,
                self.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                MetricKind::Gauge,
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                MetricKind::Gauge,
                self.max_fds,
            ),
        ];
        for (name, help, kind, value) in families {
            if let Some(v) = value {
                enc.family(name, help, kind);
                enc.sample(name, &[], v);
            }
        }
    }
}

/// `(utime + stime in seconds, starttime in ticks)` from `/proc/self/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> (Option<f64>, Option<f64>) {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (None, None);
    };
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let cpu = match (num(14), num(15)) {
        (Some(u), Some(s)) => Some((u + s) / USER_HZ),
        _ => None,
    };
    (cpu, num(22))
}

/// A `Key:   123 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse().ok(),
    }
}

/// The system boot time (`btime` of `/proc/stat`), read once.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (va dv) isor)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 5000 123456789 800 18446744073709551615";
        assert_eq!(parse_stat(stat), (Some(3.0), Some(5000.0)));
        assert_eq!(parse_stat("garbage"), (None, None));
        assert_eq!(
            status_kib("Name:\tx\nVmSize:\t  2048 kB\nVmRSS:\t 100 kB\n", "VmRSS:"),
            Some(100.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.virtual_bytes.is_some_and(|v| v > 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|v| v > 0.0), "{p:?}");
        assert!(p.open_fds.is_some_and(|v| v >= 3.0), "{p:?}");
        assert!(p.max_fds.is_some(), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds
                .is_some_and(|t| t > now - 86400.0 * 365.0 && t <= now + 1.0),
            "{p:?}"
        );
    }
}
