//! A libvirtd that does not exist: calls fail fast with `Disconnected`, the supervisor
//! keeps retrying with backoff (no busy loop, even when calls keep asking), nothing
//! panics, and shutdown stops it.

use std::time::{Duration, Instant};

use vadvisor_api::{Hypervisor, HypervisorError, StatsGroups};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};

const NOWHERE: &str = "qemu+unix:///system?socket=/tmp/vadvisor-none.sock";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_daemon_is_reported_and_retried_with_backoff() {
    let started = Instant::now();
    let hv = LibvirtHypervisor::start(LibvirtSettings {
        uri: NOWHERE.into(),
        ..Default::default()
    });
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "start returns at once"
    );
    assert!(!hv.wait_connected(Duration::from_millis(300)).await);

    // Hammer it for ~3 s: every call fails fast and none of them drives a busy loop.
    let mut calls = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let err = hv
            .domain_stats(StatsGroups::CPU_TOTAL)
            .await
            .expect_err("not connected");
        slowest = slowest.max(t.elapsed());
        calls += 1;
        match err {
            HypervisorError::Disconnected(reason) => {
                assert!(
                    reason.contains("vadvisor-none.sock"),
                    "reason names the socket: {reason}"
                )
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts = hv.connect_attempts();
    let status = hv.status();
    println!(
        "{calls} calls in 3 s, slowest {slowest:?}; {attempts} connection attempts; status {status:?}"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "Disconnected is immediate"
    );
    assert!(!status.connected);
    assert_eq!(status.calls, 0, "no libvirt call was made");
    assert!(status
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("vadvisor-none.sock")));
    // Immediate attempt, then at most one per reconnect_min (1 s): ≤ 4 in 3 s.
    assert!((2..=4).contains(&attempts), "{attempts} attempts in 3 s");

    // Without callers asking, the exponential backoff alone governs: 1 s, 2 s, 4 s, ...
    let before = hv.connect_attempts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = hv.connect_attempts() - before;
    assert!(idle <= 2, "{idle} attempts in 3 idle seconds");

    hv.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_shutdown = hv.connect_attempts();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hv.connect_attempts(),
        after_shutdown,
        "no attempts after shutdown"
    );
    let err = hv
        .domain_stats(StatsGroups::NONE)
        .await
        .expect_err("shut down");
    assert!(
        matches!(err, HypervisorError::Disconnected(ref r) if r.contains("shut down")),
        "{err}"
    );
}
