//! The connection supervisor loop: opens the read-only connection off the runtime,
//! sets keepalive, registers the close and lifecycle callbacks, lists the domains to
//! reconcile lifecycle events, and reconnects with exponential backoff
//! (`reconnect_min`..`reconnect_max`) when the open fails, the close callback fires, a
//! periodic `is_alive` check fails or a call reports a connection-class error. The
//! first attempt after a loss is immediate. Logs once per state change. The reasoning
//! (event ordering, early retries) is in docs/libvirt-backend.md.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vadvisor_api::HypervisorError;
use virt::connect::Connect;

use crate::domains;
use crate::errors::close_reason_text;
use crate::ffi;
use crate::live::{retire, Live};
use crate::supervisor::{lock, with_tolerance, Supervisor};
use crate::tick_timer::TickTimer;
use crate::wire::WireSlot;

/// How often a healthy connection is checked with `virConnectIsAlive` (a local check).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
impl Supervisor {
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
        // Job hints: which domains run a migration (no job event: no hint, no error).
        let mut job_events = Vec::new();
        for kind in [
            ffi::DomainEventKind::MigrationIteration,
            ffi::DomainEventKind::JobCompleted,
        ] {
            let hints = Arc::clone(&self.job_hints);
            match ffi::DomainEventRegistration::register(&conn, kind, move |e| hints.deliver(e)) {
                Ok(r) => job_events.push(r),
                Err(e) => {
                    debug!(uri, error = %e.message(), ?kind, "cannot register for job events")
                }
            }
        }
        let metadata_tx = self.metadata_tx.clone();
        match ffi::DomainEventRegistration::register(
            &conn,
            ffi::DomainEventKind::MetadataChange,
            move |e| {
                let _ = metadata_tx.send(vadvisor_api::DomainRef::new(e.uuid, e.name));
            },
        ) {
            Ok(r) => job_events.push(r),
            Err(e) => {
                debug!(uri, error = %e.message(), "cannot register for metadata-change events")
            }
        }
        Ok((
            Live {
                lifecycle,
                job_events,
                close,
                conn,
                wire: WireSlot::open(&self.settings),
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

    /// The supervisor loop; returns on shutdown.
    pub(crate) async fn run(self: Arc<Self>) {
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
        let lane_connections = self.lanes.take_connections();
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
        // On a timer descriptor: tokio's wheel woke the runtime three times on the way
        // to each 5 s deadline (see `tick_timer`).
        let mut timer = TickTimer::new();
        loop {
            let next = Instant::now() + HEALTH_CHECK_INTERVAL;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = timer.sleep_until(next) => {
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
