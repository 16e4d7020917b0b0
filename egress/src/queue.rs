//! The Collector's exporterhelper: a sending queue, retry with exponential backoff, a timeout
//! per attempt, and an account of every item.
//!
//! ```yaml
//! sending_queue:
//!   enabled: true          # default
//!   num_consumers: 10      # default: batches sent concurrently
//!   queue_size: 1000       # default, in batches
//! retry_on_failure:
//!   enabled: true
//!   initial_interval: 5s
//!   randomization_factor: 0.5
//!   multiplier: 1.5
//!   max_interval: 30s
//!   max_elapsed_time: 300s # 0 = retry forever
//! timeout: 5s              # per attempt
//! ```
//!
//! Every item the exporter is given ends in exactly one counter: `otelcol_exporter_sent_*`
//! (delivered), `otelcol_exporter_send_failed_*` (a permanent error, retries exhausted, or
//! still undelivered when shutdown's drain deadline passed — each logged), or
//! `otelcol_exporter_enqueue_failed_*` (the queue was full: the caller got `Unavailable`, so the
//! client was told to retry and nothing was accepted).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, ComponentError, ComponentId, ConsumeError, Consumer, Lifecycle,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::telemetry::ExporterMetrics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_consumers")]
    pub num_consumers: usize,
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Accepted; a full queue always refuses (the client retries), never blocks.
    #[serde(default)]
    pub block_on_overflow: bool,
    /// Accepted for compatibility (the Collector's persistent queue); not supported yet.
    #[serde(default)]
    pub storage: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: default_consumers(),
            queue_size: default_queue_size(),
            block_on_overflow: false,
            storage: None,
        }
    }
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

/// How long shutdown keeps trying to deliver what is queued before counting it as failed.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Why one send attempt failed.
#[derive(Debug, Clone)]
pub struct SendError {
    pub retryable: bool,
    /// The server's `Retry-After` / `RetryInfo`, when it gave one.
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SendError {
            retryable: true,
            retry_after: None,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            retryable: false,
            retry_after: None,
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

/// One protocol's way to deliver a payload once.
pub trait Sender: Send + Sync + 'static {
    fn send(&self, payload: &Payload) -> impl Future<Output = Result<Sent, SendError>> + Send;
}

struct Inner<S> {
    id: ComponentId,
    sender: S,
    retry: RetryConfig,
    timeout: Duration,
    metrics: ExporterMetrics,
    /// Set when shutdown starts: retries stop once `drain_deadline` passes.
    stopping: AtomicBool,
    drain_deadline: Mutex<Option<Instant>>,
    jitter: AtomicU64,
}

/// An exporter: a [`Sender`] behind the sending queue and the retry loop.
pub struct QueuedExporter<S> {
    inner: Arc<Inner<S>>,
    queue: QueueConfig,
    tx: Mutex<Option<mpsc::Sender<Payload>>>,
    rx: Mutex<Option<mpsc::Receiver<Payload>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: Sender> QueuedExporter<S> {
    pub fn new(
        id: ComponentId,
        sender: S,
        queue: QueueConfig,
        retry: RetryConfig,
        timeout: Duration,
        metrics: ExporterMetrics,
    ) -> Self {
        let (tx, rx) = if queue.enabled {
            let (tx, rx) = mpsc::channel(queue.queue_size.max(1));
            metrics.queue_capacity.set(queue.queue_size as i64);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        QueuedExporter {
            inner: Arc::new(Inner {
                id,
                sender,
                retry,
                timeout,
                metrics,
                stopping: AtomicBool::new(false),
                drain_deadline: Mutex::new(None),
                jitter: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            }),
            queue,
            tx: Mutex::new(tx),
            rx: Mutex::new(rx),
            workers: Mutex::new(Vec::new()),
        }
    }
}

impl<S: Sender> Inner<S> {
    /// Delivers one payload, retrying as configured; accounts for every item. Returns the
    /// final error when the payload (or part of it) was not delivered.
    async fn deliver(&self, payload: Payload) -> Result<(), SendError> {
        let n = payload.item_count();
        let signal = payload.signal();
        let started = Instant::now();
        let mut interval = self.retry.initial_interval;
        loop {
            let attempt = tokio::time::timeout(self.timeout, self.sender.send(&payload)).await;
            let err = match attempt {
                Ok(Ok(sent)) => {
                    let rejected = sent.rejected.min(n);
                    self.metrics.sent(signal, n - rejected);
                    if rejected > 0 {
                        self.metrics.send_failed(signal, rejected);
                        tracing::warn!(exporter = %self.id, rejected, message = %sent.message, "the server rejected part of a batch (partial success)");
                        return Err(SendError::permanent(format!(
                            "the server rejected {rejected} of {n} items: {}",
                            sent.message
                        )));
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => SendError::retryable(format!("timed out after {:?}", self.timeout)),
            };
            if !err.retryable || !self.retry.enabled {
                self.metrics.send_failed(signal, n);
                tracing::warn!(exporter = %self.id, items = n, error = %err.message, "export failed; not retryable: items dropped");
                return Err(err);
            }
            let wait = err.retry_after.unwrap_or_else(|| self.jittered(interval));
            let max = self.retry.max_elapsed_time;
            let over_budget = !max.is_zero() && started.elapsed() + wait > max;
            let past_drain = self.stopping.load(Ordering::Relaxed)
                && self
                    .drain_deadline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|d| Instant::now() + wait > d);
            if over_budget || past_drain {
                self.metrics.send_failed(signal, n);
                let why = if over_budget {
                    "retries exhausted"
                } else {
                    "shutdown deadline reached"
                };
                tracing::warn!(exporter = %self.id, items = n, error = %err.message, "export failed ({why}): items dropped");
                return Err(err);
            }
            tracing::debug!(exporter = %self.id, error = %err.message, ?wait, "export failed; retrying");
            tokio::time::sleep(wait).await;
            interval = interval
                .mul_f64(self.retry.multiplier)
                .min(self.retry.max_interval);
        }
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
                return self
                    .inner
                    .deliver(payload)
                    .await
                    .map_err(|e| match e.retryable {
                        true => ConsumeError::Unavailable(e.message),
                        false => ConsumeError::Permanent(e.message),
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
            match tx.try_send(payload) {
                Ok(()) => {
                    self.inner.metrics.queue_size.add(1);
                    Ok(())
                }
                Err(_) => {
                    self.inner.metrics.enqueue_failed(signal, n);
                    Err(ConsumeError::Unavailable("sending queue is full".into()))
                }
            }
        })
    }
}

impl<S: Sender> Lifecycle for QueuedExporter<S> {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return Ok(());
            };
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..self.queue.num_consumers.max(1) {
                let (rx, inner) = (rx.clone(), self.inner.clone());
                workers.push(tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(p) = next else { return };
                        inner.metrics.queue_size.add(-1);
                        // Failures are counted and logged inside; nobody is waiting for them.
                        let _ = inner.deliver(p).await;
                    }
                }));
            }
            Ok(())
        })
    }

    /// Stops taking new data, then drains the queue: retries continue until
    /// [`DRAIN_DEADLINE`], after which what is left is counted as `send_failed`.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self
                .inner
                .drain_deadline
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DRAIN_DEADLINE);
            self.inner.stopping.store(true, Ordering::Relaxed);
            // Dropping the only sender closes the channel: workers finish what is queued.
            self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
            let workers: Vec<_> =
                std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
            for w in workers {
                let _ = w.await;
            }
        })
    }
}
