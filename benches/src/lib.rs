//! Shared helpers for sluice benchmarks.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// A deterministic pseudo-random stream (splitmix64), so every run builds the same request.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// A realistic trace export: `spans` spans spread over 4 resources (Kubernetes pods with the
/// usual resource attributes) of 2 scopes each, ~10 attributes per span (HTTP server/client
/// and database spans with semantic-convention keys and realistic value lengths), an event on
/// one span in ten, a status on every span. Deterministic.
pub fn realistic_traces_request(spans: usize) -> ExportTraceServiceRequest {
    const RESOURCES: usize = 4;
    const SCOPES: usize = 2;
    let services = ["checkout", "cart", "frontend", "payment"];
    let scopes = [
        ("io.opentelemetry.tomcat-10.0", "2.9.0-alpha"),
        ("io.opentelemetry.jdbc", "2.9.0-alpha"),
    ];
    let routes = [
        "/api/v1/orders/{orderId}",
        "/api/v1/cart",
        "/api/v1/products/{productId}/reviews",
        "/healthz",
    ];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        "okhttp/4.12.0",
        "Go-http-client/1.1",
    ];
    let mut rng = Rng(42);
    let per_scope = spans.div_ceil(RESOURCES * SCOPES).max(1);
    let mut left = spans;
    let mut resource_spans = Vec::with_capacity(RESOURCES);
    for r in 0..RESOURCES {
        let svc = services[r % services.len()];
        let pod = format!("{svc}-7d9f8b6c5d-{:05x}", rng.next() & 0xfffff);
        let resource = Resource {
            attributes: vec![
                kv_str("service.name", svc),
                kv_str("service.version", "1.42.0"),
                kv_str("service.namespace", "shop"),
                kv_str("service.instance.id", format!("{:032x}", rng.next())),
                kv_str("telemetry.sdk.name", "opentelemetry"),
                kv_str("telemetry.sdk.language", "java"),
                kv_str("telemetry.sdk.version", "1.42.1"),
                kv_str("k8s.namespace.name", "shop-production"),
                kv_str("k8s.pod.name", pod.clone()),
                kv_str(
                    "k8s.pod.uid",
                    format!("{:016x}-{:016x}", rng.next(), rng.next()),
                ),
                kv_str("k8s.deployment.name", svc),
                kv_str(
                    "k8s.node.name",
                    format!("ip-10-0-{}-{}.eu-west-1.compute.internal", r, r * 7),
                ),
                kv_str("host.name", pod),
                kv_str("cloud.region", "eu-west-1"),
            ],
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        let mut scope_spans = Vec::with_capacity(SCOPES);
        for (name, version) in scopes {
            let n = per_scope.min(left);
            left -= n;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let trace_id = [rng.next().to_le_bytes(), rng.next().to_le_bytes()].concat();
                let start = 1_700_000_000_000_000_000 + rng.next() % 1_000_000_000_000;
                let db = name.contains("jdbc");
                let attributes = if db {
                    vec![
                        kv_str("db.system", rng.pick(&["postgresql", "mysql", "redis"])),
                        kv_str("db.name", "orders"),
                        kv_str("db.user", "app"),
                        kv_str(
                            "db.statement",
                            "SELECT o.id, o.status, o.total FROM orders o WHERE o.customer_id = ? AND o.created_at > ?",
                        ),
                        kv_str("db.operation", "SELECT"),
                        kv_str("db.sql.table", "orders"),
                        kv_str(
                            "net.peer.name",
                            "orders-db.shop-production.svc.cluster.local",
                        ),
                        kv_int("net.peer.port", 5432),
                        kv_str("thread.name", "http-nio-8080-exec-7"),
                        kv_int("thread.id", 42),
                    ]
                } else {
                    let route = rng.pick(&routes);
                    vec![
                        kv_str("http.method", rng.pick(&["GET", "POST", "PUT"])),
                        kv_str("http.route", route),
                        kv_str(
                            "url.full",
                            format!("https://shop.example.com{}?session={:x}", route, rng.next()),
                        ),
                        kv_str("url.scheme", "https"),
                        kv_int(
                            "http.response.status_code",
                            [200, 200, 200, 404, 500][i % 5],
                        ),
                        kv_str("user_agent.original", rng.pick(&agents)),
                        kv_str(
                            "net.peer.name",
                            "frontend.shop-production.svc.cluster.local",
                        ),
                        kv_str(
                            "client.address",
                            format!("10.0.{}.{}", rng.next() % 256, rng.next() % 256),
                        ),
                        kv_str("server.address", "shop.example.com"),
                        kv_int("server.port", 8080),
                    ]
                };
                let events = if i % 10 == 0 {
                    vec![span::Event {
                        time_unix_nano: start + 1000,
                        name: "exception".into(),
                        attributes: vec![
                            kv_str("exception.type", "java.net.SocketTimeoutException"),
                            kv_str("exception.message", "Read timed out"),
                        ],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    vec![]
                };
                out.push(Span {
                    trace_id,
                    span_id: rng.next().to_le_bytes().to_vec(),
                    trace_state: String::new(),
                    parent_span_id: if i % 4 == 0 {
                        vec![]
                    } else {
                        rng.next().to_le_bytes().to_vec()
                    },
                    flags: 0x101,
                    name: if db {
                        "SELECT orders".into()
                    } else {
                        format!("GET {}", routes[i % routes.len()])
                    },
                    kind: if db { 3 } else { 2 },
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + rng.next() % 50_000_000,
                    attributes,
                    dropped_attributes_count: 0,
                    events,
                    dropped_events_count: 0,
                    links: vec![],
                    dropped_links_count: 0,
                    status: Some(Status {
                        message: String::new(),
                        code: if i % 5 == 4 { 2 } else { 0 },
                    }),
                });
            }
            scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: name.into(),
                    version: version.into(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                }),
                spans: out,
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            });
        }
        resource_spans.push(ResourceSpans {
            resource: Some(resource),
            scope_spans,
            schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
        });
    }
    ExportTraceServiceRequest { resource_spans }
}
