//! The example third-party collector reaches every built-in sink with no change to any
//! sink: its metrics appear in `/metrics`, in `/api/v1.0/stats/` and in StatsD, and the
//! example sink writes them to its file. Runs the custom agent against libvirt's
//! in-process test driver; the collector's pid directory holds `test.pid` naming this
//! test process, so it has a real process to read in /proc.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Option<String> {
    reqwest::blocking::get(url)
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.text().ok())
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn example_collector_metrics_reach_rest_prometheus_statsd_and_the_example_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("test.pid"), std::process::id().to_string()).expect("pid file");
    let statsd = UdpSocket::bind("127.0.0.1:0").expect("udp");
    statsd
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let statsd_port = statsd.local_addr().expect("addr").port();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let jsonl = dir.path().join("out.jsonl");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "libvirt:\n  uri: test:///default\nhttp:\n  listen: 127.0.0.1:{port}\ncollectors:\n  cpu: {{}}\n  qemu_process:\n    pid_dir: {}\n\
sinks:\n  rest: {{}}\n  prometheus: {{}}\n  statsd:\n    host: 127.0.0.1\n    port: {statsd_port}\n    interval: 1s\n  jsonl:\n    path: {}\n",
            dir.path().display(),
            jsonl.display()
        ),
    )
    .expect("config");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_custom-vadvisor"))
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("start the custom agent"),
    );
    let base = format!("http://127.0.0.1:{port}");

    let threads = wait_for("qemu.threads in REST", || {
        let v: serde_json::Value =
            serde_json::from_str(&get(&format!("{base}/api/v1.0/stats/"))?).ok()?;
        v[TEST_UUID].as_array()?.last()?["qemu"]["threads"].as_u64()
    });
    assert!(threads >= 1);

    let metrics = wait_for("vm_qemu_threads in /metrics", || {
        get(&format!("{base}/metrics")).filter(|m| m.contains("vm_qemu_threads{"))
    });
    assert!(
        metrics.contains("# TYPE vm_qemu_threads gauge"),
        "declared type rendered"
    );
    assert!(
        metrics.contains(&format!("vm_qemu_cpu_seconds_total{{uuid=\"{TEST_UUID}\"")),
        "counter rendered"
    );

    let line = wait_for("vm.<uuid>.qemu.threads in StatsD", || {
        let mut buf = [0u8; 65536];
        let n = statsd.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines()
            .find(|l| l.starts_with(&format!("vm.{TEST_UUID}.qemu.threads:")))
            .map(str::to_string)
    });
    assert!(line.ends_with("|g"), "{line}");

    let lines = wait_for("vm_qemu_threads in the example sink's file", || {
        std::fs::read_to_string(&jsonl)
            .ok()
            .filter(|t| t.contains("\"vm_qemu_threads\""))
    });
    assert!(lines
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}
