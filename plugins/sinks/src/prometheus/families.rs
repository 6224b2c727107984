//! The collectors' families: turns the latest batches into Prometheus families from the
//! collectors' declarations alone — primary families in base units and, optionally,
//! their aliases (vAdvisor's historical names) in the alias unit and label names. Each
//! family is written once and contiguously; a series (name + labels) is never written
//! twice: when several batches report it (two instances of one collector, an alias that
//! equals another family), the newest batch wins.

use std::collections::{HashMap, HashSet};

use vadvisor_api::metric::Alias;
use vadvisor_api::{Batch, DomainSamples, MetricDesc, MetricKind};

use super::emit::Emit;

/// `virDomainState` SHUTOFF: such a domain is no longer reported.
const SHUTOFF: u32 = 5;

/// Whether a domain in a batch counts as reported (present and not shut off).
pub fn reported(ds: &DomainSamples) -> bool {
    ds.state.is_none_or(|s| s.state != SHUTOFF)
}

/// Valid Prometheus metric or label name.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

/// Valid Prometheus label name (no `:`; `__` is reserved).
fn valid_label(n: &str) -> bool {
    valid_name(n) && !n.contains(':') && !n.starts_with("__")
}

/// How per-VM series are labelled.
#[derive(Clone, Copy, Debug)]
pub struct LabelOptions {
    /// Add `name="<domain name>"` after `uuid`.
    pub name_label: bool,
    /// Also render the declarations' aliases.
    pub aliases: bool,
}

/// One declaration (or alias) that feeds a family.
struct Source<'a> {
    batch: &'a Batch,
    metric: u16,
    desc: &'a MetricDesc,
    alias: Option<&'a Alias>,
    labels: &'static [&'static str],
}

struct Plan<'a> {
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    sources: Vec<Source<'a>>,
}

/// Collects the families in first-declaration order.
struct Planner<'a, 'p, R: Fn(&str) -> bool> {
    plans: Vec<Plan<'a>>,
    /// Plan index by sample name.
    index: HashMap<&'static str, usize>,
    /// Sample name by OpenMetrics family name (a counter's name without `_total`), so
    /// that a gauge `x` and a counter `x_total` cannot both be exported.
    bases: HashMap<&'static str, &'static str>,
    reserved: &'p R,
    problems: &'p mut Vec<String>,
}

impl<'a, R: Fn(&str) -> bool> Planner<'a, '_, R> {
    fn add(&mut self, name: &'static str, help: &'static str, kind: MetricKind, src: Source<'a>) {
        let collector = &src.batch.collector;
        let base = match kind {
            MetricKind::Counter => name.strip_suffix("_total").unwrap_or(name),
            MetricKind::Gauge => name,
        };
        let labels = src.labels;
        let bad_labels = labels.iter().enumerate().any(|(i, l)| {
            !valid_label(l) || matches!(*l, "uuid" | "name") || labels[..i].contains(l)
        });
        let problem = if !valid_name(name) || bad_labels {
            Some(format!(
                "collector `{collector}`: `{name}` has an invalid name or label names; skipped"
            ))
        } else if (self.reserved)(name) || (self.reserved)(base) {
            Some(format!(
                "collector `{collector}` declares `{name}`, a name this sink reserves; skipped"
            ))
        } else if self.bases.get(base).is_some_and(|n| *n != name) {
            Some(format!(
                "collector `{collector}`: `{name}` collides with `{base}`; skipped"
            ))
        } else {
            match self.index.get(name) {
                Some(&i) if self.plans[i].kind != kind => Some(format!(
                    "collector `{collector}` declares `{name}` as a {} but it is already a {}; skipped",
                    kind.as_str(),
                    self.plans[i].kind.as_str()
                )),
                Some(&i) => {
                    self.plans[i].sources.push(src);
                    None
                }
                None => {
                    self.index.insert(name, self.plans.len());
                    self.bases.insert(base, name);
                    self.plans.push(Plan { name, help, kind, sources: vec![src] });
                    None
                }
            }
        };
        if let Some(p) = problem {
            self.problems.push(p);
        }
    }
}

/// Identity of a series within a family.
#[derive(PartialEq, Eq, Hash)]
struct SeriesKey<'a> {
    uuid: Option<&'a str>,
    names: &'static [&'static str],
    values: &'a [std::sync::Arc<str>],
}

/// Renders every family of `batches` (ordered by collector id: that order decides the
/// family order). Families for which `reserved` is true are skipped; every skipped
/// declaration is described in `problems`.
pub fn render(
    enc: &mut impl Emit,
    batches: &[&Batch],
    opts: LabelOptions,
    reserved: impl Fn(&str) -> bool,
    problems: &mut Vec<String>,
) {
    let mut planner = Planner {
        plans: Vec::new(),
        index: HashMap::new(),
        bases: HashMap::new(),
        reserved: &reserved,
        problems,
    };
    for batch in batches {
        for (i, desc) in batch.metrics.iter().enumerate() {
            let Ok(metric) = u16::try_from(i) else { break };
            planner.add(
                desc.name,
                desc.help,
                desc.kind,
                Source {
                    batch,
                    metric,
                    desc,
                    alias: None,
                    labels: desc.labels,
                },
            );
            if !opts.aliases {
                continue;
            }
            for alias in desc.aliases {
                let labels = if alias.labels.is_empty() {
                    desc.labels
                } else {
                    alias.labels
                };
                if labels.len() != desc.labels.len() {
                    planner.problems.push(format!(
                        "collector `{}`: alias `{}` has {} label names for {}; skipped",
                        batch.collector,
                        alias.name,
                        labels.len(),
                        desc.labels.len()
                    ));
                    continue;
                }
                let src = Source {
                    batch,
                    metric,
                    desc,
                    alias: Some(alias),
                    labels,
                };
                planner.add(alias.name, alias.help, desc.kind, src);
            }
        }
    }
    let mut plans = planner.plans;

    let mut seen: HashSet<SeriesKey<'_>> = HashSet::new();
    for plan in &mut plans {
        // Newest batch first; the sort is stable, so ties keep collector-id order and
        // a primary family comes before an alias of the same name.
        plan.sources.sort_by_key(|s| std::cmp::Reverse(s.batch.at));
        enc.family(plan.name, plan.help, plan.kind);
        seen.clear();
        for src in &plan.sources {
            enc.at(src.batch.at);
            let to = src.alias.map_or(src.desc.unit.base(), |a| a.unit);
            let convert = |v: f64| src.desc.unit.convert(v, to);
            for ds in src.batch.domains.iter().filter(|d| reported(d)) {
                for s in &ds.samples {
                    if s.metric != src.metric || s.labels.len() != src.labels.len() {
                        continue;
                    }
                    if !seen.insert(SeriesKey {
                        uuid: Some(&ds.domain.uuid),
                        names: src.labels,
                        values: &s.labels,
                    }) {
                        continue;
                    }
                    enc.begin(plan.name);
                    enc.label("uuid", &ds.domain.uuid);
                    if opts.name_label {
                        enc.label("name", &ds.domain.name);
                    }
                    for (k, v) in src.labels.iter().zip(&s.labels) {
                        enc.label(k, v);
                    }
                    enc.value(convert(s.value));
                }
            }
            for s in &src.batch.host {
                if s.metric != src.metric || s.labels.len() != src.labels.len() {
                    continue;
                }
                if !seen.insert(SeriesKey {
                    uuid: None,
                    names: src.labels,
                    values: &s.labels,
                }) {
                    continue;
                }
                enc.begin(plan.name);
                for (k, v) in src.labels.iter().zip(&s.labels) {
                    enc.label(k, v);
                }
                enc.value(convert(s.value));
            }
        }
    }
}
