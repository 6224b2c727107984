//! The per-domain fallback against libvirt's in-process `test` driver, which fills only
//! the `state` group of the bulk call: `test:///default` and a custom node file with
//! domains that have everything, nothing, a paused state or a shut-off state.

use std::time::Duration;

use vadvisor_api::{DomainStats, Hypervisor, StatsGroups, TypedValue};
use vadvisor_libvirt::{BulkShards, LibvirtHypervisor, LibvirtSettings};

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

fn groups() -> StatsGroups {
    StatsGroups::CPU_TOTAL
        | StatsGroups::BALLOON
        | StatsGroups::VCPU
        | StatsGroups::INTERFACE
        | StatsGroups::BLOCK
}

fn fixture_uri() -> String {
    format!(
        "test://{}/tests/fixtures/node.xml",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn start(uri: &str) -> std::sync::Arc<LibvirtHypervisor> {
    let hv = LibvirtHypervisor::start(LibvirtSettings {
        uri: uri.to_string(),
        ..Default::default()
    });
    assert!(
        hv.wait_connected(Duration::from_secs(10)).await,
        "connects to {uri}"
    );
    hv
}

fn find<'a>(stats: &'a [DomainStats], name: &str) -> &'a DomainStats {
    stats
        .iter()
        .find(|d| &*d.domain.name == name)
        .unwrap_or_else(|| panic!("domain {name} missing from {stats:#?}"))
}

/// The index `N` of `block.N.name == dev` (or `net.N.name`).
fn index_of(d: &DomainStats, prefix: &str, dev: &str) -> u32 {
    d.indices(prefix)
        .into_iter()
        .find(|i| d.str(&format!("{prefix}.{i}.name")) == Some(dev))
        .unwrap_or_else(|| panic!("{prefix} {dev} missing in {:#?}", d.params))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_test_driver_is_filled_by_the_fallback() {
    let hv = start("test:///default").await;
    let calls0 = hv.status().calls;
    let stats = hv.domain_stats(groups()).await.expect("stats");
    let calls1 = hv.status().calls;
    let t = stats
        .iter()
        .find(|d| &*d.domain.uuid == TEST_UUID)
        .expect("domain `test`");
    assert_eq!(&*t.domain.name, "test");
    assert_eq!(t.get("state.state"), Some(&TypedValue::Int(1)));
    assert_eq!(t.state().map(|s| s.name()), Some("Running"));
    for key in [
        "cpu.time",
        "cpu.user",
        "cpu.system",
        "vcpu.0.time",
        "vcpu.1.time",
        "net.0.rx.bytes",
        "net.0.rx.pkts",
        "net.0.rx.errs",
        "net.0.rx.drop",
        "net.0.tx.bytes",
        "net.0.tx.pkts",
        "net.0.tx.errs",
        "net.0.tx.drop",
        "block.0.rd.reqs",
        "block.0.rd.bytes",
        "block.0.wr.reqs",
        "block.0.wr.bytes",
        "block.0.capacity",
        "block.0.allocation",
        "block.0.physical",
        "balloon.current",
        "balloon.maximum",
        "balloon.unused",
    ] {
        assert!(t.u64(key).is_some(), "{key} missing in {:#?}", t.params);
    }
    assert_eq!(t.get("vcpu.0.state"), Some(&TypedValue::Int(1)));
    assert_eq!(t.get("vcpu.current"), Some(&TypedValue::UInt(2)));
    assert_eq!(t.get("vcpu.maximum"), Some(&TypedValue::UInt(2)));
    assert_eq!(t.get("net.count"), Some(&TypedValue::UInt(1)));
    assert_eq!(t.str("net.0.name"), Some("testnet0"));
    assert_eq!(t.get("block.count"), Some(&TypedValue::UInt(1)));
    assert_eq!(t.str("block.0.name"), Some("vda"));
    assert_eq!(t.str("block.0.path"), Some("/guest/diskimage1"));
    assert_eq!(
        t.get("balloon.current"),
        Some(&TypedValue::ULLong(2_097_152))
    );
    assert_eq!(
        t.get("balloon.maximum"),
        Some(&TypedValue::ULLong(8_388_608))
    );
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    // Only the requested groups (plus state) are present.
    assert!(!t.has_group("perf"));

    let per_call = calls1 - calls0;
    println!("test:///default: {per_call} libvirt calls for one domain_stats (1 bulk + fallbacks)");
    // 1 bulk + XML + info + CPU + memory + vCPU flags + vCPUs + 1 interface + 2 per disk.
    assert_eq!(per_call, 10);

    let again = hv.domain_stats(groups()).await.expect("stats again");
    let t2 = again
        .iter()
        .find(|d| &*d.domain.uuid == TEST_UUID)
        .expect("domain `test`");
    let (r1, r2) = (t.u64("block.0.rd.reqs"), t2.u64("block.0.rd.reqs"));
    assert!(r2 >= r1, "block.0.rd.reqs went backwards: {r1:?} -> {r2:?}");
    assert_eq!(
        hv.status().calls - calls1,
        per_call,
        "nothing is cached across calls"
    );
    assert!(hv.status().connected);
    hv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_only_is_one_bulk_call() {
    let hv = start("test:///default").await;
    let calls0 = hv.status().calls;
    let stats = hv.domain_stats(StatsGroups::NONE).await.expect("stats");
    assert_eq!(
        hv.status().calls - calls0,
        1,
        "state comes from the bulk reply"
    );
    let t = stats
        .iter()
        .find(|d| &*d.domain.uuid == TEST_UUID)
        .expect("domain `test`");
    assert!(
        t.params.keys().all(|k| k.starts_with("state.")),
        "{:?}",
        t.params
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_node_domains_report_what_they_have() {
    let hv = start(&fixture_uri()).await;
    let stats = hv
        .domain_stats(groups() | StatsGroups::PERF)
        .await
        .expect("stats");
    let mut names: Vec<&str> = stats.iter().map(|d| &*d.domain.name).collect();
    names.sort_unstable();
    assert_eq!(names, ["bare", "full", "paused"], "only active domains");

    // Everything.
    let full = find(&stats, "full");
    assert_eq!(&*full.domain.uuid, "11111111-0000-4000-8000-000000000001");
    assert!(full.errors.is_empty(), "{:?}", full.errors);
    // Balloon: the guest's statistics with their bulk-API names.
    assert_eq!(full.u64("balloon.current"), Some(524_288));
    assert_eq!(full.u64("balloon.maximum"), Some(1_048_576));
    for key in [
        "balloon.swap_in",
        "balloon.swap_out",
        "balloon.major_fault",
        "balloon.minor_fault",
        "balloon.unused",
        "balloon.available",
        "balloon.rss",
        "balloon.usable",
        "balloon.last-update",
        "balloon.disk_caches",
        "balloon.hugetlb_pgalloc",
        "balloon.hugetlb_pgfail",
    ] {
        assert!(
            full.u64(key).is_some(),
            "{key} missing in {:#?}",
            full.params
        );
    }
    // vCPUs: 2 online of 4. The test driver does not model non-contiguous ids (its
    // virDomainGetVcpus reports vCPU 0 and a zeroed entry that also says 0), so only id 0
    // is reported and the duplicate is ignored.
    assert_eq!(full.get("vcpu.current"), Some(&TypedValue::UInt(2)));
    assert_eq!(full.get("vcpu.maximum"), Some(&TypedValue::UInt(4)));
    assert_eq!(full.get("vcpu.0.state"), Some(&TypedValue::Int(1)));
    assert_eq!(full.indices("vcpu"), [0]);
    // Disks: the empty cdrom is listed by name only; the network disk reports its
    // source name as path.
    assert_eq!(full.get("block.count"), Some(&TypedValue::UInt(3)));
    let vda = index_of(full, "block", "vda");
    assert_eq!(
        full.str(&format!("block.{vda}.path")),
        Some("/guest/full.img")
    );
    assert!(full.u64(&format!("block.{vda}.rd.reqs")).is_some());
    assert!(full.u64(&format!("block.{vda}.capacity")).is_some());
    let hdc = index_of(full, "block", "hdc");
    let hdc_keys: Vec<&str> = full
        .params
        .keys()
        .filter(|k| k.starts_with(&format!("block.{hdc}.")))
        .collect();
    assert_eq!(hdc_keys, [format!("block.{hdc}.name")]);
    let vdb = index_of(full, "block", "vdb");
    assert_eq!(full.str(&format!("block.{vdb}.path")), Some("pool/image"));
    assert!(full.u64(&format!("block.{vdb}.wr.bytes")).is_some());
    assert!(full.u64(&format!("block.{vdb}.physical")).is_some());
    // Interfaces: the test driver gives every interface a `testnetN` target (even the
    // hostdev one), so all three report counters.
    assert_eq!(full.get("net.count"), Some(&TypedValue::UInt(3)));
    assert_eq!(full.str("net.0.name"), Some("testnet0"));
    assert_eq!(full.str("net.1.name"), Some("testnet1"));
    assert_eq!(full.str("net.2.name"), Some("testnet2"));
    for i in 0..3 {
        assert!(full.u64(&format!("net.{i}.tx.pkts")).is_some());
    }
    // No per-domain API returns perf counters: the group is just absent, no error.
    assert!(!full.has_group("perf"));

    // Nothing.
    let bare = find(&stats, "bare");
    assert!(bare.errors.is_empty(), "{:?}", bare.errors);
    assert_eq!(bare.get("block.count"), Some(&TypedValue::UInt(0)));
    assert_eq!(bare.get("net.count"), Some(&TypedValue::UInt(0)));
    assert!(bare.indices("block").is_empty() && bare.indices("net").is_empty());
    assert_eq!(bare.get("vcpu.current"), Some(&TypedValue::UInt(1)));
    assert!(bare.u64("cpu.time").is_some());
    // No balloon device: current and maximum memory only, no guest statistics.
    assert_eq!(bare.u64("balloon.current"), Some(262_144));
    assert_eq!(bare.u64("balloon.maximum"), Some(262_144));
    assert!(bare.get("balloon.unused").is_none());

    // Paused: reported with its state and statistics.
    let paused = find(&stats, "paused");
    assert_eq!(paused.state().map(|s| s.name()), Some("Paused"));
    assert!(paused.errors.is_empty(), "{:?}", paused.errors);
    assert_eq!(paused.str("block.0.name"), Some("vda"));
    assert!(paused.u64("block.0.rd.bytes").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_the_connection() {
    let hv = start(&fixture_uri()).await;
    let calls = (0..8).map(|_| {
        let hv = hv.clone();
        tokio::spawn(async move { hv.domain_stats(groups()).await })
    });
    for c in calls {
        let stats = c.await.expect("task").expect("stats");
        assert_eq!(stats.len(), 3);
    }
    hv.shutdown();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), async {
            while hv.status().connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok(),
        "shutdown disconnects"
    );
    let err = hv
        .domain_stats(groups())
        .await
        .expect_err("no stats after shutdown");
    assert!(
        matches!(err, vadvisor_api::HypervisorError::Disconnected(_)),
        "{err}"
    );
}

/// Domain name → its sorted parameter keys and errors (values move between calls).
fn shape(stats: &[DomainStats]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut out: Vec<_> = stats
        .iter()
        .map(|d| {
            (
                d.domain.name.to_string(),
                d.params.keys().map(str::to_string).collect(),
                d.errors.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_collections_report_what_one_call_reports() {
    let one = start(&fixture_uri()).await;
    let expected = shape(&one.domain_stats(groups()).await.expect("one call"));
    assert_eq!(expected.len(), 3, "{expected:?}");
    for shards in [2, 3, 4] {
        let hv = LibvirtHypervisor::start(LibvirtSettings {
            uri: fixture_uri(),
            bulk_shards: BulkShards::Fixed(shards),
            ..Default::default()
        });
        assert!(hv.wait_connected(Duration::from_secs(10)).await);
        // The first collection spreads domains by hash, later ones by the last reply.
        for round in 0..3 {
            let calls0 = hv.status().calls;
            let stats = hv.domain_stats(groups()).await.expect("sharded");
            assert_eq!(shape(&stats), expected, "{shards} shards, round {round}");
            let calls = hv.status().calls - calls0;
            // Each shard lists; at most one list-stats call per shard; the fallback
            // (the test driver fills only `state`) adds the same calls as one call does.
            assert!(calls > shards as u64, "{shards} shards: {calls} calls");
        }
        hv.shutdown();
    }
    one.shutdown();
}
