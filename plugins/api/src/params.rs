//! [`Params`]: one domain's typed statistics parameters (`cpu.time`, `block.0.rd.bytes`),
//! sorted by key for binary-search lookups. Built for the per-tick hot path: every key
//! lives in one shared string buffer and every entry in one vector, so a domain's
//! parameters cost two allocations however many there are (plus one per string value),
//! instead of one per key and per tree node. [`IndexedKey`] spells `<group>.<n>.<field>`
//! on the stack, so looking a device's field up allocates nothing either. Each entry
//! also keeps its key's first 16 bytes as one big-endian integer, so sorting and
//! searching compare integers, and bytes only where two keys share those 16. A
//! [`SortMemo`] remembers how records of a given key order sorted, so the next record
//! with those keys in that order is sorted without comparing keys; a [`Section`] is the
//! run of keys under one prefix (a device's), searched once for several lookups.

use std::fmt;

use crate::typed_value::TypedValue;

/// One entry: its key's first bytes as an integer, where its key sits in the key
/// buffer, and its value.
#[derive(Clone, Debug)]
struct Entry {
    /// [`key_prefix`] of the key.
    prefix: u128,
    start: u32,
    len: u32,
    value: TypedValue,
}

/// Room for parameters added after a record is built: how many, and their keys' bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    pub entries: usize,
    pub key_bytes: usize,
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
        Self::from_unsorted_sized(pairs, 0)
    }

    /// [`Params::from_unsorted`] with room for keys of `key_bytes` bytes in all, so the
    /// key buffer is allocated once.
    pub fn from_unsorted_sized<K: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, TypedValue)>,
        key_bytes: usize,
    ) -> Self {
        let pairs = pairs.into_iter();
        let mut out = Self::with_capacity(pairs.size_hint().0, key_bytes);
        for (k, v) in pairs {
            out.push_unsorted(k.as_ref(), v);
        }
        out.finish_unsorted();
        out
    }

    /// [`Params::from_unsorted_sized`] for keys given as bytes (as a wire message holds
    /// them), sorting through `memo`: a record whose keys come in the same order as one
    /// sorted before is put in order by that record's permutation, without comparing
    /// keys (a bulk reply lists the same keys in the same order for every domain with
    /// the same devices, tick after tick). The key buffer is checked for UTF-8 once, not
    /// key by key; a key that is not UTF-8 is decoded lossily (invalid sequences
    /// replaced), on its own.
    pub fn from_unsorted_bytes_memo<'k>(
        pairs: impl IntoIterator<Item = (&'k [u8], TypedValue)>,
        key_bytes: usize,
        memo: &mut SortMemo,
    ) -> Self {
        Self::from_unsorted_bytes_memo_with_room(pairs, key_bytes, Room::default(), memo)
    }

    /// [`Params::from_unsorted_bytes_memo`] with `room` to spare, for parameters
    /// inserted later (a group read apart from the bulk call): those inserts then move
    /// nothing to a larger allocation.
    pub fn from_unsorted_bytes_memo_with_room<'k>(
        pairs: impl IntoIterator<Item = (&'k [u8], TypedValue)>,
        key_bytes: usize,
        room: Room,
        memo: &mut SortMemo,
    ) -> Self {
        let pairs = pairs.into_iter();
        let mut raw: Vec<u8> = Vec::with_capacity(key_bytes + room.key_bytes);
        let mut entries = Vec::with_capacity(pairs.size_hint().0 + room.entries);
        for (k, value) in pairs {
            entries.push(Entry {
                prefix: key_prefix(k),
                start: u32::try_from(raw.len()).unwrap_or(u32::MAX),
                len: u32::try_from(k.len()).unwrap_or(0),
                value,
            });
            raw.extend_from_slice(k);
        }
        // The whole buffer can be UTF-8 while a key alone is not (a character split
        // between two keys): every key must also start on a character boundary.
        let checked = String::from_utf8(raw)
            .map_err(|e| e.into_bytes())
            .and_then(|keys| {
                if entries
                    .iter()
                    .all(|e| keys.is_char_boundary(e.start as usize))
                {
                    Ok(keys)
                } else {
                    Err(keys.into_bytes())
                }
            });
        let mut out = match checked {
            Ok(keys) => Self { keys, entries },
            Err(raw) => {
                let mut out = Self::with_capacity(entries.len(), raw.len());
                for entry in entries {
                    let start = entry.start as usize;
                    let key = raw.get(start..start + entry.len as usize).unwrap_or(&[]);
                    out.push_unsorted(&String::from_utf8_lossy(key), entry.value);
                }
                out
            }
        };
        out.finish_unsorted_memo(memo);
        out
    }

    /// [`Params::finish_unsorted`] through `memo`.
    fn finish_unsorted_memo(&mut self, memo: &mut SortMemo) {
        if let Some(i) = memo.find(&self.keys, &self.entries) {
            apply_order(&mut self.entries, &memo.shapes[i].order);
            // Most recently used first: a host has few shapes, the first usually matches.
            memo.shapes[..=i].rotate_right(1);
            return;
        }
        let keys = self.keys.as_bytes();
        let cmp = |a: &Entry, b: &Entry| cmp_entries(keys, a, b);
        let n = self.entries.len();
        let lens: Vec<u32> = self.entries.iter().map(|e| e.len).collect();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| cmp(&self.entries[a as usize], &self.entries[b as usize]));
        let repeated = order
            .windows(2)
            .any(|w| cmp(&self.entries[w[0] as usize], &self.entries[w[1] as usize]).is_eq());
        apply_order(&mut self.entries, &order);
        if repeated {
            // Which of a repeated key's values stays is not defined: not remembered.
            self.entries.dedup_by(|a, b| cmp(a, b).is_eq());
            return;
        }
        memo.remember(Shape {
            keys: self.keys.clone(),
            lens,
            order,
        });
    }

    /// Appends without keeping the order; [`Params::finish_unsorted`] must follow before
    /// any lookup.
    pub(crate) fn push_unsorted(&mut self, key: &str, value: TypedValue) {
        let entry = self.entry_for(key, value);
        self.entries.push(entry);
    }

    /// Sorts what [`Params::push_unsorted`] appended and drops repeated keys.
    pub(crate) fn finish_unsorted(&mut self) {
        let keys = self.keys.as_bytes();
        let cmp = |a: &Entry, b: &Entry| cmp_entries(keys, a, b);
        if !self.entries.is_sorted_by(|a, b| cmp(a, b).is_lt()) {
            self.entries.sort_unstable_by(cmp);
            self.entries.dedup_by(|a, b| cmp(a, b).is_eq());
        }
    }

    fn entry_for(&mut self, key: &str, value: TypedValue) -> Entry {
        let start = self.keys.len();
        self.keys.push_str(key);
        Entry {
            prefix: key_prefix(key.as_bytes()),
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
        let key = key.as_bytes();
        let prefix = key_prefix(key);
        let rest = key.get(PREFIX_BYTES..).unwrap_or(&[]);
        let keys = self.keys.as_bytes();
        let len = key.len() as u32;
        self.entries.binary_search_by(|e| {
            e.prefix
                .cmp(&prefix)
                .then_with(|| cmp_tails(keys, e, len, || rest))
        })
    }

    pub fn get(&self, key: &str) -> Option<&TypedValue> {
        self.find(key).ok().map(|i| &self.entries[i].value)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key`, returning its previous value. A key that sorts after every key
    /// present (a group filled in, in order, after the others) is appended without a
    /// search.
    pub fn insert(&mut self, key: &str, value: TypedValue) -> Option<TypedValue> {
        let after_last = self.entries.last().is_none_or(|last| {
            let prefix = key_prefix(key.as_bytes());
            prefix > last.prefix
                || (prefix == last.prefix && key.as_bytes() > self.key_of(last).as_bytes())
        });
        if after_last {
            let entry = self.entry_for(key, value);
            self.entries.push(entry);
            return None;
        }
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

    /// Whether a key `<prefix>.…` is present (a statistics group's parameters).
    pub fn has_group(&self, prefix: &str) -> bool {
        self.with_prefix(prefix)
            .any(|(k, _)| k.as_bytes().get(prefix.len()) == Some(&b'.'))
    }

    /// The parameters whose key starts with `prefix`, sorted by key.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a TypedValue)> + 'a {
        // A prefix of at most 16 bytes orders against a key as its integer form does
        // against the key's (keys hold no NUL): no key bytes are read.
        let from = if prefix.len() <= PREFIX_BYTES {
            let p = key_prefix(prefix.as_bytes());
            self.entries.partition_point(|e| e.prefix < p)
        } else {
            self.entries.partition_point(|e| self.key_of(e) < prefix)
        };
        self.entries[from..]
            .iter()
            .map(|e| (self.key_of(e), &e.value))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// The parameters whose keys start with one prefix (a device's `block.0.`), to look
/// several of them up by the rest of their key: the prefix is searched for once, then
/// each lookup searches only the section and compares only what follows the prefix.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    keys: &'a str,
    entries: &'a [Entry],
    /// The prefix's length.
    skip: usize,
}

impl Params {
    /// The section of keys starting with `prefix`.
    pub fn section(&self, prefix: &str) -> Section<'_> {
        let from = if prefix.len() <= PREFIX_BYTES {
            let p = key_prefix(prefix.as_bytes());
            self.entries.partition_point(|e| e.prefix < p)
        } else {
            self.entries.partition_point(|e| self.key_of(e) < prefix)
        };
        let rest = &self.entries[from..];
        // Keys with the prefix are adjacent in key order; a device has a few of them.
        let len = rest
            .iter()
            .take_while(|e| self.key_of(e).starts_with(prefix))
            .count();
        Section {
            keys: &self.keys,
            entries: &rest[..len],
            skip: prefix.len(),
        }
    }
}

impl Params {
    /// The sections `<group>.N.` of every index `N` (a domain's disks, `block.0.` …),
    /// sorted by `N`, in one pass over the group's keys: the keys of one index are
    /// adjacent in key order (`block.1.` < `block.10.` < `block.2.`), so each run of
    /// them is one section. Keys without a decimal index (`block.count`) are skipped.
    pub fn indexed_sections(&self, group: &str) -> Vec<(u32, Section<'_>)> {
        let from = if group.len() <= PREFIX_BYTES {
            let p = key_prefix(group.as_bytes());
            self.entries.partition_point(|e| e.prefix < p)
        } else {
            self.entries.partition_point(|e| self.key_of(e) < group)
        };
        let mut out: Vec<(u32, Section<'_>)> = Vec::new();
        // The run being gathered: its index, where it starts and its prefix's length.
        let mut run: Option<(u32, usize, usize)> = None;
        let rest = &self.entries[from..];
        let mut end = rest.len();
        for (i, e) in rest.iter().enumerate() {
            let key = self.key_of(e).as_bytes();
            let Some(after) = key.strip_prefix(group.as_bytes()) else {
                end = i;
                break;
            };
            let Some(after) = after.strip_prefix(b".") else {
                // `blocked.x` sorts among `block.` keys' neighbours but is not one.
                if let Some((n, start, skip)) = run.take() {
                    out.push((n, self.section_of(&rest[start..i], skip)));
                }
                continue;
            };
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            let index = (digits > 0 && after.get(digits) == Some(&b'.'))
                .then(|| decimal(&after[..digits]))
                .flatten();
            match (run, index) {
                (Some((n, _, _)), Some(m)) if n == m => {}
                _ => {
                    if let Some((n, start, skip)) = run.take() {
                        out.push((n, self.section_of(&rest[start..i], skip)));
                    }
                    run = index.map(|m| (m, i, group.len() + 1 + digits + 1));
                }
            }
        }
        if let Some((n, start, skip)) = run {
            out.push((n, self.section_of(&rest[start..end], skip)));
        }
        out.sort_by_key(|(n, _)| *n);
        out
    }

    fn section_of<'a>(&'a self, entries: &'a [Entry], skip: usize) -> Section<'a> {
        Section {
            keys: &self.keys,
            entries,
            skip,
        }
    }
}

impl<'a> Section<'a> {
    /// A section without parameters.
    pub const EMPTY: Section<'static> = Section {
        keys: "",
        entries: &[],
        skip: 0,
    };

    /// The value of `<prefix><rest>`.
    pub fn get(&self, rest: &str) -> Option<&'a TypedValue> {
        let keys = self.keys.as_bytes();
        let rest = rest.as_bytes();
        self.entries
            .binary_search_by(|e| {
                let start = e.start as usize + self.skip;
                let end = e.start as usize + e.len as usize;
                keys.get(start..end).unwrap_or(&[]).cmp(rest)
            })
            .ok()
            .map(|i| &self.entries[i].value)
    }

    /// How many parameters the section holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The value of ASCII decimal `digits` (`None` when it exceeds `u32`), as `str::parse`
/// reads them, without checking them for UTF-8 first.
fn decimal(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?
            .checked_add(u32::from(d.wrapping_sub(b'0')))
    })
}

/// How many leading key bytes [`key_prefix`] holds.
const PREFIX_BYTES: usize = 16;

/// The first [`PREFIX_BYTES`] bytes of `key`, zero-padded, as a big-endian integer:
/// comparing two prefixes orders those bytes as comparing the byte strings does (keys
/// hold no NUL byte, so padding sorts before any key byte, as a shorter key does).
fn key_prefix(key: &[u8]) -> u128 {
    // A key of 16 bytes or more (half of libvirt's) is read in one load; a shorter
    // one byte by byte (a variable-length copy is a call to `memcpy`).
    if let Some(first) = key.first_chunk::<PREFIX_BYTES>() {
        return u128::from_be_bytes(*first);
    }
    let mut buf = [0u8; PREFIX_BYTES];
    for (b, k) in buf.iter_mut().zip(key) {
        *b = *k;
    }
    u128::from_be_bytes(buf)
}

/// Orders two entries of one key buffer by key.
fn cmp_entries(keys: &[u8], a: &Entry, b: &Entry) -> std::cmp::Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| cmp_tails(keys, a, b.len, || tail(keys, b)))
}

/// Orders `e`'s key after the prefix against another key of `other_len` bytes with an
/// equal prefix, whose bytes after the prefix `other_tail` gives. Two keys of at most
/// 16 bytes with equal prefixes are equal (zero padding, no NUL in keys): no key bytes
/// are read for them, which is most lookups.
fn cmp_tails<'a>(
    keys: &'a [u8],
    e: &Entry,
    other_len: u32,
    other_tail: impl FnOnce() -> &'a [u8],
) -> std::cmp::Ordering {
    let short = PREFIX_BYTES as u32;
    if e.len <= short && other_len <= short {
        std::cmp::Ordering::Equal
    } else {
        tail(keys, e).cmp(other_tail())
    }
}

/// The bytes of `e`'s key after its prefix (empty for keys of at most 16 bytes).
fn tail<'a>(keys: &'a [u8], e: &Entry) -> &'a [u8] {
    let start = e.start as usize;
    keys.get(start + PREFIX_BYTES.min(e.len as usize)..start + e.len as usize)
        .unwrap_or(&[])
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

/// How many key orders a [`SortMemo`] keeps: a host's domains have few device layouts.
const MEMO_SHAPES: usize = 8;

/// Key orders [`Params::from_unsorted_bytes_memo`] has sorted, most recently used first.
#[derive(Default)]
pub struct SortMemo {
    shapes: Vec<Shape>,
}

/// One record's keys as pushed (concatenated, with their lengths) and the permutation
/// that sorted them: `order[j]` is the pushed position of the `j`-th key in order.
struct Shape {
    keys: String,
    lens: Vec<u32>,
    order: Vec<u32>,
}

impl SortMemo {
    /// The remembered shape with exactly these keys pushed in this order: the same key
    /// bytes and the same key lengths (so the same keys, not just the same text).
    fn find(&self, keys: &str, entries: &[Entry]) -> Option<usize> {
        self.shapes.iter().position(|s| {
            s.keys.len() == keys.len()
                && s.lens.len() == entries.len()
                && s.keys == keys
                // Unsorted entries are still in push order.
                && s.lens.iter().zip(entries).all(|(&len, e)| len == e.len)
        })
    }

    fn remember(&mut self, shape: Shape) {
        self.shapes.truncate(MEMO_SHAPES - 1);
        self.shapes.insert(0, shape);
    }
}

/// Puts `entries` in the order `order` gives (`order[j]`: the position the `j`-th
/// entry comes from), in place.
fn apply_order(entries: &mut [Entry], order: &[u32]) {
    for j in 0..entries.len() {
        // Where the element meant for `j` is now: entries before `j` were swapped away.
        let mut i = order[j] as usize;
        while i < j {
            i = order[i] as usize;
        }
        entries.swap(j, i);
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
        // Spelled without `fmt` (several times dearer): this runs for every device field
        // of every domain on every tick.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        k.push(group.as_bytes());
        k.push(b".");
        k.push(digits);
        k.push(b".");
        k.push(field.as_bytes());
        k
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflow = true,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Keys made of a few shared pieces, so many share their first 16 bytes or are
    /// prefixes of each other (`block.0.rd`, `block.0.rd.bytes`), as libvirt's do.
    fn key() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("block."),
                Just("0."),
                Just("10."),
                Just("rd"),
                Just(".bytes"),
                Just("allocation"),
                Just("balloon."),
                Just("x"),
                Just("é"),
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// Every index's section, in one pass, is what a key-by-key reading finds.
        #[test]
        fn indexed_sections_match_a_key_by_key_reading(
            keys in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        Just("block."), Just("blocked."), Just("block"), Just("0."),
                        Just("10."), Just("2."), Just("1"), Just("rd"), Just(".bytes"),
                        Just("count"), Just("x"),
                    ],
                    1..5,
                ).prop_map(|parts| parts.concat()),
                0..40,
            ),
        ) {
            let mut params = Params::new();
            for k in &keys {
                params.insert(k, TypedValue::UInt(k.len() as u32));
            }
            // The oracle: `block.<digits>.<rest>` keys grouped by index.
            let mut expected: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
            for k in &keys {
                let Some(after) = k.strip_prefix("block.") else { continue };
                let Some((n, rest)) = after.split_once('.') else { continue };
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(n) = n.parse::<u32>() else { continue };
                expected.entry(n).or_default().insert(rest.to_string(), k.len() as u32);
            }
            let got = params.indexed_sections("block");
            let indices: Vec<u32> = got.iter().map(|(n, _)| *n).collect();
            prop_assert_eq!(indices, expected.keys().copied().collect::<Vec<_>>());
            for (n, section) in &got {
                let fields = &expected[n];
                prop_assert_eq!(section.len(), fields.len());
                for (rest, len) in fields {
                    prop_assert_eq!(section.get(rest), Some(&TypedValue::UInt(*len)));
                }
            }
        }

        #[test]
        fn order_and_lookups_match_a_btree_map(
            pairs in proptest::collection::vec((key(), 0i32..100), 0..40),
            probes in proptest::collection::vec(key(), 0..20),
        ) {
            let params = Params::from_unsorted(
                pairs.iter().map(|(k, v)| (k.as_str(), TypedValue::Int(*v))),
            );
            let reference: BTreeMap<&str, ()> =
                pairs.iter().map(|(k, _)| (k.as_str(), ())).collect();
            let keys: Vec<&str> = params.keys().collect();
            let expected: Vec<&str> = reference.keys().copied().collect();
            prop_assert_eq!(&keys, &expected);
            for probe in probes.iter().chain(pairs.iter().map(|(k, _)| k)) {
                prop_assert_eq!(params.contains_key(probe), reference.contains_key(probe.as_str()));
                let with: Vec<&str> = params.with_prefix(probe).map(|(k, _)| k).collect();
                let want: Vec<&str> =
                    expected.iter().copied().filter(|k| k.starts_with(probe.as_str())).collect();
                prop_assert_eq!(with, want);
            }
            let mut grown = Params::new();
            for (k, v) in &pairs {
                grown.insert(k, TypedValue::Int(*v));
            }
            prop_assert_eq!(grown.keys().collect::<Vec<_>>(), expected.clone());
            // In key order, each key goes on the end (no search): the same result.
            let mut in_order = pairs.clone();
            in_order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let mut appended = Params::new();
            for (k, v) in &in_order {
                appended.insert(k, TypedValue::Int(*v));
            }
            prop_assert_eq!(appended.keys().collect::<Vec<_>>(), expected);
            for (k, _) in &in_order {
                let last = in_order.iter().rev().find(|(o, _)| o == k).map(|(_, v)| TypedValue::Int(*v));
                prop_assert_eq!(appended.get(k), last.as_ref());
            }
        }
    }

    proptest! {
        /// Records sorted through one memo (some repeating an earlier record's keys in
        /// the same order with other values, some not) come out exactly as sorted alone.
        #[test]
        fn sorting_through_a_memo_gives_what_sorting_alone_gives(
            shapes in proptest::collection::vec(
                proptest::collection::vec(key(), 0..30), 1..12),
            picks in proptest::collection::vec((0usize..12, 0i32..1000), 1..40),
        ) {
            let mut memo = SortMemo::default();
            for (pick, salt) in picks {
                let keys = &shapes[pick % shapes.len()];
                let pairs = || keys.iter().enumerate().map(|(i, k)| {
                    (k.as_bytes(), TypedValue::Int(salt + i as i32))
                });
                let alone = Params::from_unsorted(
                    pairs().map(|(k, v)| (String::from_utf8_lossy(k), v)),
                );
                let memo_sorted = Params::from_unsorted_bytes_memo(pairs(), 0, &mut memo);
                // The same keys in the same order; the same value for every key given once
                // (a repeated key may keep either of its values, as `from_unsorted` says).
                prop_assert_eq!(
                    memo_sorted.keys().collect::<Vec<_>>(),
                    alone.keys().collect::<Vec<_>>()
                );
                for k in keys {
                    if keys.iter().filter(|o| *o == k).count() == 1 {
                        prop_assert_eq!(memo_sorted.get(k), alone.get(k));
                    }
                }
                prop_assert!(memo.shapes.len() <= MEMO_SHAPES);
            }
        }
    }

    proptest! {
        /// Keys given as bytes (valid UTF-8 or not) give what the same keys decoded
        /// lossily one by one give.
        #[test]
        fn keys_as_bytes_give_what_keys_decoded_one_by_one_give(
            keys in proptest::collection::vec(
                prop_oneof![
                    key().prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..20),
        ) {
            let mut memo = SortMemo::default();
            let from_bytes = Params::from_unsorted_bytes_memo(
                keys.iter().map(|k| (k.as_slice(), TypedValue::Int(0))),
                0,
                &mut memo,
            );
            let one_by_one = Params::from_unsorted(
                keys.iter().map(|k| (String::from_utf8_lossy(k), TypedValue::Int(0))),
            );
            prop_assert_eq!(from_bytes, one_by_one);
        }
    }

    proptest! {
        /// A section finds exactly what a lookup of the whole key finds.
        #[test]
        fn a_section_finds_what_the_whole_key_finds(
            pairs in proptest::collection::vec((key(), 0i32..100), 0..40),
            prefix in key(),
            probes in proptest::collection::vec(key(), 0..20),
        ) {
            let params = Params::from_unsorted(
                pairs.iter().map(|(k, v)| (k.as_str(), TypedValue::Int(*v))),
            );
            let section = params.section(&prefix);
            prop_assert_eq!(section.len(), params.with_prefix(&prefix).count());
            for (k, _) in &pairs {
                if let Some(rest) = k.strip_prefix(prefix.as_str()) {
                    prop_assert_eq!(section.get(rest), params.get(k));
                }
            }
            for probe in &probes {
                let whole = format!("{prefix}{probe}");
                prop_assert_eq!(section.get(probe), params.get(&whole));
            }
        }
    }

    #[test]
    fn parameters_inserted_into_the_room_left_move_nothing() {
        let room = Room {
            entries: 3,
            key_bytes: 26,
        };
        let mut p = Params::from_unsorted_bytes_memo_with_room(
            [
                (&b"state.state"[..], TypedValue::Int(1)),
                (&b"balloon.current"[..], TypedValue::ULLong(2)),
            ],
            26,
            room,
            &mut SortMemo::default(),
        );
        let (entries, keys) = (p.entries.as_ptr(), p.keys.as_ptr());
        p.insert("cpu.time", TypedValue::ULLong(3));
        p.insert("cpu.user", TypedValue::ULLong(4));
        p.insert("cpu.system", TypedValue::ULLong(5));
        assert_eq!((p.entries.as_ptr(), p.keys.as_ptr()), (entries, keys));
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            [
                "balloon.current",
                "cpu.system",
                "cpu.time",
                "cpu.user",
                "state.state"
            ]
        );
        // Without the room, the same inserts need larger allocations.
        let mut tight = Params::from_unsorted_bytes_memo(
            [(&b"state.state"[..], TypedValue::Int(1))],
            11,
            &mut SortMemo::default(),
        );
        let cap = tight.entries.capacity();
        tight.insert("cpu.time", TypedValue::ULLong(3));
        assert!(tight.entries.capacity() > cap);
    }

    #[test]
    fn a_character_split_between_two_keys_is_not_taken_for_valid_keys() {
        // 0xE0 0xA0 0x80 is U+0800 as a whole; neither key is UTF-8 alone.
        let p = Params::from_unsorted_bytes_memo(
            [
                (&[0xe0][..], TypedValue::Int(1)),
                (&[0xa0, 0x80][..], TypedValue::Int(2)),
            ],
            3,
            &mut SortMemo::default(),
        );
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            ["\u{fffd}", "\u{fffd}\u{fffd}"]
        );
    }

    #[test]
    fn a_remembered_order_is_used_only_for_the_same_keys_in_the_same_order() {
        let mut memo = SortMemo::default();
        let first = Params::from_unsorted_bytes_memo(
            [
                (&b"b"[..], TypedValue::Int(1)),
                (&b"a"[..], TypedValue::Int(2)),
            ],
            0,
            &mut memo,
        );
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(memo.shapes.len(), 1);
        // Same text, other split: "ba" + "" is not "b" + "a".
        let other = Params::from_unsorted_bytes_memo(
            [
                (&b"ba"[..], TypedValue::Int(1)),
                (&b""[..], TypedValue::Int(2)),
            ],
            0,
            &mut memo,
        );
        assert_eq!(other.keys().collect::<Vec<_>>(), ["", "ba"]);
        assert_eq!(memo.shapes.len(), 2);
        // Same keys, same order: found (no new shape), values follow their keys.
        let again = Params::from_unsorted_bytes_memo(
            [
                (&b"b"[..], TypedValue::Int(3)),
                (&b"a"[..], TypedValue::Int(4)),
            ],
            0,
            &mut memo,
        );
        assert_eq!(memo.shapes.len(), 2);
        assert_eq!(again.get("a"), Some(&TypedValue::Int(4)));
        assert_eq!(again.get("b"), Some(&TypedValue::Int(3)));
        // A record with a repeated key is not remembered.
        let repeated = Params::from_unsorted_bytes_memo(
            [
                (&b"c"[..], TypedValue::Int(1)),
                (&b"c"[..], TypedValue::Int(2)),
            ],
            0,
            &mut memo,
        );
        assert_eq!(repeated.len(), 1);
        assert_eq!(memo.shapes.len(), 2);
    }

    #[test]
    fn a_memo_keeps_at_most_its_shapes_most_recent_first() {
        let mut memo = SortMemo::default();
        let names: Vec<String> = (0..MEMO_SHAPES + 3).map(|i| format!("k{i}")).collect();
        for n in &names {
            Params::from_unsorted_bytes_memo([(n.as_bytes(), TypedValue::Int(0))], 0, &mut memo);
        }
        assert_eq!(memo.shapes.len(), MEMO_SHAPES);
        assert_eq!(memo.shapes[0].keys, names[names.len() - 1]);
    }

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
        for n in [0, 7, 10, 99, 100, 4_294_967_295] {
            assert_eq!(
                IndexedKey::new("net", n, "rx.bytes").as_str(),
                Some(format!("net.{n}.rx.bytes").as_str())
            );
        }
    }
}
