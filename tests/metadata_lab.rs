//! Black-box test of VM metadata → `vm_info` labels against the lab (a real libvirtd,
//! `scripts/lab.sh up`): a throw-away guest `vadv-meta-test` with OpenStack Nova-style
//! `<metadata>` gets its display name, project, project id and flavor as labels on
//! `vm_info` (and nowhere else; values cut to `max_value_length`); changing the metadata
//! on the running guest (`virsh metadata --live`: libvirt's metadata-change event)
//! updates them without a restart, well before the specs' periodic refresh. Ignored by a
//! plain `cargo test`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{virsh, wait_for, Agent};

const NAME: &str = "vadv-meta-test";
const NOVA: &str = "http://openstack.org/xmlns/libvirt/nova/1.1";
const LAB_CACHE: &str = "/var/lib/vadvisor-lab/cache";

fn remove_guest() {
    for args in [["destroy", NAME], ["undefine", NAME]] {
        let _ = Command::new("virsh")
            .arg("-c")
            .arg("qemu:///system")
            .args(args)
            .output();
    }
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_guest();
    }
}

fn instance(name: &str, flavor: &str) -> String {
    format!(
        "<nova:instance xmlns:nova='{NOVA}'>\
           <nova:name>{name}</nova:name>\
           <nova:flavor name='{flavor}'><nova:memory>64</nova:memory></nova:flavor>\
           <nova:owner><nova:user uuid='u-1'>alice</nova:user>\
             <nova:project uuid='0f3a9c2e-project'>demo</nova:project></nova:owner>\
         </nova:instance>"
    )
}

fn guest_xml() -> String {
    for f in ["vmlinuz", "initramfs.gz"] {
        assert!(
            Path::new(LAB_CACHE).join(f).exists(),
            "{LAB_CACHE}/{f} missing: run `scripts/lab.sh up` first"
        );
    }
    format!(
        "<domain type='qemu'>
  <name>{NAME}</name>
  <memory unit='MiB'>64</memory>
  <vcpu placement='static'>1</vcpu>
  <metadata>{}</metadata>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{LAB_CACHE}/vmlinuz</kernel>
    <initrd>{LAB_CACHE}/initramfs.gz</initrd>
    <cmdline>console=ttyS0 no_timer_check</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
        instance("web-1", "m1.tiny")
    )
}

const CONFIG: &str =
    "libvirt:\n  uri: qemu:///system\nhttp:\n  listen: {listen}\ncollectors:\n  cpu: {}\n  \
specs:\n    refresh: 10m\nsinks:\n  prometheus:\n    metadata_labels:\n      namespaces:\n        \
nova: http://openstack.org/xmlns/libvirt/nova/1.1\n      labels:\n        \
display_name: metadata/nova:instance/nova:name\n        \
project: metadata/nova:instance/nova:owner/nova:project\n        \
project_id: metadata/nova:instance/nova:owner/nova:project/@uuid\n        \
flavor: metadata/nova:instance/nova:flavor/@name\n        \
user: metadata/nova:instance/nova:owner/nova:user\n      \
allow: [display_name, project, project_id, flavor]\n      max_value_length: 12\n";

/// The agent's `vm_info` line for the guest, and every other line that mentions
/// `needle`.
fn scrape(agent: &Agent, uuid: &str, needle: &str) -> (Option<String>, Vec<String>) {
    let body = agent
        .get("/metrics")
        .expect("GET /metrics")
        .text()
        .expect("body");
    let info = body
        .lines()
        .find(|l| l.starts_with("vm_info{") && l.contains(uuid))
        .map(str::to_string);
    let others = body
        .lines()
        .filter(|l| !l.starts_with("vm_info{") && !l.starts_with('#') && l.contains(needle))
        .map(str::to_string)
        .collect();
    (info, others)
}

#[test]
#[ignore = "needs the lab: scripts/lab.sh up (scripts/test.sh runs it)"]
fn nova_metadata_becomes_vm_info_labels_and_follows_changes() {
    remove_guest();
    let _cleanup = Cleanup;
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = dir.path().join("guest.xml");
    std::fs::write(&xml, guest_xml()).expect("write XML");
    virsh(&["define", xml.to_str().expect("UTF-8")]);
    virsh(&["start", NAME]);
    let uuid = virsh(&["domuuid", NAME]).trim().to_string();

    let agent = Agent::start(CONFIG);
    let first = wait_for(Duration::from_secs(20), || {
        scrape(&agent, &uuid, "demo")
            .0
            .filter(|l| l.contains("project=\"demo\""))
    })
    .expect("vm_info of the guest has its Nova labels within 20 s");
    println!("{first}");
    for want in [
        "display_name=\"web-1\"",
        "project=\"demo\"",
        // Cut to max_value_length (12 characters).
        "project_id=\"0f3a9c2e-pro\"",
        "flavor=\"m1.tiny\"",
    ] {
        assert!(first.contains(want), "{want} missing: {first}");
    }
    assert!(!first.contains("user="), "not in the allow-list: {first}");
    let (_, others) = scrape(&agent, &uuid, "m1.tiny");
    assert!(others.is_empty(), "labels only on vm_info: {others:?}");

    // Change the metadata on the running guest: the metadata-change event makes the
    // specs collector re-read the XML (its periodic refresh is 10 min away).
    let t0 = Instant::now();
    virsh(&[
        "metadata",
        NAME,
        "--uri",
        NOVA,
        "--key",
        "nova",
        "--live",
        "--set",
        // virsh puts the element in the namespace itself: no prefixes here.
        &instance("web-2", "m1.small")
            .replace("nova:", "")
            .replace(&format!(" xmlns:nova='{NOVA}'"), ""),
    ]);
    let changed = wait_for(Duration::from_secs(10), || {
        scrape(&agent, &uuid, "web-2")
            .0
            .filter(|l| l.contains("display_name=\"web-2\""))
    });
    let changed = changed.unwrap_or_else(|| {
        panic!(
            "vm_info did not follow the metadata change within 10 s: {:?}",
            scrape(&agent, &uuid, "web").0
        )
    });
    println!("{changed} ({:.2?} after virsh metadata)", t0.elapsed());
    assert!(changed.contains("flavor=\"m1.small\""), "{changed}");
}
