//! The `otlp` receiver: OTLP over gRPC (tonic) and HTTP (axum), decoded straight to Arrow.
//!
//! ```yaml
//! receivers:
//!   otlp:
//!     protocols:
//!       grpc:
//!         endpoint: localhost:4317        # default; bind exactly this
//!         max_recv_msg_size_mib: 4        # default; larger messages get OUT_OF_RANGE
//!         tls:                            # optional: serve TLS (the Collector's configtls)
//!           cert_file: server.crt
//!           key_file: server.key
//!           client_ca_file: ca.crt        # optional: mTLS, clients need a certificate it signed
//!       http:
//!         endpoint: localhost:4318        # default
//!         max_request_body_size: 20971520 # bytes, default 20 MiB; also caps the decompressed size
//!         traces_url_path: /v1/traces     # defaults for metrics and logs likewise
//! ```
//!
//! A protocol that is not listed is not started. Requests are never decoded into prost
//! structs: gRPC uses a codec that hands over the raw message bytes, and both transports call
//! `sluice_engine::otlp::decode` (protobuf) or `decode_json` (HTTP JSON). gzip and zstd
//! request bodies are accepted on both; HTTP decompression stops at the size limit, so a
//! compression bomb costs at most `max_request_body_size` bytes.
//!
//! Answers follow the Collector: malformed data -> gRPC `INVALID_ARGUMENT` / HTTP 400 with a
//! `google.rpc.Status` naming the problem; memory limiter over its limit -> `RESOURCE_EXHAUSTED`
//! / 429; sending queue full -> `UNAVAILABLE` / 503 (both with `Retry-After` on HTTP, so
//! clients retry). Too large -> `OUT_OF_RANGE` / 413, whether the message is over
//! `max_recv_msg_size_mib` as sent or only once decompressed (the message says "larger than
//! max", which sluice's exporters read as "split and send again"), counted as
//! `failed_requests{reason="too_large"}`; gRPC-Go answers `RESOURCE_EXHAUSTED` there, but that
//! code means memory pressure, which a client retries unchanged. Every request's peer address is kept on the payload (`Payload::origin`)
//! for enrichment. Counted: `otelcol_receiver_accepted_*`, `otelcol_receiver_refused_*` and
//! `otelcol_receiver_failed_requests{reason}` (decode, too_large, decompress, media_type,
//! tls_handshake).
//!
//! `tls` (either protocol) is the Collector's server TLS setting, see `sluice_tls`: checked at
//! config load, its files read at start (a missing file fails startup naming it, before any
//! port is bound). Handshakes run off the accept path; one that fails (a plaintext client, a
//! client certificate from an unknown CA under mTLS) is logged with the peer and counted as
//! `failed_requests{reason="tls_handshake"}`.

pub(crate) mod grpc;
mod http;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, ConsumerRef,
    Factory, Kind, Lifecycle, ParsedConfig, Service, SignalConsumers, parse_config,
};
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
    /// Accepted for compatibility; sluice keeps tonic's keepalive defaults.
    #[serde(default)]
    pub keepalive: Option<serde_json::Value>,
    /// Accepted for compatibility; client metadata is not propagated yet.
    #[serde(default)]
    pub include_metadata: Option<bool>,
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
    #[serde(default)]
    pub read_buffer_size: Option<u64>,
    #[serde(default)]
    pub write_buffer_size: Option<u64>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
            max_concurrent_streams: None,
            keepalive: None,
            include_metadata: None,
            tls: None,
            read_buffer_size: None,
            write_buffer_size: None,
        }
    }
}

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
    /// Accepted for compatibility; client metadata is not propagated yet.
    #[serde(default)]
    pub include_metadata: Option<bool>,
    /// Accepted for compatibility; browsers' CORS preflight is not answered yet.
    #[serde(default)]
    pub cors: Option<serde_json::Value>,
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
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
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: OtlpReceiverConfig = parse_config(config)?;
        let p = &c.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            return Err(ConfigError::new(
                "protocols",
                "enable at least one of grpc, http",
            ));
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
        if let Some(h) = &p.http {
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

/// What both transports share: the pipelines by signal and the counters of one transport.
pub(crate) struct Handler {
    consumers: SignalConsumers,
    metrics: ReceiverMetrics,
    failed: BTreeMap<&'static str, Counter>,
}

/// Why an export request was not accepted.
pub(crate) enum ExportError {
    /// The body is not valid OTLP (or not decodable): the client must not retry.
    Decode(String),
    /// The pipeline refused the data (memory limiter, full queue...).
    Consume(ConsumeError),
    /// No pipeline takes this signal from this receiver.
    NoPipeline(Signal),
}

pub(crate) const FAIL_REASONS: [&str; 5] = [
    "decode",
    "too_large",
    "decompress",
    "media_type",
    "tls_handshake",
];

impl Handler {
    fn new(id: &ComponentId, transport: &str, consumers: SignalConsumers, t: &Telemetry) -> Self {
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
        Handler {
            consumers,
            metrics: ReceiverMetrics::new(t, id, transport),
            failed,
        }
    }

    pub(crate) fn failed(&self, reason: &'static str) {
        if let Some(c) = self.failed.get(reason) {
            c.add(1);
        }
    }

    /// Decodes and hands one request to the pipelines; returns the number of items accepted.
    pub(crate) async fn export(
        &self,
        signal: Signal,
        body: &[u8],
        json: bool,
        origin: Option<SocketAddr>,
    ) -> Result<usize, ExportError> {
        let consumer: &ConsumerRef = self
            .consumers
            .get(&signal)
            .ok_or(ExportError::NoPipeline(signal))?;
        let decoded = if json {
            sluice_engine::otlp::decode_json(signal, body)
        } else {
            sluice_engine::otlp::decode(signal, body)
        };
        let mut payload = match decoded {
            Ok(p) => p,
            Err(e) => {
                self.failed("decode");
                return Err(ExportError::Decode(e.to_string()));
            }
        };
        payload.origin = origin;
        let n = payload.item_count();
        match consumer.consume(payload).await {
            Ok(()) => {
                self.metrics.accepted(signal, n);
                Ok(n)
            }
            Err(e) => {
                self.metrics.refused(signal, n);
                Err(ExportError::Consume(e))
            }
        }
    }
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
            grpc: Arc::new(Handler::new(&id, "grpc", consumers.clone(), t)),
            http: Arc::new(Handler::new(&id, "http", consumers, t)),
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
    tokio::net::TcpListener::bind(endpoint)
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
