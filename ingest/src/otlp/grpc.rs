//! OTLP/gRPC: the three `Export` methods served by tonic with a codec that hands over the raw
//! request bytes, so the only decode is sluice's own, straight to Arrow.
//!
//! Admission before reading: the first bytes of a request body are the gRPC message prefix
//! (compressed flag, 4-byte length), so the size of the message is known before tonic buffers
//! it. The memory account is asked for that much (and the decoded estimate) first; a refusal
//! answers at once, and the rest of the body is never read.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::BodyExt;
use sluice_engine::component::ConsumeError;
use sluice_engine::memory::{Held, Refusal};
use sluice_engine::schema::Signal;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::{Code, Status};

use super::{
    BodyBuffer, ExportError, GrpcConfig, Handler, RETRY_AFTER_SECS, Received, rpc_status_proto,
};

/// Request and response bodies as raw bytes: decoding is sluice's business, and the response
/// (an empty `Export*ServiceResponse`) is zero bytes.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Which OTLP service a server type answers (tonic routes by the service name).
pub(crate) trait OtlpService: Send + Sync + 'static {
    const SIGNAL: Signal;
    const NAME: &'static str;
}
pub(crate) struct Traces;
pub(crate) struct Metrics;
pub(crate) struct Logs;
impl OtlpService for Traces {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl OtlpService for Metrics {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}
impl OtlpService for Logs {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// Whether a `grpc-message` (percent-encoded: spaces are `%20`) is tonic's decoder saying a
/// compressed message decompressed past the size limit ("Error decompressing: size limit, of
/// N bytes, exceeded while decompressing message").
fn decompressed_too_large(grpc_message: &str) -> bool {
    grpc_message.contains("exceeded") && grpc_message.contains("decompressing")
}

pub(crate) struct ExportServer<S> {
    handler: Arc<Handler>,
    max_decoding: usize,
    _s: PhantomData<S>,
}

impl<S> Clone for ExportServer<S> {
    fn clone(&self) -> Self {
        ExportServer {
            handler: self.handler.clone(),
            max_decoding: self.max_decoding,
            _s: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for ExportServer<S> {
    const NAME: &'static str = S::NAME;
}

struct ExportCall<S> {
    handler: Arc<Handler>,
    /// The request's reservation, taken before its body was read.
    held: Option<Held>,
    _s: PhantomData<S>,
}

impl<S: OtlpService> UnaryService<Bytes> for ExportCall<S> {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let handler = self.handler.clone();
        let held = self.held.take();
        Box::pin(async move {
            let origin = request.remote_addr();
            let metadata = handler.client_metadata(&request.metadata().clone().into_headers());
            let compressed = request
                .metadata()
                .get("grpc-encoding")
                .is_some_and(|e| e != "identity");
            let body = request.into_inner();
            // An uncompressed message is read into a buffer reserved for its length once
            // tonic has its prefix, unless it fits the buffer tonic starts with; an inflated
            // one into a buffer grown while inflating.
            let buffer = if compressed || body.len() < EXACT_BUFFER_FROM {
                BodyBuffer::Grown
            } else {
                BodyBuffer::Exact
            };
            let held = held.unwrap_or_else(|| handler.in_flight.none());
            match handler
                .export(
                    S::SIGNAL,
                    Received { body, buffer },
                    false,
                    origin,
                    metadata,
                    held,
                )
                .await
            {
                Ok(_) => Ok(tonic::Response::new(Bytes::new())),
                Err(e) => Err(status_of(e)),
            }
        })
    }
}

pub(crate) fn status_of(e: ExportError) -> Status {
    match e {
        ExportError::Decode(m) => Status::invalid_argument(m),
        ExportError::Consume(ConsumeError::Refused(m)) => Status::resource_exhausted(m),
        ExportError::Consume(ConsumeError::Unavailable(m)) => Status::unavailable(m),
        ExportError::Consume(ConsumeError::Permanent(m)) => Status::invalid_argument(m),
        ExportError::NoPipeline(s) => Status::unimplemented(format!(
            "this receiver is not in any {} pipeline",
            s.as_str()
        )),
        ExportError::Memory(r) => memory_status(&r),
    }
}

/// A memory refusal: `RESOURCE_EXHAUSTED`, with `RetryInfo` when retrying can help (OTLP
/// clients retry `RESOURCE_EXHAUSTED` only then).
pub(crate) fn memory_status(r: &Refusal) -> Status {
    let message = r.to_string();
    let retry = r.is_retryable().then_some(RETRY_AFTER_SECS);
    let details = rpc_status_proto(Code::ResourceExhausted as u32, &message, retry);
    Status::with_details(Code::ResourceExhausted, message, Bytes::from(details))
}

/// Messages from this size are read by tonic into a buffer of their own length (it reserves
/// the length once it has the prefix); smaller ones share the 8 KiB buffer tonic starts with,
/// which a forwarded body would keep alive whole.
const EXACT_BUFFER_FROM: usize = 16 * 1024;

/// The gRPC message prefix: 1 byte compressed flag, 4 bytes big-endian length.
const PREFIX_LEN: usize = 5;

/// Reads the start of the body until the message prefix is in: (the bytes read, the prefix's
/// compressed flag and message length), or `None` if the body ended first.
///
/// The first data frame almost always holds the prefix (and with 1 MiB frames most or all of
/// the message): it is kept as the bytes it arrived in, not copied; only a prefix split
/// across frames is gathered into a buffer of its own.
async fn read_prefix<B>(body: &mut B) -> Result<(Bytes, Option<(bool, usize)>), Status>
where
    B: http_body::Body + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    let mut head = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while head.len() < PREFIX_LEN {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    if head.is_empty() && data.remaining() >= PREFIX_LEN {
                        // `Bytes` (what hyper's bodies carry) gives itself without a copy.
                        first = Some(data.copy_to_bytes(data.remaining()));
                        break;
                    }
                    while data.has_remaining() {
                        let chunk = data.chunk();
                        head.extend_from_slice(chunk);
                        let n = chunk.len();
                        data.advance(n);
                    }
                }
            }
            Some(Err(e)) => {
                return Err(Status::cancelled(format!(
                    "cannot read request: {}",
                    e.into()
                )));
            }
            None => break,
        }
    }
    let head = first.unwrap_or_else(|| head.freeze());
    let prefix = (head.len() >= PREFIX_LEN).then(|| {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        (head[0] == 1, len)
    });
    Ok((head, prefix))
}

/// A body whose first bytes were already read: them, then the rest.
///
/// The head goes to tonic in two frames, the message prefix alone first: tonic reserves the
/// message's length (in addition to what its buffer holds) as soon as it has read the prefix,
/// so a first frame carrying the prefix and most of the message would have its bytes moved
/// into a buffer twice the message's size; after a prefix alone the buffer is empty, and the
/// rest of the message is copied once into a buffer of its size.
struct Prefixed<B> {
    /// What was read, still to give (empty once given): the prefix alone, then the rest of it.
    head: [Bytes; 2],
    rest: B,
}

impl<B> Prefixed<B> {
    fn new(mut head: Bytes, rest: B) -> Self {
        let prefix = head.split_to(PREFIX_LEN.min(head.len()));
        Prefixed {
            head: [prefix, head],
            rest,
        }
    }
}

impl<B> http_body::Body for Prefixed<B>
where
    B: http_body::Body + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        if let Some(slot) = self.head.iter_mut().find(|h| !h.is_empty()) {
            return Poll::Ready(Some(Ok(http_body::Frame::data(std::mem::take(slot)))));
        }
        Pin::new(&mut self.rest).poll_frame(cx).map(|f| {
            f.map(|r| r.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))))
        })
    }

    fn is_end_stream(&self) -> bool {
        self.head.iter().all(Bytes::is_empty) && self.rest.is_end_stream()
    }
}

impl<S: OtlpService, B> Service<http::Request<B>> for ExportServer<S>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        let max = self.max_decoding;
        let export_path = req.uri().path() == format!("/{}/Export", S::NAME);
        Box::pin(async move {
            if !export_path {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let (parts, body) = req.into_parts();
            // Pinned on the heap so the start can be read here and the rest by tonic.
            let mut body = Box::pin(body);
            let limited = handler.limited(S::SIGNAL);
            // Admission before reading: refused now while memory is above the soft limit;
            // otherwise the message size is read from its prefix and reserved, with its
            // decoded estimate, before tonic buffers it.
            if limited && let Err(r) = handler.admit(S::SIGNAL, None, false) {
                return Ok(memory_status(&r).into_http());
            }
            // The prefix is read here in any case: given to tonic alone ([`Prefixed`]), it
            // makes tonic read the message into a buffer of its length, which a request
            // forwarded undecoded is then kept in (`BodyBuffer::Exact`).
            let (head, prefix) = match read_prefix(&mut body).await {
                Ok(x) => x,
                Err(status) => return Ok(status.into_http()),
            };
            let mut held = None;
            if limited {
                let mut h = handler.in_flight.none();
                // An oversized message is tonic's to refuse (OUT_OF_RANGE); a compressed one
                // is reserved as its wire size now and resized once inflated.
                if let Some((_, len)) = prefix.filter(|(_, len)| *len <= max)
                    && let Err(r) = handler.reserve_body(S::SIGNAL, &mut h, len, false)
                {
                    return Ok(memory_status(&r).into_http());
                }
                held = Some(h);
            }
            let req = http::Request::from_parts(parts, Prefixed::new(head, body));
            Ok(Self::serve(handler, max, req, held).await)
        })
    }
}

impl<S: OtlpService> ExportServer<S> {
    async fn serve<B>(
        handler: Arc<Handler>,
        max: usize,
        req: http::Request<B>,
        held: Option<Held>,
    ) -> http::Response<tonic::body::Body>
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    {
        {
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            let call = ExportCall::<S> {
                handler: handler.clone(),
                held,
                _s: PhantomData,
            };
            let resp = grpc.unary(call, req).await;
            // Oversized or undecompressible messages are refused inside tonic, before our
            // handler runs; count them here. tonic uses OUT_OF_RANGE only for the size limit,
            // except for a compressed message that decompresses past it: that one it answers
            // RESOURCE_EXHAUSTED, which clients read as memory pressure (retry the same bytes
            // later). It is the same "too large" and gets the same answer.
            let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let code = header("grpc-status")
                .and_then(|c| c.parse::<i32>().ok())
                .map(Code::from);
            if code == Some(Code::ResourceExhausted)
                && header("grpc-message").is_some_and(decompressed_too_large)
            {
                handler.failed("too_large");
                return Status::out_of_range(format!(
                    "grpc: received message after decompression larger than max (limit {max} bytes)"
                ))
                .into_http();
            }
            match code {
                Some(Code::OutOfRange) => handler.failed("too_large"),
                Some(Code::Internal) => handler.failed("decompress"),
                Some(Code::Unimplemented)
                    if header("grpc-message").is_some_and(|m| m.contains("compress")) =>
                {
                    handler.failed("decompress")
                }
                _ => {}
            }
            resp
        }
    }
}

/// A TLS connection as tonic needs it: with the TCP addresses as `TcpConnectInfo`, so
/// `Request::remote_addr` (the payload's origin) works exactly as over plaintext.
pub(crate) struct TlsConn(pub(crate) sluice_tls::TlsStream);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        let tcp = self.0.get_ref().0;
        TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A connection that fails every read and write once `max_connection_age` +
/// `max_connection_age_grace` has passed since it was accepted: the end of the grace that
/// follows the GOAWAY sent at `max_connection_age`, for a connection whose requests have not
/// finished by then. (A failing read ends the connection in hyper, which is woken by the timer.)
///
/// It also bounds the wait for the client's first bytes (the HTTP/2 preface): a connection that
/// sends nothing within `connection_timeout` fails its read and is closed (gRPC-Go's
/// `ConnectionTimeout`); and it holds the connection's slot under `max_connections`.
struct Cutoff<IO> {
    io: IO,
    at: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Until the first byte arrives.
    first_byte: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl<IO> Cutoff<IO> {
    fn new(io: IO, after: Option<Duration>) -> Self {
        Cutoff {
            io,
            at: after.map(|d| Box::pin(tokio::time::sleep(d))),
            first_byte: None,
            _slot: None,
        }
    }

    fn with_limits(
        io: IO,
        after: Option<Duration>,
        first_byte_within: Option<Duration>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Cutoff {
            first_byte: first_byte_within.map(|d| Box::pin(tokio::time::sleep(d))),
            _slot: Some(slot),
            ..Cutoff::new(io, after)
        }
    }

    fn passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.at
            .as_mut()
            .is_some_and(|at| std::future::Future::poll(at.as_mut(), cx).is_ready())
    }
}

fn cut_off() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "closed: max_connection_age_grace passed with requests in flight",
    )
}

impl<IO: Connected> Connected for Cutoff<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Cutoff<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.passed(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.first_byte.is_some() {
            if buf.filled().len() > before {
                self.first_byte = None;
            } else if read.is_pending()
                && self
                    .first_byte
                    .as_mut()
                    .is_some_and(|t| std::future::Future::poll(t.as_mut(), cx).is_ready())
            {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "closed: nothing received within connection_timeout",
                )));
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Cutoff<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.passed(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.passed(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The largest HTTP/2 frame the server accepts (advertised in its SETTINGS): 1 MiB, so a
/// typical request (tens to hundreds of KB) arrives in one or a few frames, each read with
/// one `recvfrom`. The frame is the request's own bytes: a larger frame holds no more memory
/// than the request it carries.
const MAX_FRAME_SIZE: u32 = 1 << 20;

/// gRPC-Go's `ConnectionTimeout`: the wait for a new connection's first bytes.
pub(crate) const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
struct GrpcLimits {
    cutoff: Option<Duration>,
    connection_timeout: Option<Duration>,
    max_connections: usize,
}

/// Where the gRPC server's connections come from: TCP, or finished TLS handshakes.
trait Accept: Send + 'static {
    type Io: Send + 'static;
    /// The next connection; `None` when there will be no more.
    fn accept(&mut self) -> impl std::future::Future<Output = Option<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> Option<tokio::net::TcpStream> {
        loop {
            match tokio::net::TcpListener::accept(self).await {
                Ok((tcp, _peer)) => {
                    // TCP_NODELAY: without it a small gRPC response waits for the client's
                    // delayed ACK, and every Export takes ~40 ms (Nagle). Found with `sluice
                    // loadgen`: p90 44 ms -> sub-ms.
                    let _ = tcp.set_nodelay(true);
                    return Some(tcp);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Accept for tokio::sync::mpsc::Receiver<(sluice_tls::TlsStream, std::net::SocketAddr)> {
    type Io = TlsConn;
    async fn accept(&mut self) -> Option<TlsConn> {
        self.recv().await.map(|(tls, _peer)| TlsConn(tls))
    }
}

/// The server's connections: a slot under `max_connections` is taken before each accept (over
/// the limit, clients wait in the listen backlog), and released when the connection closes.
fn limited_incoming<A: Accept>(
    limits: GrpcLimits,
    mut source: A,
) -> ReceiverStream<std::io::Result<Cutoff<A::Io>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = tx.closed() => break,
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break, // never closed
                },
            };
            let io = tokio::select! {
                _ = tx.closed() => break,
                io = source.accept() => match io {
                    Some(io) => io,
                    None => break,
                },
            };
            let conn = Cutoff::with_limits(io, limits.cutoff, limits.connection_timeout, slot);
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: &GrpcConfig,
    handler: Arc<Handler>,
    stop: oneshot::Receiver<()>,
) -> JoinHandle<()> {
    let max = (config.max_recv_msg_size_mib as usize).saturating_mul(1024 * 1024);
    let mk = || (handler.clone(), max);
    let (h, m) = mk();
    let traces = ExportServer::<Traces> {
        handler: h,
        max_decoding: m,
        _s: PhantomData,
    };
    let (h, m) = mk();
    let metrics = ExportServer::<Metrics> {
        handler: h,
        max_decoding: m,
        _s: PhantomData,
    };
    let logs = ExportServer::<Logs> {
        handler: handler.clone(),
        max_decoding: max,
        _s: PhantomData,
    };
    let keepalive = config.keepalive.resolve();
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive.ping_after))
        .http2_keepalive_timeout(Some(keepalive.ping_timeout))
        // Clients send DATA frames up to the size the server advertises, and the server reads
        // a frame at a time: with HTTP/2's default of 16 KiB a 30 KB request took 4–5
        // `recvfrom` calls (BENCHMARKS.md, "Fewer reads per request").
        .max_frame_size(MAX_FRAME_SIZE);
    if let Some(n) = config.max_concurrent_streams {
        server = server.max_concurrent_streams(n);
    }
    // Only the age: tonic's own grace closes the connection at age + grace without the
    // GOAWAY at age, so the grace is `Cutoff`'s.
    if let Some(age) = keepalive.max_age {
        server = server.max_connection_age(age);
    }
    let limits = GrpcLimits {
        cutoff: keepalive.cutoff,
        connection_timeout: Some(
            config
                .connection_timeout
                .unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
        )
        .filter(|d| !d.is_zero()),
        max_connections: config.max_connections.max(1),
    };
    let router = server
        .add_service(traces)
        .add_service(metrics)
        .add_service(logs);
    let stop = async {
        let _ = stop.await;
    };
    tokio::spawn(async move {
        let served = match tls {
            Some(tls) => {
                // TLS handshakes (TCP_NODELAY set there too) in sluice_tls, off tonic's path.
                let failed = handler.clone();
                let connections =
                    sluice_tls::accept_tls(listener, tls, move |_| failed.failed("tls_handshake"));
                let incoming = limited_incoming(limits, connections);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = limited_incoming(limits, listener);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "OTLP/gRPC server stopped with an error");
        }
    })
}

#[cfg(test)]
mod prefix_tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    /// A body that delivers `frames` as its data frames.
    fn body_of(
        frames: Vec<Bytes>,
    ) -> StreamBody<impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin>
    {
        StreamBody::new(tokio_stream::iter(
            frames.into_iter().map(|b| Ok(Frame::data(b))),
        ))
    }

    fn message(len: usize) -> Bytes {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend((0..len).map(|i| i as u8));
        Bytes::from(m)
    }

    /// Everything the body yields after `read_prefix`, through `Prefixed` (as tonic reads it).
    async fn rest_through_prefixed<B>(head: Bytes, rest: B) -> Vec<u8>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Debug,
    {
        let body = Prefixed::new(head, rest);
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_first_frame_holding_the_prefix_is_kept_without_a_copy() {
        let msg = message(1000);
        let (head, prefix) = read_prefix(&mut body_of(vec![msg.clone()]))
            .await
            .expect("read");
        assert_eq!(prefix, Some((false, 1000)));
        assert_eq!(head, msg);
        assert_eq!(head.as_ptr(), msg.as_ptr(), "the frame's own bytes");
    }

    #[tokio::test]
    async fn a_prefix_split_across_frames_is_gathered_and_the_body_reads_back_whole() {
        let msg = message(300);
        for cut in [1, 2, 4, 5, 6, 100] {
            // the message in frames of `cut` bytes
            let frames: Vec<Bytes> = msg.chunks(cut).map(Bytes::copy_from_slice).collect();
            let mut body = body_of(frames);
            let (head, prefix) = read_prefix(&mut body).await.expect("read");
            assert_eq!(prefix, Some((false, 300)), "frames of {cut}");
            assert!(head.len() >= PREFIX_LEN && msg.starts_with(&head));
            assert_eq!(rest_through_prefixed(head, body).await, msg.to_vec());
        }
    }

    #[tokio::test]
    async fn the_head_goes_on_as_the_prefix_alone_then_the_rest_of_it() {
        let msg = message(1000);
        let (head, _) = read_prefix(&mut body_of(vec![msg.clone()]))
            .await
            .expect("read");
        let mut body = Prefixed::new(head, body_of(vec![Bytes::from_static(b"tail")]));
        let mut frames = Vec::new();
        while let Some(f) = body.frame().await {
            frames.push(f.expect("frame").into_data().expect("data"));
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], msg.slice(..PREFIX_LEN));
        assert_eq!(frames[1], msg.slice(PREFIX_LEN..));
        assert_eq!(frames[2], Bytes::from_static(b"tail"));
    }

    #[tokio::test]
    async fn a_body_shorter_than_the_prefix_has_none() {
        for frames in [
            vec![],
            vec![Bytes::from_static(&[0, 0])],
            vec![Bytes::from_static(&[1]), Bytes::from_static(&[0, 0, 0])],
        ] {
            let want: Vec<u8> = frames.iter().flatten().copied().collect();
            let (head, prefix) = read_prefix(&mut body_of(frames)).await.expect("read");
            assert_eq!(prefix, None);
            assert_eq!(head.to_vec(), want);
        }
    }
}
