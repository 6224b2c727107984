//! [`LibvirtSettings`]: the knobs of the libvirt backend (URI, call deadline, concurrency,
//! hedging of slow bulk calls, sharding of the bulk call ([`BulkShards`]), reconnect
//! backoff, keepalive). A plain struct with defaults; the core maps its YAML
//! configuration onto it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Into how many parallel calls over domain subsets one bulk statistics collection is
/// split (each on its own read-only connection; see `shards` and
/// docs/performance.md#sharding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BulkShards {
    /// One shard per [`DOMAINS_PER_SHARD`] running domains (as of the last collection),
    /// at most half of `max_concurrent_calls` (so every shard can still be hedged) and at
    /// most the host's CPU count. One shard below that: one `virConnectGetAllDomainStats`.
    #[default]
    Auto,
    /// Always this many shards (1: one `virConnectGetAllDomainStats`, never split).
    Fixed(usize),
}

/// `auto`'s share of running domains per shard.
pub const DOMAINS_PER_SHARD: usize = 40;

impl fmt::Display for BulkShards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BulkShards::Auto => f.write_str("auto"),
            BulkShards::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// `auto` or a positive integer (also written as a string, `"2"`).
impl<'de> Deserialize<'de> for BulkShards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "`auto` or a number of shards (1 or more)";
        impl Visitor<'_> for V {
            type Value = BulkShards;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<BulkShards, E> {
                match usize::try_from(n) {
                    Ok(n) if n >= 1 => Ok(BulkShards::Fixed(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(n), &EXPECTED)),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<BulkShards, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &EXPECTED)),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BulkShards, E> {
                if s == "auto" {
                    return Ok(BulkShards::Auto);
                }
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(s), &EXPECTED)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How the bulk statistics call reaches the daemon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsTransport {
    /// libvirt's RPC protocol spoken directly over the daemon's local unix socket when
    /// the URI names one (read-only; no authentication, or polkit, which the daemon
    /// waives for root), else (or after a failure) libvirt's client library.
    #[default]
    Auto,
    /// Always libvirt's client library.
    Library,
}

impl fmt::Display for StatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StatsTransport::Auto => "auto",
            StatsTransport::Library => "library",
        })
    }
}

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
    /// Sharding of the bulk statistics call: `Auto` (default) or a fixed count. Each
    /// shard holds a concurrency permit and its own connection while it runs.
    pub bulk_shards: BulkShards,
    /// How the bulk statistics call and its shard listing reach the daemon. Default
    /// `Auto` (native client on a local socket).
    pub stats_transport: StatsTransport,
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
            bulk_shards: BulkShards::Auto,
            stats_transport: StatsTransport::Auto,
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
        assert_eq!(s.bulk_shards, BulkShards::Auto);
        assert_eq!(s.stats_transport, StatsTransport::Auto);
    }

    fn shards(json: &str) -> Result<BulkShards, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn bulk_shards_reads_auto_or_a_positive_count() {
        assert_eq!(shards("\"auto\""), Ok(BulkShards::Auto));
        assert_eq!(shards("3"), Ok(BulkShards::Fixed(3)));
        assert_eq!(shards("\"2\""), Ok(BulkShards::Fixed(2)));
        for bad in ["0", "-1", "\"many\"", "1.5", "true"] {
            let e = shards(bad).expect_err(bad);
            assert!(e.contains("`auto` or a number of shards"), "{bad}: {e}");
        }
        assert_eq!(BulkShards::Fixed(2).to_string(), "2");
        assert_eq!(BulkShards::Auto.to_string(), "auto");
    }
}
