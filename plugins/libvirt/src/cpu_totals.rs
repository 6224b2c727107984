//! The bulk call's `cpu-total` group without the QEMU monitor, on the native client.
//!
//! libvirt takes a domain's job and asks QEMU `query-stats` for every domain a bulk
//! call asks `cpu-total` of (for KVM halt-polling counters the agent does not export),
//! and QEMU's monitor reads each command one byte per system call: that command was a
//! quarter of the CPU the monitor thread of every guest spent on a tick
//! (docs/performance.md, twelfth pass). The counters the agent exports (`cpu.time`,
//! `cpu.user`, `cpu.system`) are the domain's cgroup, which `virDomainGetCPUStats`
//! reads without the monitor. So the bulk call leaves `cpu-total` out and one
//! `virDomainGetCPUStats` per running domain, all sent in one write, fills them in.
//! A domain those calls do not answer for gets the group from a bulk call of its own;
//! when the daemon refuses them all (a host without CPU accounting; a domain gone
//! meanwhile does not count), the connection's client asks the group in the bulk call
//! again from then on.

use vadvisor_api::StatsGroups;

use crate::ffi::RawRecord;
use crate::wire::{DomainId, WireClient, WireError};

/// `VIR_ERR_NO_DOMAIN`: the domain went away between the bulk call and its CPU read.
const NO_DOMAIN: i32 = 42;

/// `doms`' statistics for `stats` (every domain when empty) with `flags`, as
/// `WireClient::domain_stats_async` gives them, the `cpu-total` group read per domain
/// (see the module). `calls` counts the daemon calls made.
pub(crate) async fn domain_stats_async(
    client: &mut WireClient,
    doms: &[DomainId],
    stats: u32,
    flags: u32,
    calls: &(dyn Fn(u64) + Sync),
) -> Result<Vec<RawRecord>, WireError> {
    let cpu = StatsGroups::CPU_TOTAL.0;
    calls(1);
    if stats & cpu == 0 || !client.cpu_totals_per_domain() {
        return client.domain_stats_async(doms, stats, flags).await;
    }
    let mut records = client.domain_stats_async(doms, stats & !cpu, flags).await?;
    let asked: Vec<(usize, DomainId)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.active)
        .filter_map(|(i, r)| Some((i, DomainId::by_uuid(&r.uuid)?)))
        .collect();
    if asked.is_empty() {
        return Ok(records);
    }
    let ids: Vec<DomainId> = asked.iter().map(|(_, d)| d.clone()).collect();
    calls(ids.len() as u64);
    let totals = client.domain_cpu_totals_async(&ids).await?;
    let mut missing = Vec::new();
    let mut refused = 0;
    for ((index, id), total) in asked.into_iter().zip(totals) {
        match total {
            Ok(values) if values.iter().any(|(k, _)| *k == "cpu.time") => {
                let params = &mut records[index].params;
                for (key, value) in values {
                    params.insert(key, value);
                }
            }
            Err(WireError::Remote(e)) if e.code == NO_DOMAIN => missing.push((index, id)),
            _ => {
                refused += 1;
                missing.push((index, id));
            }
        }
    }
    if missing.is_empty() {
        return Ok(records);
    }
    if refused == ids.len() {
        client.stop_cpu_totals_per_domain();
    }
    let ids: Vec<DomainId> = missing.iter().map(|(_, d)| d.clone()).collect();
    calls(1);
    // The daemon's error leaves these domains without the group (the per-domain
    // fallback then fills it); the others keep their statistics.
    let extras = match client.domain_stats_async(&ids, cpu, flags).await {
        Err(WireError::Remote(_)) => Vec::new(),
        other => other?,
    };
    for extra in extras {
        let Some(record) = missing
            .iter()
            .map(|&(index, _)| index)
            .find(|&index| records[index].uuid == extra.uuid)
            .map(|index| &mut records[index])
        else {
            continue;
        };
        for (key, value) in extra.params.iter() {
            if key.starts_with("cpu.") {
                record.params.insert(key, value.clone());
            }
        }
    }
    Ok(records)
}
