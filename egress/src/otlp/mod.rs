//! The `otlp` (gRPC) and `otlphttp` exporters: Arrow encoded once to OTLP protobuf (or JSON)
//! and sent as bytes, behind the sending queue and retry of [`crate::queue`].
//!
//! ```yaml
//! exporters:
//!   otlp/jaeger:
//!     endpoint: jaeger-collector:4317   # host:port, http://host:port or https://host:port
//!     tls: { insecure: true }           # plaintext; without it (the default) TLS, see below
//!     compression: gzip                 # default; zstd, none
//!     headers: { x-tenant: a }          # sent as gRPC metadata (values never logged)
//!     timeout: 5s
//!     sending_queue: { queue_size: 1000 }
//!     retry_on_failure: { initial_interval: 5s }
//!   otlphttp:
//!     endpoint: http://gateway:4318     # /v1/traces etc. appended
//!     encoding: proto                   # or json
//! ```
//!
//! TLS follows the Collector (`configgrpc`, `confighttp`, `configtls`; settings in
//! `sluice_tls::TlsClientSetting`): the gRPC exporter uses TLS unless `tls.insecure` is true
//! and no CA is set, and always for an `https://` endpoint (with the system's roots when
//! `insecure`), whatever the `http://` prefix says otherwise; the HTTP exporter uses TLS
//! exactly for `https://` URLs. The files are read when the exporter is built (a missing file
//! fails startup naming it); a handshake that fails (unknown CA, wrong name, plaintext peer)
//! is a retryable send error whose message says why, counted in `send_failed` once retries
//! are exhausted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prost::Message;
use request::SlicesBody;
use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BuildContext, ComponentError, ComponentId, ConfigError, ExtensionRef, Factory, Kind, NoEffect,
    Node, ParsedConfig, parse_config,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::schema::Signal;
use sluice_tls::{TlsClientSetting, TlsError};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use crate::grpc_target::{Balancer, ConnectTo, GrpcTarget, RoundRobin};
use crate::loadbalancing::resolver::DnsResolver;
use tonic::{Code, Status};

mod grpc_call;
mod request;

pub use request::OtlpRequest;

use crate::queue::{
    DEFAULT_MAX_REQUEST_SIZE, MIN_MAX_REQUEST_SIZE, QueueConfig, QueuedExporter, RetryConfig,
    SendError, Sender, Sent,
};

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs];

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
    /// Absent means the Collector's default: TLS, verified against the system's roots.
    #[serde(default)]
    pub tls: TlsClientSetting,
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
    /// sluice's: the largest request body (uncompressed protobuf) ever sent, in bytes; larger
    /// payloads are split. Not a Collector setting: see the module documentation.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: usize,
    /// `round_robin` (default) or `pick_first`: with a `dns:///host:port` endpoint, whether
    /// requests take each resolved address in turn ([`crate::grpc_target`]).
    #[serde(default)]
    pub balancer_name: Option<String>,
    /// Accepted without effect (warned, see `without_effect`), as `wait_for_ready`.
    #[serde(default)]
    pub keepalive: Option<serde_json::Value>,
    #[serde(default)]
    pub wait_for_ready: Option<bool>,
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}

fn default_max_request_size() -> usize {
    DEFAULT_MAX_REQUEST_SIZE
}

/// `max_request_size` within what can be sent: at least [`MIN_MAX_REQUEST_SIZE`], at most what
/// a gRPC frame's 32-bit length can say.
fn check_max_request_size(n: usize) -> Result<(), ConfigError> {
    if n < MIN_MAX_REQUEST_SIZE || n > u32::MAX as usize {
        return Err(ConfigError::new(
            "max_request_size",
            format!(
                "{n} bytes: must be between {MIN_MAX_REQUEST_SIZE} and {} (default {DEFAULT_MAX_REQUEST_SIZE}, 4 MiB)",
                u32::MAX
            ),
        ));
    }
    Ok(())
}

/// A TLS setting's error at its path (`tls.ca_file: ...`).
pub(crate) fn tls_config_error(e: &TlsError) -> ConfigError {
    ConfigError::new(e.field().unwrap_or_default(), e.detail()).within("tls")
}

/// A gRPC endpoint: `host:port`, optionally prefixed `http://` or `https://` (as the
/// Collector, which strips either). Returns whether it said `https://`, and `host:port`.
pub(crate) fn grpc_endpoint(endpoint: &str) -> Result<(bool, &str), ConfigError> {
    let (https, rest) = match (
        endpoint.strip_prefix("https://"),
        endpoint.strip_prefix("http://"),
    ) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => (false, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains("://") || rest.contains('/') {
        return Err(ConfigError::new(
            "endpoint",
            format!(
                "invalid endpoint {endpoint:?}: expected host:port, http://host:port or https://host:port"
            ),
        ));
    }
    Ok((https, rest))
}

/// An `otlp` exporter's endpoint: [`grpc_endpoint`]'s forms, or `dns:///host:port` (resolved,
/// see [`crate::grpc_target`]); returns (https, host:port, dns).
pub(crate) fn otlp_grpc_endpoint(endpoint: &str) -> Result<(bool, &str, bool), ConfigError> {
    if let Some(rest) = endpoint.strip_prefix("dns://") {
        let Some(target) = rest.strip_prefix('/') else {
            return Err(ConfigError::new(
                "endpoint",
                format!(
                    "invalid endpoint {endpoint:?}: a DNS server in the target (dns://server/host:port) is not supported; write dns:///host:port"
                ),
            ));
        };
        let (_, host_port) = grpc_endpoint(target)?;
        if target.contains("://") {
            return Err(ConfigError::new(
                "endpoint",
                format!("invalid endpoint {endpoint:?}: expected dns:///host:port"),
            ));
        }
        return Ok((false, host_port, true));
    }
    let (https, host_port) = grpc_endpoint(endpoint)?;
    Ok((https, host_port, false))
}

/// An OTLP/HTTP URL: kept as is with a scheme, `http://` added to a bare `host:port`.
fn http_url(endpoint: &str) -> Result<String, ConfigError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return Ok(endpoint.trim_end_matches('/').to_string());
    }
    if endpoint.is_empty() || endpoint.contains("://") {
        return Err(ConfigError::new(
            "endpoint",
            format!(
                "invalid endpoint {endpoint:?}: expected http://host:port, https://host:port or host:port"
            ),
        ));
    }
    Ok(format!("http://{endpoint}"))
}

/// The client TLS config for a connection that uses TLS: the configured one, or (for an
/// `https://` endpoint with `insecure` and no CA, as the Collector does) the default one,
/// verified against the system's roots.
fn client_tls(
    id: &ComponentId,
    tls: &TlsClientSetting,
) -> Result<rustls::ClientConfig, ComponentError> {
    let setting = if tls.plaintext() {
        &TlsClientSetting::default()
    } else {
        tls
    };
    setting
        .load()
        .map_err(|e| ComponentError::new(id, format!("tls: {e}")))
}

/// A TCP connector (TCP_NODELAY, no scheme check) wrapped in TLS for `https://` URIs, with
/// `tls.server_name_override` as the name to verify when set. ALPN: h2 for gRPC, h2 and
/// http/1.1 for OTLP/HTTP.
fn https_connector(
    config: rustls::ClientConfig,
    tls: &TlsClientSetting,
    grpc: bool,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match tls.server_name() {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| format!("tls.server_name_override {name:?}: {e}"))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(if grpc {
        builder.enable_http2().wrap_connector(tcp)
    } else {
        builder.enable_all_versions().wrap_connector(tcp)
    })
}

/// An error and its causes, `outer: inner: root` (transport errors keep the useful part,
/// such as rustls' "invalid peer certificate: UnknownIssuer", in their sources).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A lazily connecting gRPC channel to `endpoint` (`host:port`, `http://` or `https://`), with
/// TLS as the Collector decides it (see the module docs), and whether it is plaintext. Lazy: a
/// peer that is down at startup is a retryable send error, not a fatal one.
pub(crate) fn grpc_channel(
    id: &ComponentId,
    endpoint: &str,
    tls: &TlsClientSetting,
    connect_timeout: Duration,
) -> Result<(Channel, bool), ComponentError> {
    let (https, host_port) = grpc_endpoint(endpoint).map_err(|e| ComponentError::new(id, e))?;
    if https || !tls.plaintext() {
        let config = client_tls(id, tls)?;
        let connector =
            https_connector(config, tls, true).map_err(|e| ComponentError::new(id, e))?;
        // tonic itself does no TLS here (its TLS features are off); the `https` scheme routes
        // the connection through the rustls connector.
        let channel = Endpoint::from_shared(format!("https://{host_port}"))
            .map_err(|e| ComponentError::new(id, e))?
            .connect_timeout(connect_timeout)
            .connect_with_connector_lazy(connector);
        Ok((channel, false))
    } else {
        let channel = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| ComponentError::new(id, e))?
            .connect_timeout(connect_timeout)
            .connect_lazy();
        Ok((channel, true))
    }
}

/// Where the `otlp` exporter of `c` sends ([`crate::grpc_target`]), and whether in plaintext.
fn grpc_target(id: &ComponentId, c: &OtlpGrpcConfig) -> Result<(GrpcTarget, bool), ComponentError> {
    let bad = |e: String| ComponentError::new(id, e);
    let (https, host_port, dns) =
        otlp_grpc_endpoint(&c.endpoint).map_err(|e| bad(e.to_string()))?;
    let balancer = Balancer::parse(c.balancer_name.as_deref()).map_err(bad)?;
    let scheme = if https { "https" } else { "http" };
    let (channel, plaintext) =
        grpc_channel(id, &format!("{scheme}://{host_port}"), &c.tls, c.timeout)?;
    if !dns || balancer == Balancer::PickFirst {
        return Ok((GrpcTarget::One(channel), plaintext));
    }
    let (host, port) = host_port.rsplit_once(':').ok_or_else(|| {
        bad(format!(
            "endpoint {:?}: dns:/// needs host:port",
            c.endpoint
        ))
    })?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let nameserver = DnsResolver::nameserver_from_env().map_err(bad)?;
    let resolver = DnsResolver::new(
        host.clone(),
        Some(port.to_string()),
        crate::grpc_target::RESOLVE_EVERY,
        Duration::from_secs(1),
        nameserver,
    )
    .map_err(bad)?;
    // Each address's channel: TLS with the name as the server name (unless overridden), and
    // the name as every request's :authority, as gRPC-Go.
    let tls = c.tls.clone();
    let timeout = c.timeout;
    let origin: http::Uri = format!("{scheme}://{host_port}")
        .parse()
        .map_err(|e| bad(format!("endpoint {:?}: {e}", c.endpoint)))?;
    let connect_id = id.clone();
    let connect: ConnectTo = Box::new(move |addr: std::net::SocketAddr| {
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| e.to_string())?
            .origin(origin.clone())
            .connect_timeout(timeout);
        if plaintext {
            return Ok(endpoint.connect_lazy());
        }
        let config = client_tls(&connect_id, &tls).map_err(|e| e.to_string())?;
        let mut named = tls.clone();
        if named.server_name().is_none() {
            named.server_name_override = Some(host.clone());
        }
        let connector = https_connector(config, &named, true)?;
        Ok(endpoint.connect_with_connector_lazy(connector))
    });
    Ok((
        GrpcTarget::RoundRobin(RoundRobin::new(resolver, connect, channel)),
        plaintext,
    ))
}

/// `headers` as gRPC metadata; an invalid key or value is an error at `headers.<key>`.
pub(crate) fn grpc_metadata(
    headers: &BTreeMap<String, String>,
) -> Result<tonic::metadata::MetadataMap, ConfigError> {
    let mut map = tonic::metadata::MetadataMap::new();
    for (k, v) in headers {
        match (
            tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
            tonic::metadata::MetadataValue::try_from(v.as_str()),
        ) {
            (Ok(key), Ok(value)) => {
                map.insert(key, value);
            }
            _ => {
                return Err(ConfigError::new(
                    format!("headers.{k}"),
                    "not a valid gRPC metadata key/value",
                ));
            }
        }
    }
    Ok(map)
}

/// A sender behind the sending queue (persistent if configured) and retry loop, with the
/// exporter's counters.
fn queued<S: Sender>(
    ctx: BuildContext,
    sender: S,
    queue: &QueueConfig,
    retry: &RetryConfig,
    timeout: Duration,
    max_request_size: usize,
) -> Result<Arc<QueuedExporter<S>>, ComponentError> {
    Ok(Arc::new(QueuedExporter::build(
        &ctx,
        sender,
        queue.clone(),
        retry.clone(),
        timeout,
        max_request_size,
    )?))
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

/// What a server's `Export*ServiceResponse` says it rejected (its partial success): the item
/// count and the server's message. The response comes as protobuf (gRPC, OTLP/HTTP protobuf)
/// or as OTLP/JSON (`{"partialSuccess": {"rejectedSpans": "2", "errorMessage": "..."}}`).
fn partial_success(signal: Signal, response: &[u8], json: bool) -> Sent {
    use opentelemetry_proto::tonic::collector as c;
    if json {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(response) else {
            return Sent::default();
        };
        let count = match signal {
            Signal::Traces => "rejectedSpans",
            Signal::Metrics => "rejectedDataPoints",
            Signal::Logs => "rejectedLogRecords",
        };
        let p = &v["partialSuccess"];
        // int64 is a string in proto3 JSON; numbers are accepted too.
        let rejected = match &p[count] {
            serde_json::Value::String(s) => s.parse::<i64>().unwrap_or(0),
            n => n.as_i64().unwrap_or(0),
        };
        return Sent {
            rejected: rejected.max(0) as usize,
            message: p["errorMessage"].as_str().unwrap_or_default().to_string(),
        };
    }
    let (rejected, message) = match signal {
        Signal::Traces => c::trace::v1::ExportTraceServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => c::metrics::v1::ExportMetricsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => c::logs::v1::ExportLogsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default();
    Sent {
        rejected: rejected.max(0) as usize,
        message,
    }
}

pub struct GrpcSender {
    target: GrpcTarget,
    compression: Option<CompressionEncoding>,
    /// Every call's headers: gRPC's and the configured metadata ([`grpc_call::call_headers`]).
    headers: http::HeaderMap,
    /// Plaintext connection: failures get a hint when the peer may be speaking TLS.
    plaintext: bool,
    /// As configured, for logs.
    endpoint: String,
}

impl Sender for GrpcSender {
    type Request = OtlpRequest;

    fn size(request: &OtlpRequest) -> usize {
        request.len()
    }

    fn endpoint(&self, _: Signal) -> &str {
        &self.endpoint
    }

    fn encode(&self, payload: &Payload) -> Result<OtlpRequest, SendError> {
        // A wire form is sent from the bytes it came in: not copied.
        Ok(OtlpRequest::from_slices(
            sluice_engine::otlp::encode_to_slices(payload),
        ))
    }

    fn encoding_copies(&self, payload: &Payload) -> bool {
        payload.wire().is_none()
    }

    fn reuse_otlp_protobuf(&self, otlp_protobuf: Bytes) -> Option<OtlpRequest> {
        Some(OtlpRequest::from(otlp_protobuf))
    }

    fn encodes_wire_form(&self) -> bool {
        true
    }

    async fn send(&self, signal: Signal, request: &OtlpRequest) -> Result<Sent, SendError> {
        let mut channel = self.target.channel().await;
        grpc_call::ready(&mut channel).await.map_err(|e| {
            SendError::retryable(format!("connection not ready: {}", error_chain(&e)))
        })?;
        let path = grpc_path(signal);
        match grpc_call::unary(&mut channel, path, &self.headers, request, self.compression).await {
            Ok(response) => Ok(partial_success(signal, &response, false)),
            Err(status) => Err(with_tls_hint(grpc_error(&status), self.plaintext)),
        }
    }
}

/// A plaintext connection that the peer breaks off, or answers with something that is not
/// HTTP, is most often a TLS server on the other side: say so.
pub(crate) fn with_tls_hint(mut e: SendError, plaintext: bool) -> SendError {
    const SIGNS: [&str; 3] = ["broken pipe", "connection reset", "invalid HTTP version"];
    if plaintext && SIGNS.iter().any(|s| e.message.contains(s)) {
        e.message.push_str(
            " (sent in plaintext: if the server expects TLS, use an https:// endpoint or drop tls.insecure)",
        );
    }
    e
}

/// The Collector's retryable gRPC codes, and transport failures. tonic reports a connection
/// that breaks after connecting (a TLS 1.3 client certificate refused, a plaintext client
/// talking to a TLS server) as `Unknown` with the cause attached as the status's source; such
/// a status was made locally, not sent by the server, and gRPC-Go (the Collector) calls it
/// `Unavailable`: retryable, with the cause in the message.
pub(crate) fn grpc_error(s: &Status) -> SendError {
    if is_too_large(s.code(), s.message()) {
        return SendError::too_large(format!("{:?}: {}", s.code(), s.message()));
    }
    let transport = std::error::Error::source(s).map(error_chain);
    let retryable = transport.is_some()
        || matches!(
            s.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
                | Code::ResourceExhausted
        );
    let message = match transport {
        Some(cause) if cause.contains(s.message()) => format!("{:?}: {cause}", s.code()),
        Some(cause) => format!("{:?}: {}: {cause}", s.code(), s.message()),
        None => format!("{:?}: {}", s.code(), s.message()),
    };
    SendError {
        retryable,
        retry_after: None,
        too_large: false,
        message,
    }
}

/// A server's "your message is over my size limit": `OUT_OF_RANGE` (tonic, sluice) or
/// `RESOURCE_EXHAUSTED` (gRPC-Go and gRPC C-core, so the Collector and most servers) with a
/// message saying so. `RESOURCE_EXHAUSTED` alone means memory pressure, retried as before.
/// The wordings: gRPC-Go "grpc: received message larger than max (N vs. M)", C-core "Received
/// message larger than max", tonic "decoded message length too large" and "size limit ...
/// exceeded while decompressing message".
fn is_too_large(code: Code, message: &str) -> bool {
    if !matches!(code, Code::OutOfRange | Code::ResourceExhausted) {
        return false;
    }
    let m = message.to_ascii_lowercase();
    ["larger than max", "too large", "size limit"]
        .iter()
        .any(|w| m.contains(w))
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
    fn without_effect(&self) -> &'static [NoEffect] {
        const SETTINGS: &[NoEffect] = &[
            NoEffect::new(
                "keepalive",
                "the exporter sends no keepalive pings; a broken connection is found by the \
                      request timeout",
            ),
            NoEffect::new(
                "wait_for_ready",
                "a request to an unreachable endpoint fails at once and is retried by \
                      retry_on_failure",
            ),
        ];
        SETTINGS
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: OtlpGrpcConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn extension_refs(&self, config: &ParsedConfig) -> Vec<ExtensionRef> {
        config
            .downcast_ref::<OtlpGrpcConfig>()
            .map(|c| c.sending_queue.extension_refs())
            .unwrap_or_default()
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<OtlpGrpcConfig>()?;
        Ok(grpc_exporter(ctx, &c)?)
    }
}

impl OtlpGrpcConfig {
    /// The checks `parse_config` makes: the endpoint's form, the request size limit, TLS
    /// settings, header names and values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        otlp_grpc_endpoint(&self.endpoint)?;
        Balancer::parse(self.balancer_name.as_deref())
            .map_err(|e| ConfigError::new("balancer_name", e))?;
        check_max_request_size(self.max_request_size)?;
        self.sending_queue
            .check()
            .map_err(|e| e.within("sending_queue"))?;
        self.tls.validate().map_err(|e| tls_config_error(&e))?;
        grpc_metadata(&self.headers)?;
        Ok(())
    }
}

/// The `otlp` exporter for `c` (checked by [`OtlpGrpcConfig::validate`]): a gRPC sender
/// behind its own sending queue, size limit and retry, counted under `ctx.id`. The
/// `loadbalancing` exporter builds one per backend.
pub fn grpc_exporter(
    ctx: BuildContext,
    c: &OtlpGrpcConfig,
) -> Result<Arc<QueuedExporter<GrpcSender>>, ComponentError> {
    let sender = grpc_sender(&ctx.id, c)?;
    queued(
        ctx,
        sender,
        &c.sending_queue,
        &c.retry_on_failure,
        c.timeout,
        c.max_request_size,
    )
}

/// The gRPC sender of a checked config (its connection is made lazily, on first send).
pub(crate) fn grpc_sender(
    id: &ComponentId,
    c: &OtlpGrpcConfig,
) -> Result<GrpcSender, ComponentError> {
    let (target, plaintext) = grpc_target(id, c)?;
    let metadata = grpc_metadata(&c.headers).map_err(|e| ComponentError::new(id, e))?;
    let compression = match c.compression {
        Compression::Gzip => Some(CompressionEncoding::Gzip),
        Compression::Zstd => Some(CompressionEncoding::Zstd),
        Compression::None | Compression::Empty => None,
    };
    let headers = grpc_call::call_headers(metadata, compression);
    Ok(GrpcSender {
        target,
        compression,
        headers,
        plaintext,
        endpoint: c.endpoint.clone(),
    })
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
    /// Applies to `https://` URLs.
    #[serde(default)]
    pub tls: TlsClientSetting,
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
    /// sluice's: the largest request body (uncompressed protobuf or JSON) ever sent, in bytes.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: usize,
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
            (Some(e), _) => http_url(e).map_err(|e| e.within(field)),
            (None, Some(base)) => Ok(format!("{}{suffix}", http_url(base)?)),
            (None, None) => Err(ConfigError::new(
                "endpoint",
                format!("set endpoint or {field}"),
            )),
        }
    }
}

/// Plaintext only, or plaintext and TLS (by each URL's scheme).
enum HttpClient {
    Plain(Client<HttpConnector, SlicesBody>),
    Tls(Client<HttpsConnector<HttpConnector>, SlicesBody>),
}

impl HttpClient {
    async fn request(
        &self,
        req: http::Request<SlicesBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            HttpClient::Plain(c) => c.request(req).await,
            HttpClient::Tls(c) => c.request(req).await,
        }
    }
}

pub struct HttpSender {
    client: HttpClient,
    /// Per signal: the URL, and its text for logs.
    urls: BTreeMap<Signal, (http::Uri, String)>,
    encoding: HttpEncoding,
    compression: Compression,
    headers: http::HeaderMap,
}

impl Sender for HttpSender {
    type Request = OtlpRequest;

    fn size(request: &OtlpRequest) -> usize {
        request.len()
    }

    fn endpoint(&self, signal: Signal) -> &str {
        self.urls.get(&signal).map_or("", |(_, text)| text.as_str())
    }

    fn encode(&self, payload: &Payload) -> Result<OtlpRequest, SendError> {
        Ok(match self.encoding {
            HttpEncoding::Proto => {
                OtlpRequest::from_slices(sluice_engine::otlp::encode_to_slices(payload))
            }
            HttpEncoding::Json => OtlpRequest::from(Bytes::from(
                sluice_engine::otlp::encode_json(payload)
                    .map_err(|e| SendError::permanent(format!("cannot encode JSON: {e}")))?,
            )),
        })
    }

    fn encoding_copies(&self, payload: &Payload) -> bool {
        self.encoding == HttpEncoding::Json || payload.wire().is_none()
    }

    fn reuse_otlp_protobuf(&self, otlp_protobuf: Bytes) -> Option<OtlpRequest> {
        (self.encoding == HttpEncoding::Proto).then(|| OtlpRequest::from(otlp_protobuf))
    }

    /// Protobuf only: JSON is made from the tables.
    fn encodes_wire_form(&self) -> bool {
        self.encoding == HttpEncoding::Proto
    }

    async fn send(&self, signal: Signal, request: &OtlpRequest) -> Result<Sent, SendError> {
        // Levels: gzip 1 (fast), zstd 1.
        let compressed = |codec, name| {
            request::compress(codec, request.slices(), 0)
                .map(|out| (SlicesBody::new([Bytes::from(out)]), Some(name)))
                .map_err(|e| SendError::permanent(format!("{name}: {e}")))
        };
        let (body, content_encoding) = match self.compression {
            Compression::Gzip => compressed(request::Codec::Gzip(1), "gzip")?,
            Compression::Zstd => compressed(request::Codec::Zstd(1), "zstd")?,
            Compression::None | Compression::Empty => {
                (SlicesBody::new(request.slices().iter().cloned()), None)
            }
        };
        let uri = self
            .urls
            .get(&signal)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| SendError::permanent("no endpoint for signal"))?;
        let plaintext = uri.scheme_str() != Some("https");
        let mut req = http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                match self.encoding {
                    HttpEncoding::Proto => "application/x-protobuf",
                    HttpEncoding::Json => "application/json",
                },
            )
            .body(body)
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
        let resp = self.client.request(req).await.map_err(|e| {
            let e = SendError::retryable(format!("HTTP request failed: {}", error_chain(&e)));
            with_tls_hint(e, plaintext)
        })?;
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
            return Ok(partial_success(
                signal,
                &body,
                self.encoding == HttpEncoding::Json,
            ));
        }
        let message = format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        );
        if status == http::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(SendError::too_large(message));
        }
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Err(SendError {
            retryable,
            retry_after,
            too_large: false,
            message,
        })
    }
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
        check_max_request_size(c.max_request_size)?;
        c.sending_queue
            .check()
            .map_err(|e| e.within("sending_queue"))?;
        c.tls.validate().map_err(|e| tls_config_error(&e))?;
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
    fn extension_refs(&self, config: &ParsedConfig) -> Vec<ExtensionRef> {
        config
            .downcast_ref::<OtlpHttpConfig>()
            .map(|c| c.sending_queue.extension_refs())
            .unwrap_or_default()
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<OtlpHttpConfig>()?;
        let mut urls = BTreeMap::new();
        for s in Signal::ALL {
            let u = c.url(s).map_err(|e| ComponentError::new(&ctx.id, e))?;
            let uri = u
                .parse::<http::Uri>()
                .map_err(|e| ComponentError::new(&ctx.id, e))?;
            urls.insert(s, (uri, u));
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
        let builder = Client::builder(hyper_util::rt::TokioExecutor::new());
        let client = if urls.values().any(|(u, _)| u.scheme_str() == Some("https")) {
            let config = client_tls(&ctx.id, &c.tls)?;
            let connector = https_connector(config, &c.tls, false)
                .map_err(|e| ComponentError::new(&ctx.id, e))?;
            HttpClient::Tls(builder.build(connector))
        } else {
            HttpClient::Plain(builder.build_http())
        };
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
            c.max_request_size,
        )?)
    }
}
