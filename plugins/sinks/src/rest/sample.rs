//! One REST sample: the collector runs it is made of ([`Part`]s, shared with the
//! samples that carry them) and its JSON text ([`Fragment`]), written once from them
//! in vAdvisor's shape plus `ages` (seconds) for carried sections. The domain's name is
//! left out of the text and inserted when a response is written, so a fragment stays
//! valid whatever the domain is called by then.

use std::sync::Arc;
use std::time::SystemTime;

use vadvisor_api::{DomainState, MetricDesc};

use crate::json_render::PreparedValue;
use crate::json_write::{Leaf, Tree};
use crate::timefmt::iso_utc;

/// One collector run's values for one domain, shared (not copied) by every sample
/// that carries them.
#[derive(Clone)]
pub struct Part {
    pub collector: Arc<str>,
    pub at: SystemTime,
    pub values: Arc<[PreparedValue]>,
    /// The top-level JSON keys the collector writes (`diskio`), named in `ages`.
    pub sections: Arc<[Arc<str>]>,
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

/// Writes one sample: timestamp, state, name, each part's values (a later part wins
/// on a shared path) and the ages of carried parts' sections (the oldest age when two
/// parts share a section).
pub fn render(at: SystemTime, state: Option<DomainState>, parts: &[Part]) -> Fragment {
    let timestamp = iso_utc(at);
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
    let mut tree = Tree::new();
    tree.set(Tree::ROOT, "timestamp", Some(Leaf::Str(&timestamp)));
    if let Some(state) = state {
        tree.set(Tree::ROOT, "state", Some(Leaf::Str(state.name())));
        tree.set(
            Tree::ROOT,
            "state_reason",
            Some(Leaf::Str(state.reason_name())),
        );
    }
    tree.set(Tree::ROOT, "name", Some(Leaf::Hole));
    for part in parts {
        tree.place_all(&part.values);
    }
    if !ages.is_empty() {
        let obj = tree.set(Tree::ROOT, "ages", None);
        for (section, age) in ages {
            tree.set(obj, section, Some(Leaf::Float(age)));
        }
    }
    let mut out = Vec::with_capacity(1024);
    let name_at = tree.write(&mut out);
    Fragment {
        name_at: name_at
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::MAX),
        json: out.into(),
    }
}
