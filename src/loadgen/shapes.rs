//! Realistic OTLP request shapes for the load generator: traces of several spans across
//! services with parent/child links, Kubernetes resource attributes, HTTP / database /
//! messaging semantic-convention attributes, errors, a latency distribution, and a share of
//! noise (health probes) that the gateway's filter drops.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};

/// The name of the lone health-probe spans (the noise `filter/noise` drops).
pub const PROBE_SPAN_NAME: &str = "GET /healthz";

/// What the generated data looks like.
#[derive(Clone, Debug)]
pub struct Shape {
    pub spans_per_trace: usize,
    pub services: usize,
    /// Share of traces with an error span.
    pub error_rate: f64,
    /// Share of spans that are lone health-probe spans (dropped by `filter/noise`).
    pub noise_rate: f64,
    /// Median span duration; durations are log-normal around it.
    pub latency_ms: f64,
    /// Which resource attributes each service's data carries.
    pub resources: Resources,
}

/// The resource attributes of the generated data: where in the pipeline it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Resources {
    /// As a gateway receives it: enriched by an agent (`k8s.*`, `host.name`, `cloud.region`).
    #[default]
    Enriched,
    /// As an application's SDK sends it to the agent on its node: the service and the SDK,
    /// nothing about the pod (the agent's `k8sattributes` finds that from the connection).
    App,
}

/// A small, fast PRNG (splitmix64): the generator's own cost must stay far below sluice's.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Log-normal around `median` with a moderate spread (sigma 0.8).
    fn lognormal(&mut self, median: f64) -> f64 {
        // Box-Muller for one standard normal draw.
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median * (0.8 * z).exp()
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

const SERVICES: &[&str] = &[
    "frontend",
    "checkout",
    "cart",
    "payment",
    "shipping",
    "catalog",
    "email",
    "recommendation",
];
const ROUTES: &[&str] = &[
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/products/{id}",
    "/api/v1/checkout",
    "/api/v1/users/{id}/profile",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
];

fn resource(service: &str, resources: Resources, r: &mut Rng) -> Resource {
    if resources == Resources::App {
        return Resource {
            attributes: vec![
                s("service.name", service),
                s("service.namespace", "shop"),
                s("service.version", "1.8.2"),
                s("telemetry.sdk.name", "opentelemetry"),
                s("telemetry.sdk.language", "java"),
                s("telemetry.sdk.version", "1.44.1"),
            ],
            ..Default::default()
        };
    }
    let pod = format!("{service}-6d8f9c7b5d-{:05x}", r.next() & 0xfffff);
    Resource {
        attributes: vec![
            s("service.name", service),
            s("service.namespace", "shop"),
            s("service.version", "1.8.2"),
            s("k8s.namespace.name", "shop-prod"),
            s("k8s.pod.name", pod.clone()),
            s(
                "k8s.pod.uid",
                format!(
                    "{:08x}-4b1e-4c2d-9f3a-{:012x}",
                    r.next() as u32,
                    r.next() & 0xffff_ffff_ffff
                ),
            ),
            s(
                "k8s.node.name",
                format!("ip-10-0-{}-{}.ec2.internal", r.next() % 8, r.next() % 250),
            ),
            s("k8s.container.name", service),
            s("host.name", pod),
            s("cloud.region", "eu-west-1"),
            s("telemetry.sdk.language", "java"),
        ],
        ..Default::default()
    }
}

/// Replaces `generated` (a resource of a generated request) by the same service's resource from a
/// fixed fleet: the pods that pre-generated request `slot` of a live run's pool carries about.
/// A capture of any length then names as many pods as a live run with a pool of that size,
/// not new pods in every request (which would make every pod-labelled series new).
pub fn fleet_resource(generated: &mut Option<Resource>, resources: Resources, slot: u64) {
    let Some(res) = generated.as_mut() else {
        return;
    };
    let name = res.attributes.iter().find_map(|kv| match &kv.value {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }) if kv.key == "service.name" => Some(v.as_str()),
        _ => None,
    });
    let Some(index) = name.and_then(|n| SERVICES.iter().position(|s| *s == n)) else {
        return;
    };
    let mut r = Rng(Rng(0xf1ee7 ^ (slot << 8) ^ index as u64).next());
    *res = resource(SERVICES[index], resources, &mut r);
}

/// Span attributes by role: the HTTP server entry, DB and messaging clients, internal work.
fn span_attrs(role: usize, r: &mut Rng, status_code: i64) -> Vec<KeyValue> {
    match role {
        0 => vec![
            s(
                "http.request.method",
                *r.pick(&["GET", "GET", "POST", "PUT"]),
            ),
            s("http.route", *r.pick(ROUTES)),
            s(
                "url.full",
                format!(
                    "https://shop.example.com{}?session={:x}",
                    r.pick(ROUTES),
                    r.next()
                ),
            ),
            s("url.scheme", "https"),
            i("http.response.status_code", status_code),
            s("user_agent.original", *r.pick(AGENTS)),
            s(
                "client.address",
                format!("10.1.{}.{}", r.next() % 255, r.next() % 255),
            ),
            s("server.address", "shop.example.com"),
            i("server.port", 443),
            s("network.protocol.version", "1.1"),
        ],
        1 => {
            let (system, peer, port, statement) = *r.pick(&[
                (
                    "postgresql",
                    "orders-db.shop-prod.svc.cluster.local",
                    5432,
                    "SELECT id, status, total FROM orders WHERE customer_id = $1 LIMIT 20",
                ),
                (
                    "redis",
                    "redis-master.cache.svc.cluster.local",
                    6379,
                    "GET cart:session",
                ),
                (
                    "mongodb",
                    "catalog-mongo.shop-prod.svc.cluster.local",
                    27017,
                    "{\"find\":\"products\",\"filter\":{\"sku\":\"?\"}}",
                ),
            ]);
            vec![
                s("db.system", system),
                s("db.name", "shop"),
                s("db.statement", statement),
                s("db.operation", "SELECT"),
                s("server.address", peer),
                i("server.port", port),
                s("net.peer.name", peer),
                s(
                    "db.connection_string",
                    format!("{system}://app@{peer}:{port}/shop"),
                ),
                s("thread.name", "worker-7"),
            ]
        }
        2 => vec![
            s("messaging.system", "rabbitmq"),
            s("messaging.destination.name", "orders.created"),
            s("messaging.operation", "publish"),
            s("server.address", "rabbitmq.messaging.svc.cluster.local"),
            i("server.port", 5672),
            s("messaging.message.id", format!("{:x}", r.next())),
            i("messaging.message.body.size", (r.next() % 4096) as i64),
        ],
        _ => vec![
            s("code.function", "processOrder"),
            s("code.namespace", "com.example.shop.OrderService"),
            i("thread.id", 42),
        ],
    }
}

/// A traces request of about `spans` spans, ids drawn from `r`.
pub fn traces(spans: usize, shape: &Shape, r: &mut Rng, now_ns: u64) -> ExportTraceServiceRequest {
    let services = shape.services.clamp(1, SERVICES.len());
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); services];
    let mut made = 0;
    // A draw yields one probe span or a trace of n spans; for probes to be `noise_rate` of all
    // spans, a draw is a probe with probability q·n / (1 − q + q·n).
    let (q, n) = (
        shape.noise_rate.clamp(0.0, 1.0),
        shape.spans_per_trace.max(1) as f64,
    );
    let probe_draw = q * n / (1.0 - q + q * n);
    while made < spans {
        let trace_id = r.bytes(16);
        if r.unit() < probe_draw {
            // A lone Kubernetes probe: what `filter/noise` drops.
            let start = now_ns - (r.next() % 1_000_000_000);
            by_service[(r.next() as usize) % services].push(Span {
                trace_id,
                span_id: r.bytes(8),
                name: PROBE_SPAN_NAME.into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 200_000,
                attributes: vec![
                    s("http.request.method", "GET"),
                    s("http.route", "/healthz"),
                    s("url.path", "/healthz"),
                    s("user_agent.original", "kube-probe/1.30"),
                    i("http.response.status_code", 200),
                ],
                ..Default::default()
            });
            made += 1;
            continue;
        }
        let n = shape.spans_per_trace.max(1).min(spans - made).max(1);
        let error_at = (r.unit() < shape.error_rate).then(|| (r.next() as usize) % n);
        let root_start = now_ns - (r.next() % 5_000_000_000);
        let mut parent: Vec<u8> = Vec::new();
        for k in 0..n {
            let role = if k == 0 {
                0
            } else {
                1 + (r.next() as usize) % 3
            };
            // The entry span is on the first service (the frontend); downstream calls spread out.
            let svc = if k == 0 {
                0
            } else {
                (r.next() as usize) % services
            };
            let dur = (shape.latency_ms * 1e6 / (k as f64 + 1.0)).max(1e4);
            let dur = r.lognormal(dur) as u64;
            let start = root_start + (k as u64) * 1_000_000;
            let span_id = r.bytes(8);
            let failed = error_at == Some(k);
            let status_code = if failed { 500 } else { 200 };
            let (kind, name) = match role {
                0 => (span::SpanKind::Server, format!("GET {}", r.pick(ROUTES))),
                1 => (span::SpanKind::Client, "SELECT shop.orders".to_string()),
                2 => (
                    span::SpanKind::Producer,
                    "orders.created publish".to_string(),
                ),
                _ => (span::SpanKind::Internal, "processOrder".to_string()),
            };
            by_service[svc].push(Span {
                trace_id: trace_id.clone(),
                span_id: span_id.clone(),
                parent_span_id: parent.clone(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: span_attrs(role, r, status_code),
                status: Some(Status {
                    code: if failed {
                        status::StatusCode::Error
                    } else {
                        status::StatusCode::Unset
                    } as i32,
                    message: if failed {
                        "upstream returned 500".into()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            });
            if k == 0 {
                parent = span_id;
            }
            made += 1;
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, spans)| ResourceSpans {
                resource: Some(resource(SERVICES[k], shape.resources, r)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.loadgen".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// A metrics request of about `points` data points: request counters and latency histograms
/// per service and route, and container CPU/memory like kubeletstats.
pub fn metrics(
    points: usize,
    shape: &Shape,
    r: &mut Rng,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    let services = shape.services.clamp(1, SERVICES.len());
    let mut made = 0;
    let mut resource_metrics = Vec::new();
    let start = now_ns - 60_000_000_000;
    while made < points {
        let svc = SERVICES[made % services];
        let mut ms = Vec::new();
        let calls = (0..ROUTES.len().min(points - made))
            .map(|k| NumberDataPoint {
                attributes: vec![
                    s("http.route", ROUTES[k]),
                    i("http.response.status_code", 200),
                ],
                start_time_unix_nano: start,
                time_unix_nano: now_ns,
                value: Some(number_data_point::Value::AsInt((r.next() % 100_000) as i64)),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        made += calls.len();
        ms.push(Metric {
            name: "http.server.request.count".into(),
            unit: "{request}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: calls,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
        if made < points {
            let bounds = vec![5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
            let counts: Vec<u64> = (0..=bounds.len()).map(|_| r.next() % 1000).collect();
            ms.push(Metric {
                name: "http.server.request.duration".into(),
                unit: "ms".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![s("http.route", *r.pick(ROUTES))],
                        start_time_unix_nano: start,
                        time_unix_nano: now_ns,
                        count: counts.iter().sum(),
                        sum: Some(r.lognormal(shape.latency_ms) * 1000.0),
                        bucket_counts: counts,
                        explicit_bounds: bounds,
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            });
            made += 1;
        }
        if made < points {
            ms.push(Metric {
                name: "container.memory.usage".into(),
                unit: "By".into(),
                data: Some(metric::Data::Gauge(
                    opentelemetry_proto::tonic::metrics::v1::Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns,
                            value: Some(number_data_point::Value::AsInt(
                                (200 + r.next() % 300) as i64 * 1_048_576,
                            )),
                            ..Default::default()
                        }],
                    },
                )),
                ..Default::default()
            });
            made += 1;
        }
        resource_metrics.push(ResourceMetrics {
            resource: Some(resource(svc, shape.resources, r)),
            scope_metrics: vec![ScopeMetrics {
                metrics: ms,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest { resource_metrics }
}

/// A logs request of `records` log records with trace context and HTTP attributes.
pub fn logs(records: usize, shape: &Shape, r: &mut Rng, now_ns: u64) -> ExportLogsServiceRequest {
    let services = shape.services.clamp(1, SERVICES.len());
    let mut by_service: Vec<Vec<LogRecord>> = vec![Vec::new(); services];
    for _ in 0..records {
        let error = r.unit() < shape.error_rate;
        by_service[(r.next() as usize) % services].push(LogRecord {
            time_unix_nano: now_ns - r.next() % 1_000_000_000,
            observed_time_unix_nano: now_ns,
            severity_number: if error { 17 } else { 9 },
            severity_text: if error { "ERROR" } else { "INFO" }.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "{} {} completed in {:.1} ms",
                    if error { "request failed:" } else { "request" },
                    r.pick(ROUTES),
                    r.lognormal(shape.latency_ms)
                ))),
            }),
            attributes: vec![
                s("http.route", *r.pick(ROUTES)),
                s("log.logger", "com.example.shop.Http"),
            ],
            trace_id: r.bytes(16),
            span_id: r.bytes(8),
            ..Default::default()
        });
    }
    ExportLogsServiceRequest {
        resource_logs: by_service
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, log_records)| ResourceLogs {
                resource: Some(resource(SERVICES[k], shape.resources, r)),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            spans_per_trace: 8,
            services: 5,
            error_rate: 0.1,
            noise_rate: 0.1,
            latency_ms: 50.0,
            resources: Resources::Enriched,
        }
    }

    fn resource_keys(req: &ExportTraceServiceRequest) -> Vec<Vec<String>> {
        req.resource_spans
            .iter()
            .map(|rs| {
                let attrs = &rs.resource.as_ref().expect("a resource").attributes;
                attrs.iter().map(|kv| kv.key.clone()).collect()
            })
            .collect()
    }

    #[test]
    fn app_resources_name_the_service_and_no_pod() {
        let app = Shape {
            resources: Resources::App,
            ..shape()
        };
        let req = traces(500, &app, &mut Rng(3), 1_800_000_000_000_000_000);
        let keys = resource_keys(&req);
        assert!(keys.len() > 1);
        for k in &keys {
            assert!(k.contains(&"service.name".to_string()), "{k:?}");
            assert!(
                !k.iter()
                    .any(|k| k.starts_with("k8s.") || k == "host.name" || k == "cloud.region"),
                "{k:?}"
            );
        }
        let enriched = traces(500, &shape(), &mut Rng(3), 1_800_000_000_000_000_000);
        for k in resource_keys(&enriched) {
            assert!(k.contains(&"k8s.pod.uid".to_string()), "{k:?}");
        }
    }

    #[test]
    fn traces_have_the_requested_size_links_errors_and_noise() {
        let mut r = Rng(1);
        let req = traces(2000, &shape(), &mut r, 1_800_000_000_000_000_000);
        let spans: Vec<&Span> = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect();
        assert_eq!(spans.len(), 2000);
        let probes = spans.iter().filter(|s| s.name == "GET /healthz").count();
        assert!((100..=300).contains(&probes), "about 10% noise: {probes}");
        let errors = spans
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
            .count();
        assert!(errors > 0);
        let children = spans
            .iter()
            .filter(|s| !s.parent_span_id.is_empty())
            .count();
        assert!(children > 1000, "traces have parent/child links");
        assert!(req.resource_spans.len() > 1, "several services");
    }

    #[test]
    fn metrics_and_logs_have_the_requested_size() {
        let mut r = Rng(2);
        let m = metrics(100, &shape(), &mut r, 1_800_000_000_000_000_000);
        let points: usize = m
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| match &m.data {
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                Some(metric::Data::Histogram(h)) => h.data_points.len(),
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(points, 100);
        let l = logs(50, &shape(), &mut r, 1_800_000_000_000_000_000);
        assert_eq!(
            l.resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|s| s.log_records.len())
                .sum::<usize>(),
            50
        );
    }
}
