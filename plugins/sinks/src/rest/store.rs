//! The REST sink's history: per domain, a time-bounded ring of samples kept in compact
//! prepared form (not JSON text). One sample per tick: batches of one tick (same
//! instant) merge into one sample, as vAdvisor had one sample per domain per second.
//! Collectors with a longer interval contribute their latest values to every sample
//! until their next run ("carried", with their age in the sample's `ages`), as long as
//! their last run succeeded and the values are at most twice their interval old.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{Map, Value};
use vadvisor_api::axum::body::Bytes;
use vadvisor_api::{Batch, DomainState, HealthView, MetricDesc};

use crate::json_render::{place, PreparedValue, Preparer};
use crate::timefmt::iso_utc;

/// One collector run's values for one domain, shared (not copied) by every sample
/// that carries them.
#[derive(Clone)]
struct Part {
    collector: Arc<str>,
    at: SystemTime,
    values: Arc<[PreparedValue]>,
    /// The top-level JSON keys the collector writes (`diskio`), named in `ages`.
    sections: Arc<[Arc<str>]>,
}

struct StoredSample {
    at: SystemTime,
    state: Option<DomainState>,
    /// Carried parts first, then the tick's own; a later part wins on a shared path.
    parts: Vec<Part>,
}

struct DomainHistory {
    name: Arc<str>,
    samples: VecDeque<StoredSample>,
    /// Each collector's latest part for this domain.
    latest: Vec<Part>,
}

pub struct HistoryStore {
    domains: RwLock<HashMap<Arc<str>, DomainHistory>>,
    retention: Duration,
    max_samples: usize,
    preparer: Preparer,
    /// Collector intervals and last-run outcomes (what decides carrying); without it
    /// nothing is carried.
    health: Option<HealthView>,
    /// Bumped on every change, so the rendered `{uuid: [...]}` body can be reused until
    /// the next tick instead of being rebuilt for every request.
    generation: AtomicU64,
    rendered_all: Mutex<Option<(u64, Bytes)>>,
}

/// The top-level JSON keys of a collector's metrics.
fn sections_of(metrics: &[MetricDesc]) -> Arc<[Arc<str>]> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for m in metrics {
        let Some(json) = m.json else { continue };
        for raw in std::iter::once(json.path).chain(m.json_also) {
            let top = raw.split(['.', '[']).next().unwrap_or(raw);
            if !out.iter().any(|s| &**s == top) {
                out.push(top.into());
            }
        }
    }
    out.into()
}

impl HistoryStore {
    pub fn new(retention: Duration, max_samples: usize) -> Self {
        Self {
            domains: RwLock::new(HashMap::new()),
            retention,
            max_samples,
            preparer: Preparer::new(),
            health: None,
            generation: AtomicU64::new(0),
            rendered_all: Mutex::new(None),
        }
    }

    /// Carries the values of collectors with longer intervals into every sample, using
    /// the intervals and run outcomes the scheduler records in `health`.
    pub fn with_health(mut self, health: impl Into<HealthView>) -> Self {
        self.health = Some(health.into());
        self
    }

    /// Whether `part` may be carried into a sample taken at `at`: its collector's last
    /// run succeeded and the values are at most twice its interval old.
    fn carriable(&self, part: &Part, at: SystemTime) -> bool {
        let Some(health) = &self.health else {
            return false;
        };
        let Some((interval, ok)) =
            health.with_collector(&part.collector, |c| (c.interval, c.last_success))
        else {
            return false;
        };
        let age = at.duration_since(part.at).unwrap_or(Duration::ZERO);
        ok && !interval.is_zero() && age <= interval * 2
    }

    /// Adds a batch: its collector's values become the domain's latest, placed in the
    /// sample of the batch's tick (created, with carried values, when it is the first
    /// batch of that tick).
    pub fn ingest(&self, batch: &Batch) {
        let sections = sections_of(&batch.metrics);
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        for ds in &batch.domains {
            let mut values = Vec::new();
            self.preparer
                .prepare(&batch.metrics, &ds.samples, &mut values);
            let history = domains
                .entry(ds.domain.uuid.clone())
                .or_insert_with(|| DomainHistory {
                    name: ds.domain.name.clone(),
                    samples: VecDeque::new(),
                    latest: Vec::new(),
                });
            history.name = ds.domain.name.clone();
            // A second batch of one collector in one tick adds to its first.
            if let Some(same) = history
                .latest
                .iter()
                .find(|p| p.collector == batch.collector && p.at == batch.at)
            {
                let mut merged = same.values.to_vec();
                merged.append(&mut values);
                values = merged;
            }
            let part = Part {
                collector: batch.collector.clone(),
                at: batch.at,
                values: values.into(),
                sections: sections.clone(),
            };
            match history
                .latest
                .iter_mut()
                .find(|p| p.collector == part.collector)
            {
                Some(p) if p.at > part.at => {} // an older run arriving late
                Some(p) => *p = part.clone(),
                None => history.latest.push(part.clone()),
            }
            // The sample of this tick: found from the newest end, or inserted in order.
            let pos = history.samples.iter().rposition(|s| s.at <= batch.at);
            let idx = match pos {
                Some(i) if history.samples[i].at == batch.at => i,
                _ => {
                    let carried = history
                        .latest
                        .iter()
                        .filter(|p| p.collector != part.collector && p.at < batch.at)
                        .filter(|p| self.carriable(p, batch.at))
                        .cloned()
                        .collect();
                    let i = pos.map_or(0, |i| i + 1);
                    history.samples.insert(
                        i,
                        StoredSample {
                            at: batch.at,
                            state: None,
                            parts: carried,
                        },
                    );
                    i
                }
            };
            let sample = &mut history.samples[idx];
            if ds.state.is_some() {
                sample.state = ds.state;
            }
            // This tick's values replace a carried (or earlier) part of the collector.
            sample.parts.retain(|p| p.collector != part.collector);
            sample.parts.push(part);
            while history.samples.len() > self.max_samples {
                history.samples.pop_front();
            }
        }
        // A domain the collector no longer reports keeps no value of it to carry.
        let reported: std::collections::HashSet<&str> =
            batch.domains.iter().map(|d| &*d.domain.uuid).collect();
        for (uuid, history) in domains.iter_mut() {
            if !reported.contains(&**uuid) {
                history
                    .latest
                    .retain(|p| p.collector != batch.collector || p.at >= batch.at);
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
        // Every collector ran in the live collection: nothing to carry.
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
            .map(|s| render_sample(&h.name, s))
            .collect(),
    )
}

/// One sample in vAdvisor's shape, plus `ages` (seconds) for carried sections.
fn render_sample(name: &str, s: &StoredSample) -> Value {
    let mut m = Map::new();
    m.insert("timestamp".into(), Value::from(iso_utc(s.at)));
    if let Some(state) = s.state {
        m.insert("state".into(), Value::from(state.name()));
        m.insert("state_reason".into(), Value::from(state.reason_name()));
    }
    m.insert("name".into(), Value::from(name));
    let mut ages = Map::new();
    for part in &s.parts {
        place(&mut m, &part.values);
        if part.at < s.at && !part.values.is_empty() {
            let age = s.at.duration_since(part.at).unwrap_or_default();
            let age = (age.as_secs_f64() * 1000.0).round() / 1000.0;
            for section in part.sections.iter() {
                let older = ages
                    .get(&**section)
                    .and_then(Value::as_f64)
                    .is_some_and(|a| a >= age);
                if !older {
                    ages.insert(section.to_string(), Value::from(age));
                }
            }
        }
    }
    if !ages.is_empty() {
        m.insert("ages".into(), Value::Object(ages));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{DomainRef, DomainSamples, Health, MetricDesc, Sample, Unit};

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

    const CPU: &[MetricDesc] =
        &[
            MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
                .json("cpu.usage.cpu_time", Unit::Milliseconds),
        ];
    const QEMU: &[MetricDesc] = &[
        MetricDesc::gauge("vm_qemu_threads", "h", Unit::Count).json("qemu.threads", Unit::Count)
    ];
    const DISK: &[MetricDesc] = &[MetricDesc::counter("vm_disk_bytes_total", "h", Unit::Bytes)
        .json("diskio.io_service_bytes[device=dev].read", Unit::Bytes)
        .labels(&["dev"])];

    fn run(collector: &str, metrics: &'static [MetricDesc], at: SystemTime, value: f64) -> Batch {
        let labels = if metrics[0].labels.is_empty() {
            vec![]
        } else {
            vec!["vda".into()]
        };
        Batch {
            collector: collector.into(),
            metrics: metrics.into(),
            at,
            domains: vec![DomainSamples {
                domain: DomainRef::new("a", "name-a"),
                state: Some(DomainState::new(1, 1)),
                samples: vec![Sample::labelled(0, labels, value)],
                errors: vec![],
            }],
            host: vec![],
        }
    }

    /// Collectors at 1 s, 2 s and 5 s, as the scheduler runs them: one sample per tick
    /// with every section, the slower ones carried with their age; a failed or overdue
    /// collector's section disappears.
    #[test]
    fn collectors_at_1_2_and_5_seconds_give_one_complete_sample_per_tick() {
        let health = Health::new();
        let store = HistoryStore::new(Duration::from_secs(60), 60).with_health(health.clone());
        let schedule = [
            ("cpu", CPU, 1u64),
            ("qemu_process", QEMU, 2),
            ("block", DISK, 5),
        ];
        for (id, _, secs) in schedule {
            health.record_interval(id, Duration::from_secs(secs));
        }
        let t0 = SystemTime::now() - Duration::from_secs(40);
        let at = |t: u64| t0 + Duration::from_secs(t);
        for t in 0..20u64 {
            // The scheduler records every outcome of a tick, then publishes its batches.
            let due: Vec<_> = schedule
                .iter()
                .filter(|(_, _, s)| t.is_multiple_of(*s))
                .collect();
            for (id, _, _) in &due {
                health.record_run(id, Duration::ZERO, true, 0);
            }
            for (id, metrics, _) in due {
                store.ingest(&run(id, metrics, at(t), t as f64));
            }
        }
        let v = store.render(Some("a")).unwrap();
        let samples = v["a"].as_array().unwrap();
        assert_eq!(samples.len(), 20, "one sample per tick: {samples:#?}");
        let stamps: std::collections::HashSet<&str> = samples
            .iter()
            .map(|s| s["timestamp"].as_str().unwrap())
            .collect();
        assert_eq!(stamps.len(), 20, "no two samples share a timestamp");
        for (t, s) in samples.iter().enumerate() {
            let t = t as u64;
            assert!(s["cpu"]["usage"]["cpu_time"].is_number(), "{t}: {s}");
            assert_eq!(s["qemu"]["threads"], t - t % 2, "{t}: latest qemu value");
            assert_eq!(
                s["diskio"]["io_service_bytes"][0]["read"],
                t - t % 5,
                "{t}: latest disk value"
            );
            assert_eq!(s["state"], "Running");
            let expect_qemu_age = (!t.is_multiple_of(2)).then_some((t % 2) as f64);
            let expect_disk_age = (!t.is_multiple_of(5)).then_some((t % 5) as f64);
            assert_eq!(s["ages"]["qemu"].as_f64(), expect_qemu_age, "{t}: {s}");
            assert_eq!(s["ages"]["diskio"].as_f64(), expect_disk_age, "{t}: {s}");
            assert!(s["ages"].get("cpu").is_none());
            if t.is_multiple_of(10) {
                assert!(s.get("ages").is_none(), "all fresh: no ages: {s}");
            }
        }

        // block fails at t=20: its section is absent at once, not its old value.
        // qemu_process stops reporting after t=20 without a failure: carried while at
        // most 2 intervals (4 s) old, then absent.
        for t in 20..26u64 {
            health.record_run("cpu", Duration::ZERO, true, 0);
            if t == 20 {
                health.record_run("block", Duration::ZERO, false, 0);
                health.record_run("qemu_process", Duration::ZERO, true, 0);
                store.ingest(&run("qemu_process", QEMU, at(t), t as f64));
            }
            store.ingest(&run("cpu", CPU, at(t), t as f64));
        }
        let v = store.render(Some("a")).unwrap();
        let samples = v["a"].as_array().unwrap();
        let tail = &samples[samples.len() - 6..];
        for (i, s) in tail.iter().enumerate() {
            assert!(s.get("diskio").is_none(), "failed collector: {s}");
            assert_eq!(s["qemu"].is_object(), i <= 4, "t={}: {s}", 20 + i);
        }
    }

    #[test]
    fn without_schedule_nothing_is_carried() {
        let store = HistoryStore::new(Duration::from_secs(60), 60);
        let t0 = SystemTime::now();
        store.ingest(&run("block", DISK, t0, 1.0));
        store.ingest(&run("cpu", CPU, t0 + Duration::from_secs(1), 1.0));
        let v = store.render(None).unwrap();
        assert!(v["a"][1].get("diskio").is_none());
        assert!(v["a"][0].get("diskio").is_some());
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
