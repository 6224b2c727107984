//! # vadvisor-libvirt — the real libvirt backend
//!
//! [`LibvirtHypervisor`] implements [`vadvisor_api::Hypervisor`] over one supervised,
//! always read-only libvirt connection, configured by [`LibvirtSettings`]:
//!
//! - [`settings`]: the knobs and their defaults;
//! - `connection`: the process-wide event loop and the reconnecting supervisor, which
//!   registers the close and lifecycle callbacks on every new connection;
//! - `calls`: the permit + deadline discipline of every data call, the hedged bulk call
//!   and the deadline-bounded per-domain runner that skips a domain still stuck in libvirt;
//! - `stats`: bulk statistics (`virConnectGetAllDomainStats`, hedged when slow) with a
//!   per-domain fallback for the groups a driver leaves empty;
//! - `partial`: flags a domain whose reply lacks groups it reported in full before (NOWAIT
//!   skipped its busy monitor), so a hung domain's samples count as incomplete;
//! - `domains`: `list_domains` (one bulk state round trip) and `domain_xml` (by UUID in
//!   any usual spelling, or by name);
//! - `lifecycle`: lifecycle events on a broadcast channel, and their reconciliation
//!   after an outage (synthetic `reconciled` events for what changed meanwhile);
//! - [`domain_xml`]: the disks and interfaces the fallback reads from the domain XML;
//! - [`ffi`]: the only `unsafe` code — the raw libvirt calls the `virt` crate lacks or
//!   gets wrong (leak-free bulk stats, checked state and block info, close callback,
//!   lifecycle event callback).

#![deny(unsafe_code)]

mod calls;
mod connection;
pub mod domain_xml;
mod domains;
#[allow(unsafe_code)]
pub mod ffi;
mod lifecycle;
mod partial;
pub mod settings;
mod stats;

pub use connection::LibvirtHypervisor;
pub use settings::LibvirtSettings;

/// The process-wide libvirt setup [`LibvirtHypervisor::start`] does: silences libvirt's
/// stderr error printing, registers libvirt's default event loop and runs it on a
/// `libvirt-events` thread. Idempotent. Only needed before using the [`ffi`]
/// registrations (close callback, lifecycle events) on a connection of one's own.
pub fn init_event_loop() {
    connection::init_libvirt();
}
