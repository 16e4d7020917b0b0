//! The `otlp` receiver: OTLP over gRPC (tonic) and HTTP (axum), decoded straight to Arrow.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//!         endpoint: localhost:4317        # default; bind exactly this
//!         max_recv_msg_size_mib: 4        # default; larger messages get OUT_OF_RANGE
//!         keepalive:                      # optional; gRPC-Go's defaults
//!           server_parameters:
//!             max_connection_age: 5m      # GOAWAY after 5 minutes (default: never)
//!             max_connection_age_grace: 30s  # then closed under requests in flight (default: never)
//!             time: 2h                    # ping a client silent this long (default 2h)
//!             timeout: 20s                # close if the ping is unanswered (default 20s)
//!         tls:                            # optional: serve TLS (the Collector's configtls)
//!           cert_file: server.crt
//!           key_file: server.key
//!           client_ca_file: ca.crt        # optional: mTLS, clients need a certificate it signed
//!       http:
//!         endpoint: localhost:4318        # default
//!         max_request_body_size: 20971520 # bytes, default 20 MiB; also caps the decompressed size
//!         traces_url_path: /v1/traces     # defaults for metrics and logs likewise
//!         read_header_timeout: 1m         # defaults: the Collector's confighttp
//!         idle_timeout: 1m
//!         read_timeout: 0s                # none
//!         max_connections: 4096           # sluice's own; beyond it, clients wait in the backlog
//! ```
//!
//! gRPC also has sluice's own `connection_timeout` (120s, gRPC-Go's: a connection that sends
//! nothing is closed) and `max_connections` (4096). See `connections.rs` and the README.
//!
//! A protocol that is not listed is not started. Requests are never decoded into prost
//! structs: gRPC uses a codec that hands over the raw message bytes, and both transports call
//! `sluice_engine::otlp::decode` (protobuf) or `decode_json` (HTTP JSON). gzip and zstd
//! request bodies are accepted on both; HTTP decompression stops at the size limit, so a
//! compression bomb costs at most `max_request_body_size` bytes.
//!
//! Answers follow the Collector: malformed data -> gRPC `INVALID_ARGUMENT` / HTTP 400 with a
//! `google.rpc.Status` naming the problem; memory limiter over its limit -> `RESOURCE_EXHAUSTED`
//! / 429; sending queue full -> `UNAVAILABLE` / 503 (both with `Retry-After` on HTTP and a
//! `google.rpc.RetryInfo` in the status details, so clients retry). Too large -> `OUT_OF_RANGE`
//! / 413, whether the message is over `max_recv_msg_size_mib` as sent or only once
//! decompressed (the message says "larger than max", which sluice's exporters read as "split
//! and send again"), counted as `failed_requests{reason="too_large"}`; gRPC-Go answers
//! `RESOURCE_EXHAUSTED` there, but that code means memory pressure, which a client retries
//! unchanged.
//!
//! Admission before work: when a pipeline fed by the receiver starts with `memory_limiter`,
//! each request asks the process's memory account (`sluice_engine::memory`) for room *before*
//! its body is read: refused at once while memory is above the soft limit, else it reserves
//! its size (gRPC: from the message's length prefix; HTTP: from `Content-Length`, or growing
//! as the body arrives) plus an estimate of its decoded size
//! (`sluice_engine::otlp::decoded_size_estimate`), grown to the decoded payload's size if the
//! estimate was short, and released when the pipeline returns (the processors' copies of the
//! request live until then). A request that does not fit is refused before it is decoded (429
//! / `RESOURCE_EXHAUSTED` with `RetryInfo`); one that could never fit under the limit gets 413 /
//! `RESOURCE_EXHAUSTED` without `RetryInfo` (not retryable). These are counted as
//! `sluice_memory_refused_requests_total{receiver,transport,reason}`; the bytes in flight as
//! `sluice_memory_held_bytes{component="<receiver>",kind="in_flight"}`. Every request's peer
//! address is kept on the payload (`Payload::origin`)
//! for enrichment. Counted: `otelcol_receiver_accepted_*`, `otelcol_receiver_refused_*` and
//! `otelcol_receiver_failed_requests{reason}` (decode, too_large, decompress, media_type (an
//! unsupported `Content-Type`), content_encoding (an unsupported `Content-Encoding`),
//! tls_handshake).
//!
//! `tls` (either protocol) is the Collector's server TLS setting, see `sluice_tls`: checked at
//! config load, its files read at start (a missing file fails startup naming it, before any
//! port is bound). Handshakes run off the accept path; one that fails (a plaintext client, a
//! client certificate from an unknown CA under mTLS) is logged with the peer and counted as
//! `failed_requests{reason="tls_handshake"}`.

mod connections;
pub mod cors;
pub(crate) mod grpc;
mod http;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, ConsumerRef,
    Factory, Kind, Lifecycle, NoEffect, ParsedConfig, Service, SignalConsumers, parse_config,
};
use sluice_engine::config_types::{bind_address, check_listen_endpoint, deserialize_opt_duration};
use sluice_engine::memory::{Held, Holder, Refusal, RefusedRequests};
use sluice_engine::payload::{ClientMetadata, Payload, WireForm};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, ReceiverMetrics, Telemetry};
use sluice_tls::{TlsError, TlsServerSetting};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    #[serde(default)]
    pub protocols: Protocols,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// `None`: not listed, not started. `grpc:` with no body parses as all defaults.
    #[serde(default, deserialize_with = "present_or_default")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "present_or_default")]
    pub http: Option<HttpConfig>,
}

/// A key present with a `null` body (`keepalive:`) means the defaults.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A key that is present with a `null` body (`grpc:`) means "on, with defaults".
fn present_or_default<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: u64,
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub keepalive: KeepaliveConfig,
    /// Accepted without effect (warned): client metadata is not propagated yet.
    #[serde(default)]
    pub include_metadata: Option<bool>,
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
    #[serde(default)]
    pub read_buffer_size: Option<u64>,
    #[serde(default)]
    pub write_buffer_size: Option<u64>,
    /// A new connection that sends nothing (no HTTP/2 preface) this long is closed: gRPC-Go's
    /// `ConnectionTimeout`, not a Collector setting (sluice's own). Default 120s; 0 means none.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub connection_timeout: Option<Duration>,
    /// Connections open at once (sluice's own setting). Beyond it new connections are not
    /// accepted: they wait in the listen backlog until one closes. Default 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
            max_concurrent_streams: None,
            keepalive: KeepaliveConfig::default(),
            include_metadata: None,
            tls: None,
            read_buffer_size: None,
            write_buffer_size: None,
            connection_timeout: None,
            max_connections: default_max_connections(),
        }
    }
}

/// `protocols.grpc.keepalive`: the Collector's `configgrpc.KeepaliveServerConfig`, with
/// gRPC-Go's defaults (a zero or absent duration means the default, as in Go).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveConfig {
    #[serde(default, deserialize_with = "present_or_default")]
    pub server_parameters: Option<KeepaliveServerParameters>,
    /// Accepted without effect (warned): sluice does not police the clients' pings.
    #[serde(default)]
    pub enforcement_policy: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepaliveServerParameters {
    /// Accepted without effect (warned): idle connections stay open.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub max_connection_idle: Option<Duration>,
    /// A connection this old is told to go away (HTTP/2 GOAWAY): requests in flight finish,
    /// the client reconnects (to another replica, behind a load balancer). Default: never.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub max_connection_age: Option<Duration>,
    /// How long requests in flight may still take after `max_connection_age` before the
    /// connection is closed under them. Default: as long as they take.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub max_connection_age_grace: Option<Duration>,
    /// After this long without hearing from a client, the server pings it. Default 2h, at
    /// least 1s (gRPC-Go's).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub time: Option<Duration>,
    /// A ping unanswered for this long closes the connection. Default 20s.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub timeout: Option<Duration>,
}

/// gRPC-Go's defaults for the server's keepalive pings.
const DEFAULT_KEEPALIVE_TIME: Duration = Duration::from_secs(2 * 60 * 60);
const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(1);
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the gRPC server applies, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keepalive {
    pub ping_after: Duration,
    pub ping_timeout: Duration,
    pub max_age: Option<Duration>,
    /// When a connection is closed whatever it is doing: `max_age` + grace, if both are set.
    pub cutoff: Option<Duration>,
}

impl KeepaliveConfig {
    pub(crate) fn resolve(&self) -> Keepalive {
        let p = self.server_parameters.clone().unwrap_or_default();
        let set = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let max_age = set(p.max_connection_age);
        Keepalive {
            ping_after: set(p.time)
                .unwrap_or(DEFAULT_KEEPALIVE_TIME)
                .max(MIN_KEEPALIVE_TIME),
            ping_timeout: set(p.timeout).unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            max_age,
            cutoff: max_age
                .zip(set(p.max_connection_age_grace))
                .map(|(a, g)| a + g),
        }
    }
}

/// Settings accepted so Collector configs load, without effect in sluice: warned about at
/// load (see `Factory::without_effect`).
const WITHOUT_EFFECT: &[NoEffect] = &[
    NoEffect::new(
        "protocols.http.write_timeout",
        "answers are never cut off: the request they answer may already be in a pipeline",
    ),
    NoEffect::new(
        "protocols.grpc.read_buffer_size",
        "buffers are sized by the HTTP/2 implementation",
    ),
    NoEffect::new(
        "protocols.grpc.write_buffer_size",
        "buffers are sized by the HTTP/2 implementation",
    ),
    NoEffect::new(
        "protocols.grpc.keepalive.server_parameters.max_connection_idle",
        "idle connections stay open (max_connection_age does close old ones)",
    ),
    NoEffect::new(
        "protocols.grpc.keepalive.enforcement_policy",
        "clients' pings are answered however often they come, never refused",
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_max_request_body_size")]
    pub max_request_body_size: u64,
    #[serde(default = "default_traces_path")]
    pub traces_url_path: String,
    #[serde(default = "default_metrics_path")]
    pub metrics_url_path: String,
    #[serde(default = "default_logs_path")]
    pub logs_url_path: String,
    /// Accepted without effect (warned): client metadata is not propagated yet.
    #[serde(default)]
    pub include_metadata: Option<bool>,
    /// CORS for browsers (web SDKs) sending here: see [`cors`].
    #[serde(default)]
    pub cors: Option<cors::CorsConfig>,
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
    /// A connection that has not sent a request's headers this long after it opened (or after
    /// its first byte following an idle wait) is closed. Default 1m; 0 means none (Go's
    /// `ReadHeaderTimeout`, as the Collector's `confighttp`).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub read_header_timeout: Option<Duration>,
    /// A request, headers and body, must have arrived this long after its first byte, else it
    /// gets 408. Default none (0).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub read_timeout: Option<Duration>,
    /// A keep-alive connection with no request for this long is closed. Default 1m; 0 means
    /// `read_timeout`, or none if that is 0 too (Go's `IdleTimeout`).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Accepted without effect (warned): an answer is never cut off, since the request it
    /// answers may already be in the pipeline.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub write_timeout: Option<Duration>,
    /// Connections open at once (sluice's own setting). Beyond it new connections are not
    /// accepted: they wait in the listen backlog until one closes. Default 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// The Collector's `confighttp` defaults.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn default_max_connections() -> usize {
    4096
}

impl HttpConfig {
    pub(crate) fn connection_limits(&self) -> connections::ConnectionLimits {
        let nonzero = |d: Duration| Some(d).filter(|d| !d.is_zero());
        let read_timeout = self.read_timeout.and_then(nonzero);
        connections::ConnectionLimits {
            read_header_timeout: nonzero(
                self.read_header_timeout
                    .unwrap_or(DEFAULT_READ_HEADER_TIMEOUT),
            ),
            read_timeout,
            idle_timeout: match self.idle_timeout {
                None => Some(DEFAULT_IDLE_TIMEOUT),
                Some(d) if d.is_zero() => read_timeout,
                Some(d) => Some(d),
            },
            max_connections: self.max_connections,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: default_http_endpoint(),
            max_request_body_size: default_max_request_body_size(),
            traces_url_path: default_traces_path(),
            metrics_url_path: default_metrics_path(),
            logs_url_path: default_logs_path(),
            include_metadata: None,
            cors: None,
            tls: None,
            read_header_timeout: None,
            read_timeout: None,
            idle_timeout: None,
            write_timeout: None,
            max_connections: default_max_connections(),
        }
    }
}

fn default_grpc_endpoint() -> String {
    "localhost:4317".into()
}
fn default_http_endpoint() -> String {
    "localhost:4318".into()
}
fn default_max_recv_msg_size_mib() -> u64 {
    4
}
fn default_max_request_body_size() -> u64 {
    20 * 1024 * 1024
}
fn default_traces_path() -> String {
    "/v1/traces".into()
}
fn default_metrics_path() -> String {
    "/v1/metrics".into()
}
fn default_logs_path() -> String {
    "/v1/logs".into()
}

/// A TLS setting's error at its path: `protocols.grpc.tls.cert_file: ...`.
pub(crate) fn tls_config_error(at: &str, e: &TlsError) -> ConfigError {
    ConfigError::new(e.field().unwrap_or_default(), e.detail()).within(at)
}

pub struct OtlpReceiverFactory;

impl Factory for OtlpReceiverFactory {
    fn kind(&self) -> Kind {
        Kind::Receiver
    }
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "OTLP over gRPC and HTTP (protobuf, JSON; gzip, zstd), decoded straight to Arrow"
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        WITHOUT_EFFECT
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: OtlpReceiverConfig = parse_config(config)?;
        let p = &c.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err(ConfigError::new(
                "protocols",
                "enable at least one of grpc, http",
            ));
        }
        for (protocol, endpoint) in [
            ("grpc", p.grpc.as_ref().map(|g| &g.endpoint)),
            ("http", p.http.as_ref().map(|h| &h.endpoint)),
        ] {
            if let Some(endpoint) = endpoint {
                check_listen_endpoint(endpoint)
                    .map_err(|m| ConfigError::new(format!("protocols.{protocol}.endpoint"), m))?;
            }
        }
        for (protocol, tls) in [
            ("grpc", p.grpc.as_ref().and_then(|g| g.tls.as_ref())),
            ("http", p.http.as_ref().and_then(|h| h.tls.as_ref())),
        ] {
            if let Some(tls) = tls {
                tls.validate()
                    .map_err(|e| tls_config_error(&format!("protocols.{protocol}.tls"), &e))?;
            }
        }
        if p.grpc.as_ref().is_some_and(|g| g.max_connections == 0) {
            return Err(ConfigError::new(
                "protocols.grpc.max_connections",
                "must be at least 1",
            ));
        }
        if let Some(h) = &p.http {
            if let Some(cors) = &h.cors {
                cors.check()
                    .map_err(|m| ConfigError::new("protocols.http.cors", m))?;
            }
            if h.max_connections == 0 {
                return Err(ConfigError::new(
                    "protocols.http.max_connections",
                    "must be at least 1",
                ));
            }
            for (field, path) in [
                ("traces_url_path", &h.traces_url_path),
                ("metrics_url_path", &h.metrics_url_path),
                ("logs_url_path", &h.logs_url_path),
            ] {
                if !path.starts_with('/') {
                    return Err(ConfigError::new(
                        format!("protocols.http.{field}"),
                        "must start with `/`",
                    ));
                }
            }
        }
        Ok(Arc::new(c))
    }
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let config = ctx.config::<OtlpReceiverConfig>()?;
        Ok(Arc::new(OtlpReceiver::new(
            ctx.id,
            (*config).clone(),
            consumers,
            &ctx.telemetry,
        )))
    }
}

/// What both transports share: the pipelines by signal, the counters of one transport, and
/// the receiver's share of the memory account (requests in flight).
pub(crate) struct Handler {
    consumers: SignalConsumers,
    metrics: ReceiverMetrics,
    failed: BTreeMap<&'static str, Counter>,
    /// Per signal: whether the pipelines fed start with a memory limiter (admission first).
    limited: [bool; 3],
    /// Per signal: whether the pipelines fed take payloads in their wire form (never read
    /// tables): protobuf requests are then skimmed, not decoded, when the skim finds them
    /// clean (`sluice_engine::otlp::skim`).
    wire: [bool; 3],
    in_flight: Holder,
    refused_requests: RefusedRequests,
    invalid_utf8: Counter,
    /// Requests passed on in their wire form (skimmed, not decoded).
    undecoded: Counter,
    /// `include_metadata`: requests' client metadata is kept on their payloads.
    include_metadata: bool,
}

/// Why an export request was not accepted.
pub(crate) enum ExportError {
    /// The body is not valid OTLP (or not decodable): the client must not retry.
    Decode(String),
    /// The pipeline refused the data (memory limiter, full queue...).
    Consume(ConsumeError),
    /// No pipeline takes this signal from this receiver.
    NoPipeline(Signal),
    /// No room in memory for the request (before or right after decoding).
    Memory(Refusal),
}

pub(crate) const FAIL_REASONS: [&str; 8] = [
    "decode",
    "too_large",
    "decompress",
    "media_type",
    "content_encoding",
    "tls_handshake",
    "read_header_timeout",
    "read_timeout",
];

/// How long clients are asked to wait before retrying a refusal (`Retry-After`, `RetryInfo`).
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

impl Handler {
    fn new(
        id: &ComponentId,
        transport: &str,
        consumers: SignalConsumers,
        t: &Telemetry,
        include_metadata: bool,
    ) -> Self {
        let id_s = id.to_string();
        let failed = FAIL_REASONS
            .into_iter()
            .map(|r| {
                (
                    r,
                    t.counter(
                        "otelcol_receiver_failed_requests",
                        "Requests refused before reaching a pipeline (undecodable, too large, bad encoding)",
                        &[("receiver", id_s.as_str()), ("transport", transport), ("reason", r)],
                    ),
                )
            })
            .collect();
        let refused_requests = RefusedRequests::new(t, &id_s, transport);
        let limited = Signal::ALL.map(|s| consumers.get(&s).is_some_and(|c| c.memory_limited()));
        let wire = Signal::ALL.map(|s| consumers.get(&s).is_some_and(|c| c.keeps_wire_form()));
        Handler {
            consumers,
            metrics: ReceiverMetrics::new(t, id, transport),
            failed,
            limited,
            wire,
            in_flight: t.memory().holder(t, &id_s, "in_flight"),
            refused_requests,
            invalid_utf8: t.counter(
                "sluice_receiver_invalid_utf8_strings",
                "Strings received that were not valid UTF-8, passed on with U+FFFD for each invalid sequence (sluice)",
                &[("receiver", id_s.as_str()), ("transport", transport)],
            ),
            undecoded: t.counter(
                "sluice_receiver_undecoded_requests",
                "Protobuf requests passed on as their bytes without decoding them, the pipelines they feed reading no tables (sluice)",
                &[("receiver", id_s.as_str()), ("transport", transport)],
            ),
            include_metadata,
        }
    }

    /// The request's client metadata from its headers, when `include_metadata` is on: every
    /// header with a text value (gRPC's binary `-bin` metadata and HTTP/2 pseudo-headers left
    /// out), keys lowercase.
    pub(crate) fn client_metadata(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Option<Arc<ClientMetadata>> {
        if !self.include_metadata {
            return None;
        }
        let mut m = ClientMetadata::default();
        for (k, v) in headers {
            if k.as_str().ends_with("-bin") {
                continue;
            }
            if let Ok(v) = v.to_str() {
                m.push(k.as_str(), v.to_string());
            }
        }
        Some(Arc::new(m))
    }

    pub(crate) fn failed(&self, reason: &'static str) {
        if let Some(c) = self.failed.get(reason) {
            c.add(1);
        }
    }

    fn refused(&self, r: Refusal) -> Refusal {
        self.refused_requests.count(&r);
        r
    }

    /// Whether requests of `signal` are admitted by the memory limiter.
    pub(crate) fn limited(&self, signal: Signal) -> bool {
        self.limited[signal as usize]
    }

    /// Admission before anything is read: refused while memory is above the soft limit, else
    /// `wire_len` bytes of body (when known) and their decoded estimate are reserved.
    pub(crate) fn admit(
        &self,
        signal: Signal,
        wire_len: Option<usize>,
        json: bool,
    ) -> Result<Held, Refusal> {
        if !self.limited(signal) {
            return Ok(self.in_flight.none());
        }
        let account = self.in_flight.account();
        if account.refusing() {
            let (used, soft) = (account.used(), account.limits().map_or(0, |l| l.soft));
            return Err(self.refused(Refusal::AboveSoftLimit { used, soft }));
        }
        let need = wire_len.map_or(0, |n| in_flight_bytes(signal, n, json));
        self.in_flight.admit(need).map_err(|r| self.refused(r))
    }

    /// Grows (or sets) a request's reservation to cover `body_len` bytes of body and their
    /// decoded estimate, once the body size is known: refused if it does not fit.
    pub(crate) fn reserve_body(
        &self,
        signal: Signal,
        held: &mut Held,
        body_len: usize,
        json: bool,
    ) -> Result<(), Refusal> {
        let need = in_flight_bytes(signal, body_len, json);
        if self.limited(signal) {
            held.try_resize(need).map_err(|r| self.refused(r))
        } else {
            held.resize(need);
            Ok(())
        }
    }

    /// Decodes and hands one request to the pipelines; returns the number of items accepted.
    /// `held` is the request's reservation: grown to the decoded payload's size if the estimate
    /// was short (refused if that does not fit), and released when the pipeline has taken the
    /// data.
    pub(crate) async fn export(
        &self,
        signal: Signal,
        received: Received,
        json: bool,
        origin: Option<SocketAddr>,
        metadata: Option<Arc<ClientMetadata>>,
        mut held: Held,
    ) -> Result<usize, ExportError> {
        let consumer: &ConsumerRef = self
            .consumers
            .get(&signal)
            .ok_or(ExportError::NoPipeline(signal))?;
        let Received { body, buffer } = received;
        self.reserve_body(signal, &mut held, body.len(), json)
            .map_err(ExportError::Memory)?;
        // Forwarded as its bytes when nothing downstream reads tables and the skim finds the
        // request clean: exactly what the decoder would accept with nothing to repair. Any
        // other request (malformed, invalid UTF-8, unusual fields) is decoded as always, so
        // it gets the same answer and the same counters.
        let skimmed = (!json && self.wire[signal as usize])
            .then(|| sluice_engine::otlp::skim(signal, &body))
            .flatten();
        let forwarded_as_bytes = skimmed.is_some();
        let decoded = match skimmed {
            // The wire form holds the body itself.
            Some(skim) => {
                self.undecoded.add(1);
                Ok((
                    Payload::from_wire(
                        signal,
                        match buffer {
                            BodyBuffer::Exact => WireForm::in_place(body, &skim),
                            BodyBuffer::Grown => WireForm::new(body, &skim),
                        },
                    ),
                    Default::default(),
                ))
            }
            None => {
                let decoded = if json {
                    sluice_engine::otlp::decode_json_with_stats(signal, &body)
                } else {
                    sluice_engine::otlp::decode_with_stats(signal, &body)
                };
                // The body is not needed once decoded: strings were copied into the columns.
                drop(body);
                decoded
            }
        };
        let mut payload = match decoded {
            Ok((p, stats)) => {
                if stats.replaced_invalid_utf8 > 0 {
                    self.invalid_utf8.add(stats.replaced_invalid_utf8 as u64);
                }
                p
            }
            Err(e) => {
                self.failed("decode");
                return Err(ExportError::Decode(e.to_string()));
            }
        };
        payload.origin = origin;
        payload.metadata = metadata;
        let n = payload.item_count();
        // The reservation covers the request until the pipeline returns: the processors' copies
        // of it (filters, attribute rebuilds, tail sampling's partitions) live during that
        // time, so it only grows here (to the payload's size, if the estimate was short).
        // A request forwarded as its bytes is never decoded or copied by the pipeline (none of
        // its components reads tables): its reservation shrinks to the bytes it is, so a
        // forwarding pipeline under a memory_limiter is not refused for the 4x decoded-size
        // estimate of data it never decodes.
        let size = if forwarded_as_bytes {
            payload.memory_size()
        } else {
            payload.memory_size().max(held.bytes() as usize)
        };
        if self.limited(signal) {
            if let Err(r) = held.try_resize(size) {
                self.metrics.refused(signal, n);
                return Err(ExportError::Memory(self.refused(r)));
            }
        } else {
            held.resize(size);
        }
        // Handed to the pipeline in a task of its own, counted there: a client that gives up
        // (gRPC deadline, HTTP connection closed) drops this request's future, and a pipeline
        // stopped half way (a batch buffer or one of two fanned-out pipelines already holding
        // the data) would deliver items that `accepted` never counted; when the client
        // retried, the backend saw more than the receiver said it took. Now what is handed
        // over is always seen through and counted, whether or not anyone waits for the answer.
        let consumer = consumer.clone();
        let metrics = self.metrics.clone();
        let handed_over = tokio::spawn(async move {
            let result = consumer.consume(payload).await;
            // Whoever keeps the data now (a batch buffer, a queue) holds its bytes itself.
            drop(held);
            match &result {
                Ok(()) => metrics.accepted(signal, n),
                Err(_) => metrics.refused(signal, n),
            }
            result
        });
        match handed_over.await {
            Ok(Ok(())) => Ok(n),
            Ok(Err(e)) => Err(ExportError::Consume(e)),
            // A pipeline component panicked: nothing was counted as accepted.
            Err(e) => {
                self.metrics.refused(signal, n);
                Err(ExportError::Consume(ConsumeError::Unavailable(format!(
                    "the pipeline failed: {e}"
                ))))
            }
        }
    }
}

/// A request in flight: its body and its decoded estimate.
/// A request body as received: its bytes, and the buffer they arrived in.
pub(crate) struct Received {
    pub body: Bytes,
    pub buffer: BodyBuffer,
}

/// The buffer a request body arrived in, which decides whether a body forwarded undecoded is
/// kept where it is or copied into a buffer of its own size (a `Bytes` slice keeps its whole
/// buffer alive, and the memory account counts only the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyBuffer {
    /// Allocated for this body's length: kept as it is.
    Exact,
    /// Grown while it was filled (decompressed bodies, bodies of unknown length): possibly
    /// up to twice the body.
    Grown,
}

fn in_flight_bytes(signal: Signal, body_len: usize, json: bool) -> usize {
    body_len.saturating_add(sluice_engine::otlp::decoded_size_estimate(
        signal, body_len, json,
    ))
}

/// `google.rpc.Status { code = 1; message = 2; details = 3 }`, with a `google.rpc.RetryInfo`
/// detail when `retry_after` is set (OTLP: `RESOURCE_EXHAUSTED` is retryable exactly when the
/// server says when to retry), hand-encoded.
pub(crate) fn rpc_status_proto(code: u32, message: &str, retry_after: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    out.push(0x08);
    put_varint(&mut out, u64::from(code));
    if !message.is_empty() {
        out.push(0x12);
        put_varint(&mut out, message.len() as u64);
        out.extend_from_slice(message.as_bytes());
    }
    if let Some(secs) = retry_after {
        // RetryInfo { retry_delay = 1: Duration { seconds = 1 } }
        let mut duration = vec![0x08];
        put_varint(&mut duration, secs);
        let mut retry_info = vec![0x0a];
        put_varint(&mut retry_info, duration.len() as u64);
        retry_info.extend_from_slice(&duration);
        // Any { type_url = 1; value = 2 }
        const TYPE_URL: &[u8] = b"type.googleapis.com/google.rpc.RetryInfo";
        let mut any = vec![0x0a];
        put_varint(&mut any, TYPE_URL.len() as u64);
        any.extend_from_slice(TYPE_URL);
        any.push(0x12);
        put_varint(&mut any, retry_info.len() as u64);
        any.extend_from_slice(&retry_info);
        out.push(0x1a);
        put_varint(&mut out, any.len() as u64);
        out.extend_from_slice(&any);
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

struct Running {
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<(&'static str, SocketAddr)>,
}

pub struct OtlpReceiver {
    id: ComponentId,
    config: OtlpReceiverConfig,
    grpc: Arc<Handler>,
    http: Arc<Handler>,
    running: Mutex<Option<Running>>,
}

impl OtlpReceiver {
    pub fn new(
        id: ComponentId,
        config: OtlpReceiverConfig,
        consumers: SignalConsumers,
        t: &Telemetry,
    ) -> Self {
        OtlpReceiver {
            grpc: Arc::new(Handler::new(
                &id,
                "grpc",
                consumers.clone(),
                t,
                config
                    .protocols
                    .grpc
                    .as_ref()
                    .is_some_and(|g| g.include_metadata == Some(true)),
            )),
            http: Arc::new(Handler::new(
                &id,
                "http",
                consumers,
                t,
                config
                    .protocols
                    .http
                    .as_ref()
                    .is_some_and(|h| h.include_metadata == Some(true)),
            )),
            id,
            config,
            running: Mutex::new(None),
        }
    }

    /// The bound addresses (`"grpc"`/`"http"`), once started: how tests find port-0 binds.
    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.addrs.clone())
            .unwrap_or_default()
    }
}

pub(crate) async fn bind(
    id: &ComponentId,
    endpoint: &str,
) -> Result<tokio::net::TcpListener, ComponentError> {
    tokio::net::TcpListener::bind(bind_address(endpoint).as_ref())
        .await
        .map_err(|e| ComponentError::new(id, format!("cannot listen on {endpoint}: {e}")))
}

/// Reads a protocol's TLS files (at start, not at config load: as the Collector does).
fn load_tls(
    id: &ComponentId,
    protocol: &str,
    tls: Option<&TlsServerSetting>,
    alpn: &[&[u8]],
) -> Result<Option<Arc<rustls::ServerConfig>>, ComponentError> {
    tls.map(|t| {
        t.load(alpn)
            .map_err(|e| ComponentError::new(id, format!("protocols.{protocol}.tls: {e}")))
    })
    .transpose()
}

impl Lifecycle for OtlpReceiver {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let p = &self.config.protocols;
            // Read certificates, then bind everything, before serving anything: a missing file
            // or a port in use fails startup cleanly, with no half-started server left behind.
            let grpc_tls = load_tls(
                &self.id,
                "grpc",
                p.grpc.as_ref().and_then(|g| g.tls.as_ref()),
                sluice_tls::ALPN_GRPC,
            )?;
            let http_tls = load_tls(
                &self.id,
                "http",
                p.http.as_ref().and_then(|h| h.tls.as_ref()),
                sluice_tls::ALPN_HTTP,
            )?;
            let grpc = match &p.grpc {
                Some(g) => Some((g, bind(&self.id, &g.endpoint).await?)),
                None => None,
            };
            let http = match &p.http {
                Some(h) => Some((h, bind(&self.id, &h.endpoint).await?)),
                None => None,
            };
            let mut running = Running {
                stop: vec![],
                tasks: vec![],
                addrs: vec![],
            };
            let mut serve = |name: &'static str, listener: &tokio::net::TcpListener, tls: bool| {
                let addr = listener
                    .local_addr()
                    .map_err(|e| ComponentError::new(&self.id, e))?;
                tracing::info!(receiver = %self.id, %addr, tls, "OTLP/{name} listening");
                running.addrs.push((name, addr));
                let (tx, rx) = oneshot::channel();
                running.stop.push(tx);
                Ok::<_, ComponentError>(rx)
            };
            let mut tasks = Vec::new();
            if let Some((g, listener)) = grpc {
                let rx = serve("grpc", &listener, grpc_tls.is_some())?;
                tasks.push(grpc::serve(listener, grpc_tls, g, self.grpc.clone(), rx));
            }
            if let Some((h, listener)) = http {
                let rx = serve("http", &listener, http_tls.is_some())?;
                tasks.push(http::serve(listener, http_tls, h, self.http.clone(), rx));
            }
            running.tasks = tasks;
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(running);
            Ok(())
        })
    }

    /// Stops accepting connections and waits for requests in flight to finish.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let running = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(r) = running {
                for s in r.stop {
                    let _ = s.send(());
                }
                for t in r.tasks {
                    let _ = t.await;
                }
            }
        })
    }
}
