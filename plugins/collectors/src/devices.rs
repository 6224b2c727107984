//! Device labels for per-disk and per-interface series: the name libvirt reports, or a
//! stable stand-in when it reports none (SR-IOV/hostdev interfaces), never two series
//! with the same label (which would break Prometheus scrapes).

use std::collections::HashSet;
use std::sync::Arc;

use vadvisor_api::DomainStats;

/// `(index, label)` for every `<group>.N.*` device of a domain.
pub(crate) fn device_labels(stats: &DomainStats, group: &str) -> Vec<(u32, Arc<str>)> {
    let mut seen = HashSet::new();
    stats
        .indices(group)
        .into_iter()
        .map(|n| {
            let base = stats
                .str(&format!("{group}.{n}.name"))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{group}{n}"));
            let mut label = base.clone();
            if !seen.insert(label.clone()) {
                label = format!("{base}#{n}");
                seen.insert(label.clone());
            }
            (n, Arc::from(label))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{DomainRef, TypedValue};

    #[test]
    fn unnamed_and_duplicate_devices_get_unique_labels() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        s.params.insert("net.count".into(), TypedValue::UInt(3));
        s.params
            .insert("net.0.name".into(), TypedValue::String("vnet0".into()));
        s.params
            .insert("net.0.rx.bytes".into(), TypedValue::ULLong(1));
        s.params
            .insert("net.1.rx.bytes".into(), TypedValue::ULLong(1));
        s.params
            .insert("net.2.name".into(), TypedValue::String("vnet0".into()));
        let labels: Vec<String> = device_labels(&s, "net")
            .into_iter()
            .map(|(_, l)| l.to_string())
            .collect();
        assert_eq!(labels, vec!["vnet0", "net1", "vnet0#2"]);
    }
}
