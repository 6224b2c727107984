//! A periodic no-op timer on libvirt's default event loop (the `virt` wrapper
//! mishandles its error path).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_void};
use std::ptr;

use virt::error::Error;
use virt::sys;

unsafe extern "C" fn noop_timer(_timer: c_int, _opaque: *mut c_void) {}

/// Adds a periodic no-op timer to libvirt's default event loop so that
/// `virEventRunDefaultImpl` returns at least every `period_ms`.
pub fn add_wakeup_timer(period_ms: i32) -> Result<i32, Error> {
    // SAFETY: a plain C callback with no opaque data and no free callback.
    let rc = unsafe { sys::virEventAddTimeout(period_ms, Some(noop_timer), ptr::null_mut(), None) };
    if rc < 0 {
        return Err(Error::last_error());
    }
    Ok(rc)
}
