//! The host and job types of the [`crate::Hypervisor`] contract: the hypervisor host's
//! facts and counters (`virNodeGetInfo`, `virNodeGetCPUStats`, `virNodeGetMemoryStats`,
//! `virNodeGetFreeMemory`), the machine description behind `GET /api/v1.0/machine`, and
//! a domain's job progress (`virDomainGetJobStats`).

use std::collections::BTreeMap;

use crate::typed_value::TypedValue;

/// `virNodeInfo`: the host's processors and memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// CPU model (e.g. `x86_64`).
    pub model: String,
    /// Memory size in KiB.
    pub memory_kib: u64,
    /// Active logical CPUs.
    pub cpus: u32,
    /// Expected CPU frequency in MHz (0 if unknown).
    pub mhz: u32,
    /// NUMA cells (1 when the topology is unusual).
    pub nodes: u32,
    /// CPU sockets per NUMA cell.
    pub sockets: u32,
    /// Cores per socket.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

/// The host's figures at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStats {
    pub info: NodeInfo,
    /// `virNodeGetCPUStats` for all CPUs: `kernel`, `user`, `idle`, `iowait`, … in ns.
    pub cpu: BTreeMap<String, u64>,
    /// `virNodeGetMemoryStats` for all cells: `total`, `free`, `buffers`, `cached` in KiB.
    pub memory: BTreeMap<String, u64>,
    /// `virNodeGetFreeMemory`, in bytes.
    pub free_memory: Option<u64>,
}

/// The hypervisor host, described once (`GET /api/v1.0/machine`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    /// `virConnectGetHostname`.
    pub hostname: String,
    /// The host UUID of libvirt's capabilities (`host_uuid` in libvirtd.conf, else SMBIOS).
    pub host_uuid: Option<String>,
    /// `virConnectGetType` (e.g. `QEMU`).
    pub hypervisor: String,
    /// `virConnectGetVersion` as `major.minor.release`.
    pub hypervisor_version: String,
    /// `virConnectGetLibVersion` of the daemon, as `major.minor.release`.
    pub libvirt_version: String,
    pub info: NodeInfo,
}

/// Formats libvirt's `major * 1_000_000 + minor * 1_000 + release` version number.
pub fn version_string(v: u64) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

/// A domain's job as `virDomainGetJobStats` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStats {
    /// `virDomainJobType`: 0 none, 1 bounded, 2 unbounded, 3 completed, 4 failed,
    /// 5 cancelled.
    pub job_type: i32,
    /// The typed parameters: `operation`, `time_elapsed` (ms), `data_total` (bytes),
    /// `memory_dirty_rate` (pages/s), `memory_iteration`, `downtime` (ms), …
    pub params: BTreeMap<String, TypedValue>,
}

impl JobStats {
    /// `VIR_DOMAIN_JOB_NONE`: no job runs.
    pub const NONE: i32 = 0;

    pub fn f64(&self, key: &str) -> Option<f64> {
        self.params.get(key).and_then(TypedValue::as_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_like_libvirt_prints_them() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_022), "7.2.22");
    }
}
