//! One open libvirt connection ([`Live`]), how a plain one is opened, and dropping
//! libvirt handles where blocking is allowed.

use std::sync::Arc;

use virt::connect::Connect;

use crate::ffi;
use crate::settings::LibvirtSettings;
use crate::wire::WireSlot;

/// One open connection. Dropping it deregisters the lifecycle callback, unregisters the
/// close callback and closes the connection, which may do I/O: drop it on a blocking
/// thread only.
pub(crate) struct Live {
    /// Declared first so they are dropped (deregistered) first, while the connection is
    /// still open. Callback ids belong to this connection only.
    pub(crate) lifecycle: Option<ffi::LifecycleRegistration>,
    /// Migration-iteration, job-completed and metadata-change callbacks, held for their
    /// `Drop` (deregistration).
    #[allow(dead_code)]
    pub(crate) job_events: Vec<ffi::DomainEventRegistration>,
    pub(crate) close: Option<ffi::CloseCallback>,
    pub(crate) conn: Connect,
    /// The native client beside `conn`, for the bulk statistics call (`wire`).
    pub(crate) wire: WireSlot,
    pub(crate) generation: u64,
}

impl Live {
    /// Opens a plain read-only connection for a lane (blocking): nothing registered,
    /// and no keepalive. The supervised connection's keepalive and close callback
    /// decide when the daemon is lost, and lanes are replaced along with it; a lane's
    /// library connection mostly idles (its statistics go over its native companion,
    /// which gives up on a silent daemon after the keepalive's span), and its pings
    /// cost the agent several event-loop wake-ups every interval, per lane.
    pub(crate) fn open_plain(settings: &LibvirtSettings, generation: u64) -> Result<Live, String> {
        let uri = settings.uri.as_str();
        let conn = Connect::open_read_only(Some(uri)).map_err(|e| e.message().to_string())?;
        Ok(Live {
            lifecycle: None,
            job_events: Vec::new(),
            close: None,
            conn,
            wire: WireSlot::open(settings),
            generation,
        })
    }
}

/// Drops `value` on a blocking thread: libvirt handles (domains, connections) may do
/// I/O when their last reference goes.
pub(crate) fn drop_blocking<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// Lets go of a reference to a connection where blocking is not allowed: when it was
/// the last one, the connection is closed on a blocking thread; otherwise nothing else
/// happens (and no thread is woken).
pub(crate) fn release(live: Arc<Live>) {
    if let Some(last) = Arc::into_inner(live) {
        drop_blocking(last);
    }
}

/// Drops a connection on a blocking thread (closing may do I/O).
pub(crate) fn retire(live: Arc<Live>) {
    drop_blocking(live);
}
