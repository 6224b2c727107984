//! Graceful shutdown, black-box: on SIGTERM the agent ends every event stream, makes its
//! last StatsD push, leaves the SQLite event history consistent and exits 0 within 5 s.
//!
//! - Against libvirt's `test:///default` driver (no daemon): rest, prometheus, events and
//!   statsd sinks (StatsD to a UDP socket of the test, `interval: 1h`: nothing is pushed
//!   before the signal), three stream clients (NDJSON, filtered NDJSON, SSE). The history
//!   holds rows seeded before the run (the test driver delivers no events to another
//!   process); after the SIGTERM, `PRAGMA integrity_check` says ok and a restarted agent
//!   serves them.
//! - Against the lab (ignored by a plain `cargo test`): SIGTERM in the middle of an event
//!   storm (a throw-away domain defined and undefined in a loop): every event an SSE
//!   client received before the end is in the history after a restart, with the same id
//!   and data, and the ids have no gap.
//!
//! The database checks use Python's `sqlite3` module (`python3`, on the machine with the
//! test peers: nodejs depends on it).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{wait_for, Agent, Next, RawStream, StreamEnd};

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

/// Runs a Python snippet with the database path as `sys.argv[1]`; its stdout.
fn python_sqlite(db: &Path, code: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n{code}"
        ))
        .arg(db)
        .output()
        .expect("run python3 (needed for the SQLite checks)");
    assert!(
        out.status.success(),
        "python3 sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn integrity_check(db: &Path) -> String {
    python_sqlite(
        db,
        "print(c.execute('PRAGMA integrity_check').fetchone()[0])",
    )
}

/// Size of the `-wal` file next to the database (None: absent).
fn wal_size(db: &Path) -> Option<u64> {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).ok().map(|m| m.len())
}

/// A stream client read on a thread: how and when its response ended.
fn watch(mut s: RawStream) -> mpsc::Receiver<(Instant, StreamEnd)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        if let Next::End(end) = s.next_line(Duration::from_millis(100)) {
            let _ = tx.send((Instant::now(), end));
            return;
        }
    });
    rx
}

/// Opens a stream and reads until its first heartbeat (it is live).
fn live_stream(agent: &Agent, path: &str, headers: &[&str], heartbeat: &str) -> RawStream {
    let mut s = RawStream::open(agent.addr(), path, headers).expect("open a stream");
    assert_eq!(
        s.read_head(Duration::from_secs(5)).expect("headers"),
        200,
        "{}",
        s.head
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.next_line(Duration::from_secs(1)) {
            Next::Line(l) if l == heartbeat => return s,
            Next::End(end) => panic!("{path}: stream ended early: {end:?}"),
            _ if Instant::now() > deadline => panic!("{path}: no heartbeat within 5 s"),
            _ => {}
        }
    }
}

#[test]
fn sigterm_ends_streams_flushes_statsd_keeps_the_history_and_exits_0_within_5_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let events_only = format!(
        "libvirt:\n  uri: test:///default\nhttp:\n  listen: {{listen}}\ncollectors:\n  events: {{}}\n\
         sinks:\n  events:\n    path: {}\n",
        db.display()
    );

    // 1. A first run creates the database; three events are then added to it.
    let mut first = Agent::start(&events_only);
    let (status, _) = first.terminate();
    assert!(status.success(), "{status:?}");
    drop(first);
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    python_sqlite(
        &db,
        &format!(
            "for i, (e, t, r) in enumerate([(2, 'Started', 'Booted'), (3, 'Suspended', 'Paused'), (4, 'Resumed', 'Unpaused')]):\n\
             \x20   c.execute('INSERT INTO events (at, uuid, name, event, detail, event_type, reason) VALUES (?, ?, ?, ?, 0, ?, ?)',\n\
             \x20             ({now_us} - 3000000 + i, '{TEST_UUID}', 'test', e, t, r))\n\
             c.commit()"
        ),
    );

    // 2. The run under test, with every sink.
    let statsd = UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let statsd_port = statsd.local_addr().expect("address").port();
    let (dgram_tx, datagrams) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok(n) = statsd.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if dgram_tx.send((Instant::now(), text)).is_err() {
                return;
            }
        }
    });
    let mut agent = Agent::start(&format!(
        "libvirt:\n  uri: test:///default\nhttp:\n  listen: {{listen}}\ncollectors:\n  cpu: {{}}\n  memory: {{}}\n  \
         events: {{}}\nsinks:\n  rest: {{}}\n  prometheus: {{}}\n  events:\n    path: {}\n    heartbeat: 200ms\n  \
         statsd:\n    enabled: true\n    host: 127.0.0.1\n    port: {statsd_port}\n    interval: 1h\n",
        db.display()
    ));
    let sampled = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        v[TEST_UUID]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(())
    });
    assert!(
        sampled.is_some(),
        "no sample of the test domain within 10 s"
    );
    let history = agent
        .get("/api/v1.0/events?all_events=true")
        .expect("history")
        .text()
        .expect("body");
    assert_eq!(history.lines().count(), 3, "seeded history: {history}");

    let streams = [
        live_stream(
            &agent,
            "/api/v1.0/events?stream=true&all_events=true",
            &[],
            "",
        ),
        live_stream(
            &agent,
            "/api/v1.0/events?stream=true&all_events=true&domain=test",
            &[],
            "",
        ),
        live_stream(
            &agent,
            "/api/v1.0/events?stream=true&all_events=true",
            &["Accept: text/event-stream"],
            ": keepalive",
        ),
    ];
    let ends: Vec<_> = streams.into_iter().map(watch).collect();
    let before_signal: Vec<String> = datagrams.try_iter().map(|(_, d)| d).collect();

    agent.send_sigterm();
    let signalled = Instant::now();
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("the agent did not exit within 15 s of SIGTERM");
    let exited = signalled.elapsed();

    let ended: Vec<(Duration, StreamEnd)> = ends
        .iter()
        .map(|rx| {
            let (at, end) = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("a stream stayed open after the exit");
            (at.duration_since(signalled), end)
        })
        .collect();
    let after_signal: Vec<(Duration, String)> =
        std::iter::from_fn(|| datagrams.recv_timeout(Duration::from_secs(1)).ok())
            .map(|(at, d)| (at.saturating_duration_since(signalled), d))
            .collect();
    let integrity = integrity_check(&db);
    println!(
        "shutdown: exit {status:?} {:.3} s after SIGTERM; streams ended at {:?}; {} StatsD datagram(s) before \
         the signal, {} after (first at {:?}, {} bytes); integrity_check: {integrity}; WAL file after exit: {:?} bytes",
        exited.as_secs_f64(),
        ended,
        before_signal.len(),
        after_signal.len(),
        after_signal.first().map(|(at, _)| *at),
        after_signal.iter().map(|(_, d)| d.len()).sum::<usize>(),
        wal_size(&db)
    );

    assert!(status.success(), "exit status {status:?}");
    assert!(exited < Duration::from_secs(5), "exit took {exited:?}");
    for (i, (at, end)) in ended.iter().enumerate() {
        assert_eq!(
            *end,
            StreamEnd::Complete,
            "stream {i} was not ended cleanly"
        );
        assert!(
            *at <= exited + Duration::from_secs(1),
            "stream {i} ended {at:?} after the signal"
        );
    }
    assert!(
        before_signal.is_empty(),
        "StatsD pushed before its interval: {before_signal:?}"
    );
    let flushed = after_signal
        .iter()
        .map(|(_, d)| d.as_str())
        .collect::<String>();
    assert!(
        flushed
            .lines()
            .any(|l| l.starts_with(&format!("vm.{TEST_UUID}."))),
        "no StatsD line of the test domain after SIGTERM: {flushed:?}"
    );
    assert_eq!(integrity, "ok");

    // 3. A restart on the same database serves the history.
    let agent = Agent::start(&events_only);
    let body = agent
        .get("/api/v1.0/events?all_events=true")
        .expect("history")
        .text()
        .expect("body");
    let got: Vec<(String, String)> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["event_type"].as_str().unwrap_or("").into(),
                v["domain_id"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["Started", "Suspended", "Resumed"]
        .iter()
        .map(|t| (t.to_string(), TEST_UUID.to_string()))
        .collect();
    assert_eq!(got, want, "history after the restart: {body}");
}

// ------------------------------------------------------------------ during a storm

const LAB_CACHE: &str = "/var/lib/vadvisor-lab/cache";
const SCRATCH: &str = "vadv-shutdown-storm";
const SCRATCH_UUID: &str = "5ad0a0b0-0000-4000-8000-00000000e0ae";

use common::virsh_quiet;

/// Undefines the scratch domain when the test ends, passed or not.
struct Undefine;

impl Drop for Undefine {
    fn drop(&mut self) {
        virsh_quiet(&["undefine", SCRATCH]);
    }
}

/// SSE `id:` and `data:` of each event, read until the stream ends.
fn sse_events(mut s: RawStream, timeout_idle: Duration) -> (Vec<(i64, String)>, Option<StreamEnd>) {
    let mut out = Vec::new();
    let mut id = None;
    loop {
        match s.next_line(timeout_idle) {
            Next::Line(l) => {
                if let Some(v) = l.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(data) = l.strip_prefix("data: ") {
                    out.push((
                        id.take().expect("an SSE event without id"),
                        data.to_string(),
                    ));
                }
            }
            Next::End(end) => return (out, Some(end)),
            Next::Idle => return (out, None),
        }
    }
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn sigterm_during_an_event_storm_keeps_every_delivered_event_in_the_history() {
    assert!(
        Path::new(LAB_CACHE).join("vmlinuz").exists(),
        "{LAB_CACHE}/vmlinuz missing: run `scripts/lab.sh up` first"
    );
    let _undefine = Undefine;
    virsh_quiet(&["undefine", SCRATCH]);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let xml = dir.path().join("scratch.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{SCRATCH}</name><uuid>{SCRATCH_UUID}</uuid><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><kernel>{LAB_CACHE}/vmlinuz</kernel></os>\
             <devices><memballoon model='none'/></devices></domain>"
        ),
    )
    .expect("write the domain XML");
    let config = format!(
        "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {{listen}}\ncollectors:\n  events: {{}}\n\
         sinks:\n  events:\n    path: {}\n    client_buffer: 65536\n",
        db.display()
    );
    let mut agent = Agent::start(&config);
    // All domains (other lab activity included): the ids must be consecutive.
    let path = "/api/v1.0/events?stream=true&all_events=true";
    let mut sse =
        RawStream::open(agent.addr(), path, &["Accept: text/event-stream"]).expect("open");
    assert_eq!(sse.read_head(Duration::from_secs(5)).expect("headers"), 200);
    let reader = std::thread::spawn(move || sse_events(sse, Duration::from_secs(10)));

    // The storm: define/undefine rounds of 50 cycles until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (stop, cycles, xml) = (stop.clone(), cycles.clone(), xml.clone());
        std::thread::spawn(move || {
            let one = format!("define {}; undefine {SCRATCH};", xml.display());
            while !stop.load(Ordering::Relaxed) {
                let ok = Command::new("virsh")
                    .args(["-c", "qemu:///system", &one.repeat(50)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "virsh define/undefine failed");
                cycles.fetch_add(50, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    agent.send_sigterm();
    let signalled = Instant::now();
    let generated_at_signal = 2 * cycles.load(Ordering::Relaxed);
    let status = agent.wait_exit(Duration::from_secs(15));
    let exited = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    storm.join().expect("storm thread");
    let (delivered, end) = reader.join().expect("reader");
    drop(agent);
    let integrity = integrity_check(&db);

    // Restart: replay the whole history with its ids (SSE, Last-Event-ID: 0).
    let agent = Agent::start(&config);
    let replay = RawStream::open(
        agent.addr(),
        path,
        &["Accept: text/event-stream", "Last-Event-ID: 0"],
    )
    .expect("open");
    let (stored, _) = sse_events(replay, Duration::from_secs(2));
    println!(
        "storm: SIGTERM after about {generated_at_signal} events of the storm; exit {status:?} after {:.3} s; \
         the SSE client got {} events and then {end:?}; {} stored; integrity_check: {integrity}",
        exited.as_secs_f64(),
        delivered.len(),
        stored.len()
    );

    let status = status.expect("the agent did not exit within 15 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(exited < Duration::from_secs(5), "exit took {exited:?}");
    assert_eq!(
        end,
        Some(StreamEnd::Complete),
        "the stream was not ended cleanly"
    );
    assert_eq!(integrity, "ok");
    assert!(
        !delivered.is_empty(),
        "no event was delivered during the storm"
    );
    // Stored before published: what a client got is in the history, same id and data.
    assert!(
        stored.len() >= delivered.len() && stored[..delivered.len()] == delivered[..],
        "the history does not start with the {} delivered events",
        delivered.len()
    );
    // One transaction per batch: no gap, no half-written batch.
    let first = stored[0].0;
    for (i, (id, _)) in stored.iter().enumerate() {
        assert_eq!(
            *id,
            first + i as i64,
            "gap in the stored ids at position {i}"
        );
    }
}
