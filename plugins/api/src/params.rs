//! [`Params`]: one domain's typed statistics parameters (`cpu.time`, `block.0.rd.bytes`),
//! sorted by key for binary-search lookups. Built for the per-tick hot path: every key
//! lives in one shared string buffer and every entry in one vector, so a domain's
//! parameters cost two allocations however many there are (plus one per string value),
//! instead of one per key and per tree node. [`IndexedKey`] spells `<group>.<n>.<field>`
//! on the stack, so looking a device's field up allocates nothing either.

use std::fmt::{self, Write as _};

use crate::typed_value::TypedValue;

/// One entry: where its key sits in the key buffer, and its value.
#[derive(Clone, Debug)]
struct Entry {
    start: u32,
    len: u32,
    value: TypedValue,
}

/// A domain's typed parameters, sorted by key, each key at most once.
#[derive(Clone, Default)]
pub struct Params {
    /// Every key, one after the other (removed or replaced keys may leave unused bytes).
    keys: String,
    /// Sorted by key.
    entries: Vec<Entry>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `entries` parameters whose keys add up to `key_bytes` bytes.
    pub fn with_capacity(entries: usize, key_bytes: usize) -> Self {
        Self {
            keys: String::with_capacity(key_bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Builds from `(key, value)` pairs in any order, sorting once at the end (the way to
    /// load a whole libvirt record). A key given twice keeps one of its values.
    pub fn from_unsorted<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, TypedValue)>) -> Self {
        let pairs = pairs.into_iter();
        let mut out = Self::with_capacity(pairs.size_hint().0, 0);
        for (k, v) in pairs {
            out.push_unsorted(k.as_ref(), v);
        }
        out.finish_unsorted();
        out
    }

    /// Appends without keeping the order; [`Params::finish_unsorted`] must follow before
    /// any lookup.
    pub(crate) fn push_unsorted(&mut self, key: &str, value: TypedValue) {
        let entry = self.entry_for(key, value);
        self.entries.push(entry);
    }

    /// Sorts what [`Params::push_unsorted`] appended and drops repeated keys.
    pub(crate) fn finish_unsorted(&mut self) {
        let keys = &self.keys;
        let key = |e: &Entry| &keys[e.start as usize..(e.start + e.len) as usize];
        if !self.entries.is_sorted_by(|a, b| key(a) < key(b)) {
            self.entries.sort_unstable_by(|a, b| key(a).cmp(key(b)));
            self.entries.dedup_by(|a, b| key(a) == key(b));
        }
    }

    fn entry_for(&mut self, key: &str, value: TypedValue) -> Entry {
        let start = self.keys.len();
        self.keys.push_str(key);
        Entry {
            // Keys are libvirt field names (< 80 bytes), a few hundred per domain.
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(key.len()).unwrap_or(0),
            value,
        }
    }

    fn key_of(&self, e: &Entry) -> &str {
        self.keys
            .get(e.start as usize..e.start as usize + e.len as usize)
            .unwrap_or("")
    }

    /// Where `key` is (`Ok`) or would go (`Err`).
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.key_of(e).cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&TypedValue> {
        self.find(key).ok().map(|i| &self.entries[i].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`, returning its previous value.
    pub fn insert(&mut self, key: &str, value: TypedValue) -> Option<TypedValue> {
        match self.find(key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].value, value)),
            Err(i) => {
                let entry = self.entry_for(key, value);
                self.entries.insert(i, entry);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<TypedValue> {
        let i = self.find(key).ok()?;
        Some(self.entries.remove(i).value)
    }

    /// Keeps the parameters for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&str, &TypedValue) -> bool) {
        let keys = &self.keys;
        self.entries.retain(|e| {
            let k = keys
                .get(e.start as usize..e.start as usize + e.len as usize)
                .unwrap_or("");
            f(k, &e.value)
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every parameter, sorted by key.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &TypedValue)> + '_ {
        self.entries.iter().map(|e| (self.key_of(e), &e.value))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The parameters whose key starts with `prefix`, sorted by key.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a TypedValue)> + 'a {
        let from = self.entries.partition_point(|e| self.key_of(e) < prefix);
        self.entries[from..]
            .iter()
            .map(|e| (self.key_of(e), &e.value))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// Equal when they hold the same keys with the same values, however they were built.
impl PartialEq for Params {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>> FromIterator<(K, TypedValue)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, TypedValue)>>(iter: I) -> Self {
        Self::from_unsorted(iter)
    }
}

impl<K: AsRef<str>> Extend<(K, TypedValue)> for Params {
    fn extend<I: IntoIterator<Item = (K, TypedValue)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k.as_ref(), v);
        }
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = (&'a str, &'a TypedValue);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a TypedValue)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl IntoIterator for Params {
    type Item = (String, TypedValue);
    type IntoIter = std::vec::IntoIter<(String, TypedValue)>;

    fn into_iter(self) -> Self::IntoIter {
        let keys = self.keys;
        self.entries
            .into_iter()
            .map(|e| {
                let k = keys
                    .get(e.start as usize..e.start as usize + e.len as usize)
                    .unwrap_or("");
                (k.to_string(), e.value)
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// The longest key [`IndexedKey`] spells; longer ones are not found.
const INDEXED_KEY_MAX: usize = 96;

/// `<group>.<n>.<field>` (e.g. `block.1.rd.bytes`) spelled on the stack, to look a
/// device's parameter up without allocating.
pub struct IndexedKey {
    buf: [u8; INDEXED_KEY_MAX],
    len: usize,
    overflow: bool,
}

impl IndexedKey {
    pub fn new(group: &str, n: u32, field: &str) -> Self {
        let mut k = Self {
            buf: [0; INDEXED_KEY_MAX],
            len: 0,
            overflow: false,
        };
        // Writing to `IndexedKey` never fails: an overflow is recorded instead.
        let _ = write!(k, "{group}.{n}.{field}");
        k
    }

    /// The key, or `None` when it did not fit.
    pub fn as_str(&self) -> Option<&str> {
        if self.overflow {
            return None;
        }
        // Only whole `&str`s were copied in, so the bytes are valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

impl fmt::Write for IndexedKey {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                self.len = end;
            }
            None => self.overflow = true,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Params {
        Params::from_unsorted([
            ("state.state", TypedValue::Int(1)),
            ("block.10.rd.bytes", TypedValue::ULLong(10)),
            ("block.2.rd.bytes", TypedValue::ULLong(2)),
            ("block.count", TypedValue::UInt(2)),
            ("cpu.time", TypedValue::ULLong(7)),
            ("net.0.name", TypedValue::String("vnet0".into())),
        ])
    }

    #[test]
    fn unsorted_input_is_sorted_and_found() {
        let p = sample();
        let keys: Vec<&str> = p.keys().collect();
        assert_eq!(
            keys,
            [
                "block.10.rd.bytes",
                "block.2.rd.bytes",
                "block.count",
                "cpu.time",
                "net.0.name",
                "state.state"
            ]
        );
        assert_eq!(p.get("cpu.time"), Some(&TypedValue::ULLong(7)));
        assert_eq!(p.get("block.2.rd.bytes"), Some(&TypedValue::ULLong(2)));
        assert_eq!(
            p.get("net.0.name").and_then(TypedValue::as_str),
            Some("vnet0")
        );
        assert_eq!(p.get("cpu"), None);
        assert_eq!(p.get("cpu.time.x"), None);
        assert_eq!(p.get(""), None);
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn a_repeated_key_is_kept_once() {
        let p = Params::from_unsorted([
            ("b", TypedValue::Int(1)),
            ("a", TypedValue::Int(2)),
            ("b", TypedValue::Int(3)),
        ]);
        assert_eq!(p.len(), 2);
        assert!(matches!(
            p.get("b"),
            Some(TypedValue::Int(1)) | Some(TypedValue::Int(3))
        ));
    }

    #[test]
    fn insert_replaces_or_adds_in_order_and_remove_and_retain_drop() {
        let mut p = sample();
        assert_eq!(
            p.insert("cpu.time", TypedValue::ULLong(8)),
            Some(TypedValue::ULLong(7))
        );
        assert_eq!(p.insert("balloon.current", TypedValue::ULLong(1)), None);
        assert_eq!(p.insert("zz", TypedValue::Int(0)), None);
        assert_eq!(p.keys().next(), Some("balloon.current"));
        assert_eq!(p.keys().last(), Some("zz"));
        assert_eq!(p.get("cpu.time"), Some(&TypedValue::ULLong(8)));
        assert_eq!(p.remove("block.count"), Some(TypedValue::UInt(2)));
        assert_eq!(p.remove("block.count"), None);
        assert!(!p.contains_key("block.count"));
        p.retain(|k, _| !k.starts_with("block."));
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            [
                "balloon.current",
                "cpu.time",
                "net.0.name",
                "state.state",
                "zz"
            ]
        );
        assert_eq!(p.get("zz"), Some(&TypedValue::Int(0)));
    }

    #[test]
    fn prefix_ranges_stop_at_the_prefix() {
        let p = sample();
        let block: Vec<&str> = p.with_prefix("block.").map(|(k, _)| k).collect();
        assert_eq!(
            block,
            ["block.10.rd.bytes", "block.2.rd.bytes", "block.count"]
        );
        assert_eq!(p.with_prefix("vcpu.").count(), 0);
        assert_eq!(p.with_prefix("zzz").count(), 0);
        assert_eq!(p.with_prefix("").count(), 6);
    }

    #[test]
    fn owned_iteration_extend_and_equality() {
        let p = sample();
        let owned: Vec<(String, TypedValue)> = p.clone().into_iter().collect();
        assert_eq!(owned.len(), 6);
        assert_eq!(owned[3], ("cpu.time".to_string(), TypedValue::ULLong(7)));
        let mut q = Params::new();
        q.extend(owned);
        assert_eq!(q, p);
        // Same content built in another order compares equal.
        let r: Params = p.iter().rev().map(|(k, v)| (k, v.clone())).collect();
        assert_eq!(r, p);
        assert_eq!(
            format!("{:?}", Params::from_unsorted([("a", TypedValue::Int(1))])),
            r#"{"a": Int(1)}"#
        );
    }

    #[test]
    fn indexed_keys_are_spelled_without_allocating_and_overflow_is_not_found() {
        assert_eq!(
            IndexedKey::new("block", 12, "rd.bytes").as_str(),
            Some("block.12.rd.bytes")
        );
        let long = "x".repeat(INDEXED_KEY_MAX);
        assert_eq!(IndexedKey::new("vcpu", 0, &long).as_str(), None);
    }
}
