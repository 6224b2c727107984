//! Tests of the SQLite store: insert and query by time, type and domain, paging,
//! replay by id, retention purge, ids that never repeat, and data that survives a
//! reopen.

use std::time::{Duration, UNIX_EPOCH};

use vadvisor_api::{DomainRef, LifecycleEvent};

use super::*;
use crate::events::query::{DomainMatch, Filter, TypeSet};

const U1: &str = "5ad0a0b0-0000-4000-8000-000000000001";
const U2: &str = "5ad0a0b0-0000-4000-8000-000000000002";

fn ev(secs: u64, uuid: &str, name: &str, event: u32, detail: u32) -> LifecycleEvent {
    LifecycleEvent {
        at: UNIX_EPOCH + Duration::from_secs(secs),
        domain: DomainRef::new(uuid, name),
        event,
        detail,
        reconciled: false,
    }
}

fn filled() -> EventDb {
    let db = EventDb::open(":memory:").unwrap();
    let events = [
        ev(10, U1, "one", 0, 0),
        ev(20, U1, "one", 2, 0),
        ev(30, U2, "two", 2, 0),
        ev(40, U1, "one", 3, 0),
        ev(50, U2, "two", 5, 1),
        ev(60, U1, "one", 42, 7),
    ];
    let refs: Vec<&LifecycleEvent> = events.iter().collect();
    assert_eq!(db.insert(&refs).unwrap(), vec![1, 2, 3, 4, 5, 6]);
    db
}

fn secs(rows: &[StoredEvent]) -> Vec<u64> {
    rows.iter()
        .map(|r| r.event.at.duration_since(UNIX_EPOCH).unwrap().as_secs())
        .collect()
}

fn only(codes: &[u32]) -> Filter {
    Filter {
        types: TypeSet::Only(codes.iter().fold(0, |m, c| m | (1 << c))),
        domain: None,
    }
}

#[test]
fn round_trips_every_field() {
    let db = EventDb::open(":memory:").unwrap();
    let mut e = ev(1_466_697_934, U1, "one", 6, 2);
    e.at += Duration::from_micros(313_348);
    e.reconciled = true;
    db.insert(&[&e]).unwrap();
    let rows = db
        .history(&Filter::all(), i64::MIN, i64::MAX, None, 10)
        .unwrap();
    assert_eq!(rows, vec![StoredEvent { id: 1, event: e }]);
}

#[test]
fn history_is_oldest_first_within_inclusive_bounds() {
    let db = filled();
    let all = Filter::all();
    assert_eq!(
        secs(&db.history(&all, 20_000_000, 50_000_000, None, 100).unwrap()),
        vec![20, 30, 40, 50]
    );
    assert_eq!(
        secs(&db.history(&all, 0, i64::MAX, None, 2).unwrap()),
        vec![10, 20]
    );
}

#[test]
fn type_filter_applies_before_the_limit() {
    let db = filled();
    // vAdvisor counted filtered-out events against the limit and returned nothing here.
    assert_eq!(
        secs(&db.history(&only(&[5]), 0, i64::MAX, None, 2).unwrap()),
        vec![50]
    );
    assert_eq!(
        secs(&db.history(&only(&[2, 3]), 0, i64::MAX, None, 2).unwrap()),
        vec![20, 30]
    );
    assert!(db
        .history(&only(&[]), 0, i64::MAX, None, 100)
        .unwrap()
        .is_empty());
    // Unknown event codes pass only `all`.
    assert_eq!(
        db.history(&Filter::all(), 0, i64::MAX, None, 100)
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn domain_filter_takes_uuid_spellings_or_names() {
    let db = filled();
    for text in [U2, "5AD0A0B0000040008000000000000002", "two"] {
        let f = Filter {
            types: TypeSet::All,
            domain: Some(DomainMatch::new(text)),
        };
        assert_eq!(
            secs(&db.history(&f, 0, i64::MAX, None, 100).unwrap()),
            vec![30, 50],
            "{text}"
        );
    }
    let f = Filter {
        types: TypeSet::All,
        domain: Some(DomainMatch::new("nobody")),
    };
    assert!(db.history(&f, 0, i64::MAX, None, 100).unwrap().is_empty());
}

#[test]
fn paging_by_cursor_sees_every_row_once() {
    let db = EventDb::open(":memory:").unwrap();
    // Several events share a timestamp: the cursor orders by (at, id).
    let events: Vec<LifecycleEvent> = (0..25).map(|i| ev(100 + i / 4, U1, "one", 2, 0)).collect();
    let refs: Vec<&LifecycleEvent> = events.iter().collect();
    db.insert(&refs).unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = db.history(&Filter::all(), 0, i64::MAX, cursor, 7).unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor {
            at: micros(last.event.at),
            id: last.id,
        });
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen, (1..=25).collect::<Vec<i64>>());
}

#[test]
fn replay_after_id_filters_and_orders_by_id() {
    let db = filled();
    let rows = db.after_id(&only(&[2, 3, 5]), 2, 100).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(db.after_id(&Filter::all(), 6, 100).unwrap().is_empty());
}

#[test]
fn purge_removes_old_rows_and_ids_never_repeat() {
    let db = filled();
    assert_eq!(db.purge_before(35_000_000).unwrap(), 3);
    assert_eq!(db.count().unwrap(), 3);
    assert_eq!(
        secs(&db.history(&Filter::all(), 0, i64::MAX, None, 100).unwrap()),
        vec![40, 50, 60]
    );
    // Even after deleting the newest rows, a new event gets a fresh id.
    db.purge_before(i64::MAX).unwrap();
    assert_eq!(db.insert(&[&ev(70, U1, "one", 2, 0)]).unwrap(), vec![7]);
}

#[test]
fn reopening_keeps_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/events.db");
    let path = path.to_str().unwrap();
    {
        let db = EventDb::open(path).unwrap();
        db.insert(&[&ev(10, U1, "one", 2, 0), &ev(20, U2, "two", 5, 0)])
            .unwrap();
    }
    let db = EventDb::open(path).unwrap();
    assert_eq!(
        secs(&db.history(&Filter::all(), 0, i64::MAX, None, 10).unwrap()),
        vec![10, 20]
    );
    assert_eq!(db.insert(&[&ev(30, U1, "one", 3, 0)]).unwrap(), vec![3]);
}

#[test]
fn unusable_paths_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(
        &file,
        b"not a database, just text that is long enough to be read as a header",
    )
    .unwrap();
    // A directory where the file should be, a file where a directory should be, garbage.
    for path in [
        dir.path().to_path_buf(),
        file.join("events.db"),
        file.clone(),
    ] {
        assert!(
            EventDb::open(path.to_str().unwrap()).is_err(),
            "{}",
            path.display()
        );
    }
}

#[test]
fn times_before_the_epoch_survive() {
    let t = UNIX_EPOCH - Duration::from_micros(1_500_000);
    assert_eq!(from_micros(micros(t)), t);
}
