//! Shared by the lab test binaries (`lab.rs`, `lab_events.rs`): the opt-in switch, the
//! lab URI and socket, and a unix-socket proxy in front of libvirtd that a test can cut
//! and restore (a libvirtd restart) or freeze (a hung libvirtd).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub fn lab_uri() -> String {
    std::env::var("VADVISOR_LAB_URI").unwrap_or_else(|_| "qemu:///system".to_string())
}

/// A unix-socket proxy in front of libvirtd's read-only socket that the test can cut
/// and restore (a libvirtd restart) or freeze (a hung libvirtd), without touching the
/// shared daemon.
pub struct Proxy {
    path: PathBuf,
    target: PathBuf,
    frozen: watch::Sender<bool>,
    tasks: Option<JoinSet<()>>,
}

/// Copies one direction, holding data back while the proxy is frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Proxy {
    pub fn new(path: PathBuf, target: PathBuf) -> Self {
        Self {
            path,
            target,
            frozen: watch::channel(false).0,
            tasks: None,
        }
    }

    pub fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind proxy socket");
        let target = self.target.clone();
        let frozen = self.frozen.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                let target = target.clone();
                let frozen = frozen.clone();
                conns.spawn(async move {
                    if let Ok(upstream) = UnixStream::connect(&target).await {
                        let (cr, cw) = client.into_split();
                        let (ur, uw) = upstream.into_split();
                        tokio::join!(
                            pump(cr, uw, frozen.subscribe()),
                            pump(ur, cw, frozen.subscribe())
                        );
                    }
                });
            }
        });
        self.tasks = Some(set);
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// Drops every proxied connection (libvirt sees EOF) and the listener.
    pub async fn down(&mut self) {
        if let Some(mut set) = self.tasks.take() {
            set.shutdown().await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn lab_socket() -> PathBuf {
    PathBuf::from(
        std::env::var("VADVISOR_LAB_SOCKET")
            .unwrap_or_else(|_| "/var/run/libvirt/libvirt-sock-ro".to_string()),
    )
}

pub fn uri_for(socket: &Path) -> String {
    format!("qemu+unix:///system?socket={}", socket.display())
}
