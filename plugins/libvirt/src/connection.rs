//! The connection supervisor: [`LibvirtHypervisor`] owns one read-only libvirt
//! connection and keeps it alive.
//!
//! - Process-wide, once: libvirt's stderr error printing is silenced, the default event
//!   loop is registered and run on a `libvirt-events` thread (keepalive and the close
//!   callback need it), with a 1 s timer so the loop wakes regularly.
//! - A supervisor task opens the connection off the async runtime (`spawn_blocking`),
//!   sets keepalive (tolerating drivers without it), registers the close callback, and
//!   reconnects with exponential backoff (`reconnect_min`..`reconnect_max`) whenever the
//!   open fails, the close callback fires, a periodic `is_alive` check fails, or a stats
//!   call reports a connection-class error. After a loss the first attempt is immediate.
//! - On every new connection it also registers the lifecycle event callback (callback
//!   ids belong to one connection), whose sink only hands the event to the
//!   `lifecycle::EventHub` (never blocks), then lists the domains and lets the hub emit
//!   what changed while disconnected as `reconciled` events — register first, then
//!   list, then diff, with the connection's live events held back meanwhile. Only then
//!   is the connection reported as connected. The registration lives in `Live` and is
//!   dropped (deregistered) before the connection is closed. A failed listing is retried
//!   at the next health check; on a driver without lifecycle events every health check
//!   lists and reconciles, so changes still arrive (as reconciled events).
//! - While disconnected, a stats call may trigger an early attempt, at most one per
//!   `reconnect_min` (less a 10 % tolerance, so a collector ticking every
//!   `reconnect_min` gets one attempt per tick, not one per two), and waits for that
//!   attempt (briefly: see `reconnect_now`), so the very tick that finds libvirtd back
//!   already collects — without waiting out a long backoff.
//! - Data calls never share a connection while they run: each concurrency permit comes
//!   with a *lane* (`Lease`). Lane 0 is the supervised connection above; the others are
//!   plain read-only connections opened on first use and replaced when the supervised
//!   connection is (same generation). Measured with libvirt 9.0: while one call hangs
//!   (a stopped QEMU), other calls on the *same* connection are randomly held up for a
//!   whole keepalive interval (a lost wake-up in the client's "buck passing"); on their
//!   own connection they are not. A lane that cannot open a connection of its own
//!   shares the supervised one (and retries after `LANE_RETRY`).
//! - Logging happens once per state change: `info!` on connect, `warn!` on loss or on the
//!   first failed attempt, `debug!` for every further attempt.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};
use vadvisor_api::{ConnectionStatus, HypervisorError};
use virt::connect::Connect;
use virt::sys;

use crate::calls::{Busy, Hedging};
use crate::domains;
use crate::ffi;
use crate::lifecycle::EventHub;
use crate::partial::GroupMemory;
use crate::settings::LibvirtSettings;

/// How often a healthy connection is checked with `virConnectIsAlive` (a local check).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// A stats call that finds no connection waits at most this long for the reconnect
/// attempt it asked for (less when `call_timeout` is short).
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// A lane whose connection could not be opened uses the supervised one meanwhile, and
/// tries again after this long.
const LANE_RETRY: Duration = Duration::from_secs(30);

/// `min` less a 10 % tolerance for timer jitter.
fn with_tolerance(min: Duration) -> Duration {
    min.saturating_sub(min / 10)
}

static LIBVIRT_INIT: Once = Once::new();

/// Process-wide libvirt setup; idempotent.
pub(crate) fn init_libvirt() {
    LIBVIRT_INIT.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            warn!(
                error = %e.message(),
                "cannot register libvirt's event loop: keepalive and close detection are off"
            );
            return;
        }
        if let Err(e) = ffi::add_wakeup_timer(1000) {
            debug!(error = %e.message(), "cannot add the libvirt event-loop wake-up timer");
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".to_string())
            .spawn(run_event_loop);
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the libvirt event-loop thread");
        }
    });
}

/// The `libvirt-events` thread: runs libvirt's default event loop forever (keepalive
/// probes, close callbacks). Callbacks run here and must never block.
fn run_event_loop() {
    loop {
        if let Err(e) = virt::event::event_run_default_impl() {
            debug!(error = %e.message(), "libvirt event loop iteration failed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Whether a libvirt error means the connection itself is unusable.
pub(crate) fn is_connection_error(code: u32, message: &str) -> bool {
    match code {
        sys::VIR_ERR_SYSTEM_ERROR
        | sys::VIR_ERR_RPC
        | sys::VIR_ERR_NO_CONNECT
        | sys::VIR_ERR_INVALID_CONN => true,
        sys::VIR_ERR_INTERNAL_ERROR | sys::VIR_ERR_OPERATION_INVALID => {
            let m = message.to_ascii_lowercase();
            [
                "end of file",
                "client socket is closed",
                "connection closed",
                "broken pipe",
                "connection reset",
                "not connected",
                "keepalive",
            ]
            .iter()
            .any(|needle| m.contains(needle))
        }
        _ => false,
    }
}

/// A short, human-readable text for a close-callback reason.
fn close_reason_text(reason: i32) -> String {
    match u32::try_from(reason) {
        Ok(sys::VIR_CONNECT_CLOSE_REASON_ERROR) => "connection closed: I/O error".into(),
        Ok(sys::VIR_CONNECT_CLOSE_REASON_EOF) => {
            "connection closed: end of file from libvirtd".into()
        }
        Ok(sys::VIR_CONNECT_CLOSE_REASON_KEEPALIVE) => {
            "connection closed: keepalive timeout".into()
        }
        Ok(sys::VIR_CONNECT_CLOSE_REASON_CLIENT) => "connection closed by the client".into(),
        _ => format!("connection closed (reason {reason})"),
    }
}

/// One open connection. Dropping it deregisters the lifecycle callback, unregisters the
/// close callback and closes the connection, which may do I/O: drop it on a blocking
/// thread only.
pub(crate) struct Live {
    /// Declared first so they are dropped (deregistered) first, while the connection is
    /// still open. Callback ids belong to this connection only.
    lifecycle: Option<ffi::LifecycleRegistration>,
    close: Option<ffi::CloseCallback>,
    pub(crate) conn: Connect,
    pub(crate) generation: u64,
}

#[derive(Default)]
struct State {
    connected: bool,
    ever_connected: bool,
    reconnects: u64,
    last_error: Option<String>,
    /// The current outage has already been logged at `warn!`.
    outage_logged: bool,
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
    sup: Arc<Supervisor>,
    lane: usize,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Takes a free lane for `permit` (there is one per permit).
    pub(crate) fn new(sup: &Arc<Supervisor>, permit: OwnedSemaphorePermit) -> Self {
        let lane = {
            let mut lanes = lock(&sup.lanes);
            let free = lanes.iter().position(|l| !l.busy).unwrap_or(0);
            if let Some(l) = lanes.get_mut(free) {
                l.busy = true;
            }
            free
        };
        Self {
            sup: Arc::clone(sup),
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
            let mut lanes = lock(&self.sup.lanes);
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
        if !retry_due || self.sup.stopping.load(Ordering::SeqCst) {
            return primary;
        }
        match self.sup.open_lane(primary.generation) {
            Ok(own) => {
                let own = Arc::new(own);
                let mut lanes = lock(&self.sup.lanes);
                let lane = &mut lanes[self.lane];
                lane.own = Some(Arc::clone(&own));
                lane.failed_at = None;
                own
            }
            Err(error) => {
                debug!(uri = %self.sup.settings.uri, lane = self.lane, error,
                    "cannot open a connection for this call lane; sharing the supervised one");
                lock(&self.sup.lanes)[self.lane].failed_at = Some(Instant::now());
                primary
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(l) = lock(&self.sup.lanes).get_mut(self.lane) {
            l.busy = false;
        }
    }
}

/// State shared by the supervisor task, stats calls and the handle.
pub(crate) struct Supervisor {
    pub(crate) settings: LibvirtSettings,
    live: Mutex<Option<Arc<Live>>>,
    state: Mutex<State>,
    calls: AtomicU64,
    attempts: AtomicU64,
    generation: AtomicU64,
    last_attempt: Mutex<Option<Instant>>,
    /// Wakes the supervisor: connection lost, close callback fired, early retry, shutdown.
    wake: Arc<Notify>,
    connected_tx: watch::Sender<bool>,
    stopping: AtomicBool,
    pub(crate) permits: Arc<Semaphore>,
    /// One lane per permit (see `Lease`).
    lanes: Mutex<Vec<Lane>>,
    /// Lifecycle events: the broadcast channel, the domain snapshot, reconciliation.
    pub(crate) events: Arc<EventHub>,
    /// The last reconciliation failed: retry at the next health check.
    reconcile_due: AtomicBool,
    /// Registering the lifecycle callback failed before (logged at `warn!` once).
    events_warned: AtomicBool,
    /// Connection attempts finished so far (successful or not).
    attempts_done: watch::Sender<u64>,
    /// Hedged bulk calls: recent latencies, counters.
    pub(crate) hedging: Hedging,
    /// Domains whose per-domain fallback call has not returned.
    pub(crate) busy: Arc<Busy>,
    /// Groups each domain reported in full on the current connection.
    pub(crate) groups_seen: Mutex<GroupMemory>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Supervisor {
    fn new(settings: LibvirtSettings) -> Self {
        let n = settings.max_concurrent_calls.max(1);
        let permits = Arc::new(Semaphore::new(n));
        let lanes = Mutex::new((0..n).map(|_| Lane::default()).collect());
        Self {
            settings,
            live: Mutex::new(None),
            state: Mutex::new(State::default()),
            calls: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_attempt: Mutex::new(None),
            wake: Arc::new(Notify::new()),
            connected_tx: watch::channel(false).0,
            stopping: AtomicBool::new(false),
            permits,
            lanes,
            events: Arc::new(EventHub::new()),
            reconcile_due: AtomicBool::new(false),
            events_warned: AtomicBool::new(false),
            attempts_done: watch::channel(0).0,
            hedging: Hedging::default(),
            busy: Arc::new(Busy::default()),
            groups_seen: Mutex::new(GroupMemory::default()),
        }
    }

    /// Counts `n` libvirt API calls.
    pub(crate) fn count_calls(&self, n: u64) {
        self.calls.fetch_add(n, Ordering::Relaxed);
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

    fn attempt_finished(&self) {
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

    /// Opens a plain read-only connection for a lane (blocking): keepalive, nothing
    /// registered.
    fn open_lane(&self, generation: u64) -> Result<Live, String> {
        let uri = self.settings.uri.as_str();
        let conn = Connect::open_read_only(Some(uri)).map_err(|e| e.message().to_string())?;
        if self.settings.keepalive_interval > 0 {
            let _ = conn.set_keep_alive(
                self.settings.keepalive_interval,
                self.settings.keepalive_count,
            );
        }
        Ok(Live {
            lifecycle: None,
            close: None,
            conn,
            generation,
        })
    }

    /// Opens, configures and registers one connection (blocking). Also starts its
    /// reconciliation: the returned token is for `EventHub::finish`/`abort`.
    fn open_blocking(&self) -> Result<(Live, u64), String> {
        let uri = self.settings.uri.as_str();
        let conn = Connect::open_read_only(Some(uri)).map_err(|e| e.message().to_string())?;
        if self.settings.keepalive_interval > 0 {
            if let Err(e) = conn.set_keep_alive(
                self.settings.keepalive_interval,
                self.settings.keepalive_count,
            ) {
                debug!(uri, error = %e.message(), "keepalive not available on this connection");
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // The callback runs on the event-loop thread: it only pokes the supervisor.
        let wake = Arc::clone(&self.wake);
        let close = match ffi::CloseCallback::register(&conn, move |_| wake.notify_one()) {
            Ok(c) => Some(c),
            Err(e) => {
                debug!(uri, error = %e.message(), "cannot register the close callback");
                None
            }
        };
        // Hold this connection's events back until the domains are listed and diffed
        // (`reconcile`), so nothing between registration and listing is lost.
        let hold = self.events.begin(generation);
        let hub = Arc::clone(&self.events);
        let lifecycle = match ffi::LifecycleRegistration::register(&conn, move |raw| {
            hub.deliver(generation, raw)
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                if self.events_warned.swap(true, Ordering::SeqCst) {
                    debug!(uri, error = %e.message(), "cannot register for lifecycle events");
                } else {
                    warn!(
                        uri,
                        error = %e.message(),
                        "cannot register for lifecycle events: only reconciled ones will be reported"
                    );
                }
                None
            }
        };
        Ok((
            Live {
                lifecycle,
                close,
                conn,
                generation,
            },
            hold,
        ))
    }

    /// Lists the domains on connection `live` and emits what changed since the last
    /// snapshot as reconciled events (`EventHub::finish`); on failure releases the held
    /// events and marks a retry for the next health check. Returns the listing's error.
    async fn reconcile(
        self: &Arc<Self>,
        live: &Arc<Live>,
        hold: u64,
    ) -> Result<(), HypervisorError> {
        let listed = self
            .bounded(Some(Arc::clone(live)), domains::LIST_QUEUED, domains::list)
            .await;
        match listed {
            Ok(entries) => {
                self.reconcile_due.store(false, Ordering::SeqCst);
                if let Some(n @ 1..) = self.events.finish(hold, &entries) {
                    info!(
                        uri = %self.settings.uri,
                        events = n,
                        "domain changes libvirt did not report as events (connection lost, or \
                         no event support) emitted as reconciled lifecycle events"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.events.abort(hold);
                self.reconcile_due.store(true, Ordering::SeqCst);
                debug!(uri = %self.settings.uri, error = %e, "cannot list domains to reconcile lifecycle events; will retry");
                Err(e)
            }
        }
    }

    fn set_connected(&self, live: Arc<Live>) {
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

    fn set_failed(&self, error: &str, retry_in: Duration) {
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

    /// The supervisor loop; returns on shutdown.
    async fn run(self: Arc<Self>) {
        let min = self.settings.reconnect_min.max(Duration::from_millis(10));
        let tolerant_min = with_tolerance(min);
        let max = self.settings.reconnect_max.max(min);
        let mut backoff = min;
        while !self.stopping.load(Ordering::SeqCst) {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            *lock(&self.last_attempt) = Some(Instant::now());
            let me = Arc::clone(&self);
            let opened = tokio::task::spawn_blocking(move || {
                me.open_blocking()
                    .map(|(live, hold)| (Arc::new(live), hold))
            })
            .await
            .unwrap_or_else(|e| Err(format!("connection attempt panicked: {e}")));
            match opened {
                Ok((live, hold)) => {
                    if self.stopping.load(Ordering::SeqCst) {
                        self.events.abort(hold);
                        retire(live);
                        self.attempt_finished();
                        break;
                    }
                    // Register (done), list, diff; only then report the connection, so
                    // `wait_connected` means "connected, events registered, snapshot taken".
                    // A listing that finds the new connection dead is a failed attempt.
                    if let Err(HypervisorError::Disconnected(error)) =
                        self.reconcile(&live, hold).await
                    {
                        retire(live);
                        self.set_failed(&error, backoff);
                        self.attempt_finished();
                        self.wait_before_retry(backoff, tolerant_min).await;
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                    self.set_connected(Arc::clone(&live));
                    self.attempt_finished();
                    backoff = min;
                    self.watch(live).await;
                    // Lost (or stopping): the next attempt is immediate.
                }
                Err(error) => {
                    self.set_failed(&error, backoff);
                    self.attempt_finished();
                    self.wait_before_retry(backoff, tolerant_min).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        if let Some(live) = lock(&self.live).take() {
            retire(live);
        }
        let lane_connections: Vec<Arc<Live>> = lock(&self.lanes)
            .iter_mut()
            .filter_map(|l| l.own.take())
            .collect();
        for live in lane_connections {
            retire(live);
        }
        let mut st = lock(&self.state);
        st.connected = false;
        st.last_error = Some("the libvirt backend was shut down".to_string());
        drop(st);
        self.connected_tx.send_replace(false);
        debug!(uri = %self.settings.uri, "libvirt supervisor stopped");
    }

    /// Sleeps `backoff` after a failed attempt. A wake-up (early-retry request,
    /// shutdown) cuts it short, but never to less than `min` (`reconnect_min` less the
    /// tolerance) after the last attempt, so stale or repeated wake-ups cannot make the
    /// supervisor spin.
    async fn wait_before_retry(&self, backoff: Duration, min: Duration) {
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.wake.notified() => {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let since = lock(&self.last_attempt).map(|t| t.elapsed());
                    if since.is_none_or(|s| s >= min) {
                        return;
                    }
                }
            }
        }
    }

    /// Waits until connection `live` is lost or the supervisor stops.
    async fn watch(self: &Arc<Self>, live: Arc<Live>) {
        let generation = live.generation;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    let l = Arc::clone(&live);
                    let alive = tokio::task::spawn_blocking(move || l.conn.is_alive())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.message().to_string()));
                    match alive {
                        // Retry a failed reconciliation; without event support, poll: each
                        // check reports what changed as reconciled events.
                        Ok(true) if self.reconcile_due.load(Ordering::SeqCst)
                            || live.lifecycle.is_none() =>
                        {
                            let hold = self.events.begin(generation);
                            let _ = self.reconcile(&live, hold).await;
                        }
                        Ok(true) => {}
                        Ok(false) => self.lose(generation, "connection is no longer alive"),
                        Err(e) => self.lose(generation, &e),
                    }
                }
            }
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            if let Some(reason) = live.close.as_ref().and_then(|c| c.fired()) {
                self.lose(generation, &close_reason_text(reason));
            }
            let still_current = lock(&self.live)
                .as_ref()
                .is_some_and(|l| l.generation == generation);
            if !still_current {
                break;
            }
        }
        retire(live);
    }

    fn lose(&self, generation: u64, reason: &str) {
        if let Some(old) = self.mark_lost(generation, reason) {
            retire(old);
        }
    }
}

/// Drops a connection on a blocking thread (closing may do I/O).
fn retire(live: Arc<Live>) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(move || drop(live));
        }
        Err(_) => drop(live),
    }
}

/// The libvirt [`vadvisor_api::Hypervisor`]: one supervised, read-only connection, bulk
/// statistics with a per-domain fallback (see the `stats` module).
pub struct LibvirtHypervisor {
    pub(crate) sup: Arc<Supervisor>,
}

impl LibvirtHypervisor {
    /// Starts the backend and returns at once; the first connection attempt starts
    /// immediately in the background. Must be called inside a tokio runtime.
    pub fn start(settings: LibvirtSettings) -> Arc<LibvirtHypervisor> {
        init_libvirt();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_classified() {
        assert!(is_connection_error(
            sys::VIR_ERR_SYSTEM_ERROR,
            "Cannot recv data: Connection reset by peer"
        ));
        assert!(is_connection_error(sys::VIR_ERR_RPC, "anything"));
        assert!(is_connection_error(
            sys::VIR_ERR_NO_CONNECT,
            "no connection driver available"
        ));
        assert!(is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "End of file while reading data: Input/output error"
        ));
        assert!(is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "client socket is closed"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_INTERNAL_ERROR,
            "unable to execute QEMU command"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_NO_DOMAIN,
            "Domain not found"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_OPERATION_INVALID,
            "domain is not running"
        ));
        assert!(!is_connection_error(
            sys::VIR_ERR_NO_SUPPORT,
            "this function is not supported"
        ));
    }

    #[test]
    fn close_reasons_are_named() {
        assert!(close_reason_text(1).contains("end of file"));
        assert!(close_reason_text(2).contains("keepalive"));
        assert!(close_reason_text(42).contains("42"));
    }
}
