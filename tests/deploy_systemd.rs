//! `deploy/systemd/vadvisor.service`: `systemd-analyze verify` accepts it with no
//! warning (with `ExecStart` pointing at the built binary: verify also checks that the
//! program exists), `systemd-analyze security --offline` rates its exposure low, and it has
//! the hardening the deployment docs promise.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; `bash scripts/install-test-peers.sh`
//! installs it when missing, no running systemd needed).
//! Ignored by a plain `cargo test`; `scripts/test.sh` runs them with `--include-ignored`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = "deploy/systemd/vadvisor.service";
const INSTALLED_BIN: &str = "/usr/local/bin/vadvisor";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn unit_text() -> String {
    std::fs::read_to_string(repo(UNIT)).expect("read the unit")
}

/// Every `Key=value` of the unit, by key (repeated keys keep every value).
fn directives(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is missing ({e}): run `bash scripts/install-test-peers.sh`")
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The unit in a temp dir as `vadvisor.service`, its program replaced by the built one.
fn unit_with_built_binary() -> (tempfile::TempDir, PathBuf) {
    let unit = unit_text();
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED_BIN}")),
        "the unit runs {INSTALLED_BIN}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vadvisor.service");
    std::fs::write(
        &path,
        unit.replace(
            &format!("ExecStart={INSTALLED_BIN}"),
            &format!("ExecStart={}", env!("CARGO_BIN_EXE_vadvisor")),
        ),
    )
    .expect("write unit");
    (dir, path)
}

#[test]
#[ignore = "needs systemd-analyze: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn systemd_analyze_verify_accepts_the_unit_without_a_warning() {
    let (_dir, path) = unit_with_built_binary();
    let out = systemd_analyze(&["verify", path.to_str().expect("utf-8 path")]);
    let report = text(&out);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify (exit {:?}):\n{report}",
        out.status.code()
    );

    // verify really reads the unit: a misspelt directive is reported...
    let bad = path.with_file_name("misspelt.service");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&path)
            .expect("unit")
            .replace("ProtectSystem=strict", "ProtectSytem=strict"),
    )
    .expect("write");
    let out = systemd_analyze(&["verify", bad.to_str().expect("utf-8 path")]);
    assert!(
        text(&out).contains("Unknown key 'ProtectSytem'"),
        "systemd-analyze verify did not notice a misspelt key:\n{}",
        text(&out)
    );
    // ...and so is a program that does not exist (the unit as shipped, where the agent
    // is not installed).
    if !Path::new(INSTALLED_BIN).exists() {
        let out = systemd_analyze(&["verify", repo(UNIT).to_str().expect("utf-8 path")]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("{INSTALLED_BIN} is not executable")),
            "{}",
            text(&out)
        );
    }
}

#[test]
#[ignore = "needs systemd-analyze: bash scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn systemd_analyze_security_rates_the_unit_ok() {
    let (_dir, path) = unit_with_built_binary();
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--no-pager",
        path.to_str().expect("utf-8 path"),
    ]);
    let report = text(&out);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vadvisor.service:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("systemd-analyze security: exposure {level}");
    // systemd's scale: < 2 is "OK", 10 is an unprotected service.
    assert!(level <= 2.0, "exposure {level}:\n{report}");
}

#[test]
fn the_unit_has_the_promised_hardening() {
    let d = directives(&unit_text());
    let one = |k: &str| -> &str {
        let v = d.get(k).unwrap_or_else(|| panic!("{UNIT}: no {k}="));
        v.last().map(String::as_str).unwrap_or("")
    };
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("SupplementaryGroups"), "libvirt");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("Restart"), "on-failure");
    assert!(
        one("ExecReload").contains("-HUP $MAINPID"),
        "reload = SIGHUP"
    );
    assert!(one("ReadOnlyPaths").contains("/run/libvirt"));
    // The state directory is where the default config keeps the events database.
    let state = one("StateDirectory");
    let config = std::fs::read_to_string(repo("config.example.yaml")).expect("config");
    assert!(
        config.contains(&format!("path: /var/lib/{state}/events.db")),
        "StateDirectory={state} does not hold the default events database"
    );
    assert_eq!(one("WantedBy"), "multi-user.target");
}
