//! Runs the web UI's JavaScript unit tests (counter rates, resets, gaps:
//! plugins/sinks/src/ui/assets/tests) with node's built-in test runner.

use std::process::Command;

#[test]
#[ignore = "needs node (scripts/install-test-peers.sh installs it)"]
fn ui_rate_logic_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/sinks/src/ui/assets");
    let out = Command::new("node")
        .args(["--test", "tests/rates.test.js"])
        .current_dir(dir)
        .output()
        .expect("run node (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 11,
        "expected at least 11 passing tests:\n{stdout}"
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
