//! Small helpers shared by the built-in collectors to turn libvirt statistics keys into
//! samples without failing on a missing field.

use std::sync::Arc;

use vadvisor_api::{DomainStats, Sample};

/// Pushes `metric` with `labels` when `key` is present and numeric; returns whether it was.
pub(crate) fn push(out: &mut Vec<Sample>, stats: &DomainStats, key: &str, metric: u16, labels: &[Arc<str>]) -> bool {
    match stats.f64(key) {
        Some(v) => {
            out.push(Sample::labelled(metric, labels.to_vec(), v));
            true
        }
        None => false,
    }
}
