//! A descriptor the agent owns, registered with tokio's reactor (`AsyncFd`). Tokio
//! marks the registration `unsafe` because the descriptor must stay open, and not be
//! replaced, for as long as it is registered: that holds when the registration owns it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` with the current runtime's reactor for readiness to read; the
/// registration owns it (it is deregistered, then closed, when dropped). Must be called
/// within a runtime with I/O enabled.
pub fn register_readable(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of `fd`, so nothing else can close or
    // replace the descriptor while it is registered; `AsyncFd` deregisters it before
    // dropping (closing) it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[tokio::test]
    async fn a_registered_descriptor_reports_readiness_and_is_closed_on_drop() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let fd = register_readable(OwnedFd::from(a)).expect("registered");
        b.write_all(b"x").expect("write");
        let guard = tokio::time::timeout(std::time::Duration::from_secs(5), fd.readable())
            .await
            .expect("readiness within 5 s")
            .expect("readable");
        drop(guard);
        drop(fd);
        // The peer sees the stream end (reset, as the byte sent was never read): the
        // descriptor was closed.
        let mut buf = [0u8; 1];
        match b.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the descriptor is still open: {other:?}"),
        }
    }
}
