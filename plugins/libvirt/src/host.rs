//! The host itself: the blocking bodies of `node_stats` (`virNodeGetInfo`,
//! `virNodeGetCPUStats`, `virNodeGetMemoryStats`, `virNodeGetFreeMemory`) and `machine`
//! (hostname, host UUID from the capabilities, hypervisor and libvirt versions, node
//! info). A counter the driver does not offer is left out, not an error. `node_stats`,
//! which the host collector asks for every interval, goes over the native client
//! (`wire`), awaited, when the connection has one ([`native_node_stats`]).

use vadvisor_api::{version_string, HypervisorError, Machine, NodeInfo, NodeStats};
use virt::connect::Connect;
use virt::error::Error as VirtError;

use crate::calls::Progress;
use crate::domains::fail;
use crate::ffi;
use crate::live::Live;
use crate::supervisor::Supervisor;
use crate::wire::WireError;

pub(crate) const NODE_QUEUED: &str = "virNodeGetInfo (queued behind other calls)";

/// The host counters' calls, as a timeout of the native path names them.
const NODE_CALL: &str = "virNodeGetInfo";

fn call<T>(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
    name: &'static str,
    f: impl FnOnce(&Connect) -> Result<T, VirtError>,
) -> Result<T, HypervisorError> {
    sup.count_calls(1);
    progress.set(name);
    f(&live.conn).map_err(|e| fail(sup, live, name, &e, ""))
}

fn node_info(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
) -> Result<NodeInfo, HypervisorError> {
    let i = call(sup, live, progress, "virNodeGetInfo", Connect::node_info)?;
    Ok(NodeInfo {
        model: i.model,
        memory_kib: i.memory,
        cpus: i.cpus,
        mhz: i.mhz,
        nodes: i.nodes,
        sockets: i.sockets,
        cores: i.cores,
        threads: i.threads,
    })
}

/// The library's `node_stats` (see [`native_node_stats`] for the native client's).
pub(crate) fn node_stats(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
) -> Result<NodeStats, HypervisorError> {
    let info = node_info(sup, live, progress)?;
    // Optional counters: a driver without them still gives the node info.
    let cpu = call(
        sup,
        live,
        progress,
        "virNodeGetCPUStats",
        ffi::node_cpu_stats,
    )
    .map(|v| v.into_iter().collect())
    .or_else(optional)?;
    let memory = call(
        sup,
        live,
        progress,
        "virNodeGetMemoryStats",
        ffi::node_memory_stats,
    )
    .map(|v| v.into_iter().collect())
    .or_else(optional)?;
    let free_memory = call(
        sup,
        live,
        progress,
        "virNodeGetFreeMemory",
        Connect::free_memory,
    )
    .map(Some)
    .or_else(optional)?;
    Ok(NodeStats {
        info,
        cpu,
        memory,
        free_memory,
    })
}

/// [`node_stats`] over the connection's native client, the same four calls, awaited
/// (no blocking thread, no call lane: see [`Supervisor::native`]); `None` when the
/// library must answer instead (not available, or failed other than by a timeout).
pub(crate) async fn native_node_stats(
    sup: &Supervisor,
) -> Option<Result<NodeStats, HypervisorError>> {
    // An optional counter the daemon refuses gives nothing, as on the library path.
    fn optional<T: Default>(r: Result<T, WireError>) -> Result<T, WireError> {
        match r {
            Err(WireError::Remote(_)) => Ok(T::default()),
            r => r,
        }
    }
    sup.native(NODE_CALL, async |c| {
        sup.count_native_calls(4);
        let host = c.host_counters_async().await?;
        Ok(NodeStats {
            info: host.info,
            cpu: optional(host.cpu)?.into_iter().collect(),
            memory: optional(host.memory)?.into_iter().collect(),
            free_memory: optional(host.free_memory.map(Some))?,
        })
    })
    .await
}

/// A failed optional call gives nothing, unless the connection is gone.
fn optional<T: Default>(e: HypervisorError) -> Result<T, HypervisorError> {
    match e {
        HypervisorError::Disconnected(_) => Err(e),
        _ => Ok(T::default()),
    }
}

pub(crate) fn machine(
    sup: &Supervisor,
    live: &Live,
    progress: &Progress,
) -> Result<Machine, HypervisorError> {
    let info = node_info(sup, live, progress)?;
    let hostname = call(
        sup,
        live,
        progress,
        "virConnectGetHostname",
        Connect::hostname,
    )
    .or_else(optional)?;
    let hypervisor = call(
        sup,
        live,
        progress,
        "virConnectGetType",
        Connect::driver_type,
    )
    .or_else(optional)?;
    let hypervisor_version = call(
        sup,
        live,
        progress,
        "virConnectGetVersion",
        Connect::hyp_version,
    )
    .map(|v| version_string(v.into()))
    .or_else(optional)?;
    let libvirt_version = call(
        sup,
        live,
        progress,
        "virConnectGetLibVersion",
        Connect::lib_version,
    )
    .map(|v| version_string(v.into()))
    .or_else(optional)?;
    let caps: String = call(
        sup,
        live,
        progress,
        "virConnectGetCapabilities",
        Connect::capabilities,
    )
    .or_else(optional)?;
    Ok(Machine {
        hostname,
        host_uuid: host_uuid(&caps),
        hypervisor,
        hypervisor_version,
        libvirt_version,
        info,
    })
}

/// `<capabilities><host><uuid>…</uuid>` (the first `<uuid>` of the document).
fn host_uuid(caps: &str) -> Option<String> {
    let start = caps.find("<uuid>")? + "<uuid>".len();
    let len = caps[start..].find("</uuid>")?;
    let uuid = caps[start..start + len].trim();
    (!uuid.is_empty()).then(|| uuid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_uuid_from_capabilities() {
        let caps =
            "<capabilities>\n  <host>\n    <uuid>5ad0a0b0-0000-4000-9000-000000000002</uuid>\n";
        assert_eq!(
            host_uuid(caps).as_deref(),
            Some("5ad0a0b0-0000-4000-9000-000000000002")
        );
        assert_eq!(host_uuid("<capabilities/>"), None);
        assert_eq!(host_uuid("<uuid></uuid>"), None);
    }
}
