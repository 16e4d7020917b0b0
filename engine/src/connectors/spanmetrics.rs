//! `spanmetrics` connector (traces -> metrics): counts spans and records their durations as
//! the Collector's spanmetrics connector does, so RED metrics cover every span *received* —
//! placed before `tail_sampling`, dropped traces still count.
//!
//! ```yaml
//! connectors:
//!   spanmetrics:
//!     namespace: traces.span.metrics        # metric names: <namespace>.calls, <namespace>.duration
//!     metrics_flush_interval: 60s
//!     aggregation_temporality: AGGREGATION_TEMPORALITY_CUMULATIVE   # or ..._DELTA
//!     histogram: {unit: ms, explicit: {buckets: [2ms, 4ms, ...]}}  # or disable: true
//!     dimensions: [{name: http.method, default: GET}]               # from span, then resource attributes
//!     exclude_dimensions: [status.code]
//!     resource_metrics_key_attributes: [service.name]
//! service:
//!   pipelines:
//!     traces:  {receivers: [otlp], exporters: [spanmetrics, ...]}
//!     metrics: {receivers: [spanmetrics], exporters: [...]}
//! ```
//!
//! Output per resource (the span's resource attributes; scope `spanmetricsconnector`):
//! `calls` (monotonic sum) and `duration` (explicit histogram, default buckets 2 ms … 15 s)
//! with attributes `service.name`, `span.name`, `span.kind` (`SPAN_KIND_SERVER`, …),
//! `status.code` (`STATUS_CODE_ERROR`, …) plus the configured dimensions. Spans whose resource
//! has no `service.name` are not counted (as in the Collector). Durations are `end − start`
//! (0 when end precedes start).
//!
//! Aggregation is columnar: per payload, spans are grouped by (resource, name dictionary index,
//! kind, status, dimension values borrowed from the attribute columns) in a local map, and only
//! the distinct groups are merged into the connector's state. Metrics are emitted every
//! `metrics_flush_interval` (on a virtual clock: whenever data moves the clock past it) and —
//! unlike the Collector, which loses the last interval — once more at shutdown, so SIGTERM
//! flushes traces -> spanmetrics -> metrics exporters.
//!
//! Not yet (refused at load with a message): exemplars, events, exponential histograms,
//! `calls_dimensions`, `histogram.dimensions`, `include_instrumentation_scope`,
//! `aggregation_cardinality_limit`, `metrics_expiration`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::config_types::deserialize_duration;
use crate::kernels::attributes::first_rows_of_keys;
use crate::payload::{Payload, parent_ids};
use crate::schema::{AnyValueType, Signal, Table, col};
use crate::telemetry::{Counter, Telemetry};

const DEFAULT_BUCKETS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10_000.0, 15_000.0,
];
const SERVICE_NAME: &str = "service.name";
const SPAN_NAME: &str = "span.name";
const SPAN_KIND: &str = "span.kind";
const STATUS_CODE: &str = "status.code";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsConfig {
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    #[serde(default)]
    pub calls_dimensions: Vec<Dimension>,
    #[serde(default)]
    pub exclude_dimensions: Vec<String>,
    /// Deprecated in the Collector; accepted.
    #[serde(default)]
    pub dimensions_cache_size: Option<usize>,
    #[serde(default)]
    pub resource_metrics_cache_size: Option<usize>,
    #[serde(default)]
    pub resource_metrics_key_attributes: Vec<String>,
    #[serde(default = "default_temporality")]
    pub aggregation_temporality: String,
    #[serde(default)]
    pub histogram: HistogramConfig,
    #[serde(
        default = "default_flush_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub metrics_flush_interval: Duration,
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub metrics_expiration: Duration,
    #[serde(default)]
    pub metric_timestamp_cache_size: Option<usize>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub exemplars: ExemplarsConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub include_instrumentation_scope: Vec<String>,
    #[serde(default)]
    pub aggregation_cardinality_limit: usize,
}

fn default_temporality() -> String {
    "AGGREGATION_TEMPORALITY_CUMULATIVE".into()
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_namespace() -> String {
    "traces.span.metrics".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    pub name: String,
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramConfig {
    #[serde(default)]
    pub disable: bool,
    /// `ms` (default) or `s`.
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub explicit: Option<ExplicitConfig>,
    #[serde(default)]
    pub exponential: Option<serde_json::Value>,
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplicitConfig {
    #[serde(default)]
    pub buckets: Vec<DurationValue>,
}

/// A Go duration in a list (`[2ms, 1s]`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct DurationValue(#[serde(deserialize_with = "deserialize_duration")] pub Duration);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemplarsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub max_per_data_point: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

impl SpanMetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let not_yet = |path: &str, what: &str| {
            Err(ConfigError::new(
                path,
                format!("{what} is not supported by sluice's spanmetrics yet; remove it"),
            ))
        };
        if self.exemplars.enabled {
            return not_yet("exemplars.enabled", "exemplars");
        }
        if self.events.enabled {
            return not_yet("events.enabled", "events metrics");
        }
        if self.histogram.exponential.is_some() {
            return not_yet("histogram.exponential", "the exponential histogram");
        }
        if !self.calls_dimensions.is_empty() {
            return not_yet("calls_dimensions", "calls_dimensions");
        }
        if !self.histogram.dimensions.is_empty() {
            return not_yet("histogram.dimensions", "histogram.dimensions");
        }
        if !self.include_instrumentation_scope.is_empty() {
            return not_yet(
                "include_instrumentation_scope",
                "include_instrumentation_scope",
            );
        }
        if self.aggregation_cardinality_limit != 0 {
            return not_yet("aggregation_cardinality_limit", "a cardinality limit");
        }
        if !self.metrics_expiration.is_zero() {
            return not_yet("metrics_expiration", "metrics expiration");
        }
        if !matches!(
            self.aggregation_temporality.as_str(),
            "AGGREGATION_TEMPORALITY_CUMULATIVE" | "AGGREGATION_TEMPORALITY_DELTA"
        ) {
            return Err(ConfigError::new(
                "aggregation_temporality",
                "must be AGGREGATION_TEMPORALITY_CUMULATIVE or AGGREGATION_TEMPORALITY_DELTA",
            ));
        }
        if !matches!(self.histogram.unit.as_deref(), None | Some("ms" | "s")) {
            return Err(ConfigError::new("histogram.unit", "must be ms or s"));
        }
        if self.metrics_flush_interval.is_zero() {
            return Err(ConfigError::new(
                "metrics_flush_interval",
                "must be greater than 0",
            ));
        }
        let mut names: Vec<&str> = vec![SERVICE_NAME, SPAN_NAME, SPAN_KIND, STATUS_CODE];
        for (i, d) in self.dimensions.iter().enumerate() {
            if names.contains(&d.name.as_str()) {
                return Err(ConfigError::new(
                    format!("dimensions[{i}].name"),
                    format!("duplicate dimension name {}", d.name),
                ));
            }
            names.push(&d.name);
        }
        Ok(())
    }

    fn delta(&self) -> bool {
        self.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
    }

    fn unit_divider(&self) -> f64 {
        if self.histogram.unit.as_deref() == Some("s") {
            1e9
        } else {
            1e6
        }
    }

    /// The histogram bucket bounds in the configured unit.
    pub fn bounds(&self) -> Vec<f64> {
        let div = self.unit_divider();
        match &self.histogram.explicit {
            Some(e) if !e.buckets.is_empty() => e
                .buckets
                .iter()
                .map(|d| d.0.as_nanos() as f64 / div)
                .collect(),
            _ => DEFAULT_BUCKETS_MS.iter().map(|ms| ms * 1e6 / div).collect(),
        }
    }
}

pub struct SpanMetricsFactory;

impl Factory for SpanMetricsFactory {
    fn kind(&self) -> Kind {
        Kind::Connector
    }
    fn type_name(&self) -> &'static str {
        "spanmetrics"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "traces -> metrics: calls and duration per service, span name, kind, status"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: SpanMetricsConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn connects(&self) -> &'static [(Signal, Signal)] {
        &[(Signal::Traces, Signal::Metrics)]
    }
    fn build_connector(
        &self,
        ctx: BuildContext,
        _from: Signal,
        _to: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<SpanMetricsConfig>()?;
        Ok(Arc::new(SpanMetrics::new(
            (*config).clone(),
            next,
            ctx.clock.clone(),
            &ctx.telemetry,
            &ctx.id.to_string(),
        )))
    }
}

/// A dimension value, owned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DimValue {
    Str(String),
    Int(i64),
    /// f64 bits
    Double(u64),
    Bool(bool),
}

impl DimValue {
    fn to_any(&self) -> AnyValue {
        let v = match self {
            DimValue::Str(s) => any_value::Value::StringValue(s.clone()),
            DimValue::Int(i) => any_value::Value::IntValue(*i),
            DimValue::Double(b) => any_value::Value::DoubleValue(f64::from_bits(*b)),
            DimValue::Bool(b) => any_value::Value::BoolValue(*b),
        };
        AnyValue { value: Some(v) }
    }

    fn as_ref(&self) -> DimRef<'_> {
        match self {
            DimValue::Str(s) => DimRef::Str(s),
            DimValue::Int(i) => DimRef::Int(*i),
            DimValue::Double(d) => DimRef::Double(*d),
            DimValue::Bool(b) => DimRef::Bool(*b),
        }
    }
}

/// A dimension value borrowed from a payload's attribute columns.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum DimRef<'a> {
    Absent,
    Str(&'a str),
    Int(i64),
    Double(u64),
    Bool(bool),
}

impl DimRef<'_> {
    fn owned(self) -> Option<DimValue> {
        match self {
            DimRef::Absent => None,
            DimRef::Str(s) => Some(DimValue::Str(s.to_string())),
            DimRef::Int(i) => Some(DimValue::Int(i)),
            DimRef::Double(d) => Some(DimValue::Double(d)),
            DimRef::Bool(b) => Some(DimValue::Bool(b)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SeriesKey {
    service: String,
    name: String,
    kind: i32,
    status: i32,
    dims: Vec<(usize, DimValue)>,
}

impl SeriesKey {
    /// Whether this is the series of the borrowed parts (compared without building a key).
    fn is(
        &self,
        service: &str,
        name: &str,
        kind: i32,
        status: i32,
        dims: &[(usize, DimRef)],
    ) -> bool {
        self.kind == kind
            && self.status == status
            && self.name == name
            && self.service == service
            && self.dims.len() == dims.len()
            && self
                .dims
                .iter()
                .zip(dims)
                .all(|((i, v), (j, w))| i == j && v.as_ref() == *w)
    }

    fn hash_with(&self, hasher: &hashbrown::DefaultHashBuilder) -> u64 {
        let dims: Vec<(usize, DimRef)> = self.dims.iter().map(|(i, v)| (*i, v.as_ref())).collect();
        series_hash(
            hasher,
            &self.service,
            &self.name,
            self.kind,
            self.status,
            &dims,
        )
    }
}

/// The hash of a series, the same for its borrowed parts and its [`SeriesKey`]: each
/// payload's groups are looked up by their parts, and a key is built only for a new series.
fn series_hash(
    hasher: &hashbrown::DefaultHashBuilder,
    service: &str,
    name: &str,
    kind: i32,
    status: i32,
    dims: &[(usize, DimRef)],
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = hasher.build_hasher();
    service.hash(&mut h);
    name.hash(&mut h);
    kind.hash(&mut h);
    status.hash(&mut h);
    dims.hash(&mut h);
    h.finish()
}

struct SeriesAgg {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
    start: u64,
}

struct ResourceAgg {
    attributes: Vec<KeyValue>,
    /// Hashed with [`series_hash`] (`Inner::series_hasher`).
    series: hashbrown::HashTable<(SeriesKey, SeriesAgg)>,
}

struct State {
    /// By [`resource_key`].
    resources: HashMap<Vec<u8>, ResourceAgg>,
    last_flush: u64,
    /// Spans were aggregated since the last flush (a virtual clock's next deadline).
    counted_since_flush: bool,
}

struct Inner {
    config: SpanMetricsConfig,
    bounds: Vec<f64>,
    /// Which default dimensions are emitted (not excluded): service.name, span.name, span.kind, status.code.
    defaults: [bool; 4],
    next: ConsumerRef,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    series_hasher: hashbrown::DefaultHashBuilder,
    spans_counted: Counter,
    flush_failed: Counter,
}

pub struct SpanMetrics {
    inner: Arc<Inner>,
    ticker: Mutex<Option<(JoinHandle<()>, Arc<tokio::sync::Notify>)>>,
}

impl SpanMetrics {
    pub fn new(
        config: SpanMetricsConfig,
        next: ConsumerRef,
        clock: Arc<dyn Clock>,
        telemetry: &Telemetry,
        id: &str,
    ) -> Self {
        let bounds = config.bounds();
        let defaults = [SERVICE_NAME, SPAN_NAME, SPAN_KIND, STATUS_CODE]
            .map(|d| !config.exclude_dimensions.iter().any(|e| e == d));
        let now = clock.now_unix_nanos();
        let labels = [("connector", id)];
        SpanMetrics {
            inner: Arc::new(Inner {
                config,
                bounds,
                defaults,
                next,
                clock,
                state: Mutex::new(State {
                    resources: HashMap::new(),
                    last_flush: now,
                    counted_since_flush: false,
                }),
                series_hasher: hashbrown::DefaultHashBuilder::default(),
                spans_counted: telemetry.counter(
                    "otelcol_connector_spanmetrics_spans_counted",
                    "Spans aggregated into span metrics (sluice)",
                    &labels,
                ),
                flush_failed: telemetry.counter(
                    "otelcol_connector_spanmetrics_flush_failed",
                    "Span-metric flushes the metrics pipeline refused (sluice)",
                    &labels,
                ),
            }),
            ticker: Mutex::new(None),
        }
    }

    /// Emits the current metrics now (what the flush timer does).
    pub async fn flush(&self) {
        self.inner.flush().await;
    }
}

/// `first_rows_of_keys`' mark for an owner without the attribute.
const ABSENT: u32 = u32::MAX;

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The typed value columns of an attribute table, looked up once (not per row).
struct AttrValues<'a> {
    types: &'a [u8],
    strs: &'a StringArray,
    ints: &'a [i64],
    doubles: &'a [f64],
    bools: &'a BooleanArray,
}

impl<'a> AttrValues<'a> {
    fn of(attrs: &'a RecordBatch) -> Self {
        let column = |name: &str| attrs.column_by_name(name).expect("attribute schema");
        AttrValues {
            types: column(col::TYPE).as_primitive::<UInt8Type>().values(),
            strs: column(col::STR).as_string::<i32>(),
            ints: column(col::INT).as_primitive::<Int64Type>().values(),
            doubles: column(col::DOUBLE).as_primitive::<Float64Type>().values(),
            bools: column(col::BOOL).as_boolean(),
        }
    }

    fn get(&self, row: u32) -> DimRef<'a> {
        let row = row as usize;
        match AnyValueType::from_u8(self.types[row]) {
            Some(AnyValueType::Str) => DimRef::Str(self.strs.value(row)),
            Some(AnyValueType::Int) => DimRef::Int(self.ints[row]),
            Some(AnyValueType::Double) => DimRef::Double(self.doubles[row].to_bits()),
            Some(AnyValueType::Bool) => DimRef::Bool(self.bools.value(row)),
            // Arrays, maps, bytes: rare as dimensions; they read as an empty string.
            _ => DimRef::Str(""),
        }
    }
}

/// The columns of an attribute table that both resource functions read, and the rows of
/// resource row `r` in it (children are sorted by parent).
struct ResourceAttrColumns<'a> {
    keys: &'a arrow::array::DictionaryArray<UInt32Type>,
    dict: &'a arrow::array::StringArray,
    bytes: &'a arrow::array::BinaryArray,
    rows: std::ops::Range<usize>,
}

fn resource_attr_columns(attrs: &RecordBatch, r: u32) -> ResourceAttrColumns<'_> {
    let parents = parent_ids(attrs).values();
    let keys = attrs
        .column_by_name(col::KEY)
        .expect("key")
        .as_dictionary::<UInt32Type>();
    ResourceAttrColumns {
        keys,
        dict: keys.values().as_string::<i32>(),
        bytes: attrs
            .column_by_name(col::BYTES)
            .expect("bytes")
            .as_binary::<i32>(),
        rows: parents.partition_point(|&p| p < r)..parents.partition_point(|&p| p <= r),
    }
}

/// The attributes of resource row `r` as OTLP key-values (for the metrics' resource).
fn resource_attributes(attrs: &RecordBatch, r: u32) -> Vec<KeyValue> {
    let ResourceAttrColumns {
        keys,
        dict,
        bytes,
        rows,
    } = resource_attr_columns(attrs, r);
    let types = attrs
        .column_by_name(col::TYPE)
        .expect("type")
        .as_primitive::<UInt8Type>();
    rows.map(|row| {
        let value = match AnyValueType::from_u8(types.value(row)) {
            Some(AnyValueType::Array | AnyValueType::Map) => {
                AnyValue::decode(bytes.value(row)).ok()
            }
            Some(AnyValueType::Bytes) => Some(AnyValue {
                value: Some(any_value::Value::BytesValue(bytes.value(row).to_vec())),
            }),
            Some(AnyValueType::Empty) => Some(AnyValue { value: None }),
            Some(AnyValueType::Absent) | None => None,
            _ => AttrValues::of(attrs)
                .get(row as u32)
                .owned()
                .map(|v| v.to_any()),
        };
        KeyValue {
            key: dict.value(keys.keys().value(row) as usize).to_string(),
            value,
            ..Default::default()
        }
    })
    .collect()
}

/// A canonical key for resource row `r`'s attributes (all, or only `keep` when given), into
/// `out`: each attribute as its key, type and value bytes (lengths first), sorted, so equal
/// attribute sets give equal keys. Built from the columns, without OTLP values or formatting:
/// it is built for every resource of every payload.
fn resource_key(
    attrs: &RecordBatch,
    values: &AttrValues,
    r: u32,
    keep: &[String],
    out: &mut Vec<u8>,
) {
    let ResourceAttrColumns {
        keys,
        dict,
        bytes,
        rows,
    } = resource_attr_columns(attrs, r);
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(rows.len());
    for row in rows {
        let key = dict.value(keys.keys().value(row) as usize);
        if !keep.is_empty() && !keep.iter().any(|k| k == key) {
            continue;
        }
        let mut e = Vec::with_capacity(key.len() + 32);
        e.extend_from_slice(&(key.len() as u32).to_le_bytes());
        e.extend_from_slice(key.as_bytes());
        let ty = values.types[row];
        e.push(ty);
        let mut value = |v: &[u8]| {
            e.extend_from_slice(&(v.len() as u32).to_le_bytes());
            e.extend_from_slice(v);
        };
        match AnyValueType::from_u8(ty) {
            Some(AnyValueType::Str) => value(values.strs.value(row).as_bytes()),
            Some(AnyValueType::Int) => value(&values.ints[row].to_le_bytes()),
            Some(AnyValueType::Double) => value(&values.doubles[row].to_bits().to_le_bytes()),
            Some(AnyValueType::Bool) => value(&[u8::from(values.bools.value(row))]),
            Some(AnyValueType::Bytes) => value(bytes.value(row)),
            // Re-encoded, so the same value sent with another field layout keys the same.
            Some(AnyValueType::Array | AnyValueType::Map) => {
                match AnyValue::decode(bytes.value(row)) {
                    Ok(v) => value(&v.encode_to_vec()),
                    Err(_) => value(bytes.value(row)),
                }
            }
            Some(AnyValueType::Empty | AnyValueType::Absent) | None => {}
        }
        entries.push(e);
    }
    entries.sort_unstable();
    out.clear();
    entries.iter().for_each(|e| out.extend_from_slice(e));
}

fn span_kind_str(k: i32) -> &'static str {
    match k {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_code_str(c: i32) -> &'static str {
    match c {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

#[derive(Default)]
struct LocalAgg {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
}

impl Inner {
    fn aggregate(&self, p: &Payload) {
        let spans = p.table(Table::Spans);
        let n = spans.num_rows();
        if n == 0 {
            return;
        }
        let span_attrs = p.table(Table::SpanAttrs);
        let res_attrs = p.table(Table::ResourceAttrs);
        let resources = p.table(Table::Resources).num_rows();
        // One pass per attribute table for every key read: `service.name` and the dimensions
        // on resources, the dimensions on spans (row of the first such attribute per owner).
        let dims = &self.config.dimensions;
        let dim_names: Vec<String> = dims.iter().map(|d| d.name.clone()).collect();
        let res_keys: Vec<String> = std::iter::once(SERVICE_NAME.to_string())
            .chain(dim_names.iter().cloned())
            .collect();
        let mut res_rows = first_rows_of_keys(res_attrs, resources, &res_keys);
        let dim_res_rows = res_rows.split_off(1);
        let service_rows = res_rows.pop().expect("service.name rows");
        let dim_span_rows = first_rows_of_keys(span_attrs, n, &dim_names);
        let scope_res = p.parent_ids(Table::Scopes).values();
        let span_scope = p.parent_ids(Table::Spans).values();
        let names = spans
            .column_by_name(col::NAME)
            .expect("name")
            .as_dictionary::<UInt32Type>();
        let name_idx = names.keys().values();
        let name_dict = names.values().as_string::<i32>();
        let kinds = spans
            .column_by_name(col::KIND)
            .expect("kind")
            .as_primitive::<Int32Type>()
            .values();
        let status = spans
            .column_by_name(col::STATUS_CODE)
            .expect("status")
            .as_primitive::<Int32Type>()
            .values();
        let start = spans
            .column_by_name(col::START_TIME_UNIX_NANO)
            .expect("start")
            .as_primitive::<UInt64Type>()
            .values();
        let end = spans
            .column_by_name(col::END_TIME_UNIX_NANO)
            .expect("end")
            .as_primitive::<UInt64Type>()
            .values();
        let div = self.config.unit_divider();
        let span_values = AttrValues::of(span_attrs);
        let res_values = AttrValues::of(res_attrs);

        // Per dimension, a dense code per span for its value (0: absent), so the grouping
        // below hashes a few integers per span, not strings; each distinct value is hashed
        // once per occurrence here with a fast hasher, and kept once.
        let mut dim_codes: Vec<Vec<u32>> = Vec::with_capacity(dims.len());
        let mut dim_values: Vec<Vec<DimRef>> = Vec::with_capacity(dims.len());
        for d in 0..dims.len() {
            let mut ids: hashbrown::HashMap<DimRef, u32> = hashbrown::HashMap::new();
            let mut values = vec![DimRef::Absent];
            let mut codes = Vec::with_capacity(n);
            for row in 0..n {
                let r = scope_res[span_scope[row] as usize] as usize;
                let v = match (dim_span_rows[d][row], dim_res_rows[d][r]) {
                    (a, _) if a != ABSENT => span_values.get(a),
                    (_, a) if a != ABSENT => res_values.get(a),
                    _ => DimRef::Absent,
                };
                codes.push(match v {
                    DimRef::Absent => 0,
                    v => *ids.entry(v).or_insert_with(|| {
                        values.push(v);
                        (values.len() - 1) as u32
                    }),
                });
            }
            dim_codes.push(codes);
            dim_values.push(values);
        }

        // Group spans by (resource, name, kind, status, dimension codes): keys live back to
        // back in `keys` (`stride` u32s each), the table maps a key's hash to its group.
        let stride = 4 + dims.len();
        let hasher = hashbrown::DefaultHashBuilder::default();
        let mut table: hashbrown::HashTable<u32> = hashbrown::HashTable::new();
        let mut keys: Vec<u32> = Vec::new();
        let mut aggs: Vec<LocalAgg> = Vec::new();
        let mut key = vec![0u32; stride];
        let mut counted = 0u64;
        for row in 0..n {
            let r = scope_res[span_scope[row] as usize];
            if service_rows[r as usize] == ABSENT {
                continue;
            }
            key[0] = r;
            key[1] = name_idx[row];
            key[2] = kinds[row] as u32;
            key[3] = status[row] as u32;
            for (d, codes) in dim_codes.iter().enumerate() {
                key[4 + d] = codes[row];
            }
            let hash = hasher.hash_one(&key[..]);
            let found = table
                .find(hash, |&g| keys[g as usize * stride..][..stride] == key[..])
                .copied();
            let g = match found {
                Some(g) => g as usize,
                None => {
                    let g = aggs.len();
                    keys.extend_from_slice(&key);
                    aggs.push(LocalAgg {
                        buckets: vec![0; self.bounds.len() + 1],
                        ..Default::default()
                    });
                    table.insert_unique(hash, g as u32, |&g| {
                        hasher.hash_one(&keys[g as usize * stride..][..stride])
                    });
                    g
                }
            };
            let duration = if end[row] > start[row] {
                (end[row] - start[row]) as f64 / div
            } else {
                0.0
            };
            let agg = &mut aggs[g];
            agg.count += 1;
            agg.sum += duration;
            agg.buckets[self.bounds.partition_point(|b| *b < duration)] += 1;
            counted += 1;
        }
        self.spans_counted.add(counted);
        let now = self.clock.now_unix_nanos();
        let keep = &self.config.resource_metrics_key_attributes;
        // The groups of each resource row, so each resource's key is built and looked up once.
        let mut groups_of: Vec<Vec<usize>> = vec![Vec::new(); resources];
        for g in 0..aggs.len() {
            groups_of[keys[g * stride] as usize].push(g);
        }
        let hasher = &self.series_hasher;
        let mut res_key = Vec::new();
        let mut dim_refs: Vec<(usize, DimRef)> = Vec::with_capacity(dims.len());
        let mut st = lock(&self.state);
        st.counted_since_flush |= counted > 0;
        for (r, groups) in groups_of.iter().enumerate() {
            if groups.is_empty() {
                continue;
            }
            let r = r as u32;
            resource_key(res_attrs, &res_values, r, keep, &mut res_key);
            // The resource's OTLP attributes are built only for a resource new since the last
            // flush; every other payload finds its resources by key.
            let res = match st.resources.get_mut(res_key.as_slice()) {
                Some(res) => res,
                None => st
                    .resources
                    .entry(res_key.clone())
                    .or_insert_with(|| ResourceAgg {
                        attributes: resource_attributes(res_attrs, r),
                        series: hashbrown::HashTable::new(),
                    }),
            };
            let service = match service_rows[r as usize] {
                ABSENT => "",
                a => match res_values.get(a) {
                    DimRef::Str(s) => s,
                    _ => "", // pdata Str() of a non-string
                },
            };
            for &g in groups {
                let k = &keys[g * stride..][..stride];
                let agg = &aggs[g];
                let name = name_dict.value(k[1] as usize);
                let (kind, status) = (k[2] as i32, k[3] as i32);
                dim_refs.clear();
                dim_refs.extend((0..dims.len()).filter_map(|d| {
                    match dim_values[d][k[4 + d] as usize] {
                        DimRef::Absent => dims[d].default.as_deref().map(|s| (d, DimRef::Str(s))),
                        v => Some((d, v)),
                    }
                }));
                let hash = series_hash(hasher, service, name, kind, status, &dim_refs);
                let s = match res.series.find_mut(hash, |(key, _)| {
                    key.is(service, name, kind, status, &dim_refs)
                }) {
                    Some((_, s)) => s,
                    None => {
                        let key = SeriesKey {
                            service: service.to_string(),
                            name: name.to_string(),
                            kind,
                            status,
                            dims: dim_refs
                                .iter()
                                .filter_map(|&(i, v)| v.owned().map(|v| (i, v)))
                                .collect(),
                        };
                        let series = SeriesAgg {
                            count: 0,
                            sum: 0.0,
                            buckets: vec![0; self.bounds.len() + 1],
                            start: now,
                        };
                        let (_, s) = res
                            .series
                            .insert_unique(hash, (key, series), |(key, _)| key.hash_with(hasher))
                            .into_mut();
                        s
                    }
                };
                s.count += agg.count;
                s.sum += agg.sum;
                s.buckets
                    .iter_mut()
                    .zip(&agg.buckets)
                    .for_each(|(a, b)| *a += b);
            }
        }
    }

    /// Builds the metrics payload and resets state for delta temporality.
    fn build(&self) -> Option<Payload> {
        let now = self.clock.now_unix_nanos();
        let delta = self.config.delta();
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let ns = &self.config.namespace;
        let metric_name = |m: &str| {
            if ns.is_empty() {
                m.to_string()
            } else {
                format!("{ns}.{m}")
            }
        };
        let unit = self
            .config
            .histogram
            .unit
            .clone()
            .unwrap_or_else(|| "ms".into());
        let mut st = lock(&self.state);
        let last_flush = std::mem::replace(&mut st.last_flush, now);
        st.counted_since_flush = false;
        if st.resources.is_empty() {
            return None;
        }
        let mut resource_metrics = Vec::new();
        let mut resources: Vec<(&Vec<u8>, &ResourceAgg)> = st.resources.iter().collect();
        resources.sort_by(|a, b| a.0.cmp(b.0));
        for (_, res) in resources {
            let mut series: Vec<(&SeriesKey, &SeriesAgg)> =
                res.series.iter().map(|(k, s)| (k, s)).collect();
            series.sort_by(|a, b| {
                (&a.0.service, &a.0.name, a.0.kind, a.0.status, &a.0.dims).cmp(&(
                    &b.0.service,
                    &b.0.name,
                    b.0.kind,
                    b.0.status,
                    &b.0.dims,
                ))
            });
            let attrs_of = |k: &SeriesKey| -> Vec<KeyValue> {
                let s = |v: &str| AnyValue {
                    value: Some(any_value::Value::StringValue(v.to_string())),
                };
                let defaults = [
                    (SERVICE_NAME, s(&k.service)),
                    (SPAN_NAME, s(&k.name)),
                    (SPAN_KIND, s(span_kind_str(k.kind))),
                    (STATUS_CODE, s(status_code_str(k.status))),
                ];
                let mut out: Vec<KeyValue> = defaults
                    .into_iter()
                    .zip(self.defaults)
                    .filter(|(_, keep)| *keep)
                    .map(|((key, v), _)| KeyValue {
                        key: key.into(),
                        value: Some(v),
                        ..Default::default()
                    })
                    .collect();
                out.extend(k.dims.iter().map(|(i, v)| KeyValue {
                    key: self.config.dimensions[*i].name.clone(),
                    value: Some(v.to_any()),
                    ..Default::default()
                }));
                out
            };
            let start_of = |s: &SeriesAgg| {
                if delta {
                    last_flush.max(s.start)
                } else {
                    s.start
                }
            };
            let mut metrics = vec![Metric {
                name: metric_name("calls"),
                data: Some(metric::Data::Sum(Sum {
                    data_points: series
                        .iter()
                        .map(|(k, s)| NumberDataPoint {
                            attributes: attrs_of(k),
                            start_time_unix_nano: start_of(s),
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsInt(s.count as i64)),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: temporality,
                    is_monotonic: true,
                })),
                ..Default::default()
            }];
            if !self.config.histogram.disable {
                metrics.push(Metric {
                    name: metric_name("duration"),
                    unit: unit.clone(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: series
                            .iter()
                            .map(|(k, s)| HistogramDataPoint {
                                attributes: attrs_of(k),
                                start_time_unix_nano: start_of(s),
                                time_unix_nano: now,
                                count: s.count,
                                sum: Some(s.sum),
                                bucket_counts: s.buckets.clone(),
                                explicit_bounds: self.bounds.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        aggregation_temporality: temporality,
                    })),
                    ..Default::default()
                });
            }
            resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: res.attributes.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "spanmetricsconnector".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        if delta {
            st.resources.clear();
        }
        drop(st);
        let bytes = ExportMetricsServiceRequest { resource_metrics }.encode_to_vec();
        match crate::otlp::decode_metrics(&bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "spanmetrics: cannot build metrics (internal error)");
                None
            }
        }
    }

    async fn flush(&self) {
        if let Some(p) = self.build()
            && let Err(e) = self.next.consume(p).await
        {
            tracing::warn!(error = %e, "spanmetrics: the metrics pipeline refused span metrics");
            self.flush_failed.add(1);
        }
    }

    fn flush_due(&self) -> bool {
        let interval = self.config.metrics_flush_interval.as_nanos() as u64;
        self.clock.now_unix_nanos() >= lock(&self.state).last_flush.saturating_add(interval)
    }
}

impl Consumer for SpanMetrics {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            self.inner.aggregate(&payload);
            if self.inner.clock.is_virtual() && self.inner.flush_due() {
                self.inner.flush().await;
            }
            Ok(())
        })
    }
}

impl Lifecycle for SpanMetrics {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            if self.inner.clock.is_virtual() {
                return Ok(());
            }
            let inner = self.inner.clone();
            let stop = Arc::new(tokio::sync::Notify::new());
            let stopped = stop.clone();
            let period = inner.config.metrics_flush_interval;
            let handle = tokio::spawn(async move {
                let mut interval =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    tokio::select! {
                        _ = interval.tick() => inner.flush().await,
                        _ = stopped.notified() => return,
                    }
                }
            });
            *self.ticker.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, stop));
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ticker = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((handle, stop)) = ticker {
                stop.notify_one();
                let _ = handle.await;
            }
            self.inner.flush().await;
        })
    }

    /// The next flush, while spans were counted since the last one (a flush of nothing new
    /// waits for the next span, so a replay's end is not an endless series of flushes).
    fn next_virtual_deadline(&self) -> Option<u64> {
        if !self.inner.clock.is_virtual() {
            return None;
        }
        let st = lock(&self.inner.state);
        st.counted_since_flush.then(|| {
            st.last_flush
                .saturating_add(self.inner.config.metrics_flush_interval.as_nanos() as u64)
        })
    }

    fn on_virtual_time(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.inner.clock.is_virtual() && self.inner.flush_due() {
                self.inner.flush().await;
            }
        })
    }
}

#[cfg(test)]
mod tests;
