//! Metric declarations: what a collector says once about each metric it reports
//! (name, help, type, unit, labels, and where it goes in vAdvisor's REST JSON and in
//! StatsD). Sinks render any collector from these declarations alone.

/// Counter (monotonic total) or gauge (a value that can go up and down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// The unit a value is expressed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Bytes,
    Kibibytes,
    /// 2^20 bytes (libvirt's and QEMU's "megabytes" of memory dirty rates).
    Mebibytes,
    /// A count of things (requests, packets, faults, …).
    Count,
    /// A code or flag without dimension (states, booleans, info values).
    None,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dimension {
    Time,
    Size,
    Count,
    None,
}

/// A unit's scale against its dimension's base: `mantissa * 10^exp10`, kept apart so
/// conversions stay exact (ns -> ms divides by exactly 1e6, as vAdvisor does).
#[derive(Clone, Copy, PartialEq)]
struct Scale {
    mantissa: f64,
    exp10: i32,
}

impl Unit {
    fn dimension_and_scale(self) -> (Dimension, Scale) {
        let s = |mantissa, exp10| Scale { mantissa, exp10 };
        match self {
            Unit::Nanoseconds => (Dimension::Time, s(1.0, -9)),
            Unit::Microseconds => (Dimension::Time, s(1.0, -6)),
            Unit::Milliseconds => (Dimension::Time, s(1.0, -3)),
            Unit::Seconds => (Dimension::Time, s(1.0, 0)),
            Unit::Bytes => (Dimension::Size, s(1.0, 0)),
            Unit::Kibibytes => (Dimension::Size, s(1024.0, 0)),
            Unit::Mebibytes => (Dimension::Size, s(1_048_576.0, 0)),
            Unit::Count => (Dimension::Count, s(1.0, 0)),
            Unit::None => (Dimension::None, s(1.0, 0)),
        }
    }

    /// True when values of `self` can be converted to `other`.
    pub fn convertible_to(self, other: Unit) -> bool {
        self.dimension_and_scale().0 == other.dimension_and_scale().0
    }

    /// Converts `value` from `self` to `to`. Conversions between dimensions that do not
    /// match return the value unchanged (declarations are validated at start-up).
    pub fn convert(self, value: f64, to: Unit) -> f64 {
        let (d1, s1) = self.dimension_and_scale();
        let (d2, s2) = to.dimension_and_scale();
        if d1 != d2 || s1 == s2 {
            return value;
        }
        let value = value * s1.mantissa / s2.mantissa;
        let exp = s1.exp10 - s2.exp10;
        let factor = 10f64.powi(exp.abs());
        if exp < 0 {
            value / factor
        } else {
            value * factor
        }
    }

    /// The Prometheus base unit for this unit (seconds, bytes; others unchanged).
    pub fn base(self) -> Unit {
        match self.dimension_and_scale().0 {
            Dimension::Time => Unit::Seconds,
            Dimension::Size => Unit::Bytes,
            _ => self,
        }
    }

    /// Name used in metric names and documentation (`seconds`, `bytes`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Nanoseconds => "nanoseconds",
            Unit::Microseconds => "microseconds",
            Unit::Milliseconds => "milliseconds",
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Kibibytes => "kibibytes",
            Unit::Mebibytes => "mebibytes",
            Unit::Count => "count",
            Unit::None => "none",
        }
    }

    /// Whether values in this unit are whole numbers when they come from libvirt
    /// (renders JSON integers instead of floats).
    pub fn is_integral(self) -> bool {
        !matches!(
            self,
            Unit::Milliseconds | Unit::Seconds | Unit::Microseconds
        )
    }
}

/// Where a metric's value goes in vAdvisor's REST sample JSON, and in which unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JsonField {
    /// Path syntax: dot-separated keys; a list segment `list[key=label]` addresses the
    /// item of `list` whose field `key` equals the value of label `label` (`#label`
    /// makes the key a JSON number). Examples: `cpu.usage.cpu_time`,
    /// `cpu.per_cpu_usage[index=#vcpu].vcpu_time`, `diskio[name=device].rd_bytes`.
    pub path: &'static str,
    pub unit: Unit,
}

/// A metric's StatsD name suffix (`vm.<uuid>[.<first label value>].<name>`) and unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatsdField {
    pub name: &'static str,
    pub unit: Unit,
}

/// A second Prometheus family rendered from the same values (used for vAdvisor's
/// historical names such as `vm_cpu_milliseconds_total`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alias {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Unit,
    /// Label names for the alias, in the order of the metric's labels (empty: the same).
    pub labels: &'static [&'static str],
}

/// The declaration of one metric. Build it in a `const` with the builder methods:
///
/// ```
/// use vadvisor_api::{MetricDesc, Unit};
/// const CPU_TIME: MetricDesc = MetricDesc::counter(
///     "vm_cpu_time_seconds_total", "CPU time used by the domain", Unit::Nanoseconds)
///     .json("cpu.usage.cpu_time", Unit::Milliseconds)
///     .statsd("cpu.total", Unit::Milliseconds)
///     .source("cpu.time", "1.2.9");
/// assert_eq!(CPU_TIME.kind.as_str(), "counter");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricDesc {
    /// Prometheus family name: base units, counters end in `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    /// Unit of the values the collector reports.
    pub unit: Unit,
    /// Label names besides the domain identity (`uuid`, `name`) every per-VM series has.
    pub labels: &'static [&'static str],
    pub json: Option<JsonField>,
    /// A second place in the JSON sample for the same value (same unit as `json`).
    pub json_also: Option<&'static str>,
    pub statsd: Option<StatsdField>,
    /// For coded gauges: the name of each code, rendered in JSON instead of the number.
    pub states: &'static [&'static str],
    pub aliases: &'static [Alias],
    /// Where the value comes from (libvirt stats field or API).
    pub source: &'static str,
    /// Minimum libvirt version that reports it.
    pub since: &'static str,
}

impl MetricDesc {
    const fn new(name: &'static str, help: &'static str, kind: MetricKind, unit: Unit) -> Self {
        Self {
            name,
            help,
            kind,
            unit,
            labels: &[],
            json: None,
            json_also: None,
            statsd: None,
            states: &[],
            aliases: &[],
            source: "",
            since: "",
        }
    }

    pub const fn counter(name: &'static str, help: &'static str, unit: Unit) -> Self {
        Self::new(name, help, MetricKind::Counter, unit)
    }

    pub const fn gauge(name: &'static str, help: &'static str, unit: Unit) -> Self {
        Self::new(name, help, MetricKind::Gauge, unit)
    }

    pub const fn labels(self, labels: &'static [&'static str]) -> Self {
        Self { labels, ..self }
    }

    pub const fn json(self, path: &'static str, unit: Unit) -> Self {
        Self {
            json: Some(JsonField { path, unit }),
            ..self
        }
    }

    /// Also places the value at `path` in the JSON sample (after [`MetricDesc::json`]).
    pub const fn json_also(self, path: &'static str) -> Self {
        Self {
            json_also: Some(path),
            ..self
        }
    }

    pub const fn statsd(self, name: &'static str, unit: Unit) -> Self {
        Self {
            statsd: Some(StatsdField { name, unit }),
            ..self
        }
    }

    pub const fn states(self, states: &'static [&'static str]) -> Self {
        Self { states, ..self }
    }

    pub const fn aliases(self, aliases: &'static [Alias]) -> Self {
        Self { aliases, ..self }
    }

    pub const fn source(self, source: &'static str, since: &'static str) -> Self {
        Self {
            source,
            since,
            ..self
        }
    }

    /// Checks the declaration against the naming rules sinks rely on.
    pub fn validate(&self) -> Result<(), String> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        if !valid_name(self.name) {
            return Err(format!(
                "metric name `{}` is not a valid Prometheus name",
                self.name
            ));
        }
        if self.kind == MetricKind::Counter && !self.name.ends_with("_total") {
            return Err(format!("counter `{}` must end in `_total`", self.name));
        }
        if self.kind == MetricKind::Gauge && self.name.ends_with("_total") {
            return Err(format!("gauge `{}` must not end in `_total`", self.name));
        }
        let base = self.unit.base();
        if matches!(base, Unit::Seconds | Unit::Bytes) && !self.name.contains(base.as_str()) {
            return Err(format!(
                "metric `{}` must carry its base unit `{}` in its name",
                self.name,
                base.as_str()
            ));
        }
        for label in self.labels {
            if !valid_name(label) || matches!(*label, "uuid" | "name") {
                return Err(format!(
                    "metric `{}`: invalid or reserved label name `{label}`",
                    self.name
                ));
            }
        }
        if let Some(json) = &self.json {
            for raw in std::iter::once(json.path).chain(self.json_also) {
                let path = JsonPath::parse(raw)
                    .map_err(|e| format!("metric `{}`: JSON path: {e}", self.name))?;
                for label in path.labels() {
                    if !self.labels.contains(&label) {
                        return Err(format!(
                            "metric `{}`: JSON path uses undeclared label `{label}`",
                            self.name
                        ));
                    }
                }
            }
            if !self.unit.convertible_to(json.unit) {
                return Err(format!(
                    "metric `{}`: JSON unit is not convertible",
                    self.name
                ));
            }
        }
        if self.json_also.is_some() && self.json.is_none() {
            return Err(format!("metric `{}`: json_also needs json", self.name));
        }
        if let Some(s) = &self.statsd {
            if !self.unit.convertible_to(s.unit) {
                return Err(format!(
                    "metric `{}`: StatsD unit is not convertible",
                    self.name
                ));
            }
        }
        for alias in self.aliases {
            if !valid_name(alias.name) || !self.unit.convertible_to(alias.unit) {
                return Err(format!(
                    "metric `{}`: invalid alias `{}`",
                    self.name, alias.name
                ));
            }
        }
        Ok(())
    }
}

/// One segment of a parsed [`JsonField::path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonSegment {
    Key(String),
    /// `list[key=label]` or `list[key=#label]`.
    Item {
        list: String,
        key: String,
        label: String,
        numeric: bool,
    },
}

/// A parsed JSON placement path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonPath {
    pub segments: Vec<JsonSegment>,
}

impl JsonPath {
    pub fn parse(path: &str) -> Result<Self, String> {
        let is_ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let mut segments = Vec::new();
        for part in path.split('.') {
            if let Some((list, rest)) = part.split_once('[') {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| format!("`{part}`: missing `]`"))?;
                let (key, label) = inner
                    .split_once('=')
                    .ok_or_else(|| format!("`{part}`: expected `[key=label]`"))?;
                let (label, numeric) = match label.strip_prefix('#') {
                    Some(l) => (l, true),
                    None => (label, false),
                };
                if !is_ident(list) || !is_ident(key) || !is_ident(label) {
                    return Err(format!("`{part}`: names must be letters, digits or `_`"));
                }
                segments.push(JsonSegment::Item {
                    list: list.into(),
                    key: key.into(),
                    label: label.into(),
                    numeric,
                });
            } else if is_ident(part) {
                segments.push(JsonSegment::Key(part.into()));
            } else {
                return Err(format!("`{part}` is not a valid key"));
            }
        }
        match segments.last() {
            Some(JsonSegment::Key(_)) => Ok(Self { segments }),
            _ => Err("a path must end with a key".into()),
        }
    }

    /// Label names the path refers to.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            JsonSegment::Item { label, .. } => Some(label.as_str()),
            JsonSegment::Key(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_nanoseconds_to_milliseconds_like_vadvisor() {
        assert_eq!(
            Unit::Nanoseconds.convert(123_456_789_012.0, Unit::Milliseconds),
            123_456.789_012
        );
        assert_eq!(Unit::Kibibytes.convert(2.0, Unit::Bytes), 2048.0);
        assert_eq!(Unit::Bytes.convert(2048.0, Unit::Kibibytes), 2.0);
        assert_eq!(Unit::Nanoseconds.convert(1.5e9, Unit::Seconds), 1.5);
        assert!(!Unit::Bytes.convertible_to(Unit::Seconds));
    }

    #[test]
    fn parses_list_paths() {
        let p = JsonPath::parse("cpu.per_cpu_usage[index=#vcpu].vcpu_time").unwrap();
        assert_eq!(p.segments.len(), 3);
        assert_eq!(
            p.segments[1],
            JsonSegment::Item {
                list: "per_cpu_usage".into(),
                key: "index".into(),
                label: "vcpu".into(),
                numeric: true
            }
        );
        assert_eq!(p.labels().collect::<Vec<_>>(), vec!["vcpu"]);
        assert!(JsonPath::parse("a[b=c]").is_err(), "must end with a key");
        assert!(JsonPath::parse("a..b").is_err());
        assert!(JsonPath::parse("a[b].c").is_err());
    }

    #[test]
    fn validation_catches_naming_mistakes() {
        let ok = MetricDesc::counter("vm_x_seconds_total", "h", Unit::Nanoseconds);
        assert!(ok.validate().is_ok());
        assert!(MetricDesc::counter("vm_x_seconds", "h", Unit::Nanoseconds)
            .validate()
            .is_err());
        assert!(MetricDesc::gauge("vm_x", "h", Unit::Bytes)
            .validate()
            .is_err());
        assert!(MetricDesc::gauge("vm_x", "h", Unit::Count)
            .labels(&["uuid"])
            .validate()
            .is_err());
        let bad_json = MetricDesc::gauge("vm_x", "h", Unit::Count).json("a[n=dev].x", Unit::Count);
        assert!(bad_json
            .validate()
            .unwrap_err()
            .contains("undeclared label"));
    }
}
