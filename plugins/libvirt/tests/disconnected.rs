//! A libvirtd that does not exist: calls fail fast with `Disconnected`, the supervisor
//! keeps retrying with backoff (no busy loop, even when calls keep asking), nothing
//! panics, and shutdown stops it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vadvisor_api::{Hypervisor, HypervisorError, StatsGroups};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};

const NOWHERE: &str = "qemu+unix:///system?socket=/tmp/vadvisor-none.sock";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_daemon_is_reported_and_retried_with_backoff() {
    let started = Instant::now();
    let hv = LibvirtHypervisor::start(LibvirtSettings { uri: NOWHERE.into(), ..Default::default() });
    assert!(started.elapsed() < Duration::from_millis(200), "start returns at once");
    assert!(!hv.wait_connected(Duration::from_millis(300)).await);

    // Hammer it for ~3 s: every call fails fast and none of them drives a busy loop.
    let mut calls = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let err = hv.domain_stats(StatsGroups::CPU_TOTAL).await.expect_err("not connected");
        slowest = slowest.max(t.elapsed());
        calls += 1;
        match err {
            HypervisorError::Disconnected(reason) => {
                assert!(reason.contains("vadvisor-none.sock"), "reason names the socket: {reason}")
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
    assert!(slowest < Duration::from_millis(100), "Disconnected is immediate");
    assert!(!status.connected);
    assert_eq!(status.calls, 0, "no libvirt call was made");
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("vadvisor-none.sock")));
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
    assert_eq!(hv.connect_attempts(), after_shutdown, "no attempts after shutdown");
    let err = hv.domain_stats(StatsGroups::NONE).await.expect_err("shut down");
    assert!(matches!(err, HypervisorError::Disconnected(ref r) if r.contains("shut down")), "{err}");
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On a current-thread runtime the supervisor task runs on this thread, so a
/// thread-local subscriber sees its log lines: one `warn!` for the outage, then quiet
/// `debug!` lines per attempt.
#[test]
fn single_threaded_runtime_and_one_warning_per_outage() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let hv = LibvirtHypervisor::start(LibvirtSettings {
            uri: NOWHERE.into(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(400),
            ..Default::default()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 0, 0.1, 0.3, 0.7 s, then every 0.4 s: about 4-5 attempts in 1 s.
        let attempts = hv.connect_attempts();
        assert!((3..=6).contains(&attempts), "{attempts} attempts");
        assert!(matches!(
            hv.domain_stats(StatsGroups::NONE).await,
            Err(HypervisorError::Disconnected(_))
        ));
        drop(hv); // Dropping the handle stops the supervisor.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warns = text.lines().filter(|l| l.contains("WARN")).count();
    let debugs = text.lines().filter(|l| l.contains("connection attempt failed")).count();
    assert_eq!(warns, 1, "one warning per outage:\n{text}");
    assert!(text.contains("cannot connect to libvirt"), "{text}");
    assert!(debugs >= 2, "further attempts log at debug:\n{text}");
    assert!(text.contains("supervisor stopped"), "{text}");
}
