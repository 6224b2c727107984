use std::time::Duration;
use vadvisor_api::{Hypervisor, StatsGroups};
use vadvisor_libvirt::{LibvirtHypervisor, LibvirtSettings};
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}
#[test]
fn probe() {
    let uri = format!("test://{}/tests/fixtures/node.xml", env!("CARGO_MANIFEST_DIR"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let hv = LibvirtHypervisor::start(LibvirtSettings { uri, ..Default::default() });
        assert!(hv.wait_connected(Duration::from_secs(10)).await);
        let g = StatsGroups(0x3f);
        for chunk in 0..10 {
            let r0 = rss();
            for _ in 0..2000 { hv.domain_stats(g).await.unwrap(); }
            println!("chunk {chunk}: {:+} KiB", rss() - r0);
        }
    });
}
