//! libvirt's process-wide setup: its stderr error printing silenced, its default event
//! loop registered and run on a `libvirt-events` thread (keepalive probes and the
//! close and lifecycle callbacks need it). The loop sleeps until one of its sockets or
//! timers (keepalive) is due: libvirt interrupts it whenever a handle or timer is added,
//! so it needs no periodic wake-up of its own.

use std::sync::Once;
use std::time::Duration;

use tracing::{debug, warn};

static LIBVIRT_INIT: Once = Once::new();

/// Process-wide libvirt setup; idempotent.
pub(crate) fn init_libvirt() {
    LIBVIRT_INIT.call_once(|| {
        virt::error::clear_error_callback();
        if let Err(e) = virt::event::event_register_default_impl() {
            warn!(
                error = %e.message(),
                "cannot register libvirt's event loop: keepalive and close detection are off"
            );
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".to_string())
            .spawn(run_event_loop);
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start the libvirt event-loop thread");
        }
    });
}

/// The `libvirt-events` thread: runs libvirt's default event loop forever (keepalive
/// probes, close callbacks). Callbacks run here and must never block.
fn run_event_loop() {
    loop {
        if let Err(e) = virt::event::event_run_default_impl() {
            debug!(error = %e.message(), "libvirt event loop iteration failed");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
