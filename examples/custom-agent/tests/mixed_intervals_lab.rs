//! Collectors at different intervals on the lab (a real libvirtd with QEMU guests,
//! `scripts/lab.sh up`): the README's example config (`block` at 5 s beside `cpu` and
//! `memory` at 1 s) plus the example third-party collector at 2 s. Every REST sample of
//! the last 30 s holds `cpu`, `diskio` and `qemu`, no two samples of a domain share a
//! timestamp, the samples are one second apart, `?live=true` gives one complete sample,
//! and the agent never logs partial data (collectors due together share one bulk call).

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lab_guests() -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--uuid", "--name"])
        .output()
        .expect("virsh");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (uuid, name) = l.trim().split_once(' ')?;
            name.trim()
                .starts_with("vadv-lab-")
                .then(|| uuid.to_string())
        })
        .collect()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2016-06-23T16:05:34.313348Z`).
fn epoch_seconds(ts: &str) -> f64 {
    let num = |r: std::ops::Range<usize>| -> i64 {
        ts.get(r)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad timestamp {ts}"))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from civil (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs: f64 = ts[17..ts.len() - 1].parse().expect("seconds");
    (days * 86400 + num(11..13) * 3600 + num(14..16) * 60) as f64 + secs
}

fn get_json(url: &str) -> serde_json::Value {
    reqwest::blocking::get(url)
        .and_then(|r| r.json())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn readme_config_with_a_2s_plugin_gives_complete_samples_every_second() {
    let guests = lab_guests();
    assert!(!guests.is_empty(), "no lab guest runs (scripts/lab.sh up)");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: 127.0.0.1:{port}\n\
collectors:\n  cpu: {{interval: 1s}}\n  memory: {{interval: 1s}}\n  block: {{interval: 5s}}\n  qemu_process: {{interval: 2s}}\n\
sinks:\n  rest: {{retention: 60s, max_samples: 60}}\n"
        ),
    )
    .expect("config");
    let log = dir.path().join("agent.log");
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_custom-vadvisor"))
            .arg("--config")
            .arg(&config)
            .env("VADVISOR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the custom agent"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let warnings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let started = Instant::now();
    // 34 s of history, then look at the last 30 s.
    std::thread::sleep(Duration::from_secs(34));
    let v = get_json(&format!("{base}/api/v1.0/stats/"));
    for uuid in &guests {
        let samples = v[uuid.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{uuid}: no history after {:?}", started.elapsed()));
        let times: Vec<f64> = samples
            .iter()
            .map(|s| epoch_seconds(s["timestamp"].as_str().expect("timestamp")))
            .collect();
        let stamps: HashSet<&str> = samples
            .iter()
            .filter_map(|s| s["timestamp"].as_str())
            .collect();
        assert_eq!(stamps.len(), samples.len(), "{uuid}: duplicate timestamps");
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{uuid}: not in time order"
        );
        let newest = *times.last().expect("a sample");
        let recent: Vec<(&serde_json::Value, f64)> = samples
            .iter()
            .zip(times.iter().copied())
            .filter(|(_, t)| newest - t < 30.0)
            .collect();
        assert!(
            (29..=31).contains(&recent.len()),
            "{uuid}: {} samples in the last 30 s, expected one per second",
            recent.len()
        );
        for (s, _) in &recent {
            for section in ["cpu", "memory", "diskio", "qemu"] {
                assert!(
                    !s[section].is_null(),
                    "{uuid}: no `{section}` in {s}\nagent warnings:\n{}",
                    warnings()
                );
            }
            assert!(s["diskio"][0]["rd_bytes"].is_number(), "{uuid}: {s}");
            assert!(s["cpu"]["usage"]["cpu_time"].is_number(), "{uuid}: {s}");
            assert!(s["qemu"]["threads"].is_number(), "{uuid}: {s}");
            let ages = &s["ages"];
            assert!(
                ages.get("cpu").is_none() && ages.get("memory").is_none(),
                "{s}"
            );
            assert!(ages["diskio"].as_f64().unwrap_or(0.0) < 5.5, "{s}");
            assert!(ages["qemu"].as_f64().unwrap_or(0.0) < 2.5, "{s}");
        }
        let carried = recent
            .iter()
            .filter(|(s, _)| s["ages"]["diskio"].is_number())
            .count();
        assert!(
            (20..=26).contains(&carried),
            "{uuid}: diskio is fresh one sample in five, carried in the others ({carried} carried of {})",
            recent.len()
        );
    }

    let live = get_json(&format!("{base}/api/v1.0/stats/?live=true"));
    for uuid in &guests {
        let samples = live[uuid.as_str()].as_array().expect("live samples");
        assert_eq!(samples.len(), 1, "{uuid}: one live sample");
        let s = &samples[0];
        for section in ["cpu", "memory", "diskio", "qemu"] {
            assert!(!s[section].is_null(), "{uuid}: live: no `{section}` in {s}");
        }
        assert!(s.get("ages").is_none(), "live: every section is fresh: {s}");
    }

    // Only the lab guests: other domains on the host are not this test's.
    let text = std::fs::read_to_string(&log).expect("agent log");
    let partial: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("partial data"))
        .filter(|l| guests.iter().any(|u| l.contains(u.as_str())))
        .collect();
    assert!(
        partial.is_empty(),
        "collectors due together must share one bulk call, not collide:\n{}",
        partial.join("\n")
    );
}
