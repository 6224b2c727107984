//! Lifecycle events, `list_domains` and `domain_xml` against libvirt's in-process test
//! driver. The backend's connection is read-only; a second, read-write `test:///default`
//! connection in this process changes domain states (the test driver refuses state
//! changes on a read-only connection, and `test:///default`'s state and events are
//! shared by every connection of the process, so the backend's callback sees them).
//!
//! The tests of this binary share `test:///default`, so they take turns (`SERIAL`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use vadvisor_api::{Hypervisor, HypervisorError, LifecycleEvent};
use vadvisor_libvirt::{ffi, LibvirtHypervisor, LibvirtSettings};
use virt::connect::Connect;
use virt::domain::Domain;

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
const EXTRA_NAME: &str = "evt-extra";
const EXTRA_UUID: &str = "44444444-0000-4000-8000-000000000001";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What to do to the `test` domain, and the (event, detail) it must cause.
type Step = (&'static str, fn(&Domain), (u32, u32));

fn extra_xml() -> String {
    format!(
        "<domain type='test'><name>{EXTRA_NAME}</name><uuid>{EXTRA_UUID}</uuid>\
         <memory unit='KiB'>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
}

fn rw_conn() -> Connect {
    virt::error::clear_error_callback();
    Connect::open(Some("test:///default")).expect("read-write test:///default")
}

async fn start() -> Arc<LibvirtHypervisor> {
    let hv = LibvirtHypervisor::start(LibvirtSettings {
        uri: "test:///default".to_string(),
        ..Default::default()
    });
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    hv
}

/// Puts `test` back to running and removes `evt-extra`, even when a test fails.
struct Restore(Connect);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Ok(dom) = self.0.lookup_domain_by_name("test") {
            match ffi::domain_state(&dom).map(|(s, _)| s) {
                Ok(virt::sys::VIR_DOMAIN_PAUSED) => drop(dom.resume()),
                Ok(virt::sys::VIR_DOMAIN_SHUTOFF) => drop(dom.create()),
                _ => {}
            }
        }
        if let Ok(dom) = self.0.lookup_domain_by_name(EXTRA_NAME) {
            if dom.is_active().unwrap_or(false) {
                let _ = dom.destroy();
            }
            let _ = dom.undefine();
        }
    }
}

/// The next event for `uuid`, within `within`; other domains' events are skipped.
async fn next_for(
    rx: &mut broadcast::Receiver<LifecycleEvent>,
    uuid: &str,
    within: Duration,
) -> LifecycleEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if &*e.domain.uuid == uuid => return e,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("no event for {uuid} within {within:?}"),
        }
    }
}

/// Performs `action` and returns the event it caused and its latency.
async fn cause(
    rx: &mut broadcast::Receiver<LifecycleEvent>,
    uuid: &str,
    what: &str,
    action: impl FnOnce(),
) -> (LifecycleEvent, Duration) {
    let t = Instant::now();
    action();
    let e = next_for(rx, uuid, Duration::from_secs(1)).await;
    let took = t.elapsed();
    println!(
        "{what}: ({}, {}) for {} after {took:?}",
        e.event, e.detail, e.domain.name
    );
    (e, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_arrive_from_the_event_loop() {
    let _serial = SERIAL.lock().await;
    let rw = rw_conn();
    let _restore = Restore(rw_conn());
    let hv = start().await;
    let mut rx = hv
        .lifecycle_events()
        .expect("the libvirt backend has events");
    let test = rw.lookup_domain_by_name("test").expect("domain `test`");
    let mut slowest = Duration::ZERO;

    let steps: [Step; 4] = [
        ("suspend", |d| d.suspend().expect("suspend"), (3, 0)),
        ("resume", |d| d.resume().expect("resume"), (4, 0)),
        ("destroy", |d| d.destroy().expect("destroy"), (5, 1)),
        ("start", |d| d.create().expect("start"), (2, 0)),
    ];
    for (what, action, expected) in steps {
        let (e, took) = cause(&mut rx, TEST_UUID, what, || action(&test)).await;
        assert_eq!((e.event, e.detail), expected, "{what}");
        assert_eq!(&*e.domain.name, "test");
        assert!(!e.reconciled);
        slowest = slowest.max(took);
    }

    let (e, took) = cause(&mut rx, EXTRA_UUID, "define", || {
        rw.define_domain_xml(&extra_xml()).expect("define");
    })
    .await;
    assert_eq!((e.event, e.detail), (0, 0));
    assert_eq!(&*e.domain.name, EXTRA_NAME);
    slowest = slowest.max(took);
    let (e, took) = cause(&mut rx, EXTRA_UUID, "undefine", || {
        let d = rw.lookup_domain_by_name(EXTRA_NAME).expect("extra");
        d.undefine().expect("undefine");
    })
    .await;
    assert_eq!((e.event, e.detail), (1, 0));
    assert_eq!(&*e.domain.uuid, EXTRA_UUID);
    slowest = slowest.max(took);
    println!("slowest event latency: {slowest:?}");

    // Several subscribers each get every event.
    let mut rx2 = hv.lifecycle_events().expect("events");
    test.suspend().expect("suspend");
    let a = next_for(&mut rx, TEST_UUID, Duration::from_secs(1)).await;
    let b = next_for(&mut rx2, TEST_UUID, Duration::from_secs(1)).await;
    assert_eq!((a.event, b.event), (3, 3));
    test.resume().expect("resume");
    assert_eq!(
        next_for(&mut rx, TEST_UUID, Duration::from_secs(1))
            .await
            .event,
        4
    );
    assert!(hv.status().connected);
    assert_eq!(hv.status().reconnects, 0);
    hv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_domains_and_domain_xml() {
    let _serial = SERIAL.lock().await;
    let rw = rw_conn();
    let _restore = Restore(rw_conn());
    rw.define_domain_xml(&extra_xml())
        .expect("define an inactive domain");
    let hv = start().await;

    let calls = hv.status().calls;
    let list = hv.list_domains().await.expect("list_domains");
    assert_eq!(hv.status().calls - calls, 1, "one bulk round trip");
    println!("list_domains: {list:?}");
    let test = list
        .iter()
        .find(|d| &*d.domain.name == "test")
        .expect("test listed");
    assert_eq!(&*test.domain.uuid, TEST_UUID);
    assert!(test.active);
    assert_eq!(test.state.state, 1);
    assert_eq!(test.state.name(), "Running");
    let extra = list
        .iter()
        .find(|d| &*d.domain.name == EXTRA_NAME)
        .expect("inactive domain listed");
    assert_eq!(&*extra.domain.uuid, EXTRA_UUID);
    assert!(!extra.active);
    assert_eq!(extra.state.state, 5);
    let names: Vec<&str> = list.iter().map(|d| &*d.domain.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");

    // The path for drivers without bulk statistics gives the same answer.
    let calls = hv.status().calls;
    let slow = hv.list_domains_one_by_one().await.expect("one by one");
    assert_eq!(slow, list);
    assert_eq!(
        hv.status().calls - calls,
        1 + list.len() as u64,
        "one listing plus one state call per domain"
    );

    // A paused domain is active with state 3.
    let dom = rw.lookup_domain_by_name("test").expect("test");
    dom.suspend().expect("suspend");
    let paused = hv.list_domains().await.expect("list");
    let t = paused.iter().find(|d| &*d.domain.name == "test").unwrap();
    assert!(t.active && t.state.state == 3, "{t:?}");
    dom.resume().expect("resume");

    // domain_xml by name, by UUID in every spelling; an inactive domain gives its
    // persistent definition.
    for id in [
        "test".to_string(),
        TEST_UUID.to_string(),
        TEST_UUID.to_uppercase(),
        TEST_UUID.replace('-', ""),
        TEST_UUID.replace('-', "").to_uppercase(),
        format!("{{{TEST_UUID}}}"),
        format!("urn:uuid:{TEST_UUID}"),
    ] {
        let calls = hv.status().calls;
        let xml = hv
            .domain_xml(&id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(xml.contains("<name>test</name>"), "{id}: {xml}");
        assert!(xml.contains(TEST_UUID), "{id}");
        assert_eq!(hv.status().calls - calls, 2, "{id}: lookup + XML");
    }
    let xml = hv
        .domain_xml(EXTRA_UUID)
        .await
        .expect("inactive domain XML");
    assert!(xml.contains(&format!("<name>{EXTRA_NAME}</name>")), "{xml}");
    assert!(hv.domain_xml(EXTRA_NAME).await.is_ok());

    // Unknown or weird identifiers: NoDomain, never a panic or a dropped connection.
    let long = "x".repeat(10_000);
    for id in [
        "nope",
        "{bad-uuid}",
        "00000000-0000-0000-0000-000000000000",
        "6695eb01-f6a4-8304-79aa-97f2502e193e",
        "6695eb01f6a4-8304-79aa-97f2502e193f",
        "",
        "nul\0byte",
        "../../etc/passwd",
        "'; DROP TABLE domains; --",
        "ünïcødé",
        long.as_str(),
    ] {
        match hv.domain_xml(id).await {
            Err(HypervisorError::NoDomain(got)) => assert_eq!(got, id),
            other => panic!("{id:?}: expected NoDomain, got {other:?}"),
        }
    }
    let status = hv.status();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.reconnects, 0);
    assert!(hv.domain_xml("test").await.is_ok(), "still usable");
    hv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deregisters_the_callback() {
    let _serial = SERIAL.lock().await;
    // A previous test's backend may still be closing on its runtime's way out.
    let t = Instant::now();
    while ffi::live_lifecycle_registrations() != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "leftover registration"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = 0;
    let hv = start().await;
    assert_eq!(ffi::live_lifecycle_registrations(), before + 1);
    let mut rx = hv.lifecycle_events().expect("events");
    hv.shutdown();
    let t = Instant::now();
    while ffi::live_lifecycle_registrations() != before {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "registration not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!hv.status().connected);
    // Nothing arrives any more (the callback is gone with its connection).
    let rw = rw_conn();
    let _restore = Restore(rw_conn());
    let dom = rw.lookup_domain_by_name("test").expect("test");
    dom.suspend().expect("suspend");
    dom.resume().expect("resume");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        rx.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    // Subscribing to a stopped backend still works (and yields nothing).
    assert!(hv.lifecycle_events().is_some());
}
