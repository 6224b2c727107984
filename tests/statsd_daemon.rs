//! Black-box tests of the `statsd` sink: the built agent, against libvirt's in-process
//! `test:///default` driver, pushing to a real StatsD daemon (Etsy's `statsd` from npm,
//! installed by `scripts/install-test-peers.sh`) that is read back over its TCP management
//! interface (`gauges`, `counters`); and StatsD servers that are down or do not resolve,
//! which must not disturb the agent.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for, Agent};

const U: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

/// Where `scripts/install-test-peers.sh` puts the daemon (or `$VADVISOR_STATSD_JS`).
fn statsd_js() -> PathBuf {
    let path = std::env::var_os("VADVISOR_STATSD_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let peers = std::env::var_os("VADVISOR_PEERS_DIR")
                .unwrap_or_else(|| "/opt/vadvisor-test-peers".into());
            PathBuf::from(peers).join("statsd/node_modules/statsd/stats.js")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-peers.sh",
        path.display()
    );
    path
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// A StatsD daemon on free loopback ports, without backends, flushing once an hour so
/// that its counters hold the sum of everything received since it started.
struct StatsdDaemon {
    child: Child,
    port: u16,
    mgmt: u16,
    dir: tempfile::TempDir,
}

impl StatsdDaemon {
    fn start() -> StatsdDaemon {
        let js = statsd_js();
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, mgmt) = (free_udp_port(), free_port());
        let config = dir.path().join("config.js");
        std::fs::write(
            &config,
            format!(
                "{{ port: {port}, address: \"127.0.0.1\", mgmt_address: \"127.0.0.1\", mgmt_port: {mgmt}, \
                 flushInterval: 3600000, backends: [] }}\n"
            ),
        )
        .expect("write statsd config");
        let log = std::fs::File::create(dir.path().join("statsd.log")).expect("log file");
        let child = Command::new("node")
            .arg(&js)
            .arg(&config)
            .current_dir(js.parent().expect("statsd dir"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start node (is nodejs installed?)");
        let daemon = StatsdDaemon {
            child,
            port,
            mgmt,
            dir,
        };
        let up = wait_for(Duration::from_secs(15), || {
            daemon.command("health").ok().filter(|h| h.contains("up"))
        });
        assert!(
            up.is_some(),
            "statsd did not answer on its management port: {}",
            daemon.log()
        );
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("statsd.log")).unwrap_or_default()
    }

    /// One management command; the answer up to its `END` line.
    fn command(&self, cmd: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.mgmt))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        if cmd == "health" {
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            return Ok(line);
        }
        let mut out = String::new();
        let mut buf = [0u8; 65_536];
        while !out.contains("\nEND") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        Ok(out)
    }

    /// `gauges` or `counters` as name → value (parses node's `util.inspect` output).
    fn dump(&self, what: &str) -> BTreeMap<String, f64> {
        let text = self
            .command(what)
            .unwrap_or_else(|e| panic!("statsd `{what}`: {e}"));
        let body = text.split("END").next().unwrap_or_default();
        let inner = body.trim().trim_start_matches('{').trim_end_matches('}');
        inner
            .split([',', '\n'])
            .filter_map(|entry| {
                let (k, v) = entry.trim().rsplit_once(':')?;
                Some((
                    k.trim().trim_matches('\'').to_string(),
                    v.trim().parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for StatsdDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_config(sinks: &str) -> String {
    format!(
        "libvirt:\n  uri: test:///default\nhttp:\n  listen: {{listen}}\ncollectors:\n  cpu:\n    interval: 1s\n  \
         memory:\n    interval: 1s\n  block:\n    interval: 1s\n  net:\n    interval: 1s\nsinks:\n  rest:\n    \
         max_samples: 10\n{sinks}"
    )
}

#[test]
#[ignore = "needs the npm statsd daemon: scripts/install-test-peers.sh"]
fn gauges_deltas_and_device_names_reach_a_real_statsd() {
    let statsd = StatsdDaemon::start();
    let p = statsd.port;
    let agent = Agent::start(&agent_config(&format!(
        "  statsd:\n    host: 127.0.0.1\n    port: {p}\n    interval: 1s\n  statsd/delta:\n    host: 127.0.0.1\n    \
         port: {p}\n    interval: 1s\n    prefix: vmdelta\n    counters: delta\n"
    )));
    let disk_g = format!("vm.{U}.vda.disk.read.bytes.total");
    let disk_c = format!("vmdelta.{U}.vda.disk.read.bytes.total");
    let ready = wait_for(Duration::from_secs(20), || {
        let (g, c) = (statsd.dump("gauges"), statsd.dump("counters"));
        (g.contains_key(&disk_g) && c.get(&disk_c).is_some_and(|v| *v > 0.0)).then_some(())
    });
    let gauges = statsd.dump("gauges");
    let counters = statsd.dump("counters");
    assert!(
        ready.is_some(),
        "no data in statsd within 20 s\ngauges: {gauges:?}\ncounters: {counters:?}"
    );

    // Gauge mode: vAdvisor's names, `up`, totals as gauges in their StatsD unit.
    assert_eq!(gauges.get(&format!("vm.{U}.up")), Some(&1.0), "{gauges:?}");
    assert_eq!(
        gauges.get(&format!("vmdelta.{U}.up")),
        Some(&1.0),
        "{gauges:?}"
    );
    let cpu_ms = gauges[&format!("vm.{U}.cpu.total")];
    assert!(cpu_ms > 0.0);
    let stats = agent.get_json(&format!("/api/v1.0/stats/{U}"));
    let rest_ms = stats[U]
        .as_array()
        .and_then(|s| s.last())
        .map(|s| s["cpu"]["usage"]["cpu_time"].as_f64());
    let rest_ms = rest_ms.flatten().expect("REST cpu_time");
    assert!(
        (cpu_ms / rest_ms - 1.0).abs() < 0.05,
        "cpu.total in ms like REST: {cpu_ms} vs {rest_ms}"
    );
    assert_eq!(
        gauges.get(&format!("vm.{U}.memory.bytes")),
        Some(&2_147_483_648.0),
        "balloon KiB sent as bytes"
    );
    for name in [
        format!("vm.{U}.0.vcpu.total"),
        format!("vm.{U}.vda.disk.write.requests.total"),
        format!("vm.{U}.testnet0.network.receive.bytes.total"),
    ] {
        assert!(gauges.contains_key(&name), "missing {name} in {gauges:?}");
    }
    assert!(
        !counters.keys().any(|k| k.starts_with("vm.")),
        "gauge mode sends no counters: {counters:?}"
    );
    assert_eq!(
        counters.get("statsd.bad_lines_seen"),
        Some(&0.0),
        "{counters:?}"
    );

    // Delta mode: counters hold the sum of the deltas, which grows like the total does —
    // nothing like the cumulative total itself.
    assert!(
        !gauges.contains_key(&disk_c),
        "a counter is not also a gauge in delta mode"
    );
    let (g1, c1) = (gauges[&disk_g], counters[&disk_c]);
    assert!(
        c1 < g1 / 1000.0,
        "a delta, not the total: {c1} vs total {g1}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let (g2, c2) = (
        statsd.dump("gauges")[&disk_g],
        statsd.dump("counters")[&disk_c],
    );
    let (grew_total, grew_sum) = (g2 - g1, c2 - c1);
    assert!(grew_total > 0.0, "the test driver's totals grow with time");
    assert!(
        (grew_sum - grew_total).abs() <= 0.5 * grew_total,
        "the deltas add up to the growth of the total: deltas +{grew_sum}, total +{grew_total}"
    );
    for (k, v) in counters.iter().filter(|(k, _)| k.starts_with("vmdelta.")) {
        assert!(
            *v >= 0.0 && v.fract() == 0.0,
            "{k}: whole, non-negative deltas, got {v}"
        );
    }
}

#[test]
fn an_unreachable_statsd_server_does_not_disturb_the_agent() {
    let closed = free_udp_port();
    let log_path = tempfile::NamedTempFile::new().expect("log file");
    let log = log_path.reopen().expect("log");
    let mut agent = Agent::start_with_stderr(
        &agent_config(&format!(
            "  statsd:\n    host: 127.0.0.1\n    port: {closed}\n    interval: 1s\n  statsd/dns:\n    host: \
             no-such-host.invalid\n    interval: 1s\n"
        )),
        Stdio::from(log),
    );
    let samples = |agent: &Agent| {
        agent.get_json("/api/v1.0/stats/")[U]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(wait_for(Duration::from_secs(10), || (samples(&agent) >= 2)
        .then_some(()))
    .is_some());
    let before = samples(&agent);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        agent.get("/healthz").is_ok_and(|r| r.status().is_success()),
        "/healthz answers"
    );
    assert!(samples(&agent) > before, "REST keeps updating");

    let (status, took) = agent.terminate();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        took < Duration::from_secs(5),
        "the last send does not hold up shutdown: {took:?}"
    );

    let text = std::fs::read_to_string(log_path.path()).expect("read log");
    let about = |sink: &str| {
        text.lines()
            .filter(|l| {
                l.contains("StatsD") && l.contains(&format!("sink={sink} ")) && l.contains("WARN")
            })
            .count()
    };
    assert_eq!(about("statsd"), 1, "one line for the closed port:\n{text}");
    assert_eq!(
        about("statsd/dns"),
        1,
        "one line for the unknown host:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}
