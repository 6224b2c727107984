//! The families this sink renders itself (not declared by a collector): the list the
//! generated metric reference (`docs/metrics.md`, `vadvisor --print-metrics-reference`)
//! prints. A test renders a real exposition and checks that this list names exactly
//! the sink's own families, with their type and help text.

/// One family the sink renders itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnFamily {
    /// Sample name (counters end in `_total`).
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Labels, in order.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn fam(
    name: &'static str,
    kind: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> OwnFamily {
    OwnFamily {
        name,
        kind,
        labels,
        help,
    }
}

const VM: &[&str] = &["uuid", "name"];
const COLLECTOR: &[&str] = &["collector"];

/// Every family the sink renders besides the collectors' ones, in rendering order.
pub const OWN_FAMILIES: &[OwnFamily] = &[
    fam(
        "vm_up",
        "gauge",
        VM,
        "0 if the VM is down, 1 if the VM is up and running, other states",
    ),
    fam(
        "vm_state_code",
        "gauge",
        VM,
        "libvirt state of the domain (virDomainState): 0 no state, 1 running, 2 blocked, \
         3 paused, 4 shutting down, 5 shut off, 6 crashed, 7 suspended by guest power management",
    ),
    fam(
        "vm_state_reason_code",
        "gauge",
        VM,
        "libvirt reason code of the domain's state (virDomain<State>Reason; its meaning depends \
         on vm_state_code, e.g. running/1 booted, paused/1 user)",
    ),
    fam(
        "vm_info",
        "gauge",
        VM,
        "Domain identity (value 1): join on uuid to get the domain name",
    ),
    fam(
        "vm_lifecycle_events_total",
        "counter",
        &["event_type", "reason"],
        "Domain lifecycle events received from libvirt, by event type and reason",
    ),
    fam(
        "vadvisor_build_info",
        "gauge",
        &["version"],
        "vadvisor build information (value 1)",
    ),
    fam(
        "vadvisor_libvirt_up",
        "gauge",
        &[],
        "Whether the agent is connected to libvirt (1) or not (0)",
    ),
    fam(
        "vadvisor_libvirt_reconnects_total",
        "counter",
        &[],
        "Successful libvirt connections after the first one",
    ),
    fam(
        "vadvisor_libvirt_calls_total",
        "counter",
        &[],
        "libvirt API calls made",
    ),
    fam(
        "vadvisor_collector_duration_seconds",
        "gauge",
        COLLECTOR,
        "How long the collector's last run took",
    ),
    fam(
        "vadvisor_collector_period_seconds",
        "gauge",
        COLLECTOR,
        "Time between the starts of the collector's last two runs: its actual period, above its interval when collections take longer and ticks are skipped (0 until it ran twice)",
    ),
    fam(
        "vadvisor_collector_success",
        "gauge",
        COLLECTOR,
        "Whether the collector's last run succeeded (1) or failed (0)",
    ),
    fam(
        "vadvisor_collector_runs_total",
        "counter",
        COLLECTOR,
        "Runs of the collector",
    ),
    fam(
        "vadvisor_collector_errors_total",
        "counter",
        COLLECTOR,
        "Failed runs of the collector",
    ),
    fam(
        "vadvisor_collector_libvirt_calls",
        "gauge",
        COLLECTOR,
        "libvirt calls made during the collector's last tick (shared by the collectors of that tick)",
    ),
    fam(
        "vadvisor_domain_collection_errors_total",
        "counter",
        COLLECTOR,
        "Domains the collector reported with partial data because of an error",
    ),
    fam(
        "vadvisor_collector_last_batch_timestamp_seconds",
        "gauge",
        COLLECTOR,
        "When the data exported for the collector was collected (start of its tick)",
    ),
    fam(
        "vadvisor_sink_dropped_records_total",
        "counter",
        &["sink"],
        "Records a sink lost because it fell behind the collectors",
    ),
    fam(
        "process_cpu_seconds_total",
        "counter",
        &[],
        "Total user and system CPU time spent in seconds.",
    ),
    fam(
        "process_resident_memory_bytes",
        "gauge",
        &[],
        "Resident memory size in bytes.",
    ),
    fam(
        "process_virtual_memory_bytes",
        "gauge",
        &[],
        "Virtual memory size in bytes.",
    ),
    fam(
        "process_start_time_seconds",
        "gauge",
        &[],
        "Start time of the process since unix epoch in seconds.",
    ),
    fam(
        "process_open_fds",
        "gauge",
        &[],
        "Number of open file descriptors.",
    ),
    fam(
        "process_max_fds",
        "gauge",
        &[],
        "Maximum number of open file descriptors.",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use vadvisor_api::{
        Batch, CollectorHealth, ConnectionStatus, DomainRef, DomainSamples, DomainState,
        LifecycleEvent,
    };

    use super::super::encode::{Encoder, Format};
    use super::super::families::LabelOptions;
    use super::super::process::ProcessStats;
    use super::super::selfmetrics::SelfStats;
    use super::super::state::{reserved, State, StateOptions};
    use super::OWN_FAMILIES;

    /// A whole exposition with one running VM, one event, one collector and one sink.
    fn exposition() -> String {
        let mut state = State::new(StateOptions {
            labels: LabelOptions {
                name_label: true,
                aliases: true,
            },
            grace: Duration::from_secs(60),
        });
        let mut d = DomainSamples::new(DomainRef::new("u1", "vm1"));
        d.state = Some(DomainState::new(DomainState::RUNNING, 1));
        let at = SystemTime::now();
        state.ingest(
            Arc::new(Batch {
                collector: "cpu".into(),
                metrics: Arc::from(Vec::new()),
                at,
                domains: vec![d],
                host: Vec::new(),
            }),
            Instant::now(),
        );
        state.count_event(&LifecycleEvent {
            at,
            domain: DomainRef::new("u1", "vm1"),
            event: 2,
            detail: 0,
            reconciled: false,
        });
        let mut out =
            String::from_utf8(state.render(Format::Classic, &[], Instant::now()).to_vec())
                .expect("UTF-8");
        let collectors = BTreeMap::from([("cpu".to_string(), CollectorHealth::default())]);
        let drops = BTreeMap::from([("statsd".to_string(), 0)]);
        let batch_times = vec![(Arc::from("cpu"), at)];
        let libvirt = ConnectionStatus::default();
        let mut enc = Encoder::new(&mut out, Format::Classic);
        SelfStats {
            collectors: &collectors,
            batch_times: &batch_times,
            libvirt: &libvirt,
            sink_drops: &drops,
            // Sinks' own figures (remote_write) are listed in docs/remote-write.md.
            sink_figures: &[],
        }
        .render(&mut enc);
        ProcessStats::read().render(&mut enc);
        enc.finish();
        out
    }

    #[test]
    fn the_list_names_exactly_the_families_the_sink_renders_itself() {
        let text = exposition();
        let mut rendered: Vec<(String, String, String)> = Vec::new();
        let mut help: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').expect("help");
                help.insert(name.to_string(), h.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                rendered.push((
                    name.to_string(),
                    kind.to_string(),
                    help.get(name).cloned().unwrap_or_default(),
                ));
            }
        }
        let listed: Vec<(String, String, String)> = OWN_FAMILIES
            .iter()
            .map(|f| (f.name.to_string(), f.kind.to_string(), f.help.to_string()))
            .collect();
        assert_eq!(rendered, listed, "{text}");
        for f in OWN_FAMILIES {
            assert!(reserved(f.name), "{} is not reserved for the sink", f.name);
            // Each listed label appears on the family's samples.
            let sample = text
                .lines()
                .find(|l| l.starts_with(f.name) && !l.starts_with('#'))
                .unwrap_or_else(|| panic!("no sample of {}", f.name));
            for l in f.labels {
                assert!(
                    sample.contains(&format!("{l}=\"")),
                    "{}: {l} in {sample}",
                    f.name
                );
            }
        }
    }
}
