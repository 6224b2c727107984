//! The discipline every data call follows ([`Supervisor::bounded`]): fail fast with
//! `Disconnected` (and ask for an early reconnect) when there is no connection, then a
//! concurrency permit (moved into the blocking closure, so a call that outlives its
//! deadline keeps holding it) and a `call_timeout` deadline around the permit wait plus
//! the blocking work. The timeout names the libvirt call that was running, or says the
//! call was still queued. [`Progress`] is how a call says which libvirt call it is in.
//! Calls the native client answers are awaited instead ([`Supervisor::native`]): no
//! permit, no lane, no blocking thread, the same deadline.
use std::sync::{Arc, Mutex};

use vadvisor_api::HypervisorError;

use crate::lanes::Lease;
use crate::live::{release, Live};
use crate::supervisor::Supervisor;
use crate::wire::{WireClient, WireError};

/// The bulk statistics call, as errors and logs name it.
pub(crate) const BULK_CALL: &str = "virConnectGetAllDomainStats";

/// The libvirt call a request is in, to name it when the deadline passes.
#[derive(Clone)]
pub(crate) struct Progress(Arc<Mutex<&'static str>>);

impl Progress {
    pub(crate) fn new(initial: &'static str) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub(crate) fn set(&self, call: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = call;
    }

    pub(crate) fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Supervisor {
    /// Runs `work` awaited on the current connection's native client, waiting while
    /// another awaited call has it, up to `wire::CLIENT_WAIT` (calls that come together
    /// take it one after the other; one stuck on a busy domain is not waited for); all
    /// of it within `call_timeout`, as [`Supervisor::bounded`] gives a
    /// library call (then `Timeout`, naming `call`), and each reply within the silence
    /// limit. A call cut off midway drops its client unsettled (closed: a reply may
    /// still be on its way). `None` when the library must answer: no connection, the
    /// client is not open or a blocking call has it, or it failed other than by a
    /// timeout.
    pub(crate) async fn native<T>(
        &self,
        call: &'static str,
        work: impl AsyncFnOnce(&mut WireClient) -> Result<T, WireError>,
    ) -> Option<Result<T, HypervisorError>> {
        let live = self.current()?;
        let timeout = self.settings.call_timeout;
        let answer = tokio::time::timeout(timeout, live.wire.awaited(&self.settings, call, work))
            .await
            .unwrap_or(Some(Err(HypervisorError::Timeout { call, timeout })));
        release(live);
        answer
    }

    /// Runs `work` on a blocking thread under a permit and the call deadline, on the
    /// current connection (or on `pinned`, the connection a reconciliation belongs to).
    /// `queued` names the wait for a permit in a timeout error.
    pub(crate) async fn bounded<T, F>(
        self: &Arc<Self>,
        pinned: Option<Arc<Live>>,
        queued: &'static str,
        work: F,
    ) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&Supervisor, &Live, &Progress) -> Result<T, HypervisorError> + Send + 'static,
    {
        if pinned.is_none() && self.current().is_none() {
            self.request_early_retry();
            return Err(HypervisorError::Disconnected(self.disconnected_reason()));
        }
        let timeout = self.settings.call_timeout;
        let progress = Progress::new(queued);
        let run = async {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| HypervisorError::Disconnected(self.disconnected_reason()))?;
            // Taken only now, and moved straight into the blocking closure, so the
            // connection is never dropped (closed) on a runtime thread.
            let Some(primary) = pinned.clone().or_else(|| self.current()) else {
                return Err(HypervisorError::Disconnected(self.disconnected_reason()));
            };
            let sup = Arc::clone(self);
            let progress2 = progress.clone();
            tokio::task::spawn_blocking(move || {
                let lease = Lease::new(&sup.lanes, permit);
                // A reconciliation lists on the connection it belongs to; anything else
                // on its lane's connection.
                let live = if pinned.is_some() {
                    primary
                } else {
                    lease.live(primary)
                };
                work(&sup, &live, &progress2)
            })
            .await
            .map_err(|e| HypervisorError::Call {
                call: progress.get(),
                message: format!("worker failed: {e}"),
            })?
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(HypervisorError::Timeout {
                call: progress.get(),
                timeout,
            }),
        }
    }
}
