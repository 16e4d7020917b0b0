//! One long-lived `DoPut` stream at a time: payloads are encoded in stream order (the
//! dictionaries are the stream's), each waits for its acknowledgement, and a stream that
//! breaks fails every payload still waiting, so the queue retries them on a new stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor, PutResult};
use sluice_engine::Payload;
use sluice_engine::component::{ComponentError, ComponentId};
use sluice_engine::flight::{Ack, Encoder, WireMessage, hello};
use sluice_engine::schema::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use super::{FlightExporterConfig, connection};
use crate::otlp::{grpc_error, with_tls_hint};
use crate::queue::{SendError, Sender, Sent};

/// Delivers payloads over a Flight stream it opens (and reopens) itself. `Sync`: the queue's
/// workers call [`Sender::send`] concurrently; their payloads share the stream, in the order
/// they are encoded.
pub struct FlightSender {
    channel: Channel,
    headers: tonic::metadata::MetadataMap,
    compression: sluice_engine::flight::Compression,
    plaintext: bool,
    /// For the log line when a stream is found stuck.
    timeout: Duration,
    endpoint: String,
    current: Mutex<Option<Arc<Stream>>>,
    /// Held while a stream is being opened, so concurrent sends open one, not several.
    opening: tokio::sync::Mutex<()>,
}

/// One `DoPut` stream.
struct Stream {
    /// The stream's encoder, held while a payload is encoded and put on the request stream,
    /// so payloads go out in the order their sequence numbers and dictionary deltas say.
    ///
    /// An async lock, apart from `state`: encoding a full batch takes milliseconds, and the
    /// queue's other consumers waiting for it on the blocking lock this was (the encoder sat
    /// in `state`) held their worker threads meanwhile. Measured with the receiver's larger
    /// window: the agent's CPU per span 0.91× with this lock, five alternated pairs
    /// (BENCHMARKS.md, "One Flight stream, one window").
    encoder: tokio::sync::Mutex<Encoder>,
    /// Held only briefly (never across an encode), also from `Drop` and the ack reader.
    state: Mutex<StreamState>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

struct StreamState {
    /// The request stream; `None` once the stream is over.
    out: Option<mpsc::UnboundedSender<FlightData>>,
    /// Payloads sent and not yet acknowledged, by sequence number.
    waiting: BTreeMap<u64, oneshot::Sender<Result<Sent, SendError>>>,
    /// A payload's sender stopped waiting for its acknowledgement (the queue's timeout) and it
    /// never came: the stream is stuck, the next send opens another.
    stuck: bool,
    /// Why the stream is over, once it is.
    failed: Option<String>,
}

impl FlightSender {
    pub fn new(id: &ComponentId, config: &FlightExporterConfig) -> Result<Self, ComponentError> {
        let (channel, plaintext, headers) = connection(id, config)?;
        Ok(FlightSender {
            channel,
            headers,
            compression: config.compression.ipc(),
            plaintext,
            timeout: config.timeout,
            endpoint: config.endpoint.clone(),
            current: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// The live stream, or a new one.
    async fn stream(&self) -> Result<Arc<Stream>, SendError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _opening = self.opening.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let s = self.open().await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        Ok(s)
    }

    /// The current stream if it is neither over nor stuck (a stuck one is ended here).
    fn live(&self) -> Option<Arc<Stream>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let s = current.as_ref()?.clone();
        let (failed, stuck) = {
            let state = s.state.lock().unwrap_or_else(|e| e.into_inner());
            (state.failed.is_some(), state.stuck)
        };
        if stuck {
            tracing::warn!(endpoint = %self.endpoint, timeout = ?self.timeout, "flight: a payload got no acknowledgement in time; opening a new stream (what was not acknowledged is sent again)");
            s.end("no acknowledgement in time: stream abandoned");
        }
        if failed || stuck {
            *current = None;
            return None;
        }
        Some(s)
    }

    /// Opens a `DoPut` stream: the hello goes first; the call returns once the receiver has
    /// accepted it (a receiver of another version refuses here).
    async fn open(&self) -> Result<Arc<Stream>, SendError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(hello())),
            ..Default::default()
        });
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        *request.metadata_mut() = self.headers.clone();
        let mut client = FlightServiceClient::new(self.channel.clone());
        if self.compression == sluice_engine::flight::Compression::Zstd {
            // On top of the IPC body compression: what it leaves (the message headers, the
            // per-buffer frames, what one buffer repeats of another) compresses further, 34.0 ->
            // 33.3 B/span on loadgen traffic, for ~15 % of the exporter's encode time. Kept:
            // bytes between zones cost more than that CPU (BENCHMARKS.md, "The Flight
            // encoder's own cost").
            client = client.send_compressed(tonic::codec::CompressionEncoding::Zstd);
        }
        let acks = match client.do_put(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.stream_error(&status)),
        };
        let stream = Arc::new(Stream {
            encoder: tokio::sync::Mutex::new(Encoder::new(self.compression)),
            state: Mutex::new(StreamState {
                out: Some(tx),
                waiting: BTreeMap::new(),
                stuck: false,
                failed: None,
            }),
            reader: Mutex::new(None),
        });
        let reader = tokio::spawn(read_acks(stream.clone(), acks, self.plaintext));
        *stream.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        tracing::debug!(endpoint = %self.endpoint, "flight: stream opened");
        Ok(stream)
    }

    fn stream_error(&self, status: &tonic::Status) -> SendError {
        let mut e = with_tls_hint(grpc_error(status), self.plaintext);
        if status.code() == Code::FailedPrecondition {
            // Another protocol version: retrying cannot help until one side is upgraded.
            e.retryable = false;
            tracing::error!(endpoint = %self.endpoint, error = %e.message, "flight: the receiver refuses this stream");
        }
        e
    }

    /// Sends `payload` on the live stream and waits for its acknowledgement.
    pub async fn send_payload(&self, payload: &Payload) -> Result<Sent, SendError> {
        let stream = self.stream().await?;
        let (seq, answer) = {
            let mut encoder = stream.encoder.lock().await;
            if let Some(why) = stream.failed() {
                return Err(SendError::retryable(format!("flight stream ended: {why}")));
            }
            let mut messages = Vec::new();
            let seq = match encoder.encode(payload, &mut messages) {
                Ok(seq) => seq,
                Err(e) => {
                    // The encoder is poisoned: this stream cannot carry anything more.
                    drop(encoder);
                    stream.end(&e.to_string());
                    return Err(SendError::permanent(e.to_string()));
                }
            };
            // The messages are queued and the payload registered as waiting under one hold
            // of `state`, so its acknowledgement cannot be read before it waits for it.
            let mut state = stream.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = &state.failed {
                return Err(SendError::retryable(format!("flight stream ended: {why}")));
            }
            let Some(out) = &state.out else {
                return Err(SendError::retryable("flight stream ended"));
            };
            // Unbounded: what waits here is bounded by the payloads waiting for an ack (the
            // queue's consumers), and a stuck stream is abandoned after `timeout`.
            if !messages
                .into_iter()
                .all(|m| out.send(flight_data(m)).is_ok())
            {
                drop(state);
                stream.end("the request stream closed");
                return Err(SendError::retryable("flight stream ended"));
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.insert(seq, tx);
            (seq, rx)
        };
        // If this future is dropped before the answer (the queue's timeout), the stream is
        // marked stuck: the retry goes on a new stream.
        let mut guard = GaveUp {
            stream: &stream,
            seq,
            armed: true,
        };
        let result = match answer.await {
            Ok(result) => result,
            Err(_) => Err(SendError::retryable(
                "flight stream ended before the acknowledgement",
            )),
        };
        guard.armed = false;
        result
    }
}

/// Marks the stream stuck when a send stops waiting for its acknowledgement.
struct GaveUp<'a> {
    stream: &'a Stream,
    seq: u64,
    armed: bool,
}

impl Drop for GaveUp<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.stream.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.waiting.contains_key(&self.seq) {
                state.stuck = true;
            }
        }
    }
}

/// A payload on its way: encoded onto the stream only when sent (the encoding depends on
/// what the stream carried before), sized as the receiver will count it.
pub struct FlightRequest {
    payload: Payload,
    size: usize,
}

impl Sender for FlightSender {
    type Request = FlightRequest;

    fn endpoint(&self, _: Signal) -> &str {
        &self.endpoint
    }

    fn encode(&self, payload: &Payload) -> Result<FlightRequest, SendError> {
        Ok(FlightRequest {
            payload: payload.clone(),
            size: sluice_engine::flight::payload_size(payload),
        })
    }

    fn size(request: &FlightRequest) -> usize {
        request.size
    }

    async fn send(&self, _: Signal, request: &FlightRequest) -> Result<Sent, SendError> {
        self.send_payload(&request.payload).await
    }
}

impl Drop for FlightSender {
    fn drop(&mut self) {
        if let Some(s) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            s.end("the exporter shut down");
        }
    }
}

fn flight_data(m: WireMessage) -> FlightData {
    FlightData {
        flight_descriptor: None,
        data_header: m.header,
        app_metadata: m.app_metadata,
        data_body: m.body,
    }
}

impl Stream {
    /// Why the stream is over, if it is.
    fn failed(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .clone()
    }

    /// Ends the stream: nothing more is sent on it, and every payload still waiting fails as
    /// retryable (it goes again on the next stream).
    fn end(&self, why: &str) {
        self.fail(why, |_| {
            SendError::retryable(format!("flight stream ended: {why}"))
        });
        if let Some(r) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            r.abort();
        }
    }

    /// Marks the stream over and answers every waiting payload with `error(is_first)`.
    fn fail(&self, why: &str, error: impl Fn(bool) -> SendError) {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.failed.is_none() {
                state.failed = Some(why.to_string());
            }
            state.out = None;
            std::mem::take(&mut state.waiting)
        };
        for (i, (_, tx)) in waiting.into_iter().enumerate() {
            let _ = tx.send(Err(error(i == 0)));
        }
    }

    fn acked(&self, ack: Ack) {
        let waiting = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&ack.seq);
        // Not waiting: its sender gave up (timeout) and the queue retries it: a duplicate.
        if let Some(tx) = waiting {
            let _ = tx.send(ack_result(ack));
        }
    }
}

/// What an acknowledgement means to the queue: the codes are the OTLP receiver's answers.
fn ack_result(ack: Ack) -> Result<Sent, SendError> {
    let message = format!(
        "the receiver answered {}: {}",
        code_name(ack.code),
        ack.message
    );
    match ack.code {
        Ack::OK => Ok(Sent::default()),
        Ack::RESOURCE_EXHAUSTED | Ack::UNAVAILABLE => Err(SendError::retryable(message)),
        // Over the receiver's payload limit: the queue splits it (and lowers its limit).
        Ack::OUT_OF_RANGE => Err(SendError::too_large(message)),
        _ => Err(SendError::permanent(message)),
    }
}

fn code_name(code: u8) -> String {
    format!("{:?}", Code::from(i32::from(code)))
}

/// Reads acknowledgements until the stream ends; then fails whatever still waits. Acks come
/// in payload order, and the receiver reads payloads in order, so when the stream ends with
/// an error about data, the first payload still waiting is the one it is about.
async fn read_acks(stream: Arc<Stream>, mut acks: tonic::Streaming<PutResult>, plaintext: bool) {
    loop {
        match acks.message().await {
            Ok(Some(r)) => match Ack::parse(&r.app_metadata) {
                Ok(ack) => stream.acked(ack),
                Err(e) => {
                    stream.fail(&e.to_string(), |_| {
                        SendError::retryable(format!("flight: unreadable acknowledgement: {e}"))
                    });
                    return;
                }
            },
            Ok(None) => {
                stream.fail("the receiver closed the stream", |_| {
                    SendError::retryable("flight stream closed by the receiver")
                });
                return;
            }
            Err(status) => {
                let e = with_tls_hint(grpc_error(&status), plaintext);
                let code = status.code();
                stream.fail(&e.message, |first| match code {
                    // Another version: nothing on this stream can go through.
                    Code::FailedPrecondition => SendError::permanent(e.message.clone()),
                    // About the first payload waiting; the rest go again.
                    Code::InvalidArgument if first => SendError::permanent(e.message.clone()),
                    _ if first => e.clone(),
                    _ => SendError::retryable(format!(
                        "flight stream ended before the acknowledgement: {}",
                        e.message
                    )),
                });
                return;
            }
        }
    }
}
