//! The REST history as it was kept before samples were stored as JSON fragments:
//! every sample keeps its parts and is rendered through a `serde_json::Value` on each
//! read. Kept for tests only, as the reference whose output the compact store must
//! match byte for byte.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
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
            Self::expire(&mut domains, self.retention, SystemTime::now());
        }
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
