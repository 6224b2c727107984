//! Logging happens once per state change. In its own test binary: tracing caches
//! per-callsite interest, so a test running concurrently on threads without a subscriber
//! could hide the callsites from this test's thread-local subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vadvisor_api::{Hypervisor, HypervisorError, StatsGroups};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};

const NOWHERE: &str = "qemu+unix:///system?socket=/tmp/vadvisor-none.sock";

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
    let debugs = text
        .lines()
        .filter(|l| l.contains("connection attempt failed"))
        .count();
    assert_eq!(warns, 1, "one warning per outage:\n{text}");
    assert!(text.contains("cannot connect to libvirt"), "{text}");
    assert!(debugs >= 2, "further attempts log at debug:\n{text}");
    assert!(text.contains("supervisor stopped"), "{text}");
}
