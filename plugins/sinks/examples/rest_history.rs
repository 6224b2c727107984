//! Measures the REST sink's history in isolation: DOMAINS synthetic domains (2 vCPUs,
//! one disk, one interface, the built-in `cpu`, `memory`, `block` and `net`
//! collectors' metrics) with SAMPLES ticks of history, then the cost of a tick and of
//! reading `/api/v1.0/stats/` right after a tick and in between, and the process' RSS.
//!
//! ```sh
//! cargo run --release -p vadvisor-sinks --example rest_history -- 22 60
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vadvisor_api::{Batch, DomainRef, DomainSamples, DomainState, MetricDesc, Sample};
use vadvisor_collectors::{block, cpu, memory, net};
use vadvisor_sinks::rest::HistoryStore;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn label(name: &str, i: usize) -> Arc<str> {
    match name {
        "vcpu" => i.to_string().into(),
        "path" => format!("/var/lib/libvirt/images/disk{i}.qcow2").into(),
        "interface" => format!("vnet{i}").into(),
        _ => format!("vd{}", (b'a' + i as u8) as char).into(),
    }
}

/// Every metric of `metrics` for one domain at tick `t`: 2 items of per-vCPU metrics,
/// 1 of other labelled ones.
fn samples(metrics: &[MetricDesc], t: u64, d: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for (m, desc) in metrics.iter().enumerate() {
        let items = if desc.labels.contains(&"vcpu") { 2 } else { 1 };
        for i in 0..items {
            let labels: Vec<Arc<str>> = desc.labels.iter().map(|l| label(l, i)).collect();
            let value = if desc.states.is_empty() {
                (t * 1_000_003 + d as u64 * 7_919 + m as u64 * 104_729) as f64 * 1_000.0
            } else {
                1.0
            };
            out.push(Sample::labelled(m as u16, labels, value));
        }
    }
    out
}

fn tick(at: SystemTime, t: u64, domains: usize) -> Vec<Batch> {
    [
        ("cpu", cpu::METRICS),
        ("memory", memory::METRICS),
        ("block", block::METRICS),
        ("net", net::METRICS),
    ]
    .into_iter()
    .map(|(id, metrics)| Batch {
        collector: id.into(),
        metrics: metrics.into(),
        at,
        domains: (0..domains)
            .map(|d| DomainSamples {
                domain: DomainRef::new(
                    format!("6695eb01-f6a4-8304-79aa-97f2502e{d:04x}"),
                    format!("guest-{d:02}"),
                ),
                state: Some(DomainState::new(1, 1)),
                samples: samples(metrics, t, d),
                errors: vec![],
            })
            .collect(),
        host: vec![],
    })
    .collect()
}

/// One `/api/v1.0/stats/` response as the HTTP layer gets it (the snapshot's text,
/// written on its first read and shared by the next ones); its length.
fn read_all(store: &HistoryStore) -> usize {
    store.snapshot(None).expect("all domains").body().len()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let domains: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(22);
    let samples: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let rounds: u64 = 60;
    let rss_start = rss_kib();
    let store = HistoryStore::new(Duration::from_secs(3600), samples as usize);
    let t0 = SystemTime::now() - Duration::from_secs(samples + rounds + 10);
    let mut unread = Vec::new();
    for t in 0..samples {
        let batches = tick(t0 + Duration::from_secs(t), t, domains);
        let start = Instant::now();
        for b in &batches {
            store.ingest(b);
        }
        unread.push(start.elapsed());
    }
    let rss_full = rss_kib();

    let (mut ingest, mut first, mut again) = (Vec::new(), Vec::new(), Vec::new());
    let mut body_len = 0;
    for t in samples..samples + rounds {
        let batches = tick(t0 + Duration::from_secs(t), t, domains);
        let start = Instant::now();
        for b in &batches {
            store.ingest(b);
        }
        ingest.push(start.elapsed());
        let start = Instant::now();
        body_len = read_all(&store);
        first.push(start.elapsed());
        let start = Instant::now();
        read_all(&store);
        again.push(start.elapsed());
    }
    for v in [&mut unread, &mut ingest, &mut first, &mut again] {
        v.sort();
    }
    let footprint = store.footprint();
    let rss_end = rss_kib();
    println!("REST history: {domains} domains x {samples} samples, {rounds} measured ticks");
    println!("  body                                {body_len} bytes");
    println!("  held                                {footprint:?}");
    println!(
        "  RSS start / history full / end      {:.1} / {:.1} / {:.1} MiB",
        rss_start as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!(
        "  ingest, one tick, nobody reading    median {} / p99 {}",
        ms(percentile(&unread, 0.5)),
        ms(percentile(&unread, 0.99))
    );
    println!(
        "  ingest, one tick (4 batches)        median {} / p99 {}",
        ms(percentile(&ingest, 0.5)),
        ms(percentile(&ingest, 0.99))
    );
    println!(
        "  first read after a tick             median {} / p99 {}",
        ms(percentile(&first, 0.5)),
        ms(percentile(&first, 0.99))
    );
    println!(
        "  next read (same tick)               median {} / p99 {}",
        ms(percentile(&again, 0.5)),
        ms(percentile(&again, 0.99))
    );
}
