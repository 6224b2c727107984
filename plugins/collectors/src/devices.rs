//! Device labels for per-disk and per-interface series: the name libvirt reports, or a
//! stable stand-in when it reports none (SR-IOV/hostdev interfaces), never two series
//! with the same label (which would break Prometheus scrapes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use vadvisor_api::{DomainStats, Labels, Section, TypedValue};

/// `(labels, parameters)` for every `<group>.N.*` device of a domain, in index order;
/// `labels` is the one-label set `[device label]`.
pub(crate) fn device_labels<'a>(stats: &'a DomainStats, group: &str) -> Vec<(Labels, Section<'a>)> {
    let mut out: Vec<(Labels, Section<'a>)> = Vec::new();
    for (n, device) in stats.devices(group) {
        let name = device.get("name").and_then(TypedValue::as_str);
        // A handful of devices per domain: a linear scan beats hashing.
        let taken = |l: &str| out.iter().any(|(o, _)| &*o[0] == l);
        let labels = match name {
            Some(name) if !name.is_empty() && !taken(name) => interned_one(name),
            Some(name) if !name.is_empty() => interned_one(&format!("{name}#{n}")),
            _ => {
                let base = format!("{group}{n}");
                if taken(&base) {
                    interned_one(&format!("{base}#{n}"))
                } else {
                    interned_one(&base)
                }
            }
        };
        out.push((labels, device));
    }
    out
}

/// How many label sets are kept before the table starts again (devices come and go).
const INTERNED_MAX: usize = 4096;

/// Label sets made once and shared tick after tick by every device of that label:
/// no allocation per device per tick, and a sink comparing a sample's labels with the
/// previous tick's finds the same pointer. Content-addressed, so shared by every
/// collector of the process.
#[derive(Default)]
struct Interned {
    /// `[label]` by label.
    one: HashMap<Box<str>, Labels>,
    /// `[label, second]` by `second` (a disk's source path: one per domain's disk).
    pairs: HashMap<Box<str>, Labels>,
}

fn interned() -> std::sync::MutexGuard<'static, Interned> {
    static TABLE: OnceLock<Mutex<Interned>> = OnceLock::new();
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The shared label set `[label]`.
pub(crate) fn interned_one(label: &str) -> Labels {
    let mut table = interned();
    if let Some(l) = table.one.get(label) {
        return l.clone();
    }
    if table.one.len() >= INTERNED_MAX {
        table.one.clear();
    }
    let labels = Labels::from([Arc::<str>::from(label)]);
    table.one.insert(label.into(), labels.clone());
    labels
}

/// The shared label set `[first, second]`.
pub(crate) fn interned_pair(first: &Arc<str>, second: &str) -> Labels {
    let mut table = interned();
    if let Some(l) = table.pairs.get(second).filter(|l| *l[0] == **first) {
        return l.clone();
    }
    if table.pairs.len() >= INTERNED_MAX {
        table.pairs.clear();
    }
    let labels = Labels::from([first.clone(), Arc::<str>::from(second)]);
    table.pairs.insert(second.into(), labels.clone());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{DomainRef, TypedValue};

    #[test]
    fn unnamed_and_duplicate_devices_get_unique_labels() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        s.params.insert("net.count", TypedValue::UInt(3));
        s.params
            .insert("net.0.name", TypedValue::String("vnet0".into()));
        s.params.insert("net.0.rx.bytes", TypedValue::ULLong(1));
        s.params.insert("net.1.rx.bytes", TypedValue::ULLong(1));
        s.params
            .insert("net.2.name", TypedValue::String("vnet0".into()));
        let labels: Vec<String> = device_labels(&s, "net")
            .into_iter()
            .map(|(l, _)| l[0].to_string())
            .collect();
        assert_eq!(labels, vec!["vnet0", "net1", "vnet0#2"]);
    }

    #[test]
    fn label_sets_are_made_once_and_shared() {
        let a = interned_one("vda-shared-test");
        let b = interned_one("vda-shared-test");
        assert_eq!(&*a[0], "vda-shared-test");
        assert!(std::ptr::eq(a.as_slice(), b.as_slice()));
        assert!(!std::ptr::eq(
            a.as_slice(),
            interned_one("vdb-shared-test").as_slice()
        ));
        let p = interned_pair(&a[0], "/images/one.qcow2");
        assert_eq!(p.len(), 2);
        assert_eq!((&*p[0], &*p[1]), ("vda-shared-test", "/images/one.qcow2"));
        let q = interned_pair(&a[0], "/images/one.qcow2");
        assert!(std::ptr::eq(p.as_slice(), q.as_slice()));
        // The same path under another device label is another set.
        let other = interned_pair(&Arc::from("vdc-shared-test"), "/images/one.qcow2");
        assert_eq!(&*other[0], "vdc-shared-test");
    }
}
