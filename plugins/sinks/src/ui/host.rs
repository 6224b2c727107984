//! `GET /ui/api/host`: facts about the agent's host the pages need and no other
//! endpoint gives — the number of online CPUs (for "CPU % of host"), the host name and
//! the agent's version.

use vadvisor_api::axum::response::{IntoResponse, Response};
use vadvisor_api::axum::Json;

/// Counts the CPUs in a kernel CPU list (`0-3,6,8-9` → 7); `None` when malformed.
pub fn count_cpu_list(list: &str) -> Option<u32> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut n: u32 = 0;
    for part in list.split(',') {
        let part = part.trim();
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

/// Online CPUs of this host: `/sys/devices/system/cpu/online`, else what the process
/// may use.
pub fn host_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(&s))
        .filter(|&n| n > 0)
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| u32::try_from(n.get()).ok())
        })
        .unwrap_or(1)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn handler() -> Response {
    Json(serde_json::json!({
        "host_cpus": host_cpus(),
        "hostname": hostname(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-3"), Some(4));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a"), None);
        assert!(host_cpus() >= 1);
    }
}
