//! The wire format of one event: vAdvisor's JSON object
//! `{"domain_name", "domain_id" (UUID), "timestamp", "event_type", "reason"}` plus
//! `"reconciled": true` for events synthesised after a reconnect, framed as an NDJSON
//! line or a Server-Sent Event.

use serde::Serialize;
use vadvisor_api::LifecycleEvent;

use crate::timefmt::iso_utc;
use vadvisor_api::event_names as names;

/// The NDJSON keep-alive: an empty line (NDJSON readers skip blank lines).
pub const NDJSON_HEARTBEAT: &str = "\n";
/// The SSE keep-alive: a comment line, ignored by `EventSource`.
pub const SSE_HEARTBEAT: &str = ": keepalive\n\n";

#[derive(Serialize)]
struct Line<'a> {
    domain_name: &'a str,
    domain_id: &'a str,
    timestamp: String,
    event_type: &'static str,
    reason: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reconciled: bool,
}

/// The event as one JSON object (no newline).
pub fn json(e: &LifecycleEvent) -> String {
    let line = Line {
        domain_name: &e.domain.name,
        domain_id: &e.domain.uuid,
        timestamp: iso_utc(e.at),
        event_type: names::event_type(e.event),
        reason: names::reason(e.event, e.detail),
        reconciled: e.reconciled,
    };
    serde_json::to_string(&line).unwrap_or_else(|_| "{}".to_string())
}

/// One NDJSON line.
pub fn ndjson(e: &LifecycleEvent) -> String {
    let mut s = json(e);
    s.push('\n');
    s
}

/// One Server-Sent Event; `id` is the history row id (absent when the event could not
/// be stored).
pub fn sse(id: Option<i64>, e: &LifecycleEvent) -> String {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    format!("{id}event: lifecycle\ndata: {}\n\n", json(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use vadvisor_api::DomainRef;

    fn ev(reconciled: bool) -> LifecycleEvent {
        LifecycleEvent {
            at: UNIX_EPOCH + Duration::from_micros(1_466_697_934_313_348),
            domain: DomainRef::new("eb9750b3-82e1-4afd-8a00-5efd63a36832", "debian8"),
            event: 2,
            detail: 0,
            reconciled,
        }
    }

    #[test]
    fn matches_vadvisors_line() {
        let got: serde_json::Value = serde_json::from_str(&json(&ev(false))).unwrap();
        // vadvisor-reference §1.6, verified line.
        let want: serde_json::Value = serde_json::from_str(
            r#"{"domain_name": "debian8", "domain_id": "eb9750b3-82e1-4afd-8a00-5efd63a36832", "timestamp": "2016-06-23T16:05:34.313348Z", "event_type": "Started", "reason": "Booted"}"#,
        )
        .unwrap();
        assert_eq!(got, want);
        assert!(ndjson(&ev(false)).ends_with("}\n"));
    }

    #[test]
    fn reconciled_only_when_true() {
        assert!(json(&ev(true)).ends_with(r#""reconciled":true}"#));
        assert!(!json(&ev(false)).contains("reconciled"));
    }

    #[test]
    fn sse_frames() {
        let s = sse(Some(7), &ev(false));
        assert!(
            s.starts_with("id: 7\nevent: lifecycle\ndata: {\"domain_name\":\"debian8\""),
            "{s}"
        );
        assert!(s.ends_with("}\n\n"));
        assert!(sse(None, &ev(false)).starts_with("event: lifecycle\n"));
    }
}
