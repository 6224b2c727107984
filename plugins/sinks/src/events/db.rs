//! The event history in SQLite. Every call blocks: callers on the async runtime wrap
//! them in `spawn_blocking`. One connection behind a mutex serves the writer and the
//! readers (queries are paged, so none holds it long); WAL mode and
//! `synchronous=NORMAL` keep inserts cheap and the file consistent across crashes.
//!
//! Row ids never repeat (`AUTOINCREMENT`), so they serve as Server-Sent-Events ids even
//! after the oldest rows are purged.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags};
use vadvisor_api::{DomainRef, LifecycleEvent};

use super::query::{Filter, TypeSet};
use vadvisor_api::event_names as names;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,   -- microseconds since the epoch (UTC)
    uuid        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    event       INTEGER NOT NULL,   -- virDomainEventType
    detail      INTEGER NOT NULL,   -- virDomainEvent*DetailType
    event_type  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    reconciled  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
PRAGMA user_version = 1;
";

/// One stored event.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub event: LifecycleEvent,
}

/// Where a history page starts: after this `(at, id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: i64,
}

/// The event store. Made with [`EventDb::new`] (nothing touched yet) and opened by
/// [`EventDb::ensure_open`]; until then every call fails with "not open".
pub struct EventDb {
    path: String,
    conn: Mutex<Option<Connection>>,
}

/// The error of a call on a database that is not open (yet).
const NOT_OPEN: &str = "the event database is not open";

/// Microseconds since the epoch (negative before 1970, saturating).
pub fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros())
            .map(|m| -m)
            .unwrap_or(i64::MIN),
    }
}

fn from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

fn type_mask(types: TypeSet) -> Option<i64> {
    match types {
        TypeSet::All => None,
        TypeSet::Only(mask) => Some(i64::from(mask)),
    }
}

const COLUMNS: &str = "id, at, uuid, name, event, detail, reconciled";

/// The filter part of every query: `?1` type mask (NULL = all), `?2` UUID, `?3` name.
const FILTER: &str = "(?1 IS NULL OR (event < 16 AND ((?1 >> event) & 1) = 1))
    AND (?2 IS NULL OR uuid = ?2 OR name = ?3)";

impl EventDb {
    /// The database at `path` (`:memory:` keeps it in memory), not opened: no I/O.
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_string(),
            conn: Mutex::new(None),
        }
    }

    /// Opens (creating it and its directory if needed) the database at `path`.
    pub fn open(path: &str) -> Result<Self, String> {
        let db = Self::new(path);
        db.ensure_open()?;
        Ok(db)
    }

    /// Opens the database unless it is open already.
    pub fn ensure_open(&self) -> Result<(), String> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Self::connect(&self.path)?);
        }
        Ok(())
    }

    /// Whether the database is open.
    pub fn is_open(&self) -> bool {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn connect(path: &str) -> Result<Connection, String> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory().map_err(|e| e.to_string())?
        } else {
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(path, flags)
                .map_err(|e| format!("cannot open {path}: {e}"))?;
            conn.busy_timeout(Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| format!("{path}: {e}"))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| format!("{path}: {e}"))?;
            conn
        };
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(conn)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores events in one transaction; returns their ids in order.
    pub fn insert(&self, events: &[&LifecycleEvent]) -> Result<Vec<i64>, String> {
        let mut guard = self.lock();
        let conn = guard.as_mut().ok_or(NOT_OPEN)?;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        let mut ids = Vec::with_capacity(events.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events (at, uuid, name, event, detail, event_type, reason, reconciled)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| e.to_string())?;
            for e in events {
                stmt.execute(params![
                    micros(e.at),
                    &*e.domain.uuid,
                    &*e.domain.name,
                    e.event,
                    e.detail,
                    names::event_type(e.event),
                    names::reason(e.event, e.detail),
                    e.reconciled,
                ])
                .map_err(|e| e.to_string())?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(ids)
    }

    /// History: events with `start ≤ at ≤ end` passing `filter`, oldest first, after
    /// `cursor`, at most `limit`.
    pub fn history(
        &self,
        filter: &Filter,
        start_us: i64,
        end_us: i64,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, String> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE {FILTER}
               AND at >= ?4 AND at <= ?5 AND (at > ?6 OR (at = ?6 AND id > ?7))
             ORDER BY at, id LIMIT ?8"
        );
        let (after_at, after_id) = cursor.map_or((i64::MIN, i64::MIN), |c| (c.at, c.id));
        let (uuid, name) = domain_params(filter);
        self.select(
            &sql,
            params![
                type_mask(filter.types),
                uuid,
                name,
                start_us,
                end_us,
                after_at,
                after_id,
                limit as i64
            ],
        )
    }

    /// Replay for Server-Sent Events: events with an id above `after_id` passing
    /// `filter`, in id order, at most `limit`.
    pub fn after_id(
        &self,
        filter: &Filter,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, String> {
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE {FILTER} AND id > ?4 ORDER BY id LIMIT ?5");
        let (uuid, name) = domain_params(filter);
        self.select(
            &sql,
            params![type_mask(filter.types), uuid, name, after_id, limit as i64],
        )
    }

    fn select(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredEvent>, String> {
        let guard = self.lock();
        let conn = guard.as_ref().ok_or(NOT_OPEN)?;
        let mut stmt = conn.prepare_cached(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params, |row| {
                Ok(StoredEvent {
                    id: row.get(0)?,
                    event: LifecycleEvent {
                        at: from_micros(row.get(1)?),
                        domain: DomainRef::new(row.get::<_, String>(2)?, row.get::<_, String>(3)?),
                        event: row.get(4)?,
                        detail: row.get(5)?,
                        reconciled: row.get(6)?,
                    },
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }

    /// Deletes events older than `cutoff_us`; returns how many.
    pub fn purge_before(&self, cutoff_us: i64) -> Result<usize, String> {
        self.lock()
            .as_ref()
            .ok_or(NOT_OPEN)?
            .execute("DELETE FROM events WHERE at < ?1", params![cutoff_us])
            .map_err(|e| e.to_string())
    }

    /// Number of stored events.
    pub fn count(&self) -> Result<i64, String> {
        self.lock()
            .as_ref()
            .ok_or(NOT_OPEN)?
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .map_err(|e| e.to_string())
    }
}

fn domain_params(filter: &Filter) -> (Option<String>, Option<String>) {
    match &filter.domain {
        None => (None, None),
        // A UUID-looking text matches the UUID column or, literally, a name.
        Some(d) => (
            Some(d.uuid.clone().unwrap_or_else(|| d.text.clone())),
            Some(d.text.clone()),
        ),
    }
}

#[cfg(test)]
mod tests;
