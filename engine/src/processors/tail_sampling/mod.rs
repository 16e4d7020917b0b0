//! `tail_sampling`: waits `decision_wait` after the first span of a trace, then keeps or drops
//! the whole trace by policy, as the Collector's tail sampling processor does (same config,
//! same decision semantics, same self-telemetry names).
//!
//! ```yaml
//! processors:
//!   tail_sampling:
//!     decision_wait: 30s            # wait after a trace's first span
//!     num_traces: 50000             # undecided traces held; past it the oldest are decided early
//!     expected_new_traces_per_sec: 0
//!     decision_cache: {sampled_cache_size: 0, non_sampled_cache_size: 0}
//!     sample_on_first_match: false
//!     drop_pending_traces_on_shutdown: false
//!     policies:
//!       - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
//!       - {name: slow, type: latency, latency: {threshold_ms: 2000}}
//!       - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
//! ```
//!
//! Policies: `always_sample`, `latency`, `numeric_attribute`, `probabilistic`, `status_code`,
//! `string_attribute`, `rate_limiting`, `span_count`, `boolean_attribute`, `and`, `drop`,
//! `composite`, `ottl_condition` (span and span event conditions compiled by sluice's OTTL
//! compiler to column kernels) — see [`policy`] for their exact semantics. Other Collector
//! types (`trace_state`, `trace_flags`, `bytes_limiting`, ...) are refused by name.
//!
//! # How it works
//!
//! - Spans are routed by trace id to one of N shards (N = cores), each behind its own lock, so
//!   receivers on different cores rarely wait for each other.
//! - Each shard is a time wheel ([`store`]): a trace's spans all go to the bucket of its
//!   deadline, as filtered Arrow payloads that are sealed into compact columnar segments
//!   ([`segment`]: per-segment dictionaries, narrowed integers, no storage for nulls).
//! - When a bucket fires, per-trace aggregates (span count, status codes present, earliest
//!   start, latest end) are computed in one pass over the segments' span columns, every policy
//!   is evaluated for all of the bucket's traces at once (segments are decoded whole only if a
//!   policy reads attributes or runs OTTL), and the kept rows of every segment are taken out
//!   into one payload downstream, so all spans of a kept trace are exported together; segments
//!   with no kept span are never decoded.
//! - Decisions are remembered ([`store::DecisionMemory`]): late spans of a kept trace are
//!   passed on at once, those of a dropped trace are dropped (both counted).
//! - Time comes from the [`Clock`]: on the wall clock a ticker fires buckets every tick (1 s,
//!   or `decision_wait` if shorter); on a virtual clock buckets fire as soon as data moves the
//!   clock past their deadline, so a captured hour replays in seconds.
//! - Past `num_traces` undecided traces the oldest buckets are decided early (counted in
//!   `otelcol_processor_tail_sampling_traces_decided_early`): nothing is dropped undecided.
//! - Shutdown decides every buffered trace and sends what is kept before returning
//!   (`drop_pending_traces_on_shutdown: true` drops them instead, counted).
//! - What is kept goes downstream in payloads of at most [`RELEASE_MAX_SPANS`] spans, however
//!   many traces a tick or the shutdown decides (the Collector sends one request per trace;
//!   sluice sends the kept rows of a whole bucket together, which unbounded would be one
//!   payload as large as the backlog).
//!
//! # Self-telemetry
//!
//! The Collector's names (`documentation.md` of the tailsamplingprocessor):
//! `otelcol_processor_tail_sampling_count_traces_sampled_total{policy,sampled,decision}`,
//! `..._count_spans_sampled_total`, `..._global_count_traces_sampled_total{sampled,decision}`,
//! `..._new_trace_id_received_total`, `..._early_releases_from_cache_decision_total{sampled}`,
//! `..._sampling_late_span_age_seconds` (histogram), `..._sampling_decision_timer_latency_milliseconds`
//! (histogram), `..._sampling_trace_removal_age_seconds` (histogram),
//! `..._sampling_traces_on_memory`, `..._sampling_trace_dropped_too_early_total` (always 0 here),
//! `..._sampling_policy_evaluation_error_total` (OTTL condition failures); every series also has `processor="<id>"`.
//! sluice adds `..._traces_decided_early_total`, `..._buffered_spans` and `..._buffered_bytes`,
//! and the generic `otelcol_processor_{incoming,outgoing}_items` and
//! `otelcol_processor_dropped_spans{reason="not_sampled"|"export_failed"|"shutdown"}`.

pub mod config;
pub mod policy;
pub mod segment;
pub mod store;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;
use tokio::task::JoinHandle;

pub use config::TailSamplingConfig;
use policy::{Final, Policy, SpanColumns, TraceBatch, TraceId};
use store::{Bucket, DecisionMemory, Shard, TRACE_INDEX_ENTRY_BYTES};

use super::hand_over::offer_until_taken;
use crate::clock::Clock;
use crate::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    ConsumerRef, Factory, Kind, Lifecycle, NoEffect, Node, ParsedConfig, parse_config,
};
use crate::payload::{Payload, PayloadError};
use crate::schema::{Signal, Table, col};
use crate::telemetry::{Counter, Gauge, Histogram, ProcessorMetrics, Telemetry};

pub struct TailSamplingFactory;

impl Factory for TailSamplingFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "tail_sampling"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces]
    }
    fn description(&self) -> &'static str {
        "keeps or drops whole traces by policy after waiting for their spans"
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        const WHY: &str = "values are matched once per attribute in a columnar pass: there is \
                           no regex-result cache to size";
        const SETTINGS: &[NoEffect] = &[
            NoEffect::new("policies.*.string_attribute.cache_max_size", WHY),
            NoEffect::new(
                "policies.*.and.and_sub_policy.*.string_attribute.cache_max_size",
                WHY,
            ),
            NoEffect::new(
                "policies.*.composite.composite_sub_policy.*.string_attribute.cache_max_size",
                WHY,
            ),
        ];
        SETTINGS
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: TailSamplingConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        _signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<TailSamplingConfig>()?;
        Ok(Arc::new(TailSampling::new(
            &config,
            &ctx.id,
            next,
            ctx.clock.clone(),
            &ctx.telemetry,
            Options::default(),
        )))
    }
}

/// Knobs that are not part of the Collector's config (tests and benchmarks set them).
#[derive(Clone, Debug)]
pub struct Options {
    pub shards: usize,
}

impl Default for Options {
    /// One shard per two cores. Every payload is split into one part per shard (a copy of its
    /// rows) before sealing copies them again, so shards cost CPU per span; on 2 cores one
    /// shard took 0.88x the gateway's CPU per span of two, with more throughput, not less
    /// (BENCHMARKS.md, issue 17). On more cores the split is kept so that ingest on many
    /// workers does not wait on one lock (not measured here).
    fn default() -> Self {
        Options {
            shards: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        }
    }
}

struct Metrics {
    t: Telemetry,
    id: String,
    generic: ProcessorMetrics,
    not_sampled: Counter,
    export_failed: Counter,
    shutdown_dropped: Counter,
    new_traces: Counter,
    early_sampled: Counter,
    early_not_sampled: Counter,
    late_span_age: Histogram,
    timer_latency: Histogram,
    removal_age: Histogram,
    traces_on_memory: Gauge,
    decided_early: Counter,
    buffered_spans: Gauge,
    buffered_bytes: BufferedBytes,
    evaluation_errors: Counter,
    tick_panics: Counter,
}

/// Bytes held by buffered spans: the processor's gauge and its share of the memory account
/// (which the memory limiter counts), changed together; and the growth expected when kept
/// traces are released ([`store::Bucket::regrow`]), which the account counts as in use too.
struct BufferedBytes {
    gauge: Gauge,
    memory: crate::memory::Holder,
    growth: crate::memory::GrowthHolder,
}

impl BufferedBytes {
    fn add(&self, delta: i64) {
        self.gauge.add(delta);
        self.memory.adjust(delta);
    }
    fn grow(&self, delta: isize) {
        if delta != 0 {
            self.growth.adjust(delta as i64);
        }
    }
}

/// The OpenTelemetry SDK's default histogram bounds (what the Collector's histograms use).
const DEFAULT_BOUNDS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

impl Metrics {
    fn new(t: &Telemetry, id: &ComponentId) -> Self {
        let sid = id.to_string();
        let l = [("processor", sid.as_str())];
        let generic = ProcessorMetrics::new(t, id);
        let sampled = |v: &str| {
            t.counter(
                "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
                "Number of spans that were able to be immediately released due to a decision cache hit.",
                &[("processor", sid.as_str()), ("sampled", v)],
            )
        };
        let m = Metrics {
            not_sampled: generic.dropped(Signal::Traces, "not_sampled"),
            export_failed: generic.dropped(Signal::Traces, "export_failed"),
            shutdown_dropped: generic.dropped(Signal::Traces, "shutdown"),
            new_traces: t.counter(
                "otelcol_processor_tail_sampling_new_trace_id_received",
                "Counts the arrival of new traces",
                &l,
            ),
            early_sampled: sampled("true"),
            early_not_sampled: sampled("false"),
            late_span_age: t.histogram(
                "otelcol_processor_tail_sampling_sampling_late_span_age_seconds",
                "Time (in seconds) from the sampling decision was taken and the arrival of a late span",
                &l,
                &DEFAULT_BOUNDS,
            ),
            timer_latency: t.histogram(
                "otelcol_processor_tail_sampling_sampling_decision_timer_latency_milliseconds",
                "Latency (in milliseconds) of each run of the sampling decision timer",
                &l,
                &DEFAULT_BOUNDS,
            ),
            removal_age: t.histogram(
                "otelcol_processor_tail_sampling_sampling_trace_removal_age_seconds",
                "Time (in seconds) from arrival of a new trace until its removal from memory",
                &l,
                &DEFAULT_BOUNDS,
            ),
            traces_on_memory: t.gauge(
                "otelcol_processor_tail_sampling_sampling_traces_on_memory",
                "Tracks the number of traces current on memory",
                &l,
            ),
            decided_early: t.counter(
                "otelcol_processor_tail_sampling_traces_decided_early",
                "Traces decided before decision_wait because num_traces was reached (sluice)",
                &l,
            ),
            buffered_spans: t.gauge(
                "otelcol_processor_tail_sampling_buffered_spans",
                "Spans held waiting for a decision (sluice)",
                &l,
            ),
            buffered_bytes: BufferedBytes {
                gauge: t.gauge(
                    "otelcol_processor_tail_sampling_buffered_bytes",
                    "Bytes held by buffered spans and the trace index (sluice)",
                    &l,
                ),
                memory: generic.memory_holder("tail_sampling"),
                growth: generic.memory_growth_holder(),
            },
            evaluation_errors: t.counter(
                "otelcol_processor_tail_sampling_sampling_policy_evaluation_error",
                "Count of sampling policy evaluation errors",
                &l,
            ),
            tick_panics: t.counter(
                "otelcol_processor_tail_sampling_decision_tick_panics",
                "Decision ticks that panicked (a bug: the spans of the bucket being decided are lost; the next tick runs) (sluice)",
                &l,
            ),
            t: t.clone(),
            id: sid.clone(),
            generic,
        };
        // Registered so dashboards find it: sluice decides early instead of dropping.
        t.counter(
            "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early",
            "Count of traces that needed to be dropped before the configured wait time",
            &l,
        );
        m
    }

    fn policy_counter(&self, what: &'static str, policy: &str, d: policy::Decision) -> Counter {
        let (name, help) = match what {
            "traces" => (
                "otelcol_processor_tail_sampling_count_traces_sampled",
                "Count of traces that were sampled or not per sampling policy",
            ),
            _ => (
                "otelcol_processor_tail_sampling_count_spans_sampled",
                "Count of spans that were sampled or not per sampling policy",
            ),
        };
        self.t.counter(
            name,
            help,
            &[
                ("processor", self.id.as_str()),
                ("policy", policy),
                ("sampled", d.sampled_label()),
                ("decision", d.label()),
            ],
        )
    }

    fn global(&self, f: Final) -> Counter {
        let sampled = if f == Final::Sampled { "true" } else { "false" };
        self.t.counter(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            "Global count of traces that were sampled or not by at least one policy",
            &[
                ("processor", self.id.as_str()),
                ("sampled", sampled),
                ("decision", f.label()),
            ],
        )
    }
}

struct Inner {
    next: ConsumerRef,
    clock: Arc<dyn Clock>,
    shards: Vec<Mutex<Shard>>,
    policies: Mutex<Vec<Policy>>,
    /// Policy names as metric labels (`<processor name>.<policy>` for a named processor).
    policy_labels: Vec<String>,
    sample_on_first_match: bool,
    drop_on_shutdown: bool,
    /// Whether any policy reads decoded spans (attributes, OTTL): if none does, decisions
    /// read only the span columns they aggregate, and only kept rows are ever decoded.
    reads_spans: bool,
    wait_ns: u64,
    tick_ns: u64,
    /// Undecided traces per shard before the oldest are decided early.
    shard_limit: usize,
    metrics: Metrics,
    stopping: AtomicBool,
    /// The last tick at which idle buckets were sealed (once per tick, also on a virtual clock
    /// where `fire_due` runs on every arrival).
    sealed_tick: std::sync::atomic::AtomicU64,
    /// Held (shared) by every ingest, taken (exclusive) by shutdown before the final flush, so
    /// no ingest that passed the `stopping` check can add spans after the flush.
    gate: tokio::sync::RwLock<()>,
}

pub struct TailSampling {
    inner: Arc<Inner>,
    ticker: Mutex<Option<(JoinHandle<()>, Arc<tokio::sync::Notify>)>>,
}

/// A kept payload on its way downstream.
type Outgoing = Vec<Payload>;

impl TailSampling {
    pub fn new(
        config: &TailSamplingConfig,
        id: &ComponentId,
        next: ConsumerRef,
        clock: Arc<dyn Clock>,
        telemetry: &Telemetry,
        options: Options,
    ) -> Self {
        let shards = options.shards.max(1);
        let shard_limit = (config.num_traces as usize).div_ceil(shards).max(1);
        let wait_ns = config.decision_wait.as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick_ns = wait_ns.clamp(1, MAX_TICK_NS);
        let policies = policy::build_all(&config.policies);
        let reads_spans = policies.iter().any(Policy::reads_spans);
        let policy_labels = policies
            .iter()
            .map(|p| match &id.name {
                Some(n) => format!("{n}.{}", p.name),
                None => p.name.clone(),
            })
            .collect();
        let cache = &config.decision_cache;
        TailSampling {
            inner: Arc::new(Inner {
                next,
                clock,
                shards: (0..shards)
                    .map(|_| {
                        let mut s = Shard::new(DecisionMemory::new(
                            cache.sampled_cache_size.div_ceil(shards),
                            cache.non_sampled_cache_size.div_ceil(shards),
                            shard_limit,
                        ));
                        s.traces.reserve(
                            (config.expected_new_traces_per_sec as usize)
                                .saturating_mul(config.decision_wait.as_secs() as usize)
                                .min(shard_limit)
                                / shards,
                        );
                        Mutex::new(s)
                    })
                    .collect(),
                policies: Mutex::new(policies),
                reads_spans,
                policy_labels,
                sample_on_first_match: config.sample_on_first_match,
                drop_on_shutdown: config.drop_pending_traces_on_shutdown,
                wait_ns,
                tick_ns,
                shard_limit,
                metrics: Metrics::new(telemetry, id),
                stopping: AtomicBool::new(false),
                sealed_tick: std::sync::atomic::AtomicU64::new(0),
                gate: tokio::sync::RwLock::new(()),
            }),
            ticker: Mutex::new(None),
        }
    }

    /// Decides every bucket that is due on the clock now (what the ticker does each tick; a
    /// test on a manually driven virtual clock calls it after moving the clock).
    pub async fn fire_due(&self) {
        self.inner.fire_due().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The trace id of every span row; an absent trace id is the all-zero id (as pdata reads it).
fn trace_ids(payload: &Payload) -> Vec<TraceId> {
    let c = payload
        .table(Table::Spans)
        .column_by_name(col::TRACE_ID)
        .expect("trace_id")
        .as_fixed_size_binary();
    (0..c.len())
        .map(|i| {
            if c.is_valid(i) {
                c.value(i).try_into().unwrap_or([0; 16])
            } else {
                [0; 16]
            }
        })
        .collect()
}

/// Shard of a trace id: trace ids are random, but mix anyway so crafted ids spread.
fn shard_of(id: &TraceId, shards: usize) -> usize {
    let x = u64::from_le_bytes(id[8..16].try_into().expect("8 bytes"))
        ^ u64::from_le_bytes(id[0..8].try_into().expect("8 bytes"));
    ((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) % shards
}

impl Inner {
    fn now(&self) -> u64 {
        self.clock.now_unix_nanos()
    }

    fn tick_of(&self, t: u64) -> u64 {
        t / self.tick_ns
    }

    async fn ingest(&self, payload: Payload) -> Result<(), ConsumeError> {
        let n = payload.item_count();
        if n == 0 {
            return Ok(());
        }
        let _gate = self.gate.read().await;
        if self.stopping.load(Ordering::Acquire) {
            return Err(ConsumeError::Unavailable(
                "tail_sampling processor is shutting down".into(),
            ));
        }
        self.metrics.generic.incoming(Signal::Traces, n);
        let spans = payload.table(Table::Spans);
        if let Some(end) = spans
            .column_by_name(col::END_TIME_UNIX_NANO)
            .map(|c| c.as_primitive::<UInt64Type>())
            .and_then(arrow::compute::max)
        {
            self.clock.observe_data_time(end);
        }
        let now = self.now();
        let new_fire_tick = (now.saturating_add(self.wait_ns)).div_ceil(self.tick_ns);
        let ids = trace_ids(&payload);
        let shards = self.shards.len();
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); shards];
        if shards == 1 {
            rows[0] = (0..n as u32).collect();
        } else {
            for (row, id) in ids.iter().enumerate() {
                rows[shard_of(id, shards)].push(row as u32);
            }
        }
        let mut pass = vec![false; n];
        let mut over_limit = Vec::new();
        for (s, rows) in rows.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let mut shard = lock(&self.shards[s]);
            let got = shard
                .ingest(&payload, &ids, rows, now, new_fire_tick, &mut pass)
                .map_err(internal)?;
            if shard.traces.len() > self.shard_limit {
                over_limit.push(s);
            }
            drop(shard);
            let m = &self.metrics;
            m.new_traces.add(got.new_traces);
            m.traces_on_memory.add(got.new_traces as i64);
            m.buffered_spans.add(got.buffered_spans as i64);
            m.buffered_bytes.add(got.bytes as i64);
            m.buffered_bytes.grow(got.growth);
            m.early_sampled.add(got.late_sampled_spans as u64);
            m.early_not_sampled.add(got.late_not_sampled_spans as u64);
            m.not_sampled.add(got.late_not_sampled_spans as u64);
            got.late_ages
                .iter()
                .for_each(|a| m.late_span_age.observe(*a));
        }
        if pass.contains(&true) {
            let late = payload.filter(Table::Spans, &pass).map_err(internal)?;
            self.send(vec![late]).await;
        }
        for s in over_limit {
            self.decide_early(s).await;
        }
        if self.clock.is_virtual() {
            self.fire_due().await;
        }
        Ok(())
    }

    /// Decides the oldest buckets of shard `s` until it is within `num_traces`.
    async fn decide_early(&self, s: usize) {
        let mut out = Vec::new();
        {
            let mut shard = lock(&self.shards[s]);
            while shard.traces.len() > self.shard_limit {
                let Some((_, bucket)) = shard.take_next(0, true) else {
                    break;
                };
                self.metrics.decided_early.add(bucket.ids.len() as u64);
                out.extend(self.decide(&mut shard, bucket));
            }
        }
        self.send(out).await;
    }

    async fn fire_due(&self) {
        let started = std::time::Instant::now();
        let now = self.now();
        let now_tick = self.tick_of(now);
        let seal = self.sealed_tick.fetch_max(now_tick, Ordering::Relaxed) < now_tick;
        for s in &self.shards {
            let mut out = Vec::new();
            {
                let mut shard = lock(s);
                while let Some((_, bucket)) = shard.take_next(now_tick, false) {
                    out.extend(self.decide(&mut shard, bucket));
                }
                if seal {
                    let (bytes, growth) = shard.seal_idle();
                    self.metrics.buffered_bytes.add(bytes as i64);
                    self.metrics.buffered_bytes.grow(growth);
                }
            }
            self.send(out).await;
        }
        self.metrics
            .timer_latency
            .observe(started.elapsed().as_secs_f64() * 1e3);
    }

    /// Decides every trace of `bucket` (its traces already left the shard's index) and records
    /// the decisions in the shard's memory; returns what is kept, as one payload.
    fn decide(&self, shard: &mut Shard, bucket: Bucket) -> Option<Payload> {
        let m = &self.metrics;
        let traces = bucket.ids.len();
        let spans = bucket.spans;
        m.traces_on_memory.add(-(traces as i64));
        m.buffered_spans.add(-(spans as i64));
        m.buffered_bytes
            .add(-((bucket.bytes + traces * TRACE_INDEX_ENTRY_BYTES) as i64));
        // The expected growth becomes real now: what is kept is taken into Arrow payloads
        // below, which whoever holds them next (batch, a queue) counts.
        m.buffered_bytes.grow(-(bucket.growth as isize));
        let now = self.now();
        m.removal_age
            .observe(now.saturating_sub(bucket.first_seen) as f64 / 1e9);
        let (ids, segments) = match bucket.into_segments() {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, spans, "tail_sampling: cannot read buffered spans; dropping them");
                m.export_failed.add(spans as u64);
                return None;
            }
        };
        let columns: Vec<SpanColumns> = segments.iter().map(|s| s.span_columns()).collect();
        let parts = if self.reads_spans {
            match segments
                .iter()
                .map(|s| s.open())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, spans, "tail_sampling: cannot read buffered spans; dropping them");
                    m.export_failed.add(spans as u64);
                    return None;
                }
            }
        } else {
            Vec::new()
        };
        let batch = TraceBatch::new(&ids, &columns, &parts, now);
        let (finals, counts) = {
            let mut policies = lock(&self.policies);
            let decided = policy::decide(&mut policies, &batch, self.sample_on_first_match);
            m.evaluation_errors
                .add(policies.iter_mut().map(Policy::take_errors).sum());
            decided
        };
        for (i, by_decision) in counts.iter().enumerate() {
            for (d, (t, s)) in by_decision {
                m.policy_counter("traces", &self.policy_labels[i], *d)
                    .add(*t);
                m.policy_counter("spans", &self.policy_labels[i], *d)
                    .add(*s);
            }
        }
        let mut by_final = [0u64; 3];
        for (id, f) in ids.iter().zip(&finals) {
            by_final[*f as usize] += 1;
            shard.memory.record(*id, *f == Final::Sampled, now);
        }
        for f in [Final::Sampled, Final::NotSampled, Final::Dropped] {
            m.global(f).add(by_final[f as usize]);
        }
        // Per segment: the spans of kept traces; segments with none are never read.
        let masks: Vec<Vec<bool>> = columns
            .iter()
            .map(|c| {
                c.ordinals
                    .iter()
                    .map(|&t| finals[t as usize] == Final::Sampled)
                    .collect()
            })
            .collect();
        let mut picks = Vec::with_capacity(segments.len());
        let mut kept = 0usize;
        for (seg, mask) in segments.iter().zip(&masks) {
            let k = mask.iter().filter(|x| **x).count();
            kept += k;
            if k == mask.len() {
                picks.push((seg, None));
            } else if k > 0 {
                picks.push((seg, Some(mask.as_slice())));
            }
        }
        m.not_sampled.add((spans - kept) as u64);
        shard.observe_kept(kept, spans);
        if picks.is_empty() {
            return None;
        }
        match segment::take(&picks) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "tail_sampling: cannot take kept spans; dropping them");
                m.export_failed.add(kept as u64);
                None
            }
        }
    }

    async fn send(&self, out: Outgoing) {
        for p in out.into_iter().flat_map(bounded_parts) {
            let k = p.item_count();
            // Kept spans were acknowledged when they came: wait out a full queue.
            let stopping = || self.stopping.load(Ordering::Acquire);
            match offer_until_taken(self.next.as_ref(), p, stopping, "tail_sampling").await {
                Ok(()) => self.metrics.generic.outgoing(Signal::Traces, k),
                Err(e) => {
                    tracing::warn!(error = %e, spans = k, "tail_sampling: next component refused kept spans; dropped");
                    self.metrics.export_failed.add(k as u64);
                }
            }
        }
    }

    /// Decides (or drops, with `drop_pending_traces_on_shutdown`) everything buffered.
    async fn flush_all(&self) {
        let mut decided = 0usize;
        for s in &self.shards {
            let mut out = Vec::new();
            {
                let mut shard = lock(s);
                while let Some((_, bucket)) = shard.take_next(u64::MAX, true) {
                    decided += bucket.ids.len();
                    if self.drop_on_shutdown {
                        let m = &self.metrics;
                        m.shutdown_dropped.add(bucket.spans as u64);
                        m.traces_on_memory.add(-(bucket.ids.len() as i64));
                        m.buffered_spans.add(-(bucket.spans as i64));
                        m.buffered_bytes.add(
                            -((bucket.bytes + bucket.ids.len() * TRACE_INDEX_ENTRY_BYTES) as i64),
                        );
                        m.buffered_bytes.grow(-(bucket.growth as isize));
                    } else {
                        out.extend(self.decide(&mut shard, bucket));
                    }
                }
            }
            self.send(out).await;
        }
        if decided > 0 {
            tracing::info!(
                traces = decided,
                dropped = self.drop_on_shutdown,
                "tail_sampling: decided every buffered trace at shutdown"
            );
        }
    }
}

/// Traces are bucketed, and buckets decided, on a tick of at most this (shorter if
/// `decision_wait` is): a trace is decided between `decision_wait` and `decision_wait` + one
/// tick after its first span. The Collector decides on a 1 s tick; 100 ms releases kept spans
/// in ten smaller bulks a second instead of one, so the Arrow payloads a release materializes
/// (and the exporter's queue then holds) are a tenth as large, and spans wait 0.45 s less on
/// average. Under a `memory_limiter` that is what the steady state is made of: the
/// gateway-like overload bench delivered ~1.3x the spans per second at a lower peak RSS, at
/// the same CPU per span in the gateway bench (BENCHMARKS.md, "Issue 16's overload as worded,
/// and a 100 ms decision tick").
pub const MAX_TICK_NS: u64 = 100_000_000;

/// Kept spans go downstream in payloads of at most this many spans (the batch processor's
/// default size): a tick or a shutdown that decides a large backlog sends it in several
/// payloads, never one that grows with the backlog (which no receiver would take whole). A
/// trace whose spans straddle a boundary goes out in two consecutive payloads.
pub const RELEASE_MAX_SPANS: usize = 8192;

/// `p` in payloads of at most [`RELEASE_MAX_SPANS`] spans (whole if it cannot be split: the
/// exporters split by size anyway).
fn bounded_parts(p: Payload) -> Vec<Payload> {
    match p.split_items(RELEASE_MAX_SPANS) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %e, "tail_sampling: cannot split kept spans; sending them whole");
            vec![p]
        }
    }
}

fn internal(e: PayloadError) -> ConsumeError {
    ConsumeError::Permanent(format!("tail_sampling: {e}"))
}

impl Consumer for TailSampling {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(self.inner.ingest(payload))
    }
}

impl Lifecycle for TailSampling {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            if self.inner.clock.is_virtual() {
                return Ok(()); // buckets fire as data moves the clock
            }
            let inner = self.inner.clone();
            let stop = Arc::new(tokio::sync::Notify::new());
            let stopped = stop.clone();
            let period = Duration::from_nanos(inner.tick_ns);
            let handle = tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = interval.tick() => {
                            // Each tick in a task of its own: a panic (a bug) costs that tick's
                            // bucket, is logged and counted, and the next tick still runs,
                            // instead of ending decisions until shutdown.
                            let tick = inner.clone();
                            if let Err(e) = tokio::spawn(async move { tick.fire_due().await }).await
                                && e.is_panic()
                            {
                                inner.metrics.tick_panics.add(1);
                                tracing::error!(error = %e, "tail_sampling: a decision tick panicked; deciding on at the next tick");
                            }
                        }
                        _ = stopped.notified() => return,
                    }
                }
            });
            *lock(&self.ticker) = Some((handle, stop));
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.stopping.store(true, Ordering::Release);
            let ticker = lock(&self.ticker).take();
            if let Some((handle, stop)) = ticker {
                stop.notify_one();
                let _ = handle.await;
            }
            let _gate = self.inner.gate.write().await;
            self.inner.flush_all().await;
        })
    }

    /// The first bucket to fire: its tick's start, when [`Inner::fire_due`] takes it.
    fn next_virtual_deadline(&self) -> Option<u64> {
        if !self.inner.clock.is_virtual() {
            return None;
        }
        self.inner
            .shards
            .iter()
            .filter_map(|s| lock(s).wheel.first_key_value().map(|(tick, _)| *tick))
            .min()
            .map(|tick| tick.saturating_mul(self.inner.tick_ns))
    }

    fn on_virtual_time(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.inner.clock.is_virtual() {
                self.inner.fire_due().await;
            }
        })
    }
}
