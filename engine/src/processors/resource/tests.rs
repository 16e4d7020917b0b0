use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;

use super::*;
use crate::component::ComponentId;
use crate::otlp::encode_to_vec;
use crate::otlp::testing::reference_traces;
use crate::processors::attributes::tests::{kv, s, show};
use crate::processors::test_support::Capture;
use crate::telemetry::Telemetry;

/// Three resources: a pod, a pod that already has an instance id, and no pod name at all.
fn traces() -> ExportTraceServiceRequest {
    let rs = |attrs| ResourceSpans {
        resource: Some(Resource {
            attributes: attrs,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                name: "s".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            rs(vec![
                kv("service.name", s("a")),
                kv("k8s.pod.name", s("a-1")),
            ]),
            rs(vec![
                kv("k8s.pod.name", s("b-1")),
                kv("service.instance.id", s("set-by-sdk")),
            ]),
            rs(vec![kv("service.name", s("c")), kv("host.id", s("h"))]),
        ],
    }
}

fn run(cfg: serde_json::Value) -> Vec<Vec<String>> {
    let c: ResourceConfig = parse_config(&cfg).unwrap();
    let actions = Actions::compile(&c.attributes, "attributes").unwrap();
    let out = process(&actions, reference_traces(&traces())).unwrap();
    out.validate().unwrap();
    let back = ExportTraceServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
    back.resource_spans
        .iter()
        .map(|r| {
            show(
                &r.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn v(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn resource_actions() {
    let cases: Vec<(&str, serde_json::Value, Vec<Vec<String>>)> = vec![
        (
            "service.instance.id from k8s.pod.name, as the agent config does (insert: never overwrite)",
            json!({"attributes": [{"key": "service.instance.id", "from_attribute": "k8s.pod.name", "action": "insert"}]}),
            vec![
                v(&[
                    "service.name=\"a\"",
                    "k8s.pod.name=\"a-1\"",
                    "service.instance.id=\"a-1\"",
                ]),
                v(&["k8s.pod.name=\"b-1\"", "service.instance.id=\"set-by-sdk\""]),
                v(&["service.name=\"c\"", "host.id=\"h\""]),
            ],
        ),
        (
            "upsert a value, delete a key, hash another",
            json!({"attributes": [
                {"key": "env", "value": "prod", "action": "upsert"},
                {"key": "host.id", "action": "delete"},
                {"key": "service.instance.id", "action": "hash"},
            ]}),
            vec![
                v(&["service.name=\"a\"", "k8s.pod.name=\"a-1\"", "env=\"prod\""]),
                v(&[
                    "k8s.pod.name=\"b-1\"",
                    // python3: hashlib.sha256(b"set-by-sdk").hexdigest()
                    "service.instance.id=\"9bca0ca6b92218d53142f15c6fa1e79f3bac7af747f091d8abc8eeb61d563a76\"",
                    "env=\"prod\"",
                ]),
                v(&["service.name=\"c\"", "env=\"prod\""]),
            ],
        ),
        (
            "extract from a resource attribute",
            json!({"attributes": [{"key": "k8s.pod.name", "pattern": "^(?P<app>[a-z]+)-(?P<replica>\\d+)$", "action": "extract"}]}),
            vec![
                v(&[
                    "service.name=\"a\"",
                    "k8s.pod.name=\"a-1\"",
                    "app=\"a\"",
                    "replica=\"1\"",
                ]),
                v(&[
                    "k8s.pod.name=\"b-1\"",
                    "service.instance.id=\"set-by-sdk\"",
                    "app=\"b\"",
                    "replica=\"1\"",
                ]),
                v(&["service.name=\"c\"", "host.id=\"h\""]),
            ],
        ),
    ];
    for (name, cfg, want) in cases {
        assert_eq!(run(cfg), want, "{name}");
    }
}

#[test]
fn config_errors_name_the_field() {
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({}),
            "attributes",
            "missing required field \"attributes\"",
        ),
        (
            json!({"attributes": [{"key": "a", "action": "insert"}]}),
            "attributes[0].value",
            "needs one of",
        ),
        (
            json!({"attributes": [{"key": "a", "action": "nope"}]}),
            "attributes[0].action",
            "unsupported action",
        ),
        (json!({"actions": []}), "actions", "unknown field"),
    ];
    for (cfg, path, msg) in cases {
        let e = match ResourceFactory.parse_config(&cfg) {
            Ok(_) => panic!("{cfg} must be refused"),
            Err(e) => e,
        };
        assert_eq!(e.path, path, "{cfg}: {e}");
        assert!(e.message.contains(msg), "{cfg}: {e}");
    }
}

#[tokio::test]
async fn consume_changes_resources_and_passes_every_item_on() {
    let cfg = ResourceFactory
        .parse_config(&json!({"attributes": [{"key": "service.name", "action": "delete"}]}))
        .unwrap();
    let cap = Capture::default();
    let ctx = BuildContext {
        id: ComponentId::parse("resource").unwrap(),
        config: cfg,
        telemetry: Telemetry::new(),
        clock: Arc::new(crate::clock::WallClock),
        extensions: Default::default(),
    };
    let node = ResourceFactory
        .build_processor(ctx, Signal::Traces, Arc::new(cap.clone()))
        .unwrap();
    node.consume(reference_traces(&traces())).await.unwrap();
    let got = cap.got.lock().unwrap()[0].clone();
    assert_eq!(got.item_count(), 3);
    assert_eq!(got.table(Table::ResourceAttrs).num_rows(), 4);
}
