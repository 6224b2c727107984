//! The data model that flows from collectors to sinks: domains, samples, batches,
//! lifecycle events and the [`Record`] envelope carried by the bus.

use std::sync::Arc;
use std::time::SystemTime;

use crate::metric::MetricDesc;

/// Identity of a libvirt domain. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainRef {
    /// Lower-case dashed UUID as libvirt prints it.
    pub uuid: Arc<str>,
    /// Domain name.
    pub name: Arc<str>,
}

impl DomainRef {
    pub fn new(uuid: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            uuid: uuid.into(),
            name: name.into(),
        }
    }
}

/// libvirt's `virDomainState` with its reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainState {
    pub state: u32,
    pub reason: u32,
}

impl DomainState {
    /// vAdvisor's names of `virDomainState`, indexed by code.
    pub const NAMES: [&'static str; 8] = [
        "Unknown",
        "Running",
        "Blocked",
        "Paused",
        "Shutdown",
        "Shutoff",
        "Crashed",
        "PMSuspended",
    ];

    pub const RUNNING: u32 = 1;

    pub fn new(state: u32, reason: u32) -> Self {
        Self { state, reason }
    }

    /// The state as vAdvisor names it (`Running`, `Paused`, …); unknown codes are `Unknown`.
    pub fn name(&self) -> &'static str {
        Self::NAMES
            .get(self.state as usize)
            .copied()
            .unwrap_or("Unknown")
    }

    /// The reason as libvirt documents it for this state (`virDomain<State>Reason`).
    pub fn reason_name(&self) -> &'static str {
        let table: &[&str] = match self.state {
            0 => &["unknown"],
            1 => &[
                "unknown",
                "booted",
                "migrated",
                "restored",
                "from snapshot",
                "unpaused",
                "migration canceled",
                "save canceled",
                "wakeup",
                "crashed",
                "post-copy",
                "post-copy failed",
            ],
            2 => &["unknown"],
            3 => &[
                "unknown",
                "user",
                "migration",
                "save",
                "dump",
                "ioerror",
                "watchdog",
                "from snapshot",
                "shutting down",
                "snapshot",
                "crashed",
                "starting up",
                "post-copy",
                "post-copy failed",
                "api error",
            ],
            4 => &["unknown", "user"],
            5 => &[
                "unknown",
                "shutdown",
                "destroyed",
                "crashed",
                "migrated",
                "saved",
                "failed",
                "from snapshot",
                "daemon",
            ],
            6 => &["unknown", "panicked"],
            7 => &["unknown"],
            _ => &[],
        };
        table
            .get(self.reason as usize)
            .copied()
            .unwrap_or("unknown")
    }

    pub fn is_running(&self) -> bool {
        self.state == Self::RUNNING
    }
}

/// The label values of one sample, in the order of the metric's label names. Shared:
/// the samples of one device clone one `Labels` (a reference count, no allocation), and
/// a metric without labels allocates nothing. Reads as a slice (`labels[0]`,
/// `labels.iter()`, `labels.len()`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Option<Arc<[Arc<str>]>>);

impl Labels {
    /// No labels.
    pub const NONE: Labels = Labels(None);

    pub fn new(values: impl Into<Arc<[Arc<str>]>>) -> Self {
        let values = values.into();
        if values.is_empty() {
            Self::NONE
        } else {
            Self(Some(values))
        }
    }

    pub fn as_slice(&self) -> &[Arc<str>] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl std::ops::Deref for Labels {
    type Target = [Arc<str>];

    fn deref(&self) -> &[Arc<str>] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Arc<str>>> for Labels {
    fn from(values: Vec<Arc<str>>) -> Self {
        Self::new(values)
    }
}

impl From<&[Arc<str>]> for Labels {
    fn from(values: &[Arc<str>]) -> Self {
        Self::new(values)
    }
}

impl<const N: usize> From<[Arc<str>; N]> for Labels {
    fn from(values: [Arc<str>; N]) -> Self {
        Self::new(values)
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Arc<str>;
    type IntoIter = std::slice::Iter<'a, Arc<str>>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

/// One value of one declared metric. `metric` indexes the collector's declaration list;
/// `labels` holds the values of that metric's label names, in declaration order; `value`
/// is in the metric's declared [`crate::Unit`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: u16,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    /// A sample of a metric without labels.
    pub fn new(metric: u16, value: f64) -> Self {
        Self {
            metric,
            labels: Labels::NONE,
            value,
        }
    }

    /// A sample of a labelled metric. Pass a [`Labels`] clone to share one label set
    /// between the samples of a device.
    pub fn labelled(metric: u16, labels: impl Into<Labels>, value: f64) -> Self {
        Self {
            metric,
            labels: labels.into(),
            value,
        }
    }
}

/// Everything one collector run produced for one domain.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSamples {
    pub domain: DomainRef,
    /// Domain state and reason; the scheduler fills it from the tick's stats when the
    /// collector leaves it empty.
    pub state: Option<DomainState>,
    pub samples: Vec<Sample>,
    /// Errors met while collecting this domain (it is still reported with what it has).
    pub errors: Vec<String>,
}

impl DomainSamples {
    pub fn new(domain: DomainRef) -> Self {
        Self {
            domain,
            state: None,
            samples: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// The output of one run of one collector instance.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Instance id from the config (`cpu`, `cpu/fast`).
    pub collector: Arc<str>,
    /// The collector's metric declarations; `Sample::metric` indexes them.
    pub metrics: Arc<[MetricDesc]>,
    /// When the tick that produced this batch started. Batches of collectors that ran in
    /// the same tick carry the same instant.
    pub at: SystemTime,
    pub domains: Vec<DomainSamples>,
    /// Host-level samples (not tied to a domain).
    pub host: Vec<Sample>,
}

/// A domain lifecycle event (libvirt `VIR_DOMAIN_EVENT_ID_LIFECYCLE`).
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleEvent {
    pub at: SystemTime,
    pub domain: DomainRef,
    /// libvirt event code (`virDomainEventType`).
    pub event: u32,
    /// libvirt detail code (meaning depends on `event`).
    pub detail: u32,
    /// True when the event was synthesised by comparing states after a reconnect.
    pub reconciled: bool,
}

/// A domain's specification (its XML converted to JSON), or its removal.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSpec {
    /// When this record was made. A refresh that reads the same XML for a domain whose
    /// name and state did not change republishes the same record, with its first time.
    pub at: SystemTime,
    pub domain: DomainRef,
    /// Whether the domain runs (or is paused): vAdvisor's `/specs/` lists only those.
    pub active: bool,
    /// The converted document; `None` when the domain was undefined.
    pub spec: Option<serde_json::Value>,
}

/// What travels on the bus from collectors to sinks.
#[derive(Clone, Debug)]
pub enum Record {
    Batch(Arc<Batch>),
    Event(Arc<LifecycleEvent>),
    Spec(Arc<DomainSpec>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_share_one_allocation_and_empty_ones_none() {
        let dev = Labels::from(vec![Arc::<str>::from("vda")]);
        let a = Sample::labelled(0, dev.clone(), 1.0);
        let b = Sample::labelled(1, dev.clone(), 2.0);
        assert!(std::ptr::eq(a.labels.as_slice(), b.labels.as_slice()));
        assert_eq!(&*a.labels[0], "vda");
        assert_eq!(a.labels.len(), 1);
        assert_eq!(Labels::from(Vec::new()), Labels::NONE);
        assert!(Sample::new(0, 1.0).labels.is_empty());
        assert_eq!(Sample::labelled(0, Vec::new(), 1.0), Sample::new(0, 1.0));
        assert_eq!(format!("{:?}", dev), r#"["vda"]"#);
        assert_eq!((&dev).into_iter().count(), 1);
    }
}
