//! The exposition encoder: writes metric families and samples of our own small model in
//! either the classic Prometheus text format 0.0.4 or OpenMetrics 1.0.0 (escaping,
//! number formatting, HELP/TYPE/UNIT lines, `# EOF`), and picks the format from a
//! scraper's `Accept` header. Writes straight into a `String`; no allocation per sample.

use std::fmt::Write as _;

use vadvisor_api::MetricKind;

use super::emit::{openmetrics_family, Emit};

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Classic,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Classic, Format::OpenMetrics];

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// A small index for per-format caches.
    pub fn index(self) -> usize {
        match self {
            Format::Classic => 0,
            Format::OpenMetrics => 1,
        }
    }

    /// OpenMetrics when the `Accept` values ask for `application/openmetrics-text` at
    /// least as much as for anything else (q-values honoured), else the classic format.
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        let mut om_q: f32 = 0.0;
        let mut other_q: f32 = 0.0;
        for header in accept {
            for range in header.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or("").trim();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let q = if q.is_finite() {
                    q.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                if media.eq_ignore_ascii_case("application/openmetrics-text") {
                    om_q = om_q.max(q);
                } else if !media.is_empty() {
                    other_q = other_q.max(q);
                }
            }
        }
        if om_q > 0.0 && om_q >= other_q {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

struct Pending<'a> {
    name: &'a str,
    help: &'a str,
    kind: MetricKind,
}

/// Writes families and samples. A family's HELP/TYPE lines are written with its first
/// sample, so families without samples leave no trace.
pub struct Encoder<'o, 'f> {
    out: &'o mut String,
    format: Format,
    pending: Option<Pending<'f>>,
    in_labels: bool,
}

impl<'o, 'f> Encoder<'o, 'f> {
    pub fn new(out: &'o mut String, format: Format) -> Self {
        Self {
            out,
            format,
            pending: None,
            in_labels: false,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Starts a family. `name` is the sample name (counters end in `_total`).
    pub fn family(&mut self, name: &'f str, help: &'f str, kind: MetricKind) {
        self.pending = Some(Pending { name, help, kind });
    }

    fn flush_header(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let out = &mut *self.out;
        match self.format {
            Format::Classic => {
                out.push_str("# HELP ");
                out.push_str(p.name);
                out.push(' ');
                escape_help(out, p.help, false);
                out.push_str("\n# TYPE ");
                out.push_str(p.name);
                out.push(' ');
                out.push_str(p.kind.as_str());
                out.push('\n');
            }
            Format::OpenMetrics => {
                let (family, kind, unit) = openmetrics_family(p.name, p.kind);
                out.push_str("# HELP ");
                out.push_str(family);
                out.push(' ');
                escape_help(out, p.help, true);
                out.push_str("\n# TYPE ");
                out.push_str(family);
                out.push(' ');
                out.push_str(kind);
                out.push('\n');
                if let Some(unit) = unit {
                    out.push_str("# UNIT ");
                    out.push_str(family);
                    out.push(' ');
                    out.push_str(unit);
                    out.push('\n');
                }
            }
        }
    }

    /// Starts a sample of the current family.
    pub fn begin(&mut self, name: &str) {
        self.flush_header();
        self.out.push_str(name);
        self.in_labels = false;
    }

    /// Adds a label to the sample started with [`Encoder::begin`].
    pub fn label(&mut self, name: &str, value: &str) {
        self.out.push(if self.in_labels { ',' } else { '{' });
        self.in_labels = true;
        self.out.push_str(name);
        self.out.push_str("=\"");
        escape_label_value(self.out, value);
        self.out.push('"');
    }

    /// Ends the sample with its value.
    pub fn value(&mut self, value: f64) {
        if self.in_labels {
            self.out.push('}');
            self.in_labels = false;
        }
        self.out.push(' ');
        write_number(self.out, value);
        self.out.push('\n');
    }

    /// A whole sample in one call.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.begin(name);
        for (k, v) in labels {
            self.label(k, v);
        }
        self.value(value);
    }

    /// Ends the exposition (`# EOF` in OpenMetrics).
    pub fn finish(&mut self) {
        self.pending = None;
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
    }
}

impl Emit for Encoder<'_, 'static> {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricKind) {
        Encoder::family(self, name, help, kind);
    }
    fn begin(&mut self, name: &str) {
        Encoder::begin(self, name);
    }
    fn label(&mut self, name: &str, value: &str) {
        Encoder::label(self, name, value);
    }
    fn value(&mut self, value: f64) {
        Encoder::value(self, value);
    }
}

/// HELP text: `\` and newline escaped; `"` too in OpenMetrics (whose grammar has no
/// raw `"` in HELP), never in the classic format (whose parser rejects `\"` there).
pub fn escape_help(out: &mut String, s: &str, quotes: bool) {
    if quotes {
        return escape_label_value(out, s);
    }
    if !s.contains(['\\', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Label value: `\`, `"` and newline escaped.
pub fn escape_label_value(out: &mut String, s: &str) {
    if !s.contains(['\\', '\n', '"']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A number both formats parse: integers without a fraction, `NaN`, `+Inf`, `-Inf`,
/// shortest round-trip decimals, and exponent notation for very large or small values.
pub fn write_number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write_int(out, v as i64);
    } else {
        let abs = v.abs();
        // `fmt::Write` for `String` never fails.
        if !(1e-5..1e15).contains(&abs) {
            let _ = write!(out, "{v:e}");
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

fn write_int(out: &mut String, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push('-');
    }
    for &b in &buf[i..] {
        out.push(b as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: f64) -> String {
        let mut s = String::new();
        write_number(&mut s, v);
        s
    }

    #[test]
    fn numbers() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1048576.0), "1048576");
        assert_eq!(num(-42.0), "-42");
        assert_eq!(num(123456.789012), "123456.789012");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1e21), "1e21");
        assert_eq!(num(1.5e-9), "1.5e-9");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(f64::NEG_INFINITY), "-Inf");
        assert_eq!(num(u64::MAX as f64), "1.8446744073709552e19");
        for v in [0.1, 1.0 / 3.0, 987654.321, 2.5e-3] {
            assert_eq!(num(v).parse::<f64>().unwrap(), v, "round trip");
        }
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        escape_label_value(&mut s, "a\\b\"c\nd");
        assert_eq!(s, r#"a\\b\"c\nd"#);
        let mut s = String::new();
        escape_help(&mut s, "say \"hi\"\\\nbye", false);
        assert_eq!(s, r#"say "hi"\\\nbye"#);
        let mut s = String::new();
        escape_help(&mut s, "say \"hi\"\\\nbye", true);
        assert_eq!(s, r#"say \"hi\"\\\nbye"#);
    }

    #[test]
    fn classic_family() {
        let mut out = String::new();
        let mut e = Encoder::new(&mut out, Format::Classic);
        e.family("x_total", "X things", MetricKind::Counter);
        e.sample("x_total", &[("a", "1"), ("b", "q\"")], 3.0);
        e.sample("x_total", &[], 4.5);
        e.family("empty", "never written", MetricKind::Gauge);
        e.finish();
        assert_eq!(
            out,
            "# HELP x_total X things\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\"} 3\nx_total 4.5\n"
        );
    }

    #[test]
    fn openmetrics_family() {
        let mut out = String::new();
        let mut e = Encoder::new(&mut out, Format::OpenMetrics);
        e.family("vm_cpu_time_seconds_total", "CPU", MetricKind::Counter);
        e.sample("vm_cpu_time_seconds_total", &[("uuid", "u")], 1.5);
        e.family("vm_memory_bytes", "Mem", MetricKind::Gauge);
        e.sample("vm_memory_bytes", &[], 2048.0);
        e.family("odd", "a counter without _total", MetricKind::Counter);
        e.sample("odd", &[], 1.0);
        e.finish();
        assert_eq!(
            out,
            "# HELP vm_cpu_time_seconds CPU\n# TYPE vm_cpu_time_seconds counter\n# UNIT vm_cpu_time_seconds seconds\n\
             vm_cpu_time_seconds_total{uuid=\"u\"} 1.5\n\
             # HELP vm_memory_bytes Mem\n# TYPE vm_memory_bytes gauge\n# UNIT vm_memory_bytes bytes\nvm_memory_bytes 2048\n\
             # HELP odd a counter without _total\n# TYPE odd unknown\nodd 1\n# EOF\n"
        );
    }

    #[test]
    fn negotiation() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate([prom]), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(["application/openmetrics-text"]),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(["text/plain", "application/openmetrics-text; q=0.5"]),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(["application/openmetrics-text;q=0"]),
            Format::Classic
        );
        assert_eq!(Format::negotiate(["*/*"]), Format::Classic);
        assert_eq!(Format::negotiate(["garbage;;;q=x,"]), Format::Classic);
        assert_eq!(
            Format::negotiate(std::iter::empty::<&str>()),
            Format::Classic
        );
    }
}
