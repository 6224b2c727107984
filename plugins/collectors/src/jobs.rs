//! The `jobs` collector: progress of domain jobs (migration, save, dump, backup, …) from
//! `virDomainGetJobStats` — type, operation, time elapsed/remaining, data, memory
//! (migration), dirty rate, iteration, expected downtime, bandwidth. Absent for domains
//! without a job.
//!
//! Only domains that have a job are asked, never every domain every tick. Candidates:
//! - domains the tick's bulk state shows paused for a job (migration, save, dump,
//!   snapshot) or in post-copy;
//! - domains the hypervisor's job hints name (libvirt's migration-iteration events: the
//!   source of a live migration keeps running, so only its events tell);
//! - domains that had a job at the previous run, until they have none.
//!
//! A destination host has no statistics for an incoming migration ("available only on
//! the source host"): that answer, like a domain that vanished, is not an error.
//!
//! The actual downtime of a domain's last completed migration comes from the statistics
//! libvirt keeps of its last completed job (`VIR_DOMAIN_JOB_STATS_COMPLETED`), asked once
//! when a job ends: on libvirt's job-completed event, or when a domain that had a job (or
//! was paused for one, as the destination of a migration is) has none any more. The
//! answer is kept and reported every run while the domain is listed, without asking again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use vadvisor_api::{
    async_trait, CollectContext, CollectError, Collected, Collector, CollectorPlugin,
    DomainSamples, DomainState, HypervisorError, JobStats, MetricDesc, Registry, Sample,
    StatsGroups, Unit,
};

/// `virDomainJobType` names.
const JOB_TYPES: &[&str] = &[
    "none",
    "bounded",
    "unbounded",
    "completed",
    "failed",
    "cancelled",
];

/// `virDomainJobOperation` names.
const OPERATIONS: &[&str] = &[
    "unknown",
    "start",
    "save",
    "restore",
    "migration_in",
    "migration_out",
    "snapshot",
    "snapshot_revert",
    "dump",
    "backup",
    "snapshot_delete",
];

/// (job statistics key, metric) pairs after the type (index 0).
const KEYS: &[&str] = &[
    "operation",
    "time_elapsed",
    "time_remaining",
    "data_total",
    "data_processed",
    "data_remaining",
    "memory_total",
    "memory_processed",
    "memory_remaining",
    "memory_dirty_rate",
    "memory_iteration",
    "downtime",
    "memory_bps",
    "disk_total",
    "disk_processed",
    "disk_remaining",
];

pub const METRICS: &[MetricDesc] = &[
    MetricDesc::gauge(
        "vm_job_type",
        "Type of the domain's running job (virDomainJobType): 1 bounded, 2 unbounded",
        Unit::None,
    )
    .json("job.type", Unit::None)
    .states(JOB_TYPES)
    .statsd("job.type", Unit::None)
    .source("virDomainGetJobStats type", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_operation",
        "What the running job does (virDomainJobOperation): 2 save, 3 restore, 4 incoming \
         migration, 5 outgoing migration, 6 snapshot, 8 dump, 9 backup",
        Unit::None,
    )
    .json("job.operation", Unit::None)
    .states(OPERATIONS)
    .statsd("job.operation", Unit::None)
    .source("virDomainGetJobStats operation", "3.3.0"),
    MetricDesc::gauge(
        "vm_job_time_elapsed_seconds",
        "Time since the job started",
        Unit::Milliseconds,
    )
    .json("job.time_elapsed", Unit::Milliseconds)
    .statsd("job.time.elapsed", Unit::Milliseconds)
    .source("virDomainGetJobStats time_elapsed", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_time_remaining_seconds",
        "Expected time until the job ends (bounded jobs only)",
        Unit::Milliseconds,
    )
    .json("job.time_remaining", Unit::Milliseconds)
    .statsd("job.time.remaining", Unit::Milliseconds)
    .source("virDomainGetJobStats time_remaining", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_data_total_bytes",
        "Data the job has to process in all (memory and disks)",
        Unit::Bytes,
    )
    .json("job.data_total", Unit::Bytes)
    .statsd("job.data.total.bytes", Unit::Bytes)
    .source("virDomainGetJobStats data_total", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_data_processed_bytes",
        "Data the job has processed so far",
        Unit::Bytes,
    )
    .json("job.data_processed", Unit::Bytes)
    .statsd("job.data.processed.bytes", Unit::Bytes)
    .source("virDomainGetJobStats data_processed", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_data_remaining_bytes",
        "Data the job still has to process",
        Unit::Bytes,
    )
    .json("job.data_remaining", Unit::Bytes)
    .statsd("job.data.remaining.bytes", Unit::Bytes)
    .source("virDomainGetJobStats data_remaining", "1.0.3"),
    MetricDesc::gauge(
        "vm_migration_memory_total_bytes",
        "Guest memory a migration (or save) transfers in all",
        Unit::Bytes,
    )
    .json("job.memory_total", Unit::Bytes)
    .statsd("migration.memory.total.bytes", Unit::Bytes)
    .source("virDomainGetJobStats memory_total", "1.0.3"),
    MetricDesc::gauge(
        "vm_migration_memory_processed_bytes",
        "Guest memory transferred so far",
        Unit::Bytes,
    )
    .json("job.memory_processed", Unit::Bytes)
    .statsd("migration.memory.processed.bytes", Unit::Bytes)
    .source("virDomainGetJobStats memory_processed", "1.0.3"),
    MetricDesc::gauge(
        "vm_migration_memory_remaining_bytes",
        "Guest memory still to transfer",
        Unit::Bytes,
    )
    .json("job.memory_remaining", Unit::Bytes)
    .statsd("migration.memory.remaining.bytes", Unit::Bytes)
    .source("virDomainGetJobStats memory_remaining", "1.0.3"),
    MetricDesc::gauge(
        "vm_migration_memory_dirty_rate_pages_per_second",
        "Pages the guest dirties per second during the migration",
        Unit::Count,
    )
    .json("job.memory_dirty_rate", Unit::Count)
    .statsd("migration.memory.dirty.rate", Unit::Count)
    .source("virDomainGetJobStats memory_dirty_rate", "1.2.9"),
    MetricDesc::gauge(
        "vm_migration_iteration",
        "Memory-copy pass the migration is in (1 is the first full copy)",
        Unit::Count,
    )
    .json("job.memory_iteration", Unit::Count)
    .statsd("migration.iteration", Unit::Count)
    .source("virDomainGetJobStats memory_iteration", "1.2.9"),
    MetricDesc::gauge(
        "vm_migration_expected_downtime_seconds",
        "Downtime the migration expects for its final switch-over",
        Unit::Milliseconds,
    )
    .json("job.downtime", Unit::Milliseconds)
    .statsd("migration.downtime.expected", Unit::Milliseconds)
    .source("virDomainGetJobStats downtime", "1.1.0"),
    MetricDesc::gauge(
        "vm_migration_memory_bandwidth_bytes_per_second",
        "Rate at which the migration transfers guest memory",
        Unit::Bytes,
    )
    .json("job.memory_bps", Unit::Bytes)
    .statsd("migration.memory.bandwidth.bytes", Unit::Bytes)
    .source("virDomainGetJobStats memory_bps", "1.2.9"),
    MetricDesc::gauge(
        "vm_job_disk_total_bytes",
        "Disk data the job copies in all (storage migration, backup)",
        Unit::Bytes,
    )
    .json("job.disk_total", Unit::Bytes)
    .statsd("job.disk.total.bytes", Unit::Bytes)
    .source("virDomainGetJobStats disk_total", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_disk_processed_bytes",
        "Disk data copied so far",
        Unit::Bytes,
    )
    .json("job.disk_processed", Unit::Bytes)
    .statsd("job.disk.processed.bytes", Unit::Bytes)
    .source("virDomainGetJobStats disk_processed", "1.0.3"),
    MetricDesc::gauge(
        "vm_job_disk_remaining_bytes",
        "Disk data still to copy",
        Unit::Bytes,
    )
    .json("job.disk_remaining", Unit::Bytes)
    .statsd("job.disk.remaining.bytes", Unit::Bytes)
    .source("virDomainGetJobStats disk_remaining", "1.0.3"),
    MetricDesc::gauge(
        "vm_migration_downtime_seconds",
        "Actual downtime of the domain's last completed migration (known from the \
         completed job's statistics, once it ended while the agent watched)",
        Unit::Milliseconds,
    )
    .json("job.last_migration_downtime", Unit::Milliseconds)
    .statsd("migration.downtime.actual", Unit::Milliseconds)
    .source("virDomainGetJobStats(COMPLETED) downtime", "6.0.0"),
];

/// Index of `vm_migration_downtime_seconds` in [`METRICS`].
const DOWNTIME: u16 = KEYS.len() as u16 + 1;

/// Runs a job-completed event waits for its domain to be listed before it is dropped.
const PENDING_RUNS: u8 = 3;

/// Options of the `jobs` collector (none yet).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsOptions {}

/// Remembers which domains had (or were paused for) a job at the last run, the actual
/// downtime of each listed domain's last completed migration, and job-completed events
/// whose domain was not listed yet.
#[derive(Default)]
pub struct JobsCollector {
    state: Mutex<RunState>,
}

#[derive(Default, Clone)]
struct RunState {
    /// Domains that had a job at the last run (asked again until they have none).
    active: BTreeSet<Arc<str>>,
    /// Domains that had a job or were paused for one at the last run.
    candidates: BTreeSet<Arc<str>>,
    /// Actual downtime (ms) of the last completed migration, by domain.
    downtime: BTreeMap<Arc<str>, f64>,
    /// Job-completed events not handled yet: runs left.
    pending: BTreeMap<Arc<str>, u8>,
}

pub fn register(registry: &mut Registry) {
    registry.add_collector(
        "jobs",
        "Progress of domain jobs (migration, save, dump, backup)",
        |_o: JobsOptions, _cx| Ok(CollectorPlugin::polled(JobsCollector::default())),
    );
}

/// A paused (or post-copy) state that a job explains.
fn state_says_job(state: Option<DomainState>) -> bool {
    match state {
        // paused: migration, save, dump, snapshot, post-copy, post-copy failed
        Some(DomainState {
            state: 3,
            reason: 2 | 3 | 4 | 9 | 12 | 13,
        }) => true,
        // running: post-copy
        Some(DomainState {
            state: 1,
            reason: 10,
        }) => true,
        _ => false,
    }
}

/// The samples of one job.
fn job_samples(job: &JobStats) -> Vec<Sample> {
    let mut out = vec![Sample::new(0, f64::from(job.job_type))];
    for (i, key) in KEYS.iter().enumerate() {
        if let Some(v) = job.f64(key) {
            out.push(Sample::new(i as u16 + 1, v));
        }
    }
    out
}

/// The actual downtime (ms) in a completed job's statistics, if it was a migration.
fn completed_downtime(job: &JobStats) -> Option<f64> {
    let migration = match job.f64("operation") {
        // incoming or outgoing migration
        Some(op) => op == 4.0 || op == 5.0,
        // libvirt before 3.3 names no operation: a downtime means a migration
        None => true,
    };
    job.f64("downtime").filter(|_| migration)
}

#[async_trait]
impl Collector for JobsCollector {
    fn metrics(&self) -> &[MetricDesc] {
        METRICS
    }

    fn stats_groups(&self) -> StatsGroups {
        StatsGroups::STATE
    }

    async fn collect(&self, cx: &CollectContext) -> Result<Collected, CollectError> {
        let stats = cx.domain_stats().await?;
        let hv = cx.hypervisor();
        let hints = hv.job_hints();
        let before = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut pending = before.pending.clone();
        for d in hv.take_completed_jobs() {
            pending.insert(d.uuid, PENDING_RUNS);
        }
        let mut out = Collected::default();
        let mut now = RunState::default();
        for domain in stats.iter() {
            let mut ds = DomainSamples::new(domain.domain.clone());
            ds.state = domain.state();
            let uuid = &domain.domain.uuid;
            let paused_for_job = state_says_job(ds.state);
            let candidate = paused_for_job
                || before.active.contains(uuid)
                || hints.iter().any(|h| &h.uuid == uuid);
            let mut has_job = false;
            if candidate {
                match hv.job_stats(uuid).await {
                    Ok(Some(job)) => {
                        ds.samples = job_samples(&job);
                        now.active.insert(Arc::clone(uuid));
                        has_job = true;
                    }
                    // No job, gone, or a destination without statistics: nothing to say.
                    Ok(None)
                    | Err(HypervisorError::NoDomain(_))
                    | Err(HypervisorError::Unsupported(_)) => {}
                    Err(e @ HypervisorError::Disconnected(_)) => return Err(e.into()),
                    Err(e) => ds.errors.push(format!("job statistics: {e}")),
                }
            }
            if paused_for_job || has_job {
                now.candidates.insert(Arc::clone(uuid));
            }
            // A job ended: by its event, or the domain had one (or waited for one) and
            // has none now. Asked once.
            let ended = pending.remove(uuid).is_some()
                || (before.candidates.contains(uuid) && !paused_for_job && !has_job);
            let mut downtime = before.downtime.get(uuid).copied();
            if ended {
                match hv.completed_job_stats(uuid).await {
                    Ok(Some(job)) => downtime = completed_downtime(&job).or(downtime),
                    Ok(None)
                    | Err(HypervisorError::NoDomain(_))
                    | Err(HypervisorError::Unsupported(_)) => {}
                    Err(e @ HypervisorError::Disconnected(_)) => return Err(e.into()),
                    Err(e) => ds.errors.push(format!("completed job statistics: {e}")),
                }
            }
            if let Some(ms) = downtime {
                ds.samples.push(Sample::new(DOWNTIME, ms));
                now.downtime.insert(Arc::clone(uuid), ms);
            }
            out.domains.push(ds);
        }
        // Events for domains not listed yet wait a few runs.
        now.pending = pending
            .into_iter()
            .filter(|(_, runs)| *runs > 1)
            .map(|(u, runs)| (u, runs - 1))
            .collect();
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};
    use vadvisor_api::{DomainRef, FakeHypervisor, Hypervisor, TypedValue};

    #[test]
    fn declarations_are_valid() {
        assert_eq!(METRICS.len(), KEYS.len() + 2);
        assert_eq!(
            METRICS[DOWNTIME as usize].name,
            "vm_migration_downtime_seconds"
        );
        for m in METRICS {
            m.validate().unwrap_or_else(|e| panic!("{e}"));
        }
        for (k, m) in KEYS.iter().zip(&METRICS[1..=KEYS.len()]) {
            assert!(m.source.ends_with(k), "{} <- {k}", m.name);
        }
    }

    fn migration(processed: u64) -> JobStats {
        let mut params = BTreeMap::new();
        params.insert("operation".into(), TypedValue::Int(5));
        params.insert("time_elapsed".into(), TypedValue::ULLong(1500));
        params.insert("memory_total".into(), TypedValue::ULLong(1000));
        params.insert("memory_processed".into(), TypedValue::ULLong(processed));
        params.insert(
            "memory_remaining".into(),
            TypedValue::ULLong(1000 - processed),
        );
        params.insert("memory_iteration".into(), TypedValue::ULLong(1));
        JobStats {
            job_type: 2,
            params,
        }
    }

    async fn run(c: &JobsCollector, hv: &Arc<FakeHypervisor>) -> Collected {
        let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
        let cx = CollectContext::new(
            dyn_hv,
            StatsGroups::STATE,
            Instant::now() + Duration::from_secs(1),
        );
        c.collect(&cx).await.expect("collect")
    }

    #[tokio::test]
    async fn only_domains_with_a_job_are_asked_and_reported() {
        let hv = Arc::new(FakeHypervisor::new());
        let running = [
            ("state.state", TypedValue::Int(1)),
            ("state.reason", TypedValue::Int(1)),
        ];
        for i in 0..5 {
            hv.put_domain(&format!("u{i}"), &format!("idle{i}"), &running);
        }
        // Paused by an incoming migration (state 3, reason 2): asked, no statistics.
        hv.put_domain(
            "dest",
            "incoming",
            &[
                ("state.state", TypedValue::Int(3)),
                ("state.reason", TypedValue::Int(2)),
            ],
        );
        let c = JobsCollector::default();

        // Idle host: only the paused-for-migration domain is asked.
        let out = run(&c, &hv).await;
        assert_eq!(hv.take_job_calls(), vec!["dest".to_string()]);
        assert_eq!(out.domains.len(), 6);
        assert!(out.domains.iter().all(|d| d.samples.is_empty()));

        // An event hints that u3 migrates: asked, reported, and asked again next tick
        // (the hint is gone, the job is not).
        hv.set_job("u3", Some(migration(250)));
        hv.set_job_hints(vec![DomainRef::new("u3", "idle3")]);
        let out = run(&c, &hv).await;
        let mut asked = hv.take_job_calls();
        asked.sort();
        assert_eq!(asked, vec!["dest".to_string(), "u3".to_string()]);
        let u3 = out
            .domains
            .iter()
            .find(|d| &*d.domain.uuid == "u3")
            .expect("u3");
        let v = |m: u16| u3.samples.iter().find(|s| s.metric == m).map(|s| s.value);
        assert_eq!(v(0), Some(2.0), "unbounded");
        assert_eq!(v(1), Some(5.0), "outgoing migration");
        assert_eq!(v(8), Some(250.0), "memory processed");
        assert_eq!(v(9), Some(750.0), "memory remaining");
        assert_eq!(v(3), None, "no time_remaining for an unbounded job");

        hv.set_job_hints(Vec::new());
        hv.set_job("u3", Some(migration(900)));
        let out = run(&c, &hv).await;
        let u3 = out
            .domains
            .iter()
            .find(|d| &*d.domain.uuid == "u3")
            .expect("u3");
        assert!(u3.samples.iter().any(|s| s.metric == 8 && s.value == 900.0));
        assert_eq!(hv.take_job_calls().len(), 2);

        // The job ends: asked once more, then no more.
        hv.set_job("u3", None);
        let out = run(&c, &hv).await;
        assert!(out.domains.iter().all(|d| d.samples.is_empty()));
        assert_eq!(hv.take_job_calls().len(), 2);
        run(&c, &hv).await;
        assert_eq!(hv.take_job_calls(), vec!["dest".to_string()]);

        // A domain that vanishes mid-job is dropped without an error.
        hv.set_job("u1", Some(migration(10)));
        hv.set_job_hints(vec![DomainRef::new("u1", "idle1")]);
        run(&c, &hv).await;
        hv.remove_domain("u1");
        let out = run(&c, &hv).await;
        assert!(out.domains.iter().all(|d| d.errors.is_empty()));
    }
    fn completed(operation: i32, downtime: Option<u64>) -> JobStats {
        let mut params = BTreeMap::new();
        params.insert("operation".into(), TypedValue::Int(operation));
        params.insert("time_elapsed".into(), TypedValue::ULLong(11_800));
        if let Some(ms) = downtime {
            params.insert("downtime".into(), TypedValue::ULLong(ms));
        }
        JobStats {
            job_type: 3,
            params,
        }
    }

    fn downtime_of(out: &Collected, uuid: &str) -> Option<f64> {
        out.domains
            .iter()
            .find(|d| &*d.domain.uuid == uuid)
            .and_then(|d| d.samples.iter().find(|s| s.metric == DOWNTIME))
            .map(|s| s.value)
    }

    #[tokio::test]
    async fn the_actual_downtime_is_asked_once_when_a_migration_completes() {
        let hv = Arc::new(FakeHypervisor::new());
        let running = [
            ("state.state", TypedValue::Int(1)),
            ("state.reason", TypedValue::Int(1)),
        ];
        let incoming = [
            ("state.state", TypedValue::Int(3)),
            ("state.reason", TypedValue::Int(2)),
        ];
        for i in 0..5 {
            hv.put_domain(&format!("u{i}"), &format!("idle{i}"), &running);
        }
        let c = JobsCollector::default();

        // Idle host, over several runs: no completed-job call at all.
        for _ in 0..3 {
            let out = run(&c, &hv).await;
            assert!(out.domains.iter().all(|d| d.samples.is_empty()));
        }
        assert!(hv.take_completed_job_calls().is_empty());
        assert!(hv.take_job_calls().is_empty());

        // The destination of a migration: paused for it (no statistics yet) …
        hv.put_domain("dest", "incoming", &incoming);
        let out = run(&c, &hv).await;
        assert_eq!(downtime_of(&out, "dest"), None);
        assert!(hv.take_completed_job_calls().is_empty());
        // … then running: the completed job is asked once and its downtime reported.
        hv.put_domain("dest", "incoming", &running);
        hv.set_completed_job("dest", completed(4, Some(73)));
        let out = run(&c, &hv).await;
        assert_eq!(hv.take_completed_job_calls(), vec!["dest".to_string()]);
        assert_eq!(downtime_of(&out, "dest"), Some(73.0));
        // Kept and reported while the domain is listed, without asking again.
        for _ in 0..3 {
            let out = run(&c, &hv).await;
            assert_eq!(downtime_of(&out, "dest"), Some(73.0));
        }
        assert!(hv.take_completed_job_calls().is_empty());
        assert_eq!(hv.take_job_calls(), vec!["dest".to_string()]);

        // A job-completed event (e.g. the source before the guest leaves): asked once.
        hv.set_completed_job("u1", completed(5, Some(58)));
        hv.push_completed_hint(DomainRef::new("u1", "idle1"));
        let out = run(&c, &hv).await;
        assert_eq!(hv.take_completed_job_calls(), vec!["u1".to_string()]);
        assert_eq!(downtime_of(&out, "u1"), Some(58.0));
        run(&c, &hv).await;
        assert!(hv.take_completed_job_calls().is_empty());

        // A completed dump has no downtime: nothing reported; the domain's earlier
        // migration downtime stays.
        hv.set_completed_job("u2", completed(8, None));
        hv.push_completed_hint(DomainRef::new("u2", "idle2"));
        hv.set_completed_job("u1", completed(8, None));
        hv.push_completed_hint(DomainRef::new("u1", "idle1"));
        let out = run(&c, &hv).await;
        assert_eq!(downtime_of(&out, "u2"), None);
        assert_eq!(downtime_of(&out, "u1"), Some(58.0));
        let mut asked = hv.take_completed_job_calls();
        asked.sort();
        assert_eq!(asked, vec!["u1".to_string(), "u2".to_string()]);

        // An event for a domain not listed yet waits until it is.
        hv.push_completed_hint(DomainRef::new("late", "late"));
        run(&c, &hv).await;
        assert!(hv.take_completed_job_calls().is_empty());
        hv.put_domain("late", "late", &running);
        hv.set_completed_job("late", completed(4, Some(90)));
        let out = run(&c, &hv).await;
        assert_eq!(hv.take_completed_job_calls(), vec!["late".to_string()]);
        assert_eq!(downtime_of(&out, "late"), Some(90.0));

        // A domain that leaves forgets its downtime.
        hv.remove_domain("dest");
        let out = run(&c, &hv).await;
        assert_eq!(downtime_of(&out, "dest"), None);
        hv.put_domain("dest", "incoming", &running);
        let out = run(&c, &hv).await;
        assert_eq!(downtime_of(&out, "dest"), None);
        assert!(hv.take_completed_job_calls().is_empty());
    }
}
