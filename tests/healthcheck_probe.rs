//! `vadvisor --healthcheck` without a URL finds the agent even when the agent got its
//! port from the command line only (as with `docker run IMAGE --port N`), through the
//! address the agent records at start. Its own test binary: no other agent runs
//! meanwhile to overwrite the record.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn probe() -> bool {
    Command::new(env!("CARGO_BIN_EXE_vadvisor"))
        .arg("--healthcheck")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn probe_without_arguments_follows_the_agents_port_flag() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut agent = Child(
        Command::new(env!("CARGO_BIN_EXE_vadvisor"))
            .args([
                "--libvirt-uri",
                "test:///default",
                "--listen",
                "127.0.0.1:8181",
                "--port",
                &port.to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("start"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let ours = format!("http://127.0.0.1:{port}/healthz");
    while std::fs::read_to_string(vadvisor::healthcheck::ADDRESS_FILE)
        .map(|s| s.trim().to_string())
        .ok()
        != Some(ours.clone())
    {
        assert!(Instant::now() < deadline, "the agent never recorded {ours}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        probe(),
        "the probe without arguments reaches the agent on port {port}"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.0.id().to_string())
        .status();
    let status = agent.0.wait().expect("wait");
    assert!(status.success());
    assert!(
        !probe(),
        "after the agent stopped, the probe reports unhealthy"
    );
}
