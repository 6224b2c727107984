//! The REST sink's history: per domain, a time-bounded ring of samples kept in compact
//! prepared form (not JSON text). Batches of one tick (same instant) merge into one
//! sample, as vAdvisor had one sample per domain per second.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{Map, Value};
use vadvisor_api::axum::body::Bytes;
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
    /// Bumped on every change, so the rendered `{uuid: [...]}` body can be reused until
    /// the next tick instead of being rebuilt for every request.
    generation: AtomicU64,
    rendered_all: Mutex<Option<(u64, Bytes)>>,
}

impl HistoryStore {
    pub fn new(retention: Duration, max_samples: usize) -> Self {
        Self {
            domains: RwLock::new(HashMap::new()),
            retention,
            max_samples,
            preparer: Preparer::new(),
            generation: AtomicU64::new(0),
            rendered_all: Mutex::new(None),
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
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Drops samples older than the retention; returns whether anything was dropped.
    fn expire(
        domains: &mut HashMap<Arc<str>, DomainHistory>,
        retention: Duration,
        now: SystemTime,
    ) -> bool {
        let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut dropped = false;
        domains.retain(|_, h| {
            while h.samples.front().is_some_and(|s| s.at < cutoff) {
                h.samples.pop_front();
                dropped = true;
            }
            !h.samples.is_empty()
        });
        dropped
    }

    /// Drops expired samples (called on reads too, so a vanished VM ages out without
    /// new batches).
    pub fn expire_now(&self) {
        let cutoff_passed = {
            let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
            let cutoff = SystemTime::now()
                .checked_sub(self.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            domains
                .values()
                .any(|h| h.samples.front().is_some_and(|s| s.at < cutoff))
        };
        if cutoff_passed {
            let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
            if Self::expire(&mut domains, self.retention, SystemTime::now()) {
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// The JSON body of every domain's history, rendered once per change of the
    /// history and shared by every request until the next one.
    pub fn render_all_bytes(&self) -> Bytes {
        self.expire_now();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some((g, body)) = &*self.rendered_all.lock().unwrap_or_else(|e| e.into_inner()) {
            if *g == generation {
                return body.clone();
            }
        }
        let value = self.render(None).unwrap_or_default();
        let body = Bytes::from(serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec()));
        // Tagged with the generation read before rendering: a change meanwhile only
        // makes the next request render again.
        *self.rendered_all.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((generation, body.clone()));
        body
    }

    /// `{uuid: [samples oldest first]}` for every domain, or only `uuid`'s
    /// (`None` when that domain has no history).
    pub fn render(&self, only: Option<&str>) -> Option<Value> {
        self.expire_now();
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Map::new();
        match only {
            Some(id) => {
                let (uuid, h) = find(&domains, id)?;
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

/// A domain by UUID in any spelling `/specs/` accepts (upper case, no dashes, braces,
/// `urn:uuid:`), else by name.
fn find<'a>(
    domains: &'a HashMap<Arc<str>, DomainHistory>,
    id: &str,
) -> Option<(&'a Arc<str>, &'a DomainHistory)> {
    domains
        .get_key_value(id)
        .or_else(|| {
            let uuid = vadvisor_api::normalize_uuid(id)?;
            domains.get_key_value(uuid.as_str())
        })
        .or_else(|| domains.iter().find(|(_, h)| &*h.name == id))
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
    fn one_domain_is_found_by_any_uuid_spelling_or_by_name() {
        let store = HistoryStore::new(Duration::from_secs(60), 3);
        let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f";
        store.ingest(&batch(SystemTime::now(), 0, &[uuid], 1.0));
        for id in [
            uuid,
            "6695EB01-F6A4-8304-79AA-97F2502E193F",
            "6695eb01f6a4830479aa97f2502e193f",
            "{6695eb01-f6a4-8304-79aa-97f2502e193f}",
            &format!("name-{uuid}"),
        ] {
            let v = store.render(Some(id)).unwrap_or_else(|| panic!("{id}"));
            assert!(v.get(uuid).is_some(), "{id}: keyed by the canonical UUID");
        }
        assert!(store.render(Some("6695eb01")).is_none());
    }

    #[test]
    fn rendered_history_is_reused_until_it_changes() {
        let store = HistoryStore::new(Duration::from_secs(60), 60);
        let t0 = SystemTime::now();
        store.ingest(&batch(t0, 0, &["a"], 1_000_000.0));
        let first = store.render_all_bytes();
        let again = store.render_all_bytes();
        assert_eq!(
            first.as_ptr(),
            again.as_ptr(),
            "same body, not rendered twice"
        );
        store.ingest(&batch(t0 + Duration::from_secs(1), 0, &["a"], 2_000_000.0));
        let after = store.render_all_bytes();
        assert_ne!(first, after, "a new tick is visible at once");
        let v: Value = serde_json::from_slice(&after).unwrap();
        assert_eq!(v, store.render(None).unwrap());
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
