//! Gives the C heap's free pages back to the kernel once resident anonymous memory has
//! grown: after a burst of large responses (200 clients reading `/api/v1.0/stats/`)
//! malloc keeps the freed buffers resident for good, ~5 MiB on the lab. Every
//! [`CHECK_EVERY`] the agent reads its `RssAnon` (one small `/proc` read) and trims when
//! it is [`GROWTH_KIB`] above the lowest level a trim left within the last [`WINDOW`]:
//! a trim made in the middle of a burst (its buffers still in use) does not hide the
//! memory the burst leaves behind. Memory really in use (a fuller history, more
//! domains) only makes the trims of one window find little to release, at the cost of
//! a walk over malloc's arenas every [`CHECK_EVERY`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How often resident anonymous memory is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Growth over the lowest recent level that triggers a trim.
pub const GROWTH_KIB: u64 = 2 * 1024;

/// How long a level a trim left counts as the floor.
pub const WINDOW: Duration = Duration::from_secs(300);

/// When to trim, given successive `RssAnon` readings (KiB).
#[derive(Debug, Default)]
pub struct TrimPolicy {
    /// Levels left by trims (the first reading counts as one), oldest first.
    levels: VecDeque<(Instant, u64)>,
}

impl TrimPolicy {
    /// Whether a trim is due at this reading; the first reading only sets the level.
    pub fn due(&mut self, now: Instant, rss_anon_kib: u64) -> bool {
        // The newest level always stays, whatever its age.
        while self.levels.len() > 1
            && self
                .levels
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.levels.pop_front();
        }
        match self.levels.iter().map(|(_, kib)| *kib).min() {
            None => {
                self.levels.push_back((now, rss_anon_kib));
                false
            }
            Some(floor) => rss_anon_kib >= floor + GROWTH_KIB,
        }
    }

    /// Notes the level a trim left.
    pub fn trimmed(&mut self, now: Instant, rss_anon_kib: u64) {
        self.levels.push_back((now, rss_anon_kib));
    }
}

/// `RssAnon` (KiB) from a `/proc/<pid>/status` text.
pub fn rss_anon_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn read_rss_anon() -> Option<u64> {
    rss_anon_kib(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Runs until `shutdown`; stops quietly where `/proc/self/status` has no `RssAnon`.
pub async fn run(shutdown: CancellationToken) {
    let mut policy = TrimPolicy::default();
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(before) = read_rss_anon() else {
            debug!("no RssAnon in /proc/self/status: free heap pages are not trimmed");
            return;
        };
        if !policy.due(Instant::now(), before) {
            continue;
        }
        let released = tokio::task::spawn_blocking(vadvisor_libvirt::ffi::release_free_heap)
            .await
            .unwrap_or(false);
        let after = read_rss_anon().unwrap_or(before);
        policy.trimmed(Instant::now(), after);
        debug!(
            before_kib = before,
            after_kib = after,
            released,
            "returned free heap pages to the kernel"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_after_growth_over_the_lowest_recent_level() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = TrimPolicy::default();
        assert!(!p.due(at(0), 6000), "the first reading only sets the level");
        assert!(!p.due(at(10), 6000 + GROWTH_KIB - 1));
        // A burst: trimmed while its buffers are still in use (little released).
        assert!(p.due(at(20), 11_000));
        p.trimmed(at(20), 10_500);
        // After the burst its freed buffers stay resident: still 2 MiB over the
        // level before the burst, so trimmed again.
        assert!(p.due(at(30), 12_000));
        p.trimmed(at(30), 7000);
        assert!(!p.due(at(40), 7500));
        // Memory really in use: trims find little, and once the window has passed
        // the low levels no longer count.
        assert!(p.due(at(100), 9000));
        p.trimmed(at(100), 8900);
        assert!(
            p.due(at(110), 8950),
            "6000 and 7000 are still within the window"
        );
        p.trimmed(at(110), 8950);
        assert!(
            !p.due(at(20 + 300 + 31 + 10), 9000),
            "only 8900 and 8950 count now"
        );
        assert!(p.due(at(20 + 300 + 31 + 10), 8900 + GROWTH_KIB));
    }

    #[test]
    fn the_newest_level_stays_whatever_its_age() {
        let t0 = Instant::now();
        let mut p = TrimPolicy::default();
        assert!(!p.due(t0, 5000));
        let later = t0 + WINDOW * 10;
        assert!(!p.due(later, 5000 + GROWTH_KIB - 1));
        assert!(p.due(later, 5000 + GROWTH_KIB));
    }

    #[test]
    fn reads_rss_anon_from_proc_status() {
        let status =
            "Name:\tvadvisor\nVmRSS:\t  31636 kB\nRssAnon:\t    7788 kB\nRssFile:\t   23848 kB\n";
        assert_eq!(rss_anon_kib(status), Some(7788));
        assert_eq!(rss_anon_kib("Name:\tx\n"), None);
        assert_eq!(rss_anon_kib("RssAnon:\tlots kB\n"), None);
        assert!(
            read_rss_anon().is_some_and(|kib| kib > 0),
            "this process's own"
        );
    }
}
