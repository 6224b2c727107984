//! A real Prometheus server (Debian's `prometheus` package, installed by
//! `scripts/install-test-peers.sh`) scraping one or more targets every second, on a free
//! loopback port with its data in a temp dir, and its HTTP API (instant queries by
//! label). Killed on drop.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{client, free_port, wait_for, Agent};

pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

/// `host:port` of an agent, as a scrape target.
pub fn target(agent: &Agent) -> String {
    agent.base.trim_start_matches("http://").to_string()
}

impl Prometheus {
    /// Starts a server scraping `target` (`host:port`) as job `job`, and waits until it
    /// is ready.
    pub fn start(target: &str, job: &str) -> Prometheus {
        Self::launch(&[target], job, None)
    }

    /// Starts a server scraping every one of `targets` as job `job`.
    pub fn start_many(targets: &[&str], job: &str) -> Prometheus {
        Self::launch(targets, job, None)
    }

    /// Like [`Prometheus::start`], evaluating the rules of `rule_file` every second.
    pub fn start_with_rules(target: &str, job: &str, rule_file: &std::path::Path) -> Prometheus {
        Self::launch(&[target], job, Some(rule_file))
    }

    fn launch(targets: &[&str], job: &str, rule_file: Option<&std::path::Path>) -> Prometheus {
        assert!(
            std::path::Path::new(PROMETHEUS_BIN).exists(),
            "{PROMETHEUS_BIN} is missing: run `bash scripts/install-test-peers.sh`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let mut f = std::fs::File::create(&config).expect("config file");
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{list}]\n"
        )
        .expect("write config");
        if let Some(rules) = rule_file {
            writeln!(f, "rule_files:\n  - '{}'", rules.display()).expect("write config");
        }
        let port = free_port();
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let prom = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            client()
                .get(format!("{}/-/ready", prom.base))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        assert!(
            ready.is_some(),
            "prometheus did not become ready on port {port} within 30 s"
        );
        prom
    }

    /// `GET path?params` → the `data` of a successful answer, or the error it gave.
    pub fn try_api(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, String> {
        let r = client()
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let v: serde_json::Value = r.json().map_err(|e| format!("GET {path}: not JSON: {e}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        self.try_api(path, params)
            .unwrap_or_else(|e| panic!("GET {path} {params:?}: {e}"))
    }

    /// An instant query: (labels, value) per series.
    pub fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api("/api/v1/query", &[("query", q)]);
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
                        let value = r["value"][1].as_str()?.parse().ok()?;
                        Some((labels, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `q`'s value by the value of label `label`.
    pub fn by_label(&self, q: &str, label: &str) -> HashMap<String, f64> {
        self.query(q)
            .into_iter()
            .filter_map(|(l, v)| Some((l.get(label)?.clone(), v)))
            .collect()
    }

    /// `q`'s value by `uuid` label.
    pub fn by_uuid(&self, q: &str) -> HashMap<String, f64> {
        self.by_label(q, "uuid")
    }

    /// True once every target's last scrape succeeded.
    pub fn all_targets_up(&self) -> bool {
        let t = self.api("/api/v1/targets", &[]);
        t["activeTargets"]
            .as_array()
            .is_some_and(|ts| !ts.is_empty() && ts.iter().all(|t| t["health"] == "up"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
