//! Slow and idle connections cannot exhaust the agent. The agent runs under
//! `ulimit -n 1024`; the test holds 1,100 connections that send a partial request
//! header, while a normal client keeps asking for /metrics and /healthz. The agent's
//! descriptor count (/proc/PID/fd) must stay below its limit, every slow connection must
//! be closed within the header timeout, normal requests must keep being answered, and
//! the limit hits must be counted and logged once. The TLS port gets the same
//! treatment with silent, half-handshaken and handshaken-then-idle connections.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, free_port, wait_for};

const SLOW: usize = 1100;
/// The floods run one at a time: together they would measure the machine, not the agent.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const HEADER_TIMEOUT: Duration = Duration::from_secs(4);
/// The agent's clock starts at accept (a connection may wait in the listen queue
/// first) and its reaper runs every 100 ms; allow for a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(2000);

struct Agent {
    child: Child,
    addr: String,
    log: tempfile::NamedTempFile,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

/// Starts the agent under `ulimit -n 1024` with `extra` in its `http` section.
fn start(extra: &str, web_config: Option<&std::path::Path>) -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let web = web_config
        .map(|p| format!("  web_config_file: {}\n", p.display()))
        .unwrap_or_default();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "libvirt:\n  uri: test:///default\nhttp:\n  listen: {addr}\n  header_timeout: {}ms\n{extra}{web}\
             collectors:\n  cpu: {{}}\nsinks:\n  rest: {{}}\n  prometheus: {{}}\n",
            HEADER_TIMEOUT.as_millis()
        ),
    )
    .expect("config");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--config")
        .arg(&config)
        .env("VADVISOR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("start vadvisor");
    let agent = Agent {
        child,
        addr,
        log,
        _dir: dir,
    };
    // Once it answers, `sh` has exec'd the agent with the lowered limit.
    let base = match web_config {
        None => format!("http://{}", agent.addr),
        Some(_) => format!("https://{}", agent.addr),
    };
    wait_for(Duration::from_secs(20), || {
        let up = match web_config {
            None => client().get(format!("{base}/healthz")).send().is_ok(),
            // Any TLS answer (no certificate check: only the agent being up matters).
            Some(_) => Command::new("curl")
                .args([
                    "-sk",
                    "-m",
                    "2",
                    "-o",
                    "/dev/null",
                    &format!("{base}/healthz"),
                ])
                .status()
                .is_ok_and(|s| s.success()),
        };
        up.then_some(())
    })
    .expect("agent up");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", agent.child.id())).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile line");
    assert!(
        nofile.split_whitespace().nth(3) == Some("1024"),
        "not under ulimit -n 1024: {nofile}"
    );
    agent
}

/// Lets this test process hold more than 1,100 sockets: raises its own soft limit
/// (up to 8192, at most the hard limit) with util-linux' `prlimit`.
fn raise_own_fd_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .map(|h| {
            if h == "unlimited" {
                u64::MAX
            } else {
                h.parse().unwrap_or(0)
            }
        })
        .unwrap_or(0);
    let want = hard.min(8192);
    assert!(
        want >= 1300,
        "this test needs to hold 1,100 sockets but the hard open-file limit is {hard}"
    );
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={want}:"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "cannot raise this test's open-file limit");
}

/// Samples the agent's descriptor count until `stop`; returns the maximum.
fn watch_fds(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                max = max.max(d.count());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        max
    })
}

/// Figures of the normal client that runs during the flood.
#[derive(Debug, Default)]
struct Normal {
    ok: usize,
    failed: Vec<String>,
    slowest: Duration,
}

/// Asks for /metrics and /healthz every 100 ms until `stop`.
fn normal_client(
    base: String,
    stop: Arc<AtomicBool>,
    curl_tls: Option<String>,
) -> std::thread::JoinHandle<Normal> {
    std::thread::spawn(move || {
        let mut figures = Normal::default();
        let http = client();
        while !stop.load(Ordering::Relaxed) {
            for path in ["/metrics", "/healthz"] {
                let started = Instant::now();
                let ok = match &curl_tls {
                    None => http
                        .get(format!("{base}{path}"))
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.bytes().map(|_| ()))
                        .map_err(|e| e.to_string()),
                    Some(ca) => curl_status(ca, &format!("{base}{path}")),
                };
                figures.slowest = figures.slowest.max(started.elapsed());
                match ok {
                    Ok(_) => figures.ok += 1,
                    Err(e) => figures.failed.push(format!("{path}: {e}")),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        figures
    })
}

fn curl_status(ca: &str, url: &str) -> Result<(), String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca,
            url,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "200" => Ok(()),
        other => Err(format!("status {other}")),
    }
}

/// Non-blocking sockets held open by the test, and how long each lived until the agent
/// closed it (measured from its last byte sent).
#[derive(Default)]
struct Held {
    open: Vec<(TcpStream, Instant)>,
    lifetimes: Vec<Duration>,
}

impl Held {
    fn add(&mut self, s: TcpStream) {
        s.set_nonblocking(true).expect("nonblocking");
        self.open.push((s, Instant::now()));
    }

    /// One pass: notes the sockets the agent closed.
    fn poll(&mut self) {
        let mut buf = [0u8; 4096];
        let lifetimes = &mut self.lifetimes;
        self.open.retain_mut(|(s, opened)| {
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue, // an error response: read on to the end
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if closed {
                lifetimes.push(opened.elapsed());
            }
            !closed
        });
    }

    /// Polls until every socket is closed; panics after `limit`.
    fn wait_all_closed(mut self, limit: Duration) -> Vec<Duration> {
        let started = Instant::now();
        loop {
            self.poll();
            if self.open.is_empty() {
                return self.lifetimes;
            }
            assert!(
                started.elapsed() < limit,
                "{} connections still open after {limit:?}",
                self.open.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn slow_connections_cannot_exhaust_the_agent() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_own_fd_limit();
    let agent = start("", None);
    let base = format!("http://{}", agent.addr);
    wait_for(Duration::from_secs(20), || {
        client().get(format!("{base}/healthz")).send().ok()
    })
    .expect("agent up");
    let idle_fds = agent.fds();

    let stop = Arc::new(AtomicBool::new(false));
    let fds = watch_fds(agent.child.id(), stop.clone());
    let normal = normal_client(base.clone(), stop.clone(), None);

    let flood = Instant::now();
    let mut held = Held::default();
    let mut slowest_connect = Duration::ZERO;
    for i in 0..SLOW {
        let started = Instant::now();
        let mut s = TcpStream::connect(&agent.addr).expect("connect");
        slowest_connect = slowest_connect.max(started.elapsed());
        // A partial request header that never ends.
        let _ =
            s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: {i}\r\n").as_bytes());
        held.add(s);
        if i % 16 == 0 {
            held.poll();
        }
    }
    let opened_in = flood.elapsed();
    let lifetimes = held.wait_all_closed(HEADER_TIMEOUT + SLACK + Duration::from_secs(5));
    let all_closed_after = flood.elapsed();
    // The normal client keeps going a little after the flood.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let max_fds = fds.join().expect("fd watcher");
    let normal = normal.join().expect("normal client");
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("metrics after the flood");
    let shed = metric(
        &metrics,
        "vadvisor_http_limit_hits_total{limit=\"connections_shed\"}",
    );
    let timed_out = metric(
        &metrics,
        "vadvisor_http_limit_hits_total{limit=\"header_timeout\"}",
    );
    let log = agent.log();
    let limit_lines = log.matches("HTTP connection limit reached").count();
    let timeout_lines = log
        .matches("closing HTTP connections that sent no complete request header in time")
        .count();
    eprintln!(
        "figures: {SLOW} slow connections opened in {opened_in:?} (slowest connect {slowest_connect:?}); agent fds idle {idle_fds}, max {max_fds} (limit 1024); \
         longest slow connection lifetime {longest:?} (header_timeout {HEADER_TIMEOUT:?}), \
         all closed {all_closed_after:?} after the flood began; normal client {} ok / {} failed, slowest {:?}; \
         metrics shed={shed} header_timeout={timed_out}; log lines limit={limit_lines} timeout={timeout_lines}",
        normal.ok,
        normal.failed.len(),
        normal.slowest,
    );
    assert!(max_fds < 1000, "agent used {max_fds} descriptors of 1024");
    assert!(
        longest <= HEADER_TIMEOUT + SLACK,
        "a slow connection stayed open {longest:?}"
    );
    assert!(
        normal.failed.is_empty(),
        "normal requests failed during the flood: {:?}",
        &normal.failed[..normal.failed.len().min(5)]
    );
    assert!(normal.ok >= 10, "too few normal requests: {}", normal.ok);
    assert!(shed >= (SLOW - 512) as f64 * 0.9, "shed counter {shed}");
    assert!(timed_out >= 1.0, "header_timeout counter {timed_out}");
    assert_eq!(limit_lines, 1, "one log line per episode:\n{log}");
    assert_eq!(timeout_lines, 1, "one log line per episode:\n{log}");
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let agent = start("  idle_timeout: 2s\n", None);
    let base = format!("http://{}", agent.addr);
    wait_for(Duration::from_secs(20), || {
        client().get(format!("{base}/healthz")).send().ok()
    })
    .expect("agent up");
    let mut s = TcpStream::connect(&agent.addr).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 8192];
    let n = s.read(&mut buf).expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    // A keep-alive connection, idle: closed after idle_timeout (not header_timeout).
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break answered.elapsed(),
            Ok(_) => {}
        }
    };
    eprintln!("figures: idle keep-alive connection closed after {closed:?} (idle_timeout 2s)");
    assert!(
        closed >= Duration::from_millis(1900) && closed <= Duration::from_secs(2) + SLACK,
        "{closed:?}"
    );
}

#[test]
fn slow_and_idle_tls_connections_are_closed_too() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_own_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("server.key"))
        .arg("-out")
        .arg(dir.path().join("server.crt"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .expect("web config");
    let agent = start("", Some(&web));
    let ca = dir.path().join("server.crt").display().to_string();
    let base = format!("https://{}", agent.addr);
    wait_for(Duration::from_secs(20), || {
        curl_status(&ca, &format!("{base}/healthz")).ok()
    })
    .expect("agent up over TLS");

    let stop = Arc::new(AtomicBool::new(false));
    let fds = watch_fds(agent.child.id(), stop.clone());
    let normal = normal_client(base.clone(), stop.clone(), Some(ca.clone()));
    let mut held = Held::default();
    for i in 0..SLOW {
        let mut s = TcpStream::connect(&agent.addr).expect("connect");
        if i % 2 == 0 {
            // The start of a TLS record that never completes.
            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        }
        held.add(s);
        if i % 16 == 0 {
            held.poll();
        }
    }
    // Handshaken, then silent: `openssl s_client` completes the handshake and waits on
    // its standard input (kept open, never written) until the agent closes.
    let idle_clients: Vec<_> = (0..20)
        .map(|_| {
            let (addr, ca) = (agent.addr.clone(), ca.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut child = Command::new("openssl")
                    .args(["s_client", "-connect", &addr, "-brief", "-CAfile", &ca])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("openssl s_client");
                let _stdin = child.stdin.take();
                let mut err = String::new();
                let _ = child
                    .stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut err);
                let _ = child.wait();
                (started.elapsed(), err.contains("CONNECTION ESTABLISHED"))
            })
        })
        .collect();
    let lifetimes = held.wait_all_closed(HEADER_TIMEOUT + SLACK + Duration::from_secs(5));
    let idle: Vec<(Duration, bool)> = idle_clients
        .into_iter()
        .map(|t| t.join().expect("s_client thread"))
        .collect();
    assert!(
        idle.iter().all(|(_, handshaken)| *handshaken),
        "every s_client completed its handshake"
    );
    let longest_idle = idle.iter().map(|(d, _)| *d).max().unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let max_fds = fds.join().expect("fds");
    let normal = normal.join().expect("normal");
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "figures (TLS): {SLOW} silent/partial-handshake connections, longest lifetime {longest:?}; \
         20 handshaken silent connections closed within {longest_idle:?}; agent fds max {max_fds}; \
         normal client {} ok / {} failed, slowest {:?}",
        normal.ok,
        normal.failed.len(),
        normal.slowest
    );
    assert!(max_fds < 1000, "agent used {max_fds} descriptors");
    assert!(longest <= HEADER_TIMEOUT + SLACK, "{longest:?}");
    assert!(
        longest_idle <= HEADER_TIMEOUT + SLACK + Duration::from_secs(1),
        "{longest_idle:?}"
    );
    assert!(
        normal.failed.is_empty(),
        "{:?}",
        &normal.failed[..normal.failed.len().min(5)]
    );
    assert!(normal.ok >= 4);
}
