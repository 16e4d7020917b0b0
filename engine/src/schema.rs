//! The sluice data model: OTLP as a set of normalized Arrow tables.
//!
//! One OTLP request (or many, concatenated by the batch processor) becomes a [`Payload`]: a small
//! tree of Arrow record batches, one per [`Table`]. The layout follows OpenTelemetry Arrow (OTAP):
//! fixed span/point/log columns in one table, and attributes in their own tables keyed by the row
//! of their parent. Every processor is then a kernel over columns: a filter is a boolean mask
//! over the spans table, deleting an attribute drops rows of an attribute table, a sampling
//! decision is a `take`.
//!
//! # Identity and parent links
//!
//! A row's identity is its **row index** in its table; there is no stored id column. Every table
//! except `Resources` has a `parent_id: UInt32` column holding the row index of its parent in
//! the parent table (see [`Table::parent`]): a scope's resource, a span's scope, an attribute's
//! owner, an event's span. This keeps ids dense (a concat adds an offset, a filter renumbers with
//! one prefix sum) and makes "every child of row i" a contiguous range, because of the invariant:
//!
//! **Every child table is sorted by `parent_id`** (non-decreasing, stable: rows with the same
//! parent keep their OTLP order). The decoders produce it, [`crate::payload`] operations keep it,
//! and the encoders rely on it to walk parents and children in one merge pass.
//! [`Payload::validate`](crate::payload::Payload::validate) checks it.
//!
//! # Attribute tables
//!
//! All attribute tables share [`attrs_schema`]: `parent_id`, `key` (dictionary: keys repeat on
//! every span), `type` ([`AnyValueType`]), and one nullable value column per type: `str`, `int`,
//! `double`, `bool`, `bytes`. Exactly one value column is non-null per row, chosen by `type`
//! (none for `Empty`). Arrays and key-value lists (rare in attributes; never on the hot path) are
//! kept in `bytes` as the protobuf encoding of the whole `AnyValue`, with `type` = Array/Map, so
//! they round-trip exactly without nested Arrow types. Log bodies use the same typed columns,
//! prefixed `body_`, on the logs table.
//!
//! # Deferred rebuilds of attribute tables
//!
//! Dropping attribute rows (a filter dropping spans, `delete_key`, `keep_keys`) does not copy
//! the table: a [`Payload`] may hold an attribute table as *pending rows*
//! ([`crate::payload::PendingRows`]: the rows of an older table in runs, parent ids renumbered).
//! The next `set` splices its values in and gathers the kept rows from the older table in one
//! rebuild, OTTL lookups read pending rows in place, and anything else that reads the table
//! builds it once (shared by clones). So the gateway's filter + delete + `set` chain copies the
//! span attributes once, not three times. Payloads that are kept a while (batch buffers,
//! exporter queues, tail-sampling parts) are settled first, so no older table stays alive.
//!
//! # Why not nested Arrow (List<Struct>) or one struct per span
//!
//! Nested attributes would make `delete_key` a rebuild of every list and make predicates walk
//! offsets. Flat attribute tables make both a single pass over two columns (`key`, `parent_id`),
//! which is the whole point of the engine. See BENCHMARKS.md for the decode cost and the bytes per
//! span this layout costs.
//!
//! # Empty vs absent
//!
//! OTLP fields that proto3 cannot tell from their default (strings, numbers) are stored as values
//! (`""`, `0`), never null, so the encoder writes exactly what prost would. Nullable columns mean
//! a real "absent": an empty `trace_id`/`span_id`/`parent_span_id` byte string, an unset
//! `optional double` (`sum`/`min`/`max`), an unset number-point value, an absent
//! `Resource`/`InstrumentationScope`/exponential-histogram `Buckets` message.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

/// The three OTLP signals.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The name used in config (`service.pipelines.traces`) and in self-telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The tables a payload of this signal carries, parents before children.
    pub fn tables(self) -> &'static [Table] {
        use Table::*;
        match self {
            Signal::Traces => &[
                Resources,
                ResourceAttrs,
                Scopes,
                ScopeAttrs,
                Spans,
                SpanAttrs,
                SpanEvents,
                SpanEventAttrs,
                SpanLinks,
                SpanLinkAttrs,
            ],
            Signal::Metrics => &[
                Resources,
                ResourceAttrs,
                Scopes,
                ScopeAttrs,
                Metrics,
                MetricMetadata,
                NumberPoints,
                NumberPointAttrs,
                NumberExemplars,
                NumberExemplarAttrs,
                HistogramPoints,
                HistogramPointAttrs,
                HistogramExemplars,
                HistogramExemplarAttrs,
                ExpHistogramPoints,
                ExpHistogramPointAttrs,
                ExpHistogramExemplars,
                ExpHistogramExemplarAttrs,
                SummaryPoints,
                SummaryPointAttrs,
            ],
            Signal::Logs => &[Resources, ResourceAttrs, Scopes, ScopeAttrs, Logs, LogAttrs],
        }
    }

    /// The table whose rows are counted as items of this signal (spans, data points, log
    /// records) in self-telemetry, as the Collector counts them.
    pub fn item_tables(self) -> &'static [Table] {
        use Table::*;
        match self {
            Signal::Traces => &[Spans],
            Signal::Metrics => &[
                NumberPoints,
                HistogramPoints,
                ExpHistogramPoints,
                SummaryPoints,
            ],
            Signal::Logs => &[Logs],
        }
    }

    /// The item noun the Collector uses in metric names: `spans`, `metric_points`, `log_records`.
    pub fn item_noun(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metric_points",
            Signal::Logs => "log_records",
        }
    }
}

/// Every table any payload can carry. The discriminant indexes [`crate::payload::Payload`]'s
/// table array.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    Resources,
    ResourceAttrs,
    Scopes,
    ScopeAttrs,
    // traces
    Spans,
    SpanAttrs,
    SpanEvents,
    SpanEventAttrs,
    SpanLinks,
    SpanLinkAttrs,
    // metrics
    Metrics,
    MetricMetadata,
    NumberPoints,
    NumberPointAttrs,
    NumberExemplars,
    NumberExemplarAttrs,
    HistogramPoints,
    HistogramPointAttrs,
    HistogramExemplars,
    HistogramExemplarAttrs,
    ExpHistogramPoints,
    ExpHistogramPointAttrs,
    ExpHistogramExemplars,
    ExpHistogramExemplarAttrs,
    SummaryPoints,
    SummaryPointAttrs,
    // logs
    Logs,
    LogAttrs,
}

impl Table {
    pub const COUNT: usize = Table::LogAttrs as usize + 1;

    pub const ALL: [Table; Table::COUNT] = {
        use Table::*;
        [
            Resources,
            ResourceAttrs,
            Scopes,
            ScopeAttrs,
            Spans,
            SpanAttrs,
            SpanEvents,
            SpanEventAttrs,
            SpanLinks,
            SpanLinkAttrs,
            Metrics,
            MetricMetadata,
            NumberPoints,
            NumberPointAttrs,
            NumberExemplars,
            NumberExemplarAttrs,
            HistogramPoints,
            HistogramPointAttrs,
            HistogramExemplars,
            HistogramExemplarAttrs,
            ExpHistogramPoints,
            ExpHistogramPointAttrs,
            ExpHistogramExemplars,
            ExpHistogramExemplarAttrs,
            SummaryPoints,
            SummaryPointAttrs,
            Logs,
            LogAttrs,
        ]
    };

    /// The table whose row indexes this table's `parent_id` column holds (`None` for Resources).
    pub fn parent(self) -> Option<Table> {
        use Table::*;
        Some(match self {
            Resources => return None,
            ResourceAttrs | Scopes => Resources,
            ScopeAttrs | Spans | Metrics | Logs => Scopes,
            SpanAttrs | SpanEvents | SpanLinks => Spans,
            SpanEventAttrs => SpanEvents,
            SpanLinkAttrs => SpanLinks,
            MetricMetadata | NumberPoints | HistogramPoints | ExpHistogramPoints
            | SummaryPoints => Metrics,
            NumberPointAttrs | NumberExemplars => NumberPoints,
            NumberExemplarAttrs => NumberExemplars,
            HistogramPointAttrs | HistogramExemplars => HistogramPoints,
            HistogramExemplarAttrs => HistogramExemplars,
            ExpHistogramPointAttrs | ExpHistogramExemplars => ExpHistogramPoints,
            ExpHistogramExemplarAttrs => ExpHistogramExemplars,
            SummaryPointAttrs => SummaryPoints,
            LogAttrs => Logs,
        })
    }

    /// Whether this is an attribute table (schema [`attrs_schema`]).
    pub fn is_attrs(self) -> bool {
        use Table::*;
        matches!(
            self,
            ResourceAttrs
                | ScopeAttrs
                | SpanAttrs
                | SpanEventAttrs
                | SpanLinkAttrs
                | MetricMetadata
                | NumberPointAttrs
                | NumberExemplarAttrs
                | HistogramPointAttrs
                | HistogramExemplarAttrs
                | ExpHistogramPointAttrs
                | ExpHistogramExemplarAttrs
                | SummaryPointAttrs
                | LogAttrs
        )
    }

    /// The fixed Arrow schema of this table.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        SCHEMAS.get_or_init(|| {
            Table::ALL
                .iter()
                .map(|t| Arc::new(t.build_schema()))
                .collect()
        })[self as usize]
            .clone()
    }

    fn build_schema(self) -> Schema {
        use Table::*;
        if self.is_attrs() {
            return attrs_schema();
        }
        let mut fields = Vec::new();
        if self != Resources {
            fields.push(Field::new(col::PARENT_ID, DataType::UInt32, false));
        }
        let f = |name: &str, dt: DataType, nullable: bool| Field::new(name, dt, nullable);
        match self {
            Resources => fields.extend([
                // false = the ResourceX message had no `resource` field at all
                f(col::PRESENT, DataType::Boolean, false),
                f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
                // the ResourceSpans/ResourceMetrics/ResourceLogs schema_url
                f(col::SCHEMA_URL, DataType::Utf8, false),
                // Resource.entity_refs kept as their protobuf encoding (rare; round-trips exactly)
                f(col::ENTITY_REFS, DataType::Binary, false),
            ]),
            Scopes => fields.extend([
                f(col::PRESENT, DataType::Boolean, false),
                f(col::NAME, dict_utf8(), false),
                f(col::VERSION, dict_utf8(), false),
                f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
                // the ScopeSpans/ScopeMetrics/ScopeLogs schema_url
                f(col::SCHEMA_URL, DataType::Utf8, false),
            ]),
            Spans => fields.extend([
                f(col::TRACE_ID, trace_id(), true),
                f(col::SPAN_ID, span_id(), true),
                f(col::TRACE_STATE, DataType::Utf8, false),
                f(col::PARENT_SPAN_ID, span_id(), true),
                f(col::FLAGS, DataType::UInt32, false),
                f(col::NAME, dict_utf8(), false),
                f(col::KIND, DataType::Int32, false),
                f(col::START_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::END_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
                f(col::DROPPED_EVENTS_COUNT, DataType::UInt32, false),
                f(col::DROPPED_LINKS_COUNT, DataType::UInt32, false),
                // false = the span had no `status` message
                f(col::STATUS_PRESENT, DataType::Boolean, false),
                f(col::STATUS_CODE, DataType::Int32, false),
                f(col::STATUS_MESSAGE, DataType::Utf8, false),
            ]),
            SpanEvents => fields.extend([
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::NAME, dict_utf8(), false),
                f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
            ]),
            SpanLinks => fields.extend([
                f(col::TRACE_ID, trace_id(), true),
                f(col::SPAN_ID, span_id(), true),
                f(col::TRACE_STATE, DataType::Utf8, false),
                f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
                f(col::FLAGS, DataType::UInt32, false),
            ]),
            Metrics => fields.extend([
                f(col::NAME, dict_utf8(), false),
                f(col::DESCRIPTION, dict_utf8(), false),
                f(col::UNIT, dict_utf8(), false),
                // MetricType as u8; 0 = the metric had no data field
                f(col::METRIC_TYPE, DataType::UInt8, false),
                // AggregationTemporality (sum, histogram, exponential histogram; 0 otherwise)
                f(col::AGGREGATION_TEMPORALITY, DataType::Int32, false),
                f(col::IS_MONOTONIC, DataType::Boolean, false),
            ]),
            NumberPoints => fields.extend([
                f(col::START_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                // exactly one of int_value/double_value is set, or neither (value oneof unset)
                f(col::INT_VALUE, DataType::Int64, true),
                f(col::DOUBLE_VALUE, DataType::Float64, true),
                f(col::FLAGS, DataType::UInt32, false),
            ]),
            HistogramPoints => fields.extend([
                f(col::START_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::COUNT, DataType::UInt64, false),
                f(col::SUM, DataType::Float64, true),
                f(col::BUCKET_COUNTS, list_of(DataType::UInt64), false),
                f(col::EXPLICIT_BOUNDS, list_of(DataType::Float64), false),
                f(col::FLAGS, DataType::UInt32, false),
                f(col::MIN, DataType::Float64, true),
                f(col::MAX, DataType::Float64, true),
            ]),
            ExpHistogramPoints => fields.extend([
                f(col::START_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::COUNT, DataType::UInt64, false),
                f(col::SUM, DataType::Float64, true),
                f(col::SCALE, DataType::Int32, false),
                f(col::ZERO_COUNT, DataType::UInt64, false),
                // offset null = the Buckets message was absent
                f(col::POSITIVE_OFFSET, DataType::Int32, true),
                f(
                    col::POSITIVE_BUCKET_COUNTS,
                    list_of(DataType::UInt64),
                    false,
                ),
                f(col::NEGATIVE_OFFSET, DataType::Int32, true),
                f(
                    col::NEGATIVE_BUCKET_COUNTS,
                    list_of(DataType::UInt64),
                    false,
                ),
                f(col::FLAGS, DataType::UInt32, false),
                f(col::MIN, DataType::Float64, true),
                f(col::MAX, DataType::Float64, true),
                f(col::ZERO_THRESHOLD, DataType::Float64, false),
            ]),
            SummaryPoints => fields.extend([
                f(col::START_TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::COUNT, DataType::UInt64, false),
                f(col::SUM_F64, DataType::Float64, false),
                f(col::QUANTILES, list_of(DataType::Float64), false),
                f(col::QUANTILE_VALUES, list_of(DataType::Float64), false),
                f(col::FLAGS, DataType::UInt32, false),
            ]),
            NumberExemplars | HistogramExemplars | ExpHistogramExemplars => fields.extend([
                f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                f(col::INT_VALUE, DataType::Int64, true),
                f(col::DOUBLE_VALUE, DataType::Float64, true),
                f(col::SPAN_ID, span_id(), true),
                f(col::TRACE_ID, trace_id(), true),
            ]),
            Logs => {
                fields.extend([
                    f(col::TIME_UNIX_NANO, DataType::UInt64, false),
                    f(col::OBSERVED_TIME_UNIX_NANO, DataType::UInt64, false),
                    f(col::SEVERITY_NUMBER, DataType::Int32, false),
                    f(col::SEVERITY_TEXT, dict_utf8(), false),
                    f(col::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
                    f(col::FLAGS, DataType::UInt32, false),
                    f(col::TRACE_ID, trace_id(), true),
                    f(col::SPAN_ID, span_id(), true),
                    f(col::EVENT_NAME, dict_utf8(), false),
                    // body: `Absent` = no body message, `Empty` = a body with no value set
                ]);
                fields.extend(any_value_fields("body_").iter().map(|f| f.as_ref().clone()));
            }
            _ => unreachable!("attribute tables handled above"),
        }
        Schema::new(fields)
    }
}

/// The kind of an `AnyValue`, stored in the `type` column of attribute tables (and `body_type`).
/// Numbering follows OTel Arrow's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AnyValueType {
    /// `AnyValue` present with no value set, or (log body) absent.
    Empty = 0,
    Str = 1,
    Int = 2,
    Double = 3,
    Bool = 4,
    /// `array_value`; `bytes` holds the protobuf encoding of the whole `AnyValue`.
    Array = 5,
    /// `kvlist_value`; `bytes` holds the protobuf encoding of the whole `AnyValue`.
    Map = 6,
    /// `bytes_value`; `bytes` holds the raw bytes.
    Bytes = 7,
    /// `KeyValue` with no `value` message at all (distinct from an empty `AnyValue`).
    Absent = 8,
}

impl AnyValueType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use AnyValueType::*;
        Some(match v {
            0 => Empty,
            1 => Str,
            2 => Int,
            3 => Double,
            4 => Bool,
            5 => Array,
            6 => Map,
            7 => Bytes,
            8 => Absent,
            _ => return None,
        })
    }
}

/// The metric data kind, stored in `metrics.metric_type`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MetricType {
    /// The `data` oneof was unset.
    Empty = 0,
    Gauge = 1,
    Sum = 2,
    Histogram = 3,
    ExponentialHistogram = 4,
    Summary = 5,
}

impl MetricType {
    pub fn from_u8(v: u8) -> Option<Self> {
        use MetricType::*;
        Some(match v {
            0 => Empty,
            1 => Gauge,
            2 => Sum,
            3 => Histogram,
            4 => ExponentialHistogram,
            5 => Summary,
            _ => return None,
        })
    }

    /// The points table holding this metric type's data points.
    pub fn points_table(self) -> Option<Table> {
        match self {
            MetricType::Empty => None,
            MetricType::Gauge | MetricType::Sum => Some(Table::NumberPoints),
            MetricType::Histogram => Some(Table::HistogramPoints),
            MetricType::ExponentialHistogram => Some(Table::ExpHistogramPoints),
            MetricType::Summary => Some(Table::SummaryPoints),
        }
    }
}

/// Column names, shared by decoders, kernels and encoders.
pub mod col {
    pub const PARENT_ID: &str = "parent_id";
    pub const PRESENT: &str = "present";
    pub const SCHEMA_URL: &str = "schema_url";
    pub const ENTITY_REFS: &str = "entity_refs";
    pub const NAME: &str = "name";
    pub const VERSION: &str = "version";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
    pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const FLAGS: &str = "flags";
    pub const KIND: &str = "kind";
    pub const START_TIME_UNIX_NANO: &str = "start_time_unix_nano";
    pub const END_TIME_UNIX_NANO: &str = "end_time_unix_nano";
    pub const TIME_UNIX_NANO: &str = "time_unix_nano";
    pub const OBSERVED_TIME_UNIX_NANO: &str = "observed_time_unix_nano";
    pub const STATUS_PRESENT: &str = "status_present";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const DESCRIPTION: &str = "description";
    pub const UNIT: &str = "unit";
    pub const METRIC_TYPE: &str = "metric_type";
    pub const AGGREGATION_TEMPORALITY: &str = "aggregation_temporality";
    pub const IS_MONOTONIC: &str = "is_monotonic";
    pub const INT_VALUE: &str = "int_value";
    pub const DOUBLE_VALUE: &str = "double_value";
    pub const COUNT: &str = "count";
    pub const SUM: &str = "sum";
    /// Summary points' `sum` is a plain double (not proto3 `optional`), hence non-null.
    pub const SUM_F64: &str = "sum";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const BUCKET_COUNTS: &str = "bucket_counts";
    pub const EXPLICIT_BOUNDS: &str = "explicit_bounds";
    pub const SCALE: &str = "scale";
    pub const ZERO_COUNT: &str = "zero_count";
    pub const ZERO_THRESHOLD: &str = "zero_threshold";
    pub const POSITIVE_OFFSET: &str = "positive_offset";
    pub const POSITIVE_BUCKET_COUNTS: &str = "positive_bucket_counts";
    pub const NEGATIVE_OFFSET: &str = "negative_offset";
    pub const NEGATIVE_BUCKET_COUNTS: &str = "negative_bucket_counts";
    pub const QUANTILES: &str = "quantiles";
    pub const QUANTILE_VALUES: &str = "quantile_values";
    pub const SEVERITY_NUMBER: &str = "severity_number";
    pub const SEVERITY_TEXT: &str = "severity_text";
    pub const EVENT_NAME: &str = "event_name";
    // attribute tables
    pub const KEY: &str = "key";
    pub const TYPE: &str = "type";
    pub const STR: &str = "str";
    pub const INT: &str = "int";
    pub const DOUBLE: &str = "double";
    pub const BOOL: &str = "bool";
    pub const BYTES: &str = "bytes";
}

/// Dictionary-encoded UTF-8 for columns whose values repeat within a batch (names, keys).
pub fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
}

pub fn trace_id() -> DataType {
    DataType::FixedSizeBinary(16)
}

pub fn span_id() -> DataType {
    DataType::FixedSizeBinary(8)
}

/// `List<item>` with a non-null item field named `item` (arrow's default naming).
pub fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

/// The typed value columns of an `AnyValue`, with a name prefix (`""` for attributes,
/// `"body_"` for log bodies).
pub fn any_value_fields(prefix: &str) -> Fields {
    Fields::from(vec![
        Field::new(format!("{prefix}{}", col::TYPE), DataType::UInt8, false),
        Field::new(format!("{prefix}{}", col::STR), DataType::Utf8, true),
        Field::new(format!("{prefix}{}", col::INT), DataType::Int64, true),
        Field::new(format!("{prefix}{}", col::DOUBLE), DataType::Float64, true),
        Field::new(format!("{prefix}{}", col::BOOL), DataType::Boolean, true),
        Field::new(format!("{prefix}{}", col::BYTES), DataType::Binary, true),
    ])
}

/// The schema shared by every attribute table.
pub fn attrs_schema() -> Schema {
    let mut fields = vec![
        Field::new(col::PARENT_ID, DataType::UInt32, false),
        Field::new(col::KEY, dict_utf8(), false),
    ];
    fields.extend(any_value_fields("").iter().map(|f| f.as_ref().clone()));
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_lists_parents_before_children() {
        for signal in Signal::ALL {
            let tables = signal.tables();
            for (i, t) in tables.iter().enumerate() {
                if let Some(p) = t.parent() {
                    let pi = tables.iter().position(|x| *x == p);
                    assert!(
                        matches!(pi, Some(pi) if pi < i),
                        "{signal:?}: {t:?}'s parent {p:?} must come first"
                    );
                }
            }
            for item in signal.item_tables() {
                assert!(tables.contains(item));
            }
        }
    }

    #[test]
    fn all_lists_every_table_in_discriminant_order() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i);
            let schema = t.schema();
            assert_eq!(
                schema.field(0).name() == col::PARENT_ID,
                *t != Table::Resources
            );
        }
    }
}
