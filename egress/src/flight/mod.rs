//! The `flight` exporter: payloads as Arrow IPC in one long-lived Arrow Flight `DoPut` stream
//! to a sluice `flight` receiver, behind the same sending queue and retry as `otlp`. See
//! `README.md` beside this file for the config, the acknowledgement rules and the telemetry;
//! the wire format is `sluice_engine::flight` (and the receiver's README).
//!
//! Built from config by [`FlightExporterFactory`], or directly, for a given endpoint, with
//! [`exporter`] (what the `loadbalancing` exporter does once per backend).

mod sender;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::component::{
    BuildContext, ComponentError, ComponentId, ConfigError, ExtensionRef, Factory, Kind, Node,
    ParsedConfig, parse_config,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::flight::Compression as IpcCompression;
use sluice_engine::schema::Signal;
use sluice_tls::TlsClientSetting;

use crate::otlp::{grpc_channel, grpc_endpoint, grpc_metadata, tls_config_error};
use crate::queue::{MIN_MAX_REQUEST_SIZE, QueueConfig, QueuedExporter, RetryConfig};

pub use sender::{FlightRequest, FlightSender};

/// `compression`: Arrow IPC body compression (each buffer of a message on its own).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlightCompression {
    #[default]
    Zstd,
    Lz4,
    None,
    #[serde(rename = "")]
    Empty,
    /// Accepted by the parser only to be refused with a useful message (the `otlp`
    /// exporter's default is not an Arrow IPC codec).
    Gzip,
}

impl FlightCompression {
    fn ipc(self) -> IpcCompression {
        match self {
            FlightCompression::Zstd | FlightCompression::Gzip => IpcCompression::Zstd,
            FlightCompression::Lz4 => IpcCompression::Lz4,
            FlightCompression::None | FlightCompression::Empty => IpcCompression::None,
        }
    }
}

/// The `otlp` exporter's settings (same names, same defaults but `compression`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightExporterConfig {
    /// `host:port` of a sluice `flight` receiver (`http://` / `https://` prefixes as `otlp`).
    pub endpoint: String,
    /// As `otlp`: absent means TLS, verified against the system's roots.
    #[serde(default)]
    pub tls: TlsClientSetting,
    /// Sent as gRPC metadata on the `DoPut` call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub compression: FlightCompression,
    /// How long one payload may wait for its acknowledgement (and the connection to open).
    #[serde(default = "d5s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// sluice's, as the `otlp` exporter's: the largest payload sent, in bytes of Arrow data
    /// (as the receiver counts them against its `max_payload_size_mib`); larger payloads are
    /// split, and a receiver's "too large" answer splits too.
    #[serde(default = "default_max_request_size")]
    pub max_request_size: usize,
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}

/// Half the receiver's default `max_payload_size_mib` (64): room for the size estimate.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 32 << 20;

fn default_max_request_size() -> usize {
    DEFAULT_MAX_REQUEST_SIZE
}

impl FlightExporterConfig {
    /// The defaults, sending to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        FlightExporterConfig {
            endpoint: endpoint.into(),
            tls: TlsClientSetting::default(),
            headers: BTreeMap::new(),
            compression: FlightCompression::default(),
            timeout: d5s(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }

    /// Checks what serde cannot: the endpoint's form, TLS settings, headers, compression.
    pub fn validate(&self) -> Result<(), ConfigError> {
        grpc_endpoint(&self.endpoint)?;
        self.tls.validate().map_err(|e| tls_config_error(&e))?;
        grpc_metadata(&self.headers)?;
        self.sending_queue
            .check()
            .map_err(|e| e.within("sending_queue"))?;
        if self.max_request_size < MIN_MAX_REQUEST_SIZE {
            return Err(ConfigError::new(
                "max_request_size",
                format!(
                    "{} bytes: must be at least {MIN_MAX_REQUEST_SIZE} (default {DEFAULT_MAX_REQUEST_SIZE}, 32 MiB)",
                    self.max_request_size
                ),
            ));
        }
        if self.compression == FlightCompression::Gzip {
            return Err(ConfigError::new(
                "compression",
                "gzip is not an Arrow IPC compression: use zstd (the default), lz4 or none",
            ));
        }
        Ok(())
    }
}

/// The exporter: a [`FlightSender`] behind the sending queue and retry loop.
pub type FlightExporter = QueuedExporter<FlightSender>;

/// A `flight` exporter named `ctx.id` for `config` (its endpoint included; `ctx.config` is
/// not read), counting in `ctx.telemetry` under `exporter="<id>"`, its queue persistent when
/// `sending_queue.storage` names one of `ctx.extensions`. Connects lazily: a receiver that is
/// down is a retryable send error, not a build error.
pub fn exporter(
    ctx: &BuildContext,
    config: &FlightExporterConfig,
) -> Result<FlightExporter, ComponentError> {
    config
        .validate()
        .map_err(|e| ComponentError::new(&ctx.id, e))?;
    let sender = FlightSender::new(&ctx.id, config)?;
    // Its queue's share of the process's memory account is held by `build`.
    QueuedExporter::build(
        ctx,
        sender,
        config.sending_queue.clone(),
        config.retry_on_failure.clone(),
        config.timeout,
        config.max_request_size,
    )
}

pub struct FlightExporterFactory;

impl Factory for FlightExporterFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "flight"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "Arrow Flight to a sluice flight receiver (Arrow IPC, stream dictionaries), with sending queue and retry"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: FlightExporterConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<FlightExporterConfig>()?;
        Ok(Arc::new(exporter(&ctx, &c)?))
    }
    fn extension_refs(&self, config: &ParsedConfig) -> Vec<ExtensionRef> {
        config
            .downcast_ref::<FlightExporterConfig>()
            .map(|c| c.sending_queue.extension_refs())
            .unwrap_or_default()
    }
}

/// The channel, metadata and compression a sender needs, from config.
pub(crate) fn connection(
    id: &ComponentId,
    config: &FlightExporterConfig,
) -> Result<
    (
        tonic::transport::Channel,
        bool,
        tonic::metadata::MetadataMap,
    ),
    ComponentError,
> {
    let (channel, plaintext) = grpc_channel(id, &config.endpoint, &config.tls, config.timeout)?;
    let headers = grpc_metadata(&config.headers).map_err(|e| ComponentError::new(id, e))?;
    Ok((channel, plaintext, headers))
}
