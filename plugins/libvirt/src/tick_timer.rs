//! A wait for an instant on a Linux timer descriptor (`timerfd`) watched by the
//! runtime's reactor, for the agent's periodic waits at rest: the scheduler's next
//! tick, the memory check's next round, the supervisor's next health check. Tokio's timer wheel files a deadline 64 ms to 4 s
//! away in a 64 ms slot and wakes the thread at the slot's start, only to sleep again
//! the rest of the way: each 1 s tick cost two wake-ups, and every wake-up of the agent
//! is CPU taken from the host's tenants. The descriptor wakes the thread once, at the
//! deadline. Where it cannot be made (another OS, a runtime without I/O) tokio's own
//! timer is used.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// Sleeps until an instant, one wake-up per sleep.
pub struct TickTimer {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl TickTimer {
    /// A timer on a new descriptor; call it within the runtime that will wait on it.
    pub fn new() -> Self {
        match Self::descriptor() {
            Ok(fd) => Self { fd: Some(fd) },
            Err(e) => {
                debug!(error = %e, "no timer descriptor: ticks wait on tokio's timer");
                Self::tokio()
            }
        }
    }

    /// A timer on tokio's timer wheel.
    pub fn tokio() -> Self {
        Self { fd: None }
    }

    /// Whether it waits on a timer descriptor.
    pub fn on_descriptor(&self) -> bool {
        self.fd.is_some()
    }

    fn descriptor() -> io::Result<AsyncFd<OwnedFd>> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        crate::ffi::register_readable(fd)
    }

    /// Returns at `at` (at once if it has passed). Cancel-safe: a sleep dropped
    /// midway leaves nothing behind that would end the next one early.
    pub async fn sleep_until(&mut self, at: Instant) {
        if let Some(fd) = &self.fd {
            match wait_on(fd, at).await {
                Ok(()) => return,
                Err(e) => {
                    debug!(error = %e, "timer descriptor failed: ticks wait on tokio's timer");
                    self.fd = None;
                }
            }
        }
        tokio::time::sleep_until(at.into()).await;
    }
}

impl Default for TickTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// Arms the descriptor for `at` and waits until it expires.
async fn wait_on(fd: &AsyncFd<OwnedFd>, at: Instant) -> io::Result<()> {
    // Setting the time also clears an expiry a dropped sleep left unread.
    timerfd_settime(
        fd.get_ref(),
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: time_until(at),
        },
    )?;
    loop {
        let mut guard = fd.readable().await?;
        let mut expirations = [0u8; 8];
        let read = rustix::io::read(fd.get_ref(), &mut expirations);
        // Read or not, the descriptor has nothing more to read until it expires again:
        // the next sleep then waits on the reactor without a read that fails first.
        guard.clear_ready();
        match read {
            Ok(_) => return Ok(()),
            // Readiness left from an earlier arming: not expired yet.
            Err(rustix::io::Errno::AGAIN) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The time from now until `at` (a relative expiry: the monotonic clock is not read
/// here, since reading it through the vDSO fails under valgrind), never zero: a zero
/// time would disarm the descriptor instead of firing it.
fn time_until(at: Instant) -> Timespec {
    let ahead = at
        .saturating_duration_since(Instant::now())
        .max(Duration::from_nanos(1));
    Timespec {
        tv_sec: i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: ahead.subsec_nanos().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_sleeps_until_the_instant_on_a_descriptor() {
        let mut timer = TickTimer::new();
        assert!(timer.on_descriptor());
        for ms in [30u64, 5, 60] {
            let start = Instant::now();
            let at = start + Duration::from_millis(ms);
            timer.sleep_until(at).await;
            assert!(Instant::now() >= at, "returned before {ms} ms");
        }
        // An instant already past returns at once.
        let start = Instant::now();
        timer
            .sleep_until(start.checked_sub(Duration::from_secs(1)).unwrap_or(start))
            .await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(timer.on_descriptor());
    }

    #[tokio::test]
    async fn a_dropped_sleep_does_not_end_the_next_one_early() {
        let mut timer = TickTimer::new();
        // Armed for 20 ms, dropped after 5 ms: the expiry at 20 ms is never read.
        let _ = tokio::time::timeout(
            Duration::from_millis(5),
            timer.sleep_until(Instant::now() + Duration::from_millis(20)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
        let start = Instant::now();
        let at = start + Duration::from_millis(80);
        timer.sleep_until(at).await;
        assert!(Instant::now() >= at, "the old expiry ended the new sleep");
    }

    #[tokio::test]
    async fn tokio_s_timer_sleeps_as_long() {
        let mut timer = TickTimer::tokio();
        assert!(!timer.on_descriptor());
        let at = Instant::now() + Duration::from_millis(20);
        timer.sleep_until(at).await;
        assert!(Instant::now() >= at);
    }

    #[test]
    fn the_time_until_an_instant_is_never_zero() {
        let past = time_until(Instant::now() - Duration::from_secs(1));
        assert_eq!((past.tv_sec, past.tv_nsec), (0, 1));
        let later = time_until(Instant::now() + Duration::from_millis(10_250));
        let secs = later.tv_sec as f64 + later.tv_nsec as f64 / 1e9;
        assert!((10.2..=10.25).contains(&secs), "{secs}");
    }
}
