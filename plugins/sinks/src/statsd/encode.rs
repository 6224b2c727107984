//! StatsD lines and datagrams. Lines are formatted by `cadence` (`<prefix>.<key>:<value>|g`,
//! `…|c`, DogStatsD `|#k:v,…`); a negative gauge becomes the pair `name:0|g` +
//! `name:-5|g` (a gauge value starting with `-` is applied as a delta by StatsD daemons),
//! kept together in one datagram. [`pack`] joins entries with `\n` into datagrams no
//! larger than the limit, never splitting an entry.

use cadence::prelude::*;
use cadence::{Metric, MetricBuilder, NopMetricSink, StatsdClient};

use super::naming::SeriesId;

/// Formats lines with the configured prefix.
pub struct Encoder {
    client: StatsdClient,
}

impl Encoder {
    pub fn new(prefix: &str) -> Self {
        Self {
            client: StatsdClient::from_sink(prefix, NopMetricSink),
        }
    }

    /// `name:value|g` — or `name:0|g\nname:-v|g` for a negative value; `None` for a value
    /// that is not finite.
    pub fn gauge(&self, series: &SeriesId, value: f64) -> Option<String> {
        if !value.is_finite() {
            return None;
        }
        // `-0` would be read as a delta of zero and leave the gauge unchanged.
        let value = if value == 0.0 { 0.0 } else { value };
        let line = |v: f64| with_tags(self.client.gauge_with_tags(&series.key, v), series);
        if value < 0.0 {
            Some(format!("{}\n{}", line(0.0)?, line(value)?))
        } else {
            line(value)
        }
    }

    /// `name:delta|c`.
    pub fn count(&self, series: &SeriesId, delta: i64) -> Option<String> {
        with_tags(self.client.count_with_tags(&series.key, delta), series)
    }
}

fn with_tags<'a, T>(mut builder: MetricBuilder<'a, 'a, T>, series: &'a SeriesId) -> Option<String>
where
    T: Metric + From<String>,
{
    for (k, v) in &series.tags {
        builder = builder.with_tag(k, v);
    }
    // The no-op sink never fails and f64/i64 values always format.
    builder
        .try_send()
        .ok()
        .map(|m| m.as_metric_str().to_owned())
}

/// Datagrams ready to send, and what could not be packed.
#[derive(Debug, Default, PartialEq)]
pub struct Packed {
    pub datagrams: Vec<String>,
    /// Entries larger than the limit on their own (dropped: never sent truncated).
    pub oversize: usize,
}

/// Packs `entries` (one line, or a negative-gauge pair) into datagrams of at most `max`
/// bytes, separated by `\n`, in order.
pub fn pack(entries: &[String], max: usize) -> Packed {
    let mut packed = Packed::default();
    let mut current = String::new();
    for entry in entries {
        if entry.len() > max {
            packed.oversize += 1;
            continue;
        }
        let needed = if current.is_empty() {
            entry.len()
        } else {
            current.len() + 1 + entry.len()
        };
        if needed > max {
            packed.datagrams.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(entry);
    }
    if !current.is_empty() {
        packed.datagrams.push(current);
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: &str) -> SeriesId {
        SeriesId {
            key: key.into(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn gauges_counters_and_numbers() {
        let e = Encoder::new("vm");
        assert_eq!(e.gauge(&id("u.up"), 1.0).unwrap(), "vm.u.up:1|g");
        assert_eq!(
            e.gauge(&id("u.memory.bytes"), 1_073_741_824.0).unwrap(),
            "vm.u.memory.bytes:1073741824|g"
        );
        assert_eq!(
            e.gauge(&id("u.cpu.total"), 123_456.789_012).unwrap(),
            "vm.u.cpu.total:123456.789012|g"
        );
        assert_eq!(
            e.gauge(&id("u.x"), 1.7e15).unwrap(),
            "vm.u.x:1700000000000000|g"
        );
        assert_eq!(e.gauge(&id("u.x"), -0.0).unwrap(), "vm.u.x:0|g");
        assert_eq!(e.gauge(&id("u.x"), f64::NAN), None);
        assert_eq!(e.gauge(&id("u.x"), f64::INFINITY), None);
        assert_eq!(
            e.count(&id("u.cpu.total"), 42).unwrap(),
            "vm.u.cpu.total:42|c"
        );
        assert_eq!(
            Encoder::new("").gauge(&id("u.up"), 0.0).unwrap(),
            "u.up:0|g"
        );
        assert_eq!(
            Encoder::new("prod.vm").gauge(&id("u.up"), 0.0).unwrap(),
            "prod.vm.u.up:0|g"
        );
    }

    #[test]
    fn negative_gauges_are_set_to_zero_first() {
        let e = Encoder::new("vm");
        assert_eq!(
            e.gauge(&id("u.x"), -5.0).unwrap(),
            "vm.u.x:0|g\nvm.u.x:-5|g"
        );
        assert_eq!(
            e.gauge(&id("u.x"), -0.25).unwrap(),
            "vm.u.x:0|g\nvm.u.x:-0.25|g"
        );
    }

    #[test]
    fn dogstatsd_tags() {
        let e = Encoder::new("vm");
        let s = SeriesId {
            key: "disk.read.bytes.total".into(),
            tags: vec![
                ("uuid", "u1".into()),
                ("name", "web".into()),
                ("device", "vda".into()),
            ],
        };
        assert_eq!(
            e.count(&s, 7).unwrap(),
            "vm.disk.read.bytes.total:7|c|#uuid:u1,name:web,device:vda"
        );
        assert_eq!(e.gauge(&s, -1.0).unwrap(), "vm.disk.read.bytes.total:0|g|#uuid:u1,name:web,device:vda\nvm.disk.read.bytes.total:-1|g|#uuid:u1,name:web,device:vda");
    }

    #[test]
    fn packing_respects_the_limit_and_never_splits_an_entry() {
        let entries: Vec<String> = (0..50).map(|i| format!("vm.u.metric{i}:{i}|g")).collect();
        for max in [64, 100, 200, 1432] {
            let p = pack(&entries, max);
            assert_eq!(p.oversize, 0);
            assert!(p
                .datagrams
                .iter()
                .all(|d| d.len() <= max && !d.is_empty() && !d.ends_with('\n')));
            let back: Vec<&str> = p.datagrams.iter().flat_map(|d| d.split('\n')).collect();
            assert_eq!(
                back,
                entries.iter().map(String::as_str).collect::<Vec<_>>(),
                "max {max}"
            );
        }
        // Exactly full: two 10-byte entries fit 21 bytes, not 20.
        let ten = vec!["abcdef:1|g".to_string(); 2];
        assert_eq!(ten[0].len(), 10);
        assert_eq!(pack(&ten, 21).datagrams.len(), 1);
        assert_eq!(pack(&ten, 20).datagrams.len(), 2);
        // A negative pair stays in one datagram.
        let pair = "vm.u.x:0|g\nvm.u.x:-5|g".to_string();
        let p = pack(
            &[
                "vm.u.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1|g".into(),
                pair.clone(),
            ],
            64,
        );
        assert_eq!(p.datagrams.len(), 2);
        assert_eq!(p.datagrams[1], pair);
        // An entry over the limit on its own is dropped and counted.
        let p = pack(&["x".repeat(65), "y:1|g".into()], 64);
        assert_eq!((p.oversize, p.datagrams), (1, vec!["y:1|g".to_string()]));
        assert_eq!(pack(&[], 64), Packed::default());
    }
}
