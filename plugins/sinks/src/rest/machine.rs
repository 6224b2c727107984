//! `GET /api/v1.0/machine`: the hypervisor host described once, in the spirit of
//! cAdvisor's machine endpoint (`num_cores`, `cpu_frequency_khz`, `memory_capacity`,
//! `system_uuid`, …) plus the hypervisor and libvirt versions. Answers from a copy at
//! most [`FRESH`] old, so clients cannot turn it into a libvirt call per request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use vadvisor_api::axum::http::StatusCode;
use vadvisor_api::axum::response::Response;
use vadvisor_api::{Hypervisor, HypervisorError, Machine};

use crate::http_util::json_error;

/// How long one answer is reused.
pub const FRESH: Duration = Duration::from_secs(10);

pub struct MachineCache {
    hypervisor: Arc<dyn Hypervisor>,
    last: Mutex<Option<(Instant, serde_json::Value)>>,
}

impl MachineCache {
    pub fn new(hypervisor: Arc<dyn Hypervisor>) -> Self {
        Self {
            hypervisor,
            last: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Response {
        if let Some((at, v)) = self.last.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if at.elapsed() < FRESH {
                return super::json_response(v.clone());
            }
        }
        match self.hypervisor.machine().await {
            Ok(m) => {
                let v = render(&m);
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), v.clone()));
                super::json_response(v)
            }
            Err(e @ HypervisorError::Unsupported(_)) => {
                json_error(StatusCode::NOT_IMPLEMENTED, e.to_string())
            }
            Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// The JSON document: cAdvisor's field names where one exists.
pub fn render(m: &Machine) -> serde_json::Value {
    let i = &m.info;
    let cells = u64::from(i.nodes.max(1));
    let sockets = cells * u64::from(i.sockets);
    json!({
        "hostname": m.hostname,
        "system_uuid": m.host_uuid,
        "num_cores": i.cpus,
        "num_physical_cores": sockets * u64::from(i.cores),
        "num_sockets": sockets,
        "threads_per_core": i.threads,
        "numa_nodes": i.nodes,
        "cpu_model": i.model,
        "cpu_frequency_khz": u64::from(i.mhz) * 1000,
        "memory_capacity": i.memory_kib.saturating_mul(1024),
        "hypervisor": {"type": m.hypervisor, "version": m.hypervisor_version},
        "libvirt_version": m.libvirt_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{FakeHypervisor, NodeInfo};

    #[tokio::test]
    async fn machine_document_and_errors() {
        let hv = Arc::new(FakeHypervisor::new());
        let cache = MachineCache::new(hv.clone());
        let r = cache.get().await;
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
        let m = Machine {
            hostname: "h2".into(),
            host_uuid: Some("5ad0a0b0-0000-4000-9000-000000000002".into()),
            hypervisor: "QEMU".into(),
            hypervisor_version: "7.2.22".into(),
            libvirt_version: "9.0.0".into(),
            info: NodeInfo {
                model: "x86_64".into(),
                memory_kib: 1024,
                cpus: 4,
                mhz: 2000,
                nodes: 1,
                sockets: 1,
                cores: 2,
                threads: 2,
            },
        };
        let v = render(&m);
        assert_eq!(v["num_cores"], 4);
        assert_eq!(v["num_physical_cores"], 2);
        assert_eq!(v["cpu_frequency_khz"], 2_000_000);
        assert_eq!(v["memory_capacity"], 1024 * 1024);
        assert_eq!(v["system_uuid"], "5ad0a0b0-0000-4000-9000-000000000002");
        assert_eq!(v["hypervisor"]["version"], "7.2.22");
        hv.set_node(None, Some(m));
        let calls = hv.calls();
        assert_eq!(cache.get().await.status(), StatusCode::OK);
        assert_eq!(cache.get().await.status(), StatusCode::OK);
        assert_eq!(hv.calls(), calls + 1, "the second answer is the cached one");
        hv.set_down(Some("gone"));
        let fresh = MachineCache::new(hv.clone());
        assert_eq!(fresh.get().await.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
