//! A sharded bulk call on the lab (`scripts/lab.sh up`): with `bulk_shards: 2` every
//! running lab guest is still reported in every tick with every section, and no domain
//! is ever logged as reported with partial data (the shards ask for disjoint domains,
//! so they never collide on one). Like `live_burst_lab`, it needs a lab no other
//! libvirt client polls meanwhile: another client's bulk call can make libvirt skip a
//! domain.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{lab_guests, wait_for, Agent};

/// Hedging off: on a loaded host a hedge would overlap its own shard's first call.
const CONFIG: &str = "libvirt:\n  uri: qemu:///system\n  bulk_shards: 2\n  hedge_after: 0s\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\n  memory: {}\n  block: {}\n  net: {}\nsinks:\n  rest: {}\n";

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn two_shards_report_every_guest_with_every_section() {
    let guests = lab_guests();
    assert!(guests.len() >= 2, "two shards need two guests: {guests:?}");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let log_lines = |needle: &str| {
        std::fs::read_to_string(log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let agent = Agent::start_with_stderr(CONFIG, Stdio::from(log.reopen().expect("log")));
    // The first tick splits by a hash of the UUIDs, later ones by the last reply.
    let stats = wait_for(Duration::from_secs(15), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| v[u.as_str()].as_array().is_some_and(|s| s.len() >= 6))
            .then_some(v)
    })
    .unwrap_or_else(|| panic!("6 samples of every guest within 15 s: {guests:?}"));
    for (name, uuid) in &guests {
        let samples = stats[uuid.as_str()].as_array().expect("samples");
        for s in samples {
            assert_eq!(s["name"], name.as_str());
            assert_eq!(s["state"], "Running", "{name}: {s}");
            for section in ["cpu", "memory", "diskio", "network"] {
                assert!(
                    !s[section].is_null(),
                    "{name}: no {section} in {s}\nagent warnings:\n{}",
                    log_lines("WARN").join("\n")
                );
            }
            assert!(s.get("ages").is_none(), "{name}: every section fresh: {s}");
        }
        let last = samples.last().expect("a sample");
        assert!(
            last["cpu"]["usage"]["cpu_time"]
                .as_f64()
                .is_some_and(|t| t > 0.0),
            "{name}: {last}"
        );
        assert!(
            last["diskio"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "vda")),
            "{name}: {last}"
        );
    }
    // Sharded indeed: per tick, each shard lists the domains and asks for its own.
    let health = agent.get_json("/healthz");
    let calls = health["collectors"]["cpu"]["last_tick_libvirt_calls"]
        .as_u64()
        .unwrap_or(0);
    assert!(calls >= 4, "two lists and two statistics calls: {health}");
    let partial = log_lines("partial data");
    assert!(
        partial.is_empty(),
        "partial-data warnings:\n{}",
        partial.join("\n")
    );
    let errors = log_lines("ERROR");
    assert!(errors.is_empty(), "errors:\n{}", errors.join("\n"));
}
