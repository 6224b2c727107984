//! The per-domain fallback: for every requested group a domain's bulk reply left empty
//! (the `test` driver fills only `state`; old or limited drivers miss others), the same
//! keys synthesised from per-domain calls (`virDomainGetInfo`, `virDomainMemoryStats`,
//! `virDomainGetVcpus`, `virDomainInterfaceStats`, `virDomainBlockStats`, …), run by
//! `per_domain` under the bulk call's lease and a deadline.

use std::sync::Arc;

use vadvisor_api::{DomainRef, DomainStats, HypervisorError, Params, StatsGroups, TypedValue};
use virt::domain::{Domain, DomainInfo};
use virt::error::Error as VirtError;
use virt::sys;

use crate::calls::{Progress, BULK_CALL};
use crate::domain_xml::{self, DomainDevices};
use crate::errors::{classify, Abort};
use crate::ffi;
use crate::lanes::Lease;
use crate::live::Live;
use crate::per_domain::{self, Job};
use crate::supervisor::Supervisor;

/// `virDomainState` SHUTOFF.
const STATE_SHUTOFF: u64 = 5;

/// Whether the per-domain fallback has anything to add to a domain's bulk `params` for `groups`
/// (mirrors `Fallback::fill`: perf and dirtyrate have no per-domain call, a shut-off domain only needs
/// its state).
pub(crate) fn needs_fallback(params: &Params, groups: StatsGroups) -> bool {
    let shutoff = params.get("state.state").and_then(TypedValue::as_u64) == Some(STATE_SHUTOFF);
    StatsGroups::ALL.iter().any(|&(group, prefix)| {
        groups.contains(group)
            && group != StatsGroups::PERF
            && group != StatsGroups::DIRTYRATE
            && (group == StatsGroups::STATE || !shutoff)
            && !params.has_group(prefix)
    })
}

/// Step 2: the per-domain fallback for `pending`, bounded by `deadline`, on the
/// connection and lease of the bulk call.
pub(crate) async fn fallback(
    sup: &Arc<Supervisor>,
    (live, lease): (Arc<Live>, Lease),
    mut stats: Vec<DomainStats>,
    pending: Vec<(usize, Domain)>,
    groups: StatsGroups,
    deadline: tokio::time::Instant,
) -> Result<Vec<DomainStats>, HypervisorError> {
    let jobs: Vec<Job<Domain>> = pending
        .into_iter()
        .map(|(index, domain)| Job {
            index,
            stats: std::mem::replace(&mut stats[index], DomainStats::new(DomainRef::new("", ""))),
            extra: domain,
        })
        .collect();
    let s = Arc::clone(sup);
    let progress = Progress::new(BULK_CALL);
    let work = move |d: DomainStats, dom: Domain| {
        let mut fb = Fallback {
            sup: &s,
            progress: &progress,
            live: &live,
            dom: &dom,
            stats: d,
            devices: None,
            info: None,
        };
        match fb.fill(groups) {
            Ok(()) => Ok(Some(fb.stats)),
            Err(Abort::Vanished) => Ok(None),
            Err(Abort::Connection(reason)) => {
                drop(s.mark_lost(live.generation, &reason));
                Err(reason)
            }
        }
    };
    let done = per_domain::per_domain(lease, &sup.busy, deadline, jobs, work)
        .await
        .map_err(HypervisorError::Disconnected)?;
    let mut slots: Vec<Option<DomainStats>> = stats.into_iter().map(Some).collect();
    for (index, result) in done {
        slots[index] = result;
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Per-domain fallback for the groups the bulk reply left empty.
struct Fallback<'a> {
    sup: &'a Supervisor,
    progress: &'a Progress,
    live: &'a Live,
    dom: &'a Domain,
    stats: DomainStats,
    /// The domain's devices, read at most once (`Some(None)`: reading failed).
    devices: Option<Option<DomainDevices>>,
    /// `virDomainGetInfo`, called at most once.
    info: Option<Option<DomainInfo>>,
}

impl Fallback<'_> {
    fn fill(&mut self, groups: StatsGroups) -> Result<(), Abort> {
        for (group, prefix) in StatsGroups::ALL {
            if !groups.contains(group) || self.stats.has_group(prefix) {
                continue;
            }
            if group != StatsGroups::STATE && self.stats.u64("state.state") == Some(STATE_SHUTOFF) {
                continue;
            }
            match group {
                StatsGroups::STATE => self.state()?,
                StatsGroups::CPU_TOTAL => self.cpu()?,
                StatsGroups::BALLOON => self.balloon()?,
                StatsGroups::VCPU => self.vcpu()?,
                StatsGroups::INTERFACE => self.net()?,
                StatsGroups::BLOCK => self.block()?,
                // No per-domain API returns perf counters or the dirty rate: nothing to fall
                // back to.
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs one counted per-domain call. `Ok(None)`: it failed and the failure was
    /// recorded in `errors`; `Err`: the domain or the connection is gone.
    fn call<T>(
        &mut self,
        api: &'static str,
        device: Option<&str>,
        f: impl FnOnce(&Domain) -> Result<T, VirtError>,
    ) -> Result<Option<T>, Abort> {
        self.sup.count_calls(1);
        self.progress.set(api);
        match f(self.dom) {
            Ok(v) => Ok(Some(v)),
            Err(e) => match classify(self.live, &e) {
                Some(abort) => Err(abort),
                None => {
                    let what = match device {
                        Some(dev) => format!("{api}({dev})"),
                        None => api.to_string(),
                    };
                    self.stats.errors.push(format!("{what}: {}", e.message()));
                    Ok(None)
                }
            },
        }
    }

    fn put(&mut self, key: String, value: TypedValue) {
        self.stats.params.insert(&key, value);
    }

    /// Inserts a counter unless libvirt reported it as unsupported (negative).
    fn put_counter(&mut self, key: String, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.put(key, TypedValue::ULLong(v));
        }
    }

    fn info(&mut self) -> Result<Option<DomainInfo>, Abort> {
        if self.info.is_none() {
            let info = self.call("virDomainGetInfo", None, |d| d.info())?;
            self.info = Some(info);
        }
        Ok(self.info.clone().flatten())
    }

    fn devices(&mut self) -> Result<Option<DomainDevices>, Abort> {
        if self.devices.is_none() {
            let parsed = match self.call("virDomainGetXMLDesc", None, |d| d.xml_desc(0))? {
                Some(xml) => match domain_xml::parse(&xml) {
                    Ok(devices) => Some(devices),
                    Err(e) => {
                        self.stats.errors.push(e.to_string());
                        None
                    }
                },
                None => None,
            };
            self.devices = Some(parsed);
        }
        Ok(self.devices.clone().flatten())
    }

    fn state(&mut self) -> Result<(), Abort> {
        if let Some((state, reason)) = self.call("virDomainGetState", None, ffi::domain_state)? {
            self.put(
                "state.state".into(),
                TypedValue::Int(i32::try_from(state).unwrap_or(0)),
            );
            self.put(
                "state.reason".into(),
                TypedValue::Int(i32::try_from(reason).unwrap_or(0)),
            );
        }
        Ok(())
    }

    fn cpu(&mut self) -> Result<(), Abort> {
        let Some(params) = self.call("virDomainGetCPUStats", None, ffi::cpu_total_stats)? else {
            return Ok(());
        };
        for (name, value) in params {
            let key = match name.as_str() {
                "cpu_time" => "cpu.time",
                "user_time" => "cpu.user",
                "system_time" => "cpu.system",
                _ => continue,
            };
            if let Some(v) = value.as_u64() {
                self.put(key.into(), TypedValue::ULLong(v));
            }
        }
        Ok(())
    }

    fn balloon(&mut self) -> Result<(), Abort> {
        let stats = self
            .call("virDomainMemoryStats", None, |d| d.memory_stats(0))?
            .unwrap_or_default();
        let mut actual = None;
        for s in stats {
            let name = match s.tag {
                sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON => {
                    actual = Some(s.val);
                    continue;
                }
                sys::VIR_DOMAIN_MEMORY_STAT_SWAP_IN => "swap_in",
                sys::VIR_DOMAIN_MEMORY_STAT_SWAP_OUT => "swap_out",
                sys::VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT => "major_fault",
                sys::VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT => "minor_fault",
                sys::VIR_DOMAIN_MEMORY_STAT_UNUSED => "unused",
                sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE => "available",
                sys::VIR_DOMAIN_MEMORY_STAT_RSS => "rss",
                sys::VIR_DOMAIN_MEMORY_STAT_USABLE => "usable",
                sys::VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE => "last-update",
                sys::VIR_DOMAIN_MEMORY_STAT_DISK_CACHES => "disk_caches",
                sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGALLOC => "hugetlb_pgalloc",
                sys::VIR_DOMAIN_MEMORY_STAT_HUGETLB_PGFAIL => "hugetlb_pgfail",
                _ => continue,
            };
            self.put(format!("balloon.{name}"), TypedValue::ULLong(s.val));
        }
        let info = self.info()?;
        // Like the bulk API: the balloon target when the guest reports it, else the
        // domain's current memory.
        if let Some(current) = actual.or(info.as_ref().map(|i| i.memory)) {
            self.put("balloon.current".into(), TypedValue::ULLong(current));
        }
        if let Some(info) = info {
            self.put("balloon.maximum".into(), TypedValue::ULLong(info.max_mem));
        }
        Ok(())
    }

    fn vcpu(&mut self) -> Result<(), Abort> {
        let maximum = self.call("virDomainGetVcpusFlags", None, |d| {
            d.vcpus_flags(sys::VIR_DOMAIN_VCPU_MAXIMUM)
        })?;
        let Some(vcpus) = self.call("virDomainGetVcpus", None, |d| {
            ffi::vcpu_info(d, maximum.unwrap_or(256))
        })?
        else {
            return Ok(());
        };
        let current = u32::try_from(vcpus.len()).unwrap_or(u32::MAX);
        self.put("vcpu.current".into(), TypedValue::UInt(current));
        self.put(
            "vcpu.maximum".into(),
            TypedValue::UInt(maximum.unwrap_or(current)),
        );
        let mut seen = std::collections::BTreeSet::new();
        for v in vcpus {
            // Ids are unique in real drivers; keep the first entry if one repeats.
            if !seen.insert(v.number) {
                continue;
            }
            self.put(format!("vcpu.{}.state", v.number), TypedValue::Int(v.state));
            self.put(
                format!("vcpu.{}.time", v.number),
                TypedValue::ULLong(v.cpu_time),
            );
        }
        Ok(())
    }

    fn net(&mut self) -> Result<(), Abort> {
        let Some(devices) = self.devices()? else {
            return Ok(());
        };
        // As the bulk API: the count covers every interface, N is the position in the
        // domain XML, interfaces without a host-side device (hostdev) are skipped.
        self.put(
            "net.count".into(),
            TypedValue::UInt(devices.interfaces.len() as u32),
        );
        for (i, iface) in devices.interfaces.iter().enumerate() {
            let Some(dev) = iface.target.as_deref() else {
                continue;
            };
            self.put(format!("net.{i}.name"), TypedValue::String(dev.to_string()));
            if let Some(s) = self.call("virDomainInterfaceStats", Some(dev), |d| {
                d.interface_stats(dev)
            })? {
                for (name, v) in [
                    ("rx.bytes", s.rx_bytes),
                    ("rx.pkts", s.rx_packets),
                    ("rx.errs", s.rx_errs),
                    ("rx.drop", s.rx_drop),
                    ("tx.bytes", s.tx_bytes),
                    ("tx.pkts", s.tx_packets),
                    ("tx.errs", s.tx_errs),
                    ("tx.drop", s.tx_drop),
                ] {
                    self.put_counter(format!("net.{i}.{name}"), v);
                }
            }
        }
        Ok(())
    }

    fn block(&mut self) -> Result<(), Abort> {
        let Some(devices) = self.devices()? else {
            return Ok(());
        };
        // As the bulk API: every disk is listed at its position; a disk without media
        // (empty cdrom tray) gets its name only.
        self.put(
            "block.count".into(),
            TypedValue::UInt(devices.disks.len() as u32),
        );
        for (i, disk) in devices.disks.iter().enumerate() {
            let Some(dev) = disk.target.as_deref() else {
                continue;
            };
            self.put(
                format!("block.{i}.name"),
                TypedValue::String(dev.to_string()),
            );
            if let Some(path) = &disk.source {
                self.put(format!("block.{i}.path"), TypedValue::String(path.clone()));
            }
            if !disk.has_media {
                continue;
            }
            if let Some(s) = self.call("virDomainBlockStats", Some(dev), |d| d.block_stats(dev))? {
                for (name, v) in [
                    ("rd.reqs", s.rd_req),
                    ("rd.bytes", s.rd_bytes),
                    ("wr.reqs", s.wr_req),
                    ("wr.bytes", s.wr_bytes),
                    ("errors", s.errs),
                ] {
                    self.put_counter(format!("block.{i}.{name}"), v);
                }
            }
            if let Some((capacity, allocation, physical)) =
                self.call("virDomainGetBlockInfo", Some(dev), |d| {
                    ffi::block_info(d, dev)
                })?
            {
                self.put(format!("block.{i}.capacity"), TypedValue::ULLong(capacity));
                self.put(
                    format!("block.{i}.allocation"),
                    TypedValue::ULLong(allocation),
                );
                self.put(format!("block.{i}.physical"), TypedValue::ULLong(physical));
            }
        }
        Ok(())
    }
}
