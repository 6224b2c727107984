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
}

impl Default for EventsSinkOptions {
    fn default() -> Self {
        Self {
            path: "/var/lib/vadvisor/events.db".into(),
            retention: Duration::from_secs(7 * 24 * 3600),
            heartbeat: Duration::from_secs(15),
            client_buffer: 256,
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
        if self.client_buffer == 0 {
            return Err(OptionError::at(&["client_buffer"], "must be at least 1"));
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
