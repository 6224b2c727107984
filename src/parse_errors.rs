//! JSON bodies for the error responses hyper writes by itself when a request cannot be
//! parsed (400 bad request line or header, 414 URI too long, 431 header too large):
//! such a response is the first one written on the connection that no request handed
//! to the router accounts for, and it is replaced on its way out by the same response
//! with a JSON body, as every other error of the API has.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connections::Conn;

pub struct JsonParseErrors<T> {
    inner: T,
    conn: Arc<Conn>,
    /// Final (non-1xx) response heads written so far.
    heads: u64,
    /// The replacement response and how much of it was written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            conn,
            heads: 0,
            replacement: None,
        }
    }
}

/// The status of a response head at the start of `buf`, if it is one.
fn head_status(buf: &[u8]) -> Option<u16> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    code.parse().ok()
}

/// The full response hyper's bodiless `status` is replaced with.
pub fn render(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        414 => ("URI Too Long", "the request URI is too long"),
        431 => (
            "Request Header Fields Too Large",
            "the request header fields are too large",
        ),
        _ => (
            "Bad Request",
            "malformed HTTP request: the request line or a header could not be parsed",
        ),
    };
    let body =
        serde_json::json!({"error": reason, "message": message, "status": status}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written >= bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes `len` bytes starting with `first` through `write`, or the replacement
    /// instead when they start a response head hyper produced on its own.
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        len: usize,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let status = if self.replacement.is_none() {
            head_status(first).filter(|s| *s >= 200)
        } else {
            None
        };
        if let Some(status) = status {
            let unaccounted = self.heads >= self.conn.started();
            if unaccounted && matches!(status, 400 | 414 | 431) {
                self.replacement = Some((render(status), 0));
            }
        }
        if self.replacement.is_some() {
            ready!(self.drain(cx))?;
            // hyper's own bytes are consumed; the replacement went out instead.
            return Poll::Ready(Ok(len));
        }
        let poll = write(Pin::new(&mut self.inner), cx);
        if status.is_some() && matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.heads += 1;
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, buf, buf.len(), |io, cx| io.poll_write(cx, buf))
    }

    /// Vectored writes let hyper send a response body from its own buffers instead of
    /// copying it into the connection's write buffer; a response head hyper writes
    /// starts the first non-empty slice.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let len = bufs.iter().map(|b| b.len()).sum();
        self.write_with(cx, first, len, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_complete_json_response() {
        let text = String::from_utf8(render(431)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(head_status(b"HTTP/1.1 414 URI Too Long\r\n"), Some(414));
        assert_eq!(head_status(b"{\"a\":1}"), None);
    }

    fn conn() -> Arc<Conn> {
        let limits = crate::connections::Limits {
            header_timeout: std::time::Duration::from_secs(5),
            idle_timeout: std::time::Duration::from_secs(5),
            max_connections: 4,
        };
        let tracker = crate::connections::Tracker::new(limits, vadvisor_api::Health::new());
        let admitted = tracker.admit().expect("admitted");
        admitted.conn.clone()
    }

    /// hyper writes its own 431 head with a vectored write (the path it takes when the
    /// connection supports them): the JSON replacement goes out instead, and the
    /// wrapper reports what the stream below supports.
    #[tokio::test]
    async fn vectored_writes_are_replaced_too() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut io = JsonParseErrors::new(near, conn());
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n";
        let bufs = [
            io::IoSlice::new(b""),
            io::IoSlice::new(head),
            io::IoSlice::new(b"\r\n"),
        ];
        let n = io.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, head.len() + 2, "hyper's bytes count as written");
        io.shutdown().await.unwrap();
        let mut out = String::new();
        far.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.as_bytes(), render(431));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let io = JsonParseErrors::new(tcp, conn());
        assert!(io.is_write_vectored(), "TCP: hyper may queue bodies");
    }
}
