//! Device labels for per-disk and per-interface series: the name libvirt reports, or a
//! stable stand-in when it reports none (SR-IOV/hostdev interfaces), never two series
//! with the same label (which would break Prometheus scrapes).

use std::sync::Arc;

use vadvisor_api::{DomainStats, Section, TypedValue};

/// `(label, parameters)` for every `<group>.N.*` device of a domain, in index order.
pub(crate) fn device_labels<'a>(
    stats: &'a DomainStats,
    group: &str,
) -> Vec<(Arc<str>, Section<'a>)> {
    let mut out: Vec<(Arc<str>, Section<'a>)> = Vec::new();
    for n in stats.indices(group) {
        let device = stats.device(group, n);
        let name = device.get("name").and_then(TypedValue::as_str);
        let base: Arc<str> = match name {
            Some(name) if !name.is_empty() => Arc::from(name),
            _ => Arc::from(format!("{group}{n}")),
        };
        // A handful of devices per domain: a linear scan beats hashing.
        let taken = |l: &str| out.iter().any(|(o, _)| &**o == l);
        let label = if taken(&base) {
            Arc::from(format!("{base}#{n}"))
        } else {
            base
        };
        out.push((label, device));
    }
    out
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
            .map(|(l, _)| l.to_string())
            .collect();
        assert_eq!(labels, vec!["vnet0", "net1", "vnet0#2"]);
    }
}
