//! The sink's snapshot: the latest batch of every collector instance, the `vm_up`
//! memory of VMs no longer reported (vAdvisor's grace rule), lifecycle event counts, and
//! the rendered per-VM part of the exposition cached per format until something changes.
//!
//! Rules:
//! - A VM is *reported* while a collector's latest batch contains it with a state other
//!   than shut off; batches of a collector whose last run failed are withheld (its series
//!   vanish, node_exporter style, until it succeeds again).
//! - `vm_up` is 1 iff the newest reported state is Running, else 0. A VM that stops being
//!   reported keeps `vm_up 0` (and nothing else) for `grace` after the last batch that
//!   reported it arrived, then is forgotten.
//! - Time is passed in (`now`), so tests drive the clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vadvisor_api::axum::body::Bytes;
use vadvisor_api::{Batch, DomainRef, DomainState, LifecycleEvent, MetricKind};

use super::emit::Emit;
use super::encode::{Encoder, Format};
use super::events::{self, EventCounts};
use super::families::{self, reported, LabelOptions};

/// Families this sink renders itself; collectors may not declare them.
pub fn reserved(name: &str) -> bool {
    matches!(
        name,
        "vm_up" | "vm_info" | "vm_state_code" | "vm_state_reason_code" | events::FAMILY
    ) || name.starts_with("vadvisor_")
        || name.starts_with("process_")
}

const UP_HELP: &str = "0 if the VM is down, 1 if the VM is up and running, other states";
const STATE_HELP: &str = "libvirt state of the domain (virDomainState): 0 no state, 1 running, 2 blocked, \
                          3 paused, 4 shutting down, 5 shut off, 6 crashed, 7 suspended by guest power management";
const REASON_HELP: &str =
    "libvirt reason code of the domain's state (virDomain<State>Reason; its meaning depends \
                           on vm_state_code, e.g. running/1 booted, paused/1 user)";
const INFO_HELP: &str = "Domain identity (value 1): join on uuid to get the domain name";

/// How the sink renders; fixed for its lifetime.
#[derive(Clone, Copy, Debug)]
pub struct StateOptions {
    pub labels: LabelOptions,
    pub grace: Duration,
}

/// When a VM was last reported, and as what.
#[derive(Clone, Debug)]
struct Seen {
    domain: DomainRef,
    at: Instant,
}

/// A reported VM as the newest batch that has it describes it.
struct Current<'a> {
    domain: &'a DomainRef,
    state: Option<DomainState>,
    at: SystemTime,
}

struct Cached {
    generation: u64,
    withheld: Vec<String>,
    /// The cache expires when a vanished VM's grace period ends.
    valid_until: Option<Instant>,
    body: Bytes,
}

pub struct State {
    opts: StateOptions,
    batches: BTreeMap<Arc<str>, Arc<Batch>>,
    /// Looked up for every domain of every batch: hashed with Fx, not SipHash (the keys
    /// are libvirt's domain UUIDs).
    seen: HashMap<Arc<str>, Seen, rustc_hash::FxBuildHasher>,
    events: EventCounts,
    /// Bumped by every change of `batches` or `events`.
    generation: u64,
    cache: [Option<Cached>; 2],
    /// Declaration problems already logged.
    warned: HashSet<String>,
    /// Extra `vm_info` labels from each domain's metadata (see `metadata`).
    info_labels: HashMap<Arc<str>, Vec<(String, String)>>,
}

impl State {
    pub fn new(opts: StateOptions) -> Self {
        Self {
            opts,
            batches: BTreeMap::new(),
            seen: HashMap::default(),
            events: EventCounts::default(),
            generation: 0,
            cache: [None, None],
            warned: HashSet::new(),
            info_labels: HashMap::new(),
        }
    }

    /// Sets (or with `None` forgets) the extra `vm_info` labels of domain `uuid`.
    pub fn set_info_labels(&mut self, uuid: &Arc<str>, labels: Option<Vec<(String, String)>>) {
        let changed = match labels {
            Some(l) if !l.is_empty() => self.info_labels.insert(uuid.clone(), l.clone()) != Some(l),
            _ => self.info_labels.remove(uuid).is_some(),
        };
        if changed {
            self.generation += 1;
        }
    }

    /// Keeps `batch` as its collector's latest.
    pub fn ingest(&mut self, batch: Arc<Batch>, now: Instant) {
        for ds in batch.domains.iter().filter(|d| reported(d)) {
            match self.seen.get_mut(&ds.domain.uuid) {
                Some(s) => {
                    s.at = now;
                    if s.domain.name != ds.domain.name {
                        s.domain = ds.domain.clone();
                    }
                }
                None => {
                    self.seen.insert(
                        ds.domain.uuid.clone(),
                        Seen {
                            domain: ds.domain.clone(),
                            at: now,
                        },
                    );
                }
            }
        }
        self.batches.insert(batch.collector.clone(), batch);
        self.generation += 1;
        self.forget_expired(now);
    }

    /// Replaces every batch by one fresh collection (live mode).
    pub fn replace_all(&mut self, batches: &[Arc<Batch>], now: Instant) {
        self.batches.clear();
        self.generation += 1;
        for b in batches {
            self.ingest(b.clone(), now);
        }
        self.forget_expired(now);
    }

    pub fn count_event(&mut self, event: &LifecycleEvent) {
        self.events.count(event);
        self.generation += 1;
    }

    /// Bounds the memory when nobody scrapes: forgets VMs past their grace period.
    fn forget_expired(&mut self, now: Instant) {
        let grace = self.opts.grace;
        if self
            .seen
            .values()
            .all(|s| now.saturating_duration_since(s.at) < grace)
        {
            return;
        }
        let present: HashSet<&str> = self
            .batches
            .values()
            .flat_map(|b| b.domains.iter().filter(|d| reported(d)))
            .map(|d| &*d.domain.uuid)
            .collect();
        self.seen.retain(|uuid, s| {
            present.contains(&**uuid) || now.saturating_duration_since(s.at) < grace
        });
    }

    /// Collection time of each exported batch.
    pub fn batch_times(&self, withheld: &[String]) -> Vec<(Arc<str>, SystemTime)> {
        self.batches
            .iter()
            .filter(|(id, _)| !withheld.iter().any(|w| w.as_str() == &***id))
            .map(|(id, b)| (id.clone(), b.at))
            .collect()
    }

    /// The per-VM part of the exposition (collector families, `vm_up`, `vm_state_*`,
    /// `vm_info`, lifecycle events) without the trailing `# EOF`. `withheld` lists the
    /// collector instances whose batches must not be exported (sorted).
    pub fn render(&mut self, format: Format, withheld: &[String], now: Instant) -> Bytes {
        let slot = format.index();
        if let Some(c) = &self.cache[slot] {
            if c.generation == self.generation
                && c.withheld == withheld
                && c.valid_until.is_none_or(|t| now < t)
            {
                return c.body.clone();
            }
        }
        let capacity = self.cache[slot]
            .as_ref()
            .map_or(64 * 1024, |c| c.body.len() + 4096);
        let mut out = String::with_capacity(capacity);
        let mut enc = Encoder::new(&mut out, format);
        let valid_until = self.emit(&mut enc, withheld, now);

        let body = Bytes::from(out);
        self.cache[slot] = Some(Cached {
            generation: self.generation,
            withheld: withheld.to_vec(),
            valid_until,
            body: body.clone(),
        });
        body
    }

    /// Emits the per-VM part (see [`State::render`]) into any output; returns when it
    /// expires (a vanished VM's grace period ends), if it does.
    pub fn emit(
        &mut self,
        enc: &mut impl Emit,
        withheld: &[String],
        now: Instant,
    ) -> Option<Instant> {
        let exported: Vec<&Batch> = self
            .batches
            .iter()
            .filter(|(id, _)| !withheld.iter().any(|w| w.as_str() == &***id))
            .map(|(_, b)| &**b)
            .collect();
        let current = current_vms(&exported);

        let grace = self.opts.grace;
        self.seen.retain(|uuid, s| {
            current.contains_key(&**uuid) || now.saturating_duration_since(s.at) < grace
        });
        let vanished: Vec<&Seen> = self
            .seen
            .iter()
            .filter(|(u, _)| !current.contains_key(&***u))
            .map(|(_, s)| s)
            .collect();
        let valid_until = vanished
            .iter()
            .filter_map(|s| s.at.checked_add(grace))
            .min();

        // vm_up: reported VMs and vanished ones, by uuid.
        let mut up: Vec<(&DomainRef, f64)> = current
            .values()
            .map(|c| {
                (
                    c.domain,
                    if c.state.is_some_and(|s| s.is_running()) {
                        1.0
                    } else {
                        0.0
                    },
                )
            })
            .chain(vanished.iter().map(|s| (&s.domain, 0.0)))
            .collect();
        up.sort_by(|a, b| a.0.uuid.cmp(&b.0.uuid));
        let name_label = self.opts.labels.name_label;
        fn vm_sample(enc: &mut impl Emit, name_label: bool, family: &str, d: &DomainRef, v: f64) {
            enc.begin(family);
            enc.label("uuid", &d.uuid);
            if name_label {
                enc.label("name", &d.name);
            }
            enc.value(v);
        }
        enc.family("vm_up", UP_HELP, MetricKind::Gauge);
        for (d, v) in up {
            vm_sample(enc, name_label, "vm_up", d, v);
        }
        enc.family("vm_state_code", STATE_HELP, MetricKind::Gauge);
        for c in current.values() {
            if let Some(s) = c.state {
                vm_sample(enc, name_label, "vm_state_code", c.domain, s.state.into());
            }
        }
        enc.family("vm_state_reason_code", REASON_HELP, MetricKind::Gauge);
        for c in current.values() {
            if let Some(s) = c.state {
                vm_sample(
                    enc,
                    name_label,
                    "vm_state_reason_code",
                    c.domain,
                    s.reason.into(),
                );
            }
        }
        enc.family("vm_info", INFO_HELP, MetricKind::Gauge);
        for c in current.values() {
            let mut labels = vec![("uuid", &*c.domain.uuid), ("name", &*c.domain.name)];
            if let Some(extra) = self.info_labels.get(&*c.domain.uuid) {
                labels.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            enc.sample("vm_info", &labels, 1.0);
        }

        let mut problems = Vec::new();
        families::render(enc, &exported, self.opts.labels, reserved, &mut problems);
        self.events.render(enc);
        for p in problems {
            if self.warned.insert(p.clone()) {
                tracing::warn!(problem = %p, "prometheus sink: declaration not exported");
            }
        }
        valid_until
    }
}

/// Reported VMs by uuid, each as the newest batch that reports it describes it.
fn current_vms<'a>(batches: &[&'a Batch]) -> BTreeMap<&'a str, Current<'a>> {
    let mut current: BTreeMap<&str, Current<'_>> = BTreeMap::new();
    for batch in batches {
        for ds in batch.domains.iter().filter(|d| reported(d)) {
            match current.get_mut(&*ds.domain.uuid) {
                None => {
                    current.insert(
                        &ds.domain.uuid,
                        Current {
                            domain: &ds.domain,
                            state: ds.state,
                            at: batch.at,
                        },
                    );
                }
                Some(c) if batch.at > c.at => {
                    c.domain = &ds.domain;
                    c.at = batch.at;
                    c.state = ds.state.or(c.state);
                }
                Some(c) => c.state = c.state.or(ds.state),
            }
        }
    }
    current
}
