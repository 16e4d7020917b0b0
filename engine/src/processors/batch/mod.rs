//! `batch`: groups payloads before export, as the Collector's batch processor does.
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 8192      # send as soon as this many items are buffered
//!     send_batch_max_size: 0     # split larger batches (0 = no limit; >= send_batch_size)
//!     timeout: 200ms             # send whatever is buffered after this long
//! ```
//!
//! `consume` buffers and returns at once (the Collector's behaviour); one worker task per
//! pipeline merges the buffered payloads and sends. The merge is deferred
//! ([`Payload::concat_deferred`]): the batch is the list of payloads, which an exporter
//! encodes one after the other; the Arrow tables are concatenated (once) only if the next
//! component reads them. Concatenating at every send cost ~9 % of a decoding pass-through's
//! instructions (BENCHMARKS.md, "Batching without concatenating"). Buffering is bounded: past 4 × `send_batch_size` items, `consume` waits for the
//! worker, so a slow exporter pushes back on receivers instead of growing memory. What piled up
//! meanwhile leaves as several batches of `send_batch_size` (whole arrivals, so a batch can be
//! one arrival larger), never merged into one: without `send_batch_max_size` a batch is as
//! large as the Collector's would be. The buffered data was acknowledged to its client when it
//! came, so a batch the next component refuses for now (a full sending queue, memory pressure:
//! a retryable [`ConsumeError`]) is offered again with a backoff (10 ms doubling to 1 s) until
//! it is taken, and meanwhile the buffer fills and receivers wait — back-pressure instead of
//! loss. (The Collector drops such a batch; a sending queue bounded in bytes made it happen
//! here at full rate; see [`super::hand_over`].) Only a permanent refusal, or a retryable one
//! still standing [`SHUTDOWN_RETRY_FOR`] after shutdown began, drops the batch: logged at warn
//! and counted as `otelcol_processor_dropped_*{processor,reason="export_failed"}`. Shutdown
//! flushes everything buffered. What is buffered (and the merged batch on its way out) is held in the
//! memory account: `sluice_memory_held_bytes{component="<id>",kind="batch"}`.
//!
//! Payloads still in their wire form (requests forwarded without decoding, see
//! [`crate::payload::WireForm`]) are concatenated and split as bytes by the same
//! `Payload::concat_deferred` / `Payload::split_items` calls, so `batch` never decodes them; it takes
//! them when the component after it does ([`Consumer::keeps_wire_form`]).
//!
//! Under a virtual clock (offline replay) there is no worker: `timeout` is measured on the
//! clock (the data's time), a full batch is sent inline by the `consume` that filled it, and a
//! timed-out one when the clock's driver says time moved past its deadline
//! ([`Lifecycle::on_virtual_time`]) — so batches are cut where live traffic would have cut
//! them, and a replay is deterministic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[cfg(doc)]
use super::hand_over::SHUTDOWN_RETRY_FOR;
use super::hand_over::offer_until_taken;
use crate::clock::Clock;
use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::config_types::deserialize_duration;
use crate::memory::{Held, Holder};
use crate::payload::Payload;
use crate::schema::Signal;
use crate::telemetry::{Counter, ProcessorMetrics};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_send_batch_size")]
    pub send_batch_size: usize,
    #[serde(default)]
    pub send_batch_max_size: usize,
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    #[serde(default)]
    pub metadata_cardinality_limit: Option<u32>,
}

fn default_send_batch_size() -> usize {
    8192
}
fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

pub struct BatchFactory;

impl Factory for BatchFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "batch"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "groups items into batches by size and timeout before export"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: BatchConfig = parse_config(config)?;
        if c.send_batch_max_size != 0 && c.send_batch_max_size < c.send_batch_size {
            return Err(ConfigError::new(
                "send_batch_max_size",
                format!(
                    "must be 0 or >= send_batch_size ({} < {})",
                    c.send_batch_max_size, c.send_batch_size
                ),
            ));
        }
        if !c.metadata_keys.is_empty() {
            return Err(ConfigError::new(
                "metadata_keys",
                "batching by client metadata is not supported yet; remove metadata_keys",
            ));
        }
        Ok(Arc::new(c))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<BatchConfig>()?;
        Ok(Arc::new(
            Batch::new(
                &config,
                signal,
                next,
                ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
            )
            .with_clock(ctx.clock.clone()),
        ))
    }
}

struct Shared {
    config: BatchConfig,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
    export_failed: Counter,
    memory: Holder,
    state: Mutex<State>,
    /// Wakes the worker: size reached, first item after idle, or shutdown.
    wake: Notify,
    /// Wakes producers waiting for buffer space.
    space: Notify,
    /// Set when the clock is virtual: timeouts are measured on it, and nothing runs by itself.
    virtual_clock: Option<Arc<dyn Clock>>,
}

struct State {
    buffer: Vec<Payload>,
    /// The buffer's bytes in the memory account.
    held: Held,
    items: usize,
    /// When the oldest buffered item must be sent.
    deadline: Option<Instant>,
    /// The same on a virtual clock (Unix ns).
    virtual_deadline: Option<u64>,
    stopping: bool,
}

pub struct Batch {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Batch {
    pub fn new(
        config: &BatchConfig,
        signal: Signal,
        next: ConsumerRef,
        metrics: ProcessorMetrics,
    ) -> Self {
        let export_failed = metrics.dropped(signal, "export_failed");
        let memory = metrics.memory_holder("batch");
        let state = State {
            buffer: Vec::new(),
            held: memory.none(),
            items: 0,
            deadline: None,
            virtual_deadline: None,
            stopping: false,
        };
        Batch {
            shared: Arc::new(Shared {
                config: config.clone(),
                signal,
                next,
                metrics,
                export_failed,
                memory,
                state: Mutex::new(state),
                wake: Notify::new(),
                space: Notify::new(),
                virtual_clock: None,
            }),
            worker: Mutex::new(None),
        }
    }

    /// Measures `timeout` on `clock` when it is virtual (see the module docs); a wall clock
    /// changes nothing. Call before the batch is shared.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if clock.is_virtual()
            && let Some(shared) = Arc::get_mut(&mut self.shared)
        {
            shared.virtual_clock = Some(clock);
        }
        self
    }

    fn high_watermark(&self) -> usize {
        self.shared
            .config
            .send_batch_size
            .max(self.shared.config.send_batch_max_size)
            .max(1)
            * 4
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the next batch if one should be sent now (any buffered items when `all`): the
    /// oldest buffered payloads up to `send_batch_size` items, with their bytes. Whole payloads,
    /// so a batch is at most `send_batch_size` plus one arrival less one item, as in the
    /// Collector — however much piled up while the worker was blocked sending (up to 4 × the
    /// batch size), which used to leave as one merged payload.
    fn take(&self, all: bool) -> Option<(Vec<Payload>, Held)> {
        let mut st = self.lock();
        let due = match &self.virtual_clock {
            Some(clock) => st
                .virtual_deadline
                .is_some_and(|d| clock.now_unix_nanos() >= d),
            None => st.deadline.is_some_and(|d| Instant::now() >= d),
        };
        if st.items == 0 || !(all || due || st.items >= self.config.send_batch_size) {
            return None;
        }
        let (mut taken, mut count) = (0usize, 0usize);
        while count < st.buffer.len() && taken < self.config.send_batch_size.max(1) {
            taken += st.buffer[count].item_count();
            count += 1;
        }
        let rest = st.buffer.split_off(count);
        let batch = std::mem::replace(&mut st.buffer, rest);
        st.items -= taken.min(st.items);
        // Buffered payloads are settled: their size now is their size when they came.
        let bytes: usize = batch.iter().map(Payload::memory_size).sum();
        let held = if st.buffer.is_empty() {
            st.items = 0;
            st.deadline = None;
            st.virtual_deadline = None;
            st.held.take()
        } else {
            st.held.split(bytes)
        };
        Some((batch, held))
    }

    /// Merges and sends; the bytes stay held until the next component has taken the data
    /// (and holds it itself, if it keeps it).
    async fn send(&self, (parts, mut held): (Vec<Payload>, Held)) {
        let n: usize = parts.iter().map(Payload::item_count).sum();
        // Deferred: the tables are concatenated only if the next component reads them; an
        // exporter encodes the parts one after the other (`Payload::concat_deferred`).
        let merged = Payload::concat_deferred(self.signal, parts);
        let merged = match merged {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, items = n, "batch: cannot merge payloads; dropping");
                self.export_failed.add(n as u64);
                return;
            }
        };
        held.resize(merged.memory_size());
        let chunks = match merged.split_items(self.config.send_batch_max_size) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, items = n, "batch: cannot split payload; dropping");
                self.export_failed.add(n as u64);
                return;
            }
        };
        for chunk in chunks {
            let k = chunk.item_count();
            let stopping = || self.lock().stopping;
            match offer_until_taken(self.next.as_ref(), chunk, stopping, "batch").await {
                Ok(()) => self.metrics.outgoing(self.signal, k),
                Err(e) => {
                    tracing::warn!(error = %e, items = k, "batch: next component refused a batch; items dropped");
                    self.export_failed.add(k as u64);
                }
            }
        }
        drop(held);
    }

    async fn run(self: Arc<Self>) {
        loop {
            let (deadline, stopping) = {
                let st = self.lock();
                (st.deadline, st.stopping)
            };
            if stopping {
                while let Some(parts) = self.take(true) {
                    self.send(parts).await;
                }
                self.space.notify_waiters();
                return;
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
            // Several batches may be due at once (a backlog that built up during a slow send).
            while let Some(parts) = self.take(false) {
                self.send(parts).await;
                self.space.notify_waiters();
            }
        }
    }
}

impl Consumer for Batch {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = payload.item_count();
            if n == 0 {
                return Ok(());
            }
            let s = &self.shared;
            s.metrics.incoming(s.signal, n);
            if let Some(clock) = &s.virtual_clock {
                {
                    let mut st = s.lock();
                    if st.stopping {
                        return Err(ConsumeError::Unavailable(
                            "batch processor is shutting down".into(),
                        ));
                    }
                    if st.items == 0 {
                        st.virtual_deadline = Some(
                            clock
                                .now_unix_nanos()
                                .saturating_add(s.config.timeout.as_nanos() as u64),
                        );
                    }
                    st.items += n;
                    let mut payload = payload;
                    payload.settle();
                    st.held.absorb(s.memory.hold(payload.memory_size()));
                    st.buffer.push(payload);
                }
                while let Some(parts) = s.take(false) {
                    s.send(parts).await;
                }
                return Ok(());
            }
            loop {
                let waiting = s.space.notified();
                {
                    let mut st = s.lock();
                    if st.stopping {
                        return Err(ConsumeError::Unavailable(
                            "batch processor is shutting down".into(),
                        ));
                    }
                    if st.items < self.high_watermark() {
                        if st.items == 0 {
                            st.deadline = Some(Instant::now() + s.config.timeout);
                            s.wake.notify_one();
                        }
                        st.items += n;
                        let mut payload = payload;
                        payload.settle();
                        st.held.absorb(s.memory.hold(payload.memory_size()));
                        st.buffer.push(payload);
                        if st.items >= s.config.send_batch_size {
                            s.wake.notify_one();
                        }
                        return Ok(());
                    }
                }
                // Full: wait for the worker to send (backpressure instead of unbounded memory).
                waiting.await;
            }
        })
    }

    /// Batching reads only item counts, and concatenates and splits wire forms as bytes
    /// (`Payload::concat`, `Payload::split_items`).
    fn keeps_wire_form(&self) -> bool {
        self.shared.next.keeps_wire_form()
    }
}

impl Lifecycle for Batch {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            if self.shared.virtual_clock.is_some() {
                return Ok(()); // sends inline and on the clock's driver (module docs)
            }
            let handle = tokio::spawn(self.shared.clone().run());
            *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.lock().stopping = true;
            self.shared.wake.notify_one();
            let handle = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
            match handle {
                Some(h) => {
                    let _ = h.await;
                }
                // Never started: flush inline so nothing buffered is lost.
                None => {
                    while let Some(parts) = self.shared.take(true) {
                        self.shared.send(parts).await;
                    }
                }
            }
        })
    }

    fn next_virtual_deadline(&self) -> Option<u64> {
        self.shared.virtual_clock.as_ref()?;
        self.shared.lock().virtual_deadline
    }

    fn on_virtual_time(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shared.virtual_clock.is_some() {
                while let Some(parts) = self.shared.take(false) {
                    self.shared.send(parts).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
