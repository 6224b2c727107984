//! Black-box fault test against the lab (`scripts/lab.sh up`, any N ≥ 3): the QEMU of
//! the LAST lab guest is stopped with SIGSTOP (it no longer answers its monitor) while
//! the agent collects every second. The other guests must not notice: a new sample every
//! tick, prompt HTTP answers, no thread pile-up; the stopped guest is reported as
//! partial; after SIGCONT it is complete again. Ignored by a plain `cargo test`
//! (`VADVISOR_LAB=1 cargo test --test fault_hung_domain -- --include-ignored`).
//!
//! One test, so the steps run in order. The guest is continued by a guard whatever
//! happens. The measured figures are printed (for docs/reliability.md).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use common::{
    client, config_accepted, lab_guests, last_lab_guest, proc_threads, qemu_pid, sample_times,
    send_signal, timed_get, wait_for, Agent,
};

/// `max_concurrent_calls`, written into the config: the bound on stuck libvirt calls.
const PERMITS: u64 = 4;
/// How long the guest stays stopped while the others are watched.
const WINDOW: Duration = Duration::from_secs(10);
/// Answer-time limit for `/api/v1.0/stats/` and `/metrics`.
const LATENCY_LIMIT: Duration = Duration::from_millis(100);

fn config(prometheus: bool) -> String {
    // A short REST history keeps the body (and so its rendering and gzip in a debug
    // build) small: what is measured is whether a hung guest delays the answer, not JSON
    // speed. 5 samples, polled every 0.5 s, still show every sample.
    let mut c = format!(
        "libvirt:\n  uri: qemu:///system\n  max_concurrent_calls: {PERMITS}\nhttp:\n  listen: {{listen}}\n\
         collectors:\n  cpu:\n    interval: 1s\n  memory:\n    interval: 1s\n  block:\n    interval: 1s\n  \
         net:\n    interval: 1s\nsinks:\n  rest:\n    max_samples: 5\n"
    );
    if prometheus {
        c.push_str("  prometheus: {}\n");
    }
    c
}

/// Continues the stopped QEMU whatever happens.
struct ContGuard(u32);

impl Drop for ContGuard {
    fn drop(&mut self) {
        let ok = send_signal(self.0, "CONT");
        eprintln!("guard: SIGCONT {} ({ok})", self.0);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, latencies: &[Duration]) -> String {
    let mut v = latencies.to_vec();
    v.sort_unstable();
    format!(
        "{name}: n={} p50={:.1?} p90={:.1?} max={:.1?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        v.last().copied().unwrap_or_default()
    )
}

/// `(collection_errors, stale)` of every domain in `/healthz`, by UUID.
fn health(agent: &Agent) -> BTreeMap<String, (u64, bool)> {
    let h = agent.get_json("/healthz");
    h["domains"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(u, d)| {
                    (
                        u.clone(),
                        (
                            d["collection_errors"].as_u64().unwrap_or(0),
                            d["stale"].as_bool().unwrap_or(true),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the newest REST sample of `uuid` has disk I/O and guest memory figures.
fn newest_complete(stats: &serde_json::Value, uuid: &str) -> bool {
    let Some(last) = stats[uuid].as_array().and_then(|a| a.last()) else {
        return false;
    };
    let disk = last["diskio"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x["rd_reqs"].is_u64()));
    disk && last["memory"]["rss"].is_u64()
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (any N >= 3)"]
fn a_stopped_guest_does_not_stall_the_other_guests() {
    let guests = lab_guests();
    assert!(
        guests.len() >= 3,
        "needs at least 3 running lab guests, found {}",
        guests.len()
    );
    let (hung, hung_uuid) = last_lab_guest(&guests);
    let others: Vec<&(String, String)> = guests.iter().filter(|(n, _)| *n != hung).collect();
    let prometheus = config_accepted(&config(true));
    println!(
        "{} lab guests; stopping {hung}; prometheus sink: {}",
        guests.len(),
        if prometheus {
            "yes"
        } else {
            "not in this build"
        }
    );
    let agent = Agent::start(&config(prometheus));
    let pid = agent.child.id();
    let http = client();
    let stats_url = format!("{}/api/v1.0/stats/", agent.base);
    let metrics_url = format!("{}/metrics", agent.base);

    // Every guest has a few samples (the backend has seen each one's groups in full).
    wait_for(Duration::from_secs(30), || {
        let v = agent.get_json("/api/v1.0/stats/");
        guests
            .iter()
            .all(|(_, u)| sample_times(&v, u).len() >= 3)
            .then_some(())
    })
    .expect("every lab guest has 3 samples within 30 s");

    // Baseline, before the stop: the same requests at the same pace, for comparison.
    let mut base_rest = Vec::new();
    let mut base_metrics = Vec::new();
    let polls = u32::try_from(WINDOW.as_millis() / 500).unwrap_or(20);
    let tb = Instant::now();
    for i in 0..polls {
        if let Some(wait) =
            (tb + Duration::from_millis(500) * i).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        base_rest.push(timed_get(&http, &stats_url).2);
        if prometheus {
            base_metrics.push(timed_get(&http, &metrics_url).2);
        }
    }
    let threads_before = proc_threads(pid);
    let health_before = health(&agent);

    // Stop the guest's QEMU.
    let qpid = qemu_pid(&hung);
    assert!(send_signal(qpid, "STOP"), "SIGSTOP {qpid}");
    let guard = ContGuard(qpid);
    let stopped_at = SystemTime::now();
    let t0 = Instant::now();
    println!("SIGSTOP {hung} (qemu pid {qpid})");

    let mut rest_lat = Vec::new();
    let mut metrics_lat = Vec::new();
    let mut threads_max = threads_before;
    let mut newest_prev: BTreeMap<&str, SystemTime> = BTreeMap::new();
    let mut advances: BTreeMap<&str, u32> = BTreeMap::new();
    let mut one_second_polls = 0;
    let mut hung_stale_seen = false;
    let mut others_stale: Vec<String> = Vec::new();
    let mut last_stats = serde_json::Value::Null;
    let mut gaps: BTreeMap<&str, Duration> = BTreeMap::new();
    for i in 0..polls {
        let slot = t0 + Duration::from_millis(500) * i;
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (status, body, took) = timed_get(&http, &stats_url);
        assert!(status.is_success(), "GET /api/v1.0/stats/: {status}");
        rest_lat.push(took);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("stats JSON");
        if prometheus {
            let (status, _, took) = timed_get(&http, &metrics_url);
            assert!(status.is_success(), "GET /metrics: {status}");
            metrics_lat.push(took);
        }
        // Every other poll is a one-second poll: does each other guest's newest sample
        // advance?
        if i % 2 == 1 {
            one_second_polls += 1;
            for (name, uuid) in &others {
                let newest = sample_times(&v, uuid).last().copied();
                if let (Some(n), Some(p)) = (newest, newest_prev.get(name.as_str())) {
                    if n > *p {
                        *advances.entry(name.as_str()).or_default() += 1;
                    }
                }
                if let Some(n) = newest {
                    newest_prev.insert(name.as_str(), n);
                }
            }
        } else if i == 0 {
            for (name, uuid) in &others {
                if let Some(n) = sample_times(&v, uuid).last() {
                    newest_prev.insert(name.as_str(), *n);
                }
            }
        }
        // Gaps between consecutive samples since shortly before the stop (the history
        // holds 5 s, polled every 0.5 s: nothing is missed).
        for (name, uuid) in &others {
            let times = sample_times(&v, uuid);
            let since = stopped_at - Duration::from_millis(1500);
            for w in times.windows(2).filter(|w| w[1] >= since) {
                let gap = w[1].duration_since(w[0]).unwrap_or_default();
                let g = gaps.entry(name.as_str()).or_default();
                *g = (*g).max(gap);
            }
        }
        let h = health(&agent);
        if h.get(&hung_uuid).is_some_and(|(_, stale)| *stale) {
            hung_stale_seen = true;
        }
        for (name, uuid) in &others {
            if h.get(uuid).is_none_or(|(_, stale)| *stale) {
                others_stale.push(format!("{name} at {:.1?}", t0.elapsed()));
            }
        }
        threads_max = threads_max.max(proc_threads(pid));
        last_stats = v;
    }
    let window = t0.elapsed();
    let health_after = health(&agent);
    let hung_errors = health_after
        .get(&hung_uuid)
        .map_or(0, |e| e.0)
        .saturating_sub(health_before.get(&hung_uuid).map_or(0, |e| e.0));
    let other_errors: Vec<u64> = others
        .iter()
        .map(|(_, u)| {
            health_after
                .get(u)
                .map_or(0, |e| e.0)
                .saturating_sub(health_before.get(u).map_or(0, |e| e.0))
        })
        .collect();
    let hung_still_reported = sample_times(&last_stats, &hung_uuid)
        .last()
        .is_some_and(|t| *t > stopped_at);

    // Continue it: complete again (not stale, errors no longer rising for 2 s).
    drop(guard);
    let t_cont = Instant::now();
    let mut history: Vec<(Instant, u64, bool)> = Vec::new();
    let recovered = wait_for(Duration::from_secs(15), || {
        let h = health(&agent);
        let (errors, stale) = h.get(&hung_uuid).copied().unwrap_or((0, true));
        let now = Instant::now();
        history.push((now, errors, stale));
        let steady = history
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= Duration::from_secs(2))
            .all(|(_, e, s)| *e == errors && !*s);
        let spans = history
            .first()
            .is_some_and(|(t, _, _)| now.duration_since(*t) >= Duration::from_secs(2));
        let complete = newest_complete(&agent.get_json("/api/v1.0/stats/"), &hung_uuid);
        (steady && spans && complete)
            .then(|| t_cont.elapsed().saturating_sub(Duration::from_secs(2)))
    });

    // Figures.
    let mut adv: Vec<u32> = others
        .iter()
        .map(|(n, _)| advances.get(n.as_str()).copied().unwrap_or(0))
        .collect();
    adv.sort_unstable();
    let max_gap = gaps.values().max().copied().unwrap_or_default();
    let worst_gap = gaps.iter().max_by_key(|(_, g)| **g);
    println!(
        "--- figures: hung guest (SIGSTOP) for {window:.1?}, {} other guests ---",
        others.len()
    );
    println!("baseline {}", summary("REST /api/v1.0/stats/", &base_rest));
    if prometheus {
        println!("baseline {}", summary("/metrics", &base_metrics));
    }
    println!("stopped  {}", summary("REST /api/v1.0/stats/", &rest_lat));
    if prometheus {
        println!("stopped  {}", summary("/metrics", &metrics_lat));
    }
    println!(
        "newest sample advanced in min {} / max {} of {one_second_polls} one-second polls (per other guest)",
        adv.first().copied().unwrap_or(0),
        adv.last().copied().unwrap_or(0)
    );
    println!("largest gap between samples of another guest: {max_gap:.2?} ({worst_gap:?})");
    println!(
        "threads: {threads_before} before, max {threads_max} while stopped (limit +{PERMITS})"
    );
    println!(
        "{hung}: +{hung_errors} collection errors in the window, stale seen: {hung_stale_seen}, \
         still sampled: {hung_still_reported}; other guests: +{}..+{} errors (another poller on a \
         shared lab makes NOWAIT skip monitors too)",
        other_errors.iter().min().copied().unwrap_or(0),
        other_errors.iter().max().copied().unwrap_or(0)
    );
    match recovered {
        Some(t) => println!("{hung} complete again {t:.1?} after SIGCONT"),
        None => println!("{hung} NOT complete again within 15 s of SIGCONT"),
    }

    // Verdicts.
    let slow_rest: Vec<&Duration> = rest_lat.iter().filter(|d| **d >= LATENCY_LIMIT).collect();
    assert!(
        slow_rest.is_empty(),
        "/api/v1.0/stats/ slower than {LATENCY_LIMIT:?}: {slow_rest:?}"
    );
    let slow_metrics: Vec<&Duration> = metrics_lat
        .iter()
        .filter(|d| **d >= LATENCY_LIMIT)
        .collect();
    assert!(
        slow_metrics.is_empty(),
        "/metrics slower than {LATENCY_LIMIT:?}: {slow_metrics:?}"
    );
    for (name, _) in &others {
        let n = advances.get(name.as_str()).copied().unwrap_or(0);
        assert!(
            n >= 8,
            "{name}: newest sample advanced in only {n} of {one_second_polls} one-second polls"
        );
    }
    assert!(
        max_gap <= Duration::from_millis(2500),
        "a gap of {max_gap:?} between samples: {worst_gap:?}"
    );
    assert!(
        others_stale.is_empty(),
        "other guests stale: {others_stale:?}"
    );
    assert!(
        hung_stale_seen || hung_errors >= 8,
        "{hung} neither stale nor rising collection_errors (+{hung_errors})"
    );
    assert!(
        threads_max <= threads_before + PERMITS,
        "threads grew from {threads_before} to {threads_max}"
    );
    assert!(
        recovered.is_some(),
        "{hung} not complete again within 15 s of SIGCONT: {history:?}"
    );
    drop(agent);
}
