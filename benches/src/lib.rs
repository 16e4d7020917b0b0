//! Shared helpers for sluice benchmarks.

pub mod alloc;
pub mod gateway;
pub mod k8s;
pub mod per_span;
pub mod resourcedetection;
pub mod routing;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::Event, span::SpanKind,
};

/// A deterministic xorshift generator, so every run benchmarks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn kv_str(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

const SERVICES: &[&str] = &["checkout", "cart", "payment", "frontend", "inventory"];
const ROUTES: &[&str] = &[
    "/api/v1/users/{id}",
    "/api/v1/orders/{orderId}/items",
    "/api/v1/cart",
    "/healthz",
    "/api/v2/products/{sku}/reviews",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const PEERS: &[&str] = &[
    "orders-db.prod.svc.cluster.local",
    "redis-master.cache.svc.cluster.local",
    "payments.internal.example.com",
    "api.stripe.com",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "okhttp/4.12.0",
    "grpc-go/1.63.2",
];

/// A realistic `ExportTraceServiceRequest` of `spans` spans: 4 resources (pods with Kubernetes
/// resource attributes), 2 instrumentation scopes each, ~10 attributes per span with the keys
/// and value lengths of HTTP server/client and database spans, 16-span traces with parent
/// links, a status on every span and an exception event on one span in 20.
pub fn realistic_traces_request(spans: usize) -> ExportTraceServiceRequest {
    realistic_traces_request_seeded(spans, 0x9E37_79B9_7F4A_7C15)
}

/// [`realistic_traces_request`] with another seed: the same shapes and vocabulary, different
/// random values (span and trace ids, pod names and uids, peer addresses, timings, picks).
pub fn realistic_traces_request_seeded(spans: usize, seed: u64) -> ExportTraceServiceRequest {
    let mut rng = Rng(seed | 1);
    let resources = 4usize;
    let scopes = 2usize;
    let per_scope = spans.div_ceil(resources * scopes).max(1);
    let mut left = spans;
    let mut trace_id = rng.bytes(16);
    let mut root_span_id = rng.bytes(8);
    let mut n = 0usize;
    let base_ns: u64 = 1_717_000_000_000_000_000;
    let mut resource_spans = Vec::new();
    for r in 0..resources {
        let service = SERVICES[r % SERVICES.len()];
        let pod = format!("{service}-7d9f8b6c5d-{:05x}", rng.next() & 0xfffff);
        let resource = Resource {
            attributes: vec![
                kv_str("service.name", service),
                kv_str("service.namespace", "shop"),
                kv_str("service.version", "2.14.3"),
                kv_str(
                    "service.instance.id",
                    format!("{:032x}", rng.next() as u128 * 31),
                ),
                kv_str("k8s.namespace.name", "shop-prod"),
                kv_str("k8s.pod.name", pod.clone()),
                kv_str(
                    "k8s.pod.uid",
                    format!(
                        "{:08x}-5f3c-4c1e-9a7b-{:012x}",
                        rng.next() as u32,
                        rng.next() & 0xffff_ffff_ffff
                    ),
                ),
                kv_str("k8s.deployment.name", service.to_string()),
                kv_str(
                    "k8s.node.name",
                    format!("ip-10-0-{}-{}.ec2.internal", r + 1, 17 + r),
                ),
                kv_str("host.name", pod),
                kv_str("telemetry.sdk.name", "opentelemetry"),
                kv_str("telemetry.sdk.language", "java"),
                kv_str("telemetry.sdk.version", "1.38.0"),
            ],
            ..Default::default()
        };
        let mut scope_spans = Vec::new();
        for s in 0..scopes {
            let count = per_scope.min(left);
            left -= count;
            let (scope_name, scope_version) = if s == 0 {
                ("io.opentelemetry.tomcat-10.0", "2.4.0-alpha")
            } else {
                ("io.opentelemetry.jdbc", "2.4.0-alpha")
            };
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                if n.is_multiple_of(16) {
                    trace_id = rng.bytes(16);
                    root_span_id = rng.bytes(8);
                }
                let is_root = n.is_multiple_of(16);
                let start = base_ns + n as u64 * 1_000_000 + (rng.next() % 1000);
                let dur = 50_000 + rng.next() % 20_000_000;
                let method = rng.pick(METHODS);
                let route = rng.pick(ROUTES);
                let target = route
                    .replace("{id}", "48213")
                    .replace("{orderId}", "A-99172")
                    .replace("{sku}", "SKU-88812");
                let status_code = if rng.next().is_multiple_of(20) {
                    500
                } else {
                    200
                };
                let mut attributes = if s == 0 {
                    vec![
                        kv_str("http.request.method", method),
                        kv_str("http.route", route),
                        kv_str("url.path", target.clone()),
                        kv_str(
                            "url.full",
                            format!("https://shop.example.com{target}?session=8f3a2c&lang=en-US"),
                        ),
                        kv_str("url.scheme", "https"),
                        kv_int("http.response.status_code", status_code),
                        kv_str("server.address", "shop.example.com"),
                        kv_int("server.port", 443),
                        kv_str(
                            "network.peer.address",
                            format!("10.0.{}.{}", rng.next() % 255, rng.next() % 255),
                        ),
                        kv_str("user_agent.original", rng.pick(AGENTS)),
                        kv_str("network.protocol.version", "1.1"),
                    ]
                } else {
                    vec![
                        kv_str("db.system", "postgresql"),
                        kv_str("db.name", "orders"),
                        kv_str("db.user", "svc_orders"),
                        kv_str("db.operation", "SELECT"),
                        kv_str("db.sql.table", "order_items"),
                        kv_str(
                            "db.statement",
                            "SELECT oi.id, oi.sku, oi.quantity, oi.price FROM order_items oi WHERE oi.order_id = ? ORDER BY oi.id LIMIT ?",
                        ),
                        kv_str("net.peer.name", rng.pick(PEERS)),
                        kv_int("net.peer.port", 5432),
                        kv_str("thread.name", "http-nio-8080-exec-7"),
                        kv_int("thread.id", 141),
                    ]
                };
                attributes.truncate(10 + (n % 2));
                let events = if n % 20 == 7 {
                    vec![Event {
                        time_unix_nano: start + dur / 2,
                        name: "exception".into(),
                        attributes: vec![
                            kv_str("exception.type", "java.net.SocketTimeoutException"),
                            kv_str("exception.message", "Read timed out after 5000 ms"),
                        ],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    vec![]
                };
                out.push(Span {
                    trace_id: trace_id.clone(),
                    span_id: if is_root {
                        root_span_id.clone()
                    } else {
                        rng.bytes(8)
                    },
                    trace_state: String::new(),
                    parent_span_id: if is_root {
                        vec![]
                    } else {
                        root_span_id.clone()
                    },
                    flags: 0x101,
                    name: if s == 0 {
                        format!("{method} {route}")
                    } else {
                        "SELECT orders.order_items".into()
                    },
                    kind: if s == 0 {
                        SpanKind::Server as i32
                    } else {
                        SpanKind::Client as i32
                    },
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + dur,
                    attributes,
                    dropped_attributes_count: 0,
                    events,
                    dropped_events_count: 0,
                    links: vec![],
                    dropped_links_count: 0,
                    status: Some(Status {
                        message: String::new(),
                        code: if status_code == 500 { 2 } else { 0 },
                    }),
                });
                n += 1;
            }
            scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope_name.into(),
                    version: scope_version.into(),
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

/// [`realistic_traces_request`] as the gateway sees it from Python and Java pods: every
/// resource also carries the process and OS attributes SDK resource detectors add
/// (`process.command`, `process.executable`, `os.type`, `os.version`, ...), one database span
/// in two carries a `db.connection_string`, and one server span in 50 is an ELB health check
/// (on top of the `/healthz` probes, one route in five). This is the input of the gateway's
/// `filter/noise` + transforms benchmark.
pub fn gateway_traces_request(spans: usize) -> ExportTraceServiceRequest {
    let mut req = realistic_traces_request(spans);
    let mut n = 0usize;
    for rs in &mut req.resource_spans {
        if let Some(r) = &mut rs.resource {
            r.attributes.extend([
                kv_str("process.command", "/app/bin/server"),
                kv_str("process.executable", "/usr/lib/jvm/java-21/bin/java"),
                kv_int("process.pid", 1),
                kv_str("os.type", "linux"),
                kv_str("os.version", "6.1.0-18-cloud-amd64"),
            ]);
        }
        for ss in &mut rs.scope_spans {
            for sp in &mut ss.spans {
                n += 1;
                let is_db = sp.attributes.iter().any(|kv| kv.key == "db.system");
                if is_db && n.is_multiple_of(2) {
                    sp.attributes.push(kv_str(
                        "db.connection_string",
                        "jdbc:postgresql://orders-db.prod.svc.cluster.local:5432/orders?user=svc_orders",
                    ));
                }
                if !is_db && n % 50 == 3 {
                    for kv in &mut sp.attributes {
                        if kv.key == "user_agent.original" {
                            *kv = kv_str("user_agent.original", "ELB-HealthChecker/2.0");
                        }
                    }
                }
            }
        }
    }
    req
}

/// `payload` with its trace ids replaced: spans in groups of `spans_per_trace` share an id, ids
/// are random-looking and distinct for every `key` (so each call makes new traces).
pub fn with_trace_ids(
    payload: &sluice_engine::Payload,
    key: u64,
    spans_per_trace: usize,
) -> sluice_engine::Payload {
    use arrow::array::{ArrayRef, FixedSizeBinaryArray, RecordBatch};
    use sluice_engine::Table;
    let spans = payload.table(Table::Spans);
    let mix = |x: u64| {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let ids = (0..spans.num_rows()).map(|row| {
        let t = key.wrapping_mul(1_000_003) ^ (row / spans_per_trace.max(1)) as u64;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&mix(t).to_le_bytes());
        id[8..].copy_from_slice(&mix(t ^ 0xA5A5_A5A5).to_le_bytes());
        Some(id)
    });
    let ids = FixedSizeBinaryArray::try_from_sparse_iter_with_size(ids, 16).expect("16-byte ids");
    let idx = spans.schema().index_of("trace_id").expect("trace_id");
    let mut columns: Vec<ArrayRef> = spans.columns().to_vec();
    columns[idx] = std::sync::Arc::new(ids);
    let batch = RecordBatch::try_new(spans.schema(), columns).expect("same schema");
    let mut out = payload.clone();
    out.set(Table::Spans, batch).expect("spans table");
    out
}

/// A consumer that drops what it is given: the end of a benchmarked processor or connector, so
/// only the component itself is measured.
pub struct Nop;

impl sluice_engine::component::Consumer for Nop {
    fn consume(
        &self,
        _: sluice_engine::Payload,
    ) -> sluice_engine::component::BoxFuture<'_, Result<(), sluice_engine::component::ConsumeError>>
    {
        Box::pin(async { Ok(()) })
    }
}

/// The requests of a `file` exporter capture (`format: proto`: each a 4-byte big-endian
/// length, then the request), in order; a truncated last record is left out.
pub fn capture_requests(bytes: &[u8]) -> Vec<&[u8]> {
    let mut requests = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(request) = rest.get(4..4 + len) else {
            break;
        };
        requests.push(request);
        rest = &rest[4 + len..];
    }
    requests
}

/// The tail-sampling configuration of the tail-sampling bench and profile: a 30 s wait, room
/// for 200k traces, and the gateway's kind of policies (errors, slow traces, half of the rest).
pub fn tail_sampling_config() -> sluice_engine::processors::tail_sampling::TailSamplingConfig {
    serde_json::from_value(serde_json::json!({
        "decision_wait": "30s",
        "num_traces": 200_000,
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 2000}},
            {"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}}
        ]
    }))
    .expect("config")
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_has_the_asked_number_of_spans() {
        for n in [1, 7, 1000] {
            let r = super::realistic_traces_request(n);
            let total: usize = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            assert_eq!(total, n);
            let p = sluice_engine::otlp::decode_traces(&prost::Message::encode_to_vec(&r))
                .expect("decodes");
            p.validate().expect("valid payload");
            assert_eq!(p.item_count(), n);
        }
    }
}
