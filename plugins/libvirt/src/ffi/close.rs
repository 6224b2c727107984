//! The connection close callback (`virConnectRegisterCloseCallback`), with correct
//! ownership of its opaque pointer whatever the driver does with it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use virt::connect::Connect;
use virt::error::Error;
use virt::sys;

/// Shared between a registered close callback and its owner.
pub struct CloseSignal {
    fired: AtomicBool,
    reason: AtomicI32,
    freed: AtomicBool,
    on_close: Box<dyn Fn(i32) + Send + Sync>,
}

impl CloseSignal {
    /// The close reason (`VIR_CONNECT_CLOSE_REASON_*`) once the callback fired.
    pub fn fired(&self) -> Option<i32> {
        self.fired
            .load(Ordering::SeqCst)
            .then(|| self.reason.load(Ordering::SeqCst))
    }
}

unsafe extern "C" fn close_trampoline(
    _conn: sys::virConnectPtr,
    reason: c_int,
    opaque: *mut c_void,
) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: `opaque` is the `Arc<CloseSignal>` we handed to libvirt at registration;
    // libvirt only calls the callback before it calls the free callback, so the
    // reference count we gave it is still held.
    let signal = unsafe { &*(opaque as *const CloseSignal) };
    signal.reason.store(reason, Ordering::SeqCst);
    signal.fired.store(true, Ordering::SeqCst);
    // Never unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (signal.on_close)(reason)));
}

unsafe extern "C" fn close_free(opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: `opaque` came from `Arc::into_raw` at registration and libvirt calls the
    // free callback once; this gives back the reference count libvirt held.
    let signal = unsafe { Arc::from_raw(opaque as *const CloseSignal) };
    signal.freed.store(true, Ordering::SeqCst);
}

/// A registered `virConnectRegisterCloseCallback`. Dropping it unregisters the callback
/// (which also drops libvirt's reference on the connection) and releases the opaque
/// pointer exactly once:
///
/// - drivers that keep the callback (the remote driver: `qemu:///system`, …) call the
///   free callback when it is unregistered or after it fired;
/// - drivers without close-callback support (the `test` driver) accept the registration
///   but never call anything, so the reference is reclaimed here after a successful
///   unregister that did not free it.
pub struct CloseCallback {
    conn: Connect,
    signal: Arc<CloseSignal>,
    opaque: *const CloseSignal,
}

// SAFETY: `opaque` is only an identity for an `Arc<CloseSignal>` (which is Send + Sync);
// it is dereferenced solely in `Drop`, once, after libvirt has let go of it.
unsafe impl Send for CloseCallback {}
// SAFETY: no method reads through `opaque`; shared access only touches the Arc.
unsafe impl Sync for CloseCallback {}

impl CloseCallback {
    /// Registers `on_close(reason)` to run (on the libvirt event-loop thread) when the
    /// connection closes for any reason other than our own close. `on_close` must not
    /// block and must not call back into libvirt.
    pub fn register(
        conn: &Connect,
        on_close: impl Fn(i32) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let signal = Arc::new(CloseSignal {
            fired: AtomicBool::new(false),
            reason: AtomicI32::new(-1),
            freed: AtomicBool::new(false),
            on_close: Box::new(on_close),
        });
        let opaque = Arc::into_raw(Arc::clone(&signal));
        // SAFETY: the connection is alive; the callbacks have the C ABI libvirt expects;
        // `opaque` carries one Arc reference that libvirt hands back to `close_free`.
        let rc = unsafe {
            sys::virConnectRegisterCloseCallback(
                conn.as_ptr(),
                Some(close_trampoline),
                opaque as *mut c_void,
                Some(close_free),
            )
        };
        if rc < 0 {
            let err = Error::last_error();
            // SAFETY: registration failed, so libvirt did not keep `opaque` and will never
            // call the free callback: take the reference back.
            drop(unsafe { Arc::from_raw(opaque) });
            return Err(err);
        }
        Ok(Self {
            conn: conn.clone(),
            signal,
            opaque,
        })
    }

    /// The close reason once the callback fired.
    pub fn fired(&self) -> Option<i32> {
        self.signal.fired()
    }

    /// A weak handle on the shared signal, to check in tests that it is released.
    pub fn signal_weak(&self) -> std::sync::Weak<CloseSignal> {
        Arc::downgrade(&self.signal)
    }
}

impl Drop for CloseCallback {
    fn drop(&mut self) {
        // SAFETY: our `conn` clone keeps the connection alive; unregistering a callback
        // that already fired (or was never stored) is harmless and only returns an error.
        let rc = unsafe {
            sys::virConnectUnregisterCloseCallback(self.conn.as_ptr(), Some(close_trampoline))
        };
        if !self.signal.freed.load(Ordering::SeqCst) && rc == 0 {
            // SAFETY: unregistering succeeded and the free callback did not run: the driver
            // does not store close callbacks (test driver), so libvirt holds no copy of
            // `opaque` and we own its reference. The free callback runs synchronously under
            // libvirt's lock in drivers that do store it, so it cannot run later.
            drop(unsafe { Arc::from_raw(self.opaque) });
        }
        // If unregistering failed and nothing freed the opaque, leak one small
        // allocation rather than risk a double free.
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_conn;
    use super::*;

    #[test]
    fn close_callback_is_accepted_and_released_on_the_test_driver() {
        let conn = test_conn();
        let cb = CloseCallback::register(&conn, |_| {}).expect("registered");
        let weak = cb.signal_weak();
        assert_eq!(cb.fired(), None);
        drop(cb);
        // Neither leaked nor double-freed: our reclaim was the last reference.
        assert!(weak.upgrade().is_none());
        // A second registration on the same connection works after unregistering.
        let again = CloseCallback::register(&conn, |_| {}).expect("registered again");
        drop(again);
        drop(conn);
    }
}
