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
//!
//! Those reads go over a second connection, the CPU reader, sent just before the bulk
//! call for the domains expected to run (the shard's, or those that ran at the last
//! call): the daemon answers them while QEMU's monitors answer the bulk call, and the
//! replies, off the runtime's reactor, wake nobody; they are read once the bulk reply
//! is in. A running domain they did not cover (new since the last call, or without a
//! reader) is read over the main connection after the bulk call.
//! A domain those calls do not answer for gets the group from a bulk call of its own;
//! when the daemon refuses them all (a host without CPU accounting; a domain gone
//! meanwhile does not count), the connection's client asks the group in the bulk call
//! again from then on.

use vadvisor_api::{Room, StatsGroups};

use crate::ffi::RawRecord;
use crate::wire::{CpuTotal, DomainId, WireClient, WireError};

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
    domain_stats_with_room_async(client, doms, stats, flags, Room::default(), calls).await
}

/// The room the three CPU totals take in a record.
const CPU_TOTAL_ROOM: Room = Room {
    entries: 3,
    key_bytes: "cpu.time".len() + "cpu.user".len() + "cpu.system".len(),
};

/// [`domain_stats_async`], each record with `room` to spare for what the caller fills
/// in after the call (and with room for the CPU totals when they are read here).
pub(crate) async fn domain_stats_with_room_async(
    client: &mut WireClient,
    doms: &[DomainId],
    stats: u32,
    flags: u32,
    room: Room,
    calls: &(dyn Fn(u64) + Sync),
) -> Result<Vec<RawRecord>, WireError> {
    let cpu = StatsGroups::CPU_TOTAL.0;
    calls(1);
    if stats & cpu == 0 || !client.cpu_totals_per_domain() {
        return client
            .domain_stats_with_room_async(doms, stats, flags, room)
            .await;
    }
    let expected = if doms.is_empty() {
        client.take_last_running()
    } else {
        doms.to_vec()
    };
    let ahead = if expected.is_empty() {
        None
    } else {
        client.send_cpu_totals(&expected)
    };
    if ahead.is_some() {
        calls(expected.len() as u64);
    }
    let room = Room {
        entries: room.entries + CPU_TOTAL_ROOM.entries,
        key_bytes: room.key_bytes + CPU_TOTAL_ROOM.key_bytes,
    };
    let mut records = client
        .domain_stats_with_room_async(doms, stats & !cpu, flags, room)
        .await?;
    let mut early = match ahead {
        Some(sent) => client.sent_cpu_totals(sent).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let running: Vec<(usize, DomainId)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.active)
        .filter_map(|(i, r)| Some((i, DomainId::by_uuid(&r.uuid)?)))
        .collect();
    // Each running domain's reply from the reader, if it was asked there (the daemon
    // lists domains in the same order call after call: the same place first).
    let mut totals: Vec<Option<CpuTotal>> = running
        .iter()
        .enumerate()
        .map(|(place, (_, id))| {
            let asked = |k: &usize| expected.get(*k).is_some_and(|e| e.uuid == id.uuid);
            let k = Some(place)
                .filter(asked)
                .or_else(|| (0..early.len()).find(asked))?;
            early
                .get_mut(k)
                .map(|t| std::mem::replace(t, Ok(Vec::new())))
        })
        .collect();
    let late: Vec<usize> = (0..running.len())
        .filter(|&i| totals[i].is_none())
        .collect();
    if !late.is_empty() {
        let ids: Vec<DomainId> = late.iter().map(|&i| running[i].1.clone()).collect();
        calls(ids.len() as u64);
        let read = client.domain_cpu_totals_async(&ids).await?;
        for (i, total) in late.into_iter().zip(read) {
            totals[i] = Some(total);
        }
    }
    let mut missing = Vec::new();
    let mut refused = 0;
    for ((index, _), total) in running.iter().zip(totals) {
        match total {
            Some(Ok(values)) if values.iter().any(|(k, _)| *k == "cpu.time") => {
                let params = &mut records[*index].params;
                for (key, value) in values {
                    params.insert(key, value);
                }
            }
            Some(Err(WireError::Remote(e))) if e.code == NO_DOMAIN => missing.push(*index),
            _ => {
                refused += 1;
                missing.push(*index);
            }
        }
    }
    let all_refused = refused > 0 && refused == running.len();
    if doms.is_empty() {
        client.set_last_running(running.into_iter().map(|(_, id)| id).collect());
    }
    if missing.is_empty() {
        return Ok(records);
    }
    if all_refused {
        client.stop_cpu_totals_per_domain();
    }
    calls(1);
    group_from_bulk_call(client, &mut records, &missing, cpu, "cpu.", flags).await?;
    Ok(records)
}

/// Asks `group` of the running domains at `missing` (indices into `records`) in a bulk
/// call of their own and copies its keys (those starting with `prefix`) into their
/// records. The daemon's error leaves these domains without the group (the per-domain
/// fallback then fills it); the others keep their statistics.
pub(crate) async fn group_from_bulk_call(
    client: &mut WireClient,
    records: &mut [RawRecord],
    missing: &[usize],
    group: u32,
    prefix: &str,
    flags: u32,
) -> Result<(), WireError> {
    let ids: Vec<DomainId> = missing
        .iter()
        .filter_map(|&index| DomainId::by_uuid(&records.get(index)?.uuid))
        .collect();
    let extras = match client.domain_stats_async(&ids, group, flags).await {
        Err(WireError::Remote(_)) => Vec::new(),
        other => other?,
    };
    for extra in extras {
        let Some(record) = missing
            .iter()
            .find(|&&index| records.get(index).is_some_and(|r| r.uuid == extra.uuid))
            .and_then(|&index| records.get_mut(index))
        else {
            continue;
        };
        for (key, value) in extra.params.iter() {
            if key.starts_with(prefix) {
                record.params.insert(key, value.clone());
            }
        }
    }
    Ok(())
}
