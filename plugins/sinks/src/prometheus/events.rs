//! Lifecycle events as a metric: counts `Record::Event`s by libvirt event and detail
//! code and renders `vm_lifecycle_events_total{event_type,reason}` with vAdvisor's names
//! (vadvisor-reference §5.2), extended with the details newer libvirt reports; any code
//! the table does not know is `Unknown`.

use std::collections::BTreeMap;

use vadvisor_api::{LifecycleEvent, MetricKind};

use super::emit::Emit;

pub const FAMILY: &str = "vm_lifecycle_events_total";
const HELP: &str = "Domain lifecycle events received from libvirt, by event type and reason";

/// `(event_type, reason)` names of an event's codes.
/// The same names as the REST event API (one table: `vadvisor_api::event_names`).
pub fn names(event: u32, detail: u32) -> (&'static str, &'static str) {
    (
        vadvisor_api::event_names::event_type(event),
        vadvisor_api::event_names::reason(event, detail),
    )
}

/// Event counts by (event, detail) code.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: BTreeMap<(u32, u32), u64>,
}

impl EventCounts {
    pub fn count(&mut self, event: &LifecycleEvent) {
        *self.counts.entry((event.event, event.detail)).or_default() += 1;
    }

    /// Renders the family; codes that share names (unknown ones) are added up, so no
    /// series appears twice.
    pub fn render(&self, enc: &mut impl Emit) {
        let mut by_name: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (&(event, detail), &n) in &self.counts {
            *by_name.entry(names(event, detail)).or_default() += n;
        }
        enc.family(FAMILY, HELP, MetricKind::Counter);
        for ((event_type, reason), n) in by_name {
            enc.sample(
                FAMILY,
                &[("event_type", event_type), ("reason", reason)],
                n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::{Encoder, Format};
    use super::*;
    use std::time::SystemTime;
    use vadvisor_api::DomainRef;

    fn ev(event: u32, detail: u32) -> LifecycleEvent {
        LifecycleEvent {
            at: SystemTime::now(),
            domain: DomainRef::new("u", "n"),
            event,
            detail,
            reconciled: false,
        }
    }

    #[test]
    fn names_follow_vadvisor_and_unknown_codes_are_unknown() {
        assert_eq!(names(2, 0), ("Started", "Booted"));
        assert_eq!(names(3, 6), ("Suspended", "API error"));
        assert_eq!(names(5, 0), ("Stopped", "Shutdown"));
        assert_eq!(names(6, 1), ("Shutdown", "On guest request"));
        assert_eq!(names(5, 99), ("Stopped", "Unknown"));
        assert_eq!(names(42, 0), ("Unknown", "Unknown"));
    }

    #[test]
    fn counts_and_merges_unknown_codes() {
        let mut c = EventCounts::default();
        for e in [ev(2, 0), ev(2, 0), ev(5, 98), ev(5, 99), ev(6, 1)] {
            c.count(&e);
        }
        let mut out = String::new();
        let mut enc = Encoder::new(&mut out, Format::Classic);
        c.render(&mut enc);
        assert!(
            out.contains("vm_lifecycle_events_total{event_type=\"Started\",reason=\"Booted\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "vm_lifecycle_events_total{event_type=\"Stopped\",reason=\"Unknown\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("vm_lifecycle_events_total{event_type=\"Shutdown\",reason=\"On guest request\"} 1\n"),
            "{out}"
        );
    }
}
