//! Against the real lab (`scripts/lab.sh`: libvirtd plus QEMU guests named
//! `vadv-lab-N`). Skipped, with a message, unless `VADVISOR_LAB` is set.
//! `VADVISOR_LAB_URI` overrides the URI (default `qemu:///system`); the read-only socket
//! for the proxy test is `VADVISOR_LAB_SOCKET` (default /var/run/libvirt/libvirt-sock-ro).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{lab_socket, lab_uri, uri_for, Proxy};
use vadvisor_api::{Hypervisor, StatsGroups};
use vadvisor_libvirt::{ffi, LibvirtHypervisor, LibvirtSettings, StatsTransport};
use virt::connect::Connect;
use virt::sys;

fn groups() -> StatsGroups {
    StatsGroups::CPU_TOTAL
        | StatsGroups::BALLOON
        | StatsGroups::VCPU
        | StatsGroups::INTERFACE
        | StatsGroups::BLOCK
}

/// A generous deadline: a lab with many TCG guests on 2 cores answers slowly; these
/// tests check behaviour, not latency. No hedging: they count libvirt calls.
fn lab_settings(uri: &str) -> LibvirtSettings {
    LibvirtSettings {
        uri: uri.to_string(),
        call_timeout: Duration::from_secs(60),
        hedge_after: Duration::ZERO,
        ..Default::default()
    }
}

/// Errors that only say NOWAIT skipped a busy domain's monitor (another client held its
/// job): expected on a shared lab, unlike real failures.
fn only_busy_notes(errors: &[String]) -> bool {
    errors
        .iter()
        .all(|e| e.contains("domain busy or not responding"))
}

/// Names of the running `vadv-lab-*` domains, read independently of the backend.
fn running_lab_domains(uri: &str) -> Vec<String> {
    let conn = Connect::open_read_only(Some(uri)).expect("open lab URI");
    let mut names: Vec<String> = conn
        .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .expect("list domains")
        .iter()
        .filter_map(|d| d.name().ok())
        .filter(|n| n.starts_with("vadv-lab-"))
        .collect();
    names.sort();
    names
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_bulk_path_is_one_call_with_every_group() {
    let uri = lab_uri();
    let hv = LibvirtHypervisor::start(lab_settings(&uri));
    assert!(
        hv.wait_connected(Duration::from_secs(10)).await,
        "connects to {uri}"
    );
    let expected = running_lab_domains(&uri);
    assert!(
        !expected.is_empty(),
        "no running vadv-lab-* domain: is the lab up?"
    );
    // A guest that is still starting may miss monitor-backed groups for a moment (the
    // bulk call uses NOWAIT), so every domain must be complete in at least one round;
    // every round must be exactly one bulk call, and one `virDomainGetCPUStats` per
    // domain it returned (the cpu-total group without the QEMU monitor): no fallback.
    const KEYS: [&str; 5] = [
        "cpu.time",
        "block.0.rd.bytes",
        "net.0.tx.bytes",
        "balloon.current",
        "vcpu.0.time",
    ];
    let mut complete = std::collections::BTreeSet::new();
    for round in 0..15 {
        let before = hv.status().calls;
        let t = Instant::now();
        let stats = hv.domain_stats(groups()).await.expect("stats");
        let took = t.elapsed();
        let calls = hv.status().calls - before;
        println!(
            "round {round}: {} domains in {took:?}, {calls} libvirt call(s)",
            stats.len()
        );
        assert_eq!(
            calls,
            1 + stats.len() as u64,
            "bulk path and CPU calls only, no fallback"
        );
        for d in stats
            .iter()
            .filter(|d| d.domain.name.starts_with("vadv-lab-"))
        {
            assert!(
                only_busy_notes(&d.errors),
                "{}: {:?}",
                d.domain.name,
                d.errors
            );
            let running = d.state().is_some_and(|s| s.is_running());
            if running
                && d.errors.is_empty()
                && KEYS.iter().all(|k| d.u64(k).is_some())
                && complete.insert(d.domain.name.to_string())
            {
                println!(
                    "  {}: {} params, cpu.time={:?} block.0.rd.bytes={:?} net.0.tx.bytes={:?}",
                    d.domain.name,
                    d.params.len(),
                    d.u64("cpu.time"),
                    d.u64("block.0.rd.bytes"),
                    d.u64("net.0.tx.bytes")
                );
            }
        }
        if round >= 2 && expected.iter().all(|n| complete.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Domains the lab stopped meanwhile are not required.
    let still_running = running_lab_domains(&uri);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|n| still_running.contains(n) && !complete.contains(*n))
        .collect();
    assert!(missing.is_empty(), "never complete: {missing:?}");
    hv.shutdown();
}

/// Keys whose values do not move between two calls a moment apart.
const STABLE: [&str; 8] = [
    "state.state",
    "state.reason",
    "balloon.maximum",
    "vcpu.current",
    "vcpu.maximum",
    "block.0.name",
    "block.0.capacity",
    "net.0.name",
];

/// Every key of a domain's parameters with its value's type.
type KeyTypes = Vec<(String, std::mem::Discriminant<vadvisor_api::TypedValue>)>;

/// What one domain's parameters look like: every key with its value's type, and the
/// values of the [`STABLE`] keys.
fn shape(d: &vadvisor_api::DomainStats) -> (KeyTypes, Vec<Option<vadvisor_api::TypedValue>>) {
    let keys = d
        .params
        .iter()
        .filter(|(k, _)| !cpu_total_extra(k))
        .map(|(k, v)| (k.to_string(), std::mem::discriminant(v)))
        .collect();
    let stable = STABLE.iter().map(|k| d.params.get(k).cloned()).collect();
    (keys, stable)
}

/// A `cpu-total` key the native path does not read: it reads a domain's CPU time, user
/// and system time with `virDomainGetCPUStats`, without the QEMU monitor (KVM's
/// halt-polling counters, resctrl's cache monitors: not exported).
fn cpu_total_extra(key: &str) -> bool {
    key.starts_with("cpu.") && !matches!(key, "cpu.time" | "cpu.user" | "cpu.system")
}

/// A hypervisor on the native client (the default on the lab's local socket) and one on
/// libvirt's client library, both connected to `uri`.
async fn native_and_library(uri: &str) -> (Arc<LibvirtHypervisor>, Arc<LibvirtHypervisor>) {
    let native = LibvirtHypervisor::start(lab_settings(uri));
    let library = LibvirtHypervisor::start(LibvirtSettings {
        stats_transport: StatsTransport::Library,
        ..lab_settings(uri)
    });
    assert!(native.wait_connected(Duration::from_secs(10)).await);
    assert!(library.wait_connected(Duration::from_secs(10)).await);
    (native, library)
}

/// The native client (the default on the lab's local socket) reads what libvirt's client
/// library reads: the same domains, every key with the same type, equal values where
/// nothing moves; and it is what answers (every bulk call native with `auto`, none with
/// `library`).
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_native_client_reads_what_the_library_reads() {
    let uri = lab_uri();
    let (native, library) = native_and_library(&uri).await;
    let expected = running_lab_domains(&uri);
    assert!(!expected.is_empty(), "no running vadv-lab-* domain");
    let mut same = std::collections::BTreeSet::new();
    let mut last_difference = String::new();
    let mut rounds = 0;
    // One bulk call per round, and one `virDomainGetCPUStats` per domain it returned.
    let mut stats_calls = 0;
    for _ in 0..10 {
        rounds += 1;
        let a = native.domain_stats(groups()).await.expect("native stats");
        stats_calls += 1 + a.len() as u64;
        for d in &a {
            assert!(d.params.contains_key("cpu.time"), "{}", d.domain.name);
            assert!(
                !d.params.keys().any(cpu_total_extra),
                "{}: the monitor's cpu-total counters were asked",
                d.domain.name
            );
        }
        let b = library.domain_stats(groups()).await.expect("library stats");
        for d in a.iter().filter(|d| d.domain.name.starts_with("vadv-lab-")) {
            let Some(other) = b.iter().find(|o| o.domain.uuid == d.domain.uuid) else {
                continue;
            };
            assert_eq!(d.domain.name, other.domain.name);
            // NOWAIT may leave a group out of either call: compare complete replies.
            if !d.errors.is_empty() || !other.errors.is_empty() {
                continue;
            }
            let (sa, sb) = (shape(d), shape(other));
            if sa == sb {
                same.insert(d.domain.name.to_string());
            } else {
                last_difference = format!("{}:\nnative  {:?}\nlibrary {:?}", d.domain.name, sa, sb);
            }
        }
        if expected.iter().all(|n| same.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still_running = running_lab_domains(&uri);
    let differ: Vec<&String> = expected
        .iter()
        .filter(|n| still_running.contains(n) && !same.contains(*n))
        .collect();
    assert!(
        differ.is_empty(),
        "never the same: {differ:?}\n{last_difference}"
    );
    // The host's counters (the host collector's call) the same way.
    let before = native.status().native_calls;
    let a = native.node_stats().await.expect("native node stats");
    let b = library.node_stats().await.expect("library node stats");
    assert_eq!(
        native.status().native_calls - before,
        4,
        "four native calls"
    );
    assert_eq!(a.info, b.info, "node info");
    assert!(!a.info.model.is_empty() && a.info.cpus > 0, "{:?}", a.info);
    let keys = |m: &std::collections::BTreeMap<String, u64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a.cpu), keys(&b.cpu));
    assert!(a.cpu.contains_key("idle"), "{:?}", a.cpu);
    assert_eq!(keys(&a.memory), keys(&b.memory));
    assert_eq!(a.memory.get("total"), b.memory.get("total"));
    assert!(
        a.memory.get("total").is_some_and(|&t| t > 0),
        "{:?}",
        a.memory
    );
    assert!(a.free_memory.is_some() && b.free_memory.is_some());
    println!("node: {:?}; cpu {:?}; memory {:?}", a.info, a.cpu, a.memory);
    // The domain listing (the specs collector's) the same way: one native call.
    let before = native.status().native_calls;
    let listed = |v: Vec<vadvisor_api::DomainEntry>| {
        v.into_iter()
            .map(|e| {
                (
                    e.domain.uuid.to_string(),
                    e.domain.name.to_string(),
                    e.active,
                )
            })
            .collect::<Vec<_>>()
    };
    let la = listed(native.list_domains().await.expect("native listing"));
    let lb = listed(library.list_domains().await.expect("library listing"));
    assert_eq!(native.status().native_calls - before, 1, "one native call");
    assert_eq!(
        la, lb,
        "the same domains, names and activity, in name order"
    );
    assert!(la.iter().any(|(_, _, active)| *active), "{la:?}");
    let (n, l) = (native.status(), library.status());
    println!(
        "{} domains alike in {rounds} round(s); native backend: {} of {} calls native; library backend: {} of {}",
        same.len(),
        n.native_calls,
        n.calls,
        l.native_calls,
        l.calls
    );
    // Every bulk call (with its CPU calls), the four node calls and the listing went
    // native with `auto`, none with `library`; the rest (the domain listing after a
    // connect) is the same on both.
    assert_eq!(n.native_calls, stats_calls + 5, "{n:?}");
    assert_eq!(l.native_calls, 0, "`library` never goes native");
    assert!(l.calls >= rounds + 5, "{l:?}");
    assert_eq!(
        n.calls - n.native_calls,
        l.calls - rounds - 5,
        "{n:?} {l:?}"
    );
    native.shutdown();
    library.shutdown();
}

/// A `vcpu.N.*` counter of a domain's parameters.
fn vcpu_counter(d: &vadvisor_api::DomainStats, key: &str) -> u64 {
    match d.params.get(key) {
        Some(vadvisor_api::TypedValue::ULLong(v)) => *v,
        other => panic!("{}: {key} is {other:?}", d.domain.name),
    }
}

/// On the daemon's own host the native path reads the `vcpu` group from the vCPU
/// threads' `/proc` files, not through libvirt (whose group sends each QEMU two monitor
/// commands): the same keys with the same types as libvirt's group, each counter
/// between libvirt's reads just before and just after it, and run times in exact
/// nanoseconds (libvirt's are whole clock ticks).
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_vcpu_counters_are_read_from_the_threads_and_agree_with_libvirt() {
    let uri = lab_uri();
    let (native, library) = native_and_library(&uri).await;
    let vcpu = StatsGroups::VCPU;
    // libvirt's clock tick, and one more: it truncates user and system time apart.
    const TWO_TICKS: u64 = 20_000_000;
    let mut checked = 0;
    let mut exact = 0;
    for _ in 0..5 {
        let before = library.domain_stats(vcpu).await.expect("library stats");
        let calls = native.status().native_calls;
        let ours = native.domain_stats(vcpu).await.expect("native stats");
        assert_eq!(
            native.status().native_calls - calls,
            1,
            "one bulk call, no follow-up for the vcpu group"
        );
        let after = library.domain_stats(vcpu).await.expect("library stats");
        for d in ours
            .iter()
            .filter(|d| d.domain.name.starts_with("vadv-lab-"))
        {
            let find = |v: &[vadvisor_api::DomainStats]| {
                v.iter()
                    .find(|o| o.domain.uuid == d.domain.uuid && o.errors.is_empty())
                    .cloned()
            };
            let (Some(b), Some(a)) = (find(&before), find(&after)) else {
                continue;
            };
            assert!(d.errors.is_empty(), "{}: {:?}", d.domain.name, d.errors);
            let (ks, kb) = (shape(d).0, shape(&b).0);
            assert_eq!(ks, kb, "{}: keys and types", d.domain.name);
            for key in ["vcpu.current", "vcpu.maximum"] {
                assert_eq!(
                    d.params.get(key),
                    b.params.get(key),
                    "{}: {key}",
                    d.domain.name
                );
            }
            for (n, _) in d.params.indexed_sections("vcpu") {
                let key = |f: &str| format!("vcpu.{n}.{f}");
                let (lo, hi) = (
                    vcpu_counter(&b, &key("time")),
                    vcpu_counter(&a, &key("time")),
                );
                let time = vcpu_counter(d, &key("time"));
                assert!(
                    lo <= time && time <= hi + TWO_TICKS,
                    "{}: vcpu {n} time {lo} <= {time} <= {hi} + 2 ticks",
                    d.domain.name
                );
                if !time.is_multiple_of(10_000_000) {
                    exact += 1;
                }
                for f in ["delay", "wait"] {
                    let (lo, hi) = (vcpu_counter(&b, &key(f)), vcpu_counter(&a, &key(f)));
                    let v = vcpu_counter(d, &key(f));
                    assert!(
                        lo <= v && v <= hi,
                        "{}: vcpu {n} {f} {lo} <= {v} <= {hi}",
                        d.domain.name
                    );
                }
                checked += 1;
            }
        }
        if checked >= 3 {
            break;
        }
    }
    assert!(checked >= 3, "only {checked} vCPUs compared");
    // A running TCG vCPU's exact run time is a multiple of 10 ms by chance only: these
    // came from the threads, not from libvirt's group.
    assert!(exact * 2 > checked, "{exact} of {checked} run times exact");
    println!("{checked} vCPUs agree with libvirt's group; {exact} run times exact");
    native.shutdown();
    library.shutdown();
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[test]
fn lab_close_callback_is_released_on_the_remote_driver() {
    virt::error::clear_error_callback();
    let conn = Connect::open_read_only(Some(&lab_uri())).expect("open");
    let cb = ffi::CloseCallback::register(&conn, |_| {}).expect("register");
    let weak = cb.signal_weak();
    // The remote driver keeps the callback: a second registration is refused...
    assert!(ffi::CloseCallback::register(&conn, |_| {}).is_err());
    drop(cb);
    // ...and unregistering makes libvirt call the free callback: nothing leaks.
    assert!(weak.upgrade().is_none());
    let again = ffi::CloseCallback::register(&conn, |_| {}).expect("register again");
    drop(again);
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_reconnects_promptly_after_a_daemon_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("libvirt-proxy.sock");
    let mut proxy = Proxy::new(sock.clone(), lab_socket());
    proxy.up();
    let hv: Arc<LibvirtHypervisor> = LibvirtHypervisor::start(lab_settings(&uri_for(&sock)));
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    assert!(!hv.domain_stats(groups()).await.expect("stats").is_empty());

    // "libvirtd stops": the close callback (EOF) must notice without any call.
    let cut = Instant::now();
    proxy.down().await;
    while hv.status().connected {
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "loss not noticed within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = cut.elapsed();
    println!(
        "loss noticed after {noticed:?}: {:?}",
        hv.status().last_error
    );

    // Down for 3 s while a collector keeps asking every 250 ms.
    while cut.elapsed() < Duration::from_secs(3) {
        assert!(hv.domain_stats(groups()).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let attempts_down = hv.connect_attempts();

    // "libvirtd is back": the connection returns within ~1-2 s, and collection with it.
    proxy.up();
    let back = Instant::now();
    let mut last_ask = back;
    let reconnected = loop {
        if hv.status().connected {
            break back.elapsed();
        }
        // A collector asking every 250 ms (fails fast while disconnected).
        if last_ask.elapsed() >= Duration::from_millis(250) {
            last_ask = Instant::now();
            let _ = hv.domain_stats(StatsGroups::NONE).await;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not reconnected 10 s after the daemon came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stats = hv
        .domain_stats(groups())
        .await
        .expect("stats after reconnecting");
    assert!(!stats.is_empty());
    let resumed = back.elapsed();
    let status = hv.status();
    println!(
        "reconnected {reconnected:?} and first stats {resumed:?} after the daemon answered again; \
         {attempts_down} attempts during the 3 s outage; status {status:?}"
    );
    assert!(
        reconnected < Duration::from_millis(2500),
        "reconnected after {reconnected:?}"
    );
    assert!(attempts_down <= 5, "{attempts_down} attempts: busy loop?");
    assert_eq!(status.reconnects, 1);
    assert!(status.connected && status.last_error.is_none());
    hv.shutdown();
    proxy.down().await;
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_hung_daemon_times_out_and_permits_bound_the_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("libvirt-proxy.sock");
    let mut proxy = Proxy::new(sock.clone(), lab_socket());
    proxy.up();
    let timeout = Duration::from_millis(1500);
    let hv = LibvirtHypervisor::start(LibvirtSettings {
        uri: uri_for(&sock),
        call_timeout: timeout,
        max_concurrent_calls: 2,
        ..Default::default()
    });
    assert!(hv.wait_connected(Duration::from_secs(10)).await);

    // libvirtd "hangs": five concurrent calls all time out on schedule, but only two
    // reach libvirt (the permits stay with the two stuck blocking threads).
    proxy.freeze(true);
    let before = hv.status().calls;
    let t = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let hv = hv.clone();
            tokio::spawn(async move { hv.domain_stats(StatsGroups::NONE).await })
        })
        .collect();
    let mut names = Vec::new();
    for c in calls {
        match c.await.expect("task") {
            Err(vadvisor_api::HypervisorError::Timeout { call, .. }) => names.push(call),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }
    names.sort_unstable();
    println!("timed-out calls: {names:?}");
    // The timeout names the call that hung, or says the call was still queued.
    assert_eq!(names.iter().filter(|n| n.contains("queued")).count(), 3);
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "virConnectGetAllDomainStats")
            .count(),
        2
    );
    let took = t.elapsed();
    assert!(
        took < timeout + Duration::from_millis(500),
        "timeouts fired late: {took:?}"
    );
    // At most max_concurrent_calls calls reach libvirt; the second lane may still be
    // opening its own connection through the hung daemon, before its call is counted.
    let reached = hv.status().calls - before;
    assert!(
        (1..=2).contains(&reached),
        "only max_concurrent_calls calls reach libvirt: {reached}"
    );
    // A later call waits for a permit and times out too, without reaching libvirt.
    let r = hv.domain_stats(StatsGroups::NONE).await;
    assert!(
        matches!(r, Err(vadvisor_api::HypervisorError::Timeout { .. })),
        "{r:?}"
    );
    assert_eq!(
        hv.status().calls - before,
        reached,
        "the later call reached libvirt"
    );
    println!(
        "5+1 calls timed out after {took:?}; {} reached libvirt",
        hv.status().calls - before
    );

    // libvirtd answers again: the stuck calls finish, permits return, collection resumes.
    proxy.freeze(false);
    let back = Instant::now();
    let stats = loop {
        match hv.domain_stats(StatsGroups::NONE).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "still failing: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(!stats.is_empty());
    assert!(hv.status().connected, "a hang is not a disconnection");
    println!(
        "resumed {:?} after the daemon answered again",
        back.elapsed()
    );
    hv.shutdown();
    proxy.down().await;
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_fallback_synthesises_the_bulk_keys() {
    let uri = lab_uri();
    let hv = LibvirtHypervisor::start(lab_settings(&uri));
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    // Bulk replies taken with NOWAIT can skip a domain's monitor-backed stats while
    // another client (another test) holds its job: merge three replies.
    let mut bulk: Vec<vadvisor_api::DomainStats> = Vec::new();
    for _ in 0..3 {
        for d in hv.domain_stats(groups()).await.expect("bulk") {
            match bulk.iter_mut().find(|b| b.domain.uuid == d.domain.uuid) {
                Some(b) => b.params.extend(d.params),
                None => bulk.push(d),
            }
        }
    }
    let before = hv.status().calls;
    let fallback = hv
        .domain_stats_via_fallback(groups())
        .await
        .expect("fallback");
    println!(
        "fallback for {} domains: {} libvirt calls",
        fallback.len(),
        hv.status().calls - before
    );
    let mut compared = 0;
    let mut bulk_only = std::collections::BTreeSet::new();
    for f in fallback
        .iter()
        .filter(|d| d.domain.name.starts_with("vadv-lab-"))
    {
        let Some(b) = bulk.iter().find(|b| b.domain.uuid == f.domain.uuid) else {
            continue;
        };
        if !b.state().is_some_and(|s| s.is_running()) || !b.has_group("vcpu") {
            continue; // still starting: the bulk reply itself is partial
        }
        assert!(f.errors.is_empty(), "{}: {:?}", f.domain.name, f.errors);
        for (key, value) in &f.params {
            let bv = b.get(key).unwrap_or_else(|| {
                panic!("{}: fallback key {key} is not a bulk key", f.domain.name)
            });
            assert_eq!(
                std::mem::discriminant(bv),
                std::mem::discriminant(value),
                "{}: {key} has another type: bulk {bv:?}, fallback {value:?}",
                f.domain.name
            );
            let identity = key.ends_with(".name")
                || key.ends_with(".path")
                || key.ends_with(".count")
                || key.starts_with("vcpu.current")
                || key.starts_with("vcpu.maximum")
                || key == "balloon.maximum";
            if identity {
                assert_eq!(bv, value, "{}: {key}", f.domain.name);
            }
        }
        bulk_only.extend(
            b.params
                .keys()
                .filter(|k| !f.params.contains_key(k))
                .map(|k| {
                    // vcpu.3.wait -> vcpu.N.wait
                    k.split('.')
                        .map(|p| if p.parse::<u32>().is_ok() { "N" } else { p })
                        .collect::<Vec<_>>()
                        .join(".")
                }),
        );
        compared += 1;
    }
    println!("compared {compared} domains; keys only the bulk call has: {bulk_only:?}");
    assert!(
        compared > 0,
        "no running, fully reported lab domain to compare"
    );
    hv.shutdown();
}
