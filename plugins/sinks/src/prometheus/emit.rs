//! The one way series leave the agent: [`Emit`] receives families and samples from the
//! code that decides WHAT is exported (collector families, `vm_*`, lifecycle events,
//! `vadvisor_*`, `process_*`), and an implementation decides HOW — the text
//! [`super::encode::Encoder`] for `/metrics`, the remote-write series builder for
//! `remote_write`. So both outputs carry the same families, names, labels and values.

use std::time::SystemTime;

use vadvisor_api::MetricKind;

/// A receiver of families and samples.
pub trait Emit {
    /// Starts a family. `name` is the sample name (counters end in `_total`).
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricKind);
    /// When the samples that follow (up to the next `family` or `at`) were collected.
    /// Outputs without timestamps ignore it.
    fn at(&mut self, _collected: SystemTime) {}
    /// Starts a sample of the current family.
    fn begin(&mut self, name: &str);
    /// Adds a label to the sample started with [`Emit::begin`].
    fn label(&mut self, name: &str, value: &str);
    /// Ends the sample with its value.
    fn value(&mut self, value: f64);
    /// A whole sample in one call.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.begin(name);
        for (k, v) in labels {
            self.label(k, v);
        }
        self.value(value);
    }
}

/// The OpenMetrics view of a family: its name (a counter's without `_total`), type,
/// and unit (`seconds`/`bytes` when the name ends in it). A counter whose name lacks
/// `_total` cannot be an OpenMetrics counter: it is `unknown`.
pub fn openmetrics_family(
    name: &str,
    kind: MetricKind,
) -> (&str, &'static str, Option<&'static str>) {
    let (family, kind) = match kind {
        MetricKind::Counter => match name.strip_suffix("_total") {
            Some(base) => (base, "counter"),
            None => (name, "unknown"),
        },
        MetricKind::Gauge => (name, "gauge"),
    };
    let unit = ["seconds", "bytes"].into_iter().find(|u| {
        family.len() > u.len() + 1
            && family.ends_with(u)
            && family[..family.len() - u.len()].ends_with('_')
    });
    (family, kind, unit)
}
