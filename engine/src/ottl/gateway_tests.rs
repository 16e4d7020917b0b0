//! The shipped gateway config (`k8s/config/gateway.yaml`): its `filter/noise`,
//! `transform/clean-attrs` and `transform/peer-service`, built by their factories from the
//! file itself and chained as in the traces pipeline, fed realistic spans: Kubernetes probes,
//! ELB checks, SDK self-traces, bare connection spans, and a Python-instrumented request that
//! calls Redis, PostgreSQL, MongoDB and RabbitMQ (attributes as the Python
//! instrumentations write them, old and current semantic conventions).
//!
//! Exactly the noise is dropped (and counted), exactly the five attributes are gone (from the
//! resource and from the spans), and
//! `peer.service` is set on exactly the database and queue client spans.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as P,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message as _;

use crate::clock::WallClock;
use crate::component::{BuildContext, ComponentId, ConsumerRef, Factory};
use crate::otlp::encode_to_vec;
use crate::otlp::testing::reference_traces;
use crate::processors::filter::FilterFactory;
use crate::processors::test_support::Capture;
use crate::processors::transform::TransformFactory;
use crate::schema::Signal;
use crate::telemetry::Telemetry;

const GATEWAY: &str = include_str!("../../../k8s/config/gateway.yaml");

fn kv(k: &str, v: P) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(k: &str, v: &str) -> KeyValue {
    kv(k, P::StringValue(v.into()))
}
fn i(k: &str, v: i64) -> KeyValue {
    kv(k, P::IntValue(v))
}

const TRACE: [u8; 16] = [0xa1; 16];

/// Span ids are 1, 2, ... in the order spans are made; `parent` 0 = a root span.
struct Builder {
    next: u64,
}

impl Builder {
    fn span(&mut self, name: &str, kind: SpanKind, parent: u64, attrs: Vec<KeyValue>) -> Span {
        self.next += 1;
        Span {
            trace_id: TRACE.to_vec(),
            span_id: self.next.to_be_bytes().to_vec(),
            parent_span_id: if parent == 0 {
                vec![]
            } else {
                parent.to_be_bytes().to_vec()
            },
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + self.next * 1000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + self.next * 1000 + 500,
            attributes: attrs,
            ..Default::default()
        }
    }
}

fn python_resource(service: &str, pod: &str) -> Resource {
    Resource {
        attributes: vec![
            s("telemetry.sdk.language", "python"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.version", "1.27.0"),
            s("service.name", service),
            s("k8s.namespace.name", "shop"),
            s("k8s.pod.name", pod),
            i("process.pid", 1),
            s("process.executable", "/usr/local/bin/python3.12"),
            s("process.executable.name", "python3.12"),
            s("process.command", "/app/server.py"),
            s(
                "process.command_line",
                "/usr/local/bin/python3.12 /app/server.py",
            ),
            s("process.runtime.name", "cpython"),
            s("os.type", "linux"),
            s("os.version", "6.1.0-18-cloud-amd64"),
            s("host.name", pod),
            // set by a hand-written resource, credentials and all
            s(
                "db.connection_string",
                "mysql://app:hunter2@legacy-db:3306/app",
            ),
        ],
        ..Default::default()
    }
}

/// The request: spans (by name) and what the gateway must do with each.
struct Fixture {
    req: ExportTraceServiceRequest,
    /// Names of the spans the noise filter must drop.
    noise: BTreeSet<String>,
    /// Span name -> the peer.service it must end up with.
    peer: BTreeMap<String, String>,
}

fn fixture() -> Fixture {
    let mut b = Builder { next: 0 };
    let k = SpanKind::Client;
    // --- a Python request (Flask server span) calling Redis, PostgreSQL, MongoDB, RabbitMQ
    let root = b.span(
        "POST /orders",
        SpanKind::Server,
        0,
        vec![
            s("http.method", "POST"),
            s("http.route", "/orders"),
            s("http.target", "/orders?priority=high"),
            s("http.scheme", "http"),
            s("net.host.name", "orders"),
            s("http.user_agent", "python-requests/2.32.3"),
            i("http.status_code", 201),
        ],
    );
    let request = vec![
        root,
        // opentelemetry-instrumentation-redis (old conventions)
        b.span(
            "GET",
            k,
            1,
            vec![
                s("db.system", "redis"),
                s("db.statement", "GET cart:42"),
                s("net.peer.name", "redis-master.cache.svc"),
                i("net.peer.port", 6379),
                s("net.transport", "ip_tcp"),
                i("db.redis.database_index", 0),
            ],
        ),
        // psycopg (current conventions), with a connection string that must go
        b.span(
            "SELECT orders",
            k,
            1,
            vec![
                s("db.system", "postgresql"),
                s("db.namespace", "orders"),
                s(
                    "db.query.text",
                    "SELECT id, total FROM orders WHERE id = %s",
                ),
                s("server.address", "orders-db.data.svc"),
                i("server.port", 5432),
                s(
                    "db.connection_string",
                    "postgresql://orders:s3cret@orders-db.data.svc:5432/orders",
                ),
            ],
        ),
        // a hand-instrumented worker that copies process details onto its spans: they must
        // go from the span as they go from the resource
        b.span(
            "render invoice",
            SpanKind::Internal,
            1,
            vec![
                s("process.command", "/app/worker.py"),
                s("process.executable", "/usr/local/bin/python3.12"),
                s("os.type", "linux"),
                s("os.version", "6.1.0-18-cloud-amd64"),
                s("invoice.id", "INV-42"),
            ],
        ),
        // pymongo, newest conventions (db.system.name)
        b.span(
            "find orders.items",
            k,
            1,
            vec![
                s("db.system.name", "mongodb"),
                s("db.namespace", "orders"),
                s("db.collection.name", "items"),
                s("server.address", "mongo-0.mongo.data.svc"),
                i("server.port", 27017),
            ],
        ),
        // pika: publishing to RabbitMQ (a producer span)
        b.span(
            "orders.created send",
            SpanKind::Producer,
            1,
            vec![
                s("messaging.system", "rabbitmq"),
                s("messaging.destination.name", "orders.created"),
                s("messaging.operation", "publish"),
                s("net.peer.name", "rabbitmq.queue.svc"),
                i("net.peer.port", 5672),
            ],
        ),
        // a Redis span that already names its peer: kept as it is
        b.span(
            "SET",
            k,
            1,
            vec![
                s("db.system", "redis"),
                s("net.peer.name", "redis-master.cache.svc"),
                s("peer.service", "cart-cache"),
            ],
        ),
        // a PostgreSQL client span without any address: the system's name
        b.span("COMMIT", k, 1, vec![s("db.system", "postgresql")]),
        // not DB/queue client spans: no peer.service
        b.span(
            "POST",
            k,
            1,
            vec![
                s("http.method", "POST"),
                s("http.url", "http://payments.pay.svc:8080/charge"),
                s("net.peer.name", "payments.pay.svc"),
            ],
        ),
        b.span(
            "compute totals",
            SpanKind::Internal,
            1,
            vec![s("db.system", "postgresql")],
        ),
        b.span(
            "orders.created process",
            SpanKind::Consumer,
            1,
            vec![
                s("messaging.system", "rabbitmq"),
                s("net.peer.name", "rabbitmq.queue.svc"),
            ],
        ),
        b.span(
            "mysql query",
            k,
            1,
            vec![s("db.system", "mysql"), s("server.address", "mysql")],
        ),
        // a TCP connect inside the request: part of its latency, kept
        b.span(
            "tcp.connect",
            SpanKind::Internal,
            1,
            vec![s("net.peer.name", "orders-db.data.svc")],
        ),
        // near misses of the probe rules: kept
        b.span(
            "GET /healthz/details",
            SpanKind::Server,
            0,
            vec![s("url.path", "/healthz/details")],
        ),
        b.span(
            "GET /api/metrics",
            SpanKind::Server,
            0,
            vec![s("http.route", "/api/metrics")],
        ),
        b.span(
            "GET /",
            SpanKind::Server,
            0,
            vec![s(
                "user_agent.original",
                "Mozilla/5.0 (compatible; not-an-ELB-HealthChecker/2.0)",
            )],
        ),
        b.span(
            "GET /v1/traces",
            SpanKind::Server,
            0,
            vec![s("url.path", "/v1/traces")],
        ),
    ];
    // --- noise on the same pod
    let noise_spans = vec![
        b.span(
            "GET /healthz",
            SpanKind::Server,
            0,
            vec![
                s("url.path", "/healthz"),
                s("user_agent.original", "kube-probe/1.30"),
                i("http.response.status_code", 200),
            ],
        ),
        b.span(
            "GET /readyz",
            SpanKind::Server,
            0,
            vec![s("http.target", "/readyz?verbose=1")],
        ),
        b.span(
            "GET /livez",
            SpanKind::Server,
            0,
            vec![s("url.path", "/livez")],
        ),
        b.span(
            "GET /metrics",
            SpanKind::Server,
            0,
            vec![s("http.route", "/metrics")],
        ),
        b.span(
            "GET /health",
            SpanKind::Server,
            0,
            vec![s("http.target", "/health")],
        ),
        b.span(
            "GET /ready",
            SpanKind::Server,
            0,
            vec![s("url.path", "/ready")],
        ),
        b.span(
            "GET / (ELB)",
            SpanKind::Server,
            0,
            vec![s("user_agent.original", "ELB-HealthChecker/2.0")],
        ),
        b.span(
            "GET / (ELB, old)",
            SpanKind::Server,
            0,
            vec![s("http.user_agent", "ELB-HealthChecker/2.0")],
        ),
        b.span(
            "POST (export)",
            SpanKind::Client,
            0,
            vec![s("url.full", "http://otel-agent.telemetry:4318/v1/traces")],
        ),
        b.span(
            "POST (export, old)",
            SpanKind::Client,
            0,
            vec![s("http.url", "http://otel-agent.telemetry:4318/v1/metrics")],
        ),
        b.span(
            "opentelemetry.proto.collector.trace.v1.TraceService/Export",
            SpanKind::Client,
            0,
            vec![
                s("rpc.system", "grpc"),
                s(
                    "rpc.service",
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                ),
            ],
        ),
        b.span("tcp.connect (root)", SpanKind::Internal, 0, vec![]),
        b.span(
            "dns.lookup",
            SpanKind::Client,
            0,
            vec![s("peer.hostname", "redis-master.cache.svc")],
        ),
        b.span(
            "connect",
            SpanKind::Client,
            0,
            vec![
                s("db.system", "redis"),
                s("net.peer.name", "redis-master.cache.svc"),
            ],
        ),
    ];
    // The root tcp.connect span is named "tcp.connect" on the wire; the suffix only tells the
    // two apart here.
    let mut noise_spans = noise_spans;
    noise_spans[11].name = "tcp.connect".into();
    let noise: BTreeSet<String> = noise_spans.iter().map(label).collect();
    // --- another pod that only answered probes: its resource goes away entirely
    let probes_only = vec![
        b.span(
            "GET /healthz",
            SpanKind::Server,
            0,
            vec![s("url.path", "/healthz")],
        ),
        b.span(
            "GET /readyz",
            SpanKind::Server,
            0,
            vec![s("url.path", "/readyz")],
        ),
    ];
    let mut noise = noise;
    noise.extend(probes_only.iter().map(label));

    let scope = |name: &str, spans: Vec<Span>| ScopeSpans {
        scope: Some(InstrumentationScope {
            name: name.into(),
            version: "0.48b0".into(),
            ..Default::default()
        }),
        spans,
        ..Default::default()
    };
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(python_resource("orders", "orders-7d9f8b6c5d-x2k4q")),
                scope_spans: vec![
                    scope("opentelemetry.instrumentation.flask", request),
                    scope("opentelemetry.instrumentation.wsgi", noise_spans),
                ],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(python_resource("inventory", "inventory-5c4b9d7f6-8mzq2")),
                scope_spans: vec![scope("opentelemetry.instrumentation.flask", probes_only)],
                ..Default::default()
            },
        ],
    };
    let peer: BTreeMap<String, String> = [
        ("GET", "redis-master.cache.svc"),
        ("SELECT orders", "orders-db.data.svc"),
        ("find orders.items", "mongo-0.mongo.data.svc"),
        ("orders.created send", "rabbitmq.queue.svc"),
        ("SET", "cart-cache"),
        ("COMMIT", "postgresql"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    Fixture { req, noise, peer }
}

/// A span's name with its id, so equal names stay apart.
fn label(s: &Span) -> String {
    format!(
        "{}#{}",
        s.name,
        u64::from_be_bytes(s.span_id.clone().try_into().unwrap_or([0; 8]))
    )
}

fn gateway_processor(
    factory: &dyn Factory,
    id: &str,
    telemetry: &Telemetry,
    next: ConsumerRef,
) -> ConsumerRef {
    let doc: serde_json::Value = serde_saphyr::from_str(GATEWAY).expect("gateway.yaml is YAML");
    let config = &doc["processors"][id];
    assert!(!config.is_null(), "gateway.yaml has processors.{id}");
    let parsed = factory
        .parse_config(config)
        .unwrap_or_else(|e| panic!("processors.{id}: {e}"));
    factory
        .build_processor(
            BuildContext {
                id: ComponentId::parse(id).expect("id"),
                config: parsed,
                telemetry: telemetry.clone(),
                clock: Arc::new(WallClock),
                extensions: Default::default(),
            },
            Signal::Traces,
            next,
        )
        .expect("builds")
}

fn attrs(list: &[KeyValue]) -> BTreeMap<String, Option<P>> {
    list.iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
        .collect()
}

#[tokio::test]
async fn the_shipped_gateway_drops_exactly_the_noise_cleans_and_derives_peer_service() {
    let fx = fixture();
    let telemetry = Telemetry::new();
    let sink = Capture::default();
    // The traces pipeline's order: filter/noise -> transform/clean-attrs -> transform/peer-service.
    let peer = gateway_processor(
        &TransformFactory,
        "transform/peer-service",
        &telemetry,
        Arc::new(sink.clone()),
    );
    let clean = gateway_processor(&TransformFactory, "transform/clean-attrs", &telemetry, peer);
    let noise = gateway_processor(&FilterFactory, "filter/noise", &telemetry, clean);
    noise
        .consume(reference_traces(&fx.req))
        .await
        .expect("the gateway takes the payload");

    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    got[0].validate().expect("valid payload");
    let out = ExportTraceServiceRequest::decode(encode_to_vec(&got[0]).as_slice()).unwrap();

    // Exactly the noise is gone.
    let before: Vec<Span> = spans(&fx.req);
    let after: Vec<Span> = spans(&out);
    let kept: BTreeSet<String> = after.iter().map(label).collect();
    let want_kept: BTreeSet<String> = before
        .iter()
        .map(label)
        .filter(|l| !fx.noise.contains(l))
        .collect();
    assert_eq!(kept, want_kept, "kept spans");
    assert_eq!(fx.noise.len(), 16);
    assert_eq!(before.len() - after.len(), fx.noise.len());
    // The probes-only pod is gone with its spans; the other keeps only its request scope.
    assert_eq!(out.resource_spans.len(), 1);
    assert_eq!(out.resource_spans[0].scope_spans.len(), 1);

    // Exactly the five attributes are gone; everything else is as it was.
    let five = [
        "process.command",
        "process.executable",
        "os.type",
        "os.version",
        "db.connection_string",
    ];
    let res_in = attrs(
        &fx.req.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
    );
    let res_out = attrs(&out.resource_spans[0].resource.as_ref().unwrap().attributes);
    let mut want_res = res_in.clone();
    want_res.retain(|k, _| !five.contains(&k.as_str()));
    assert_eq!(res_out, want_res, "resource attributes");
    assert!(
        res_out.contains_key("process.executable.name")
            && res_out.contains_key("process.command_line")
    );
    // Each of the five was on the resource and on a span, and is on neither now.
    let on_a_span = |spans: &[Span], key: &str| {
        spans
            .iter()
            .any(|s| s.attributes.iter().any(|kv| kv.key == key))
    };
    for key in five {
        assert!(
            res_in.contains_key(key) && on_a_span(&before, key),
            "fixture: {key}"
        );
        assert!(!res_out.contains_key(key), "{key} left on the resource");
        assert!(!on_a_span(&after, key), "{key} left on a span");
    }
    let by_label: BTreeMap<String, &Span> = before.iter().map(|s| (label(s), s)).collect();
    for sp in &after {
        let mut want = attrs(&by_label[&label(sp)].attributes);
        want.retain(|k, _| !five.contains(&k.as_str()));
        let mut got = attrs(&sp.attributes);
        let peer_service = got.remove("peer.service");
        let original_peer = want.remove("peer.service");
        assert_eq!(
            got,
            want,
            "{}: attributes other than peer.service unchanged",
            label(sp)
        );
        // peer.service on exactly the DB/queue client spans.
        let expected = fx.peer.get(&sp.name).cloned();
        let found = peer_service.map(|v| match v {
            Some(P::StringValue(x)) => x,
            other => panic!("{}: peer.service {other:?}", sp.name),
        });
        assert_eq!(found, expected, "{}: peer.service", label(sp));
        if let Some(orig) = original_peer {
            assert_eq!(Some(orig), Some(Some(P::StringValue("cart-cache".into()))));
        }
    }
    assert_eq!(
        after
            .iter()
            .filter(|s| s.attributes.iter().any(|kv| kv.key == "peer.service"))
            .count(),
        fx.peer.len()
    );

    // Counted as the Collector counts filtered spans.
    let text = telemetry.render();
    assert!(
        text.contains(&format!(
            "otelcol_processor_filter_spans_filtered_total{{filter=\"filter/noise\"}} {}\n",
            fx.noise.len()
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "otelcol_processor_dropped_spans_total{{processor=\"filter/noise\",reason=\"filtered\"}} {}\n",
        fx.noise.len()
    )));
    assert!(text.contains(&format!(
        "otelcol_processor_incoming_items_total{{otel_signal=\"traces\",processor=\"filter/noise\"}} {}\n",
        before.len()
    )));
    assert!(text.contains(&format!(
        "otelcol_processor_outgoing_items_total{{otel_signal=\"traces\",processor=\"transform/peer-service\"}} {}\n",
        after.len()
    )));
}

fn spans(req: &ExportTraceServiceRequest) -> Vec<Span> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}
