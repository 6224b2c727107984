//! The raw libvirt shim: the only module of this crate with `unsafe` code (every
//! `unsafe` block carries a `// SAFETY:` note). It owns what the `virt` 0.5 crate gets
//! wrong or does not wrap, one concern per file:
//!
//! - typed-parameter conversion (`virTypedParameter` array → owned `(String, TypedValue)`,
//!   or for the bulk reply straight into sorted `vadvisor_api::Params`);
//! - `virConnectGetAllDomainStats` and `virDomainListGetStats` (one shard's domains),
//!   copied into owned [`RawRecord`]s and freed with `virDomainStatsRecordListFree`
//!   (the `virt` wrapper leaks every record);
//! - `virDomainGetState`, `virDomainGetBlockInfo` with checked return codes (the `virt`
//!   wrappers ignore errors and read uninitialised memory);
//! - `virDomainGetVcpus` and the one-shot `virDomainGetCPUStats` total (no or wasteful
//!   wrappers in `virt`);
//! - the connection close callback (`virConnectRegisterCloseCallback`), with correct
//!   ownership of its opaque pointer whatever the driver does with it;
//! - the domain lifecycle event callback (`virConnectDomainEventRegisterAny` for
//!   `VIR_DOMAIN_EVENT_ID_LIFECYCLE`), whose `opaque` is a registry key, not a pointer;
//! - `virDomainGetJobStats` with the libvirt-allocated array freed by libvirt;
//! - `virNodeGetCPUStats` and `virNodeGetMemoryStats` (no `virt` wrappers);
//! - the process's C heap: free pages handed back to the kernel (`malloc_trim`), and
//!   malloc's thresholds fixed so that a thread arena does not keep megabytes at its top;
//! - the page-table entries of the process's read-only, never-written segments (the
//!   code libvirt's client and its libraries ran once, at load): handed back so that
//!   only what the agent runs again counts as resident.
//!
//! - a descriptor the agent owns registered with tokio's reactor for reading only (the
//!   scheduler's tick timer, the native libvirt client's socket).
//!
//! The last three are not libvirt calls; they are here so that `unsafe` stays in this
//! module.
//!
//! Every function here returns owned Rust values and never panics on libvirt output.

mod bulk;
mod close;
mod code_pages;
mod domain;
mod domain_events;
mod heap;
mod job;
mod lifecycle;
mod node;
mod params;
mod reactor;

pub use bulk::{domain_list_stats, format_uuid, get_all_domain_stats, RawRecord};
pub use close::{CloseCallback, CloseSignal};
pub use code_pages::{release_code_pages, CodePagesReleased};
pub use domain::{block_info, cpu_total_stats, domain_state, vcpu_info, VcpuInfo};
pub use domain_events::{
    live_domain_event_registrations, DomainEventKind, DomainEventRegistration, RawDomainEvent,
};
pub use heap::{
    keep_free_heap_small, release_free_heap, MMAP_THRESHOLD as HEAP_MMAP_THRESHOLD,
    TRIM_THRESHOLD as HEAP_TRIM_THRESHOLD,
};
pub use job::job_stats;
pub use lifecycle::{
    live_lifecycle_registrations, Deregistered, LifecycleRegistration, LifecycleShared,
    RawLifecycle,
};
pub use node::{node_cpu_stats, node_memory_stats};
pub use params::{params_from_raw, Params};
pub use reactor::register_readable;

/// This process's `/proc/self/status` value of `field` (with its colon: `"RssAnon:"`),
/// in KiB, for the unit tests of this module.
#[cfg(all(test, target_os = "linux"))]
fn own_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// A `test:///default` connection for the unit tests of this module.
#[cfg(test)]
fn test_conn() -> virt::connect::Connect {
    virt::error::clear_error_callback();
    virt::connect::Connect::open_read_only(Some("test:///default")).expect("test:///default opens")
}
