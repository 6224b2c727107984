//! Throw-away transient guests for lab tests that need lifecycle events or must kill a
//! guest: they boot the lab's kernel and initramfs (no disk, no NIC), never touch the
//! lab guests, and are destroyed when dropped (test passed or not).

use std::path::Path;
use std::time::Duration;

use super::{virsh, virsh_quiet};

const LAB_CACHE: &str = "/var/lib/vadvisor-lab/cache";

pub struct ThrowawayGuest {
    pub name: String,
}

impl ThrowawayGuest {
    /// Creates (starts) transient guest `name`, destroying a leftover of that name first.
    pub fn start(name: &str) -> ThrowawayGuest {
        for f in ["vmlinuz", "initramfs.gz"] {
            assert!(
                Path::new(LAB_CACHE).join(f).exists(),
                "{LAB_CACHE}/{f} missing: run `scripts/lab.sh up` first"
            );
        }
        virsh_quiet(&["destroy", name]);
        let guest = ThrowawayGuest {
            name: name.to_string(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let xml = dir.path().join("guest.xml");
        std::fs::write(
            &xml,
            format!(
                "<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory>\
                 <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>\
                 <kernel>{LAB_CACHE}/vmlinuz</kernel><initrd>{LAB_CACHE}/initramfs.gz</initrd>\
                 <cmdline>console=ttyS0</cmdline></os><on_poweroff>destroy</on_poweroff>\
                 <devices><controller type='usb' model='none'/><memballoon model='none'/>\
                 </devices></domain>"
            ),
        )
        .expect("write guest xml");
        virsh(&["create", xml.to_str().expect("path")]);
        guest
    }

    /// `virsh destroy` (an operator's forced stop: event Stopped/Destroyed).
    pub fn destroy(&self) {
        virsh(&["destroy", &self.name]);
    }

    /// Kills its QEMU process (SIGKILL): libvirt sees the guest die, not an orderly stop.
    pub fn kill_qemu(&self) {
        let pid = super::qemu_pid(&self.name);
        assert!(super::send_signal(pid, "KILL"), "kill -KILL {pid}");
        let gone = super::wait_for(Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        assert!(gone.is_some(), "QEMU {pid} of {} still runs", self.name);
    }
}

impl Drop for ThrowawayGuest {
    fn drop(&mut self) {
        virsh_quiet(&["destroy", &self.name]);
    }
}
