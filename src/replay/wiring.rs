//! How a config's components are built for a replay: the same factories as a live `sluice`
//! (so a config is parsed and checked exactly as live), wrapped where the replay differs.
//!
//! - Receivers bind nothing: the capture is their traffic. Each hands the replay the pipelines
//!   it would feed ([`Wiring::receivers`]).
//! - Extensions (`health_check`) bind nothing.
//! - `prometheus` keeps its series exactly as live but binds no port; the report scrapes it in
//!   process at the end.
//! - Every other exporter runs for real, or, with `--dry-run`, is a counting sink (its
//!   `otelcol_exporter_sent_*` counted as the exporter's own, nothing sent).
//! - Every exporter is tapped: the bytes it was handed (OTLP protobuf, uncompressed) and the
//!   trace ids of the error and slow traces it exported ([`TraceWatch`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, UInt64Type};
use sluice_egress::prometheus::{PrometheusConfig, PrometheusExporter};
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    Factory, Kind, Lifecycle, Node, ParsedConfig, SignalConsumers,
};
use sluice_engine::config::Registry;
use sluice_engine::schema::{Signal, Table, col};
use sluice_engine::telemetry::{Counter, ExporterMetrics, Telemetry};

/// What the replay learns while the service is built, and what the taps see.
#[derive(Default)]
pub struct Wiring {
    pub receivers: Mutex<Vec<(ComponentId, SignalConsumers)>>,
    pub prometheus: Mutex<Vec<(ComponentId, Arc<PrometheusExporter>)>>,
    pub watch: Arc<TraceWatch>,
}

/// The registry of a replay: `live`'s factories, wrapped (module docs).
pub fn registry(live: &Registry, wiring: &Arc<Wiring>, dry_run: bool) -> Registry {
    let wrapped = live.list().map(|f| -> Arc<dyn Factory> {
        let inner = f.clone();
        match (f.kind(), f.type_name()) {
            (Kind::Receiver, _) => Arc::new(CaptureReceiver {
                inner,
                wiring: wiring.clone(),
            }),
            (Kind::Extension, _) => Arc::new(IdleExtension { inner }),
            (Kind::Exporter, "prometheus") => Arc::new(InProcessPrometheus {
                inner,
                wiring: wiring.clone(),
            }),
            (Kind::Exporter, _) => Arc::new(TappedExporter {
                inner,
                wiring: wiring.clone(),
                dry_run,
            }),
            _ => inner,
        }
    });
    Registry::new(wrapped.collect::<Vec<_>>())
}

/// Delegates the description and config checks to the live factory.
macro_rules! delegate_description {
    () => {
        fn kind(&self) -> Kind {
            self.inner.kind()
        }
        fn type_name(&self) -> &'static str {
            self.inner.type_name()
        }
        fn signals(&self) -> &'static [Signal] {
            self.inner.signals()
        }
        fn description(&self) -> &'static str {
            self.inner.description()
        }
        fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
            self.inner.parse_config(config)
        }
        fn parse_config_all(
            &self,
            config: &serde_json::Value,
        ) -> Result<ParsedConfig, Vec<ConfigError>> {
            self.inner.parse_config_all(config)
        }
        fn without_effect(&self) -> &'static [sluice_engine::component::NoEffect] {
            self.inner.without_effect()
        }
        fn extension_refs(
            &self,
            config: &ParsedConfig,
        ) -> Vec<sluice_engine::component::ExtensionRef> {
            self.inner.extension_refs(config)
        }
    };
}

/// Does nothing: a receiver or extension whose place the capture takes.
struct Idle;
impl Lifecycle for Idle {}

struct CaptureReceiver {
    inner: Arc<dyn Factory>,
    wiring: Arc<Wiring>,
}

impl Factory for CaptureReceiver {
    delegate_description!();
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn sluice_engine::component::Service>, ComponentError> {
        lock(&self.wiring.receivers).push((ctx.id, consumers));
        Ok(Arc::new(Idle))
    }
}

struct IdleExtension {
    inner: Arc<dyn Factory>,
}

impl Factory for IdleExtension {
    delegate_description!();
    fn build_extension(
        &self,
        _ctx: BuildContext,
        _health: sluice_engine::health::Health,
    ) -> Result<Arc<dyn sluice_engine::component::Service>, ComponentError> {
        Ok(Arc::new(Idle))
    }
}

struct InProcessPrometheus {
    inner: Arc<dyn Factory>,
    wiring: Arc<Wiring>,
}

impl Factory for InProcessPrometheus {
    delegate_description!();
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<PrometheusConfig>()?;
        let e = Arc::new(
            PrometheusExporter::new(ctx.id.clone(), (*c).clone(), &ctx.telemetry, ctx.clock)
                .without_endpoint(),
        );
        lock(&self.wiring.prometheus).push((ctx.id.clone(), e.clone()));
        Ok(Arc::new(Tap::new(e, &ctx.telemetry, &ctx.id, &self.wiring)))
    }
}

struct TappedExporter {
    inner: Arc<dyn Factory>,
    wiring: Arc<Wiring>,
    dry_run: bool,
}

impl Factory for TappedExporter {
    delegate_description!();
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let (telemetry, id) = (ctx.telemetry.clone(), ctx.id.clone());
        let node: Arc<dyn Node> = if self.dry_run {
            Arc::new(CountingSink(ExporterMetrics::new(&telemetry, &id)))
        } else {
            self.inner.build_exporter(ctx)?
        };
        Ok(Arc::new(Tap::new(node, &telemetry, &id, &self.wiring)))
    }
}

/// `--dry-run`'s exporter: takes everything, counts it as sent, sends nothing.
struct CountingSink(ExporterMetrics);

impl Consumer for CountingSink {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.sent(p.signal(), p.item_count());
        Box::pin(async { Ok(()) })
    }
}
impl Lifecycle for CountingSink {}

/// In front of an exporter: counts the OTLP protobuf bytes it is handed and tells the
/// [`TraceWatch`] which traces it exported, then hands the payload on unchanged.
struct Tap {
    next: Arc<dyn Node>,
    bytes: Counter,
    watch: Arc<TraceWatch>,
}

impl Tap {
    fn new(next: Arc<dyn Node>, t: &Telemetry, id: &ComponentId, wiring: &Wiring) -> Self {
        Tap {
            next,
            bytes: t.counter(
                "sluice_replay_exporter_bytes",
                "Bytes handed to the exporter during a replay (OTLP protobuf, uncompressed)",
                &[("exporter", id.to_string().as_str())],
            ),
            watch: wiring.watch.clone(),
        }
    }
}

impl Consumer for Tap {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            ENCODE_BUF.with_borrow_mut(|buf| {
                buf.clear();
                sluice_engine::otlp::encode(&p, buf);
                self.bytes.add(buf.len() as u64);
            });
            if p.signal() == Signal::Traces {
                self.watch.exported(&p);
            }
            self.next.consume(p).await
        })
    }
}

impl Lifecycle for Tap {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        self.next.start()
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.next.shutdown()
    }
    fn shutdown_timeout(&self) -> std::time::Duration {
        self.next.shutdown_timeout()
    }
    fn next_virtual_deadline(&self) -> Option<u64> {
        self.next.next_virtual_deadline()
    }
    fn on_virtual_time(&self) -> BoxFuture<'_, ()> {
        self.next.on_virtual_time()
    }
}

thread_local! {
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

type TraceId = [u8; 16];

/// Error and slow traces of the capture, and whether an exporter exported them: the report's
/// "error traces kept / seen". A trace is an error trace when one of its spans has status
/// ERROR, slow when one of its spans lasts at least the threshold (a trace's root span lasts
/// as long as the trace, so a trace over the threshold has such a span). Only these traces'
/// ids are held, not every trace's.
pub struct TraceWatch {
    pub slow_threshold_ns: u64,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    errors: HashSet<TraceId>,
    slow: HashSet<TraceId>,
    errors_kept: HashSet<TraceId>,
    slow_kept: HashSet<TraceId>,
}

/// What [`TraceWatch`] saw.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct WatchCounts {
    pub error_traces_seen: u64,
    pub error_traces_kept: u64,
    pub slow_traces_seen: u64,
    pub slow_traces_kept: u64,
}

impl Default for TraceWatch {
    fn default() -> Self {
        TraceWatch::new(2_000_000_000)
    }
}

/// `STATUS_CODE_ERROR` in OTLP.
const STATUS_ERROR: i32 = 2;

impl TraceWatch {
    pub fn new(slow_threshold_ns: u64) -> Self {
        TraceWatch {
            slow_threshold_ns,
            state: Mutex::new(WatchState::default()),
        }
    }

    /// Calls `f(trace id, status is ERROR, duration)` for every span of `p`.
    fn each_span(p: &Payload, mut f: impl FnMut(TraceId, bool, u64)) {
        let spans = p.table(Table::Spans);
        let (Some(ids), Some(status), Some(start), Some(end)) = (
            spans
                .column_by_name(col::TRACE_ID)
                .and_then(|c| c.as_fixed_size_binary_opt()),
            spans
                .column_by_name(col::STATUS_CODE)
                .and_then(|c| c.as_primitive_opt::<Int32Type>()),
            spans
                .column_by_name(col::START_TIME_UNIX_NANO)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>()),
            spans
                .column_by_name(col::END_TIME_UNIX_NANO)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>()),
        ) else {
            return;
        };
        for row in 0..ids.len() {
            // An absent trace id is the all-zero id, as tail sampling reads it.
            let id: TraceId = if ids.is_valid(row) {
                ids.value(row).try_into().unwrap_or([0; 16])
            } else {
                [0; 16]
            };
            f(
                id,
                status.value(row) == STATUS_ERROR,
                end.value(row).saturating_sub(start.value(row)),
            );
        }
    }

    /// Notes the error and slow traces of an input payload.
    pub fn seen(&self, p: &Payload) {
        if p.signal() != Signal::Traces {
            return;
        }
        let threshold = self.slow_threshold_ns;
        let mut st = lock(&self.state);
        Self::each_span(p, |id, error, duration| {
            if error {
                st.errors.insert(id);
            }
            if duration >= threshold {
                st.slow.insert(id);
            }
        });
    }

    /// Notes which watched traces an exporter exported.
    pub fn exported(&self, p: &Payload) {
        let mut st = lock(&self.state);
        if st.errors.is_empty() && st.slow.is_empty() {
            return;
        }
        let mut ids: Vec<TraceId> = Vec::new();
        Self::each_span(p, |id, _, _| ids.push(id));
        ids.dedup();
        for id in ids {
            if st.errors.contains(&id) {
                st.errors_kept.insert(id);
            }
            if st.slow.contains(&id) {
                st.slow_kept.insert(id);
            }
        }
    }

    pub fn counts(&self) -> WatchCounts {
        let st = lock(&self.state);
        WatchCounts {
            error_traces_seen: st.errors.len() as u64,
            error_traces_kept: st.errors_kept.len() as u64,
            slow_traces_seen: st.slow.len() as u64,
            slow_traces_kept: st.slow_kept.len() as u64,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
