//! Self-telemetry: a small registry of counters and gauges rendered as Prometheus text on
//! `service.telemetry.metrics.address` (default `localhost:8888`).
//!
//! Names and labels are the OpenTelemetry Collector's, as its Prometheus endpoint shows them
//! (counters end in `_total`), so existing dashboards and PromQL written for the Collector work
//! unchanged:
//! `otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}`,
//! `otelcol_exporter_queue_size{exporter="otlp/jaeger"}`, ...
//!
//! Hot paths touch one relaxed atomic per batch, never a lock: handles are created once, when a
//! component is built.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::component::{ComponentId, Kind};
use crate::memory::MemoryAccount;
use crate::schema::Signal;

type Labels = Vec<(&'static str, String)>;

/// A component's per-signal series belongs to (kind, component id, signal).
type Wire = (Kind, String, Signal);

/// The registry, and the process's memory account (which every component reaches through
/// the telemetry handle it is built with; see [`crate::memory`]).
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    memory: MemoryAccount,
}

#[derive(Default)]
struct Registry {
    families: BTreeMap<&'static str, Family>,
    /// The (kind, id, signal) triples the pipelines wire, once the service is built: a
    /// component's series for a signal it is not wired for can never count, so it is not shown
    /// (`otelcol_exporter_sent_spans{exporter="prometheus"}`). `None`: show everything.
    wired: Option<BTreeSet<Wire>>,
}

struct Family {
    help: &'static str,
    kind: FamilyKind,
    series: BTreeMap<Labels, Series>,
    /// The series that count one signal of one component.
    wires: BTreeMap<Labels, Wire>,
}

impl Registry {
    fn shown(&self, fam: &Family, labels: &Labels) -> bool {
        match (&self.wired, fam.wires.get(labels)) {
            // Hidden only for a component of the pipelines, on a signal it is not wired for;
            // components the service did not build (a load balancer's backends, named
            // `loadbalancing/<endpoint>`) are shown.
            (Some(wired), Some(w)) => {
                wired.contains(w) || !wired.iter().any(|(k, id, _)| *k == w.0 && *id == w.1)
            }
            _ => true,
        }
    }
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum FamilyKind {
    Counter,
    Gauge,
    Histogram,
}

enum Series {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    GaugeFn(Arc<dyn Fn() -> f64 + Send + Sync>),
    Histogram(Arc<HistogramData>),
}

/// Buckets (cumulative on render), sum and count of a histogram.
#[derive(Debug)]
pub struct HistogramData {
    bounds: Vec<f64>,
    /// One count per bound, plus the `+Inf` bucket; not cumulative.
    counts: Vec<AtomicU64>,
    /// The sum, as f64 bits (updated with a CAS loop; histograms are recorded per batch, not
    /// per item, so contention is negligible).
    sum_bits: AtomicU64,
    count: AtomicU64,
}

/// One series of [`Telemetry::snapshot`]: a counter's or gauge's value, a histogram's count
/// (and its buckets).
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    pub histogram: Option<HistogramSnapshot>,
}

impl Sample {
    /// The value of label `key`, if the series has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A histogram's buckets as they are now: one count per bound plus `+Inf`, not cumulative.
#[derive(Clone, Debug)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// A distribution of observed values (Prometheus histogram with fixed bucket bounds).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramData>);

impl Histogram {
    pub fn observe(&self, v: f64) {
        let h = &self.0;
        let i = h.bounds.partition_point(|b| *b < v);
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let _ = h
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum_bits.load(Ordering::Relaxed))
    }
}

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    let mut l: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    l.sort();
    l
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide memory account (bytes held by components, the limiter's view).
    pub fn memory(&self) -> &MemoryAccount {
        &self.memory
    }

    /// Runs `f` on the family `name`, creating it with `help` and `kind` on first use.
    fn with_family<R>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: FamilyKind,
        f: impl FnOnce(&mut Family) -> R,
    ) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let fam = registry.families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
            wires: BTreeMap::new(),
        });
        debug_assert_eq!(fam.kind, kind, "{name} registered as two kinds");
        f(fam)
    }

    /// A counter; `name` without `_total` (added on render). The same name and labels return
    /// the same underlying counter.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Counter {
        self.with_family(name, help, FamilyKind::Counter, |fam| {
            match fam
                .series
                .entry(owned(labels))
                .or_insert_with(|| Series::Counter(Arc::default()))
            {
                Series::Counter(c) => Counter(c.clone()),
                _ => Counter::default(),
            }
        })
    }

    /// A counter of one signal's items of one component: shown only if the pipelines wire
    /// the component for that signal (see [`Telemetry::set_wiring`]).
    fn signal_counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        wire: Wire,
    ) -> Counter {
        let c = self.counter(name, help, labels);
        self.with_family(name, help, FamilyKind::Counter, |fam| {
            fam.wires.insert(owned(labels), wire)
        });
        c
    }

    /// Records which signals each component is wired for (the service does, once built).
    /// From then on a component's per-signal series for any other signal is not shown: it
    /// could never count anything.
    pub fn set_wiring(&self, wired: impl IntoIterator<Item = (Kind, ComponentId, Signal)>) {
        let wired = wired
            .into_iter()
            .map(|(k, id, s)| (k, id.to_string(), s))
            .collect();
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wired = Some(wired);
    }

    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Gauge {
        self.with_family(name, help, FamilyKind::Gauge, |fam| {
            match fam
                .series
                .entry(owned(labels))
                .or_insert_with(|| Series::Gauge(Arc::default()))
            {
                Series::Gauge(g) => Gauge(g.clone()),
                _ => Gauge::default(),
            }
        })
    }

    /// A histogram with the given (sorted) bucket upper bounds; `name` without suffixes
    /// (`_bucket`, `_sum`, `_count` are added on render). The same name and labels return the
    /// same underlying histogram.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        self.with_family(name, help, FamilyKind::Histogram, |fam| {
            match fam.series.entry(owned(labels)).or_insert_with(|| {
                Series::Histogram(Arc::new(HistogramData {
                    bounds: bounds.to_vec(),
                    counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                    sum_bits: AtomicU64::new(0f64.to_bits()),
                    count: AtomicU64::new(0),
                }))
            }) {
                Series::Histogram(h) => Histogram(h.clone()),
                _ => Histogram(Arc::new(HistogramData {
                    bounds: vec![],
                    counts: vec![AtomicU64::new(0)],
                    sum_bits: AtomicU64::new(0),
                    count: AtomicU64::new(0),
                })),
            }
        })
    }

    /// A gauge computed at scrape time (memory RSS).
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.with_family(name, help, FamilyKind::Gauge, |fam| {
            fam.series
                .insert(owned(labels), Series::GaugeFn(Arc::new(f)));
        })
    }

    /// A counter whose value is computed at scrape time (uptime in seconds).
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.with_family(name, help, FamilyKind::Counter, |fam| {
            fam.series
                .insert(owned(labels), Series::GaugeFn(Arc::new(f)));
        })
    }

    /// The current value of a series, for tests: `None` if it was never registered.
    /// `None` also for a series not shown (see [`Telemetry::set_wiring`]).
    pub fn value(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let fam = registry.families.get(name)?;
        let labels = owned(labels);
        let series = fam.series.get(&labels)?;
        registry.shown(fam, &labels).then(|| series_value(series))
    }

    /// The sum of every series of `name` whose labels include `labels` (as PromQL's
    /// `sum(name{labels})`): `None` if there is none.
    pub fn sum(&self, name: &str, labels: &[(&'static str, &str)]) -> Option<f64> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let fam = registry.families.get(name)?;
        let mut matching = fam.series.iter().filter(|(have, _)| {
            registry.shown(fam, have)
                && labels
                    .iter()
                    .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        });
        let first = series_value(matching.next()?.1);
        Some(matching.fold(first, |acc, (_, s)| acc + series_value(s)))
    }

    /// Removes every series whose labels include `labels` (and families left empty): for a
    /// component instance that is gone for good (a load balancer's backend that left), whose
    /// series would otherwise stay at their last values. Handles still held keep counting,
    /// unseen; registering the same series again starts it from zero.
    pub fn remove(&self, labels: &[(&'static str, &str)]) {
        let gone = |have: &Labels| {
            labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        };
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        registry.families.retain(|_, fam| {
            fam.series.retain(|have, _| !gone(have));
            fam.wires.retain(|have, _| !gone(have));
            !fam.series.is_empty()
        });
    }

    /// Every series as it is now, by family name (as registered: counters without `_total`),
    /// for reports that read the same registry the live process serves (`sluice replay`).
    /// Only the series [`Telemetry::render`] shows (see [`Telemetry::set_wiring`]).
    pub fn snapshot(&self) -> Vec<Sample> {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, fam) in registry.families.iter() {
            for (labels, series) in &fam.series {
                if !registry.shown(fam, labels) {
                    continue;
                }
                let histogram = match series {
                    Series::Histogram(h) => Some(HistogramSnapshot {
                        bounds: h.bounds.clone(),
                        counts: h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
                        sum: f64::from_bits(h.sum_bits.load(Ordering::Relaxed)),
                    }),
                    _ => None,
                };
                out.push(Sample {
                    name,
                    labels: labels.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    value: series_value(series),
                    histogram,
                });
            }
        }
        out
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        for (name, fam) in registry.families.iter() {
            let shown: Vec<_> = fam
                .series
                .iter()
                .filter(|(labels, _)| registry.shown(fam, labels))
                .collect();
            if shown.is_empty() {
                continue;
            }
            let (full, ty) = match fam.kind {
                FamilyKind::Counter => (format!("{name}_total"), "counter"),
                FamilyKind::Gauge => (name.to_string(), "gauge"),
                FamilyKind::Histogram => (name.to_string(), "histogram"),
            };
            let _ = writeln!(out, "# HELP {full} {}", fam.help);
            let _ = writeln!(out, "# TYPE {full} {ty}");
            for (labels, series) in shown {
                if let Series::Histogram(h) = series {
                    render_histogram(&mut out, &full, labels, h);
                    continue;
                }
                out.push_str(&full);
                render_labels(&mut out, labels, None);
                let v = series_value(series);
                let _ = writeln!(out, " {}", format_value(v));
            }
        }
        out
    }
}

impl Telemetry {
    /// The registry as one OTLP metrics request (what `service.telemetry.metrics.readers`'
    /// `periodic` OTLP exporter pushes): the same series as [`Telemetry::render`] shows, under
    /// the family names without Prometheus' `_total` (the instrument names, as the Collector
    /// pushes them); counters as cumulative monotonic sums from `start_unix_nano`, gauges,
    /// histograms with their bounds; the labels as data point attributes, `resource` on the
    /// one resource.
    pub fn to_otlp(
        &self,
        resource: Vec<(String, String)>,
        start_unix_nano: u64,
        now_unix_nano: u64,
    ) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, InstrumentationScope, KeyValue, any_value,
        };
        use opentelemetry_proto::tonic::metrics::v1::{
            AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
            ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let kv = |k: &str, v: &str| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            }),
            ..Default::default()
        };
        let attributes = |labels: &Labels| labels.iter().map(|(k, v)| kv(k, v)).collect();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::with_capacity(registry.families.len());
        for (name, fam) in registry.families.iter() {
            let shown: Vec<_> = fam
                .series
                .iter()
                .filter(|(labels, _)| registry.shown(fam, labels))
                .collect();
            if shown.is_empty() {
                continue;
            }
            let number = |labels: &Labels, series: &Series| {
                let value = match series {
                    Series::Counter(c) => {
                        number_data_point::Value::AsInt(c.load(Ordering::Relaxed) as i64)
                    }
                    Series::Gauge(g) => number_data_point::Value::AsInt(g.load(Ordering::Relaxed)),
                    other => number_data_point::Value::AsDouble(series_value(other)),
                };
                NumberDataPoint {
                    attributes: attributes(labels),
                    start_time_unix_nano: if fam.kind == FamilyKind::Counter {
                        start_unix_nano
                    } else {
                        0
                    },
                    time_unix_nano: now_unix_nano,
                    value: Some(value),
                    ..Default::default()
                }
            };
            let data = match fam.kind {
                FamilyKind::Counter => metric::Data::Sum(Sum {
                    data_points: shown.iter().map(|(l, s)| number(l, s)).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                FamilyKind::Gauge => metric::Data::Gauge(Gauge {
                    data_points: shown.iter().map(|(l, s)| number(l, s)).collect(),
                }),
                FamilyKind::Histogram => metric::Data::Histogram(Histogram {
                    data_points: shown
                        .iter()
                        .filter_map(|(labels, series)| match series {
                            Series::Histogram(h) => Some(HistogramDataPoint {
                                attributes: attributes(labels),
                                start_time_unix_nano: start_unix_nano,
                                time_unix_nano: now_unix_nano,
                                count: h.count.load(Ordering::Relaxed),
                                sum: Some(f64::from_bits(h.sum_bits.load(Ordering::Relaxed))),
                                bucket_counts: h
                                    .counts
                                    .iter()
                                    .map(|c| c.load(Ordering::Relaxed))
                                    .collect(),
                                explicit_bounds: h.bounds.clone(),
                                ..Default::default()
                            }),
                            _ => None,
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            metrics.push(Metric {
                name: name.to_string(),
                description: fam.help.to_string(),
                data: Some(data),
                ..Default::default()
            });
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource.iter().map(|(k, v)| kv(k, v)).collect(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "sluice".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

fn series_value(s: &Series) -> f64 {
    match s {
        Series::Counter(c) => c.load(Ordering::Relaxed) as f64,
        Series::Gauge(g) => g.load(Ordering::Relaxed) as f64,
        Series::GaugeFn(f) => f(),
        Series::Histogram(h) => h.count.load(Ordering::Relaxed) as f64,
    }
}

fn render_labels(out: &mut String, labels: &Labels, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, h: &HistogramData) {
    let mut cumulative = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c.load(Ordering::Relaxed);
        let le = match h.bounds.get(i) {
            Some(b) => format_value(*b),
            None => "+Inf".to_string(),
        };
        let _ = write!(out, "{name}_bucket");
        render_labels(out, labels, Some(("le", &le)));
        let _ = writeln!(out, " {cumulative}");
    }
    let _ = write!(out, "{name}_sum");
    render_labels(out, labels, None);
    let _ = writeln!(
        out,
        " {}",
        format_value(f64::from_bits(h.sum_bits.load(Ordering::Relaxed)))
    );
    let _ = write!(out, "{name}_count");
    render_labels(out, labels, None);
    let _ = writeln!(out, " {}", h.count.load(Ordering::Relaxed));
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-signal counters of one receiver on one transport: the Collector's
/// `otelcol_receiver_{accepted,refused}_{spans,metric_points,log_records}`.
#[derive(Clone)]
pub struct ReceiverMetrics {
    accepted: [Counter; 3],
    refused: [Counter; 3],
}

impl ReceiverMetrics {
    pub fn new(t: &Telemetry, receiver: &ComponentId, transport: &str) -> Self {
        let id = receiver.to_string();
        let labels = [("receiver", id.as_str()), ("transport", transport)];
        let mk = |what: &str, s: Signal| {
            let name = leak_name(format!("otelcol_receiver_{what}_{}", s.item_noun()));
            t.signal_counter(
                name,
                help_for(name),
                &labels,
                (Kind::Receiver, id.clone(), s),
            )
        };
        ReceiverMetrics {
            accepted: Signal::ALL.map(|s| mk("accepted", s)),
            refused: Signal::ALL.map(|s| mk("refused", s)),
        }
    }
    pub fn accepted(&self, s: Signal, n: usize) {
        self.accepted[s as usize].add(n as u64);
    }
    pub fn refused(&self, s: Signal, n: usize) {
        self.refused[s as usize].add(n as u64);
    }
}

/// Counters of one exporter: `otelcol_exporter_sent_*`, `otelcol_exporter_send_failed_*`,
/// `otelcol_exporter_enqueue_failed_*`; and, for an exporter with a sending queue,
/// `otelcol_exporter_queue_size` and `otelcol_exporter_queue_capacity` ([`Self::queue_gauges`]).
///
/// Failures are counted by why, in an `error_type` label (as the Collector's send_failed
/// metrics carry `error.type`): the series without it is there from the start, at 0, so
/// dashboards see the family before the first failure.
#[derive(Clone)]
pub struct ExporterMetrics {
    t: Telemetry,
    id: String,
    sent: [Counter; 3],
    enqueue_failed: [Counter; 3],
}

/// The sending queue's gauges of one exporter.
#[derive(Clone)]
pub struct QueueGauges {
    /// `otelcol_exporter_queue_size`: batches waiting.
    pub size: Gauge,
    /// `otelcol_exporter_queue_capacity`: `sending_queue.queue_size`.
    pub capacity: Gauge,
}

impl ExporterMetrics {
    pub fn new(t: &Telemetry, exporter: &ComponentId) -> Self {
        let id = exporter.to_string();
        let labels = [("exporter", id.as_str())];
        let mk = |what: &str, s: Signal| {
            t.signal_counter(
                send_metric_name(what, s),
                help_for(send_metric_name(what, s)),
                &labels,
                (Kind::Exporter, id.clone(), s),
            )
        };
        for s in Signal::ALL {
            mk("send_failed", s);
        }
        ExporterMetrics {
            sent: Signal::ALL.map(|s| mk("sent", s)),
            enqueue_failed: Signal::ALL.map(|s| mk("enqueue_failed", s)),
            t: t.clone(),
            id,
        }
    }
    /// Registers the queue's gauges: only an exporter that has a sending queue does (as in the
    /// Collector), so none shows a queue capacity of 0 that means nothing.
    pub fn queue_gauges(&self) -> QueueGauges {
        let labels = [("exporter", self.id.as_str())];
        QueueGauges {
            size: self.t.gauge(
                "otelcol_exporter_queue_size",
                "Current size of the retry queue (in the sizer's unit: batches by default)",
                &labels,
            ),
            capacity: self.t.gauge(
                "otelcol_exporter_queue_capacity",
                "Fixed capacity of the retry queue (in the sizer's unit: batches by default)",
                &labels,
            ),
        }
    }
    pub fn sent(&self, s: Signal, n: usize) {
        self.sent[s as usize].add(n as u64);
    }
    /// Items given up on (data lost, counted), by `error_type`: `retries_exhausted`,
    /// `permanent`, `partial_success`, `too_large`, `shutdown`, ... Failures are rare: the
    /// series is looked up per call.
    pub fn send_failed(&self, s: Signal, n: usize, error_type: &str) {
        let name = send_metric_name("send_failed", s);
        self.t
            .counter(
                name,
                help_for(name),
                &[("exporter", self.id.as_str()), ("error_type", error_type)],
            )
            .add(n as u64);
    }
    /// Items put back into the sending queue at start from a persistent queue (what the last
    /// run accepted and had not delivered). sluice's own metric.
    pub fn replayed(&self, s: Signal, n: usize) {
        let name = leak_name(format!("sluice_exporter_queue_replayed_{}", s.item_noun()));
        self.t
            .counter(
                name,
                "Items replayed into the sending queue from persistent storage at start",
                &[("exporter", self.id.as_str())],
            )
            .add(n as u64);
    }
    /// Items refused because the sending queue was full (the receiver told the client to retry).
    pub fn enqueue_failed(&self, s: Signal, n: usize) {
        self.enqueue_failed[s as usize].add(n as u64);
    }
    /// A request split in parts before sending: `reason` is `over_limit` (its encoding was
    /// larger than the exporter's limit) or `too_large_answer` (the server refused it as too
    /// large). sluice's own metric: the Collector's exporters do not split.
    pub fn request_split(&self, reason: &str) {
        self.t
            .counter(
                "sluice_exporter_requests_split",
                "Export requests split in parts because they were over the size limit",
                &[("exporter", self.id.as_str()), ("reason", reason)],
            )
            .add(1);
    }
    /// The request size limit in force (bytes): the configured one, or less once a server
    /// refused a smaller request as too large.
    pub fn max_request_size(&self) -> Gauge {
        self.t.gauge(
            "sluice_exporter_max_request_size_bytes",
            "Largest export request body (uncompressed) the exporter sends",
            &[("exporter", self.id.as_str())],
        )
    }
}

/// `otelcol_exporter_<what>_<item noun>`: names are leaked once each (a handful per process).
fn send_metric_name(what: &str, s: Signal) -> &'static str {
    leak_name(format!("otelcol_exporter_{what}_{}", s.item_noun()))
}

/// Processor counters: `otelcol_processor_{incoming,outgoing}_items` (the Collector's current
/// names) and `otelcol_processor_dropped_{spans,metric_points,log_records}` (the names the
/// reference PromQL uses), with a `reason` label saying why items were dropped.
#[derive(Clone)]
pub struct ProcessorMetrics {
    t: Telemetry,
    id: String,
    incoming: [Counter; 3],
    outgoing: [Counter; 3],
}

impl ProcessorMetrics {
    pub fn new(t: &Telemetry, processor: &ComponentId) -> Self {
        let id = processor.to_string();
        let mk = |name: &'static str, help: &'static str, s: Signal| {
            let labels = [("processor", id.as_str()), ("otel_signal", s.as_str())];
            t.signal_counter(name, help, &labels, (Kind::Processor, id.clone(), s))
        };
        ProcessorMetrics {
            incoming: Signal::ALL.map(|s| {
                mk(
                    "otelcol_processor_incoming_items",
                    "Items passed to the processor",
                    s,
                )
            }),
            outgoing: Signal::ALL.map(|s| {
                mk(
                    "otelcol_processor_outgoing_items",
                    "Items emitted by the processor",
                    s,
                )
            }),
            t: t.clone(),
            id,
        }
    }
    pub fn incoming(&self, s: Signal, n: usize) {
        self.incoming[s as usize].add(n as u64);
    }
    pub fn outgoing(&self, s: Signal, n: usize) {
        self.outgoing[s as usize].add(n as u64);
    }
    /// A counter of items this processor refused (the receiver told the client to retry), as
    /// `otelcol_processor_refused_{spans,metric_points,log_records}`. Create once.
    pub fn refused(&self, s: Signal) -> Counter {
        let name = leak_name(format!("otelcol_processor_refused_{}", s.item_noun()));
        self.t
            .counter(name, help_for(name), &[("processor", self.id.as_str())])
    }
    /// This processor's share of the memory account, of `kind` (`batch`, `tail_sampling`).
    pub fn memory_holder(&self, kind: &'static str) -> crate::memory::Holder {
        self.t.memory().holder(&self.t, &self.id, kind)
    }
    /// This processor's expected growth in the memory account (see
    /// [`crate::memory::GrowthHolder`]).
    pub fn memory_growth_holder(&self) -> crate::memory::GrowthHolder {
        self.t.memory().growth_holder(&self.t, &self.id)
    }
    /// A counter of items this processor dropped for `reason` (create once, add per batch).
    pub fn dropped(&self, s: Signal, reason: &str) -> Counter {
        let name = leak_name(format!("otelcol_processor_dropped_{}", s.item_noun()));
        self.t.counter(
            name,
            help_for(name),
            &[("processor", self.id.as_str()), ("reason", reason)],
        )
    }
}

/// Metric names are built from a fixed set of parts; interning keeps the registry keyed by
/// `&'static str` without leaking more than one copy of each name.
fn leak_name(name: String) -> &'static str {
    static NAMES: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(&name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
    names.insert(name, leaked);
    leaked
}

fn help_for(name: &str) -> &'static str {
    let rest = name.strip_prefix("otelcol_").unwrap_or(name);
    leak_name(format!("Number of {}", rest.replace('_', " ")))
}

/// Registers process metrics: `otelcol_process_memory_rss_bytes` (from the memory account's
/// process source, which the binary injects; 0 without one) and
/// `otelcol_process_uptime_seconds_total`.
pub fn register_process_metrics(t: &Telemetry, started: std::time::Instant) {
    let memory = t.memory().clone();
    t.gauge_fn(
        "otelcol_process_memory_rss_bytes",
        "Total physical memory (resident set size)",
        &[],
        move || memory.process().and_then(|p| p.resident()).unwrap_or(0) as f64,
    );
    t.counter_fn(
        "otelcol_process_uptime_seconds",
        "Uptime of the process",
        &[],
        move || started.elapsed().as_secs_f64(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OTLP form of the registry: counters as cumulative monotonic sums (the name without
    /// `_total`), gauges, histograms with bounds and per-bucket counts; labels as attributes;
    /// series the Prometheus page hides are not pushed either.
    #[test]
    fn the_registry_as_otlp_metrics() {
        use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
        let t = Telemetry::new();
        t.counter(
            "otelcol_receiver_accepted_spans",
            "spans",
            &[("receiver", "otlp")],
        )
        .add(7);
        t.gauge(
            "otelcol_exporter_queue_size",
            "size",
            &[("exporter", "otlp")],
        )
        .set(3);
        let h = t.histogram("sluice_batch_size", "sizes", &[], &[10.0, 100.0]);
        h.observe(5.0);
        h.observe(50.0);
        h.observe(500.0);
        let req = t.to_otlp(vec![("service.name".into(), "sluice".into())], 100, 200);
        let rm = &req.resource_metrics[0];
        let resource = rm.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let metrics = &rm.scope_metrics[0].metrics;
        let by_name = |n: &str| {
            metrics
                .iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        match by_name("otelcol_receiver_accepted_spans")
            .data
            .as_ref()
            .unwrap()
        {
            Data::Sum(sum) => {
                assert!(sum.is_monotonic);
                assert_eq!(sum.aggregation_temporality, 2);
                let p = &sum.data_points[0];
                assert_eq!(p.value, Some(Value::AsInt(7)));
                assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (100, 200));
                assert_eq!(p.attributes[0].key, "receiver");
            }
            other => panic!("{other:?}"),
        }
        match by_name("otelcol_exporter_queue_size")
            .data
            .as_ref()
            .unwrap()
        {
            Data::Gauge(g) => assert_eq!(g.data_points[0].value, Some(Value::AsInt(3))),
            other => panic!("{other:?}"),
        }
        match by_name("sluice_batch_size").data.as_ref().unwrap() {
            Data::Histogram(h) => {
                let p = &h.data_points[0];
                assert_eq!(p.explicit_bounds, vec![10.0, 100.0]);
                assert_eq!(p.bucket_counts, vec![1, 1, 1]);
                assert_eq!((p.count, p.sum), (3, Some(555.0)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renders_collector_names_with_labels() {
        let t = Telemetry::new();
        let r = ReceiverMetrics::new(&t, &ComponentId::parse("otlp").unwrap(), "grpc");
        r.accepted(Signal::Traces, 3);
        r.accepted(Signal::Traces, 2);
        r.refused(Signal::Logs, 1);
        let text = t.render();
        assert!(
            text.contains(
                "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 5\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "otelcol_receiver_refused_log_records_total{receiver=\"otlp\",transport=\"grpc\"} 1\n"
        ));
        assert!(text.contains("# TYPE otelcol_receiver_accepted_spans_total counter\n"));
        assert_eq!(
            t.value(
                "otelcol_receiver_accepted_spans",
                &[("receiver", "otlp"), ("transport", "grpc")]
            ),
            Some(5.0)
        );
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let t = Telemetry::new();
        let h = t.histogram(
            "x_latency_milliseconds",
            "latency",
            &[("p", "a")],
            &[1.0, 10.0],
        );
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let text = t.render();
        for want in [
            "# TYPE x_latency_milliseconds histogram\n",
            "x_latency_milliseconds_bucket{p=\"a\",le=\"1\"} 1\n",
            "x_latency_milliseconds_bucket{p=\"a\",le=\"10\"} 2\n",
            "x_latency_milliseconds_bucket{p=\"a\",le=\"+Inf\"} 3\n",
            "x_latency_milliseconds_sum{p=\"a\"} 55.5\n",
            "x_latency_milliseconds_count{p=\"a\"} 3\n",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn remove_drops_the_series_that_carry_the_labels_and_empty_families() {
        let t = Telemetry::new();
        t.counter("x_sent", "h", &[("exporter", "lb/a:1")]).add(3);
        t.counter("x_sent", "h", &[("exporter", "lb/b:1")]).add(4);
        t.gauge("x_backends", "h", &[("exporter", "lb/a:1")]).set(1);
        t.counter("x_outcome", "h", &[("exporter", "lb"), ("endpoint", "a:1")])
            .add(1);
        t.counter("x_outcome", "h", &[("exporter", "lb"), ("endpoint", "b:1")])
            .add(1);
        t.remove(&[("exporter", "lb/a:1")]);
        t.remove(&[("exporter", "lb"), ("endpoint", "a:1")]);
        let text = t.render();
        assert!(!text.contains("a:1"), "{text}");
        assert!(
            !text.contains("x_backends"),
            "an empty family is gone: {text}"
        );
        assert_eq!(t.value("x_sent", &[("exporter", "lb/b:1")]), Some(4.0));
        assert_eq!(
            t.value("x_outcome", &[("exporter", "lb"), ("endpoint", "b:1")]),
            Some(1.0)
        );
        // Registered again, it starts over.
        assert_eq!(t.counter("x_sent", "h", &[("exporter", "lb/a:1")]).get(), 0);
    }

    #[test]
    fn same_name_and_labels_share_a_series() {
        let t = Telemetry::new();
        let id = ComponentId::parse("otlp/jaeger").unwrap();
        let a = ExporterMetrics::new(&t, &id).queue_gauges();
        let b = ExporterMetrics::new(&t, &id).queue_gauges();
        a.size.set(4);
        assert_eq!(b.size.get(), 4);
        assert!(
            t.render()
                .contains("otelcol_exporter_queue_size{exporter=\"otlp/jaeger\"} 4\n")
        );
    }
}
