//! Names of libvirt lifecycle events: `virDomainEventType` → `event_type` and each
//! `virDomainEvent<Type>DetailType` → `reason`, complete for libvirt 9.x.
//!
//! vAdvisor's strings (vadvisor-reference §5.2) are kept exactly (`API error`,
//! `IOError`, …). The details libvirt added after 2016 use the strings of libvirt-python's
//! `examples/event-test.py`, the table vAdvisor's came from: `Renamed`, `Snapshot`,
//! `Postcopy`, `Postcopy failed`, `On guest request`, `On host request`, and
//! `Crashloaded` in the same style. An unknown event or detail is `Unknown`: such
//! events are reported, never dropped. Note that `Shutdown` is both an event type (the
//! guest finished shutting down) and a reason of `Stopped`, as in vAdvisor.

/// `virDomainEventType` names, indexed by code.
pub const EVENT_TYPES: [&str; 9] = [
    "Defined",
    "Undefined",
    "Started",
    "Suspended",
    "Resumed",
    "Stopped",
    "Shutdown",
    "PMSuspended",
    "Crashed",
];

/// The name of anything the tables do not know.
pub const UNKNOWN: &str = "Unknown";

/// The reason names of an event type, indexed by libvirt detail code.
pub fn reasons(event: u32) -> &'static [&'static str] {
    match event {
        // virDomainEventDefinedDetailType: ADDED, UPDATED, RENAMED (1.2.19), FROM_SNAPSHOT (1.3.3)
        0 => &["Added", "Updated", "Renamed", "Snapshot"],
        // virDomainEventUndefinedDetailType: REMOVED, RENAMED (1.2.19)
        1 => &["Removed", "Renamed"],
        // virDomainEventStartedDetailType: BOOTED, MIGRATED, RESTORED, FROM_SNAPSHOT, WAKEUP
        2 => &["Booted", "Migrated", "Restored", "Snapshot", "Wakeup"],
        // virDomainEventSuspendedDetailType: …, API_ERROR, POSTCOPY (1.3.3), POSTCOPY_FAILED (1.3.3)
        3 => &[
            "Paused",
            "Migrated",
            "IOError",
            "Watchdog",
            "Restored",
            "Snapshot",
            "API error",
            "Postcopy",
            "Postcopy failed",
        ],
        // virDomainEventResumedDetailType: …, POSTCOPY (1.3.3), POSTCOPY_FAILED (8.5.0)
        4 => &[
            "Unpaused",
            "Migrated",
            "Snapshot",
            "Postcopy",
            "Postcopy failed",
        ],
        // virDomainEventStoppedDetailType
        5 => &[
            "Shutdown",
            "Destroyed",
            "Crashed",
            "Migrated",
            "Saved",
            "Failed",
            "Snapshot",
        ],
        // virDomainEventShutdownDetailType: FINISHED, GUEST (3.4.0), HOST (3.4.0)
        6 => &["Finished", "On guest request", "On host request"],
        // virDomainEventPMSuspendedDetailType: MEMORY, DISK (1.0.0)
        7 => &["Memory", "Disk"],
        // virDomainEventCrashedDetailType: PANICKED, CRASHLOADED (6.1.0)
        8 => &["Panicked", "Crashloaded"],
        _ => &[],
    }
}

/// The `event_type` of a libvirt event code (`Unknown` for codes libvirt 9.x lacks).
pub fn event_type(event: u32) -> &'static str {
    EVENT_TYPES.get(event as usize).copied().unwrap_or(UNKNOWN)
}

/// The `reason` of a libvirt event and detail code (`Unknown` when unknown).
pub fn reason(event: u32, detail: u32) -> &'static str {
    reasons(event)
        .get(detail as usize)
        .copied()
        .unwrap_or(UNKNOWN)
}

/// The event code of a lower-case type name as used in the `<type>_events` query
/// parameters (`started` → 2).
pub fn event_code(lower: &str) -> Option<u32> {
    EVENT_TYPES
        .iter()
        .position(|t| t.eq_ignore_ascii_case(lower))
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row, keyed by libvirt's enum names and numeric values (libvirt 9.0's
    /// `libvirt-domain.h`).
    const ROWS: &[(&str, u32, &str, u32, &str, &str)] = &[
        (
            "VIR_DOMAIN_EVENT_DEFINED",
            0,
            "VIR_DOMAIN_EVENT_DEFINED_ADDED",
            0,
            "Defined",
            "Added",
        ),
        (
            "VIR_DOMAIN_EVENT_DEFINED",
            0,
            "VIR_DOMAIN_EVENT_DEFINED_UPDATED",
            1,
            "Defined",
            "Updated",
        ),
        (
            "VIR_DOMAIN_EVENT_DEFINED",
            0,
            "VIR_DOMAIN_EVENT_DEFINED_RENAMED",
            2,
            "Defined",
            "Renamed",
        ),
        (
            "VIR_DOMAIN_EVENT_DEFINED",
            0,
            "VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT",
            3,
            "Defined",
            "Snapshot",
        ),
        (
            "VIR_DOMAIN_EVENT_UNDEFINED",
            1,
            "VIR_DOMAIN_EVENT_UNDEFINED_REMOVED",
            0,
            "Undefined",
            "Removed",
        ),
        (
            "VIR_DOMAIN_EVENT_UNDEFINED",
            1,
            "VIR_DOMAIN_EVENT_UNDEFINED_RENAMED",
            1,
            "Undefined",
            "Renamed",
        ),
        (
            "VIR_DOMAIN_EVENT_STARTED",
            2,
            "VIR_DOMAIN_EVENT_STARTED_BOOTED",
            0,
            "Started",
            "Booted",
        ),
        (
            "VIR_DOMAIN_EVENT_STARTED",
            2,
            "VIR_DOMAIN_EVENT_STARTED_MIGRATED",
            1,
            "Started",
            "Migrated",
        ),
        (
            "VIR_DOMAIN_EVENT_STARTED",
            2,
            "VIR_DOMAIN_EVENT_STARTED_RESTORED",
            2,
            "Started",
            "Restored",
        ),
        (
            "VIR_DOMAIN_EVENT_STARTED",
            2,
            "VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT",
            3,
            "Started",
            "Snapshot",
        ),
        (
            "VIR_DOMAIN_EVENT_STARTED",
            2,
            "VIR_DOMAIN_EVENT_STARTED_WAKEUP",
            4,
            "Started",
            "Wakeup",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_PAUSED",
            0,
            "Suspended",
            "Paused",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED",
            1,
            "Suspended",
            "Migrated",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_IOERROR",
            2,
            "Suspended",
            "IOError",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG",
            3,
            "Suspended",
            "Watchdog",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_RESTORED",
            4,
            "Suspended",
            "Restored",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT",
            5,
            "Suspended",
            "Snapshot",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR",
            6,
            "Suspended",
            "API error",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY",
            7,
            "Suspended",
            "Postcopy",
        ),
        (
            "VIR_DOMAIN_EVENT_SUSPENDED",
            3,
            "VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED",
            8,
            "Suspended",
            "Postcopy failed",
        ),
        (
            "VIR_DOMAIN_EVENT_RESUMED",
            4,
            "VIR_DOMAIN_EVENT_RESUMED_UNPAUSED",
            0,
            "Resumed",
            "Unpaused",
        ),
        (
            "VIR_DOMAIN_EVENT_RESUMED",
            4,
            "VIR_DOMAIN_EVENT_RESUMED_MIGRATED",
            1,
            "Resumed",
            "Migrated",
        ),
        (
            "VIR_DOMAIN_EVENT_RESUMED",
            4,
            "VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT",
            2,
            "Resumed",
            "Snapshot",
        ),
        (
            "VIR_DOMAIN_EVENT_RESUMED",
            4,
            "VIR_DOMAIN_EVENT_RESUMED_POSTCOPY",
            3,
            "Resumed",
            "Postcopy",
        ),
        (
            "VIR_DOMAIN_EVENT_RESUMED",
            4,
            "VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED",
            4,
            "Resumed",
            "Postcopy failed",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN",
            0,
            "Stopped",
            "Shutdown",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_DESTROYED",
            1,
            "Stopped",
            "Destroyed",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_CRASHED",
            2,
            "Stopped",
            "Crashed",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_MIGRATED",
            3,
            "Stopped",
            "Migrated",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_SAVED",
            4,
            "Stopped",
            "Saved",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_FAILED",
            5,
            "Stopped",
            "Failed",
        ),
        (
            "VIR_DOMAIN_EVENT_STOPPED",
            5,
            "VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT",
            6,
            "Stopped",
            "Snapshot",
        ),
        (
            "VIR_DOMAIN_EVENT_SHUTDOWN",
            6,
            "VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED",
            0,
            "Shutdown",
            "Finished",
        ),
        (
            "VIR_DOMAIN_EVENT_SHUTDOWN",
            6,
            "VIR_DOMAIN_EVENT_SHUTDOWN_GUEST",
            1,
            "Shutdown",
            "On guest request",
        ),
        (
            "VIR_DOMAIN_EVENT_SHUTDOWN",
            6,
            "VIR_DOMAIN_EVENT_SHUTDOWN_HOST",
            2,
            "Shutdown",
            "On host request",
        ),
        (
            "VIR_DOMAIN_EVENT_PMSUSPENDED",
            7,
            "VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY",
            0,
            "PMSuspended",
            "Memory",
        ),
        (
            "VIR_DOMAIN_EVENT_PMSUSPENDED",
            7,
            "VIR_DOMAIN_EVENT_PMSUSPENDED_DISK",
            1,
            "PMSuspended",
            "Disk",
        ),
        (
            "VIR_DOMAIN_EVENT_CRASHED",
            8,
            "VIR_DOMAIN_EVENT_CRASHED_PANICKED",
            0,
            "Crashed",
            "Panicked",
        ),
        (
            "VIR_DOMAIN_EVENT_CRASHED",
            8,
            "VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED",
            1,
            "Crashed",
            "Crashloaded",
        ),
    ];

    /// The enum prefix of each event type's detail enum.
    fn detail_prefix(event_const: &str) -> String {
        format!("{event_const}_")
    }

    #[test]
    fn every_row_has_its_name() {
        for &(_, event, constant, detail, want_type, want_reason) in ROWS {
            assert_eq!(event_type(event), want_type, "{constant}");
            assert_eq!(reason(event, detail), want_reason, "{constant}");
        }
        // The table has exactly these rows: one past the last detail is unknown.
        for (event, _) in EVENT_TYPES.iter().enumerate() {
            let count = ROWS.iter().filter(|r| r.1 == event as u32).count();
            assert_eq!(reasons(event as u32).len(), count, "event {event}");
            assert_eq!(reason(event as u32, count as u32), UNKNOWN);
        }
    }

    #[test]
    fn vadvisor_strings_are_kept_exactly() {
        assert_eq!(reason(3, 6), "API error");
        assert_eq!(reason(3, 2), "IOError");
        assert_eq!((event_type(5), reason(5, 0)), ("Stopped", "Shutdown"));
        assert_eq!((event_type(6), reason(6, 0)), ("Shutdown", "Finished"));
        assert_eq!((event_type(7), reason(7, 1)), ("PMSuspended", "Disk"));
    }

    #[test]
    fn unknown_codes_are_unknown() {
        assert_eq!(event_type(9), UNKNOWN);
        assert_eq!(event_type(u32::MAX), UNKNOWN);
        assert_eq!(reason(9, 0), UNKNOWN);
        assert_eq!(reason(2, 5), UNKNOWN);
        assert_eq!(reason(2, u32::MAX), UNKNOWN);
    }

    #[test]
    fn query_names_map_to_codes() {
        assert_eq!(event_code("pmsuspended"), Some(7));
        assert_eq!(event_code("defined"), Some(0));
        assert_eq!(event_code("rebooted"), None);
    }

    /// `NAME = <number>` lines of a C enum, from the installed header.
    fn header_values(header: &str, prefix: &str) -> Vec<(String, u32)> {
        header
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.trim().split_once('=')?;
                let name = name.trim();
                if !name.starts_with(prefix) {
                    return None;
                }
                let digits: String = rest
                    .trim()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                Some((name.to_string(), digits.parse().ok()?))
            })
            .collect()
    }

    /// Checks the rows against libvirt-dev's header when it is installed: every detail
    /// of every lifecycle event type in the header has a row with the same number.
    #[test]
    fn rows_match_the_installed_libvirt_header() {
        let Ok(header) = std::fs::read_to_string("/usr/include/libvirt/libvirt-domain.h") else {
            eprintln!("libvirt-domain.h not installed; checked against the embedded rows only");
            return;
        };
        for (t, name) in EVENT_TYPES.iter().enumerate() {
            let constant = format!("VIR_DOMAIN_EVENT_{}", name.to_ascii_uppercase());
            let types = header_values(&header, &constant);
            let value = types.iter().find(|(n, _)| *n == constant).map(|(_, v)| *v);
            assert_eq!(value, Some(t as u32), "{constant}");
            let details: Vec<(String, u32)> = header_values(&header, &detail_prefix(&constant))
                .into_iter()
                .filter(|(n, _)| !n.ends_with("_LAST"))
                .collect();
            assert!(!details.is_empty(), "{constant}: no details in the header");
            for (detail, number) in details {
                let row = ROWS
                    .iter()
                    .find(|r| r.2 == detail)
                    .unwrap_or_else(|| panic!("no row for {detail}"));
                assert_eq!((row.1, row.3), (t as u32, number), "{detail}");
            }
        }
    }
}
