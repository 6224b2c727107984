//! Live requests never degrade scheduled samples (lab: `scripts/lab.sh up`). A burst of
//! `?live=true` requests, spread over several ticks so that many arrive while a tick's
//! bulk call is in flight, must share bulk calls with the ticks instead of colliding
//! with them: no partial-data warning in the log, and every stored sample of the burst
//! holds every section.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::{client, lab_guests, sample_times, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {interval: 1s}\n  memory: {interval: 1s}\n  net: {interval: 1s}\n  block: {interval: 2s}\nsinks:\n  rest: {}\n";

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn a_burst_of_live_requests_leaves_stored_samples_complete() {
    let guests = lab_guests();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let warnings = || {
        std::fs::read_to_string(log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let agent = Agent::start_with_stderr(CONFIG, Stdio::from(log.reopen().expect("log")));
    wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| sample_times(&v, u).len() >= 2)
            .then_some(())
    })
    .expect("samples within 10 s");

    // 50 live requests from 5 clients over about 5 s.
    let burst_start = SystemTime::now();
    let started = Instant::now();
    let url = format!("{}/api/v1.0/stats/?live=true", agent.base);
    let workers: Vec<_> = (0..5)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                std::thread::sleep(Duration::from_millis(w * 97));
                (0..10)
                    .map(|_| {
                        let r = c.get(&url).send().expect("live request");
                        let status = r.status();
                        let body: serde_json::Value = r.json().expect("JSON");
                        std::thread::sleep(Duration::from_millis(430));
                        (status, body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let burst_end = SystemTime::now();
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(answers.len(), 50);
    for (status, body) in &answers {
        assert!(status.is_success(), "{status}: {body}");
        for (name, uuid) in &guests {
            let s = &body[uuid.as_str()];
            assert_eq!(s.as_array().map(Vec::len), Some(1), "{name}: {body}");
            for section in ["cpu", "memory", "diskio", "network"] {
                assert!(
                    !s[0][section].is_null(),
                    "live, {name}: no {section}: {s}\nagent warnings:\n{}",
                    warnings()
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));

    let v = agent.get_json("/api/v1.0/stats/");
    for (name, uuid) in &guests {
        let samples = v[uuid.as_str()].as_array().expect("history");
        let times = sample_times(&v, uuid);
        let during: Vec<&serde_json::Value> = samples
            .iter()
            .zip(&times)
            .filter(|(_, t)| **t >= burst_start && **t <= burst_end)
            .map(|(s, _)| s)
            .collect();
        assert!(
            during.len() >= 4,
            "{name}: {} samples during the burst",
            during.len()
        );
        for s in during {
            assert!(s["cpu"]["usage"]["cpu_time"].is_number(), "{name}: {s}");
            assert!(s["memory"]["actual"].is_number(), "{name}: {s}");
            assert!(
                s["memory"]["available"].is_number(),
                "{name}: guest memory statistics (balloon) missing: {s}\nagent warnings:\n{}",
                warnings()
            );
            assert!(s["diskio"][0]["rd_bytes"].is_number(), "{name}: {s}");
            assert!(
                s["network"]["interfaces"][0]["rx_bytes"].is_number(),
                "{name}: {s}"
            );
        }
    }
    let text = std::fs::read_to_string(log.path()).expect("log");
    let partial: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("partial data"))
        // Only the lab guests: other domains on the host are not this test's.
        .filter(|l| guests.iter().any(|(_, u)| l.contains(u.as_str())))
        .collect();
    assert!(
        partial.is_empty(),
        "live requests degraded scheduled samples:\n{}",
        partial.join("\n")
    );
}
