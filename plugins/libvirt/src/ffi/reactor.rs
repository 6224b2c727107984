//! A descriptor the agent owns, registered with tokio's reactor (`AsyncFd`) for reading
//! only: the scheduler's tick timer, the native libvirt client's socket. Tokio marks the
//! registration `unsafe` because the descriptor must stay open, and not be replaced, for
//! as long as it is registered: that holds when the registration owns it.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `fd` (an owned descriptor: an `OwnedFd`, a socket, anything that converts
/// into one) with the current runtime's reactor for readiness to read; the registration
/// owns it (it is deregistered, then closed, when dropped; `into_inner` deregisters it
/// and gives it back). Must be called within a runtime with I/O enabled.
pub fn register_readable<T: AsRawFd + Into<OwnedFd>>(fd: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (it converts into an `OwnedFd`), and the
    // `AsyncFd` takes ownership of `fd`, so nothing else can close or replace the
    // descriptor while it is registered; `AsyncFd` deregisters it before dropping
    // (closing) it or giving it back.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// Waits (at most 5 s) until `fd` reports readiness to read.
    async fn readable_within_5_s<T: AsRawFd>(fd: &AsyncFd<T>) {
        let guard = tokio::time::timeout(std::time::Duration::from_secs(5), fd.readable())
            .await
            .expect("readiness within 5 s")
            .expect("readable");
        drop(guard);
    }

    #[tokio::test]
    async fn a_registered_descriptor_reports_readiness_and_is_closed_on_drop() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let fd = register_readable(OwnedFd::from(a)).expect("registered");
        b.write_all(b"x").expect("write");
        readable_within_5_s(&fd).await;
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

    #[tokio::test]
    async fn a_registered_socket_is_given_back_open_and_wakes_for_reads_only() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let fd = register_readable(a).expect("registered");
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Give the reactor a turn to deliver what the registration reported.
        tokio::task::yield_now().await;
        assert!(
            fd.poll_read_ready(&mut cx).is_pending(),
            "nothing to read yet"
        );
        // Writable all along (an empty socket buffer), but not registered for it: no
        // write readiness is reported, so the daemon reading a call off the socket
        // wakes nobody.
        assert!(fd.poll_write_ready(&mut cx).is_pending());
        b.write_all(b"x").expect("write");
        readable_within_5_s(&fd).await;
        let mut s = fd.into_inner();
        s.write_all(b"ping").expect("still open after into_inner");
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
    }
}
