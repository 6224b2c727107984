//! The [`Hypervisor`] trait: the only way plugins reach libvirt. The real implementation
//! lives in `vadvisor-libvirt`; [`crate::FakeHypervisor`] serves tests.
//!
//! Statistics use libvirt's bulk-stats vocabulary whatever path produced them: a flat map
//! of typed parameters keyed like `cpu.time`, `vcpu.0.state`, `block.1.rd.bytes`.

use std::time::Duration;

use async_trait::async_trait;

use crate::host::{JobStats, Machine, NodeStats};
use crate::model::{DomainRef, DomainState, LifecycleEvent};
pub use crate::params::{IndexedKey, Params, Room, Section, SortMemo};
pub use crate::typed_value::TypedValue;

/// libvirt's `virDomainStatsTypes` bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatsGroups(pub u32);

impl StatsGroups {
    pub const NONE: Self = Self(0);
    pub const STATE: Self = Self(1);
    pub const CPU_TOTAL: Self = Self(2);
    pub const BALLOON: Self = Self(4);
    pub const VCPU: Self = Self(8);
    pub const INTERFACE: Self = Self(16);
    pub const BLOCK: Self = Self(32);
    pub const PERF: Self = Self(64);
    /// `VIR_DOMAIN_STATS_DIRTYRATE` (libvirt ≥ 7.2): the last memory dirty-rate
    /// calculation. libvirt answers it with one QEMU monitor query per running domain.
    pub const DIRTYRATE: Self = Self(512);

    /// Every group with its key prefix, for iteration.
    pub const ALL: [(Self, &'static str); 8] = [
        (Self::STATE, "state"),
        (Self::CPU_TOTAL, "cpu"),
        (Self::BALLOON, "balloon"),
        (Self::VCPU, "vcpu"),
        (Self::INTERFACE, "net"),
        (Self::BLOCK, "block"),
        (Self::PERF, "perf"),
        (Self::DIRTYRATE, "dirtyrate"),
    ];

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The groups of `self` that are not in `other`.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for StatsGroups {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// The statistics of one domain from one collection.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainStats {
    pub domain: DomainRef,
    pub params: Params,
    /// Problems met while gathering this domain's statistics (the rest is still valid).
    pub errors: Vec<String>,
}

impl DomainStats {
    pub fn new(domain: DomainRef) -> Self {
        Self {
            domain,
            params: Params::new(),
            errors: Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&TypedValue> {
        self.params.get(key)
    }

    pub fn f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(TypedValue::as_f64)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(TypedValue::as_u64)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(TypedValue::as_str)
    }

    /// Domain state from the `state.state` / `state.reason` parameters.
    pub fn state(&self) -> Option<DomainState> {
        // One search for the group, then two among its two keys.
        let group = self.params.section("state.");
        let state = group.get("state").and_then(TypedValue::as_u64)?;
        let reason = group
            .get("reason")
            .and_then(TypedValue::as_u64)
            .unwrap_or(0);
        Some(DomainState::new(state as u32, reason as u32))
    }

    /// The parameter `<group>.<n>.<field>` (e.g. `block.1.rd.bytes`), looked up
    /// without allocating.
    pub fn get_indexed(&self, group: &str, n: u32, field: &str) -> Option<&TypedValue> {
        self.get(IndexedKey::new(group, n, field).as_str()?)
    }

    /// The parameters of device `n` of `group` (`block.1.*`), to look several of its
    /// fields up (`rd.bytes`) more cheaply than one [`DomainStats::get_indexed`] each.
    pub fn device(&self, group: &str, n: u32) -> Section<'_> {
        match IndexedKey::new(group, n, "").as_str() {
            Some(prefix) => self.params.section(prefix),
            // Too long to spell: nothing is found, as `get_indexed` finds nothing.
            None => Section::EMPTY,
        }
    }

    /// The parameters of every device of `group` (`block.0.*`, `block.1.*`, …) by index,
    /// sorted by index: [`DomainStats::indices`] and [`DomainStats::device`] for each,
    /// in one pass over the group's keys.
    pub fn devices(&self, group: &str) -> Vec<(u32, Section<'_>)> {
        self.params.indexed_sections(group)
    }

    /// [`DomainStats::get_indexed`] as a number.
    pub fn f64_indexed(&self, group: &str, n: u32, field: &str) -> Option<f64> {
        self.get_indexed(group, n, field)
            .and_then(TypedValue::as_f64)
    }

    /// [`DomainStats::get_indexed`] as a string.
    pub fn str_indexed(&self, group: &str, n: u32, field: &str) -> Option<&str> {
        self.get_indexed(group, n, field)
            .and_then(TypedValue::as_str)
    }

    /// Whether any parameter of a group (by key prefix, e.g. `block`) is present.
    pub fn has_group(&self, prefix: &str) -> bool {
        self.params.has_group(prefix)
    }

    /// The distinct numeric indices `N` of keys `<prefix>.N.*`, sorted; tolerates gaps.
    pub fn indices(&self, prefix: &str) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for (key, _) in self.params.with_prefix(prefix) {
            let Some(n) = key
                .as_bytes()
                .get(prefix.len()..)
                .and_then(|rest| rest.strip_prefix(b"."))
                .and_then(leading_index)
            else {
                continue;
            };
            // A device's keys are adjacent in key order: most repeats are the last one.
            if out.last() != Some(&n) {
                out.push(n);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The decimal number `N` of `N` or `N.<rest>`: ASCII digits only, within `u32`.
fn leading_index(rest: &[u8]) -> Option<u32> {
    let digits = rest.split(|&b| b == b'.').next()?;
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Connection health as the backend sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionStatus {
    pub connected: bool,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// libvirt API calls made so far.
    pub calls: u64,
    /// Of `calls`, those made over libvirt's RPC protocol directly rather than through
    /// its client library (the bulk statistics path on a local socket).
    pub native_calls: u64,
    /// The last connection error, when not connected.
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HypervisorError {
    #[error("not connected to libvirt: {0}")]
    Disconnected(String),
    #[error("libvirt call `{call}` did not answer within {timeout:?}")]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    #[error("libvirt call `{call}` failed: {message}")]
    Call { call: &'static str, message: String },
    #[error("no such domain: {0}")]
    NoDomain(String),
    #[error("not supported by this hypervisor: {0}")]
    Unsupported(&'static str),
}

/// A defined domain, active or not.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainEntry {
    pub domain: DomainRef,
    pub state: DomainState,
    pub active: bool,
}

/// Access to the virtualisation host. Every method is safe to call from async code: the
/// implementation keeps blocking work off the runtime and bounds each call by a deadline.
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// Statistics of every domain for the requested groups in one round trip where the
    /// host supports it; groups the bulk call leaves empty are filled per domain.
    /// `StatsGroups::STATE` is always included.
    async fn domain_stats(&self, groups: StatsGroups) -> Result<Vec<DomainStats>, HypervisorError>;

    /// Current connection status (cheap, no libvirt call).
    fn status(&self) -> ConnectionStatus;

    /// Every defined domain, active and inactive, with its state.
    async fn list_domains(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        Err(HypervisorError::Unsupported("list_domains"))
    }

    /// The XML description of a domain given by UUID or name (inactive domains: their
    /// persistent definition). Unknown → [`HypervisorError::NoDomain`].
    async fn domain_xml(&self, uuid_or_name: &str) -> Result<String, HypervisorError> {
        Err(HypervisorError::NoDomain(uuid_or_name.to_string()))
    }

    /// Lifecycle events as they happen (from libvirt's event loop), including events
    /// reconciled after a reconnect. `None` when the hypervisor has no events.
    fn lifecycle_events(&self) -> Option<tokio::sync::broadcast::Receiver<LifecycleEvent>> {
        None
    }

    /// Domains whose `<metadata>`, `<title>` or `<description>` changed (libvirt's
    /// metadata-change event), as they happen. `None` when the hypervisor has no such
    /// events.
    fn metadata_changes(&self) -> Option<tokio::sync::broadcast::Receiver<DomainRef>> {
        None
    }

    /// The job domain `uuid` is running (`virDomainGetJobStats`); `None` when it runs
    /// none (or is gone). One libvirt call: ask only about domains that have a job.
    async fn job_stats(&self, _uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        Err(HypervisorError::Unsupported("job_stats"))
    }

    /// Domains that libvirt's events say run a job now (a migration reported an
    /// iteration and has not completed yet). No libvirt call.
    fn job_hints(&self) -> Vec<DomainRef> {
        Vec::new()
    }

    /// The statistics of domain `uuid`'s last completed job (`virDomainGetJobStats` with
    /// `VIR_DOMAIN_JOB_STATS_COMPLETED`): after a migration, its actual `downtime`. `None`
    /// when libvirt keeps none. One libvirt call: ask once per completed job.
    async fn completed_job_stats(&self, _uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        Err(HypervisorError::Unsupported("completed_job_stats"))
    }

    /// Domains whose job completed (libvirt's job-completed event) since the last call;
    /// each is handed out once (one consumer: the `jobs` collector). No libvirt call.
    fn take_completed_jobs(&self) -> Vec<DomainRef> {
        Vec::new()
    }

    /// The host's facts and counters (node info, CPU time, memory, free memory).
    async fn node_stats(&self) -> Result<NodeStats, HypervisorError> {
        Err(HypervisorError::Unsupported("node_stats"))
    }

    /// The host described once: hostname, host UUID, versions and node info.
    async fn machine(&self) -> Result<Machine, HypervisorError> {
        Err(HypervisorError::Unsupported("machine"))
    }
}
