//! Turns what the Prometheus sink's code emits into remote-write series: the
//! [`SeriesBuilder`] implements [`Emit`] (one `TimeSeries` per sample, `__name__` and
//! the external labels added, labels sorted, the timestamp of the batch the value came
//! from) and collects each family's metadata; [`Dedup`] keeps every series' samples in
//! strictly increasing timestamp order across snapshots, so a value is sent once even
//! when its batch is seen by several snapshots.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use vadvisor_api::MetricKind;

use super::proto::{Label, MetricMetadata, MetricType, Sample, TimeSeries};
use crate::prometheus::emit::{openmetrics_family, Emit};

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct SeriesBuilder<'e> {
    external: &'e [(String, String)],
    snapshot_ms: i64,
    current_ms: i64,
    family: Option<(&'static str, &'static str, MetricKind)>,
    labels: Vec<Label>,
    pub series: Vec<TimeSeries>,
    pub metadata: Vec<MetricMetadata>,
}

impl<'e> SeriesBuilder<'e> {
    /// `external` must be sorted by name; samples without a batch time get `snapshot`.
    pub fn new(external: &'e [(String, String)], snapshot: SystemTime) -> Self {
        let ms = unix_ms(snapshot);
        Self {
            external,
            snapshot_ms: ms,
            current_ms: ms,
            family: None,
            labels: Vec::new(),
            series: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

impl Emit for SeriesBuilder<'_> {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricKind) {
        self.family = Some((name, help, kind));
        self.current_ms = self.snapshot_ms;
    }

    fn at(&mut self, collected: SystemTime) {
        self.current_ms = unix_ms(collected);
    }

    fn begin(&mut self, name: &str) {
        if let Some((family, help, kind)) = self.family.take() {
            // Metadata as Prometheus sends it after an OpenMetrics scrape.
            let (name, ty, unit) = openmetrics_family(family, kind);
            self.metadata.push(MetricMetadata {
                r#type: match ty {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    _ => MetricType::Unknown,
                } as i32,
                metric_family_name: name.to_string(),
                help: help.to_string(),
                unit: unit.unwrap_or_default().to_string(),
            });
        }
        self.labels.clear();
        self.labels.push(Label {
            name: "__name__".into(),
            value: name.to_string(),
        });
    }

    fn label(&mut self, name: &str, value: &str) {
        self.labels.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
    }

    fn value(&mut self, value: f64) {
        let mut labels = std::mem::take(&mut self.labels);
        for (k, v) in self.external {
            // A series' own label wins over an external one (as in Prometheus).
            if !labels.iter().any(|l| &l.name == k) {
                labels.push(Label {
                    name: k.clone(),
                    value: v.clone(),
                });
            }
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        self.series.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: self.current_ms,
            }],
        });
    }
}

/// The newest timestamp sent for each series.
#[derive(Default)]
pub struct Dedup {
    last: HashMap<Vec<Label>, (i64, u64)>,
    round: u64,
}

impl Dedup {
    /// Keeps the series whose sample is newer than the last one taken for it.
    pub fn filter(&mut self, series: Vec<TimeSeries>) -> Vec<TimeSeries> {
        self.round += 1;
        let round = self.round;
        let mut out = Vec::with_capacity(series.len());
        for ts in series {
            let Some(t) = ts.samples.first().map(|s| s.timestamp) else {
                continue;
            };
            match self.last.get_mut(&ts.labels[..]) {
                Some((last, seen)) => {
                    *seen = round;
                    if t > *last {
                        *last = t;
                        out.push(ts);
                    }
                }
                None => {
                    self.last.insert(ts.labels.clone(), (t, round));
                    out.push(ts);
                }
            }
        }
        // Forget series gone for 600 snapshots (their memory stays bounded).
        if round.is_multiple_of(64) {
            self.last.retain(|_, (_, seen)| round - *seen < 600);
        }
        out
    }

    pub fn tracked(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn builds_sorted_series_with_external_labels_and_metadata() {
        let ext = vec![
            ("host".to_string(), "h1".to_string()),
            ("uuid".to_string(), "ext".to_string()),
        ];
        let t0 = UNIX_EPOCH + Duration::from_secs(100);
        let mut b = SeriesBuilder::new(&ext, t0);
        b.family("vm_cpu_time_seconds_total", "CPU", MetricKind::Counter);
        b.at(t0 - Duration::from_millis(1500));
        b.sample(
            "vm_cpu_time_seconds_total",
            &[("uuid", "u1"), ("name", "n1")],
            2.5,
        );
        b.family("vm_up", "Up", MetricKind::Gauge);
        b.sample("vm_up", &[("uuid", "u1")], 1.0);
        let names: Vec<_> = b.series[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("__name__", "vm_cpu_time_seconds_total"),
                ("host", "h1"),
                ("name", "n1"),
                ("uuid", "u1")
            ]
        );
        assert_eq!(b.series[0].samples[0].timestamp, 98_500);
        assert_eq!(
            b.series[1].samples[0].timestamp, 100_000,
            "family() resets to the snapshot time"
        );
        assert_eq!(b.metadata[0].metric_family_name, "vm_cpu_time_seconds");
        assert_eq!(b.metadata[0].unit, "seconds");
        assert_eq!(b.metadata[0].r#type, MetricType::Counter as i32);
        assert_eq!(b.metadata[1].r#type, MetricType::Gauge as i32);
    }

    #[test]
    fn dedup_sends_each_value_once_in_order() {
        let ts = |v: f64, t: i64| TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "x".into(),
            }],
            samples: vec![Sample {
                value: v,
                timestamp: t,
            }],
        };
        let mut d = Dedup::default();
        assert_eq!(d.filter(vec![ts(1.0, 10)]).len(), 1);
        assert_eq!(
            d.filter(vec![ts(1.0, 10)]).len(),
            0,
            "same batch seen again"
        );
        assert_eq!(
            d.filter(vec![ts(2.0, 9)]).len(),
            0,
            "older than what was sent"
        );
        assert_eq!(d.filter(vec![ts(3.0, 11)]).len(), 1);
    }
}
