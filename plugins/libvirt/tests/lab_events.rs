//! Lifecycle events, their reconciliation after an outage, `list_domains` and
//! `domain_xml` against the real lab (`scripts/lab.sh`). Skipped, with a message,
//! unless `VADVISOR_LAB` is set. In a binary of its own because it suspends a lab guest
//! (`VADVISOR_LAB_GUEST`, default `vadv-lab-3`), which the tests of `lab.rs` must not
//! see; the tests here take turns (`SERIAL`). The guest is resumed at the end, also when
//! a test fails.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{lab_socket, lab_uri, uri_for, Proxy};
use tokio::sync::broadcast;
use vadvisor_api::{Hypervisor, HypervisorError, LifecycleEvent, StatsGroups};
use vadvisor_libvirt::{ffi, LibvirtHypervisor, LibvirtSettings};
use virt::connect::Connect;
use virt::sys;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lab_guest() -> String {
    std::env::var("VADVISOR_LAB_GUEST").unwrap_or_else(|_| "vadv-lab-3".to_string())
}

/// `virsh -c <lab uri> <verb> <guest>`, straight to libvirtd (not through the proxy).
fn virsh(verb: &str, guest: &str) {
    let out = Command::new("virsh")
        .args(["-c", &lab_uri(), verb, guest])
        .output()
        .expect("run virsh");
    assert!(
        out.status.success(),
        "virsh {verb} {guest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guest's UUID and `(state, reason)`, read directly.
fn guest_state(guest: &str) -> (String, (u32, u32)) {
    virt::error::clear_error_callback();
    let conn = Connect::open_read_only(Some(&lab_uri())).expect("open lab URI");
    let dom = conn.lookup_domain_by_name(guest).expect("lab guest");
    let uuid = dom.uuid_string().expect("uuid");
    (uuid, ffi::domain_state(&dom).expect("state"))
}

/// Resumes the guest if it is left paused, whatever happened.
struct ResumeGuard(String);

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        let (_, (state, _)) = guest_state(&self.0);
        if state == sys::VIR_DOMAIN_PAUSED {
            let ok = Command::new("virsh")
                .args(["-c", &lab_uri(), "resume", &self.0])
                .status()
                .is_ok_and(|s| s.success());
            println!("guard: resumed {} ({ok})", self.0);
        }
    }
}

/// The next event for `uuid` within `within` (other domains' events are skipped).
async fn next_for(
    rx: &mut broadcast::Receiver<LifecycleEvent>,
    uuid: &str,
    within: Duration,
) -> LifecycleEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if &*e.domain.uuid == uuid => return e,
            Ok(Ok(e)) => println!("  (other domain: {e:?})"),
            Ok(Err(e)) => panic!("event channel: {e}"),
            Err(_) => panic!("no event for {uuid} within {within:?}"),
        }
    }
}

fn fast_settings(uri: &str) -> LibvirtSettings {
    LibvirtSettings {
        uri: uri.to_string(),
        // A lab with many TCG guests on 2 cores answers slowly.
        call_timeout: Duration::from_secs(60),
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(500),
        ..Default::default()
    }
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_events_are_reconciled_after_an_outage() {
    let _serial = SERIAL.lock().await;
    let guest = lab_guest();
    let (uuid, state) = guest_state(&guest);
    assert_eq!(
        state.0,
        sys::VIR_DOMAIN_RUNNING,
        "{guest} must be running to start with"
    );
    let _guard = ResumeGuard(guest.clone());

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("libvirt-proxy.sock");
    let mut proxy = Proxy::new(sock.clone(), lab_socket());
    proxy.up();
    let hv: Arc<LibvirtHypervisor> = LibvirtHypervisor::start(fast_settings(&uri_for(&sock)));
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    let mut rx = hv.lifecycle_events().expect("events");

    // Live events through the remote driver (and the proxy), caused through a direct
    // read-write connection so the latency is measured from the API call's return.
    let rw = Connect::open(Some(&lab_uri())).expect("read-write lab connection");
    let dom = rw.lookup_domain_by_name(&guest).expect("guest");
    for (what, expected) in [("suspend", 3), ("resume", 4)] {
        let t = Instant::now();
        if expected == 3 {
            dom.suspend().expect("suspend");
        } else {
            dom.resume().expect("resume");
        }
        let returned = t.elapsed();
        let e = next_for(&mut rx, &uuid, Duration::from_secs(2)).await;
        println!(
            "live: ({}, {}) for {}: {what} returned after {returned:?}, event after {:?}",
            e.event,
            e.detail,
            e.domain.name,
            t.elapsed()
        );
        assert_eq!((e.event, e.detail, e.reconciled), (expected, 0, false));
        assert_eq!(&*e.domain.name, guest);
    }
    drop(dom);
    drop(rw);

    // "libvirtd stops".
    let cut = Instant::now();
    proxy.down().await;
    while hv.status().connected {
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "loss not noticed within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("loss noticed after {:?}", cut.elapsed());

    // While the agent cannot see it, the guest is paused.
    virsh("suspend", &guest);
    assert_eq!(guest_state(&guest).1 .0, sys::VIR_DOMAIN_PAUSED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
        "nothing can arrive while disconnected"
    );

    // "libvirtd is back": a reconciled Suspended arrives promptly. A watcher notes when
    // the (successful) connection attempt started, to tell the reconnect backoff apart
    // from the time the reconnection itself takes.
    let attempts = hv.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = attempts.connect_attempts();
        let mut started = Instant::now();
        while !attempts.status().connected {
            let n = attempts.connect_attempts();
            if n != seen {
                seen = n;
                started = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        started
    });
    proxy.up();
    let back = Instant::now();
    let e = next_for(&mut rx, &uuid, Duration::from_secs(5)).await;
    let reconciled_after = back.elapsed();
    let arrived = Instant::now();
    let t_connected = loop {
        if hv.status().connected {
            break back.elapsed();
        }
        assert!(back.elapsed() < Duration::from_secs(5), "not reconnected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let attempt_started = watcher.await.expect("watcher");
    let reconnecting = arrived.saturating_duration_since(attempt_started);
    println!(
        "reconciled: ({}, {}) reconciled={} for {}: {reconciled_after:?} after the daemon came \
         back, {reconnecting:?} after the reconnection attempt started (connected reported \
         at {t_connected:?})",
        e.event, e.detail, e.reconciled, e.domain.name
    );
    assert_eq!((e.event, e.detail, e.reconciled), (3, 0, true));
    assert_eq!(&*e.domain.name, guest);
    // Open + register + list + diff; the backoff (≤ 500 ms here) comes on top.
    assert!(
        reconnecting < Duration::from_secs(2),
        "reconciled {reconnecting:?} after the reconnection attempt started"
    );
    assert!(
        reconciled_after < Duration::from_secs(3),
        "reconciled {reconciled_after:?} after the daemon came back"
    );

    // Live events flow again: the callback was re-registered on the new connection.
    let t = Instant::now();
    virsh("resume", &guest);
    let e = next_for(&mut rx, &uuid, Duration::from_secs(2)).await;
    println!(
        "live after reconnect: ({}, {}) {:?} after `virsh resume` started",
        e.event,
        e.detail,
        t.elapsed()
    );
    assert_eq!((e.event, e.detail, e.reconciled), (4, 0, false));
    let status = hv.status();
    assert!(status.connected);
    assert_eq!(status.reconnects, 1);
    // The dead connection's registration was released; only the new one is alive.
    let t = Instant::now();
    while ffi::live_lifecycle_registrations() != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{} registrations alive",
            ffi::live_lifecycle_registrations()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stats work as before.
    assert!(!hv
        .domain_stats(StatsGroups::NONE)
        .await
        .expect("stats")
        .is_empty());
    hv.shutdown();
    proxy.down().await;
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_lifecycle_registration_is_released_on_the_remote_driver() {
    let _serial = SERIAL.lock().await;
    vadvisor_libvirt::init_event_loop();

    // A live connection: deregistration succeeds and libvirt calls the free callback.
    let conn = Connect::open_read_only(Some(&lab_uri())).expect("open");
    let reg = ffi::LifecycleRegistration::register(&conn, |_| {}).expect("register");
    let weak = reg.shared_weak();
    let outcome = reg.deregister();
    println!("live connection: {outcome:?}");
    assert!(outcome.accepted && outcome.released_by_libvirt);
    assert!(weak.upgrade().is_none());
    // libvirt tracks one (callback, event) pair per connection: a second registration
    // is refused, and the refused sink is released at once.
    let a = ffi::LifecycleRegistration::register(&conn, |_| {}).expect("a");
    let token = Arc::new(());
    let held = Arc::clone(&token);
    let err = ffi::LifecycleRegistration::register(&conn, move |_| drop(Arc::clone(&held)))
        .expect_err("a second registration on one connection is refused");
    println!("second registration: {}", err.message());
    assert_eq!(Arc::strong_count(&token), 1);
    let wa = a.shared_weak();
    drop(a);
    assert!(wa.upgrade().is_none());
    let again = ffi::LifecycleRegistration::register(&conn, |_| {}).expect("again");
    drop(again);
    drop(conn);

    // A dead connection: the RPC fails, but the local part (and the free callback) is
    // done first, so nothing leaks and nothing is freed twice.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("libvirt-proxy.sock");
    let mut proxy = Proxy::new(sock.clone(), lab_socket());
    proxy.up();
    let uri = uri_for(&sock);
    let conn = tokio::task::spawn_blocking(move || Connect::open_read_only(Some(&uri)))
        .await
        .expect("task")
        .expect("open through the proxy");
    let reg = ffi::LifecycleRegistration::register(&conn, |_| {}).expect("register");
    let weak = reg.shared_weak();
    proxy.down().await;
    let t = Instant::now();
    while matches!(conn.is_alive(), Ok(true)) {
        assert!(t.elapsed() < Duration::from_secs(3), "EOF not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outcome = tokio::task::spawn_blocking(move || reg.deregister())
        .await
        .expect("task");
    println!("dead connection: {outcome:?}");
    assert!(outcome.released_by_libvirt, "{outcome:?}");
    assert!(weak.upgrade().is_none());
    tokio::task::spawn_blocking(move || drop(conn))
        .await
        .expect("close");
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_list_domains_and_domain_xml() {
    let _serial = SERIAL.lock().await;
    let hv = LibvirtHypervisor::start(fast_settings(&lab_uri()));
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    let calls = hv.status().calls;
    let t = Instant::now();
    let list = hv.list_domains().await.expect("list_domains");
    println!(
        "list_domains: {} domains in {:?}, {} libvirt call(s)",
        list.len(),
        t.elapsed(),
        hv.status().calls - calls
    );
    assert_eq!(hv.status().calls - calls, 1);
    let guest = lab_guest();
    let (uuid, (state, _)) = guest_state(&guest);
    let entry = list
        .iter()
        .find(|d| *d.domain.name == *guest)
        .expect("lab guest listed");
    assert_eq!(&*entry.domain.uuid, uuid);
    assert!(entry.active);
    assert_eq!(entry.state.state, state);
    // Same answer as the listing the CLI sees.
    let conn = Connect::open_read_only(Some(&lab_uri())).expect("open");
    let all = conn.list_all_domains(0).expect("list");
    assert_eq!(list.len(), all.len());
    let inactive = conn
        .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_INACTIVE)
        .expect("list inactive");
    assert_eq!(list.iter().filter(|d| !d.active).count(), inactive.len());

    for id in [
        guest.clone(),
        uuid.clone(),
        uuid.to_uppercase(),
        uuid.replace('-', ""),
        format!("{{{uuid}}}"),
    ] {
        let xml = hv
            .domain_xml(&id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(xml.contains(&format!("<name>{guest}</name>")), "{id}");
    }
    for id in [
        "nope",
        "{bad-uuid}",
        "5ad0a0b0-0000-4000-8000-0000000000ff",
        "",
    ] {
        assert!(
            matches!(hv.domain_xml(id).await, Err(HypervisorError::NoDomain(_))),
            "{id:?}"
        );
    }
    let status = hv.status();
    assert!(status.connected && status.reconnects == 0, "{status:?}");
    hv.shutdown();
}
