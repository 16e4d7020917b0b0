//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies, identity, gzip or
//! zstd encoded, answered the way the Collector answers.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use sluice_engine::component::ConsumeError;
use sluice_engine::memory::Refusal;
use sluice_engine::schema::Signal;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::connections::{self, ReadDeadline};
use super::{
    BodyBuffer, ExportError, Handler, HttpConfig, RETRY_AFTER_SECS, Received, rpc_status_proto,
};

#[derive(Clone)]
struct AppState {
    handler: Arc<Handler>,
    limit: usize,
}

pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: &HttpConfig,
    handler: Arc<Handler>,
    stop: oneshot::Receiver<()>,
) -> JoinHandle<()> {
    let failed = handler.clone();
    let state = AppState {
        handler,
        limit: config.max_request_body_size as usize,
    };
    let route = |signal: Signal| {
        post(
            move |st: State<AppState>,
                  ci: ConnectInfo<SocketAddr>,
                  deadline: Extension<ReadDeadline>,
                  h: HeaderMap,
                  b: Body| { export(signal, st, ci, deadline, h, b) },
        )
    };
    let app = Router::new()
        .route(&config.traces_url_path, route(Signal::Traces))
        .route(&config.metrics_url_path, route(Signal::Metrics))
        .route(&config.logs_url_path, route(Signal::Logs))
        .fallback({
            let paths = format!(
                "unknown path; OTLP/HTTP is served on {}, {}, {}",
                config.traces_url_path, config.metrics_url_path, config.logs_url_path
            );
            move || async move { status(Encoding::Json, StatusCode::NOT_FOUND, &paths) }
        })
        // The raw body is limited by `Limited` below (so it can be counted); axum's own
        // default limit (2 MiB) must not cut in first.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    // Preflights are answered before routing (the routes take POST only).
    let app = match config.cors.clone().filter(|c| c.enabled()) {
        Some(cors) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(cors),
            super::cors::middleware,
        )),
        None => app,
    };
    let limits = config.connection_limits();
    tokio::spawn(async move {
        match tls {
            Some(tls) => {
                let on_failure = failed.clone();
                match sluice_tls::TlsListener::new(listener, tls, move |_| {
                    on_failure.failed("tls_handshake")
                }) {
                    Ok(listener) => connections::serve(listener, app, limits, failed, stop).await,
                    Err(e) => {
                        tracing::error!(error = %e, "OTLP/HTTP server stopped with an error")
                    }
                }
            }
            None => connections::serve(listener, app, limits, failed, stop).await,
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

async fn export(
    signal: Signal,
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ReadDeadline(deadline)): Extension<ReadDeadline>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let enc = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            st.handler.failed("media_type");
            return status(
                Encoding::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "unsupported content type {other:?}; use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let compressed = !matches!(content_encoding.as_str(), "" | "identity");
    let json = enc == Encoding::Json;
    // Admission before the body is read: with a Content-Length (of an uncompressed body) the
    // whole request is reserved now; otherwise the reservation grows as the body arrives.
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n <= st.limit && !compressed);
    let mut body = body;
    let mut held = match st.handler.admit(signal, content_length, json) {
        Ok(h) => h,
        Err(r) => return refuse_unread(enc, &r, body, st.limit).await,
    };
    let mut covered = content_length.unwrap_or(0);
    // Sized from Content-Length: growing by doubling would copy the body and hold two buffers.
    let mut raw = BytesMut::with_capacity(covered);
    loop {
        // `read_timeout`: the whole request, headers included, within the deadline.
        let next = match deadline {
            None => body.frame().await,
            Some(at) => match tokio::time::timeout_at(at, body.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    st.handler.failed("read_timeout");
                    let mut r = status(
                        enc,
                        StatusCode::REQUEST_TIMEOUT,
                        "request body not received within read_timeout",
                    );
                    // The rest of the body is not read: the connection cannot be reused.
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return r;
                }
            },
        };
        let Some(frame) = next else { break };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                st.handler.failed("decode");
                return status(
                    enc,
                    StatusCode::BAD_REQUEST,
                    &format!("cannot read request body: {e}"),
                );
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if raw.len() + data.len() > st.limit {
            st.handler.failed("too_large");
            return status(
                enc,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {} bytes", st.limit),
            );
        }
        raw.extend_from_slice(&data);
        if raw.len() > covered {
            // Grow by doubling: a few account updates per request, never one per chunk.
            covered = raw.len().max(covered * 2).max(64 * 1024).min(st.limit);
            if let Err(r) = st.handler.reserve_body(signal, &mut held, covered, json) {
                drop(raw);
                return refuse_unread(enc, &r, body, st.limit).await;
            }
        }
    }
    // Read into a buffer of its `Content-Length` (or grown to about its size): forwarded
    // undecoded, the body is kept in it rather than copied.
    let buffer = if raw.capacity() - raw.len() <= raw.len() / 8 {
        BodyBuffer::Exact
    } else {
        BodyBuffer::Grown
    };
    let raw = raw.freeze();
    let (body, buffer) = match content_encoding.as_str() {
        "" | "identity" => (raw, buffer),
        "gzip" | "x-gzip" => match inflate(flate2::read::MultiGzDecoder::new(&raw[..]), st.limit) {
            Ok(b) => (Bytes::from(b), BodyBuffer::Grown),
            Err(r) => return decompress_error(&st, enc, r),
        },
        "zstd" => match zstd::stream::read::Decoder::new(&raw[..]) {
            Ok(d) => match inflate(d, st.limit) {
                Ok(b) => (Bytes::from(b), BodyBuffer::Grown),
                Err(r) => return decompress_error(&st, enc, r),
            },
            Err(e) => return decompress_error(&st, enc, Inflate::Bad(e.to_string())),
        },
        other => {
            st.handler.failed("content_encoding");
            return status(
                enc,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported content encoding {other:?}; use gzip, zstd or none"),
            );
        }
    };
    let metadata = st.handler.client_metadata(&headers);
    match st
        .handler
        .export(
            signal,
            Received { body, buffer },
            json,
            Some(peer),
            metadata,
            held,
        )
        .await
    {
        Ok(_) => success(enc),
        Err(ExportError::Decode(m)) => status(enc, StatusCode::BAD_REQUEST, &m),
        Err(ExportError::Memory(r)) => memory_refusal(enc, &r),
        Err(ExportError::Consume(ConsumeError::Refused(m))) => {
            retry_later(enc, StatusCode::TOO_MANY_REQUESTS, &m)
        }
        Err(ExportError::Consume(ConsumeError::Unavailable(m))) => {
            retry_later(enc, StatusCode::SERVICE_UNAVAILABLE, &m)
        }
        Err(ExportError::Consume(ConsumeError::Permanent(m))) => {
            status(enc, StatusCode::BAD_REQUEST, &m)
        }
        Err(ExportError::NoPipeline(s)) => status(
            enc,
            StatusCode::NOT_FOUND,
            &format!("this receiver is not in any {} pipeline", s.as_str()),
        ),
    }
}

/// A memory refusal before (all of) the body was read. The rest of the body is read and thrown
/// away (up to `limit` bytes, nothing kept): an HTTP/1.1 connection whose request body is left
/// unread cannot be reused, and closing it under a client still sending fails that client with
/// a connection error instead of the 429 it should retry on.
async fn refuse_unread(enc: Encoding, r: &Refusal, mut body: Body, limit: usize) -> Response {
    let mut drained = 0usize;
    while drained <= limit {
        match body.frame().await {
            Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    memory_refusal(enc, r)
}

/// A memory refusal: 429 + `Retry-After` when retrying can help, 413 when the request could
/// never fit under the limit.
fn memory_refusal(enc: Encoding, r: &Refusal) -> Response {
    if r.is_retryable() {
        retry_later(enc, StatusCode::TOO_MANY_REQUESTS, &r.to_string())
    } else {
        status(enc, StatusCode::PAYLOAD_TOO_LARGE, &r.to_string())
    }
}

enum Inflate {
    TooLarge,
    Bad(String),
}

/// Decompresses, stopping one byte past `limit`: a bomb never inflates beyond the limit.
fn inflate(reader: impl Read, limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Inflate::Bad(e.to_string()))?;
    if out.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(out)
}

fn decompress_error(st: &AppState, enc: Encoding, r: Inflate) -> Response {
    match r {
        Inflate::TooLarge => {
            st.handler.failed("too_large");
            status(
                enc,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("decompressed body larger than {} bytes", st.limit),
            )
        }
        Inflate::Bad(m) => {
            st.handler.failed("decompress");
            status(
                enc,
                StatusCode::BAD_REQUEST,
                &format!("cannot decompress request body: {m}"),
            )
        }
    }
}

fn content_type(enc: Encoding) -> HeaderValue {
    HeaderValue::from_static(match enc {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    })
}

/// 200 with an empty `Export*ServiceResponse` (no partial success: all or nothing).
fn success(enc: Encoding) -> Response {
    let body: &'static [u8] = match enc {
        Encoding::Protobuf => b"",
        Encoding::Json => b"{}",
    };
    ([(header::CONTENT_TYPE, content_type(enc))], body).into_response()
}

/// An error answer with a `google.rpc.Status` body in the request's encoding.
fn status(enc: Encoding, code: StatusCode, message: &str) -> Response {
    status_with_retry(enc, code, message, None)
}

fn status_with_retry(
    enc: Encoding,
    code: StatusCode,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let grpc_code = match code {
        StatusCode::BAD_REQUEST => 3,          // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 12,           // UNIMPLEMENTED
        StatusCode::REQUEST_TIMEOUT => 4,      // DEADLINE_EXCEEDED
        StatusCode::PAYLOAD_TOO_LARGE => 8,    // RESOURCE_EXHAUSTED
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 3,
    };
    let body = match enc {
        Encoding::Json => match retry_after {
            None => serde_json::json!({"code": grpc_code, "message": message}),
            Some(secs) => serde_json::json!({"code": grpc_code, "message": message, "details": [{
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{secs}s"),
            }]}),
        }
        .to_string()
        .into_bytes(),
        Encoding::Protobuf => rpc_status_proto(grpc_code, message, retry_after),
    };
    (code, [(header::CONTENT_TYPE, content_type(enc))], body).into_response()
}

fn retry_later(enc: Encoding, code: StatusCode, message: &str) -> Response {
    let mut r = status_with_retry(enc, code, message, Some(RETRY_AFTER_SECS));
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&RETRY_AFTER_SECS.to_string())
            .unwrap_or(HeaderValue::from_static("1")),
    );
    r
}
