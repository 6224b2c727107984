//! Black-box tests of the `remote_write` sink against the lab and a REAL receiver:
//! Debian's Prometheus 2.42 (`scripts/install-test-peers.sh`) started with
//! `--web.enable-remote-write-receiver`, queried over its HTTP API.
//!
//! - the values PromQL returns for every lab guest are those of the agent's own
//!   `/metrics` (same series, same value, the sample at the batch's time);
//! - outage: the receiver is stopped for 2+ minutes and restarted; a `query_range` with
//!   a 1 s step shows no gap in `vm_cpu_time_seconds_total`, nothing dropped;
//! - restart: the same with a disk buffer while the agent is stopped with SIGTERM and
//!   later SIGKILLed and restarted during the outage: only the seconds the agent was
//!   not running are missing;
//! - fleet: three agents with different `external_labels` (one with two sink instances)
//!   into one Prometheus: `count by (host) (vm_up)` shows all three.
//!
//! The two long scenarios run in parallel threads of one test to keep CI time down.
//! Ignored by a plain `cargo test`; `scripts/test.sh` runs them with `--include-ignored`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{client, free_port, lab_guests, wait_for, Agent};

const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// A Prometheus receiving remote writes on a fixed port, with data that survives its
/// restarts. Killed on drop.
struct Receiver {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Receiver {
    fn start() -> Receiver {
        assert!(
            Path::new(PROMETHEUS_BIN).exists(),
            "{PROMETHEUS_BIN} is missing: run `bash scripts/install-test-peers.sh`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut f = std::fs::File::create(dir.path().join("prometheus.yml")).expect("config");
        writeln!(f, "global:\n  evaluation_interval: 1m\nscrape_configs: []").expect("write");
        let mut r = Receiver {
            port: free_port(),
            dir,
            child: None,
        };
        r.run();
        r
    }

    fn run(&mut self) {
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let ready = wait_for(Duration::from_secs(60), || {
            client()
                .get(format!("{}/-/ready", self.base()))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        assert!(
            ready.is_some(),
            "prometheus on port {} not ready within 60 s",
            self.port
        );
    }

    /// Stops the server (SIGTERM, as an operator would) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::send_signal(c.id(), "TERM");
            let until = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let r = client()
            .get(format!("{}{path}", self.base()))
            .query(params)
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let v: serde_json::Value = r
            .json()
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"));
        assert_eq!(v["status"], "success", "GET {path} {params:?}: {v}");
        v["data"].clone()
    }

    /// Instant query at `time` (now if `None`): (labels, value) per series.
    fn query_at(&self, q: &str, time: Option<f64>) -> Vec<(BTreeMap<String, String>, f64)> {
        let t = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", q)];
        if let Some(t) = &t {
            params.push(("time", t));
        }
        let data = self.api("/api/v1/query", &params);
        data["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        let labels = r["metric"]
                            .as_object()?
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect();
                        Some((labels, r["value"][1].as_str()?.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `query_range` of a single-series query: (t, value) points.
    fn range(&self, q: &str, start: f64, end: f64, step: &str) -> Vec<(f64, f64)> {
        let (s, e) = (format!("{start:.3}"), format!("{end:.3}"));
        let data = self.api(
            "/api/v1/query_range",
            &[("query", q), ("start", &s), ("end", &e), ("step", step)],
        );
        let series = data["result"].as_array().cloned().unwrap_or_default();
        assert_eq!(series.len(), 1, "{q}: expected one series, got {data}");
        series[0]["values"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An agent config: four collectors every `interval`, `prometheus` and one or more
/// remote-write sinks (`(id suffix, url, extra YAML lines)`), external label `host`.
fn config(interval: &str, host: &str, sinks: &[(&str, &str, &str)]) -> String {
    let mut c = format!(
        "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {{listen}}\ncollectors:\n  cpu:\n    interval: {interval}\n  memory:\n    interval: {interval}\n  block:\n    interval: {interval}\n  net:\n    interval: {interval}\nsinks:\n  prometheus: {{}}\n"
    );
    for (id, url, extra) in sinks {
        c.push_str(&format!(
            "  remote_write{id}:\n    url: {url}\n    external_labels:\n      host: {host}\n    queue_config:\n      batch_send_deadline: 1s\n      max_backoff: 2s\n{extra}"
        ));
    }
    c
}

/// The agent's `/metrics` (classic format) as series → value, labels sorted by name.
fn scrape(agent: &Agent) -> BTreeMap<String, f64> {
    let text = agent
        .get("/metrics")
        .expect("GET /metrics")
        .text()
        .expect("body");
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let key = match series.split_once('{') {
            None => series.to_string(),
            Some((name, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split("\",").collect();
                for l in labels.iter_mut() {
                    *l = l.trim_end_matches('"');
                }
                labels.sort();
                let labels: Vec<String> = labels.iter().map(|l| format!("{l}\"")).collect();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, v);
    }
    out
}

/// A query result's series in the same key form, without `host`.
fn key(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("__name__").cloned().unwrap_or_default();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__" && k.as_str() != "host")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if rest.is_empty() {
        name
    } else {
        format!("{name}{{{}}}", rest.join(","))
    }
}

fn figure(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn promql_returns_the_agents_own_metrics_values_for_every_lab_guest() {
    let guests = lab_guests();
    let rx = Receiver::start();
    let agent = Agent::start(&config("2s", "rw-values", &[("", &rx.write_url(), "")]));
    let mut last_problem = String::new();
    let matched = wait_for(Duration::from_secs(120), || {
        // A scrape whose four collectors' batches are of one tick (time T)…
        let scraped = scrape(&agent);
        let times: Vec<f64> = ["cpu", "memory", "block", "net"]
            .iter()
            .filter_map(|c| {
                scraped
                    .get(&format!(
                        "vadvisor_collector_last_batch_timestamp_seconds{{collector=\"{c}\"}}"
                    ))
                    .copied()
            })
            .collect();
        if times.len() != 4 || times.iter().any(|t| *t != times[0]) {
            last_problem = format!("collectors' batches of different ticks: {times:?}");
            return None;
        }
        // …compared with what PromQL returns at T (the samples' timestamp: collection
        // time, in ms), once that round has arrived.
        let t = (times[0] * 1000.0).floor() / 1000.0;
        let arrived = wait_for(Duration::from_secs(30), || {
            let ts = rx.query_at(
                "min(timestamp(vm_cpu_time_seconds_total{host=\"rw-values\"}))",
                None,
            );
            ts.first().filter(|(_, v)| *v >= t).map(|_| ())
        });
        if arrived.is_none() {
            last_problem = format!("the round of {t} did not arrive within 30 s");
            return None;
        }
        let mut problems = Vec::new();
        for (name, uuid) in &guests {
            let ours: BTreeMap<&String, &f64> = scraped
                .iter()
                .filter(|(k, _)| k.starts_with("vm_") && k.contains(&format!("uuid=\"{uuid}\"")))
                .collect();
            let theirs: BTreeMap<String, f64> = rx
                .query_at(
                    &format!("{{__name__=~\"vm_.+\",uuid=\"{uuid}\",host=\"rw-values\"}}"),
                    Some(t),
                )
                .into_iter()
                .map(|(l, v)| (key(&l), v))
                .collect();
            if ours.len() < 10 {
                problems.push(format!(
                    "{name}: only {} vm_ series in /metrics",
                    ours.len()
                ));
            }
            for (k, v) in &ours {
                match theirs.get(*k) {
                    Some(x) if x == *v => {}
                    other => problems.push(format!(
                        "{name}: {k}: /metrics {v}, PromQL at {t} {other:?}"
                    )),
                }
            }
            for k in theirs.keys() {
                if !ours.contains_key(k) {
                    problems.push(format!("{name}: {k} in Prometheus, not in /metrics"));
                }
            }
        }
        if problems.is_empty() {
            Some(t)
        } else {
            last_problem = problems.join("\n");
            None
        }
    });
    let t = matched.unwrap_or_else(|| panic!("PromQL never matched /metrics:\n{last_problem}"));
    // The samples carry the batch's time.
    for (name, uuid) in &guests {
        let ts = rx.query_at(
            &format!("timestamp(vm_cpu_time_seconds_total{{uuid=\"{uuid}\",host=\"rw-values\"}})"),
            Some(t),
        );
        assert_eq!(ts.len(), 1, "{name}: {ts:?}");
        assert_eq!(ts[0].1, t, "{name}: sample at {} but batch at {t}", ts[0].1);
    }
    // Nothing failed, dropped or retried on the way.
    let m = scrape(&agent);
    assert!(figure(&m, "vadvisor_remote_write_samples_sent_total") > 0.0);
    assert_eq!(
        figure(&m, "vadvisor_remote_write_samples_dropped_total"),
        0.0,
        "{m:?}"
    );
    assert_eq!(
        figure(&m, "vadvisor_remote_write_samples_failed_total"),
        0.0
    );
}

/// Largest distance between a step and the sample it sees, over `[from, to]`: with a
/// 1 s step this is the longest stretch without a sample.
fn largest_gap(rx: &Receiver, series: &str, from: f64, to: f64) -> (f64, f64) {
    // Samples up to `to` may still be on their way (batch_send_deadline 1 s).
    let early = to + 4.0 - now_s();
    if early > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(early));
    }
    let points = rx.range(&format!("timestamp({series})"), from, to, "1s");
    assert!(
        points.len() as f64 >= (to - from) * 0.95,
        "{series}: {} points for {:.0} s",
        points.len(),
        to - from
    );
    points
        .iter()
        .map(|(t, ts)| (t - ts, *t))
        .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

/// Samples of `series` in `(from, to]`.
fn samples_between(rx: &Receiver, series: &str, from: f64, to: f64) -> f64 {
    let window = format!("{:.0}s", to - from);
    rx.query_at(&format!("count_over_time({series}[{window}])"), Some(to))
        .first()
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}

const OUTAGE: Duration = Duration::from_secs(125);

/// Waits until the agent has nothing unsent.
fn drained(agent: &Agent, what: &str) {
    let ok = wait_for(Duration::from_secs(120), || {
        let m = scrape(agent);
        (figure(&m, "vadvisor_remote_write_buffer_samples") == 0.0
            && figure(&m, "vadvisor_remote_write_last_success_timestamp_seconds") > now_s() - 5.0)
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: the agent did not catch up within 120 s"
    );
}

fn outage_scenario(guest: &str) {
    let mut rx = Receiver::start();
    let agent = Agent::start(&config("1s", "rw-outage", &[("", &rx.write_url(), "")]));
    let series = format!("vm_cpu_time_seconds_total{{name=\"{guest}\",host=\"rw-outage\"}}");
    let flowing = wait_for(Duration::from_secs(60), || {
        (!rx.query_at(&series, None).is_empty()).then_some(())
    });
    assert!(flowing.is_some(), "outage: no {series} in the receiver");
    std::thread::sleep(Duration::from_secs(5));
    let down_at = now_s();
    rx.stop();
    std::thread::sleep(OUTAGE);
    let m = scrape(&agent);
    assert!(
        figure(&m, "vadvisor_remote_write_samples_retried_total") > 0.0,
        "outage: no retry counted"
    );
    assert!(
        figure(&m, "vadvisor_remote_write_oldest_unsent_sample_age_seconds") >= 100.0,
        "outage: oldest unsent age {}",
        figure(&m, "vadvisor_remote_write_oldest_unsent_sample_age_seconds")
    );
    rx.run();
    let up_at = now_s();
    drained(&agent, "outage");
    let (gap, at) = largest_gap(&rx, &series, down_at - 5.0, up_at + 5.0);
    assert!(
        gap < 3.0,
        "outage: {gap:.1} s without a sample at {at:.0} (receiver down {down_at:.0}..{up_at:.0})"
    );
    let n = samples_between(&rx, &series, down_at, up_at);
    assert!(
        n >= (up_at - down_at) * 0.9,
        "outage: {n} samples in {:.0} s",
        up_at - down_at
    );
    let m = scrape(&agent);
    assert_eq!(
        figure(&m, "vadvisor_remote_write_samples_dropped_total"),
        0.0,
        "outage: {m:?}"
    );
    eprintln!("outage: receiver down {:.0} s, largest gap {gap:.2} s, {n} samples of {series} in the outage", up_at - down_at);
}

fn restart_scenario(guest: &str) {
    let mut rx = Receiver::start();
    let buffer: PathBuf = rx.dir.path().join("agent-buffer");
    let extra = format!(
        "    buffer:\n      type: disk\n      path: {}\n      max_size: 64MiB\n",
        buffer.display()
    );
    let cfg = config("1s", "rw-restart", &[("", &rx.write_url(), &extra)]);
    let mut agent = Agent::start(&cfg);
    let series = format!("vm_cpu_time_seconds_total{{name=\"{guest}\",host=\"rw-restart\"}}");
    let flowing = wait_for(Duration::from_secs(60), || {
        (!rx.query_at(&series, None).is_empty()).then_some(())
    });
    assert!(flowing.is_some(), "restart: no {series} in the receiver");
    std::thread::sleep(Duration::from_secs(5));
    let down_at = now_s();
    rx.stop();
    // SIGTERM and start again, 30 s into the outage.
    std::thread::sleep(Duration::from_secs(30));
    let term_at = now_s();
    let (status, _) = agent.terminate();
    assert!(status.success(), "restart: exit status {status:?}");
    drop(agent);
    agent = Agent::start(&cfg);
    let term_back = now_s();
    // SIGKILL and start again, 70 s into the outage.
    std::thread::sleep(Duration::from_secs(40));
    let kill_at = now_s();
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    drop(agent);
    let agent = Agent::start(&cfg);
    let kill_back = now_s();
    std::thread::sleep(OUTAGE.saturating_sub(Duration::from_secs_f64(now_s() - down_at)));
    rx.run();
    let up_at = now_s();
    drained(&agent, "restart");
    // Where the agent ran, no gap: every sample it buffered before each stop survived.
    for (from, to, what) in [
        (down_at - 5.0, term_at, "before SIGTERM"),
        (term_back + 3.0, kill_at, "between the restarts"),
        (kill_back + 3.0, up_at + 5.0, "after SIGKILL"),
    ] {
        let (gap, at) = largest_gap(&rx, &series, from, to);
        assert!(
            gap < 3.0,
            "restart: {what}: {gap:.1} s without a sample at {at:.0}"
        );
    }
    // Around each restart only the time the agent was not running is missing.
    for (stop, back, what) in [
        (term_at, term_back, "SIGTERM"),
        (kill_at, kill_back, "SIGKILL"),
    ] {
        let (gap, at) = largest_gap(&rx, &series, stop - 2.0, back + 5.0);
        assert!(
            gap < back - stop + 4.0,
            "restart: {what}: {gap:.1} s gap at {at:.0}, agent down {:.1} s",
            back - stop
        );
    }
    let m = scrape(&agent);
    assert_eq!(
        figure(&m, "vadvisor_remote_write_samples_dropped_total"),
        0.0,
        "restart: {m:?}"
    );
    eprintln!(
        "restart: receiver down {:.0} s; agent down {:.1} s (SIGTERM) and {:.1} s (SIGKILL); nothing dropped",
        up_at - down_at,
        term_back - term_at,
        kill_back - kill_at
    );
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn a_two_minute_receiver_outage_and_agent_restarts_lose_no_sample() {
    let guests = lab_guests();
    let guest = guests[0].0.clone();
    let g2 = guest.clone();
    std::thread::scope(|s| {
        let outage = s.spawn(|| outage_scenario(&guest));
        let restart = s.spawn(|| restart_scenario(&g2));
        let (a, b) = (outage.join(), restart.join());
        if let Err(e) = a {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = b {
            std::panic::resume_unwind(e);
        }
    });
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn a_fleet_of_three_agents_shares_one_receiver() {
    let guests = lab_guests();
    let rx = Receiver::start();
    let backup = Receiver::start();
    let url = rx.write_url();
    let backup_url = backup.write_url();
    // fleet-a has two instances: remote_write (to rx) and remote_write/backup.
    let _a = Agent::start(&config(
        "1s",
        "fleet-a",
        &[("", &url, ""), ("/backup", &backup_url, "")],
    ));
    let _b = Agent::start(&config("1s", "fleet-b", &[("/primary", &url, "")]));
    let _c = Agent::start(&config("1s", "fleet-c", &[("", &url, "")]));
    let want = guests.len() as f64;
    let counted = wait_for(Duration::from_secs(60), || {
        // Other domains may come and go on the shared lab: every lab guest is counted,
        // and every agent sees the same domains.
        let r = rx.query_at(
            "count by (host) (vm_up{host=~\"fleet-.*\",name=~\"vadv-lab-.*\"})",
            None,
        );
        let by_host: BTreeMap<String, f64> = r
            .into_iter()
            .filter_map(|(l, v)| Some((l.get("host")?.clone(), v)))
            .collect();
        let first = by_host.values().next().copied().unwrap_or(0.0);
        (by_host.len() == 3 && by_host.values().all(|v| *v >= want && *v == first))
            .then_some(by_host)
    });
    let by_host = counted.unwrap_or_else(|| {
        panic!(
            "count by (host) (vm_up): {:?}",
            rx.query_at("count by (host) (vm_up)", None)
        )
    });
    assert_eq!(
        by_host.keys().collect::<Vec<_>>(),
        ["fleet-a", "fleet-b", "fleet-c"]
    );
    // The second instance delivered fleet-a's series to the backup receiver.
    let on_backup = wait_for(Duration::from_secs(30), || {
        let r = backup.query_at("count by (host) (vm_up)", None);
        (r.len() == 1 && r[0].0.get("host").map(String::as_str) == Some("fleet-a")).then_some(())
    });
    assert!(
        on_backup.is_some(),
        "backup: {:?}",
        backup.query_at("count by (host) (vm_up)", None)
    );
}
