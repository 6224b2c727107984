//! The discipline every data call of the backend follows: fail fast with
//! `Disconnected` (and ask for an early reconnect) when there is no connection, then a
//! concurrency permit (moved into the blocking closure, so a call that outlives its
//! deadline keeps holding it) and a `call_timeout` deadline around the permit wait plus
//! the blocking work. The timeout names the libvirt call that was running, or says the
//! call was still queued.
//!
//! Two refinements serve `domain_stats`, so that one domain whose QEMU does not answer
//! cannot stall the others:
//!
//! - [`race`]: the bulk call is *hedged*. When it has not answered after the hedge delay,
//!   one identical call is started if a permit is free, and the first answer wins; the
//!   other attempt finishes in the background, still holding its permit (threads stay
//!   bounded by `max_concurrent_calls`). libvirt's NOWAIT flag makes the second call skip
//!   the monitor of a domain whose job the first one holds.
//! - [`per_domain`]: the per-domain fallback runs on one blocking thread, domain after
//!   domain, and is given up at its deadline: domains not done by then keep what the bulk
//!   reply had, plus an error. A domain whose per-domain call is still running (stuck in
//!   libvirt, see [`Busy`]) is skipped by later calls until that call returns, so it costs
//!   the others at most one deadline.
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use vadvisor_api::{DomainStats, HypervisorError};

use crate::connection::{Lease, Live, Supervisor};

/// The libvirt call a request is in, to name it when the deadline passes.
#[derive(Clone)]
pub(crate) struct Progress(Arc<Mutex<&'static str>>);

impl Progress {
    pub(crate) fn new(initial: &'static str) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    pub(crate) fn set(&self, call: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = call;
    }

    pub(crate) fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Supervisor {
    /// Runs `work` on a blocking thread under a permit and the call deadline, on the
    /// current connection (or on `pinned`, the connection a reconciliation belongs to).
    /// `queued` names the wait for a permit in a timeout error.
    pub(crate) async fn bounded<T, F>(
        self: &Arc<Self>,
        pinned: Option<Arc<Live>>,
        queued: &'static str,
        work: F,
    ) -> Result<T, HypervisorError>
    where
        T: Send + 'static,
        F: FnOnce(&Supervisor, &Live, &Progress) -> Result<T, HypervisorError> + Send + 'static,
    {
        if pinned.is_none() && self.current().is_none() {
            self.request_early_retry();
            return Err(HypervisorError::Disconnected(self.disconnected_reason()));
        }
        let timeout = self.settings.call_timeout;
        let progress = Progress::new(queued);
        let run = async {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| HypervisorError::Disconnected(self.disconnected_reason()))?;
            // Taken only now, and moved straight into the blocking closure, so the
            // connection is never dropped (closed) on a runtime thread.
            let Some(primary) = pinned.clone().or_else(|| self.current()) else {
                return Err(HypervisorError::Disconnected(self.disconnected_reason()));
            };
            let sup = Arc::clone(self);
            let progress2 = progress.clone();
            tokio::task::spawn_blocking(move || {
                let lease = Lease::new(&sup, permit);
                // A reconciliation lists on the connection it belongs to; anything else
                // on its lane's connection.
                let live = if pinned.is_some() {
                    primary
                } else {
                    lease.live(primary)
                };
                work(&sup, &live, &progress2)
            })
            .await
            .map_err(|e| HypervisorError::Call {
                call: progress.get(),
                message: format!("worker failed: {e}"),
            })?
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(HypervisorError::Timeout {
                call: progress.get(),
                timeout,
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops `value` on a blocking thread: libvirt handles (domains, connections) may do
/// I/O when their last reference goes.
pub(crate) fn drop_blocking<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// What a hedged call came to.
#[derive(Debug)]
pub(crate) enum Hedged<T> {
    /// One attempt answered first: its value, how long that attempt itself took, whether
    /// a hedge was started, and whether the hedge is the attempt that answered.
    Answered {
        value: T,
        took: Duration,
        hedged: bool,
        by_hedge: bool,
    },
    /// No permit before the deadline: nothing reached libvirt.
    Queued,
    /// Started, but no attempt answered before the deadline.
    TimedOut { hedged: bool },
    /// Every attempt ended without an answer (a panic in the blocking work).
    Failed,
}

/// Runs `attempt` on a blocking thread under a permit, and once more (a hedge) if it
/// has not answered after `hedge_after` and a permit is free right then; returns the
/// first answer. At most two attempts, each holding its own permit (handed to it, to
/// keep for as long as it needs) until it returns, whether or not its answer is used.
/// An answer that loses is dropped on its own blocking thread (or on a fresh one if it
/// was already queued), never here.
pub(crate) async fn race<T, F>(
    permits: &Arc<Semaphore>,
    hedge_after: Option<Duration>,
    deadline: Instant,
    attempt: F,
) -> Hedged<T>
where
    T: Send + 'static,
    F: Fn(OwnedSemaphorePermit) -> T + Send + Sync + 'static,
{
    let first = match tokio::time::timeout_at(deadline, Arc::clone(permits).acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return Hedged::Queued,
    };
    let attempt = Arc::new(attempt);
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, Duration, T)>();
    let launch = |permit: OwnedSemaphorePermit, is_hedge: bool| {
        let attempt = Arc::clone(&attempt);
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let value = attempt(permit);
            // When the other attempt already won, the receiver is closed and the value
            // comes back here, to be dropped on this blocking thread.
            let _ = tx.send((is_hedge, started.elapsed(), value));
        });
    };
    launch(first, false);
    let mut hedged = false;
    if let Some(after) = hedge_after.filter(|d| !d.is_zero()) {
        let hedge_at = (Instant::now() + after).min(deadline);
        if let Ok(answer) = tokio::time::timeout_at(hedge_at, rx.recv()).await {
            return finish(answer, rx, false);
        }
        if Instant::now() < deadline {
            if let Ok(permit) = Arc::clone(permits).try_acquire_owned() {
                launch(permit, true);
                hedged = true;
            }
        }
    }
    drop(tx);
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(answer) => finish(answer, rx, hedged),
        Err(_) => {
            rx.close();
            Hedged::TimedOut { hedged }
        }
    }
}

/// The winner of [`race`]; closes the channel so a late loser keeps its answer, and
/// hands one that is already queued to a blocking thread.
fn finish<T: Send + 'static>(
    answer: Option<(bool, Duration, T)>,
    mut rx: mpsc::UnboundedReceiver<(bool, Duration, T)>,
    hedged: bool,
) -> Hedged<T> {
    rx.close();
    while let Ok(loser) = rx.try_recv() {
        drop_blocking(loser);
    }
    match answer {
        Some((by_hedge, took, value)) => Hedged::Answered {
            value,
            took,
            hedged,
            by_hedge,
        },
        None => Hedged::Failed,
    }
}

/// How many answered bulk calls the hedge delay looks back on.
const LATENCY_WINDOW: usize = 8;
/// A hedge that answers is logged at `warn!` at most this often (else `debug!`).
const HEDGE_WARN_EVERY: Duration = Duration::from_secs(300);

/// Hedging state: recent bulk-call latencies (to adapt the delay) and counters.
#[derive(Default)]
pub(crate) struct Hedging {
    recent: Mutex<VecDeque<Duration>>,
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    last_warn: Mutex<Option<std::time::Instant>>,
}

impl Hedging {
    /// The delay before hedging: `hedge_after`, but at least twice the median of the
    /// recent answered calls. `None`: hedging is off.
    pub(crate) fn delay(&self, hedge_after: Duration) -> Option<Duration> {
        if hedge_after.is_zero() {
            return None;
        }
        let mut recent: Vec<Duration> = lock(&self.recent).iter().copied().collect();
        if recent.is_empty() {
            return Some(hedge_after);
        }
        recent.sort_unstable();
        let median = recent[recent.len() / 2];
        Some(hedge_after.max(median * 2))
    }

    /// Records an answered call (the answering attempt's own duration).
    pub(crate) fn record(&self, took: Duration, hedged: bool, by_hedge: bool) {
        let mut recent = lock(&self.recent);
        if recent.len() == LATENCY_WINDOW {
            recent.pop_front();
        }
        recent.push_back(took);
        drop(recent);
        if hedged {
            self.hedges.fetch_add(1, Ordering::Relaxed);
        }
        if by_hedge {
            self.hedge_wins.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether a hedge that answered should be logged at `warn!` now (rate-limited).
    pub(crate) fn warn_due(&self) -> bool {
        let mut last = lock(&self.last_warn);
        if last.is_some_and(|t| t.elapsed() < HEDGE_WARN_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

/// Domains whose per-domain fallback call has not returned yet. A call stuck in libvirt
/// (a domain whose QEMU does not answer: the call waits for the domain's job) leaves its
/// domain here until it returns; later calls skip that domain instead of queueing
/// behind it.
#[derive(Default)]
pub(crate) struct Busy(Mutex<HashSet<Arc<str>>>);

impl Busy {
    pub(crate) fn contains(&self, uuid: &str) -> bool {
        lock(&self.0).contains(uuid)
    }

    fn insert(&self, uuid: Arc<str>) {
        lock(&self.0).insert(uuid);
    }

    fn remove(&self, uuid: &str) {
        lock(&self.0).remove(uuid);
    }
}

/// Error recorded for a domain skipped because its previous per-domain call still hangs.
pub(crate) const SKIPPED_BUSY: &str = "per-domain statistics skipped: an earlier per-domain \
     call for this domain has not returned yet (domain busy or not responding)";
/// Error recorded for a domain whose per-domain statistics were not done by the deadline.
pub(crate) const UNFINISHED: &str = "per-domain statistics did not finish before the deadline \
     (domain busy or not responding)";

/// One domain for [`per_domain`]: its index in the caller's output, its bulk-only
/// statistics, and what the work needs (the libvirt domain handle).
pub(crate) struct Job<J> {
    pub index: usize,
    pub stats: DomainStats,
    pub extra: J,
}

/// Runs `work` for every job, one after the other on one blocking thread holding
/// `lease` (the permit and lane of the bulk call the jobs come from), until `deadline`.
/// Returns `(index, stats)` for every job: what `work` made of it (`None`: the domain
/// vanished), or its bulk-only statistics plus an error when it was skipped (its
/// previous call still runs) or not done in time.
/// `Err(reason)` when `work` reported the connection gone. Jobs not started by the
/// deadline are abandoned (dropped on the worker thread); the one in progress finishes
/// in the background and its domain stays [`Busy`] until then.
pub(crate) async fn per_domain<J, L, W>(
    lease: L,
    busy: &Arc<Busy>,
    deadline: Instant,
    jobs: Vec<Job<J>>,
    work: W,
) -> Result<Vec<(usize, Option<DomainStats>)>, String>
where
    J: Send + 'static,
    L: Send + 'static,
    W: FnMut(DomainStats, J) -> Result<Option<DomainStats>, String> + Send + 'static,
{
    let mut out = Vec::with_capacity(jobs.len());
    let mut run = Vec::with_capacity(jobs.len());
    let mut skipped = Vec::new();
    for job in jobs {
        if busy.contains(&job.stats.domain.uuid) {
            let mut stats = job.stats;
            stats.errors.push(SKIPPED_BUSY.to_string());
            out.push((job.index, Some(stats)));
            skipped.push(job.extra);
        } else {
            run.push(job);
        }
    }
    if !skipped.is_empty() {
        drop_blocking(skipped);
    }
    if run.is_empty() {
        // `work` may hold libvirt handles too.
        drop_blocking((lease, work));
        return Ok(out);
    }
    // The bulk-only copies, for the jobs that do not come back in time.
    let mut pending: Vec<(usize, DomainStats)> =
        run.iter().map(|j| (j.index, j.stats.clone())).collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let cancel = Arc::clone(&cancel);
        let busy = Arc::clone(busy);
        let mut work = work;
        tokio::task::spawn_blocking(move || {
            let _lease = lease;
            let mut jobs = run.into_iter();
            for job in jobs.by_ref() {
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                let uuid = Arc::clone(&job.stats.domain.uuid);
                busy.insert(Arc::clone(&uuid));
                let result = work(job.stats, job.extra);
                busy.remove(&uuid);
                let stop = result.is_err();
                if tx.send((job.index, result)).is_err() || stop {
                    break;
                }
            }
            // Whatever was not started is dropped here, on this blocking thread.
            drop(jobs);
        });
    }
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((index, result))) => {
                pending.retain(|(i, _)| *i != index);
                out.push((index, result?));
                if pending.is_empty() {
                    break;
                }
            }
            // The worker is done (or died): whatever is left did not come back.
            Ok(None) => break,
            Err(_) => {
                cancel.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    rx.close();
    for (index, mut stats) in pending {
        stats.errors.push(UNFINISHED.to_string());
        out.push((index, Some(stats)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use vadvisor_api::DomainRef;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Attempt `n` (0 = the first, 1 = the hedge) sleeps `sleeps[n]` holding its
    /// permit, then returns `n`.
    fn attempts(
        sleeps: &'static [u64],
    ) -> (
        Arc<AtomicUsize>,
        impl Fn(OwnedSemaphorePermit) -> usize + Send + Sync,
    ) {
        let started = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&started);
        (started, move |_permit| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(ms(sleeps[n.min(sleeps.len() - 1)]));
            n
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fast_call_is_not_hedged() {
        let permits = Arc::new(Semaphore::new(4));
        let (started, f) = attempts(&[10]);
        let r = race(&permits, Some(ms(300)), Instant::now() + ms(2000), f).await;
        assert!(
            matches!(
                r,
                Hedged::Answered {
                    value: 0,
                    hedged: false,
                    by_hedge: false,
                    ..
                }
            ),
            "{r:?}"
        );
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_call_is_overtaken_by_one_hedge_that_keeps_no_extra_permit() {
        let permits = Arc::new(Semaphore::new(4));
        // The first attempt hangs for 1.5 s; the hedge answers in 20 ms.
        let (started, f) = attempts(&[1500, 20]);
        let t = Instant::now();
        let r = race(&permits, Some(ms(200)), t + ms(5000), f).await;
        let took = t.elapsed();
        match r {
            Hedged::Answered {
                value,
                took: own,
                hedged,
                by_hedge,
            } => {
                assert_eq!((value, hedged, by_hedge), (1, true, true));
                assert!(own < ms(500), "{own:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(took >= ms(200) && took < ms(700), "answered after {took:?}");
        assert_eq!(started.load(Ordering::SeqCst), 2, "exactly one hedge");
        // The stuck attempt still holds its permit; the hedge gave its back.
        tokio::time::sleep(ms(50)).await;
        assert_eq!(permits.available_permits(), 3);
        tokio::time::sleep(ms(1600)).await;
        assert_eq!(permits.available_permits(), 4, "released once it returned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_hedge_without_a_free_permit_or_when_disabled() {
        let permits = Arc::new(Semaphore::new(1));
        let (started, f) = attempts(&[600]);
        let r = race(&permits, Some(ms(100)), Instant::now() + ms(300), f).await;
        assert!(matches!(r, Hedged::TimedOut { hedged: false }), "{r:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Still held by the timed-out attempt: the next call waits and is Queued.
        let (started2, f2) = attempts(&[0]);
        let r = race(&permits, Some(ms(100)), Instant::now() + ms(100), f2).await;
        assert!(matches!(r, Hedged::Queued), "{r:?}");
        assert_eq!(
            started2.load(Ordering::SeqCst),
            0,
            "nothing reached libvirt"
        );

        let permits = Arc::new(Semaphore::new(4));
        let (started, f) = attempts(&[400]);
        let r = race(&permits, None, Instant::now() + ms(2000), f).await;
        assert!(matches!(r, Hedged::Answered { hedged: false, .. }), "{r:?}");
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stuck_attempts_time_out_and_never_a_third() {
        let permits = Arc::new(Semaphore::new(4));
        let (started, f) = attempts(&[800, 800]);
        let t = Instant::now();
        let r = race(&permits, Some(ms(50)), t + ms(300), f).await;
        assert!(matches!(r, Hedged::TimedOut { hedged: true }), "{r:?}");
        assert!(t.elapsed() < ms(450));
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(permits.available_permits(), 2);
    }

    #[test]
    fn the_hedge_delay_adapts_to_a_slow_host() {
        let h = Hedging::default();
        assert_eq!(h.delay(Duration::ZERO), None, "0 disables");
        assert_eq!(h.delay(ms(750)), Some(ms(750)), "no history yet");
        for _ in 0..LATENCY_WINDOW {
            h.record(ms(100), false, false);
        }
        assert_eq!(h.delay(ms(750)), Some(ms(750)), "fast host: the setting");
        for _ in 0..LATENCY_WINDOW {
            h.record(ms(600), false, false);
        }
        assert_eq!(
            h.delay(ms(750)),
            Some(ms(1200)),
            "slow host: twice the median"
        );
        // One hung call's hedge (fast) does not move it much.
        h.record(ms(50), true, true);
        assert_eq!(h.delay(ms(750)), Some(ms(1200)));
        assert_eq!(h.hedges.load(Ordering::Relaxed), 1);
        assert_eq!(h.hedge_wins.load(Ordering::Relaxed), 1);
        assert!(h.warn_due());
        assert!(!h.warn_due(), "rate-limited");
    }

    fn job(index: usize, uuid: &str) -> Job<u64> {
        let mut stats = DomainStats::new(DomainRef::new(uuid, format!("dom-{uuid}")));
        stats
            .params
            .insert("state.state".into(), vadvisor_api::TypedValue::Int(1));
        Job {
            index,
            stats,
            extra: index as u64,
        }
    }

    /// Work that marks the domain as filled, after sleeping `extra` × 100 ms for the
    /// domain named `slow`.
    fn fill(
        slow: &'static str,
    ) -> impl FnMut(DomainStats, u64) -> Result<Option<DomainStats>, String> {
        move |mut s, extra| {
            if &*s.domain.uuid == slow {
                std::thread::sleep(ms(extra * 100));
            }
            s.params
                .insert("cpu.time".into(), vadvisor_api::TypedValue::ULLong(1));
            Ok(Some(s))
        }
    }

    fn sorted(mut v: Vec<(usize, Option<DomainStats>)>) -> Vec<(usize, Option<DomainStats>)> {
        v.sort_by_key(|(i, _)| *i);
        v
    }

    /// A permit of `permits`, as the lease `per_domain` holds.
    async fn lease(permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        Arc::clone(permits).acquire_owned().await.expect("permit")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_domain_costs_the_others_one_deadline_then_is_skipped() {
        let permits = Arc::new(Semaphore::new(4));
        let busy = Arc::new(Busy::default());
        // `b` (1.2 s) hangs past the deadline, ahead of `c`.
        let jobs = vec![
            job(0, "a"),
            Job {
                extra: 12,
                ..job(1, "b")
            },
            job(2, "c"),
        ];
        let t = Instant::now();
        let out = per_domain(lease(&permits).await, &busy, t + ms(300), jobs, fill("b"))
            .await
            .expect("no connection error");
        assert!(
            t.elapsed() < ms(450),
            "gave up at the deadline: {:?}",
            t.elapsed()
        );
        let out = sorted(out);
        assert_eq!(out.len(), 3);
        let a = out[0].1.as_ref().unwrap();
        assert!(a.errors.is_empty() && a.params.contains_key("cpu.time"));
        for i in [1, 2] {
            let s = out[i].1.as_ref().unwrap();
            assert_eq!(s.errors, [UNFINISHED], "{i}");
            assert!(!s.params.contains_key("cpu.time"), "bulk-only copy");
            assert!(s.params.contains_key("state.state"));
        }
        assert!(busy.contains("b"), "still stuck");
        assert_eq!(
            permits.available_permits(),
            3,
            "the stuck worker keeps its lease"
        );

        // The next call skips `b` at once and serves the others in full.
        let jobs = vec![
            job(0, "a"),
            Job {
                extra: 12,
                ..job(1, "b")
            },
            job(2, "c"),
        ];
        let t = Instant::now();
        let out = sorted(
            per_domain(lease(&permits).await, &busy, t + ms(300), jobs, fill("b"))
                .await
                .unwrap(),
        );
        assert!(t.elapsed() < ms(100), "{:?}", t.elapsed());
        assert_eq!(out[1].1.as_ref().unwrap().errors, [SKIPPED_BUSY]);
        for i in [0, 2] {
            let s = out[i].1.as_ref().unwrap();
            assert!(
                s.errors.is_empty() && s.params.contains_key("cpu.time"),
                "{i}"
            );
        }
        // Once the stuck call returns, `b` is served again and every lease is back.
        tokio::time::sleep(ms(1200)).await;
        assert!(!busy.contains("b"));
        assert_eq!(permits.available_permits(), 4);
        let out = per_domain(
            lease(&permits).await,
            &busy,
            Instant::now() + ms(300),
            vec![job(1, "b")],
            fill("x"),
        )
        .await
        .unwrap();
        assert!(out[0].1.as_ref().unwrap().errors.is_empty());
        tokio::time::sleep(ms(50)).await;
        assert_eq!(permits.available_permits(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vanished_domains_and_connection_errors() {
        let permits = Arc::new(Semaphore::new(1));
        let busy = Arc::new(Busy::default());
        let work = |s: DomainStats, _: u64| -> Result<Option<DomainStats>, String> {
            match &*s.domain.uuid {
                "gone" => Ok(None),
                "dead" => Err("connection reset".into()),
                _ => Ok(Some(s)),
            }
        };
        let out = sorted(
            per_domain(
                lease(&permits).await,
                &busy,
                Instant::now() + ms(500),
                vec![job(0, "ok"), job(1, "gone")],
                work,
            )
            .await
            .unwrap(),
        );
        assert!(out[0].1.is_some() && out[1].1.is_none());
        let err = per_domain(
            lease(&permits).await,
            &busy,
            Instant::now() + ms(500),
            vec![job(0, "dead"), job(1, "ok")],
            work,
        )
        .await
        .expect_err("connection error");
        assert_eq!(err, "connection reset");
        tokio::time::sleep(ms(50)).await;
        assert_eq!(permits.available_permits(), 1, "the lease is released");
    }
}
