//! Sharding of the bulk statistics call: how many shards a collection uses
//! ([`shard_count`]), which running domain each shard asks for ([`ShardPlan`]), and the
//! merge of the shards' replies ([`merge`]). Pure bookkeeping: the calls themselves are
//! in `stats`. Why and when sharding pays off: docs/performance.md#sharding.
//!
//! A shard's domains must be handles of the connection its call runs on (libvirt
//! refuses others), so each shard lists the running domains on its own connection and
//! keeps those the plan gives it. The plan is fixed before the shards start and maps a
//! UUID to one shard whatever each listing holds, so a domain listed by every shard is
//! asked for exactly once: by rank in the previous collection's reply (balanced,
//! contiguous in UUID order), and by a hash of its UUID for a domain that reply lacked
//! (started since). Each collection's reply makes the next plan.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use vadvisor_api::DomainStats;

use crate::settings::{BulkShards, DOMAINS_PER_SHARD};

/// How many shards a collection uses: `Fixed(n)` as configured; `Auto` one per
/// [`DOMAINS_PER_SHARD`] running domains of the last reply, at most half the permits
/// (so each shard can still be hedged) and at most `cpus`, at least 1.
pub(crate) fn shard_count(
    setting: BulkShards,
    last_domains: usize,
    max_calls: usize,
    cpus: usize,
) -> usize {
    match setting {
        BulkShards::Fixed(n) => n.max(1),
        BulkShards::Auto => {
            let cap = (max_calls / 2).min(cpus).max(1);
            last_domains.div_ceil(DOMAINS_PER_SHARD).clamp(1, cap)
        }
    }
}

/// Which shard asks for which domain.
#[derive(Debug, Default)]
pub(crate) struct ShardPlan {
    shards: usize,
    /// Every domain of the last reply, sorted by UUID.
    known: Vec<Arc<str>>,
    /// Shard of each domain of `known`.
    assigned: HashMap<Arc<str>, usize>,
}

impl ShardPlan {
    /// A plan for `shards` shards over `domains` (the UUIDs of the last reply): sorted
    /// by UUID and cut into `shards` contiguous runs whose sizes differ by at most one.
    pub(crate) fn new(shards: usize, domains: impl IntoIterator<Item = Arc<str>>) -> Self {
        let shards = shards.max(1);
        let mut known: Vec<Arc<str>> = domains.into_iter().collect();
        known.sort_unstable();
        known.dedup();
        let n = known.len();
        // One shard needs no map: every domain is its.
        let assigned = if shards == 1 {
            HashMap::new()
        } else {
            known
                .iter()
                .enumerate()
                .map(|(rank, uuid)| (Arc::clone(uuid), rank * shards / n.max(1)))
                .collect()
        };
        Self {
            shards,
            known,
            assigned,
        }
    }

    /// The same domains cut into `shards` shards.
    pub(crate) fn resized(&self, shards: usize) -> Self {
        Self::new(shards, self.known.iter().cloned())
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// How many domains the last reply had.
    pub(crate) fn domains(&self) -> usize {
        self.known.len()
    }

    /// The shard that asks for the domain `uuid`.
    pub(crate) fn shard_of(&self, uuid: &str) -> usize {
        match self.assigned.get(uuid) {
            Some(&s) => s,
            None => {
                // Not in the last reply: spread by a hash that every shard computes alike
                // (`DefaultHasher::new` has fixed keys).
                let mut h = DefaultHasher::new();
                uuid.hash(&mut h);
                usize::try_from(h.finish() % self.shards as u64).unwrap_or(0)
            }
        }
    }
}

/// The shards' replies as one: every domain once (the first reply that has it wins),
/// sorted by name, then UUID.
pub(crate) fn merge(replies: Vec<Vec<DomainStats>>) -> Vec<DomainStats> {
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let mut out: Vec<DomainStats> = Vec::with_capacity(replies.iter().map(Vec::len).sum());
    for d in replies.into_iter().flatten() {
        if seen.insert(Arc::clone(&d.domain.uuid)) {
            out.push(d);
        }
    }
    out.sort_by(|a, b| (&a.domain.name, &a.domain.uuid).cmp(&(&b.domain.name, &b.domain.uuid)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vadvisor_api::DomainRef;

    fn uuids(n: usize) -> Vec<Arc<str>> {
        // Not in UUID order, to check the plan sorts.
        (0..n)
            .rev()
            .map(|i| Arc::from(format!("5ad0a0b0-0000-4000-8000-{i:012x}")))
            .collect()
    }

    #[test]
    fn auto_is_one_shard_per_40_domains_capped_by_permits_and_cpus() {
        let auto = BulkShards::Auto;
        assert_eq!(shard_count(auto, 0, 4, 2), 1, "nothing known yet");
        assert_eq!(shard_count(auto, 22, 4, 2), 1);
        assert_eq!(shard_count(auto, 40, 4, 2), 1);
        assert_eq!(shard_count(auto, 41, 4, 2), 2);
        assert_eq!(shard_count(auto, 120, 4, 2), 2, "two CPUs");
        assert_eq!(shard_count(auto, 120, 4, 8), 2, "half of 4 permits");
        assert_eq!(shard_count(auto, 120, 8, 8), 3);
        assert_eq!(shard_count(auto, 250, 16, 8), 7);
        assert_eq!(shard_count(auto, 250, 1, 8), 1, "one permit");
        assert_eq!(
            shard_count(BulkShards::Fixed(3), 5, 4, 1),
            3,
            "as configured"
        );
        assert_eq!(shard_count(BulkShards::Fixed(1), 500, 16, 16), 1);
    }

    #[test]
    fn the_split_is_balanced_and_contiguous_and_covers_every_domain_once() {
        for (n, k) in [(120, 2), (121, 3), (250, 4), (5, 3), (2, 3), (1, 1)] {
            let plan = ShardPlan::new(k, uuids(n));
            assert_eq!((plan.shards(), plan.domains()), (k, n));
            let mut sizes = vec![0usize; k];
            let mut sorted = uuids(n);
            sorted.sort();
            let mut last = 0;
            for u in &sorted {
                let s = plan.shard_of(u);
                assert!(s < k);
                assert!(s >= last, "contiguous in UUID order ({n}, {k})");
                last = s;
                sizes[s] += 1;
            }
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "{n}/{k}: {sizes:?}"
            );
            assert_eq!(sizes.iter().sum::<usize>(), n);
        }
        // 120 in 2: exactly the lower and upper half.
        let plan = ShardPlan::new(2, uuids(120));
        assert_eq!(plan.shard_of("5ad0a0b0-0000-4000-8000-00000000003b"), 0);
        assert_eq!(plan.shard_of("5ad0a0b0-0000-4000-8000-00000000003c"), 1);
        let resized = plan.resized(3);
        assert_eq!((resized.shards(), resized.domains()), (3, 120));
        assert_eq!(resized.shard_of("5ad0a0b0-0000-4000-8000-000000000028"), 1);
    }

    #[test]
    fn a_domain_new_since_the_plan_goes_to_one_shard_by_hash() {
        let plan = ShardPlan::new(3, uuids(10));
        let mut hit = [0usize; 3];
        for i in 0..300 {
            let u = format!("new-{i}");
            let s = plan.shard_of(&u);
            assert_eq!(s, ShardPlan::new(3, uuids(10)).shard_of(&u), "stable");
            hit[s] += 1;
        }
        assert!(hit.iter().all(|&h| h > 50), "spread: {hit:?}");
        // No domain known yet: still spread over every shard.
        let empty = ShardPlan::new(2, Vec::new());
        let shards: HashSet<usize> = (0..20).map(|i| empty.shard_of(&format!("u{i}"))).collect();
        assert_eq!(shards.len(), 2);
    }

    fn stats(uuid: &str, name: &str, tag: &str) -> DomainStats {
        let mut d = DomainStats::new(DomainRef::new(uuid, name));
        d.errors.push(tag.to_string());
        d
    }

    #[test]
    fn merge_keeps_every_domain_once_sorted_by_name() {
        let merged = merge(vec![
            vec![stats("u3", "web-3", "a"), stats("u1", "web-1", "a")],
            vec![],
            vec![stats("u2", "web-2", "c"), stats("u1", "web-1", "c")],
        ]);
        let names: Vec<&str> = merged.iter().map(|d| &*d.domain.name).collect();
        assert_eq!(names, ["web-1", "web-2", "web-3"]);
        assert_eq!(merged[0].errors, ["a"], "the first reply wins");
        assert!(merge(Vec::new()).is_empty());
    }
}
