//! Small helpers shared by the built-in collectors to turn libvirt statistics keys into
//! samples without failing on a missing field, and without allocating per value: a
//! device's samples share one [`Labels`], and `<group>.<n>.<field>` keys are spelled on
//! the stack.

use std::sync::{Arc, OnceLock};

use vadvisor_api::{
    CollectContext, CollectError, Collected, DomainSamples, DomainStats, Labels, Sample, Section,
    TypedValue,
};

/// Runs `f` for every domain of the tick's shared statistics, collecting the samples it
/// pushes into one `DomainSamples` per domain (with the domain's state).
pub(crate) async fn for_each_domain(
    cx: &CollectContext,
    mut f: impl FnMut(&DomainStats, &mut Vec<Sample>),
) -> Result<Collected, CollectError> {
    let stats = cx.domain_stats().await?;
    let mut out = Collected::default();
    out.domains.reserve_exact(stats.len());
    // Domains of a host mostly have the same devices: sized as the previous domain's,
    // a domain's samples are usually pushed without growing or shrinking the vector.
    let mut previous = 0;
    for domain in stats.iter() {
        let mut ds = DomainSamples::new(domain.domain.clone());
        ds.state = domain.state();
        ds.samples.reserve_exact(previous);
        f(domain, &mut ds.samples);
        previous = ds.samples.len();
        ds.samples.shrink_to_fit();
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
    labels: &Labels,
) -> bool {
    push_value(out, stats.f64(key), metric, labels)
}

/// Pushes `metric` from `<group>.<n>.<field>` with `labels` when present and numeric.
pub(crate) fn push_indexed(
    out: &mut Vec<Sample>,
    stats: &DomainStats,
    (group, n, field): (&str, u32, &str),
    metric: u16,
    labels: &Labels,
) -> bool {
    push_value(out, stats.f64_indexed(group, n, field), metric, labels)
}

/// Pushes `metric` from a device's `field` (of `DomainStats::device`) with `labels`
/// when present and numeric.
pub(crate) fn push_field(
    out: &mut Vec<Sample>,
    device: &Section<'_>,
    field: &str,
    metric: u16,
    labels: &Labels,
) -> bool {
    push_value(
        out,
        device.get(field).and_then(TypedValue::as_f64),
        metric,
        labels,
    )
}

fn push_value(out: &mut Vec<Sample>, value: Option<f64>, metric: u16, labels: &Labels) -> bool {
    match value {
        Some(v) => {
            out.push(Sample::labelled(metric, labels.clone(), v));
            true
        }
        None => false,
    }
}

/// How many index labels (`"0"`, `"1"`, …) are made once and shared by every tick.
const SHARED_INDEX_LABELS: u32 = 256;

/// The one-label set `[n]` (a vCPU index): shared for small `n`, made for larger ones.
pub(crate) fn index_labels(n: u32) -> Labels {
    static SHARED: OnceLock<Vec<Labels>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        (0..SHARED_INDEX_LABELS)
            .map(|i| Labels::from([Arc::<str>::from(i.to_string())]))
            .collect()
    });
    match shared.get(n as usize) {
        Some(l) => l.clone(),
        None => Labels::from([Arc::<str>::from(n.to_string())]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{DomainRef, TypedValue};

    #[test]
    fn index_labels_are_shared_below_the_cap_and_made_above() {
        let a = index_labels(3);
        let b = index_labels(3);
        assert_eq!(&*a[0], "3");
        assert!(std::ptr::eq(a.as_slice(), b.as_slice()));
        let big = index_labels(SHARED_INDEX_LABELS + 1);
        assert_eq!(&*big[0], "257");
    }

    #[test]
    fn push_indexed_reads_numbers_and_skips_strings_and_absent_keys() {
        let mut s = DomainStats::new(DomainRef::new("u", "n"));
        s.params.insert("net.2.rx.bytes", TypedValue::ULLong(5));
        s.params
            .insert("net.2.name", TypedValue::String("x".into()));
        let labels = Labels::from([Arc::<str>::from("x")]);
        let mut out = Vec::new();
        assert!(push_indexed(
            &mut out,
            &s,
            ("net", 2, "rx.bytes"),
            7,
            &labels
        ));
        assert!(!push_indexed(&mut out, &s, ("net", 2, "name"), 8, &labels));
        assert!(!push_indexed(
            &mut out,
            &s,
            ("net", 3, "rx.bytes"),
            9,
            &labels
        ));
        assert_eq!(out, vec![Sample::labelled(7, labels, 5.0)]);
    }
}
