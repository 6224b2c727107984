//! Per-domain calls the `virt` wrappers get wrong or lack: `virDomainGetState` and
//! `virDomainGetBlockInfo` with checked return codes, `virDomainGetVcpus`, and the
//! one-shot `virDomainGetCPUStats` total.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_uint, CString};
use std::ptr;

use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

use super::params::{empty_param, params_from_raw, Params};

/// `virDomainGetState` with its return code checked: `(state, reason)`.
pub fn domain_state(dom: &Domain) -> Result<(u32, u32), Error> {
    let mut state: c_int = 0;
    let mut reason: c_int = 0;
    // SAFETY: `dom` keeps its domain alive for the call; both out-pointers are valid.
    let rc = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok((
        u32::try_from(state).unwrap_or(0),
        u32::try_from(reason).unwrap_or(0),
    ))
}

/// `virDomainGetBlockInfo` with its return code checked: `(capacity, allocation, physical)`
/// in bytes.
pub fn block_info(dom: &Domain, disk: &str) -> Result<(u64, u64, u64), Error> {
    let disk = CString::new(disk)?;
    let mut info = sys::virDomainBlockInfo {
        capacity: 0,
        allocation: 0,
        physical: 0,
    };
    // SAFETY: `dom` is alive for the call, `disk` is NUL-terminated, `info` is a valid
    // out-struct that we initialised ourselves (so nothing uninitialised is read even if
    // libvirt fails half-way).
    let rc = unsafe { sys::virDomainGetBlockInfo(dom.as_ptr(), disk.as_ptr(), &mut info, 0) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok((info.capacity, info.allocation, info.physical))
}

/// One entry of `virDomainGetVcpus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    /// The vCPU id (may be non-contiguous with vCPU hot-plug).
    pub number: u32,
    /// `virVcpuState`: 0 offline, 1 running, 2 blocked.
    pub state: i32,
    /// CPU time used, in nanoseconds.
    pub cpu_time: u64,
}

/// `virDomainGetVcpus` for at most `max` vCPUs (without CPU maps).
pub fn vcpu_info(dom: &Domain, max: u32) -> Result<Vec<VcpuInfo>, Error> {
    let max = max.clamp(1, 16_384);
    let mut buf = vec![
        sys::virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: 0
        };
        max as usize
    ];
    // SAFETY: `dom` is alive; `buf` holds `max` writable entries; no CPU maps requested
    // (null pointer with length 0 is the documented way to skip them).
    let rc = unsafe {
        sys::virDomainGetVcpus(
            dom.as_ptr(),
            buf.as_mut_ptr(),
            max as c_int,
            ptr::null_mut(),
            0,
        )
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    buf.truncate(usize::try_from(rc).unwrap_or(0));
    Ok(buf
        .iter()
        .map(|v| VcpuInfo {
            number: v.number,
            state: v.state,
            cpu_time: v.cpuTime,
        })
        .collect())
}

/// The domain's total CPU statistics (`virDomainGetCPUStats(dom, params, N, -1, 1, 0)`)
/// in ONE call: `cpu_time`, `user_time`, `system_time`, … in nanoseconds.
pub fn cpu_total_stats(dom: &Domain) -> Result<Params, Error> {
    const CAPACITY: usize = 16;
    let mut buf: Vec<sys::virTypedParameter> = (0..CAPACITY).map(|_| empty_param()).collect();
    // SAFETY: `dom` is alive; `buf` holds CAPACITY writable parameters and we pass that
    // count, so libvirt writes at most CAPACITY entries.
    let rc = unsafe {
        sys::virDomainGetCPUStats(dom.as_ptr(), buf.as_mut_ptr(), CAPACITY as c_uint, -1, 1, 0)
    };
    if rc < 0 {
        return Err(Error::last_error());
    }
    let n = usize::try_from(rc).unwrap_or(0).min(CAPACITY);
    // SAFETY: libvirt initialised the first `n` entries (the rest are our zeroed ones,
    // which are skipped as an unknown type anyway).
    let out = unsafe { params_from_raw(buf.as_ptr(), n as c_int) };
    // SAFETY: frees the strings libvirt may have allocated in the first `n` entries; the
    // array itself is Rust-owned and is not freed by virTypedParamsClear.
    unsafe { sys::virTypedParamsClear(buf.as_mut_ptr(), n as c_int) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    #[test]
    fn checked_per_domain_calls() {
        let conn = test_conn();
        let dom = conn.lookup_domain_by_name("test").expect("domain `test`");
        let (cap, alloc, phys) = block_info(&dom, "vda").expect("block info");
        assert!(cap > 0 && alloc > 0 && phys > 0);
        let err = block_info(&dom, "nope").expect_err("unknown disk fails");
        assert!(!err.message().is_empty());
        assert!(block_info(&dom, "nul\0byte").is_err());
        let vcpus = vcpu_info(&dom, 8).expect("vcpus");
        assert_eq!(vcpus.len(), 2);
        assert_eq!(vcpus[0].number, 0);
        let cpu = cpu_total_stats(&dom).expect("cpu stats");
        let names: Vec<&str> = cpu.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["cpu_time", "user_time", "system_time"]);
    }
}
