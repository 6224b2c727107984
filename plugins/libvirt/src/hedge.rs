//! The hedged bulk call ([`race`]): when it has not answered after the hedge delay, one
//! identical call starts if a permit is free and the first answer wins; the other
//! attempt finishes in the background, still holding its permit. libvirt's NOWAIT flag
//! makes the second call skip the monitor of a domain whose job the first one holds.
//! [`Hedging`] adapts the delay to recent latencies and counts hedges.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::live::drop_blocking;

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

/// Runs `attempt` (a task of its own) under a permit, and once more (a hedge) if it has
/// not answered after `hedge_after` and a permit is free right then; returns the first
/// answer. At most two attempts, each holding its own permit (handed to it, to keep for
/// as long as it needs) until it returns, whether or not its answer is used. An attempt
/// awaits the daemon's reply without holding a thread, or makes a blocking call on a
/// blocking thread. An answer that loses is dropped on a blocking thread, never here.
pub(crate) async fn race<T, F, Fut>(
    permits: &Arc<Semaphore>,
    hedge_after: Option<Duration>,
    deadline: Instant,
    attempt: F,
) -> Hedged<T>
where
    T: Send + 'static,
    F: Fn(OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let first = match tokio::time::timeout_at(deadline, Arc::clone(permits).acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return Hedged::Queued,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, Duration, T)>();
    let launch = |permit: OwnedSemaphorePermit, is_hedge: bool| {
        let call = attempt(permit);
        let tx = tx.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let value = call.await;
            // When the other attempt already won, the receiver is closed and the value
            // comes back here, to be dropped on a blocking thread.
            if let Err(mpsc::error::SendError((_, _, value))) =
                tx.send((is_hedge, started.elapsed(), value))
            {
                drop_blocking(value);
            }
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Attempt `n` (0 = the first, 1 = the hedge) sleeps `sleeps[n]` holding its
    /// permit, then returns `n`.
    fn attempts(
        sleeps: &'static [u64],
    ) -> (
        Arc<AtomicUsize>,
        impl Fn(OwnedSemaphorePermit) -> BoxFuture<'static, usize>,
    ) {
        let started = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&started);
        (started, move |permit| {
            let n = s.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _permit = permit;
                tokio::time::sleep(ms(sleeps[n.min(sleeps.len() - 1)])).await;
                n
            })
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
}
