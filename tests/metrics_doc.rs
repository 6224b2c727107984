//! The committed metric reference is exactly what the collectors declare.

use std::process::Command;

#[test]
fn docs_metrics_md_is_up_to_date() {
    let out = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--print-metrics-reference")
        .output()
        .expect("run");
    assert!(out.status.success());
    let generated = String::from_utf8_lossy(&out.stdout);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/metrics.md is out of date: run `cargo run -- --print-metrics-reference > docs/metrics.md`"
    );
    for name in [
        "vm_cpu_time_seconds_total",
        "vm_disk_read_bytes_total",
        "vm_memory_bytes",
        "vm_network_transmit_dropped_packets_total",
        "vm_up",
        "vm_lifecycle_events_total",
        "vadvisor_collector_success",
        "process_resident_memory_bytes",
    ] {
        assert!(generated.contains(&format!("`{name}`")), "{name} missing");
    }
}
