//! Domain jobs: the blocking body of `job_stats` (`virDomainLookupByUUIDString` +
//! `virDomainGetJobStats`) and the job hints that libvirt's migration-iteration and
//! job-completed events keep, so that only domains with a job are ever asked.
//!
//! A hint appears when a migration reports an iteration (libvirt sends iteration 1 when
//! the memory copy starts) and goes when the job completes, when `job_stats` finds no
//! job (or no domain), or after [`HINT_TTL`] without news.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vadvisor_api::{DomainRef, HypervisorError, JobStats};
use virt::sys;

use crate::calls::Progress;
use crate::domains::{fail, lookup};
use crate::ffi::{self, DomainEventKind, RawDomainEvent};
use crate::live::Live;
use crate::supervisor::{lock, Supervisor};

pub(crate) const JOB_CALL: &str = "virDomainGetJobStats";
pub(crate) const JOB_QUEUED: &str = "virDomainGetJobStats (queued behind other calls)";
const BY_UUID_CALL: &str = "virDomainLookupByUUIDString";

/// A hint without any event or confirmation for this long is dropped.
pub(crate) const HINT_TTL: Duration = Duration::from_secs(600);

/// Domains that events say run a job, by UUID.
#[derive(Default)]
pub(crate) struct JobHints {
    hints: std::sync::Mutex<HashMap<String, (DomainRef, Instant)>>,
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
            }
            DomainEventKind::MetadataChange => {}
        }
    }

    pub(crate) fn forget(&self, uuid: &str) {
        lock(&self.hints).remove(uuid);
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

/// The job of domain `uuid`: `None` when it runs none. A domain that is gone is
/// `NoDomain`; a destination host that refuses ("migration statistics are available
/// only on the source host") is `Unsupported`.
pub(crate) fn job_stats(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
    uuid: &str,
) -> Result<Option<JobStats>, HypervisorError> {
    let dom = lookup(sup, live, progress, BY_UUID_CALL, uuid, |c| {
        c.lookup_domain_by_uuid_string(uuid)
    })?;
    sup.count_calls(1);
    progress.set(JOB_CALL);
    let result = ffi::job_stats(&dom, false);
    crate::live::drop_blocking(dom);
    match result {
        Ok((job_type, params)) if job_type != JobStats::NONE => Ok(Some(JobStats {
            job_type,
            params: params.into_iter().collect(),
        })),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.code().to_raw(),
                sys::VIR_ERR_OPERATION_UNSUPPORTED | sys::VIR_ERR_NO_SUPPORT
            ) =>
        {
            Err(HypervisorError::Unsupported("job statistics on this host"))
        }
        Err(e) => Err(fail(sup, live, JOB_CALL, &e, uuid)),
    }
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
        h.forget("u2");
        assert!(h.current().is_empty());
    }
}
