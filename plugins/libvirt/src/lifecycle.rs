//! Lifecycle events: the [`EventHub`] that turns libvirt's callbacks into
//! [`LifecycleEvent`]s on a broadcast channel, and the reconciliation that replaces the
//! events lost while the connection was down.
//!
//! The hub keeps a snapshot of every defined domain (uuid → name, state, active),
//! seeded by a listing on each (re)connect and kept current by the events as they
//! arrive. On every (re)connect the supervisor:
//!
//! 1. calls [`EventHub::begin`] (live events of the new connection are now held back),
//! 2. registers the lifecycle callback on the new connection,
//! 3. lists the domains and calls [`EventHub::finish`], which emits the difference
//!    between the old snapshot and the listing as `reconciled: true` events (none on the
//!    first connect: there is no old snapshot), adopts the listing, then releases the
//!    held live events in order.
//!
//! So nothing that happens between the registration and the listing is lost, and a
//! subscriber never sees a reconciled event that predates a live one it already got:
//! the state a subscriber derives from the stream ends where libvirt is.
//!
//! The callback side ([`EventHub::deliver`]) runs on libvirt's event-loop thread and
//! never blocks: a short mutex and `broadcast::Sender::send`, which never waits (a
//! lagging receiver loses the oldest events and is told so by `RecvError::Lagged`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;
use tracing::warn;
use vadvisor_api::{DomainEntry, DomainRef, DomainState, LifecycleEvent};

use crate::ffi::RawLifecycle;

/// `virDomainEventType` codes.
pub(crate) mod code {
    pub const DEFINED: u32 = 0;
    pub const UNDEFINED: u32 = 1;
    pub const STARTED: u32 = 2;
    pub const SUSPENDED: u32 = 3;
    pub const RESUMED: u32 = 4;
    pub const STOPPED: u32 = 5;
    pub const SHUTDOWN: u32 = 6;
    pub const PMSUSPENDED: u32 = 7;
    pub const CRASHED: u32 = 8;

    /// `VIR_DOMAIN_EVENT_UNDEFINED_RENAMED`.
    pub const UNDEFINED_RENAMED: u32 = 1;
    /// `VIR_DOMAIN_EVENT_DEFINED_RENAMED`.
    pub const DEFINED_RENAMED: u32 = 2;
    /// `VIR_DOMAIN_EVENT_STARTED_WAKEUP`.
    pub const STARTED_WAKEUP: u32 = 4;
}

/// `virDomainState` codes used here.
const STATE_RUNNING: u32 = 1;
const STATE_PAUSED: u32 = 3;
const STATE_SHUTOFF: u32 = 5;
const STATE_CRASHED: u32 = 6;
const STATE_PMSUSPENDED: u32 = 7;

/// Capacity of the broadcast channel (events a receiver may lag behind).
pub(crate) const CHANNEL_CAPACITY: usize = 1024;
/// Live events held back during one reconciliation, at most (a listing takes
/// milliseconds; this only bounds memory if it hangs until its deadline).
const MAX_HELD: usize = 4096;

/// What the snapshot knows about one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Known {
    pub name: Arc<str>,
    pub state: DomainState,
    pub active: bool,
}

/// Every defined domain by UUID.
pub(crate) type Snapshot = BTreeMap<Arc<str>, Known>;

pub(crate) fn snapshot_of(entries: &[DomainEntry]) -> Snapshot {
    entries
        .iter()
        .map(|e| {
            (
                Arc::clone(&e.domain.uuid),
                Known {
                    name: Arc::clone(&e.domain.name),
                    state: e.state,
                    active: e.active,
                },
            )
        })
        .collect()
}

/// What a domain is doing, as far as lifecycle events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Inactive,
    /// Running, blocked, or shutting down.
    Running,
    Paused,
    PmSuspended,
    Crashed,
}

fn phase(k: &Known) -> Phase {
    if !k.active {
        return Phase::Inactive;
    }
    match k.state.state {
        STATE_PAUSED => Phase::Paused,
        STATE_PMSUSPENDED => Phase::PmSuspended,
        STATE_CRASHED => Phase::Crashed,
        _ => Phase::Running,
    }
}

/// The `Stopped` detail for a shut-off domain's reason: shutdown → 0, destroyed → 1,
/// crashed → 2, migrated → 3, saved → 4, failed → 5, from snapshot → 6; else 0.
pub(crate) fn stopped_detail(state: DomainState) -> u32 {
    if state.state == STATE_SHUTOFF && (1..=7).contains(&state.reason) {
        state.reason - 1
    } else {
        0
    }
}

/// One synthetic event: (domain, event, detail).
pub(crate) type Change = (DomainRef, u32, u32);

/// The events that take a domain from phase `from` to phase `to`, the way libvirt
/// would have reported them.
fn transition(from: Phase, to: Phase, after: DomainState) -> Vec<(u32, u32)> {
    use code::*;
    let entering = |p: Phase| match p {
        Phase::Paused => vec![(SUSPENDED, 0)],
        Phase::PmSuspended => vec![(PMSUSPENDED, 0)],
        Phase::Crashed => vec![(CRASHED, 0)],
        Phase::Running | Phase::Inactive => vec![],
    };
    match (from, to) {
        _ if from == to => vec![],
        (_, Phase::Inactive) => vec![(STOPPED, stopped_detail(after))],
        (Phase::Inactive, _) => {
            let mut out = vec![(STARTED, 0)];
            out.extend(entering(to));
            out
        }
        (Phase::PmSuspended, Phase::Running) => vec![(STARTED, STARTED_WAKEUP)],
        (_, Phase::Running) => vec![(RESUMED, 0)],
        (_, _) => entering(to),
    }
}

/// The synthetic events that take the `before` snapshot to `after`, in UUID order:
///
/// - new domain → `Defined` (0, 0 "Added"), then `Started` (2, 0) if it runs (and
///   `Suspended` if it is paused);
/// - gone → `Stopped` (5, 0) if it was active, then `Undefined` (1, 0);
/// - renamed → `Undefined` (1, 1 "Renamed") with the old name, `Defined` (0, 2
///   "Renamed") with the new one;
/// - inactive → active: `Started` (2, 0) (plus `Suspended` (3, 0) if paused);
/// - active → inactive: `Stopped` (5, detail from the shut-off reason);
/// - running → paused: `Suspended` (3, 0); paused → running: `Resumed` (4, 0);
///   → pmsuspended: `PMSuspended` (7, 0) and back: `Started` (2, 4 "Wakeup");
///   → crashed: `Crashed` (8, 0).
///
/// Applying these events to `before` (see [`apply`]) gives `after`'s domains, names and
/// phases.
pub(crate) fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Change> {
    use code::*;
    let uuids: BTreeSet<&Arc<str>> = before.keys().chain(after.keys()).collect();
    let mut out = Vec::new();
    for uuid in uuids {
        let dref = |k: &Known| DomainRef {
            uuid: Arc::clone(uuid),
            name: Arc::clone(&k.name),
        };
        match (before.get(uuid), after.get(uuid)) {
            (None, Some(a)) => {
                out.push((dref(a), DEFINED, 0));
                for (e, d) in transition(Phase::Inactive, phase(a), a.state) {
                    out.push((dref(a), e, d));
                }
            }
            (Some(b), None) => {
                if phase(b) != Phase::Inactive {
                    out.push((dref(b), STOPPED, 0));
                }
                out.push((dref(b), UNDEFINED, 0));
            }
            (Some(b), Some(a)) => {
                if b.name != a.name {
                    out.push((dref(b), UNDEFINED, UNDEFINED_RENAMED));
                    out.push((dref(a), DEFINED, DEFINED_RENAMED));
                }
                for (e, d) in transition(phase(b), phase(a), a.state) {
                    out.push((dref(a), e, d));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Updates the snapshot with one event (libvirt's or a synthetic one). Reasons are
/// approximate; what matters is presence, name, activity and phase.
pub(crate) fn apply(snapshot: &mut Snapshot, domain: &DomainRef, event: u32, detail: u32) {
    use code::*;
    let set = |snapshot: &mut Snapshot, state: u32, reason: u32, active: bool| {
        snapshot.insert(
            Arc::clone(&domain.uuid),
            Known {
                name: Arc::clone(&domain.name),
                state: DomainState::new(state, reason),
                active,
            },
        );
    };
    match event {
        DEFINED => match snapshot.get_mut(&domain.uuid) {
            Some(k) => k.name = Arc::clone(&domain.name),
            None => set(snapshot, STATE_SHUTOFF, 0, false),
        },
        // An active domain that loses its definition keeps running (transient).
        UNDEFINED if snapshot.get(&domain.uuid).is_some_and(|k| !k.active) => {
            snapshot.remove(&domain.uuid);
        }
        STARTED => {
            let reason = match detail {
                0..=3 => detail + 1,
                4 => 8,
                _ => 0,
            };
            set(snapshot, STATE_RUNNING, reason, true);
        }
        SUSPENDED => set(snapshot, STATE_PAUSED, 0, true),
        RESUMED => set(snapshot, STATE_RUNNING, 5, true),
        // A transient domain disappears on stop; we cannot tell it apart here, so it
        // stays as inactive until the next listing. Unknown domains are not added.
        STOPPED if snapshot.contains_key(&domain.uuid) => {
            let reason = if detail <= 6 { detail + 1 } else { 0 };
            set(snapshot, STATE_SHUTOFF, reason, false);
        }
        PMSUSPENDED => set(snapshot, STATE_PMSUSPENDED, 0, true),
        CRASHED => set(snapshot, STATE_CRASHED, 0, true),
        // The guest finished shutting down: STOPPED follows.
        SHUTDOWN => {}
        // The guarded cases above when they do not apply; codes newer than this crate.
        _ => {}
    }
}

#[derive(Default)]
struct HubState {
    /// The connection whose events are accepted; events of older ones are dropped.
    generation: u64,
    /// `Some(token)` while a reconciliation is in flight: live events are held.
    hold: Option<u64>,
    next_token: u64,
    held: VecDeque<LifecycleEvent>,
    /// Held events dropped because the hold lasted too long (logged once per hold).
    overflowed: bool,
    /// The last known domains; `None` until the first successful listing.
    snapshot: Option<Snapshot>,
}

impl HubState {
    fn publish(&mut self, tx: &broadcast::Sender<LifecycleEvent>, event: LifecycleEvent) {
        if let Some(s) = self.snapshot.as_mut() {
            apply(s, &event.domain, event.event, event.detail);
        }
        // Never blocks; Err only means "no receiver right now".
        let _ = tx.send(event);
    }

    fn release_hold(&mut self, tx: &broadcast::Sender<LifecycleEvent>) {
        self.hold = None;
        self.overflowed = false;
        while let Some(e) = self.held.pop_front() {
            self.publish(tx, e);
        }
    }
}

/// The lifecycle event fan-out of one backend (see the module documentation).
pub(crate) struct EventHub {
    tx: broadcast::Sender<LifecycleEvent>,
    state: Mutex<HubState>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            state: Mutex::new(HubState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LifecycleEvent> {
        self.tx.subscribe()
    }

    /// A live event from connection `generation` (libvirt's event-loop thread: must not
    /// block). Codes that do not fit a `u32` (never seen) are dropped.
    pub(crate) fn deliver(&self, generation: u64, raw: RawLifecycle) {
        let (Ok(event), Ok(detail)) = (u32::try_from(raw.event), u32::try_from(raw.detail)) else {
            return;
        };
        let event = LifecycleEvent {
            at: SystemTime::now(),
            domain: DomainRef::new(raw.uuid, raw.name),
            event,
            detail,
            reconciled: false,
        };
        let mut st = self.lock();
        if st.generation != generation {
            return;
        }
        if st.hold.is_some() {
            if st.held.len() >= MAX_HELD {
                st.held.pop_front();
                if !st.overflowed {
                    st.overflowed = true;
                    warn!("too many lifecycle events during a reconciliation: dropping the oldest");
                }
            }
            st.held.push_back(event);
            return;
        }
        st.publish(&self.tx, event);
    }

    /// Starts a reconciliation for connection `generation`: from now on only its events
    /// are accepted, and they are held until [`Self::finish`] or [`Self::abort`] with the
    /// returned token.
    pub(crate) fn begin(&self, generation: u64) -> u64 {
        let mut st = self.lock();
        if st.hold.is_some() {
            st.release_hold(&self.tx);
        }
        st.generation = generation;
        st.next_token += 1;
        let token = st.next_token;
        st.hold = Some(token);
        token
    }

    /// Completes reconciliation `token` with a fresh listing: emits what changed since
    /// the last snapshot as reconciled events (nothing the first time), adopts the
    /// listing, then releases the held live events. `None` if `token` is stale.
    pub(crate) fn finish(&self, token: u64, listing: &[DomainEntry]) -> Option<usize> {
        let mut st = self.lock();
        if st.hold != Some(token) {
            return None;
        }
        let fresh = snapshot_of(listing);
        let mut emitted = 0;
        if let Some(old) = st.snapshot.as_ref() {
            let at = SystemTime::now();
            for (domain, event, detail) in diff(old, &fresh) {
                let _ = self.tx.send(LifecycleEvent {
                    at,
                    domain,
                    event,
                    detail,
                    reconciled: true,
                });
                emitted += 1;
            }
        }
        st.snapshot = Some(fresh);
        st.release_hold(&self.tx);
        Some(emitted)
    }

    /// Gives up reconciliation `token` (the listing failed): releases the held events.
    pub(crate) fn abort(&self, token: u64) {
        let mut st = self.lock();
        if st.hold == Some(token) {
            st.release_hold(&self.tx);
        }
    }

    /// The current snapshot (tests).
    #[cfg(test)]
    fn snapshot(&self) -> Option<Snapshot> {
        self.lock().snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::code::*;
    use super::*;

    fn known(name: &str, state: u32, reason: u32, active: bool) -> Known {
        Known {
            name: name.into(),
            state: DomainState::new(state, reason),
            active,
        }
    }

    fn snap(items: &[(&str, Known)]) -> Snapshot {
        items
            .iter()
            .map(|(u, k)| (Arc::<str>::from(*u), k.clone()))
            .collect()
    }

    fn running(name: &str) -> Known {
        known(name, STATE_RUNNING, 1, true)
    }
    fn paused(name: &str) -> Known {
        known(name, STATE_PAUSED, 1, true)
    }
    fn shutoff(name: &str, reason: u32) -> Known {
        known(name, STATE_SHUTOFF, reason, false)
    }

    /// (uuid, name, event, detail) for readable assertions.
    fn flat(changes: &[Change]) -> Vec<(String, String, u32, u32)> {
        changes
            .iter()
            .map(|(d, e, x)| (d.uuid.to_string(), d.name.to_string(), *e, *x))
            .collect()
    }

    fn one(uuid: &str, name: &str, event: u32, detail: u32) -> (String, String, u32, u32) {
        (uuid.to_string(), name.to_string(), event, detail)
    }

    /// Applying the diff to `before` reaches `after` (names, presence, phases).
    fn assert_replays(before: &Snapshot, after: &Snapshot) {
        let mut s = before.clone();
        for (d, e, x) in diff(before, after) {
            apply(&mut s, &d, e, x);
        }
        let view = |s: &Snapshot| -> Vec<(String, String, Phase)> {
            s.iter()
                .map(|(u, k)| (u.to_string(), k.name.to_string(), phase(k)))
                .collect()
        };
        assert_eq!(view(&s), view(after), "replaying {before:?} -> {after:?}");
    }

    #[test]
    fn every_transition_of_the_brief() {
        let before = snap(&[
            ("u-gone", shutoff("gone", 1)),
            ("u-start", shutoff("start", 1)),
            ("u-pause", running("pause")),
            ("u-resume", paused("resume")),
            ("u-same", running("same")),
            ("u-same-off", shutoff("same-off", 2)),
        ]);
        let after = snap(&[
            ("u-new", shutoff("new", 0)),
            ("u-start", running("start")),
            ("u-pause", paused("pause")),
            ("u-resume", running("resume")),
            ("u-same", running("same")),
            ("u-same-off", shutoff("same-off", 2)),
        ]);
        assert_eq!(
            flat(&diff(&before, &after)),
            vec![
                one("u-gone", "gone", UNDEFINED, 0),
                one("u-new", "new", DEFINED, 0),
                one("u-pause", "pause", SUSPENDED, 0),
                one("u-resume", "resume", RESUMED, 0),
                one("u-start", "start", STARTED, 0),
            ]
        );
        assert_replays(&before, &after);
    }

    #[test]
    fn stopped_detail_follows_the_shutoff_reason() {
        // shutdown, destroyed, crashed, migrated, saved, failed, from snapshot; unknown
        // and daemon give 0.
        for (reason, detail) in [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 3),
            (5, 4),
            (6, 5),
            (7, 6),
            (8, 0),
            (99, 0),
        ] {
            let before = snap(&[("u", running("d"))]);
            let after = snap(&[("u", shutoff("d", reason))]);
            assert_eq!(
                flat(&diff(&before, &after)),
                vec![one("u", "d", STOPPED, detail)],
                "reason {reason}"
            );
            assert_replays(&before, &after);
        }
        // A paused domain that was destroyed.
        let before = snap(&[("u", paused("d"))]);
        let after = snap(&[("u", shutoff("d", 2))]);
        assert_eq!(
            flat(&diff(&before, &after)),
            vec![one("u", "d", STOPPED, 1)]
        );
    }

    #[test]
    fn compound_changes_are_spelled_out() {
        // New and running, new and paused, gone while running, started straight into
        // pause.
        let before = snap(&[
            ("u1", running("was-running")),
            ("u2", paused("was-paused")),
            ("u5", shutoff("off", 1)),
        ]);
        let after = snap(&[
            ("u3", running("new-running")),
            ("u4", paused("new-paused")),
            ("u5", paused("off")),
        ]);
        assert_eq!(
            flat(&diff(&before, &after)),
            vec![
                one("u1", "was-running", STOPPED, 0),
                one("u1", "was-running", UNDEFINED, 0),
                one("u2", "was-paused", STOPPED, 0),
                one("u2", "was-paused", UNDEFINED, 0),
                one("u3", "new-running", DEFINED, 0),
                one("u3", "new-running", STARTED, 0),
                one("u4", "new-paused", DEFINED, 0),
                one("u4", "new-paused", STARTED, 0),
                one("u4", "new-paused", SUSPENDED, 0),
                one("u5", "off", STARTED, 0),
                one("u5", "off", SUSPENDED, 0),
            ]
        );
        assert_replays(&before, &after);
    }

    #[test]
    fn other_phases_and_renames() {
        let pm = known("pm", STATE_PMSUSPENDED, 0, true);
        let crashed = known("c", STATE_CRASHED, 1, true);
        let cases = [
            (running("pm"), pm.clone(), vec![(PMSUSPENDED, 0)]),
            (pm.clone(), running("pm"), vec![(STARTED, STARTED_WAKEUP)]),
            (running("c"), crashed.clone(), vec![(CRASHED, 0)]),
            (crashed, running("c"), vec![(RESUMED, 0)]),
            (paused("pm"), pm, vec![(PMSUSPENDED, 0)]),
            // Blocked (2) and shutting down (4) count as running.
            (known("b", 2, 0, true), running("b"), vec![]),
            (known("b", 4, 1, true), paused("b"), vec![(SUSPENDED, 0)]),
        ];
        for (b, a, expected) in cases {
            let before = snap(&[("u", b.clone())]);
            let after = snap(&[("u", a.clone())]);
            let got: Vec<(u32, u32)> = diff(&before, &after)
                .into_iter()
                .map(|(_, e, d)| (e, d))
                .collect();
            assert_eq!(got, expected, "{b:?} -> {a:?}");
            assert_replays(&before, &after);
        }
        // Renamed while shut off.
        let before = snap(&[("u", shutoff("old", 1))]);
        let after = snap(&[("u", shutoff("new", 1))]);
        assert_eq!(
            flat(&diff(&before, &after)),
            vec![
                one("u", "old", UNDEFINED, UNDEFINED_RENAMED),
                one("u", "new", DEFINED, DEFINED_RENAMED),
            ]
        );
        assert_replays(&before, &after);
        // Nothing changed, nothing emitted; reasons alone do not count.
        let same = snap(&[("u", running("x")), ("v", shutoff("y", 1))]);
        let same2 = snap(&[("u", known("x", 1, 5, true)), ("v", shutoff("y", 1))]);
        assert!(diff(&same, &same2).is_empty());
        assert!(diff(&Snapshot::new(), &Snapshot::new()).is_empty());
    }

    #[test]
    fn events_keep_the_snapshot_current() {
        let mut s = snap(&[("u1", running("one"))]);
        let d1 = DomainRef::new("u1", "one");
        let d2 = DomainRef::new("u2", "two");
        apply(&mut s, &d1, SUSPENDED, 0);
        assert_eq!(phase(&s["u1"]), Phase::Paused);
        apply(&mut s, &d1, RESUMED, 0);
        assert_eq!(phase(&s["u1"]), Phase::Running);
        apply(&mut s, &d1, SHUTDOWN, 1);
        assert_eq!(phase(&s["u1"]), Phase::Running);
        apply(&mut s, &d1, STOPPED, 1);
        assert_eq!(s["u1"].state, DomainState::new(STATE_SHUTOFF, 2));
        assert!(!s["u1"].active);
        apply(&mut s, &d1, UNDEFINED, 0);
        assert!(!s.contains_key("u1"));
        // A stop of a domain nobody knew about adds nothing.
        apply(&mut s, &d1, STOPPED, 0);
        assert!(s.is_empty());
        apply(&mut s, &d2, DEFINED, 0);
        assert_eq!(s["u2"], shutoff("two", 0));
        apply(&mut s, &d2, STARTED, 0);
        assert_eq!(s["u2"], known("two", STATE_RUNNING, 1, true));
        // Undefining a running domain leaves it running (transient).
        apply(&mut s, &d2, UNDEFINED, 0);
        assert!(s["u2"].active);
        apply(&mut s, &d2, PMSUSPENDED, 0);
        assert_eq!(phase(&s["u2"]), Phase::PmSuspended);
        apply(&mut s, &d2, CRASHED, 0);
        assert_eq!(phase(&s["u2"]), Phase::Crashed);
        apply(&mut s, &d2, 42, 0);
        assert_eq!(phase(&s["u2"]), Phase::Crashed);
    }

    fn entry(uuid: &str, name: &str, state: u32, active: bool) -> DomainEntry {
        DomainEntry {
            domain: DomainRef::new(uuid, name),
            state: DomainState::new(state, 1),
            active,
        }
    }

    fn raw(uuid: &str, name: &str, event: i32, detail: i32) -> RawLifecycle {
        RawLifecycle {
            uuid: uuid.into(),
            name: name.into(),
            event,
            detail,
        }
    }

    fn drain(rx: &mut broadcast::Receiver<LifecycleEvent>) -> Vec<(String, u32, u32, bool)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.domain.name.to_string(), e.event, e.detail, e.reconciled));
        }
        out
    }

    #[test]
    fn hub_holds_live_events_until_the_reconciliation_is_done() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();

        // First connect: no diff, the listing becomes the snapshot.
        let t = hub.begin(1);
        hub.deliver(1, raw("u1", "one", 3, 0));
        assert!(drain(&mut rx).is_empty(), "held during the reconciliation");
        let listing = [entry("u1", "one", 1, true), entry("u2", "two", 5, false)];
        assert_eq!(hub.finish(t, &listing), Some(0));
        assert_eq!(drain(&mut rx), [("one".to_string(), 3, 0, false)]);
        // The held event was applied on top of the listing.
        assert_eq!(phase(&hub.snapshot().unwrap()["u1"]), Phase::Paused);

        // Live events flow and update the snapshot.
        hub.deliver(1, raw("u1", "one", 4, 0));
        assert_eq!(drain(&mut rx), [("one".to_string(), 4, 0, false)]);

        // Outage: connection 2 comes up. Events of connection 1 are dropped from now on;
        // connection 2's are held until the diff is out, then follow it.
        let t2 = hub.begin(2);
        hub.deliver(1, raw("u1", "one", 5, 1));
        hub.deliver(2, raw("u2", "two", 2, 0));
        let listing = [entry("u1", "one", 3, true), entry("u2", "two", 5, false)];
        assert_eq!(hub.finish(t2, &listing), Some(1));
        assert_eq!(
            drain(&mut rx),
            [
                ("one".to_string(), 3, 0, true),
                ("two".to_string(), 2, 0, false)
            ]
        );
        let s = hub.snapshot().unwrap();
        assert_eq!(phase(&s["u1"]), Phase::Paused);
        assert_eq!(phase(&s["u2"]), Phase::Running);

        // A stale token does nothing; an aborted reconciliation releases what it held.
        assert_eq!(hub.finish(t2, &[]), None);
        let t3 = hub.begin(3);
        hub.deliver(3, raw("u2", "two", 3, 0));
        hub.abort(t2);
        assert!(drain(&mut rx).is_empty());
        hub.abort(t3);
        assert_eq!(drain(&mut rx), [("two".to_string(), 3, 0, false)]);
        assert_eq!(hub.finish(t3, &[]), None, "aborted: stale");
        // Negative codes (never sent by libvirt) are dropped.
        hub.deliver(3, raw("u2", "two", -1, 0));
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn hub_bounds_what_it_holds() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();
        let t = hub.begin(1);
        for i in 0..(MAX_HELD + 10) {
            hub.deliver(1, raw("u", &format!("d{i}"), 3, 0));
        }
        hub.abort(t);
        // The receiver's own capacity is smaller: it lags, then reads the newest.
        let mut got = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(e) => got.push(e.domain.name.to_string()),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        assert_eq!(got.len(), CHANNEL_CAPACITY);
        assert_eq!(got.last().unwrap(), &format!("d{}", MAX_HELD + 9));
    }
}
