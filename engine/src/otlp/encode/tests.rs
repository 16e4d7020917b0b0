//! The encoder's contract: `encode(reference(x)) == x.encode_to_vec()` byte for byte.

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
use proptest::strategy::ValueTree;
use prost::Message;

use super::{encode, encode_json, encode_to_vec};
use crate::otlp::testing::*;
use crate::payload::Payload;
use crate::schema::Signal;

/// Byte-identical to prost, with a readable hint on mismatch.
#[track_caller]
fn assert_same_bytes(ours: &[u8], prost: &[u8]) {
    if ours != prost {
        let at = ours
            .iter()
            .zip(prost)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(prost.len()));
        let lo = at.saturating_sub(16);
        panic!(
            "encodings differ at byte {at} (ours {} bytes, prost {} bytes)\n ours[{lo}..]: {:02x?}\nprost[{lo}..]: {:02x?}",
            ours.len(),
            prost.len(),
            &ours[lo..(at + 16).min(ours.len())],
            &prost[lo..(at + 16).min(prost.len())],
        );
    }
}

fn check_traces(req: &ExportTraceServiceRequest) {
    let ours = encode_to_vec(&reference_traces(req));
    assert_same_bytes(&ours, &req.encode_to_vec());
}

fn check_metrics(req: &ExportMetricsServiceRequest) {
    let ours = encode_to_vec(&reference_metrics(req));
    assert_same_bytes(&ours, &req.encode_to_vec());
}

fn check_logs(req: &ExportLogsServiceRequest) {
    let ours = encode_to_vec(&reference_logs(req));
    assert_same_bytes(&ours, &req.encode_to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn traces_match_prost(req in arb_traces_request()) {
        check_traces(&req);
    }

    #[test]
    fn metrics_match_prost(req in arb_metrics_request()) {
        check_metrics(&req);
    }

    #[test]
    fn logs_match_prost(req in arb_logs_request()) {
        check_logs(&req);
    }

    #[test]
    fn reference_is_stable_through_the_encoder(req in arb_traces_request()) {
        // decode(prost bytes of our encoding) gives back the request: the oracle and the
        // encoder agree on meaning, not only on bytes.
        let ours = encode_to_vec(&reference_traces(&req));
        let back = ExportTraceServiceRequest::decode(&ours[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_payload_eq(&reference_traces(&back), &reference_traces(&req));
    }
}

/// The same payload with every column an offset view into a larger array (as `RecordBatch::
/// slice` makes them): column readers must honour array offsets.
fn offset_views(p: &Payload) -> Payload {
    let mut out = Payload::empty(p.signal());
    for (t, batch) in p.tables() {
        let doubled = arrow::compute::concat_batches(&batch.schema(), [batch, batch]).unwrap();
        out.set(t, doubled.slice(batch.num_rows(), batch.num_rows()))
            .unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn offset_views_encode_the_same(
        t in arb_traces_request(),
        m in arb_metrics_request(),
        l in arb_logs_request(),
    ) {
        for p in [reference_traces(&t), reference_metrics(&m), reference_logs(&l)] {
            let view = offset_views(&p);
            assert_same_bytes(&encode_to_vec(&view), &encode_to_vec(&p));
        }
    }
}

fn kv(key: &str, value: Option<any_value::Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value }),
        key_strindex: 0,
    }
}

fn s(v: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(v.into()))
}

#[test]
fn empty_payloads_encode_to_nothing() {
    for signal in Signal::ALL {
        assert!(encode_to_vec(&Payload::empty(signal)).is_empty());
    }
    check_traces(&ExportTraceServiceRequest::default());
}

#[test]
fn encode_appends() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans::default()],
    };
    let mut out = vec![0xff];
    encode(&reference_traces(&req), &mut out);
    assert_eq!(out, [0xff, 0x0a, 0x00]);
}

#[test]
fn trace_edge_cases() {
    let nested = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("inner", s("")),
                KeyValue {
                    key: "absent".into(),
                    value: None,
                    key_strindex: 0,
                },
                kv(
                    "arr",
                    Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: None }, AnyValue { value: s("x") }],
                    })),
                ),
            ],
        })),
    };
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![],
        flags: 0x301,
        name: "GET /".into(),
        kind: -1, // negative enum: 10-byte varint
        start_time_unix_nano: u64::MAX,
        end_time_unix_nano: 0,
        attributes: vec![
            kv("empty.string", s("")),
            kv("zero", Some(any_value::Value::IntValue(0))),
            kv("neg", Some(any_value::Value::IntValue(-5))),
            kv("false", Some(any_value::Value::BoolValue(false))),
            kv("dzero", Some(any_value::Value::DoubleValue(0.0))),
            kv("nan", Some(any_value::Value::DoubleValue(f64::NAN))),
            kv("bytes", Some(any_value::Value::BytesValue(vec![]))),
            kv("empty", None),
            KeyValue {
                key: "".into(),
                value: None,
                key_strindex: 0,
            },
            KeyValue {
                key: "map".into(),
                value: Some(nested.clone()),
                key_strindex: 0,
            },
            kv(
                "empty.array",
                Some(any_value::Value::ArrayValue(ArrayValue::default())),
            ),
            kv(
                "long",
                s(&"x".repeat(300)), // two-byte length varints
            ),
        ],
        dropped_attributes_count: 1,
        events: vec![
            span::Event::default(),
            span::Event {
                time_unix_nano: 5,
                name: "ev".into(),
                attributes: vec![kv("a", s("b"))],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 0,
        links: vec![span::Link {
            trace_id: vec![3; 16],
            span_id: vec![],
            trace_state: "k=v".into(),
            attributes: vec![],
            dropped_attributes_count: 2,
            flags: u32::MAX,
        }],
        dropped_links_count: 7,
        status: Some(Status::default()),
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("checkout"))],
                    dropped_attributes_count: 0,
                    entity_refs: vec![EntityRef {
                        schema_url: "u".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec![],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![span.clone(), Span::default()],
                        schema_url: "s".into(),
                    },
                    ScopeSpans::default(),
                ],
                schema_url: "r".into(),
            },
            ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
            ResourceSpans::default(),
        ],
    };
    check_traces(&req);
}

/// Key and value lengths on both sides of every varint width change the attribute writer's
/// fast paths depend on (KeyValue body, AnyValue body and string under/over 128 bytes, and
/// two-byte lengths), for string, bytes and int values, in all three signals' attribute tables.
#[test]
fn attribute_lengths_around_varint_boundaries() {
    let lens = [
        0usize, 1, 7, 8, 15, 16, 17, 31, 32, 33, 60, 119, 120, 121, 122, 123, 124, 125, 126, 127,
        128, 129, 200, 16_383, 16_384,
    ];
    let mut attributes = Vec::new();
    for &k in &[0usize, 1, 12, 60, 110, 125, 126, 127, 128] {
        for &v in &lens {
            let key = "k".repeat(k);
            attributes.push(kv(&key, s(&"v".repeat(v))));
            attributes.push(kv(&key, Some(any_value::Value::BytesValue(vec![7; v]))));
            attributes.push(kv(&key, Some(any_value::Value::IntValue(v as i64 - 64))));
        }
    }
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        attributes: attributes.clone(),
        events: vec![span::Event {
            attributes: attributes.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    check_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: attributes.clone(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    attributes: attributes.clone(),
                    ..Default::default()
                }),
                spans: vec![span.clone(), span],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    });
    check_logs(&ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    attributes: attributes.clone(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    check_metrics(&ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes,
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
}

#[test]
fn metric_edge_cases() {
    let ex = Exemplar {
        filtered_attributes: vec![kv("k", s("v"))],
        time_unix_nano: 0,
        span_id: vec![9; 8],
        trace_id: vec![],
        value: Some(exemplar::Value::AsInt(0)),
    };
    let number = |value| NumberDataPoint {
        attributes: vec![kv("k", s("v"))],
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        exemplars: vec![ex.clone(), Exemplar::default()],
        flags: 1,
        value,
    };
    let metric = |data| Metric {
        name: "m".into(),
        description: String::new(),
        unit: "By".into(),
        metadata: vec![kv("meta", s(""))],
        data,
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1".into(),
                    attributes: vec![],
                    dropped_attributes_count: 3,
                }),
                metrics: vec![
                    metric(None),
                    metric(Some(metric::Data::Gauge(Gauge {
                        data_points: vec![
                            number(Some(number_data_point::Value::AsInt(0))),
                            number(Some(number_data_point::Value::AsDouble(-0.0))),
                            number(None),
                        ],
                    }))),
                    metric(Some(metric::Data::Sum(Sum::default()))),
                    metric(Some(metric::Data::Sum(Sum {
                        data_points: vec![number(Some(number_data_point::Value::AsInt(-1)))],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    }))),
                    metric(Some(metric::Data::Histogram(Histogram {
                        data_points: vec![
                            HistogramDataPoint::default(),
                            HistogramDataPoint {
                                sum: Some(0.0),
                                min: Some(-0.0),
                                max: None,
                                count: 3,
                                bucket_counts: vec![0, 1, 2],
                                explicit_bounds: vec![0.5, 1.0],
                                exemplars: vec![ex.clone()],
                                ..Default::default()
                            },
                        ],
                        aggregation_temporality: 1,
                    }))),
                    metric(Some(metric::Data::ExponentialHistogram(
                        ExponentialHistogram {
                            data_points: vec![
                                ExponentialHistogramDataPoint::default(),
                                ExponentialHistogramDataPoint {
                                    scale: -3,
                                    zero_count: 1,
                                    positive: Some(
                                        exponential_histogram_data_point::Buckets::default(),
                                    ),
                                    negative: Some(exponential_histogram_data_point::Buckets {
                                        offset: -2,
                                        bucket_counts: vec![0, 300, u64::MAX],
                                    }),
                                    zero_threshold: -0.0,
                                    sum: Some(1.5),
                                    ..Default::default()
                                },
                            ],
                            aggregation_temporality: 0,
                        },
                    ))),
                    metric(Some(metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint {
                            sum: -0.0,
                            quantile_values: vec![
                                summary_data_point::ValueAtQuantile::default(),
                                summary_data_point::ValueAtQuantile {
                                    quantile: 0.99,
                                    value: 12.0,
                                },
                            ],
                            ..Default::default()
                        }],
                    }))),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    check_metrics(&req);
}

#[test]
fn log_edge_cases() {
    let bodies = [
        None,
        s(""),
        Some(any_value::Value::IntValue(i64::MIN)),
        Some(any_value::Value::BoolValue(false)),
        Some(any_value::Value::BytesValue(vec![0, 1])),
        Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList::default())),
            }],
        })),
    ];
    let records = bodies
        .into_iter()
        .map(|b| LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: b.map(|v| AnyValue { value: Some(v) }),
            attributes: vec![kv("k", s("v"))],
            dropped_attributes_count: 0,
            flags: 1,
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            event_name: "e".into(),
        })
        .chain([LogRecord::default()])
        .collect();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    check_logs(&req);
}

#[test]
fn present_but_empty_log_body_is_kept_apart_from_no_body() {
    let mut req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: None,
            scope_logs: vec![ScopeLogs {
                scope: None,
                log_records: vec![LogRecord {
                    body: Some(AnyValue { value: None }),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    assert_same_bytes(&encode_to_vec(&reference_logs(&req)), &req.encode_to_vec());
    req.resource_logs[0].scope_logs[0].log_records[0].body = None;
    assert_same_bytes(&encode_to_vec(&reference_logs(&req)), &req.encode_to_vec());
}

#[test]
fn concatenated_payloads_encode_like_concatenated_requests() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..32 {
        let a = arb_traces_request()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let b = arb_traces_request()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let p = Payload::concat(
            Signal::Traces,
            &[reference_traces(&a), reference_traces(&b)],
        )
        .unwrap();
        let mut both = a.clone();
        both.resource_spans.extend(b.resource_spans);
        assert_same_bytes(&encode_to_vec(&p), &both.encode_to_vec());
    }
}

#[test]
fn json_is_one_line_otlp_json() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("my.service"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span {
                    trace_id: vec![0x5b; 16],
                    span_id: vec![0xee; 8],
                    name: "x".into(),
                    kind: 2,
                    start_time_unix_nano: 1544712660000000000,
                    attributes: vec![kv("n", Some(any_value::Value::IntValue(-7)))],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let json = encode_json(&reference_traces(&req)).unwrap();
    let text = String::from_utf8(json).unwrap();
    assert!(!text.contains('\n'), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "5b".repeat(16), "{text}");
    assert_eq!(span["spanId"], "ee".repeat(8), "{text}");
    assert_eq!(span["kind"], 2, "{text}");
    assert_eq!(span["startTimeUnixNano"], "1544712660000000000", "{text}");
    assert_eq!(span["attributes"][0]["value"]["intValue"], "-7", "{text}");
}

/// Makes two OTLP/JSON documents comparable: defaults pruned, ids lowercased (the spec makes
/// them case-insensitive), numbers as f64 (`5` and `5.0` are the same double).
fn normalize_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    super::json::prune(v);
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                // kept by `prune` for opentelemetry-proto's reader, omitted by the examples
                m.retain(|k, v| !(k == "schemaUrl" && v == ""));
                for (k, v) in m.iter_mut() {
                    if let ("traceId" | "spanId" | "parentSpanId", Value::String(s)) =
                        (k.as_str(), &mut *v)
                    {
                        *s = s.to_lowercase();
                    }
                    walk(v);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Number(n) => {
                if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                    *n = f;
                }
            }
            _ => {}
        }
    }
    walk(v);
}

#[test]
fn json_matches_the_otlp_examples() {
    // The opentelemetry-proto examples, vendored with attribution (see testdata's README).
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/otlp-examples"
    ));
    for (file, signal) in [
        ("trace.json", Signal::Traces),
        ("metrics.json", Signal::Metrics),
        ("logs.json", Signal::Logs),
    ] {
        let text = std::fs::read(dir.join(file)).unwrap();
        let payload = match signal {
            Signal::Traces => reference_traces(&serde_json::from_slice(&text).unwrap()),
            Signal::Metrics => reference_metrics(&serde_json::from_slice(&text).unwrap()),
            Signal::Logs => reference_logs(&serde_json::from_slice(&text).unwrap()),
        };
        let ours = encode_json(&payload).unwrap();
        assert!(!ours.contains(&b'\n'));
        let mut ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
        let mut expected: serde_json::Value = serde_json::from_slice(&text).unwrap();
        normalize_json(&mut ours);
        normalize_json(&mut expected);
        assert_eq!(ours, expected, "{file}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// OTLP/JSON round-trips through the crate's deserializer (finite doubles: see json.rs).
    #[test]
    fn json_round_trips(req in arb_logs_request()) {
        let p = reference_logs(&req);
        let json = encode_json(&p).unwrap();
        let back: ExportLogsServiceRequest = serde_json::from_slice(&json).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&json))))?;
        let finite = payload_diff(&reference_logs(&back), &p);
        // non-finite doubles are a documented loss; only check requests without them
        let text = format!("{req:?}");
        if !(text.contains("NaN") || text.contains("inf")) {
            prop_assert!(finite.is_none(), "{:?}", finite);
        }
    }
}

/// A string field that holds "0" is data, not a default to prune: only the 64-bit integer
/// fields (strings in OTLP/JSON) lose their "0". Found by `json_round_trips` (a log record's
/// `event_name: "0"` came back as "").
#[test]
fn json_keeps_string_fields_that_read_zero() {
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "0".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    event_name: "0".into(),
                    severity_text: "0".into(),
                    ..Default::default()
                }],
                schema_url: "0".into(),
            }],
            schema_url: String::new(),
        }],
    };
    let p = reference_logs(&logs);
    let json = encode_json(&p).unwrap();
    let text = String::from_utf8_lossy(&json).to_string();
    assert!(
        !text.contains("timeUnixNano"),
        "zero times are pruned: {text}"
    );
    let back: ExportLogsServiceRequest = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, logs, "{text}");

    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "0".into(),
                    trace_state: "0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let json = encode_json(&reference_traces(&traces)).unwrap();
    let back: ExportTraceServiceRequest = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, traces, "{}", String::from_utf8_lossy(&json));
}

/// Encoded requests are written into pooled buffers (`encoded_buffers`): a request let go gives
/// its buffer to the next one — the same allocation, its pages still mapped — and the bytes are
/// exactly what a fresh buffer gets, whether the pooled buffer is larger or shorter than the
/// next request.
#[test]
fn encoded_requests_reuse_a_released_buffer_and_encode_the_same_bytes() {
    use super::encoded_buffers::encode_with;
    use crate::payload::part_buffers::Pool;
    let pool: &'static Pool = Box::leak(Box::new(Pool::new(4, 64 << 20)));
    let spans = |n: usize| {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..n)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: (i as u64).to_be_bytes().to_vec(),
                            name: format!("span {i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        crate::otlp::decode_traces(&req.encode_to_vec()).unwrap()
    };
    let (big, small) = (spans(3000), spans(20));

    let first = encode_with(pool, &big);
    assert_eq!(&first[..], &encode_to_vec(&big)[..]);
    let at = first.as_ptr();
    let held = first.slice(10..20);
    drop(first);
    let second = encode_with(pool, &small);
    assert_ne!(
        second.as_ptr(),
        at,
        "a buffer still referenced is not reused"
    );
    drop(held);
    drop(second);
    // Both buffers are idle now; the largest (the big request's) is taken first.
    let third = encode_with(pool, &big);
    assert_eq!(third.as_ptr(), at, "the released buffer is written again");
    assert_eq!(&third[..], &encode_to_vec(&big)[..]);
    drop(third);
    // A pooled buffer shorter than the request: replaced, not grown, and the bytes the same.
    let short: &'static Pool = Box::leak(Box::new(Pool::new(4, 64 << 20)));
    drop(encode_with(short, &small));
    let grown = encode_with(short, &big);
    assert_eq!(&grown[..], &encode_to_vec(&big)[..]);
}
