//! `virDomainGetJobStats`: a domain's job progress as owned typed parameters, with the
//! array libvirt allocates freed by `virTypedParamsFree` (the `virt` wrapper hands it to
//! Rust's allocator and leaks its strings).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::c_int;
use std::ptr;

use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

use super::params::{params_from_raw, Params};

/// `virDomainGetJobStats(dom, &type, &params, &n, flags)`: the job type
/// (`virDomainJobType`, 0 = none) and its parameters. `completed` asks for the
/// statistics of the last completed job instead (`VIR_DOMAIN_JOB_STATS_COMPLETED`),
/// leaving them stored (`VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED`).
pub fn job_stats(dom: &Domain, completed: bool) -> Result<(i32, Params), Error> {
    let mut job_type: c_int = 0;
    let mut params: sys::virTypedParameterPtr = ptr::null_mut();
    let mut nparams: c_int = 0;
    // VIR_DOMAIN_JOB_STATS_COMPLETED: the statistics libvirt keeps of the domain's last
    // completed job (on the destination of a migration too: its actual `downtime`),
    // allowed on a read-only connection. libvirt DELETES them once read unless
    // VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED (libvirt >= 6.0) is given too: without it the
    // agent would take them away from `virsh domjobinfo --completed`. Without either
    // flag: the running job.
    let flags = if completed {
        sys::VIR_DOMAIN_JOB_STATS_COMPLETED | sys::VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
    } else {
        0
    };
    // SAFETY: `dom` keeps its domain alive for the call; the three out-pointers are
    // valid locals; `flags` is 0 or COMPLETED|KEEP_COMPLETED, which only select which
    // statistics are returned and that they stay stored (same out-parameter contract);
    // libvirt allocates the parameter array and stores it in `params`.
    let rc = unsafe {
        sys::virDomainGetJobStats(
            dom.as_ptr(),
            &mut job_type,
            &mut params,
            &mut nparams,
            flags,
        )
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    // SAFETY: on success `params` is null or holds `nparams` initialised parameters.
    let out = unsafe { params_from_raw(params, nparams) };
    // SAFETY: the array (and its strings) was allocated by libvirt for us; freed once.
    unsafe { sys::virTypedParamsFree(params, nparams) };
    Ok((job_type, out))
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    #[test]
    fn job_stats_of_an_idle_domain_say_none() {
        let conn = test_conn();
        let dom = conn.lookup_domain_by_name("test").expect("domain `test`");
        match job_stats(&dom, false) {
            // The test driver has no jobs: type none, or the call is unsupported.
            Ok((job_type, params)) => {
                assert_eq!(job_type, 0, "{params:?}");
            }
            Err(e) => assert!(!e.message().is_empty()),
        }
    }

    #[test]
    fn completed_job_stats_of_a_domain_without_one_say_none() {
        let conn = test_conn();
        let dom = conn.lookup_domain_by_name("test").expect("domain `test`");
        // The flag is accepted (or the call refused as a whole); never a job type other
        // than none (0) or completed (3) for the last completed job.
        match job_stats(&dom, true) {
            Ok((job_type, params)) => assert!(matches!(job_type, 0 | 3), "{params:?}"),
            Err(e) => assert!(!e.message().is_empty()),
        }
    }
}
