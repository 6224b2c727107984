//! `domain_stats`: the bulk `virConnectGetAllDomainStats` call (hedged: `hedge`), the
//! per-domain fallback for requested groups the reply left empty (`fallback`), and the
//! partial-group check (`partial`). What a hung domain still costs is written down in
//! docs/libvirt-backend.md.

use std::sync::Arc;

use tracing::{debug, warn};
use vadvisor_api::{DomainRef, DomainStats, HypervisorError, StatsGroups};
use virt::domain::Domain;
use virt::sys;

use crate::calls::BULK_CALL;
use crate::errors::{classify, Abort};
use crate::fallback::{fallback, needs_fallback};
use crate::ffi;
use crate::hedge::{self, Hedged};
use crate::lanes::Lease;
use crate::live::Live;
use crate::supervisor::Supervisor;

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

/// One bulk attempt (blocking): the call for `bulk_groups` on the connection of the
/// lane that comes with `permit`.
fn bulk_attempt(
    sup: &Arc<Supervisor>,
    permit: tokio::sync::OwnedSemaphorePermit,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
) -> Result<BulkReply, HypervisorError> {
    let lease = Lease::new(&sup.lanes, permit);
    // Taken on this blocking thread, so the connection is never dropped (closed) on a
    // runtime thread.
    let Some(primary) = sup.current() else {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    };
    sup.count_calls(1);
    let live = lease.live(primary);
    let records = ffi::get_all_domain_stats(
        &live.conn,
        (bulk_groups | StatsGroups::STATE).0,
        sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
    );
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
                    call: BULK_CALL,
                    message: e.message().to_string(),
                },
            });
        }
    };
    let mut stats = Vec::with_capacity(records.len());
    let mut pending = Vec::new();
    for rec in records {
        let mut d = DomainStats::new(DomainRef::new(rec.uuid, rec.name));
        d.params = rec.params;
        if needs_fallback(&d, groups) {
            pending.push((stats.len(), rec.domain));
        }
        stats.push(d);
    }
    let generation = live.generation;
    Ok(BulkReply {
        generation,
        stats,
        carry: (!pending.is_empty()).then_some((live, lease)),
        pending,
    })
}

/// `domain_stats`: the hedged bulk call for `bulk_groups`, the fallback for whatever of
/// `groups` is missing, and the partial-group check.
pub(crate) async fn collect(
    sup: &Arc<Supervisor>,
    groups: StatsGroups,
    bulk_groups: StatsGroups,
) -> Result<Vec<DomainStats>, HypervisorError> {
    if sup.current().is_none() && !sup.reconnect_now().await {
        return Err(HypervisorError::Disconnected(sup.disconnected_reason()));
    }
    let groups = groups | StatsGroups::STATE;
    let timeout = sup.settings.call_timeout;
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let hedge_after = sup.hedging.delay(sup.settings.hedge_after);
    let s = Arc::clone(sup);
    let outcome = hedge::race(&sup.permits, hedge_after, deadline, move |permit| {
        bulk_attempt(&s, permit, groups, bulk_groups)
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
            debug!(uri = %sup.settings.uri, hedged, ?timeout, "{BULK_CALL} did not answer in time");
            return Err(HypervisorError::Timeout {
                call: BULK_CALL,
                timeout,
            });
        }
        Hedged::Failed => {
            return Err(HypervisorError::Call {
                call: BULK_CALL,
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
    let mut stats = match carry {
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
    sup.groups_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(generation, groups, &mut stats);
    Ok(stats)
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
