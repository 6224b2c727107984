//! The native statistics path: libvirt's RPC protocol spoken directly over the local
//! daemon's unix socket, read-only, instead of through libvirt's client library (whose
//! reply decoding, per-value allocations and event-loop wake-ups were most of a tick's
//! CPU: docs/performance.md#native-statistics-client). The bulk statistics call, its
//! shard listing and the host collector's node counters go this way; everything else
//! (events, domain XML, the per-domain fallback) stays on the library connection.
//! [`WireSlot`] is one library connection's native companion: opened right after it,
//! dropped on an I/O or protocol failure, and then the library answers instead (the
//! native client is tried again after [`RETRY_AFTER`]).

mod client;
mod endpoint;
mod protocol;
mod xdr;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

pub use client::{WireClient, WireError};
pub use endpoint::endpoint;
pub use protocol::DomainId;

use crate::settings::{LibvirtSettings, StatsTransport};

/// After a failure, the library answers for this long before the native client is
/// tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Said once per process: which socket the native client reads from, and its first
/// failure (later ones are debug lines).
static ANNOUNCED: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);

enum State {
    /// Not opened yet.
    Closed,
    Open(WireClient),
    /// Failed at this instant: the library answers until [`RETRY_AFTER`] has passed.
    Failed(Instant),
    /// The URI is not a local socket (or the setting says `library`): never.
    Off,
}

/// A library connection's native companion.
pub(crate) struct WireSlot {
    state: Mutex<State>,
}

impl WireSlot {
    /// Opens the native client beside a library connection just opened (blocking), so
    /// a daemon that hangs later hangs an open connection, not a connect.
    pub(crate) fn open(settings: &LibvirtSettings) -> Self {
        let mut state = match settings.stats_transport {
            StatsTransport::Auto => State::Closed,
            StatsTransport::Library => State::Off,
        };
        // A failure is logged and retried later; the library answers meanwhile.
        let _ = connect_if_due(settings, &mut state);
        Self {
            state: Mutex::new(state),
        }
    }

    /// Runs `call` on the open native client (reopening it first if due), blocking.
    /// `None` when the native path is not available now (not a local socket, failed
    /// recently, or in use by another call sharing this connection): the caller uses the
    /// library. A failed call drops the client; the error is returned for the caller to
    /// log or to fall back on.
    pub(crate) fn call<T>(
        &self,
        settings: &LibvirtSettings,
        call: impl FnOnce(&mut WireClient) -> Result<T, WireError>,
    ) -> Option<Result<T, WireError>> {
        let mut state = self.state.try_lock().ok()?;
        if let Err(e) = connect_if_due(settings, &mut state) {
            return Some(Err(e));
        }
        let State::Open(client) = &mut *state else {
            return None;
        };
        let result = call(client);
        if let Err(e) = &result {
            note_failure(settings, e);
            // A remote error leaves the connection in step: only I/O and protocol
            // failures drop it (a reply may still be on its way).
            if !matches!(e, WireError::Remote(_)) {
                *state = State::Failed(Instant::now());
            }
        }
        Some(result)
    }
}

/// Opens the client when `state` says it is closed, or failed long enough ago; an
/// error only when a connect was tried and failed.
fn connect_if_due(settings: &LibvirtSettings, state: &mut State) -> Result<(), WireError> {
    match state {
        State::Off | State::Open(_) => return Ok(()),
        State::Failed(at) if at.elapsed() < RETRY_AFTER => return Ok(()),
        State::Closed | State::Failed(_) => {}
    }
    let Some(ep) = endpoint(&settings.uri, Path::exists) else {
        debug!(uri = %settings.uri, "not a local libvirt socket: statistics go through libvirt's client library");
        *state = State::Off;
        return Ok(());
    };
    match WireClient::connect(&ep, silence_limit(settings)) {
        Ok(c) => {
            if !ANNOUNCED.swap(true, Ordering::Relaxed) {
                info!(uri = %settings.uri, socket = %ep.socket.display(),
                    "bulk statistics are read over libvirt's RPC protocol directly");
            }
            *state = State::Open(c);
            Ok(())
        }
        Err(e) => {
            note_failure(settings, &e);
            *state = State::Failed(Instant::now());
            Err(e)
        }
    }
}

/// How long the native client waits for a silent daemon before it drops the
/// connection: as long as libvirt's client library would, whose keepalive declares the
/// daemon dead after `keepalive_count` unanswered probes `keepalive_interval` apart
/// (plus one interval); without keepalive, for ever, like the library. A call that
/// outlives its deadline meanwhile keeps its concurrency permit, as a library call does.
fn silence_limit(settings: &LibvirtSettings) -> Option<Duration> {
    let interval = u64::try_from(settings.keepalive_interval)
        .ok()
        .filter(|&i| i > 0)?;
    Some(Duration::from_secs(
        interval * (u64::from(settings.keepalive_count) + 1),
    ))
}

fn note_failure(settings: &LibvirtSettings, e: &WireError) {
    if matches!(e, WireError::Remote(_)) {
        debug!(uri = %settings.uri, error = %e, "native statistics call failed; asking through libvirt's client library");
    } else if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(uri = %settings.uri, error = %e,
            "native libvirt statistics client failed; libvirt's client library answers instead \
             (retried every {}s; later failures are logged at debug level)", RETRY_AFTER.as_secs());
    } else {
        debug!(uri = %settings.uri, error = %e, "native libvirt statistics client failed");
    }
}
