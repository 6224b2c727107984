//! malloc's thresholds fixed at start (`ffi::keep_free_heap_small`): what a thread's
//! arena keeps resident after large buffers, with glibc's own thresholds and with the
//! agent's. Each case runs in a child process of its own (this test binary again), as
//! the thresholds are process-wide and glibc adjusts them once for good.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::hint::black_box;
use std::process::Command;

const CHILD: &str = "VADVISOR_HEAP_THRESHOLDS_CHILD";
const TEST: &str = "freed_response_buffers_do_not_stay_at_a_thread_arena_s_top";

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What an HTTP worker does with response bodies, on a thread of its own (so with an
/// arena of its own): a first large body, mapped apart by malloc and freed (glibc then
/// raises its thresholds to that size), then bodies of 2 MiB written and freed, then the
/// agent's trim. Returns the KiB of anonymous memory left resident by the bodies.
fn serve_bodies() -> u64 {
    std::thread::spawn(|| {
        let first = black_box(vec![1u8; 3 << 20]);
        drop(first);
        let before = rss_anon_kib();
        for i in 0..4u8 {
            let body = black_box(vec![i; 2 << 20]);
            assert_eq!(body[(2 << 20) - 1], i);
        }
        vadvisor_libvirt::ffi::release_free_heap();
        rss_anon_kib().saturating_sub(before)
    })
    .join()
    .expect("the worker thread")
}

/// Runs this test in a child process with the thresholds `mode` ("glibc" or "agent");
/// returns what it printed as retained.
fn retained_in_child(mode: &str) -> u64 {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("GLIBC_TUNABLES")
        .env_remove("MALLOC_TRIM_THRESHOLD_")
        .env_remove("MALLOC_MMAP_THRESHOLD_")
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child ({mode}) failed: {stdout}");
    // The harness writes "test … ... " on the same line before the test's own output.
    stdout
        .split_once("retained_kib=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("child ({mode}) printed no figure: {stdout}"))
}

#[test]
fn freed_response_buffers_do_not_stay_at_a_thread_arena_s_top() {
    match std::env::var(CHILD).as_deref() {
        Ok(mode) => {
            if mode == "agent" {
                assert!(vadvisor_libvirt::ffi::keep_free_heap_small());
            }
            println!("retained_kib={}", serve_bodies());
        }
        Err(_) => {
            let glibc = retained_in_child("glibc");
            let agent = retained_in_child("agent");
            // With glibc's own thresholds the freed 2 MiB stay at the arena's top, where
            // malloc_trim does not reach: the agent's thresholds are what makes the
            // difference.
            assert!(
                glibc >= 1536,
                "glibc's thresholds kept only {glibc} KiB: the case no longer shows the retention"
            );
            assert!(
                agent <= 512,
                "the agent's thresholds still kept {agent} KiB (glibc's: {glibc} KiB)"
            );
        }
    }
}
