//! Which local socket a libvirt URI talks to, and the name the daemon is asked to open,
//! for the URIs the native client serves: a local daemon over a unix socket
//! (`qemu:///system`, `qemu+unix:///system`, either with `?socket=PATH`). Anything
//! else (remote hosts, `test:///`, per-user `session` daemons, other parameters) is
//! left to libvirt's client library.

use std::path::{Path, PathBuf};

/// Where to connect and what to open there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub socket: PathBuf,
    /// The URI the daemon opens: the driver and path, without the transport.
    pub name: String,
}

/// The read-only sockets of a system daemon, in the order libvirt's client tries them:
/// the monolithic libvirtd's, then the per-driver daemon's (`virtqemud` for `qemu`).
fn default_sockets(driver: &str) -> Vec<PathBuf> {
    let mut v = vec![
        PathBuf::from("/run/libvirt/libvirt-sock-ro"),
        PathBuf::from("/var/run/libvirt/libvirt-sock-ro"),
    ];
    v.push(PathBuf::from(format!("/run/libvirt/virt{driver}d-sock-ro")));
    v
}

/// The endpoint of `uri`, or `None` when it is not a local unix-socket URI this client
/// serves. `exists` says whether a socket path exists (the default sockets are tried
/// in order; a `socket=` path is taken as given).
pub fn endpoint(uri: &str, exists: impl Fn(&Path) -> bool) -> Option<Endpoint> {
    let (scheme, rest) = uri.split_once("://")?;
    let (driver, transport) = match scheme.split_once('+') {
        Some((d, t)) => (d, Some(t)),
        None => (scheme, None),
    };
    if !matches!(transport, None | Some("unix"))
        || driver.is_empty()
        || !driver.bytes().all(|b| b.is_ascii_alphanumeric())
        || driver == "test"
    {
        return None;
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // No host (local), and the system daemon.
    if path != "/system" {
        return None;
    }
    let mut socket = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("socket", value)) if !value.is_empty() && !value.contains('%') => {
                socket = Some(PathBuf::from(value));
            }
            _ => return None,
        }
    }
    let socket = match socket {
        Some(s) => s,
        None => default_sockets(driver).into_iter().find(|p| exists(p))?,
    };
    Some(Endpoint {
        socket,
        name: format!("{driver}:///system"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_exist(_: &Path) -> bool {
        true
    }

    #[test]
    fn local_system_uris_map_to_their_socket() {
        let e = endpoint("qemu:///system", all_exist).unwrap();
        assert_eq!(e.socket, Path::new("/run/libvirt/libvirt-sock-ro"));
        assert_eq!(e.name, "qemu:///system");
        let e = endpoint("qemu+unix:///system?socket=/run/lab/libvirt-sock", |_| {
            false
        })
        .unwrap();
        assert_eq!(e.socket, Path::new("/run/lab/libvirt-sock"));
        assert_eq!(e.name, "qemu:///system");
        // Only the per-driver daemon's socket exists.
        let e = endpoint("qemu:///system", |p| p.ends_with("virtqemud-sock-ro")).unwrap();
        assert_eq!(e.socket, Path::new("/run/libvirt/virtqemud-sock-ro"));
    }

    #[test]
    fn everything_else_is_left_to_the_library() {
        for uri in [
            "test:///default",
            "qemu+ssh://host/system",
            "qemu+tcp://host/system",
            "qemu://host/system",
            "qemu:///session",
            "qemu:///system?no_verify=1",
            "qemu:///system?socket=",
            "qemu:///system?socket=/a%20b",
            "qemu+tls:///system",
            "not a uri",
        ] {
            assert_eq!(endpoint(uri, all_exist), None, "{uri}");
        }
        assert_eq!(endpoint("qemu:///system", |_| false), None, "no socket");
    }
}
