//! TLS and basic auth on the shared HTTP server, configured by an exporter-toolkit web
//! config file: a real TLS client (curl) succeeds with the right password, a wrong one
//! gets 401 with a JSON body, plain HTTP to the TLS port is refused, and /healthz stays
//! open for container health checks. The certificate comes from `openssl`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run vadvisor");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `curl` → (HTTP status or 0 when the request failed, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tls_and_basic_auth_from_a_web_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(dir.path().join("server.key"))
        .arg("-out")
        .arg(dir.path().join("server.crt"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {}\n",
            hash("correct horse")
        ),
    )
    .expect("write web config");
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "libvirt:\n  uri: test:///default\nhttp:\n  listen: 127.0.0.1:{port}\n  web_config_file: {}\ncollectors:\n  cpu: {{}}\nsinks:\n  rest: {{}}\n",
            web.display()
        ),
    )
    .expect("write config");
    let check = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--check-config")
        .arg(&config)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let _agent = Child(
        Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("start"),
    );
    let base = format!("https://127.0.0.1:{port}");
    let ca = dir.path().join("server.crt").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    while curl(&["--cacert", &ca, &format!("{base}/healthz")]).0 != 200 {
        assert!(Instant::now() < deadline, "agent did not answer over TLS");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (code, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:correct horse",
        &format!("{base}/api/v1.0/stats/"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).is_ok(),
        "{body}"
    );

    let (code, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:wrong",
        &format!("{base}/api/v1.0/stats/"),
    ]);
    assert_eq!(code, 401);
    let v: serde_json::Value = serde_json::from_str(&body).expect("401 body is JSON");
    assert_eq!(v["status"], 401);
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "mallory:correct horse",
        &format!("{base}/api/v1.0/stats/"),
    ]);
    assert_eq!(code, 401, "unknown user");
    let (code, _) = curl(&["--cacert", &ca, &format!("{base}/api/v1.0/stats/")]);
    assert_eq!(code, 401, "no credentials");
    // The scheme is case-insensitive (RFC 7235).
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-H",
        "Authorization: bASIC YWxpY2U6Y29ycmVjdCBob3JzZQ==",
        &format!("{base}/api/v1.0/stats/"),
    ]);
    assert_eq!(code, 200, "lower-case scheme");

    // The open /healthz says up/down only; its inventory needs credentials.
    let (code, body) = curl(&["--cacert", &ca, &format!("{base}/healthz")]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v, serde_json::json!({"status": "ok"}), "{body}");
    let (code, _) = curl(&["--cacert", &ca, &format!("{base}/healthz?verbose=true")]);
    assert_eq!(code, 401, "inventory without credentials");
    let (code, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:correct horse",
        &format!("{base}/healthz?verbose=true"),
    ]);
    assert_eq!(code, 200);
    assert!(
        body.contains("\"domains\"") && body.contains("\"libvirt\""),
        "{body}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, _) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_ne!(code, 200, "plain HTTP must be refused when TLS is required");
    // A client that does not trust the certificate fails the handshake.
    let (code, _) = curl(&[&format!("{base}/healthz")]);
    assert_eq!(code, 0);

    // Repeated failures from one address: from the third in a row, 429 with
    // Retry-After, even for the right password, until the delay passed.
    for attempt in 0..3 {
        let (code, _) = curl(&[
            "--cacert",
            &ca,
            "-u",
            &format!("alice:wrong {attempt}"),
            &format!("{base}/api/v1.0/stats/"),
        ]);
        assert_eq!(code, 401);
    }
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-m",
            "10",
            "--cacert",
            &ca,
            "-u",
            "alice:correct horse",
        ])
        .arg(format!("{base}/api/v1.0/stats/"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/1.1 429"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"status\":429"), "{text}");
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "alice:correct horse",
        &format!("{base}/api/v1.0/stats/"),
    ]);
    assert_eq!(code, 200, "allowed again after Retry-After");
}

#[test]
fn hash_password_refuses_what_bcrypt_would_truncate() {
    let run = |password: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .arg("--hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vadvisor");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let out = run(&"x".repeat(73));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("73 bytes") && stderr.contains("72"),
        "{stderr}"
    );
    let out = run(&"é".repeat(36)); // 72 bytes
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$2b$"));
}

#[test]
fn web_config_mistakes_are_located_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  bob: hunter2\ntls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")
        .expect("write");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("http:\n  web_config_file: {}\n", web.display()),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--check-config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:8: basic_auth_users.bob: expected a bcrypt hash",
            web.display()
        )),
        "{stderr}"
    );
}
