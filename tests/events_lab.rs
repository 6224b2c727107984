//! Black-box test of lifecycle events against the lab (a real libvirtd with QEMU,
//! `scripts/lab.sh up`): a stream opened before acting sees a throw-away guest
//! `vadv-evt-test` defined, started, suspended, resumed, destroyed and undefined, each
//! event within 1 s with vAdvisor's `event_type`/`reason`; after a restart of the agent
//! on the same database the history still holds them. Ignored by a plain `cargo test`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{virsh, Agent};

const NAME: &str = "vadv-evt-test";
const LAB_CACHE: &str = "/var/lib/vadvisor-lab/cache";

/// Destroys and undefines the test guest (errors ignored: it may not exist).
fn remove_guest() {
    for args in [["destroy", NAME], ["undefine", NAME]] {
        let _ = Command::new("virsh")
            .arg("-c")
            .arg("qemu:///system")
            .args(args)
            .output();
    }
}

/// Removes the guest when the test ends, passed or not.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_guest();
    }
}

/// A small persistent guest booting the lab's kernel and initramfs (no disk, no NIC:
/// its init waits for them, then idles in its loop).
fn guest_xml() -> String {
    for f in ["vmlinuz", "initramfs.gz"] {
        assert!(
            Path::new(LAB_CACHE).join(f).exists(),
            "{LAB_CACHE}/{f} missing: run `scripts/lab.sh up` first"
        );
    }
    format!(
        "<domain type='qemu'>
  <name>{NAME}</name>
  <memory unit='MiB'>192</memory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{LAB_CACHE}/vmlinuz</kernel>
    <initrd>{LAB_CACHE}/initramfs.gz</initrd>
    <cmdline>console=ttyS0 no_timer_check</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"
    )
}

fn config(db: &Path) -> String {
    format!(
        "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {{listen}}\ncollectors:\n  events: {{}}\n\
         sinks:\n  events:\n    path: {}\n",
        db.display()
    )
}

/// The NDJSON stream's events, read on a thread (heartbeat lines skipped).
fn open_stream(agent: &Agent) -> mpsc::Receiver<serde_json::Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client");
    let url = format!(
        "{}/api/v1.0/events?stream=true&all_events=true&domain={NAME}",
        agent.base
    );
    // The agent sends the headers at once, after subscribing: nothing is missed from here.
    let resp = client.get(url).send().expect("open the stream");
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(e) => panic!("not a JSON line: {line:?}: {e}"),
            }
        }
    });
    rx
}

/// Waits up to 1 s for the event; other events of the guest in between (libvirt sends
/// `Resumed` right before `Started` on boot) are returned too.
fn expect(
    rx: &mpsc::Receiver<serde_json::Value>,
    event_type: &str,
    reason: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut others = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if v["event_type"] == event_type && v["reason"] == reason => return v,
            Ok(v) => others.push(v),
            Err(_) => panic!("no {event_type}/{reason} event within 1 s (got {others:?})"),
        }
    }
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn lifecycle_of_a_guest_is_streamed_and_kept_across_restarts() {
    remove_guest();
    let _cleanup = Cleanup;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("events.db");
    let xml_file = dir.path().join("guest.xml");
    std::fs::write(&xml_file, guest_xml()).expect("write the guest XML");
    let xml_path = xml_file.to_str().expect("UTF-8 path");

    let mut agent = Agent::start(&config(&db));
    let rx = open_stream(&agent);
    let steps: [(&[&str], &str, &str); 6] = [
        (&["define", xml_path], "Defined", "Added"),
        (&["start", NAME], "Started", "Booted"),
        (&["suspend", NAME], "Suspended", "Paused"),
        (&["resume", NAME], "Resumed", "Unpaused"),
        (&["destroy", NAME], "Stopped", "Destroyed"),
        (&["undefine", NAME], "Undefined", "Removed"),
    ];
    let mut uuid = String::new();
    for (args, event_type, reason) in steps {
        virsh(args);
        if uuid.is_empty() {
            uuid = virsh(&["domuuid", NAME]).trim().to_string();
        }
        let v = expect(&rx, event_type, reason);
        assert_eq!(v["domain_name"], NAME);
        assert_eq!(v["domain_id"], uuid.as_str());
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{v}"
        );
    }

    // Restart on the same database: the history has all six, oldest first.
    let (status, _) = agent.terminate();
    assert!(status.success());
    drop(agent);
    let agent = Agent::start(&config(&db));
    let body = agent
        .get(&format!(
            "/api/v1.0/events?all_events=true&max_events=0&domain={uuid}"
        ))
        .expect("history")
        .text()
        .expect("body");
    let got: Vec<(String, String)> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["event_type"].as_str().unwrap_or("").to_string(),
                v["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut wanted = steps
        .iter()
        .map(|(_, t, r)| (t.to_string(), r.to_string()))
        .peekable();
    for pair in &got {
        if wanted.peek() == Some(pair) {
            wanted.next();
        }
    }
    assert!(
        wanted.peek().is_none(),
        "history after restart lacks {:?}: {got:?}",
        wanted.collect::<Vec<_>>()
    );
}
