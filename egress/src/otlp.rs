//! The `otlp` (gRPC) and `otlphttp` exporters: Arrow encoded once to OTLP protobuf (or JSON)
//! and sent as bytes, behind the sending queue and retry of [`crate::queue`].
//!
//! ```yaml
//! exporters:
//!   otlp/jaeger:
//!     endpoint: jaeger-collector:4317   # host:port or http://host:port
//!     tls: { insecure: true }           # plaintext; TLS is not wired yet and is refused
//!     compression: gzip                 # default; zstd, none
//!     headers: { x-tenant: a }          # sent as gRPC metadata (values never logged)
//!     timeout: 5s
//!     sending_queue: { queue_size: 1000 }
//!     retry_on_failure: { initial_interval: 5s }
//!   otlphttp:
//!     endpoint: http://gateway:4318     # /v1/traces etc. appended
//!     encoding: proto                   # or json
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BuildContext, ComponentError, ConfigError, Factory, Kind, Node, ParsedConfig, parse_config,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::ExporterMetrics;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::queue::{QueueConfig, QueuedExporter, RetryConfig, SendError, Sender, Sent};

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs];

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name_override: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
    #[serde(rename = "")]
    Empty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpGrpcConfig {
    pub endpoint: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default = "d5s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// Accepted for compatibility; tonic balances over the resolved addresses itself.
    #[serde(default)]
    pub balancer_name: Option<String>,
    #[serde(default)]
    pub keepalive: Option<serde_json::Value>,
    #[serde(default)]
    pub wait_for_ready: Option<bool>,
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}

/// `http://host:port` from `host:port` or a URL, refusing what needs TLS (not wired yet).
fn plaintext_url(
    endpoint: &str,
    tls: Option<&TlsConfig>,
    default_scheme_tls: bool,
) -> Result<String, ConfigError> {
    let insecure = tls.is_some_and(|t| t.insecure);
    let refuse = || {
        ConfigError::new(
            "tls",
            "TLS is not supported by sluice's exporters yet; use an http:// endpoint or `tls: {insecure: true}`",
        )
    };
    if let Some(rest) = endpoint.strip_prefix("https://") {
        let _ = rest;
        return Err(refuse());
    }
    if endpoint.starts_with("http://") {
        return Ok(endpoint.trim_end_matches('/').to_string());
    }
    if default_scheme_tls && !insecure {
        return Err(refuse());
    }
    if endpoint.is_empty() || endpoint.contains("://") {
        return Err(ConfigError::new(
            "endpoint",
            format!("invalid endpoint {endpoint:?}: expected host:port or http://host:port"),
        ));
    }
    Ok(format!("http://{endpoint}"))
}

/// A sender behind the sending queue and retry loop, with the exporter's counters.
fn queued<S: Sender>(
    ctx: BuildContext,
    sender: S,
    queue: &QueueConfig,
    retry: &RetryConfig,
    timeout: Duration,
) -> Arc<dyn Node> {
    let metrics = ExporterMetrics::new(&ctx.telemetry, &ctx.id);
    Arc::new(QueuedExporter::new(
        ctx.id,
        sender,
        queue.clone(),
        retry.clone(),
        timeout,
        metrics,
    ))
}

/// The OTLP gRPC method path of a signal.
fn grpc_path(s: Signal) -> &'static str {
    match s {
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }
}

/// Sends pre-encoded request bytes; hands back the raw response bytes. Public for other
/// clients of pre-encoded OTLP (the load generator).
#[derive(Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The number of items a server rejected, from an `Export*ServiceResponse`'s partial success.
fn rejected_items(signal: Signal, response: &[u8]) -> usize {
    use opentelemetry_proto::tonic::collector as c;
    let n = match signal {
        Signal::Traces => c::trace::v1::ExportTraceServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
        Signal::Metrics => c::metrics::v1::ExportMetricsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
        Signal::Logs => c::logs::v1::ExportLogsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_log_records),
    };
    n.unwrap_or(0).max(0) as usize
}

pub struct GrpcSender {
    channel: Channel,
    compression: Option<CompressionEncoding>,
    headers: tonic::metadata::MetadataMap,
}

impl Sender for GrpcSender {
    async fn send(&self, payload: &Payload) -> Result<Sent, SendError> {
        let bytes = Bytes::from(sluice_engine::otlp::encode_to_vec(payload));
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if let Some(c) = self.compression {
            grpc = grpc.send_compressed(c).accept_compressed(c);
        }
        grpc.ready()
            .await
            .map_err(|e| SendError::retryable(format!("connection not ready: {e}")))?;
        let mut req = tonic::Request::new(bytes);
        *req.metadata_mut() = self.headers.clone();
        let path = http::uri::PathAndQuery::from_static(grpc_path(payload.signal()));
        match grpc.unary(req, path, BytesCodec).await {
            Ok(resp) => Ok(Sent {
                rejected: rejected_items(payload.signal(), resp.get_ref()),
            }),
            Err(status) => Err(grpc_error(&status)),
        }
    }
}

/// The Collector's retryable gRPC codes.
fn grpc_error(s: &Status) -> SendError {
    let retryable = matches!(
        s.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
    );
    SendError {
        retryable,
        retry_after: None,
        message: format!("{:?}: {}", s.code(), s.message()),
    }
}

pub struct OtlpGrpcFactory;

impl Factory for OtlpGrpcFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn signals(&self) -> &'static [Signal] {
        ALL
    }
    fn description(&self) -> &'static str {
        "OTLP over gRPC, with sending queue and retry"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: OtlpGrpcConfig = parse_config(config)?;
        plaintext_url(&c.endpoint, c.tls.as_ref(), true)?;
        for (k, v) in &c.headers {
            let bad = tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()).is_err()
                || tonic::metadata::MetadataValue::try_from(v.as_str()).is_err();
            if bad {
                return Err(ConfigError::new(
                    format!("headers.{k}"),
                    "not a valid gRPC metadata key/value",
                ));
            }
        }
        Ok(Arc::new(c))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<OtlpGrpcConfig>()?;
        let url = plaintext_url(&c.endpoint, c.tls.as_ref(), true)
            .map_err(|e| ComponentError::new(&ctx.id, e))?;
        // Lazy: a peer that is down at startup is a retryable send error, not a fatal one.
        let channel = Endpoint::from_shared(url)
            .map_err(|e| ComponentError::new(&ctx.id, e))?
            .connect_timeout(c.timeout)
            .connect_lazy();
        let mut headers = tonic::metadata::MetadataMap::new();
        for (k, v) in &c.headers {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
                tonic::metadata::MetadataValue::try_from(v.as_str()),
            ) {
                headers.insert(k, v);
            }
        }
        let compression = match c.compression {
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
            Compression::None | Compression::Empty => None,
        };
        let sender = GrpcSender {
            channel,
            compression,
            headers,
        };
        Ok(queued(
            ctx,
            sender,
            &c.sending_queue,
            &c.retry_on_failure,
            c.timeout,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// otlphttp

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpEncoding {
    #[default]
    Proto,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpConfig {
    #[serde(default)]
    pub endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub encoding: HttpEncoding,
    #[serde(default = "d30s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn d30s() -> Duration {
    Duration::from_secs(30)
}

impl OtlpHttpConfig {
    fn url(&self, s: Signal) -> Result<String, ConfigError> {
        let (explicit, field, suffix) = match s {
            Signal::Traces => (&self.traces_endpoint, "traces_endpoint", "/v1/traces"),
            Signal::Metrics => (&self.metrics_endpoint, "metrics_endpoint", "/v1/metrics"),
            Signal::Logs => (&self.logs_endpoint, "logs_endpoint", "/v1/logs"),
        };
        match (explicit, &self.endpoint) {
            (Some(e), _) => plaintext_url(e, self.tls.as_ref(), false).map_err(|e| e.within(field)),
            (None, Some(base)) => Ok(format!(
                "{}{suffix}",
                plaintext_url(base, self.tls.as_ref(), false)?
            )),
            (None, None) => Err(ConfigError::new(
                "endpoint",
                format!("set endpoint or {field}"),
            )),
        }
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub struct HttpSender {
    client: HttpClient,
    urls: BTreeMap<Signal, http::Uri>,
    encoding: HttpEncoding,
    compression: Compression,
    headers: http::HeaderMap,
}

impl Sender for HttpSender {
    async fn send(&self, payload: &Payload) -> Result<Sent, SendError> {
        let signal = payload.signal();
        let body = match self.encoding {
            HttpEncoding::Proto => sluice_engine::otlp::encode_to_vec(payload),
            HttpEncoding::Json => sluice_engine::otlp::encode_json(payload)
                .map_err(|e| SendError::permanent(format!("cannot encode JSON: {e}")))?,
        };
        let (body, content_encoding) = match self.compression {
            Compression::Gzip => (gzip(&body), Some("gzip")),
            Compression::Zstd => (
                zstd::encode_all(&body[..], 1)
                    .map_err(|e| SendError::permanent(format!("zstd: {e}")))?,
                Some("zstd"),
            ),
            Compression::None | Compression::Empty => (body, None),
        };
        let uri = self
            .urls
            .get(&signal)
            .cloned()
            .ok_or_else(|| SendError::permanent("no endpoint for signal"))?;
        let mut req = http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                match self.encoding {
                    HttpEncoding::Proto => "application/x-protobuf",
                    HttpEncoding::Json => "application/json",
                },
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::permanent(e.to_string()))?;
        if let Some(ce) = content_encoding {
            req.headers_mut().insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static(ce),
            );
        }
        for (k, v) in &self.headers {
            req.headers_mut().insert(k, v.clone());
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| SendError::retryable(format!("HTTP request failed: {e}")))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // A response is a small Export*ServiceResponse or error status; never buffer more than
        // 64 KiB of whatever a misbehaving server sends.
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            let rejected = if self.encoding == HttpEncoding::Proto {
                rejected_items(signal, &body)
            } else {
                0
            };
            return Ok(Sent { rejected });
        }
        let message = format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        );
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Err(SendError {
            retryable,
            retry_after,
            message,
        })
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e =
        flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::fast());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
}

pub struct OtlpHttpFactory;

impl Factory for OtlpHttpFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "otlphttp"
    }
    fn signals(&self) -> &'static [Signal] {
        ALL
    }
    fn description(&self) -> &'static str {
        "OTLP over HTTP (protobuf or JSON), with sending queue and retry"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: OtlpHttpConfig = parse_config(config)?;
        for s in Signal::ALL {
            c.url(s)?;
        }
        for (k, v) in &c.headers {
            if http::HeaderName::try_from(k.as_str()).is_err()
                || http::HeaderValue::try_from(v.as_str()).is_err()
            {
                return Err(ConfigError::new(
                    format!("headers.{k}"),
                    "not a valid HTTP header",
                ));
            }
        }
        Ok(Arc::new(c))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<OtlpHttpConfig>()?;
        let mut urls = BTreeMap::new();
        for s in Signal::ALL {
            let u = c.url(s).map_err(|e| ComponentError::new(&ctx.id, e))?;
            urls.insert(
                s,
                u.parse::<http::Uri>()
                    .map_err(|e| ComponentError::new(&ctx.id, e))?,
            );
        }
        let mut headers = http::HeaderMap::new();
        for (k, v) in &c.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k.as_str()),
                http::HeaderValue::try_from(v.as_str()),
            ) {
                headers.insert(k, v);
            }
        }
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let sender = HttpSender {
            client,
            urls,
            encoding: c.encoding,
            compression: c.compression,
            headers,
        };
        Ok(queued(
            ctx,
            sender,
            &c.sending_queue,
            &c.retry_on_failure,
            c.timeout,
        ))
    }
}
