//! Table-driven cases for the attributes processor: OTLP in, config, OTLP out, checked against
//! what the Collector's attributes processor documents (and does: attraction.go, filterspan,
//! filterlog, filtermetric).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

use super::*;
use crate::component::ComponentId;
use crate::otlp::encode_to_vec;
use crate::otlp::testing::{reference_logs, reference_metrics, reference_traces};
use crate::processors::test_support::Capture;
use crate::telemetry::Telemetry;

pub(crate) fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        key_strindex: 0,
    }
}

pub(crate) fn s(x: &str) -> any_value::Value {
    any_value::Value::StringValue(x.into())
}

fn i(x: i64) -> any_value::Value {
    any_value::Value::IntValue(x)
}

/// `key=value` pairs, values written as `"str"`, `1`, `1.5`, `true`.
pub(crate) fn show(attrs: &[KeyValue]) -> Vec<String> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(x)) => format!("{x:?}"),
                Some(any_value::Value::IntValue(x)) => x.to_string(),
                Some(any_value::Value::DoubleValue(x)) => format!("{x:?}"),
                Some(any_value::Value::BoolValue(x)) => x.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={v}", kv.key)
        })
        .collect()
}

fn span(name: &str, kind: i32, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.into(),
        kind,
        attributes: attrs,
        ..Default::default()
    }
}

/// Two services (`checkout` with scope `lib-a` 1.0, `cart` with scope `lib-b`), two spans each.
fn traces() -> ExportTraceServiceRequest {
    let rs = |service: &str, scope: &str, version: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                version: version.into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            rs(
                "checkout",
                "lib-a",
                "1.0",
                vec![
                    span(
                        "GET /pay",
                        2,
                        vec![kv("http.url", s("https://shop/pay?x=1")), kv("n", i(7))],
                    ),
                    span(
                        "/health",
                        2,
                        vec![kv("db.statement", s("SELECT 1")), kv("n", s("42"))],
                    ),
                ],
            ),
            rs(
                "cart",
                "lib-b",
                "",
                vec![
                    span("add", 3, vec![kv("user.email", s("a@b.c"))]),
                    span("remove", 1, vec![]),
                ],
            ),
        ],
    }
}

fn parse(cfg: serde_json::Value) -> Compiled {
    Compiled::parse(&cfg).unwrap_or_else(|e| panic!("config {cfg}: {e}"))
}

/// Runs the processor and returns each span's attributes, in order.
fn run_traces(cfg: serde_json::Value, req: &ExportTraceServiceRequest) -> Vec<Vec<String>> {
    let c = parse(cfg);
    c.matcher.validate_for(Signal::Traces).unwrap();
    let out = process(&c, reference_traces(req)).unwrap();
    out.validate().unwrap();
    let back = ExportTraceServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
    back.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| show(&s.attributes))
        .collect()
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn actions_on_span_attributes() {
    let cases: Vec<(&str, serde_json::Value, Vec<Vec<String>>)> = vec![
        (
            "insert adds where absent and does not overwrite",
            json!({"actions": [{"key": "n", "value": 1, "action": "insert"}]}),
            vec![
                v(&["http.url=\"https://shop/pay?x=1\"", "n=7"]),
                v(&["db.statement=\"SELECT 1\"", "n=\"42\""]),
                v(&["user.email=\"a@b.c\"", "n=1"]),
                v(&["n=1"]),
            ],
        ),
        (
            "update changes only existing keys, and the type with the value",
            json!({"actions": [{"key": "n", "value": true, "action": "UPDATE"}]}),
            vec![
                v(&["http.url=\"https://shop/pay?x=1\"", "n=true"]),
                v(&["db.statement=\"SELECT 1\"", "n=true"]),
                v(&["user.email=\"a@b.c\""]),
                v(&[]),
            ],
        ),
        (
            "upsert from another attribute; absent source = no action",
            json!({"actions": [{"key": "copy", "from_attribute": "n", "action": "upsert"}]}),
            vec![
                v(&["http.url=\"https://shop/pay?x=1\"", "n=7", "copy=7"]),
                v(&["db.statement=\"SELECT 1\"", "n=\"42\"", "copy=\"42\""]),
                v(&["user.email=\"a@b.c\""]),
                v(&[]),
            ],
        ),
        (
            "delete by key and by pattern",
            json!({"actions": [
                {"key": "db.statement", "action": "delete"},
                {"pattern": "^user\\.", "action": "delete"},
            ]}),
            vec![
                v(&["http.url=\"https://shop/pay?x=1\"", "n=7"]),
                v(&["n=\"42\""]),
                v(&[]),
                v(&[]),
            ],
        ),
        (
            "hash: SHA-256 hex of the string's bytes and of the int's 8 little-endian bytes",
            json!({"actions": [{"key": "user.email", "action": "hash"}, {"key": "n", "action": "hash"}]}),
            vec![
                v(&[
                    "http.url=\"https://shop/pay?x=1\"",
                    "n=\"aae89fc0f03e2959ae4d701a80cc3915918c950b159f6abb6c92c1433b1a8534\"",
                ]),
                v(&[
                    "db.statement=\"SELECT 1\"",
                    "n=\"73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049\"",
                ]),
                v(&[
                    "user.email=\"d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a\"",
                ]),
                v(&[]),
            ],
        ),
        (
            "extract upserts named groups; the source is kept; non-matching values untouched",
            json!({"actions": [{"key": "http.url", "pattern": "^(?P<scheme>\\w+)://(?P<host>[^/]+)", "action": "extract"}]}),
            vec![
                v(&[
                    "http.url=\"https://shop/pay?x=1\"",
                    "n=7",
                    "scheme=\"https\"",
                    "host=\"shop\"",
                ]),
                v(&["db.statement=\"SELECT 1\"", "n=\"42\""]),
                v(&["user.email=\"a@b.c\""]),
                v(&[]),
            ],
        ),
        (
            "convert to int parses strings; to string formats ints",
            json!({"actions": [{"key": "n", "converted_type": "int", "action": "convert"}]}),
            vec![
                v(&["http.url=\"https://shop/pay?x=1\"", "n=7"]),
                v(&["db.statement=\"SELECT 1\"", "n=42"]),
                v(&["user.email=\"a@b.c\""]),
                v(&[]),
            ],
        ),
        (
            "actions run in order: copy then delete the source = rename",
            json!({"actions": [
                {"key": "url", "from_attribute": "http.url", "action": "insert"},
                {"key": "http.url", "action": "delete"},
                {"key": "url", "converted_type": "string", "action": "convert"},
            ]}),
            vec![
                v(&["n=7", "url=\"https://shop/pay?x=1\""]),
                v(&["db.statement=\"SELECT 1\"", "n=\"42\""]),
                v(&["user.email=\"a@b.c\""]),
                v(&[]),
            ],
        ),
    ];
    for (name, cfg, want) in cases {
        assert_eq!(run_traces(cfg, &traces()), want, "{name}");
    }
}

#[test]
fn hash_digests_are_sha256_of_the_collectors_bytes() {
    // The digests in the table above, computed independently (Python hashlib:
    // sha256(b"a@b.c"), sha256(b"42"), sha256(struct.pack("<q", 7))) and rechecked here.
    use sha2::{Digest, Sha256};
    assert_eq!(
        hex::encode(Sha256::digest(b"a@b.c")),
        "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a"
    );
    assert_eq!(
        hex::encode(Sha256::digest(b"42")),
        "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049"
    );
    assert_eq!(
        hex::encode(Sha256::digest(7i64.to_le_bytes())),
        "aae89fc0f03e2959ae4d701a80cc3915918c950b159f6abb6c92c1433b1a8534"
    );
}

#[test]
fn include_and_exclude_limit_the_actions() {
    let mark = json!([{"key": "hit", "value": true, "action": "insert"}]);
    let hits = |cfg: serde_json::Value| -> Vec<bool> {
        run_traces(cfg, &traces())
            .iter()
            .map(|a| a.contains(&"hit=true".to_string()))
            .collect()
    };
    let cases: Vec<(&str, serde_json::Value, Vec<bool>)> = vec![
        (
            "services strict",
            json!({"include": {"match_type": "strict", "services": ["cart"]}}),
            vec![false, false, true, true],
        ),
        (
            "services regexp is unanchored",
            json!({"include": {"match_type": "regexp", "services": ["hec"]}}),
            vec![true, true, false, false],
        ),
        (
            "span_names exclude",
            json!({"exclude": {"match_type": "regexp", "span_names": ["^/health"]}}),
            vec![true, false, true, true],
        ),
        (
            "span_kinds",
            json!({"include": {"match_type": "strict", "span_kinds": ["SPAN_KIND_CLIENT", "SPAN_KIND_INTERNAL"]}}),
            vec![false, false, true, true],
        ),
        (
            "attributes: key present",
            json!({"include": {"match_type": "strict", "attributes": [{"key": "n"}]}}),
            vec![true, true, false, false],
        ),
        (
            "attributes: strict value and type",
            json!({"include": {"match_type": "strict", "attributes": [{"key": "n", "value": 7}]}}),
            vec![true, false, false, false],
        ),
        (
            "attributes: regexp over the int's string form",
            json!({"include": {"match_type": "regexp", "attributes": [{"key": "n", "value": "^(7|42)$"}]}}),
            vec![true, true, false, false],
        ),
        (
            "resources",
            json!({"include": {"match_type": "strict", "resources": [{"key": "service.name", "value": "checkout"}]}}),
            vec![true, true, false, false],
        ),
        (
            "libraries with version",
            json!({"include": {"match_type": "strict", "libraries": [{"name": "lib-a", "version": "1.0"}]}}),
            vec![true, true, false, false],
        ),
        (
            "libraries: empty version matches only empty",
            json!({"include": {"match_type": "strict", "libraries": [{"name": "lib-a", "version": ""}]}}),
            vec![false, false, false, false],
        ),
        (
            "every property must match",
            json!({"include": {"match_type": "strict", "services": ["checkout"], "span_names": ["add", "/health"]}}),
            vec![false, true, false, false],
        ),
        (
            "include then exclude",
            json!({
                "include": {"match_type": "strict", "services": ["checkout"]},
                "exclude": {"match_type": "strict", "span_names": ["/health"]},
            }),
            vec![true, false, false, false],
        ),
    ];
    for (name, mut cfg, want) in cases {
        cfg["actions"] = mark.clone();
        assert_eq!(hits(cfg), want, "{name}");
    }
}

#[test]
fn from_context_client_address_uses_the_payload_origin() {
    let c = parse(
        json!({"actions": [{"key": "client", "from_context": "client.address", "action": "insert"}]}),
    );
    let mut p = reference_traces(&traces());
    let out = process(&c, p.clone()).unwrap();
    // No origin (e.g. after a batch of several peers): no action, as for an absent key.
    assert_eq!(
        out.table(Table::SpanAttrs).num_rows(),
        p.table(Table::SpanAttrs).num_rows()
    );
    p.origin = Some("10.1.2.3:4567".parse().unwrap());
    let out = process(&c, p).unwrap();
    let back = ExportTraceServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
    let last = &back.resource_spans[1].scope_spans[0].spans[1];
    assert_eq!(show(&last.attributes), v(&["client=\"10.1.2.3\""]));
}

/// `from_context: metadata.<key>`: the payload's client metadata (any case), several values
/// joined with `;`; no metadata or no such key: no action.
#[test]
fn from_context_metadata_uses_the_payload_metadata() {
    use crate::payload::ClientMetadata;
    let c = parse(
        json!({"actions": [{"key": "tenant", "from_context": "metadata.X-Tenant", "action": "upsert"}]}),
    );
    let mut p = reference_traces(&traces());
    let rows = p.table(Table::SpanAttrs).num_rows();
    assert_eq!(
        process(&c, p.clone())
            .unwrap()
            .table(Table::SpanAttrs)
            .num_rows(),
        rows
    );
    let mut m = ClientMetadata::default();
    m.push("x-other", "no".into());
    p.metadata = Some(std::sync::Arc::new(m.clone()));
    assert_eq!(
        process(&c, p.clone())
            .unwrap()
            .table(Table::SpanAttrs)
            .num_rows(),
        rows
    );
    m.push("x-tenant", "acme".into());
    m.push("X-TENANT", "eu".into());
    p.metadata = Some(std::sync::Arc::new(m));
    let out = process(&c, p).unwrap();
    let back = ExportTraceServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
    let last = &back.resource_spans[1].scope_spans[0].spans[1];
    assert!(
        show(&last.attributes).contains(&"tenant=\"acme;eu\"".to_string()),
        "{:?}",
        show(&last.attributes)
    );
}

#[test]
fn log_record_attributes_with_body_and_severity_matching() {
    let log = |body: &str, sev: i32, text: &str| LogRecord {
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        severity_number: sev,
        severity_text: text.into(),
        attributes: vec![kv("secret", s("x"))],
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    log("user logged in", 9, "INFO"),
                    log("disk full", 17, "ERROR"),
                    log("no severity", 0, ""),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let cases = [
        (
            json!({"match_type": "regexp", "log_bodies": ["logged"]}),
            [true, false, false],
        ),
        (
            json!({"match_type": "strict", "log_severity_texts": ["ERROR"]}),
            [false, true, false],
        ),
        (
            json!({"match_type": "strict", "log_severity_number": {"min": "WARN"}}),
            [false, true, false],
        ),
        (
            json!({"match_type": "strict", "log_severity_number": {"min": 9, "match_undefined": true}}),
            [true, true, true],
        ),
    ];
    // An excluded record keeps its `secret`.
    for (exclude, kept) in cases {
        let c =
            parse(json!({"exclude": exclude, "actions": [{"key": "secret", "action": "delete"}]}));
        c.matcher.validate_for(Signal::Logs).unwrap();
        let out = process(&c, reference_logs(&req)).unwrap();
        let back = ExportLogsServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
        let got: Vec<bool> = back.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .map(|l| !l.attributes.is_empty())
            .collect();
        assert_eq!(got, kept, "exclude {exclude}");
    }
}

#[test]
fn metric_data_points_of_the_selected_metrics_only() {
    let point = |v: i64| NumberDataPoint {
        attributes: vec![kv("pod", s("p")), kv("v", i(v))],
        ..Default::default()
    };
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "http.requests".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point(1), point(2)],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.latency".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: vec![kv("pod", s("q"))],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "cpu".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point(3)],
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let c = parse(json!({
        "include": {"match_type": "regexp", "metric_names": ["^http\\."]},
        "actions": [{"key": "pod", "action": "delete"}, {"key": "env", "value": "prod", "action": "upsert"}],
    }));
    c.matcher.validate_for(Signal::Metrics).unwrap();
    let out = process(&c, reference_metrics(&req)).unwrap();
    out.validate().unwrap();
    let back = ExportMetricsServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
    let m = &back.resource_metrics[0].scope_metrics[0].metrics;
    let gauge_attrs = |i: usize| -> Vec<Vec<String>> {
        match &m[i].data {
            Some(metric::Data::Gauge(g)) => {
                g.data_points.iter().map(|p| show(&p.attributes)).collect()
            }
            _ => panic!("gauge"),
        }
    };
    assert_eq!(
        gauge_attrs(0),
        vec![v(&["v=1", "env=\"prod\""]), v(&["v=2", "env=\"prod\""])]
    );
    match &m[1].data {
        Some(metric::Data::Histogram(h)) => {
            assert_eq!(show(&h.data_points[0].attributes), v(&["env=\"prod\""]))
        }
        _ => panic!("histogram"),
    }
    assert_eq!(gauge_attrs(2), vec![v(&["pod=\"p\"", "v=3"])]);
}

fn config_error(cfg: serde_json::Value) -> ConfigError {
    match Compiled::parse(&cfg) {
        Ok(_) => panic!("config {cfg} should be refused"),
        Err(e) => e,
    }
}

#[test]
fn config_errors_name_the_field() {
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (json!({}), "actions", "missing required field \"actions\""),
        (
            json!({"actions": [{"key": "a", "action": "rename"}]}),
            "actions[0].action",
            "unsupported action \"rename\"",
        ),
        (
            json!({"actions": [{"key": "a"}]}),
            "actions[0].action",
            "missing required field \"action\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert"}]}),
            "actions[0].value",
            "needs one of",
        ),
        (
            json!({"actions": [{"action": "upsert", "value": 1}]}),
            "actions[0].key",
            "missing required field \"key\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert", "value": 1, "from_attribute": "b"}]}),
            "actions[0].value",
            "only one of",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert", "value": [1, 2]}]}),
            "actions[0].value",
            "lists and maps",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert", "from_context": "auth.subject"}]}),
            "actions[0].from_context",
            "client.address",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert", "value": 1, "pattern": "x"}]}),
            "actions[0].pattern",
            "does not use \"pattern\"",
        ),
        (
            json!({"actions": [{"action": "delete"}]}),
            "actions[0].key",
            "at least one of \"key\" and \"pattern\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "delete", "value": 1}]}),
            "actions[0].value",
            "does not use a value source",
        ),
        (
            json!({"actions": [{"key": "a", "action": "hash", "pattern": "("}]}),
            "actions[0].pattern",
            "invalid pattern",
        ),
        (
            json!({"actions": [{"key": "a", "action": "extract", "pattern": "\\w+"}]}),
            "actions[0].pattern",
            "no named matcher groups",
        ),
        (
            json!({"actions": [{"key": "a", "action": "extract", "pattern": "(\\w+)"}]}),
            "actions[0].pattern",
            "unnamed matcher group",
        ),
        (
            json!({"actions": [{"key": "a", "action": "extract", "pattern": "(?P<x>\\w+)(\\d)"}]}),
            "actions[0].pattern",
            "unnamed matcher group",
        ),
        (
            json!({"actions": [{"key": "a", "action": "extract"}]}),
            "actions[0].pattern",
            "missing required field \"pattern\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "convert"}]}),
            "actions[0].converted_type",
            "missing required field \"converted_type\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "convert", "converted_type": "bool"}]}),
            "actions[0].converted_type",
            "invalid value \"bool\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "insert", "value": 1, "converted_type": "int"}]}),
            "actions[0].converted_type",
            "does not use \"converted_type\"",
        ),
        (
            json!({"actions": [{"key": "a", "action": "delete", "bogus": 1}]}),
            "actions[0].bogus",
            "unknown field",
        ),
        (
            json!({"include": {"services": ["a"]}, "actions": [{"key": "a", "action": "delete"}]}),
            "include.match_type",
            "unrecognized match_type",
        ),
        (
            json!({"include": {"match_type": "regexp", "span_names": ["("]}, "actions": [{"key": "a", "action": "delete"}]}),
            "include.span_names[0]",
            "invalid regexp",
        ),
        (
            json!({"exclude": {"match_type": "regexp", "attributes": [{"key": "a", "value": 1}]}, "actions": [{"key": "a", "action": "delete"}]}),
            "exclude.attributes[0].value",
            "only supports strings",
        ),
        (
            json!({"include": {"match_type": "strict", "attributes": [{"key": ""}]}, "actions": [{"key": "a", "action": "delete"}]}),
            "include.attributes[0].key",
            "empty key",
        ),
        (
            json!({"include": {"match_type": "strict", "log_severity_number": {"min": "LOUD"}}, "actions": [{"key": "a", "action": "delete"}]}),
            "include.log_severity_number.min",
            "not a severity",
        ),
    ];
    for (cfg, path, msg) in cases {
        let e = config_error(cfg.clone());
        assert_eq!(e.path, path, "{cfg}: {e}");
        assert!(e.message.contains(msg), "{cfg}: {e}");
    }
}

#[test]
fn properties_of_another_signal_are_refused_when_the_pipeline_is_built() {
    let delete = json!([{"key": "a", "action": "delete"}]);
    let cases: Vec<(serde_json::Value, Signal, &str)> = vec![
        (
            json!({"match_type": "strict", "log_bodies": ["x"]}),
            Signal::Traces,
            "include.log_bodies",
        ),
        (
            json!({"match_type": "strict", "services": ["x"]}),
            Signal::Logs,
            "include.services",
        ),
        (
            json!({"match_type": "strict", "span_names": ["x"]}),
            Signal::Metrics,
            "include.span_names",
        ),
        (
            json!({"match_type": "strict", "attributes": [{"key": "x"}]}),
            Signal::Metrics,
            "include.attributes",
        ),
        (
            json!({"match_type": "strict", "metric_names": ["x"]}),
            Signal::Traces,
            "include.metric_names",
        ),
        (json!({"match_type": "strict"}), Signal::Traces, "include"),
        (
            json!({"match_type": "strict", "span_kinds": ["CLIENT"]}),
            Signal::Traces,
            "include.span_kinds[0]",
        ),
    ];
    for (include, signal, path) in cases {
        let c = parse(json!({"include": include, "actions": delete}));
        let e = c.matcher.validate_for(signal).unwrap_err();
        assert_eq!(e.path, path, "{include} on {signal:?}: {e}");
    }
    // And through the factory, the component id is in the message.
    let cfg = AttributesFactory
        .parse_config(
            &json!({"include": {"match_type": "strict", "span_names": ["x"]}, "actions": delete}),
        )
        .unwrap();
    let ctx = BuildContext {
        id: ComponentId::parse("attributes/x").unwrap(),
        config: cfg,
        telemetry: Telemetry::new(),
        clock: Arc::new(crate::clock::WallClock),
        extensions: Default::default(),
    };
    let e =
        match AttributesFactory.build_processor(ctx, Signal::Metrics, Arc::new(Capture::default()))
        {
            Ok(_) => panic!("span_names on a metrics pipeline must be refused"),
            Err(e) => e,
        };
    assert!(
        e.to_string().contains("attributes/x") && e.to_string().contains("span_names"),
        "{e}"
    );
}

#[tokio::test]
async fn consume_passes_the_changed_payload_on_and_counts_items() {
    let cfg = AttributesFactory
        .parse_config(&json!({"actions": [{"key": "n", "action": "delete"}]}))
        .unwrap();
    let t = Telemetry::new();
    let cap = Capture::default();
    let ctx = BuildContext {
        id: ComponentId::parse("attributes").unwrap(),
        config: cfg,
        telemetry: t.clone(),
        clock: Arc::new(crate::clock::WallClock),
        extensions: Default::default(),
    };
    let node = AttributesFactory
        .build_processor(ctx, Signal::Traces, Arc::new(cap.clone()))
        .unwrap();
    node.consume(reference_traces(&traces())).await.unwrap();
    let got = cap.got.lock().unwrap()[0].clone();
    assert_eq!(got.item_count(), 4);
    assert_eq!(got.table(Table::SpanAttrs).num_rows(), 3);
    let labels = [("processor", "attributes"), ("otel_signal", "traces")];
    assert_eq!(
        t.value("otelcol_processor_incoming_items", &labels),
        Some(4.0)
    );
    assert_eq!(
        t.value("otelcol_processor_outgoing_items", &labels),
        Some(4.0)
    );
}
