//! Black-box test of the `dirtyrate` collector against the lab (a real libvirtd,
//! `scripts/lab.sh up`): after `virsh domdirtyrate-calc` on a running guest, the agent
//! reports the measured rate in bytes per second on `/metrics` (libvirt's MiB/s ×
//! 1048576), the calculation's status and mode, and libvirt's own figures under
//! `dirtyrate` in the REST sample; guests never calculated report their status only.
//! Ignored by a plain `cargo test`.

mod common;

use std::time::Duration;

use common::{lab_guests, last_lab_guest, virsh, wait_for, Agent};

const CONFIG: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\n\
collectors:\n  cpu: {}\n  dirtyrate:\n    interval: 1s\nsinks:\n  prometheus: {}\n  rest: {}\n";

/// `dirtyrate.KEY=VALUE` of `virsh domstats --dirtyrate GUEST`.
fn virsh_dirtyrate(guest: &str, key: &str) -> Option<String> {
    let out = virsh(&["domstats", "--dirtyrate", guest]);
    let prefix = format!("dirtyrate.{key}=");
    out.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// The value of the first `/metrics` line of `family` for `uuid` that contains `extra`.
fn metric(agent: &Agent, family: &str, uuid: &str, extra: &str) -> Option<f64> {
    let body = agent.get("/metrics").ok()?.text().ok()?;
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| l.contains(uuid) && l.contains(extra))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn a_calculated_dirty_rate_reaches_metrics_and_rest() {
    let guests = lab_guests();
    let (guest, uuid) = last_lab_guest(&guests);
    virsh(&["domdirtyrate-calc", &guest, "--seconds", "1"]);
    let mib_per_s: f64 = wait_for(Duration::from_secs(10), || {
        (virsh_dirtyrate(&guest, "calc_status").as_deref() == Some("2"))
            .then(|| virsh_dirtyrate(&guest, "megabytes_per_second"))
            .flatten()
    })
    .expect("libvirt reports a measured dirty rate within 10 s")
    .parse()
    .expect("a number");
    let mode = virsh_dirtyrate(&guest, "calc_mode").expect("calc_mode");

    let agent = Agent::start(CONFIG);
    let rate = wait_for(Duration::from_secs(15), || {
        metric(&agent, "vm_memory_dirty_rate_bytes_per_second", &uuid, "")
    })
    .expect("vm_memory_dirty_rate_bytes_per_second of the guest within 15 s");
    assert_eq!(
        rate,
        mib_per_s * 1_048_576.0,
        "MiB/s from libvirt in bytes/s"
    );
    let status = metric(
        &agent,
        "vm_memory_dirty_rate_calc_status",
        &uuid,
        &format!("mode=\"{mode}\""),
    );
    assert_eq!(
        status,
        Some(2.0),
        "measured, with libvirt's mode as a label"
    );
    let period = metric(
        &agent,
        "vm_memory_dirty_rate_calc_period_seconds",
        &uuid,
        "",
    );
    assert_eq!(period, Some(1.0));

    // REST keeps libvirt's figures and units under `dirtyrate`.
    let stats = agent.get_json(&format!("/api/v1.0/stats/{uuid}"));
    let last = stats
        .as_array()
        .or_else(|| stats.get(&uuid).and_then(|v| v.as_array()))
        .and_then(|samples| samples.last())
        .cloned()
        .unwrap_or_else(|| panic!("a sample of {uuid}: {stats}"));
    assert_eq!(last["dirtyrate"]["calc_status"], 2, "{last}");
    assert_eq!(
        last["dirtyrate"]["megabytes_per_second"].as_f64(),
        Some(mib_per_s),
        "{last}"
    );

    // Another running guest that never calculated reports its status, and no rate.
    let never = guests
        .iter()
        .find(|(n, _)| *n != guest && virsh_dirtyrate(n, "calc_status").as_deref() == Some("0"));
    if let Some((_, other)) = never {
        let status = wait_for(Duration::from_secs(5), || {
            metric(&agent, "vm_memory_dirty_rate_calc_status", other, "")
        });
        assert_eq!(status, Some(0.0), "status of a guest never calculated");
        assert_eq!(
            metric(&agent, "vm_memory_dirty_rate_bytes_per_second", other, ""),
            None,
            "no rate before a calculation"
        );
    }
}
