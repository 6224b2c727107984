//! Against the real lab (`scripts/lab.sh`: libvirtd plus QEMU guests named
//! `vadv-lab-N`). Skipped, with a message, unless `VADVISOR_LAB` is set.
//! `VADVISOR_LAB_URI` overrides the URI (default `qemu:///system`); the read-only socket
//! for the proxy test is `VADVISOR_LAB_SOCKET` (default /var/run/libvirt/libvirt-sock-ro).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use vadvisor_api::{Hypervisor, StatsGroups};
use vadvisor_libvirt::{ffi, LibvirtHypervisor, LibvirtSettings};
use virt::connect::Connect;
use virt::sys;

fn lab_enabled(test: &str) -> bool {
    if std::env::var_os("VADVISOR_LAB").is_some() {
        return true;
    }
    println!(
        "SKIPPED {test}: set VADVISOR_LAB=1 to run it against a running libvirtd with vadv-lab-N \
         guests (bash scripts/lab.sh up)"
    );
    false
}

fn lab_uri() -> String {
    std::env::var("VADVISOR_LAB_URI").unwrap_or_else(|_| "qemu:///system".to_string())
}

fn groups() -> StatsGroups {
    StatsGroups::CPU_TOTAL
        | StatsGroups::BALLOON
        | StatsGroups::VCPU
        | StatsGroups::INTERFACE
        | StatsGroups::BLOCK
}

/// A generous deadline: a lab with many TCG guests on 2 cores answers slowly; these
/// tests check behaviour, not latency.
fn lab_settings(uri: &str) -> LibvirtSettings {
    LibvirtSettings { uri: uri.to_string(), call_timeout: Duration::from_secs(60), ..Default::default() }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_bulk_path_is_one_call_with_every_group() {
    if !lab_enabled("lab_bulk_path_is_one_call_with_every_group") {
        return;
    }
    let uri = lab_uri();
    let hv = LibvirtHypervisor::start(lab_settings(&uri));
    assert!(hv.wait_connected(Duration::from_secs(10)).await, "connects to {uri}");
    let expected = running_lab_domains(&uri);
    assert!(!expected.is_empty(), "no running vadv-lab-* domain: is the lab up?");
    for round in 0..3 {
        let before = hv.status().calls;
        let t = Instant::now();
        let stats = hv.domain_stats(groups()).await.expect("stats");
        let took = t.elapsed();
        let calls = hv.status().calls - before;
        println!("round {round}: {} domains in {took:?}, {calls} libvirt call(s)", stats.len());
        assert_eq!(calls, 1, "bulk path only, no fallback");
        for name in &expected {
            let d = stats
                .iter()
                .find(|d| &*d.domain.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            for key in ["cpu.time", "block.0.rd.bytes", "net.0.tx.bytes", "balloon.current", "vcpu.0.time"] {
                assert!(d.u64(key).is_some(), "{name}: {key} missing in {:#?}", d.params);
            }
            assert_eq!(d.state().map(|s| s.name()), Some("Running"));
            assert!(d.errors.is_empty(), "{name}: {:?}", d.errors);
            if round == 0 {
                println!(
                    "  {name}: {} params, cpu.time={:?} block.0.rd.bytes={:?} net.0.tx.bytes={:?}",
                    d.params.len(),
                    d.u64("cpu.time"),
                    d.u64("block.0.rd.bytes"),
                    d.u64("net.0.tx.bytes")
                );
            }
        }
    }
    hv.shutdown();
}

#[test]
fn lab_close_callback_is_released_on_the_remote_driver() {
    if !lab_enabled("lab_close_callback_is_released_on_the_remote_driver") {
        return;
    }
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

/// A unix-socket proxy in front of libvirtd's read-only socket that the test can cut
/// and restore, to play a libvirtd restart without touching the shared daemon.
struct Proxy {
    path: PathBuf,
    target: PathBuf,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    fn new(path: PathBuf, target: PathBuf) -> Self {
        Self { path, target, tasks: None }
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind proxy socket");
        let target = self.target.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { break };
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut upstream) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        self.tasks = Some(set);
    }

    /// Drops every proxied connection (libvirt sees EOF) and the listener.
    async fn down(&mut self) {
        if let Some(mut set) = self.tasks.take() {
            set.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn uri_for(socket: &Path) -> String {
    format!("qemu+unix:///system?socket={}", socket.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_reconnects_promptly_after_a_daemon_restart() {
    if !lab_enabled("lab_reconnects_promptly_after_a_daemon_restart") {
        return;
    }
    let target = PathBuf::from(
        std::env::var("VADVISOR_LAB_SOCKET")
            .unwrap_or_else(|_| "/var/run/libvirt/libvirt-sock-ro".to_string()),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("libvirt-proxy.sock");
    let mut proxy = Proxy::new(sock.clone(), target);
    proxy.up();
    let hv: Arc<LibvirtHypervisor> = LibvirtHypervisor::start(lab_settings(&uri_for(&sock)));
    assert!(hv.wait_connected(Duration::from_secs(10)).await);
    assert!(!hv.domain_stats(groups()).await.expect("stats").is_empty());

    // "libvirtd stops": the close callback (EOF) must notice without any call.
    let cut = Instant::now();
    proxy.down().await;
    while hv.status().connected {
        assert!(cut.elapsed() < Duration::from_secs(3), "loss not noticed within 3 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = cut.elapsed();
    println!("loss noticed after {noticed:?}: {:?}", hv.status().last_error);

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
        assert!(back.elapsed() < Duration::from_secs(10), "not reconnected 10 s after the daemon came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stats = hv.domain_stats(groups()).await.expect("stats after reconnecting");
    assert!(!stats.is_empty());
    let resumed = back.elapsed();
    let status = hv.status();
    println!(
        "reconnected {reconnected:?} and first stats {resumed:?} after the daemon answered again; \
         {attempts_down} attempts during the 3 s outage; status {status:?}"
    );
    assert!(reconnected < Duration::from_millis(2500), "reconnected after {reconnected:?}");
    assert!(attempts_down <= 5, "{attempts_down} attempts: busy loop?");
    assert_eq!(status.reconnects, 1);
    assert!(status.connected && status.last_error.is_none());
    hv.shutdown();
    proxy.down().await;
}
