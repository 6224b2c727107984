//! The REST sink's history: per domain, a time-bounded ring of samples kept in compact
//! prepared form (not JSON text). Batches of one tick (same instant) merge into one
//! sample, as vAdvisor had one sample per domain per second.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use vadvisor_api::{Batch, DomainState};

use crate::json_render::{place, PreparedValue, Preparer};
use crate::timefmt::iso_utc;

struct StoredSample {
    at: SystemTime,
    state: Option<DomainState>,
    values: Vec<PreparedValue>,
}

struct DomainHistory {
    name: Arc<str>,
    samples: VecDeque<StoredSample>,
}

pub struct HistoryStore {
    domains: RwLock<HashMap<Arc<str>, DomainHistory>>,
    retention: Duration,
    max_samples: usize,
    preparer: Preparer,
}

impl HistoryStore {
    pub fn new(retention: Duration, max_samples: usize) -> Self {
        Self {
            domains: RwLock::new(HashMap::new()),
            retention,
            max_samples,
            preparer: Preparer::new(),
        }
    }

    /// Adds a batch: one sample per domain, merged with the last one if it is from the
    /// same tick.
    pub fn ingest(&self, batch: &Batch) {
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        for ds in &batch.domains {
            let history = domains
                .entry(ds.domain.uuid.clone())
                .or_insert_with(|| DomainHistory {
                    name: ds.domain.name.clone(),
                    samples: VecDeque::new(),
                });
            history.name = ds.domain.name.clone();
            let same_tick = history.samples.back().is_some_and(|s| s.at == batch.at);
            if !same_tick {
                history.samples.push_back(StoredSample {
                    at: batch.at,
                    state: None,
                    values: Vec::new(),
                });
            }
            if let Some(sample) = history.samples.back_mut() {
                if ds.state.is_some() {
                    sample.state = ds.state;
                }
                self.preparer
                    .prepare(&batch.metrics, &ds.samples, &mut sample.values);
            }
            while history.samples.len() > self.max_samples {
                history.samples.pop_front();
            }
        }
        Self::expire(&mut domains, self.retention, SystemTime::now());
    }

    fn expire(
        domains: &mut HashMap<Arc<str>, DomainHistory>,
        retention: Duration,
        now: SystemTime,
    ) {
        let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        domains.retain(|_, h| {
            while h.samples.front().is_some_and(|s| s.at < cutoff) {
                h.samples.pop_front();
            }
            !h.samples.is_empty()
        });
    }

    /// Drops expired samples (called on reads too, so a vanished VM ages out without
    /// new batches).
    pub fn expire_now(&self) {
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        Self::expire(&mut domains, self.retention, SystemTime::now());
    }

    /// `{uuid: [samples oldest first]}` for every domain, or only `uuid`'s
    /// (`None` when that domain has no history).
    pub fn render(&self, only: Option<&str>) -> Option<Value> {
        self.expire_now();
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Map::new();
        match only {
            Some(uuid) => {
                let h = domains.get(uuid)?;
                out.insert(uuid.to_string(), render_history(h));
            }
            None => {
                let mut keys: Vec<&Arc<str>> = domains.keys().collect();
                keys.sort();
                for uuid in keys {
                    out.insert(uuid.to_string(), render_history(&domains[uuid]));
                }
            }
        }
        Some(Value::Object(out))
    }

    /// Renders freshly collected batches (not stored): one sample per domain.
    pub fn render_live(&self, batches: &[Arc<Batch>], only: Option<&str>) -> Option<Value> {
        let scratch = HistoryStore::new(Duration::from_secs(u32::MAX.into()), 1);
        for b in batches {
            let mut b2 = (**b).clone();
            // One live collection is one sample, whatever the collectors' tick instants.
            b2.at = batches.first().map(|f| f.at).unwrap_or(b.at);
            scratch.ingest(&b2);
        }
        scratch.render(only)
    }
}

fn render_history(h: &DomainHistory) -> Value {
    Value::Array(
        h.samples
            .iter()
            .map(|s| {
                let mut m = Map::new();
                m.insert("timestamp".into(), Value::from(iso_utc(s.at)));
                if let Some(state) = s.state {
                    m.insert("state".into(), Value::from(state.name()));
                    m.insert("state_reason".into(), Value::from(state.reason_name()));
                }
                m.insert("name".into(), Value::from(&*h.name));
                place(&mut m, &s.values);
                Value::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{DomainRef, DomainSamples, MetricDesc, Sample, Unit};

    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
            .json("cpu.usage.cpu_time", Unit::Milliseconds),
        MetricDesc::counter("vm_x_bytes_total", "h", Unit::Bytes).json("x.bytes", Unit::Bytes),
    ];

    fn batch(at: SystemTime, metric: u16, uuids: &[&str], value: f64) -> Batch {
        Batch {
            collector: "t".into(),
            metrics: METRICS.into(),
            at,
            domains: uuids
                .iter()
                .map(|u| DomainSamples {
                    domain: DomainRef::new(*u, format!("name-{u}")),
                    state: Some(DomainState::new(1, 1)),
                    samples: vec![Sample::new(metric, value)],
                    errors: vec![],
                })
                .collect(),
            host: vec![],
        }
    }

    #[test]
    fn merges_a_tick_keeps_order_and_caps_length() {
        let store = HistoryStore::new(Duration::from_secs(60), 3);
        let t0 = SystemTime::now() - Duration::from_secs(10);
        for i in 0..5u64 {
            let at = t0 + Duration::from_secs(i);
            store.ingest(&batch(at, 0, &["a"], (i * 1_000_000) as f64));
            store.ingest(&batch(at, 1, &["a"], i as f64));
        }
        let v = store.render(None).unwrap();
        let samples = v["a"].as_array().unwrap();
        assert_eq!(samples.len(), 3, "capped at max_samples");
        assert_eq!(samples[0]["cpu"]["usage"]["cpu_time"], 2.0, "oldest first");
        assert_eq!(samples[2]["cpu"]["usage"]["cpu_time"], 4.0);
        assert_eq!(
            samples[2]["x"]["bytes"], 4,
            "both collectors of one tick in one sample"
        );
        assert_eq!(samples[2]["state"], "Running");
        assert_eq!(samples[2]["name"], "name-a");
        assert!(store.render(Some("zzz")).is_none());
    }

    #[test]
    fn expires_by_time() {
        let store = HistoryStore::new(Duration::from_secs(60), 60);
        store.ingest(&batch(
            SystemTime::now() - Duration::from_secs(120),
            0,
            &["old"],
            1.0,
        ));
        store.ingest(&batch(SystemTime::now(), 0, &["new"], 1.0));
        let v = store.render(None).unwrap();
        assert!(v.get("old").is_none());
        assert!(v.get("new").is_some());
    }
}
