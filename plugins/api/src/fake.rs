//! [`FakeHypervisor`]: an in-memory [`Hypervisor`] with canned domains and statistics,
//! for plugin tests. It honours the requested statistics groups, counts calls, and can
//! play a host whose libvirtd is down or slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::hypervisor::{ConnectionStatus, DomainStats, Hypervisor, HypervisorError, StatsGroups, TypedValue};
use crate::model::DomainRef;

#[derive(Default)]
pub struct FakeHypervisor {
    domains: Mutex<Vec<DomainStats>>,
    down: Mutex<Option<String>>,
    delay: Mutex<Option<Duration>>,
    calls: AtomicU64,
}

impl FakeHypervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, by UUID) a domain with the given parameters.
    pub fn put_domain(&self, uuid: &str, name: &str, params: &[(&str, TypedValue)]) {
        let mut stats = DomainStats::new(DomainRef::new(uuid, name));
        for (k, v) in params {
            stats.params.insert((*k).to_string(), v.clone());
        }
        let mut domains = self.lock_domains();
        match domains.iter_mut().find(|d| &*d.domain.uuid == uuid) {
            Some(existing) => *existing = stats,
            None => domains.push(stats),
        }
    }

    /// Sets one parameter of an existing domain.
    pub fn set_param(&self, uuid: &str, key: &str, value: TypedValue) {
        if let Some(d) = self.lock_domains().iter_mut().find(|d| &*d.domain.uuid == uuid) {
            d.params.insert(key.to_string(), value);
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
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
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
                out.params.retain(|k, _| wanted.iter().any(|p| k.starts_with(p)));
                out
            })
            .collect())
    }

    fn status(&self) -> ConnectionStatus {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ConnectionStatus {
            connected: down.is_none(),
            reconnects: 0,
            calls: self.calls(),
            last_error: down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_only_requested_groups() {
        let hv = FakeHypervisor::new();
        hv.put_domain("u1", "one", &[
            ("state.state", TypedValue::Int(1)),
            ("cpu.time", TypedValue::ULLong(5)),
            ("block.count", TypedValue::UInt(0)),
        ]);
        let stats = hv.domain_stats(StatsGroups::CPU_TOTAL).await.unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].u64("cpu.time"), Some(5));
        assert!(stats[0].get("block.count").is_none());
        assert_eq!(stats[0].state().map(|s| s.name()), Some("Running"));
        hv.set_down(Some("gone"));
        assert!(hv.domain_stats(StatsGroups::CPU_TOTAL).await.is_err());
        assert_eq!(hv.calls(), 2);
    }

    #[test]
    fn indices_tolerate_gaps_and_sort_numerically() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        for k in ["vcpu.10.time", "vcpu.2.time", "vcpu.2.state", "vcpu.current", "vcpux.1.a"] {
            s.params.insert(k.into(), TypedValue::ULLong(1));
        }
        assert_eq!(s.indices("vcpu"), vec![2, 10]);
        assert!(s.has_group("vcpu"));
        assert!(!s.has_group("block"));
    }
}
