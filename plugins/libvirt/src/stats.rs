//! `impl Hypervisor for LibvirtHypervisor`: domain statistics in one
//! `virConnectGetAllDomainStats` round trip, with a per-domain fallback that synthesises
//! the same keys for every requested group the bulk reply left empty (the `test` driver
//! fills only `state`; old or limited drivers may miss others).
//!
//! It also carries the rest of the trait (`list_domains`, `domain_xml`: see the
//! `domains` module; `lifecycle_events`: see the `lifecycle` module).
//!
//! Every call is bounded (`calls` module): a semaphore permit (moved into the blocking
//! closure, so a call that outlives its deadline keeps holding it) and a `call_timeout`
//! deadline around the permit wait plus the blocking work. `domain_stats` goes in three
//! steps, so that one domain whose QEMU does not answer cannot stall the others:
//!
//! 1. the bulk call, *hedged* (`calls::race`): if it has not answered after
//!    `hedge_after`, one identical call runs alongside and the first answer wins — the
//!    NOWAIT flag lets the second skip the monitor of a domain whose job the first holds;
//! 2. the per-domain fallback, only for domains whose reply lacks a requested group, on
//!    one blocking thread until 4/5 of `call_timeout` (`calls::per_domain`): a domain
//!    not done by then keeps its bulk data plus an error, and a domain whose per-domain
//!    call still hangs is skipped by later calls (per-domain calls such as
//!    `virDomainBlockStats` wait up to 30 s for a busy domain's job, unlike the bulk
//!    call);
//! 3. partial groups made visible (`partial`): a group a domain reported in full earlier
//!    on this connection but now lacks (NOWAIT skipped its monitor) adds an error to the
//!    domain, so its sample counts as incomplete.
//!
//! What a domain whose QEMU hangs (SIGSTOP, measured on libvirt 9.0) still costs:
//!
//! - the first bulk call that takes its job hangs until QEMU answers again, holding one
//!   permit, its lane's connection and a libvirtd worker; later calls skip the domain.
//!   So up to `max_concurrent_calls - 1` domains may hang at once; with all permits
//!   pinned, calls time out as queued until one returns;
//! - the tick in which it starts hanging is late by the hedge delay (plus opening a
//!   second lane connection the first time);
//! - `list_domains` and `domain_xml` need no job and stay prompt; per-domain calls that
//!   need the job (`virDomainBlockStats`, `virDomainMemoryStats`) wait up to libvirt's
//!   30 s job timeout, which the fallback's deadline and `calls::Busy` confine to that
//!   domain after one deadline. Reduced groups are not completed per domain (those calls
//!   would wait for the same job); they are flagged instead.
//!
//! Nothing is cached across calls except the connection, the small per-domain group
//! memory of step 3 and the recent bulk latencies (for the hedge delay).
//! `status().calls` counts the libvirt API calls that fetch data (the bulk call is one,
//! a hedge one more; each per-domain call is one); local bookkeeping (`virDomainRef`,
//! `virDomainGetName`, `virDomainGetUUIDString`, `virConnectIsAlive`) is not counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tracing::{debug, warn};
use vadvisor_api::{
    ConnectionStatus, DomainEntry, DomainRef, DomainStats, Hypervisor, HypervisorError,
    LifecycleEvent, StatsGroups, TypedValue,
};
use virt::domain::{Domain, DomainInfo};
use virt::error::Error as VirtError;
use virt::sys;

use crate::calls::{self, Hedged, Job, Progress};
use crate::connection::{is_connection_error, Lease, LibvirtHypervisor, Live, Supervisor};
use crate::domain_xml::{self, DomainDevices};
use crate::domains;
use crate::ffi;

/// `virDomainState` SHUTOFF.
const STATE_SHUTOFF: u64 = 5;

const BULK_CALL: &str = "virConnectGetAllDomainStats";
/// Before the bulk call starts: still waiting for a concurrency permit.
const QUEUED: &str = "virConnectGetAllDomainStats (queued behind other calls)";

impl LibvirtHypervisor {
    /// Like `list_domains`, but with the path for drivers without bulk statistics
    /// (`virConnectListAllDomains` plus one `virDomainGetState` per domain). For tests;
    /// not for production use.
    #[doc(hidden)]
    pub async fn list_domains_one_by_one(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        self.sup
            .bounded(None, domains::LIST_QUEUED, |sup, live, progress| {
                let mut out = domains::list_one_by_one(sup, live, progress)?;
                out.sort_by(|a, b| a.domain.name.cmp(&b.domain.name));
                Ok(out)
            })
            .await
    }

    /// Like `domain_stats`, but asks the bulk call for `state` only, so every other
    /// requested group comes from the per-domain fallback. For tests that compare the
    /// fallback with the bulk API on a real host; not for production use.
    #[doc(hidden)]
    pub async fn domain_stats_via_fallback(
        &self,
        groups: StatsGroups,
    ) -> Result<Vec<DomainStats>, HypervisorError> {
        self.bounded_collect(groups, StatsGroups::STATE).await
    }

    /// Runs one collection: hedged bulk call, per-domain fallback, partial check.
    async fn bounded_collect(
        &self,
        groups: StatsGroups,
        bulk_groups: StatsGroups,
    ) -> Result<Vec<DomainStats>, HypervisorError> {
        collect(&self.sup, groups, bulk_groups).await
    }
}

#[async_trait]
impl Hypervisor for LibvirtHypervisor {
    async fn domain_stats(&self, groups: StatsGroups) -> Result<Vec<DomainStats>, HypervisorError> {
        self.bounded_collect(groups, groups).await
    }

    fn status(&self) -> ConnectionStatus {
        self.sup.status()
    }

    /// Every defined domain in one `virConnectGetAllDomainStats(STATE, 0)` round trip
    /// (see the `domains` module), sorted by name; bounded and counted like the stats.
    async fn list_domains(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        self.sup
            .bounded(None, domains::LIST_QUEUED, domains::list)
            .await
    }

    /// By UUID (any usual spelling) or name; `NoDomain` when unknown.
    async fn domain_xml(&self, uuid_or_name: &str) -> Result<String, HypervisorError> {
        if let Some(err) = domains::reject_early(uuid_or_name) {
            return Err(err);
        }
        let id = uuid_or_name.to_string();
        self.sup
            .bounded(None, domains::XML_QUEUED, move |sup, live, progress| {
                domains::xml(sup, live, progress, &id)
            })
            .await
    }

    /// Live events from libvirt's event loop on the current connection (re-registered
    /// after every reconnect), and `reconciled` ones for what changed while the
    /// connection was down. Always `Some`, also before the first connection.
    fn lifecycle_events(&self) -> Option<broadcast::Receiver<LifecycleEvent>> {
        Some(self.sup.events.subscribe())
    }
}

/// Why a collection (or one domain of it) must stop.
enum Abort {
    /// The domain disappeared: drop it, keep the others.
    Vanished,
    /// The connection is unusable: fail the whole call.
    Connection(String),
}

/// Decides what a failed libvirt call means.
fn classify(live: &Live, err: &VirtError) -> Option<Abort> {
    let code = err.code().to_raw();
    if code == sys::VIR_ERR_NO_DOMAIN {
        return Some(Abort::Vanished);
    }
    if is_connection_error(code, err.message()) || !matches!(live.conn.is_alive(), Ok(true)) {
        return Some(Abort::Connection(err.message().to_string()));
    }
    None
}

/// A bulk reply, taken apart on the blocking thread that made the call: every domain's
/// statistics, and the libvirt handles only of the domains that need the fallback (with
/// the connection and the lease, permit and lane, for its calls: they go on where the
/// bulk call ran). Everything else was released on that thread.
struct BulkReply {
    generation: u64,
    stats: Vec<DomainStats>,
    /// `(index in stats, domain)` of the domains the fallback must complete.
    pending: Vec<(usize, Domain)>,
    /// The connection and lease of the reply, when `pending` is not empty.
    carry: Option<(Arc<Live>, Lease)>,
}

/// Whether the per-domain fallback has anything to add to `stats` for `groups`
/// (mirrors `Fallback::fill`: perf has no per-domain call, a shut-off domain only needs
/// its state).
fn needs_fallback(stats: &DomainStats, groups: StatsGroups) -> bool {
    let shutoff = stats.u64("state.state") == Some(STATE_SHUTOFF);
    StatsGroups::ALL.iter().any(|&(group, prefix)| {
        groups.contains(group)
            && group != StatsGroups::PERF
            && (group == StatsGroups::STATE || !shutoff)
            && !stats.has_group(prefix)
    })
}

/// One bulk attempt (blocking): the call for `bulk_groups` on the connection of the
/// lane that comes with `permit`.
fn bulk_attempt(
    sup: &Arc<Supervisor>,
    permit: tokio::sync::OwnedSemaphorePermit,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
) -> Result<BulkReply, HypervisorError> {
    let lease = Lease::new(sup, permit);
    // Taken on this blocking thread, so the connection is never dropped (closed) on a
    // runtime thread.
    let Some(primary) = sup.current() else {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    };
    sup.count_calls(1);
    let live = lease.live(primary);
    let records = ffi::get_all_domain_stats(
        &live.conn,
        (bulk_groups | StatsGroups::STATE).0,
        sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
    );
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            return Err(match classify(&live, &e) {
                Some(Abort::Connection(reason)) => {
                    // Dropped here, on this blocking thread, if it was the last reference.
                    drop(sup.mark_lost(live.generation, &reason));
                    HypervisorError::Disconnected(reason)
                }
                _ => HypervisorError::Call {
                    call: BULK_CALL,
                    message: e.message().to_string(),
                },
            });
        }
    };
    let mut stats = Vec::with_capacity(records.len());
    let mut pending = Vec::new();
    for rec in records {
        let mut d = DomainStats::new(DomainRef::new(rec.uuid, rec.name));
        d.params = rec.params.into_iter().collect::<BTreeMap<_, _>>();
        if needs_fallback(&d, groups) {
            pending.push((stats.len(), rec.domain));
        }
        stats.push(d);
    }
    let generation = live.generation;
    Ok(BulkReply {
        generation,
        stats,
        carry: (!pending.is_empty()).then_some((live, lease)),
        pending,
    })
}

/// `domain_stats`: the hedged bulk call for `bulk_groups`, the fallback for whatever of
/// `groups` is missing, and the partial-group check.
async fn collect(
    sup: &Arc<Supervisor>,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
) -> Result<Vec<DomainStats>, HypervisorError> {
    if sup.current().is_none() && !sup.reconnect_now().await {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    }
    let groups = groups | StatsGroups::STATE;
    let timeout = sup.settings.call_timeout;
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let hedge_after = sup.hedging.delay(sup.settings.hedge_after);
    let s = Arc::clone(sup);
    let outcome = calls::race(&sup.permits, hedge_after, deadline, move |permit| {
        bulk_attempt(&s, permit, groups, bulk_groups)
    })
    .await;
    let reply = match outcome {
        Hedged::Answered {
            value,
            took,
            hedged,
            by_hedge,
        } => {
            if hedged {
                note_hedge(sup, hedge_after, start.elapsed(), by_hedge);
            }
            if value.is_ok() {
                sup.hedging.record(took, hedged, by_hedge);
            }
            value?
        }
        Hedged::Queued => {
            return Err(HypervisorError::Timeout {
                call: QUEUED,
                timeout,
            })
        }
        Hedged::TimedOut { hedged } => {
            debug!(uri = %sup.settings.uri, hedged, ?timeout, "{BULK_CALL} did not answer in time");
            return Err(HypervisorError::Timeout {
                call: BULK_CALL,
                timeout,
            });
        }
        Hedged::Failed => {
            return Err(HypervisorError::Call {
                call: BULK_CALL,
                message: "worker failed".to_string(),
            })
        }
    };
    let BulkReply {
        generation,
        stats,
        pending,
        carry,
    } = reply;
    let mut stats = match carry {
        Some((live, lease)) => {
            // The fallback gets until 4/5 of the deadline, so a caller whose own deadline
            // is `call_timeout` (the scheduler's default) still gets the partial result.
            let fallback_deadline = start + timeout.mul_f64(0.8);
            fallback(
                sup,
                (live, lease),
                stats,
                pending,
                groups,
                fallback_deadline,
            )
            .await?
        }
        None => stats,
    };
    sup.groups_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(generation, groups, &mut stats);
    Ok(stats)
}

/// Logs a hedge: `warn!` (rate-limited) when it answered, `debug!` otherwise.
fn note_hedge(
    sup: &Supervisor,
    delay: Option<std::time::Duration>,
    total: std::time::Duration,
    by_hedge: bool,
) {
    let delay = delay.unwrap_or_default();
    if by_hedge && sup.hedging.warn_due() {
        warn!(
            uri = %sup.settings.uri,
            ?delay,
            ?total,
            "{BULK_CALL} did not answer in time; a second (hedged) call answered instead: a \
             domain is probably busy or not responding (its statistics are partial meanwhile; \
             logged at most every 5 minutes)"
        );
    } else {
        debug!(uri = %sup.settings.uri, ?delay, ?total, by_hedge, "hedged {BULK_CALL}");
    }
}

/// Step 2: the per-domain fallback for `pending`, bounded by `deadline`, on the
/// connection and lease of the bulk call.
async fn fallback(
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
    let done = calls::per_domain(lease, &sup.busy, deadline, jobs, work)
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
                // No per-domain API returns perf counters: nothing to fall back to.
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
        self.stats.params.insert(key, value);
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
