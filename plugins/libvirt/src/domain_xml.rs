//! The few facts the per-domain fallback needs from `virDomainGetXMLDesc`: the disks
//! (device kind, target dev, source path) and the network interfaces (type, target dev,
//! MAC), read with quick-xml typed structs.
//!
//! Tolerant by design: a disk or interface without a target, a cdrom without media,
//! network disks, hostdev interfaces and devices this module does not know are all
//! fine. Only a document that is not XML (or has no `<domain>` shape at all) is an error.

use serde::Deserialize;

/// The devices of one domain, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainDevices {
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
}

/// One `<disk>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    /// `@type`: `file`, `block`, `network`, `volume`, … (`None` if absent).
    pub kind: Option<String>,
    /// `@device`: `disk` (the default), `cdrom`, `floppy`, `lun`.
    pub device: String,
    /// `target/@dev` (`vda`, `hdc`, …).
    pub target: Option<String>,
    /// What libvirt reports as the disk path: `source/@file`, `source/@dev`,
    /// `source/@dir` or (network disks) `source/@name`.
    pub source: Option<String>,
    /// `source/@protocol` of a network disk (`rbd`, `nbd`, …).
    pub protocol: Option<String>,
    /// Whether any media is attached (a `<source>` that names something). A cdrom tray
    /// without media has none; statistics calls on it are pointless.
    pub has_media: bool,
}

/// One `<interface>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    /// `@type`: `network`, `bridge`, `ethernet`, `hostdev`, …
    pub kind: String,
    /// `target/@dev`: the host-side device; absent for hostdev / SR-IOV interfaces.
    pub target: Option<String>,
    /// `mac/@address`.
    pub mac: Option<String>,
}

/// The XML could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainXmlError(pub String);

impl std::fmt::Display for DomainXmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable domain XML: {}", self.0)
    }
}

impl std::error::Error for DomainXmlError {}

#[derive(Deserialize)]
struct DomainDoc {
    #[serde(default)]
    devices: Option<DevicesDoc>,
}

#[derive(Deserialize)]
struct DevicesDoc {
    /// Every child element in order; devices of other kinds are skipped.
    #[serde(rename = "$value", default)]
    items: Vec<DeviceDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DeviceDoc {
    Disk(DiskDoc),
    Interface(InterfaceDoc),
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct DiskDoc {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
    #[serde(rename = "@device", default)]
    device: Option<String>,
    #[serde(default)]
    target: Option<DevAttr>,
    #[serde(default)]
    source: Option<DiskSourceDoc>,
}

#[derive(Deserialize, Default)]
struct DiskSourceDoc {
    #[serde(rename = "@file", default)]
    file: Option<String>,
    #[serde(rename = "@dev", default)]
    dev: Option<String>,
    #[serde(rename = "@dir", default)]
    dir: Option<String>,
    #[serde(rename = "@name", default)]
    name: Option<String>,
    #[serde(rename = "@protocol", default)]
    protocol: Option<String>,
    #[serde(rename = "@pool", default)]
    pool: Option<String>,
    #[serde(rename = "@volume", default)]
    volume: Option<String>,
}

#[derive(Deserialize, Default)]
struct InterfaceDoc {
    #[serde(rename = "@type", default)]
    kind: Option<String>,
    #[serde(default)]
    target: Option<DevAttr>,
    #[serde(default)]
    mac: Option<MacDoc>,
}

#[derive(Deserialize, Default)]
struct DevAttr {
    #[serde(rename = "@dev", default)]
    dev: Option<String>,
}

#[derive(Deserialize, Default)]
struct MacDoc {
    #[serde(rename = "@address", default)]
    address: Option<String>,
}

/// `Some(s)` unless `s` is absent or blank.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Reads the disks and interfaces of a domain XML document.
pub fn parse(xml: &str) -> Result<DomainDevices, DomainXmlError> {
    let doc: DomainDoc = quick_xml::de::from_str(xml).map_err(|e| DomainXmlError(e.to_string()))?;
    let mut out = DomainDevices::default();
    for item in doc.devices.map(|d| d.items).unwrap_or_default() {
        match item {
            DeviceDoc::Disk(d) => {
                let src = d.source.unwrap_or_default();
                // Mirrors libvirt's virStorageSourceIsEmpty: local storage needs a path,
                // a network disk a protocol.
                let has_media = [
                    &src.file,
                    &src.dev,
                    &src.dir,
                    &src.name,
                    &src.protocol,
                    &src.pool,
                    &src.volume,
                ]
                .iter()
                .any(|s| s.as_deref().is_some_and(|s| !s.trim().is_empty()));
                let protocol = non_empty(src.protocol);
                let source = non_empty(src.file)
                    .or(non_empty(src.dev))
                    .or(non_empty(src.dir))
                    .or(non_empty(src.name));
                out.disks.push(Disk {
                    kind: non_empty(d.kind),
                    device: non_empty(d.device).unwrap_or_else(|| "disk".to_string()),
                    target: non_empty(d.target.and_then(|t| t.dev)),
                    source,
                    protocol,
                    has_media,
                });
            }
            DeviceDoc::Interface(i) => out.interfaces.push(Interface {
                kind: non_empty(i.kind).unwrap_or_default(),
                target: non_empty(i.target.and_then(|t| t.dev)),
                mac: non_empty(i.mac.and_then(|m| m.address)),
            }),
            DeviceDoc::Other => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
<domain type='kvm' id='3' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <uuid>5ad0a0b0-0000-4000-8000-000000000001</uuid>
  <metadata><app:thing xmlns:app="urn:x">text &amp; more</app:thing></metadata>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/vm1.qcow2' index='1'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='pool/image'>
        <host name='mon1' port='6789'/>
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='lun'>
      <source dev='/dev/sdz'/>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
    </interface>
    <interface type='hostdev' managed='yes'>
      <mac address='52:54:00:6d:90:02'/>
      <source>
        <address type='pci' domain='0x0000' bus='0x06' slot='0x02' function='0x0'/>
      </source>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <disk type='volume' device='disk'>
      <source pool='default' volume='data.img'/>
      <target dev='vdc'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd'><host name='nbd1' port='10809'/></source>
      <target dev='vdd'/>
    </disk>
    <disk type='dir' device='floppy'>
      <source dir='/srv/floppy'/>
      <target dev='fda'/>
    </disk>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
  <seclabel type='none'/>
  <qemu:commandline><qemu:arg value='-x'/></qemu:commandline>
</domain>"#;

    #[test]
    fn reads_disks_and_interfaces_in_order_even_when_interleaved() {
        let d = parse(FULL).expect("parses");
        let targets: Vec<_> = d.disks.iter().map(|d| d.target.as_deref()).collect();
        assert_eq!(
            targets,
            [
                Some("vda"),
                Some("sda"),
                Some("vdb"),
                Some("sdb"),
                Some("vdc"),
                Some("vdd"),
                Some("fda")
            ]
        );
        assert_eq!(
            d.disks[0].source.as_deref(),
            Some("/var/lib/libvirt/images/vm1.qcow2")
        );
        assert_eq!(d.disks[0].device, "disk");
        assert!(d.disks[0].has_media);
        // cdrom without media
        assert_eq!(d.disks[1].device, "cdrom");
        assert_eq!(d.disks[1].source, None);
        assert!(!d.disks[1].has_media);
        // network disk: path is the source name
        assert_eq!(d.disks[2].kind.as_deref(), Some("network"));
        assert_eq!(d.disks[2].protocol.as_deref(), Some("rbd"));
        assert_eq!(d.disks[2].source.as_deref(), Some("pool/image"));
        assert_eq!(d.disks[3].source.as_deref(), Some("/dev/sdz"));
        assert_eq!(d.disks[3].device, "lun");
        // volume disk: has media, but no path known from the XML
        assert!(d.disks[4].has_media);
        assert_eq!(d.disks[4].source, None);
        // nameless nbd disk: media (a protocol), no path
        assert!(d.disks[5].has_media);
        assert_eq!(d.disks[5].source, None);
        assert_eq!(d.disks[6].source.as_deref(), Some("/srv/floppy"));
        assert_eq!(d.disks[6].device, "floppy");

        assert_eq!(d.interfaces.len(), 2);
        assert_eq!(d.interfaces[0].kind, "network");
        assert_eq!(d.interfaces[0].target.as_deref(), Some("vnet0"));
        assert_eq!(d.interfaces[0].mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        assert_eq!(d.interfaces[1].kind, "hostdev");
        assert_eq!(d.interfaces[1].target, None);
        assert_eq!(d.interfaces[1].mac.as_deref(), Some("52:54:00:6d:90:02"));
    }

    #[test]
    fn missing_pieces_are_tolerated() {
        let d = parse(
            "<domain><devices><disk><target/></disk><disk device='cdrom'><source file=''/></disk>\
             <interface/><interface type='bridge'><target dev='  '/></interface></devices></domain>",
        )
        .expect("parses");
        assert_eq!(d.disks.len(), 2);
        assert_eq!(
            d.disks[0],
            Disk {
                device: "disk".into(),
                ..Disk::default()
            }
        );
        assert_eq!(d.disks[1].device, "cdrom");
        assert!(!d.disks[1].has_media);
        assert_eq!(d.interfaces.len(), 2);
        assert_eq!(d.interfaces[0], Interface::default());
        assert_eq!(d.interfaces[1].target, None);
    }

    #[test]
    fn no_devices_at_all() {
        assert_eq!(
            parse("<domain type='test'><name>x</name></domain>").unwrap(),
            DomainDevices::default()
        );
        assert_eq!(
            parse("<domain><devices/></domain>").unwrap(),
            DomainDevices::default()
        );
        assert_eq!(
            parse("<domain><devices></devices></domain>").unwrap(),
            DomainDevices::default()
        );
    }

    #[test]
    fn not_xml_is_an_error() {
        assert!(parse("this is not xml <<<").is_err());
        assert!(parse("").is_err());
        assert!(parse("<domain><devices><disk></devices></domain>").is_err());
    }
}
