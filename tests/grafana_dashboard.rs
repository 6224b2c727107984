//! The Grafana dashboard `deploy/grafana/vadvisor.json`: it is dashboard JSON Grafana
//! imports as it is (a `datasource` variable of type prometheus used by every panel, the
//! host and VM variables, unique panel ids, rows for overview, CPU, memory, disk,
//! network, events and agent health); every metric its queries use is in the metric
//! reference (`docs/metrics.md`); and, against the lab, every variable query and every
//! panel query returns data from a real Prometheus scraping the agent (no empty panel).
//!
//! The lab test needs `scripts/lab.sh up` and `bash scripts/install-test-peers.sh`; it
//! is ignored by a plain `cargo test` and `scripts/test.sh` runs it with
//! `--include-ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::guest::ThrowawayGuest;
use common::prometheus::Prometheus;
use common::{lab_guests, wait_for, Agent};
use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/vadvisor.json";
const ROWS: [&str; 6] = [
    "Host overview",
    "CPU",
    "Memory",
    "Disk",
    "Network",
    "Events",
];

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows and nested panels of collapsed rows included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter());
        }
    }
    out
}

/// (panel title, refId, expr) of every query target.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    all_panels(d)
        .into_iter()
        .flat_map(|p| {
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    p["title"].as_str().unwrap_or("").to_string(),
                    t["refId"].as_str().unwrap_or("").to_string(),
                    t["expr"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

/// (variable name, query) of the query variables.
fn variable_queries(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("variable query");
            (v["name"].as_str().expect("name").to_string(), q.to_string())
        })
        .collect()
}

const KEYWORDS: [&str; 11] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
];
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// `expr` without the label lists of `by (...)`, `on (...)`, `group_left (...)`, ….
fn strip_label_lists(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    'outer: while !rest.is_empty() {
        for kw in [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ] {
            let boundary_before = out
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if boundary_before && rest.starts_with(kw) {
                let after = rest[kw.len()..].trim_start();
                if let (true, Some(close)) = (after.starts_with('('), after.find(')')) {
                    out.push(' ');
                    rest = &after[close + 1..];
                    continue 'outer;
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The metric names a PromQL expression (or a Grafana `label_values(...)` query) reads.
/// Strings, label matchers, ranges, grouping label lists, functions, keywords, numbers
/// and Grafana variables are not metric names.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop strings and the contents of {...} and [...].
    let mut flat = String::new();
    let (mut in_str, mut depth_brace, mut depth_bracket) = (false, 0, 0);
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => flat.push(c),
        }
        if c == '}' || c == ']' {
            flat.push(' ');
        }
    }
    let flat = strip_label_lists(&flat);
    let mut names = BTreeSet::new();
    let chars: Vec<char> = flat.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..]
                .iter()
                .find(|c| !c.is_whitespace())
                .copied()
                .unwrap_or(' ');
            // Not a metric: a Grafana variable, a function (or label_values), a keyword
            // or an aggregation operator.
            if !(word.starts_with('$')
                || next == '('
                || KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str()))
            {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number, or a duration like 5m (its unit letters go with it).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_metric_name_extraction_finds_metrics_and_nothing_else() {
    let got = metric_names(
        "sum by (instance, uuid) (rate(foo_total{a=\"x{y}\", b=~\"$vm\"}[$__rate_interval])) \
         / on(instance, uuid) group_left() bar_bytes > 0.5 unless baz offset 5m",
    );
    let want: BTreeSet<String> = ["foo_total", "bar_bytes", "baz"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        metric_names("label_values(vm_info{instance=~\"$instance\"}, name)"),
        ["vm_info".to_string(), "name".to_string()].into()
    );
    assert_eq!(
        metric_names("time() - up{job=\"x\"} * 1000"),
        ["up".to_string()].into()
    );
}

#[test]
fn the_dashboard_is_importable_grafana_json() {
    let d = dashboard();
    for key in ["title", "uid"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(d.get("id").is_none_or(Value::is_null), "no database id");

    // Variables: a Prometheus data source picker, then host and VM.
    let vars = d["templating"]["list"].as_array().expect("variables");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["instance", "vm"] {
        let v = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
    }

    // Panels: unique ids, on the 24-column grid, every query through the variable.
    let panels = all_panels(&d);
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(),
            "{title}: gridPos"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(!title.is_empty(), "a panel without a title");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: expr"
            );
        }
    }
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for r in ROWS.iter().chain(["Agent health"].iter()) {
        assert!(rows.contains(r), "no row {r:?}: {rows:?}");
    }
    // Per-VM rows filter by the VM variable.
    for (title, _, expr) in queries(&d) {
        if expr.starts_with("vm_") || expr.contains("(vm_") || expr.contains(" vm_") {
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: {expr} ignores the host variable"
            );
        }
    }
}

#[test]
fn every_metric_the_dashboard_uses_is_in_the_metric_reference() {
    let d = dashboard();
    let reference = std::fs::read_to_string(repo("docs/metrics.md")).expect("docs/metrics.md");
    let mut used = BTreeSet::new();
    for (_, _, expr) in queries(&d) {
        used.extend(metric_names(&expr));
    }
    for (name, q) in variable_queries(&d) {
        // label_values(METRIC, LABEL): only METRIC is a metric.
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.rsplit_once(','))
            .map(|(m, _)| m.to_string())
            .unwrap_or_else(|| panic!("variable {name}: {q}"));
        used.extend(metric_names(&inner));
    }
    assert!(
        used.len() >= 40,
        "only {} metrics found: {used:?}",
        used.len()
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| !reference.contains(&format!("| `{m}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/metrics.md (the agent does not export them): {missing:?}"
    );
}

// ------------------------------------------------------------------ the lab

const AGENT: &str = "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu:\n    interval: 1s\n  memory:\n    interval: 1s\n  block:\n    interval: 1s\n  net:\n    interval: 1s\n  events: {}\nsinks:\n  rest: {}\n  events:\n    path: ':memory:'\n  prometheus: {}\n";
const JOB: &str = "vadvisor";
const RATE_INTERVAL: &str = "10s";
const TEST_GUEST: &str = "vadv-graf-test";

/// A Grafana-style regex of `values`: `(a|b)`, each escaped.
fn regex_of(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .flat_map(|c| {
                    if "\\.+*?()|[]{}^$".contains(c) {
                        vec!['\\', '\\', c]
                    } else {
                        vec![c]
                    }
                })
                .collect()
        })
        .collect();
    format!("({})", escaped.join("|"))
}

/// `expr` with Grafana's variables replaced as Grafana would (`All` selected).
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = expr.replace("$__rate_interval", RATE_INTERVAL);
    out = out.replace("${__rate_interval}", RATE_INTERVAL);
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unreplaced variable in {out}");
    out
}

/// Values of `label_values(METRIC, LABEL)` as Grafana gets them (the series API).
fn label_values(prom: &Prometheus, query: &str) -> Vec<String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .expect("label_values(...)");
    let (selector, label) = inner.rsplit_once(',').expect("METRIC, LABEL");
    let label = label.trim();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let start = (now - 300).to_string();
    let series = prom.api(
        "/api/v1/series",
        &[("match[]", selector.trim()), ("start", &start)],
    );
    let values: BTreeSet<String> = series
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s[label].as_str().map(str::to_string))
        .collect();
    values.into_iter().collect()
}

/// Series of a range query over the last 30 s that have at least one finite value.
fn range_series_with_data(prom: &Prometheus, expr: &str) -> Result<usize, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (start, end) = (format!("{:.3}", now - 30.0), format!("{now:.3}"));
    let data = prom.try_api(
        "/api/v1/query_range",
        &[
            ("query", expr),
            ("start", &start),
            ("end", &end),
            ("step", "1"),
        ],
    )?;
    Ok(data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["values"].as_array().into_iter().flatten().any(|v| {
                v[1].as_str()
                    .and_then(|x| x.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
        })
        .count())
}

/// Starts and destroys a transient throw-away guest: lifecycle events (Started/Booted,
/// Stopped/Destroyed) without touching the lab guests.
fn lifecycle_events() -> ThrowawayGuest {
    let guest = ThrowawayGuest::start(TEST_GUEST);
    std::thread::sleep(Duration::from_secs(2));
    guest.destroy();
    guest
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up + scripts/install-test-peers.sh (scripts/test.sh runs it)"]
fn every_panel_and_variable_query_returns_data_from_a_real_prometheus() {
    let guests = lab_guests();
    let d = dashboard();
    let agent = Agent::start(AGENT);
    let target = agent.base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target, JOB);

    let up = wait_for(Duration::from_secs(30), || {
        let r = prom.api("/api/v1/query", &[("query", "vm_up")]);
        let n = r["result"].as_array().map_or(0, Vec::len);
        (n >= guests.len()).then_some(())
    });
    assert!(
        up.is_some(),
        "Prometheus never saw vm_up of every lab guest"
    );
    let _guest = lifecycle_events();
    // Enough samples for every rate() window.
    std::thread::sleep(Duration::from_secs(12));

    // The variables, in order (each may use the ones before).
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (name, query) in variable_queries(&d) {
        let q = substitute(&query, &vars);
        let values = label_values(&prom, &q);
        assert!(!values.is_empty(), "variable {name} ({q}) has no value");
        match name.as_str() {
            "instance" => assert!(values.contains(&target), "{name}: {values:?}"),
            "vm" => {
                for (g, _) in &guests {
                    assert!(values.contains(g), "{name} lacks {g}: {values:?}");
                }
            }
            _ => {}
        }
        println!("variable {name}: {} values", values.len());
        vars.insert(name, regex_of(&values));
    }

    // Every query of every panel returns data, within a minute (event counters and
    // rates need a few scrapes).
    let all = queries(&d);
    let mut pending: Vec<(String, String, String)> = all
        .iter()
        .map(|(t, r, e)| (t.clone(), r.clone(), substitute(e, &vars)))
        .collect();
    let mut errors: Vec<String> = Vec::new();
    let _ = wait_for(Duration::from_secs(60), || {
        errors.clear();
        pending.retain(
            |(title, refid, expr)| match range_series_with_data(&prom, expr) {
                Ok(n) if n > 0 => false,
                Ok(_) => {
                    errors.push(format!("{title} [{refid}]: no data: {expr}"));
                    true
                }
                Err(e) => {
                    errors.push(format!("{title} [{refid}]: {e}: {expr}"));
                    true
                }
            },
        );
        pending.is_empty().then_some(())
    });
    println!(
        "{} queries of {} panels checked, {} without data",
        all.len(),
        all.iter().map(|q| &q.0).collect::<BTreeSet<_>>().len(),
        errors.len()
    );
    assert!(errors.is_empty(), "empty panels:\n{}", errors.join("\n"));

    // The lifecycle events of the throw-away guest are on the events panel.
    let events = prom.api(
        "/api/v1/query",
        &[(
            "query",
            "vm_lifecycle_events_total{event_type=\"Started\",reason=\"Booted\"}",
        )],
    );
    assert!(
        events["result"].as_array().is_some_and(|r| !r.is_empty()),
        "no Started/Booted event: {events}"
    );
}
