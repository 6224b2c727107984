//! `domain_stats`: the bulk `virConnectGetAllDomainStats` call (hedged: `hedge`), the
//! per-domain fallback for requested groups the reply left empty (`fallback`), and the
//! partial-group check (`partial`). With several shards (`shards`), each shard lists the
//! running domains and asks `virDomainListGetStats` for its own, in parallel, each
//! hedged and completed by the fallback on its own; the replies are merged before the
//! partial check. What a hung domain still costs is written down in
//! docs/libvirt-backend.md.

use std::sync::Arc;

use tracing::{debug, warn};
use vadvisor_api::{DomainRef, DomainStats, HypervisorError, Params, StatsGroups};
use virt::domain::Domain;
use virt::sys;

use crate::calls::BULK_CALL;
use crate::errors::{classify, Abort};
use crate::fallback::{fallback, needs_fallback};
use crate::ffi;
use crate::hedge::{self, Hedged};
use crate::lanes::Lease;
use crate::live::{release, Live};
use crate::shards::{self, ShardPlan};
use crate::supervisor::Supervisor;
use crate::vcpu_threads;
use crate::wire;

/// Before the bulk call starts: still waiting for a concurrency permit.
const QUEUED: &str = "virConnectGetAllDomainStats (queued behind other calls)";

/// A bulk reply, taken apart on the blocking thread that made the call: every domain's
/// statistics, and the libvirt handles only of the domains that need the fallback (with
/// the connection and the lease, permit and lane, for its calls: they go on where the
/// bulk call ran). Everything else was released on that thread.
struct BulkReply {
    generation: u64,
    stats: Vec<DomainStats>,
    /// `(index in stats, domain)` of the domains the fallback must complete.
    pending: Vec<(usize, Domain)>,
    /// The connection and lease of the reply, when `pending` is not empty.
    carry: Option<(Arc<Live>, Lease)>,
}

/// What one bulk call asks for.
#[derive(Clone)]
enum Scope {
    /// Every running domain: one `virConnectGetAllDomainStats`.
    All,
    /// The running domains `plan` gives shard `index`: listed on the call's own
    /// connection, then one `virDomainListGetStats`.
    Shard { index: usize, plan: Arc<ShardPlan> },
}

impl Scope {
    /// The libvirt call that fetches the statistics, as errors name it.
    fn call(&self) -> &'static str {
        match self {
            Scope::All => BULK_CALL,
            Scope::Shard { .. } => SHARD_CALL,
        }
    }
}

/// The statistics call of one shard, as errors name it.
const SHARD_CALL: &str = "virDomainListGetStats";

/// Only running domains, and NOWAIT: skip the monitor of a domain whose job is held.
const BULK_FLAGS: u32 =
    sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT;

/// Shard `index`'s records (blocking): the running domains listed on `live`, those the
/// plan gives this shard, their statistics for `stats`.
fn shard_records(
    sup: &Supervisor,
    live: &Live,
    stats: u32,
    index: usize,
    plan: &ShardPlan,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Result<Vec<ffi::RawRecord>, virt::error::Error> {
    sup.count_calls(1);
    let listed = live
        .conn
        .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
    let mine: Vec<Domain> = listed
        .into_iter()
        .filter(|d| d.uuid_string().is_ok_and(|u| plan.shard_of(&u) == index))
        .collect();
    if mine.is_empty() {
        return Ok(Vec::new());
    }
    sup.count_calls(1);
    ffi::domain_list_stats(&mine, stats, BULK_FLAGS, keep_domain)
}

/// The records of `scope` over the connection's native client (`wire`), blocking;
/// `None` when that is not available or failed, and the library must answer; an error
/// only when the daemon did not answer in time (the library would wait too, past the
/// deadline). The domains `keep_domain` names get a library handle (looked up by UUID)
/// for the per-domain fallback; one that vanished meanwhile is left without.
fn native_records(
    sup: &Supervisor,
    live: &Live,
    stats: u32,
    scope: &Scope,
    keep_domain: &dyn Fn(&Params) -> bool,
) -> Option<Result<Vec<ffi::RawRecord>, HypervisorError>> {
    let reply = live
        .wire
        .answer(&sup.settings, scope.call(), |client| match scope {
            Scope::All => {
                sup.count_native_calls(1);
                client.domain_stats(&[], stats, BULK_FLAGS)
            }
            Scope::Shard { index, plan } => {
                sup.count_native_calls(1);
                let mine = shard_members(client.list_active_domains()?, *index, plan);
                if mine.is_empty() {
                    return Ok(Vec::new());
                }
                sup.count_native_calls(1);
                client.domain_stats(&mine, stats, BULK_FLAGS)
            }
        })?;
    let mut records = match reply {
        Ok(records) => records,
        Err(e) => return Some(Err(e)),
    };
    look_up_domains(sup, live, &mut records, keep_domain);
    Some(Ok(records))
}

/// Of the running domains `listed`, those `plan` gives shard `index`.
fn shard_members(
    listed: Vec<wire::DomainId>,
    index: usize,
    plan: &ShardPlan,
) -> Vec<wire::DomainId> {
    listed
        .into_iter()
        .filter(|d| plan.shard_of(&d.uuid_string()) == index)
        .collect()
}

/// Gives the records `keep_domain` names their library handle (looked up by UUID, on
/// `live`: blocking), for the per-domain fallback; a domain that vanished meanwhile is
/// left without.
fn look_up_domains(
    sup: &Supervisor,
    live: &Live,
    records: &mut [ffi::RawRecord],
    keep_domain: &dyn Fn(&Params) -> bool,
) {
    for rec in records {
        if keep_domain(&rec.params) {
            // A library call of its own (the library's reply carries the handle).
            sup.count_calls(1);
            rec.domain = live.conn.lookup_domain_by_uuid_string(&rec.uuid).ok();
        }
    }
}

/// A blocking task that ended without an answer (it panicked).
fn worker_failed() -> HypervisorError {
    HypervisorError::Call {
        call: BULK_CALL,
        message: "worker failed".to_string(),
    }
}

/// One bulk attempt: the call for `bulk_groups` over `scope`, on the connection of the
/// lane that comes with `permit`. Awaited over the native client when the lane's
/// connection and its native client are open (a tick's usual case: no thread is woken
/// for it); otherwise, or when the native client cannot answer, made on a blocking
/// thread ([`bulk_attempt_blocking`]).
async fn bulk_attempt(
    sup: Arc<Supervisor>,
    permit: tokio::sync::OwnedSemaphorePermit,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
    scope: Scope,
) -> Result<BulkReply, HypervisorError> {
    let lease = Lease::new(&sup.lanes, permit);
    let stats_bits = (bulk_groups | StatsGroups::STATE).0;
    let live = sup.current().and_then(|primary| {
        let live = lease.live_if_open(&primary);
        release(primary);
        live
    });
    if let Some(live) = live {
        match native_records_async(&sup, &live, stats_bits, &scope).await {
            Some(Ok(records)) => {
                return reply_awaited(&sup, live, lease, groups, records).await;
            }
            Some(Err(e)) => {
                release(live);
                return Err(e);
            }
            None => release(live),
        }
    }
    tokio::task::spawn_blocking(move || {
        bulk_attempt_blocking(&sup, lease, groups, bulk_groups, &scope)
    })
    .await
    .unwrap_or_else(|_| Err(worker_failed()))
}

/// The records of `scope` over the connection's native client, awaited; `None` when
/// it is not open right now or failed (the blocking path then tries it or the library
/// answers); an error only when the daemon did not answer in time. No library handle
/// is looked up here. While another awaited call has the client (the specs refresh's
/// listing and XML, the host counters: a few milliseconds), the call waits for it, up
/// to `wire::CLIENT_WAIT`, rather than going through the library on another lane,
/// which would open that lane's connection.
async fn native_records_async(
    sup: &Supervisor,
    live: &Live,
    stats: u32,
    scope: &Scope,
) -> Option<Result<Vec<ffi::RawRecord>, HypervisorError>> {
    let settings = &sup.settings;
    let calls = |n| sup.count_native_calls(n);
    let threads = &sup.vcpu_threads;
    live.wire
        .awaited(settings, scope.call(), async |client| match scope {
            Scope::All => {
                vcpu_threads::domain_stats_async(client, threads, &[], stats, BULK_FLAGS, &calls)
                    .await
            }
            Scope::Shard { index, plan } => {
                sup.count_native_calls(1);
                let listed = client.list_active_domains_async().await?;
                let mine = shard_members(listed, *index, plan);
                if mine.is_empty() {
                    return Ok(Vec::new());
                }
                vcpu_threads::domain_stats_async(client, threads, &mine, stats, BULK_FLAGS, &calls)
                    .await
            }
        })
        .await
}

/// The reply of an awaited native call: the library handles of the domains the
/// per-domain fallback will ask (looked up by UUID on a blocking thread, only when
/// there are any), then as [`bulk_reply`] makes it.
async fn reply_awaited(
    sup: &Arc<Supervisor>,
    live: Arc<Live>,
    lease: Lease,
    groups: StatsGroups,
    mut records: Vec<ffi::RawRecord>,
) -> Result<BulkReply, HypervisorError> {
    if !records.iter().any(|r| needs_fallback(&r.params, groups)) {
        return Ok(bulk_reply(records, live, lease));
    }
    let s = Arc::clone(sup);
    tokio::task::spawn_blocking(move || {
        look_up_domains(&s, &live, &mut records, &|p| needs_fallback(p, groups));
        bulk_reply(records, live, lease)
    })
    .await
    .map_err(|_| worker_failed())
}

/// A bulk reply from `records`: each domain's statistics, and the handles and
/// connection the fallback needs; the connection and lease are let go of otherwise.
fn bulk_reply(records: Vec<ffi::RawRecord>, live: Arc<Live>, lease: Lease) -> BulkReply {
    let mut stats = Vec::with_capacity(records.len());
    let mut pending = Vec::new();
    for rec in records {
        let mut d = DomainStats::new(DomainRef::new(rec.uuid, rec.name));
        d.params = rec.params;
        // Kept exactly for the domains `needs_fallback` names.
        if let Some(domain) = rec.domain {
            pending.push((stats.len(), domain));
        }
        stats.push(d);
    }
    let generation = live.generation;
    let carry = if pending.is_empty() {
        release(live);
        None
    } else {
        Some((live, lease))
    };
    BulkReply {
        generation,
        stats,
        carry,
        pending,
    }
}

/// One bulk attempt on a blocking thread: the call for `bulk_groups` over `scope`, on
/// the connection of `lease`'s lane (opened here if needed), over the native client or
/// the library.
fn bulk_attempt_blocking(
    sup: &Arc<Supervisor>,
    lease: Lease,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
    scope: &Scope,
) -> Result<BulkReply, HypervisorError> {
    // Taken on this blocking thread, so the connection is never dropped (closed) on a
    // runtime thread.
    let Some(primary) = sup.current() else {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    };
    let live = lease.live(primary);
    let stats_bits = (bulk_groups | StatsGroups::STATE).0;
    // Only a domain the per-domain fallback will ask needs its handle kept.
    let keep_domain = |params: &Params| needs_fallback(params, groups);
    let records = match native_records(sup, &live, stats_bits, scope, &keep_domain) {
        Some(Ok(records)) => Ok(records),
        Some(Err(e)) => return Err(e),
        None => match scope {
            Scope::All => {
                sup.count_calls(1);
                ffi::get_all_domain_stats(&live.conn, stats_bits, BULK_FLAGS, &keep_domain)
            }
            Scope::Shard { index, plan } => {
                shard_records(sup, &live, stats_bits, *index, plan, &keep_domain)
            }
        },
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            return Err(match classify(&live, &e) {
                Some(Abort::Connection(reason)) => {
                    // Dropped here, on this blocking thread, if it was the last reference.
                    drop(sup.mark_lost(live.generation, &reason));
                    HypervisorError::Disconnected(reason)
                }
                _ => HypervisorError::Call {
                    call: scope.call(),
                    message: e.message().to_string(),
                },
            });
        }
    };
    Ok(bulk_reply(records, live, lease))
}

/// `domain_stats`: the hedged bulk call for `bulk_groups` (split into shards when the
/// `bulk_shards` setting says so), the fallback for whatever of `groups` is missing,
/// and the partial-group check. A shard that fails fails the collection, as one call
/// would: its first error is returned (a lost connection before any other).
pub(crate) async fn collect(
    sup: &Arc<Supervisor>,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
) -> Result<Vec<DomainStats>, HypervisorError> {
    if sup.current().is_none() && !sup.reconnect_now().await {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    }
    let groups = groups | StatsGroups::STATE;
    let start = tokio::time::Instant::now();
    let plan = sup.shard_plan();
    let count = shards::shard_count(
        sup.settings.bulk_shards,
        plan.domains(),
        sup.settings.max_concurrent_calls.max(1),
        sup.cpus,
    );
    let (generation, mut stats) = if count <= 1 {
        collect_scope(sup, groups, bulk_groups, Scope::All, start).await?
    } else {
        let plan = if plan.shards() == count {
            plan
        } else {
            Arc::new(plan.resized(count))
        };
        let calls = (0..count).map(|index| {
            let scope = Scope::Shard {
                index,
                plan: Arc::clone(&plan),
            };
            collect_scope(sup, groups, bulk_groups, scope, start)
        });
        let mut generation = 0;
        let mut replies = Vec::with_capacity(count);
        let mut failed: Option<HypervisorError> = None;
        for reply in futures::future::join_all(calls).await {
            match reply {
                Ok((g, s)) => {
                    generation = generation.max(g);
                    replies.push(s);
                }
                Err(e) => {
                    let lost = matches!(e, HypervisorError::Disconnected(_));
                    if failed.is_none() || lost {
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        (generation, shards::merge(replies))
    };
    sup.groups_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(generation, groups, &mut stats);
    sup.set_shard_plan(ShardPlan::new(
        count,
        stats.iter().map(|d| Arc::clone(&d.domain.uuid)),
    ));
    Ok(stats)
}

/// One call over `scope`, hedged, and its fallback: the reply's connection generation
/// and statistics, before the partial check. Deadlines count from `start`.
async fn collect_scope(
    sup: &Arc<Supervisor>,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
    scope: Scope,
    start: tokio::time::Instant,
) -> Result<(u64, Vec<DomainStats>), HypervisorError> {
    let timeout = sup.settings.call_timeout;
    let deadline = start + timeout;
    let hedge_after = sup.hedging.delay(sup.settings.hedge_after);
    let call = scope.call();
    let outcome = hedge::race(&sup.permits, hedge_after, deadline, |permit| {
        bulk_attempt(Arc::clone(sup), permit, groups, bulk_groups, scope.clone())
    })
    .await;
    let reply = match outcome {
        Hedged::Answered {
            value,
            took,
            hedged,
            by_hedge,
        } => {
            if hedged {
                note_hedge(sup, hedge_after, start.elapsed(), by_hedge);
            }
            if value.is_ok() {
                sup.hedging.record(took, hedged, by_hedge);
            }
            value?
        }
        Hedged::Queued => {
            return Err(HypervisorError::Timeout {
                call: QUEUED,
                timeout,
            })
        }
        Hedged::TimedOut { hedged } => {
            debug!(uri = %sup.settings.uri, hedged, ?timeout, "{call} did not answer in time");
            return Err(HypervisorError::Timeout { call, timeout });
        }
        Hedged::Failed => {
            return Err(HypervisorError::Call {
                call,
                message: "worker failed".to_string(),
            })
        }
    };
    let BulkReply {
        generation,
        stats,
        pending,
        carry,
    } = reply;
    let stats = match carry {
        Some((live, lease)) => {
            // The fallback gets until 4/5 of the deadline, so a caller whose own deadline
            // is `call_timeout` (the scheduler's default) still gets the partial result.
            let fallback_deadline = start + timeout.mul_f64(0.8);
            fallback(
                sup,
                (live, lease),
                stats,
                pending,
                groups,
                fallback_deadline,
            )
            .await?
        }
        None => stats,
    };
    Ok((generation, stats))
}

/// Logs a hedge: `warn!` (rate-limited) when it answered, `debug!` otherwise.
fn note_hedge(
    sup: &Supervisor,
    delay: Option<std::time::Duration>,
    total: std::time::Duration,
    by_hedge: bool,
) {
    let delay = delay.unwrap_or_default();
    if by_hedge && sup.hedging.warn_due() {
        warn!(
            uri = %sup.settings.uri,
            ?delay,
            ?total,
            "{BULK_CALL} did not answer in time; a second (hedged) call answered instead: a \
             domain is probably busy or not responding (its statistics are partial meanwhile; \
             logged at most every 5 minutes)"
        );
    } else {
        debug!(uri = %sup.settings.uri, ?delay, ?total, by_hedge, "hedged {BULK_CALL}");
    }
}
