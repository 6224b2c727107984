//! The job hints: domains that libvirt's migration-iteration and job-completed events
//! say run a job, so that only those are asked for their job statistics (`jobs`), and
//! the domains whose job completed since the `jobs` collector last looked (asked once
//! for the completed job's statistics).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vadvisor_api::DomainRef;

use crate::ffi::{DomainEventKind, RawDomainEvent};

/// A hint without any event or confirmation for this long is dropped.
pub(crate) const HINT_TTL: Duration = Duration::from_secs(600);

/// Domains that events say run a job, by UUID.
#[derive(Default)]
pub(crate) struct JobHints {
    hints: std::sync::Mutex<HashMap<String, (DomainRef, Instant)>>,
    completed: std::sync::Mutex<HashMap<String, (DomainRef, Instant)>>,
}

impl JobHints {
    /// Applies one event (called on libvirt's event-loop thread: no blocking).
    pub(crate) fn deliver(&self, e: RawDomainEvent) {
        let mut hints = lock(&self.hints);
        match e.kind {
            DomainEventKind::MigrationIteration => {
                hints.insert(
                    e.uuid.clone(),
                    (DomainRef::new(e.uuid, e.name), Instant::now()),
                );
            }
            DomainEventKind::JobCompleted => {
                hints.remove(&e.uuid);
                lock(&self.completed).insert(
                    e.uuid.clone(),
                    (DomainRef::new(e.uuid, e.name), Instant::now()),
                );
            }
            DomainEventKind::MetadataChange => {}
        }
    }

    pub(crate) fn forget(&self, uuid: &str) {
        lock(&self.hints).remove(uuid);
    }

    /// The domains whose job completed since the last call (each handed out once; ones
    /// older than `HINT_TTL` dropped).
    pub(crate) fn take_completed(&self) -> Vec<DomainRef> {
        let mut out: Vec<DomainRef> = std::mem::take(&mut *lock(&self.completed))
            .into_values()
            .filter(|(_, at)| at.elapsed() < HINT_TTL)
            .map(|(d, _)| d)
            .collect();
        out.sort();
        out
    }

    /// The current hints (expired ones dropped).
    pub(crate) fn current(&self) -> Vec<DomainRef> {
        let mut hints = lock(&self.hints);
        hints.retain(|_, (_, at)| at.elapsed() < HINT_TTL);
        let mut out: Vec<DomainRef> = hints.values().map(|(d, _)| d.clone()).collect();
        out.sort();
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(uuid: &str, kind: DomainEventKind) -> RawDomainEvent {
        RawDomainEvent {
            uuid: uuid.into(),
            name: format!("n-{uuid}"),
            kind,
            detail: 1,
            nsuri: None,
        }
    }

    #[test]
    fn hints_follow_iteration_and_completion_events() {
        let h = JobHints::default();
        h.deliver(ev("u1", DomainEventKind::MigrationIteration));
        h.deliver(ev("u2", DomainEventKind::MigrationIteration));
        h.deliver(ev("u2", DomainEventKind::MetadataChange));
        assert_eq!(h.current().len(), 2);
        h.deliver(ev("u1", DomainEventKind::JobCompleted));
        assert_eq!(h.current(), vec![DomainRef::new("u2", "n-u2")]);
        assert_eq!(h.take_completed(), vec![DomainRef::new("u1", "n-u1")]);
        assert!(h.take_completed().is_empty(), "handed out once");
        h.forget("u2");
        assert!(h.current().is_empty());
    }
}
