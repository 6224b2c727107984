//! What libvirt's QEMU driver keeps about a running domain in its status file
//! (`/run/libvirt/qemu/NAME.xml`, written when the domain starts and when it changes):
//! the QEMU process, each online vCPU's thread, and the domain's vCPU counts. These are
//! the threads libvirt reads the `vcpu` group's counters from (`qemuDomainHelperGetVcpus`
//! in libvirt's `qemu_driver.c`).

use serde::Deserialize;

/// One domain's QEMU process and vCPU threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    /// Lower-case dashed, as libvirt formats it.
    pub uuid: String,
    pub name: String,
    /// The QEMU process.
    pub pid: i32,
    /// `vcpu.current`: the vCPUs online.
    pub current: u32,
    /// `vcpu.maximum`.
    pub maximum: u32,
    /// Each online vCPU's number (the `vcpu.N` libvirt reports) and thread id, in
    /// number order.
    pub vcpus: Vec<(u32, i32)>,
}

/// The status file could not be used (not XML, a field missing or out of range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable libvirt status file: {0}")]
pub struct StatusFileError(pub String);

#[derive(Deserialize)]
struct StatusDoc {
    #[serde(rename = "@pid")]
    pid: i32,
    #[serde(default)]
    vcpus: Option<ThreadsDoc>,
    domain: DomainDoc,
}

#[derive(Deserialize)]
struct ThreadsDoc {
    #[serde(default)]
    vcpu: Vec<ThreadDoc>,
}

#[derive(Deserialize)]
struct ThreadDoc {
    #[serde(rename = "@id")]
    id: u32,
    #[serde(rename = "@pid")]
    pid: i32,
}

#[derive(Deserialize)]
struct DomainDoc {
    name: String,
    uuid: String,
    vcpu: CountDoc,
}

#[derive(Deserialize)]
struct CountDoc {
    #[serde(rename = "@current", default)]
    current: Option<u32>,
    #[serde(rename = "$text")]
    maximum: u32,
}

/// Reads a status file's text. Every online vCPU must have its thread listed (libvirt
/// lists the threads QEMU reported); otherwise the file does not describe them all.
pub fn parse(xml: &str) -> Result<DomainStatus, StatusFileError> {
    let doc: StatusDoc =
        quick_xml::de::from_str(xml).map_err(|e| StatusFileError(e.to_string()))?;
    let maximum = doc.domain.vcpu.maximum;
    let current = doc.domain.vcpu.current.unwrap_or(maximum);
    let mut vcpus: Vec<(u32, i32)> = doc
        .vcpus
        .map(|t| t.vcpu.into_iter().map(|v| (v.id, v.pid)).collect())
        .unwrap_or_default();
    vcpus.sort_unstable();
    if doc.pid <= 0 {
        return Err(StatusFileError(format!("QEMU pid {}", doc.pid)));
    }
    if current > maximum || vcpus.len() != current as usize {
        return Err(StatusFileError(format!(
            "{} vCPU threads listed for {current} online vCPUs (of {maximum})",
            vcpus.len()
        )));
    }
    if let Some((id, tid)) = vcpus.iter().find(|(id, tid)| *tid <= 0 || *id >= maximum) {
        return Err(StatusFileError(format!("vCPU {id} thread {tid}")));
    }
    Ok(DomainStatus {
        uuid: doc.domain.uuid.trim().to_ascii_lowercase(),
        name: doc.domain.name.trim().to_string(),
        pid: doc.pid,
        current,
        maximum,
        vcpus,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The shape of a status file libvirt 9.0 writes (trimmed: the elements this
    /// module does not read are fewer, not different).
    pub(crate) fn status_xml(pid: i32, uuid: &str, vcpu: &str, threads: &[(u32, i32)]) -> String {
        let threads: String = threads
            .iter()
            .map(|(id, tid)| format!("    <vcpu id='{id}' pid='{tid}'/>\n"))
            .collect();
        format!(
            "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n\
             <domstatus state='running' reason='booted' pid='{pid}'>\n\
             \x20 <taint flag='high-privileges'/>\n\
             \x20 <monitor path='/var/lib/libvirt/qemu/domain-67-vadv-lab-1/monitor.sock' type='unix'/>\n\
             \x20 <namespaces>\n    <mount/>\n  </namespaces>\n\
             \x20 <vcpus>\n{threads}  </vcpus>\n\
             \x20 <qemuCaps>\n    <flag name='kvm'/>\n  </qemuCaps>\n\
             \x20 <domain type='qemu' id='67'>\n\
             \x20   <name>vadv-lab-1</name>\n\
             \x20   <uuid>{uuid}</uuid>\n\
             \x20   <memory unit='KiB'>196608</memory>\n\
             \x20   {vcpu}\n\
             \x20   <vcpus>\n      <vcpu id='0' enabled='yes' hotpluggable='no'/>\n    </vcpus>\n\
             \x20   <devices>\n      <disk type='file' device='disk'/>\n    </devices>\n\
             \x20 </domain>\n\
             </domstatus>\n"
        )
    }

    const UUID: &str = "5ad0a0b0-0000-4000-8000-000000000001";

    #[test]
    fn the_process_the_vcpu_threads_and_the_counts_are_read() {
        let xml = status_xml(
            6246,
            UUID,
            "<vcpu placement='static'>2</vcpu>",
            &[(1, 6254), (0, 6253)],
        );
        assert_eq!(
            parse(&xml),
            Ok(DomainStatus {
                uuid: UUID.into(),
                name: "vadv-lab-1".into(),
                pid: 6246,
                current: 2,
                maximum: 2,
                vcpus: vec![(0, 6253), (1, 6254)],
            })
        );
    }

    #[test]
    fn fewer_vcpus_online_than_the_maximum() {
        let xml = status_xml(
            10,
            UUID,
            "<vcpu placement='static' current='1'>4</vcpu>",
            &[(2, 12)],
        );
        let status = parse(&xml).expect("status");
        assert_eq!((status.current, status.maximum), (1, 4));
        assert_eq!(status.vcpus, vec![(2, 12)]);
    }

    #[test]
    fn a_file_that_does_not_list_every_online_vcpu_thread_is_refused() {
        for (vcpu, threads) in [
            ("<vcpu>2</vcpu>", &[(0, 11)][..]),
            ("<vcpu>1</vcpu>", &[][..]),
            ("<vcpu>1</vcpu>", &[(0, 0)][..]),
            ("<vcpu>1</vcpu>", &[(3, 11)][..]),
            (
                "<vcpu current='3'>2</vcpu>",
                &[(0, 11), (1, 12), (2, 13)][..],
            ),
        ] {
            let xml = status_xml(10, UUID, vcpu, threads);
            assert!(parse(&xml).is_err(), "{vcpu} {threads:?}");
        }
        assert!(parse(&status_xml(0, UUID, "<vcpu>1</vcpu>", &[(0, 11)])).is_err());
        assert!(parse("<domstatus pid='1'>").is_err());
        assert!(parse("not xml").is_err());
    }
}
