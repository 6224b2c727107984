//! [`FakeHypervisor`]: an in-memory [`Hypervisor`] with canned domains and statistics,
//! for plugin tests. It honours the requested statistics groups, counts calls, and can
//! play a host whose libvirtd is down or slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use std::collections::HashMap;

use tokio::sync::broadcast;

use crate::host::{JobStats, Machine, NodeStats};
use crate::hypervisor::{
    ConnectionStatus, DomainEntry, DomainStats, Hypervisor, HypervisorError, StatsGroups,
    TypedValue,
};
use crate::model::{DomainRef, DomainState, LifecycleEvent};

pub struct FakeHypervisor {
    domains: Mutex<Vec<DomainStats>>,
    /// Inactive (defined, not running) domains.
    inactive: Mutex<Vec<DomainRef>>,
    xml: Mutex<HashMap<String, String>>,
    down: Mutex<Option<String>>,
    delay: Mutex<Option<Duration>>,
    calls: AtomicU64,
    /// Bulk calls running now, and the most ever running at once.
    running: AtomicU64,
    max_running: AtomicU64,
    events: broadcast::Sender<LifecycleEvent>,
    jobs: Mutex<HashMap<String, JobStats>>,
    job_hints: Mutex<Vec<DomainRef>>,
    job_calls: Mutex<Vec<String>>,
    completed_jobs: Mutex<HashMap<String, JobStats>>,
    completed_hints: Mutex<Vec<DomainRef>>,
    completed_calls: Mutex<Vec<String>>,
    node: Mutex<Option<NodeStats>>,
    machine: Mutex<Option<Machine>>,
}

impl Default for FakeHypervisor {
    fn default() -> Self {
        Self {
            domains: Mutex::default(),
            inactive: Mutex::default(),
            xml: Mutex::default(),
            down: Mutex::default(),
            delay: Mutex::default(),
            calls: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_running: AtomicU64::new(0),
            events: broadcast::channel(1024).0,
            jobs: Mutex::default(),
            job_hints: Mutex::default(),
            job_calls: Mutex::default(),
            completed_jobs: Mutex::default(),
            completed_hints: Mutex::default(),
            completed_calls: Mutex::default(),
            node: Mutex::default(),
            machine: Mutex::default(),
        }
    }
}

impl FakeHypervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the XML description of a domain (looked up by UUID or name).
    pub fn set_xml(&self, uuid: &str, xml: &str) {
        self.xml
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uuid.to_string(), xml.to_string());
    }

    /// Adds a defined but inactive domain.
    pub fn put_inactive(&self, uuid: &str, name: &str) {
        self.inactive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(DomainRef::new(uuid, name));
    }

    /// Delivers a lifecycle event to every subscriber.
    pub fn emit_event(&self, event: LifecycleEvent) {
        let _ = self.events.send(event);
    }

    /// Adds (or replaces, by UUID) a domain with the given parameters.
    pub fn put_domain(&self, uuid: &str, name: &str, params: &[(&str, TypedValue)]) {
        let mut stats = DomainStats::new(DomainRef::new(uuid, name));
        for (k, v) in params {
            stats.params.insert(k, v.clone());
        }
        let mut domains = self.lock_domains();
        match domains.iter_mut().find(|d| &*d.domain.uuid == uuid) {
            Some(existing) => *existing = stats,
            None => domains.push(stats),
        }
    }

    /// Sets one parameter of an existing domain.
    pub fn set_param(&self, uuid: &str, key: &str, value: TypedValue) {
        if let Some(d) = self
            .lock_domains()
            .iter_mut()
            .find(|d| &*d.domain.uuid == uuid)
        {
            d.params.insert(key, value);
        }
    }

    pub fn remove_domain(&self, uuid: &str) {
        self.lock_domains().retain(|d| &*d.domain.uuid != uuid);
    }

    /// Makes every call fail as if libvirtd were unreachable (`None` heals it).
    pub fn set_down(&self, reason: Option<&str>) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = reason.map(str::to_string);
    }

    /// Makes every stats call take this long.
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Sets (or with `None` ends) the job of domain `uuid`.
    pub fn set_job(&self, uuid: &str, job: Option<JobStats>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        match job {
            Some(j) => jobs.insert(uuid.to_string(), j),
            None => jobs.remove(uuid),
        };
    }

    /// Sets what [`Hypervisor::job_hints`] answers.
    pub fn set_job_hints(&self, hints: Vec<DomainRef>) {
        *self.job_hints.lock().unwrap_or_else(|e| e.into_inner()) = hints;
    }

    /// Sets the statistics of the last completed job of domain `uuid`.
    pub fn set_completed_job(&self, uuid: &str, job: JobStats) {
        lock(&self.completed_jobs).insert(uuid.to_string(), job);
    }

    /// Adds a job-completed event for [`Hypervisor::take_completed_jobs`].
    pub fn push_completed_hint(&self, domain: DomainRef) {
        lock(&self.completed_hints).push(domain);
    }

    /// The UUIDs [`Hypervisor::completed_job_stats`] was asked about; clears the list.
    pub fn take_completed_job_calls(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.completed_calls))
    }

    /// The UUIDs [`Hypervisor::job_stats`] was asked about, in order; clears the list.
    pub fn take_job_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.job_calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets what [`Hypervisor::node_stats`] and [`Hypervisor::machine`] answer.
    pub fn set_node(&self, node: Option<NodeStats>, machine: Option<Machine>) {
        *self.node.lock().unwrap_or_else(|e| e.into_inner()) = node;
        *self.machine.lock().unwrap_or_else(|e| e.into_inner()) = machine;
    }

    fn check_down(&self) -> Result<(), HypervisorError> {
        match self.down.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(reason) => Err(HypervisorError::Disconnected(reason)),
            None => Ok(()),
        }
    }

    /// The most bulk statistics calls that ever ran at the same time.
    pub fn max_concurrent_calls(&self) -> u64 {
        self.max_running.load(Ordering::Relaxed)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn lock_domains(&self) -> std::sync::MutexGuard<'_, Vec<DomainStats>> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    async fn domain_stats(&self, groups: StatsGroups) -> Result<Vec<DomainStats>, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_running.fetch_max(now, Ordering::Relaxed);
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        self.running.fetch_sub(1, Ordering::Relaxed);
        if let Some(reason) = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(HypervisorError::Disconnected(reason));
        }
        let groups = groups | StatsGroups::STATE;
        let wanted: Vec<String> = StatsGroups::ALL
            .iter()
            .filter(|(g, _)| groups.contains(*g))
            .map(|(_, prefix)| format!("{prefix}."))
            .collect();
        Ok(self
            .lock_domains()
            .iter()
            .map(|d| {
                let mut out = d.clone();
                out.params
                    .retain(|k, _| wanted.iter().any(|p| k.starts_with(p)));
                out
            })
            .collect())
    }

    async fn list_domains(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(HypervisorError::Disconnected(reason));
        }
        let mut out: Vec<DomainEntry> = self
            .lock_domains()
            .iter()
            .map(|d| DomainEntry {
                domain: d.domain.clone(),
                state: d
                    .state()
                    .unwrap_or(DomainState::new(DomainState::RUNNING, 0)),
                active: true,
            })
            .collect();
        for d in self
            .inactive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push(DomainEntry {
                domain: d.clone(),
                state: DomainState::new(5, 0),
                active: false,
            });
        }
        Ok(out)
    }

    async fn domain_xml(&self, uuid_or_name: &str) -> Result<String, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let uuid = self
            .list_domains()
            .await?
            .into_iter()
            .find(|d| &*d.domain.uuid == uuid_or_name || &*d.domain.name == uuid_or_name)
            .map(|d| d.domain.uuid.to_string())
            .ok_or_else(|| HypervisorError::NoDomain(uuid_or_name.to_string()))?;
        self.xml
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uuid)
            .cloned()
            .ok_or_else(|| HypervisorError::NoDomain(uuid_or_name.to_string()))
    }

    fn lifecycle_events(&self) -> Option<broadcast::Receiver<LifecycleEvent>> {
        Some(self.events.subscribe())
    }

    async fn job_stats(&self, uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.job_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(uuid.to_string());
        self.check_down()?;
        if !self.lock_domains().iter().any(|d| &*d.domain.uuid == uuid) {
            return Err(HypervisorError::NoDomain(uuid.to_string()));
        }
        Ok(self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uuid)
            .filter(|j| j.job_type != JobStats::NONE)
            .cloned())
    }

    async fn completed_job_stats(&self, uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.completed_calls).push(uuid.to_string());
        self.check_down()?;
        if !self.lock_domains().iter().any(|d| &*d.domain.uuid == uuid) {
            return Err(HypervisorError::NoDomain(uuid.to_string()));
        }
        Ok(lock(&self.completed_jobs)
            .get(uuid)
            .filter(|j| j.job_type != JobStats::NONE)
            .cloned())
    }

    fn take_completed_jobs(&self) -> Vec<DomainRef> {
        std::mem::take(&mut *lock(&self.completed_hints))
    }

    fn job_hints(&self) -> Vec<DomainRef> {
        self.job_hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn node_stats(&self) -> Result<NodeStats, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.check_down()?;
        self.node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(HypervisorError::Unsupported("node_stats"))
    }

    async fn machine(&self) -> Result<Machine, HypervisorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.check_down()?;
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(HypervisorError::Unsupported("machine"))
    }

    fn status(&self) -> ConnectionStatus {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ConnectionStatus {
            connected: down.is_none(),
            reconnects: 0,
            calls: self.calls(),
            native_calls: 0,
            last_error: down,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_only_requested_groups() {
        let hv = FakeHypervisor::new();
        hv.put_domain(
            "u1",
            "one",
            &[
                ("state.state", TypedValue::Int(1)),
                ("cpu.time", TypedValue::ULLong(5)),
                ("block.count", TypedValue::UInt(0)),
            ],
        );
        let stats = hv.domain_stats(StatsGroups::CPU_TOTAL).await.unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].u64("cpu.time"), Some(5));
        assert!(stats[0].get("block.count").is_none());
        assert_eq!(stats[0].state().map(|s| s.name()), Some("Running"));
        hv.set_down(Some("gone"));
        assert!(hv.domain_stats(StatsGroups::CPU_TOTAL).await.is_err());
        assert_eq!(hv.calls(), 2);
    }

    #[tokio::test]
    async fn lists_domains_serves_xml_and_events() {
        let hv = FakeHypervisor::new();
        hv.put_domain("u1", "one", &[("state.state", TypedValue::Int(3))]);
        hv.put_inactive("u2", "two");
        hv.set_xml("u2", "<domain/>");
        let list = hv.list_domains().await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].state.name(), "Paused");
        assert!(!list[1].active);
        assert_eq!(hv.domain_xml("two").await.unwrap(), "<domain/>");
        assert!(matches!(
            hv.domain_xml("nope").await,
            Err(HypervisorError::NoDomain(_))
        ));
        let mut rx = hv.lifecycle_events().unwrap();
        hv.emit_event(LifecycleEvent {
            at: std::time::SystemTime::now(),
            domain: DomainRef::new("u1", "one"),
            event: 3,
            detail: 0,
            reconciled: false,
        });
        assert_eq!(rx.recv().await.unwrap().event, 3);
    }

    #[test]
    fn indices_tolerate_gaps_and_sort_numerically() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        for k in [
            "vcpu.10.time",
            "vcpu.2.time",
            "vcpu.2.state",
            "vcpu.current",
            "vcpux.1.a",
        ] {
            s.params.insert(k, TypedValue::ULLong(1));
        }
        assert_eq!(s.indices("vcpu"), vec![2, 10]);
        assert!(s.has_group("vcpu"));
        assert!(!s.has_group("block"));
    }

    #[test]
    fn a_device_holds_its_own_fields_only() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        for (k, v) in [
            ("block.1.rd.bytes", 1),
            ("block.1.rd.bytes.x", 2),
            ("block.10.rd.bytes", 10),
            ("block.count", 2),
            ("block1.rd.bytes", 3),
        ] {
            s.params.insert(k, TypedValue::ULLong(v));
        }
        let disk = s.device("block", 1);
        assert_eq!(disk.len(), 2);
        assert_eq!(disk.get("rd.bytes"), Some(&TypedValue::ULLong(1)));
        assert_eq!(disk.get("rd.bytes.x"), Some(&TypedValue::ULLong(2)));
        assert_eq!(disk.get("rd"), None);
        assert_eq!(
            s.device("block", 10).get("rd.bytes"),
            Some(&TypedValue::ULLong(10))
        );
        assert!(s.device("block", 2).is_empty());
        // A group too long to spell finds nothing, as `get_indexed` does.
        let long = "g".repeat(200);
        assert!(s.device(&long, 1).is_empty());
        assert_eq!(s.get_indexed(&long, 1, "rd.bytes"), None);
    }

    #[test]
    fn indices_take_only_plain_decimal_numbers_within_u32() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        for k in [
            "block.count",
            "block.0.name",
            "block.0.rd.reqs",
            "block.1.name",
            "block.10.name",
            "block.10.rd.reqs",
            "block.2",
            "block..rd.reqs",
            "block.x1.rd.reqs",
            "block.+3.rd.reqs",
            "block.4294967295.name",
            "block.4294967296.name",
            "block.99999999999999999999.name",
            "blocks.5.name",
            "block",
        ] {
            s.params.insert(k, TypedValue::ULLong(1));
        }
        assert_eq!(s.indices("block"), vec![0, 1, 2, 10, 4_294_967_295]);
        assert_eq!(s.indices("blocks"), vec![5]);
        assert!(s.indices("net").is_empty());
    }
}
