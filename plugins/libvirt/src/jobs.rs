//! Domain jobs: the blocking body of `job_stats` (`virDomainLookupByUUIDString` +
//! `virDomainGetJobStats`) and the job hints that libvirt's migration-iteration and
//! job-completed events keep, so that only domains with a job are ever asked; and, once
//! per completed job, the statistics libvirt keeps of it (the actual downtime).
//!
//! A hint appears when a migration reports an iteration (libvirt sends iteration 1 when
//! the memory copy starts) and goes when the job completes, when `job_stats` finds no
//! job (or no domain), or after `job_hints::HINT_TTL` without news.

use vadvisor_api::{HypervisorError, JobStats};
use virt::sys;

use crate::calls::Progress;
use crate::domains::{fail, lookup};
use crate::ffi;
use crate::live::Live;
use crate::supervisor::Supervisor;

pub(crate) const JOB_CALL: &str = "virDomainGetJobStats";
pub(crate) const JOB_QUEUED: &str = "virDomainGetJobStats (queued behind other calls)";
const BY_UUID_CALL: &str = "virDomainLookupByUUIDString";

/// The job of domain `uuid` (with `completed`, its last completed job's statistics):
/// `None` when it runs (keeps) none. A domain that is gone is `NoDomain`; a destination
/// host that refuses ("migration statistics are available only on the source host") is
/// `Unsupported`.
pub(crate) fn job_stats(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
    uuid: &str,
    completed: bool,
) -> Result<Option<JobStats>, HypervisorError> {
    let dom = lookup(sup, live, progress, BY_UUID_CALL, uuid, |c| {
        c.lookup_domain_by_uuid_string(uuid)
    })?;
    sup.count_calls(1);
    progress.set(JOB_CALL);
    let result = ffi::job_stats(&dom, completed);
    crate::live::drop_blocking(dom);
    match result {
        Ok((job_type, params)) if job_type != JobStats::NONE => Ok(Some(JobStats {
            job_type,
            params: params.into_iter().collect(),
        })),
        Ok(_) => Ok(None),
        // libvirt < 6.0 does not know KEEP_COMPLETED (invalid argument): unsupported
        // rather than reading (and so deleting) the completed job's statistics.
        Err(e)
            if matches!(
                e.code().to_raw(),
                sys::VIR_ERR_OPERATION_UNSUPPORTED | sys::VIR_ERR_NO_SUPPORT
            ) || (completed && e.code().to_raw() == sys::VIR_ERR_INVALID_ARG) =>
        {
            Err(HypervisorError::Unsupported("job statistics on this host"))
        }
        Err(e) => Err(fail(sup, live, JOB_CALL, &e, uuid)),
    }
}
