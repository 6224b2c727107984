//! The `prometheus` sink's loop (keeps the latest batches, counts lifecycle events) and
//! the state it shares with the scrape handler.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vadvisor_api::{async_trait, HealthView, Hypervisor, LiveCollect, Record, Sink, SinkInput};

use super::metadata::LabelPaths;
use super::process::ProcessStats;
use super::state::State;

/// How long one reading of `/proc/self` serves scrapes (reading it costs ~50 µs).
const PROCESS_TTL: Duration = Duration::from_secs(1);

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// The last `/proc/self` reading and when it was taken.
    pub(super) process: Mutex<Option<(Instant, ProcessStats)>>,
    /// Set in live mode.
    pub(super) live: Option<Arc<dyn LiveCollect>>,
    pub(super) health: HealthView,
    pub(super) hypervisor: Arc<dyn Hypervisor>,
    /// `vm_info` labels from the domains' metadata (empty: none configured).
    pub(super) metadata: LabelPaths,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process figures, read at most once per [`PROCESS_TTL`].
    pub(super) fn process(&self, now: Instant) -> ProcessStats {
        let mut cached = self.process.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, stats)) if now.saturating_duration_since(*at) < PROCESS_TTL => stats.clone(),
            _ => {
                let stats = ProcessStats::read();
                *cached = Some((now, stats.clone()));
                stats
            }
        }
    }
}

pub(super) struct PrometheusSink {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl Sink for PrometheusSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), String> {
        let live = self.shared.live.is_some();
        loop {
            tokio::select! {
                _ = input.shutdown.cancelled() => return Ok(()),
                record = input.records.recv() => match record {
                    // In live mode scrapes collect for themselves.
                    Some(Record::Batch(b)) if !live => self.shared.state().ingest(b, Instant::now()),
                    Some(Record::Event(e)) => self.shared.state().count_event(&e),
                    Some(Record::Spec(s)) if !self.shared.metadata.is_empty() => {
                        let labels = s.spec.as_ref().map(|v| self.shared.metadata.extract(v));
                        self.shared.state().set_info_labels(&s.domain.uuid, labels);
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }
}
