//! The HTTP server's open connections and their limits: at most `max_connections` at
//! once (a new connection beyond it sheds the oldest idle one, or is refused when every
//! connection is busy), a header-read timeout (a connection that has not sent a full
//! request header within it, from its first byte or from its accept, is closed) and an
//! idle keep-alive timeout. Shedding picks connections that never completed a request
//! (slow or silent clients) before idle keep-alive ones that did (real clients). A connection is busy while a request is in flight (its
//! response body included) and idle otherwise. Hitting a limit is counted in
//! [`Health`] and logged once per episode. The reaper that enforces the timeouts sleeps
//! while there is no connection and no episode to end, so an idle agent does not wake
//! up for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vadvisor_api::Health;

/// `limit` label values of `vadvisor_http_limit_hits_total`.
pub const SHED: &str = "connections_shed";
pub const REFUSED: &str = "connections_refused";
pub const HEADER_TIMEOUT: &str = "header_timeout";
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// An episode ends when its limit was not hit for this long; the next hit logs again.
const EPISODE_QUIET: Duration = Duration::from_secs(30);
const NONE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    base: Instant,
    accepted_ms: u64,
    in_flight: AtomicUsize,
    started: AtomicU64,
    served: AtomicU64,
    idle_since_ms: AtomicU64,
    /// First byte received while idle ([`NONE`]: nothing yet).
    first_byte_ms: AtomicU64,
    close: CancellationToken,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Bytes arrived from the client.
    pub fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte_ms.load(Ordering::Relaxed) == NONE
        {
            self.first_byte_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A request was parsed; the connection is busy until the guard is dropped (after
    /// its response body ended).
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.first_byte_ms.store(NONE, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Requests handed to the router so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Cancelled when the connection must be dropped (shed or timed out).
    pub fn closed(&self) -> &CancellationToken {
        &self.close
    }

    /// When this idle connection expires, and which limit that is.
    fn deadline(&self, limits: &Limits) -> Option<(u64, &'static str)> {
        if self.busy() || self.close.is_cancelled() {
            return None;
        }
        let header = limits.header_timeout.as_millis() as u64;
        let first = self.first_byte_ms.load(Ordering::Relaxed);
        if first != NONE {
            return Some((first + header, HEADER_TIMEOUT));
        }
        if self.served.load(Ordering::Relaxed) == 0 {
            return Some((self.accepted_ms + header, HEADER_TIMEOUT));
        }
        let idle = self.idle_since_ms.load(Ordering::Relaxed);
        Some((idle + limits.idle_timeout.as_millis() as u64, IDLE_TIMEOUT))
    }
}

/// Marks the end of one request (its response body was sent or dropped).
pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since_ms.store(c.now_ms(), Ordering::Relaxed);
        c.served.fetch_add(1, Ordering::Relaxed);
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs once when a limit starts being hit and once when it stopped.
#[derive(Debug, Default)]
struct Episode {
    since_log: u64,
    last_hit: Option<Instant>,
}

/// Every open connection of one server.
pub struct Tracker {
    limits: Limits,
    base: Instant,
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    health: Arc<Health>,
    episodes: Mutex<BTreeMap<&'static str, Episode>>,
    /// Signalled on every admitted connection, to wake a sleeping reaper.
    admitted: tokio::sync::Notify,
    /// Signalled when the last open connection closes (the end of a burst of clients).
    all_closed: Arc<tokio::sync::Notify>,
}

/// Keeps a connection registered; dropping it unregisters the connection.
pub struct Admitted {
    tracker: Arc<Tracker>,
    pub conn: Arc<Conn>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let n = {
            let mut conns = self.tracker.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.remove(&self.conn.id);
            conns.len()
        };
        self.tracker.health.set_http_connections(n as u64);
        if n == 0 {
            self.tracker.all_closed.notify_one();
        }
    }
}

impl Tracker {
    pub fn new(limits: Limits, health: Arc<Health>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(BTreeMap::new()),
            health,
            episodes: Mutex::new(BTreeMap::new()),
            admitted: tokio::sync::Notify::new(),
            all_closed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Notified (one stored permit, so never missed) each time the last open
    /// connection closes.
    pub fn all_closed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.all_closed)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn hit(&self, limit: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        self.health.record_limit_hit(limit, n);
        let mut episodes = self.episodes.lock().unwrap_or_else(|e| e.into_inner());
        let e = episodes.entry(limit).or_default();
        if e.last_hit.is_none() {
            let l = &self.limits;
            match limit {
                SHED | REFUSED => tracing::warn!(
                    max_connections = l.max_connections,
                    "HTTP connection limit reached: shedding the oldest idle connections, refusing new ones while all are busy"
                ),
                HEADER_TIMEOUT => tracing::warn!(
                    header_timeout = ?l.header_timeout,
                    "closing HTTP connections that sent no complete request header in time"
                ),
                _ => tracing::debug!(idle_timeout = ?l.idle_timeout, "closing idle keep-alive connections"),
            }
        }
        e.last_hit = Some(Instant::now());
        e.since_log += n;
    }

    /// Ends the episodes whose limit was not hit lately, logging how often it was hit.
    fn end_quiet_episodes(&self) {
        let mut episodes = self.episodes.lock().unwrap_or_else(|e| e.into_inner());
        for (limit, e) in episodes.iter_mut() {
            if e.last_hit.is_some_and(|t| t.elapsed() >= EPISODE_QUIET) {
                if *limit != IDLE_TIMEOUT {
                    tracing::info!(
                        limit = *limit,
                        connections = e.since_log,
                        "HTTP limit no longer hit"
                    );
                }
                *e = Episode::default();
            }
        }
    }

    /// Registers a new connection. At the limit the oldest idle connection is shed to
    /// make room; when every connection is busy, `None` (refuse the new one).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut shed = 0;
        // Connections already told to close still count until their task ends, so shed
        // as many as needed for the live ones to fit.
        let live = conns.values().filter(|c| !c.close.is_cancelled()).count();
        if live >= self.limits.max_connections {
            // The oldest connection that never completed a request (a slow or silent
            // client), else the oldest idle keep-alive one.
            let idle = |c: &&Arc<Conn>| !c.busy() && !c.close.is_cancelled();
            let victim = conns
                .values()
                .filter(idle)
                .find(|c| c.served.load(Ordering::Relaxed) == 0)
                .or_else(|| conns.values().find(idle))
                .cloned();
            match victim {
                Some(v) => {
                    v.close.cancel();
                    shed = 1;
                }
                None => {
                    drop(conns);
                    self.hit(REFUSED, 1);
                    return None;
                }
            }
        }
        let base = self.base;
        let now = base.elapsed().as_millis() as u64;
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            base,
            accepted_ms: now,
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            served: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(now),
            first_byte_ms: AtomicU64::new(NONE),
            close: CancellationToken::new(),
        });
        conns.insert(conn.id, conn.clone());
        let n = conns.len();
        drop(conns);
        // Stores a permit when the reaper is not waiting yet, so no wake-up is lost.
        self.admitted.notify_one();
        self.health.set_http_connections(n as u64);
        self.hit(SHED, shed);
        Some(Admitted {
            tracker: self.clone(),
            conn,
        })
    }

    /// Closes every idle connection past its deadline.
    pub fn reap(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        let (mut header, mut idle) = (0, 0);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if let Some((deadline, limit)) = c.deadline(&self.limits) {
                if now >= deadline {
                    c.close.cancel();
                    if limit == HEADER_TIMEOUT {
                        header += 1;
                    } else {
                        idle += 1;
                    }
                }
            }
        }
        self.hit(HEADER_TIMEOUT, header);
        self.hit(IDLE_TIMEOUT, idle);
        self.end_quiet_episodes();
    }

    /// Nothing for the reaper to do: no open connection and no episode to end.
    fn is_quiet(&self) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            && self
                .episodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .all(|e| e.last_hit.is_none())
    }

    /// Reaps every 100 ms until `shutdown`, sleeping while [`Tracker::is_quiet`].
    pub fn spawn_reaper(self: &Arc<Self>, shutdown: CancellationToken) {
        let tracker = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if tracker.is_quiet() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tracker.admitted.notified() => tick.reset(),
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => tracker.reap(),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize) -> Arc<Tracker> {
        Tracker::new(
            Limits {
                header_timeout: Duration::from_millis(200),
                idle_timeout: Duration::from_millis(400),
                max_connections: max,
            },
            Health::new(),
        )
    }

    #[test]
    fn sheds_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let t = tracker(2);
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let _busy_b = b.conn.request_started();
        let c = t.admit().expect("a is idle: shed");
        assert!(a.conn.closed().is_cancelled());
        assert!(!b.conn.closed().is_cancelled());
        drop(a);
        let _busy_c = c.conn.request_started();
        assert!(t.admit().is_none(), "every connection is busy");
        assert_eq!(t.open(), 2);
        let hits = t.health.limit_hits();
        assert_eq!((hits[SHED], hits[REFUSED]), (1, 1));
    }

    #[tokio::test]
    async fn the_last_connection_closing_is_signalled_once() {
        let t = tracker(10);
        let all_closed = t.all_closed();
        let pending = |n: &Arc<tokio::sync::Notify>| {
            let n = Arc::clone(n);
            async move {
                tokio::time::timeout(Duration::from_millis(50), n.notified())
                    .await
                    .is_err()
            }
        };
        let (a, b) = (t.admit().unwrap(), t.admit().unwrap());
        drop(a);
        assert!(pending(&all_closed).await, "b is still open");
        drop(b);
        assert!(!pending(&all_closed).await, "the last one closed");
        assert!(pending(&all_closed).await, "signalled once");
    }

    #[test]
    fn connections_that_never_completed_a_request_are_shed_first() {
        let t = tracker(2);
        let client = t.admit().unwrap();
        drop(client.conn.request_started());
        let slow = t.admit().unwrap();
        let _new = t.admit().unwrap();
        assert!(slow.conn.closed().is_cancelled());
        assert!(
            !client.conn.closed().is_cancelled(),
            "a real client is kept"
        );
    }

    #[test]
    fn the_reaper_has_work_only_with_connections_or_an_open_episode() {
        let t = tracker(10);
        assert!(t.is_quiet());
        let a = t.admit().unwrap();
        assert!(!t.is_quiet());
        std::thread::sleep(Duration::from_millis(250));
        t.reap();
        assert!(a.conn.closed().is_cancelled());
        drop(a);
        assert!(!t.is_quiet(), "the header-timeout episode is still open");
        t.episodes
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|e| *e = Episode::default());
        assert!(t.is_quiet());
    }

    #[tokio::test]
    async fn a_sleeping_reaper_wakes_for_a_new_connection() {
        let t = tracker(10);
        let stop = CancellationToken::new();
        t.spawn_reaper(stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = t.admit().unwrap();
        // Past the header timeout (200 ms): the reaper closes the silent connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(c.conn.closed().is_cancelled());
        stop.cancel();
    }

    #[test]
    fn header_and_idle_timeouts() {
        // Timeouts ten times those of `tracker` so that every check has 500 ms of margin
        // against a late wake-up on a loaded machine.
        let t = Tracker::new(
            Limits {
                header_timeout: Duration::from_millis(2000),
                idle_timeout: Duration::from_millis(4000),
                max_connections: 10,
            },
            Health::new(),
        );
        let silent = t.admit().unwrap();
        let partial = t.admit().unwrap();
        let keepalive = t.admit().unwrap();
        drop(keepalive.conn.request_started());
        let busy = t.admit().unwrap();
        let _g = busy.conn.request_started();
        std::thread::sleep(Duration::from_millis(1000));
        partial.conn.bytes_read();
        std::thread::sleep(Duration::from_millis(1500));
        t.reap();
        assert!(
            silent.conn.closed().is_cancelled(),
            "no header since accept"
        );
        assert!(
            !partial.conn.closed().is_cancelled(),
            "header clock runs from its first byte"
        );
        std::thread::sleep(Duration::from_millis(1000));
        t.reap();
        assert!(partial.conn.closed().is_cancelled());
        assert!(
            !keepalive.conn.closed().is_cancelled(),
            "idle timeout is longer"
        );
        std::thread::sleep(Duration::from_millis(2000));
        t.reap();
        assert!(keepalive.conn.closed().is_cancelled());
        assert!(
            !busy.conn.closed().is_cancelled(),
            "a busy connection never times out here"
        );
        let hits = t.health.limit_hits();
        assert_eq!((hits[HEADER_TIMEOUT], hits[IDLE_TIMEOUT]), (2, 1));
    }
}
