//! The `spanmetrics` connector's aggregation on a realistic batch (1,000 spans, the gateway's
//! dimensions `http.request.method` and `http.response.status_code`), side by side with a
//! straightforward per-span aggregation over `opentelemetry-proto` structs (the Collector's way:
//! for each span, look up service name and dimensions by scanning attribute lists, build a
//! key of owned strings, update a hash map). The baseline exists only in this benchmark.
//!
//! `cargo bench -p sluice-benches --bench spanmetrics -- --warm-up-time 2 --measurement-time 5`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use sluice_benches::Nop;
use sluice_benches::gateway_traces_request;
use sluice_engine::clock::VirtualClock;
use sluice_engine::component::Consumer;
use sluice_engine::connectors::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use sluice_engine::telemetry::Telemetry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIMENSIONS: [&str; 2] = ["http.request.method", "http.response.status_code"];

fn config() -> SpanMetricsConfig {
    serde_json::from_value(serde_json::json!({
        "metrics_flush_interval": "1h",
        "dimensions": DIMENSIONS.iter().map(|d| serde_json::json!({"name": d})).collect::<Vec<_>>(),
    }))
    .expect("config")
}

/// The baseline's aggregate: count, sum and buckets per owned key.
#[derive(Default)]
struct Agg {
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
}

fn value_string(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

type Key = (String, String, i32, i32, Vec<Option<String>>);

fn per_span(req: &ExportTraceServiceRequest, bounds: &[f64], state: &mut HashMap<Key, Agg>) {
    for rs in &req.resource_spans {
        let res_attrs = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let Some(service) = find(res_attrs, "service.name").map(value_string) else {
            continue;
        };
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let dims = DIMENSIONS
                    .iter()
                    .map(|d| {
                        find(&span.attributes, d)
                            .or_else(|| find(res_attrs, d))
                            .map(value_string)
                    })
                    .collect();
                let ms = span
                    .end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano) as f64
                    / 1e6;
                let agg = state
                    .entry((
                        service.clone(),
                        span.name.clone(),
                        span.kind,
                        span.status.as_ref().map_or(0, |s| s.code),
                        dims,
                    ))
                    .or_insert_with(|| Agg {
                        buckets: vec![0; bounds.len() + 1],
                        ..Default::default()
                    });
                agg.count += 1;
                agg.sum += ms;
                agg.buckets[bounds.partition_point(|b| *b < ms)] += 1;
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let req = gateway_traces_request(1000);
    let buf = req.encode_to_vec();
    let payload = sluice_engine::otlp::decode_traces(&buf).expect("valid");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cfg = config();
    let bounds: Vec<f64> = cfg.bounds();
    let sm = SpanMetrics::new(
        cfg,
        Arc::new(Nop),
        VirtualClock::new(1_700_000_000_000_000_000),
        &Telemetry::new(),
        "spanmetrics",
    );

    let mut g = c.benchmark_group("spanmetrics_1000_spans");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("sluice_columns", |b| {
        b.iter(|| {
            rt.block_on(sm.consume(black_box(payload.clone())))
                .expect("consume")
        })
    });
    let mut state = HashMap::new();
    g.bench_function("per_span_structs", |b| {
        b.iter(|| per_span(black_box(&req), &bounds, &mut state))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
