//! One unary gRPC call whose request message is sent from its slices, uncopied.
//!
//! tonic's client (`Grpc::unary`) always encodes the message into its own buffer: for
//! pre-encoded bytes that is a copy of every request. This call does what tonic's client does
//! around that copy, on the same [`Channel`] (whose layers add the `:scheme`/`:authority` of
//! the endpoint and tonic's `user-agent`): a POST to the method's path over HTTP/2 with
//! `te: trailers`, `content-type: application/grpc`, `grpc-encoding` and
//! `grpc-accept-encoding` when compressed, and the configured metadata; the body is the 5-byte
//! message prefix and then the request's slices as data frames of their own (uncompressed), or
//! the prefix and the compressor's output in one buffer. tonic's codecs and levels: gzip level
//! 6, zstd level 3 (`zstd::DEFAULT_COMPRESSION_LEVEL`), no `grpc-timeout` (the exporter's own
//! timeout bounds each attempt). The response is read by tonic's own decoder ([`Streaming`]),
//! so trailers-only answers, `grpc-status`/`grpc-message` trailers (percent-decoded) and a
//! compressed response mean what they meant with tonic's client. One difference: an answer
//! that is not HTTP 200 and has no `grpc-status` is mapped from its HTTP status whatever its
//! body ([`http_error`]), where tonic's client did so only for an empty body.

use bytes::{BufMut, Bytes};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, TE};
use http::uri::PathAndQuery;
use tonic::codec::{CompressionEncoding, Streaming};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower_service::Service;

use super::BytesCodec;
use super::request::{Codec, OtlpRequest, SlicesBody, compress};

/// gRPC's message prefix: a compressed flag and a big-endian 32-bit length.
const PREFIX: usize = 5;
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");

/// The headers of every call: gRPC's and the configured metadata (without the names gRPC
/// reserves, which tonic drops from metadata too).
pub(crate) fn call_headers(
    metadata: tonic::metadata::MetadataMap,
    compression: Option<CompressionEncoding>,
) -> HeaderMap {
    let mut headers = metadata.into_headers();
    for reserved in [
        "te",
        "content-type",
        "grpc-message",
        "grpc-message-type",
        "grpc-status",
    ] {
        headers.remove(reserved);
    }
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if let Some(c) = compression {
        let name = HeaderValue::from_static(encoding_name(c));
        headers.insert(GRPC_ENCODING, name.clone());
        headers.insert(GRPC_ACCEPT_ENCODING, name);
    }
    headers
}

fn encoding_name(c: CompressionEncoding) -> &'static str {
    match c {
        CompressionEncoding::Gzip => "gzip",
        CompressionEncoding::Zstd => "zstd",
        // Not enabled in this build (tonic's `deflate` feature is off); never configured.
        _ => "identity",
    }
}

/// The request's data frames: the prefix and its slices, or the prefix and the compressed
/// message in one buffer.
fn frames(
    request: &OtlpRequest,
    compression: Option<CompressionEncoding>,
) -> Result<Vec<Bytes>, Status> {
    let too_long = |n: usize| {
        Status::resource_exhausted(format!(
            "encoded message length too large: found {n} bytes, the limit is: {} bytes",
            u32::MAX
        ))
    };
    let codec = match compression {
        None => {
            let len = u32::try_from(request.len()).map_err(|_| too_long(request.len()))?;
            let mut prefix = Vec::with_capacity(PREFIX);
            prefix.put_u8(0);
            prefix.put_u32(len);
            let mut frames = Vec::with_capacity(1 + request.slices().len());
            frames.push(Bytes::from(prefix));
            frames.extend(request.slices().iter().cloned());
            return Ok(frames);
        }
        Some(CompressionEncoding::Gzip) => Codec::Gzip(6),
        Some(CompressionEncoding::Zstd) => Codec::Zstd(zstd::DEFAULT_COMPRESSION_LEVEL),
        Some(other) => {
            return Err(Status::internal(format!(
                "compression {other:?} is not supported"
            )));
        }
    };
    let mut out = compress(codec, request.slices(), PREFIX)
        .map_err(|e| Status::internal(format!("Error compressing: {e}")))?;
    let len = u32::try_from(out.len() - PREFIX).map_err(|_| too_long(out.len() - PREFIX))?;
    out[0] = 1;
    out[1..PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(vec![Bytes::from(out)])
}

/// The `grpc-encoding` of a response: `None` for none or `identity`, the configured codec, or
/// `UNIMPLEMENTED` for any other (as tonic answers a codec it was not told to accept).
fn response_encoding(
    headers: &HeaderMap,
    accepted: Option<CompressionEncoding>,
) -> Result<Option<CompressionEncoding>, Status> {
    let Some(value) = headers.get(GRPC_ENCODING) else {
        return Ok(None);
    };
    match (value.as_bytes(), accepted) {
        (b"identity", _) => Ok(None),
        (b"gzip", Some(CompressionEncoding::Gzip)) => Ok(Some(CompressionEncoding::Gzip)),
        (b"zstd", Some(CompressionEncoding::Zstd)) => Ok(Some(CompressionEncoding::Zstd)),
        (other, _) => Err(Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Sends `request` to `path` on `channel` once; the response message's bytes, or the status
/// the call ended with (a transport failure is a status with the error as its source, as
/// tonic makes it).
pub(crate) async fn unary(
    channel: &mut Channel,
    path: &'static str,
    headers: &HeaderMap,
    request: &OtlpRequest,
    compression: Option<CompressionEncoding>,
) -> Result<Bytes, Status> {
    let body = SlicesBody::new(frames(request, compression)?);
    let mut http_request = http::Request::new(tonic::body::Body::new(body));
    *http_request.method_mut() = http::Method::POST;
    *http_request.uri_mut() = http::Uri::from(PathAndQuery::from_static(path));
    *http_request.version_mut() = http::Version::HTTP_2;
    *http_request.headers_mut() = headers.clone();
    let response = channel
        .call(http_request)
        .await
        .map_err(|e| Status::from_error(e.into()))?;

    // What tonic's client does with a response (`Grpc::create_response`, `client_streaming`).
    let (parts, body) = response.into_parts();
    let encoding = response_encoding(&parts.headers, compression)?;
    if let Some(status) = Status::from_header_map(&parts.headers) {
        // Trailers-only: the status is all there is.
        return Err(match status.code() {
            Code::Ok => Status::internal("Missing response message."),
            _ => status,
        });
    }
    if parts.status != http::StatusCode::OK {
        return Err(http_error(parts.status, body).await);
    }
    let mut stream = Streaming::new_response(BytesCodec, body, parts.status, encoding, None);
    let message = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing response message."))?;
    stream.trailers().await?;
    Ok(message)
}

/// The status of a response that is not HTTP 200 and has no `grpc-status` header (a proxy's
/// or load balancer's error page): its trailers' status if it has one, else its HTTP status
/// mapped as gRPC specifies (gRPC's http-grpc-status-mapping: 429, 502, 503, 504 are
/// `UNAVAILABLE`, so retried), with the start of its body. tonic maps the same codes, but only
/// when the body is empty: it reads any other body as gRPC messages and ends with `INTERNAL`
/// ("invalid compression flag"), which is not retried — data lost to a proxy's 503 page.
async fn http_error(status: http::StatusCode, body: tonic::body::Body) -> Status {
    use http_body_util::BodyExt;
    // An error page is small; never buffer more than 64 KiB of whatever is sent.
    let collected = http_body_util::Limited::new(body, 64 * 1024)
        .collect()
        .await
        .ok();
    if let Some(from_trailers) = collected
        .as_ref()
        .and_then(|c| c.trailers())
        .and_then(Status::from_header_map)
    {
        return from_trailers;
    }
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    // tonic's words, so an empty answer reads as it did through tonic's client.
    let mut message = format!(
        "grpc-status header missing, mapped from HTTP status code {}",
        status.as_u16()
    );
    let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
    if !body.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
        message.push_str(": ");
        message.push_str(text.trim());
    }
    Status::new(code, message)
}

/// Waits until `channel` can take a request (connecting if it must).
pub(crate) async fn ready(channel: &mut Channel) -> Result<(), tonic::transport::Error> {
    std::future::poll_fn(|cx| Service::<http::Request<tonic::body::Body>>::poll_ready(channel, cx))
        .await
}
