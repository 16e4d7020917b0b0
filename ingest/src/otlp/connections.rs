//! The OTLP/HTTP server's connections: accepted up to a limit, each watched for the Collector's
//! (Go `net/http`'s) `read_header_timeout` and `idle_timeout`, closed gracefully at shutdown.
//!
//! axum's own `serve` has none of these: a client that connects and sends nothing, or half a
//! header, held its connection (a task, a file descriptor) forever. Here each connection has a
//! phase, driven by its own bytes and requests:
//!
//! - *header*: from accept, or from the first byte after an idle wait, until a request's head
//!   is parsed; closed after `read_header_timeout` (counted as
//!   `failed_requests{reason="read_header_timeout"}`);
//! - *busy*: requests in flight (HTTP/2 may have several); no connection timer (`read_timeout`
//!   bounds the body, see `http.rs`);
//! - *idle*: no request in flight and no byte since the last answer; closed after
//!   `idle_timeout`.
//!
//! Connections beyond `max_connections` are not accepted: they wait in the kernel's listen
//! backlog until one closes, while the open ones keep working.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore, oneshot, watch};
use tokio::time::Instant;
use tower_service::Service;

use super::Handler;

/// What the server applies, defaults filled in (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    pub read_header_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_connections: usize,
}

/// Why a connection was closed by its watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    ReadHeader,
    Idle,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Header(Instant),
    Busy,
    Idle(Instant),
}

struct State {
    in_flight: usize,
    phase: Phase,
}

/// One connection's phase, shared by its I/O (bytes read), its service (requests begun and
/// answered) and the task that closes it when a timer runs out.
pub(crate) struct ConnWatch {
    state: Mutex<State>,
    /// Mirrors `Phase::Idle`: the read path takes the lock only for the first byte after an
    /// idle wait, not for every read.
    idle: AtomicBool,
    changed: Notify,
}

/// The deadline by which a request's body must have arrived (`read_timeout`), kept in the
/// request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadDeadline(pub Option<Instant>);

impl ConnWatch {
    fn new() -> Self {
        ConnWatch {
            state: Mutex::new(State {
                in_flight: 0,
                phase: Phase::Header(Instant::now()),
            }),
            idle: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: after an idle wait they start the next request's header clock.
    fn read_some(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.lock();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Header(Instant::now());
            self.idle.store(false, Ordering::Relaxed);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A request's head was parsed: returns when its header phase began (for `read_timeout`)
    /// and a guard that ends the request when dropped (answered or cancelled).
    fn begin(self: &Arc<Self>) -> (Instant, InFlight) {
        let mut s = self.lock();
        let started = match s.phase {
            Phase::Header(t) => t,
            Phase::Busy => Instant::now(),
            // Bytes always arrive before a head is parsed; this is for completeness.
            Phase::Idle(_) => Instant::now(),
        };
        s.in_flight += 1;
        s.phase = Phase::Busy;
        self.idle.store(false, Ordering::Relaxed);
        drop(s);
        self.changed.notify_one();
        (started, InFlight(self.clone()))
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expired)> {
        match self.lock().phase {
            Phase::Busy => None,
            Phase::Header(t) => limits
                .read_header_timeout
                .map(|d| (t + d, Expired::ReadHeader)),
            Phase::Idle(t) => limits.idle_timeout.map(|d| (t + d, Expired::Idle)),
        }
    }

    /// Resolves when the connection's current phase outlived its timeout.
    async fn expired(&self, limits: ConnectionLimits) -> Expired {
        loop {
            // `notify_one` keeps a permit when nobody waits, so a change between reading the
            // deadline and waiting is not missed.
            match self.deadline(&limits) {
                None => self.changed.notified().await,
                Some((at, why)) => {
                    if Instant::now() >= at {
                        return why;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection; dropped when it was answered or cancelled.
struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.phase = Phase::Idle(Instant::now());
            self.0.idle.store(true, Ordering::Relaxed);
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A connection's I/O, telling its watch when bytes arrive.
struct Watched<I> {
    io: I,
    watch: Arc<ConnWatch>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.read_some();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` (HTTP/1.1 and HTTP/2) on `listener` until `stop`, then closes idle connections,
/// lets requests in flight finish and returns when every connection is closed. Each request
/// carries its peer as `ConnectInfo<SocketAddr>` and its `ReadDeadline`.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    handler: Arc<Handler>,
    mut stop: oneshot::Receiver<()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing_rx) = watch::channel(false);
    loop {
        // A slot first, then accept: over the limit, connections wait in the listen backlog.
        let permit = tokio::select! {
            _ = &mut stop => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (io, peer) = tokio::select! {
            _ = &mut stop => break,
            c = listener.accept() => c,
        };
        let mut closing = closing_rx.clone();
        let (app, handler) = (app.clone(), handler.clone());
        tokio::spawn(async move {
            let _slot = permit;
            let watch = Arc::new(ConnWatch::new());
            let io = TokioIo::new(Watched {
                io,
                watch: watch.clone(),
            });
            let service = {
                let watch = watch.clone();
                hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                    let (started, in_flight) = watch.begin();
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut()
                        .insert(ReadDeadline(limits.read_timeout.map(|d| started + d)));
                    let mut app = app.clone();
                    async move {
                        let response = app.call(req.map(Body::new)).await;
                        drop(in_flight);
                        response
                    }
                })
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                why = watch.expired(limits) => {
                    // Dropping the connection closes the socket: nothing of a request was
                    // accepted in these phases.
                    if why == Expired::ReadHeader {
                        handler.failed("read_header_timeout");
                    }
                    tracing::debug!(%peer, ?why, "OTLP/HTTP connection closed by its timeout");
                }
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Stop accepting, then wait for every connection (each holds a `closing` receiver).
    drop(listener);
    drop(closing_rx);
    let _ = closing_tx.send(true);
    closing_tx.closed().await;
}
