//! The accept loop of `serve`, for plain and TLS listeners: each connection
//! is admitted against the limits of [`guard`](crate::guard), served as
//! HTTP/1.1 with upgrades (the control WebSocket), and closed when it idles
//! or trickles its request head past the timeouts. A WebSocket leaves these
//! timers behind (it has its own pings) but keeps its descriptor slot.
//!
//! Our own loop rather than `axum::serve`: that one has no per-connection
//! timers, and a listener that runs out of descriptors stops answering.

use crate::guard::{
    source_of, Admitted, ConnLimiter, ConnLimits, ConnWatch, Expiry, FdSlot, HttpSlot, LogEvery,
};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// How long connections get to finish when the server stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// hyper's read (and response) buffer per connection. A request head that
/// does not fit gets 431; hyper checks the limit before each read, so a
/// head may overshoot it by one read, to under twice this (the test
/// `authz_matrix` holds a 64 KiB head served and a 192 KiB one refused).
const MAX_REQUEST_BUFFER: usize = 64 * 1024;
/// At most one line per this long about refused connections or a full
/// descriptor table: a flood must not flood the log too.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits and timeouts of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenConfig {
    pub limits: ConnLimits,
    /// How long a connection that is not a WebSocket may wait for the first
    /// byte of a request (a new one, or keep-alive after a response).
    pub idle_timeout: Duration,
    /// How long a request head may take from its first byte to its end.
    pub header_timeout: Duration,
}

/// The peer's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `app` on `listener` until `shutdown` resolves, then gives open
/// HTTP connections [`SHUTDOWN_GRACE`] to finish.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    config: ListenConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limiter = ConnLimiter::new(config.limits);
    let refused_log = LogEvery::new(LOG_EVERY);
    let accept_log = LogEvery::new(LOG_EVERY);
    let evicted_log = LogEvery::new(LOG_EVERY);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e, &accept_log).await;
                continue;
            }
        };
        let now = Instant::now();
        let Admitted {
            fd,
            http,
            watch,
            evicted_another,
        } = match limiter.admit(source_of(peer.ip()), now) {
            Ok(admitted) => admitted,
            Err(why) => {
                // Closed at once: a refused socket must not hold a descriptor.
                drop(stream);
                if let Some(n) = refused_log.tick(now) {
                    let limits = limiter.limits();
                    let (open, http) = limiter.counts();
                    tracing::warn!(
                        refused = n,
                        last_reason = ?why,
                        last_source = %source_of(peer.ip()),
                        open,
                        http,
                        per_address_limit = limits.per_source,
                        global_limit = limits.global,
                        "refusing connections over the limits (one line per {} s)",
                        LOG_EVERY.as_secs()
                    );
                }
                continue;
            }
        };
        if evicted_another {
            if let Some(n) = evicted_log.tick(now) {
                let (open, http) = limiter.counts();
                tracing::info!(
                    evicted = n,
                    last_source = %source_of(peer.ip()),
                    open,
                    http,
                    "connection limits reached: closing the oldest connections still waiting for a request to make room (one line per {} s)",
                    LOG_EVERY.as_secs()
                );
            }
        }
        let _ = stream.set_nodelay(true);
        let io = Watched {
            inner: stream,
            watch: watch.clone(),
            _fd: fd,
        };
        tokio::spawn(serve_connection(
            io,
            peer,
            tls.clone(),
            app.clone(),
            watch,
            http,
            config,
        ));
    }
    drop(listener);
    limiter.close_http();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while limiter.counts().1 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A failed `accept`. Out of descriptors is the one that repeats at once, so
/// it waits a moment (closing connections free some) instead of spinning.
async fn accept_failed(e: io::Error, log: &LogEvery) {
    let out_of_fds = matches!(
        e.raw_os_error(),
        Some(code) if is_fd_exhaustion(code)
    );
    if let Some(n) = log.tick(Instant::now()) {
        if out_of_fds {
            tracing::error!(
                times = n,
                "cannot accept connections: out of file descriptors ({e}); raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections"
            );
        } else {
            tracing::warn!(times = n, "accepting a connection failed: {e}");
        }
    }
    if out_of_fds {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(unix)]
fn is_fd_exhaustion(code: i32) -> bool {
    code == libc::EMFILE || code == libc::ENFILE
}

#[cfg(not(unix))]
fn is_fd_exhaustion(_code: i32) -> bool {
    false
}

async fn serve_connection(
    io: Watched,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    watch: Arc<ConnWatch>,
    http: HttpSlot,
    config: ListenConfig,
) {
    match tls {
        None => serve_http(io, peer, app, watch, http, config).await,
        Some(acceptor) => {
            // The handshake is part of waiting for the request: the same
            // timers close a client that never finishes it.
            let handshake = tokio::select! {
                r = acceptor.accept(io) => r,
                why = watch.expired(config.idle_timeout, config.header_timeout) => {
                    tracing::debug!(%peer, ?why, "closing a connection during the TLS handshake");
                    return;
                }
            };
            match handshake {
                Ok(stream) => serve_http(stream, peer, app, watch, http, config).await,
                Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            }
        }
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    watch: Arc<ConnWatch>,
    http: HttpSlot,
    config: ListenConfig,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let on_request = watch.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        on_request.request_started();
        req.extensions_mut().insert(PeerAddr(peer));
        let mut router = app.clone();
        let done = on_request.clone();
        async move {
            let resp = router.call(req).await;
            // A 101 hands the socket to the WebSocket: it never waits for
            // another request, so it must not look evictable meanwhile.
            if !matches!(&resp, Ok(r) if r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS) {
                done.request_done(Instant::now());
            }
            resp
        }
    });
    let mut builder = http1::Builder::new();
    // Our timers close a slow head first; hyper's is the backstop.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.idle_timeout + config.header_timeout)
        // Requests here are a few hundred bytes; hyper's default (~400 KB)
        // would let a flood pin that much memory per connection.
        .max_buf_size(MAX_REQUEST_BUFFER)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        why = watch.expired(config.idle_timeout, config.header_timeout) => {
            if why == Expiry::Shutdown {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
            } else {
                tracing::debug!(%peer, ?why, "closing a connection");
            }
        }
    }
    // The HTTP phase is over (closed, or now a WebSocket).
    drop(http);
}

/// The accepted socket: tells the connection's timers when bytes arrive, and
/// holds its descriptor slot for as long as the socket lives (into a
/// WebSocket too).
struct Watched {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
    _fd: FdSlot,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.on_read(Instant::now());
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
