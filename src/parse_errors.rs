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

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let status = if this.replacement.is_none() {
            head_status(buf).filter(|s| *s >= 200)
        } else {
            None
        };
        if let Some(status) = status {
            let unaccounted = this.heads >= this.conn.started();
            if unaccounted && matches!(status, 400 | 414 | 431) {
                this.replacement = Some((render(status), 0));
            }
        }
        if this.replacement.is_some() {
            ready!(this.drain(cx))?;
            // hyper's own bytes are consumed; the replacement went out instead.
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if status.is_some() && matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.heads += 1;
        }
        poll
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
}
