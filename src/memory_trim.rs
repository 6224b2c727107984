//! Keeps the agent's resident set to what it uses. Two kinds of memory stay resident
//! when nothing uses them any more, and each is handed back under the same policy:
//!
//! - **the C heap's free pages** (`RssAnon`): after a burst of large responses (200
//!   clients reading `/api/v1.0/stats/`) malloc keeps the freed buffers resident for
//!   good, ~5 MiB on the lab. Every [`CHECK_EVERY`] the agent reads its `RssAnon` (one
//!   small `/proc` read) and trims when it is [`GROWTH_KIB`] above the lowest level a
//!   trim left within the last [`WINDOW`]: a trim made in the middle of a burst (its
//!   buffers still in use) does not hide the memory the burst leaves behind. Memory
//!   really in use (a fuller history, more domains) only makes the trims of one window
//!   find little to release; [`LITTLE_IN_A_ROW`] such trims in a row make the level
//!   they left the floor, so an agent at rest does not walk malloc's arenas every
//!   [`CHECK_EVERY`] for the rest of the window.
//! - **code and constants run once** (`RssFile`): loading libvirt's client runs the
//!   start-up code of some thirty libraries, and the kernel maps every touched code page
//!   with its cached neighbours: 24 MiB of `RssFile` on the lab, 8.5 MiB once released
//!   (what the ticks and requests run again). Released
//!   (`vadvisor_libvirt::ffi::release_code_pages`) once start-up is over, then whenever
//!   `RssFile` is [`GROWTH_KIB`] above the level the agent settled at after the last
//!   release (a burst of requests, a reconnect): [`CodeReleasePolicy`]. What runs again
//!   is mapped again from the page cache, a minor fault per 64 KiB.
//!
//! Besides the periodic check, one runs [`AFTER_CLIENTS`] after the last HTTP
//! connection has closed, so a burst's memory goes back seconds after it ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use vadvisor_libvirt::tick_timer::TickTimer;

/// How often resident memory is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// How long after the last HTTP connection closed resident memory is read (the
/// closing responses' buffers are freed by then).
pub const AFTER_CLIENTS: Duration = Duration::from_secs(1);

/// Growth over the lowest recent level that triggers a trim.
pub const GROWTH_KIB: u64 = 2 * 1024;

/// How long a level a trim left counts as the floor.
pub const WINDOW: Duration = Duration::from_secs(300);

/// A trim that hands back less than this found the growth in use.
pub const LITTLE_KIB: u64 = 256;

/// After this many trims in a row that each handed back [`LITTLE_KIB`] or less, the
/// growth counts as memory in use (a history filling up after start, more domains):
/// the level they left becomes the floor, so the checks at rest stop trimming (each
/// trim walks malloc's arenas and its few released pages fault back in).
pub const LITTLE_IN_A_ROW: u32 = 3;

/// When to trim, given successive readings of one kind of resident memory (KiB).
#[derive(Debug, Default)]
pub struct TrimPolicy {
    /// Levels left by trims (the first reading counts as one), oldest first.
    levels: VecDeque<(Instant, u64)>,
    /// Trims in a row that handed back little (see [`TrimPolicy::trimmed_from`]).
    little: u32,
}

impl TrimPolicy {
    /// Whether a trim is due at this reading; the first reading only sets the level.
    pub fn due(&mut self, now: Instant, resident_kib: u64) -> bool {
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
                self.levels.push_back((now, resident_kib));
                false
            }
            Some(floor) => resident_kib >= floor + GROWTH_KIB,
        }
    }

    /// Notes the level a trim left.
    pub fn trimmed(&mut self, now: Instant, resident_kib: u64) {
        self.levels.push_back((now, resident_kib));
    }

    /// Notes the level a trim left, from `before_kib`. The [`LITTLE_IN_A_ROW`]-th trim in
    /// a row that handed back [`LITTLE_KIB`] or less makes its level the only one: the
    /// memory is in use, not left over. (One or two such trims may be made in the middle
    /// of a burst of clients, whose buffers are still in use: the level before the burst
    /// still counts then.)
    pub fn trimmed_from(&mut self, now: Instant, before_kib: u64, after_kib: u64) {
        if before_kib.saturating_sub(after_kib) <= LITTLE_KIB {
            self.little += 1;
        } else {
            self.little = 0;
        }
        if self.little >= LITTLE_IN_A_ROW {
            self.little = 0;
            self.levels.clear();
        }
        self.trimmed(now, after_kib);
    }
}

/// When to release code pages, given successive `RssFile` readings (KiB): first once
/// start-up is over ([`CHECK_EVERY`] after start), then when `RssFile` has grown
/// [`GROWTH_KIB`] over the level the reading after the last release found. Not the
/// level right after a release: the ticks map their code again within a second, and
/// measured from there every check would release (and fault back) the same pages.
#[derive(Debug, Default)]
pub struct CodeReleasePolicy {
    levels: TrimPolicy,
    released: bool,
    /// The next reading is the level a release settles at.
    settling: bool,
}

impl CodeReleasePolicy {
    /// Whether a release is due at this reading, `since_start` after the agent started.
    pub fn due(&mut self, now: Instant, since_start: Duration, rss_file_kib: u64) -> bool {
        if !self.released {
            return since_start >= CHECK_EVERY;
        }
        if self.settling {
            self.settling = false;
            self.levels.trimmed(now, rss_file_kib);
            return false;
        }
        self.levels.due(now, rss_file_kib)
    }

    /// Notes a release.
    pub fn released(&mut self) {
        self.released = true;
        self.settling = true;
    }
}

/// A `/proc/<pid>/status` line's value in KiB (`field` with its colon: `"RssAnon:"`).
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// This process's resident memory: (anonymous, file-backed) KiB. Read into a buffer
/// large enough for the whole file (~1.4 KiB), so it takes one `read` rather than the
/// eight of a buffer grown from 32 bytes.
fn read_resident() -> Option<(u64, u64)> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(4096);
    std::fs::File::open("/proc/self/status")
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .ok()?;
    let status = String::from_utf8(bytes).ok()?;
    Some((
        status_kib(&status, "RssAnon:")?,
        status_kib(&status, "RssFile:")?,
    ))
}

/// Runs until `shutdown`; stops quietly where `/proc/self/status` has no `RssAnon`.
/// Besides every [`CHECK_EVERY`], checks [`AFTER_CLIENTS`] after `all_closed` says the
/// last HTTP connection closed, so what a burst of clients leaves is handed back then.
pub async fn run(all_closed: Arc<Notify>, shutdown: CancellationToken) {
    let mut heap = TrimPolicy::default();
    let mut code = CodeReleasePolicy::default();
    let start = Instant::now();
    // On a timer descriptor: tokio's wheel would wake the HTTP runtime two or three
    // times on the way to each 10 s deadline (see `tick_timer`).
    let mut timer = TickTimer::new();
    let mut next = start;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.sleep_until(next) => next = Instant::now() + CHECK_EVERY,
            _ = all_closed.notified() => tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(AFTER_CLIENTS) => {}
            },
        }
        let Some((anon, file)) = read_resident() else {
            debug!("no RssAnon/RssFile in /proc/self/status: resident memory is not trimmed");
            return;
        };
        if heap.due(Instant::now(), anon) {
            let released = tokio::task::spawn_blocking(vadvisor_libvirt::ffi::release_free_heap)
                .await
                .unwrap_or(false);
            let after = read_resident().map_or(anon, |(a, _)| a);
            heap.trimmed_from(Instant::now(), anon, after);
            debug!(
                before_kib = anon,
                after_kib = after,
                released,
                "returned free heap pages to the kernel"
            );
        }
        if code.due(Instant::now(), start.elapsed(), file) {
            code.released();
            let done = tokio::task::spawn_blocking(vadvisor_libvirt::ffi::release_code_pages)
                .await
                .unwrap_or_default();
            let after = read_resident().map_or(file, |(_, f)| f);
            debug!(
                before_kib = file,
                after_kib = after,
                segments = done.segments,
                "released the page-table entries of read-only segments"
            );
        }
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
    fn trims_that_hand_back_little_three_times_in_a_row_raise_the_floor() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = TrimPolicy::default();
        // Start-up: the history fills, and every check finds it over the first level.
        assert!(!p.due(at(10), 3000));
        assert!(p.due(at(20), 5200));
        p.trimmed_from(at(20), 5200, 5150);
        assert!(p.due(at(30), 5600));
        // One trim that hands back much in between starts the count again.
        p.trimmed_from(at(30), 5600, 5000);
        assert!(p.due(at(40), 5800));
        p.trimmed_from(at(40), 5800, 5790);
        assert!(p.due(at(50), 6000));
        p.trimmed_from(at(50), 6000, 5990);
        assert!(p.due(at(60), 6100), "two in a row: 3000 is still the floor");
        p.trimmed_from(at(60), 6100, 6100 - LITTLE_KIB);
        // The third in a row: the memory is in use; its level is the floor now.
        assert!(!p.due(at(70), 6200));
        assert!(!p.due(at(80), 6100 - LITTLE_KIB + GROWTH_KIB - 1));
        assert!(p.due(at(90), 6100 - LITTLE_KIB + GROWTH_KIB));
    }

    #[test]
    fn code_is_released_after_start_up_then_on_growth_over_the_settled_level() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = CodeReleasePolicy::default();
        assert!(
            !p.due(at(0), Duration::ZERO, 24_000),
            "start-up is not over"
        );
        assert!(p.due(at(10), CHECK_EVERY, 24_000));
        p.released();
        // The ticks map their code again: that level is the floor, not a reason to
        // release again.
        assert!(!p.due(at(20), CHECK_EVERY * 2, 9_000));
        assert!(!p.due(at(30), CHECK_EVERY * 3, 9_000 + GROWTH_KIB - 1));
        assert!(p.due(at(40), CHECK_EVERY * 4, 9_000 + GROWTH_KIB));
        p.released();
        assert!(!p.due(at(50), CHECK_EVERY * 5, 12_000), "settling again");
        assert!(!p.due(at(60), CHECK_EVERY * 6, 9_500), "9000 is the floor");
        assert!(p.due(at(70), CHECK_EVERY * 7, 9_000 + GROWTH_KIB));
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
    fn reads_resident_memory_from_proc_status() {
        let status =
            "Name:\tvadvisor\nVmRSS:\t  31636 kB\nRssAnon:\t    7788 kB\nRssFile:\t   23848 kB\n";
        assert_eq!(status_kib(status, "RssAnon:"), Some(7788));
        assert_eq!(status_kib(status, "RssFile:"), Some(23848));
        assert_eq!(status_kib("Name:\tx\n", "RssAnon:"), None);
        assert_eq!(status_kib("RssAnon:\tlots kB\n", "RssAnon:"), None);
        assert!(
            read_resident().is_some_and(|(anon, file)| anon > 0 && file > 0),
            "this process's own"
        );
    }
}
