//! Decoder tests: requests built with opentelemetry-proto's prost types, encoded with prost,
//! decoded with ours, checked column by column; bad input; never-panic properties; OTLP/JSON.

use super::*;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1 as m;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::Event, span::Link,
};
use prost::Message;

use crate::schema::{AnyValueType, MetricType, col};

// ---------- column helpers ----------

fn c<'b>(b: &'b RecordBatch, name: &str) -> &'b arrow::array::ArrayRef {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}
fn u32s(b: &RecordBatch, name: &str) -> Vec<u32> {
    c(b, name).as_primitive::<UInt32Type>().values().to_vec()
}
fn u64s(b: &RecordBatch, name: &str) -> Vec<u64> {
    c(b, name).as_primitive::<UInt64Type>().values().to_vec()
}
fn i32s(b: &RecordBatch, name: &str) -> Vec<i32> {
    c(b, name).as_primitive::<Int32Type>().values().to_vec()
}
fn u8s(b: &RecordBatch, name: &str) -> Vec<u8> {
    c(b, name).as_primitive::<UInt8Type>().values().to_vec()
}
fn opt_i64(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    c(b, name).as_primitive::<Int64Type>().iter().collect()
}
fn opt_i32(b: &RecordBatch, name: &str) -> Vec<Option<i32>> {
    c(b, name).as_primitive::<Int32Type>().iter().collect()
}
fn opt_f64(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    c(b, name).as_primitive::<Float64Type>().iter().collect()
}
fn f64s(b: &RecordBatch, name: &str) -> Vec<f64> {
    c(b, name).as_primitive::<Float64Type>().values().to_vec()
}
fn bools(b: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    c(b, name).as_boolean().iter().collect()
}
fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    c(b, name)
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}
fn dict(b: &RecordBatch, name: &str) -> Vec<String> {
    let d = c(b, name).as_dictionary::<UInt32Type>();
    let values = d.values().as_string::<i32>();
    d.keys()
        .values()
        .iter()
        .map(|&k| values.value(k as usize).to_string())
        .collect()
}
fn bins(b: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    c(b, name)
        .as_binary::<i32>()
        .iter()
        .map(|s| s.map(<[u8]>::to_vec))
        .collect()
}
fn fsb(b: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    c(b, name)
        .as_fixed_size_binary()
        .iter()
        .map(|s| s.map(<[u8]>::to_vec))
        .collect()
}
fn list_u64(b: &RecordBatch, name: &str) -> Vec<Vec<u64>> {
    let l = c(b, name).as_list::<i32>();
    (0..l.len())
        .map(|i| l.value(i).as_primitive::<UInt64Type>().values().to_vec())
        .collect()
}
fn list_f64(b: &RecordBatch, name: &str) -> Vec<Vec<f64>> {
    let l = c(b, name).as_list::<i32>();
    (0..l.len())
        .map(|i| l.value(i).as_primitive::<Float64Type>().values().to_vec())
        .collect()
}
fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

// ---------- prost builders ----------

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn kv_str(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}
fn array_value() -> Value {
    Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(Value::StringValue("a".into())),
            },
            AnyValue {
                value: Some(Value::IntValue(2)),
            },
        ],
    })
}
fn kvlist_value() -> Value {
    Value::KvlistValue(KeyValueList {
        values: vec![kv_str("inner", "x"), kv("deep", array_value())],
    })
}
fn any_bytes(v: Value) -> Vec<u8> {
    AnyValue { value: Some(v) }.encode_to_vec()
}

/// Every attribute kind: str, int, double, bool, bytes, array, kvlist, empty AnyValue, no value.
fn all_kinds_attrs() -> Vec<KeyValue> {
    vec![
        kv_str("s", "str"),
        kv("i", Value::IntValue(-7)),
        kv("d", Value::DoubleValue(1.5)),
        kv("b", Value::BoolValue(true)),
        kv("y", Value::BytesValue(vec![0, 255])),
        kv("a", array_value()),
        kv("m", kvlist_value()),
        KeyValue {
            key: "e".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
        KeyValue {
            key: "n".into(),
            value: None,
            ..Default::default()
        },
    ]
}

/// Checks an attribute table holding `all_kinds_attrs()` for parent `p` at rows `r0..r0+9`.
fn assert_all_kinds(b: &RecordBatch, r0: usize, p: u32) {
    let r = r0..r0 + 9;
    assert_eq!(&u32s(b, col::PARENT_ID)[r.clone()], &[p; 9]);
    assert_eq!(
        &dict(b, col::KEY)[r.clone()],
        &["s", "i", "d", "b", "y", "a", "m", "e", "n"]
    );
    use AnyValueType::*;
    let types: Vec<u8> = [Str, Int, Double, Bool, Bytes, Array, Map, Empty, Absent]
        .iter()
        .map(|t| *t as u8)
        .collect();
    assert_eq!(&u8s(b, col::TYPE)[r.clone()], &types[..]);
    let strv = strs(b, col::STR);
    assert_eq!(strv[r0], s("str"));
    assert!(strv[r0 + 1..r0 + 9].iter().all(Option::is_none));
    let ints = opt_i64(b, col::INT);
    assert_eq!(ints[r0 + 1], Some(-7));
    assert_eq!(ints[r0], None);
    let doubles = opt_f64(b, col::DOUBLE);
    assert_eq!(doubles[r0 + 2], Some(1.5));
    assert_eq!(doubles[r0 + 3], None);
    let bl = bools(b, col::BOOL);
    assert_eq!(bl[r0 + 3], Some(true));
    assert_eq!(bl[r0 + 4], None);
    let by = bins(b, col::BYTES);
    assert_eq!(by[r0 + 4], Some(vec![0, 255]));
    assert_eq!(by[r0 + 5], Some(any_bytes(array_value())));
    assert_eq!(by[r0 + 6], Some(any_bytes(kvlist_value())));
    assert_eq!(by[r0 + 7], None);
    assert_eq!(by[r0 + 8], None);
    // the stored nested bytes decode back to the same value
    let back = AnyValue::decode(by[r0 + 6].as_deref().unwrap()).unwrap();
    assert_eq!(back.value, Some(kvlist_value()));
}

fn tid(n: u8) -> Vec<u8> {
    vec![n; 16]
}
fn sid(n: u8) -> Vec<u8> {
    vec![n; 8]
}

fn full_traces() -> ExportTraceServiceRequest {
    let span0 = Span {
        trace_id: tid(1),
        span_id: sid(2),
        trace_state: "k=v".into(),
        parent_span_id: sid(3),
        flags: 0x101,
        name: "GET /users".into(),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        attributes: all_kinds_attrs(),
        dropped_attributes_count: 4,
        events: vec![
            Event {
                time_unix_nano: 1_500,
                name: "exception".into(),
                attributes: vec![kv_str("exception.type", "E")],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: 1_600,
                name: "retry".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 5,
        links: vec![Link {
            trace_id: tid(9),
            span_id: sid(8),
            trace_state: "l=1".into(),
            attributes: vec![kv("link.i", Value::IntValue(3))],
            dropped_attributes_count: 2,
            flags: 0x100,
        }],
        dropped_links_count: 6,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    // A span with every field default: null ids, no status.
    let span1 = Span::default();
    let span2 = Span {
        name: "GET /users".into(),
        status: Some(Status::default()),
        attributes: vec![kv_str("s", "again")],
        events: vec![Event {
            name: "late".into(),
            attributes: vec![kv_str("x", "y")],
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv_str("service.name", "api"),
                        kv("pid", Value::IntValue(42)),
                    ],
                    dropped_attributes_count: 1,
                    entity_refs: vec![EntityRef {
                        schema_url: "u".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec![],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            version: "1.0".into(),
                            attributes: vec![kv_str("scope.a", "b")],
                            dropped_attributes_count: 3,
                        }),
                        spans: vec![span0, span1],
                        schema_url: "scope-url".into(),
                    },
                    ScopeSpans {
                        scope: None,
                        spans: vec![span2],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "res-url".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![],
                schema_url: String::new(),
            },
        ],
    }
}

#[test]
fn traces_every_field() {
    let req = full_traces();
    let p = decode_traces(&req.encode_to_vec()).unwrap();
    p.validate().unwrap();
    assert_eq!(p.signal(), Signal::Traces);

    let res = p.table(Table::Resources);
    assert_eq!(bools(res, col::PRESENT), vec![Some(true), Some(false)]);
    assert_eq!(u32s(res, col::DROPPED_ATTRIBUTES_COUNT), vec![1, 0]);
    assert_eq!(strs(res, col::SCHEMA_URL), vec![s("res-url"), s("")]);
    let refs = bins(res, col::ENTITY_REFS);
    let expected_refs = Resource {
        entity_refs: req.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .entity_refs
            .clone(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(refs, vec![Some(expected_refs), Some(vec![])]);

    let ra = p.table(Table::ResourceAttrs);
    assert_eq!(u32s(ra, col::PARENT_ID), vec![0, 0]);
    assert_eq!(dict(ra, col::KEY), vec!["service.name", "pid"]);
    assert_eq!(strs(ra, col::STR), vec![s("api"), None]);
    assert_eq!(opt_i64(ra, col::INT), vec![None, Some(42)]);

    let sc = p.table(Table::Scopes);
    assert_eq!(u32s(sc, col::PARENT_ID), vec![0, 0]);
    assert_eq!(bools(sc, col::PRESENT), vec![Some(true), Some(false)]);
    assert_eq!(dict(sc, col::NAME), vec!["lib", ""]);
    assert_eq!(dict(sc, col::VERSION), vec!["1.0", ""]);
    assert_eq!(u32s(sc, col::DROPPED_ATTRIBUTES_COUNT), vec![3, 0]);
    assert_eq!(strs(sc, col::SCHEMA_URL), vec![s("scope-url"), s("")]);
    let sa = p.table(Table::ScopeAttrs);
    assert_eq!(u32s(sa, col::PARENT_ID), vec![0]);
    assert_eq!(strs(sa, col::STR), vec![s("b")]);

    let sp = p.table(Table::Spans);
    assert_eq!(sp.num_rows(), 3);
    assert_eq!(u32s(sp, col::PARENT_ID), vec![0, 0, 1]);
    assert_eq!(fsb(sp, col::TRACE_ID), vec![Some(tid(1)), None, None]);
    assert_eq!(fsb(sp, col::SPAN_ID), vec![Some(sid(2)), None, None]);
    assert_eq!(fsb(sp, col::PARENT_SPAN_ID), vec![Some(sid(3)), None, None]);
    assert_eq!(strs(sp, col::TRACE_STATE), vec![s("k=v"), s(""), s("")]);
    assert_eq!(u32s(sp, col::FLAGS), vec![0x101, 0, 0]);
    assert_eq!(dict(sp, col::NAME), vec!["GET /users", "", "GET /users"]);
    assert_eq!(i32s(sp, col::KIND), vec![2, 0, 0]);
    assert_eq!(u64s(sp, col::START_TIME_UNIX_NANO), vec![1000, 0, 0]);
    assert_eq!(u64s(sp, col::END_TIME_UNIX_NANO), vec![2000, 0, 0]);
    assert_eq!(u32s(sp, col::DROPPED_ATTRIBUTES_COUNT), vec![4, 0, 0]);
    assert_eq!(u32s(sp, col::DROPPED_EVENTS_COUNT), vec![5, 0, 0]);
    assert_eq!(u32s(sp, col::DROPPED_LINKS_COUNT), vec![6, 0, 0]);
    assert_eq!(
        bools(sp, col::STATUS_PRESENT),
        vec![Some(true), Some(false), Some(true)]
    );
    assert_eq!(i32s(sp, col::STATUS_CODE), vec![2, 0, 0]);
    assert_eq!(strs(sp, col::STATUS_MESSAGE), vec![s("boom"), s(""), s("")]);

    let at = p.table(Table::SpanAttrs);
    assert_eq!(at.num_rows(), 10);
    assert_all_kinds(at, 0, 0);
    assert_eq!(u32s(at, col::PARENT_ID)[9], 2);
    assert_eq!(strs(at, col::STR)[9], s("again"));

    let ev = p.table(Table::SpanEvents);
    assert_eq!(u32s(ev, col::PARENT_ID), vec![0, 0, 2]);
    assert_eq!(u64s(ev, col::TIME_UNIX_NANO), vec![1500, 1600, 0]);
    assert_eq!(dict(ev, col::NAME), vec!["exception", "retry", "late"]);
    assert_eq!(u32s(ev, col::DROPPED_ATTRIBUTES_COUNT), vec![1, 0, 0]);
    let ea = p.table(Table::SpanEventAttrs);
    assert_eq!(u32s(ea, col::PARENT_ID), vec![0, 2]);
    assert_eq!(dict(ea, col::KEY), vec!["exception.type", "x"]);

    let ln = p.table(Table::SpanLinks);
    assert_eq!(u32s(ln, col::PARENT_ID), vec![0]);
    assert_eq!(fsb(ln, col::TRACE_ID), vec![Some(tid(9))]);
    assert_eq!(fsb(ln, col::SPAN_ID), vec![Some(sid(8))]);
    assert_eq!(strs(ln, col::TRACE_STATE), vec![s("l=1")]);
    assert_eq!(u32s(ln, col::DROPPED_ATTRIBUTES_COUNT), vec![2]);
    assert_eq!(u32s(ln, col::FLAGS), vec![0x100]);
    let la = p.table(Table::SpanLinkAttrs);
    assert_eq!(u32s(la, col::PARENT_ID), vec![0]);
    assert_eq!(opt_i64(la, col::INT), vec![Some(3)]);
    assert_eq!(u8s(la, col::TYPE), vec![AnyValueType::Int as u8]);
}

#[test]
fn empty_requests_decode_to_empty_payloads() {
    for signal in Signal::ALL {
        let p = decode(signal, &[]).unwrap();
        p.validate().unwrap();
        assert!(p.is_empty());
        assert_eq!(p.signal(), signal);
    }
}

fn number_point(v: Option<m::number_data_point::Value>) -> m::NumberDataPoint {
    m::NumberDataPoint {
        attributes: vec![kv_str("host", "h1")],
        start_time_unix_nano: 10,
        time_unix_nano: 20,
        exemplars: vec![],
        flags: 1,
        value: v,
    }
}

fn exemplar(v: Option<m::exemplar::Value>, ids: bool) -> m::Exemplar {
    m::Exemplar {
        filtered_attributes: vec![kv_str("user", "u")],
        time_unix_nano: 15,
        span_id: if ids { sid(4) } else { vec![] },
        trace_id: if ids { tid(5) } else { vec![] },
        value: v,
    }
}

fn full_metrics() -> ExportMetricsServiceRequest {
    use m::metric::Data;
    use m::number_data_point::Value as NV;
    let gauge = m::Metric {
        name: "g".into(),
        description: "gauge".into(),
        unit: "1".into(),
        metadata: vec![kv_str("meta", "x")],
        data: Some(Data::Gauge(m::Gauge {
            data_points: vec![
                m::NumberDataPoint {
                    exemplars: vec![
                        exemplar(Some(m::exemplar::Value::AsInt(7)), true),
                        exemplar(Some(m::exemplar::Value::AsDouble(0.5)), false),
                        exemplar(None, false),
                    ],
                    ..number_point(Some(NV::AsInt(-3)))
                },
                number_point(Some(NV::AsDouble(2.5))),
                number_point(None),
            ],
        })),
    };
    let sum = m::Metric {
        name: "s".into(),
        data: Some(Data::Sum(m::Sum {
            data_points: vec![number_point(Some(NV::AsInt(9)))],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let hist = m::Metric {
        name: "h".into(),
        data: Some(Data::Histogram(m::Histogram {
            data_points: vec![
                m::HistogramDataPoint {
                    attributes: vec![kv_str("hk", "hv")],
                    start_time_unix_nano: 1,
                    time_unix_nano: 2,
                    count: 3,
                    sum: Some(4.5),
                    bucket_counts: vec![1, 2],
                    explicit_bounds: vec![0.5],
                    exemplars: vec![exemplar(Some(m::exemplar::Value::AsDouble(1.0)), true)],
                    flags: 0,
                    min: Some(0.1),
                    max: Some(9.9),
                },
                m::HistogramDataPoint::default(),
            ],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let exp = m::Metric {
        name: "e".into(),
        data: Some(Data::ExponentialHistogram(m::ExponentialHistogram {
            data_points: vec![m::ExponentialHistogramDataPoint {
                attributes: vec![kv("ek", Value::BoolValue(false))],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 6,
                sum: None,
                scale: -3,
                zero_count: 1,
                positive: None,
                negative: Some(m::exponential_histogram_data_point::Buckets {
                    offset: -2,
                    bucket_counts: vec![3, 300],
                }),
                flags: 1,
                exemplars: vec![exemplar(Some(m::exemplar::Value::AsInt(1)), false)],
                min: None,
                max: Some(7.0),
                zero_threshold: 0.001,
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let summary = m::Metric {
        name: "sm".into(),
        data: Some(Data::Summary(m::Summary {
            data_points: vec![m::SummaryDataPoint {
                attributes: vec![kv_str("sk", "sv")],
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                count: 10,
                sum: 55.0,
                quantile_values: vec![
                    m::summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 5.0,
                    },
                    m::summary_data_point::ValueAtQuantile {
                        quantile: 0.99,
                        value: 9.9,
                    },
                ],
                flags: 0,
            }],
        })),
        ..Default::default()
    };
    let empty = m::Metric {
        name: "none".into(),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![m::ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", "svc")],
                ..Default::default()
            }),
            scope_metrics: vec![m::ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "meter".into(),
                    ..Default::default()
                }),
                metrics: vec![gauge, sum, hist, exp, summary, empty],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[test]
fn metrics_every_point_type() {
    let p = decode_metrics(&full_metrics().encode_to_vec()).unwrap();
    p.validate().unwrap();
    assert_eq!(p.item_count(), 3 + 1 + 2 + 1 + 1);

    let mt = p.table(Table::Metrics);
    assert_eq!(dict(mt, col::NAME), vec!["g", "s", "h", "e", "sm", "none"]);
    assert_eq!(
        dict(mt, col::DESCRIPTION),
        vec!["gauge", "", "", "", "", ""]
    );
    assert_eq!(dict(mt, col::UNIT), vec!["1", "", "", "", "", ""]);
    use MetricType::*;
    assert_eq!(
        u8s(mt, col::METRIC_TYPE),
        [Gauge, Sum, Histogram, ExponentialHistogram, Summary, Empty]
            .map(|t| t as u8)
            .to_vec()
    );
    assert_eq!(
        i32s(mt, col::AGGREGATION_TEMPORALITY),
        vec![0, 2, 1, 2, 0, 0]
    );
    assert_eq!(
        bools(mt, col::IS_MONOTONIC),
        [false, true, false, false, false, false].map(Some).to_vec()
    );
    let md = p.table(Table::MetricMetadata);
    assert_eq!(u32s(md, col::PARENT_ID), vec![0]);
    assert_eq!(dict(md, col::KEY), vec!["meta"]);

    let np = p.table(Table::NumberPoints);
    assert_eq!(u32s(np, col::PARENT_ID), vec![0, 0, 0, 1]);
    assert_eq!(u64s(np, col::START_TIME_UNIX_NANO), vec![10; 4]);
    assert_eq!(u64s(np, col::TIME_UNIX_NANO), vec![20; 4]);
    assert_eq!(
        opt_i64(np, col::INT_VALUE),
        vec![Some(-3), None, None, Some(9)]
    );
    assert_eq!(
        opt_f64(np, col::DOUBLE_VALUE),
        vec![None, Some(2.5), None, None]
    );
    assert_eq!(u32s(np, col::FLAGS), vec![1; 4]);
    let npa = p.table(Table::NumberPointAttrs);
    assert_eq!(u32s(npa, col::PARENT_ID), vec![0, 1, 2, 3]);
    let nex = p.table(Table::NumberExemplars);
    assert_eq!(u32s(nex, col::PARENT_ID), vec![0, 0, 0]);
    assert_eq!(u64s(nex, col::TIME_UNIX_NANO), vec![15; 3]);
    assert_eq!(opt_i64(nex, col::INT_VALUE), vec![Some(7), None, None]);
    assert_eq!(opt_f64(nex, col::DOUBLE_VALUE), vec![None, Some(0.5), None]);
    assert_eq!(fsb(nex, col::SPAN_ID), vec![Some(sid(4)), None, None]);
    assert_eq!(fsb(nex, col::TRACE_ID), vec![Some(tid(5)), None, None]);
    let nexa = p.table(Table::NumberExemplarAttrs);
    assert_eq!(u32s(nexa, col::PARENT_ID), vec![0, 1, 2]);
    assert_eq!(dict(nexa, col::KEY), vec!["user"; 3]);

    let hp = p.table(Table::HistogramPoints);
    assert_eq!(u32s(hp, col::PARENT_ID), vec![2, 2]);
    assert_eq!(u64s(hp, col::COUNT), vec![3, 0]);
    assert_eq!(opt_f64(hp, col::SUM), vec![Some(4.5), None]);
    assert_eq!(list_u64(hp, col::BUCKET_COUNTS), vec![vec![1, 2], vec![]]);
    assert_eq!(list_f64(hp, col::EXPLICIT_BOUNDS), vec![vec![0.5], vec![]]);
    assert_eq!(opt_f64(hp, col::MIN), vec![Some(0.1), None]);
    assert_eq!(opt_f64(hp, col::MAX), vec![Some(9.9), None]);
    assert_eq!(
        u32s(p.table(Table::HistogramPointAttrs), col::PARENT_ID),
        vec![0]
    );
    let hex = p.table(Table::HistogramExemplars);
    assert_eq!(u32s(hex, col::PARENT_ID), vec![0]);
    assert_eq!(opt_f64(hex, col::DOUBLE_VALUE), vec![Some(1.0)]);
    assert_eq!(
        u32s(p.table(Table::HistogramExemplarAttrs), col::PARENT_ID),
        vec![0]
    );

    let ep = p.table(Table::ExpHistogramPoints);
    assert_eq!(u32s(ep, col::PARENT_ID), vec![3]);
    assert_eq!(u64s(ep, col::COUNT), vec![6]);
    assert_eq!(opt_f64(ep, col::SUM), vec![None]);
    assert_eq!(i32s(ep, col::SCALE), vec![-3]);
    assert_eq!(u64s(ep, col::ZERO_COUNT), vec![1]);
    assert_eq!(opt_i32(ep, col::POSITIVE_OFFSET), vec![None]);
    assert_eq!(
        list_u64(ep, col::POSITIVE_BUCKET_COUNTS),
        vec![Vec::<u64>::new()]
    );
    assert_eq!(opt_i32(ep, col::NEGATIVE_OFFSET), vec![Some(-2)]);
    assert_eq!(
        list_u64(ep, col::NEGATIVE_BUCKET_COUNTS),
        vec![vec![3, 300]]
    );
    assert_eq!(u32s(ep, col::FLAGS), vec![1]);
    assert_eq!(opt_f64(ep, col::MIN), vec![None]);
    assert_eq!(opt_f64(ep, col::MAX), vec![Some(7.0)]);
    assert_eq!(f64s(ep, col::ZERO_THRESHOLD), vec![0.001]);
    let epa = p.table(Table::ExpHistogramPointAttrs);
    assert_eq!(bools(epa, col::BOOL), vec![Some(false)]);
    assert_eq!(
        opt_i64(p.table(Table::ExpHistogramExemplars), col::INT_VALUE),
        vec![Some(1)]
    );
    assert_eq!(p.table(Table::ExpHistogramExemplarAttrs).num_rows(), 1);

    let spt = p.table(Table::SummaryPoints);
    assert_eq!(u32s(spt, col::PARENT_ID), vec![4]);
    assert_eq!(u64s(spt, col::COUNT), vec![10]);
    assert_eq!(f64s(spt, col::SUM_F64), vec![55.0]);
    assert_eq!(list_f64(spt, col::QUANTILES), vec![vec![0.5, 0.99]]);
    assert_eq!(list_f64(spt, col::QUANTILE_VALUES), vec![vec![5.0, 9.9]]);
    assert_eq!(
        strs(p.table(Table::SummaryPointAttrs), col::STR),
        vec![s("sv")]
    );
}

#[test]
fn metric_with_two_data_variants_keeps_the_last_like_prost() {
    use m::metric::Data;
    let gauge = m::Metric {
        name: "x".into(),
        data: Some(Data::Gauge(m::Gauge {
            data_points: vec![number_point(None)],
        })),
        ..Default::default()
    }
    .encode_to_vec();
    let sum = m::Metric {
        data: Some(Data::Sum(m::Sum {
            data_points: vec![number_point(None), number_point(None)],
            aggregation_temporality: 1,
            is_monotonic: true,
        })),
        ..Default::default()
    }
    .encode_to_vec();
    // Concatenated messages merge: the gauge is replaced by the sum.
    let metric: Vec<u8> = [gauge, sum].concat();
    let prost_metric = m::Metric::decode(&metric[..]).unwrap();
    assert!(matches!(prost_metric.data, Some(Data::Sum(_))));
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![m::ResourceMetrics {
            scope_metrics: vec![m::ScopeMetrics {
                metrics: vec![prost_metric],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    // Re-encode by hand with the raw concatenated metric in place of the prost one.
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &metric, &mut scope);
    let mut rm = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut rm);
    let mut buf = Vec::new();
    prost::encoding::bytes::encode(1, &rm, &mut buf);
    let p = decode_metrics(&buf).unwrap();
    p.validate().unwrap();
    let mt = p.table(Table::Metrics);
    assert_eq!(dict(mt, col::NAME), vec!["x"]);
    assert_eq!(u8s(mt, col::METRIC_TYPE), vec![MetricType::Sum as u8]);
    assert_eq!(p.table(Table::NumberPoints).num_rows(), 2);
    assert_eq!(p.table(Table::NumberPointAttrs).num_rows(), 2);
    let _ = req;
}

fn log(body: Option<AnyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: 2,
        severity_number: 9,
        severity_text: "INFO".into(),
        body,
        attributes: vec![kv_str("k", "v")],
        dropped_attributes_count: 3,
        flags: 1,
        trace_id: tid(7),
        span_id: sid(6),
        event_name: "ev".into(),
    }
}

#[test]
fn logs_every_body_type() {
    let bodies = vec![
        Some(AnyValue {
            value: Some(Value::StringValue("hello".into())),
        }),
        Some(AnyValue {
            value: Some(Value::IntValue(5)),
        }),
        Some(AnyValue {
            value: Some(Value::DoubleValue(0.25)),
        }),
        Some(AnyValue {
            value: Some(Value::BoolValue(true)),
        }),
        Some(AnyValue {
            value: Some(Value::BytesValue(vec![1, 2])),
        }),
        Some(AnyValue {
            value: Some(array_value()),
        }),
        Some(AnyValue {
            value: Some(kvlist_value()),
        }),
        Some(AnyValue { value: None }),
        None,
    ];
    let mut records: Vec<LogRecord> = bodies.into_iter().map(log).collect();
    records[8] = LogRecord {
        body: None,
        trace_id: vec![],
        span_id: vec![],
        severity_text: "WARN".into(),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let p = decode_logs(&req.encode_to_vec()).unwrap();
    p.validate().unwrap();
    let l = p.table(Table::Logs);
    assert_eq!(l.num_rows(), 9);
    assert_eq!(u32s(l, col::PARENT_ID), vec![0; 9]);
    assert_eq!(u64s(l, col::TIME_UNIX_NANO)[0], 1);
    assert_eq!(u64s(l, col::OBSERVED_TIME_UNIX_NANO)[0], 2);
    assert_eq!(i32s(l, col::SEVERITY_NUMBER)[..2], [9, 9]);
    assert_eq!(dict(l, col::SEVERITY_TEXT)[7..], ["INFO", "WARN"]);
    assert_eq!(u32s(l, col::DROPPED_ATTRIBUTES_COUNT)[0], 3);
    assert_eq!(u32s(l, col::FLAGS)[..2], [1, 1]);
    assert_eq!(fsb(l, col::TRACE_ID)[0], Some(tid(7)));
    assert_eq!(fsb(l, col::TRACE_ID)[8], None);
    assert_eq!(fsb(l, col::SPAN_ID)[0], Some(sid(6)));
    assert_eq!(dict(l, col::EVENT_NAME)[..2], ["ev", "ev"]);
    use AnyValueType::*;
    assert_eq!(
        u8s(l, "body_type"),
        [Str, Int, Double, Bool, Bytes, Array, Map, Empty, Absent]
            .map(|t| t as u8)
            .to_vec()
    );
    assert_eq!(strs(l, "body_str")[0], s("hello"));
    assert_eq!(strs(l, "body_str")[1], None);
    assert_eq!(opt_i64(l, "body_int")[1], Some(5));
    assert_eq!(opt_f64(l, "body_double")[2], Some(0.25));
    assert_eq!(bools(l, "body_bool")[3], Some(true));
    let b = bins(l, "body_bytes");
    assert_eq!(b[4], Some(vec![1, 2]));
    assert_eq!(b[5], Some(any_bytes(array_value())));
    assert_eq!(b[6], Some(any_bytes(kvlist_value())));
    assert_eq!(b[7], None);
    assert_eq!(b[8], None);
    let la = p.table(Table::LogAttrs);
    assert_eq!(u32s(la, col::PARENT_ID), (0..8).collect::<Vec<u32>>());
}

#[test]
fn resource_and_scope_attribute_kinds() {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: all_kinds_attrs(),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    attributes: all_kinds_attrs(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    attributes: all_kinds_attrs(),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let p = decode_logs(&req.encode_to_vec()).unwrap();
    p.validate().unwrap();
    assert_all_kinds(p.table(Table::ResourceAttrs), 0, 0);
    assert_all_kinds(p.table(Table::ScopeAttrs), 0, 0);
    assert_all_kinds(p.table(Table::LogAttrs), 0, 0);
}

// ---------- wire-level details ----------

/// Appends a field key.
fn put_key(out: &mut Vec<u8>, field: u32, wt: u32) {
    prost::encoding::encode_varint(((field << 3) | wt) as u64, out);
}

fn wrap_span(span: &[u8]) -> Vec<u8> {
    let mut ss = Vec::new();
    prost::encoding::bytes::encode(2, &span.to_vec(), &mut ss);
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(2, &ss, &mut rs);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rs, &mut req);
    req
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let mut span = Span {
        name: "n".into(),
        kind: 1,
        ..Default::default()
    }
    .encode_to_vec();
    put_key(&mut span, 100, 0);
    prost::encoding::encode_varint(u64::MAX, &mut span);
    put_key(&mut span, 101, 1);
    span.extend_from_slice(&[0; 8]);
    put_key(&mut span, 102, 2);
    span.extend_from_slice(&[3, 1, 2, 3]);
    put_key(&mut span, 103, 5);
    span.extend_from_slice(&[0; 4]);
    let p = decode_traces(&wrap_span(&span)).unwrap();
    assert_eq!(dict(p.table(Table::Spans), col::NAME), vec!["n"]);
    assert_eq!(i32s(p.table(Table::Spans), col::KIND), vec![1]);
    // prost agrees
    assert_eq!(
        ExportTraceServiceRequest::decode(&wrap_span(&span)[..])
            .unwrap()
            .resource_spans[0]
            .scope_spans[0]
            .spans[0]
            .name,
        "n"
    );
}

#[test]
fn unpacked_repeated_scalars_are_accepted() {
    // HistogramDataPoint with bucket_counts (6) and explicit_bounds (7) unpacked.
    let mut dp = Vec::new();
    for v in [4u64, 5] {
        put_key(&mut dp, 6, 1);
        dp.extend_from_slice(&v.to_le_bytes());
    }
    put_key(&mut dp, 7, 1);
    dp.extend_from_slice(&1.5f64.to_le_bytes());
    let prost_dp = m::HistogramDataPoint::decode(&dp[..]).unwrap();
    assert_eq!(prost_dp.bucket_counts, vec![4, 5]);
    let mut hist = Vec::new();
    prost::encoding::bytes::encode(1, &dp, &mut hist);
    let mut metric = Vec::new();
    prost::encoding::bytes::encode(9, &hist, &mut metric);
    let mut sm = Vec::new();
    prost::encoding::bytes::encode(2, &metric, &mut sm);
    let mut rm = Vec::new();
    prost::encoding::bytes::encode(2, &sm, &mut rm);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rm, &mut req);
    let p = decode_metrics(&req).unwrap();
    let hp = p.table(Table::HistogramPoints);
    assert_eq!(list_u64(hp, col::BUCKET_COUNTS), vec![vec![4, 5]]);
    assert_eq!(list_f64(hp, col::EXPLICIT_BOUNDS), vec![vec![1.5]]);
}

#[test]
fn string_value_strindex_is_treated_as_empty_and_key_strindex_ignored() {
    let kv = KeyValue {
        key: "k".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValueStrindex(3)),
        }),
        key_strindex: 5,
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: vec![kv],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let p = decode_logs(&req.encode_to_vec()).unwrap();
    let la = p.table(Table::LogAttrs);
    assert_eq!(dict(la, col::KEY), vec!["k"]);
    assert_eq!(u8s(la, col::TYPE), vec![AnyValueType::Empty as u8]);
}

/// Found by fuzzing (`fuzz/regressions/otlp_traces/nested-key-strindex-wrong-wire-type`): the
/// walk of nested values skipped `KeyValue.key_strindex` as an unknown field, so a kvlist
/// entry sending it with the wrong wire type was accepted where prost (and the same field in a
/// top-level attribute) refuses it.
#[test]
fn a_nested_key_strindex_with_the_wrong_wire_type_is_refused_like_prost() {
    let nested = KeyValue {
        key: "k".into(),
        value: None,
        key_strindex: 0x7f,
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: vec![kv(
                        "outer",
                        Value::KvlistValue(KeyValueList {
                            values: vec![nested],
                        }),
                    )],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut buf = req.encode_to_vec();
    assert!(decode_logs(&buf).is_ok());
    // key_strindex (field 3, varint 0x7f) as an empty length-delimited field: same length.
    patch(&mut buf, &[0x18, 0x7f], &[0x1a, 0x00]);
    assert!(ExportLogsServiceRequest::decode(buf.as_slice()).is_err());
    let e = decode_logs(&buf).unwrap_err().to_string();
    assert!(
        e.contains("kvlist_value.values[0].key_strindex") && e.contains("wrong wire type"),
        "{e}"
    );
}

/// Found by fuzzing (`fuzz/regressions/otlp_logs/replaced-kvlist-value-malformed`): an
/// AnyValue whose kvlist_value is malformed and then replaced by a later oneof field was
/// accepted without looking at the kvlist; prost decodes every occurrence and refuses it.
#[test]
fn a_malformed_array_or_kvlist_replaced_by_a_later_field_is_refused_like_prost() {
    for nested_field in [5u32, 6] {
        // AnyValue { <array|kvlist>: { values: <length 9 past the end> }, int_value: 1 }
        let mut any = Vec::new();
        put_key(&mut any, nested_field, 2);
        any.extend_from_slice(&[2, 0x0a, 9]);
        put_key(&mut any, 3, 0);
        any.push(1);
        let mut kv = Vec::new();
        prost::encoding::string::encode(1, &"k".to_string(), &mut kv);
        prost::encoding::bytes::encode(2, &any, &mut kv);
        let mut log = Vec::new();
        prost::encoding::bytes::encode(6, &kv, &mut log);
        let mut scope = Vec::new();
        prost::encoding::bytes::encode(2, &log, &mut scope);
        let mut resource = Vec::new();
        prost::encoding::bytes::encode(2, &scope, &mut resource);
        let mut req = Vec::new();
        prost::encoding::bytes::encode(1, &resource, &mut req);
        assert!(ExportLogsServiceRequest::decode(req.as_slice()).is_err());
        let e = decode_logs(&req).unwrap_err().to_string();
        assert!(e.contains("attributes[0].value"), "{e}");
    }
}

// ---------- bad input ----------

fn err_of(buf: &[u8]) -> DecodeError {
    decode_traces(buf).expect_err("must fail")
}

fn one_span(span: Span) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![
                ScopeSpans::default(),
                ScopeSpans {
                    spans: vec![Span::default(), span],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn bad_id_lengths_name_the_field() {
    let e = err_of(&one_span(Span {
        trace_id: vec![1; 15],
        ..Default::default()
    }));
    assert!(
        matches!(&e, DecodeError::InvalidIdLength { path, len: 15, expected: 16 }
            if path == "resource_spans[0].scope_spans[1].spans[1].trace_id"),
        "{e}"
    );
    let e = err_of(&one_span(Span {
        parent_span_id: vec![1; 9],
        ..Default::default()
    }));
    assert_eq!(
        e.path(),
        Some("resource_spans[0].scope_spans[1].spans[1].parent_span_id")
    );
    let e = err_of(&one_span(Span {
        links: vec![
            Link::default(),
            Link {
                span_id: vec![1],
                ..Default::default()
            },
        ],
        ..Default::default()
    }));
    assert_eq!(
        e.path(),
        Some("resource_spans[0].scope_spans[1].spans[1].links[1].span_id")
    );
    println!("{e}");
}

/// Replaces the (unique) occurrence of `from` in `buf` with `to` (same length).
fn patch(buf: &mut [u8], from: &[u8], to: &[u8]) {
    let i = buf
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    buf[i..i + from.len()].copy_from_slice(to);
}

/// Decodes `buf` (which must succeed), returns the span at `[0].scope_spans[1].spans[1]` as
/// encoded back, and how many strings were repaired.
fn repaired_span(buf: &[u8]) -> (Span, usize) {
    let (p, stats) = super::decode_with_stats(Signal::Traces, buf).expect("accepted");
    let back = ExportTraceServiceRequest::decode(crate::otlp::encode_to_vec(&p).as_slice())
        .expect("valid protobuf");
    let span = back.resource_spans[0].scope_spans[1].spans[1].clone();
    (span, stats.replaced_invalid_utf8)
}

/// Issue 16 item 4: a string that is not valid UTF-8, in any string field, does not fail the
/// request (the Collector's decoder takes it): it is stored with U+FFFD for each invalid
/// sequence and counted, and the rest of the request is intact.
#[test]
fn invalid_utf8_is_replaced_and_counted_in_every_kind_of_string_column() {
    // dictionary column (validated on insert)
    let mut b = one_span(Span {
        name: "span-XX".into(),
        ..Default::default()
    });
    patch(&mut b, b"XX", &[0xff, 0xfe]);
    let (span, n) = repaired_span(&b);
    assert_eq!((span.name.as_str(), n), ("span-\u{FFFD}\u{FFFD}", 1));

    // plain string column (bulk check, then repair)
    let mut b = one_span(Span {
        trace_state: "ts-XX".into(),
        attributes: vec![kv_str("ok", "fine")],
        ..Default::default()
    });
    patch(&mut b, b"XX", &[0xc3, 0x28]);
    let (span, n) = repaired_span(&b);
    assert_eq!((span.trace_state.as_str(), n), ("ts-\u{FFFD}(", 1));
    assert_eq!(span.attributes, vec![kv_str("ok", "fine")]);

    // attribute value and key
    let mut b = one_span(Span {
        attributes: vec![kv_str("a", "ok"), kv_str("kQQ", "bad-XX")],
        ..Default::default()
    });
    patch(&mut b, b"XX", &[0x80, 0x80]);
    patch(&mut b, b"QQ", &[0xe2, 0x82]);
    let (span, n) = repaired_span(&b);
    assert_eq!(
        span.attributes,
        vec![
            kv_str("a", "ok"),
            kv_str("k\u{FFFD}", "bad-\u{FFFD}\u{FFFD}")
        ]
    );
    assert_eq!(n, 2);

    // a multi-byte char split across two strings: each invalid on its own, though the
    // concatenated value buffer is valid
    let mut b = one_span(Span {
        attributes: vec![kv_str("a", "xX"), kv_str("b", "Yx")],
        ..Default::default()
    });
    patch(&mut b, b"xX", &[b'x', 0xc3]);
    patch(&mut b, b"Yx", &[0xa9, b'x']);
    let (span, n) = repaired_span(&b);
    assert_eq!(
        span.attributes,
        vec![kv_str("a", "x\u{FFFD}"), kv_str("b", "\u{FFFD}x")]
    );
    assert_eq!(n, 2);

    // status message
    let mut b = one_span(Span {
        status: Some(Status {
            message: "mXX".into(),
            code: 1,
        }),
        ..Default::default()
    });
    patch(&mut b, b"XX", &[0xff, 0xff]);
    let (span, n) = repaired_span(&b);
    assert_eq!(span.status.unwrap().message, "m\u{FFFD}\u{FFFD}");
    assert_eq!(n, 1);

    // nested array value and kvlist key: the stored AnyValue is valid protobuf for prost
    let nested = |s: &str, k: &str| {
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![kv_str(k, s)],
                    })),
                }],
            }),
        )
    };
    let mut b = one_span(Span {
        attributes: vec![nested("ZZ", "WW")],
        ..Default::default()
    });
    patch(&mut b, b"ZZ", &[0xff, 0xff]);
    patch(&mut b, b"WW", &[0xc0, b'w']);
    let (span, n) = repaired_span(&b);
    assert_eq!(
        span.attributes,
        vec![nested("\u{FFFD}\u{FFFD}", "\u{FFFD}w")]
    );
    assert_eq!(n, 2);

    // valid requests count nothing
    let (_, n) = repaired_span(&one_span(Span {
        name: "plain".into(),
        ..Default::default()
    }));
    assert_eq!(n, 0);
}

/// OTLP/JSON bodies are UTF-8 by definition; one that is not is read with U+FFFD too.
#[test]
fn json_with_invalid_utf8_is_replaced_and_counted() {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"opXX"}]}]}]}"#.to_vec();
    patch(&mut body, b"XX", &[0xff, b'!']);
    let (p, stats) = super::decode_json_with_stats(Signal::Traces, &body).expect("accepted");
    assert_eq!(stats.replaced_invalid_utf8, 1);
    let back =
        ExportTraceServiceRequest::decode(crate::otlp::encode_to_vec(&p).as_slice()).unwrap();
    assert_eq!(
        back.resource_spans[0].scope_spans[0].spans[0].name,
        "op\u{FFFD}!"
    );
}

#[test]
fn malformed_wire_data_is_rejected_with_a_reason() {
    let good = full_traces().encode_to_vec();
    // truncated anywhere: never a panic, and (nearly always) an error
    for cut in 1..good.len() {
        let _ = decode_traces(&good[..cut]);
    }
    assert!(matches!(
        decode_traces(&good[..good.len() - 1]),
        Err(DecodeError::Malformed { .. })
    ));
    // varint longer than 10 bytes
    let mut b = vec![0x0a];
    b.extend_from_slice(&[0xff; 11]);
    let e = err_of(&b);
    assert!(e.to_string().contains("varint"), "{e}");
    // length past the end
    let e = err_of(&[0x0a, 0x05, 0x00]);
    assert!(e.to_string().contains("past the end"), "{e}");
    // wrong wire type for a known field: span name as varint
    let mut span = Vec::new();
    put_key(&mut span, 5, 0);
    span.push(1);
    let e = err_of(&wrap_span(&span));
    assert_eq!(
        e.path(),
        Some("resource_spans[0].scope_spans[0].spans[0].name")
    );
    assert!(e.to_string().contains("wrong wire type"), "{e}");
    // groups and invalid wire types
    for wt in [3u8, 4, 6, 7] {
        let e = err_of(&wrap_span(&[(20 << 3) | wt]));
        assert!(matches!(e, DecodeError::Malformed { .. }), "{e}");
    }
    // field number 0
    assert!(matches!(
        err_of(&[0x02, 0x00]),
        DecodeError::Malformed { .. }
    ));
    println!("{}", err_of(&[0x0a, 0x05, 0x00]));
}

#[test]
fn json_errors_are_json_errors() {
    let e = decode_json(Signal::Traces, b"{\"resourceSpans\": 3}").unwrap_err();
    assert!(matches!(e, DecodeError::Json { .. }), "{e}");
}

// ---------- never panic ----------

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for signal in Signal::ALL {
                if let Ok(p) = decode(signal, &bytes) {
                    p.validate().unwrap();
                }
            }
        }

        #[test]
        fn mutated_valid_requests_never_panic(
            which in 0usize..3,
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let (signal, mut buf) = match which {
                0 => (Signal::Traces, full_traces().encode_to_vec()),
                1 => (Signal::Metrics, full_metrics().encode_to_vec()),
                _ => (Signal::Logs, ExportLogsServiceRequest {
                    resource_logs: vec![ResourceLogs {
                        scope_logs: vec![ScopeLogs {
                            log_records: vec![log(Some(AnyValue { value: Some(kvlist_value()) }))],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                }.encode_to_vec()),
            };
            for (i, b) in flips {
                let i = i.index(buf.len());
                buf[i] = b;
            }
            let cut = cut.index(buf.len() + 1);
            let buf = &buf[..cut];
            let ours = decode(signal, buf);
            if let Ok(p) = &ours {
                p.validate().unwrap();
            }
            // Differential check: we accept exactly what prost accepts, except that we also
            // reject ids of the wrong length (as the Collector does).
            let prost_res = match signal {
                Signal::Traces => ExportTraceServiceRequest::decode(buf).map(drop),
                Signal::Metrics => ExportMetricsServiceRequest::decode(buf).map(drop),
                Signal::Logs => ExportLogsServiceRequest::decode(buf).map(drop),
            };
            // ... and that strings that are not UTF-8, which prost refuses, are taken
            // (repaired and counted, or dropped with the occurrence of a singular field that
            // a later one replaced): our output is then valid protobuf for prost.
            let replaced = super::super::decode_with_stats(signal, buf)
                .map_or(0, |(_, s)| s.replaced_invalid_utf8);
            // prost stops at the first string that is not UTF-8: what follows it is unchecked
            // there, so we may still refuse the request for a later fault.
            let prost_utf8 = prost_res.as_ref().is_err_and(|e| e.to_string().contains("UTF-8"));
            let prost_ok = prost_res.is_ok();
            if let (Ok(p), true) = (&ours, replaced > 0) {
                let back = crate::otlp::encode_to_vec(p);
                let reread = match signal {
                    Signal::Traces => ExportTraceServiceRequest::decode(back.as_slice()).map(drop),
                    Signal::Metrics => ExportMetricsServiceRequest::decode(back.as_slice()).map(drop),
                    Signal::Logs => ExportLogsServiceRequest::decode(back.as_slice()).map(drop),
                };
                prop_assert!(reread.is_ok(), "repaired output is not valid: {:?}", reread);
            }
            match &ours {
                Ok(_) => prop_assert!(
                    prost_ok || prost_utf8,
                    "we accepted what prost rejects ({:?}): {:02x?}",
                    prost_res,
                    buf
                ),
                Err(DecodeError::InvalidIdLength { .. }) => {}
                Err(e) => prop_assert!(!prost_ok, "we rejected what prost accepts: {e}: {:02x?}", buf),
            }
            // Every refusal names the field it is about (`(request)` for the request itself).
            if let Err(e) = &ours {
                prop_assert!(e.path().is_some_and(|p| !p.is_empty()), "no field path: {e}");
            }
        }
    }
}

// ---------- OTLP/JSON ----------

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/testdata/otlp-examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_common_example_tables(p: &Payload) {
    let ra = p.table(Table::ResourceAttrs);
    assert_eq!(dict(ra, col::KEY), vec!["service.name"]);
    assert_eq!(strs(ra, col::STR), vec![s("my.service")]);
    assert_eq!(
        bools(p.table(Table::Resources), col::PRESENT),
        vec![Some(true)]
    );
    let sc = p.table(Table::Scopes);
    assert_eq!(dict(sc, col::NAME), vec!["my.library"]);
    assert_eq!(dict(sc, col::VERSION), vec!["1.0.0"]);
    let sa = p.table(Table::ScopeAttrs);
    assert_eq!(dict(sa, col::KEY), vec!["my.scope.attribute"]);
    assert_eq!(strs(sa, col::STR), vec![s("some scope attribute")]);
}

#[test]
fn json_trace_example() {
    let p = decode_json(Signal::Traces, &fixture("trace.json")).unwrap();
    p.validate().unwrap();
    assert_common_example_tables(&p);
    let sp = p.table(Table::Spans);
    assert_eq!(dict(sp, col::NAME), vec!["I'm a server span"]);
    assert_eq!(
        fsb(sp, col::TRACE_ID),
        vec![Some(hex("5B8EFFF798038103D269B633813FC60C"))]
    );
    assert_eq!(fsb(sp, col::SPAN_ID), vec![Some(hex("EEE19B7EC3C1B174"))]);
    assert_eq!(
        fsb(sp, col::PARENT_SPAN_ID),
        vec![Some(hex("EEE19B7EC3C1B173"))]
    );
    assert_eq!(i32s(sp, col::KIND), vec![2]);
    assert_eq!(
        u64s(sp, col::START_TIME_UNIX_NANO),
        vec![1544712660000000000]
    );
    assert_eq!(u64s(sp, col::END_TIME_UNIX_NANO), vec![1544712661000000000]);
    assert_eq!(bools(sp, col::STATUS_PRESENT), vec![Some(false)]);
    let at = p.table(Table::SpanAttrs);
    assert_eq!(dict(at, col::KEY), vec!["my.span.attr"]);
    assert_eq!(strs(at, col::STR), vec![s("some value")]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn json_metrics_example() {
    let p = decode_json(Signal::Metrics, &fixture("metrics.json")).unwrap();
    p.validate().unwrap();
    assert_common_example_tables(&p);
    let mt = p.table(Table::Metrics);
    assert_eq!(
        dict(mt, col::NAME),
        vec![
            "my.counter",
            "my.gauge",
            "my.histogram",
            "my.exponential.histogram"
        ]
    );
    assert_eq!(
        dict(mt, col::DESCRIPTION),
        vec![
            "I am a Counter",
            "I am a Gauge",
            "I am a Histogram",
            "I am an Exponential Histogram"
        ]
    );
    assert_eq!(dict(mt, col::UNIT), vec!["1"; 4]);
    use MetricType::*;
    assert_eq!(
        u8s(mt, col::METRIC_TYPE),
        [Sum, Gauge, Histogram, ExponentialHistogram]
            .map(|t| t as u8)
            .to_vec()
    );
    assert_eq!(i32s(mt, col::AGGREGATION_TEMPORALITY), vec![1, 0, 1, 1]);
    assert_eq!(
        bools(mt, col::IS_MONOTONIC),
        vec![Some(true), Some(false), Some(false), Some(false)]
    );

    let np = p.table(Table::NumberPoints);
    assert_eq!(u32s(np, col::PARENT_ID), vec![0, 1]);
    assert_eq!(opt_f64(np, col::DOUBLE_VALUE), vec![Some(5.0), Some(10.0)]);
    assert_eq!(opt_i64(np, col::INT_VALUE), vec![None, None]);
    assert_eq!(
        u64s(np, col::START_TIME_UNIX_NANO),
        vec![1544712660300000000, 0]
    );
    assert_eq!(u64s(np, col::TIME_UNIX_NANO), vec![1544712660300000000; 2]);
    let npa = p.table(Table::NumberPointAttrs);
    assert_eq!(
        dict(npa, col::KEY),
        vec!["my.counter.attr", "my.gauge.attr"]
    );
    assert_eq!(strs(npa, col::STR), vec![s("some value"), s("some value")]);

    let hp = p.table(Table::HistogramPoints);
    assert_eq!(u32s(hp, col::PARENT_ID), vec![2]);
    assert_eq!(u64s(hp, col::COUNT), vec![2]);
    assert_eq!(opt_f64(hp, col::SUM), vec![Some(2.0)]);
    assert_eq!(list_u64(hp, col::BUCKET_COUNTS), vec![vec![1, 1]]);
    assert_eq!(list_f64(hp, col::EXPLICIT_BOUNDS), vec![vec![1.0]]);
    assert_eq!(opt_f64(hp, col::MIN), vec![Some(0.0)]);
    assert_eq!(opt_f64(hp, col::MAX), vec![Some(2.0)]);
    assert_eq!(
        dict(p.table(Table::HistogramPointAttrs), col::KEY),
        vec!["my.histogram.attr"]
    );

    let ep = p.table(Table::ExpHistogramPoints);
    assert_eq!(u32s(ep, col::PARENT_ID), vec![3]);
    assert_eq!(u64s(ep, col::COUNT), vec![3]);
    assert_eq!(opt_f64(ep, col::SUM), vec![Some(10.0)]);
    assert_eq!(i32s(ep, col::SCALE), vec![0]);
    assert_eq!(u64s(ep, col::ZERO_COUNT), vec![1]);
    assert_eq!(opt_i32(ep, col::POSITIVE_OFFSET), vec![Some(1)]);
    assert_eq!(list_u64(ep, col::POSITIVE_BUCKET_COUNTS), vec![vec![0, 2]]);
    assert_eq!(opt_i32(ep, col::NEGATIVE_OFFSET), vec![None]);
    assert_eq!(opt_f64(ep, col::MIN), vec![Some(0.0)]);
    assert_eq!(opt_f64(ep, col::MAX), vec![Some(5.0)]);
    assert_eq!(f64s(ep, col::ZERO_THRESHOLD), vec![0.0]);
    assert_eq!(
        dict(p.table(Table::ExpHistogramPointAttrs), col::KEY),
        vec!["my.exponential.histogram.attr"]
    );
    assert_eq!(p.table(Table::SummaryPoints).num_rows(), 0);
}

#[test]
fn json_logs_example() {
    let p = decode_json(Signal::Logs, &fixture("logs.json")).unwrap();
    p.validate().unwrap();
    assert_common_example_tables(&p);
    let l = p.table(Table::Logs);
    assert_eq!(u64s(l, col::TIME_UNIX_NANO), vec![1544712660300000000]);
    assert_eq!(
        u64s(l, col::OBSERVED_TIME_UNIX_NANO),
        vec![1544712660300000000]
    );
    assert_eq!(i32s(l, col::SEVERITY_NUMBER), vec![10]);
    assert_eq!(dict(l, col::SEVERITY_TEXT), vec!["Information"]);
    assert_eq!(
        fsb(l, col::TRACE_ID),
        vec![Some(hex("5B8EFFF798038103D269B633813FC60C"))]
    );
    assert_eq!(fsb(l, col::SPAN_ID), vec![Some(hex("EEE19B7EC3C1B174"))]);
    assert_eq!(u8s(l, "body_type"), vec![AnyValueType::Str as u8]);
    assert_eq!(strs(l, "body_str"), vec![s("Example log record")]);

    let la = p.table(Table::LogAttrs);
    assert_eq!(
        dict(la, col::KEY),
        vec![
            "string.attribute",
            "boolean.attribute",
            "int.attribute",
            "double.attribute",
            "array.attribute",
            "map.attribute"
        ]
    );
    use AnyValueType::*;
    assert_eq!(
        u8s(la, col::TYPE),
        [Str, Bool, Int, Double, Array, Map]
            .map(|t| t as u8)
            .to_vec()
    );
    assert_eq!(strs(la, col::STR)[0], s("some string"));
    assert_eq!(bools(la, col::BOOL)[1], Some(true));
    assert_eq!(opt_i64(la, col::INT)[2], Some(10));
    assert_eq!(opt_f64(la, col::DOUBLE)[3], Some(637.704));
    let by = bins(la, col::BYTES);
    let arr = AnyValue::decode(by[4].as_deref().unwrap()).unwrap();
    assert_eq!(
        arr.value,
        Some(Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::StringValue("many".into()))
                },
                AnyValue {
                    value: Some(Value::StringValue("values".into()))
                },
            ]
        }))
    );
    let map = AnyValue::decode(by[5].as_deref().unwrap()).unwrap();
    assert_eq!(
        map.value,
        Some(Value::KvlistValue(KeyValueList {
            values: vec![kv_str("some.map.key", "some value")]
        }))
    );
}

#[test]
fn json_spec_edges() {
    // unknown fields ignored, ids in lower case hex, int64 as number or string, nulls = default
    let j = r#"{"resourceSpans":[{"unknownField":1,"scopeSpans":[{"spans":[{"name":"x",
        "foo":{"a":[1,2]},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"",
        "parentSpanId":null,"kind":2,"startTimeUnixNano":1544712660000000000,
        "attributes":[{"key":"i","value":{"intValue":10}},{"key":"n"},
        {"key":"b","value":{"bytesValue":"AAE="}},{"key":"e","value":{}}],
        "status":{"code":2,"message":"m"}}]}]}]}"#;
    let p = decode_json(Signal::Traces, j.as_bytes()).unwrap();
    let sp = p.table(Table::Spans);
    assert_eq!(
        fsb(sp, col::TRACE_ID),
        vec![Some(hex("5B8EFFF798038103D269B633813FC60C"))]
    );
    assert_eq!(fsb(sp, col::SPAN_ID), vec![None]);
    assert_eq!(
        u64s(sp, col::START_TIME_UNIX_NANO),
        vec![1544712660000000000]
    );
    assert_eq!(i32s(sp, col::STATUS_CODE), vec![2]);
    let at = p.table(Table::SpanAttrs);
    use AnyValueType::*;
    assert_eq!(
        u8s(at, col::TYPE),
        [Int, Absent, Bytes, Empty].map(|t| t as u8).to_vec()
    );
    assert_eq!(opt_i64(at, col::INT)[0], Some(10));
    assert_eq!(bins(at, col::BYTES)[2], Some(vec![0, 1]));

    // special doubles, string and number int64s in metrics
    let j = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"g","gauge":{"dataPoints":[{"asInt":"5","exemplars":[{"asDouble":"-Infinity"}]},
                                           {"asDouble":"NaN"}]}},
        {"name":"h","histogram":{"dataPoints":[{"count":3,"sum":"Infinity","min":"-Infinity",
                                 "bucketCounts":[1,"2"],"explicitBounds":[1.5,"Infinity"]}]}},
        {"name":"s","summary":{"dataPoints":[{"sum":"NaN","quantileValues":[{"quantile":0.5,"value":"NaN"}]}]}}
    ]}]}]}"#;
    let p = decode_json(Signal::Metrics, j.as_bytes()).unwrap();
    let np = p.table(Table::NumberPoints);
    assert_eq!(opt_i64(np, col::INT_VALUE), vec![Some(5), None]);
    assert!(opt_f64(np, col::DOUBLE_VALUE)[1].unwrap().is_nan());
    assert_eq!(
        opt_f64(p.table(Table::NumberExemplars), col::DOUBLE_VALUE),
        vec![Some(f64::NEG_INFINITY)]
    );
    let hp = p.table(Table::HistogramPoints);
    assert_eq!(u64s(hp, col::COUNT), vec![3]);
    assert_eq!(opt_f64(hp, col::SUM), vec![Some(f64::INFINITY)]);
    assert_eq!(opt_f64(hp, col::MIN), vec![Some(f64::NEG_INFINITY)]);
    assert_eq!(list_u64(hp, col::BUCKET_COUNTS), vec![vec![1, 2]]);
    assert_eq!(
        list_f64(hp, col::EXPLICIT_BOUNDS),
        vec![vec![1.5, f64::INFINITY]]
    );
    assert!(f64s(p.table(Table::SummaryPoints), col::SUM_F64)[0].is_nan());

    // opentelemetry-proto's flattened oneofs swallow errors; we report them
    let j = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"h","histogram":{"dataPoints":[{"timeUnixNano":"yesterday"}]}}]}]}]}"#;
    let e = decode_json(Signal::Metrics, j.as_bytes()).unwrap_err();
    assert!(
        e.to_string()
            .contains("resourceMetrics[0].scopeMetrics[0].metrics[0].histogram"),
        "{e}"
    );
    let j = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"g","gauge":{"dataPoints":[{"asInt":"five"}]}}]}]}]}"#;
    let e = decode_json(Signal::Metrics, j.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("dataPoints[0].asInt"), "{e}");

    // an enum name that is not one of the field's: a clear error naming the field, not a
    // silent default
    let j = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SERVR"}]}]}]}"#;
    let e = decode_json(Signal::Traces, j.as_bytes()).unwrap_err();
    assert!(matches!(e, DecodeError::Json { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("resourceSpans[0].scopeSpans[0].spans[0].kind: invalid type: string"),
        "{e}"
    );
}

/// One span, log record or metric with `field` set to `value` (a JSON literal), decoded.
fn json_with(signal: Signal, field: &str, value: &str) -> Result<Payload, DecodeError> {
    let j = match signal {
        Signal::Traces => format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"name":"s",
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "{field}":{value}}}]}}]}}]}}"#
        ),
        Signal::Logs => format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"{field}":{value}}}]}}]}}]}}"#
        ),
        Signal::Metrics => format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[
            {{"name":"c","sum":{{"{field}":{value},"isMonotonic":true,
              "dataPoints":[{{"asInt":"1"}}]}}}},
            {{"name":"h","histogram":{{"{field}":{value},"dataPoints":[{{"count":"1"}}]}}}},
            {{"name":"e","exponentialHistogram":{{"{field}":{value},"dataPoints":[{{"count":"1"}}]}}}}
            ]}}]}}]}}"#
        ),
    };
    decode_json(signal, j.as_bytes())
}

/// `field` given as `by_name` and as `by_number` decodes to the same column, holding `n`.
fn same_by_name(
    signal: Signal,
    field: &str,
    (by_name, by_number): (&str, &str),
    n: i32,
    read: impl Fn(&Payload) -> Vec<i32>,
) {
    let named = json_with(signal, field, by_name).unwrap_or_else(|e| panic!("{by_name}: {e}"));
    let numbered = json_with(signal, field, by_number).unwrap();
    assert_eq!(read(&named), read(&numbered), "{field}: {by_name}");
    assert!(
        !read(&named).is_empty() && read(&named).iter().all(|x| *x == n),
        "{field}: {by_name}: {:?}",
        read(&named)
    );
}

/// The Collector's OTLP/JSON decoder takes enum values by name as well as by number; so does
/// sluice's, field by field, with the same result as the number.
#[test]
fn json_enum_names_decode_like_their_numbers() {
    // Span.kind
    for (name, n) in [
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_SERVER", 2),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
    ] {
        let values = (&format!("\"{name}\"")[..], &n.to_string()[..]);
        same_by_name(Signal::Traces, "kind", values, n, |p| {
            i32s(p.table(Table::Spans), col::KIND)
        });
    }
    // Status.code
    for (name, n) in [
        ("STATUS_CODE_UNSET", 0),
        ("STATUS_CODE_OK", 1),
        ("STATUS_CODE_ERROR", 2),
    ] {
        let by_name = format!("{{\"code\":\"{name}\",\"message\":\"m\"}}");
        let by_number = format!("{{\"code\":{n},\"message\":\"m\"}}");
        same_by_name(Signal::Traces, "status", (&by_name, &by_number), n, |p| {
            i32s(p.table(Table::Spans), col::STATUS_CODE)
        });
    }
    // LogRecord.severityNumber
    for (name, n) in [
        ("SEVERITY_NUMBER_UNSPECIFIED", 0),
        ("SEVERITY_NUMBER_TRACE", 1),
        ("SEVERITY_NUMBER_DEBUG4", 8),
        ("SEVERITY_NUMBER_INFO", 9),
        ("SEVERITY_NUMBER_WARN2", 14),
        ("SEVERITY_NUMBER_ERROR", 17),
        ("SEVERITY_NUMBER_FATAL4", 24),
    ] {
        let values = (&format!("\"{name}\"")[..], &n.to_string()[..]);
        same_by_name(Signal::Logs, "severityNumber", values, n, |p| {
            i32s(p.table(Table::Logs), col::SEVERITY_NUMBER)
        });
    }
    // Sum, Histogram and ExponentialHistogram .aggregationTemporality (one metric of each)
    for (name, n) in [
        ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
        ("AGGREGATION_TEMPORALITY_DELTA", 1),
        ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
    ] {
        let values = (&format!("\"{name}\"")[..], &n.to_string()[..]);
        same_by_name(Signal::Metrics, "aggregationTemporality", values, n, |p| {
            let t = i32s(p.table(Table::Metrics), col::AGGREGATION_TEMPORALITY);
            assert_eq!(t.len(), 3, "sum, histogram, exponential histogram");
            t
        });
    }
    // A name of another enum, or a number as a string, is not taken.
    for (field, value) in [("kind", "\"STATUS_CODE_OK\""), ("kind", "\"2\"")] {
        assert!(json_with(Signal::Traces, field, value).is_err(), "{value}");
    }
}

/// Every JSON decode error names the field it is about, as the protobuf decoder's do.
#[test]
fn json_errors_name_the_field() {
    let traces = "resourceSpans[0].scopeSpans[0].spans[0]";
    for (field, value, want) in [
        ("traceId", "\"abc\"", format!("{traces}.traceId: ")),
        ("spanId", "\"zz\"", format!("{traces}.spanId: ")),
        (
            "startTimeUnixNano",
            "\"soon\"",
            format!("{traces}.startTimeUnixNano: "),
        ),
        ("kind", "\"SERVER\"", format!("{traces}.kind: ")),
        (
            "status",
            "{\"code\":\"ERROR\"}",
            format!("{traces}.status.code: "),
        ),
        (
            "attributes",
            "[{\"key\":\"n\",\"value\":{\"intValue\":\"notanumber\"}}]",
            format!("{traces}.attributes[0].value"),
        ),
        (
            "events",
            "[{\"timeUnixNano\":true}]",
            format!("{traces}.events[0].timeUnixNano: "),
        ),
    ] {
        let e = json_with(Signal::Traces, field, value).unwrap_err();
        assert!(matches!(e, DecodeError::Json { .. }), "{e}");
        assert!(e.to_string().contains(&want), "{field}: {e}");
    }
    // A trace id of the wrong length is caught after the JSON: by the protobuf path.
    let e = json_with(Signal::Traces, "parentSpanId", "\"0102\"").unwrap_err();
    assert!(e.to_string().contains("spans[0].parent_span_id"), "{e}");
    let e = json_with(Signal::Logs, "severityNumber", "\"INFO\"").unwrap_err();
    assert!(
        e.to_string()
            .contains("resourceLogs[0].scopeLogs[0].logRecords[0].severityNumber: "),
        "{e}"
    );
    let e = json_with(Signal::Metrics, "aggregationTemporality", "\"DELTA\"").unwrap_err();
    assert!(
        e.to_string()
            .contains("resourceMetrics[0].scopeMetrics[0].metrics[0].sum"),
        "{e}"
    );
}

#[test]
fn short_eq_matches_slice_eq() {
    let base = b"http.response.status_code.and.more.bytes-0123456789";
    for n in 0..base.len() {
        let a = &base[..n];
        assert!(builders::short_eq_for_tests(a, a));
        for i in 0..n {
            let mut b = a.to_vec();
            b[i] ^= 1;
            assert!(!builders::short_eq_for_tests(a, &b), "n={n} i={i}");
        }
        assert!(!builders::short_eq_for_tests(a, &base[..n + 1]));
    }
}

/// Decodes one `KeyValue` message into a fresh attribute table, in fast or strict mode.
fn one_attribute(bytes: &[u8], strict: bool) -> Option<Vec<arrow::array::ArrayRef>> {
    let mut attrs = builders::Attrs::new();
    common::key_value(&mut attrs, 0, 0, wire::Reader::new(bytes, 0), strict).ok()?;
    attrs.finish().ok()
}

mod plain_string_attribute {
    use super::*;
    use proptest::prelude::*;

    fn encoded(key: &str, value: &str) -> Vec<u8> {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The fast path for the usual string attribute layout (fast mode only) decodes
        /// exactly as the general field loop (strict mode always takes it): on the layout
        /// itself with lengths on both sides of the one-byte varint limit, and on every
        /// one-byte mutation and truncation of it.
        #[test]
        fn agrees_with_the_general_loop(
            key in "[a-z.]{0,140}",
            value in "[ -~]{0,140}",
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            edit in 0..3u8,
        ) {
            let mut bytes = encoded(&key, &value);
            let i = at.index(bytes.len());
            match edit {
                0 => {}
                1 => bytes[i] = byte,
                _ => bytes.truncate(i),
            }
            let fast = one_attribute(&bytes, false);
            let strict = one_attribute(&bytes, true);
            prop_assert_eq!(fast, strict);
            if edit == 0 {
                let decoded = one_attribute(&bytes, false).expect("valid attribute");
                prop_assert_eq!(decoded[2].as_primitive::<UInt8Type>().value(0), AnyValueType::Str as u8);
            }
        }
    }
}

/// On any request: OTLP/JSON with every enum written by name decodes exactly as the same
/// JSON with numbers (or both are refused).
mod json_enum_names {
    use super::*;
    use crate::otlp::encode_json;
    use crate::otlp::testing::{
        arb_logs_request, arb_metrics_request, arb_traces_request, payload_diff, reference_logs,
        reference_metrics, reference_traces,
    };
    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    use proptest::prelude::*;
    use serde_json::Value as Json;

    /// Writes every known enum value of `v` by its name.
    fn to_names(v: &mut Json) {
        match v {
            Json::Object(map) => {
                for (k, x) in map.iter_mut() {
                    let n = x.as_i64().and_then(|n| i32::try_from(n).ok());
                    let name = n.and_then(|n| match k.as_str() {
                        "kind" => SpanKind::try_from(n).ok().map(|e| e.as_str_name()),
                        "code" => StatusCode::try_from(n).ok().map(|e| e.as_str_name()),
                        "severityNumber" => {
                            SeverityNumber::try_from(n).ok().map(|e| e.as_str_name())
                        }
                        "aggregationTemporality" => m::AggregationTemporality::try_from(n)
                            .ok()
                            .map(|e| e.as_str_name()),
                        _ => None,
                    });
                    match name {
                        Some(name) => *x = Json::from(name),
                        None => to_names(x),
                    }
                }
            }
            Json::Array(a) => a.iter_mut().for_each(to_names),
            _ => {}
        }
    }

    fn check(signal: Signal, numbers: Vec<u8>) -> Result<(), TestCaseError> {
        let mut v: Json = serde_json::from_slice(&numbers).unwrap();
        to_names(&mut v);
        let names = serde_json::to_vec(&v).unwrap();
        match (decode_json(signal, &numbers), decode_json(signal, &names)) {
            (Ok(a), Ok(b)) => {
                prop_assert!(payload_diff(&a, &b).is_none(), "{:?}", payload_diff(&a, &b))
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "by number: {:?}; by name: {:?}", a.err(), b.err()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn traces(req in arb_traces_request()) {
            check(Signal::Traces, encode_json(&reference_traces(&req)).unwrap())?;
        }

        #[test]
        fn metrics(req in arb_metrics_request()) {
            check(Signal::Metrics, encode_json(&reference_metrics(&req)).unwrap())?;
        }

        #[test]
        fn logs(req in arb_logs_request()) {
            check(Signal::Logs, encode_json(&reference_logs(&req)).unwrap())?;
        }
    }
}

/// An AnyValue nested `depth` levels (1 = a plain value): arrays and kvlists alternating,
/// innermost a string.
fn nested_value(depth: usize) -> AnyValue {
    let mut v = AnyValue {
        value: Some(Value::StringValue("leaf".into())),
    };
    for level in 1..depth {
        v = AnyValue {
            value: Some(if level % 2 == 0 {
                Value::ArrayValue(ArrayValue { values: vec![v] })
            } else {
                Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(v),
                        ..Default::default()
                    }],
                })
            }),
        };
    }
    v
}

/// Issue 16 item 4: AnyValues nest up to `MAX_ANY_VALUE_DEPTH` levels (past prost's own
/// recursion limit, which refused ~33 kvlist levels), survive the round trip, and read back
/// with prost; one level more is refused naming the path, and a very deep value (far past any
/// stack) is refused the same way, without recursing that deep.
#[test]
fn any_value_nesting_is_bounded_and_named() {
    let span_with = |v: AnyValue| {
        one_span(Span {
            attributes: vec![KeyValue {
                key: "deep".into(),
                value: Some(v),
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let deepest = nested_value(MAX_ANY_VALUE_DEPTH);
    let (span, _) = repaired_span(&span_with(deepest.clone()));
    assert_eq!(span.attributes[0].value.as_ref(), Some(&deepest));

    let e = err_of(&span_with(nested_value(MAX_ANY_VALUE_DEPTH + 1)));
    assert!(matches!(e, DecodeError::InvalidNestedValue { .. }), "{e}");
    assert!(
        e.to_string().contains("nested deeper than 64 levels"),
        "{e}"
    );
    let path = e.path().unwrap();
    assert!(
        path.starts_with("resource_spans[0].scope_spans[1].spans[1].attributes[0].value."),
        "{path}"
    );
    assert_eq!(
        path.matches("_value.values[0]").count(),
        MAX_ANY_VALUE_DEPTH,
        "{path}"
    );

    // 100,000 levels, hand-encoded (prost itself would recurse to build it).
    let mut v = b"\x0a\x01x".to_vec(); // string_value "x"
    for _ in 0..100_000 {
        let mut array = vec![0x0a]; // ArrayValue.values
        put_len(&mut array, v.len());
        array.extend_from_slice(&v);
        let mut any = vec![0x2a]; // AnyValue.array_value
        put_len(&mut any, array.len());
        any.extend_from_slice(&array);
        v = any;
    }
    // As a log body, which holds an AnyValue directly.
    let mut body = vec![0x2a]; // LogRecord.body = 5
    put_len(&mut body, v.len());
    body.extend_from_slice(&v);
    let record = body;
    let mut scope_logs = vec![0x12]; // ScopeLogs.log_records = 2
    put_len(&mut scope_logs, record.len());
    scope_logs.extend_from_slice(&record);
    let mut resource_logs = vec![0x12]; // ResourceLogs.scope_logs = 2
    put_len(&mut resource_logs, scope_logs.len());
    resource_logs.extend_from_slice(&scope_logs);
    let mut req = vec![0x0a]; // resource_logs = 1
    put_len(&mut req, resource_logs.len());
    req.extend_from_slice(&resource_logs);
    let e = decode_logs(&req).expect_err("too deep");
    assert!(
        e.to_string().contains("nested deeper than 64 levels"),
        "{e}"
    );
    assert!(
        e.path().unwrap().starts_with(
            "resource_logs[0].scope_logs[0].log_records[0].body.array_value.values[0]"
        ),
        "{e}"
    );
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Issue 16 item 4: `"NaN"`, `"Infinity"`, `"-Infinity"` doubleValues in OTLP/JSON spans and
/// logs (attributes, bodies, nested) are accepted, as protojson and the metrics path do.
#[test]
fn json_non_finite_double_values_are_accepted() {
    let spans = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"r","value":{"doubleValue":"-Infinity"}}]},"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"op","attributes":[{"key":"nan","value":{"doubleValue":"NaN"}},{"key":"inf","value":{"doubleValue":"Infinity"}},{"key":"one","value":{"doubleValue":1.5}},{"key":"arr","value":{"arrayValue":{"values":[{"doubleValue":"NaN"},{"stringValue":"s"}]}}}]}]}]}]}"#;
    let p = decode_json(Signal::Traces, spans).expect("accepted");
    let back =
        ExportTraceServiceRequest::decode(crate::otlp::encode_to_vec(&p).as_slice()).unwrap();
    let rs = &back.resource_spans[0];
    let double = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.clone()) {
        Some(Value::DoubleValue(d)) => d,
        other => panic!("not a double: {other:?}"),
    };
    assert_eq!(
        double(&rs.resource.as_ref().unwrap().attributes[0].value),
        f64::NEG_INFINITY
    );
    let attrs = &rs.scope_spans[0].spans[0].attributes;
    assert!(double(&attrs[0].value).is_nan());
    assert_eq!(double(&attrs[1].value), f64::INFINITY);
    assert_eq!(double(&attrs[2].value), 1.5);
    let Some(Value::ArrayValue(a)) = attrs[3].value.as_ref().and_then(|v| v.value.clone()) else {
        panic!("array")
    };
    assert!(matches!(a.values[0].value, Some(Value::DoubleValue(d)) if d.is_nan()));
    assert_eq!(a.values[1].value, Some(Value::StringValue("s".into())));

    let logs = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"Infinity"}}]}]}]}"#;
    let p = decode_json(Signal::Logs, logs).expect("accepted");
    let back = ExportLogsServiceRequest::decode(crate::otlp::encode_to_vec(&p).as_slice()).unwrap();
    assert_eq!(
        back.resource_logs[0].scope_logs[0].log_records[0].body,
        Some(AnyValue {
            value: Some(Value::DoubleValue(f64::INFINITY))
        })
    );
    // Other strings stay refused where a double is expected.
    assert!(decode_json(Signal::Logs, br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":"lots"}}]}]}]}"#).is_err());
}

/// Any bytes in any string: the request decodes, every string reads back as
/// `String::from_utf8_lossy` of its bytes, and exactly the invalid ones are counted.
mod invalid_utf8_props {
    use super::*;
    use proptest::prelude::*;

    fn len_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
        out.push(key);
        put_len(out, bytes.len());
        out.extend_from_slice(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_bytes_in_strings_are_replaced_and_counted(
            name in proptest::collection::vec(any::<u8>(), 0..24),
            attrs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..12), proptest::collection::vec(any::<u8>(), 0..24), any::<bool>()),
                0..6,
            ),
        ) {
            // Span { trace_id = 1, span_id = 2, name = 5, attributes = 9 } in a request.
            let mut span = Vec::new();
            len_field(&mut span, 0x0a, &[1; 16]);
            len_field(&mut span, 0x12, &[2; 8]);
            len_field(&mut span, 0x2a, &name);
            let mut want_bad = usize::from(std::str::from_utf8(&name).is_err());
            let mut keys_seen = std::collections::HashSet::new();
            for (k, v, nested) in &attrs {
                let mut any = Vec::new();
                if *nested {
                    // array_value { values: [ { string_value: v } ] }
                    let mut inner = Vec::new();
                    len_field(&mut inner, 0x0a, v);
                    let mut array = Vec::new();
                    len_field(&mut array, 0x0a, &inner);
                    len_field(&mut any, 0x2a, &array);
                } else {
                    len_field(&mut any, 0x0a, v);
                }
                let mut kv = Vec::new();
                len_field(&mut kv, 0x0a, k);
                len_field(&mut kv, 0x12, &any);
                len_field(&mut span, 0x4a, &kv);
                // Keys are a dictionary column: one repair per distinct bad key.
                if std::str::from_utf8(k).is_err() && keys_seen.insert(k.clone()) {
                    want_bad += 1;
                }
                want_bad += usize::from(std::str::from_utf8(v).is_err());
            }
            let mut scope = Vec::new();
            len_field(&mut scope, 0x12, &span);
            let mut resource = Vec::new();
            len_field(&mut resource, 0x12, &scope);
            let mut req = Vec::new();
            len_field(&mut req, 0x0a, &resource);

            let (p, stats) = super::super::decode_with_stats(Signal::Traces, &req).expect("accepted");
            p.validate().unwrap();
            prop_assert_eq!(stats.replaced_invalid_utf8, want_bad);
            let back = ExportTraceServiceRequest::decode(crate::otlp::encode_to_vec(&p).as_slice()).unwrap();
            let span = &back.resource_spans[0].scope_spans[0].spans[0];
            prop_assert_eq!(&span.name, &String::from_utf8_lossy(&name).into_owned());
            prop_assert_eq!(span.attributes.len(), attrs.len());
            for (got, (k, v, nested)) in span.attributes.iter().zip(&attrs) {
                prop_assert_eq!(&got.key, &String::from_utf8_lossy(k).into_owned());
                let s = Value::StringValue(String::from_utf8_lossy(v).into_owned());
                let want = if *nested {
                    Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s) }] })
                } else {
                    s
                };
                prop_assert_eq!(got.value.as_ref().and_then(|a| a.value.clone()), Some(want));
            }
        }
    }
}

/// The validating skim ([`super::skim`]): clean ⇒ the decoder accepts with nothing repaired
/// and the same items; the usual requests are clean; what is unusual or bad is not.
mod skim_props {
    use super::*;
    use crate::fuzzing::skim_agrees;
    use crate::otlp::testing::{arb_logs_request, arb_metrics_request, arb_traces_request};
    use proptest::prelude::*;

    /// The decoder's verdict and the skim's agreement with it.
    fn check(signal: Signal, buf: &[u8]) -> Option<super::super::Skim> {
        let decoded = super::super::decode_with_stats(signal, buf);
        skim_agrees(signal, buf, &decoded);
        super::super::skim(signal, buf)
    }

    use crate::otlp::testing::{
        without_entity_refs_logs, without_entity_refs_metrics, without_entity_refs_traces,
    };

    /// An attribute whose value is an array nested `depth` levels (1 = the value itself).
    fn nested_attribute_span(depth: usize) -> Vec<u8> {
        let mut v = AnyValue {
            value: Some(Value::StringValue("leaf".into())),
        };
        for _ in 1..depth {
            v = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let span = Span {
            attributes: vec![KeyValue {
                key: "deep".into(),
                value: Some(v),
                key_strindex: 0,
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn skim_agrees_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for signal in Signal::ALL {
                check(signal, &bytes);
            }
        }

        /// Mutated and truncated requests (of every shape the generators make): a mutation
        /// the skim calls clean must decode with nothing repaired.
        #[test]
        fn skim_agrees_on_mutated_requests(
            req in prop_oneof![
                arb_traces_request().prop_map(|r| (Signal::Traces, without_entity_refs_traces(r).encode_to_vec())),
                arb_logs_request().prop_map(|r| (Signal::Logs, without_entity_refs_logs(r).encode_to_vec())),
                arb_metrics_request().prop_map(|r| (Signal::Metrics, without_entity_refs_metrics(r).encode_to_vec())),
            ],
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let (signal, mut buf) = req;
            if !buf.is_empty() {
                for (i, b) in flips {
                    let i = i.index(buf.len());
                    buf[i] = b;
                }
            }
            let cut = cut.index(buf.len() + 1);
            check(signal, &buf[..cut]);
            check(signal, &buf);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// What SDKs send is clean: every generated request (valid UTF-8, ids of their size or
        /// empty, nesting within the limit) but for resource `entity_refs`, which the skim
        /// leaves to the decoder; and the skim's counts and resource offsets are prost's.
        #[test]
        fn generated_requests_are_clean_with_prost_counts_and_offsets(
            traces in arb_traces_request(),
            logs in arb_logs_request(),
            metrics in arb_metrics_request(),
        ) {
            let traces = without_entity_refs_traces(traces);
            let buf = traces.encode_to_vec();
            let s = check(Signal::Traces, &buf).expect("clean");
            let spans: Vec<usize> = traces
                .resource_spans
                .iter()
                .map(|r| r.scope_spans.iter().map(|s| s.spans.len()).sum())
                .collect();
            prop_assert_eq!(s.resources.iter().map(|r| r.items).collect::<Vec<_>>(), spans.clone());
            prop_assert_eq!(s.items, spans.iter().sum::<usize>());
            // Each resource's bytes are its field as prost writes it.
            for (r, rs) in s.resources.iter().zip(&traces.resource_spans) {
                let one = ExportTraceServiceRequest { resource_spans: vec![rs.clone()] }.encode_to_vec();
                prop_assert_eq!(&buf[r.start..r.end], &one[..]);
            }

            let logs = without_entity_refs_logs(logs);
            let buf = logs.encode_to_vec();
            let s = check(Signal::Logs, &buf).expect("clean");
            let records: usize = logs
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            prop_assert_eq!(s.items, records);
            prop_assert_eq!(s.resources.len(), logs.resource_logs.len());

            let metrics = without_entity_refs_metrics(metrics);
            let buf = metrics.encode_to_vec();
            let s = check(Signal::Metrics, &buf).expect("clean");
            let points: usize = metrics
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    None => 0,
                    Some(m::metric::Data::Gauge(g)) => g.data_points.len(),
                    Some(m::metric::Data::Sum(x)) => x.data_points.len(),
                    Some(m::metric::Data::Histogram(h)) => h.data_points.len(),
                    Some(m::metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(m::metric::Data::Summary(x)) => x.data_points.len(),
                })
                .sum();
            prop_assert_eq!(s.items, points);
            prop_assert_eq!(s.resources.len(), metrics.resource_metrics.len());
        }

        /// Bad strings anywhere are never clean (the decoder repairs and counts them).
        #[test]
        fn a_string_that_is_not_utf8_is_never_clean(
            traces in arb_traces_request(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut traces = without_entity_refs_traces(traces);
            let names: Vec<&mut String> = traces
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
                .map(|s| &mut s.name)
                .collect();
            prop_assume!(!names.is_empty());
            let n = names.len();
            let name = names.into_iter().nth(at.index(n)).unwrap();
            // A marker of four bytes swapped for an invalid sequence below, in the bytes.
            *name = "\u{1F600}".into();
            let mut buf = traces.encode_to_vec();
            let smiley = "\u{1F600}".as_bytes();
            let pos = buf.windows(4).position(|w| w == smiley).unwrap();
            buf[pos] = 0xFF;
            prop_assert!(super::super::skim(Signal::Traces, &buf).is_none());
            let (_, stats) = super::super::decode_with_stats(Signal::Traces, &buf).unwrap();
            prop_assert!(stats.replaced_invalid_utf8 > 0);
        }
    }

    #[test]
    fn nesting_is_clean_up_to_the_decoders_limit_and_not_past_it() {
        let ok = nested_attribute_span(MAX_ANY_VALUE_DEPTH);
        assert!(super::super::decode(Signal::Traces, &ok).is_ok());
        assert!(check(Signal::Traces, &ok).is_some());
        let deep = nested_attribute_span(MAX_ANY_VALUE_DEPTH + 1);
        assert!(super::super::decode(Signal::Traces, &deep).is_err());
        assert!(check(Signal::Traces, &deep).is_none());
    }

    #[test]
    fn unusual_requests_are_left_to_the_decoder() {
        // A metric with two kinds of data: the decoder's rule (the last wins, the others are
        // checked with prost) is left to it.
        let gauge = m::Metric {
            data: Some(m::metric::Data::Gauge(m::Gauge {
                data_points: vec![m::NumberDataPoint::default()],
            })),
            ..Default::default()
        };
        let mut raw = Vec::new();
        // resource_metrics { scope_metrics { metrics: <both data fields> } }, by hand: prost
        // would keep only one of them.
        let metric = {
            let mut b =
                full_metrics().resource_metrics[0].scope_metrics[0].metrics[0].encode_to_vec();
            b.extend(gauge.encode_to_vec());
            b
        };
        let mut scope = Vec::new();
        scope.push(0x12);
        put_len(&mut scope, metric.len());
        scope.extend(&metric);
        let mut resource = Vec::new();
        resource.push(0x12);
        put_len(&mut resource, scope.len());
        resource.extend(&scope);
        raw.push(0x0a);
        put_len(&mut raw, resource.len());
        raw.extend(&resource);
        assert!(super::super::decode(Signal::Metrics, &raw).is_ok());
        assert!(check(Signal::Metrics, &raw).is_none());
        // An empty request is clean and empty.
        let empty = check(Signal::Traces, &[]).expect("clean");
        assert_eq!((empty.items, empty.resources.len()), (0, 0));
        // An unknown top-level field (the decoder skips it; a forward would pass it on).
        assert!(check(Signal::Traces, &[0x10, 0x01]).is_none());
        // An id of the wrong length: the decoder refuses it.
        let mut bad_id = full_traces();
        bad_id.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 3];
        assert!(check(Signal::Traces, &bad_id.encode_to_vec()).is_none());
        // Profiles-only fields and entity refs.
        let kv = KeyValue {
            key: String::new(),
            value: None,
            key_strindex: 5,
        };
        let with_strindex = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        attributes: vec![kv],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert!(check(Signal::Logs, &with_strindex.encode_to_vec()).is_none());
        assert!(
            check(Signal::Traces, &full_traces().encode_to_vec()).is_none(),
            "entity refs"
        );
        let mut no_refs = full_traces();
        for rs in &mut no_refs.resource_spans {
            if let Some(r) = &mut rs.resource {
                r.entity_refs.clear();
            }
        }
        let s = check(Signal::Traces, &no_refs.encode_to_vec()).expect("clean");
        let spans: usize = no_refs
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert!(spans > 0);
        assert_eq!(s.items, spans);
    }
}
