//! Options of the `statsd` sink and their validation. The names `host`, `port` and
//! `interval` are also what vAdvisor's `--statsd-host/--statsd-port/--statsd-interval`
//! flags map onto.

use std::time::Duration;

use serde::Deserialize;
use vadvisor_api::OptionError;

use super::naming::{self, TagStyle};

/// The smallest `max_packet_size` accepted: room for one ordinary line.
pub const MIN_PACKET: usize = 64;
/// The largest UDP payload over IPv4.
pub const MAX_PACKET: usize = 65_507;

/// How cumulative counters (libvirt totals) are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterMode {
    /// As a gauge (`|g`) of the cumulative value.
    #[default]
    Gauge,
    /// As a StatsD counter (`|c`) of the increase since the previous send.
    Delta,
}

/// Options of the `statsd` sink.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdOptions {
    /// StatsD server: host name or IP address (required). Resolved before every send.
    pub host: String,
    pub port: u16,
    /// How often the latest values are sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// First part of every name (dot-separated words; empty: none).
    pub prefix: String,
    pub counters: CounterMode,
    pub tags: TagStyle,
    /// Largest UDP payload sent; lines are batched up to it.
    pub max_packet_size: usize,
}

impl Default for StatsdOptions {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 8125,
            interval: Duration::from_secs(15),
            prefix: "vm".into(),
            counters: CounterMode::Gauge,
            tags: TagStyle::None,
            max_packet_size: 1432,
        }
    }
}

impl StatsdOptions {
    /// Checks what serde cannot; returns the first problem.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.host.trim().is_empty() {
            return Err(OptionError::at(
                &["host"],
                "is required: the StatsD server's host name or IP address",
            ));
        }
        if self.port == 0 {
            return Err(OptionError::at(&["port"], "must be between 1 and 65535"));
        }
        if self.interval.is_zero() {
            return Err(OptionError::at(&["interval"], "must be greater than 0"));
        }
        if let Err(e) = naming::check_prefix(&self.prefix) {
            return Err(OptionError::at(&["prefix"], e));
        }
        if !(MIN_PACKET..=MAX_PACKET).contains(&self.max_packet_size) {
            return Err(OptionError::at(
                &["max_packet_size"],
                format!("must be between {MIN_PACKET} and {MAX_PACKET} bytes"),
            ));
        }
        Ok(())
    }

    /// The host without the brackets of an IPv6 literal (`[::1]` → `::1`).
    pub fn bare_host(&self) -> &str {
        let h = self.host.trim();
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::PluginOptions;

    fn decode(v: serde_json::Value) -> Result<StatsdOptions, OptionError> {
        let o: StatsdOptions = PluginOptions::new(v).decode()?;
        o.validate()?;
        Ok(o)
    }

    #[test]
    fn defaults_and_vadvisor_flag_mapping() {
        let o =
            decode(serde_json::json!({"host": "stats.example", "port": 9125, "interval": "7s"}))
                .unwrap();
        assert_eq!(o.port, 9125);
        assert_eq!(o.interval, Duration::from_secs(7));
        assert_eq!(o.prefix, "vm");
        assert_eq!(o.counters, CounterMode::Gauge);
        assert_eq!(o.tags, TagStyle::None);
        assert_eq!(o.max_packet_size, 1432);
        let o = decode(serde_json::json!({"host": "h", "counters": "delta", "tags": "dogstatsd", "prefix": ""})).unwrap();
        assert_eq!(
            (o.counters, o.tags, o.prefix.as_str()),
            (CounterMode::Delta, TagStyle::Dogstatsd, "")
        );
        assert_eq!(
            decode(serde_json::json!({"host": "[::1]"}))
                .unwrap()
                .bare_host(),
            "::1"
        );
    }

    #[test]
    fn errors_point_at_the_key() {
        let path = |v| decode(v).unwrap_err().path.join(".");
        assert_eq!(path(serde_json::json!({})), "host");
        assert_eq!(path(serde_json::json!({"host": " "})), "host");
        assert_eq!(
            path(serde_json::json!({"host": "h", "interval": "0s"})),
            "interval"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "interval": "soon"})),
            "interval"
        );
        assert_eq!(path(serde_json::json!({"host": "h", "port": 0})), "port");
        assert_eq!(
            path(serde_json::json!({"host": "h", "max_packet_size": 63})),
            "max_packet_size"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "max_packet_size": 70000})),
            "max_packet_size"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "counters": "cumulative"})),
            "counters"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "tags": "influx"})),
            "tags"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "prefix": "a b"})),
            "prefix"
        );
        assert_eq!(
            path(serde_json::json!({"host": "h", "adress": "x"})),
            "adress"
        );
    }
}
