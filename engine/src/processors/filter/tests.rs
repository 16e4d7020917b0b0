use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as P};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, span::Event, span::Link,
};
use prost::Message as _;

use super::*;
use crate::clock::WallClock;
use crate::component::ComponentId;
use crate::otlp::encode_to_vec;
use crate::otlp::testing::{reference_logs, reference_metrics, reference_traces};
use crate::processors::test_support::Capture;
use crate::telemetry::Telemetry;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(P::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn build(config: serde_json::Value, signal: Signal) -> (Arc<dyn Node>, Capture, Telemetry) {
    let parsed = FilterFactory.parse_config(&config).expect("valid config");
    let t = Telemetry::new();
    let cap = Capture::default();
    let node = FilterFactory
        .build_processor(
            BuildContext {
                id: ComponentId::parse("filter/test").unwrap(),
                config: parsed,
                telemetry: t.clone(),
                clock: Arc::new(WallClock),
                extensions: Default::default(),
            },
            signal,
            Arc::new(cap.clone()),
        )
        .expect("builds");
    (node, cap, t)
}

fn span(name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        attributes: attrs,
        events: vec![
            Event {
                name: "debug".into(),
                ..Default::default()
            },
            Event {
                name: "exception".into(),
                ..Default::default()
            },
        ],
        links: vec![Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn traces(resources: Vec<(Vec<KeyValue>, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(attributes, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn decode_traces(cap: &Capture) -> ExportTraceServiceRequest {
    let got = cap.got.lock().unwrap();
    assert_eq!(got.len(), 1, "one payload passed on");
    got[0].validate().unwrap();
    ExportTraceServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap()
}

#[tokio::test]
async fn drops_spans_with_their_events_links_and_attributes_and_counts_them() {
    let (f, cap, t) = build(
        serde_json::json!({"error_mode": "ignore", "traces": {"span": [
            r#"attributes["http.route"] == "/healthz""#,
            r#"name == "drop me""#,
        ]}}),
        Signal::Traces,
    );
    let req = traces(vec![(
        vec![s("service.name", "a")],
        vec![
            span("keep", vec![s("http.route", "/orders")]),
            span("probe", vec![s("http.route", "/healthz")]),
            span("drop me", vec![]),
        ],
    )]);
    f.consume(reference_traces(&req)).await.unwrap();
    let out = decode_traces(&cap);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "keep");
    assert_eq!((spans[0].events.len(), spans[0].links.len()), (2, 1));
    let p = &cap.got.lock().unwrap()[0];
    assert_eq!(p.table(Table::SpanEvents).num_rows(), 2);
    assert_eq!(p.table(Table::SpanLinks).num_rows(), 1);
    assert_eq!(p.table(Table::SpanAttrs).num_rows(), 1);
    let text = t.render();
    assert!(
        text.contains("otelcol_processor_filter_spans_filtered_total{filter=\"filter/test\"} 2\n"),
        "{text}"
    );
    assert!(text.contains(
        "otelcol_processor_dropped_spans_total{processor=\"filter/test\",reason=\"filtered\"} 2\n"
    ));
    assert!(text.contains("otelcol_processor_outgoing_items_total{otel_signal=\"traces\",processor=\"filter/test\"} 1\n"));
}

#[tokio::test]
async fn drops_span_events_and_whole_resources() {
    let (f, cap, t) = build(
        serde_json::json!({"traces": {
            "resource": [r#"attributes["k8s.namespace.name"] == "kube-system""#],
            "spanevent": [r#"name == "debug""#],
        }}),
        Signal::Traces,
    );
    let req = traces(vec![
        (
            vec![s("k8s.namespace.name", "kube-system")],
            vec![span("a", vec![]), span("b", vec![])],
        ),
        (
            vec![s("k8s.namespace.name", "shop")],
            vec![span("c", vec![])],
        ),
    ]);
    f.consume(reference_traces(&req)).await.unwrap();
    let out = decode_traces(&cap);
    assert_eq!(out.resource_spans.len(), 1);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0]
            .events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["exception"]
    );
    assert_eq!(
        t.value(
            "otelcol_processor_filter_spans_filtered",
            &[("filter", "filter/test")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_payload_left_empty_is_not_passed_on() {
    let (f, cap, t) = build(
        serde_json::json!({"traces": {"span": ["true"]}}),
        Signal::Traces,
    );
    f.consume(reference_traces(&traces(vec![(
        vec![],
        vec![span("x", vec![])],
    )])))
    .await
    .unwrap();
    assert!(cap.got.lock().unwrap().is_empty());
    assert_eq!(
        t.value(
            "otelcol_processor_filter_spans_filtered",
            &[("filter", "filter/test")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn error_modes_for_conditions() {
    let req = traces(vec![(
        vec![],
        vec![span("ab", vec![]), span("abcdef", vec![])],
    )]);
    let cond = r#"Substring(name, 0, 4) == "abcd""#;
    // ignore (and silent): a failing condition is false for that span
    for mode in ["ignore", "silent"] {
        let (f, cap, _) = build(
            serde_json::json!({"error_mode": mode, "traces": {"span": [cond]}}),
            Signal::Traces,
        );
        f.consume(reference_traces(&req)).await.unwrap();
        let out = decode_traces(&cap);
        assert_eq!(out.resource_spans[0].scope_spans[0].spans[0].name, "ab");
    }
    // propagate (the default): the payload is refused, nothing is passed on
    let (f, cap, _) = build(
        serde_json::json!({"traces": {"span": [cond]}}),
        Signal::Traces,
    );
    let err = f.consume(reference_traces(&req)).await.unwrap_err();
    assert!(
        matches!(&err, ConsumeError::Permanent(m) if m.contains("Substring") && m.contains("filter/test")),
        "{err:?}"
    );
    assert!(cap.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn inferred_conditions_run_top_down_and_skip_what_a_higher_level_dropped() {
    // Spans of the dropped resource have short names on which Substring fails; under
    // propagate that would refuse the payload, but they are never evaluated.
    let (f, cap, _) = build(
        serde_json::json!({"trace_conditions": [
            r#"Substring(span.name, 0, 6) == "delete""#,
            r#"resource.attributes["env"] == "test""#,
            {"error_mode": "ignore", "conditions": [r#"spanevent.name == "debug""#]},
        ]}),
        Signal::Traces,
    );
    let req = traces(vec![
        (vec![s("env", "test")], vec![span("x", vec![])]),
        (
            vec![s("env", "prod")],
            vec![span("delete-me", vec![]), span("keep-this", vec![])],
        ),
    ]);
    f.consume(reference_traces(&req)).await.unwrap();
    let out = decode_traces(&cap);
    assert_eq!(out.resource_spans.len(), 1);
    let spans = &out.resource_spans[0].scope_spans[0].spans;
    assert_eq!(
        spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["keep-this"]
    );
    assert_eq!(spans[0].events.len(), 1);
}

fn gauge(name: &str, points: Vec<(i64, Vec<KeyValue>)>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points
                .into_iter()
                .map(|(v, attributes)| NumberDataPoint {
                    attributes,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_by_metric_and_by_data_point() {
    let (f, cap, t) = build(
        serde_json::json!({"metrics": {
            "metric": [r#"name == "noisy""#],
            "datapoint": [r#"attributes["env"] == "test""#, "value_int > 100", r#"metric.name == "h" and count == 0"#],
        }}),
        Signal::Metrics,
    );
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    gauge("noisy", vec![(1, vec![]), (2, vec![])]),
                    gauge(
                        "kept",
                        vec![
                            (1, vec![s("env", "prod")]),
                            (2, vec![s("env", "test")]),
                            (500, vec![]),
                        ],
                    ),
                    gauge("emptied", vec![(1, vec![s("env", "test")])]),
                    Metric {
                        name: "h".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![
                                HistogramDataPoint {
                                    count: 0,
                                    ..Default::default()
                                },
                                HistogramDataPoint {
                                    count: 3,
                                    ..Default::default()
                                },
                            ],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    f.consume(reference_metrics(&req)).await.unwrap();
    let got = cap.got.lock().unwrap();
    let out = ExportMetricsServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap();
    let metrics = &out.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(
        metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["kept", "h"]
    );
    let Some(Data::Gauge(g)) = &metrics[0].data else {
        panic!()
    };
    assert_eq!(g.data_points.len(), 1);
    let Some(Data::Histogram(h)) = &metrics[1].data else {
        panic!()
    };
    assert_eq!(
        h.data_points.iter().map(|p| p.count).collect::<Vec<_>>(),
        [3]
    );
    // 2 (noisy) + 2 (kept) + 1 (emptied) + 1 (h) data points
    assert_eq!(
        t.value(
            "otelcol_processor_filter_datapoints_filtered",
            &[("filter", "filter/test")]
        ),
        Some(6.0)
    );
}

#[tokio::test]
async fn log_records() {
    let (f, cap, t) = build(
        serde_json::json!({"logs": {"log_record": [
            "severity_number < SEVERITY_NUMBER_WARN",
            r#"IsMatch(body, "^healthcheck")"#,
        ]}}),
        Signal::Logs,
    );
    let log = |sev: i32, body: &str| LogRecord {
        severity_number: sev,
        body: Some(AnyValue {
            value: Some(P::StringValue(body.into())),
        }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(9, "info"),
                    log(17, "error!"),
                    log(13, "healthcheck ok"),
                    log(13, "warn"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    f.consume(reference_logs(&req)).await.unwrap();
    let got = cap.got.lock().unwrap();
    let out = ExportLogsServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap();
    let bodies: Vec<_> = out.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|l| l.body.clone().unwrap().value.unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            P::StringValue("error!".into()),
            P::StringValue("warn".into())
        ]
    );
    assert_eq!(
        t.value(
            "otelcol_processor_filter_logs_filtered",
            &[("filter", "filter/test")]
        ),
        Some(2.0)
    );
}

#[test]
fn config_errors_name_the_condition() {
    let err = |v: serde_json::Value| match FilterFactory.parse_config(&v) {
        Ok(_) => panic!("{v} should be refused"),
        Err(e) => e,
    };
    let e = err(serde_json::json!({"traces": {"span": ["name == \"a\"", "nam == \"b\""]}}));
    assert_eq!(e.path, "traces.span[1]");
    assert!(
        e.message.contains("unknown path `nam`") && e.message.contains("column 1"),
        "{e}"
    );
    let e = err(serde_json::json!({"traces": {"exclude": {"match_type": "strict"}}}));
    assert!(e.message.contains("include/exclude"), "{e}");
    let e = err(serde_json::json!({"spans": {"include": {}}}));
    assert_eq!(e.path, "spans");
    let e = err(serde_json::json!({"traces": {"spans": []}}));
    assert!(e.message.contains("unknown field"), "{e}");
    let e = err(serde_json::json!({"error_mode": "loud"}));
    assert_eq!(e.path, "error_mode");
    let e = err(serde_json::json!({"trace_conditions": ["attributes[\"a\"] == 1"]}));
    assert_eq!(e.path, "trace_conditions[0]");
    assert!(e.message.contains("not a context"), "{e}");
    let e = err(serde_json::json!({"metrics": {"metric": ["attributes[\"a\"] == 1"]}}));
    assert!(e.message.contains("a metric has no attributes"), "{e}");
    let e = err(serde_json::json!({"logs": {"log_record": ["span.name == \"x\""]}}));
    assert!(e.message.contains("not available for logs"), "{e}");
}

/// Every bad condition is reported, each at its path, in one pass.
#[test]
fn every_config_error_is_reported_at_once() {
    let errors = match FilterFactory.parse_config_all(&serde_json::json!({
        "traces": {"span": ["name == \"a\"", "nam == \"b\"", "IsMatch(name, \"(\")"]},
        "logs": {"log_record": ["span.name == \"x\""]},
        "trace_conditions": ["span.name == \"ok\"", {"conditions": ["span.nme == 1"]}],
    })) {
        Ok(_) => panic!("refused"),
        Err(errors) => errors,
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "traces.span[1]",
            "traces.span[2]",
            "logs.log_record[0]",
            "trace_conditions[1].conditions[0]",
        ],
        "{errors:#?}"
    );
}
