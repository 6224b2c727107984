//! Writes prepared values straight to JSON text, producing the bytes serde_json wrote
//! for the same values placed into a `serde_json::Value` (the REST API's historical
//! renderer): a later value wins on a shared path, a list item is found by its key
//! field or appended, a node of the wrong kind is replaced, object keys come out in
//! byte order (serde_json's map without `preserve_order`), and numbers and strings are
//! formatted by serde_json itself. A small arena tree stands in for the `Value` tree:
//! it borrows keys and labels instead of copying them and allocates a few vectors per
//! document instead of a map and a string per key.

use std::sync::Arc;

use vadvisor_api::metric::JsonSegment;

use crate::json_render::{JsonScalar, PreparedValue};

const NONE: u32 = u32::MAX;

/// A value at a leaf of the document.
#[derive(Clone, Copy, Debug)]
pub enum Leaf<'a> {
    Scalar(&'a JsonScalar),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Nothing is written here; [`Tree::write`] reports where it would have been, for
    /// the caller to insert a value later (a domain name that may change).
    Hole,
    /// Nothing is written here; [`Tree::write_template`] records where value `id`
    /// goes, for a template that is filled in later.
    Slot(u32),
}

/// A leaf as `serde_json::Value` compares it (list items are matched by equality).
#[derive(PartialEq)]
enum Comparable<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Null,
    Other,
}

impl<'a> Leaf<'a> {
    fn comparable(&self) -> Comparable<'a> {
        let float = |f: f64| {
            if f.is_finite() {
                Comparable::Float(f)
            } else {
                Comparable::Null
            }
        };
        match *self {
            Leaf::Scalar(JsonScalar::Int(i)) => Comparable::Int(*i),
            Leaf::Int(i) => Comparable::Int(i),
            Leaf::Scalar(JsonScalar::Float(f)) => float(*f),
            Leaf::Float(f) => float(f),
            Leaf::Scalar(JsonScalar::Str(s)) => Comparable::Str(s),
            Leaf::Str(s) => Comparable::Str(s),
            Leaf::Hole | Leaf::Slot(_) => Comparable::Other,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Object,
    Array,
    Leaf(Leaf<'a>),
}

struct Node<'a> {
    /// Key in the parent object (unused for array items).
    key: &'a str,
    kind: Kind<'a>,
    first: u32,
    last: u32,
    next: u32,
}

/// One JSON document under construction; its root is an object.
pub struct Tree<'a> {
    nodes: Vec<Node<'a>>,
}

impl Default for Tree<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Tree<'a> {
    pub fn new() -> Self {
        let mut nodes = Vec::with_capacity(64);
        nodes.push(Node {
            key: "",
            kind: Kind::Object,
            first: NONE,
            last: NONE,
            next: NONE,
        });
        Self { nodes }
    }

    /// The root object.
    pub const ROOT: u32 = 0;

    fn children(&self, parent: u32) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.nodes[parent as usize].first;
        std::iter::from_fn(move || {
            let here = at;
            (here != NONE).then(|| {
                at = self.nodes[here as usize].next;
                here
            })
        })
    }

    /// Adds a child to `parent`: at the end of an array, in key order in an object (so
    /// objects are written without sorting, as serde_json's sorted map writes them).
    fn append(&mut self, parent: u32, key: &'a str, kind: Kind<'a>) -> u32 {
        let after = self.lookup(parent, key).1;
        self.insert_after(parent, after, key, kind)
    }

    /// Inserts a child of `parent` right after `after` (NONE: as the first child).
    fn insert_after(&mut self, parent: u32, after: u32, key: &'a str, kind: Kind<'a>) -> u32 {
        let id = self.nodes.len() as u32;
        let next = if after == NONE {
            self.nodes[parent as usize].first
        } else {
            self.nodes[after as usize].next
        };
        self.nodes.push(Node {
            key,
            kind,
            first: NONE,
            last: NONE,
            next,
        });
        if after == NONE {
            self.nodes[parent as usize].first = id;
        } else {
            self.nodes[after as usize].next = id;
        }
        if next == NONE {
            self.nodes[parent as usize].last = id;
        }
        id
    }

    /// The child of `parent` named `key`, if any, and where a new child named `key`
    /// goes: after the returned node (NONE: first). An object keeps its children in key
    /// order, so its walk stops at the first key not below `key`; an array appends.
    fn lookup(&self, parent: u32, key: &str) -> (Option<u32>, u32) {
        if !matches!(self.nodes[parent as usize].kind, Kind::Object) {
            let found = self
                .children(parent)
                .find(|&c| self.nodes[c as usize].key == key);
            return (found, self.nodes[parent as usize].last);
        }
        let mut before = NONE;
        for c in self.children(parent) {
            match self.nodes[c as usize].key.cmp(key) {
                std::cmp::Ordering::Less => before = c,
                std::cmp::Ordering::Equal => return (Some(c), before),
                std::cmp::Ordering::Greater => break,
            }
        }
        (None, before)
    }

    fn find(&self, parent: u32, key: &str) -> Option<u32> {
        self.lookup(parent, key).0
    }

    /// `parent[key] = kind` (a fresh, empty node replacing any previous value).
    pub fn set(&mut self, parent: u32, key: &'a str, kind_leaf: Option<Leaf<'a>>) -> u32 {
        let kind = kind_leaf.map_or(Kind::Object, Kind::Leaf);
        match self.lookup(parent, key) {
            (Some(c), _) => {
                let n = &mut self.nodes[c as usize];
                n.kind = kind;
                n.first = NONE;
                n.last = NONE;
                c
            }
            (None, after) => self.insert_after(parent, after, key, kind),
        }
    }

    /// `parent[key]`, made an empty object or array first unless it already is one.
    fn container(&mut self, parent: u32, key: &'a str, array: bool) -> u32 {
        let wanted = |k: &Kind| match k {
            Kind::Object => !array,
            Kind::Array => array,
            Kind::Leaf(_) => false,
        };
        match self.lookup(parent, key) {
            (Some(c), _) if wanted(&self.nodes[c as usize].kind) => c,
            (Some(c), _) => {
                let n = &mut self.nodes[c as usize];
                n.kind = if array { Kind::Array } else { Kind::Object };
                n.first = NONE;
                n.last = NONE;
                c
            }
            (None, after) => {
                let kind = if array { Kind::Array } else { Kind::Object };
                self.insert_after(parent, after, key, kind)
            }
        }
    }

    /// Places every value, in order, into the root object.
    pub fn place_all(&mut self, values: &'a [PreparedValue]) {
        for v in values {
            self.place(
                Self::ROOT,
                &v.path.segments,
                &v.keys,
                Leaf::Scalar(&v.value),
            );
        }
    }

    /// [`Tree::place_all`] for a template: each number becomes [`Leaf::Slot`] `first_id
    /// + its index`; strings are written as they are.
    pub fn place_all_as_slots(&mut self, values: &'a [PreparedValue], first_id: u32) {
        for (i, v) in values.iter().enumerate() {
            let leaf = match v.value {
                JsonScalar::Str(_) => Leaf::Scalar(&v.value),
                _ => Leaf::Slot(first_id + i as u32),
            };
            self.place(Self::ROOT, &v.path.segments, &v.keys, leaf);
        }
    }

    fn place(
        &mut self,
        obj: u32,
        segments: &'a [JsonSegment],
        keys: &'a [Arc<str>],
        leaf: Leaf<'a>,
    ) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        match first {
            JsonSegment::Key(k) if rest.is_empty() => {
                self.set(obj, k, Some(leaf));
            }
            JsonSegment::Key(k) => {
                let child = self.container(obj, k, false);
                self.place(child, rest, keys, leaf);
            }
            JsonSegment::Item {
                list, key, numeric, ..
            } => {
                let Some((label, other_keys)) = keys.split_first() else {
                    return;
                };
                let key_leaf = match numeric.then(|| label.parse::<i64>()) {
                    Some(Ok(i)) => Leaf::Int(i),
                    _ => Leaf::Str(label),
                };
                let wanted = key_leaf.comparable();
                let items = self.container(obj, list, true);
                let found = self.children(items).find(|&item| {
                    self.find(item, key).is_some_and(|f| {
                        matches!(self.nodes[f as usize].kind, Kind::Leaf(l) if l.comparable() == wanted)
                    })
                });
                let item = match found {
                    Some(item) => item,
                    None => {
                        let item = self.append(items, "", Kind::Object);
                        self.append(item, key, Kind::Leaf(key_leaf));
                        item
                    }
                };
                self.place(item, rest, other_keys, leaf);
            }
        }
    }

    /// Appends the document to `out`; returns the offset of the [`Leaf::Hole`] that was
    /// written (the last one, if several), if any.
    pub fn write(&self, out: &mut Vec<u8>) -> Option<usize> {
        let mut marks = Marks::default();
        self.write_node(Self::ROOT, out, &mut marks);
        marks.hole
    }

    /// [`Tree::write`] for a template: also returns where each written [`Leaf::Slot`]
    /// goes, as (offset in `out`, slot id), in order.
    pub fn write_template(&self, out: &mut Vec<u8>) -> (Option<usize>, Vec<(usize, u32)>) {
        let mut marks = Marks::default();
        self.write_node(Self::ROOT, out, &mut marks);
        (marks.hole, marks.slots)
    }

    fn write_node(&self, n: u32, out: &mut Vec<u8>, marks: &mut Marks) {
        match self.nodes[n as usize].kind {
            Kind::Object => {
                // Children are kept in key order (see `append`).
                out.push(b'{');
                for (i, c) in self.children(n).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, self.nodes[c as usize].key);
                    out.push(b':');
                    self.write_node(c, out, marks);
                }
                out.push(b'}');
            }
            Kind::Array => {
                out.push(b'[');
                for (i, c) in self.children(n).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_node(c, out, marks);
                }
                out.push(b']');
            }
            Kind::Leaf(Leaf::Hole) => marks.hole = Some(out.len()),
            Kind::Leaf(Leaf::Slot(id)) => marks.slots.push((out.len(), id)),
            Kind::Leaf(Leaf::Scalar(s)) => write_scalar(out, s),
            Kind::Leaf(Leaf::Int(i)) => write_json(out, &i),
            Kind::Leaf(Leaf::Float(f)) => write_json(out, &f),
            Kind::Leaf(Leaf::Str(s)) => write_str(out, s),
        }
    }
}

/// Where [`Leaf::Hole`] and [`Leaf::Slot`]s were written.
#[derive(Default)]
struct Marks {
    hole: Option<usize>,
    slots: Vec<(usize, u32)>,
}

/// A prepared value's JSON text.
pub fn write_scalar(out: &mut Vec<u8>, s: &JsonScalar) {
    match *s {
        JsonScalar::Int(i) => write_json(out, &i),
        JsonScalar::Float(f) => write_json(out, &f),
        JsonScalar::Str(s) => write_str(out, s),
    }
}

/// A float's JSON text (`null` when not finite), as [`Leaf::Float`] is written.
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    write_json(out, &f);
}

/// A JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes only `"`, `\` and control characters: a string without them
    // (every key and nearly every value) is copied as it is.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, s);
    }
}

/// serde_json's text of `v` (numbers: its integer and shortest float formatting; a
/// non-finite float is `null`, as `Value` had it).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_render::{place, Preparer};
    use proptest::prelude::*;
    use serde_json::{Map, Value};
    use vadvisor_api::{MetricDesc, Sample, Unit};

    /// Metrics whose paths overlap and conflict (a key that is a leaf in one and an
    /// object or list in another), to exercise every replacement rule.
    const METRICS: &[MetricDesc] = &[
        MetricDesc::counter("m_a", "h", Unit::Nanoseconds)
            .json("cpu.usage.cpu_time", Unit::Milliseconds),
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
        MetricDesc::gauge("m_e", "h", Unit::Bytes).json("cpu.usage", Unit::Bytes),
        MetricDesc::gauge("m_f", "h", Unit::Bytes).json("diskio", Unit::Bytes),
        MetricDesc::gauge("m_g", "h", Unit::Bytes)
            .labels(&["device"])
            .json("diskio[name=device].name", Unit::Bytes),
        MetricDesc::gauge("m_h", "h", Unit::Bytes)
            .labels(&["device", "q"])
            .json("net[name=device].q[n=#q].len", Unit::Bytes),
        MetricDesc::gauge("m_i", "h", Unit::Seconds)
            .json("a_b.Z9", Unit::Milliseconds)
            .json_also("cpu.per_cpu_usage"),
    ];

    fn old(values: &[PreparedValue]) -> Vec<u8> {
        let mut root = Map::new();
        place(&mut root, values);
        serde_json::to_vec(&Value::Object(root)).unwrap()
    }

    fn new(values: &[PreparedValue]) -> Vec<u8> {
        let mut tree = Tree::new();
        tree.place_all(values);
        let mut out = Vec::new();
        assert_eq!(tree.write(&mut out), None);
        out
    }

    fn label() -> impl Strategy<Value = Arc<str>> {
        prop_oneof![
            Just("0"),
            Just("1"),
            Just("01"),
            Just("-3"),
            Just("vda"),
            Just("é\"\\\n"),
            Just("0"),
        ]
        .prop_map(Arc::from)
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(1.0),
            Just(-2.5),
            Just(123_456_789_012.0),
            Just(1e300),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(0.1),
            any::<f64>(),
        ]
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (0..METRICS.len() as u16, label(), label(), value())
            .prop_map(|(m, a, b, v)| Sample::labelled(m, vec![a, b], v))
    }

    proptest! {
        /// Any mix of values, including ones that conflict, writes exactly the bytes
        /// serde_json wrote for the `Value` the same values were placed into.
        #[test]
        fn writes_what_the_value_renderer_wrote(samples in proptest::collection::vec(sample(), 0..24)) {
            let mut values = Vec::new();
            Preparer::new().prepare(METRICS, &samples, &mut values);
            prop_assert_eq!(String::from_utf8(new(&values)).unwrap(), String::from_utf8(old(&values)).unwrap());
        }
    }

    #[test]
    fn a_hole_is_reported_where_its_value_goes_unless_replaced() {
        let mut tree = Tree::new();
        tree.set(Tree::ROOT, "timestamp", Some(Leaf::Str("t")));
        tree.set(Tree::ROOT, "name", Some(Leaf::Hole));
        tree.set(Tree::ROOT, "ages", None);
        let mut out = Vec::new();
        let at = tree.write(&mut out).expect("hole written");
        assert_eq!(&out[..at], br#"{"ages":{},"name":"#);
        assert_eq!(&out[at..], br#","timestamp":"t"}"#);
        tree.set(Tree::ROOT, "name", Some(Leaf::Int(1)));
        out.clear();
        assert_eq!(tree.write(&mut out), None);
        assert_eq!(out, br#"{"ages":{},"name":1,"timestamp":"t"}"#);
    }
}
