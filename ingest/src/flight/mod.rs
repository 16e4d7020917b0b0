//! The `flight` receiver: Arrow Flight `DoPut` streams from sluice `flight` exporters,
//! decoded by `sluice_engine::flight` and checked like decoded OTLP before they enter a
//! pipeline; every payload answered with an acknowledgement. Config, wire format, telemetry
//! and limits: `README.md` beside this file.

mod service;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Factory, Kind,
    Lifecycle, ParsedConfig, Service, SignalConsumers, parse_config,
};
use sluice_engine::flight::{Ack, Decoded, Decoder, Limits, WireError};
use sluice_engine::memory::{Held, Holder, Refusal, RefusedRequests};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, ReceiverMetrics, Telemetry};
use sluice_tls::TlsServerSetting;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightReceiverConfig {
    /// Bound exactly as written.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Serve TLS (the Collector's server TLS settings, as the `otlp` receiver's).
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
    /// The largest Flight message (one IPC message and its metadata), as the `otlp`
    /// receiver's gRPC limit; larger ones end the stream with `OUT_OF_RANGE`.
    #[serde(default = "default_max_recv_msg_size_mib")]
    pub max_recv_msg_size_mib: u64,
    /// The largest payload, in MiB of Arrow data after decompression; a larger one is
    /// answered `OUT_OF_RANGE` (the exporter splits it) and the stream goes on.
    #[serde(default = "default_max_payload_size_mib")]
    pub max_payload_size_mib: u64,
    /// Concurrent streams per connection (HTTP/2), as the `otlp` receiver's gRPC setting.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
}

impl Default for FlightReceiverConfig {
    fn default() -> Self {
        FlightReceiverConfig {
            endpoint: default_endpoint(),
            tls: None,
            max_recv_msg_size_mib: default_max_recv_msg_size_mib(),
            max_payload_size_mib: default_max_payload_size_mib(),
            max_concurrent_streams: None,
        }
    }
}

fn default_endpoint() -> String {
    "localhost:4319".into()
}
fn default_max_recv_msg_size_mib() -> u64 {
    4
}
fn default_max_payload_size_mib() -> u64 {
    64
}

const MIB: usize = 1024 * 1024;

impl FlightReceiverConfig {
    fn limits(&self) -> Limits {
        let max_message = (self.max_recv_msg_size_mib as usize).saturating_mul(MIB);
        Limits {
            max_payload_bytes: (self.max_payload_size_mib as usize).saturating_mul(MIB),
            // A dictionary starts over past MAX_DICTIONARY_BYTES at the sender; one message
            // of new values may come on top.
            max_dictionary_bytes: sluice_engine::flight::MAX_DICTIONARY_BYTES
                .saturating_add(max_message),
        }
    }
}

pub struct FlightReceiverFactory;

impl Factory for FlightReceiverFactory {
    fn kind(&self) -> Kind {
        Kind::Receiver
    }
    fn type_name(&self) -> &'static str {
        "flight"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "Arrow Flight from sluice flight exporters (Arrow IPC, stream dictionaries), checked like OTLP"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: FlightReceiverConfig = parse_config(config)?;
        if let Some(tls) = &c.tls {
            tls.validate()
                .map_err(|e| crate::otlp::tls_config_error("tls", &e))?;
        }
        for (field, v) in [
            ("max_recv_msg_size_mib", c.max_recv_msg_size_mib),
            ("max_payload_size_mib", c.max_payload_size_mib),
        ] {
            if v == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(Arc::new(c))
    }
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let config = ctx.config::<FlightReceiverConfig>()?;
        Ok(Arc::new(FlightReceiver::new(
            ctx.id,
            (*config).clone(),
            consumers,
            &ctx.telemetry,
        )))
    }
}

/// Why a stream or payload was refused, as `otelcol_receiver_failed_requests{reason}`.
pub(crate) const FAIL_REASONS: [&str; 4] = ["decode", "too_large", "version", "tls_handshake"];

/// The pipelines and the counters, shared by every stream, and the receiver's share of the
/// memory account (the payloads being read and delivered).
pub(crate) struct Handler {
    consumers: SignalConsumers,
    metrics: ReceiverMetrics,
    failed: BTreeMap<&'static str, Counter>,
    /// Whether a pipeline fed starts with a memory limiter: payloads are then admitted by the
    /// memory account before they are decoded (the signal is known only at a payload's end,
    /// so one limited pipeline puts every payload under admission).
    limited: bool,
    in_flight: Holder,
    refused_requests: RefusedRequests,
}

impl Handler {
    fn new(id: &ComponentId, consumers: SignalConsumers, t: &Telemetry) -> Self {
        let id_s = id.to_string();
        let failed = FAIL_REASONS
            .into_iter()
            .map(|r| {
                (
                    r,
                    t.counter(
                        "otelcol_receiver_failed_requests",
                        "Requests refused before reaching a pipeline (undecodable, too large, bad encoding)",
                        &[("receiver", id_s.as_str()), ("transport", "flight"), ("reason", r)],
                    ),
                )
            })
            .collect();
        let refused_requests = RefusedRequests::new(t, &id_s, "flight");
        let limited = Signal::ALL
            .iter()
            .any(|s| consumers.get(s).is_some_and(|c| c.memory_limited()));
        Handler {
            consumers,
            metrics: ReceiverMetrics::new(t, id, "flight"),
            failed,
            limited,
            in_flight: t.memory().holder(t, &id_s, "in_flight"),
            refused_requests,
        }
    }

    /// A reservation for the next payload of a stream (empty until its data is decoded).
    pub(crate) fn reservation(&self) -> Held {
        self.in_flight.none()
    }

    /// Admission before a message is decoded: while memory is above the soft limit the
    /// current payload is refused (its record batches are then read past, not decoded).
    pub(crate) fn admit(&self, decoder: &mut Decoder, held: &mut Held) {
        if !self.limited || decoder.is_reading_past() {
            return;
        }
        let account = self.in_flight.account();
        if account.refusing() {
            let (used, soft) = (account.used(), account.limits().map_or(0, |l| l.soft));
            self.refuse(decoder, held, Refusal::AboveSoftLimit { used, soft });
        }
    }

    /// After a message is decoded: the reservation grows to what the payload holds so far,
    /// or the payload is refused when that does not fit.
    pub(crate) fn account(&self, decoder: &mut Decoder, held: &mut Held) {
        let bytes = decoder.pending_bytes();
        if bytes <= held.bytes() as usize {
            return;
        }
        if !self.limited {
            held.resize(bytes);
        } else if let Err(r) = held.try_resize(bytes) {
            self.refuse(decoder, held, r);
        }
    }

    fn refuse(&self, decoder: &mut Decoder, held: &mut Held, r: Refusal) {
        self.refused_requests.count(&r);
        // Too large to ever fit: the sender splits it (OUT_OF_RANGE); else it retries later.
        decoder.refuse_payload(if r.is_retryable() {
            WireError::Refused(r.to_string())
        } else {
            WireError::TooLarge(r.to_string())
        });
        held.resize(0);
    }

    pub(crate) fn failed(&self, reason: &'static str) {
        if let Some(c) = self.failed.get(reason) {
            c.add(1);
        }
    }

    /// Counts a stream-ending error by its kind.
    pub(crate) fn failed_on(&self, e: &WireError) {
        self.failed(match e {
            WireError::Version(_) => "version",
            WireError::TooLarge(_) => "too_large",
            WireError::Malformed(_) | WireError::Encode(_) => "decode",
            // counted in sluice_memory_refused_requests when refused
            WireError::Refused(_) => return,
        });
    }

    /// Hands one decoded payload to its pipeline; the acknowledgement says how it went. `held`
    /// (the payload's reservation) covers it until the pipeline returns, as the otlp
    /// receiver's does: the processors' copies live that long.
    pub(crate) async fn deliver(
        &self,
        decoded: Decoded,
        peer: Option<SocketAddr>,
        mut held: Held,
    ) -> Ack {
        let seq = decoded.seq;
        let refuse = |code, message: String| Ack { seq, code, message };
        let mut payload = match decoded.payload {
            Ok(p) => p,
            Err(e) => {
                self.failed_on(&e);
                let code = match e {
                    WireError::TooLarge(_) => Ack::OUT_OF_RANGE,
                    WireError::Refused(_) => Ack::RESOURCE_EXHAUSTED,
                    _ => Ack::INVALID_ARGUMENT,
                };
                return refuse(code, e.to_string());
            }
        };
        let Some(consumer) = self.consumers.get(&decoded.signal) else {
            return refuse(
                Ack::UNIMPLEMENTED,
                format!(
                    "this receiver is not in any {} pipeline",
                    decoded.signal.as_str()
                ),
            );
        };
        // Where the data came from: the client of the agent that sent it, when the agent
        // says (so k8sattributes and from_context work on a gateway), else the agent.
        payload.origin = decoded.origin.or(peer);
        let n = payload.item_count();
        let size = payload.memory_size().max(held.bytes() as usize);
        if !self.limited {
            held.resize(size);
        } else if let Err(r) = held.try_resize(size) {
            self.refused_requests.count(&r);
            self.metrics.refused(decoded.signal, n);
            let code = if r.is_retryable() {
                Ack::RESOURCE_EXHAUSTED
            } else {
                Ack::OUT_OF_RANGE
            };
            return refuse(code, r.to_string());
        }
        let result = consumer.consume(payload).await;
        // Whoever keeps the data now (a batch buffer, a queue) holds its bytes itself.
        drop(held);
        match result {
            Ok(()) => {
                self.metrics.accepted(decoded.signal, n);
                Ack::ok(seq)
            }
            Err(e) => {
                self.metrics.refused(decoded.signal, n);
                let code = match e {
                    ConsumeError::Refused(_) => Ack::RESOURCE_EXHAUSTED,
                    ConsumeError::Unavailable(_) => Ack::UNAVAILABLE,
                    ConsumeError::Permanent(_) => Ack::INVALID_ARGUMENT,
                };
                refuse(code, e.to_string())
            }
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    addr: SocketAddr,
}

pub struct FlightReceiver {
    id: ComponentId,
    config: FlightReceiverConfig,
    handler: Arc<Handler>,
    running: Mutex<Option<Running>>,
}

impl FlightReceiver {
    pub fn new(
        id: ComponentId,
        config: FlightReceiverConfig,
        consumers: SignalConsumers,
        t: &Telemetry,
    ) -> Self {
        FlightReceiver {
            handler: Arc::new(Handler::new(&id, consumers, t)),
            id,
            config,
            running: Mutex::new(None),
        }
    }

    /// The bound address, once started (how tests find a port-0 bind).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.addr)
    }
}

impl Lifecycle for FlightReceiver {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            // Certificates first, then the socket: a missing file or a port in use fails
            // startup cleanly.
            let tls = self
                .config
                .tls
                .as_ref()
                .map(|t| {
                    t.load(sluice_tls::ALPN_GRPC)
                        .map_err(|e| ComponentError::new(&self.id, format!("tls: {e}")))
                })
                .transpose()?;
            let listener = crate::otlp::bind(&self.id, &self.config.endpoint).await?;
            let addr = listener
                .local_addr()
                .map_err(|e| ComponentError::new(&self.id, e))?;
            tracing::info!(receiver = %self.id, %addr, tls = tls.is_some(), "Arrow Flight listening");
            let (stop, stopped) = watch::channel(false);
            let server = service::serve(listener, tls, &self.config, self.handler.clone(), stopped);
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Running { stop, server, addr });
            Ok(())
        })
    }

    /// Stops accepting; each stream finishes the payload it is delivering, then ends with
    /// `UNAVAILABLE` (the sender retries what was not acknowledged).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let running = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(r) = running {
                let _ = r.stop.send(true);
                let _ = r.server.await;
            }
        })
    }
}
