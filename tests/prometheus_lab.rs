//! Black-box tests of the `prometheus` sink against the lab (a real libvirtd with
//! running QEMU guests, `scripts/lab.sh up`): the built agent is scraped by a REAL
//! Prometheus server (Debian's `prometheus` package; it negotiates OpenMetrics) and its
//! HTTP API is asked for the guests' series; and `promtool check metrics` is run on the
//! agent's output. Both need `bash scripts/install-test-peers.sh`. Ignored by a plain
//! `cargo test`; `scripts/test.sh` runs them with `--include-ignored`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::{target, Prometheus};
use common::{client, lab_guests, wait_for, Agent};

const AGENT: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    interval: 1s\n  memory:\n    interval: 1s\n  block:\n    interval: 1s\n  net:\n    interval: 1s\nsinks:\n  rest: {}\n  prometheus: {}\n";

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn a_real_prometheus_scrapes_vm_up_and_cpu_counters_of_every_running_guest() {
    let guests = lab_guests();
    let agent = Agent::start(AGENT);
    let prom = Prometheus::start(&target(&agent), "vadvisor");

    // The scrape works (OpenMetrics is negotiated and parsed without error).
    let up = wait_for(Duration::from_secs(30), || {
        let t = prom.api("/api/v1/targets", &[]);
        let target = t["activeTargets"].as_array()?.first()?.clone();
        (target["health"] == "up").then_some(target)
    });
    let up = up.unwrap_or_else(|| {
        panic!(
            "the agent's target never became healthy: {}",
            prom.api("/api/v1/targets", &[])
        )
    });
    assert_eq!(up["lastError"], "", "{up}");
    // `# UNIT` exists only in OpenMetrics: Prometheus knowing the unit shows it scraped that format.
    let meta = prom.api("/api/v1/metadata", &[("metric", "vm_cpu_time_seconds")]);
    assert_eq!(
        meta["vm_cpu_time_seconds"][0]["unit"], "seconds",
        "OpenMetrics was negotiated: {meta}"
    );
    assert_eq!(meta["vm_cpu_time_seconds"][0]["type"], "counter", "{meta}");

    // vm_up == 1 for every running lab guest.
    let vm_up = wait_for(Duration::from_secs(30), || {
        let v = prom.by_uuid("vm_up");
        guests
            .iter()
            .all(|(_, u)| v.get(u) == Some(&1.0))
            .then_some(v)
    });
    let vm_up = vm_up.unwrap_or_else(|| {
        panic!(
            "vm_up is not 1 for every guest: {:?} {guests:?}",
            prom.by_uuid("vm_up")
        )
    });
    for (name, uuid) in &guests {
        let series = prom.query(&format!("vm_up{{uuid=\"{uuid}\"}}"));
        assert_eq!(series.len(), 1, "{name}: {series:?}");
        assert_eq!(series[0].0.get("name"), Some(name), "{name}: {series:?}");
        assert_eq!(vm_up[uuid], 1.0);
    }

    // CPU counters: positive, in both units, and increasing.
    let first_s = prom.by_uuid("vm_cpu_time_seconds_total");
    let first_ms = prom.by_uuid("vm_cpu_milliseconds_total");
    for (name, uuid) in &guests {
        let s = *first_s
            .get(uuid)
            .unwrap_or_else(|| panic!("{name}: no vm_cpu_time_seconds_total"));
        let ms = *first_ms
            .get(uuid)
            .unwrap_or_else(|| panic!("{name}: no vm_cpu_milliseconds_total"));
        assert!(s > 0.0, "{name}: {s}");
        assert!(ms > 0.0, "{name}: {ms}");
    }
    // Both families come from the same sample of the same scrape.
    let ratio =
        prom.by_uuid("vm_cpu_milliseconds_total / on(uuid, name) vm_cpu_time_seconds_total");
    for (name, uuid) in &guests {
        let r = ratio.get(uuid).copied().unwrap_or(f64::NAN);
        assert!((r - 1000.0).abs() < 1e-6, "{name}: ms/s = {r}");
    }
    let risen = wait_for(Duration::from_secs(10), || {
        let s = prom.by_uuid("vm_cpu_time_seconds_total");
        let ms = prom.by_uuid("vm_cpu_milliseconds_total");
        guests
            .iter()
            .all(|(_, u)| {
                s.get(u).zip(first_s.get(u)).is_some_and(|(a, b)| a > b)
                    && ms.get(u).zip(first_ms.get(u)).is_some_and(|(a, b)| a > b)
            })
            .then_some(())
    });
    assert!(
        risen.is_some(),
        "CPU counters did not increase within 10 s for every guest"
    );

    // rate() works on them.
    let rates = wait_for(Duration::from_secs(15), || {
        let r = prom.by_uuid("rate(vm_cpu_time_seconds_total[5s])");
        guests
            .iter()
            .all(|(_, u)| r.get(u).is_some_and(|v| *v > 0.0 && v.is_finite()))
            .then_some(r)
    });
    assert!(
        rates.is_some(),
        "rate() is not positive for every guest: {:?}",
        prom.by_uuid("rate(vm_cpu_time_seconds_total[5s])")
    );

    // Memory in bytes (vAdvisor sent KiB under that name), per-vCPU and per-interface families.
    let mem = prom.by_uuid("vm_memory_bytes");
    let balloon = prom.by_uuid("vm_memory_actual_balloon_bytes");
    let vcpu0 = prom.by_uuid("vm_vcpu_milliseconds_total{cpu=\"0\"}");
    let rx = prom.by_uuid("vm_network_receive_bytes_total");
    for (name, uuid) in &guests {
        let m = mem.get(uuid).copied().unwrap_or_default();
        assert!(
            m > 64.0 * 1024.0 * 1024.0,
            "{name}: vm_memory_bytes = {m} (bytes, not KiB)"
        );
        assert_eq!(balloon.get(uuid), Some(&m), "{name}");
        assert!(
            vcpu0.get(uuid).is_some_and(|v| *v > 0.0),
            "{name}: vm_vcpu_milliseconds_total{{cpu=\"0\"}}"
        );
        assert!(
            rx.contains_key(uuid),
            "{name}: vm_network_receive_bytes_total"
        );
    }
    let libvirt_up = prom.query("vadvisor_libvirt_up");
    assert_eq!(libvirt_up.first().map(|s| s.1), Some(1.0), "{libvirt_up:?}");
}

/// Runs `promtool check metrics` on `text`: (exit code, problems reported).
fn promtool(text: &str) -> (i32, Vec<String>) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run `bash scripts/install-test-peers.sh`");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let problems = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (out.status.code().unwrap_or(-1), problems)
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn promtool_finds_nothing_wrong_with_the_agents_metrics() {
    let guests = lab_guests();
    // Two instances: vAdvisor's names on /metrics, our names only on /metrics-plain.
    let config = AGENT.replace(
        "  prometheus: {}\n",
        "  prometheus: {}\n  prometheus/plain:\n    path: /metrics-plain\n    vadvisor_names: false\n",
    );
    let agent = Agent::start(&config);
    let fetch = |path: &str, accept: Option<&str>| -> (String, String) {
        let mut req = client().get(format!("{}{path}", agent.base));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let r = req.send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (ct, r.text().expect("body"))
    };
    let complete = |body: &str| {
        guests.iter().all(|(_, u)| {
            [
                "vm_cpu_time_seconds_total{",
                "vm_memory_actual_balloon_bytes{",
                "vm_disk_read_bytes_total{",
                "vm_network_receive_bytes_total{",
            ]
            .iter()
            .all(|f| {
                body.lines()
                    .any(|l| l.starts_with(f) && l.contains(u.as_str()))
            })
        })
    };
    let started = Instant::now();
    let ready = wait_for(Duration::from_secs(20), || {
        complete(&fetch("/metrics", None).1).then_some(())
    });
    assert!(
        ready.is_some(),
        "not every guest has cpu/memory/block/net series after {:?}",
        started.elapsed()
    );

    // Classic format, our names only: nothing at all to report.
    let (ct, plain) = fetch("/metrics-plain", None);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let (code, problems) = promtool(&plain);
    assert_eq!(
        (code, &problems),
        (0, &vec![]),
        "promtool on /metrics-plain:\n{plain}"
    );

    // Classic format with vAdvisor's names: only the lint about their milliseconds.
    let (_, with_vadvisor) = fetch("/metrics", None);
    let (code, problems) = promtool(&with_vadvisor);
    let expected: Vec<String> = [
        "vm_cpu_milliseconds_total",
        "vm_cpu_system_milliseconds_total",
        "vm_cpu_user_milliseconds_total",
        "vm_vcpu_milliseconds_total",
    ]
    .iter()
    .map(|n| format!("{n} use base unit \"seconds\" instead of \"milliseconds\""))
    .collect();
    let mut sorted = problems.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "promtool on /metrics (exit {code})");

    // OpenMetrics: promtool 2.42 reads only the classic format, so it parses the
    // exposition (no parse error: exit code 3 = lints only) and reads every counter's
    // `<family>_total` samples as an undeclared metric. Nothing else may be reported.
    // (Prometheus' own OpenMetrics parser checks it in the scrape test above.)
    for path in ["/metrics-plain", "/metrics"] {
        let (ct, om) = fetch(path, Some(PROMETHEUS_ACCEPT));
        assert_eq!(
            ct,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(om.ends_with("# EOF\n"));
        let counters: Vec<String> = om
            .lines()
            .filter_map(|l| {
                l.strip_prefix("# TYPE ")?
                    .strip_suffix(" counter")
                    .map(|f| format!("{f}_total no help text"))
            })
            .collect();
        let (code, problems) = promtool(&om);
        let other: Vec<&String> = problems
            .iter()
            .filter(|p| !counters.contains(p) && !expected.contains(p))
            .collect();
        assert!(
            other.is_empty() && code != 1,
            "promtool on OpenMetrics {path} (exit {code}): {other:?}"
        );
    }
}
