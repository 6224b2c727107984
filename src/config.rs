//! The YAML pipeline file: its schema (`libvirt`, `http`, `collectors`, `sinks`), the
//! core keys of plugin instances (`interval`, `timeout`, `enabled`), and diagnostics
//! that name the file, line and column and list the valid choices. Plugin options are
//! left raw here and decoded by each plugin's factory in [`crate::pipeline`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vadvisor_api::PluginOptions;
use vadvisor_libvirt::{BulkShards, StatsTransport};

use crate::yaml::{self, Locations, Position};

/// The built-in defaults: exactly `config.example.yaml`.
pub const DEFAULT_CONFIG: &str = include_str!("../config.example.yaml");
/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vadvisor/config.yaml";

/// Upper bound of `http.max_connections`.
pub const MAX_CONNECTIONS: usize = 1_000_000;

const TOP_LEVEL_KEYS: &[&str] = &["libvirt", "http", "collectors", "sinks"];
const COLLECTOR_CORE_KEYS: &[&str] = &["interval", "timeout", "enabled"];
const SINK_CORE_KEYS: &[&str] = &["enabled"];

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub position: Position,
    /// Dotted key path (`sinks.rest.retention`), empty for the document.
    pub path: String,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.diagnostics {
            // Line 0: about the file as a whole (it cannot be read), no position.
            let at = if d.position.line == 0 {
                self.file.clone()
            } else {
                format!("{}:{}", self.file, d.position)
            };
            if d.path.is_empty() {
                writeln!(f, "{at}: {}", d.message)?;
            } else {
                writeln!(f, "{at}: {}: {}", d.path, d.message)?;
            }
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            self.file
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// `libvirt:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtSection {
    /// Connection URI; the connection is always opened read-only.
    pub uri: String,
    /// Deadline of every libvirt call.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// At most this many libvirt calls in flight (bounds threads when a domain hangs).
    pub max_concurrent_calls: usize,
    /// Reconnect backoff, first and longest wait.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// When the bulk statistics call has not answered after this long, a second one is
    /// issued and the first answer wins (a hung VM then delays the others only once).
    /// `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub hedge_after: Duration,
    /// Split each bulk statistics collection into this many parallel calls over domain
    /// subsets (`auto`: by the number of running domains).
    pub bulk_shards: BulkShards,
    /// How the bulk statistics call reaches the daemon: `auto` (libvirt's RPC protocol
    /// directly on a local socket, else the client library) or `library`.
    pub stats_transport: StatsTransport,
}

impl Default for LibvirtSection {
    fn default() -> Self {
        Self {
            uri: "qemu:///system".into(),
            call_timeout: Duration::from_secs(5),
            max_concurrent_calls: 4,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            hedge_after: Duration::from_millis(750),
            bulk_shards: BulkShards::Auto,
            stats_transport: StatsTransport::Auto,
        }
    }
}

/// `http:` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: SocketAddr,
    /// TLS and basic auth, in exporter-toolkit's web config format.
    pub web_config_file: Option<std::path::PathBuf>,
    /// A connection whose writes make no progress this long (its client stopped
    /// reading) is closed.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A connection that has not sent a complete request header this long after its
    /// first byte (or its accept, or its TLS handshake start) is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// At most this many connections at once; a new one beyond it sheds the oldest idle
    /// connection (or is refused while every connection is busy).
    pub max_connections: usize,
    /// Accept `POST /-/reload` (re-read the pipeline file, like SIGHUP).
    pub enable_reload: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8181)),
            web_config_file: None,
            write_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            enable_reload: false,
        }
    }
}

/// A plugin instance from `collectors:` or `sinks:`.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// `type` or `type/name`.
    pub id: String,
    pub kind: String,
    /// Collectors only.
    pub interval: Duration,
    /// Collectors only: deadline of one run.
    pub timeout: Duration,
    pub options: PluginOptions,
    /// Key path of the instance (`["sinks", "statsd/backup"]`).
    pub path: Vec<String>,
    /// Disabled instances are validated but not run.
    pub enabled: bool,
}

/// A loaded, structurally valid config (plugin options not decoded yet).
#[derive(Debug)]
pub struct AgentConfig {
    pub file: String,
    pub libvirt: LibvirtSection,
    pub http: HttpSection,
    pub collectors: Vec<Instance>,
    pub sinks: Vec<Instance>,
    pub locations: Locations,
}

impl AgentConfig {
    /// Turns a plugin's option error into a located diagnostic.
    pub fn diagnostic(
        &self,
        instance_path: &[String],
        option_path: &[String],
        message: String,
    ) -> Diagnostic {
        let mut path = instance_path.to_vec();
        path.extend(option_path.iter().cloned());
        let position = if message.starts_with("unknown field") {
            self.locations.key(&path)
        } else {
            self.locations.value(&path)
        };
        Diagnostic {
            position,
            path: path.join("."),
            message,
        }
    }
}

/// Kinds of plugins the registry knows, for validation messages.
pub struct KnownKinds {
    pub collectors: Vec<&'static str>,
    pub sinks: Vec<&'static str>,
}

/// Parses and checks the structure of a config file. Every problem found is returned.
pub fn load(text: &str, file: &str, kinds: &KnownKinds) -> Result<AgentConfig, ConfigErrors> {
    let (config, diagnostics) = load_partial(text, file, kinds)?;
    if diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors {
            file: file.to_string(),
            diagnostics,
        })
    }
}

/// Like [`load`], but returns what could be read together with the problems found, so
/// that plugin options can be checked too and every error reported at once. Only a
/// YAML syntax error (or a document that is not a mapping) is returned as `Err`.
pub fn load_partial(
    text: &str,
    file: &str,
    kinds: &KnownKinds,
) -> Result<(AgentConfig, Vec<Diagnostic>), ConfigErrors> {
    let errors = |diagnostics| ConfigErrors {
        file: file.to_string(),
        diagnostics,
    };
    let (root, locations, dups) = yaml::parse(text).map_err(|e| {
        errors(vec![Diagnostic {
            position: e.position,
            path: String::new(),
            message: e.message,
        }])
    })?;
    let mut diags: Vec<Diagnostic> = dups
        .into_iter()
        .map(|(position, message)| Diagnostic {
            position,
            path: String::new(),
            message,
        })
        .collect();
    let mut diag = |path: &[&str], key: bool, message: String| {
        let p: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        let position = if key {
            locations.key(&p)
        } else {
            locations.value(&p)
        };
        diags.push(Diagnostic {
            position,
            path: p.join("."),
            message,
        });
    };

    let Value::Object(top) = &root else {
        diag(
            &[],
            false,
            "the config must be a mapping with sections libvirt, http, collectors, sinks".into(),
        );
        return Err(errors(diags));
    };
    for key in top.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            diag(
                &[key],
                true,
                format!(
                    "unknown section `{key}`, expected one of {}",
                    list(TOP_LEVEL_KEYS)
                ),
            );
        }
    }

    let section = |name: &str| -> Value { top.get(name).cloned().unwrap_or(Value::Null) };
    let libvirt: LibvirtSection =
        decode_section(&section("libvirt"), "libvirt", &locations, &mut diags);
    let http: HttpSection = decode_section(&section("http"), "http", &locations, &mut diags);
    if !(1..=256).contains(&libvirt.max_concurrent_calls) {
        let p = vec!["libvirt".to_string(), "max_concurrent_calls".to_string()];
        diags.push(Diagnostic {
            position: locations.value(&p),
            path: p.join("."),
            message: "must be between 1 and 256".into(),
        });
    }
    if let BulkShards::Fixed(n) = libvirt.bulk_shards {
        if n > libvirt.max_concurrent_calls {
            let p = vec!["libvirt".to_string(), "bulk_shards".to_string()];
            diags.push(Diagnostic {
                position: locations.value(&p),
                path: p.join("."),
                message: format!(
                    "{n} shards need {n} concurrent calls, but max_concurrent_calls is {}: \
                     use `auto`, at most {} shards, or raise max_concurrent_calls",
                    libvirt.max_concurrent_calls, libvirt.max_concurrent_calls
                ),
            });
        }
    }
    if let Err(message) = check_libvirt_uri(&libvirt.uri) {
        let p = vec!["libvirt".to_string(), "uri".to_string()];
        diags.push(Diagnostic {
            position: locations.value(&p),
            path: p.join("."),
            message,
        });
    }
    for (name, d) in [
        ("write_timeout", http.write_timeout),
        ("header_timeout", http.header_timeout),
        ("idle_timeout", http.idle_timeout),
    ] {
        if d.is_zero() {
            let p = vec!["http".to_string(), name.to_string()];
            diags.push(Diagnostic {
                position: locations.value(&p),
                path: p.join("."),
                message: "must be greater than 0".into(),
            });
        }
    }
    if !(1..=MAX_CONNECTIONS).contains(&http.max_connections) {
        let p = vec!["http".to_string(), "max_connections".to_string()];
        diags.push(Diagnostic {
            position: locations.value(&p),
            path: p.join("."),
            message: format!("must be between 1 and {MAX_CONNECTIONS}"),
        });
    }
    for (name, d) in [
        ("call_timeout", libvirt.call_timeout),
        ("reconnect_min", libvirt.reconnect_min),
        ("reconnect_max", libvirt.reconnect_max),
    ] {
        if d.is_zero() {
            let p = vec!["libvirt".to_string(), name.to_string()];
            diags.push(Diagnostic {
                position: locations.value(&p),
                path: p.join("."),
                message: "must be greater than 0".into(),
            });
        }
    }

    let collectors = instances(
        &section("collectors"),
        "collectors",
        &kinds.collectors,
        COLLECTOR_CORE_KEYS,
        &locations,
        &mut diags,
    );
    let sinks = instances(
        &section("sinks"),
        "sinks",
        &kinds.sinks,
        SINK_CORE_KEYS,
        &locations,
        &mut diags,
    );

    diags.sort_by_key(|d| (d.position.line, d.position.column));
    Ok((
        AgentConfig {
            file: file.to_string(),
            libvirt,
            http,
            collectors,
            sinks,
            locations,
        },
        diags,
    ))
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn decode_section<T: serde::de::DeserializeOwned + Default>(
    value: &Value,
    name: &str,
    locations: &Locations,
    diags: &mut Vec<Diagnostic>,
) -> T {
    match PluginOptions::new(value.clone()).decode_all::<T>() {
        Ok(v) => v,
        Err(errors) => {
            // Decode again without the keys in error, so that the checks of the other
            // keys still run (an error in one key must not hide another's).
            let mut rest = value.clone();
            for e in &errors {
                remove_path(&mut rest, &e.path);
            }
            let partial = PluginOptions::new(rest)
                .decode_all::<T>()
                .unwrap_or_default();
            for e in errors {
                let mut path = vec![name.to_string()];
                path.extend(e.path);
                let position = if e.message.starts_with("unknown field") {
                    locations.key(&path)
                } else {
                    locations.value(&path)
                };
                diags.push(Diagnostic {
                    position,
                    path: path.join("."),
                    message: e.message,
                });
            }
            partial
        }
    }
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = value;
    for p in parents {
        match cur.get_mut(p.as_str()) {
            Some(v) => cur = v,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// Checks the shape of a libvirt URI: `driver[+transport]:` followed by a path or
/// `//[user@]host[:port]/path`, without spaces (e.g. `qemu:///system`,
/// `qemu+ssh://root@host/system`, `test:///default`).
pub fn check_libvirt_uri(uri: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid libvirt URI `{uri}`: {why}; expected e.g. `qemu:///system` or `qemu+ssh://user@host/system`"
        ))
    };
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("no `driver:` scheme");
    };
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return bad("the scheme must be a driver name such as `qemu` or `qemu+ssh`");
    }
    if rest.is_empty() {
        return bad("nothing after the scheme");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains spaces or control characters");
    }
    if let Some(authority) = rest.strip_prefix("//") {
        let host = authority.split(['/', '?']).next().unwrap_or_default();
        if host.contains("//") || host.matches('@').count() > 1 {
            return bad("the host part is malformed");
        }
    }
    Ok(())
}

/// Shortest collector interval: below it a tick cannot finish reliably.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn parse_duration(v: &Value) -> Result<Duration, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "expected a duration such as `1s`, `500ms` or `2m`, found `{other}`"
            ))
        }
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        format!("invalid duration `{text}` ({e}); expected e.g. `1s`, `500ms`, `2m`")
    })?;
    if d.is_zero() {
        return Err(format!("duration `{text}` must be greater than 0"));
    }
    Ok(d)
}

fn instances(
    section: &Value,
    name: &str,
    known: &[&'static str],
    core_keys: &[&str],
    locations: &Locations,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Instance> {
    let mut out = Vec::new();
    let mut push = |path: Vec<String>, key: bool, message: String| {
        let position = if key {
            locations.key(&path)
        } else {
            locations.value(&path)
        };
        diags.push(Diagnostic {
            position,
            path: path.join("."),
            message,
        });
    };
    let map = match section {
        Value::Null => return out,
        Value::Object(m) => m,
        _ => {
            push(
                vec![name.into()],
                false,
                format!("`{name}` must be a mapping of `type` or `type/name` to options"),
            );
            return out;
        }
    };
    for (id, body) in map {
        let path = vec![name.to_string(), id.clone()];
        let (kind, instance_name) = match id.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (id.as_str(), None),
        };
        if !known.contains(&kind) {
            push(
                path.clone(),
                true,
                format!(
                    "unknown {} type `{kind}`, expected one of {}",
                    &name[..name.len() - 1],
                    list(known)
                ),
            );
            continue;
        }
        if let Some(n) = instance_name {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                push(path.clone(), true, format!("invalid instance name `{n}`: use letters, digits, `_` or `-` after `{kind}/`"));
                continue;
            }
        }
        let mut options = match body {
            Value::Null => serde_json::Map::new(),
            Value::Object(m) => m.clone(),
            _ => {
                push(
                    path.clone(),
                    false,
                    "expected a mapping of options (or nothing)".into(),
                );
                continue;
            }
        };
        let mut interval = Duration::from_secs(1);
        let mut timeout = None;
        let mut enabled = true;
        let mut ok = true;
        for key in core_keys {
            let Some(v) = options.remove(*key) else {
                continue;
            };
            let mut kpath = path.clone();
            kpath.push(key.to_string());
            match *key {
                "enabled" => match v {
                    Value::Bool(b) => enabled = b,
                    other => {
                        push(
                            kpath,
                            false,
                            format!("expected true or false, found `{other}`"),
                        );
                        ok = false;
                    }
                },
                "interval" | "timeout" => match parse_duration(&v) {
                    Ok(d) if *key == "interval" && d < MIN_INTERVAL => {
                        push(
                            kpath,
                            false,
                            format!(
                                "must be at least {}",
                                humantime::format_duration(MIN_INTERVAL)
                            ),
                        );
                        ok = false;
                    }
                    Ok(d) if *key == "interval" => interval = d,
                    Ok(d) => timeout = Some(d),
                    Err(e) => {
                        push(kpath, false, e);
                        ok = false;
                    }
                },
                _ => {}
            }
        }
        let timeout = timeout.unwrap_or_else(|| default_timeout(interval));
        out.push(Instance {
            id: id.clone(),
            kind: kind.to_string(),
            interval,
            timeout,
            options: PluginOptions::new(Value::Object(options)),
            path,
            // An instance with a bad core key is still built (to report its option
            // errors) but the config as a whole is rejected.
            enabled: enabled || !ok,
        });
    }
    out
}

/// A collector's deadline when the file sets none: its interval, but at least 5 s (a
/// loaded host can take more than a second to answer; missed ticks are then skipped).
pub fn default_timeout(interval: Duration) -> Duration {
    interval.max(Duration::from_secs(5))
}

/// The core keys every collector instance accepts besides its own options.
pub fn collector_core_keys() -> &'static [&'static str] {
    COLLECTOR_CORE_KEYS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds() -> KnownKinds {
        KnownKinds {
            collectors: vec!["cpu", "memory"],
            sinks: vec!["rest", "statsd"],
        }
    }

    #[test]
    fn loads_instances_with_core_keys() {
        let text = "collectors:\n  cpu:\n    interval: 2s\n  cpu/slow: {interval: 1m, timeout: 10s, per_vcpu: false}\nsinks:\n  statsd/a:\n  statsd/b: {enabled: false}\n  rest:\n";
        let c = load(text, "f.yaml", &kinds()).unwrap();
        assert_eq!(c.collectors.len(), 2);
        assert_eq!(c.collectors[0].interval, Duration::from_secs(2));
        assert_eq!(
            c.collectors[0].timeout,
            Duration::from_secs(5),
            "at least 5 s by default"
        );
        let slow = c.collectors.iter().find(|i| i.id == "cpu/slow").unwrap();
        assert_eq!(slow.timeout, Duration::from_secs(10));
        assert_eq!(slow.options.raw(), &serde_json::json!({"per_vcpu": false}));
        let enabled: Vec<&str> = c
            .sinks
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(enabled, vec!["rest", "statsd/a"]);
        assert_eq!(c.libvirt.uri, "qemu:///system");
        assert_eq!(c.http.listen.port(), 8181);
    }

    #[test]
    fn reports_every_error_with_line_column_and_choices() {
        let text = "libvirt:\n  uri: 5\n  bogus: 1\nhttp:\n  listen: not-an-address\ncolectors: {}\ncollectors:\n  cpux: {}\n  cpu:\n    interval: 0s\n  memory:\n    interval: soon\nsinks:\n  rest/: {}\n";
        let err = load(text, "bad.yaml", &kinds()).unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with(
                "bad.yaml:3:3: libvirt.bogus: unknown field `bogus`, expected one of"
            )),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("bad.yaml:2:8: libvirt.uri: invalid type")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("bad.yaml:5:11: http.listen:")),
            "{text}"
        );
        assert!(lines.iter().any(|l| l.contains("bad.yaml:6:1: colectors: unknown section `colectors`, expected one of `libvirt`, `http`, `collectors`, `sinks`")), "{text}");
        assert!(lines.iter().any(|l| l.contains("bad.yaml:8:3: collectors.cpux: unknown collector type `cpux`, expected one of `cpu`, `memory`")), "{text}");
        assert!(
            lines.iter().any(|l| l.contains(
                "bad.yaml:10:15: collectors.cpu.interval: duration `0s` must be greater than 0"
            )),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l
                .contains("bad.yaml:12:15: collectors.memory.interval: invalid duration `soon`")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("bad.yaml:14:3: sinks.rest/: invalid instance name")),
            "{text}"
        );
        assert!(text.ends_with("8 errors in bad.yaml"), "{text}");
    }

    #[test]
    fn yaml_syntax_errors_are_located() {
        let err = load("sinks:\n  rest: [\n", "s.yaml", &kinds()).unwrap_err();
        assert_eq!(err.diagnostics.len(), 1);
        assert!(err.diagnostics[0].position.line >= 2, "{err}");
    }

    #[test]
    fn stats_transport_is_auto_or_library() {
        let c = load("sinks:\n  rest: {}\n", "f.yaml", &kinds()).unwrap();
        assert_eq!(c.libvirt.stats_transport, StatsTransport::Auto, "default");
        let c = load("libvirt:\n  stats_transport: library\n", "f.yaml", &kinds()).unwrap();
        assert_eq!(c.libvirt.stats_transport, StatsTransport::Library);
        let err = load("libvirt:\n  stats_transport: grpc\n", "s.yaml", &kinds())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.yaml:2:20: libvirt.stats_transport:")
                && err.contains("auto")
                && err.contains("library"),
            "{err}"
        );
    }

    #[test]
    fn bulk_shards_is_auto_a_count_within_max_concurrent_calls() {
        let c = load("sinks:\n  rest: {}\n", "f.yaml", &kinds()).unwrap();
        assert_eq!(c.libvirt.bulk_shards, BulkShards::Auto, "default");
        let c = load("libvirt:\n  bulk_shards: 2\n", "f.yaml", &kinds()).unwrap();
        assert_eq!(c.libvirt.bulk_shards, BulkShards::Fixed(2));
        let c = load("libvirt:\n  bulk_shards: auto\n", "f.yaml", &kinds()).unwrap();
        assert_eq!(c.libvirt.bulk_shards, BulkShards::Auto);

        let text = "libvirt:\n  max_concurrent_calls: 4\n  bulk_shards: 6\n";
        let err = load(text, "s.yaml", &kinds()).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "s.yaml:3:16: libvirt.bulk_shards: 6 shards need 6 concurrent calls, but \
                 max_concurrent_calls is 4"
            ),
            "{err}"
        );
        for (value, col) in [("many", 16), ("0", 16), ("-2", 16)] {
            let text = format!("libvirt:\n  bulk_shards: {value}\n");
            let err = load(&text, "s.yaml", &kinds()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "s.yaml:2:{col}: libvirt.bulk_shards: invalid value"
                )) && err.contains("expected `auto` or a number of shards (1 or more)"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = load("sinks:\n  rest: {}\n  rest: {}\n", "d.yaml", &kinds()).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }
}
