//! Black-box tests of the Docker image (`Dockerfile`), run with podman exactly as vAdvisor's
//! README runs its image: `--volume=/var/run/libvirt/libvirt-sock-ro:…:Z --name vadvisor
//! --publish 8181:8181 --detach=true IMAGE [ARGS]`, plus `--network host`, against the
//! lab's libvirtd.
//!
//! Ignored by a plain `cargo test`. They need the image and the lab:
//!
//! ```sh
//! scripts/container-lab.sh setup && scripts/container-lab.sh build   # localhost/vadvisor:latest
//! scripts/lab.sh up 3
//! cargo test --test container -- --include-ignored
//! ```
//!
//! podman is called with the container lab's config (`VADVISOR_CLAB`, default
//! /var/tmp/vadvisor-clab) unless CONTAINERS_STORAGE_CONF/CONTAINERS_CONF are set. The
//! container binds port 8181 on the host, so the tests run one at a time.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{client, virsh, wait_for};

const NAME: &str = "vadvisor";
const PORT: u16 = 8181;
const SOCK: &str = "/var/run/libvirt/libvirt-sock-ro";
const BASE: &str = "http://127.0.0.1:8181";

/// One container named `vadvisor` on port 8181 at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn image() -> String {
    std::env::var("VADVISOR_IMAGE").unwrap_or_else(|_| "localhost/vadvisor:latest".into())
}

fn podman_cmd() -> Command {
    let clab = std::env::var("VADVISOR_CLAB").unwrap_or_else(|_| "/var/tmp/vadvisor-clab".into());
    let mut cmd = Command::new("podman");
    if std::env::var_os("CONTAINERS_STORAGE_CONF").is_none() {
        cmd.env("CONTAINERS_STORAGE_CONF", format!("{clab}/storage.conf"));
    }
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        cmd.env("CONTAINERS_CONF", format!("{clab}/containers.conf"));
    }
    cmd
}

fn podman(args: &[&str]) -> Output {
    podman_cmd()
        .args(args)
        .output()
        .expect("run podman (install it with scripts/container-lab.sh setup)")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The running container; removed on drop, whatever happened.
struct Container;

impl Container {
    /// vAdvisor's `docker run` line (unchanged, with `--network host`), `args` after the
    /// image name.
    fn start(args: &[&str]) -> Container {
        let image = image();
        let exists = podman(&["image", "exists", &image]);
        assert!(
            exists.status.success(),
            "no image {image}: run scripts/container-lab.sh setup && scripts/container-lab.sh build"
        );
        assert!(
            std::path::Path::new(SOCK).exists(),
            "no {SOCK}: start the lab (scripts/lab.sh up)"
        );
        // A container left over by an interrupted run.
        let _ = podman(&["rm", "-f", "-t", "0", NAME]);
        if let Err(e) = TcpListener::bind(("0.0.0.0", PORT)) {
            panic!("port {PORT} is not free ({e}): stop the agent listening there (e.g. scripts/container-lab.sh stop)");
        }
        let volume = format!("--volume={SOCK}:{SOCK}:Z");
        let publish = format!("{PORT}:{PORT}");
        let mut line = vec![
            "run",
            volume.as_str(),
            "--name",
            NAME,
            "--publish",
            publish.as_str(),
            "--detach=true",
            "--network",
            "host",
        ];
        line.push(&image);
        line.extend_from_slice(args);
        let out = podman(&line);
        assert!(out.status.success(), "podman {line:?}: {}", stderr(&out));
        Container
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", NAME]);
        format!("{}{}", stdout(&out), stderr(&out))
    }

    fn inspect(&self, format: &str) -> String {
        let out = podman(&["inspect", "--format", format, NAME]);
        assert!(
            out.status.success(),
            "podman inspect {format}: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Waits for `/healthz` 200, panicking with the container's log otherwise.
    fn wait_healthy_http(&self) {
        let ok = wait_for(Duration::from_secs(20), || {
            client()
                .get(format!("{BASE}/healthz"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        assert!(
            ok.is_some(),
            "no /healthz 200 on :{PORT} within 20 s (running: {}); log:\n{}",
            self.running(),
            self.logs()
        );
    }

    /// `podman stop -t 10`: returns how long it took and the agent's exit code.
    fn stop(&self) -> (Duration, String) {
        let start = Instant::now();
        let out = podman(&["stop", "-t", "10", NAME]);
        let took = start.elapsed();
        assert!(out.status.success(), "podman stop: {}", stderr(&out));
        (took, self.inspect("{{.State.ExitCode}}"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", NAME]);
    }
}

fn running_uuids() -> Vec<String> {
    virsh(&["list", "--uuid", "--state-running"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Whether the default config (config.example.yaml, what the image uses) has an enabled
/// `prometheus` sink instance (`prometheus` or `prometheus/<name>` under `sinks:`).
fn default_config_has_prometheus_sink() -> bool {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .expect("read config.example.yaml");
    let mut in_sinks = false;
    let mut in_prometheus = false;
    let mut found = false;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim_end();
        if code.trim().is_empty() {
            continue;
        }
        if !code.starts_with(' ') {
            in_sinks = code.starts_with("sinks:");
            in_prometheus = false;
            continue;
        }
        if !in_sinks {
            continue;
        }
        let indent = code.len() - code.trim_start().len();
        let key = code.trim_start();
        if indent == 2 {
            in_prometheus = key.starts_with("prometheus:") || key.starts_with("prometheus/");
            found |= in_prometheus && !key.contains("enabled: false");
        } else if in_prometheus && key.replace(' ', "") == "enabled:false" {
            found = false;
            in_prometheus = false;
        }
    }
    found
}

#[test]
#[ignore = "needs podman: scripts/container-lab.sh setup"]
fn vadvisor_run_line_serves_every_running_vm_and_stops_cleanly() {
    let _serial = serial();
    assert!(!common::lab_guests().is_empty());
    let container = Container::start(&[]);
    container.wait_healthy_http();

    // Every running domain (taken afresh on each try: other tests may start or stop
    // guests) is in the history within 15 s.
    let mut missing = Vec::new();
    let complete = wait_for(Duration::from_secs(15), || {
        let stats: serde_json::Value = client()
            .get(format!("{BASE}/api/v1.0/stats/"))
            .send()
            .ok()?
            .json()
            .ok()?;
        missing = running_uuids()
            .into_iter()
            .filter(|u| stats.get(u).is_none())
            .collect();
        missing.is_empty().then_some(())
    });
    assert!(
        complete.is_some(),
        "/api/v1.0/stats/ lacks running domains {missing:?}; log:\n{}",
        container.logs()
    );

    let metrics = || {
        client()
            .get(format!("{BASE}/metrics"))
            .send()
            .ok()
            .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    };
    if default_config_has_prometheus_sink() {
        let up = wait_for(Duration::from_secs(15), || {
            metrics().filter(|(s, body)| *s == 200 && body.contains("vm_up"))
        });
        assert!(
            up.is_some(),
            "config.example.yaml has a prometheus sink but /metrics has no vm_up within 15 s (last: {:?}); \
             is the image older than the tree? (scripts/container-lab.sh build)",
            metrics().map(|(s, _)| s)
        );
    } else {
        let status = metrics().map(|(s, _)| s);
        eprintln!("note: config.example.yaml has no prometheus sink yet; /metrics answered {status:?}, vm_up not checked");
    }

    let (took, code) = container.stop();
    assert!(
        took < Duration::from_secs(5),
        "podman stop took {took:?}; log:\n{}",
        container.logs()
    );
    assert_eq!(
        code,
        "0",
        "exit code after podman stop; log:\n{}",
        container.logs()
    );
}

#[test]
#[ignore = "needs podman: scripts/container-lab.sh setup"]
fn statsd_flags_after_the_image_name_reach_the_agent() {
    let _serial = serial();
    assert!(!common::lab_guests().is_empty());
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let port = udp.local_addr().expect("local addr").port().to_string();
    let args = [
        "--statsd-host",
        "127.0.0.1",
        "--statsd-port",
        port.as_str(),
        "--statsd-interval",
        "1",
    ];

    // An agent without the statsd sink type must refuse the flag with a clear message.
    let probe = podman(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--no-healthcheck",
        &image(),
        args[0],
        args[1],
        "--check-config",
        "/etc/vadvisor/config.yaml",
    ]);
    if !probe.status.success() {
        let err = stderr(&probe);
        assert_eq!(
            probe.status.code(),
            Some(2),
            "--statsd-host --check-config: {err}"
        );
        assert!(
            err.contains("statsd"),
            "the error does not name the statsd sink: {err}"
        );
        eprintln!("note: the image has no statsd sink yet; --statsd-host is refused with:\n{err}");
        return;
    }

    let container = Container::start(&args);
    container.wait_healthy_http();
    let mut buf = [0u8; 65536];
    let mut seen = Vec::new();
    let line = wait_for(Duration::from_secs(10), || {
        let (n, _) = udp.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let hit = text
            .lines()
            .find(|l| l.starts_with("vm."))
            .map(String::from);
        if seen.len() < 5 {
            seen.push(text);
        }
        hit
    });
    assert!(
        line.is_some(),
        "no StatsD line starting with `vm.` on 127.0.0.1:{port} within 10 s (got {seen:?}); log:\n{}",
        container.logs()
    );
    let (took, code) = container.stop();
    assert!(took < Duration::from_secs(5), "podman stop took {took:?}");
    assert_eq!(
        code,
        "0",
        "exit code after podman stop; log:\n{}",
        container.logs()
    );
}

#[test]
#[ignore = "needs podman: scripts/container-lab.sh setup"]
fn image_has_healthcheck_labels_and_default_config_and_reports_healthy() {
    let _serial = serial();
    let container = Container::start(&[]);

    let healthcheck = container.inspect("{{json .Config.Healthcheck}}");
    assert!(
        healthcheck.contains(r#""/usr/local/bin/vadvisor","--healthcheck""#),
        "HEALTHCHECK: {healthcheck}"
    );
    assert_eq!(
        container.inspect(r#"{{index .Config.Labels "io.cadvisor.metric.prometheus-vadvisor"}}"#),
        "/var/vadvisor/cadvisor_config.json"
    );
    assert_eq!(
        container.inspect(r#"{{index .Config.Labels "org.opencontainers.image.licenses"}}"#),
        "GPL-3.0-or-later"
    );
    let image_config = podman(&["image", "inspect", "--format", "{{json .Config}}", &image()]);
    let image_config: serde_json::Value =
        serde_json::from_slice(&image_config.stdout).expect("image config JSON");
    assert_eq!(
        image_config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/vadvisor"]),
        "{image_config}"
    );
    assert_eq!(image_config["StopSignal"], "SIGTERM", "{image_config}");
    assert!(
        image_config["ExposedPorts"].get("8181/tcp").is_some(),
        "{image_config}"
    );

    let exec = |cmd: &[&str]| {
        let mut line = vec!["exec", NAME];
        line.extend_from_slice(cmd);
        podman(&line)
    };
    let cadvisor = exec(&["cat", "/var/vadvisor/cadvisor_config.json"]);
    let cadvisor: serde_json::Value =
        serde_json::from_slice(&cadvisor.stdout).expect("cadvisor_config.json is JSON");
    assert_eq!(
        cadvisor,
        serde_json::json!({"endpoint": "http://localhost:8181/metrics"})
    );
    let baked = stdout(&exec(&["cat", "/etc/vadvisor/config.yaml"]));
    let tree = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .expect("read");
    assert_eq!(
        baked,
        tree.trim(),
        "/etc/vadvisor/config.yaml differs from config.example.yaml: rebuild the image"
    );

    container.wait_healthy_http();
    let healthy = wait_for(Duration::from_secs(15), || {
        podman(&["healthcheck", "run", NAME])
            .status
            .success()
            .then_some(())
    });
    assert!(
        healthy.is_some(),
        "podman healthcheck run {NAME} did not pass within 15 s; log:\n{}",
        container.logs()
    );
    assert_eq!(container.inspect("{{.State.Health.Status}}"), "healthy");
    // The probe fails (exit 1) where nothing answers.
    let down = exec(&[
        "/usr/local/bin/vadvisor",
        "--healthcheck",
        "http://127.0.0.1:1/healthz",
    ]);
    assert_eq!(
        down.status.code(),
        Some(1),
        "--healthcheck against a closed port: {}",
        stderr(&down)
    );
}
