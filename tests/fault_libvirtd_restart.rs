//! Black-box fault test against the lab (`scripts/lab.sh up`): libvirtd is killed
//! (`pkill -x libvirtd`; the QEMU guests keep running) and started again while the agent
//! runs. During the outage the agent stays up, says `libvirt.connected: false`, keeps
//! serving the REST history and does not busy-loop; once libvirtd answers again, fresh
//! samples follow within 2 s, and (when the `events` collector and sink exist) lifecycle
//! events are streamed again and the history kept the ones from before. Ignored by a
//! plain `cargo test`
//! (`VADVISOR_LAB=1 cargo test --test fault_libvirtd_restart -- --include-ignored`).
//!
//! One test, so the steps run in order. Guards leave libvirtd running
//! (`scripts/lab.sh start-daemon`) and the guest used for events resumed, whatever
//! happens. The measured figures are printed (for docs/reliability.md).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::{
    config_accepted, lab_guests, last_lab_guest, proc_cpu_seconds, sample_times, virsh, wait_for,
    Agent,
};

/// How long libvirtd stays down.
const OUTAGE: Duration = Duration::from_secs(5);
/// Agent CPU time allowed over the outage (no busy loop).
const OUTAGE_CPU_LIMIT: f64 = 0.3;
/// From libvirtd answering to the agent's first fresh sample, at most.
const FRESH_LIMIT: Duration = Duration::from_secs(2);

fn config(events_db: Option<&std::path::Path>) -> String {
    let mut c = String::from(
        "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    \
         interval: 1s\n",
    );
    if events_db.is_some() {
        c.push_str("  events: {}\n");
    }
    c.push_str("sinks:\n  rest: {}\n");
    if let Some(db) = events_db {
        c.push_str(&format!("  events:\n    path: {}\n", db.display()));
    }
    c
}

fn libvirtd_answers() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn libvirtd_running() -> bool {
    Command::new("pgrep")
        .args(["-x", "libvirtd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_daemon() -> std::process::Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab.sh"))
        .arg("start-daemon")
        .output()
        .expect("run scripts/lab.sh start-daemon")
}

/// Leaves libvirtd running whatever happens.
struct DaemonGuard;

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if libvirtd_answers() {
            return;
        }
        // A libvirtd that is still shutting down would make start-daemon think it runs.
        let _ = wait_for(Duration::from_secs(20), || {
            (!libvirtd_running()).then_some(())
        });
        let out = start_daemon();
        eprintln!(
            "guard: scripts/lab.sh start-daemon: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// Resumes the guest if it is left paused (starting libvirtd first if it must: it is
/// dropped before `DaemonGuard`).
struct ResumeGuard(String);

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        if !libvirtd_answers() {
            let _ = start_daemon();
        }
        let state = Command::new("virsh")
            .args(["-c", "qemu:///system", "domstate", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if state == "paused" {
            let ok = Command::new("virsh")
                .args(["-c", "qemu:///system", "resume", &self.0])
                .status()
                .is_ok_and(|s| s.success());
            eprintln!("guard: resumed {} ({ok})", self.0);
        }
    }
}

/// The NDJSON event stream of one guest, read on a thread (heartbeats skipped).
fn open_stream(agent: &Agent, guest: &str) -> mpsc::Receiver<serde_json::Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client");
    let url = format!(
        "{}/api/v1.0/events?stream=true&all_events=true&domain={guest}",
        agent.base
    );
    let resp = client.get(url).send().expect("open the event stream");
    assert_eq!(resp.status(), 200, "event stream");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `within` for an `event_type` event (others are skipped); how long it took.
fn expect_event(
    rx: &mpsc::Receiver<serde_json::Value>,
    event_type: &str,
    within: Duration,
) -> (serde_json::Value, Duration) {
    let start = Instant::now();
    let mut others = Vec::new();
    loop {
        let left = within.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(v) if v["event_type"] == event_type => return (v, start.elapsed()),
            Ok(v) => others.push(v),
            Err(_) => panic!("no {event_type} event within {within:?} (got {others:?})"),
        }
    }
}

/// `(suspend, resume)` of `guest` with their events on `rx`: the events and latencies.
fn suspend_resume(
    rx: &mpsc::Receiver<serde_json::Value>,
    guest: &str,
) -> Vec<(serde_json::Value, Duration)> {
    virsh(&["suspend", guest]);
    let s = expect_event(rx, "Suspended", Duration::from_secs(3));
    virsh(&["resume", guest]);
    let r = expect_event(rx, "Resumed", Duration::from_secs(3));
    vec![s, r]
}

/// The newest sample time over `uuids` in a REST answer.
fn newest(stats: &serde_json::Value, uuids: &[String]) -> Option<SystemTime> {
    uuids
        .iter()
        .filter_map(|u| sample_times(stats, u).last().copied())
        .max()
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (any N >= 3); kills and restarts libvirtd"]
fn the_agent_rides_out_a_libvirtd_restart() {
    assert!(libvirtd_answers(), "libvirtd must answer before the test");
    let guests = lab_guests();
    let uuids: Vec<String> = guests.iter().map(|(_, u)| u.clone()).collect();
    let (ev_guest, ev_uuid) = last_lab_guest(&guests);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let events = config_accepted(&config(Some(&dir.path().join("probe.db"))));
    println!(
        "{} lab guests; events collector+sink: {}",
        guests.len(),
        if events { "yes" } else { "not in this build" }
    );
    let mut agent = Agent::start(&config(events.then_some(db.as_path())));
    let pid = agent.child.id();
    // Declared after the agent: dropped before it, in reverse order (resume, then
    // daemon — ResumeGuard starts the daemon itself if it must).
    let _daemon = DaemonGuard;
    let _resume = ResumeGuard(ev_guest.clone());

    wait_for(Duration::from_secs(30), || {
        let v = agent.get_json("/api/v1.0/stats/");
        uuids
            .iter()
            .all(|u| sample_times(&v, u).len() >= 2)
            .then_some(())
    })
    .expect("every lab guest has 2 samples within 30 s");

    // Events before the restart.
    let stream = events.then(|| open_stream(&agent, &ev_guest));
    let before_events = stream
        .as_ref()
        .map(|rx| suspend_resume(rx, &ev_guest))
        .unwrap_or_default();

    // The REST history before the kill.
    let pre = agent.get_json("/api/v1.0/stats/");
    let pre_counts: Vec<usize> = uuids.iter().map(|u| sample_times(&pre, u).len()).collect();
    let pre_newest = newest(&pre, &uuids).expect("samples before the kill");

    // Kill libvirtd; the guests keep running.
    let t_kill = Instant::now();
    let killed = Command::new("pkill")
        .args(["-x", "libvirtd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed, "pkill -x libvirtd found no libvirtd");
    wait_for(Duration::from_secs(20), || {
        (!libvirtd_running()).then_some(())
    })
    .expect("libvirtd gone within 20 s of SIGTERM");
    let t_dead = Instant::now();
    let noticed = wait_for(Duration::from_secs(5), || {
        let h = agent.get_json("/healthz");
        (h["libvirt"]["connected"] == false).then(|| t_kill.elapsed())
    })
    .expect("/healthz says libvirt.connected: false within 5 s");

    // The outage: the agent stays up, answers, keeps the history, does not spin.
    let cpu0 = proc_cpu_seconds(pid);
    let t_out = Instant::now();
    let mut last_error = String::new();
    while t_out.elapsed() < OUTAGE {
        assert!(
            agent.child.try_wait().expect("try_wait").is_none(),
            "the agent exited during the outage"
        );
        let h = agent.get_json("/healthz");
        assert_eq!(h["status"], "ok", "{h}");
        assert_eq!(h["libvirt"]["connected"], false, "{h}");
        last_error = h["libvirt"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let v = agent.get_json("/api/v1.0/stats/");
        for (u, n) in uuids.iter().zip(&pre_counts) {
            let kept = sample_times(&v, u).len();
            assert!(kept >= *n, "{u}: history shrank from {n} to {kept} samples");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let outage_wall = t_out.elapsed();
    let cpu_outage = proc_cpu_seconds(pid) - cpu0;

    // Start libvirtd again; measure from the moment it answers.
    let starter = std::thread::spawn(start_daemon);
    let t_start = Instant::now();
    let t_up = wait_for_fast(Duration::from_secs(60), libvirtd_answers)
        .expect("libvirtd answers within 60 s of start-daemon");
    let up_after = t_up.duration_since(t_start);
    let first_fresh = wait_for_fast(Duration::from_secs(15), || {
        let v = agent.get_json("/api/v1.0/stats/");
        newest(&v, &uuids).is_some_and(|t| t > pre_newest)
    })
    .map(|t| t.saturating_duration_since(t_up));
    let all_fresh = wait_for_fast(Duration::from_secs(15), || {
        let v = agent.get_json("/api/v1.0/stats/");
        uuids
            .iter()
            .all(|u| sample_times(&v, u).last().is_some_and(|t| *t > pre_newest))
    })
    .map(|t| t.saturating_duration_since(t_up));
    let out = starter.join().expect("start-daemon thread");
    assert!(
        out.status.success(),
        "scripts/lab.sh start-daemon failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = agent.get_json("/healthz");

    // Events after the restart, and the history from before.
    let after_events = stream
        .as_ref()
        .map(|rx| suspend_resume(rx, &ev_guest))
        .unwrap_or_default();
    let kept_history = events.then(|| {
        let body = agent
            .get(&format!(
                "/api/v1.0/events?all_events=true&max_events=0&domain={ev_uuid}"
            ))
            .expect("event history")
            .text()
            .expect("body");
        let lines: Vec<serde_json::Value> = body
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let kept = before_events.iter().all(|(e, _)| {
            lines
                .iter()
                .any(|l| l["event_type"] == e["event_type"] && l["timestamp"] == e["timestamp"])
        });
        (kept, lines.len())
    });

    // Figures.
    println!("--- figures: libvirtd killed and restarted ---");
    println!(
        "loss noticed by /healthz {noticed:.2?} after pkill (libvirtd exited after {:.2?})",
        t_dead.duration_since(t_kill)
    );
    println!(
        "outage {outage_wall:.1?}: agent CPU {cpu_outage:.3} s (limit {OUTAGE_CPU_LIMIT} s); \
         last_error {last_error:?}"
    );
    println!("libvirtd answered {up_after:.2?} after start-daemon began");
    println!(
        "first fresh sample {first_fresh:.2?} after libvirtd answered (limit {FRESH_LIMIT:?}); \
         every guest fresh after {all_fresh:.2?}"
    );
    println!(
        "after restart: connected {}, reconnects {}",
        h["libvirt"]["connected"], h["libvirt"]["reconnects"]
    );
    for (e, took) in before_events.iter().chain(&after_events) {
        println!(
            "  event {} {} at {} streamed {took:.2?} after virsh returned",
            e["event_type"], e["reason"], e["timestamp"]
        );
    }
    if let Some((kept, n)) = kept_history {
        println!("event history: {n} events for {ev_guest}; pre-restart events kept: {kept}");
    }

    // Verdicts.
    assert!(
        cpu_outage < OUTAGE_CPU_LIMIT,
        "the agent used {cpu_outage:.3} s of CPU during a {outage_wall:?} outage"
    );
    let fresh = first_fresh.expect("no fresh sample within 15 s of libvirtd answering");
    assert!(
        fresh <= FRESH_LIMIT,
        "first fresh sample {fresh:?} after libvirtd answered"
    );
    assert!(all_fresh.is_some(), "not every guest got a fresh sample");
    assert_eq!(h["libvirt"]["connected"], true, "{h}");
    assert!(h["libvirt"]["reconnects"].as_u64().unwrap_or(0) >= 1, "{h}");
    if let Some((kept, _)) = kept_history {
        assert!(kept, "the event history lost the pre-restart events");
    }
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "the agent exited"
    );
}

/// Polls `f` every 50 ms until it is true or `timeout` passes: when it became true.
fn wait_for_fast(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
