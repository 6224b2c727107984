//! Options of the `remote_write` sink, in the shape of Prometheus' own `remote_write`
//! block (url, remote_timeout, headers, basic_auth, authorization, tls_config,
//! queue_config) plus `send_interval`, `external_labels`, `buffer` and the exposition
//! options shared with the `prometheus` sink. [`RemoteWriteOptions::check`] validates
//! what serde cannot, each problem located at its key. Secrets are held in [`Secret`],
//! whose `Debug` never shows them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vadvisor_api::OptionError;

/// A value that must never be printed (passwords, tokens).
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Options of one `remote_write` sink instance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteOptions {
    /// The receiver's remote-write endpoint (`http://` or `https://`).
    pub url: String,
    /// Timeout of one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub remote_timeout: Duration,
    /// Extra HTTP headers sent with every request (e.g. `X-Scope-OrgID`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// How often a snapshot of every series is taken; unset: after every collection
    /// round (the collectors' interval).
    #[serde(default, with = "humantime_serde::option")]
    pub send_interval: Option<Duration>,
    /// Labels added to every series (a series' own label of the same name wins).
    /// Unset: `host: <this machine's hostname>`; `{}` adds none.
    #[serde(default)]
    pub external_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub buffer: BufferConfig,
    /// As the `prometheus` sink's options of the same names, so that the series are
    /// the same as `/metrics`.
    #[serde(default = "yes")]
    pub name_label: bool,
    #[serde(default = "yes")]
    pub vadvisor_names: bool,
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub vm_up_grace: Duration,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_grace() -> Duration {
    Duration::from_secs(600)
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme (`Bearer`).
    #[serde(default = "bearer", rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub credentials: Option<Secret>,
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

fn bearer() -> String {
    "Bearer".into()
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM CA certificates to trust (instead of the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples held in memory waiting to be sent (memory buffer); beyond it the oldest
    /// are dropped and counted.
    pub capacity: usize,
    /// Most samples in one request.
    pub max_samples_per_send: usize,
    /// Longest a sample waits for a request to fill up.
    #[serde(with = "humantime_serde")]
    pub batch_send_deadline: Duration,
    /// First retry delay; doubles on every retry up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 2_000_000,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Where unsent samples wait.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BufferKind {
    /// In memory, bounded by `queue_config.capacity` samples: lost on restart.
    #[default]
    Memory,
    /// An append-only segment log with checksums in `path`, bounded by `max_size`.
    Disk,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    #[serde(rename = "type")]
    pub kind: BufferKind,
    pub path: Option<PathBuf>,
    /// Bytes on disk (`256MiB`, `1GB`, or a number of bytes).
    #[serde(deserialize_with = "de_size")]
    pub max_size: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            kind: BufferKind::Memory,
            path: None,
            max_size: 256 << 20,
        }
    }
}

/// Parses `1234`, `64KiB`, `256MiB`, `1GiB`, `10MB`, `1GB` (case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (like 256MiB, 1GB or 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (valid: B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Headers set by the sink itself or by `basic_auth`/`authorization`.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
];

/// Smallest disk buffer: one segment holds at least a few rounds.
pub const MIN_DISK_SIZE: u64 = 1 << 20;

fn valid_label_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with("__")
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

fn readable(path: &std::path::Path, at: &[&str]) -> Result<(), OptionError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| OptionError::at(at, format!("cannot read `{}`: {e}", path.display())))
}

impl RemoteWriteOptions {
    /// Checks what deserialisation cannot; returns the parsed URL.
    pub fn check(&self) -> Result<reqwest::Url, OptionError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| OptionError::at(&["url"], format!("`{}` is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(OptionError::at(
                &["url"],
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OptionError::at(
                &["url"],
                "credentials in the URL are not accepted (they would show in logs): use basic_auth",
            ));
        }
        if self.remote_timeout.is_zero() {
            return Err(OptionError::at(&["remote_timeout"], "must be more than 0s"));
        }
        for (name, value) in &self.headers {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(OptionError::at(
                    &["headers", name],
                    format!("`{name}` is set by the sink (use basic_auth or authorization for credentials)"),
                ));
            }
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(&value.0).is_err()
            {
                return Err(OptionError::at(
                    &["headers", name],
                    "not a valid HTTP header name and value",
                ));
            }
        }
        if self.basic_auth.is_some() && self.authorization.is_some() {
            return Err(OptionError::at(
                &["authorization"],
                "basic_auth and authorization are mutually exclusive",
            ));
        }
        if let Some(b) = &self.basic_auth {
            match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    return Err(OptionError::at(
                        &["basic_auth", "password_file"],
                        "password and password_file are mutually exclusive",
                    ))
                }
                (None, Some(f)) => readable(f, &["basic_auth", "password_file"])?,
                _ => {}
            }
        }
        if let Some(a) = &self.authorization {
            if a.kind.is_empty() || !a.kind.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(OptionError::at(
                    &["authorization", "type"],
                    "must be an HTTP authentication scheme like Bearer",
                ));
            }
            if a.kind.eq_ignore_ascii_case("basic") {
                return Err(OptionError::at(
                    &["authorization", "type"],
                    "use basic_auth for Basic authentication",
                ));
            }
            match (&a.credentials, &a.credentials_file) {
                (Some(_), Some(_)) => {
                    return Err(OptionError::at(
                        &["authorization", "credentials_file"],
                        "credentials and credentials_file are mutually exclusive",
                    ))
                }
                (None, None) => {
                    return Err(OptionError::at(
                        &["authorization"],
                        "needs credentials or credentials_file",
                    ))
                }
                (None, Some(f)) => readable(f, &["authorization", "credentials_file"])?,
                _ => {}
            }
        }
        let tls = &self.tls_config;
        if let Some(f) = &tls.ca_file {
            readable(f, &["tls_config", "ca_file"])?;
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(c), Some(k)) => {
                readable(c, &["tls_config", "cert_file"])?;
                readable(k, &["tls_config", "key_file"])?;
            }
            (Some(_), None) => {
                return Err(OptionError::at(
                    &["tls_config", "key_file"],
                    "cert_file needs key_file",
                ))
            }
            (None, Some(_)) => {
                return Err(OptionError::at(
                    &["tls_config", "cert_file"],
                    "key_file needs cert_file",
                ))
            }
            (None, None) => {}
        }
        let q = &self.queue_config;
        if q.max_samples_per_send == 0 {
            return Err(OptionError::at(
                &["queue_config", "max_samples_per_send"],
                "must be at least 1",
            ));
        }
        if q.capacity < q.max_samples_per_send {
            return Err(OptionError::at(
                &["queue_config", "capacity"],
                format!(
                    "must be at least max_samples_per_send ({})",
                    q.max_samples_per_send
                ),
            ));
        }
        if q.min_backoff.is_zero() || q.max_backoff < q.min_backoff {
            return Err(OptionError::at(
                &["queue_config", "max_backoff"],
                "min_backoff must be more than 0s and max_backoff at least min_backoff",
            ));
        }
        if q.batch_send_deadline.is_zero() {
            return Err(OptionError::at(
                &["queue_config", "batch_send_deadline"],
                "must be more than 0s",
            ));
        }
        if self
            .send_interval
            .is_some_and(|d| d < Duration::from_millis(100))
        {
            return Err(OptionError::at(
                &["send_interval"],
                "must be at least 100ms",
            ));
        }
        if let Some(labels) = &self.external_labels {
            for name in labels.keys() {
                if !valid_label_name(name) {
                    return Err(OptionError::at(
                        &["external_labels", name],
                        format!("`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
                    ));
                }
            }
        }
        match self.buffer.kind {
            BufferKind::Memory => {
                if self.buffer.path.is_some() {
                    return Err(OptionError::at(
                        &["buffer", "path"],
                        "only used with `type: disk`",
                    ));
                }
            }
            BufferKind::Disk => {
                let Some(path) = &self.buffer.path else {
                    return Err(OptionError::at(&["buffer"], "`type: disk` needs `path`"));
                };
                if self.buffer.max_size < MIN_DISK_SIZE {
                    return Err(OptionError::at(
                        &["buffer", "max_size"],
                        "must be at least 1MiB",
                    ));
                }
                // Checked without creating anything (`--check-config` must not); the
                // directory is created when the sink starts.
                if path.exists() && !path.is_dir() {
                    return Err(OptionError::at(
                        &["buffer", "path"],
                        format!("`{}` exists and is not a directory", path.display()),
                    ));
                }
                if !path.is_absolute() {
                    return Err(OptionError::at(
                        &["buffer", "path"],
                        "must be an absolute path",
                    ));
                }
            }
        }
        Ok(url)
    }

    /// The labels added to every series, sorted by name.
    pub fn external_labels(&self) -> Vec<(String, String)> {
        match &self.external_labels {
            Some(l) => l.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => vec![("host".to_string(), hostname())],
        }
    }
}

/// This machine's hostname (`/proc/sys/kernel/hostname`), `localhost` if unreadable.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::PluginOptions;

    fn opts(v: serde_json::Value) -> Result<RemoteWriteOptions, OptionError> {
        let o: RemoteWriteOptions = PluginOptions::new(v).decode()?;
        o.check().map(|_| o)
    }

    #[test]
    fn defaults_follow_prometheus() {
        let o = opts(serde_json::json!({"url": "http://r:9090/api/v1/write"})).unwrap();
        assert_eq!(o.remote_timeout, Duration::from_secs(30));
        assert_eq!(o.queue_config.max_samples_per_send, 2000);
        assert_eq!(o.queue_config.min_backoff, Duration::from_millis(30));
        assert_eq!(o.buffer.kind, BufferKind::Memory);
        assert_eq!(o.external_labels()[0].0, "host");
        assert_eq!(o.external_labels()[0].1, hostname());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("12 parsecs").is_err());
        let o = opts(serde_json::json!({"url": "http://r/", "buffer": {"type": "disk", "path": "/tmp", "max_size": "2MiB"}})).unwrap();
        assert_eq!(o.buffer.max_size, 2 << 20);
    }

    #[test]
    fn errors_are_located() {
        let cases = [
            (serde_json::json!({"url": "ftp://x/"}), vec!["url"]),
            (serde_json::json!({"url": "http://u:p@x/"}), vec!["url"]),
            (
                serde_json::json!({"url": "http://x/", "headers": {"Content-Type": "x"}}),
                vec!["headers", "Content-Type"],
            ),
            (
                serde_json::json!({"url": "http://x/", "basic_auth": {"username": "u", "password": "p", "password_file": "/etc/hostname"}}),
                vec!["basic_auth", "password_file"],
            ),
            (
                serde_json::json!({"url": "http://x/", "authorization": {"credentials_file": "/nonexistent/t"}}),
                vec!["authorization", "credentials_file"],
            ),
            (
                serde_json::json!({"url": "http://x/", "tls_config": {"cert_file": "/etc/hostname"}}),
                vec!["tls_config", "key_file"],
            ),
            (
                serde_json::json!({"url": "http://x/", "queue_config": {"max_samples_per_send": 0}}),
                vec!["queue_config", "max_samples_per_send"],
            ),
            (
                serde_json::json!({"url": "http://x/", "external_labels": {"__x": "1"}}),
                vec!["external_labels", "__x"],
            ),
            (
                serde_json::json!({"url": "http://x/", "buffer": {"type": "disk"}}),
                vec!["buffer"],
            ),
            (
                serde_json::json!({"url": "http://x/", "buffer": {"type": "disk", "path": "/tmp", "max_size": 10}}),
                vec!["buffer", "max_size"],
            ),
        ];
        for (v, path) in cases {
            let e = opts(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.path, path, "{v}: {e}");
        }
        let e =
            opts(serde_json::json!({"url": "http://x/", "buffer": {"type": "tape"}})).unwrap_err();
        assert!(
            e.message.contains("memory") && e.message.contains("disk"),
            "{e}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let o = opts(serde_json::json!({"url": "http://x/", "basic_auth": {"username": "u", "password": "hunter2"},
            "headers": {"X-Api-Key": "k3y"}}))
        .unwrap();
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2") && !d.contains("k3y"), "{d}");
    }
}
