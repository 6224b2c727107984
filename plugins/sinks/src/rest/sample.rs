//! One REST sample: the collector runs it is made of ([`Part`]s, shared with the
//! samples that carry them) and its JSON text ([`Fragment`]), written once from them
//! in vAdvisor's shape plus `ages` (seconds) for carried sections. The domain's name is
//! left out of the text and inserted when a response is written, so a fragment stays
//! valid whatever the domain is called by then. A domain's samples nearly always have
//! the same shape tick after tick, so the text is written through a [`Template`] of
//! that shape (the text between the numbers) rather than a tree per sample.

use std::sync::Arc;
use std::time::SystemTime;

use vadvisor_api::{DomainState, Labels, MetricDesc};

use vadvisor_api::metric::JsonSegment;

use crate::json_render::{JsonScalar, PreparedValue};
use crate::json_write::{write_float, write_scalar, write_str, Leaf, Tree};
use crate::timefmt::iso_utc;

/// One collector run's values for one domain, shared (not copied) by every sample
/// that carries them.
#[derive(Clone)]
pub struct Part {
    pub collector: Arc<str>,
    pub at: SystemTime,
    pub values: Arc<Vec<PreparedValue>>,
    /// The top-level JSON keys the collector writes (`diskio`), named in `ages`.
    pub sections: Arc<[Arc<str>]>,
}

/// Whether two shared strings are equal: the same allocation (a collector's id, a
/// label kept from tick to tick) answers without comparing bytes.
pub fn same_str(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Whether two label lists are equal: one shared list, or equal strings in order.
fn same_labels(a: &Labels, b: &Labels) -> bool {
    std::ptr::eq(a.as_slice(), b.as_slice())
        || (a.len() == b.len() && a.iter().zip(b.iter()).all(|(k, l)| same_str(k, l)))
}

/// The top-level JSON keys of a collector's metrics.
pub fn sections_of(metrics: &[MetricDesc]) -> Arc<[Arc<str>]> {
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

/// A sample's JSON object, without the value of its `name` key.
#[derive(Clone, Debug, PartialEq)]
pub struct Fragment {
    json: Arc<[u8]>,
    /// Where the name's JSON string goes (`u32::MAX`: nowhere, a collector wrote
    /// `name` itself).
    name_at: u32,
}

impl Fragment {
    /// The sample's text in pieces, with `name` (a JSON string) in its place.
    pub fn pieces<'a>(&'a self, name: &'a [u8]) -> [&'a [u8]; 3] {
        match self.json.split_at_checked(self.name_at as usize) {
            Some((before, after)) => [before, name, after],
            None => [&self.json, &[], &[]],
        }
    }

    /// Length of the text with a name of `name_len` bytes.
    pub fn len(&self, name_len: usize) -> usize {
        self.json.len()
            + if self.name_at == u32::MAX {
                0
            } else {
                name_len
            }
    }

    /// A fragment of `text`, whose name goes after the first `"name":`.
    #[cfg(test)]
    pub fn for_test(text: &str) -> Self {
        let name_at = text
            .find("\"name\":")
            .map_or(u32::MAX, |i| (i + "\"name\":".len()) as u32);
        Self {
            json: text.as_bytes().into(),
            name_at,
        }
    }

    /// Heap bytes held (shared with other holders of the same fragment).
    pub fn heap_bytes(&self) -> usize {
        self.json.len()
    }
}

/// The ages of carried parts' sections (the oldest age when two parts share a
/// section), in the order the parts name them.
fn ages_of(at: SystemTime, parts: &[Part]) -> Vec<(&str, f64)> {
    let mut ages: Vec<(&str, f64)> = Vec::new();
    for part in parts {
        if part.at < at && !part.values.is_empty() {
            let age = at.duration_since(part.at).unwrap_or_default();
            let age = (age.as_secs_f64() * 1000.0).round() / 1000.0;
            for section in part.sections.iter() {
                match ages.iter_mut().find(|(s, _)| *s == &**section) {
                    Some((_, a)) if *a >= age => {}
                    Some((_, a)) => *a = age,
                    None => ages.push((section, age)),
                }
            }
        }
    }
    ages
}

/// The document of one sample in a tree: timestamp, state, name (a hole), each part's
/// values (a later part wins on a shared path) and the ages. With `slots`, the
/// timestamp, the numbers and the ages are [`Leaf::Slot`]s (see [`Template`]).
fn build<'a>(
    tree: &mut Tree<'a>,
    timestamp: &'a str,
    state: Option<DomainState>,
    parts: &'a [Part],
    ages: &[(&'a str, f64)],
    slots: bool,
) {
    let leaf = |slot: u32, fixed: Leaf<'a>| if slots { Leaf::Slot(slot) } else { fixed };
    tree.set(
        Tree::ROOT,
        "timestamp",
        Some(leaf(SLOT_TIMESTAMP, Leaf::Str(timestamp))),
    );
    if let Some(state) = state {
        tree.set(Tree::ROOT, "state", Some(Leaf::Str(state.name())));
        tree.set(
            Tree::ROOT,
            "state_reason",
            Some(Leaf::Str(state.reason_name())),
        );
    }
    tree.set(Tree::ROOT, "name", Some(Leaf::Hole));
    let mut first = SLOT_FIRST_VALUE;
    for part in parts {
        if slots {
            tree.place_all_as_slots(&part.values, first);
            first += part.values.len() as u32;
        } else {
            tree.place_all(&part.values);
        }
    }
    if !ages.is_empty() {
        let obj = tree.set(Tree::ROOT, "ages", None);
        for (i, (section, age)) in ages.iter().enumerate() {
            tree.set(
                obj,
                section,
                Some(leaf(first + i as u32, Leaf::Float(*age))),
            );
        }
    }
}

const SLOT_TIMESTAMP: u32 = 0;
const SLOT_FIRST_VALUE: u32 = 1;

/// Writes one sample: timestamp, state, name, each part's values (a later part wins
/// on a shared path) and the ages of carried parts' sections (the oldest age when two
/// parts share a section).
pub fn render(at: SystemTime, state: Option<DomainState>, parts: &[Part]) -> Fragment {
    let timestamp = iso_utc(at);
    let ages = ages_of(at, parts);
    let mut tree = Tree::new();
    build(&mut tree, &timestamp, state, parts, &ages, false);
    let mut out = Vec::with_capacity(1024);
    let name_at = tree.write(&mut out);
    fragment(out, name_at)
}

fn fragment(json: Vec<u8>, name_at: Option<usize>) -> Fragment {
    Fragment {
        name_at: name_at
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::MAX),
        json: json.into(),
    }
}

/// A sample's text with its timestamp, numbers and ages left out, and where each goes:
/// written once from the tree and reused for the domain's next samples while they
/// have the same shape (state, the parts' collectors, every value's path, labels and
/// kind, the aged sections). A sample is then written by copying the text between the
/// slots and formatting the numbers, instead of building and walking a tree.
///
/// A shape in which a number lands on a list item's key field is never templated: the
/// number itself would decide which item later values go to.
pub struct Template {
    state: Option<DomainState>,
    /// The parts the template was written from (their paths, labels and kinds define
    /// the shape; their numbers are not used).
    parts: Vec<Part>,
    aged: Vec<Arc<str>>,
    text: Vec<u8>,
    /// (offset in `text`, slot id), in order.
    slots: Vec<(usize, u32)>,
    name_at: Option<usize>,
}

impl Template {
    /// The template of a sample with this shape, or `None` when the shape cannot be
    /// templated.
    fn new(state: Option<DomainState>, parts: &[Part], ages: &[(&str, f64)]) -> Option<Self> {
        let keyed = parts.iter().flat_map(|p| p.values.iter()).any(|v| {
            let segs = &v.path.segments;
            matches!(
                segs.rchunks(2).next(),
                Some([JsonSegment::Item { key, .. }, JsonSegment::Key(k)]) if k == key
            ) && !matches!(v.value, JsonScalar::Str(_))
        });
        if keyed {
            return None;
        }
        let mut tree = Tree::new();
        build(&mut tree, "", state, parts, ages, true);
        let mut text = Vec::with_capacity(1024);
        let (name_at, slots) = tree.write_template(&mut text);
        Some(Self {
            state,
            parts: parts.to_vec(),
            aged: ages.iter().map(|(s, _)| Arc::from(*s)).collect(),
            text,
            slots,
            name_at,
        })
    }

    /// Whether a sample of `state` and `parts` with these `ages` has this shape.
    fn fits(&self, state: Option<DomainState>, parts: &[Part], ages: &[(&str, f64)]) -> bool {
        self.state == state
            && self.aged.len() == ages.len()
            && self.aged.iter().zip(ages).all(|(a, (b, _))| &**a == *b)
            && self.parts.len() == parts.len()
            && self.parts.iter().zip(parts).all(|(a, b)| {
                same_str(&a.collector, &b.collector)
                    && a.values.len() == b.values.len()
                    && a.values.iter().zip(b.values.iter()).all(|(x, y)| {
                        std::ptr::eq(x.path, y.path)
                            && same_labels(&x.keys, &y.keys)
                            && match (&x.value, &y.value) {
                                (JsonScalar::Int(_), JsonScalar::Int(_))
                                | (JsonScalar::Float(_), JsonScalar::Float(_)) => true,
                                (JsonScalar::Str(a), JsonScalar::Str(b)) => a == b,
                                _ => false,
                            }
                    })
            })
    }

    /// The sample written from the template (which [`Template::fits`] it).
    fn write(&self, timestamp: &str, parts: &[Part], ages: &[(&str, f64)]) -> Fragment {
        let mut out = Vec::with_capacity(self.text.len() + 32 * self.slots.len());
        let values: Vec<&JsonScalar> = parts
            .iter()
            .flat_map(|p| p.values.iter().map(|v| &v.value))
            .collect();
        let mut from = 0;
        let mut name_at = None;
        for &(at, id) in &self.slots {
            if let Some(n) = self
                .name_at
                .filter(|n| (from..=at).contains(n) && name_at.is_none())
            {
                name_at = Some(out.len() + n - from);
            }
            out.extend_from_slice(&self.text[from..at]);
            from = at;
            let value = id.checked_sub(SLOT_FIRST_VALUE).map(|i| i as usize);
            match value {
                None => write_str(&mut out, timestamp),
                Some(i) if i < values.len() => write_scalar(&mut out, values[i]),
                Some(i) => write_float(&mut out, ages.get(i - values.len()).map_or(0.0, |a| a.1)),
            }
        }
        if let Some(n) = self.name_at.filter(|n| *n >= from && name_at.is_none()) {
            name_at = Some(out.len() + n - from);
        }
        out.extend_from_slice(&self.text[from..]);
        fragment(out, name_at)
    }
}

/// [`render`], through the domain's template when the sample has its shape; a sample
/// of another shape gets (and keeps) a new template.
pub fn render_templated(
    at: SystemTime,
    state: Option<DomainState>,
    parts: &[Part],
    template: &mut Option<Template>,
) -> Fragment {
    let ages = ages_of(at, parts);
    if !template
        .as_ref()
        .is_some_and(|t| t.fits(state, parts, &ages))
    {
        *template = Template::new(state, parts, &ages);
    }
    match template {
        Some(t) => t.write(&iso_utc(at), parts, &ages),
        None => render(at, state, parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_render::Preparer;
    use proptest::prelude::*;
    use std::time::Duration;
    use vadvisor_api::{Sample, Unit};

    /// Paths that share, replace and list; `m_key` writes a number on a list item's key
    /// field (a shape that must not be templated).
    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("m_a", "h", Unit::Nanoseconds)
            .json("cpu.usage.total", Unit::Nanoseconds),
        MetricDesc::counter("m_b", "h", Unit::Nanoseconds)
            .labels(&["vcpu"])
            .json(
                "cpu.per_cpu_usage[index=#vcpu].vcpu_time",
                Unit::Milliseconds,
            ),
        MetricDesc::gauge("m_c", "h", Unit::None)
            .labels(&["vcpu"])
            .json("cpu.per_cpu_usage[index=#vcpu].state", Unit::None)
            .states(&["Offline", "Running", "Blocked"]),
        MetricDesc::counter("m_d", "h", Unit::Bytes)
            .labels(&["device"])
            .json("diskio[name=device].rd_bytes", Unit::Bytes),
        MetricDesc::gauge("m_e", "h", Unit::Seconds).json("memory.x", Unit::Milliseconds),
        MetricDesc::gauge("m_f", "h", Unit::Bytes).json("diskio", Unit::Bytes),
    ];
    const M_KEY: &[MetricDesc] = &[MetricDesc::gauge("m_key", "h", Unit::None)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].index", Unit::None)];

    fn part(
        preparer: &Preparer,
        metrics: &[MetricDesc],
        collector: &str,
        at: SystemTime,
        samples: &[Sample],
    ) -> Part {
        let mut values = Vec::new();
        preparer.prepare(metrics, samples, &mut values);
        Part {
            collector: collector.into(),
            at,
            values: Arc::new(values),
            sections: sections_of(metrics),
        }
    }

    /// The same shape each time (metric, labels), with any numbers.
    fn shaped(values: &[f64]) -> Vec<Sample> {
        let labels = ["0", "1", "vda", "vdb"];
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let m = (i % METRICS.len()) as u16;
                let label: Arc<str> = Arc::from(labels[i % labels.len()]);
                Sample::labelled(m, vec![label], *v)
            })
            .collect()
    }

    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(2.0),
            Just(-2.5),
            Just(0.1),
            Just(f64::NAN),
            Just(1e300),
            any::<f64>(),
        ]
    }

    proptest! {
        /// A template written from one sample writes the next samples of its shape
        /// exactly as the tree does, whatever their numbers, ages and timestamps.
        #[test]
        fn a_template_writes_what_the_tree_writes(
            first in proptest::collection::vec(number(), 0..16),
            later in proptest::collection::vec(proptest::collection::vec(number(), 16), 1..4),
            carried_ms in 0u64..5000,
            micros in 0u64..2_000_000,
        ) {
            let preparer = Preparer::new();
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let mut template = None;
            for (i, numbers) in std::iter::once(&first).chain(&later).enumerate() {
                let numbers = &numbers[..first.len()];
                let at = t0 + Duration::from_secs(i as u64) + Duration::from_micros(micros);
                let carried_at = at - Duration::from_millis(carried_ms);
                let parts = [
                    part(&preparer, METRICS, "slow", carried_at, &shaped(&numbers[..numbers.len() / 2])),
                    part(&preparer, METRICS, "fast", at, &shaped(numbers)),
                ];
                let state = Some(DomainState::new(1, 1));
                let plain = render(at, state, &parts);
                let fast = render_templated(at, state, &parts, &mut template);
                prop_assert_eq!(
                    String::from_utf8_lossy(&fast.json),
                    String::from_utf8_lossy(&plain.json)
                );
                prop_assert_eq!(fast.name_at, plain.name_at);
                prop_assert!(template.is_some());
            }
        }
    }

    #[test]
    fn another_shape_gets_a_new_template_and_a_number_on_a_key_field_none() {
        let preparer = Preparer::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut template = None;
        let two = [part(&preparer, METRICS, "c", at, &shaped(&[1.0, 2.0]))];
        let three = [part(&preparer, METRICS, "c", at, &shaped(&[1.0, 2.0, 3.0]))];
        for (parts, state) in [
            (&two, Some(DomainState::new(1, 1))),
            (&three, Some(DomainState::new(1, 1))),
            (&three, Some(DomainState::new(3, 1))),
            (&three, None),
            (&two, None),
        ] {
            let fast = render_templated(at, state, parts, &mut template);
            assert_eq!(fast, render(at, state, parts));
            let t = template.as_ref().expect("templated");
            assert!(t.fits(state, parts, &ages_of(at, parts)));
        }
        // `index` is the list's key field: the number decides the item, so no template.
        let keyed = [part(
            &preparer,
            M_KEY,
            "k",
            at,
            &[Sample::labelled(0, vec![Arc::from("1")], 0.0)],
        )];
        let fast = render_templated(at, None, &keyed, &mut template);
        assert_eq!(fast, render(at, None, &keyed));
        assert!(template.is_none());
    }
}
