//! Options of the `prometheus` sink and their validation.

use std::time::Duration;

use serde::Deserialize;
use vadvisor_api::OptionError;

use super::metadata::MetadataLabels;

/// Options of the `prometheus` sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusOptions {
    /// HTTP path of the exposition.
    pub path: String,
    /// Collect afresh on every scrape instead of serving the collectors' latest batches.
    pub live: bool,
    /// Add `name="<domain name>"` to every per-VM series (after `uuid`).
    pub name_label: bool,
    /// How long a VM that is no longer reported keeps `vm_up 0`.
    #[serde(with = "humantime_serde")]
    pub vm_up_grace: Duration,
    /// Also export vAdvisor's family names (`vm_cpu_milliseconds_total`, `vm_memory_bytes`, …).
    pub vadvisor_names: bool,
    /// Labels on `vm_info` from the domain XML's `<metadata>` (needs the `specs` collector).
    pub metadata_labels: MetadataLabels,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            path: "/metrics".into(),
            live: false,
            name_label: true,
            vm_up_grace: Duration::from_secs(600),
            vadvisor_names: true,
            metadata_labels: MetadataLabels::default(),
        }
    }
}

impl PrometheusOptions {
    /// Checks the options (pure).
    pub fn validate(&self) -> Result<(), OptionError> {
        check_path(&self.path)?;
        self.metadata_labels.compile().map(|_| ())
    }
}

fn check_path(path: &str) -> Result<(), OptionError> {
    let ok = path.starts_with('/')
        && !path.contains("//")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(OptionError::at(
            &["path"],
            format!("`{path}` is not a plain URL path (like /metrics)"),
        ))
    }
}
