//! Tests of the sink with hand-made batches: rendering, aliases and unit conversion,
//! escaping, de-duplication, the `vm_up` grace rule (with an injected clock), both
//! formats checked by a strict little parser, the HTTP endpoint through the registry,
//! live mode, the sink loop, and `promtool check metrics` when it is installed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt;
use tower::ServiceExt;
use vadvisor_api::axum::body::Body;
use vadvisor_api::axum::http::{header, Request, StatusCode};
use vadvisor_api::axum::Router;
use vadvisor_api::metric::Alias;
use vadvisor_api::{
    Batch, Bus, CancellationToken, DomainRef, DomainSamples, DomainState, FakeHypervisor, Health,
    HttpRoutes, LifecycleEvent, LiveCollect, MetricDesc, OptionError, PluginOptions, Record,
    Registry, Sample, SinkBuildContext, SinkInput, Unit,
};
use vadvisor_collectors::{block, cpu, memory, net};

use super::encode::{Encoder, Format};
use super::families::LabelOptions;
use super::state::{State, StateOptions};
use super::PrometheusOptions;

// ------------------------------------------------------------------ helpers

const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";
const OM_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn idx(metrics: &[MetricDesc], name: &str) -> u16 {
    metrics
        .iter()
        .position(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}")) as u16
}

fn dom(uuid: &str, name: &str, state: u32, samples: Vec<Sample>) -> DomainSamples {
    let mut d = DomainSamples::new(DomainRef::new(uuid, name));
    d.state = Some(DomainState::new(state, 1));
    d.samples = samples;
    d
}

fn batch(
    collector: &str,
    metrics: &[MetricDesc],
    at: SystemTime,
    domains: Vec<DomainSamples>,
) -> Arc<Batch> {
    Arc::new(Batch {
        collector: collector.into(),
        metrics: Arc::from(metrics),
        at,
        domains,
        host: Vec::new(),
    })
}

fn l(v: &str) -> Arc<str> {
    Arc::from(v)
}

/// The four built-in collectors' batches for the given VMs, all running.
fn lab_batches(vms: &[(&str, &str)], at: SystemTime, cpu_ns: f64) -> Vec<Arc<Batch>> {
    let each = |f: &dyn Fn(&str) -> Vec<Sample>| -> Vec<DomainSamples> {
        vms.iter()
            .map(|(u, n)| dom(u, n, DomainState::RUNNING, f(u)))
            .collect()
    };
    let m = memory::METRICS;
    let b = block::METRICS;
    let n = net::METRICS;
    vec![
        batch(
            "cpu",
            cpu::METRICS,
            at,
            each(&|_| {
                vec![
                    Sample::new(cpu::CPU_TIME, cpu_ns),
                    Sample::new(cpu::CPU_USER, cpu_ns / 4.0),
                    Sample::new(cpu::CPU_SYSTEM, cpu_ns / 2.0),
                    Sample::labelled(cpu::VCPU_TIME, vec![l("0")], cpu_ns / 3.0),
                    Sample::labelled(cpu::VCPU_STATE, vec![l("0")], 1.0),
                    Sample::new(cpu::VCPUS_CURRENT, 1.0),
                ]
            }),
        ),
        batch(
            "memory",
            m,
            at,
            each(&|_| {
                vec![
                    Sample::new(idx(m, "vm_memory_actual_balloon_bytes"), 196_608.0),
                    Sample::new(idx(m, "vm_memory_rss_bytes"), 100_000.0),
                    Sample::new(
                        idx(m, "vm_memory_stats_last_update_timestamp_seconds"),
                        1_700_000_000.0,
                    ),
                ]
            }),
        ),
        batch(
            "block",
            b,
            at,
            each(&|_| {
                vec![
                    Sample::labelled(
                        idx(b, "vm_disk_read_bytes_total"),
                        vec![l("vda")],
                        409_600.0,
                    ),
                    Sample::labelled(
                        idx(b, "vm_disk_read_time_seconds_total"),
                        vec![l("vda")],
                        2_500_000.0,
                    ),
                    Sample::labelled(
                        idx(b, "vm_disk_info"),
                        vec![l("vda"), l("/var/lib/x.qcow2")],
                        1.0,
                    ),
                ]
            }),
        ),
        batch(
            "net",
            n,
            at,
            each(&|_| {
                vec![
                    Sample::labelled(
                        idx(n, "vm_network_receive_bytes_total"),
                        vec![l("vnet0")],
                        1000.0,
                    ),
                    Sample::labelled(
                        idx(n, "vm_network_transmit_dropped_packets_total"),
                        vec![l("vnet0")],
                        3.0,
                    ),
                ]
            }),
        ),
    ]
}

fn opts(name_label: bool, aliases: bool, grace: Duration) -> StateOptions {
    StateOptions {
        labels: LabelOptions {
            name_label,
            aliases,
        },
        grace,
    }
}

fn state_with(batches: &[Arc<Batch>], o: StateOptions, now: Instant) -> State {
    let mut s = State::new(o);
    for b in batches {
        s.ingest(b.clone(), now);
    }
    s
}

/// The per-VM part rendered and terminated as a whole exposition.
fn render(state: &mut State, format: Format, now: Instant) -> String {
    let mut text = String::from_utf8(state.render(format, &[], now).to_vec()).expect("UTF-8");
    Encoder::new(&mut text, format).finish();
    text
}

type Labels = BTreeMap<String, String>;

/// A parsed exposition; parsing checks the format strictly.
#[derive(Debug, Default)]
struct Exposition {
    /// (family, type, help) in order.
    families: Vec<(String, String, String)>,
    samples: Vec<(String, Labels, f64)>,
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, ls, _)| n == name && *ls == want)
            .map(|s| s.2)
    }

    fn series(&self, name: &str) -> Vec<&(String, Labels, f64)> {
        self.samples.iter().filter(|s| s.0 == name).collect()
    }

    fn family(&self, name: &str) -> Option<&(String, String, String)> {
        self.families.iter().find(|f| f.0 == name)
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

/// Unescapes a label value or HELP text. `help_classic`: the classic HELP rules (only
/// `\\` and `\n` escaped, a raw `"` allowed); else `\\`, `\n`, `\"` and no raw `"`.
fn unescape(s: &str, help_classic: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if !help_classic => out.push('"'),
                other => return Err(format!("bad escape \\{other:?} in {s:?}")),
            },
            '"' if !help_classic => return Err(format!("raw quote in {s:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `{k="v",...}` → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("no label value in {s:?}"))?;
        if !valid_name(name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        // Find the closing quote, skipping escaped characters.
        let bytes = r.as_bytes();
        let mut i = 0;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if i >= bytes.len() {
            return Err(format!("unterminated label value in {s:?}"));
        }
        let value = unescape(&r[..i], false)?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice in {s:?}"));
        }
        rest = &r[i + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// Parses and checks: families declared once and contiguous, HELP before TYPE, samples
/// belong to the current family (OpenMetrics counters: `<family>_total`), no series
/// twice, valid names, escapes and numbers; OpenMetrics ends with `# EOF`.
fn parse(text: &str, format: Format) -> Exposition {
    let mut exp = Exposition::default();
    let mut seen_families = HashSet::new();
    let mut seen_series = HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.pop(), Some(""), "ends with a newline");
    if format == Format::OpenMetrics {
        assert_eq!(lines.pop(), Some("# EOF"), "OpenMetrics ends with # EOF");
    }
    let mut help: Option<(String, String)> = None;
    for line in lines {
        let fail = |m: String| -> ! { panic!("{m}\nline: {line:?}\n---\n{text}") };
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            if !seen_families.insert(name.to_string()) {
                fail(format!(
                    "family {name} declared twice (families must be contiguous)"
                ));
            }
            help = Some((
                name.to_string(),
                unescape(h, format == Format::Classic).unwrap_or_else(|e| fail(e)),
            ));
            current = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .unwrap_or_else(|| fail("TYPE without type".into()));
            let (hname, htext) = help
                .take()
                .unwrap_or_else(|| fail("TYPE without HELP".into()));
            if hname != name {
                fail(format!("TYPE {name} after HELP {hname}"));
            }
            let types: &[&str] = match format {
                Format::Classic => &["counter", "gauge", "untyped"],
                Format::OpenMetrics => &["counter", "gauge", "unknown"],
            };
            if !types.contains(&ty) {
                fail(format!("type {ty}"));
            }
            if format == Format::OpenMetrics && name.ends_with("_total") && ty == "counter" {
                fail("OpenMetrics counter family named with _total".into());
            }
            exp.families.push((name.to_string(), ty.to_string(), htext));
            current = Some((name.to_string(), ty.to_string()));
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            if format != Format::OpenMetrics {
                fail("UNIT in the classic format".into());
            }
            let (name, unit) = rest
                .split_once(' ')
                .unwrap_or_else(|| fail("UNIT without unit".into()));
            let cur = current.as_ref().map(|c| c.0.as_str());
            if cur != Some(name) || !name.ends_with(&format!("_{unit}")) {
                fail(format!("UNIT {unit} for {name}"));
            }
        } else if line.starts_with('#') || line.is_empty() {
            fail("unexpected comment or empty line".into());
        } else {
            let end = line
                .find(['{', ' '])
                .unwrap_or_else(|| fail("no value".into()));
            let name = &line[..end];
            let (labels, rest) = parse_labels(&line[end..]).unwrap_or_else(|e| fail(e));
            let value = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| fail("no space before value".into()));
            let value = parse_value(value).unwrap_or_else(|e| fail(e));
            let (family, ty) = current
                .clone()
                .unwrap_or_else(|| fail("sample outside a family".into()));
            let expected = match (format, ty.as_str()) {
                (Format::OpenMetrics, "counter") => format!("{family}_total"),
                _ => family.clone(),
            };
            if name != expected {
                fail(format!("sample {name} in family {family}"));
            }
            if !valid_name(name) {
                fail(format!("bad metric name {name}"));
            }
            if !seen_series.insert((name.to_string(), labels.clone())) {
                fail(format!("duplicate series {name}{labels:?}"));
            }
            exp.samples.push((name.to_string(), labels, value));
        }
    }
    exp
}

// ------------------------------------------------------------------ rendering

#[test]
fn renders_families_with_uuid_name_and_own_labels_in_base_units_and_vadvisor_aliases() {
    let now = Instant::now();
    let batches = lab_batches(
        &[(U1, "vadv-lab-1"), (U2, "vadv-lab-2")],
        SystemTime::now(),
        123_456_789_012.0,
    );
    let mut st = state_with(&batches, opts(true, true, Duration::from_secs(600)), now);
    for format in Format::ALL {
        let e = parse(&render(&mut st, format, now), format);
        let vm = [("uuid", U1), ("name", "vadv-lab-1")];
        // ns → s for our family, ns → ms (exactly as vAdvisor divides) for the alias.
        assert_eq!(e.get("vm_cpu_time_seconds_total", &vm), Some(123.456789012));
        assert_eq!(
            e.get("vm_cpu_milliseconds_total", &vm),
            Some(123_456.789_012)
        );
        assert_eq!(
            e.get("vm_cpu_user_milliseconds_total", &vm),
            Some(123_456.789_012 / 4.0)
        );
        assert_eq!(
            e.get("vm_cpu_system_milliseconds_total", &vm),
            Some(123_456.789_012 / 2.0)
        );
        // Per-vCPU: our label `vcpu`, vAdvisor's `cpu`.
        let vcpu = [("uuid", U1), ("name", "vadv-lab-1"), ("vcpu", "0")];
        let cpu0 = [("uuid", U1), ("name", "vadv-lab-1"), ("cpu", "0")];
        assert_eq!(
            e.get("vm_vcpu_time_seconds_total", &vcpu),
            Some(123_456_789_012.0 / 3.0 / 1e9)
        );
        assert_eq!(
            e.get("vm_vcpu_milliseconds_total", &cpu0),
            Some(123_456_789_012.0 / 3.0 / 1e6)
        );
        assert_eq!(e.get("vm_vcpu_state", &vcpu), Some(1.0));
        // KiB → bytes in both our family and vAdvisor's vm_memory_bytes (vAdvisor sent KiB).
        assert_eq!(
            e.get("vm_memory_actual_balloon_bytes", &vm),
            Some(196_608.0 * 1024.0)
        );
        assert_eq!(e.get("vm_memory_bytes", &vm), Some(196_608.0 * 1024.0));
        assert_eq!(e.get("vm_memory_rss_bytes", &vm), Some(100_000.0 * 1024.0));
        assert_eq!(
            e.get("vm_memory_stats_last_update_timestamp_seconds", &vm),
            Some(1_700_000_000.0)
        );
        // Device families keep vAdvisor's names and labels; ns times become seconds.
        let vda = [("uuid", U1), ("name", "vadv-lab-1"), ("device", "vda")];
        assert_eq!(e.get("vm_disk_read_bytes_total", &vda), Some(409_600.0));
        assert_eq!(e.get("vm_disk_read_time_seconds_total", &vda), Some(0.0025));
        let info = [
            ("uuid", U1),
            ("name", "vadv-lab-1"),
            ("device", "vda"),
            ("path", "/var/lib/x.qcow2"),
        ];
        assert_eq!(e.get("vm_disk_info", &info), Some(1.0));
        let vnet = [("uuid", U1), ("name", "vadv-lab-1"), ("interface", "vnet0")];
        assert_eq!(e.get("vm_network_receive_bytes_total", &vnet), Some(1000.0));
        assert_eq!(
            e.get("vm_network_transmit_dropped_packets_total", &vnet),
            Some(3.0)
        );
        // Identity families.
        assert_eq!(e.get("vm_up", &vm), Some(1.0));
        assert_eq!(e.get("vm_info", &vm), Some(1.0));
        assert_eq!(e.get("vm_state_code", &vm), Some(1.0));
        assert_eq!(e.get("vm_state_reason_code", &vm), Some(1.0));
        // Every per-VM series carries uuid and name.
        for (name, labels, _) in &e.samples {
            assert!(
                labels.contains_key("uuid") && labels.contains_key("name"),
                "{name}{labels:?}"
            );
        }
        // HELP texts are vAdvisor's for its families.
        let fam = |f: &str| e.family(f).map(|x| x.2.clone());
        assert_eq!(
            fam("vm_up").as_deref(),
            Some("0 if the VM is down, 1 if the VM is up and running, other states")
        );
        let ms = if format == Format::Classic {
            "vm_cpu_milliseconds_total"
        } else {
            "vm_cpu_milliseconds"
        };
        assert_eq!(
            fam(ms).as_deref(),
            Some("Overall VM CPU time in milliseconds")
        );
        assert_eq!(
            fam("vm_memory_bytes").as_deref(),
            Some("VM Memory in bytes")
        );
    }
}

#[test]
fn both_formats_name_counters_and_end_as_required() {
    let now = Instant::now();
    let batches = lab_batches(&[(U1, "a")], SystemTime::now(), 1e9);
    let mut st = state_with(&batches, opts(true, true, Duration::from_secs(600)), now);
    let classic = render(&mut st, Format::Classic, now);
    assert!(
        classic.contains("# TYPE vm_cpu_time_seconds_total counter\n"),
        "{classic}"
    );
    assert!(!classic.contains("# EOF"));
    assert!(!classic.contains("# UNIT"));
    let om = render(&mut st, Format::OpenMetrics, now);
    assert!(
        om.contains("# TYPE vm_cpu_time_seconds counter\n# UNIT vm_cpu_time_seconds seconds\n"),
        "{om}"
    );
    assert!(om.contains("\nvm_cpu_time_seconds_total{uuid=\""), "{om}");
    assert!(
        om.contains("# TYPE vm_memory_bytes gauge\n# UNIT vm_memory_bytes bytes\n"),
        "{om}"
    );
    assert!(om.contains("# TYPE vm_cpu_milliseconds counter\n"), "{om}");
    assert!(om.ends_with("\n# EOF\n"));
    assert_eq!(
        Format::Classic.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[test]
fn options_turn_off_aliases_and_the_name_label() {
    let now = Instant::now();
    let batches = lab_batches(&[(U1, "a")], SystemTime::now(), 1e9);
    let mut st = state_with(&batches, opts(false, false, Duration::from_secs(600)), now);
    let e = parse(&render(&mut st, Format::Classic, now), Format::Classic);
    assert!(e.series("vm_cpu_milliseconds_total").is_empty());
    assert!(e.series("vm_memory_bytes").is_empty());
    assert!(e.series("vm_vcpu_milliseconds_total").is_empty());
    assert_eq!(
        e.get("vm_cpu_time_seconds_total", &[("uuid", U1)]),
        Some(1.0)
    );
    assert_eq!(e.get("vm_up", &[("uuid", U1)]), Some(1.0));
    // vm_network_* are our names too: still there, once.
    assert_eq!(e.series("vm_network_receive_bytes_total").len(), 1);
    // vm_info always carries the name: that is what it is for.
    assert_eq!(e.get("vm_info", &[("uuid", U1), ("name", "a")]), Some(1.0));
    for (name, labels, _) in e.samples.iter().filter(|s| s.0 != "vm_info") {
        assert!(!labels.contains_key("name"), "{name}{labels:?}");
    }
}

#[test]
fn label_values_and_help_are_escaped() {
    const M: &[MetricDesc] = &[MetricDesc::gauge(
        "vm_weird_bytes",
        "Help with \\ backslash\nand \"quotes\"",
        Unit::Bytes,
    )
    .labels(&["device"])];
    let now = Instant::now();
    let name = "evil \"vm\"\\\nname";
    let b = batch(
        "weird",
        M,
        SystemTime::now(),
        vec![dom(
            U1,
            name,
            1,
            vec![Sample::labelled(0, vec![l("a\"b\\c\nd")], 7.0)],
        )],
    );
    let mut st = state_with(&[b], opts(true, true, Duration::from_secs(600)), now);
    for format in Format::ALL {
        let text = render(&mut st, format, now);
        assert!(text.contains(r#"name="evil \"vm\"\\\nname""#), "{text}");
        assert!(text.contains(r#"device="a\"b\\c\nd""#), "{text}");
        let help = match format {
            Format::Classic => r#"# HELP vm_weird_bytes Help with \\ backslash\nand "quotes""#,
            Format::OpenMetrics => {
                r#"# HELP vm_weird_bytes Help with \\ backslash\nand \"quotes\""#
            }
        };
        assert!(text.contains(help), "{text}");
        let e = parse(&text, format);
        let help = e.family("vm_weird_bytes").map(|f| f.2.as_str());
        assert_eq!(help, Some("Help with \\ backslash\nand \"quotes\""));
        assert_eq!(
            e.get(
                "vm_weird_bytes",
                &[("uuid", U1), ("name", name), ("device", "a\"b\\c\nd")]
            ),
            Some(7.0)
        );
    }
}

#[test]
fn host_samples_have_no_domain_labels() {
    const M: &[MetricDesc] = &[MetricDesc::gauge(
        "host_free_bytes",
        "Free host memory",
        Unit::Kibibytes,
    )];
    let now = Instant::now();
    let b = Arc::new(Batch {
        collector: "host".into(),
        metrics: Arc::from(M),
        at: SystemTime::now(),
        domains: vec![],
        host: vec![Sample::new(0, 2.0)],
    });
    let mut st = state_with(&[b], opts(true, true, Duration::from_secs(600)), now);
    let e = parse(&render(&mut st, Format::Classic, now), Format::Classic);
    assert_eq!(e.get("host_free_bytes", &[]), Some(2048.0));
}

// ------------------------------------------------------------------ de-duplication

#[test]
fn two_instances_reporting_one_family_yield_one_series_newest_wins() {
    let now = Instant::now();
    let t0 = SystemTime::now();
    let older = batch(
        "cpu",
        cpu::METRICS,
        t0,
        vec![dom(U1, "a", 1, vec![Sample::new(cpu::CPU_TIME, 1e9)])],
    );
    let newer = batch(
        "cpu/fast",
        cpu::METRICS,
        t0 + Duration::from_millis(500),
        vec![
            dom(U1, "a", 1, vec![Sample::new(cpu::CPU_TIME, 2e9)]),
            dom(U2, "b", 1, vec![Sample::new(cpu::CPU_TIME, 5e9)]),
        ],
    );
    let mut st = state_with(
        &[older.clone(), newer.clone()],
        opts(true, true, Duration::from_secs(600)),
        now,
    );
    for format in Format::ALL {
        // `parse` fails on duplicate series and on families declared twice.
        let e = parse(&render(&mut st, format, now), format);
        assert_eq!(e.series("vm_cpu_time_seconds_total").len(), 2);
        assert_eq!(
            e.get("vm_cpu_time_seconds_total", &[("uuid", U1), ("name", "a")]),
            Some(2.0)
        );
        assert_eq!(
            e.get("vm_cpu_milliseconds_total", &[("uuid", U1), ("name", "a")]),
            Some(2000.0)
        );
        assert_eq!(
            e.get("vm_cpu_time_seconds_total", &[("uuid", U2), ("name", "b")]),
            Some(5.0)
        );
        assert_eq!(e.series("vm_up").len(), 2);
        assert_eq!(e.series("vm_info").len(), 2);
    }
    // When `cpu` reports again, later than `cpu/fast`, its value wins.
    let newest = batch(
        "cpu",
        cpu::METRICS,
        t0 + Duration::from_secs(1),
        vec![dom(U1, "a", 1, vec![Sample::new(cpu::CPU_TIME, 3e9)])],
    );
    st.ingest(newest, now);
    let e = parse(&render(&mut st, Format::Classic, now), Format::Classic);
    assert_eq!(
        e.get("vm_cpu_time_seconds_total", &[("uuid", U1), ("name", "a")]),
        Some(3.0)
    );
}

#[test]
fn duplicate_samples_within_a_batch_and_conflicting_declarations_are_dropped() {
    const GAUGE_CLASH: &[MetricDesc] = &[
        // Its OpenMetrics family would be named like the counter vm_cpu_time_seconds_total's.
        MetricDesc::gauge("vm_cpu_time_seconds", "a gauge", Unit::Seconds),
        // A label name twice: skipped.
        MetricDesc::gauge("vm_twice", "twice", Unit::Count).labels(&["a", "a"]),
        // Same name as a counter elsewhere, but declared a gauge: skipped.
        MetricDesc::gauge("vm_disk_read_bytes_total", "clash", Unit::Bytes).labels(&["device"]),
        // A name the sink renders itself: skipped.
        MetricDesc::gauge("vm_up", "mine", Unit::None),
        // An alias equal to a primary family of another collector, same labels.
        MetricDesc::counter("vm_other_bytes_total", "other", Unit::Bytes)
            .labels(&["device"])
            .aliases(&[Alias {
                name: "vm_disk_read_bytes_total",
                help: "x",
                unit: Unit::Bytes,
                labels: &[],
            }]),
    ];
    let now = Instant::now();
    let t0 = SystemTime::now();
    let mut batches = lab_batches(&[(U1, "a")], t0, 1e9);
    let mut dup = dom(
        U1,
        "a",
        1,
        vec![
            Sample::new(cpu::CPU_TIME, 7e9),
            Sample::new(cpu::CPU_TIME, 8e9),
        ],
    );
    dup.samples
        .push(Sample::labelled(cpu::VCPU_TIME, vec![], 1.0)); // wrong label count: ignored
    dup.samples.push(Sample::new(999, 1.0)); // no such metric: ignored
    batches[0] = batch("cpu", cpu::METRICS, t0, vec![dup.clone(), dup]);
    batches.push(batch(
        "zzz",
        GAUGE_CLASH,
        t0 - Duration::from_secs(1),
        vec![dom(
            U1,
            "a",
            1,
            vec![
                Sample::new(0, 1.0),
                Sample::labelled(1, vec![l("x"), l("y")], 1.0),
                Sample::new(3, 0.0),
                Sample::labelled(2, vec![l("vda")], 5.0),
                Sample::labelled(4, vec![l("vda")], 6.0),
                Sample::labelled(4, vec![l("vdb")], 7.0),
            ],
        )],
    ));
    let mut st = state_with(&batches, opts(true, true, Duration::from_secs(600)), now);
    for format in Format::ALL {
        let e = parse(&render(&mut st, format, now), format);
        let vm = [("uuid", U1), ("name", "a")];
        assert_eq!(
            e.get("vm_cpu_time_seconds_total", &vm),
            Some(7.0),
            "first of two duplicates"
        );
        assert_eq!(
            e.get("vm_up", &vm),
            Some(1.0),
            "the collector's vm_up is ignored"
        );
        let vda = [("uuid", U1), ("name", "a"), ("device", "vda")];
        assert_eq!(
            e.get("vm_disk_read_bytes_total", &vda),
            Some(409_600.0),
            "newer block batch wins"
        );
        let vdb = [("uuid", U1), ("name", "a"), ("device", "vdb")];
        assert_eq!(
            e.get("vm_disk_read_bytes_total", &vdb),
            Some(7.0),
            "alias adds a series of its own"
        );
        assert_eq!(e.get("vm_other_bytes_total", &vda), Some(6.0));
        assert!(e.series("vm_cpu_time_seconds").is_empty());
        assert!(e.series("vm_twice").is_empty());
    }
}

// ------------------------------------------------------------------ vm_up

#[test]
fn vm_up_follows_the_state_and_keeps_zero_for_the_grace_period_only() {
    let grace = Duration::from_secs(600);
    let t0 = Instant::now();
    let at = SystemTime::now();
    let mut st = State::new(opts(true, true, grace));
    let two = |cpu1: f64| {
        batch(
            "cpu",
            cpu::METRICS,
            at,
            vec![
                dom(
                    U1,
                    "one",
                    DomainState::RUNNING,
                    vec![Sample::new(cpu::CPU_TIME, cpu1)],
                ),
                dom(U2, "two", 3, vec![Sample::new(cpu::CPU_TIME, 1e9)]),
            ],
        )
    };
    st.ingest(two(1e9), t0);
    let e = parse(&render(&mut st, Format::Classic, t0), Format::Classic);
    let one = [("uuid", U1), ("name", "one")];
    let two_l = [("uuid", U2), ("name", "two")];
    assert_eq!(e.get("vm_up", &one), Some(1.0));
    assert_eq!(
        e.get("vm_up", &two_l),
        Some(0.0),
        "paused: 0, other families still there"
    );
    assert_eq!(e.get("vm_state_code", &two_l), Some(3.0));
    assert_eq!(e.get("vm_cpu_time_seconds_total", &two_l), Some(1.0));

    // One minute later U1 is gone from the batch.
    let t1 = t0 + Duration::from_secs(60);
    st.ingest(
        batch("cpu", cpu::METRICS, at, vec![dom(U2, "two", 1, vec![])]),
        t1,
    );
    for at_time in [t1, t1 + Duration::from_secs(539)] {
        let e = parse(&render(&mut st, Format::Classic, at_time), Format::Classic);
        assert_eq!(e.get("vm_up", &one), Some(0.0));
        assert_eq!(e.get("vm_up", &two_l), Some(1.0));
        let left: Vec<_> = e
            .samples
            .iter()
            .filter(|s| s.1.get("uuid").map(String::as_str) == Some(U1))
            .collect();
        assert_eq!(left.len(), 1, "only vm_up survives: {left:?}");
    }
    // The grace period counts from the last batch that reported it (t0).
    let e = parse(
        &render(&mut st, Format::OpenMetrics, t0 + grace),
        Format::OpenMetrics,
    );
    assert_eq!(
        e.get("vm_up", &one),
        None,
        "forgotten after the grace period"
    );
    assert_eq!(e.get("vm_up", &two_l), Some(1.0));
    // And it stays forgotten.
    let e = parse(
        &render(&mut st, Format::Classic, t0 + grace * 2),
        Format::Classic,
    );
    assert_eq!(e.series("vm_up").len(), 1);
}

#[test]
fn a_shut_off_vm_counts_as_no_longer_reported() {
    let t0 = Instant::now();
    let at = SystemTime::now();
    let mut st = State::new(opts(false, true, Duration::from_secs(600)));
    st.ingest(
        batch(
            "cpu",
            cpu::METRICS,
            at,
            vec![dom(U1, "one", 1, vec![Sample::new(cpu::CPU_TIME, 1e9)])],
        ),
        t0,
    );
    st.ingest(
        batch(
            "cpu",
            cpu::METRICS,
            at,
            vec![dom(U1, "one", 5, vec![Sample::new(cpu::CPU_TIME, 1e9)])],
        ),
        t0 + Duration::from_secs(5),
    );
    let e = parse(
        &render(&mut st, Format::Classic, t0 + Duration::from_secs(6)),
        Format::Classic,
    );
    assert_eq!(e.get("vm_up", &[("uuid", U1)]), Some(0.0));
    assert_eq!(e.samples.len(), 1, "only vm_up: {:?}", e.samples);
    let e = parse(
        &render(&mut st, Format::Classic, t0 + Duration::from_secs(601)),
        Format::Classic,
    );
    assert!(e.samples.is_empty(), "{:?}", e.samples);
}

#[test]
fn zero_grace_drops_vanished_vms_at_once() {
    let t0 = Instant::now();
    let at = SystemTime::now();
    let mut st = State::new(opts(true, true, Duration::ZERO));
    st.ingest(
        batch("cpu", cpu::METRICS, at, vec![dom(U1, "one", 1, vec![])]),
        t0,
    );
    st.ingest(batch("cpu", cpu::METRICS, at, vec![]), t0);
    let e = parse(&render(&mut st, Format::Classic, t0), Format::Classic);
    assert!(e.samples.is_empty());
}

#[test]
fn a_failed_collector_is_withheld_and_its_vms_count_as_not_reported() {
    let t0 = Instant::now();
    let batches = lab_batches(&[(U1, "a")], SystemTime::now(), 1e9);
    let mut st = state_with(&batches, opts(true, true, Duration::from_secs(600)), t0);
    let withheld: Vec<String> = vec!["cpu".into()];
    let text = String::from_utf8(st.render(Format::Classic, &withheld, t0).to_vec()).expect("utf8");
    let e = parse(&text, Format::Classic);
    assert!(e.series("vm_cpu_time_seconds_total").is_empty());
    assert_eq!(
        e.get("vm_up", &[("uuid", U1), ("name", "a")]),
        Some(1.0),
        "still reported by memory/block/net"
    );
    let all: Vec<String> = ["block", "cpu", "memory", "net"].map(String::from).to_vec();
    let text = String::from_utf8(st.render(Format::Classic, &all, t0).to_vec()).expect("utf8");
    let e = parse(&text, Format::Classic);
    assert_eq!(
        e.get("vm_up", &[("uuid", U1), ("name", "a")]),
        Some(0.0),
        "nothing reports it"
    );
    assert_eq!(e.samples.len(), 1);
    assert_eq!(st.batch_times(&all), vec![]);
    assert_eq!(st.batch_times(&withheld).len(), 3);
}

// ------------------------------------------------------------------ cache

#[test]
fn the_rendered_part_is_cached_until_a_batch_an_event_or_a_grace_expiry() {
    let t0 = Instant::now();
    let at = SystemTime::now();
    let mut st = State::new(opts(true, true, Duration::from_secs(600)));
    st.ingest(
        batch("cpu", cpu::METRICS, at, vec![dom(U1, "one", 1, vec![])]),
        t0,
    );
    st.ingest(
        batch("cpu", cpu::METRICS, at, vec![dom(U2, "two", 1, vec![])]),
        t0,
    );
    let a = st.render(Format::Classic, &[], t0);
    let b = st.render(Format::Classic, &[], t0 + Duration::from_secs(1));
    assert_eq!(a.as_ptr(), b.as_ptr(), "served from the cache");
    let om = st.render(Format::OpenMetrics, &[], t0);
    assert_ne!(a.as_ptr(), om.as_ptr(), "one cache per format");
    let c = st.render(Format::Classic, &["cpu".to_string()], t0);
    assert_ne!(
        a.as_ptr(),
        c.as_ptr(),
        "a withheld collector changes the output"
    );
    let d = st.render(Format::Classic, &[], t0 + Duration::from_secs(600));
    assert!(
        !String::from_utf8_lossy(&d).contains(U1),
        "grace expiry invalidates the cache"
    );
    st.count_event(&LifecycleEvent {
        at,
        domain: DomainRef::new(U1, "one"),
        event: 2,
        detail: 0,
        reconciled: false,
    });
    let e = st.render(Format::Classic, &[], t0 + Duration::from_secs(600));
    assert!(String::from_utf8_lossy(&e)
        .contains("vm_lifecycle_events_total{event_type=\"Started\",reason=\"Booted\"} 1"));
}

// ------------------------------------------------------------------ HTTP, loop, live

struct StubLive {
    batches: Vec<Arc<Batch>>,
    calls: std::sync::atomic::AtomicU64,
}

#[vadvisor_api::async_trait]
impl LiveCollect for StubLive {
    async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.batches.is_empty() {
            Err("libvirt is down".into())
        } else {
            Ok(Arc::from(self.batches.clone()))
        }
    }
}

struct Harness {
    router: Router,
    bus: Bus,
    health: Arc<Health>,
    hv: Arc<FakeHypervisor>,
    live: Arc<StubLive>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

type Built = (
    Router,
    Box<dyn vadvisor_api::Sink>,
    Arc<Health>,
    Arc<FakeHypervisor>,
);

fn build(options: serde_json::Value, live: Arc<StubLive>) -> Result<Built, Vec<OptionError>> {
    let mut registry = Registry::new();
    super::register(&mut registry);
    let factory = registry
        .sink("prometheus")
        .expect("registered as `prometheus`");
    let mut http = HttpRoutes::new();
    let hv = Arc::new(FakeHypervisor::new());
    let health = Health::new();
    let mut cx = SinkBuildContext {
        id: "prometheus".into(),
        hypervisor: hv.clone(),
        http: &mut http,
        live,
        health: health.clone().into(),
    };
    let sink = factory.build(&PluginOptions::new(options), &mut cx)?;
    Ok((http.into_router(), sink, health, hv))
}

impl Harness {
    fn start(options: serde_json::Value, live_batches: Vec<Arc<Batch>>) -> Harness {
        let live = Arc::new(StubLive {
            batches: live_batches,
            calls: Default::default(),
        });
        let (router, sink, health, hv) = build(options, live.clone()).expect("valid options");
        let bus = Bus::new(64);
        let shutdown = CancellationToken::new();
        let input = SinkInput {
            id: "prometheus".into(),
            records: bus.subscribe(health.sink("prometheus")),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(sink.run(input));
        Harness {
            router,
            bus,
            health,
            hv,
            live,
            shutdown,
            task,
        }
    }

    async fn get(&self, path: &str, accept: Option<&str>) -> (StatusCode, String, String) {
        let mut req = Request::get(path);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).expect("UTF-8"))
    }

    /// Scrapes until `until` holds (or 3 s pass).
    async fn scrape_until(&self, accept: Option<&str>, until: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let (_, _, body) = self.get("/metrics", accept).await;
            if until(&body) || Instant::now() > deadline {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the sink stops promptly and cleanly: {result:?}"
        );
    }
}

#[tokio::test]
async fn serves_both_formats_with_self_and_process_metrics() {
    let h = Harness::start(serde_json::json!({}), vec![]);
    for b in lab_batches(&[(U1, "vadv-lab-1")], SystemTime::now(), 5e9) {
        h.bus.publish(Record::Batch(b));
    }
    h.bus.publish(Record::Event(Arc::new(LifecycleEvent {
        at: SystemTime::now(),
        domain: DomainRef::new(U1, "vadv-lab-1"),
        event: 6,
        detail: 1,
        reconciled: false,
    })));
    h.health
        .record_run("cpu", Duration::from_millis(3), true, 0);
    h.health
        .record_run("memory", Duration::from_millis(4), true, 2);
    let t0 = SystemTime::now();
    h.health.record_start("cpu", t0);
    h.health
        .record_start("cpu", t0 + Duration::from_millis(2500));
    h.health.sink("rest").add_dropped(5);
    let body = h
        .scrape_until(None, |b| {
            b.contains("vm_lifecycle_events_total{") && b.contains("vm_disk_info{")
        })
        .await;
    let (status, ct, _) = h.get("/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let e = parse(&body, Format::Classic);
    let vm = [("uuid", U1), ("name", "vadv-lab-1")];
    assert_eq!(e.get("vm_up", &vm), Some(1.0));
    assert_eq!(e.get("vm_cpu_time_seconds_total", &vm), Some(5.0));
    assert_eq!(
        e.get(
            "vm_lifecycle_events_total",
            &[("event_type", "Shutdown"), ("reason", "On guest request")]
        ),
        Some(1.0)
    );
    assert_eq!(
        e.get("vadvisor_collector_success", &[("collector", "cpu")]),
        Some(1.0)
    );
    assert_eq!(
        e.get(
            "vadvisor_collector_duration_seconds",
            &[("collector", "memory")]
        ),
        Some(0.004)
    );
    assert_eq!(
        e.get("vadvisor_collector_runs_total", &[("collector", "cpu")]),
        Some(1.0)
    );
    assert_eq!(
        e.get("vadvisor_collector_period_seconds", &[("collector", "cpu")]),
        Some(2.5),
        "the actual period"
    );
    assert_eq!(
        e.get("vadvisor_collector_errors_total", &[("collector", "cpu")]),
        Some(0.0)
    );
    assert_eq!(
        e.get(
            "vadvisor_domain_collection_errors_total",
            &[("collector", "memory")]
        ),
        Some(2.0)
    );
    assert_eq!(
        e.get("vadvisor_sink_dropped_records_total", &[("sink", "rest")]),
        Some(5.0)
    );
    assert_eq!(
        e.get(
            "vadvisor_sink_dropped_records_total",
            &[("sink", "prometheus")]
        ),
        Some(0.0)
    );
    assert_eq!(e.get("vadvisor_libvirt_up", &[]), Some(1.0));
    assert!(e.get("vadvisor_libvirt_calls_total", &[]).is_some());
    assert!(e.get("vadvisor_libvirt_reconnects_total", &[]).is_some());
    assert_eq!(
        e.get(
            "vadvisor_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        e.series("vadvisor_collector_last_batch_timestamp_seconds")
            .len(),
        4
    );
    for p in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert_eq!(e.series(p).len(), 1, "{p}");
    }

    let (status, ct, om) = h.get("/metrics", Some(OM_ACCEPT)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let e = parse(&om, Format::OpenMetrics);
    assert_eq!(e.get("vm_cpu_time_seconds_total", &vm), Some(5.0));
    assert!(e
        .family("vadvisor_collector_runs")
        .is_some_and(|f| f.1 == "counter"));
    assert!(e.family("process_virtual_memory_bytes").is_some());

    // libvirt down: reported, and the failed collector's series are withheld.
    h.hv.set_down(Some("gone"));
    h.health
        .record_run("cpu", Duration::from_millis(3), false, 0);
    let (_, _, body) = h.get("/metrics", None).await;
    let e = parse(&body, Format::Classic);
    assert_eq!(e.get("vadvisor_libvirt_up", &[]), Some(0.0));
    assert_eq!(
        e.get("vadvisor_collector_success", &[("collector", "cpu")]),
        Some(0.0)
    );
    assert!(e.series("vm_cpu_time_seconds_total").is_empty());
    assert_eq!(e.get("vm_memory_bytes", &vm), Some(196_608.0 * 1024.0));
    h.stop().await;
}

#[tokio::test]
async fn live_mode_collects_on_every_scrape() {
    let batches = lab_batches(&[(U1, "one")], SystemTime::now(), 2e9);
    let h = Harness::start(serde_json::json!({"live": true, "path": "/m"}), batches);
    // Batches from the bus are ignored in live mode.
    for b in lab_batches(&[(U2, "two")], SystemTime::now(), 1e9) {
        h.bus.publish(Record::Batch(b));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, body) = h.get("/m", None).await;
    assert_eq!(status, StatusCode::OK);
    let e = parse(&body, Format::Classic);
    assert_eq!(
        e.get(
            "vm_cpu_time_seconds_total",
            &[("uuid", U1), ("name", "one")]
        ),
        Some(2.0)
    );
    assert!(!body.contains(U2));
    let _ = h.get("/m", Some(OM_ACCEPT)).await;
    assert_eq!(h.live.calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    let (status, _, _) = h.get("/metrics", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only the configured path is served"
    );
    h.stop().await;

    // A failed live collection still answers, with the self-metrics.
    let h = Harness::start(serde_json::json!({"live": true}), vec![]);
    let (status, _, body) = h.get("/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let e = parse(&body, Format::Classic);
    assert!(e.series("vm_up").is_empty());
    assert!(e.get("process_virtual_memory_bytes", &[]).is_some());
    h.stop().await;
}

#[test]
fn options_have_defaults_and_reject_mistakes() {
    let o: PrometheusOptions = PluginOptions::new(serde_json::Value::Null)
        .decode()
        .expect("defaults");
    assert_eq!(o, PrometheusOptions::default());
    assert_eq!(o.path, "/metrics");
    assert!(!o.live && o.name_label && o.vadvisor_names);
    assert_eq!(o.vm_up_grace, Duration::from_secs(600));
    let o: PrometheusOptions =
        PluginOptions::new(serde_json::json!({"vm_up_grace": "90s", "name_label": false}))
            .decode()
            .expect("valid");
    assert_eq!(o.vm_up_grace, Duration::from_secs(90));
    assert!(!o.name_label);

    let live = || {
        Arc::new(StubLive {
            batches: vec![],
            calls: Default::default(),
        })
    };
    let errs = build(serde_json::json!({"paht": "/x", "live": "yes"}), live())
        .err()
        .expect("errors");
    let paths: Vec<String> = errs.iter().map(|e| e.path.join(".")).collect();
    assert!(
        paths.contains(&"paht".to_string()) && paths.contains(&"live".to_string()),
        "{paths:?}"
    );
    for bad in ["metrics", "/a b", "/{x}", "//m", "/*x"] {
        let errs = build(serde_json::json!({ "path": bad }), live())
            .err()
            .expect("bad path");
        assert_eq!(errs[0].path, vec!["path"], "{bad}");
    }
    assert!(build(serde_json::json!({"vm_up_grace": "soon"}), live()).is_err());
}

// ------------------------------------------------------------------ promtool

/// Runs `promtool check metrics` on `text`: (exit code, problems reported).
fn promtool(text: &str) -> Option<(i32, Vec<String>)> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let problems = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    Some((out.status.code().unwrap_or(-1), problems))
}

/// The only lint promtool has about our output: vAdvisor's historical names are in
/// milliseconds, not the base unit. They are kept on purpose (`vadvisor_names`).
pub(crate) const VADVISOR_NAME_LINTS: [&str; 4] = [
    "vm_cpu_milliseconds_total use base unit \"seconds\" instead of \"milliseconds\"",
    "vm_cpu_user_milliseconds_total use base unit \"seconds\" instead of \"milliseconds\"",
    "vm_cpu_system_milliseconds_total use base unit \"seconds\" instead of \"milliseconds\"",
    "vm_vcpu_milliseconds_total use base unit \"seconds\" instead of \"milliseconds\"",
];

#[tokio::test]
#[ignore = "needs promtool: scripts/install-test-peers.sh (scripts/test.sh runs it)"]
async fn promtool_finds_nothing_to_report() {
    for aliases in [false, true] {
        let h = Harness::start(serde_json::json!({"vadvisor_names": aliases}), vec![]);
        for b in lab_batches(
            &[(U1, "vadv-lab-1"), (U2, "with \"quotes\"\\")],
            SystemTime::now(),
            5e9,
        ) {
            h.bus.publish(Record::Batch(b));
        }
        // Escapes the Go parser must accept: in HELP, label values and domain names.
        const WEIRD: &[MetricDesc] = &[MetricDesc::gauge(
            "vm_weird_bytes",
            "Help with \\ backslash\nand \"quotes\"",
            Unit::Bytes,
        )
        .labels(&["device"])];
        let weird = dom(
            "5ad0a0b0-0000-4000-8000-000000000003",
            "a \"b\"\\\nc",
            1,
            vec![Sample::labelled(0, vec![l("x\"y\\z\n")], 1.0)],
        );
        h.bus.publish(Record::Batch(batch(
            "weird",
            WEIRD,
            SystemTime::now(),
            vec![weird],
        )));
        h.bus.publish(Record::Event(Arc::new(LifecycleEvent {
            at: SystemTime::now(),
            domain: DomainRef::new(U1, "x"),
            event: 2,
            detail: 0,
            reconciled: false,
        })));
        h.health
            .record_run("cpu", Duration::from_millis(3), true, 0);
        let body = h
            .scrape_until(None, |b| {
                b.contains("vm_network_")
                    && b.contains("vm_lifecycle")
                    && b.contains("vm_weird_bytes{")
            })
            .await;
        let (code, problems) = promtool(&body).expect("promtool runs");
        if aliases {
            let unexpected: Vec<&String> = problems
                .iter()
                .filter(|p| !VADVISOR_NAME_LINTS.contains(&p.as_str()))
                .collect();
            assert!(unexpected.is_empty(), "promtool: {unexpected:?}\n{body}");
            assert_eq!(problems.len(), 4, "{problems:?}");
        } else {
            assert_eq!(
                (code, problems.clone()),
                (0, vec![]),
                "promtool: {problems:?}\n{body}"
            );
        }
        h.stop().await;
    }
}
