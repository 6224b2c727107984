//! The accept loop and per-connection driver of the shared HTTP server: every accepted
//! connection is admitted by the [`Tracker`] (connection limit, header and idle
//! timeouts), optionally completes a TLS handshake, and is served by hyper's HTTP/1
//! connection with the router as its service. Every I/O wrapper passes vectored
//! writes through, so hyper queues response bodies (shared, not copied) instead of
//! flattening each into a per-connection buffer that would keep the size of the
//! largest response for the connection's life. Closing a shed or expired connection
//! drops it (freeing its socket at once); shutdown lets in-flight responses finish.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::connections::{Conn, RequestGuard, Tracker};
use crate::parse_errors::JsonParseErrors;
use crate::write_timeout::WriteTimeout;

/// Where the TLS settings of new connections come from (replaceable at run time).
pub type TlsConfig = tokio::sync::watch::Receiver<Arc<ServerConfig>>;

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tracker: Arc<Tracker>,
    tls: Option<TlsConfig>,
    write_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    tracker.spawn_reaper(shutdown.clone());
    let tasks = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to be freed.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = tracker.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.borrow().clone()));
        let (router, shutdown) = (router.clone(), shutdown.clone());
        tasks.spawn(async move {
            let conn = admitted.conn.clone();
            let io = WriteTimeout::new(stream, write_timeout);
            match acceptor {
                None => drive(io, peer, &conn, router, &shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        r = acceptor.accept(io) => r,
                        _ = conn.closed().cancelled() => return,
                        _ = shutdown.cancelled() => return,
                    };
                    match handshake {
                        Ok(tls) => drive(tls, peer, &conn, router, &shutdown).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    }
                }
            }
            drop(admitted);
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Serves one connection until the client closes it, it is shed or times out, or the
/// server shuts down.
async fn drive<I>(
    io: I,
    peer: SocketAddr,
    conn: &Arc<Conn>,
    router: Router,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = service_conn.request_started();
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = match router.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    inner: body,
                    guard: Some(guard),
                })
            }))
        }
    });
    let io = Activity {
        inner: JsonParseErrors::new(io, conn.clone()),
        conn: conn.clone(),
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        // Shed or expired: dropping the connection closes its socket.
        _ = conn.closed().cancelled() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = conn.closed().cancelled() => {}
            }
        }
    }
}

/// A response body that marks its connection idle again once it ended or was dropped.
struct Tracked {
    inner: Body,
    guard: Option<RequestGuard>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = poll {
            self.guard.take();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Tells the connection's tracker when bytes arrive (the header clock starts).
struct Activity<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_read();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
