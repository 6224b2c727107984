//! [`LibvirtSettings`]: the knobs of the libvirt backend (URI, call deadline, concurrency,
//! hedging of slow bulk calls, reconnect backoff, keepalive). A plain struct with defaults; the core maps its YAML
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
    /// When the bulk statistics call (`virConnectGetAllDomainStats`) has not answered
    /// after this long, one identical second call is issued if a concurrency permit is
    /// free, and whichever answers first is used; the other finishes in the background,
    /// holding its permit. A domain whose QEMU does not answer holds up the first bulk
    /// call that takes its monitor job (for as long as it hangs), while a second call
    /// skips its monitor (NOWAIT) and answers at once: so a hung domain costs the others
    /// about `hedge_after` once, not a deadline. At most one hedge per call. The delay
    /// actually used is at least twice the median of the recent answered bulk calls, so
    /// a host that is merely slow is not asked everything twice. `Duration::ZERO`
    /// disables hedging. Default 750 ms.
    pub hedge_after: Duration,
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
            hedge_after: Duration::from_millis(750),
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
        assert_eq!(s.hedge_after, Duration::from_millis(750));
        assert_eq!(s.reconnect_min, Duration::from_secs(1));
        assert_eq!(s.reconnect_max, Duration::from_secs(30));
        assert_eq!(s.keepalive_interval, 5);
        assert_eq!(s.keepalive_count, 3);
    }
}
