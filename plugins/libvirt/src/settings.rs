//! [`LibvirtSettings`]: the knobs of the libvirt backend (URI, call deadline, concurrency,
//! reconnect backoff, keepalive). A plain struct with defaults; the core maps its YAML
//! configuration onto it.

use std::time::Duration;

/// How the libvirt backend connects and how it bounds its calls.
#[derive(Clone, Debug, PartialEq)]
pub struct LibvirtSettings {
    /// The libvirt URI, always opened read-only. Default `qemu:///system`.
    pub uri: String,
    /// Deadline for one `domain_stats` call (bulk call plus per-domain fallbacks),
    /// including the wait for a concurrency permit. Default 5 s.
    pub call_timeout: Duration,
    /// How many blocking libvirt calls may be in flight at once. A call that outlives its
    /// deadline keeps its permit until libvirt returns, so a hung libvirtd cannot pile up
    /// threads. Default 4.
    pub max_concurrent_calls: usize,
    /// First delay between reconnect attempts. Default 1 s.
    pub reconnect_min: Duration,
    /// Cap of the exponential reconnect backoff. Default 30 s.
    pub reconnect_max: Duration,
    /// `virConnectSetKeepAlive` interval in seconds (≤ 0 disables keepalive). Default 5.
    pub keepalive_interval: i32,
    /// `virConnectSetKeepAlive` count of unanswered probes before the link is declared
    /// dead. Default 3.
    pub keepalive_count: u32,
}

impl Default for LibvirtSettings {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".to_string(),
            call_timeout: Duration::from_secs(5),
            max_concurrent_calls: 4,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            keepalive_interval: 5,
            keepalive_count: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let s = LibvirtSettings::default();
        assert_eq!(s.uri, "qemu:///system");
        assert_eq!(s.call_timeout, Duration::from_secs(5));
        assert_eq!(s.max_concurrent_calls, 4);
        assert_eq!(s.reconnect_min, Duration::from_secs(1));
        assert_eq!(s.reconnect_max, Duration::from_secs(30));
        assert_eq!(s.keepalive_interval, 5);
        assert_eq!(s.keepalive_count, 3);
    }
}
