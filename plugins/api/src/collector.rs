//! Collector plugins: polled [`Collector`]s that the scheduler runs on an interval, and
//! push-style [`EventSource`]s that emit records when things happen.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::hypervisor::{DomainStats, Hypervisor, HypervisorError, StatsGroups};
use crate::metric::MetricDesc;
use crate::model::{DomainSamples, Record, Sample};
use crate::sink::Bus;

/// What one run of a collector returns.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    pub domains: Vec<DomainSamples>,
    pub host: Vec<Sample>,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    #[error("{0}")]
    Other(String),
}

/// Where a tick's bulk statistics come from. The core passes one that lets scheduled
/// ticks and live collections share a call in flight instead of issuing two at once.
#[async_trait]
pub trait StatsSource: Send + Sync + 'static {
    /// Statistics of every domain for `groups` (plus `StatsGroups::STATE`).
    async fn domain_stats(
        &self,
        groups: StatsGroups,
    ) -> Result<Arc<[DomainStats]>, HypervisorError>;
}

/// Shared by every collector that runs in one tick. The bulk statistics are fetched at
/// most once per tick, for the union of the groups all those collectors asked for.
pub struct CollectContext {
    hypervisor: Arc<dyn Hypervisor>,
    /// Fetches the bulk statistics; `None`: straight from the hypervisor.
    source: Option<Arc<dyn StatsSource>>,
    groups: StatsGroups,
    stats: OnceCell<Result<Arc<[DomainStats]>, HypervisorError>>,
    /// When the tick started.
    pub at: SystemTime,
    /// When this run must be finished.
    pub deadline: Instant,
}

impl CollectContext {
    pub fn new(hypervisor: Arc<dyn Hypervisor>, groups: StatsGroups, deadline: Instant) -> Self {
        Self {
            hypervisor,
            source: None,
            groups: groups | StatsGroups::STATE,
            stats: OnceCell::new(),
            at: SystemTime::now(),
            deadline,
        }
    }

    /// A context whose bulk statistics come from `source` (shared with other callers).
    pub fn with_source(
        hypervisor: Arc<dyn Hypervisor>,
        source: Arc<dyn StatsSource>,
        groups: StatsGroups,
        deadline: Instant,
    ) -> Self {
        let mut cx = Self::new(hypervisor, groups, deadline);
        cx.source = Some(source);
        cx
    }

    /// The tick's domain statistics (one libvirt round trip, shared).
    pub async fn domain_stats(&self) -> Result<Arc<[DomainStats]>, HypervisorError> {
        self.stats
            .get_or_init(|| async {
                match &self.source {
                    Some(source) => source.domain_stats(self.groups).await,
                    None => self
                        .hypervisor
                        .domain_stats(self.groups)
                        .await
                        .map(Arc::from),
                }
            })
            .await
            .clone()
    }

    /// The statistics if they were fetched in this tick (never triggers a call).
    pub fn fetched_stats(&self) -> Option<&Result<Arc<[DomainStats]>, HypervisorError>> {
        self.stats.get()
    }

    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hypervisor
    }
}

/// A polled collector. It declares its metrics once and returns values for them on
/// every run. `Sample::metric` is the index into [`Collector::metrics`].
#[async_trait]
pub trait Collector: Send + Sync + 'static {
    /// The metrics this collector reports, declared once.
    fn metrics(&self) -> &[MetricDesc];

    /// The libvirt statistics groups this collector reads from
    /// [`CollectContext::domain_stats`]. Collectors due in the same tick share one call.
    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::NONE
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError>;
}

/// What an [`EventSource`] gets to work with.
pub struct SourceContext {
    pub id: Arc<str>,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub bus: Bus,
    pub shutdown: CancellationToken,
}

impl SourceContext {
    /// Publishes a record to every sink (never blocks).
    pub fn emit(&self, record: Record) {
        self.bus.publish(record);
    }
}

/// A push-style collector (lifecycle events): runs until shutdown, emitting records.
#[async_trait]
pub trait EventSource: Send + 'static {
    /// Metrics it declares, if any (for documentation and sinks).
    fn metrics(&self) -> &[MetricDesc] {
        &[]
    }

    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), CollectError>;
}
