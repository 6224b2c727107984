//! The Prometheus alerting rules shipped in `deploy/prometheus/`: `promtool check rules`
//! finds nothing wrong, the unit tests (`promtool test rules`) pass, every alert has a
//! test where it fires and one where it does not, the tests notice when an alert's
//! expression is broken (each alert in turn is made never to fire and the tests must
//! fail), and every alert has its runbook section in `docs/alerts.md`.
//!
//! On the lab, a real Prometheus scraping the agent evaluates the rules without an
//! error, and VMDownUnexpectedly goes pending for a throw-away guest whose QEMU is
//! killed, but not for one an operator destroys.
//!
//! Needs promtool and prometheus (Debian's `prometheus` package,
//! `bash scripts/install-test-peers.sh`) and, for the last test, the lab; ignored by a
//! plain `cargo test`, `scripts/test.sh` runs them with `--include-ignored`, and they
//! fail (do not pass) when a tool is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::guest::ThrowawayGuest;
use common::prometheus::Prometheus;
use common::{lab_guests, wait_for, Agent};
use serde_json::Value;

const RULES: &str = "deploy/prometheus/vadvisor-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/vadvisor-rules.test.yml";
const RUNBOOK: &str = "docs/alerts.md";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is missing ({e}): run `bash scripts/install-test-peers.sh`")
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (alert name, rule) of every alerting rule, in file order.
fn alerts(rules: &Value) -> Vec<(String, Value)> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| Some((r["alert"].as_str()?.to_string(), r.clone())))
        .collect()
}

#[test]
#[ignore = "needs promtool: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn promtool_check_rules_finds_every_rule_and_no_problem() {
    let rules = yaml(&repo(RULES));
    let n = alerts(&rules).len();
    assert!(n >= 9, "only {n} alerts");
    let out = promtool(&["check", "rules", RULES], &repo(""));
    let report = text(&out);
    assert!(out.status.success(), "promtool check rules:\n{report}");
    assert!(
        report.contains(&format!("SUCCESS: {n} rules found")),
        "promtool check rules:\n{report}"
    );
}

#[test]
#[ignore = "needs promtool: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn promtool_unit_tests_pass_and_cover_every_alert_firing_and_not_firing() {
    let rules = yaml(&repo(RULES));
    let tests = yaml(&repo(RULE_TESTS));
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for (name, _) in alerts(&rules) {
        let of_alert: Vec<&&Value> = cases.iter().filter(|c| c["alertname"] == *name).collect();
        let fires = of_alert
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
        let silent = of_alert
            .iter()
            .any(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty()));
        assert!(fires, "{name}: no unit test where it fires");
        assert!(silent, "{name}: no unit test where it does not fire");
    }

    let out = promtool(&["test", "rules", RULE_TESTS], &repo(""));
    let report = text(&out);
    assert!(out.status.success(), "promtool test rules:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

/// Each alert in turn gets an expression that never fires: the unit tests must fail,
/// naming that alert. So every alert's firing case really depends on its expression.
#[test]
#[ignore = "needs promtool: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn the_unit_tests_fail_when_an_alert_can_no_longer_fire() {
    let source = std::fs::read_to_string(repo(RULES)).expect("rules");
    let tests_yaml = std::fs::read_to_string(repo(RULE_TESTS)).expect("rule tests");
    let rules = yaml(&repo(RULES));
    for (name, rule) in alerts(&rules) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broken = rules.clone();
        for group in broken["groups"].as_array_mut().expect("groups") {
            for r in group["rules"].as_array_mut().expect("rules") {
                if r["alert"] == *name {
                    r["expr"] = Value::String("vector(1) == 0".into());
                }
            }
        }
        assert_ne!(rule["expr"], "vector(1) == 0");
        // JSON is YAML: promtool reads the broken copy as it is.
        std::fs::write(
            dir.path().join("vadvisor-rules.yml"),
            serde_json::to_string_pretty(&broken).expect("json"),
        )
        .expect("write rules");
        std::fs::write(dir.path().join("vadvisor-rules.test.yml"), &tests_yaml)
            .expect("write tests");
        let out = promtool(&["test", "rules", "vadvisor-rules.test.yml"], dir.path());
        let report = text(&out);
        assert!(
            !out.status.success(),
            "{name} never fires, yet the unit tests pass:\n{report}"
        );
        assert!(
            report.contains(&format!("alertname: {name},")),
            "{name} never fires; promtool should name it:\n{report}"
        );
    }
    // The unbroken rules pass in the same setting (so the failures above are the
    // broken expressions, not the copy).
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("vadvisor-rules.yml"), &source).expect("write rules");
    std::fs::write(dir.path().join("vadvisor-rules.test.yml"), &tests_yaml).expect("write");
    let out = promtool(&["test", "rules", "vadvisor-rules.test.yml"], dir.path());
    assert!(out.status.success(), "{}", text(&out));
}

/// Not gated: needs no tool. Every alert has a runbook section and a table row in
/// docs/alerts.md, and its `runbook` annotation points at that section.
#[test]
fn every_alert_has_a_runbook_entry() {
    let doc = std::fs::read_to_string(repo(RUNBOOK)).expect("docs/alerts.md");
    let rules = yaml(&repo(RULES));
    let alerts = alerts(&rules);
    assert!(!alerts.is_empty());
    for (name, rule) in &alerts {
        let anchor = name.to_lowercase();
        assert!(
            doc.lines().any(|l| l.trim() == format!("### {name}")),
            "{RUNBOOK}: no `### {name}` section"
        );
        assert!(
            doc.contains(&format!("| [{name}](#{anchor}) |")),
            "{RUNBOOK}: no table row for {name}"
        );
        assert_eq!(
            rule["annotations"]["runbook"],
            format!("{RUNBOOK}#{anchor}"),
            "{name}: runbook annotation"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: no {key}"
            );
        }
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
    }
    // No runbook section for an alert that does not exist.
    for l in doc.lines() {
        if let Some(title) = l.strip_prefix("### ") {
            assert!(
                alerts.iter().any(|(n, _)| n == title.trim()),
                "{RUNBOOK}: section {title} has no alert"
            );
        }
    }
}

// ------------------------------------------------------------------ the lab

const AGENT: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    interval: 1s\n  memory:\n    interval: 1s\n  block:\n    interval: 1s\n  net:\n    interval: 1s\n  events: {}\nsinks:\n  events:\n    path: ':memory:'\n  prometheus: {}\n";

/// `alertname` alerts (pending or firing) by their `name` label.
fn alerts_named(prom: &Prometheus, alertname: &str) -> Vec<(String, String)> {
    prom.api("/api/v1/alerts", &[])["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["labels"]["alertname"] == alertname)
        .map(|a| {
            (
                a["labels"]["name"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `vm_up` of the VM called `name`, as Prometheus has it now.
fn vm_up(prom: &Prometheus, name: &str) -> Option<f64> {
    let q = format!("vm_up{{name=\"{name}\"}}");
    prom.api("/api/v1/query", &[("query", &q)])["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn a_real_prometheus_evaluates_the_rules_and_a_killed_vm_is_down_unexpectedly() {
    lab_guests();
    let agent = Agent::start(AGENT);
    let target = agent.base.trim_start_matches("http://").to_string();
    // The rules select job="vadvisor".
    let prom = Prometheus::start_with_rules(&target, "vadvisor", &repo(RULES));

    // Every rule is evaluated on the agent's real series, without an error.
    let rules = yaml(&repo(RULES));
    let n = alerts(&rules).len();
    let evaluated = wait_for(Duration::from_secs(30), || {
        let groups = prom.api("/api/v1/rules", &[]);
        let all: Vec<Value> = groups["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (all.len() == n && all.iter().all(|r| r["health"] == "ok")).then_some(all)
    });
    let evaluated = evaluated.unwrap_or_else(|| {
        panic!(
            "the rules are not all evaluated without error: {}",
            prom.api("/api/v1/rules", &[])
        )
    });
    for r in &evaluated {
        assert_eq!(r["lastError"].as_str().unwrap_or(""), "", "{r}");
    }

    // A guest whose QEMU dies: VMDownUnexpectedly (pending: it has `for: 1m`).
    let killed = ThrowawayGuest::start("vadv-alert-killed");
    let up = wait_for(Duration::from_secs(30), || {
        (vm_up(&prom, &killed.name) == Some(1.0)).then_some(())
    });
    assert!(up.is_some(), "{} never up in Prometheus", killed.name);
    assert!(alerts_named(&prom, "VMDownUnexpectedly").is_empty());
    killed.kill_qemu();
    let alert = wait_for(Duration::from_secs(30), || {
        alerts_named(&prom, "VMDownUnexpectedly")
            .into_iter()
            .find(|(name, _)| *name == killed.name)
    });
    assert!(
        alert.is_some(),
        "no VMDownUnexpectedly for {} after its QEMU was killed; vm_up {:?}; alerts {}",
        killed.name,
        vm_up(&prom, &killed.name),
        prom.api("/api/v1/alerts", &[])
    );
    println!("killed guest: VMDownUnexpectedly {:?}", alert);

    // A guest an operator destroys: an orderly stop, no alert for it.
    let destroyed = ThrowawayGuest::start("vadv-alert-destroyed");
    let up = wait_for(Duration::from_secs(30), || {
        (vm_up(&prom, &destroyed.name) == Some(1.0)).then_some(())
    });
    assert!(up.is_some(), "{} never up in Prometheus", destroyed.name);
    destroyed.destroy();
    let down = wait_for(Duration::from_secs(30), || {
        (vm_up(&prom, &destroyed.name) == Some(0.0)).then_some(())
    });
    assert!(down.is_some(), "vm_up of {} never 0", destroyed.name);
    for _ in 0..10 {
        let alerts = alerts_named(&prom, "VMDownUnexpectedly");
        assert!(
            !alerts.iter().any(|(name, _)| *name == destroyed.name),
            "VMDownUnexpectedly for a destroyed guest: {alerts:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
