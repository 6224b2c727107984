//! Black-box tests that change a lab guest's state while the agent runs: a paused guest
//! is still reported (state `Paused`); a destroyed guest disappears from live results
//! with no error for the others. One test, so the steps run in order; the guest is
//! restored at the end (also when the test fails).

mod common;

use std::time::Duration;

use common::{lab_guests, virsh, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\n  memory: {}\n  block: {}\n  net: {}\nsinks:\n  rest: {}\n";

/// Brings the guest back to running, whatever the test did to it, through the lab script
/// (a bare `virsh start` would leave its tap without the host's link-local address, and
/// its network counters would stop moving for the tests that follow).
struct Restore(String, usize);

impl Drop for Restore {
    fn drop(&mut self) {
        let state = std::process::Command::new("virsh")
            .args(["-c", "qemu:///system", "domstate", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let action = match state.as_str() {
            "paused" => Some("resume"),
            "shut off" => Some("start"),
            _ => None,
        };
        if let Some(a) = action {
            let _ = std::process::Command::new("virsh")
                .args(["-c", "qemu:///system", a, &self.0])
                .status();
        }
        let _ = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab.sh"))
            .arg("up")
            .arg(self.1.to_string())
            .status();
    }
}

fn latest_state(agent: &Agent, uuid: &str) -> Option<String> {
    // 503 (Retry-After) until the first collection has delivered: not yet known.
    let r = agent.get(&format!("/api/v1.0/stats/{uuid}")).ok()?;
    let v: serde_json::Value = r.status().is_success().then(|| r.json().ok())??;
    v[uuid].as_array()?.last()?["state"]
        .as_str()
        .map(str::to_string)
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn paused_guest_is_reported_and_destroyed_guest_vanishes_from_live_results() {
    let guests = lab_guests();
    assert!(guests.len() >= 2, "needs at least 2 lab guests");
    let (name, uuid) = guests.last().cloned().expect("a guest");
    let _restore = Restore(name.clone(), guests.len());
    let agent = Agent::start(CONFIG);
    wait_for(Duration::from_secs(10), || {
        latest_state(&agent, &uuid).filter(|s| s == "Running")
    })
    .expect("the guest is reported Running");

    virsh(&["suspend", &name]);
    let paused = wait_for(Duration::from_secs(5), || {
        latest_state(&agent, &uuid).filter(|s| s == "Paused")
    });
    assert!(paused.is_some(), "{name} not reported Paused within 5 s");
    let v = agent.get_json(&format!("/api/v1.0/stats/{uuid}"));
    let last = v[&uuid]
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert!(
        last["cpu"]["usage"]["cpu_time"].is_number(),
        "a paused guest still has its figures: {last}"
    );
    virsh(&["resume", &name]);
    wait_for(Duration::from_secs(5), || {
        latest_state(&agent, &uuid).filter(|s| s == "Running")
    })
    .expect("resumed");

    let errors_before = agent.get_json("/healthz")["collectors"].clone();
    virsh(&["destroy", &name]);
    let live = agent.get_json("/api/v1.0/stats/?live=true");
    assert!(
        live.get(&uuid).is_none(),
        "destroyed guest still in live results: {live}"
    );
    for (other, other_uuid) in guests.iter().filter(|(n, _)| *n != name) {
        let samples = live[other_uuid.as_str()]
            .as_array()
            .unwrap_or_else(|| panic!("{other} missing: {live}"));
        assert_eq!(samples.len(), 1);
        assert!(
            samples[0]["cpu"]["usage"]["cpu_time"]
                .as_f64()
                .is_some_and(|t| t > 0.0),
            "{other}"
        );
    }
    // The scheduled collections go on for the others without a failed run.
    std::thread::sleep(Duration::from_secs(2));
    let health = agent.get_json("/healthz");
    for c in ["cpu", "memory", "block", "net"] {
        assert_eq!(
            health["collectors"][c]["last_success"], true,
            "{c}: {health}"
        );
        assert_eq!(
            health["collectors"][c]["errors"], errors_before[c]["errors"],
            "{c}: {health}"
        );
    }
    let v = agent.get_json("/api/v1.0/stats/");
    for (other, other_uuid) in guests.iter().filter(|(n, _)| *n != name) {
        assert!(
            v[other_uuid.as_str()]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{other}"
        );
    }
    // `_restore` starts the guest again through the lab script.
}
