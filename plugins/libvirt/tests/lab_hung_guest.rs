//! A lab guest whose QEMU does not answer (SIGSTOP), against the real lab
//! (`scripts/lab.sh`). Skipped, with a message, unless `VADVISOR_LAB` is set. In a binary
//! of its own, one ordered test: it stops the LAST lab guest (highest N), which the other
//! tests must not see, and always continues it at the end (guard), also on failure.
//!
//! What it checks, step by step:
//! 1. the first bulk call after the stop takes the guest's monitor job and hangs; the
//!    hedge answers for every domain after about `hedge_after`;
//! 2. later calls answer at once (NOWAIT skips the busy guest) and flag the guest's
//!    reduced groups as partial errors, the other guests have none;
//! 3. `list_domains` and `domain_xml` of the stopped guest need no job: prompt (they
//!    run on a connection of their own: on the hung call's connection, libvirt 9.0 can
//!    hold them up for a keepalive interval);
//! 4. the per-domain fallback (which waits for the job) gives the stopped guest up at
//!    its deadline, and the next call skips it and serves the others in full;
//! 5. after SIGCONT the guest is complete again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::lab_uri;
use vadvisor_api::{DomainStats, Hypervisor, StatsGroups};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};
use virt::connect::Connect;
use virt::sys;

fn groups() -> StatsGroups {
    StatsGroups::CPU_TOTAL
        | StatsGroups::BALLOON
        | StatsGroups::VCPU
        | StatsGroups::INTERFACE
        | StatsGroups::BLOCK
}

/// The running `vadv-lab-N` guest with the highest N.
fn last_lab_guest(uri: &str) -> String {
    let conn = Connect::open_read_only(Some(uri)).expect("open lab URI");
    conn.list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .expect("list domains")
        .iter()
        .filter_map(|d| d.name().ok())
        .filter_map(|n| {
            let i: u32 = n.strip_prefix("vadv-lab-")?.parse().ok()?;
            Some((i, n))
        })
        .max()
        .map(|(_, n)| n)
        .expect("no running vadv-lab-* guest: is the lab up?")
}

fn qemu_pid(guest: &str) -> u32 {
    let path = format!("/var/run/libvirt/qemu/{guest}.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .expect("pid")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Continues the stopped QEMU whatever happens.
struct ContGuard(u32);

impl Drop for ContGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
        println!("guard: SIGCONT {}", self.0);
    }
}

fn find<'a>(stats: &'a [DomainStats], name: &str) -> Option<&'a DomainStats> {
    stats.iter().find(|d| &*d.domain.name == name)
}

/// The lab guests other than `hung` that report a real error (not a busy note: another
/// client of the shared lab may hold a job for a moment).
fn others_failing(stats: &[DomainStats], hung: &str) -> Vec<String> {
    stats
        .iter()
        .filter(|d| d.domain.name.starts_with("vadv-lab-") && &*d.domain.name != hung)
        .filter(|d| {
            d.errors
                .iter()
                .any(|e| !e.contains("domain busy or not responding"))
        })
        .map(|d| format!("{}: {:?}", d.domain.name, d.errors))
        .collect()
}

#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_a_stopped_guest_costs_the_others_one_hedge_delay() {
    let uri = lab_uri();
    let settings = LibvirtSettings {
        uri: uri.clone(),
        call_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let hedge_after = settings.hedge_after;
    let hv = LibvirtHypervisor::start(settings);
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    let hung = last_lab_guest(&uri);
    // Two normal rounds: the backend learns which groups each guest reports in full.
    for _ in 0..2 {
        let stats = hv.domain_stats(groups()).await.expect("stats");
        assert!(find(&stats, &hung).is_some());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let domains = hv.domain_stats(groups()).await.expect("stats").len();

    let pid = qemu_pid(&hung);
    signal(pid, "-STOP");
    let guard = ContGuard(pid);
    println!("SIGSTOP {hung} (pid {pid}); {domains} domains");

    // 1. The hedge answers for every domain.
    let calls0 = hv.status().calls;
    let t = Instant::now();
    let stats = hv
        .domain_stats(groups())
        .await
        .expect("stats while a guest is stopped");
    let first = t.elapsed();
    let calls = hv.status().calls - calls0;
    println!(
        "first call after the stop: {first:?}, {calls} libvirt calls, {} domains",
        stats.len()
    );
    assert_eq!(stats.len(), domains, "every domain is reported");
    // Normally our first call takes the guest's job and hangs, and the hedge answers.
    // On a shared lab another client may have taken the job first: then our first call
    // skips the guest at once (NOWAIT) and needs no hedge. Over the native client, the
    // call also sends one CPU read per domain ahead of the bulk call (counted as sent).
    let reads = if calls > domains as u64 {
        domains as u64
    } else {
        0
    };
    match calls - reads {
        2 => assert!(
            first >= hedge_after && first < hedge_after + Duration::from_millis(1500),
            "hedged, but answered after {first:?}"
        ),
        1 => {
            println!("  (another client holds {hung}'s job: no hedge needed)");
            assert!(first < hedge_after, "{first:?}");
        }
        n => panic!("{n} bulk calls ({calls} in all): at most one hedge per call"),
    }
    let h = find(&stats, &hung).expect("stopped guest reported");
    println!("  {hung}: {:?}", h.errors);
    assert!(
        h.u64("cpu.time").is_some(),
        "what libvirt has without the monitor"
    );
    assert!(
        others_failing(&stats, &hung).is_empty(),
        "{:?}",
        others_failing(&stats, &hung)
    );

    // 2. Later calls are prompt; the stopped guest is flagged as partial every time.
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let t = Instant::now();
        let stats = hv.domain_stats(groups()).await.expect("stats");
        slowest = slowest.max(t.elapsed());
        let h = find(&stats, &hung).expect("stopped guest reported");
        assert!(
            h.errors.iter().any(|e| e.contains("`block`"))
                && h.errors.iter().any(|e| e.contains("`balloon`")),
            "{hung}: {:?}",
            h.errors
        );
        assert!(others_failing(&stats, &hung).is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("later calls: slowest {slowest:?}");
    assert!(slowest < hedge_after, "{slowest:?}");

    // 3. No job needed to list or describe.
    let t = Instant::now();
    let list = hv.list_domains().await.expect("list");
    let xml = hv
        .domain_xml(&hung)
        .await
        .expect("xml of the stopped guest");
    let took = t.elapsed();
    println!(
        "list_domains ({} domains) + domain_xml: {took:?}",
        list.len()
    );
    assert!(xml.contains(&hung));
    assert!(took < Duration::from_secs(1), "{took:?}");

    // 4. The per-domain fallback waits for the stopped guest's job: it is given up at the
    // fallback deadline (4/5 of 5 s), and the next call skips it.
    let t = Instant::now();
    let fb = hv
        .domain_stats_via_fallback(groups())
        .await
        .expect("fallback stats");
    let took = t.elapsed();
    let h = find(&fb, &hung).expect("stopped guest reported");
    let complete = fb
        .iter()
        .filter(|d| d.errors.is_empty() && d.u64("block.0.rd.reqs").is_some())
        .count();
    println!(
        "fallback with a stopped guest: {took:?}, {complete}/{} complete, {hung}: {:?}",
        fb.len(),
        h.errors
    );
    assert_eq!(fb.len(), domains);
    assert!(took < Duration::from_millis(4500), "{took:?}");
    assert!(!h.errors.is_empty());
    let t = Instant::now();
    let fb = hv
        .domain_stats_via_fallback(groups())
        .await
        .expect("fallback stats");
    let took = t.elapsed();
    let h = find(&fb, &hung).expect("stopped guest reported");
    let complete = fb
        .iter()
        .filter(|d| d.errors.is_empty() && d.u64("block.0.rd.reqs").is_some())
        .count();
    println!(
        "next fallback: {took:?}, {complete}/{} complete, {hung}: {:?}",
        fb.len(),
        h.errors
    );
    assert!(
        h.errors.iter().any(|e| e.contains("skipped")),
        "{:?}",
        h.errors
    );
    assert_eq!(complete, domains - 1, "every other domain in full");
    assert!(took < Duration::from_millis(4000), "{took:?}");

    // 5. Continue the guest: complete again.
    drop(guard);
    let t = Instant::now();
    loop {
        let stats = hv.domain_stats(groups()).await.expect("stats");
        if find(&stats, &hung).is_some_and(|d| d.errors.is_empty()) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{hung} still partial 10 s after SIGCONT: {:?}",
            find(&stats, &hung).map(|d| &d.errors)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{hung} complete again {:?} after SIGCONT", t.elapsed());
    hv.shutdown();
}
