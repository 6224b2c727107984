//! The latest batch of every collector instance, which is what each send reports. A
//! batch that is not replaced for three of its collector's periods (at least three send
//! intervals) is dropped, so that a collector that keeps failing (libvirt gone) stops
//! being reported instead of repeating its last values forever; its VMs then count as
//! vanished (`up` 0).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vadvisor_api::Batch;

/// A batch is stale after this many periods without a successor.
pub const STALE_PERIODS: u32 = 3;

struct Entry {
    batch: Arc<Batch>,
    received: Instant,
    /// Time between the last two batches of this collector.
    period: Option<Duration>,
}

/// Latest batches by collector instance id.
pub struct Latest {
    entries: BTreeMap<Arc<str>, Entry>,
    /// The send interval: the shortest period assumed.
    min_period: Duration,
}

impl Latest {
    pub fn new(send_interval: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            min_period: send_interval,
        }
    }

    pub fn insert(&mut self, batch: Arc<Batch>, now: Instant) {
        let period = self
            .entries
            .get(&batch.collector)
            .map(|e| now.saturating_duration_since(e.received));
        self.entries.insert(
            batch.collector.clone(),
            Entry {
                batch,
                received: now,
                period,
            },
        );
    }

    /// Drops stale batches.
    pub fn expire(&mut self, now: Instant) {
        let min = self.min_period;
        self.entries.retain(|_, e| {
            let period = e.period.unwrap_or(min).max(min);
            now.saturating_duration_since(e.received) <= period * STALE_PERIODS
        });
    }

    /// The batches, in collector id order.
    pub fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.entries.values().map(|e| e.batch.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn batch(id: &str) -> Arc<Batch> {
        Arc::new(Batch {
            collector: id.into(),
            metrics: Arc::from(vec![]),
            at: SystemTime::now(),
            domains: vec![],
            host: vec![],
        })
    }

    #[test]
    fn keeps_the_latest_per_collector_and_drops_stale_ones() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Latest::new(10 * s);
        l.insert(batch("cpu"), t0);
        l.insert(batch("net"), t0);
        l.insert(batch("cpu"), t0 + 60 * s);
        assert_eq!(l.batches().count(), 2);
        l.expire(t0 + 30 * s);
        assert_eq!(l.batches().count(), 2, "within 3 send intervals");
        l.expire(t0 + 31 * s);
        assert_eq!(
            l.batches()
                .map(|b| b.collector.to_string())
                .collect::<Vec<_>>(),
            vec!["cpu"]
        );
        // cpu runs every 60 s: its batch lives 180 s.
        l.expire(t0 + 60 * s + 180 * s);
        assert_eq!(l.batches().count(), 1);
        l.expire(t0 + 60 * s + 181 * s);
        assert_eq!(l.batches().count(), 0);
    }
}
