//! Reloading the pipeline file without a restart, against libvirt's `test:///default`
//! driver (no daemon): SIGHUP adds a StatsD sink and changes a collector's interval
//! while the REST history survives; a broken file changes nothing; `POST /-/reload`
//! works only when `http.enable_reload` is on.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{client, free_port, sample_times, wait_for, Next, RawStream};

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

struct Running {
    child: Child,
    base: String,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(config: &str) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let listen = format!("127.0.0.1:{}", free_port());
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config.replace("{listen}", &listen)).expect("write config");
        let log = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .arg("--config")
            .arg(&path)
            .env("VADVISOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start vadvisor");
        let agent = Running {
            child,
            base: format!("http://{listen}"),
            config: path,
            log,
            _dir: dir,
        };
        let up = wait_for(Duration::from_secs(20), || {
            client()
                .get(format!("{}/healthz", agent.base))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        assert!(up.is_some(), "vadvisor did not start:\n{}", agent.log());
        agent
    }

    fn rewrite(&self, config: &str) {
        let listen = self.base.trim_start_matches("http://");
        std::fs::write(&self.config, config.replace("{listen}", listen)).expect("rewrite");
    }

    fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -HUP");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stats(&self) -> serde_json::Value {
        client()
            .get(format!("{}/api/v1.0/stats/", self.base))
            .send()
            .and_then(|r| r.json())
            .expect("GET /api/v1.0/stats/")
    }

    fn times(&self) -> Vec<SystemTime> {
        sample_times(&self.stats(), TEST_UUID)
    }

    fn still_running(&mut self) {
        assert!(
            self.child.try_wait().expect("try_wait").is_none(),
            "the agent exited:\n{}",
            self.log()
        );
    }

    fn wait_log(&self, needle: &str) {
        let found = wait_for(Duration::from_secs(10), || {
            self.log().contains(needle).then_some(())
        });
        assert!(found.is_some(), "no `{needle}` in the log:\n{}", self.log());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(interval: &str, statsd: Option<u16>) -> String {
    let mut c = format!(
        "libvirt:\n  uri: test:///default\nhttp:\n  listen: {{listen}}\n  enable_reload: true\n\
         collectors:\n  cpu:\n    interval: {interval}\nsinks:\n  rest:\n    retention: 10m\n    max_samples: 1000\n  \
         events:\n    path: ':memory:'\n    heartbeat: 300ms\n"
    );
    if let Some(port) = statsd {
        c.push_str(&format!(
            "  statsd:\n    host: 127.0.0.1\n    port: {port}\n    interval: 1s\n"
        ));
    }
    c
}

/// Samples per second over the last `window` of `times`.
fn rate(times: &[SystemTime], window: Duration) -> f64 {
    let Some(&last) = times.last() else {
        return 0.0;
    };
    let n = times
        .iter()
        .filter(|t| last.duration_since(**t).is_ok_and(|d| d <= window))
        .count();
    n as f64 / window.as_secs_f64()
}

#[test]
fn sighup_adds_a_sink_and_changes_an_interval_keeping_the_rest_history() {
    let statsd = UdpSocket::bind("127.0.0.1:0").expect("udp");
    statsd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let port = statsd.local_addr().expect("addr").port();
    let mut agent = Running::start(&config("1s", None));
    let before = wait_for(Duration::from_secs(15), || {
        let t = agent.times();
        (t.len() >= 3).then_some(t)
    })
    .expect("three samples at 1 s");
    let first = before[0];
    let addr = agent.base.trim_start_matches("http://").to_string();
    let mut stream = RawStream::open(&addr, "/api/v1.0/events?stream=true", &[]).expect("stream");
    assert_eq!(stream.read_head(Duration::from_secs(5)).expect("head"), 200);

    // Add a StatsD sink and poll every 200 ms.
    agent.rewrite(&config("200ms", Some(port)));
    agent.hangup();
    agent.wait_log("configuration reloaded");
    agent.still_running();
    let mut buf = [0u8; 65_536];
    let started = Instant::now();
    let mut datagram = None;
    while started.elapsed() < Duration::from_secs(10) && datagram.is_none() {
        if let Ok(n) = statsd.recv(&mut buf) {
            datagram = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let datagram = datagram.expect("the new StatsD sink sends within 10 s");
    assert!(datagram.contains(TEST_UUID), "{datagram}");
    std::thread::sleep(Duration::from_secs(2));
    let after = agent.times();
    assert_eq!(
        after.first(),
        Some(&first),
        "the REST history survived the reload"
    );
    let r = rate(&after, Duration::from_millis(1500));
    assert!(
        r >= 3.0,
        "the new 200 ms interval applies: {r:.1} samples/s"
    );
    // The unchanged events sink kept its open stream: heartbeats still arrive.
    let mut lines = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        match stream.next_line(Duration::from_millis(500)) {
            Next::Line(_) => lines += 1,
            Next::End(end) => panic!("the event stream ended at the reload: {end:?}"),
            Next::Idle => {}
        }
    }
    assert!(
        lines > 0,
        "heartbeats on the stream opened before the reload"
    );

    // A broken file changes nothing: same interval, StatsD still sending.
    agent.rewrite("collectors:\n  cpu:\n    interval: soon\n  disk: {}\n");
    agent.hangup();
    agent.wait_log("configuration reload failed");
    let log = agent.log();
    assert!(
        log.contains(&format!("{}:3:15", agent.config.display())),
        "the error is located:\n{log}"
    );
    agent.still_running();
    std::thread::sleep(Duration::from_secs(1));
    let still = agent.times();
    assert_eq!(still.first(), Some(&first));
    assert!(rate(&still, Duration::from_millis(1500)) >= 3.0);
    while statsd.recv(&mut buf).is_ok() {}
    let t = Instant::now();
    let mut more = false;
    while t.elapsed() < Duration::from_secs(3) && !more {
        more = statsd.recv(&mut buf).is_ok();
    }
    assert!(more, "the StatsD sink kept sending");
}

fn post_reload(base: &str) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("{base}/-/reload"))
        .send()
        .expect("POST /-/reload");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

#[test]
fn post_reload_applies_when_enabled_and_is_refused_otherwise() {
    let agent = Running::start(&config("1s", None));
    let (status, body) = post_reload(&agent.base);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    // A broken file: 400 with the located errors, nothing changes.
    agent.rewrite("sinks:\n  rest:\n    retention: 0s\n");
    let (status, body) = post_reload(&agent.base);
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sinks.rest.retention: must be greater than 0"),
        "{message}"
    );
    // Turning the endpoint off (by SIGHUP or by the endpoint itself) takes effect.
    agent.rewrite(&config("1s", None).replace("  enable_reload: true\n", ""));
    let (status, _) = post_reload(&agent.base);
    assert_eq!(status, 200);
    let (status, body) = post_reload(&agent.base);
    assert_eq!(status, 403, "{body}");
    assert!(!Path::new(&agent.config).to_string_lossy().is_empty());
}
