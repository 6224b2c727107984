//! Options of the `events` sink and their validation (pure: nothing is opened here).

use std::time::Duration;

use serde::Deserialize;
use vadvisor_api::OptionError;

/// Options of the `events` sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSinkOptions {
    /// SQLite database file (created with its directory); `:memory:` keeps nothing
    /// across restarts.
    pub path: String,
    /// How long events are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Keep-alive interval of idle streams.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Events queued per stream client; a client that falls this far behind is
    /// disconnected.
    pub client_buffer: usize,
    /// Concurrent stream clients; beyond it a stream request gets 503 with
    /// `Retry-After`. Bounds clients that read nothing while only heartbeats flow (their
    /// socket never fills, so the write timeout cannot detect them).
    pub max_clients: usize,
}

/// Upper bound of `client_buffer` (a queue this long per client is already a lot).
pub const MAX_CLIENT_BUFFER: usize = 65_536;
/// Upper bound of `max_clients`.
pub const MAX_CLIENTS: usize = 10_000;

impl Default for EventsSinkOptions {
    fn default() -> Self {
        Self {
            path: "/var/lib/vadvisor/events.db".into(),
            retention: Duration::from_secs(7 * 24 * 3600),
            heartbeat: Duration::from_secs(15),
            client_buffer: 256,
            max_clients: 64,
        }
    }
}

impl EventsSinkOptions {
    /// Checks the options without touching the filesystem.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.retention.is_zero() {
            return Err(OptionError::at(&["retention"], "must be greater than 0"));
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err(OptionError::at(&["heartbeat"], "must be at least 100ms"));
        }
        if !(1..=MAX_CLIENT_BUFFER).contains(&self.client_buffer) {
            return Err(OptionError::at(
                &["client_buffer"],
                format!("must be between 1 and {MAX_CLIENT_BUFFER}"),
            ));
        }
        if !(1..=MAX_CLIENTS).contains(&self.max_clients) {
            return Err(OptionError::at(
                &["max_clients"],
                format!("must be between 1 and {MAX_CLIENTS}"),
            ));
        }
        if self.path.trim().is_empty() {
            return Err(OptionError::at(
                &["path"],
                "must not be empty (use `:memory:` for no file)",
            ));
        }
        Ok(())
    }
}
