//! Prometheus scrape encode of 1 M series: sluice's vectorized encoder (label text rendered
//! once per series, values formatted column by column into one buffer) side by side with a
//! straightforward encoder that `write!`s every series' name, labels and value per scrape.
//!
//! `cargo bench -p sluice-benches --bench prometheus -- --warm-up-time 2 --measurement-time 10`
//!
//! Input: 1,000,000 gauge and counter series as a gateway sees kubeletstats-like data with
//! `resource_to_telemetry_conversion` on: 10,000 pods (resource attributes `k8s.pod.name`,
//! `k8s.namespace.name`, `k8s.node.name`, `k8s.container.name`, `cloud.region`,
//! `cloud.availability_zone`), 20 metrics per pod, 5 attribute sets per metric (0-3 data point
//! attributes), plus the three `otel_scope_*` labels: 9 to 12 labels per series. Values are
//! realistic: CPU seconds, byte counts, ratios. The series go in through the exporter's real
//! ingest path (OTLP protobuf -> sluice decode -> `State::ingest`).
//!
//! Also printed: memory per series (the state's columns, label text and identity index) and
//! the one-off cost of laying out the table again after 1% new series (pod churn).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use sluice_egress::prometheus::{Chunks, Format, PrometheusConfig, State};
use sluice_engine::schema::Signal;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: u64 = 1_717_000_000_000_000_000;
const PODS: usize = 10_000;
const METRICS: usize = 20;
const ATTR_SETS: usize = 5;
const ZONES: &[&str] = &["ap-south-1a", "ap-south-1b", "ap-south-1c"];
const NAMESPACES: &[&str] = &[
    "shop-prod",
    "payments",
    "telemetry",
    "kube-system",
    "search",
];
const ROUTES: &[&str] = &[
    "/api/v1/users/{id}",
    "/api/v1/orders/{orderId}/items",
    "/api/v1/cart",
    "/healthz",
    "/api/v2/products/{sku}/reviews",
];

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// (metric name, unit, monotonic sum?) of the 20 metrics every pod reports.
fn metric_defs() -> Vec<(String, &'static str, bool)> {
    let base = [
        ("container.cpu.time", "s", true),
        ("container.memory.usage", "By", false),
        ("container.cpu.utilization", "1", false),
        ("container.memory.rss", "By", false),
        ("container.filesystem.usage", "By", false),
        ("http.server.requests", "{request}", true),
        ("http.server.active_requests", "{request}", false),
        ("container.network.io", "By", true),
        ("jvm.memory.used", "By", false),
        ("db.client.connections.usage", "{connection}", false),
    ];
    (0..METRICS)
        .map(|i| {
            let (n, u, m) = base[i % base.len()];
            (
                if i < base.len() {
                    n.to_string()
                } else {
                    format!("{n}.{i}")
                },
                u,
                m,
            )
        })
        .collect()
}

/// Data point attributes of set `j`: 0 to 3 of them.
fn point_attrs(j: usize) -> Vec<KeyValue> {
    let mut a = Vec::new();
    if j >= 1 {
        a.push(kv("http.route", ROUTES[j % ROUTES.len()]));
    }
    if j >= 2 {
        a.push(kv(
            "http.request.method",
            if j.is_multiple_of(2) { "GET" } else { "POST" },
        ));
    }
    if j >= 3 {
        a.push(kv(
            "http.response.status_code",
            format!("{}", 200 + (j % 3) * 100),
        ));
    }
    a
}

fn value(metric: usize, pod: usize, j: usize, round: u64) -> f64 {
    let x = (pod * 7919 + metric * 104_729 + j * 31) as f64;
    match metric % 10 {
        0 => 1234.567 + x / 1000.0 + round as f64 * 0.25, // CPU seconds
        2 => (x % 1000.0) / 1e4,                          // ratio
        5 | 7 => (x * 13.0).floor() + round as f64 * 17.0, // counts
        _ => (x * 4096.0 + 183_500_800.0).floor(),        // bytes
    }
}

/// The OTLP requests: one per 100 pods.
fn requests(round: u64) -> Vec<Vec<u8>> {
    (0..PODS / 100).map(|chunk| request(round, chunk)).collect()
}

/// The request of pods `100 * chunk ..` at update `round`.
fn request(round: u64, chunk: usize) -> Vec<u8> {
    let defs = metric_defs();
    {
        {
            let resource_metrics = (chunk * 100..chunk * 100 + 100)
                .map(|pod| {
                    let ns = NAMESPACES[pod % NAMESPACES.len()];
                    let metrics = defs
                        .iter()
                        .enumerate()
                        .map(|(mi, (name, unit, monotonic))| {
                            let points = (0..ATTR_SETS)
                                .map(|j| NumberDataPoint {
                                    attributes: point_attrs(j),
                                    start_time_unix_nano: NOW - 3_600_000_000_000,
                                    time_unix_nano: NOW + round,
                                    value: Some(number_data_point::Value::AsDouble(value(
                                        mi, pod, j, round,
                                    ))),
                                    ..Default::default()
                                })
                                .collect();
                            let data = if *monotonic {
                                metric::Data::Sum(Sum {
                                    data_points: points,
                                    aggregation_temporality: AggregationTemporality::Cumulative
                                        as i32,
                                    is_monotonic: true,
                                })
                            } else {
                                metric::Data::Gauge(Gauge {
                                    data_points: points,
                                })
                            };
                            Metric {
                                name: name.clone(),
                                description: format!("{name} as kubeletstats reports it"),
                                unit: unit.to_string(),
                                data: Some(data),
                                ..Default::default()
                            }
                        })
                        .collect();
                    ResourceMetrics {
                        resource: Some(Resource {
                            attributes: vec![
                                kv("k8s.pod.name", format!("{ns}-api-7d9f8b6c5d-{pod:05x}")),
                                kv("k8s.namespace.name", ns),
                                kv(
                                    "k8s.node.name",
                                    format!(
                                        "ip-10-0-{}-{}.ap-south-1.compute.internal",
                                        pod % 50,
                                        pod % 7
                                    ),
                                ),
                                kv("k8s.container.name", "app"),
                                kv("cloud.region", "ap-south-1"),
                                kv("cloud.availability_zone", ZONES[pod % ZONES.len()]),
                            ],
                            ..Default::default()
                        }),
                        scope_metrics: vec![ScopeMetrics {
                            scope: Some(InstrumentationScope {
                                name: "otelcol/kubeletstatsreceiver".into(),
                                version: "0.114.0".into(),
                                ..Default::default()
                            }),
                            metrics,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
        }
    }
}

/// What a straightforward encoder holds per series: its name, label pairs, value.
struct NaiveSeries {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One `write!` per label and per line, the label set formatted on every scrape.
fn naive_encode(families: &[(String, String, &str, Vec<NaiveSeries>)], out: &mut String) {
    for (name, help, ty, series) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for s in series {
            out.push_str(&s.name);
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            let _ = writeln!(out, "}} {}", s.value);
        }
    }
}

/// The naive encoder's input, read back from sluice's own exposition (same series, labels,
/// values), so both encoders write the same data.
fn naive_input(text: &str) -> Vec<(String, String, &'static str, Vec<NaiveSeries>)> {
    let mut fams: Vec<(String, String, &'static str, Vec<NaiveSeries>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            fams.push((name.into(), help.into(), "gauge", Vec::new()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if rest.ends_with("counter") {
                fams.last_mut().expect("HELP first").2 = "counter";
            }
        } else {
            let open = line.find('{').expect("labels");
            let close = line.rfind('}').expect("labels");
            let labels = line[open + 1..close]
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            let value = line[close + 2..].parse().expect("value");
            fams.last_mut().expect("family").3.push(NaiveSeries {
                name: line[..open].to_string(),
                labels,
                value,
            });
        }
    }
    fams
}

fn scrape(c: &mut Criterion) {
    let config: PrometheusConfig = sluice_engine::component::parse_config(&serde_json::json!({
        "endpoint": "localhost:8889",
        "resource_to_telemetry_conversion": {"enabled": true}
    }))
    .expect("config");
    let mut state = State::new(&config);
    let t = Instant::now();
    let mut points = 0;
    for buf in requests(0) {
        let p = sluice_engine::otlp::decode(Signal::Metrics, &buf).expect("decodes");
        points += state.ingest(&p, NOW).accepted;
    }
    let ingest_s = t.elapsed().as_secs_f64();
    let n = state.store.series_count();
    assert_eq!(n, PODS * METRICS * ATTR_SETS);
    assert_eq!(points, n);
    let t = Instant::now();
    let text = String::from_utf8(state.scrape(Format::Text, NOW)).expect("utf-8");
    let first_scrape_s = t.elapsed().as_secs_f64();
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(lines, n);
    let labels: usize = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.matches("=\"").count())
        .sum();
    eprintln!(
        "{n} series, {:.1} labels/series avg, {:.0} B/line, scrape {} MB; ingest of 1M new series {:.2} s ({:.2} M points/s); first scrape {:.3} s",
        labels as f64 / n as f64,
        text.len() as f64 / n as f64,
        text.len() / 1_000_000,
        ingest_s,
        n as f64 / ingest_s / 1e6,
        first_scrape_s,
    );
    let mem = state.store.memory_bytes();
    eprintln!(
        "state memory: {} MB, {:.0} B/series (columns, label text, identity index)",
        mem / 1_000_000,
        mem as f64 / n as f64,
    );

    // Steady state: every series updated once more (the values change, the set does not).
    let next = requests(1);
    let t = Instant::now();
    for b in &next {
        let p = sluice_engine::otlp::decode(Signal::Metrics, b).expect("decodes");
        state.ingest(&p, NOW + 1);
    }
    eprintln!(
        "update of 1M existing series: {:.2} s ({:.2} M points/s, decode included)",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    );

    // Outside criterion (the machine is shared): thread CPU time and page faults per scrape.
    let (f0, c0) = thread_faults_cpu();
    for _ in 0..5 {
        black_box(state.scrape_chunks(Format::Text, NOW + 1));
    }
    let (f1, c1) = thread_faults_cpu();
    eprintln!(
        "text scrape: {:.1} ms thread CPU ({:.1} M series per CPU second), {} page faults per scrape",
        (c1 - c0) / 5.0 * 1e3,
        n as f64 / ((c1 - c0) / 5.0) / 1e6,
        (f1 - f0) / 5
    );
    // Pod churn: 1% new series (100 pods come up) since the last scrape, three times; each
    // churn scrape is followed by a steady one for comparison.
    for round in 0..3 {
        let mut req =
            ExportMetricsServiceRequest::decode(&request(2, round)[..]).expect("own request");
        for rm in &mut req.resource_metrics {
            if let Some(r) = &mut rm.resource {
                let pod = format!("{}-new", attr(&r.attributes[0]));
                r.attributes[0] = kv("k8s.pod.name", pod);
            }
        }
        let p =
            sluice_engine::otlp::decode(Signal::Metrics, &req.encode_to_vec()).expect("decodes");
        state.ingest(&p, NOW + 2);
        let (f0, c0) = thread_faults_cpu();
        black_box(state.scrape_chunks(Format::Text, NOW + 2));
        let (f1, c1) = thread_faults_cpu();
        black_box(state.scrape_chunks(Format::Text, NOW + 2));
        let (f2, c2) = thread_faults_cpu();
        eprintln!(
            "after 1% new series ({} now): scrape {:.0} ms thread CPU ({} faults); next scrape {:.0} ms ({} faults)",
            state.store.series_count(),
            (c1 - c0) * 1e3,
            f1 - f0,
            (c2 - c1) * 1e3,
            f2 - f1
        );
    }
    let families = naive_input(&text);
    let mut naive = String::new();
    naive_encode(&families, &mut naive);
    eprintln!("naive encoder output: {} MB", naive.len() / 1_000_000);

    let mut group = c.benchmark_group("prometheus_scrape_1M_series");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    // The encoder: output chunks handed back and reused, as the naive encoder reuses its
    // String.
    let mut spare = state.scrape_chunks(Format::Text, NOW + 1);
    group.bench_function("sluice_vectorized_text", |b| {
        b.iter(|| {
            let s = std::mem::take(&mut spare);
            spare = state.scrape_into(Format::Text, NOW + 1, Chunks::reusing(s));
            black_box(spare.len())
        })
    });
    // The exporter's path: fresh chunks every scrape (page faults when the allocator has
    // returned the last scrape's memory to the OS).
    group.bench_function("sluice_vectorized_text_fresh_chunks", |b| {
        b.iter(|| black_box(state.scrape_chunks(Format::Text, NOW + 1).len()))
    });
    group.bench_function("naive_format_per_series", |b| {
        b.iter(|| {
            naive.clear();
            naive_encode(black_box(&families), &mut naive);
            black_box(naive.len())
        })
    });
    group.bench_function("sluice_vectorized_openmetrics", |b| {
        b.iter(|| {
            let s = std::mem::take(&mut spare);
            spare = state.scrape_into(Format::OpenMetrics, NOW + 1, Chunks::reusing(s));
            black_box(spare.len())
        })
    });
    group.finish();

    // What a Prometheus scrape costs on top: it asks for gzip (flate2, fast level, as served).
    let chunks = state.scrape_chunks(Format::Text, NOW + 1);
    let (_, c0) = thread_faults_cpu();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for c in &chunks {
        std::io::Write::write_all(&mut gz, c).expect("gzip");
    }
    let z = gz.finish().expect("gzip");
    let (_, c1) = thread_faults_cpu();
    eprintln!(
        "gzip of the text scrape: {} MB -> {} MB, {:.2} s thread CPU",
        chunks.iter().map(Vec::len).sum::<usize>() / 1_000_000,
        z.len() / 1_000_000,
        c1 - c0
    );
}

/// (minor page faults, user+system CPU seconds) of this thread, from /proc.
fn thread_faults_cpu() -> (u64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // fields after the parenthesised command name: state is field 3; minflt 10, utime 14, stime 15
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (get(10), (get(14) + get(15)) as f64 / 100.0)
}

fn attr(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

criterion_group!(benches, scrape);
criterion_main!(benches);
