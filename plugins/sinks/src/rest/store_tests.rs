//! Tests of the REST history: behaviour (merging, carrying, expiry, lookup), bounds,
//! and that the compact store writes exactly the bytes the previous store (kept in
//! [`super::legacy`]) rendered for the same batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::Value;
use vadvisor_api::{
    Batch, DomainRef, DomainSamples, DomainState, Health, MetricDesc, Sample, Unit,
};

use super::legacy;
use super::store::HistoryStore;

const METRICS: &[MetricDesc] = &[
    MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
        .json("cpu.usage.cpu_time", Unit::Milliseconds),
    MetricDesc::counter("vm_x_bytes_total", "h", Unit::Bytes).json("x.bytes", Unit::Bytes),
];

fn batch(at: SystemTime, metric: u16, uuids: &[&str], value: f64) -> Batch {
    Batch {
        collector: "t".into(),
        metrics: METRICS.into(),
        at,
        domains: uuids
            .iter()
            .map(|u| DomainSamples {
                domain: DomainRef::new(*u, format!("name-{u}")),
                state: Some(DomainState::new(1, 1)),
                samples: vec![Sample::new(metric, value)],
                errors: vec![],
            })
            .collect(),
        host: vec![],
    }
}

#[test]
fn merges_a_tick_keeps_order_and_caps_length() {
    let store = HistoryStore::new(Duration::from_secs(60), 3);
    let t0 = SystemTime::now() - Duration::from_secs(10);
    for i in 0..5u64 {
        let at = t0 + Duration::from_secs(i);
        store.ingest(&batch(at, 0, &["a"], (i * 1_000_000) as f64));
        store.ingest(&batch(at, 1, &["a"], i as f64));
    }
    let v = store.render(None).unwrap();
    let samples = v["a"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "capped at max_samples");
    assert_eq!(samples[0]["cpu"]["usage"]["cpu_time"], 2.0, "oldest first");
    assert_eq!(samples[2]["cpu"]["usage"]["cpu_time"], 4.0);
    assert_eq!(
        samples[2]["x"]["bytes"], 4,
        "both collectors of one tick in one sample"
    );
    assert_eq!(samples[2]["state"], "Running");
    assert_eq!(samples[2]["name"], "name-a");
    assert!(store.render(Some("zzz")).is_none());
}

#[test]
fn one_domain_is_found_by_any_uuid_spelling_or_by_name() {
    let store = HistoryStore::new(Duration::from_secs(60), 3);
    let uuid = "6695eb01-f6a4-8304-79aa-97f2502e193f";
    store.ingest(&batch(SystemTime::now(), 0, &[uuid], 1.0));
    for id in [
        uuid,
        "6695EB01-F6A4-8304-79AA-97F2502E193F",
        "6695eb01f6a4830479aa97f2502e193f",
        "{6695eb01-f6a4-8304-79aa-97f2502e193f}",
        &format!("name-{uuid}"),
    ] {
        let v = store.render(Some(id)).unwrap_or_else(|| panic!("{id}"));
        assert!(v.get(uuid).is_some(), "{id}: keyed by the canonical UUID");
    }
    assert!(store.render(Some("6695eb01")).is_none());
}

#[test]
fn snapshot_is_shared_until_the_history_changes() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    let t0 = SystemTime::now();
    store.ingest(&batch(t0, 0, &["a"], 1_000_000.0));
    let first = store.snapshot(None).unwrap();
    let again = store.snapshot(None).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "same snapshot, not built twice"
    );
    store.ingest(&batch(t0 + Duration::from_secs(1), 0, &["a"], 2_000_000.0));
    let after = store.snapshot(None).unwrap();
    assert!(!Arc::ptr_eq(&first, &after));
    assert_ne!(
        first.to_vec(),
        after.to_vec(),
        "a new tick is visible at once"
    );
    let v: Value = serde_json::from_slice(&after.to_vec()).unwrap();
    assert_eq!(v["a"].as_array().unwrap().len(), 2);
}

const CPU: &[MetricDesc] =
    &[
        MetricDesc::counter("vm_cpu_time_seconds_total", "h", Unit::Nanoseconds)
            .json("cpu.usage.cpu_time", Unit::Milliseconds),
    ];
const QEMU: &[MetricDesc] =
    &[MetricDesc::gauge("vm_qemu_threads", "h", Unit::Count).json("qemu.threads", Unit::Count)];
const DISK: &[MetricDesc] = &[MetricDesc::counter("vm_disk_bytes_total", "h", Unit::Bytes)
    .json("diskio.io_service_bytes[device=dev].read", Unit::Bytes)
    .labels(&["dev"])];

fn run(collector: &str, metrics: &'static [MetricDesc], at: SystemTime, value: f64) -> Batch {
    let labels = if metrics[0].labels.is_empty() {
        vec![]
    } else {
        vec!["vda".into()]
    };
    Batch {
        collector: collector.into(),
        metrics: metrics.into(),
        at,
        domains: vec![DomainSamples {
            domain: DomainRef::new("a", "name-a"),
            state: Some(DomainState::new(1, 1)),
            samples: vec![Sample::labelled(0, labels, value)],
            errors: vec![],
        }],
        host: vec![],
    }
}

/// Collectors at 1 s, 2 s and 5 s, as the scheduler runs them: one sample per tick
/// with every section, the slower ones carried with their age; a failed or overdue
/// collector's section disappears.
#[test]
fn collectors_at_1_2_and_5_seconds_give_one_complete_sample_per_tick() {
    let health = Health::new();
    let store = HistoryStore::new(Duration::from_secs(60), 60).with_health(health.clone());
    let schedule = [
        ("cpu", CPU, 1u64),
        ("qemu_process", QEMU, 2),
        ("block", DISK, 5),
    ];
    for (id, _, secs) in schedule {
        health.record_interval(id, Duration::from_secs(secs));
    }
    let t0 = SystemTime::now() - Duration::from_secs(40);
    let at = |t: u64| t0 + Duration::from_secs(t);
    for t in 0..20u64 {
        // The scheduler records every outcome of a tick, then publishes its batches.
        let due: Vec<_> = schedule
            .iter()
            .filter(|(_, _, s)| t.is_multiple_of(*s))
            .collect();
        for (id, _, _) in &due {
            health.record_run(id, Duration::ZERO, true, 0);
        }
        for (id, metrics, _) in due {
            store.ingest(&run(id, metrics, at(t), t as f64));
        }
    }
    let v = store.render(Some("a")).unwrap();
    let samples = v["a"].as_array().unwrap();
    assert_eq!(samples.len(), 20, "one sample per tick: {samples:#?}");
    let stamps: std::collections::HashSet<&str> = samples
        .iter()
        .map(|s| s["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(stamps.len(), 20, "no two samples share a timestamp");
    for (t, s) in samples.iter().enumerate() {
        let t = t as u64;
        assert!(s["cpu"]["usage"]["cpu_time"].is_number(), "{t}: {s}");
        assert_eq!(s["qemu"]["threads"], t - t % 2, "{t}: latest qemu value");
        assert_eq!(
            s["diskio"]["io_service_bytes"][0]["read"],
            t - t % 5,
            "{t}: latest disk value"
        );
        assert_eq!(s["state"], "Running");
        let expect_qemu_age = (!t.is_multiple_of(2)).then_some((t % 2) as f64);
        let expect_disk_age = (!t.is_multiple_of(5)).then_some((t % 5) as f64);
        assert_eq!(s["ages"]["qemu"].as_f64(), expect_qemu_age, "{t}: {s}");
        assert_eq!(s["ages"]["diskio"].as_f64(), expect_disk_age, "{t}: {s}");
        assert!(s["ages"].get("cpu").is_none());
        if t.is_multiple_of(10) {
            assert!(s.get("ages").is_none(), "all fresh: no ages: {s}");
        }
    }

    // block fails at t=20: its section is absent at once, not its old value.
    // qemu_process stops reporting after t=20 without a failure: carried while at
    // most 2 intervals (4 s) old, then absent.
    for t in 20..26u64 {
        health.record_run("cpu", Duration::ZERO, true, 0);
        if t == 20 {
            health.record_run("block", Duration::ZERO, false, 0);
            health.record_run("qemu_process", Duration::ZERO, true, 0);
            store.ingest(&run("qemu_process", QEMU, at(t), t as f64));
        }
        store.ingest(&run("cpu", CPU, at(t), t as f64));
    }
    let v = store.render(Some("a")).unwrap();
    let samples = v["a"].as_array().unwrap();
    let tail = &samples[samples.len() - 6..];
    for (i, s) in tail.iter().enumerate() {
        assert!(s.get("diskio").is_none(), "failed collector: {s}");
        assert_eq!(s["qemu"].is_object(), i <= 4, "t={}: {s}", 20 + i);
    }
}

#[test]
fn without_schedule_nothing_is_carried() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    let t0 = SystemTime::now();
    store.ingest(&run("block", DISK, t0, 1.0));
    store.ingest(&run("cpu", CPU, t0 + Duration::from_secs(1), 1.0));
    let v = store.render(None).unwrap();
    assert!(v["a"][1].get("diskio").is_none());
    assert!(v["a"][0].get("diskio").is_some());
}

#[test]
fn expires_by_time() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    store.ingest(&batch(
        SystemTime::now() - Duration::from_secs(120),
        0,
        &["old"],
        1.0,
    ));
    store.ingest(&batch(SystemTime::now(), 0, &["new"], 1.0));
    let v = store.render(None).unwrap();
    assert!(v.get("old").is_none());
    assert!(v.get("new").is_some());
}

// ---- The compact store against the previous one ------------------------------------

/// Overlapping sections on purpose: `vcpu` writes into `cpu` as `cpu` does, so a
/// sample merges two collectors' values under one key.
const VCPU: &[MetricDesc] = &[
    MetricDesc::counter("vm_vcpu_time_seconds_total", "h", Unit::Nanoseconds)
        .labels(&["vcpu"])
        .json(
            "cpu.per_cpu_usage[index=#vcpu].vcpu_time",
            Unit::Milliseconds,
        ),
    MetricDesc::gauge("vm_vcpu_state", "h", Unit::None)
        .labels(&["vcpu"])
        .json("cpu.per_cpu_usage[index=#vcpu].state", Unit::None)
        .states(&["Offline", "Running", "Blocked"]),
];
const NET: &[MetricDesc] = &[
    MetricDesc::counter("vm_net_rx_bytes_total", "h", Unit::Bytes)
        .labels(&["iface"])
        .json("network.interfaces[name=iface].rx_bytes", Unit::Bytes),
    MetricDesc::gauge("vm_net_odd", "h", Unit::Seconds)
        .labels(&["iface"])
        .json("network.interfaces[name=iface].odd", Unit::Milliseconds),
];

const VCPUS: &[MetricDesc] =
    &[MetricDesc::gauge("vm_vcpus_current", "h", Unit::Count)
        .json("cpu.vcpus.current", Unit::Count)];

/// Collector, metrics, interval in ticks. Three write into `cpu`, at 1, 2 and 3 ticks:
/// a sample can carry two of them with different ages for that one section.
const COLLECTORS: &[(&str, &[MetricDesc], u64)] = &[
    ("cpu", CPU, 1),
    ("vcpu", VCPU, 2),
    ("vcpus", VCPUS, 3),
    ("qemu_process", QEMU, 2),
    ("net", NET, 3),
    ("block", DISK, 5),
];
const UUIDS: &[&str] = &["b-2", "a-1", "c-3"];

/// What one collector does in one tick.
#[derive(Clone, Debug)]
struct Run {
    ok: bool,
    /// Which domains it reports (bits of UUIDS).
    domains: u8,
    /// Reports its domains in two batches of the same tick.
    split: bool,
    with_state: bool,
    value: f64,
}

fn run_strategy() -> impl Strategy<Value = Run> {
    (
        prop::bool::weighted(0.85),
        0u8..8,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.8),
        prop_oneof![Just(0.0), Just(1.5e9), Just(f64::NAN), 0.0..1e12f64],
    )
        .prop_map(|(ok, domains, split, with_state, value)| Run {
            ok,
            domains,
            split,
            with_state,
            value,
        })
}

fn domain_batch(
    (id, metrics, _): (&str, &'static [MetricDesc], u64),
    at: SystemTime,
    run: &Run,
    tick: u64,
    uuids: &[&str],
) -> Batch {
    let renamed = tick >= 7;
    Batch {
        collector: id.into(),
        metrics: metrics.into(),
        at,
        domains: uuids
            .iter()
            .map(|u| {
                let name = if renamed && *u == "a-1" {
                    "a \"renamed\"".to_string()
                } else {
                    format!("name-{u}")
                };
                let samples = (0..metrics.len() as u16)
                    .flat_map(|m| {
                        let labels: Vec<Arc<str>> = if metrics[m as usize].labels.is_empty() {
                            vec![]
                        } else {
                            vec![(tick % 3).to_string().into()]
                        };
                        let second: Vec<Arc<str>> = if labels.is_empty() {
                            vec![]
                        } else {
                            vec!["eth0".into()]
                        };
                        [
                            Sample::labelled(m, labels, run.value + tick as f64),
                            Sample::labelled(m, second, run.value / 3.0),
                        ]
                    })
                    .collect();
                DomainSamples {
                    domain: DomainRef::new(*u, name),
                    state: run
                        .with_state
                        .then(|| DomainState::new(1 + (tick % 3) as u32, 1)),
                    samples,
                    errors: vec![],
                }
            })
            .collect(),
        host: vec![],
    }
}

fn legacy_bytes(v: Option<Value>) -> Option<String> {
    v.map(|v| serde_json::to_string(&v).unwrap())
}

fn text(b: Option<Vec<u8>>) -> Option<String> {
    b.map(|b| String::from_utf8(b).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The same batches, in tick order, with collectors at different intervals that
    /// fail, skip domains, split a tick in two batches, lack the state, rename a
    /// domain and expire: every read (all domains, one domain, live) gives exactly the
    /// previous store's bytes, `ages` and absent sections included; a store given each
    /// tick's batches together (`ingest_all`) holds exactly what one given them one by
    /// one holds.
    #[test]
    fn the_compact_store_writes_what_the_previous_one_rendered(
        ticks in prop::collection::vec(prop::collection::vec(run_strategy(), COLLECTORS.len()), 1..24),
        max_samples in 1usize..12,
    ) {
        let health = Health::new();
        let retention = Duration::from_secs(10);
        let new = HistoryStore::new(retention, max_samples).with_health(health.clone());
        let old = legacy::HistoryStore::new(retention, max_samples).with_health(health.clone());
        let together = HistoryStore::new(retention, max_samples).with_health(health.clone());
        for (id, _, every) in COLLECTORS {
            health.record_interval(id, Duration::from_secs(*every));
        }
        // Half a second off the whole seconds, so expiry never hangs on a microsecond.
        let t0 = SystemTime::now() - Duration::from_millis(ticks.len() as u64 * 1000 + 500);
        for (t, runs) in ticks.iter().enumerate() {
            let t = t as u64;
            let at = t0 + Duration::from_secs(t);
            let due: Vec<_> = COLLECTORS
                .iter()
                .zip(runs)
                .filter(|((_, _, every), _)| t.is_multiple_of(*every))
                .collect();
            for ((id, _, _), run) in &due {
                health.record_run(id, Duration::ZERO, run.ok, 0);
            }
            let mut live = Vec::new();
            for (c, run) in due.into_iter().filter(|(_, r)| r.ok) {
                let uuids: Vec<&str> = UUIDS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| run.domains & (1 << i) != 0)
                    .map(|(_, u)| *u)
                    .collect();
                let parts: Vec<&[&str]> = if run.split && uuids.len() > 1 {
                    vec![&uuids[..1], &uuids[1..]]
                } else {
                    vec![&uuids[..]]
                };
                for p in parts {
                    let b = domain_batch(*c, at, run, t, p);
                    new.ingest(&b);
                    old.ingest(&b);
                    live.push(Arc::new(b));
                }
            }
            together.ingest_all(&live);
            prop_assert_eq!(text(new.render_bytes(None)), legacy_bytes(old.render(None)), "tick {}", t);
            prop_assert_eq!(text(together.render_bytes(None)), text(new.render_bytes(None)));
            prop_assert_eq!(text(together.render_bytes(Some("a-1"))), text(new.render_bytes(Some("a-1"))));
            for id in ["a-1", "name-c-3", "zzz"] {
                prop_assert_eq!(text(new.render_bytes(Some(id))), legacy_bytes(old.render(Some(id))));
            }
            prop_assert_eq!(
                text(new.render_live(&live, None)),
                legacy_bytes(old.render_live(&live, None))
            );
            prop_assert_eq!(
                text(new.render_live(&live, Some("b-2"))),
                legacy_bytes(old.render_live(&live, Some("b-2")))
            );
            let f = new.footprint();
            prop_assert!(f.open_samples <= f.domains, "{:?}", f);
        }
    }
}

#[test]
fn the_served_body_is_the_rendered_text_shared_until_the_next_tick() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    let t0 = SystemTime::now() - Duration::from_secs(50);
    for t in 0..40u64 {
        let at = t0 + Duration::from_secs(t);
        store.ingest(&batch(at, 0, &["a", "b", "c"], t as f64 * 1e9));
        store.ingest(&batch(at, 1, &["a", "c"], t as f64));
    }
    let body = store.snapshot(None).unwrap().body();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 3);
    assert_eq!(v["a"].as_array().unwrap().len(), 40);
    // Every read of the same moment sends the same buffer.
    assert_eq!(store.snapshot(None).unwrap().body().as_ptr(), body.as_ptr());
    // A new tick: a new text, which holds the new sample.
    let at = t0 + Duration::from_secs(40);
    store.ingest(&batch(at, 0, &["a", "b", "c"], 40e9));
    let after = store.snapshot(None).unwrap().body();
    assert_ne!(after.as_ptr(), body.as_ptr());
    let v: Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(v["a"].as_array().unwrap().len(), 41);
    assert_eq!(v["b"].as_array().unwrap().len(), 41);
}

/// Tick `t` (seconds after a start 50 s ago) of two collectors: one reporting domains
/// `a` and `b`, the other `a`.
fn two_collectors_ticking(store: &HistoryStore) -> impl Fn(u64) + '_ {
    let t0 = SystemTime::now() - Duration::from_secs(50);
    move |t| {
        let at = t0 + Duration::from_secs(t);
        store.ingest(&batch(at, 0, &["a", "b"], t as f64));
        store.ingest(&batch(at, 1, &["a"], t as f64));
    }
}

#[test]
fn the_next_snapshot_is_prepared_only_while_someone_reads() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    let tick = two_collectors_ticking(&store);
    tick(0);
    tick(1);
    assert!(!store.wants_prepare() && !store.prepare(), "nobody read");
    let read = store.snapshot(None).unwrap();
    tick(2);
    assert!(store.wants_prepare());
    assert!(store.prepare());
    assert!(!store.wants_prepare(), "once per tick");
    // The read after it gets the prepared snapshot and text, with tick 2.
    let prepared = store.snapshot(None).unwrap();
    assert!(!Arc::ptr_eq(&prepared, &read));
    let v: Value = serde_json::from_slice(&prepared.body()).unwrap();
    assert_eq!(v["a"].as_array().unwrap().len(), 3);
    // That read keeps it going for the next tick; a tick nobody reads stops it.
    tick(3);
    assert!(store.prepare());
    tick(4);
    assert!(
        !store.prepare(),
        "tick 3's snapshot was prepared but not read"
    );
}

#[test]
fn the_text_buffer_is_kept_while_someone_reads_every_tick_and_freed_after() {
    // A full history of 3 samples: the text's length stays about the same.
    let store = HistoryStore::new(Duration::from_secs(60), 3);
    let tick = two_collectors_ticking(&store);
    let read = || store.snapshot(None).unwrap().body();
    (0..4).for_each(&tick);
    let first = read();
    let at = first.as_ptr();
    drop(first);
    assert_eq!(
        store.footprint().spare_body_bytes,
        0,
        "the moment still holds it"
    );
    tick(4);
    assert!(
        store.footprint().spare_body_bytes >= at_least(&store),
        "the replaced moment was read: its buffer is kept"
    );
    store.prepare();
    let second = read();
    assert_eq!(second.as_ptr(), at, "the next text is written over it");
    drop(second);
    tick(5);
    assert!(store.prepare());
    assert_eq!(
        store.footprint().spare_body_bytes,
        0,
        "taken by the prepared text"
    );
    let third = read();
    assert_eq!(third.as_ptr(), at, "the same buffer, tick after tick");
    drop(third);
    tick(6);
    assert!(
        store.footprint().spare_body_bytes > 0,
        "kept while read every tick"
    );
    // Tick 6's prepared text goes unread: the tick after frees the buffer.
    assert!(store.prepare());
    tick(7);
    assert!(!store.prepare());
    assert_eq!(
        store.footprint().spare_body_bytes,
        0,
        "nobody reads any more"
    );
}

/// The length of the all-domains text now.
fn at_least(store: &HistoryStore) -> usize {
    store.render_bytes(None).map_or(0, |b| b.len()) / 2
}

/// The history stays bounded: a sample per tick up to `max_samples`, only the newest
/// sample of a domain keeps its values, and the rest is text of a bounded size.
#[test]
fn history_stays_bounded_and_compact() {
    let store = HistoryStore::new(Duration::from_secs(3600), 60);
    let t0 = SystemTime::now() - Duration::from_secs(1000);
    let uuids: Vec<String> = (0..22).map(|i| format!("dom-{i:02}")).collect();
    let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
    for t in 0..300u64 {
        let at = t0 + Duration::from_secs(t);
        store.ingest(&batch(at, 0, &uuids, t as f64 * 1e9));
        store.ingest(&batch(at, 1, &uuids, t as f64));
        let f = store.footprint();
        assert_eq!(f.domains, 22);
        assert_eq!(f.samples, 22 * (t as usize + 1).min(60), "t={t}");
        assert_eq!(f.open_samples, 22, "only the newest sample keeps values");
    }
    let f = store.footprint();
    let text = store.render_bytes(None).unwrap();
    assert!(
        f.sealed_json_bytes < text.len(),
        "sealed samples hold no more than their text: {f:?} vs {}",
        text.len()
    );
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["dom-07"].as_array().unwrap().len(), 60);
}

/// A batch for a tick whose sample was already sealed (a later tick arrived first,
/// which the scheduler never does) is left out; one for a tick without a sample is
/// inserted in order, as before.
#[test]
fn late_batches() {
    let store = HistoryStore::new(Duration::from_secs(60), 60);
    let old = legacy::HistoryStore::new(Duration::from_secs(60), 60);
    let t0 = SystemTime::now() - Duration::from_secs(10);
    for t in [0u64, 2, 3] {
        let b = batch(t0 + Duration::from_secs(t), 0, &["a"], 1e9);
        store.ingest(&b);
        old.ingest(&b);
    }
    let between = batch(t0 + Duration::from_secs(1), 1, &["a"], 5.0);
    store.ingest(&between);
    old.ingest(&between);
    assert_eq!(
        text(store.render_bytes(None)),
        legacy_bytes(old.render(None)),
        "inserted in order"
    );
    let before = store.render_bytes(None);
    store.ingest(&batch(t0 + Duration::from_secs(2), 1, &["a"], 7.0));
    assert_eq!(store.render_bytes(None), before, "sealed sample unchanged");
    let v = store.render(None).unwrap();
    assert_eq!(v["a"][1]["x"]["bytes"], 5);
    assert!(v["a"][2].get("x").is_none());
}
