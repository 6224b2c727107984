//! Small helpers shared by the built-in collectors to turn libvirt statistics keys into
//! samples without failing on a missing field.

use std::sync::Arc;

use vadvisor_api::{CollectContext, CollectError, Collected, DomainSamples, DomainStats, Sample};

/// Runs `f` for every domain of the tick's shared statistics, collecting the samples it
/// pushes into one `DomainSamples` per domain (with the domain's state).
pub(crate) async fn for_each_domain(
    cx: &CollectContext,
    mut f: impl FnMut(&DomainStats, &mut Vec<Sample>),
) -> Result<Collected, CollectError> {
    let stats = cx.domain_stats().await?;
    let mut out = Collected::default();
    for domain in stats.iter() {
        let mut ds = DomainSamples::new(domain.domain.clone());
        ds.state = domain.state();
        f(domain, &mut ds.samples);
        out.domains.push(ds);
    }
    Ok(out)
}

/// Pushes `metric` with `labels` when `key` is present and numeric; returns whether it was.
pub(crate) fn push(
    out: &mut Vec<Sample>,
    stats: &DomainStats,
    key: &str,
    metric: u16,
    labels: &[Arc<str>],
) -> bool {
    match stats.f64(key) {
        Some(v) => {
            out.push(Sample::labelled(metric, labels.to_vec(), v));
            true
        }
        None => false,
    }
}
