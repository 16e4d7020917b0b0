//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies, identity, gzip or
//! zstd encoded, answered the way the Collector answers.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sluice_engine::component::ConsumeError;
use sluice_engine::schema::Signal;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ExportError, Handler, HttpConfig};

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
            move |st: State<AppState>, ci: ConnectInfo<SocketAddr>, h: HeaderMap, b: Body| {
                export(signal, st, ci, h, b)
            },
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
    tokio::spawn(async move {
        let served = match tls {
            Some(tls) => match sluice_tls::TlsListener::new(listener, tls, move |_| {
                failed.failed("tls_handshake")
            }) {
                Ok(listener) => serve_on(listener, app, stop).await,
                Err(e) => Err(e),
            },
            None => serve_on(listener, app, stop).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "OTLP/HTTP server stopped with an error");
        }
    })
}

/// Serves `app` on a plaintext or TLS listener until `stop`, with each request's peer address
/// as `ConnectInfo<SocketAddr>`.
async fn serve_on<L>(listener: L, app: Router, stop: oneshot::Receiver<()>) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    // `tap_io` makes axum take the listener's own address type as the connect info.
    axum::serve(
        listener.tap_io(|_| ()),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = stop.await;
    })
    .await
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
    let raw = match Limited::new(body, st.limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            st.handler.failed("too_large");
            return status(
                enc,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {} bytes", st.limit),
            );
        }
        Err(e) => {
            st.handler.failed("decode");
            return status(
                enc,
                StatusCode::BAD_REQUEST,
                &format!("cannot read request body: {e}"),
            );
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = match content_encoding.as_str() {
        "" | "identity" => raw.to_vec(),
        "gzip" | "x-gzip" => match inflate(flate2::read::MultiGzDecoder::new(&raw[..]), st.limit) {
            Ok(b) => b,
            Err(r) => return decompress_error(&st, enc, r),
        },
        "zstd" => match zstd::stream::read::Decoder::new(&raw[..]) {
            Ok(d) => match inflate(d, st.limit) {
                Ok(b) => b,
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
    match st
        .handler
        .export(signal, &body, enc == Encoding::Json, Some(peer))
        .await
    {
        Ok(_) => success(enc),
        Err(ExportError::Decode(m)) => status(enc, StatusCode::BAD_REQUEST, &m),
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
    let grpc_code = match code {
        StatusCode::BAD_REQUEST => 3,          // INVALID_ARGUMENT
        StatusCode::NOT_FOUND => 12,           // UNIMPLEMENTED
        StatusCode::PAYLOAD_TOO_LARGE => 8,    // RESOURCE_EXHAUSTED
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        _ => 3,
    };
    let body = match enc {
        Encoding::Json => serde_json::json!({"code": grpc_code, "message": message})
            .to_string()
            .into_bytes(),
        Encoding::Protobuf => rpc_status_proto(grpc_code, message),
    };
    (code, [(header::CONTENT_TYPE, content_type(enc))], body).into_response()
}

fn retry_later(enc: Encoding, code: StatusCode, message: &str) -> Response {
    let mut r = status(enc, code, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// `google.rpc.Status { code = 1; message = 2 }`, hand-encoded (two fields).
fn rpc_status_proto(code: u32, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    out.push(0x08);
    put_varint(&mut out, u64::from(code));
    if !message.is_empty() {
        out.push(0x12);
        put_varint(&mut out, message.len() as u64);
        out.extend_from_slice(message.as_bytes());
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
