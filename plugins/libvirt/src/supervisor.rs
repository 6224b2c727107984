//! The state one libvirt backend shares between its supervisor loop (`connection`),
//! its data calls and its handle: the current connection, the connection status and
//! its counters, the permits and lanes, and the per-call memories (hedging, busy
//! domains, groups seen). The loop itself is in `connection`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, warn};
use vadvisor_api::ConnectionStatus;

use crate::hedge::Hedging;
use crate::job_hints::JobHints;
use crate::lanes::Lanes;
use crate::lifecycle::EventHub;
use crate::live::Live;
use crate::partial::GroupMemory;
use crate::per_domain::Busy;
use crate::settings::LibvirtSettings;
use crate::shards::ShardPlan;
use crate::vcpu_threads::VcpuThreads;

/// A stats call that finds no connection waits at most this long for the reconnect
/// attempt it asked for (less when `call_timeout` is short).
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// `min` less a 10 % tolerance for timer jitter.
pub(crate) fn with_tolerance(min: Duration) -> Duration {
    min.saturating_sub(min / 10)
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) connected: bool,
    pub(crate) ever_connected: bool,
    pub(crate) reconnects: u64,
    pub(crate) last_error: Option<String>,
    /// The current outage has already been logged at `warn!`.
    pub(crate) outage_logged: bool,
}

/// State shared by the supervisor task, stats calls and the handle.
pub(crate) struct Supervisor {
    pub(crate) settings: LibvirtSettings,
    pub(crate) live: Mutex<Option<Arc<Live>>>,
    pub(crate) state: Mutex<State>,
    pub(crate) calls: AtomicU64,
    /// Of `calls`, those made over the native client (`wire`).
    pub(crate) native_calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) generation: AtomicU64,
    pub(crate) last_attempt: Mutex<Option<Instant>>,
    /// Wakes the supervisor: connection lost, close callback fired, early retry, shutdown.
    pub(crate) wake: Arc<Notify>,
    pub(crate) connected_tx: watch::Sender<bool>,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) permits: Arc<Semaphore>,
    /// One lane per permit (see `Lease`).
    pub(crate) lanes: Arc<Lanes>,
    /// Lifecycle events: the broadcast channel, the domain snapshot, reconciliation.
    pub(crate) events: Arc<EventHub>,
    /// The last reconciliation failed: retry at the next health check.
    pub(crate) reconcile_due: AtomicBool,
    /// Registering the lifecycle callback failed before (logged at `warn!` once).
    pub(crate) events_warned: AtomicBool,
    /// Connection attempts finished so far (successful or not).
    pub(crate) attempts_done: watch::Sender<u64>,
    /// Hedged bulk calls: recent latencies, counters.
    pub(crate) hedging: Hedging,
    /// Domains whose per-domain fallback call has not returned.
    pub(crate) busy: Arc<Busy>,
    /// Groups each domain reported in full on the current connection.
    pub(crate) groups_seen: Mutex<GroupMemory>,
    /// Domains that job events say run a job.
    pub(crate) job_hints: Arc<JobHints>,
    /// Metadata-change events, by domain.
    pub(crate) metadata_tx: tokio::sync::broadcast::Sender<vadvisor_api::DomainRef>,
    /// The host's CPU count (caps `bulk_shards: auto`).
    pub(crate) cpus: usize,
    /// Which shard asks for which domain, from the last collection's reply.
    shard_plan: Mutex<Arc<ShardPlan>>,
    /// The running domains' vCPU threads, when they are read here (`vcpu_threads`).
    pub(crate) vcpu_threads: Mutex<VcpuThreads>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    pub(crate) fn new(settings: LibvirtSettings) -> Self {
        let n = settings.max_concurrent_calls.max(1);
        let permits = Arc::new(Semaphore::new(n));
        let stopping = Arc::new(AtomicBool::new(false));
        let lanes = Arc::new(Lanes::new(n, settings.clone(), Arc::clone(&stopping)));
        let vcpu_threads = VcpuThreads::for_uri(&settings.uri);
        Self {
            settings,
            live: Mutex::new(None),
            state: Mutex::new(State::default()),
            calls: AtomicU64::new(0),
            native_calls: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_attempt: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            connected_tx: watch::channel(false).0,
            stopping,
            permits,
            lanes,
            events: Arc::new(EventHub::new()),
            reconcile_due: AtomicBool::new(false),
            events_warned: AtomicBool::new(false),
            attempts_done: watch::channel(0).0,
            hedging: Hedging::default(),
            busy: Arc::new(Busy::default()),
            groups_seen: Mutex::new(GroupMemory::default()),
            job_hints: Arc::new(JobHints::default()),
            metadata_tx: tokio::sync::broadcast::channel(256).0,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            shard_plan: Mutex::new(Arc::new(ShardPlan::default())),
            vcpu_threads,
        }
    }

    /// The shard plan made from the last collection's reply.
    pub(crate) fn shard_plan(&self) -> Arc<ShardPlan> {
        Arc::clone(&lock(&self.shard_plan))
    }

    pub(crate) fn set_shard_plan(&self, plan: ShardPlan) {
        *lock(&self.shard_plan) = Arc::new(plan);
    }

    /// Counts `n` libvirt API calls.
    pub(crate) fn count_calls(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts calls made over the native client (they count as calls too).
    pub(crate) fn count_native_calls(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
        self.native_calls.fetch_add(n, Ordering::Relaxed);
    }

    /// The open connection, if any.
    pub(crate) fn current(&self) -> Option<Arc<Live>> {
        lock(&self.live).clone()
    }

    pub(crate) fn status(&self) -> ConnectionStatus {
        let st = lock(&self.state);
        ConnectionStatus {
            connected: st.connected,
            reconnects: st.reconnects,
            calls: self.calls.load(Ordering::Relaxed),
            native_calls: self.native_calls.load(Ordering::Relaxed),
            last_error: if st.connected {
                None
            } else {
                st.last_error.clone()
            },
        }
    }

    /// Why there is no connection right now.
    pub(crate) fn disconnected_reason(&self) -> String {
        if self.stopping.load(Ordering::SeqCst) {
            return "the libvirt backend was shut down".to_string();
        }
        lock(&self.state)
            .last_error
            .clone()
            .unwrap_or_else(|| "connecting".to_string())
    }

    /// A stats call found no connection: ask for an early attempt, at most one per
    /// `reconnect_min` (with a 10 % tolerance). True if one was asked for.
    pub(crate) fn request_early_retry(&self) -> bool {
        let min = with_tolerance(self.settings.reconnect_min);
        let due = lock(&self.last_attempt).is_none_or(|t| t.elapsed() >= min);
        let due = due && !self.stopping.load(Ordering::SeqCst);
        if due {
            self.wake.notify_one();
        }
        due
    }

    /// No connection: asks for an early attempt and, if one is due, waits for it to
    /// finish (at most `RECONNECT_WAIT`, or a quarter of `call_timeout` if that is
    /// shorter). True if connected afterwards. When libvirtd is absent the attempt fails
    /// at once, so this costs a few milliseconds; when it is back, the caller collects in
    /// the same tick instead of the next one.
    pub(crate) async fn reconnect_now(&self) -> bool {
        let mut done = self.attempts_done.subscribe();
        let before = *done.borrow_and_update();
        if !self.request_early_retry() {
            return false;
        }
        let mut connected = self.connected_tx.subscribe();
        let cap = RECONNECT_WAIT.min(self.settings.call_timeout / 4);
        let _ = tokio::time::timeout(cap, async {
            tokio::select! {
                _ = done.wait_for(|n| *n > before) => {}
                _ = connected.wait_for(|c| *c) => {}
            }
        })
        .await;
        self.current().is_some()
    }

    pub(crate) fn attempt_finished(&self) {
        self.attempts_done.send_modify(|n| *n += 1);
    }

    /// Declares connection `generation` dead (no-op if it was already replaced). Returns
    /// the retired connection so the caller can drop it where blocking is allowed.
    pub(crate) fn mark_lost(&self, generation: u64, reason: &str) -> Option<Arc<Live>> {
        let retired = {
            let mut live = lock(&self.live);
            match live.as_ref() {
                Some(l) if l.generation == generation => live.take(),
                _ => return None,
            }
        };
        {
            let mut st = lock(&self.state);
            st.connected = false;
            st.last_error = Some(reason.to_string());
            st.outage_logged = true;
        }
        self.connected_tx.send_replace(false);
        warn!(uri = %self.settings.uri, reason, "libvirt connection lost; reconnecting");
        self.wake.notify_one();
        retired
    }

    pub(crate) fn set_connected(&self, live: Arc<Live>) {
        *lock(&self.live) = Some(live);
        let mut st = lock(&self.state);
        if st.ever_connected {
            st.reconnects += 1;
            info!(uri = %self.settings.uri, reconnects = st.reconnects, "reconnected to libvirt");
        } else {
            info!(uri = %self.settings.uri, "connected to libvirt (read-only)");
        }
        st.connected = true;
        st.ever_connected = true;
        st.last_error = None;
        st.outage_logged = false;
        drop(st);
        self.connected_tx.send_replace(true);
    }

    pub(crate) fn set_failed(&self, error: &str, retry_in: Duration) {
        let mut st = lock(&self.state);
        st.connected = false;
        st.last_error = Some(error.to_string());
        if st.outage_logged {
            debug!(uri = %self.settings.uri, error, ?retry_in, "libvirt connection attempt failed");
        } else {
            st.outage_logged = true;
            warn!(uri = %self.settings.uri, error, "cannot connect to libvirt; retrying");
        }
    }
}
