//! # vadvisor-libvirt — the real libvirt backend
//!
//! [`LibvirtHypervisor`] implements [`vadvisor_api::Hypervisor`] over one supervised,
//! always read-only libvirt connection, configured by [`LibvirtSettings`]. Each module
//! header says what its file holds; the reasoning behind the design (lanes, hedging,
//! the fallback, event reconciliation) is in `docs/libvirt-backend.md`. [`ffi`] holds
//! the only `unsafe` code.

#![deny(unsafe_code)]

mod calls;
mod connection;
mod cpu_totals;
pub mod domain_xml;
mod domains;
mod errors;
mod event_loop;
mod fallback;
#[allow(unsafe_code)]
pub mod ffi;
mod hedge;
mod host;
mod hypervisor;
mod job_hints;
mod jobs;
mod lanes;
mod lifecycle;
mod live;
mod partial;
mod per_domain;
pub mod settings;
mod shards;
mod stats;
mod supervisor;
pub mod tick_timer;
mod vcpu_threads;
mod wire;

pub use hypervisor::LibvirtHypervisor;
pub use settings::{BulkShards, LibvirtSettings, StatsTransport};

/// The process-wide libvirt setup [`LibvirtHypervisor::start`] does: silences libvirt's
/// stderr error printing, registers libvirt's default event loop and runs it on a
/// `libvirt-events` thread. Idempotent. Only needed before using the [`ffi`]
/// registrations (close callback, lifecycle events) on a connection of one's own.
pub fn init_event_loop() {
    event_loop::init_libvirt();
}
