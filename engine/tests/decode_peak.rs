//! The decoded-size estimate receivers reserve before decoding
//! (`sluice_engine::otlp::decoded_size_estimate`) covers the decoder's real peak memory: this
//! test binary counts every allocation (its own global allocator) while decoding requests of
//! the shapes that matter, and prints the figures (`cargo nextest run -p sluice-engine --test
//! decode_peak --no-capture`; recorded in BENCHMARKS.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_engine::otlp::{decode, decode_json, decoded_size_estimate, encode_json};
use sluice_engine::{Payload, Signal};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            // A growing realloc may hold both blocks for a moment.
            PEAK.fetch_max(now + layout.size(), Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One measurement at a time: the counters are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// (peak bytes allocated during `f` beyond what was allocated before, what it returned).
fn peak_of<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (PEAK.load(Ordering::Relaxed) - base, out)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", "checkout"),
            kv("k8s.namespace.name", "shop"),
            kv("k8s.pod.name", "checkout-7d9f8b6c4-x2x9z"),
            kv("k8s.node.name", "ip-10-0-12-34.eu-west-1.compute.internal"),
        ],
        ..Default::default()
    })
}

fn traces(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A realistic request: HTTP server and DB client spans with the usual attributes.
fn realistic_traces(n: usize) -> Vec<u8> {
    traces(
        (0..n as u64)
            .map(|i| Span {
                trace_id: (i / 8 + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i % 8 == 0 {
                    vec![]
                } else {
                    (i / 8 * 8 + 1).to_be_bytes().to_vec()
                },
                name: if i % 2 == 0 {
                    "GET /api/cart"
                } else {
                    "SELECT shop.items"
                }
                .into(),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1000,
                end_time_unix_nano: 1_700_000_000_050_000_000 + i * 1000,
                attributes: vec![
                    kv("http.request.method", "GET"),
                    kv("url.path", "/api/cart/items"),
                    kv("http.route", "/api/cart/{id}"),
                    kv("server.address", "checkout.shop.svc.cluster.local"),
                    kv(
                        "user_agent.original",
                        "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                    ),
                    kv("db.system", "postgresql"),
                    kv(
                        "db.statement",
                        "SELECT id, name, price FROM items WHERE cart_id = $1",
                    ),
                    kv("net.peer.name", "postgres.shop.svc.cluster.local"),
                ],
                ..Default::default()
            })
            .collect(),
    )
}

/// The first shape: 300,000 small spans in ~15 MiB.
fn small_spans(n: usize) -> Vec<u8> {
    traces(
        (0..n as u64)
            .map(|i| Span {
                trace_id: (i / 4 + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i,
                end_time_unix_nano: 1_700_000_000_000_100_000 + i,
                ..Default::default()
            })
            .collect(),
    )
}

/// The second shape: one span with a million repeated attributes (~8.6 MiB).
fn repeated_attributes(n: usize) -> Vec<u8> {
    traces(vec![Span {
        trace_id: vec![1; 16],
        span_id: vec![1; 8],
        name: "bomb".into(),
        attributes: (0..n).map(|_| kv("k", "v")).collect(),
        ..Default::default()
    }])
}

fn metrics(n: usize) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: (0..n)
                    .map(|i| Metric {
                        name: format!("container.cpu.usage.{}", i % 50),
                        unit: "1".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![
                                    kv("k8s.container.name", "app"),
                                    kv("cpu", "cpu0"),
                                ],
                                time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                                value: Some(number_data_point::Value::AsDouble(i as f64)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs(n: usize) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "GET /api/cart/items 200 {i}ms user=42 session=abcdef"
                            ))),
                        }),
                        attributes: vec![kv("log.file.name", "app.log")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Decodes `body`, measuring the peak; checks the estimate covers it and the payload's own
/// `memory_size` is within the peak. Returns (peak / wire, memory_size / wire).
fn check(what: &str, signal: Signal, body: &[u8], json: bool) -> (f64, f64) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (peak, payload) = peak_of(|| {
        if json {
            decode_json(signal, body).expect("decodes")
        } else {
            decode(signal, body).expect("decodes")
        }
    });
    let estimate = decoded_size_estimate(signal, body.len(), json);
    let size = payload.memory_size();
    let wire = body.len() as f64;
    println!(
        "{what}: {} wire bytes, {} items; decode peak {:.2}x, payload memory_size {:.2}x, estimate {:.2}x",
        body.len(),
        payload.item_count(),
        peak as f64 / wire,
        size as f64 / wire,
        estimate as f64 / wire
    );
    assert!(
        peak <= estimate,
        "{what}: decoding peaked at {peak} bytes, above the estimate {estimate}"
    );
    assert!(
        size <= peak,
        "{what}: memory_size {size} above what was allocated ({peak})"
    );
    (peak as f64 / wire, size as f64 / wire)
}

#[test]
fn the_estimate_covers_realistic_requests_of_every_signal() {
    check(
        "traces, 1000 realistic spans",
        Signal::Traces,
        &realistic_traces(1000),
        false,
    );
    check(
        "traces, 20 realistic spans",
        Signal::Traces,
        &realistic_traces(20),
        false,
    );
    check(
        "metrics, 2000 gauge points",
        Signal::Metrics,
        &metrics(2000),
        false,
    );
    check("logs, 2000 records", Signal::Logs, &logs(2000), false);
}

#[test]
fn the_estimate_covers_json_requests() {
    let json = |p: &[u8], s| {
        let payload = decode(s, p).expect("decodes");
        encode_json(&payload).expect("encodes")
    };
    check(
        "traces JSON, 1000 spans",
        Signal::Traces,
        &json(&realistic_traces(1000), Signal::Traces),
        true,
    );
    check(
        "logs JSON, 2000 records",
        Signal::Logs,
        &json(&logs(2000), Signal::Logs),
        true,
    );
}

#[test]
fn the_estimate_covers_the_shapes_that_expand_most() {
    let body = small_spans(300_000);
    assert!(body.len() > 14 << 20, "{} bytes", body.len());
    check("traces, 300,000 small spans", Signal::Traces, &body, false);
    let body = repeated_attributes(1_000_000);
    assert!(body.len() > 8 << 20, "{} bytes", body.len());
    check(
        "traces, one span with 1,000,000 attributes",
        Signal::Traces,
        &body,
        false,
    );
}

/// What the memory account counts for payloads that components keep (`Payload::memory_size`:
/// `batch` buffers, sending queues) against the bytes really allocated for them: decoded
/// requests, then merged and split as `batch` does with `send_batch_max_size`. The parts of a
/// split share their source's buffers (zero-copy slices), so counting every part's buffers
/// whole would count the source once per part.
#[test]
fn memory_size_matches_the_bytes_allocated_for_payloads_and_their_splits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let wire = realistic_traces(1_000);
    let before = CURRENT.load(Ordering::Relaxed);
    let requests: Vec<Payload> = (0..10)
        .map(|_| decode(Signal::Traces, &wire).expect("decodes"))
        .collect();
    let allocated = CURRENT.load(Ordering::Relaxed) - before;
    let counted: usize = requests.iter().map(Payload::memory_size).sum();

    let merged = Payload::concat(Signal::Traces, &requests).expect("concat");
    drop(requests);
    let parts = merged.split_items(2_048).expect("split");
    drop(merged);
    let parts_allocated = CURRENT.load(Ordering::Relaxed) - before;
    let parts_counted: usize = parts.iter().map(Payload::memory_size).sum();
    println!(
        "10 decoded requests: counted {counted} B, allocated {allocated} B ({:.2}x); \
         merged and split in {} parts: counted {parts_counted} B, allocated {parts_allocated} B ({:.2}x)",
        counted as f64 / allocated as f64,
        parts.len(),
        parts_counted as f64 / parts_allocated as f64,
    );
    for (what, c, a) in [
        ("decoded", counted, allocated),
        ("split", parts_counted, parts_allocated),
    ] {
        let ratio = c as f64 / a as f64;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{what}: the account counts {c} B for {a} B allocated ({ratio:.2}x)"
        );
    }
}
