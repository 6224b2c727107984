//! Partial statistics made visible. With `VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT`, the
//! bulk call skips the monitor-backed part of a domain whose job is held (a hung QEMU,
//! a migration, another client's query): the domain is still in the reply, with its
//! `block` group reduced to names and paths, its `balloon` group to `current` and
//! `maximum`, and so on. Such a record looks valid; this module flags it.
//!
//! [`GroupMemory`] remembers, per domain and per connection, which groups the domain has
//! reported *in full* before (one byte per domain). When a requested group that the
//! domain reported in full earlier is now missing or reduced, an error like
//! ``stats group `block` unavailable (domain busy or not responding)`` is added to the
//! domain's `errors`, so the sample counts as incomplete.
//!
//! "In full" means the group's key fields are there: `cpu.time`; any `balloon.*` besides
//! `current`/`maximum` (the guest's statistics); some `vcpu.N.time`; some
//! `net.N.rx.bytes`; some `block.N.rd.reqs`; any `perf.*`. Each is looked up where it
//! would be (devices `0..count` of the group's `count`), not found by a pass over every
//! key: a handful of binary searches per domain on every tick. The memory is cleared on
//! a new connection, and a domain that leaves the reply (shut off) is forgotten, so a
//! restarted domain starts afresh.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;
use vadvisor_api::{DomainStats, IndexedKey, Params, StatsGroups, TypedValue};

/// Devices looked at by index at most (a `count` beyond it is not believed).
const MAX_DEVICES: u64 = 4096;

/// The groups `params` reports in full, as a `StatsGroups` bit set (`state` excluded).
pub(crate) fn full_groups(params: &Params) -> u32 {
    let balloon = params.section("balloon.");
    let basic = ["current", "maximum"]
        .into_iter()
        .filter(|f| balloon.get(f).is_some())
        .count();
    [
        (params.contains_key("cpu.time"), StatsGroups::CPU_TOTAL),
        (balloon.len() > basic, StatsGroups::BALLOON),
        (
            some_device_has(params, "vcpu", "vcpu.maximum", "time"),
            StatsGroups::VCPU,
        ),
        (
            some_device_has(params, "net", "net.count", "rx.bytes"),
            StatsGroups::INTERFACE,
        ),
        (
            some_device_has(params, "block", "block.count", "rd.reqs"),
            StatsGroups::BLOCK,
        ),
        (!params.section("perf.").is_empty(), StatsGroups::PERF),
        (
            params.contains_key("dirtyrate.calc_status"),
            StatsGroups::DIRTYRATE,
        ),
    ]
    .into_iter()
    .filter(|(present, _)| *present)
    .fold(0, |full, (_, group)| full | group.0)
}

/// Whether some `<group>.<N>.<field>` is present: devices `0..count` by `count_key`,
/// or, without a count, any index found in the group's keys.
fn some_device_has(params: &Params, group: &str, count_key: &str, field: &str) -> bool {
    match params.get(count_key).and_then(TypedValue::as_u64) {
        Some(count) => (0..count.min(MAX_DEVICES)).any(|n| {
            IndexedKey::new(group, n as u32, field)
                .as_str()
                .is_some_and(|k| params.contains_key(k))
        }),
        None => params
            .indexed_sections(group)
            .iter()
            .any(|(_, s)| s.get(field).is_some()),
    }
}

/// What was missing, for the error text.
fn describe(group: StatsGroups) -> &'static str {
    match group {
        StatsGroups::CPU_TOTAL => "no CPU time",
        StatsGroups::BALLOON => "no guest memory statistics",
        StatsGroups::VCPU => "no vCPU times",
        StatsGroups::INTERFACE => "no traffic counters",
        StatsGroups::BLOCK => "no I/O counters",
        _ => "fields missing",
    }
}

/// The error for a group that is missing (`present == false`) or reduced.
pub(crate) fn message(group: StatsGroups, prefix: &str, present: bool) -> String {
    if present {
        format!(
            "stats group `{prefix}` partial: {} (domain busy or not responding)",
            describe(group)
        )
    } else {
        format!("stats group `{prefix}` unavailable (domain busy or not responding)")
    }
}

/// Per connection: the groups each domain reported in full before.
#[derive(Debug, Default)]
pub(crate) struct GroupMemory {
    generation: u64,
    seen: HashMap<Arc<str>, u32, FxBuildHasher>,
}

impl GroupMemory {
    /// Checks one reply of connection `generation` for `requested` groups: adds an error
    /// to every domain that misses a group it reported in full earlier, then remembers
    /// what this reply had. Domains absent from the reply are forgotten. A reply from an
    /// older connection than the last one seen is left alone.
    pub(crate) fn check(
        &mut self,
        generation: u64,
        requested: StatsGroups,
        stats: &mut [DomainStats],
    ) {
        if generation < self.generation {
            return;
        }
        if generation > self.generation {
            self.generation = generation;
            self.seen.clear();
        }
        let mut next = HashMap::with_capacity_and_hasher(stats.len(), FxBuildHasher);
        for d in stats.iter_mut() {
            let full = full_groups(&d.params);
            let before = self.seen.get(&d.domain.uuid).copied().unwrap_or(0);
            let lost = before & requested.0 & !full;
            if lost != 0 {
                for (group, prefix) in StatsGroups::ALL {
                    if lost & group.0 != 0 {
                        d.errors.push(message(group, prefix, d.has_group(prefix)));
                    }
                }
            }
            next.insert(Arc::clone(&d.domain.uuid), before | full);
        }
        self.seen = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vadvisor_api::DomainRef;

    /// Every requested group but perf, as the agent's cpu+memory+block+net collectors ask.
    const REQUESTED: StatsGroups = StatsGroups(
        StatsGroups::STATE.0
            | StatsGroups::CPU_TOTAL.0
            | StatsGroups::BALLOON.0
            | StatsGroups::VCPU.0
            | StatsGroups::INTERFACE.0
            | StatsGroups::BLOCK.0,
    );

    fn record(uuid: &str, keys: &[&str]) -> DomainStats {
        let mut d = DomainStats::new(DomainRef::new(uuid, format!("vm-{uuid}")));
        for k in keys {
            let v = if k.ends_with(".name") || k.ends_with(".path") {
                TypedValue::String("x".into())
            } else {
                TypedValue::ULLong(1)
            };
            d.params.insert(k, v);
        }
        d
    }

    /// What libvirt 9.0 returns for a running lab guest (trimmed).
    const FULL: &[&str] = &[
        "state.state",
        "state.reason",
        "cpu.time",
        "cpu.user",
        "cpu.system",
        "balloon.current",
        "balloon.maximum",
        "balloon.unused",
        "balloon.rss",
        "vcpu.current",
        "vcpu.maximum",
        "vcpu.0.state",
        "vcpu.0.time",
        "net.count",
        "net.0.name",
        "net.0.rx.bytes",
        "net.0.tx.bytes",
        "block.count",
        "block.0.name",
        "block.0.path",
        "block.0.rd.reqs",
        "block.0.rd.bytes",
        "block.0.allocation",
    ];

    /// What it returns for the same guest while its QEMU is stopped (SIGSTOP) and
    /// another call holds its job: measured in the lab.
    const BUSY: &[&str] = &[
        "state.state",
        "state.reason",
        "cpu.time",
        "cpu.user",
        "cpu.system",
        "balloon.current",
        "balloon.maximum",
        "vcpu.current",
        "vcpu.maximum",
        "vcpu.0.state",
        "vcpu.0.time",
        "net.count",
        "net.0.name",
        "net.0.rx.bytes",
        "net.0.tx.bytes",
        "block.count",
        "block.0.name",
        "block.0.path",
        "block.0.backingIndex",
    ];

    /// The definition of "in full", by a pass over every key (what `full_groups` did
    /// before it looked the key fields up where they would be).
    fn full_groups_by_scan(params: &Params) -> u32 {
        let indexed = |rest: &str, field: &str| {
            rest.split_once('.').is_some_and(|(n, f)| {
                f == field && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
            })
        };
        let mut full = 0;
        for key in params.keys() {
            let Some((group, rest)) = key.split_once('.') else {
                continue;
            };
            let bit = match group {
                "cpu" if rest == "time" => StatsGroups::CPU_TOTAL,
                "balloon" if rest != "current" && rest != "maximum" => StatsGroups::BALLOON,
                "vcpu" if indexed(rest, "time") => StatsGroups::VCPU,
                "net" if indexed(rest, "rx.bytes") => StatsGroups::INTERFACE,
                "block" if indexed(rest, "rd.reqs") => StatsGroups::BLOCK,
                "perf" => StatsGroups::PERF,
                "dirtyrate" if rest == "calc_status" => StatsGroups::DIRTYRATE,
                _ => continue,
            };
            full |= bit.0;
        }
        full
    }

    /// One group's keys as libvirt spells them: `count` devices (its count key present
    /// or not), each with some of `fields`.
    fn device_keys(
        group: &'static str,
        count_key: &'static str,
        fields: &'static [&'static str],
    ) -> impl Strategy<Value = Vec<String>> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), fields.len()), 0..4),
            any::<bool>(),
        )
            .prop_map(move |(devices, counted)| {
                let mut keys = Vec::new();
                if counted {
                    keys.push(format!("{count_key}={}", devices.len()));
                }
                for (n, has) in devices.iter().enumerate() {
                    for (f, _) in fields.iter().zip(has).filter(|(_, h)| **h) {
                        keys.push(format!("{group}.{n}.{f}"));
                    }
                }
                keys
            })
    }

    fn any_record() -> impl Strategy<Value = Vec<String>> {
        let single = proptest::sample::subsequence(
            vec![
                "cpu.time",
                "cpu.user",
                "balloon.current",
                "balloon.maximum",
                "balloon.rss",
                "balloon.unused",
                "perf.cmt",
                "dirtyrate.calc_status",
                "dirtyrate.megabytes_per_second",
                "vcpu.current",
                "blocked.0.rd.reqs",
            ],
            0..=11,
        );
        (
            single,
            device_keys("vcpu", "vcpu.maximum", &["state", "time", "wait"]),
            device_keys("net", "net.count", &["name", "rx.bytes", "tx.bytes"]),
            device_keys(
                "block",
                "block.count",
                &["name", "path", "rd.reqs", "rd.bytes"],
            ),
        )
            .prop_map(|(single, vcpu, net, block)| {
                single
                    .into_iter()
                    .map(str::to_string)
                    .chain(vcpu)
                    .chain(net)
                    .chain(block)
                    .collect()
            })
    }

    proptest::proptest! {
        /// Looking the key fields up where they would be finds what a pass over every
        /// key finds, in any record libvirt could send (counts present or not).
        #[test]
        fn looked_up_groups_match_a_pass_over_every_key(keys in any_record()) {
            let mut params = Params::new();
            for k in &keys {
                let (key, value) = match k.split_once('=') {
                    Some((key, n)) => (key, TypedValue::UInt(n.parse().unwrap())),
                    None => (k.as_str(), TypedValue::ULLong(1)),
                };
                params.insert(key, value);
            }
            proptest::prop_assert_eq!(full_groups(&params), full_groups_by_scan(&params), "{:?}", keys);
        }
    }

    #[test]
    fn full_groups_are_recognised() {
        let g = full_groups(&record("a", FULL).params);
        assert_eq!(g, REQUESTED.0 & !StatsGroups::STATE.0);
        let g = full_groups(&record("a", BUSY).params);
        assert_eq!(
            g,
            StatsGroups::CPU_TOTAL.0 | StatsGroups::VCPU.0 | StatsGroups::INTERFACE.0
        );
        // Look-alikes do not count.
        let g = full_groups(
            &record(
                "a",
                &[
                    "cpu.timex",
                    "vcpu.maximum",
                    "vcpu.x.time",
                    "net.0.rx.bytesx",
                    "block..rd.reqs",
                    "blockx.0.rd.reqs",
                ],
            )
            .params,
        );
        assert_eq!(g, 0);
        assert_eq!(
            full_groups(&record("a", &["perf.cmt"]).params),
            StatsGroups::PERF.0
        );
    }

    #[test]
    fn a_busy_domain_is_flagged_and_recovers() {
        let mut mem = GroupMemory::default();
        let mut reply = vec![record("a", FULL), record("b", FULL)];
        mem.check(1, REQUESTED, &mut reply);
        assert!(
            reply.iter().all(|d| d.errors.is_empty()),
            "first reply: nothing to compare"
        );

        let mut reply = vec![record("a", BUSY), record("b", FULL)];
        mem.check(1, REQUESTED, &mut reply);
        assert_eq!(
            reply[0].errors,
            [
                "stats group `balloon` partial: no guest memory statistics (domain busy or not responding)",
                "stats group `block` partial: no I/O counters (domain busy or not responding)",
            ]
        );
        assert!(reply[1].errors.is_empty());

        // Still busy: flagged again (the memory is sticky while the domain stays).
        let mut reply = vec![record("a", BUSY), record("b", FULL)];
        mem.check(1, REQUESTED, &mut reply);
        assert_eq!(reply[0].errors.len(), 2);

        // Back to normal.
        let mut reply = vec![record("a", FULL), record("b", FULL)];
        mem.check(1, REQUESTED, &mut reply);
        assert!(reply.iter().all(|d| d.errors.is_empty()));
    }

    #[test]
    fn a_missing_group_is_unavailable_and_only_requested_groups_count() {
        let mut mem = GroupMemory::default();
        mem.check(1, REQUESTED, &mut [record("a", FULL)]);
        let without_block: Vec<&str> = FULL
            .iter()
            .copied()
            .filter(|k| !k.starts_with("block."))
            .collect();
        let mut reply = vec![record("a", &without_block)];
        mem.check(1, REQUESTED, &mut reply);
        assert_eq!(
            reply[0].errors,
            ["stats group `block` unavailable (domain busy or not responding)"]
        );
        // A call that asks for cpu only does not judge the groups it did not ask for,
        // and does not forget them either.
        let mut reply = vec![record("a", &["state.state", "cpu.time"])];
        mem.check(1, StatsGroups::STATE | StatsGroups::CPU_TOTAL, &mut reply);
        assert!(reply[0].errors.is_empty());
        let mut reply = vec![record("a", BUSY)];
        mem.check(1, REQUESTED, &mut reply);
        assert_eq!(
            reply[0].errors.len(),
            2,
            "balloon and block still remembered"
        );
    }

    #[test]
    fn groups_never_reported_in_full_are_not_flagged() {
        // No balloon driver in the guest, no disks: never full, never flagged.
        let mut mem = GroupMemory::default();
        let keys = [
            "state.state",
            "cpu.time",
            "balloon.current",
            "balloon.maximum",
            "block.count",
        ];
        for _ in 0..3 {
            let mut reply = vec![record("a", &keys)];
            mem.check(1, REQUESTED, &mut reply);
            assert!(reply[0].errors.is_empty(), "{:?}", reply[0].errors);
        }
    }

    #[test]
    fn a_new_connection_or_a_restarted_domain_starts_afresh() {
        let mut mem = GroupMemory::default();
        mem.check(1, REQUESTED, &mut [record("a", FULL), record("b", FULL)]);
        // New connection (libvirtd restarted): nothing to compare with yet.
        let mut reply = vec![record("a", BUSY), record("b", FULL)];
        mem.check(2, REQUESTED, &mut reply);
        assert!(reply[0].errors.is_empty());
        // A late reply from the old connection changes nothing.
        let mut reply = vec![record("b", BUSY)];
        mem.check(1, REQUESTED, &mut reply);
        assert!(reply[0].errors.is_empty());
        // `b` shuts off (absent from a reply), then boots: its first reply is not judged.
        mem.check(2, REQUESTED, &mut [record("a", FULL)]);
        let mut reply = vec![record("a", FULL), record("b", BUSY)];
        mem.check(2, REQUESTED, &mut reply);
        assert!(reply[1].errors.is_empty());
        assert_eq!(mem.seen.len(), 2);
    }
}
