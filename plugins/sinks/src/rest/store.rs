//! The REST sink's history: per domain, a time-bounded ring of samples. One sample per
//! tick: batches of one tick (same instant) merge into one sample, as vAdvisor had one
//! sample per domain per second. Collectors with a longer interval contribute their
//! latest values to every sample until their next run ("carried", with their age in
//! the sample's `ages`), as long as their last run succeeded and the values are at most
//! twice their interval old.
//!
//! Compact by construction: only a domain's newest sample keeps its collector runs
//! (its tick's later batches still merge into it); once a newer tick arrives, it is
//! sealed — written once as its JSON text ([`Fragment`], a few hundred bytes; through
//! the domain's [`Template`] while its shape holds) and its values dropped. A read
//! takes a [`Snapshot`] of references to the fragments (the newest samples written on
//! demand and kept until they change), shared by the reads that arrive until the next
//! change, and its text is written once for all of them.
//! While the all-domains history is being read every tick, the next tick's snapshot and
//! text are prepared as soon as the tick's batches are in ([`HistoryStore::prepare`]),
//! off the request path; with no reader nothing is prepared.

use std::collections::{HashMap, HashSet, VecDeque};

use rustc_hash::FxBuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use vadvisor_api::{Batch, DomainState, HealthView, MetricDesc};

use super::body::{BodyPool, DomainSnapshot, Snapshot};
use super::sample::{self, same_str, sections_of, Fragment, Part, Template};
use crate::json_render::{prepare_with, PathPlan, Preparer};

/// The newest sample of a domain, still receiving its tick's batches.
struct OpenSample {
    state: Option<DomainState>,
    /// Carried parts first, then the tick's own; a later part wins on a shared path.
    parts: Vec<Part>,
    /// Its text, written on the first read after its last change.
    json: OnceLock<Fragment>,
}

impl OpenSample {
    fn fragment(&self, at: SystemTime) -> &Fragment {
        self.json
            .get_or_init(|| sample::render(at, self.state, &self.parts))
    }
}

enum Content {
    Open(Box<OpenSample>),
    Sealed(Fragment),
}

struct StoredSample {
    at: SystemTime,
    content: Content,
}

impl StoredSample {
    fn fragment(&self) -> &Fragment {
        match &self.content {
            Content::Open(open) => open.fragment(self.at),
            Content::Sealed(f) => f,
        }
    }

    /// Writes the sample's text (through the domain's `template`) and drops its
    /// values; returns whether it was still open.
    fn seal(&mut self, template: &mut Option<Template>) -> bool {
        let Content::Open(open) = &mut self.content else {
            return false;
        };
        let fragment = match open.json.take() {
            Some(f) => f,
            None => sample::render_templated(self.at, open.state, &open.parts, template),
        };
        self.content = Content::Sealed(fragment);
        true
    }
}

/// Every domain's history by UUID. Looked up for every batch of every tick: hashed
/// with Fx, not SipHash (the keys are libvirt's domain UUIDs).
type Domains = HashMap<Arc<str>, DomainHistory, FxBuildHasher>;

struct DomainHistory {
    name: Arc<str>,
    samples: VecDeque<StoredSample>,
    /// Each collector's latest part for this domain.
    latest: Vec<Part>,
    /// The text of its samples' current shape, to seal the next ones quickly.
    template: Option<Template>,
}

/// What the history holds, for the memory benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreFootprint {
    pub domains: usize,
    pub samples: usize,
    /// Samples still holding their values (at most one per domain).
    pub open_samples: usize,
    /// Bytes of JSON text held by sealed samples.
    pub sealed_json_bytes: usize,
    /// Bytes of the spare buffer kept for the next all-domains text.
    pub spare_body_bytes: usize,
}

pub struct HistoryStore {
    domains: RwLock<Domains>,
    retention: Duration,
    max_samples: usize,
    preparer: Preparer,
    /// Collector intervals and last-run outcomes (what decides carrying); without it
    /// nothing is carried.
    health: Option<HealthView>,
    /// Bumped on every change (under the write lock).
    generation: AtomicU64,
    /// The all-domains snapshot of the current generation, cleared on every change so
    /// it never keeps expired fragments alive.
    snapshot: Mutex<Option<(u64, Arc<Snapshot>)>>,
    /// Whether any batch has arrived: before the first collection ends, a domain with
    /// no samples is not (yet) evidence that it does not exist.
    ingested: AtomicBool,
    /// Reads of the all-domains snapshot since the last change.
    reads: AtomicU64,
    /// Set by a change that replaced a snapshot someone read: prepare the next one.
    prepare_next: AtomicBool,
    /// The all-domains text's spare buffer, kept while someone reads every moment.
    bodies: Arc<BodyPool>,
    /// Per collector: its metric declarations' paths and sections, worked out once for
    /// as long as it declares the same metrics.
    plans: Mutex<HashMap<Arc<str>, CollectorPlan>>,
}

/// What [`HistoryStore::ingest`] needs of a collector's declarations.
#[derive(Clone)]
struct CollectorPlan {
    metrics: Arc<[MetricDesc]>,
    paths: Arc<PathPlan>,
    sections: Arc<[Arc<str>]>,
}

impl HistoryStore {
    pub fn new(retention: Duration, max_samples: usize) -> Self {
        Self {
            domains: RwLock::new(Domains::default()),
            retention,
            max_samples,
            preparer: Preparer::new(),
            health: None,
            generation: AtomicU64::new(0),
            snapshot: Mutex::new(None),
            ingested: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            prepare_next: AtomicBool::new(false),
            bodies: Arc::new(BodyPool::default()),
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The paths and sections of `batch`'s metrics (cached per collector).
    fn plan_of(&self, batch: &Batch) -> CollectorPlan {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        match plans.get(&batch.collector) {
            Some(p) if Arc::ptr_eq(&p.metrics, &batch.metrics) => p.clone(),
            _ => {
                let plan = CollectorPlan {
                    metrics: batch.metrics.clone(),
                    paths: Arc::new(self.preparer.plan(&batch.metrics)),
                    sections: sections_of(&batch.metrics),
                };
                plans.insert(batch.collector.clone(), plan.clone());
                plan
            }
        }
    }

    /// Whether any batch has been ingested (the first collection has delivered).
    pub fn has_ingested(&self) -> bool {
        self.ingested.load(Ordering::Acquire)
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

    /// Marks a change; called with the write lock held.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.reads.swap(0, Ordering::AcqRel) > 0 {
            self.prepare_next.store(true, Ordering::Release);
        }
        let replaced = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Dropped here, its text's buffer goes back to the pool (unless a response still
        // sends it); a moment nobody read frees the spare.
        drop(replaced);
        if !self.prepare_next.load(Ordering::Acquire) {
            self.bodies.clear();
        }
    }

    /// Adds a batch: its collector's values become the domain's latest, placed in the
    /// sample of the batch's tick (created, with carried values, when it is the first
    /// batch of that tick). Every sample but a domain's newest is then sealed; a batch
    /// for a tick whose sample is already sealed (it arrived after a later tick's
    /// batch, which the scheduler never does) is left out of the history.
    pub fn ingest(&self, batch: &Batch) {
        self.ingest_all(std::slice::from_ref(batch));
    }

    /// [`ingest`](Self::ingest) for several batches in order (a tick's, taken together
    /// as they arrive): one lock, one expiry pass and one change for all of them.
    pub fn ingest_all<B: std::borrow::Borrow<Batch>>(&self, batches: &[B]) {
        if batches.is_empty() {
            return;
        }
        let plans: Vec<CollectorPlan> = batches.iter().map(|b| self.plan_of(b.borrow())).collect();
        let mut domains = self.domains.write().unwrap_or_else(|e| e.into_inner());
        // Set under the write lock: a reader that sees it and then takes the read lock
        // sees these batches.
        self.ingested.store(true, Ordering::Release);
        for (batch, plan) in batches.iter().zip(plans) {
            self.ingest_locked(&mut domains, batch.borrow(), plan);
        }
        Self::expire(&mut domains, self.retention, SystemTime::now());
        self.changed();
    }

    /// One batch into the history, under the write lock.
    fn ingest_locked(&self, domains: &mut Domains, batch: &Batch, plan: CollectorPlan) {
        let CollectorPlan {
            paths: plan,
            sections,
            ..
        } = plan;
        for ds in &batch.domains {
            let mut values = Vec::with_capacity(ds.samples.len());
            prepare_with(&plan, &batch.metrics, &ds.samples, &mut values);
            let history = domains
                .entry(ds.domain.uuid.clone())
                .or_insert_with(|| DomainHistory {
                    name: ds.domain.name.clone(),
                    samples: VecDeque::new(),
                    latest: Vec::new(),
                    template: None,
                });
            history.name = ds.domain.name.clone();
            // A second batch of one collector in one tick adds to its first.
            if let Some(same) = history
                .latest
                .iter()
                .find(|p| same_str(&p.collector, &batch.collector) && p.at == batch.at)
            {
                let mut merged = same.values.to_vec();
                merged.append(&mut values);
                values = merged;
            }
            let part = Part {
                collector: batch.collector.clone(),
                at: batch.at,
                values: Arc::new(values),
                sections: sections.clone(),
            };
            match history
                .latest
                .iter_mut()
                .find(|p| same_str(&p.collector, &part.collector))
            {
                Some(p) if p.at > part.at => {} // an older run arriving late
                Some(p) => *p = part.clone(),
                None => history.latest.push(part.clone()),
            }
            // The sample of this tick: found from the newest end, or inserted in order.
            let pos = history.samples.iter().rposition(|s| s.at <= batch.at);
            let mut inserted_before_newest = false;
            let idx = match pos {
                Some(i) if history.samples[i].at == batch.at => i,
                _ => {
                    // Room for a part of every collector the domain has: the sample
                    // gets one per collector of the tick without growing.
                    let mut carried = Vec::with_capacity(history.latest.len().max(1));
                    carried.extend(
                        history
                            .latest
                            .iter()
                            .filter(|p| !same_str(&p.collector, &part.collector) && p.at < batch.at)
                            .filter(|p| self.carriable(p, batch.at))
                            .cloned(),
                    );
                    let i = pos.map_or(0, |i| i + 1);
                    inserted_before_newest = i < history.samples.len();
                    let open = OpenSample {
                        state: None,
                        parts: carried,
                        json: OnceLock::new(),
                    };
                    history.samples.insert(
                        i,
                        StoredSample {
                            at: batch.at,
                            content: Content::Open(Box::new(open)),
                        },
                    );
                    i
                }
            };
            if let Content::Open(open) = &mut history.samples[idx].content {
                if ds.state.is_some() {
                    open.state = ds.state;
                }
                // This tick's values replace a carried (or earlier) part of the collector.
                open.parts
                    .retain(|p| !same_str(&p.collector, &part.collector));
                open.parts.push(part);
                open.json = OnceLock::new();
            } else {
                tracing::debug!(
                    collector = %batch.collector,
                    domain = %ds.domain.name,
                    "batch for a tick already past in the REST history; left out"
                );
            }
            while history.samples.len() > self.max_samples {
                history.samples.pop_front();
            }
            // Every sample but the newest is sealed after each batch, so only the one
            // before the newest can still be open, unless one was inserted in between.
            let newest = history.samples.len().saturating_sub(1);
            let template = &mut history.template;
            for s in history.samples.range_mut(..newest).rev() {
                if !s.seal(template) && !inserted_before_newest {
                    break;
                }
            }
        }
        // A domain the collector no longer reports keeps no value of it to carry. (With
        // no more domains than the batch has, each was in the batch.)
        if domains.len() > batch.domains.len() {
            let reported: HashSet<&str> = batch.domains.iter().map(|d| &*d.domain.uuid).collect();
            for (uuid, history) in domains.iter_mut() {
                if reported.contains(&**uuid) {
                    continue;
                }
                history
                    .latest
                    .retain(|p| !same_str(&p.collector, &batch.collector) || p.at >= batch.at);
            }
        }
    }

    /// Drops samples older than the retention; returns whether anything was dropped.
    fn expire(domains: &mut Domains, retention: Duration, now: SystemTime) -> bool {
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

    /// When the oldest stored sample expires (`None`: nothing stored).
    pub fn next_expiry(&self) -> Option<SystemTime> {
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        domains
            .values()
            .filter_map(|h| h.samples.front())
            .map(|s| s.at + self.retention)
            .min()
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
                self.changed();
            }
        }
    }

    /// `{uuid: [samples oldest first]}` for every domain, or only `uuid`'s (`None`
    /// when that domain has no history). The all-domains snapshot is shared by every
    /// read until the history changes.
    pub fn snapshot(&self, only: Option<&str>) -> Option<Arc<Snapshot>> {
        if only.is_none() {
            self.reads.fetch_add(1, Ordering::AcqRel);
        }
        self.snapshot_uncounted(only)
    }

    /// Whether [`prepare`](Self::prepare) has work: the snapshot the last change
    /// replaced had been read.
    pub fn wants_prepare(&self) -> bool {
        self.prepare_next.load(Ordering::Acquire)
    }

    /// Builds the all-domains snapshot and writes its text now, if the one the last
    /// change replaced had been read (so a reader polling every tick finds it ready);
    /// returns whether it did. Called once a tick's batches are in.
    pub fn prepare(&self) -> bool {
        if !self.prepare_next.swap(false, Ordering::AcqRel) {
            return false;
        }
        if let Some(s) = self.snapshot_uncounted(None) {
            s.body();
        }
        true
    }

    fn snapshot_uncounted(&self, only: Option<&str>) -> Option<Arc<Snapshot>> {
        self.expire_now();
        if only.is_none() {
            let cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((g, s)) = &*cached {
                if *g == self.generation.load(Ordering::Acquire) {
                    return Some(s.clone());
                }
            }
        }
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::Acquire);
        let snap = |uuid: &str, h: &DomainHistory| {
            let samples = h.samples.iter().map(|s| s.fragment().clone()).collect();
            DomainSnapshot::new(uuid, &h.name, samples)
        };
        let snapshot = match only {
            Some(id) => {
                let (uuid, h) = find(&domains, id)?;
                return Some(Arc::new(Snapshot::new(vec![snap(uuid, h)])));
            }
            None => {
                let mut keys: Vec<&Arc<str>> = domains.keys().collect();
                keys.sort();
                let all = keys.into_iter().map(|u| snap(u, &domains[u])).collect();
                Arc::new(Snapshot::with_pool(all, Some(self.bodies.clone())))
            }
        };
        drop(domains);
        // Kept only if nothing changed meanwhile (a change clears the cache after
        // bumping the generation).
        let mut cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            *cached = Some((generation, snapshot.clone()));
        }
        Some(snapshot)
    }

    /// The JSON text of [`snapshot`](Self::snapshot) in one buffer.
    pub fn render_bytes(&self, only: Option<&str>) -> Option<Vec<u8>> {
        self.snapshot(only).map(|s| s.to_vec())
    }

    /// [`render_bytes`](Self::render_bytes) as a `serde_json::Value`.
    pub fn render(&self, only: Option<&str>) -> Option<serde_json::Value> {
        let bytes = self.render_bytes(only)?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Renders freshly collected batches (not stored): one sample per domain.
    pub fn render_live(&self, batches: &[Arc<Batch>], only: Option<&str>) -> Option<Vec<u8>> {
        let scratch = HistoryStore::new(Duration::from_secs(u32::MAX.into()), 1);
        // Every collector ran in the live collection: nothing to carry.
        for b in batches {
            let mut b2 = (**b).clone();
            // One live collection is one sample, whatever the collectors' tick instants.
            b2.at = batches.first().map(|f| f.at).unwrap_or(b.at);
            scratch.ingest(&b2);
        }
        scratch.render_bytes(only)
    }

    /// How many samples are held and in what form.
    pub fn footprint(&self) -> StoreFootprint {
        let domains = self.domains.read().unwrap_or_else(|e| e.into_inner());
        let mut f = StoreFootprint {
            domains: domains.len(),
            spare_body_bytes: self.bodies.spare_bytes(),
            ..StoreFootprint::default()
        };
        for s in domains.values().flat_map(|h| h.samples.iter()) {
            f.samples += 1;
            match &s.content {
                Content::Open(_) => f.open_samples += 1,
                Content::Sealed(j) => f.sealed_json_bytes += j.heap_bytes(),
            }
        }
        f
    }
}

/// A domain by UUID in any spelling `/specs/` accepts (upper case, no dashes, braces,
/// `urn:uuid:`), else by name.
fn find<'a>(domains: &'a Domains, id: &str) -> Option<(&'a Arc<str>, &'a DomainHistory)> {
    domains
        .get_key_value(id)
        .or_else(|| {
            let uuid = vadvisor_api::normalize_uuid(id)?;
            domains.get_key_value(uuid.as_str())
        })
        .or_else(|| domains.iter().find(|(_, h)| &*h.name == id))
}
