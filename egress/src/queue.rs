//! The Collector's exporterhelper: a sending queue, retry with exponential backoff, a timeout
//! per attempt, and an account of every item — plus what the Collector lacks: no request is
//! ever sent larger than the exporter's size limit.
//!
//! ```yaml
//! sending_queue:
//!   enabled: true          # default
//!   num_consumers: 10      # default: batches sent concurrently
//!   queue_size: 1000       # default, in units of the sizer
//!   sizer: requests        # default; items (spans, points, records) or bytes
//!   drain_timeout: 25s     # sluice's: how long shutdown keeps delivering what is queued
//! retry_on_failure:
//!   enabled: true
//!   initial_interval: 5s
//!   randomization_factor: 0.5
//!   multiplier: 1.5
//!   max_interval: 30s
//!   max_elapsed_time: 300s # 0 = retry forever
//! timeout: 5s              # per attempt
//! max_request_size: 4194304  # sluice's, on the exporter: bytes of one request body
//! ```
//!
//! # Request size
//!
//! A payload is encoded once, by the [`Sender`]. When the encoded (uncompressed) body is larger
//! than the limit, the payload is split by items into as many parts as the size calls for
//! (aiming at 7/8 of the limit, so parts a little heavier than the average still fit), each
//! part is encoded and checked again, and split again if it is still too large: the work is
//! about one more encoding of the payload, never one per part. A server that answers "too
//! large" anyway (gRPC `OUT_OF_RANGE` or `RESOURCE_EXHAUSTED` saying the message is larger than
//! its maximum, HTTP 413) gets the request again in halves, never the same bytes; and the limit
//! in force drops to half that request's size for every later request, since the server's own
//! limit is evidently lower (logged once at warn; `sluice_exporter_max_request_size_bytes`
//! shows the limit in force). Splits are counted in
//! `sluice_exporter_requests_split_total{exporter,reason="over_limit"|"too_large_answer"}`. A
//! single item that alone is larger than the limit cannot be sent: it is dropped, logged and
//! counted as `send_failed{error_type="too_large"}`.
//!
//! # Accounting
//!
//! Every item the exporter is given ends in exactly one counter: `otelcol_exporter_sent_*`
//! (delivered), `otelcol_exporter_send_failed_*{error_type}` (dropped: `permanent` error
//! answer, `retries_exhausted`, `partial_success` rejections, `too_large`, `encode` failure, or
//! `shutdown` — still undelivered at the drain deadline), or `otelcol_exporter_enqueue_failed_*`
//! (the queue was full: the caller got `Unavailable`, so the client was told to retry and
//! nothing was accepted).
//!
//! `sizer` says what `queue_size` counts, as in the Collector: `requests` (batches), `items`, or
//! `bytes` — for sluice the bytes of the queued Arrow payloads (`Payload::memory_size`, what
//! the memory limiter counts), where the Collector counts their protobuf size.
//! `otelcol_exporter_queue_size` / `_capacity` are in the same unit. With `bytes` the capacity
//! bounds the payloads being sent as well as those waiting (what the exporter holds; the
//! Collector bounds only what waits), while the `queue_size` gauge shows what waits. A payload
//! larger than the whole capacity is still taken when the queue is empty, so it cannot be
//! refused forever.
//! Queued and in-flight payloads are held in the memory account
//! (`sluice_memory_held_bytes{component="<exporter>",kind="queue"}`) until delivered or
//! dropped; a payload being sent counts twice (the data and its encoding) — except a payload in
//! its wire form sent by an exporter that sends those bytes as they are (OTLP protobuf over
//! gRPC or HTTP: [`Sender::encoding_copies`]), whose request is slices of the payload's own
//! buffers and counts once. A compressor's output is not counted (it is a fraction of the
//! request, and freed when the attempt ends). While a `memory_limiter` refuses new data, the
//! exporter sends one request at a time rather than `num_consumers` (each send adds an encoding
//! beside the data).
//!
//! # Logs
//!
//! Failed attempts are logged at warn with the exporter, the endpoint and the error, at most
//! one line per [`FAILURE_LOG_INTERVAL`] per exporter: the first failure of a burst at once,
//! the rest summed up ("N more failed attempts since") in the next line. Drops are logged the
//! same way, on a limiter of their own, so a drop is never hidden behind a retry line.
//!
//! # Shutdown
//!
//! Shutdown stops taking new data and keeps delivering what is queued (retrying as usual) until
//! `sending_queue.drain_timeout` (default 25 s: inside Kubernetes' default 30 s grace period,
//! with room for the pipelines to flush first). At that deadline attempts in flight are
//! abandoned and whatever is undelivered goes to the exporter's [`Spill`] or, without one, is
//! dropped: counted as `send_failed{error_type="shutdown"}` and logged in one line per
//! exporter. The binary then exits with status 3 (see the README). With a persistent queue
//! nothing is dropped there: what is undelivered (or what its spill refuses) stays in storage
//! for the next start, and its record is deleted only once a spill took it.
//!
//! # Persistent queue
//!
//! With `sending_queue.storage` naming a `file_storage` extension, every payload is written to
//! the exporter's segment log (as the OTLP protobuf request, encoded once and reused as the
//! request body when the exporter sends protobuf) before `consume` returns `Ok` — and, with
//! `fsync: true`, synced to the device, concurrent writers sharing one sync. A record is
//! deleted once delivered (or dropped, counted); what is there at start is replayed into the
//! queue first. Killing the process at any moment loses nothing that was acknowledged; a
//! record whose delivery was under way may be sent again (at least once). See
//! `src/file_storage/README.md`.
//!
//! # Handing off
//!
//! An exporter whose destination is going away while others can take its data (a
//! `loadbalancing` backend that left the ring) is told to hand off
//! ([`QueuedExporter::hand_off_failures`]): from then on an attempt that fails retryably is not
//! retried but goes to the given [`Spill`] at once — the same seam as at the drain deadline —
//! and so does whatever is left at that deadline. What the spill takes is neither sent nor
//! dropped here: the spill's owner routes it elsewhere and accounts for it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    ExtensionRef, Lifecycle,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::memory::{Held, Holder};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{ExporterMetrics, Gauge};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::file_storage::{QueueStorage, RecordId, SegmentLog, StorageError, decode_record};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_consumers")]
    pub num_consumers: usize,
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    #[serde(default)]
    pub sizer: Sizer,
    /// A full queue makes `consume` wait for room (back-pressure up the pipeline, to the
    /// receivers' clients) instead of refusing at once; the wait ends with a refusal when the
    /// exporter stops.
    #[serde(default)]
    pub block_on_overflow: bool,
    /// A `file_storage` extension: the queue is persistent (see the module documentation).
    #[serde(default)]
    pub storage: Option<String>,
    /// sluice's: how long shutdown keeps delivering what is queued before what is left is
    /// dropped (counted) or, with a persistent queue, left in storage for the next start.
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub drain_timeout: Duration,
}

impl QueueConfig {
    /// What the Collector also refuses: a persistent queue needs the queue.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.storage.is_some() && !self.enabled {
            return Err(ConfigError::new(
                "storage",
                "a persistent queue needs sending_queue.enabled: true",
            ));
        }
        Ok(())
    }

    /// The extension `storage` names, for the loader to check (defined and enabled).
    pub fn extension_refs(&self) -> Vec<ExtensionRef> {
        self.storage
            .iter()
            .map(|id| ExtensionRef {
                path: "sending_queue.storage".into(),
                id: id.clone(),
            })
            .collect()
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: default_consumers(),
            queue_size: default_queue_size(),
            sizer: Sizer::default(),
            block_on_overflow: false,
            storage: None,
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// What `queue_size` counts (the Collector's `sending_queue.sizer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sizer {
    #[default]
    Requests,
    Items,
    Bytes,
}

impl Sizer {
    /// The size of one queued payload in this sizer's unit.
    fn size(self, payload: &Payload, bytes: usize) -> u64 {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => payload.item_count() as u64,
            Sizer::Bytes => bytes as u64,
        }
    }
}

/// A queued payload, its bytes held in the memory account until it is delivered or dropped,
/// its size in the sizer's unit; its encoding when it already has one (a persistent queue
/// encodes before storing), and its record in storage, deleted once the payload is done with.
struct Queued<R> {
    payload: Payload,
    held: Held,
    size: u64,
    body: Option<R>,
    record: Option<StoredRecord>,
}

/// Takes room for `size` (in the sizer's unit) in a queue holding `queued` of `capacity`;
/// an empty queue takes any payload (one larger than the whole capacity is not refused forever).
fn take_room(queued: &AtomicU64, size: u64, capacity: u64) -> bool {
    queued
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            (q == 0 || q + size <= capacity).then_some(q + size)
        })
        .is_ok()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "d5s", deserialize_with = "deserialize_duration")]
    pub initial_interval: Duration,
    #[serde(default = "half")]
    pub randomization_factor: f64,
    #[serde(default = "one_and_half")]
    pub multiplier: f64,
    #[serde(default = "d30s", deserialize_with = "deserialize_duration")]
    pub max_interval: Duration,
    #[serde(default = "d300s", deserialize_with = "deserialize_duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: d5s(),
            randomization_factor: half(),
            multiplier: one_and_half(),
            max_interval: d30s(),
            max_elapsed_time: d300s(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_consumers() -> usize {
    10
}
fn default_queue_size() -> usize {
    1000
}
/// Kubernetes sends SIGKILL 30 s after SIGTERM by default; the pipelines flush first.
fn default_drain_timeout() -> Duration {
    Duration::from_secs(25)
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d300s() -> Duration {
    Duration::from_secs(300)
}
fn half() -> f64 {
    0.5
}
fn one_and_half() -> f64 {
    1.5
}

/// The default `max_request_size`: the Collector's (and sluice's) OTLP/gRPC receivers refuse
/// messages over 4 MiB by default, and the same bound is safe for every OTLP/HTTP receiver.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 4 * 1024 * 1024;

/// The smallest `max_request_size` accepted: below it a request could not carry one item of
/// ordinary size.
pub const MIN_MAX_REQUEST_SIZE: usize = 1024;

/// At most one warn line per exporter per this interval for failed attempts (and one for drops).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why one send attempt failed.
#[derive(Debug, Clone)]
pub struct SendError {
    pub retryable: bool,
    /// The server's `Retry-After` / `RetryInfo`, when it gave one.
    pub retry_after: Option<Duration>,
    /// The server refused the request as too large: it is split, never sent again as is.
    pub too_large: bool,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError {
            retryable: true,
            retry_after: None,
            too_large: false,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            retryable: false,
            retry_after: None,
            too_large: false,
            message: message.into(),
        }
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        SendError {
            retryable: false,
            retry_after: None,
            too_large: true,
            message: message.into(),
        }
    }
}

/// What the server accepted of one send: `rejected` items (partial success) count as failed;
/// `message` is the server's explanation.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub rejected: usize,
    pub message: String,
}

/// One protocol's way to deliver a payload: encode it once, send the request (maybe several
/// times: retries). The queue checks every encoded request against the size limit between the
/// two, so no exporter built on it can send an oversized request.
pub trait Sender: Send + Sync + 'static {
    /// What `encode` makes and `send` sends: the request body (`Bytes` for OTLP), or what a
    /// stateful protocol encodes onto its stream at send time (Arrow Flight).
    type Request: Send + Sync + 'static;
    /// Where `signal`'s requests go (`host:port`, a URL), for logs.
    fn endpoint(&self, signal: Signal) -> &str;
    /// The request for `payload`.
    fn encode(&self, payload: &Payload) -> Result<Self::Request, SendError>;
    /// The request's size in bytes, uncompressed: what `max_request_size` limits.
    fn size(request: &Self::Request) -> usize;
    /// Whether [`Sender::encode`]'s request for `payload` is memory of its own (an encoding),
    /// rather than slices of the payload's own bytes (a wire form sent as it came in): the
    /// memory account holds a payload being sent twice only when it is.
    fn encoding_copies(&self, payload: &Payload) -> bool {
        let _ = payload;
        true
    }
    /// Sends one encoded request of `signal` once (compressing it as configured).
    fn send(
        &self,
        signal: Signal,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Sent, SendError>> + Send;
    /// The request for a payload whose OTLP protobuf encoding (a persistent queue's record)
    /// is `otlp_protobuf`, when that encoding is this sender's request: then a stored record
    /// is sent as is, not encoded again. `None`: the payload is encoded by [`Sender::encode`].
    fn reuse_otlp_protobuf(&self, otlp_protobuf: Bytes) -> Option<Self::Request> {
        let _ = otlp_protobuf;
        None
    }
    /// Whether [`Sender::encode`] writes a payload in its wire form as the bytes it is
    /// ([`sluice_engine::otlp::encode`] does), never reading its tables: the exporter then
    /// says so to the pipelines feeding it ([`Consumer::keeps_wire_form`]). The queue itself
    /// only counts, sizes and (persistent) stores the protobuf encoding, all of which a wire
    /// form answers from its bytes.
    fn encodes_wire_form(&self) -> bool {
        false
    }
}

/// How many of an exporter's consumers may send at once: all of them (`num_consumers`)
/// normally, one while the memory limiter refuses new data.
///
/// Why: a payload being sent is held twice (the data and its encoding; more in the
/// transport's buffers), so ten sends under way hold ten encodings. Under overload the queue
/// fills with data accepted before the limit was reached (`tail_sampling` releases a whole
/// tick's kept traces at once), and ten concurrent encodings of it took RSS 30 % past the
/// limit (BENCHMARKS.md, "Expected growth"). One send at a time still drains the queue —
/// the only way memory goes down — without adding encodings beside what is already held.
struct SendsUnderPressure {
    account: sluice_engine::memory::MemoryAccount,
    under_way: AtomicUsize,
    finished: tokio::sync::Notify,
}

/// One send under way; ends when dropped.
struct Sending<'a>(&'a SendsUnderPressure);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.under_way.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}

impl SendsUnderPressure {
    fn new(account: sluice_engine::memory::MemoryAccount) -> Self {
        SendsUnderPressure {
            account,
            under_way: AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
        }
    }

    /// Waits until this consumer may start a send: at once unless memory is at the soft
    /// limit, then when no other send is under way (checked again at least every 50 ms, as
    /// memory may go down without a send finishing).
    async fn start(&self) -> Sending<'_> {
        loop {
            let finished = self.finished.notified();
            if !self.account.refusing() {
                self.under_way.fetch_add(1, Ordering::AcqRel);
                return Sending(self);
            }
            if self
                .under_way
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Sending(self);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), finished).await;
        }
    }
}

/// Where undelivered requests go when shutdown's drain deadline passes — and, for an exporter
/// handing off ([`QueuedExporter::hand_off_failures`]), what fails retryably. Without a spill
/// (or when it refuses) such items stay in the persistent queue if there is one, or are
/// dropped, counted as `send_failed{error_type="shutdown"}`.
pub trait Spill: Send + Sync + 'static {
    /// Takes `payload` over (keeps it for the next start, routes it elsewhere); an error means
    /// it is dropped (and counted).
    fn spill(&self, payload: Payload) -> BoxFuture<'_, Result<(), String>>;
}

/// When deliveries stop trying and give what is left to the spill (or drop it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GiveUp {
    /// Retry as configured: running, or draining before the deadline.
    Never,
    /// At a part's first retryable failure: the exporter hands off (its destination is
    /// leaving; the spill routes elsewhere).
    OnFailure,
    /// At once: the drain deadline passed. Attempts in flight are abandoned.
    Now,
}

/// Warn lines at most once per [`FAILURE_LOG_INTERVAL`]; what is held back is counted and
/// reported with the next line.
#[derive(Default)]
struct LogLimiter {
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
    held_back_items: AtomicU64,
}

impl LogLimiter {
    /// Whether to log now; if so, how many events (and items) were held back since the last line.
    fn admit(&self, items: usize) -> Option<(u64, u64)> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < FAILURE_LOG_INTERVAL) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            self.held_back_items
                .fetch_add(items as u64, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some((
            self.held_back.swap(0, Ordering::Relaxed),
            self.held_back_items.swap(0, Ordering::Relaxed),
        ))
    }
}

/// Where a queued payload is stored.
struct StoredRecord {
    log: Arc<SegmentLog>,
    id: RecordId,
}

impl StoredRecord {
    /// Delivered or dropped (counted): the record is not replayed again.
    fn done(&self, exporter: &ComponentId) {
        if let Err(e) = self.log.ack(self.id) {
            tracing::warn!(exporter = %exporter, error = %e, "persistent queue: cannot record a delivery; the batch may be sent again after a restart");
        }
    }
}

/// What became of a payload (or a part of it) given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The spill took it (routed elsewhere): done with here.
    HandedOn,
    /// Left in the persistent queue for the next start: its record stays.
    Kept,
    /// Dropped, counted as `shutdown`.
    Dropped,
}

/// How the delivery of one payload ended.
struct Delivery {
    /// The first error when (part of) it was not delivered: for a caller waiting without a
    /// queue. `Ok` also when what was given up on was handed on or kept.
    result: Result<(), SendError>,
    /// Part of it was given up on and left in the persistent queue: its record must stay.
    kept: bool,
}

/// Why delivery of a payload stopped short.
enum Stop {
    /// Counted and logged where it happened; the error for a caller waiting without a queue.
    Failed(SendError),
    /// Given up on ([`GiveUp`]): what is left goes to the spill or is dropped.
    Abandoned,
}

struct Inner<S> {
    id: ComponentId,
    sender: S,
    retry: RetryConfig,
    timeout: Duration,
    metrics: ExporterMetrics,
    /// `otelcol_exporter_queue_size` (unregistered without a queue).
    queue_size: Gauge,
    /// The request size limit in force: `max_request_size`, lowered when a server refuses
    /// smaller requests as too large.
    limit: AtomicUsize,
    limit_gauge: Gauge,
    attempt_log: LogLimiter,
    drop_log: LogLimiter,
    /// Raised when handing off and at the drain deadline: deliveries give up and hand what
    /// is left to the spill.
    give_up: watch::Sender<GiveUp>,
    /// Set at build time (a persistent queue) or when handing off; read only when giving up.
    spill: Mutex<Option<Arc<dyn Spill>>>,
    /// Items given up on at the drain deadline (dropped, not spilled), for the shutdown line.
    abandoned_items: AtomicU64,
    /// A persistent queue: what is given up on and not handed on stays stored, not dropped.
    persistent: AtomicBool,
    /// Items left in a persistent queue at the drain deadline, for the shutdown line.
    kept_items: AtomicU64,
    jitter: AtomicU64,
}

/// An exporter: a [`Sender`] behind the sending queue, the size limit and the retry loop.
pub struct QueuedExporter<S: Sender> {
    inner: Arc<Inner<S>>,
    queue: QueueConfig,
    stopping: AtomicBool,
    /// What is queued, in the sizer's unit (the channel itself is unbounded: this bounds it).
    queued: Arc<AtomicU64>,
    memory: Holder,
    tx: Mutex<Option<mpsc::UnboundedSender<Queued<S::Request>>>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Queued<S::Request>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    storage: Option<Arc<QueueStorage>>,
    /// Feeds what storage held at start into the queue; stopped at shutdown (what it has not
    /// fed stays in storage).
    replay: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Sender> QueuedExporter<S> {
    /// `max_request_size`: the largest request body (uncompressed) ever sent, in bytes.
    #[allow(clippy::too_many_arguments)] // each is one of the exporter's separate settings
    pub fn new(
        id: ComponentId,
        sender: S,
        queue: QueueConfig,
        retry: RetryConfig,
        timeout: Duration,
        max_request_size: usize,
        metrics: ExporterMetrics,
        memory: Holder,
    ) -> Self {
        let (tx, rx, queue_size) = if queue.enabled {
            // Unbounded: the sizer's account (`queued`) bounds it, in requests, items or bytes.
            let (tx, rx) = mpsc::unbounded_channel();
            let gauges = metrics.queue_gauges();
            gauges.capacity.set(queue.queue_size as i64);
            (Some(tx), Some(rx), gauges.size)
        } else {
            // No queue, no queue gauges (a capacity of 0 would mean nothing).
            (None, None, Gauge::default())
        };
        let limit_gauge = metrics.max_request_size();
        limit_gauge.set(max_request_size as i64);
        QueuedExporter {
            inner: Arc::new(Inner {
                id,
                sender,
                retry,
                timeout,
                metrics,
                queue_size,
                limit: AtomicUsize::new(max_request_size.max(1)),
                limit_gauge,
                attempt_log: LogLimiter::default(),
                drop_log: LogLimiter::default(),
                give_up: watch::channel(GiveUp::Never).0,
                spill: Mutex::new(None),
                abandoned_items: AtomicU64::new(0),
                persistent: AtomicBool::new(false),
                kept_items: AtomicU64::new(0),
                jitter: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            }),
            queue,
            stopping: AtomicBool::new(false),
            queued: Arc::default(),
            memory,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            workers: Mutex::new(Vec::new()),
            storage: None,
            replay: Mutex::new(None),
        }
    }

    /// The exporter for `ctx`, with the persistent queue its `sending_queue.storage` names
    /// (if any): how every queued exporter is built.
    pub fn build(
        ctx: &BuildContext,
        sender: S,
        queue: QueueConfig,
        retry: RetryConfig,
        timeout: Duration,
        max_request_size: usize,
    ) -> Result<Self, ComponentError> {
        let storage = QueueStorage::for_exporter(ctx, queue.storage.as_deref())?;
        let metrics = ExporterMetrics::new(&ctx.telemetry, &ctx.id);
        let memory = ctx
            .telemetry
            .memory()
            .holder(&ctx.telemetry, &ctx.id.to_string(), "queue");
        let exporter = QueuedExporter::new(
            ctx.id.clone(),
            sender,
            queue,
            retry,
            timeout,
            max_request_size,
            metrics,
            memory,
        );
        Ok(match storage {
            Some(s) => exporter.with_storage(s),
            None => exporter,
        })
    }

    /// Makes the queue persistent: payloads are stored before they are accepted, and what is
    /// undelivered at the drain deadline stays stored instead of being dropped.
    pub fn with_storage(mut self, storage: Arc<QueueStorage>) -> Self {
        self.storage = Some(storage);
        self.inner.persistent.store(true, Ordering::Relaxed);
        self
    }

    /// Hands what is undelivered at the drain deadline to `spill` instead of dropping it.
    pub fn with_spill(self, spill: Arc<dyn Spill>) -> Self {
        *self.inner.spill.lock().unwrap_or_else(|e| e.into_inner()) = Some(spill);
        self
    }

    /// From now on, a part whose attempt fails retryably goes to `to` at once instead of being
    /// retried (a part waiting between retries goes now), and so does what is still undelivered
    /// at the drain deadline: for an exporter whose destination is leaving while others can
    /// take its data (a `loadbalancing` backend that left the ring). Deliveries that succeed
    /// are counted as usual; permanent failures too. Queued data is still delivered: call
    /// [`Lifecycle::shutdown`] next to drain and stop.
    pub fn hand_off_failures(&self, to: Arc<dyn Spill>) {
        *self.inner.spill.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
        self.inner.give_up.send_if_modified(|g| {
            let raise = *g < GiveUp::OnFailure;
            if raise {
                *g = GiveUp::OnFailure;
            }
            raise
        });
    }

    /// Gives up on everything undelivered now, as at the drain deadline: attempts in flight are
    /// abandoned, and what is queued or waiting goes to the spill (or is dropped, counted as
    /// `shutdown`). For an exporter handing off whose owner is stopping: the time left belongs
    /// to the exporters that take its data.
    pub fn give_up_now(&self) {
        self.inner.give_up.send_replace(GiveUp::Now);
    }
}

impl<S: Sender> Inner<S> {
    /// Delivers one payload: encoded once (unless `body` is its request already), split to
    /// the size limit, each part retried as configured; accounts for every item. What is
    /// given up on (handing off, the drain deadline) goes to the spill, stays stored, or is
    /// dropped ([`Inner::give_up_payload`]).
    async fn deliver(&self, payload: Payload, body: Option<S::Request>) -> Delivery {
        let signal = payload.signal();
        // One retry budget (`max_elapsed_time`) for the payload, however many parts it is sent
        // in: ten parts to a dead endpoint do not retry ten times as long.
        let started = Instant::now();
        let mut result = Ok(());
        // Parts still to send, the next one last.
        let mut todo = match body {
            Some(body) => vec![(payload, body)],
            None => match self.encode(payload) {
                Some(part) => vec![part],
                None => {
                    return Delivery {
                        result: Err(SendError::permanent("cannot encode the request")),
                        kept: false,
                    };
                }
            },
        };
        while let Some((part, body)) = todo.pop() {
            if self.abandoned() {
                todo.push((part, body));
                let mut gave_up = self.give_up(todo).await;
                gave_up.result = gave_up.result.and(result);
                return gave_up;
            }
            let limit = self.limit.load(Ordering::Relaxed);
            let size = S::size(&body);
            if size > limit {
                match self.split(&part, size, limit, "over_limit") {
                    Ok(parts) => todo.extend(parts.into_iter().rev()),
                    Err(e) => result = result.and(Err(e)),
                }
                continue;
            }
            match self.send_with_retry(signal, &part, &body, started).await {
                Ok(()) => {}
                Err(Stop::Failed(e)) if e.too_large => {
                    let limit = self.lower_limit(signal, size, &e);
                    match self.split(&part, size, limit, "too_large_answer") {
                        Ok(parts) => todo.extend(parts.into_iter().rev()),
                        Err(e) => result = result.and(Err(e)),
                    }
                }
                Err(Stop::Failed(e)) => result = result.and(Err(e)),
                Err(Stop::Abandoned) => {
                    todo.push((part, body));
                    let mut gave_up = self.give_up(todo).await;
                    gave_up.result = gave_up.result.and(result);
                    return gave_up;
                }
            }
        }
        Delivery {
            result,
            kept: false,
        }
    }

    /// `payload` and its encoding; `None` (counted, logged) if it cannot be encoded.
    fn encode(&self, payload: Payload) -> Option<(Payload, S::Request)> {
        match self.sender.encode(&payload) {
            Ok(body) => Some((payload, body)),
            Err(e) => {
                self.dropped(payload.signal(), payload.item_count(), "encode", &e.message);
                None
            }
        }
    }

    /// Splits `part` (whose encoding is `size` bytes) into parts that should each encode
    /// under `limit`, and encodes them. A single item cannot be split: it is dropped, counted
    /// as `too_large`.
    fn split(
        &self,
        part: &Payload,
        size: usize,
        limit: usize,
        reason: &str,
    ) -> Result<Vec<(Payload, S::Request)>, SendError> {
        let (signal, n) = (part.signal(), part.item_count());
        if n <= 1 {
            let message = format!(
                "a single item encodes to {size} bytes, over the request size limit of {limit} bytes (max_request_size)"
            );
            self.dropped(signal, n, "too_large", &message);
            return Err(SendError::permanent(message));
        }
        let target = (limit - limit / 8).max(1);
        let parts = size.div_ceil(target).clamp(2, n);
        let pieces = match part.split_items(n.div_ceil(parts)) {
            Ok(p) => p,
            Err(e) => {
                let message = format!("cannot split an oversized request: {e}");
                self.dropped(signal, n, "internal", &message);
                return Err(SendError::permanent(message));
            }
        };
        self.metrics.request_split(reason);
        tracing::debug!(exporter = %self.id, bytes = size, limit, parts = pieces.len(), reason, "request split to the size limit");
        Ok(pieces.into_iter().filter_map(|p| self.encode(p)).collect())
    }

    /// A server refused a request of `size` bytes as too large: its limit is lower than
    /// `size`, so later requests are kept to half of it. Returns the limit now in force.
    fn lower_limit(&self, signal: Signal, size: usize, e: &SendError) -> usize {
        let lowered = (size / 2).max(1);
        let before = self.limit.fetch_min(lowered, Ordering::Relaxed);
        if lowered < before {
            self.limit_gauge.set(lowered as i64);
            tracing::warn!(exporter = %self.id, endpoint = %self.sender.endpoint(signal), bytes = size, new_limit = lowered, error = %e.message, "the server refused a request as too large: splitting it, and sending requests of at most {lowered} bytes from now on (set max_request_size to the server's limit)");
        }
        lowered.min(before)
    }

    /// Sends one encoded part until it is delivered, fails for good, or is given up on (the
    /// drain deadline passed, or it failed retryably while handing off). Delivered and failed
    /// items are counted here; a too-large answer is not (the caller splits the part), nor
    /// what is given up on (the caller spills it).
    async fn send_with_retry(
        &self,
        signal: Signal,
        part: &Payload,
        body: &S::Request,
        started: Instant,
    ) -> Result<(), Stop> {
        let n = part.item_count();
        let mut interval = self.retry.initial_interval;
        let mut give_up = self.give_up.subscribe();
        loop {
            let attempt = tokio::select! {
                biased;
                _ = give_up.wait_for(|g| *g == GiveUp::Now) => return Err(Stop::Abandoned),
                r = tokio::time::timeout(self.timeout, self.sender.send(signal, body)) => r,
            };
            let err = match attempt {
                Ok(Ok(sent)) => {
                    let rejected = sent.rejected.min(n);
                    self.metrics.sent(signal, n - rejected);
                    if rejected > 0 {
                        let message = format!(
                            "the server rejected {rejected} of {n} items: {}",
                            sent.message
                        );
                        self.dropped(signal, rejected, "partial_success", &message);
                        return Err(Stop::Failed(SendError::permanent(message)));
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => SendError::retryable(format!("timed out after {:?}", self.timeout)),
            };
            if err.too_large {
                return Err(Stop::Failed(err));
            }
            if err.retryable && *give_up.borrow() >= GiveUp::OnFailure {
                tracing::debug!(exporter = %self.id, endpoint = %self.sender.endpoint(signal), items = n, error = %err.message, "export failed while handing off: handed on, not retried");
                return Err(Stop::Abandoned);
            }
            if !err.retryable || !self.retry.enabled {
                let why = if err.retryable {
                    "retries_exhausted"
                } else {
                    "permanent"
                };
                self.dropped(signal, n, why, &err.message);
                return Err(Stop::Failed(err));
            }
            let wait = err.retry_after.unwrap_or_else(|| self.jittered(interval));
            let max = self.retry.max_elapsed_time;
            if !max.is_zero() && started.elapsed() + wait > max {
                self.dropped(signal, n, "retries_exhausted", &err.message);
                return Err(Stop::Failed(err));
            }
            if let Some((more, _)) = self.attempt_log.admit(n) {
                tracing::warn!(exporter = %self.id, endpoint = %self.sender.endpoint(signal), error = %err.message, ?wait, more_failed_attempts = more, "export to {} failed; retrying", self.sender.endpoint(signal));
            }
            tokio::select! {
                biased;
                _ = give_up.wait_for(|g| *g >= GiveUp::OnFailure) => return Err(Stop::Abandoned),
                _ = tokio::time::sleep(wait) => {}
            }
            interval = interval
                .mul_f64(self.retry.multiplier)
                .min(self.retry.max_interval);
        }
    }

    /// Counts `n` items as dropped for `error_type` and logs it (rate-limited).
    fn dropped(&self, signal: Signal, n: usize, error_type: &str, message: &str) {
        self.metrics.send_failed(signal, n, error_type);
        if let Some((more, more_items)) = self.drop_log.admit(n) {
            tracing::warn!(exporter = %self.id, endpoint = %self.sender.endpoint(signal), items = n, error_type, error = %message, more_drops = more, more_dropped_items = more_items, "export to {} failed: items dropped", self.sender.endpoint(signal));
        }
    }

    /// The drain deadline passed: nothing more is attempted.
    fn abandoned(&self) -> bool {
        *self.give_up.borrow() == GiveUp::Now
    }

    /// `parts` were given up on (the drain deadline, or a failure while handing off): each
    /// handed on, kept, or dropped ([`Inner::give_up_payload`]). `Ok` when none was dropped,
    /// so that a caller waiting without a queue is not told to send again.
    async fn give_up(&self, parts: Vec<(Payload, S::Request)>) -> Delivery {
        let (mut dropped, mut kept) = (false, false);
        for (part, _) in parts {
            match self.give_up_payload(part).await {
                Fate::HandedOn => {}
                Fate::Kept => kept = true,
                Fate::Dropped => dropped = true,
            }
        }
        Delivery {
            result: match dropped {
                false => Ok(()),
                true => Err(SendError::retryable("shutdown deadline reached")),
            },
            kept,
        }
    }

    /// Gives `payload` to the spill; if there is none or it refuses, a persistent queue keeps
    /// it stored (its record is not acknowledged) and any other queue drops it, counted.
    async fn give_up_payload(&self, payload: Payload) -> Fate {
        let (signal, n) = (payload.signal(), payload.item_count());
        let persistent = self.persistent.load(Ordering::Relaxed);
        let spill = self.spill.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(spill) = spill {
            match spill.spill(payload).await {
                Ok(()) => return Fate::HandedOn,
                Err(e) if persistent => {
                    tracing::warn!(exporter = %self.id, items = n, error = %e, "cannot hand on undelivered items: they stay in the persistent queue");
                }
                Err(e) => {
                    tracing::error!(exporter = %self.id, items = n, error = %e, "cannot hand on undelivered items at shutdown: dropped");
                }
            }
        }
        if persistent {
            self.kept_items.fetch_add(n as u64, Ordering::Relaxed);
            return Fate::Kept;
        }
        self.metrics.send_failed(signal, n, "shutdown");
        self.abandoned_items.fetch_add(n as u64, Ordering::Relaxed);
        Fate::Dropped
    }

    /// `interval` ± `randomization_factor`, as the Collector's backoff does.
    fn jittered(&self, interval: Duration) -> Duration {
        // xorshift: jitter needs no cryptographic randomness, just decorrelation.
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.store(x, Ordering::Relaxed);
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let f = self.retry.randomization_factor.clamp(0.0, 1.0);
        interval.mul_f64(1.0 - f + 2.0 * f * unit)
    }
}

impl<S: Sender> QueuedExporter<S> {
    /// Writes `queued` to the persistent queue (synced with `fsync`) before it is accepted.
    /// A failure refuses the payload: the client retries, nothing is lost.
    async fn store(
        &self,
        storage: &Arc<QueueStorage>,
        queued: &mut Queued<S::Request>,
    ) -> Result<(), ConsumeError> {
        let signal = queued.payload.signal();
        let refuse = |e: StorageError| {
            if !matches!(e, StorageError::Full { .. }) {
                tracing::error!(exporter = %self.inner.id, error = %e, "persistent queue: cannot store a batch; it is refused (the client retries)");
            }
            ConsumeError::Unavailable(format!("persistent queue: {e}"))
        };
        let log = match storage.opened(signal) {
            Some(log) => log,
            // The first payload of a signal makes its queue directory: off the runtime's
            // threads (it may wait for another process's lock up to `timeout`).
            None => {
                let storage = storage.clone();
                tokio::task::spawn_blocking(move || storage.log(signal))
                    .await
                    .map_err(|e| ConsumeError::Unavailable(format!("persistent queue: {e}")))?
                    .map_err(refuse)?
            }
        };
        let (record, start) = crate::file_storage::encode_record(&queued.payload);
        let (id, seq) = log.append(&record).map_err(refuse)?;
        if let Err(e) = log.sync(seq).await {
            // Not durable as promised: not accepted. The record may still be replayed later
            // (at least once); the client's retry may then duplicate it.
            let _ = log.ack(id);
            return Err(refuse(e));
        }
        queued.body = self
            .inner
            .sender
            .reuse_otlp_protobuf(Bytes::from(record).slice(start..));
        queued.record = Some(StoredRecord { log, id });
        Ok(())
    }

    /// Feeds what storage held at start into the queue, oldest first, as the workers make
    /// room (`queue_size` in the sizer's unit, as for new data); a record that cannot be read
    /// back is skipped and counted.
    async fn replay(
        inner: Arc<Inner<S>>,
        storage: Arc<QueueStorage>,
        into: ReplayInto<S::Request>,
        logs: Vec<(Signal, Arc<SegmentLog>, crate::file_storage::Opened)>,
    ) {
        for (signal, log, opened) in logs {
            for segment in opened.segments {
                let reader = log.clone();
                let records =
                    tokio::task::spawn_blocking(move || reader.read_segment(segment)).await;
                let records = match records {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::error!(exporter = %inner.id, error = %e, "persistent queue: cannot read a segment; its records stay on disk");
                        continue;
                    }
                    Err(_) => continue,
                };
                for (id, record) in records {
                    let (payload, body) = match decode_record(signal, &record) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(exporter = %inner.id, error = %e, "persistent queue: a stored record cannot be decoded; skipped");
                            storage.count_corrupt(1);
                            let _ = log.ack(id);
                            continue;
                        }
                    };
                    let bytes = payload.memory_size();
                    let size = into.sizer.size(&payload, bytes);
                    while !take_room(&into.queued, size, into.capacity) {
                        if into.tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let body = inner.sender.reuse_otlp_protobuf(body);
                    let held = into.memory.hold(bytes + body.as_ref().map_or(0, S::size));
                    inner.metrics.replayed(signal, payload.item_count());
                    let queued = Queued {
                        payload,
                        held,
                        size,
                        body,
                        record: Some(StoredRecord {
                            log: log.clone(),
                            id,
                        }),
                    };
                    if into.tx.send(queued).is_err() {
                        into.queued.fetch_sub(size, Ordering::Relaxed);
                        return;
                    }
                    inner.queue_size.add(size as i64);
                }
            }
        }
    }
}

/// Where replay feeds the queue, and how it waits for room there.
struct ReplayInto<R> {
    tx: mpsc::UnboundedSender<Queued<R>>,
    queued: Arc<AtomicU64>,
    capacity: u64,
    sizer: Sizer,
    memory: Holder,
}

impl<S: Sender> QueuedExporter<S> {
    /// `block_on_overflow`: waits until the queue has room for `size` and takes it; false if
    /// the exporter stops first. Polls (every few milliseconds, only while a queue is full and
    /// a caller waits) rather than being woken: the workers that free room stay unchanged.
    async fn wait_for_room(
        &self,
        size: u64,
        tx: &mpsc::UnboundedSender<Queued<S::Request>>,
    ) -> bool {
        loop {
            if self.stopping.load(Ordering::Relaxed) || tx.is_closed() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if take_room(&self.queued, size, self.queue.queue_size as u64) {
                return true;
            }
        }
    }
}

impl<S: Sender> Consumer for QueuedExporter<S> {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = payload.item_count();
            if n == 0 {
                return Ok(());
            }
            let signal = payload.signal();
            if !self.queue.enabled {
                // No queue: deliver now and tell the caller how it went, as the Collector does,
                // so the receiver can ask the client to retry (the failure is counted too).
                return self.inner.deliver(payload, None).await.result.map_err(|e| {
                    match e.retryable {
                        true => ConsumeError::Unavailable(e.message),
                        false => ConsumeError::Permanent(e.message),
                    }
                });
            }
            let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let Some(tx) = tx else {
                self.inner.metrics.enqueue_failed(signal, n);
                return Err(ConsumeError::Unavailable(format!(
                    "exporter {} is shutting down",
                    self.inner.id
                )));
            };
            // Queued maybe for long (the exporter may be down): no deferred rebuilds held.
            let mut payload = payload;
            payload.settle();
            let bytes = payload.memory_size();
            let size = self.queue.sizer.size(&payload, bytes);
            if !take_room(&self.queued, size, self.queue.queue_size as u64)
                && (!self.queue.block_on_overflow || !self.wait_for_room(size, &tx).await)
            {
                self.inner.metrics.enqueue_failed(signal, n);
                return Err(ConsumeError::Unavailable(
                    if self.stopping.load(Ordering::Relaxed) {
                        format!("exporter {} is shutting down", self.inner.id)
                    } else {
                        "sending queue is full".into()
                    },
                ));
            }
            let mut queued = Queued {
                payload,
                held: self.memory.hold(bytes),
                size,
                body: None,
                record: None,
            };
            // Stored only once the queue has room for it; refused (the room given back) if it
            // cannot be stored.
            if let Some(storage) = &self.storage
                && let Err(e) = self.store(storage, &mut queued).await
            {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                self.inner.metrics.enqueue_failed(signal, n);
                return Err(e);
            }
            if let Some(body) = &queued.body {
                // The encoding is kept for sending: held too.
                queued.held.resize(bytes + S::size(body));
            }
            if tx.send(queued).is_err() {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                self.inner.metrics.enqueue_failed(signal, n);
                // A stored record stays for the next start: the client's retry may duplicate it.
                return Err(ConsumeError::Unavailable(format!(
                    "exporter {} is shutting down",
                    self.inner.id
                )));
            }
            self.inner.queue_size.add(size as i64);
            Ok(())
        })
    }

    fn keeps_wire_form(&self) -> bool {
        self.inner.sender.encodes_wire_form()
    }
}

impl<S: Sender> Lifecycle for QueuedExporter<S> {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return Ok(());
            };
            if let Some(storage) = &self.storage {
                let opening = storage.clone();
                let logs = tokio::task::spawn_blocking(move || opening.open_existing())
                    .await
                    .map_err(|e| ComponentError::new(&self.inner.id, e))?
                    .map_err(|e| {
                        ComponentError::new(&self.inner.id, format!("sending_queue.storage: {e}"))
                    })?;
                let pending: u64 = logs.iter().map(|(_, _, o)| o.pending_records).sum();
                if pending > 0 {
                    tracing::info!(exporter = %self.inner.id, batches = pending, "persistent queue: replaying what the last run left undelivered");
                }
                let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(tx) = tx {
                    let into = ReplayInto {
                        tx,
                        queued: self.queued.clone(),
                        capacity: self.queue.queue_size as u64,
                        sizer: self.queue.sizer,
                        memory: self.memory.clone(),
                    };
                    let task = Self::replay(self.inner.clone(), storage.clone(), into, logs);
                    *self.replay.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(tokio::spawn(task));
                }
            }
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            // `sizer: bytes` bounds what the exporter holds, sends under way included: the
            // point of sizing in bytes is memory, and with 10 consumers the batches being sent
            // outweigh those waiting (BENCHMARKS.md, "Persistent queue cost"). So a payload's
            // bytes leave the bound when it is delivered or dropped. Requests and items count
            // what waits, as in the Collector; the queue-size gauge always shows what waits.
            let bound_until_sent = self.queue.sizer == Sizer::Bytes;
            let sends = Arc::new(SendsUnderPressure::new(self.memory.account().clone()));
            for _ in 0..self.queue.num_consumers.max(1) {
                let (rx, inner, queued) = (rx.clone(), self.inner.clone(), self.queued.clone());
                let sends = sends.clone();
                workers.push(tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(Queued {
                            payload,
                            held,
                            size,
                            body,
                            record,
                        }) = next
                        else {
                            return;
                        };
                        if !bound_until_sent {
                            queued.fetch_sub(size, Ordering::Relaxed);
                        }
                        inner.queue_size.add(-(size as i64));
                        if inner.abandoned() {
                            // Kept in storage, its record stays for the next start.
                            let fate = inner.give_up_payload(payload).await;
                            if fate != Fate::Kept
                                && let Some(record) = record
                            {
                                record.done(&inner.id);
                            }
                            if bound_until_sent {
                                queued.fetch_sub(size, Ordering::Relaxed);
                            }
                            continue;
                        }
                        // Memory at the limit: one send at a time (see SendsUnderPressure).
                        let sending = sends.start().await;
                        // While it is sent the payload is held twice: the Arrow data and its
                        // encoding (OTLP protobuf is about the size of the Arrow data), so the
                        // memory limiter sees the send at once, not at its next RSS sample.
                        // (A persistent queue's payload holds its encoding already; a wire form
                        // sent from its own bytes has no encoding of its own.)
                        let mut held = held;
                        if body.is_none() && inner.sender.encoding_copies(&payload) {
                            held.resize(held.bytes() as usize * 2);
                        }
                        // Failures are counted and logged inside; nobody is waiting for them.
                        // Given up on and kept, the record stays for the next start.
                        let delivery = inner.deliver(payload, body).await;
                        if !delivery.kept
                            && let Some(record) = record
                        {
                            record.done(&inner.id);
                        }
                        // Delivered or dropped: its bytes leave the account.
                        drop(held);
                        drop(sending);
                        if bound_until_sent {
                            queued.fetch_sub(size, Ordering::Relaxed);
                        }
                    }
                }));
            }
            Ok(())
        })
    }

    /// Stops taking new data, then drains the queue until `sending_queue.drain_timeout`; at
    /// that deadline what is left is spilled or dropped (counted as `shutdown`, logged).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.stopping.swap(true, Ordering::Relaxed) {
                return;
            }
            let deadline = Instant::now() + self.queue.drain_timeout;
            // What replay has not fed yet stays in storage.
            let replay = self.replay.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(replay) = replay {
                replay.abort();
                let _ = replay.await;
            }
            // Dropping the only sender closes the channel: workers finish what is queued.
            self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
            let mut workers: VecDeque<_> =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner())).into();
            // A worker leaves the deque only once it has finished: a JoinHandle must not be
            // polled again after it completed (tokio panics), so the wait after the deadline
            // below awaits only the workers still running then.
            let drained = tokio::time::timeout_at(deadline, async {
                while let Some(w) = workers.front_mut() {
                    let _ = w.await;
                    workers.pop_front();
                }
            })
            .await;
            if drained.is_err() {
                // Attempts in flight give up; workers hand on what is still queued unsent.
                self.inner.give_up.send_replace(GiveUp::Now);
                for w in workers {
                    let _ = w.await;
                }
            }
            let kept = self.inner.kept_items.load(Ordering::Relaxed);
            if kept > 0 && self.storage.is_some() {
                tracing::warn!(exporter = %self.inner.id, items = kept, drain_timeout = ?self.queue.drain_timeout, "shutdown: {kept} items were still undelivered at the drain deadline; they stay in the persistent queue and are sent after the next start");
            }
            let lost = self.inner.abandoned_items.load(Ordering::Relaxed);
            if lost > 0 {
                tracing::error!(exporter = %self.inner.id, items = lost, drain_timeout = ?self.queue.drain_timeout, "shutdown: {lost} items were still undelivered at the drain deadline and were dropped (otelcol_exporter_send_failed_*{{error_type=\"shutdown\"}})");
            }
        })
    }

    /// The drain deadline, and a moment for the abandoned attempts to hand their items on.
    fn shutdown_timeout(&self) -> Duration {
        self.queue.drain_timeout + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod sends_under_pressure_tests {
    use super::*;
    use sluice_engine::memory::{Limits, MIB, MemoryAccount};

    fn account_at(held_mib: u64) -> (MemoryAccount, sluice_engine::memory::Held) {
        let t = sluice_engine::telemetry::Telemetry::new();
        let a = t.memory().clone();
        a.set_limits(Limits {
            soft: 100 * MIB,
            hard: 120 * MIB,
        });
        let held = a
            .holder(&t, "otlp", "queue")
            .hold((held_mib * MIB) as usize);
        (a, held)
    }

    #[tokio::test]
    async fn every_consumer_sends_while_memory_is_below_the_soft_limit() {
        let (a, _held) = account_at(50);
        let sends = SendsUnderPressure::new(a);
        let mut all = Vec::new();
        for _ in 0..10 {
            let s = tokio::time::timeout(Duration::from_secs(1), sends.start()).await;
            all.push(s.expect("not limited below the soft limit"));
        }
        assert_eq!(sends.under_way.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn at_the_soft_limit_one_send_at_a_time_until_memory_goes_down() {
        let (a, held) = account_at(100);
        let sends = SendsUnderPressure::new(a);
        let first = sends.start().await;
        // A second waits while the first is under way ...
        assert!(
            tokio::time::timeout(Duration::from_millis(200), sends.start())
                .await
                .is_err()
        );
        // ... and starts once it is done.
        let second = tokio::time::timeout(Duration::from_secs(1), async {
            let (s, ()) = tokio::join!(sends.start(), async { drop(first) });
            s
        })
        .await
        .expect("started after the first finished");
        // Memory going down lets every consumer send again, with no send finishing.
        drop(held);
        let third = tokio::time::timeout(Duration::from_secs(1), sends.start()).await;
        assert!(third.is_ok(), "below the soft limit again");
        drop(second);
    }
}
