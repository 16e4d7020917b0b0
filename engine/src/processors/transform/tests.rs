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
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event};
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

fn keys(attrs: &[KeyValue]) -> Vec<&str> {
    attrs.iter().map(|kv| kv.key.as_str()).collect()
}

fn value(attrs: &[KeyValue], key: &str) -> Option<P> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn build(config: serde_json::Value, signal: Signal) -> (Arc<dyn Node>, Capture) {
    let parsed = TransformFactory
        .parse_config(&config)
        .unwrap_or_else(|e| panic!("{e}"));
    let cap = Capture::default();
    let node = TransformFactory
        .build_processor(
            BuildContext {
                id: ComponentId::parse("transform/test").unwrap(),
                config: parsed,
                telemetry: Telemetry::new(),
                clock: Arc::new(WallClock),
                extensions: Default::default(),
            },
            signal,
            Arc::new(cap.clone()),
        )
        .expect("builds");
    (node, cap)
}

fn one_trace() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "svc"), s("process.command", "/bin/x")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "GET /x".into(),
                    kind: 3,
                    attributes: vec![s("db.connection_string", "pg://u:p@h"), s("k", "v")],
                    events: vec![Event {
                        name: "exception".into(),
                        attributes: vec![s("exception.type", "E")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn run_traces(config: serde_json::Value) -> ExportTraceServiceRequest {
    let (t, cap) = build(config, Signal::Traces);
    t.consume(reference_traces(&one_trace())).await.unwrap();
    let got = cap.got.lock().unwrap();
    got[0].validate().unwrap();
    ExportTraceServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap()
}

#[tokio::test]
async fn flat_statements_infer_their_context() {
    let out = run_traces(serde_json::json!({"trace_statements": [
        r#"delete_key(resource.attributes, "process.command")"#,
        r#"delete_key(span.attributes, "db.connection_string")"#,
        r#"set(span.attributes["svc"], resource.attributes["service.name"])"#,
    ]}))
    .await;
    let rs = &out.resource_spans[0];
    assert_eq!(
        keys(&rs.resource.as_ref().unwrap().attributes),
        ["service.name"]
    );
    assert_eq!(keys(&rs.scope_spans[0].spans[0].attributes), ["k", "svc"]);
}

#[tokio::test]
async fn groups_with_context_conditions_and_span_events() {
    let out = run_traces(serde_json::json!({"trace_statements": [
        {"context": "resource", "statements": [r#"set(attributes["env"], "prod")"#]},
        {"context": "span", "conditions": ["kind == SPAN_KIND_SERVER"], "statements": [r#"set(attributes["server"], true)"#]},
        {"context": "span", "conditions": ["kind == SPAN_KIND_CLIENT"], "statements": [r#"set(attributes["client"], true)"#]},
        {"context": "spanevent", "statements": [r#"set(attributes["span"], span.name) where name == "exception""#]},
        {"statements": [r#"set(spanevent.attributes["n"], 1)"#]},
    ]}))
    .await;
    let rs = &out.resource_spans[0];
    assert_eq!(
        value(&rs.resource.as_ref().unwrap().attributes, "env"),
        Some(P::StringValue("prod".into()))
    );
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(
        keys(&span.attributes),
        ["db.connection_string", "k", "client"]
    );
    let ev = &span.events[0].attributes;
    assert_eq!(value(ev, "span"), Some(P::StringValue("GET /x".into())));
    assert_eq!(value(ev, "n"), Some(P::IntValue(1)));
}

#[tokio::test]
async fn metric_and_datapoint_statements() {
    let (t, cap) = build(
        serde_json::json!({"metric_statements": [
            {"context": "metric", "statements": [
                r#"set(description, "Sum") where name == "requests""#,
                r#"set(name, ConvertCase(name, "upper")) where type == METRIC_DATA_TYPE_HISTOGRAM"#,
            ]},
            {"context": "datapoint", "statements": [
                r#"set(attributes["big"], true) where value_int > 10 or count > 10"#,
                r#"set(attributes["metric"], metric.name)"#,
            ]},
        ]}),
        Signal::Metrics,
    );
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "requests".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![
                                NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(5)),
                                    ..Default::default()
                                },
                                NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(50)),
                                    ..Default::default()
                                },
                            ],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                count: 11,
                                ..Default::default()
                            }],
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
    t.consume(reference_metrics(&req)).await.unwrap();
    let got = cap.got.lock().unwrap();
    got[0].validate().unwrap();
    let out = ExportMetricsServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap();
    let m = &out.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(
        (m[0].name.as_str(), m[0].description.as_str()),
        ("requests", "Sum")
    );
    assert_eq!(m[1].name, "LATENCY");
    let Some(Data::Gauge(g)) = &m[0].data else {
        panic!()
    };
    assert_eq!(value(&g.data_points[0].attributes, "big"), None);
    assert_eq!(
        value(&g.data_points[1].attributes, "big"),
        Some(P::BoolValue(true))
    );
    assert_eq!(
        value(&g.data_points[0].attributes, "metric"),
        Some(P::StringValue("requests".into()))
    );
    let Some(Data::Histogram(h)) = &m[1].data else {
        panic!()
    };
    assert_eq!(
        value(&h.data_points[0].attributes, "big"),
        Some(P::BoolValue(true))
    );
    // groups run in order: the data point group sees the metric renamed by the one before
    assert_eq!(
        value(&h.data_points[0].attributes, "metric"),
        Some(P::StringValue("LATENCY".into()))
    );
}

#[tokio::test]
async fn log_statements() {
    let (t, cap) = build(
        serde_json::json!({"log_statements": [
            r#"set(log.severity_text, "WARN") where log.severity_number == SEVERITY_NUMBER_WARN"#,
            r#"set(log.body, Concat(["[", log.severity_text, "] ", log.body], "")) where IsString(log.body)"#,
            r#"set(log.attributes["len"], Int("3"))"#,
            r#"replace_pattern(log.body, "password=\\S+", "password=***")"#,
        ]}),
        Signal::Logs,
    );
    let log = |sev: i32, body: Option<P>| LogRecord {
        severity_number: sev,
        body: body.map(|b| AnyValue { value: Some(b) }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log(13, Some(P::StringValue("login password=hunter2 ok".into()))),
                    log(9, Some(P::IntValue(7))),
                    log(9, None),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    t.consume(reference_logs(&req)).await.unwrap();
    let got = cap.got.lock().unwrap();
    got[0].validate().unwrap();
    let out = ExportLogsServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap();
    let logs = &out.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(logs[0].severity_text, "WARN");
    assert_eq!(
        logs[0].body.clone().unwrap().value,
        Some(P::StringValue("[WARN] login password=*** ok".into()))
    );
    assert_eq!(logs[1].body.clone().unwrap().value, Some(P::IntValue(7)));
    assert_eq!(logs[2].body, None);
    assert_eq!(value(&logs[2].attributes, "len"), Some(P::IntValue(3)));
}

#[tokio::test]
async fn propagate_refuses_the_payload_and_ignore_goes_on() {
    let stmt = r#"set(span.attributes["x"], Substring(span.name, 0, 50))"#;
    let (t, cap) = build(
        serde_json::json!({"error_mode": "propagate", "trace_statements": [stmt]}),
        Signal::Traces,
    );
    let err = t.consume(reference_traces(&one_trace())).await.unwrap_err();
    assert!(
        matches!(&err, ConsumeError::Permanent(m) if m.contains("transform/test") && m.contains("Substring")),
        "{err:?}"
    );
    assert!(cap.got.lock().unwrap().is_empty());
    // a group's error_mode overrides the top-level one
    let (t, cap) = build(
        serde_json::json!({"error_mode": "propagate", "trace_statements": [
            {"error_mode": "ignore", "statements": [stmt]}
        ]}),
        Signal::Traces,
    );
    t.consume(reference_traces(&one_trace())).await.unwrap();
    assert_eq!(cap.items(), 1);
}

#[test]
fn config_errors_name_the_statement() {
    let err = |v: serde_json::Value| match TransformFactory.parse_config(&v) {
        Ok(_) => panic!("{v} should be refused"),
        Err(e) => e,
    };
    let e = err(
        serde_json::json!({"trace_statements": ["set(span.name, \"a\")", "set(span.nme, \"b\")"]}),
    );
    assert_eq!(e.path, "trace_statements[1]");
    assert!(
        e.message.contains("unknown path `nme`") && e.message.contains("column 10"),
        "{e}"
    );
    let e = err(
        serde_json::json!({"trace_statements": [{"context": "span", "statements": ["set(name, \"a\")", "delete_key(attributes)"]}]}),
    );
    assert_eq!(e.path, "trace_statements[0].statements[1]");
    assert!(e.message.contains("needs its `key` argument"), "{e}");
    let e = err(
        serde_json::json!({"trace_statements": [{"context": "span", "conditions": ["nme == 1"], "statements": ["set(name, \"a\")"]}]}),
    );
    assert_eq!(e.path, "trace_statements[0].conditions[0]");
    let e = err(serde_json::json!({"trace_statements": [{"context": "log", "statements": []}]}));
    assert_eq!(e.path, "trace_statements[0].context");
    assert!(
        e.message.contains("resource, scope, span, spanevent"),
        "{e}"
    );
    let e = err(
        serde_json::json!({"trace_statements": ["set(span.name, \"a\")", {"context": "span", "statements": []}]}),
    );
    assert!(e.message.contains("multiple configuration styles"), "{e}");
    let e = err(serde_json::json!({"trace_statements": [{"context": "span", "statments": []}]}));
    assert!(
        e.path.starts_with("trace_statements[0]") && e.message.contains("unknown field"),
        "{e}"
    );
    let e = err(serde_json::json!({"metric_statements": ["set(span.name, \"a\")"]}));
    assert!(e.message.contains("not available for metrics"), "{e}");
    let e = err(
        serde_json::json!({"log_statements": ["set(log.body, \"a\")", "set(resource.attributes[\"x\"], log.body)", "set(log.attributes[\"y\"], resource.attributes[\"x\"])"]}),
    );
    assert_eq!(e.path, "log_statements[1]");
    assert!(e.message.contains("context: resource"), "{e}");
}

/// Every bad statement and condition is reported, each at its path, in one pass (what
/// `sluice validate` lists): flat lists, groups, and all three signals together.
#[test]
fn every_config_error_is_reported_at_once() {
    let errors = match TransformFactory.parse_config_all(&serde_json::json!({
        "trace_statements": [
            "set(span.attributes[\"ok\"], \"x\")",
            "set(span.nme, \"b\")",
            "set(span.attributes[\"a\"], Sha256(span.name))",
            "delete_key(span.attributes, \"fine\")",
            "keep_keys(span.attributes, \"not a list\")",
            "set(span.name, Concat([\"x\"]",
        ],
        "metric_statements": [{
            "context": "datapoint",
            "conditions": ["metric.nme == \"m\"", "metric.name == \"m\""],
            "statements": ["set(attributes[\"k\"], \"v\")", "set(nope, 1)"],
        }],
        "log_statements": [{"context": "spanevent", "statements": []}],
    })) {
        Ok(_) => panic!("refused"),
        Err(errors) => errors,
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "trace_statements[1]",
            "trace_statements[2]",
            "trace_statements[4]",
            "trace_statements[5]",
            "metric_statements[0].statements[1]",
            "metric_statements[0].conditions[0]",
            "log_statements[0].context",
        ],
        "{errors:#?}"
    );
    assert!(
        errors[0].message.contains("unknown path `nme`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].message.contains("`Sha256` is not a converter"),
        "{}",
        errors[1]
    );
    // parse_config (the first error) agrees with parse_config_all.
    let first = TransformFactory
        .parse_config(
            &serde_json::json!({"trace_statements": ["set(span.nme, \"b\")", "set(x, 1)"]}),
        )
        .err()
        .unwrap();
    assert_eq!(first.path, "trace_statements[0]");
}
