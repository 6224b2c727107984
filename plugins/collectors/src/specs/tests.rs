//! Tests of the `specs` collector against `FakeHypervisor`: start-up listing (active
//! and inactive domains), removal of vanished domains, event-driven refreshes, kept
//! specs on errors, bounded fetch concurrency and the options.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vadvisor_api::hypervisor::{ConnectionStatus, DomainEntry, DomainStats, StatsGroups};
use vadvisor_api::{
    async_trait, Bus, CancellationToken, CollectorBuildContext, DomainRef, DomainSpec, EventSource,
    FakeHypervisor, Hypervisor, HypervisorError, LifecycleEvent, PluginOptions, Record,
    RecordStream, Registry, SinkHealth, SourceContext, TypedValue,
};

use super::*;

const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";
const U3: &str = "5ad0a0b0-0000-4000-8000-000000000003";

fn xml(name: &str) -> String {
    format!("<domain type='qemu'><name>{name}</name><memory unit='KiB'>1024</memory></domain>")
}

struct Running {
    records: RecordStream,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), CollectError>>,
}

fn start(hv: Arc<dyn Hypervisor>, options: SpecsOptions) -> Running {
    let bus = Bus::new(1024);
    let records = bus.subscribe(Arc::new(SinkHealth::default()));
    let shutdown = CancellationToken::new();
    let cx = SourceContext {
        id: "specs".into(),
        hypervisor: hv,
        bus,
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(Box::new(SpecsCollector::new(options)).run(cx));
    Running {
        records,
        shutdown,
        task,
    }
}

impl Running {
    async fn next_spec(&mut self) -> Arc<DomainSpec> {
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), self.records.recv()).await;
            match r.expect("a record within 5 s").expect("bus open") {
                Record::Spec(s) => return s,
                _ => continue,
            }
        }
    }

    async fn specs(&mut self, n: usize) -> Vec<Arc<DomainSpec>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next_spec().await);
        }
        out.sort_by(|a, b| a.domain.uuid.cmp(&b.domain.uuid));
        out
    }

    async fn nothing_for(&mut self, d: Duration) {
        if let Ok(Some(Record::Spec(s))) = tokio::time::timeout(d, self.records.recv()).await {
            panic!("unexpected spec record: {s:?}");
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "the collector stops on shutdown"
        );
    }
}

fn lab() -> Arc<FakeHypervisor> {
    let hv = Arc::new(FakeHypervisor::new());
    hv.put_domain(U1, "one", &[("state.state", TypedValue::Int(1))]);
    hv.put_inactive(U2, "two");
    hv.set_xml(U1, &xml("one"));
    hv.set_xml(U2, &xml("two"));
    hv
}

fn event(uuid: &str, name: &str, event: u32) -> LifecycleEvent {
    LifecycleEvent {
        at: SystemTime::now(),
        domain: DomainRef::new(uuid, name),
        event,
        detail: 0,
        reconciled: false,
    }
}

fn long() -> SpecsOptions {
    SpecsOptions {
        refresh: Duration::from_secs(3600),
        concurrency: 4,
    }
}

#[tokio::test]
async fn publishes_active_and_inactive_domains_at_start() {
    let mut run = start(lab(), long());
    let specs = run.specs(2).await;
    assert_eq!((&*specs[0].domain.name, specs[0].active), ("one", true));
    assert_eq!((&*specs[1].domain.name, specs[1].active), ("two", false));
    assert_eq!(
        specs[0].spec.as_ref().unwrap()["domain"]["memory"]["value"],
        1024
    );
    run.stop().await;
}

#[tokio::test]
async fn vanished_domains_are_published_as_removed_on_refresh() {
    let hv = lab();
    let mut run = start(
        hv.clone(),
        SpecsOptions {
            refresh: Duration::from_millis(200),
            concurrency: 4,
        },
    );
    run.specs(2).await;
    hv.remove_domain(U1);
    let removed = loop {
        let s = run.next_spec().await;
        if s.spec.is_none() {
            break s;
        }
    };
    assert_eq!(&*removed.domain.uuid, U1);
    run.stop().await;
}

#[tokio::test]
async fn events_refresh_only_the_named_domains() {
    let hv = lab();
    let mut run = start(hv.clone(), long());
    run.specs(2).await;
    // A new domain is defined and started.
    hv.put_domain(U3, "three", &[("state.state", TypedValue::Int(1))]);
    hv.set_xml(U3, &xml("three"));
    hv.emit_event(event(U3, "three", 2));
    let s = run.next_spec().await;
    assert_eq!(
        (&*s.domain.uuid, s.active, s.spec.is_some()),
        (U3, true, true)
    );
    // An undefined domain disappears from the listing: removed.
    hv.remove_domain(U3);
    hv.emit_event(event(U3, "three", 1));
    let s = run.next_spec().await;
    assert_eq!((&*s.domain.uuid, s.spec.is_none()), (U3, true));
    run.nothing_for(Duration::from_millis(300)).await;
    run.stop().await;
}

#[tokio::test]
async fn undefined_events_remove_even_when_listing_fails() {
    let hv = lab();
    let mut run = start(hv.clone(), long());
    run.specs(2).await;
    hv.set_down(Some("libvirtd restarting"));
    hv.emit_event(event(U2, "two", 1));
    let s = run.next_spec().await;
    assert_eq!((&*s.domain.uuid, s.spec.is_none()), (U2, true));
    // A started event without a listing changes nothing.
    hv.emit_event(event(U1, "one", 2));
    run.nothing_for(Duration::from_millis(300)).await;
    run.stop().await;
}

#[tokio::test]
async fn bad_xml_and_outages_keep_the_last_spec() {
    let hv = lab();
    let mut run = start(
        hv.clone(),
        SpecsOptions {
            refresh: Duration::from_millis(150),
            concurrency: 2,
        },
    );
    run.specs(2).await;
    hv.set_xml(U1, "<domain><broken></domain>");
    // Only `two` keeps being published; `one` is neither republished nor removed.
    for _ in 0..4 {
        let s = run.next_spec().await;
        assert_eq!(&*s.domain.uuid, U2);
    }
    hv.set_down(Some("gone"));
    run.nothing_for(Duration::from_millis(500)).await;
    hv.set_down(None);
    hv.set_xml(U1, &xml("one"));
    let back = loop {
        let s = run.next_spec().await;
        if &*s.domain.uuid == U1 {
            break s;
        }
    };
    assert!(back.spec.is_some());
    run.stop().await;
}

#[tokio::test]
async fn a_failed_first_listing_is_retried_soon() {
    let hv = lab();
    hv.set_down(Some("connecting"));
    let mut run = start(hv.clone(), long());
    tokio::time::sleep(Duration::from_millis(300)).await;
    hv.set_down(None);
    // Well before the hour-long refresh: the 1 s retry.
    let started = std::time::Instant::now();
    assert_eq!(run.specs(2).await.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
    run.stop().await;
}

/// Delegates to a fake, counting concurrent `domain_xml` calls.
struct Slow {
    inner: Arc<FakeHypervisor>,
    now: AtomicUsize,
    max: AtomicUsize,
}

#[async_trait]
impl Hypervisor for Slow {
    async fn domain_stats(&self, groups: StatsGroups) -> Result<Vec<DomainStats>, HypervisorError> {
        self.inner.domain_stats(groups).await
    }
    fn status(&self) -> ConnectionStatus {
        self.inner.status()
    }
    async fn list_domains(&self) -> Result<Vec<DomainEntry>, HypervisorError> {
        self.inner.list_domains().await
    }
    async fn domain_xml(&self, id: &str) -> Result<String, HypervisorError> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.inner.domain_xml(id).await
    }
}

#[tokio::test]
async fn xml_fetches_are_bounded() {
    let fake = Arc::new(FakeHypervisor::new());
    for i in 0..12 {
        let uuid = format!("5ad0a0b0-0000-4000-8000-{i:012x}");
        fake.put_inactive(&uuid, &format!("d{i}"));
        fake.set_xml(&uuid, &xml(&format!("d{i}")));
    }
    let slow = Arc::new(Slow {
        inner: fake,
        now: AtomicUsize::new(0),
        max: AtomicUsize::new(0),
    });
    let mut run = start(
        slow.clone(),
        SpecsOptions {
            refresh: Duration::from_secs(3600),
            concurrency: 3,
        },
    );
    assert_eq!(run.specs(12).await.len(), 12);
    assert_eq!(slow.max.load(Ordering::SeqCst), 3);
    run.stop().await;
}

#[test]
fn options_are_validated() {
    let mut registry = Registry::new();
    register(&mut registry);
    let factory = registry.collector("specs").unwrap();
    let cx = CollectorBuildContext {
        id: "specs".into(),
        hypervisor: Arc::new(FakeHypervisor::new()),
    };
    let build = |v: serde_json::Value| factory.build(&PluginOptions::new(v), &cx).err();
    assert!(build(serde_json::json!({})).is_none());
    assert!(build(serde_json::json!({"refresh": "30s", "concurrency": 8})).is_none());
    let errs = build(serde_json::json!({"refresh": "0s"})).unwrap();
    assert_eq!(errs[0].path, vec!["refresh"]);
    let errs = build(serde_json::json!({"concurrency": 0})).unwrap();
    assert_eq!(errs[0].path, vec!["concurrency"]);
    let errs = build(serde_json::json!({"interval": "1s"})).unwrap();
    assert_eq!(errs[0].path, vec!["interval"]);
}

#[tokio::test]
async fn an_unchanged_xml_republishes_its_spec_and_a_changed_one_is_converted() {
    let hv = lab();
    let mut run = start(hv.clone(), long());
    let first = run.specs(2).await;
    // The same XML: the same record again, not a new conversion.
    hv.emit_event(event(U1, "one", 4));
    let again = run.next_spec().await;
    assert!(Arc::ptr_eq(&again, &first[0]), "{again:?}");
    // The domain stopped (same XML): the spec is kept, the record says inactive.
    hv.remove_domain(U1);
    hv.put_inactive(U1, "one");
    hv.emit_event(event(U1, "one", 5));
    let stopped = run.next_spec().await;
    assert!(!Arc::ptr_eq(&stopped, &first[0]));
    assert_eq!((stopped.active, &stopped.spec), (false, &first[0].spec));
    // A new XML is converted.
    hv.set_xml(
        U1,
        "<domain type='qemu'><name>one</name><memory unit='KiB'>2048</memory></domain>",
    );
    hv.emit_event(event(U1, "one", 4));
    let changed = run.next_spec().await;
    assert_eq!(
        changed.spec.as_ref().unwrap()["domain"]["memory"]["value"],
        2048
    );
    run.stop().await;
}
