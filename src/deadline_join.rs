//! Runs futures together, each bounded by its own deadline, on one timer for all of
//! them: the timer is set to the earliest deadline still pending. A tick's collector
//! runs used one `tokio::time::timeout` each; every timer armed earlier than the
//! runtime's next wake costs a write to its wake-up descriptor, so a tick paid one per
//! collector. A future past its deadline is dropped, as `timeout` drops it.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// Polls every future until it finishes (`Some(output)`) or its deadline passes
/// (`None`); the outputs come back in the order of `runs`.
pub async fn join_with_deadlines<F: Future>(runs: Vec<(Instant, F)>) -> Vec<Option<F::Output>> {
    let mut pending: Vec<Option<(Instant, Pin<Box<F>>)>> = runs
        .into_iter()
        .map(|(deadline, run)| Some((deadline, Box::pin(run))))
        .collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let mut timer: Option<(Instant, Pin<Box<Sleep>>)> = None;
    std::future::poll_fn(move |cx| loop {
        let mut earliest: Option<Instant> = None;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            let Some((deadline, run)) = slot else {
                continue;
            };
            if let Poll::Ready(value) = run.as_mut().poll(cx) {
                *output = Some(value);
                *slot = None;
                continue;
            }
            earliest = Some(earliest.map_or(*deadline, |e| e.min(*deadline)));
        }
        let Some(earliest) = earliest else {
            return Poll::Ready(std::mem::take(&mut outputs));
        };
        let sleep = match &mut timer {
            Some((at, sleep)) => {
                if *at != earliest {
                    sleep.as_mut().reset(earliest);
                    *at = earliest;
                }
                sleep
            }
            None => {
                &mut timer
                    .insert((earliest, Box::pin(tokio::time::sleep_until(earliest))))
                    .1
            }
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The earliest deadline passed: drop every run past its own, then poll the rest
        // again and set the timer to the next deadline.
        let now = Instant::now();
        for slot in pending.iter_mut() {
            if slot.as_ref().is_some_and(|(deadline, _)| *deadline <= now) {
                *slot = None;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Sets its flag when dropped (a run cut off at its deadline must be dropped).
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_run_finishes_or_is_cut_off_at_its_own_deadline() {
        let start = Instant::now();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let run = |finish_ms: u64, deadline_ms: u64| {
            (
                start + Duration::from_millis(deadline_ms),
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(finish_ms)).await;
                    finish_ms
                }) as Pin<Box<dyn Future<Output = u64> + Send>>,
            )
        };
        let slow_dropped = (
            start + Duration::from_millis(150),
            Box::pin(async move {
                let _flag = flag;
                tokio::time::sleep(Duration::from_secs(10)).await;
                9999u64
            }) as Pin<Box<dyn Future<Output = u64> + Send>>,
        );
        let out = join_with_deadlines(vec![
            run(50, 100),   // done before its deadline
            run(300, 200),  // cut off at 200 ms
            slow_dropped,   // cut off at 150 ms, and dropped then
            run(250, 1000), // done after an earlier run was cut off
            run(0, 0),      // ready at once, although its deadline is now
        ])
        .await;
        assert_eq!(out, vec![Some(50), None, None, Some(250), Some(0)]);
        assert!(dropped.load(Ordering::SeqCst));
        // It returned when the last run finished, not at the latest deadline.
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_to_run_returns_nothing_at_once() {
        let out: Vec<Option<u8>> =
            join_with_deadlines(Vec::<(Instant, std::future::Ready<u8>)>::new()).await;
        assert!(out.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn every_run_past_its_deadline_ends_the_join_then() {
        let start = Instant::now();
        let never = |ms: u64| {
            (
                start + Duration::from_millis(ms),
                std::future::pending::<u8>(),
            )
        };
        let out = join_with_deadlines(vec![never(30), never(10), never(20)]).await;
        assert_eq!(out, vec![None, None, None]);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
    }
}
