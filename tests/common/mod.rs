//! Shared helpers for black-box tests: start the built `vadvisor` binary with a config,
//! talk to it over real HTTP, and look at the lab with `virsh`.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    pub child: Child,
    pub base: String,
    _config: tempfile::NamedTempFile,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Agent {
    /// Starts the agent with `config` (YAML, `{listen}` is replaced by a free loopback
    /// address) and waits until `/healthz` answers.
    pub fn start(config: &str) -> Agent {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(config.replace("{listen}", &listen).as_bytes()).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .arg("--config")
            .arg(file.path())
            .env("VADVISOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vadvisor");
        let agent = Agent { child, base: format!("http://{listen}"), _config: file };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = agent.get("/healthz") {
                if r.status().is_success() {
                    return agent;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("vadvisor did not answer on {listen} within 20 s");
    }

    /// Like [`Agent::start`], with the agent's stderr (its log) going to `stderr` — e.g.
    /// a file, to count log lines.
    pub fn start_with_stderr(config: &str, stderr: Stdio) -> Agent {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(config.replace("{listen}", &listen).as_bytes())
            .expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .arg("--config")
            .arg(file.path())
            .env("VADVISOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start vadvisor");
        let agent = Agent {
            child,
            base: format!("http://{listen}"),
            _config: file,
        };
        let healthy = wait_for(Duration::from_secs(20), || {
            agent
                .get("/healthz")
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        assert!(
            healthy.is_some(),
            "vadvisor did not answer on {listen} within 20 s"
        );
        agent
    }

    pub fn get(&self, path: &str) -> reqwest::Result<reqwest::blocking::Response> {
        client().get(format!("{}{path}", self.base)).send()
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// Sends SIGTERM and returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        // SAFETY-free: `kill` via the command line keeps this test crate free of unsafe.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("vadvisor did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// `virsh -c qemu:///system ARGS` → stdout, panicking with stderr on failure.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh").arg("-c").arg("qemu:///system").args(args).output().expect("run virsh");
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Running lab guests: (name, uuid).
pub fn lab_guests() -> Vec<(String, String)> {
    let names = virsh(&["list", "--name", "--state-running"]);
    let guests: Vec<(String, String)> = names
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("vadv-lab-"))
        .map(|n| (n.to_string(), virsh(&["domuuid", n]).trim().to_string()))
        .collect();
    assert!(!guests.is_empty(), "no running lab guest: run `scripts/lab.sh up` first");
    guests
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
