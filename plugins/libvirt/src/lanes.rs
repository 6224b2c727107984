//! Call lanes. Data calls never share a connection while they run: each concurrency
//! permit comes with a lane ([`Lease`]). Lane 0 is the supervised connection; the others
//! are plain read-only connections opened on first use and replaced along with the
//! supervised one (same generation). A lane that cannot open a connection shares the
//! supervised one and retries after [`LANE_RETRY`]. A lane's own connection unused for
//! [`LANE_IDLE`] is closed (reopened when next needed): an idle library connection
//! still costs the agent the daemon's keepalive probes, answered on libvirt's event
//! thread every few seconds. Why lanes: see docs/libvirt-backend.md.

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

/// A lane's own connection unused for this long is closed.
const LANE_IDLE: Duration = Duration::from_secs(30);

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
    /// When the last call on this lane ended (or began, while one runs).
    used_at: Option<Instant>,
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
    /// Closes (on a blocking thread) the other lanes' own connections idle for
    /// [`LANE_IDLE`].
    pub(crate) fn new(lanes: &Arc<Lanes>, permit: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        let (lane, idle) = {
            let mut slots = lock(&lanes.slots);
            let free = slots.iter().position(|l| !l.busy).unwrap_or(0);
            if let Some(l) = slots.get_mut(free) {
                l.busy = true;
                l.used_at = Some(now);
            }
            let idle: Vec<Arc<Live>> = slots
                .iter_mut()
                .skip(1)
                .filter(|l| {
                    !l.busy
                        && l.used_at
                            .is_some_and(|t| now.duration_since(t) >= LANE_IDLE)
                })
                .filter_map(|l| l.own.take())
                .collect();
            (free, idle)
        };
        for live in idle {
            debug!(uri = %lanes.settings.uri, "closing a call lane's connection unused for {LANE_IDLE:?}");
            crate::live::retire(live);
        }
        Self {
            lanes: Arc::clone(lanes),
            lane,
            _permit: permit,
        }
    }

    /// [`live`](Self::live) when that needs no blocking work: `primary` for lane 0, the
    /// lane's own connection when it is open on `primary`'s generation; else `None`.
    pub(crate) fn live_if_open(&self, primary: &Arc<Live>) -> Option<Arc<Live>> {
        if self.lane == 0 {
            return Some(Arc::clone(primary));
        }
        match &lock(&self.lanes.slots).get(self.lane)?.own {
            Some(own) if own.generation == primary.generation => Some(Arc::clone(own)),
            _ => None,
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
            l.used_at = Some(Instant::now());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    fn settings() -> LibvirtSettings {
        LibvirtSettings {
            uri: "test:///default".into(),
            ..LibvirtSettings::default()
        }
    }

    fn lease(lanes: &Arc<Lanes>, permits: &Arc<Semaphore>) -> Lease {
        let permit = Arc::clone(permits)
            .try_acquire_owned()
            .expect("a free permit");
        Lease::new(lanes, permit)
    }

    #[test]
    fn a_lane_connection_unused_for_a_while_is_closed_and_a_recent_one_kept() {
        let lanes = Arc::new(Lanes::new(3, settings(), Arc::new(AtomicBool::new(false))));
        let permits = Arc::new(Semaphore::new(3));
        let primary = Arc::new(Live::open_plain(&settings(), 0).expect("test driver"));
        // Three calls at once: lanes 0, 1 and 2; lanes 1 and 2 open their own.
        let held: Vec<Lease> = (0..3).map(|_| lease(&lanes, &permits)).collect();
        assert_eq!(held.iter().map(|l| l.lane).collect::<Vec<_>>(), [0, 1, 2]);
        for l in &held[1..] {
            let own = l.live(Arc::clone(&primary));
            assert!(!Arc::ptr_eq(&own, &primary), "lane {} has its own", l.lane);
            assert!(l
                .live_if_open(&primary)
                .is_some_and(|o| Arc::ptr_eq(&o, &own)));
        }
        drop(held);
        // Lane 2 was last used long ago; lane 1 just now.
        lock(&lanes.slots)[2].used_at = Some(Instant::now() - LANE_IDLE);
        let next = lease(&lanes, &permits);
        assert_eq!(next.lane, 0);
        let slots = lock(&lanes.slots);
        assert!(slots[1].own.is_some(), "recently used: kept");
        assert!(slots[2].own.is_none(), "idle: closed");
        drop(slots);
        // Reopened when next needed.
        let _a = lease(&lanes, &permits);
        let third = lease(&lanes, &permits);
        assert_eq!(third.lane, 2);
        assert!(third.live_if_open(&primary).is_none(), "not open yet");
        let own = third.live(Arc::clone(&primary));
        assert!(!Arc::ptr_eq(&own, &primary));
    }
}
