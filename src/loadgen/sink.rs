//! `sluice loadgen sink`: an OTLP endpoint that does nothing, to measure the load generator's
//! own ceiling.
//!
//! One port answers both OTLP/gRPC (HTTP/2 without TLS) and OTLP/HTTP (HTTP/1.1): every
//! request's body is read and counted, never decoded, and answered as a successful `Export`
//! (gRPC: an empty message and `grpc-status: 0`; HTTP: 200 with an empty protobuf body, which is
//! an empty `Export*ServiceResponse`). At exit (SIGTERM or Ctrl-C) it prints its counts as one
//! JSON line, so a benchmark can check that everything the generator sent arrived.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::Args;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Args, Debug, Clone)]
pub struct SinkArgs {
    /// host:port to listen on, for gRPC and HTTP alike.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub endpoint: String,
}

/// What the sink received. `payload_bytes` are request bodies without gRPC's 5-byte message
/// prefix: the encoded `Export*ServiceRequest`s, as the generator counts them.
#[derive(Debug, Default)]
pub struct SinkCounts {
    pub grpc_requests: AtomicU64,
    pub http_requests: AtomicU64,
    pub payload_bytes: AtomicU64,
    /// Requests whose body could not be read (the client went away mid-request).
    pub broken_requests: AtomicU64,
}

impl SinkCounts {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "grpc_requests": self.grpc_requests.load(Ordering::Relaxed),
            "http_requests": self.http_requests.load(Ordering::Relaxed),
            "payload_bytes": self.payload_bytes.load(Ordering::Relaxed),
            "broken_requests": self.broken_requests.load(Ordering::Relaxed),
        })
    }
}

/// The sink's state: its counts and, for tests, optionally every payload received.
#[derive(Default)]
pub struct Sink {
    pub counts: SinkCounts,
    recorded: Option<Mutex<Vec<Bytes>>>,
}

impl Sink {
    /// A sink that also keeps every payload (tests only: it holds everything in memory).
    #[cfg(test)]
    pub fn recording() -> Sink {
        Sink {
            counts: SinkCounts::default(),
            recorded: Some(Mutex::default()),
        }
    }

    #[cfg(test)]
    pub fn take_recorded(&self) -> Vec<Bytes> {
        self.recorded
            .as_ref()
            .map(|r| std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, sink: Arc<Sink>) -> Result<Response<Body>, Infallible> {
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut body = req.into_body();
    let mut received = 0u64;
    let mut kept = sink.recorded.as_ref().map(|_| BytesMut::new());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if let Some(k) = kept.as_mut() {
                        k.extend_from_slice(&data);
                    }
                }
            }
            Err(_) => {
                sink.counts.broken_requests.fetch_add(1, Ordering::Relaxed);
                let mut r = Response::new(Full::new(Bytes::new()).boxed());
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            }
        }
    }
    let prefix = if grpc { 5 } else { 0 };
    let counts = &sink.counts;
    if grpc {
        counts.grpc_requests.fetch_add(1, Ordering::Relaxed);
    } else {
        counts.http_requests.fetch_add(1, Ordering::Relaxed);
    }
    counts
        .payload_bytes
        .fetch_add(received.saturating_sub(prefix), Ordering::Relaxed);
    if let (Some(all), Some(mut k)) = (sink.recorded.as_ref(), kept) {
        let payload = k.split_off((prefix as usize).min(k.len())).freeze();
        all.lock().unwrap_or_else(|e| e.into_inner()).push(payload);
    }
    let response = if grpc {
        // One empty, uncompressed message, then the status in the trailers.
        let trailers = async {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", HeaderValue::from_static("0"));
            Some(Ok(t))
        };
        Response::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .body(
                Full::new(Bytes::from_static(&[0; 5]))
                    .with_trailers(trailers)
                    .boxed(),
            )
    } else {
        Response::builder()
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::new()).boxed())
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// Serves `listener` until `stop` resolves. Connections are HTTP/1.1 or HTTP/2 by their
/// preface; each gets `TCP_NODELAY` (without it a small response can wait for a delayed ACK).
pub async fn serve(
    listener: TcpListener,
    sink: Arc<Sink>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the open connections.
                    eprintln!("sink: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, sink.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `sluice loadgen sink`: serves until SIGTERM or Ctrl-C, then prints the counts as JSON.
pub async fn run(args: SinkArgs) -> anyhow::Result<serde_json::Value> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = TcpListener::bind(&args.endpoint)
        .await
        .with_context(|| format!("cannot listen on {}", args.endpoint))?;
    eprintln!(
        "sink: answering OTLP/gRPC and OTLP/HTTP on {} without decoding",
        listener.local_addr()?
    );
    let sink = Arc::new(Sink::default());
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    serve(listener, sink.clone(), stop).await?;
    Ok(sink.counts.to_json())
}
