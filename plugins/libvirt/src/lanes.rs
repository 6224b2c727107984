//! Call lanes. Data calls never share a connection while they run: each concurrency
//! permit comes with a lane ([`Lease`]). Lane 0 is the supervised connection; the others
//! are plain read-only connections opened on first use and replaced along with the
//! supervised one (same generation). A lane that cannot open a connection shares the
//! supervised one and retries after [`LANE_RETRY`]. Why: see docs/libvirt-backend.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::live::Live;
use crate::settings::LibvirtSettings;

/// A lane whose connection could not be opened uses the supervised one meanwhile, and
/// tries again after this long.
const LANE_RETRY: Duration = Duration::from_secs(30);

/// The lanes of one backend: one per concurrency permit.
pub(crate) struct Lanes {
    slots: Mutex<Vec<Lane>>,
    settings: LibvirtSettings,
    /// The backend is shutting down: open no more connections.
    stopping: Arc<AtomicBool>,
}

impl Lanes {
    pub(crate) fn new(n: usize, settings: LibvirtSettings, stopping: Arc<AtomicBool>) -> Self {
        Self {
            slots: Mutex::new((0..n).map(|_| Lane::default()).collect()),
            settings,
            stopping,
        }
    }

    /// Takes every lane's own connection (at shutdown), to be closed by the caller.
    pub(crate) fn take_connections(&self) -> Vec<Arc<Live>> {
        lock(&self.slots)
            .iter_mut()
            .filter_map(|l| l.own.take())
            .collect()
    }
}

/// One lane: whether a call holds it, and its own connection (lanes ≥ 1).
#[derive(Default)]
struct Lane {
    busy: bool,
    /// Opened under the supervised connection's generation (the `Live` carries it).
    own: Option<Arc<Live>>,
    /// The last failed attempt to open `own`.
    failed_at: Option<Instant>,
}

/// A concurrency permit and the lane that goes with it, for one data call. Dropping it
/// frees the lane first, then the permit, so the next permit holder finds a free lane.
pub(crate) struct Lease {
    lanes: Arc<Lanes>,
    lane: usize,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Takes a free lane for `permit` (there is one per permit).
    pub(crate) fn new(lanes: &Arc<Lanes>, permit: OwnedSemaphorePermit) -> Self {
        let lane = {
            let mut slots = lock(&lanes.slots);
            let free = slots.iter().position(|l| !l.busy).unwrap_or(0);
            if let Some(l) = slots.get_mut(free) {
                l.busy = true;
            }
            free
        };
        Self {
            lanes: Arc::clone(lanes),
            lane,
            _permit: permit,
        }
    }

    /// The connection this call uses, on the supervised connection `primary`'s
    /// generation: `primary` itself for lane 0, else the lane's own (opened or replaced
    /// here — blocking), or `primary` when that cannot be opened.
    pub(crate) fn live(&self, primary: Arc<Live>) -> Arc<Live> {
        if self.lane == 0 {
            return primary;
        }
        let (stale, retry_due) = {
            let mut lanes = lock(&self.lanes.slots);
            let lane = &mut lanes[self.lane];
            match &lane.own {
                Some(own) if own.generation == primary.generation => return Arc::clone(own),
                _ => {}
            }
            let due = lane.failed_at.is_none_or(|t| t.elapsed() >= LANE_RETRY);
            (lane.own.take(), due)
        };
        // On this blocking thread: closing may do I/O.
        drop(stale);
        if !retry_due || self.lanes.stopping.load(Ordering::SeqCst) {
            return primary;
        }
        match Live::open_plain(&self.lanes.settings, primary.generation) {
            Ok(own) => {
                let own = Arc::new(own);
                let mut lanes = lock(&self.lanes.slots);
                let lane = &mut lanes[self.lane];
                lane.own = Some(Arc::clone(&own));
                lane.failed_at = None;
                own
            }
            Err(error) => {
                debug!(uri = %self.lanes.settings.uri, lane = self.lane, error,
                    "cannot open a connection for this call lane; sharing the supervised one");
                lock(&self.lanes.slots)[self.lane].failed_at = Some(Instant::now());
                primary
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.lanes.slots).get_mut(self.lane) {
            l.busy = false;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
