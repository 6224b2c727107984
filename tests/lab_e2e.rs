//! Black-box tests against the lab: a real libvirtd with running QEMU guests
//! (`scripts/lab.sh up`). Ignored by a plain `cargo test`; `scripts/test.sh` starts the
//! lab and runs them with `--include-ignored`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{lab_guests, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\n  memory: {}\n  block: {}\n  net: {}\nsinks:\n  rest: {}\n";

fn cpu_times(stats: &serde_json::Value, uuid: &str) -> Vec<f64> {
    stats[uuid]
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| s["cpu"]["usage"]["cpu_time"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn every_lab_guest_cpu_time_rises_within_5_seconds() {
    let guests = lab_guests();
    let agent = Agent::start(CONFIG);
    let first = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| !cpu_times(&v, u).is_empty())
            .then_some(v)
    })
    .expect("every lab guest has a sample within 10 s of start");
    let baseline: HashMap<&str, f64> = guests
        .iter()
        .map(|(_, u)| (u.as_str(), *cpu_times(&first, u).last().unwrap_or(&0.0)))
        .collect();

    let risen = wait_for(Duration::from_secs(5), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| {
                cpu_times(&v, u)
                    .last()
                    .is_some_and(|t| *t > baseline[u.as_str()])
            })
            .then_some(v)
    });
    let v = risen
        .unwrap_or_else(|| panic!("cpu_time did not rise for every guest within 5 s: {guests:?}"));
    for (name, uuid) in &guests {
        let samples = v[uuid.as_str()].as_array().expect("samples");
        let last = samples.last().expect("a sample");
        assert_eq!(last["state"], "Running", "{name}");
        assert_eq!(last["name"], name.as_str());
        let usage = &last["cpu"]["usage"];
        assert!(
            usage["user_time"].as_f64().is_some() && usage["system_time"].as_f64().is_some(),
            "{name}: {usage}"
        );
        let vcpus = last["cpu"]["per_cpu_usage"]
            .as_array()
            .expect("per_cpu_usage");
        assert!(!vcpus.is_empty(), "{name}");
        assert!(
            vcpus
                .iter()
                .all(|c| c["vcpu_time"].as_f64().is_some_and(|t| t > 0.0)),
            "{name}: {vcpus:?}"
        );
        // Samples are about one second apart and oldest first.
        let times = cpu_times(&v, uuid);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{name}: {times:?}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn history_holds_at_most_60_one_second_samples() {
    let guests = lab_guests();
    let agent = Agent::start(
        CONFIG
            .replace("rest: {}", "rest:\n    max_samples: 4")
            .as_str(),
    );
    std::thread::sleep(Duration::from_secs(7));
    let v = agent.get_json("/api/v1.0/stats/");
    for (_, uuid) in &guests {
        let n = v[uuid.as_str()].as_array().map_or(0, Vec::len);
        assert_eq!(n, 4, "{uuid}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn all_collectors_of_a_tick_share_one_libvirt_call() {
    let guests = lab_guests();
    // Hedging off: a loaded CI host could otherwise add a second, hedged call.
    let agent = Agent::start(&CONFIG.replace(
        "uri: qemu:///system",
        "uri: qemu:///system\n  hedge_after: 0s",
    ));
    let health = wait_for(Duration::from_secs(10), || {
        let h = agent.get_json("/healthz");
        (h["collectors"]["net"]["runs"].as_u64().unwrap_or(0) >= 3).then_some(h)
    })
    .expect("three ticks within 10 s");
    // And one CPU counter read per running domain (the cpu-total group without the
    // QEMU monitor), every domain on the host.
    let running = common::virsh(&["list", "--name", "--state-running"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    for c in ["cpu", "memory", "block", "net"] {
        assert_eq!(
            health["collectors"][c]["last_tick_libvirt_calls"],
            1 + running,
            "{c}: one bulk call for {} guests and four collectors: {health}",
            guests.len()
        );
    }
}

fn last_sample(stats: &serde_json::Value, uuid: &str) -> serde_json::Value {
    stats[uuid]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default()
}

fn io_counters(sample: &serde_json::Value) -> Option<[f64; 4]> {
    let disk = sample["diskio"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == "vda")?;
    let nic = sample["network"]["interfaces"].as_array()?.first()?;
    Some([
        disk["rd_bytes"].as_f64()?,
        disk["wr_bytes"].as_f64()?,
        nic["rx_bytes"].as_f64()?,
        nic["tx_bytes"].as_f64()?,
    ])
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn disk_and_network_bytes_of_every_guest_rise_over_5_seconds() {
    let guests = lab_guests();
    let agent = Agent::start(CONFIG);
    let before = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        let all: Option<Vec<[f64; 4]>> = guests
            .iter()
            .map(|(_, u)| io_counters(&last_sample(&v, u)))
            .collect();
        all
    })
    .expect("disk and network counters for every guest within 10 s");
    std::thread::sleep(Duration::from_secs(5));
    let v = agent.get_json("/api/v1.0/stats/");
    for ((name, uuid), b) in guests.iter().zip(&before) {
        let sample = last_sample(&v, uuid);
        let a = io_counters(&sample).unwrap_or_else(|| panic!("{name}: no counters in {sample}"));
        let what = ["rd_bytes", "wr_bytes", "rx_bytes", "tx_bytes"];
        for i in 0..4 {
            assert!(
                a[i] > b[i],
                "{name}: {} did not rise over 5 s ({} -> {})",
                what[i],
                b[i],
                a[i]
            );
        }
        // The other fields of vAdvisor's shape are there, with the fix for tx_dropped.
        let nic = &sample["network"]["interfaces"][0];
        for k in [
            "rx_packets",
            "rx_errors",
            "rx_dropped",
            "tx_packets",
            "tx_errors",
            "tx_dropped",
        ] {
            assert!(nic[k].is_u64(), "{name}: network.{k} in {nic}");
        }
        let disk = &sample["diskio"][0];
        for k in [
            "rd_reqs",
            "rd_times",
            "wr_reqs",
            "wr_times",
            "fl_reqs",
            "fl_times",
            "capacity",
            "allocation",
            "physical",
        ] {
            assert!(disk[k].is_u64(), "{name}: diskio.{k} in {disk}");
        }
        assert_eq!(
            disk["capacity"],
            64 * 1024 * 1024,
            "{name}: the lab disks are 64 MiB"
        );
        let mem = &sample["memory"];
        assert!(
            mem["actual"].as_u64().is_some_and(|kib| kib > 100_000),
            "{name}: memory.actual in KiB: {mem}"
        );
        assert!(
            mem["rss"].is_u64() && mem["available"].is_u64() && mem["unused"].is_u64(),
            "{name}: {mem}"
        );
        assert_eq!(sample["balloon"]["current"], mem["actual"], "{name}");
        assert!(sample["balloon"]["maximum"].is_u64(), "{name}");
    }
}
