//! [`LibvirtHypervisor`], the handle: start and shutdown, and `impl Hypervisor` — each
//! trait method is one bounded call (`calls`) on the supervised connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use vadvisor_api::{
    ConnectionStatus, DomainEntry, DomainRef, DomainStats, Hypervisor, HypervisorError, JobStats,
    LifecycleEvent, Machine, NodeStats, StatsGroups,
};

use crate::domains;
use crate::event_loop;
use crate::host;
use crate::jobs;
use crate::settings::LibvirtSettings;
use crate::stats;
use crate::supervisor::Supervisor;

/// The libvirt [`vadvisor_api::Hypervisor`]: one supervised, read-only connection, bulk
/// statistics with a per-domain fallback (see the `stats` module).
pub struct LibvirtHypervisor {
    pub(crate) sup: Arc<Supervisor>,
}

impl LibvirtHypervisor {
    /// Starts the backend and returns at once; the first connection attempt starts
    /// immediately in the background. Must be called inside a tokio runtime.
    pub fn start(settings: LibvirtSettings) -> Arc<LibvirtHypervisor> {
        event_loop::init_libvirt();
        let sup = Arc::new(Supervisor::new(settings));
        tokio::spawn(Arc::clone(&sup).run());
        Arc::new(LibvirtHypervisor { sup })
    }

    /// Waits until the backend is connected, at most `timeout`; true if connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.sup.connected_tx.subscribe();
        let connected = tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await;
        matches!(connected, Ok(Ok(_)))
    }

    /// Stops the supervisor and closes the connection. Later calls report
    /// `Disconnected`. Idempotent; also done when the handle is dropped.
    pub fn shutdown(&self) {
        if !self.sup.stopping.swap(true, Ordering::SeqCst) {
            self.sup.wake.notify_one();
        }
    }

    /// Connection attempts made so far (successful or not).
    pub fn connect_attempts(&self) -> u64 {
        self.sup.attempts.load(Ordering::SeqCst)
    }

    /// The configured URI.
    pub fn uri(&self) -> &str {
        &self.sup.settings.uri
    }
}

impl Drop for LibvirtHypervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor")
            .field("uri", &self.sup.settings.uri)
            .field("status", &self.sup.status())
            .finish()
    }
}

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
        stats::collect(&self.sup, groups, bulk_groups).await
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
    /// (see the `domains` module), sorted by name; over the native client, awaited, when
    /// it is open, else through the library, bounded and counted like the stats.
    async fn list_domains(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        if let Some(answer) = domains::native_list(&self.sup).await {
            return answer;
        }
        self.sup
            .bounded(None, domains::LIST_QUEUED, domains::list)
            .await
    }

    /// By UUID (any usual spelling) or name; `NoDomain` when unknown.
    async fn domain_xml(&self, uuid_or_name: &str) -> Result<String, HypervisorError> {
        if let Some(err) = domains::reject_early(uuid_or_name) {
            return Err(err);
        }
        if let Some(answer) = domains::native_xml(&self.sup, uuid_or_name).await {
            return answer;
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

    /// `virDomainGetJobStats` of one domain (by UUID); a domain found without a job, or
    /// gone, loses its job hint.
    async fn job_stats(&self, uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        let id = uuid.to_string();
        let out = self
            .sup
            .bounded(None, jobs::JOB_QUEUED, move |sup, live, progress| {
                jobs::job_stats(sup, live, progress, &id, false)
            })
            .await;
        if matches!(out, Ok(None) | Err(HypervisorError::NoDomain(_))) {
            self.sup.job_hints.forget(uuid);
        }
        out
    }

    /// `virDomainGetJobStats(…, VIR_DOMAIN_JOB_STATS_COMPLETED)` of one domain.
    async fn completed_job_stats(&self, uuid: &str) -> Result<Option<JobStats>, HypervisorError> {
        let id = uuid.to_string();
        self.sup
            .bounded(None, jobs::JOB_QUEUED, move |sup, live, progress| {
                jobs::job_stats(sup, live, progress, &id, true)
            })
            .await
    }

    fn take_completed_jobs(&self) -> Vec<DomainRef> {
        self.sup.job_hints.take_completed()
    }

    fn metadata_changes(&self) -> Option<broadcast::Receiver<DomainRef>> {
        Some(self.sup.metadata_tx.subscribe())
    }

    fn job_hints(&self) -> Vec<DomainRef> {
        self.sup.job_hints.current()
    }

    async fn node_stats(&self) -> Result<NodeStats, HypervisorError> {
        if let Some(answer) = host::native_node_stats(&self.sup).await {
            return answer;
        }
        self.sup
            .bounded(None, host::NODE_QUEUED, host::node_stats)
            .await
    }

    async fn machine(&self) -> Result<Machine, HypervisorError> {
        self.sup
            .bounded(None, host::NODE_QUEUED, host::machine)
            .await
    }
}
