//! The per-domain fallback runner ([`per_domain`]): domain after domain on one blocking
//! thread, given up at its deadline (domains not done keep their bulk data plus an
//! error). A domain whose call is still stuck in libvirt ([`Busy`]) is skipped by later
//! calls until that call returns, so it costs the others at most one deadline.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::time::Instant;
use vadvisor_api::DomainStats;

use crate::live::drop_blocking;

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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};
    use vadvisor_api::DomainRef;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn job(index: usize, uuid: &str) -> Job<u64> {
        let mut stats = DomainStats::new(DomainRef::new(uuid, format!("dom-{uuid}")));
        stats
            .params
            .insert("state.state", vadvisor_api::TypedValue::Int(1));
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
                .insert("cpu.time", vadvisor_api::TypedValue::ULLong(1));
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
