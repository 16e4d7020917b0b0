//! Test support for the OTLP codec: a reference converter (prost structs -> [`Payload`]), a
//! logical payload comparison with a readable diff, and proptest strategies for valid OTLP
//! requests of all three signals.
//!
//! The reference converter is deliberately naive (one arrow builder per column, one pass over
//! the prost tree) so that it is obviously correct by reading it next to the schema docs in
//! [`crate::schema`]. It is the oracle the hand-written decoder is checked against, and the way
//! encoder tests and benchmarks get payloads. It is not for production: it panics on data the
//! schema cannot hold (an id that is neither empty nor 16/8 bytes long).

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder,
    Float64Builder, Int32Builder, Int64Builder, ListArray, ListBuilder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, UInt32Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point, metric, number_data_point,
    summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::prelude::*;
use prost::Message;

use crate::payload::Payload;
use crate::schema::{AnyValueType, MetricType, Signal, Table, list_of};

// ---------------------------------------------------------------------------------------------
// Reference converter
// ---------------------------------------------------------------------------------------------

type DictB = StringDictionaryBuilder<UInt32Type>;

fn batch(t: Table, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(t.schema(), columns)
        .unwrap_or_else(|e| panic!("reference converter built a bad {t:?} batch: {e}"))
}

fn fsb_append(b: &mut FixedSizeBinaryBuilder, id: &[u8]) {
    // Empty bytes = absent id = null, per the schema docs.
    if id.is_empty() {
        b.append_null();
    } else {
        b.append_value(id)
            .unwrap_or_else(|e| panic!("id of length {} does not fit: {e}", id.len()));
    }
}

fn u64_list() -> ListBuilder<UInt64Builder> {
    ListBuilder::new(UInt64Builder::new()).with_field(list_item(DataType::UInt64))
}

fn f64_list() -> ListBuilder<Float64Builder> {
    ListBuilder::new(Float64Builder::new()).with_field(list_item(DataType::Float64))
}

fn list_item(dt: DataType) -> Arc<Field> {
    match list_of(dt) {
        DataType::List(f) => f,
        _ => unreachable!("list_of returns a List"),
    }
}

/// One AnyValue as (type, str, int, double, bool, bytes) column values.
type AnyRow<'a> = (
    AnyValueType,
    Option<&'a str>,
    Option<i64>,
    Option<f64>,
    Option<bool>,
    Option<Vec<u8>>,
);

/// The typed value columns of an AnyValue (`type`, `str`, `int`, `double`, `bool`, `bytes`).
#[derive(Default)]
struct AnyB {
    ty: UInt8Builder,
    s: StringBuilder,
    i: Int64Builder,
    d: Float64Builder,
    b: BooleanBuilder,
    by: BinaryBuilder,
}

impl AnyB {
    /// `none_type`: what an absent AnyValue message is stored as (Absent for attributes,
    /// Empty for log bodies).
    fn push(&mut self, v: Option<&AnyValue>, none_type: AnyValueType) {
        let (ty, s, i, d, b, by): AnyRow<'_> = match v {
            None => (none_type, None, None, None, None, None),
            Some(av) => match &av.value {
                None => (AnyValueType::Empty, None, None, None, None, None),
                Some(any_value::Value::StringValue(x)) => {
                    (AnyValueType::Str, Some(x), None, None, None, None)
                }
                Some(any_value::Value::IntValue(x)) => {
                    (AnyValueType::Int, None, Some(*x), None, None, None)
                }
                Some(any_value::Value::DoubleValue(x)) => {
                    (AnyValueType::Double, None, None, Some(*x), None, None)
                }
                Some(any_value::Value::BoolValue(x)) => {
                    (AnyValueType::Bool, None, None, None, Some(*x), None)
                }
                Some(any_value::Value::BytesValue(x)) => {
                    (AnyValueType::Bytes, None, None, None, None, Some(x.clone()))
                }
                Some(any_value::Value::ArrayValue(_)) => (
                    AnyValueType::Array,
                    None,
                    None,
                    None,
                    None,
                    Some(av.encode_to_vec()),
                ),
                Some(any_value::Value::KvlistValue(_)) => (
                    AnyValueType::Map,
                    None,
                    None,
                    None,
                    None,
                    Some(av.encode_to_vec()),
                ),
                Some(any_value::Value::StringValueStrindex(_)) => {
                    panic!("string_value_strindex is profiles-only and not supported")
                }
            },
        };
        self.ty.append_value(ty as u8);
        self.s.append_option(s);
        self.i.append_option(i);
        self.d.append_option(d);
        self.b.append_option(b);
        self.by.append_option(by);
    }

    fn finish(&mut self) -> [ArrayRef; 6] {
        [
            Arc::new(self.ty.finish()),
            Arc::new(self.s.finish()),
            Arc::new(self.i.finish()),
            Arc::new(self.d.finish()),
            Arc::new(self.b.finish()),
            Arc::new(self.by.finish()),
        ]
    }
}

#[derive(Default)]
struct AttrsB {
    parent: UInt32Builder,
    key: DictB,
    value: AnyB,
}

impl AttrsB {
    fn push_all(&mut self, parent: u32, kvs: &[KeyValue]) {
        for kv in kvs {
            self.parent.append_value(parent);
            self.key.append_value(&kv.key);
            self.value.push(kv.value.as_ref(), AnyValueType::Absent);
        }
    }

    fn finish(&mut self, t: Table) -> RecordBatch {
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(self.parent.finish()), Arc::new(self.key.finish())];
        cols.extend(self.value.finish());
        batch(t, cols)
    }
}

/// Resources and scopes (with their attributes), shared by the three signals.
#[derive(Default)]
struct EnvelopeB {
    res_present: BooleanBuilder,
    res_dropped: UInt32Builder,
    res_schema_url: StringBuilder,
    res_entity_refs: BinaryBuilder,
    res_attrs: AttrsB,
    res_rows: u32,
    scope_parent: UInt32Builder,
    scope_present: BooleanBuilder,
    scope_name: DictB,
    scope_version: DictB,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
    scope_attrs: AttrsB,
    scope_rows: u32,
}

fn entity_refs_bytes(refs: &[EntityRef]) -> Vec<u8> {
    // Each EntityRef as it appears inside Resource: field 3, length, message.
    let mut out = Vec::new();
    for r in refs {
        prost::encoding::message::encode(3, r, &mut out);
    }
    out
}

impl EnvelopeB {
    fn push_resource(&mut self, res: Option<&Resource>, schema_url: &str) -> u32 {
        let row = self.res_rows;
        self.res_rows += 1;
        self.res_present.append_value(res.is_some());
        self.res_dropped
            .append_value(res.map_or(0, |r| r.dropped_attributes_count));
        self.res_schema_url.append_value(schema_url);
        self.res_entity_refs
            .append_value(entity_refs_bytes(res.map_or(&[], |r| &r.entity_refs)));
        if let Some(r) = res {
            self.res_attrs.push_all(row, &r.attributes);
        }
        row
    }

    fn push_scope(
        &mut self,
        resource: u32,
        scope: Option<&InstrumentationScope>,
        schema_url: &str,
    ) -> u32 {
        let row = self.scope_rows;
        self.scope_rows += 1;
        self.scope_parent.append_value(resource);
        self.scope_present.append_value(scope.is_some());
        self.scope_name.append_value(scope.map_or("", |s| &s.name));
        self.scope_version
            .append_value(scope.map_or("", |s| &s.version));
        self.scope_dropped
            .append_value(scope.map_or(0, |s| s.dropped_attributes_count));
        self.scope_schema_url.append_value(schema_url);
        if let Some(s) = scope {
            self.scope_attrs.push_all(row, &s.attributes);
        }
        row
    }

    fn finish(mut self) -> Vec<(Table, RecordBatch)> {
        vec![
            (
                Table::Resources,
                batch(
                    Table::Resources,
                    vec![
                        Arc::new(self.res_present.finish()),
                        Arc::new(self.res_dropped.finish()),
                        Arc::new(self.res_schema_url.finish()),
                        Arc::new(self.res_entity_refs.finish()),
                    ],
                ),
            ),
            (
                Table::ResourceAttrs,
                self.res_attrs.finish(Table::ResourceAttrs),
            ),
            (
                Table::Scopes,
                batch(
                    Table::Scopes,
                    vec![
                        Arc::new(self.scope_parent.finish()),
                        Arc::new(self.scope_present.finish()),
                        Arc::new(self.scope_name.finish()),
                        Arc::new(self.scope_version.finish()),
                        Arc::new(self.scope_dropped.finish()),
                        Arc::new(self.scope_schema_url.finish()),
                    ],
                ),
            ),
            (
                Table::ScopeAttrs,
                self.scope_attrs.finish(Table::ScopeAttrs),
            ),
        ]
    }
}

fn payload(signal: Signal, tables: Vec<(Table, RecordBatch)>) -> Payload {
    let p = Payload::from_tables(signal, tables)
        .unwrap_or_else(|e| panic!("reference converter built a bad payload: {e}"));
    if let Err(e) = p.validate() {
        panic!("reference converter broke an invariant: {e}");
    }
    p
}

/// `spans` under one resource and one scope, as a payload.
pub fn one_scope(spans: Vec<Span>) -> Payload {
    reference_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// Converts a trace request to a [`Payload`], naively, following the schema docs.
pub fn reference_traces(req: &ExportTraceServiceRequest) -> Payload {
    let mut env = EnvelopeB::default();
    let mut sp_parent = UInt32Builder::new();
    let mut sp_trace_id = FixedSizeBinaryBuilder::new(16);
    let mut sp_span_id = FixedSizeBinaryBuilder::new(8);
    let mut sp_trace_state = StringBuilder::new();
    let mut sp_parent_span_id = FixedSizeBinaryBuilder::new(8);
    let mut sp_flags = UInt32Builder::new();
    let mut sp_name = DictB::new();
    let mut sp_kind = Int32Builder::new();
    let mut sp_start = UInt64Builder::new();
    let mut sp_end = UInt64Builder::new();
    let mut sp_dropped_attrs = UInt32Builder::new();
    let mut sp_dropped_events = UInt32Builder::new();
    let mut sp_dropped_links = UInt32Builder::new();
    let mut sp_status_present = BooleanBuilder::new();
    let mut sp_status_code = Int32Builder::new();
    let mut sp_status_message = StringBuilder::new();
    let mut span_attrs = AttrsB::default();

    let mut ev_parent = UInt32Builder::new();
    let mut ev_time = UInt64Builder::new();
    let mut ev_name = DictB::new();
    let mut ev_dropped = UInt32Builder::new();
    let mut ev_attrs = AttrsB::default();
    let mut ev_rows = 0u32;

    let mut ln_parent = UInt32Builder::new();
    let mut ln_trace_id = FixedSizeBinaryBuilder::new(16);
    let mut ln_span_id = FixedSizeBinaryBuilder::new(8);
    let mut ln_trace_state = StringBuilder::new();
    let mut ln_dropped = UInt32Builder::new();
    let mut ln_flags = UInt32Builder::new();
    let mut ln_attrs = AttrsB::default();
    let mut ln_rows = 0u32;

    let mut span_rows = 0u32;
    for rs in &req.resource_spans {
        let r = env.push_resource(rs.resource.as_ref(), &rs.schema_url);
        for ss in &rs.scope_spans {
            let s = env.push_scope(r, ss.scope.as_ref(), &ss.schema_url);
            for sp in &ss.spans {
                let row = span_rows;
                span_rows += 1;
                sp_parent.append_value(s);
                fsb_append(&mut sp_trace_id, &sp.trace_id);
                fsb_append(&mut sp_span_id, &sp.span_id);
                sp_trace_state.append_value(&sp.trace_state);
                fsb_append(&mut sp_parent_span_id, &sp.parent_span_id);
                sp_flags.append_value(sp.flags);
                sp_name.append_value(&sp.name);
                sp_kind.append_value(sp.kind);
                sp_start.append_value(sp.start_time_unix_nano);
                sp_end.append_value(sp.end_time_unix_nano);
                sp_dropped_attrs.append_value(sp.dropped_attributes_count);
                sp_dropped_events.append_value(sp.dropped_events_count);
                sp_dropped_links.append_value(sp.dropped_links_count);
                sp_status_present.append_value(sp.status.is_some());
                sp_status_code.append_value(sp.status.as_ref().map_or(0, |s| s.code));
                sp_status_message
                    .append_value(sp.status.as_ref().map_or("", |s| s.message.as_str()));
                span_attrs.push_all(row, &sp.attributes);
                for ev in &sp.events {
                    ev_parent.append_value(row);
                    ev_time.append_value(ev.time_unix_nano);
                    ev_name.append_value(&ev.name);
                    ev_dropped.append_value(ev.dropped_attributes_count);
                    ev_attrs.push_all(ev_rows, &ev.attributes);
                    ev_rows += 1;
                }
                for ln in &sp.links {
                    ln_parent.append_value(row);
                    fsb_append(&mut ln_trace_id, &ln.trace_id);
                    fsb_append(&mut ln_span_id, &ln.span_id);
                    ln_trace_state.append_value(&ln.trace_state);
                    ln_dropped.append_value(ln.dropped_attributes_count);
                    ln_flags.append_value(ln.flags);
                    ln_attrs.push_all(ln_rows, &ln.attributes);
                    ln_rows += 1;
                }
            }
        }
    }

    let mut tables = env.finish();
    tables.push((
        Table::Spans,
        batch(
            Table::Spans,
            vec![
                Arc::new(sp_parent.finish()),
                Arc::new(sp_trace_id.finish()),
                Arc::new(sp_span_id.finish()),
                Arc::new(sp_trace_state.finish()),
                Arc::new(sp_parent_span_id.finish()),
                Arc::new(sp_flags.finish()),
                Arc::new(sp_name.finish()),
                Arc::new(sp_kind.finish()),
                Arc::new(sp_start.finish()),
                Arc::new(sp_end.finish()),
                Arc::new(sp_dropped_attrs.finish()),
                Arc::new(sp_dropped_events.finish()),
                Arc::new(sp_dropped_links.finish()),
                Arc::new(sp_status_present.finish()),
                Arc::new(sp_status_code.finish()),
                Arc::new(sp_status_message.finish()),
            ],
        ),
    ));
    tables.push((Table::SpanAttrs, span_attrs.finish(Table::SpanAttrs)));
    tables.push((
        Table::SpanEvents,
        batch(
            Table::SpanEvents,
            vec![
                Arc::new(ev_parent.finish()),
                Arc::new(ev_time.finish()),
                Arc::new(ev_name.finish()),
                Arc::new(ev_dropped.finish()),
            ],
        ),
    ));
    tables.push((
        Table::SpanEventAttrs,
        ev_attrs.finish(Table::SpanEventAttrs),
    ));
    tables.push((
        Table::SpanLinks,
        batch(
            Table::SpanLinks,
            vec![
                Arc::new(ln_parent.finish()),
                Arc::new(ln_trace_id.finish()),
                Arc::new(ln_span_id.finish()),
                Arc::new(ln_trace_state.finish()),
                Arc::new(ln_dropped.finish()),
                Arc::new(ln_flags.finish()),
            ],
        ),
    ));
    tables.push((Table::SpanLinkAttrs, ln_attrs.finish(Table::SpanLinkAttrs)));
    payload(Signal::Traces, tables)
}

#[derive(Default)]
struct ExemplarsB {
    parent: UInt32Builder,
    time: UInt64Builder,
    int: Int64Builder,
    double: Float64Builder,
    span_id: Option<FixedSizeBinaryBuilder>,
    trace_id: Option<FixedSizeBinaryBuilder>,
    attrs: AttrsB,
    rows: u32,
}

impl ExemplarsB {
    fn push_all(&mut self, point: u32, exemplars: &[Exemplar]) {
        let span_id = self
            .span_id
            .get_or_insert_with(|| FixedSizeBinaryBuilder::new(8));
        let trace_id = self
            .trace_id
            .get_or_insert_with(|| FixedSizeBinaryBuilder::new(16));
        for ex in exemplars {
            self.parent.append_value(point);
            self.time.append_value(ex.time_unix_nano);
            let (i, d) = match ex.value {
                None => (None, None),
                Some(exemplar::Value::AsInt(i)) => (Some(i), None),
                Some(exemplar::Value::AsDouble(d)) => (None, Some(d)),
            };
            self.int.append_option(i);
            self.double.append_option(d);
            fsb_append(span_id, &ex.span_id);
            fsb_append(trace_id, &ex.trace_id);
            self.attrs.push_all(self.rows, &ex.filtered_attributes);
            self.rows += 1;
        }
    }

    fn finish(mut self, t: Table, attrs_t: Table) -> [(Table, RecordBatch); 2] {
        let mut span_id = self
            .span_id
            .take()
            .unwrap_or_else(|| FixedSizeBinaryBuilder::new(8));
        let mut trace_id = self
            .trace_id
            .take()
            .unwrap_or_else(|| FixedSizeBinaryBuilder::new(16));
        [
            (
                t,
                batch(
                    t,
                    vec![
                        Arc::new(self.parent.finish()),
                        Arc::new(self.time.finish()),
                        Arc::new(self.int.finish()),
                        Arc::new(self.double.finish()),
                        Arc::new(span_id.finish()),
                        Arc::new(trace_id.finish()),
                    ],
                ),
            ),
            (attrs_t, self.attrs.finish(attrs_t)),
        ]
    }
}

/// Converts a metrics request to a [`Payload`], naively, following the schema docs.
pub fn reference_metrics(req: &ExportMetricsServiceRequest) -> Payload {
    let mut env = EnvelopeB::default();
    let mut m_parent = UInt32Builder::new();
    let mut m_name = DictB::new();
    let mut m_desc = DictB::new();
    let mut m_unit = DictB::new();
    let mut m_type = UInt8Builder::new();
    let mut m_temporality = Int32Builder::new();
    let mut m_monotonic = BooleanBuilder::new();
    let mut m_meta = AttrsB::default();
    let mut m_rows = 0u32;

    // number points
    let mut np_parent = UInt32Builder::new();
    let mut np_start = UInt64Builder::new();
    let mut np_time = UInt64Builder::new();
    let mut np_int = Int64Builder::new();
    let mut np_double = Float64Builder::new();
    let mut np_flags = UInt32Builder::new();
    let mut np_attrs = AttrsB::default();
    let mut np_ex = ExemplarsB::default();
    let mut np_rows = 0u32;
    // histogram points
    let mut hp_parent = UInt32Builder::new();
    let mut hp_start = UInt64Builder::new();
    let mut hp_time = UInt64Builder::new();
    let mut hp_count = UInt64Builder::new();
    let mut hp_sum = Float64Builder::new();
    let mut hp_buckets = u64_list();
    let mut hp_bounds = f64_list();
    let mut hp_flags = UInt32Builder::new();
    let mut hp_min = Float64Builder::new();
    let mut hp_max = Float64Builder::new();
    let mut hp_attrs = AttrsB::default();
    let mut hp_ex = ExemplarsB::default();
    let mut hp_rows = 0u32;
    // exponential histogram points
    let mut ep_parent = UInt32Builder::new();
    let mut ep_start = UInt64Builder::new();
    let mut ep_time = UInt64Builder::new();
    let mut ep_count = UInt64Builder::new();
    let mut ep_sum = Float64Builder::new();
    let mut ep_scale = Int32Builder::new();
    let mut ep_zero_count = UInt64Builder::new();
    let mut ep_pos_offset = Int32Builder::new();
    let mut ep_pos_counts = u64_list();
    let mut ep_neg_offset = Int32Builder::new();
    let mut ep_neg_counts = u64_list();
    let mut ep_flags = UInt32Builder::new();
    let mut ep_min = Float64Builder::new();
    let mut ep_max = Float64Builder::new();
    let mut ep_zero_threshold = Float64Builder::new();
    let mut ep_attrs = AttrsB::default();
    let mut ep_ex = ExemplarsB::default();
    let mut ep_rows = 0u32;
    // summary points
    let mut sp_parent = UInt32Builder::new();
    let mut sp_start = UInt64Builder::new();
    let mut sp_time = UInt64Builder::new();
    let mut sp_count = UInt64Builder::new();
    let mut sp_sum = Float64Builder::new();
    let mut sp_quantiles = f64_list();
    let mut sp_values = f64_list();
    let mut sp_flags = UInt32Builder::new();
    let mut sp_attrs = AttrsB::default();
    let mut sp_rows = 0u32;

    for rm in &req.resource_metrics {
        let r = env.push_resource(rm.resource.as_ref(), &rm.schema_url);
        for sm in &rm.scope_metrics {
            let s = env.push_scope(r, sm.scope.as_ref(), &sm.schema_url);
            for m in &sm.metrics {
                let row = m_rows;
                m_rows += 1;
                m_parent.append_value(s);
                m_name.append_value(&m.name);
                m_desc.append_value(&m.description);
                m_unit.append_value(&m.unit);
                m_meta.push_all(row, &m.metadata);
                let (ty, temporality, monotonic) = match &m.data {
                    None => (MetricType::Empty, 0, false),
                    Some(metric::Data::Gauge(_)) => (MetricType::Gauge, 0, false),
                    Some(metric::Data::Sum(d)) => {
                        (MetricType::Sum, d.aggregation_temporality, d.is_monotonic)
                    }
                    Some(metric::Data::Histogram(d)) => {
                        (MetricType::Histogram, d.aggregation_temporality, false)
                    }
                    Some(metric::Data::ExponentialHistogram(d)) => (
                        MetricType::ExponentialHistogram,
                        d.aggregation_temporality,
                        false,
                    ),
                    Some(metric::Data::Summary(_)) => (MetricType::Summary, 0, false),
                };
                m_type.append_value(ty as u8);
                m_temporality.append_value(temporality);
                m_monotonic.append_value(monotonic);

                let number_points: &[NumberDataPoint] = match &m.data {
                    Some(metric::Data::Gauge(d)) => &d.data_points,
                    Some(metric::Data::Sum(d)) => &d.data_points,
                    _ => &[],
                };
                for p in number_points {
                    np_parent.append_value(row);
                    np_start.append_value(p.start_time_unix_nano);
                    np_time.append_value(p.time_unix_nano);
                    let (i, d) = match p.value {
                        None => (None, None),
                        Some(number_data_point::Value::AsInt(i)) => (Some(i), None),
                        Some(number_data_point::Value::AsDouble(d)) => (None, Some(d)),
                    };
                    np_int.append_option(i);
                    np_double.append_option(d);
                    np_flags.append_value(p.flags);
                    np_attrs.push_all(np_rows, &p.attributes);
                    np_ex.push_all(np_rows, &p.exemplars);
                    np_rows += 1;
                }
                if let Some(metric::Data::Histogram(h)) = &m.data {
                    for p in &h.data_points {
                        hp_parent.append_value(row);
                        hp_start.append_value(p.start_time_unix_nano);
                        hp_time.append_value(p.time_unix_nano);
                        hp_count.append_value(p.count);
                        hp_sum.append_option(p.sum);
                        hp_buckets.values().append_slice(&p.bucket_counts);
                        hp_buckets.append(true);
                        hp_bounds.values().append_slice(&p.explicit_bounds);
                        hp_bounds.append(true);
                        hp_flags.append_value(p.flags);
                        hp_min.append_option(p.min);
                        hp_max.append_option(p.max);
                        hp_attrs.push_all(hp_rows, &p.attributes);
                        hp_ex.push_all(hp_rows, &p.exemplars);
                        hp_rows += 1;
                    }
                }
                if let Some(metric::Data::ExponentialHistogram(h)) = &m.data {
                    for p in &h.data_points {
                        ep_parent.append_value(row);
                        ep_start.append_value(p.start_time_unix_nano);
                        ep_time.append_value(p.time_unix_nano);
                        ep_count.append_value(p.count);
                        ep_sum.append_option(p.sum);
                        ep_scale.append_value(p.scale);
                        ep_zero_count.append_value(p.zero_count);
                        for (b, offset, counts) in [
                            (&p.positive, &mut ep_pos_offset, &mut ep_pos_counts),
                            (&p.negative, &mut ep_neg_offset, &mut ep_neg_counts),
                        ] {
                            // A null offset marks an absent Buckets message.
                            offset.append_option(b.as_ref().map(|b| b.offset));
                            if let Some(b) = b {
                                counts.values().append_slice(&b.bucket_counts);
                            }
                            counts.append(true);
                        }
                        ep_flags.append_value(p.flags);
                        ep_min.append_option(p.min);
                        ep_max.append_option(p.max);
                        ep_zero_threshold.append_value(p.zero_threshold);
                        ep_attrs.push_all(ep_rows, &p.attributes);
                        ep_ex.push_all(ep_rows, &p.exemplars);
                        ep_rows += 1;
                    }
                }
                if let Some(metric::Data::Summary(h)) = &m.data {
                    for p in &h.data_points {
                        sp_parent.append_value(row);
                        sp_start.append_value(p.start_time_unix_nano);
                        sp_time.append_value(p.time_unix_nano);
                        sp_count.append_value(p.count);
                        sp_sum.append_value(p.sum);
                        for q in &p.quantile_values {
                            sp_quantiles.values().append_value(q.quantile);
                            sp_values.values().append_value(q.value);
                        }
                        sp_quantiles.append(true);
                        sp_values.append(true);
                        sp_flags.append_value(p.flags);
                        sp_attrs.push_all(sp_rows, &p.attributes);
                        sp_rows += 1;
                    }
                }
            }
        }
    }

    let mut tables = env.finish();
    tables.push((
        Table::Metrics,
        batch(
            Table::Metrics,
            vec![
                Arc::new(m_parent.finish()),
                Arc::new(m_name.finish()),
                Arc::new(m_desc.finish()),
                Arc::new(m_unit.finish()),
                Arc::new(m_type.finish()),
                Arc::new(m_temporality.finish()),
                Arc::new(m_monotonic.finish()),
            ],
        ),
    ));
    tables.push((Table::MetricMetadata, m_meta.finish(Table::MetricMetadata)));
    tables.push((
        Table::NumberPoints,
        batch(
            Table::NumberPoints,
            vec![
                Arc::new(np_parent.finish()),
                Arc::new(np_start.finish()),
                Arc::new(np_time.finish()),
                Arc::new(np_int.finish()),
                Arc::new(np_double.finish()),
                Arc::new(np_flags.finish()),
            ],
        ),
    ));
    tables.push((
        Table::NumberPointAttrs,
        np_attrs.finish(Table::NumberPointAttrs),
    ));
    tables.extend(np_ex.finish(Table::NumberExemplars, Table::NumberExemplarAttrs));
    tables.push((
        Table::HistogramPoints,
        batch(
            Table::HistogramPoints,
            vec![
                Arc::new(hp_parent.finish()),
                Arc::new(hp_start.finish()),
                Arc::new(hp_time.finish()),
                Arc::new(hp_count.finish()),
                Arc::new(hp_sum.finish()),
                Arc::new(hp_buckets.finish()),
                Arc::new(hp_bounds.finish()),
                Arc::new(hp_flags.finish()),
                Arc::new(hp_min.finish()),
                Arc::new(hp_max.finish()),
            ],
        ),
    ));
    tables.push((
        Table::HistogramPointAttrs,
        hp_attrs.finish(Table::HistogramPointAttrs),
    ));
    tables.extend(hp_ex.finish(Table::HistogramExemplars, Table::HistogramExemplarAttrs));
    tables.push((
        Table::ExpHistogramPoints,
        batch(
            Table::ExpHistogramPoints,
            vec![
                Arc::new(ep_parent.finish()),
                Arc::new(ep_start.finish()),
                Arc::new(ep_time.finish()),
                Arc::new(ep_count.finish()),
                Arc::new(ep_sum.finish()),
                Arc::new(ep_scale.finish()),
                Arc::new(ep_zero_count.finish()),
                Arc::new(ep_pos_offset.finish()),
                Arc::new(ep_pos_counts.finish()),
                Arc::new(ep_neg_offset.finish()),
                Arc::new(ep_neg_counts.finish()),
                Arc::new(ep_flags.finish()),
                Arc::new(ep_min.finish()),
                Arc::new(ep_max.finish()),
                Arc::new(ep_zero_threshold.finish()),
            ],
        ),
    ));
    tables.push((
        Table::ExpHistogramPointAttrs,
        ep_attrs.finish(Table::ExpHistogramPointAttrs),
    ));
    tables.extend(ep_ex.finish(
        Table::ExpHistogramExemplars,
        Table::ExpHistogramExemplarAttrs,
    ));
    tables.push((
        Table::SummaryPoints,
        batch(
            Table::SummaryPoints,
            vec![
                Arc::new(sp_parent.finish()),
                Arc::new(sp_start.finish()),
                Arc::new(sp_time.finish()),
                Arc::new(sp_count.finish()),
                Arc::new(sp_sum.finish()),
                Arc::new(sp_quantiles.finish()),
                Arc::new(sp_values.finish()),
                Arc::new(sp_flags.finish()),
            ],
        ),
    ));
    tables.push((
        Table::SummaryPointAttrs,
        sp_attrs.finish(Table::SummaryPointAttrs),
    ));
    payload(Signal::Metrics, tables)
}

/// Converts a logs request to a [`Payload`], naively, following the schema docs.
///
/// No body is `Absent`; a body that is present but holds no value
/// (`Some(AnyValue { value: None })`) is `Empty`.
pub fn reference_logs(req: &ExportLogsServiceRequest) -> Payload {
    let mut env = EnvelopeB::default();
    let mut parent = UInt32Builder::new();
    let mut time = UInt64Builder::new();
    let mut observed = UInt64Builder::new();
    let mut severity_number = Int32Builder::new();
    let mut severity_text = DictB::new();
    let mut dropped = UInt32Builder::new();
    let mut flags = UInt32Builder::new();
    let mut trace_id = FixedSizeBinaryBuilder::new(16);
    let mut span_id = FixedSizeBinaryBuilder::new(8);
    let mut event_name = DictB::new();
    let mut body = AnyB::default();
    let mut attrs = AttrsB::default();
    let mut rows = 0u32;
    for rl in &req.resource_logs {
        let r = env.push_resource(rl.resource.as_ref(), &rl.schema_url);
        for sl in &rl.scope_logs {
            let s = env.push_scope(r, sl.scope.as_ref(), &sl.schema_url);
            for l in &sl.log_records {
                parent.append_value(s);
                time.append_value(l.time_unix_nano);
                observed.append_value(l.observed_time_unix_nano);
                severity_number.append_value(l.severity_number);
                severity_text.append_value(&l.severity_text);
                dropped.append_value(l.dropped_attributes_count);
                flags.append_value(l.flags);
                fsb_append(&mut trace_id, &l.trace_id);
                fsb_append(&mut span_id, &l.span_id);
                event_name.append_value(&l.event_name);
                body.push(l.body.as_ref(), AnyValueType::Absent);
                attrs.push_all(rows, &l.attributes);
                rows += 1;
            }
        }
    }
    let mut tables = env.finish();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(parent.finish()),
        Arc::new(time.finish()),
        Arc::new(observed.finish()),
        Arc::new(severity_number.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(dropped.finish()),
        Arc::new(flags.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(event_name.finish()),
    ];
    cols.extend(body.finish());
    tables.push((Table::Logs, batch(Table::Logs, cols)));
    tables.push((Table::LogAttrs, attrs.finish(Table::LogAttrs)));
    payload(Signal::Logs, tables)
}

// ---------------------------------------------------------------------------------------------
// Logical comparison
// ---------------------------------------------------------------------------------------------

/// Makes a column comparable by value: dictionaries become plain Utf8 (two decoders may build
/// different dictionaries for the same strings), and floats become their bit patterns (so NaN
/// equals the same NaN, and -0.0 differs from 0.0, as on the wire).
fn normalize(a: &ArrayRef) -> ArrayRef {
    match a.data_type() {
        DataType::Dictionary(_, v) => match cast(a, v) {
            Ok(c) => c,
            Err(e) => panic!("cannot cast dictionary column: {e}"),
        },
        DataType::Float64 => Arc::new(
            a.as_primitive::<Float64Type>()
                .unary::<_, Int64Type>(|v| v.to_bits() as i64),
        ),
        DataType::List(f) if f.data_type() == &DataType::Float64 => {
            let l = a.as_list::<i32>();
            let values: ArrayRef = Arc::new(
                l.values()
                    .as_primitive::<Float64Type>()
                    .unary::<_, Int64Type>(|v| v.to_bits() as i64),
            );
            let field = Arc::new(Field::new(f.name(), DataType::Int64, f.is_nullable()));
            Arc::new(ListArray::new(
                field,
                l.offsets().clone(),
                values,
                l.nulls().cloned(),
            ))
        }
        _ => a.clone(),
    }
}

fn cell(a: &ArrayRef, row: usize) -> String {
    let opts = FormatOptions::default().with_null("null");
    match ArrayFormatter::try_new(a.as_ref(), &opts) {
        Ok(f) => f.value(row).to_string(),
        Err(e) => format!("<unprintable: {e}>"),
    }
}

/// The first difference between two payloads, described for a human, or `None` if they hold
/// the same data (dictionary columns compared by value, floats by bit pattern).
pub fn payload_diff(a: &Payload, b: &Payload) -> Option<String> {
    if a.signal() != b.signal() {
        return Some(format!("signal: {:?} != {:?}", a.signal(), b.signal()));
    }
    for (t, ta) in a.tables() {
        let tb = b.table(t);
        if ta.num_rows() != tb.num_rows() {
            return Some(format!(
                "table {t:?}: {} rows != {} rows",
                ta.num_rows(),
                tb.num_rows()
            ));
        }
        for (i, field) in t.schema().fields().iter().enumerate() {
            let ca = normalize(ta.column(i));
            let cb = normalize(tb.column(i));
            if ca.to_data() == cb.to_data() {
                continue;
            }
            for row in 0..ca.len() {
                if ca.slice(row, 1).to_data() != cb.slice(row, 1).to_data() {
                    let mut msg = String::new();
                    let _ = write!(
                        msg,
                        "table {t:?}, column {:?}, row {row}: {} != {}",
                        field.name(),
                        cell(ta.column(i), row),
                        cell(tb.column(i), row)
                    );
                    return Some(msg);
                }
            }
            return Some(format!(
                "table {t:?}, column {:?}: arrays differ (no single row found)",
                field.name()
            ));
        }
    }
    None
}

/// Asserts two payloads hold the same data, with the first mismatching table/column/row in the
/// panic message.
#[track_caller]
pub fn assert_payload_eq(a: &Payload, b: &Payload) {
    if let Some(diff) = payload_diff(a, b) {
        panic!("payloads differ: {diff}");
    }
}

// ---------------------------------------------------------------------------------------------
// proptest strategies
// ---------------------------------------------------------------------------------------------

fn arb_id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => proptest::collection::vec(any::<u8>(), len),
    ]
}

/// Short strings: mostly realistic ASCII, sometimes empty, sometimes arbitrary Unicode.
fn arb_str() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        6 => "[a-z][a-z0-9._/-]{0,16}",
        1 => ".{0,6}",
    ]
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "service.name", "http.method", "http.route", "k8s.pod.name", "db.system", "a", "",
        ])
        .prop_map(str::to_string),
        2 => arb_str(),
    ]
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1e6f64..1e6f64,
        1 => Just(0.0f64),
        1 => Just(-0.0f64),
        1 => any::<f64>(),
    ]
}

fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..1000, any::<u64>()]
}

fn arb_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 0u32..200, any::<u32>()]
}

fn arb_i32() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0i32), -3i32..30, any::<i32>()]
}

/// An `AnyValue` a few levels deep: scalars, bytes, empty, and arrays/kvlists (sometimes empty)
/// whose elements may themselves be empty or absent.
pub fn arb_any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        arb_str().prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        prop_oneof![Just(0i64), -100i64..100, any::<i64>()].prop_map(any_value::Value::IntValue),
        arb_f64().prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
    ];
    let leaf = prop_oneof![
        1 => Just(AnyValue { value: None }),
        8 => leaf.prop_map(|v| AnyValue { value: Some(v) }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            proptest::collection::vec((arb_key(), proptest::option::weighted(0.9, inner)), 0..4)
                .prop_map(|kvs| AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                key_strindex: 0,
                            })
                            .collect(),
                    })),
                }),
        ]
    })
}

/// Attributes: mostly scalar values, sometimes nested, empty or absent values.
pub fn arb_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (arb_key(), proptest::option::weighted(0.95, arb_any_value())).prop_map(|(key, value)| {
            KeyValue {
                key,
                value,
                key_strindex: 0,
            }
        }),
        0..4,
    )
}

fn arb_entity_ref() -> impl Strategy<Value = EntityRef> {
    (
        arb_str(),
        arb_str(),
        proptest::collection::vec(arb_str(), 0..3),
        proptest::collection::vec(arb_str(), 0..3),
    )
        .prop_map(
            |(schema_url, r#type, id_keys, description_keys)| EntityRef {
                schema_url,
                r#type,
                id_keys,
                description_keys,
            },
        )
}

fn arb_resource() -> impl Strategy<Value = Option<Resource>> {
    proptest::option::weighted(
        0.85,
        (
            arb_attributes(),
            arb_u32(),
            proptest::collection::vec(arb_entity_ref(), 0..2),
        )
            .prop_map(
                |(attributes, dropped_attributes_count, entity_refs)| Resource {
                    attributes,
                    dropped_attributes_count,
                    entity_refs,
                },
            ),
    )
}

fn arb_scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    proptest::option::weighted(
        0.85,
        (arb_str(), arb_str(), arb_attributes(), arb_u32()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            },
        ),
    )
}

fn arb_span() -> impl Strategy<Value = Span> {
    let ids = (arb_id(16), arb_id(8), arb_str(), arb_id(8), arb_u32());
    let main = (
        arb_str(),
        arb_i32(),
        arb_u64(),
        arb_u64(),
        arb_attributes(),
        arb_u32(),
    );
    let events = proptest::collection::vec(
        (arb_u64(), arb_str(), arb_attributes(), arb_u32()).prop_map(
            |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
                time_unix_nano,
                name,
                attributes,
                dropped_attributes_count,
            },
        ),
        0..3,
    );
    let links = proptest::collection::vec(
        (
            arb_id(16),
            arb_id(8),
            arb_str(),
            arb_attributes(),
            arb_u32(),
            arb_u32(),
        )
            .prop_map(
                |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                    span::Link {
                        trace_id,
                        span_id,
                        trace_state,
                        attributes,
                        dropped_attributes_count,
                        flags,
                    }
                },
            ),
        0..3,
    );
    let status = proptest::option::weighted(
        0.7,
        (arb_str(), 0i32..3).prop_map(|(message, code)| Status { message, code }),
    );
    (ids, main, events, links, (arb_u32(), arb_u32()), status).prop_map(
        |(
            (trace_id, span_id, trace_state, parent_span_id, flags),
            (name, kind, start, end, attributes, dropped_attributes_count),
            events,
            links,
            (dropped_events_count, dropped_links_count),
            status,
        )| Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
        },
    )
}

/// A valid trace request: 0-3 resources of 0-3 scopes of 0-4 spans, with events and links.
pub fn arb_traces_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (
        arb_scope(),
        proptest::collection::vec(arb_span(), 0..4),
        arb_str(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        });
    let resource_spans = (
        arb_resource(),
        proptest::collection::vec(scope_spans, 0..3),
        arb_str(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn arb_exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    proptest::collection::vec(
        (
            arb_attributes(),
            arb_u64(),
            proptest::option::weighted(
                0.9,
                prop_oneof![
                    any::<i64>().prop_map(exemplar::Value::AsInt),
                    arb_f64().prop_map(exemplar::Value::AsDouble),
                ],
            ),
            arb_id(8),
            arb_id(16),
        )
            .prop_map(
                |(filtered_attributes, time_unix_nano, value, span_id, trace_id)| Exemplar {
                    filtered_attributes,
                    time_unix_nano,
                    value,
                    span_id,
                    trace_id,
                },
            ),
        0..3,
    )
}

fn arb_number_points() -> impl Strategy<Value = Vec<NumberDataPoint>> {
    proptest::collection::vec(
        (
            arb_attributes(),
            arb_u64(),
            arb_u64(),
            arb_exemplars(),
            arb_u32(),
            proptest::option::weighted(
                0.9,
                prop_oneof![
                    prop_oneof![Just(0i64), any::<i64>()].prop_map(number_data_point::Value::AsInt),
                    arb_f64().prop_map(number_data_point::Value::AsDouble),
                ],
            ),
        )
            .prop_map(|(attributes, start, time, exemplars, flags, value)| {
                NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    exemplars,
                    flags,
                    value,
                }
            }),
        0..3,
    )
}

fn arb_opt_f64() -> impl Strategy<Value = Option<f64>> {
    proptest::option::weighted(0.7, arb_f64())
}

fn arb_histogram_points() -> impl Strategy<Value = Vec<HistogramDataPoint>> {
    proptest::collection::vec(
        (
            (
                arb_attributes(),
                arb_u64(),
                arb_u64(),
                arb_u64(),
                arb_opt_f64(),
            ),
            proptest::collection::vec(arb_u64(), 0..5),
            proptest::collection::vec(arb_f64(), 0..4),
            arb_exemplars(),
            (arb_u32(), arb_opt_f64(), arb_opt_f64()),
        )
            .prop_map(
                |(
                    (attributes, start, time, count, sum),
                    bucket_counts,
                    explicit_bounds,
                    exemplars,
                    (flags, min, max),
                )| HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    bucket_counts,
                    explicit_bounds,
                    exemplars,
                    flags,
                    min,
                    max,
                },
            ),
        0..3,
    )
}

fn arb_buckets() -> impl Strategy<Value = Option<exponential_histogram_data_point::Buckets>> {
    proptest::option::weighted(
        0.7,
        (arb_i32(), proptest::collection::vec(arb_u64(), 0..5)).prop_map(
            |(offset, bucket_counts)| exponential_histogram_data_point::Buckets {
                offset,
                bucket_counts,
            },
        ),
    )
}

fn arb_exp_histogram_points() -> impl Strategy<Value = Vec<ExponentialHistogramDataPoint>> {
    proptest::collection::vec(
        (
            (
                arb_attributes(),
                arb_u64(),
                arb_u64(),
                arb_u64(),
                arb_opt_f64(),
            ),
            (arb_i32(), arb_u64(), arb_buckets(), arb_buckets()),
            (arb_u32(), arb_exemplars()),
            (arb_opt_f64(), arb_opt_f64(), arb_f64()),
        )
            .prop_map(
                |(
                    (attributes, start, time, count, sum),
                    (scale, zero_count, positive, negative),
                    (flags, exemplars),
                    (min, max, zero_threshold),
                )| ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    flags,
                    exemplars,
                    min,
                    max,
                    zero_threshold,
                },
            ),
        0..3,
    )
}

fn arb_summary_points() -> impl Strategy<Value = Vec<SummaryDataPoint>> {
    proptest::collection::vec(
        (
            (arb_attributes(), arb_u64(), arb_u64(), arb_u64(), arb_f64()),
            proptest::collection::vec((arb_f64(), arb_f64()), 0..4),
            arb_u32(),
        )
            .prop_map(
                |((attributes, start, time, count, sum), quantiles, flags)| SummaryDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    quantile_values: quantiles
                        .into_iter()
                        .map(|(quantile, value)| summary_data_point::ValueAtQuantile {
                            quantile,
                            value,
                        })
                        .collect(),
                    flags,
                },
            ),
        0..3,
    )
}

fn arb_metric_data() -> impl Strategy<Value = Option<metric::Data>> {
    prop_oneof![
        1 => Just(None),
        3 => arb_number_points().prop_map(|data_points| Some(metric::Data::Gauge(Gauge { data_points }))),
        3 => (arb_number_points(), arb_i32(), any::<bool>()).prop_map(
            |(data_points, aggregation_temporality, is_monotonic)| {
                Some(metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality,
                    is_monotonic,
                }))
            }
        ),
        3 => (arb_histogram_points(), arb_i32()).prop_map(
            |(data_points, aggregation_temporality)| {
                Some(metric::Data::Histogram(Histogram {
                    data_points,
                    aggregation_temporality,
                }))
            }
        ),
        3 => (arb_exp_histogram_points(), arb_i32()).prop_map(
            |(data_points, aggregation_temporality)| {
                Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points,
                    aggregation_temporality,
                }))
            }
        ),
        3 => arb_summary_points()
            .prop_map(|data_points| Some(metric::Data::Summary(Summary { data_points }))),
    ]
}

fn arb_metric() -> impl Strategy<Value = Metric> {
    (
        arb_str(),
        arb_str(),
        arb_str(),
        arb_attributes(),
        arb_metric_data(),
    )
        .prop_map(|(name, description, unit, metadata, data)| Metric {
            name,
            description,
            unit,
            metadata,
            data,
        })
}

/// A valid metrics request with all five metric types (and metrics without data), exemplars,
/// optional sum/min/max and absent exponential-histogram buckets.
pub fn arb_metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let scope_metrics = (
        arb_scope(),
        proptest::collection::vec(arb_metric(), 0..4),
        arb_str(),
    )
        .prop_map(|(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        });
    let resource_metrics = (
        arb_resource(),
        proptest::collection::vec(scope_metrics, 0..3),
        arb_str(),
    )
        .prop_map(|(resource, scope_metrics, schema_url)| ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        });
    proptest::collection::vec(resource_metrics, 0..3)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

fn arb_log_record() -> impl Strategy<Value = LogRecord> {
    // Absent bodies, present-but-empty bodies (`Some(AnyValue { value: None })`) and every kind.
    let body = proptest::option::weighted(0.85, arb_any_value());
    (
        (arb_u64(), arb_u64(), arb_i32(), arb_str()),
        (body, arb_attributes(), arb_u32(), arb_u32()),
        (arb_id(16), arb_id(8), arb_str()),
    )
        .prop_map(
            |(
                (time, observed, severity_number, severity_text),
                (body, attributes, dropped_attributes_count, flags),
                (trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: observed,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

/// A valid logs request with every body kind (nested arrays/kvlists included) and absent
/// bodies.
pub fn arb_logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope_logs = (
        arb_scope(),
        proptest::collection::vec(arb_log_record(), 0..4),
        arb_str(),
    )
        .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        });
    let resource_logs = (
        arb_resource(),
        proptest::collection::vec(scope_logs, 0..3),
        arb_str(),
    )
        .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        });
    proptest::collection::vec(resource_logs, 0..3)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

/// `r` without resource `entity_refs`: what SDKs send (the skim leaves `entity_refs` to the
/// decoder, so requests with them are never clean).
pub fn without_entity_refs_traces(mut r: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for res in r
        .resource_spans
        .iter_mut()
        .filter_map(|rs| rs.resource.as_mut())
    {
        res.entity_refs.clear();
    }
    r
}

/// As [`without_entity_refs_traces`], for logs.
pub fn without_entity_refs_logs(mut r: ExportLogsServiceRequest) -> ExportLogsServiceRequest {
    for res in r
        .resource_logs
        .iter_mut()
        .filter_map(|rl| rl.resource.as_mut())
    {
        res.entity_refs.clear();
    }
    r
}

/// As [`without_entity_refs_traces`], for metrics.
pub fn without_entity_refs_metrics(
    mut r: ExportMetricsServiceRequest,
) -> ExportMetricsServiceRequest {
    for res in r
        .resource_metrics
        .iter_mut()
        .filter_map(|rm| rm.resource.as_mut())
    {
        res.entity_refs.clear();
    }
    r
}

/// A traces request in its wire form (as a receiver that skims hands it on): `resources`
/// resources of `per_resource` spans each, names of `name_len` bytes, span ids numbered from
/// `first` (big-endian).
pub fn wire_traces(first: u64, resources: usize, per_resource: usize, name_len: usize) -> Payload {
    let mut id = first;
    let req = ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|_| ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..per_resource)
                        .map(|_| {
                            id += 1;
                            Span {
                                trace_id: vec![1; 16],
                                span_id: (id - 1).to_be_bytes().to_vec(),
                                name: "s".repeat(name_len),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    let body = bytes::Bytes::from(req.encode_to_vec());
    let skim = crate::otlp::skim(Signal::Traces, &body).expect("clean");
    let p = Payload::from_wire(Signal::Traces, crate::payload::WireForm::new(body, &skim));
    assert!(p.wire().is_some());
    p
}
