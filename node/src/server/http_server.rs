//! The HTTP server loop and its limits: every connection is bounded in time and in number, so
//! slow, silent or flooding clients cannot exhaust the node.
//!
//! - **Connections**: at most `max_connections` open at once, counted from `accept` (peer links
//!   and not-yet-classified connections too, see [`super::transport::SplitListener`]); beyond it a
//!   connection gets a canned `503` with `Retry-After` and is closed. The cap sits below the
//!   open-files limit, which [`raise_nofile_limit`] lifts to its hard maximum at start.
//! - **Headers** must arrive within `header_timeout` (hyper's header read timeout: slowloris).
//! - **Bodies** must keep arriving: no gap longer than `body_timeout` (tower-http).
//! - **Responses**: a write that makes no progress for `write_timeout` closes the connection
//!   ([`StallLimited`]), so a client that never reads pins its response for that long at most.
//! - **Requests in progress**: at most `max_requests`; beyond it the request is shed with `503`
//!   and `Retry-After` (tower `ConcurrencyLimit` + `LoadShed`).

use super::input::ApiError;
use super::transport::{Accepted, SplitListener};
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tower::ServiceBuilder;

/// Seconds a shed client is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;
/// File descriptors kept free of connections for storage, peer links and the process itself.
pub const RESERVED_FDS: u64 = 256;

/// The HTTP server's limits (see the module doc; defaults in `docs/limits.md`).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_requests: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
}

impl HttpLimits {
    /// Defaults for a process allowed `nofile` open files.
    pub fn for_nofile(nofile: u64) -> Self {
        HttpLimits {
            max_connections: nofile.saturating_sub(RESERVED_FDS).clamp(16, 16_384) as usize,
            max_requests: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(15),
        }
    }
}

/// Raises the soft open-files limit to the hard one where allowed; returns the soft limit in
/// force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// The reply to a request or connection the node sheds.
pub fn shed_response() -> Response {
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the node is at its request limit; retry later",
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// Wraps the application in the request-level limits.
pub fn with_limits(app: Router, limits: &HttpLimits) -> Router {
    app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_timeout,
    ))
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                shed_response()
            }))
            .load_shed()
            .concurrency_limit(limits.max_requests),
    )
}

/// Serves HTTP/1.1 on every connection `listener` yields until `shutdown` resolves, then lets
/// in-flight requests finish (each connection closes after its current response).
pub async fn serve(
    mut listener: SplitListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let Some(Accepted { conn, info, permit }) = conn else {
            break;
        };
        let io = TokioIo::new(StallLimited::new(conn, limits.write_timeout));
        let app = app.clone().layer(axum::Extension(ConnectInfo(info)));
        let service = TowerToHyperService::new(app);
        let mut stop = stop_rx.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    // Every connection holds a clone of `stop_rx`: once the original is gone, `closed` resolves
    // when the last connection has finished; a connection that does not finish within
    // SHUTDOWN_GRACE is abandoned (the process is exiting).
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, stop_tx.closed()).await;
}

/// How long a stopping server waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The connection cap shared by the accept loop and the server.
pub fn connection_slots(limits: &HttpLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_connections))
}

/// A stream whose writes fail once they make no progress for `limit` (the peer stopped
/// reading), so a response cannot pin memory indefinitely.
pub struct StallLimited<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallLimited<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        StallLimited {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Maps a pending write to an error once it has been pending for `limit`.
    fn watch<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading its response",
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallLimited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallLimited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
