//! Black-box tests against the lab: a real libvirtd with running QEMU guests
//! (`scripts/lab.sh up`). Ignored by a plain `cargo test`; `scripts/test.sh` starts the
//! lab and runs them with `--include-ignored`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{lab_guests, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    interval: 1s\nsinks:\n  rest: {}\n";

fn cpu_times(stats: &serde_json::Value, uuid: &str) -> Vec<f64> {
    stats[uuid]
        .as_array()
        .map(|samples| samples.iter().filter_map(|s| s["cpu"]["usage"]["cpu_time"].as_f64()).collect())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn every_lab_guest_cpu_time_rises_within_5_seconds() {
    let guests = lab_guests();
    let agent = Agent::start(CONFIG);
    let first = wait_for(Duration::from_secs(10), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests.iter().all(|(_, u)| !cpu_times(&v, u).is_empty()).then_some(v)
    })
    .expect("every lab guest has a sample within 10 s of start");
    let baseline: HashMap<&str, f64> =
        guests.iter().map(|(_, u)| (u.as_str(), *cpu_times(&first, u).last().unwrap_or(&0.0))).collect();

    let risen = wait_for(Duration::from_secs(5), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| cpu_times(&v, u).last().is_some_and(|t| *t > baseline[u.as_str()]))
            .then_some(v)
    });
    let v = risen.unwrap_or_else(|| panic!("cpu_time did not rise for every guest within 5 s: {guests:?}"));
    for (name, uuid) in &guests {
        let samples = v[uuid.as_str()].as_array().expect("samples");
        let last = samples.last().expect("a sample");
        assert_eq!(last["state"], "Running", "{name}");
        assert_eq!(last["name"], name.as_str());
        let usage = &last["cpu"]["usage"];
        assert!(usage["user_time"].as_f64().is_some() && usage["system_time"].as_f64().is_some(), "{name}: {usage}");
        let vcpus = last["cpu"]["per_cpu_usage"].as_array().expect("per_cpu_usage");
        assert!(!vcpus.is_empty(), "{name}");
        assert!(vcpus.iter().all(|c| c["vcpu_time"].as_f64().is_some_and(|t| t > 0.0)), "{name}: {vcpus:?}");
        // Samples are about one second apart and oldest first.
        let times = cpu_times(&v, uuid);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{name}: {times:?}");
    }
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn history_holds_at_most_60_one_second_samples() {
    let guests = lab_guests();
    let agent = Agent::start(CONFIG.replace("rest: {}", "rest:\n    max_samples: 4").as_str());
    std::thread::sleep(Duration::from_secs(7));
    let v = agent.get_json("/api/v1.0/stats/");
    for (_, uuid) in &guests {
        let n = v[uuid.as_str()].as_array().map_or(0, Vec::len);
        assert_eq!(n, 4, "{uuid}");
    }
}
