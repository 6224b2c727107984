//! Black-box tests of the command line: config validation (file, line, column, valid
//! choices, exit code 2), `--print-default-config`, and the built-in defaults.

use std::io::Write;
use std::process::Command;

fn vadvisor(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .args(args)
        .output()
        .expect("run vadvisor")
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    f.write_all(text.as_bytes()).expect("write");
    f
}

/// Runs `--check-config` on `yaml` in a file; asserts exit code 2 and returns the file's
/// path and the error output.
fn check_config_fails(yaml: &str) -> (String, String) {
    let f = write(yaml);
    let path = f.path().display().to_string();
    let out = vadvisor(&["--check-config", &path]);
    assert_eq!(out.status.code(), Some(2));
    (path, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_config_reports_every_error_with_line_and_column() {
    let (path, stderr) = check_config_fails(
        "libvirt:\n  uri: qemu:///system\n  timeout: 5s\ncollectors:\n  cpu:\n    interval: 0s\n    per_vcpus: true\n  disk: {}\nsinks:\n  rest:\n    max_samples: many\n",
    );
    let expect = [
        format!("{path}:3:3: libvirt.timeout: unknown field `timeout`, expected one of `uri`, `call_timeout`"),
        format!("{path}:6:15: collectors.cpu.interval: duration `0s` must be greater than 0"),
        format!("{path}:7:5: collectors.cpu.per_vcpus: unknown field `per_vcpus`, expected `per_vcpu`"),
        format!("{path}:8:3: collectors.disk: unknown collector type `disk`, expected one of `block`, `cpu`, `dirtyrate`, `events`, `host`, `jobs`, `memory`, `net`, `specs`"),
        format!("{path}:11:18: sinks.rest.max_samples: invalid type: string \"many\", expected usize"),
    ];
    for e in &expect {
        assert!(stderr.contains(e.as_str()), "missing `{e}` in:\n{stderr}");
    }
    assert!(stderr.contains("5 errors in"), "{stderr}");
}

#[test]
fn plugin_option_errors_are_located_and_list_choices() {
    let (path, stderr) = check_config_fails("collectors:\n  cpu:\n    per_vcpus: true\n");
    assert!(
        stderr.contains(&format!(
            "{path}:3:5: collectors.cpu.per_vcpus: unknown field `per_vcpus`, expected `per_vcpu`"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("interval, timeout, enabled"), "{stderr}");
}

#[test]
fn a_sink_path_may_not_shadow_a_core_endpoint() {
    let (path, stderr) =
        check_config_fails("sinks:\n  prometheus:\n    path: /healthz\n  rest: {}\n");
    assert!(
        stderr.contains(&format!(
            "{path}:3:11: sinks.prometheus.path: HTTP path `/healthz` is the agent's own endpoint"
        )),
        "{stderr}"
    );
}

#[test]
fn valid_config_checks_clean() {
    let out = vadvisor(&[
        "--check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = vadvisor(&["--config", "/nonexistent/vadvisor.yaml"]);
    assert_eq!(out.status.code(), Some(2), "a config error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/vadvisor.yaml: cannot read the config file: No such file"),
        "{stderr}"
    );
    assert!(!stderr.contains(":0:0"), "{stderr}");
}

#[test]
fn a_directory_or_binary_config_file_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = write("");
    std::fs::write(binary.path(), [0x7f, b'E', b'L', b'F', 0, 0, 1, 2]).expect("write");
    let latin1 = write("");
    std::fs::write(latin1.path(), b"sinks:\n  rest: {} # caf\xe9\n").expect("write");
    for (path, message) in [
        (
            dir.path().display().to_string(),
            "is a directory, not a config file",
        ),
        (binary.path().display().to_string(), "is not a text file"),
        (latin1.path().display().to_string(), "is not a text file"),
    ] {
        for flag in ["--config", "--check-config"] {
            let out = vadvisor(&[flag, &path]);
            assert_eq!(out.status.code(), Some(2), "{flag} {path}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(&format!("{path}: {message}")), "{stderr}");
            assert!(!stderr.contains(":0:0"), "{stderr}");
        }
    }
}

#[test]
fn errors_in_one_http_key_do_not_hide_another() {
    let (path, stderr) =
        check_config_fails("http:\n  listen: nope\n  write_timeout: 0s\n  max_connections: 0\n");
    for e in [
        format!("{path}:2:11: http.listen: invalid socket address syntax"),
        format!("{path}:3:18: http.write_timeout: must be greater than 0"),
        format!("{path}:4:20: http.max_connections: must be between 1 and"),
    ] {
        assert!(stderr.contains(&e), "missing `{e}` in:\n{stderr}");
    }
}

#[test]
fn sizes_intervals_and_the_libvirt_uri_are_checked() {
    let (path, stderr) = check_config_fails(
        "libvirt:\n  uri: '::::'\n  max_concurrent_calls: 100000\ncollectors:\n  cpu:\n    interval: 50ms\nsinks:\n  events:\n    path: ':memory:'\n    client_buffer: 18446744073709551615\n  rest:\n    max_samples: 18446744073709551615\n",
    );
    for e in [
        format!("{path}:2:8: libvirt.uri: invalid libvirt URI `::::`"),
        format!("{path}:3:25: libvirt.max_concurrent_calls: must be between 1 and 256"),
        format!("{path}:6:15: collectors.cpu.interval: must be at least 100ms"),
        format!("{path}:10:20: sinks.events.client_buffer: must be between 1 and 65536"),
        format!("{path}:12:18: sinks.rest.max_samples: must be between 1 and 100000"),
    ] {
        assert!(stderr.contains(&e), "missing `{e}` in:\n{stderr}");
    }
    let out = vadvisor(&[
        "--check-config",
        &write("{}").path().display().to_string(),
        "--libvirt-uri",
        "qemu ssh",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--libvirt-uri: invalid libvirt URI `qemu ssh`"),
        "{stderr}"
    );
    for good in [
        "qemu:///system",
        "qemu+ssh://root@host/system?keyfile=/k",
        "test:///default",
        "xen:///",
    ] {
        let out = vadvisor(&[
            "--check-config",
            &write("{}").path().display().to_string(),
            "--libvirt-uri",
            good,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{good}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn print_default_config_is_the_example_file() {
    let out = vadvisor(&["--print-default-config"]);
    assert_eq!(out.status.code(), Some(0));
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .expect("read");
    assert_eq!(String::from_utf8_lossy(&out.stdout), example);
}

#[test]
fn remote_write_option_errors_are_located_and_secrets_not_echoed() {
    let (path, stderr) = check_config_fails(
        "sinks:\n  remote_write/a:\n    url: ftp://x/\n  remote_write/b:\n    url: http://r/api/v1/write\n    basic_auth:\n      username: u\n      password: hunter2\n      password_file: /etc/hostname\n",
    );
    for e in [
        format!("{path}:3:10: sinks.remote_write/a.url: must be an http:// or https:// URL"),
        format!("{path}:9:22: sinks.remote_write/b.basic_auth.password_file: password and password_file are mutually exclusive"),
    ] {
        assert!(stderr.contains(e.as_str()), "missing `{e}` in:\n{stderr}");
    }
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let (path, stderr) = check_config_fails("sinks:\n  remote_write/c:\n    url: http://r/api/v1/write\n    buffer:\n      type: tape\n");
    let e = format!("{path}:5:13: sinks.remote_write/c.buffer.type: unknown variant `tape`, expected `memory` or `disk`");
    assert!(stderr.contains(e.as_str()), "missing `{e}` in:\n{stderr}");
}

/// Every file and directory under `dir`, recursively.
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(tree(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

#[test]
fn check_config_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state/events.db");
    let disabled_db = dir.path().join("disabled/events.db");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "sinks:\n  rest: {{}}\n  events:\n    path: {}\n  events/off:\n    enabled: false\n    path: {}\n",
            db.display(),
            disabled_db.display()
        ),
    )
    .expect("write config");
    let before = tree(dir.path());
    let out = vadvisor(&["--check-config", &config.display().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tree(dir.path()),
        before,
        "--check-config changed the filesystem"
    );
    assert!(!db.exists() && !disabled_db.exists());

    // A disabled instance is still validated.
    std::fs::write(
        &config,
        "sinks:\n  rest: {}\n  events/off:\n    enabled: false\n    retention: 0s\n",
    )
    .expect("write config");
    let out = vadvisor(&["--check-config", &config.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sinks.events/off.retention: must be greater than 0"),
        "{stderr}"
    );
}
