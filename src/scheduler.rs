//! The scheduler: one loop for every polled collector. Each collector's runs sit on its
//! own grid (start + k × interval); a tick runs every collector due at that moment
//! together — whatever their intervals — so they share one bulk libvirt call (for the
//! union of their groups) through a common [`CollectContext`], with a deadline per run.
//! A tick that overruns skips the missed moments and the next one lands on the grid of
//! the intervals' greatest common divisor, so collectors due meanwhile still run
//! together. Each tick records run health, then publishes a [`Batch`] per collector.
//! The same machinery backs [`LiveCollector`], a fresh collection on request shared by
//! concurrent callers; both fetch statistics through one [`BulkCalls`], so a live
//! collection and a tick never run two bulk calls at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vadvisor_api::{
    async_trait, Batch, Bus, CollectContext, Collector, DomainState, DomainStats, Health,
    Hypervisor, HypervisorError, LiveCollect, MetricDesc, Record, StatsGroups,
};

use crate::bulk::BulkCalls;
use crate::deadline_join::join_with_deadlines;
use vadvisor_libvirt::tick_timer::TickTimer;

/// A polled collector instance as the scheduler runs it.
#[derive(Clone)]
pub struct PolledInstance {
    pub id: Arc<str>,
    pub collector: Arc<dyn Collector>,
    pub metrics: Arc<[MetricDesc]>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Outcome of one collector run in a tick.
struct RunOutcome {
    id: Arc<str>,
    batch: Option<Arc<Batch>>,
    error: Option<String>,
    took: Duration,
    domain_errors: Vec<(Arc<str>, String)>,
}

/// What one tick produced: each collector's outcome, and the problems the shared
/// statistics call reported per domain (recorded once, not once per collector).
struct Tick {
    outcomes: Vec<RunOutcome>,
    stats_errors: Vec<(vadvisor_api::DomainRef, Vec<String>)>,
    at: std::time::SystemTime,
}

/// Each domain's state in the tick's shared statistics, looked up once per tick rather
/// than once per collector and domain (collectors list their domains in the order of the
/// statistics, so the same position is tried first).
struct TickStates<'a> {
    states: Vec<(&'a str, Option<DomainState>)>,
}

impl<'a> TickStates<'a> {
    fn of(stats: Option<&'a Result<Arc<[DomainStats]>, HypervisorError>>) -> Self {
        let states = match stats {
            Some(Ok(stats)) => stats.iter().map(|s| (&*s.domain.uuid, s.state())).collect(),
            _ => Vec::new(),
        };
        Self { states }
    }

    /// The state of the domain `uuid`, listed `position`th by its collector.
    fn of_domain(&self, position: usize, uuid: &str) -> Option<DomainState> {
        match self.states.get(position) {
            Some((u, state)) if *u == uuid => *state,
            _ => self
                .states
                .iter()
                .find(|(u, _)| *u == uuid)
                .and_then(|(_, state)| *state),
        }
    }
}

/// Runs `instances` once, sharing one statistics call.
async fn run_tick(bulk: &Arc<BulkCalls>, instances: &[PolledInstance]) -> Tick {
    let groups = instances
        .iter()
        .fold(StatsGroups::NONE, |g, i| g | i.collector.stats_groups());
    let longest = instances
        .iter()
        .map(|i| i.timeout)
        .max()
        .unwrap_or(Duration::from_secs(1));
    let cx = CollectContext::with_source(
        bulk.hypervisor().clone(),
        bulk.clone(),
        groups,
        Instant::now() + longest,
    );
    // One timer for every run's deadline (see `deadline_join`).
    let started = Instant::now();
    let runs = instances
        .iter()
        .map(|inst| {
            let cx = &cx;
            let deadline = tokio::time::Instant::now() + inst.timeout;
            let run = async move {
                let result = inst.collector.collect(cx).await;
                (result, started.elapsed())
            };
            (deadline, run)
        })
        .collect();
    let results = join_with_deadlines(runs).await;
    let states = TickStates::of(cx.fetched_stats());
    let outcomes = instances
        .iter()
        .zip(results)
        .map(|(inst, result)| match result {
            Some((Ok(mut collected), took)) => {
                let mut domain_errors = Vec::new();
                // Every collector's output carries the domain state when the tick has it.
                for (i, ds) in collected.domains.iter_mut().enumerate() {
                    if ds.state.is_none() {
                        ds.state = states.of_domain(i, &ds.domain.uuid);
                    }
                }
                for ds in &collected.domains {
                    for e in &ds.errors {
                        domain_errors.push((ds.domain.uuid.clone(), e.clone()));
                    }
                }
                let batch = Batch {
                    collector: inst.id.clone(),
                    metrics: inst.metrics.clone(),
                    at: cx.at,
                    domains: collected.domains,
                    host: collected.host,
                };
                RunOutcome {
                    id: inst.id.clone(),
                    batch: Some(Arc::new(batch)),
                    error: None,
                    took,
                    domain_errors,
                }
            }
            Some((Err(e), took)) => RunOutcome {
                id: inst.id.clone(),
                batch: None,
                error: Some(e.to_string()),
                took,
                domain_errors: vec![],
            },
            None => RunOutcome {
                id: inst.id.clone(),
                batch: None,
                error: Some(format!("run exceeded its deadline of {:?}", inst.timeout)),
                took: inst.timeout,
                domain_errors: vec![],
            },
        })
        .collect();
    let stats_errors = match cx.fetched_stats() {
        Some(Ok(stats)) => stats
            .iter()
            .filter(|d| !d.errors.is_empty())
            .map(|d| (d.domain.clone(), d.errors.clone()))
            .collect(),
        _ => Vec::new(),
    };
    Tick {
        outcomes,
        stats_errors,
        at: cx.at,
    }
}

/// Remembers what was already logged so that a failure repeating every second is logged
/// once, and its recovery once.
#[derive(Default)]
struct LogLatch {
    failing: HashSet<Arc<str>>,
    domain_errors: HashSet<(Arc<str>, Arc<str>, String)>,
    stats_errors: HashSet<(Arc<str>, String)>,
}

impl LogLatch {
    /// Problems of the shared statistics call, per domain (logged once per problem).
    fn observe_stats(&mut self, errors: &[(vadvisor_api::DomainRef, Vec<String>)]) {
        let current: HashSet<(Arc<str>, String)> = errors
            .iter()
            .flat_map(|(d, es)| es.iter().map(|e| (d.uuid.clone(), e.clone())))
            .collect();
        for (uuid, error) in current.difference(&self.stats_errors) {
            let name = errors
                .iter()
                .find(|(d, _)| d.uuid == *uuid)
                .map(|(d, _)| d.name.clone())
                .unwrap_or_default();
            tracing::warn!(domain = %uuid, name = %name, error = %error, "domain reported with partial data (logged once until it recovers)");
        }
        for (uuid, error) in self.stats_errors.difference(&current) {
            tracing::info!(domain = %uuid, error = %error, "domain statistics complete again");
        }
        self.stats_errors = current;
    }

    fn observe(&mut self, o: &RunOutcome) {
        match &o.error {
            Some(e) if self.failing.insert(o.id.clone()) => {
                tracing::warn!(collector = %o.id, error = %e, "collector run failed (logged once until it recovers)")
            }
            None if self.failing.remove(&o.id) => {
                tracing::info!(collector = %o.id, "collector recovered")
            }
            _ => {}
        }
        let current: HashSet<(Arc<str>, Arc<str>, String)> = o
            .domain_errors
            .iter()
            .map(|(d, e)| (o.id.clone(), d.clone(), e.clone()))
            .collect();
        for key in current.difference(&self.domain_errors) {
            tracing::warn!(collector = %key.0, domain = %key.1, error = %key.2, "domain reported with partial data");
        }
        self.domain_errors
            .retain(|k| k.0 != o.id || current.contains(k));
        self.domain_errors.extend(current);
    }
}

/// The greatest common divisor of the intervals (at least 1 ms): the grid a late tick
/// is moved to, so that collectors due meanwhile run together.
fn base_tick(intervals: impl Iterator<Item = Duration>) -> Duration {
    fn gcd(a: u128, b: u128) -> u128 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let nanos = intervals.map(|d| d.as_nanos()).fold(0, gcd);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).max(Duration::from_millis(1))
}

/// The first point of the grid `start + k × step` strictly after `t`.
fn slot_after(start: Instant, step: Duration, t: Instant) -> Instant {
    let k = t.saturating_duration_since(start).as_nanos() / step.as_nanos().max(1) + 1;
    start + step.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
}

/// Which collectors run at the next tick, and when it is.
struct Plan {
    start: Instant,
    base: Duration,
    /// Each collector's next run.
    next: Vec<Instant>,
}

impl Plan {
    fn new(start: Instant, instances: &[PolledInstance]) -> Self {
        Self {
            start,
            base: base_tick(instances.iter().map(|i| i.interval)),
            next: vec![start; instances.len()],
        }
    }

    /// When the next tick is: the earliest run due, or — when that moment passed while a
    /// tick overran — the next point of the common grid (missed moments are skipped).
    fn wake(&self, now: Instant) -> Instant {
        let earliest = self.next.iter().copied().min().unwrap_or(now);
        if earliest + self.base / 2 >= now {
            earliest
        } else {
            let at_or_after = slot_after(self.start, self.base, now - Duration::from_nanos(1));
            at_or_after.max(earliest)
        }
    }

    /// The collectors due at a tick at `at`; their next runs move past it.
    fn take_due(&mut self, at: Instant, instances: &[PolledInstance]) -> Vec<usize> {
        let due: Vec<usize> = (0..self.next.len())
            .filter(|&i| self.next[i] <= at)
            .collect();
        for &i in &due {
            self.next[i] = slot_after(self.start, instances[i].interval, at);
        }
        due
    }
}

/// Spawns the scheduler's loop. It ends when `shutdown` is cancelled.
pub fn spawn(
    spawner: &tokio::runtime::Handle,
    instances: Vec<PolledInstance>,
    bulk: Arc<BulkCalls>,
    bus: Bus,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    if instances.is_empty() {
        return Vec::new();
    }
    for inst in &instances {
        health.record_interval(&inst.id, inst.interval);
    }
    vec![spawner.spawn(async move {
        let mut plan = Plan::new(Instant::now(), &instances);
        let mut latch = LogLatch::default();
        let mut timer = TickTimer::new();
        loop {
            let wake = plan.wake(Instant::now());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = timer.sleep_until(wake) => {}
            }
            let due: Vec<PolledInstance> = plan
                .take_due(wake, &instances)
                .into_iter()
                .map(|i| instances[i].clone())
                .collect();
            let hv = bulk.hypervisor();
            let calls_before = hv.status().calls;
            let tick = tokio::select! {
                _ = shutdown.cancelled() => return,
                t = run_tick(&bulk, &due) => t,
            };
            let tick_calls = hv.status().calls.saturating_sub(calls_before);
            // Per domain: errors of the shared statistics plus the collectors' own.
            let mut domains: std::collections::HashMap<Arc<str>, (Arc<str>, u64)> = tick
                .stats_errors
                .iter()
                .map(|(d, e)| (d.uuid.clone(), (d.name.clone(), e.len() as u64)))
                .collect();
            latch.observe_stats(&tick.stats_errors);
            // Every outcome is recorded before any batch is published: a sink composing
            // a tick's sample knows which collectors of the tick failed.
            for o in &tick.outcomes {
                health.record_start(&o.id, tick.at);
                health.record_run(
                    &o.id,
                    o.took,
                    o.error.is_none(),
                    o.domain_errors.len() as u64,
                );
                health.record_tick_calls(&o.id, tick_calls);
                latch.observe(o);
            }
            for o in tick.outcomes {
                if let Some(batch) = o.batch {
                    for ds in &batch.domains {
                        let entry = domains
                            .entry(ds.domain.uuid.clone())
                            .or_insert((ds.domain.name.clone(), 0));
                        entry.1 += ds.errors.len() as u64;
                    }
                    bus.publish(Record::Batch(batch));
                }
            }
            for (uuid, (name, errors)) in domains {
                health.record_domain(&uuid, &name, tick.at, errors);
            }
            // Domains without any sample for an hour are gone.
            if let Some(cutoff) =
                std::time::SystemTime::now().checked_sub(Duration::from_secs(3600))
            {
                health.forget_domains_before(cutoff);
            }
        }
    })]
}

type SharedRun = Shared<BoxFuture<'static, Result<Arc<[Arc<Batch>]>, String>>>;

/// One fresh collection of every polled collector, shared by concurrent callers: a
/// caller arriving while a collection runs waits for that one instead of starting
/// another.
pub struct LiveCollector {
    bulk: Arc<BulkCalls>,
    instances: Mutex<Arc<[PolledInstance]>>,
    inflight: Mutex<Option<SharedRun>>,
}

impl LiveCollector {
    /// A fresh collection of `instances` (the polled collectors of the pipeline). Its
    /// bulk calls go through [`LiveCollector::bulk`], which the scheduler shares.
    pub fn new(hv: Arc<dyn Hypervisor>, instances: Vec<PolledInstance>) -> Arc<Self> {
        Arc::new(Self {
            bulk: BulkCalls::new(hv),
            instances: Mutex::new(instances.into()),
            inflight: Mutex::new(None),
        })
    }

    /// Replaces the collectors after a reload changed them.
    pub fn replace_instances(&self, instances: Vec<PolledInstance>) {
        *self.instances.lock().unwrap_or_else(|e| e.into_inner()) = instances.into();
    }

    /// The gate every bulk statistics call goes through; the scheduler must use this
    /// one too, so that a live collection and a tick share calls instead of colliding.
    pub fn bulk(&self) -> Arc<BulkCalls> {
        self.bulk.clone()
    }
}

#[async_trait]
impl LiveCollect for LiveCollector {
    async fn collect_now(&self) -> Result<Arc<[Arc<Batch>]>, String> {
        let run = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.as_ref() {
                Some(run) => run.clone(),
                None => {
                    let bulk = self.bulk.clone();
                    let instances = self
                        .instances
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    // Spawned, so a caller that goes away does not cancel it for the others.
                    let handle = tokio::spawn(async move {
                        let outcomes = run_tick(&bulk, &instances).await.outcomes;
                        let mut batches = Vec::new();
                        let mut errors = Vec::new();
                        for o in outcomes {
                            match (o.batch, o.error) {
                                (Some(b), _) => batches.push(b),
                                (None, Some(e)) => errors.push(format!("{}: {e}", o.id)),
                                (None, None) => {}
                            }
                        }
                        if batches.is_empty() && !errors.is_empty() {
                            Err(errors.join("; "))
                        } else {
                            Ok(Arc::from(batches))
                        }
                    });
                    let run: SharedRun = async move {
                        handle
                            .await
                            .map_err(|e| format!("live collection aborted: {e}"))?
                    }
                    .boxed()
                    .shared();
                    *inflight = Some(run.clone());
                    run
                }
            }
        };
        let result = run.clone().await;
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if inflight.as_ref().is_some_and(|r| r.ptr_eq(&run)) {
            *inflight = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::{
        CollectError, Collected, DomainSamples, FakeHypervisor, Hypervisor, Sample, SinkHealth,
        TypedValue, Unit,
    };

    const M: &[MetricDesc] = &[MetricDesc::counter(
        "vm_t_seconds_total",
        "h",
        Unit::Nanoseconds,
    )];

    #[test]
    fn a_domain_s_state_is_found_at_its_position_or_anywhere_else() {
        let stats_of = |uuid: &str, state: Option<i32>| {
            let mut d = DomainStats::new(vadvisor_api::DomainRef::new(uuid, uuid));
            if let Some(state) = state {
                d.params.insert("state.state", TypedValue::Int(state));
                d.params.insert("state.reason", TypedValue::Int(1));
            }
            d
        };
        let stats: Result<Arc<[DomainStats]>, HypervisorError> = Ok(Arc::from(vec![
            stats_of("u-1", Some(1)),
            stats_of("u-2", Some(3)),
            stats_of("u-3", None),
        ]));
        let states = TickStates::of(Some(&stats));
        // At its own position, at another one, without a state, not in the statistics.
        assert_eq!(states.of_domain(0, "u-1"), Some(DomainState::new(1, 1)));
        assert_eq!(states.of_domain(0, "u-2"), Some(DomainState::new(3, 1)));
        assert_eq!(states.of_domain(7, "u-2"), Some(DomainState::new(3, 1)));
        assert_eq!(states.of_domain(2, "u-3"), None);
        assert_eq!(states.of_domain(1, "u-4"), None);
        // A tick whose statistics failed, or that asked none, has no states.
        let failed: Result<Arc<[DomainStats]>, HypervisorError> =
            Err(HypervisorError::Disconnected("gone".into()));
        assert_eq!(TickStates::of(Some(&failed)).of_domain(0, "u-1"), None);
        assert_eq!(TickStates::of(None).of_domain(0, "u-1"), None);
    }

    struct Probe {
        groups: StatsGroups,
        sleep: Duration,
    }

    #[async_trait]
    impl Collector for Probe {
        fn metrics(&self) -> &[MetricDesc] {
            M
        }
        fn stats_groups(&self) -> StatsGroups {
            self.groups
        }
        async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
            let stats = cx.domain_stats().await?;
            tokio::time::sleep(self.sleep).await;
            Ok(Collected {
                domains: stats
                    .iter()
                    .map(|d| {
                        let mut ds = DomainSamples::new(d.domain.clone());
                        ds.samples
                            .push(Sample::new(0, d.f64("cpu.time").unwrap_or(0.0)));
                        ds
                    })
                    .collect(),
                host: vec![],
            })
        }
    }

    fn instance(
        id: &str,
        groups: StatsGroups,
        sleep: Duration,
        timeout: Duration,
    ) -> PolledInstance {
        every(id, groups, sleep, timeout, Duration::from_millis(100))
    }

    fn every(
        id: &str,
        groups: StatsGroups,
        sleep: Duration,
        timeout: Duration,
        interval: Duration,
    ) -> PolledInstance {
        PolledInstance {
            id: id.into(),
            collector: Arc::new(Probe { groups, sleep }),
            metrics: M.into(),
            interval,
            timeout,
        }
    }

    #[test]
    fn the_common_grid_is_the_gcd_of_the_intervals() {
        let ms = Duration::from_millis;
        assert_eq!(
            base_tick([ms(1000), ms(5000), ms(2000)].into_iter()),
            ms(1000)
        );
        assert_eq!(base_tick([ms(1000), ms(1500)].into_iter()), ms(500));
        assert_eq!(base_tick([ms(5000)].into_iter()), ms(5000));
        let t0 = Instant::now();
        assert_eq!(slot_after(t0, ms(1000), t0), t0 + ms(1000));
        assert_eq!(slot_after(t0, ms(1000), t0 + ms(2500)), t0 + ms(3000));
    }

    #[test]
    fn a_late_tick_lands_on_the_common_grid_and_runs_everything_due_together() {
        let ms = Duration::from_millis;
        let insts = vec![
            every("fast", StatsGroups::CPU_TOTAL, ms(0), ms(1), ms(1000)),
            every("slow", StatsGroups::BLOCK, ms(0), ms(1), ms(5000)),
        ];
        let t0 = Instant::now();
        let mut plan = Plan::new(t0, &insts);
        assert_eq!(plan.wake(t0), t0);
        assert_eq!(plan.take_due(t0, &insts), vec![0, 1], "both due at start");
        for k in 1..5 {
            assert_eq!(plan.wake(t0), t0 + ms(1000 * k));
            assert_eq!(plan.take_due(t0 + ms(1000 * k), &insts), vec![0]);
        }
        assert_eq!(
            plan.take_due(t0 + ms(5000), &insts),
            vec![0, 1],
            "coinciding"
        );
        // The tick at 6 s overran to 10.7 s: 7, 8, 9, 10 s are skipped; at 11 s both run.
        assert_eq!(plan.take_due(t0 + ms(6000), &insts), vec![0]);
        let wake = plan.wake(t0 + ms(10_700));
        assert_eq!(wake, t0 + ms(11_000));
        assert_eq!(plan.take_due(wake, &insts), vec![0, 1]);
        assert_eq!(plan.wake(wake), t0 + ms(12_000));
    }

    /// Collectors at 100, 200 and 500 ms: each tick makes one bulk call, never two at
    /// once, and every tick's batches carry one instant.
    #[tokio::test]
    async fn mixed_intervals_share_one_call_per_tick() {
        let hv = fake();
        hv.set_delay(Some(Duration::from_millis(20)));
        let bus = Bus::new(1024);
        let health = Health::new();
        let mut rx = bus.subscribe(Arc::new(SinkHealth::default()));
        let token = CancellationToken::new();
        let ms = Duration::from_millis;
        let tasks = spawn(
            &tokio::runtime::Handle::current(),
            vec![
                every("a", StatsGroups::CPU_TOTAL, ms(0), ms(900), ms(100)),
                every("b", StatsGroups::BALLOON, ms(0), ms(900), ms(200)),
                every("c", StatsGroups::BLOCK, ms(0), ms(900), ms(500)),
            ],
            BulkCalls::new(hv.clone()),
            bus.clone(),
            health.clone(),
            token.clone(),
        );
        let mut ticks: std::collections::BTreeMap<std::time::SystemTime, Vec<String>> =
            Default::default();
        let until = Instant::now() + ms(1150);
        while let Ok(Some(rec)) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            if let Record::Batch(b) = rec {
                ticks.entry(b.at).or_default().push(b.collector.to_string());
            }
        }
        token.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        let order: Vec<&Vec<String>> = ticks.values().collect();
        assert!(order.len() >= 10, "{order:?}");
        for (k, collectors) in order.iter().enumerate().take(11) {
            let mut expect = vec!["a".to_string()];
            if k % 2 == 0 {
                expect.push("b".into());
            }
            if k % 5 == 0 {
                expect.push("c".into());
            }
            assert_eq!(*collectors, &expect, "tick {k}: {order:?}");
        }
        assert!(
            hv.calls() as usize <= ticks.len() + 1,
            "one bulk call per tick: {} calls, {} ticks",
            hv.calls(),
            ticks.len()
        );
        assert_eq!(hv.max_concurrent_calls(), 1);
        assert_eq!(health.collectors()["c"].interval, ms(500));
    }

    fn fake() -> Arc<FakeHypervisor> {
        let hv = Arc::new(FakeHypervisor::new());
        hv.put_domain(
            "u1",
            "one",
            &[
                ("state.state", TypedValue::Int(3)),
                ("cpu.time", TypedValue::ULLong(9)),
            ],
        );
        hv
    }

    #[tokio::test]
    async fn collectors_of_a_tick_share_one_call_and_get_state() {
        let hv = fake();
        let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
        let insts = vec![
            instance(
                "a",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
            instance(
                "b",
                StatsGroups::BLOCK,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
        ];
        let out = run_tick(&BulkCalls::new(dyn_hv), &insts).await.outcomes;
        assert_eq!(hv.calls(), 1, "one bulk call for both collectors");
        let batch = out[0].batch.as_ref().unwrap();
        assert_eq!(batch.domains[0].state.map(|s| s.name()), Some("Paused"));
        assert_eq!(batch.domains[0].samples[0].value, 9.0);
        assert_eq!(
            out[0].batch.as_ref().unwrap().at,
            out[1].batch.as_ref().unwrap().at
        );
    }

    #[tokio::test]
    async fn a_run_past_its_deadline_fails_alone() {
        let hv: Arc<dyn Hypervisor> = fake();
        let insts = vec![
            instance(
                "slow",
                StatsGroups::CPU_TOTAL,
                Duration::from_secs(5),
                Duration::from_millis(50),
            ),
            instance(
                "fast",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
        ];
        let start = Instant::now();
        let out = run_tick(&BulkCalls::new(hv), &insts).await.outcomes;
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(out[0].error.as_deref().unwrap().contains("deadline"));
        assert_eq!(out[0].took, Duration::from_millis(50), "its deadline");
        assert!(out[1].batch.is_some());
        assert!(out[1].took < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn scheduler_publishes_and_records_health_and_skips_missed_ticks() {
        let hv: Arc<dyn Hypervisor> = fake();
        let bus = Bus::new(64);
        let health = Health::new();
        let mut rx = bus.subscribe(Arc::new(SinkHealth::default()));
        let token = CancellationToken::new();
        let tasks = spawn(
            &tokio::runtime::Handle::current(),
            vec![instance(
                "a",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(1),
            )],
            BulkCalls::new(hv),
            bus.clone(),
            health.clone(),
            token.clone(),
        );
        for _ in 0..3 {
            let rec = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap();
            assert!(matches!(rec, Some(Record::Batch(_))));
        }
        token.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        let h = &health.collectors()["a"];
        assert!(h.runs >= 3 && h.errors == 0 && h.last_success);
        assert_eq!(h.last_tick_libvirt_calls, 1, "one bulk call per tick");
    }

    #[tokio::test]
    async fn statistics_errors_are_recorded_once_per_domain_not_per_collector() {
        let hv = fake();
        let mut stats = vadvisor_api::DomainStats::new(vadvisor_api::DomainRef::new("u1", "one"));
        stats.errors.push("stats group `block` unavailable".into());
        let dyn_hv: Arc<dyn Hypervisor> = Arc::new(ErrorsHv(stats));
        let insts = vec![
            instance(
                "a",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
            instance(
                "b",
                StatsGroups::BLOCK,
                Duration::ZERO,
                Duration::from_secs(1),
            ),
        ];
        let tick = run_tick(&BulkCalls::new(dyn_hv), &insts).await;
        assert_eq!(tick.stats_errors.len(), 1);
        assert_eq!(
            tick.stats_errors[0].1,
            vec!["stats group `block` unavailable".to_string()]
        );
        assert!(
            tick.outcomes.iter().all(|o| o.domain_errors.is_empty()),
            "not copied into every collector"
        );
        drop(hv);
    }

    struct ErrorsHv(vadvisor_api::DomainStats);

    #[async_trait]
    impl Hypervisor for ErrorsHv {
        async fn domain_stats(
            &self,
            _: StatsGroups,
        ) -> Result<Vec<vadvisor_api::DomainStats>, vadvisor_api::HypervisorError> {
            Ok(vec![self.0.clone()])
        }
        fn status(&self) -> vadvisor_api::ConnectionStatus {
            vadvisor_api::ConnectionStatus::default()
        }
    }

    #[tokio::test]
    async fn live_collections_are_shared_by_concurrent_callers() {
        let hv = fake();
        hv.set_delay(Some(Duration::from_millis(200)));
        let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
        let live = LiveCollector::new(
            dyn_hv,
            vec![instance(
                "a",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(2),
            )],
        );
        let (a, b, c) = tokio::join!(live.collect_now(), live.collect_now(), live.collect_now());
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(hv.calls(), 1, "three concurrent callers, one collection");
        live.collect_now().await.unwrap();
        assert_eq!(hv.calls(), 2, "a later caller gets a fresh one");
    }

    #[tokio::test]
    async fn live_collection_reports_libvirt_down() {
        let hv = fake();
        hv.set_down(Some("no libvirtd"));
        let live = LiveCollector::new(
            hv,
            vec![instance(
                "a",
                StatsGroups::CPU_TOTAL,
                Duration::ZERO,
                Duration::from_secs(1),
            )],
        );
        let err = live.collect_now().await.unwrap_err();
        assert!(err.contains("no libvirtd"), "{err}");
    }
}
