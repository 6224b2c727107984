//! Shared helpers for black-box tests: start the built `vadvisor` binary with a config,
//! talk to it over real HTTP, and look at the lab with `virsh`.
#![allow(dead_code)]

pub mod guest;
pub mod prometheus;

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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Agent {
    /// Starts the agent with `config` (YAML, `{listen}` is replaced by a free loopback
    /// address) and waits until `/healthz` answers.
    pub fn start(config: &str) -> Agent {
        Self::start_with_stderr(config, Stdio::inherit())
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
        r.json()
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// Sends SIGTERM and returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        // SAFETY-free: `kill` via the command line keeps this test crate free of unsafe.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
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
    let out = Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .expect("run virsh");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    assert!(
        !guests.is_empty(),
        "no running lab guest: run `scripts/lab.sh up` first"
    );
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

// ---- Fault injection and process figures (fault_hung_domain.rs, fault_libvirtd_restart.rs)

/// The lab guest with the highest N (`vadv-lab-N`) of `guests` (as `lab_guests` gives).
pub fn last_lab_guest(guests: &[(String, String)]) -> (String, String) {
    guests
        .iter()
        .filter_map(|(n, u)| {
            let i: u32 = n.strip_prefix("vadv-lab-")?.parse().ok()?;
            Some((i, (n.clone(), u.clone())))
        })
        .max_by_key(|(i, _)| *i)
        .map(|(_, g)| g)
        .expect("no vadv-lab-N guest")
}

/// The PID of a running guest's QEMU (libvirt's pid file).
pub fn qemu_pid(guest: &str) -> u32 {
    let path = format!("/var/run/libvirt/qemu/{guest}.pid");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `kill -<signal> <pid>` (e.g. `STOP`, `CONT`); true on success.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// `Threads:` of /proc/<pid>/status.
pub fn proc_threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no Threads: for pid {pid}"))
}

/// CPU time (user + system) a process has used, in seconds (/proc/<pid>/stat).
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name (which is in parentheses): state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

/// Whether the agent accepts `config` (`vadvisor --check-config`): probes which plugin
/// types the registry has. `{listen}` is replaced by a dummy address.
pub fn config_accepted(config: &str) -> bool {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(config.replace("{listen}", "127.0.0.1:1").as_bytes())
        .expect("write config");
    Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--check-config")
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `timestamp`s of a domain's REST history (`GET /api/v1.0/stats/`), oldest first.
pub fn sample_times(stats: &serde_json::Value, uuid: &str) -> Vec<std::time::SystemTime> {
    stats[uuid]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| humantime::parse_rfc3339(s["timestamp"].as_str()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET path` with the blocking client, body read: (status, body, time taken).
pub fn timed_get(
    client: &reqwest::blocking::Client,
    url: &str,
) -> (reqwest::StatusCode, Vec<u8>, Duration) {
    let start = Instant::now();
    let resp = client
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp
        .bytes()
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
        .to_vec();
    (status, body, start.elapsed())
}

// ---------------------------------------------------------------------------------------
// Added for the load, shutdown and read-only tests (tests/load.rs, shutdown.rs,
// read_only.rs).

impl Agent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` the agent listens on.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends SIGTERM and returns at once (see [`Agent::wait_exit`]).
    pub fn send_sigterm(&self) {
        assert!(
            send_signal(self.child.id(), "TERM"),
            "kill -TERM {}",
            self.child.id()
        );
    }

    /// Waits up to `timeout` for the process to exit: its status, or `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`, …); 0 if unreadable.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident set size of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// `virsh -c URI ARGS`, whatever its outcome (status, stdout, stderr).
pub fn virsh_at(uri: &str, args: &[&str]) -> std::process::Output {
    Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .expect("run virsh")
}

/// How a streamed response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The last (empty) chunk arrived: the server ended the response.
    Complete,
    /// The connection closed (EOF or reset) without the last chunk: the server aborted
    /// the response.
    Aborted,
}

/// What [`RawStream::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One line of the body, without its `\n`.
    Line(String),
    /// The response is over.
    End(StreamEnd),
    /// Nothing new within the timeout.
    Idle,
}

/// A raw HTTP/1.1 `GET` on a plain `TcpStream` whose chunked body is decoded as it
/// arrives — no client library that buffers the stream. [`RawStream::open`] only sends
/// the request: a client that never calls a read method never reads a byte.
pub struct RawStream {
    pub sock: std::net::TcpStream,
    /// Received bytes; those before `raw_pos` are decoded.
    raw: Vec<u8>,
    raw_pos: usize,
    /// Decoded body; bytes before `body_pos` were returned as lines.
    body: Vec<u8>,
    body_pos: usize,
    /// Data bytes left in the current chunk; `None` while a size line is expected.
    chunk_left: Option<usize>,
    end: Option<StreamEnd>,
    /// The status line and headers, once read.
    pub head: String,
    /// Body bytes decoded so far.
    pub body_bytes: u64,
}

impl RawStream {
    /// Connects to `addr` and sends `GET path` with `extra_headers` (`Name: value`).
    pub fn open(addr: &str, path: &str, extra_headers: &[&str]) -> std::io::Result<RawStream> {
        let mut sock = std::net::TcpStream::connect(addr)?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for h in extra_headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        sock.write_all(request.as_bytes())?;
        Ok(RawStream {
            sock,
            raw: Vec::new(),
            raw_pos: 0,
            body: Vec::new(),
            body_pos: 0,
            chunk_left: None,
            end: None,
            head: String::new(),
            body_bytes: 0,
        })
    }

    /// Reads the status line and headers; returns the status code. Panics unless the
    /// body is chunked (a stream).
    pub fn read_head(&mut self, timeout: Duration) -> std::io::Result<u16> {
        let deadline = Instant::now() + timeout;
        let end = loop {
            if let Some(i) = find(&self.raw[self.raw_pos..], b"\r\n\r\n") {
                break self.raw_pos + i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            if self.fill(left)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        self.head = String::from_utf8_lossy(&self.raw[self.raw_pos..end]).into_owned();
        self.raw_pos = end + 4;
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "not a chunked stream: {}",
            self.head
        );
        let status = self
            .head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(status)
    }

    /// Reads once from the socket into `raw`: bytes read (0 at EOF).
    fn fill(&mut self, timeout: Duration) -> std::io::Result<usize> {
        use std::io::Read;
        self.raw.drain(..self.raw_pos);
        self.raw_pos = 0;
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 65_536];
        let n = self.sock.read(&mut buf)?;
        self.raw.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Decodes as much of `raw` as is complete.
    fn decode(&mut self) {
        while self.end.is_none() {
            let raw = &self.raw[self.raw_pos..];
            match self.chunk_left {
                None => {
                    let Some(i) = find(raw, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&raw[..i]).into_owned();
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.raw_pos += i + 2;
                    if size == 0 {
                        self.end = Some(StreamEnd::Complete);
                    } else {
                        self.chunk_left = Some(size);
                    }
                }
                Some(0) => {
                    if raw.len() < 2 {
                        return;
                    }
                    assert_eq!(&raw[..2], b"\r\n", "chunk not followed by CRLF");
                    self.raw_pos += 2;
                    self.chunk_left = None;
                }
                Some(left) => {
                    let n = left.min(raw.len());
                    if n == 0 {
                        return;
                    }
                    self.body.extend_from_slice(&raw[..n]);
                    self.raw_pos += n;
                    self.body_bytes += n as u64;
                    self.chunk_left = Some(left - n);
                }
            }
        }
    }

    /// The next body line, the end of the response, or `Idle` after `timeout` without
    /// a complete line. Reads the head first if that was not done.
    pub fn next_line(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        if self.head.is_empty() {
            if let Err(e) = self.read_head(timeout) {
                return match e.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Next::Idle,
                    _ => Next::End(StreamEnd::Aborted),
                };
            }
        }
        loop {
            self.decode();
            if let Some(i) = self.body[self.body_pos..].iter().position(|b| *b == b'\n') {
                let line = &self.body[self.body_pos..self.body_pos + i];
                let line = String::from_utf8_lossy(line).into_owned();
                self.body_pos += i + 1;
                if self.body_pos == self.body.len() || self.body_pos > 1 << 16 {
                    self.body.drain(..self.body_pos);
                    self.body_pos = 0;
                }
                return Next::Line(line);
            }
            if let Some(end) = self.end {
                return Next::End(end);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Idle;
            }
            match self.fill(left) {
                Ok(0) => self.end = Some(StreamEnd::Aborted),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ) => {}
                Err(_) => self.end = Some(StreamEnd::Aborted),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `virsh -c qemu:///system ARGS`, ignoring the outcome (for clean-up).
pub fn virsh_quiet(args: &[&str]) {
    let _ = Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
