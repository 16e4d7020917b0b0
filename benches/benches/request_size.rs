//! The exporters' request size limit (issue 16): what it costs a request under the limit (the
//! common case: one comparison after the one encoding every request needs) and what splitting
//! an oversized payload costs, each against encoding alone; and the split itself, contiguous
//! slices (`Payload::split_items`) against one filter pass per part (how it was done before).
//!
//! `cargo bench -p sluice-benches --bench request_size -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_benches::realistic_traces_request;
use sluice_egress::queue::{QueueConfig, QueuedExporter, RetryConfig, SendError, Sender, Sent};
use sluice_engine::Payload;
use sluice_engine::component::{ComponentId, Consumer};
use sluice_engine::otlp::encode_to_vec;
use sluice_engine::otlp::testing::reference_traces;
use sluice_engine::schema::{Signal, Table};
use sluice_engine::telemetry::{ExporterMetrics, Telemetry};

/// Encodes as the `otlp` exporter does; sends nowhere.
struct Discard;

impl Sender for Discard {
    type Request = Bytes;

    fn size(body: &Bytes) -> usize {
        body.len()
    }

    fn endpoint(&self, _: Signal) -> &str {
        "discard"
    }
    fn encode(&self, payload: &Payload) -> Result<Bytes, SendError> {
        Ok(Bytes::from(encode_to_vec(payload)))
    }
    async fn send(&self, _: Signal, body: &Bytes) -> Result<Sent, SendError> {
        black_box(body.len());
        Ok(Sent::default())
    }
}

/// The exporter machinery without a queue (delivery happens inside `consume`).
fn exporter(max_request_size: usize) -> QueuedExporter<Discard> {
    let id = ComponentId::parse("otlp").unwrap();
    let telemetry = Telemetry::new();
    QueuedExporter::new(
        id.clone(),
        Discard,
        QueueConfig {
            enabled: false,
            ..QueueConfig::default()
        },
        RetryConfig::default(),
        Duration::from_secs(5),
        max_request_size,
        ExporterMetrics::new(&telemetry, &id),
        telemetry.memory().holder(&telemetry, "otlp", "queue"),
    )
}

/// The split before `split_items` went contiguous: one filter pass over the payload per part.
fn split_by_filters(p: &Payload, max_items: usize) -> Vec<Payload> {
    let n = p.item_count();
    (0..n.div_ceil(max_items))
        .map(|k| {
            let mask: Vec<bool> = (0..n).map(|i| i / max_items == k).collect();
            p.filter(Table::Spans, &mask).unwrap()
        })
        .collect()
}

fn request_size(c: &mut Criterion) {
    // Time enabled: each attempt runs under the exporter's timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    const LIMIT: usize = 4 << 20;

    let small = reference_traces(&realistic_traces_request(1_000));
    let small_len = encode_to_vec(&small).len();
    let mut g = c.benchmark_group("export_1000_spans_under_the_limit");
    g.throughput(Throughput::Bytes(small_len as u64));
    g.bench_function("encode_only", |b| {
        b.iter(|| black_box(encode_to_vec(black_box(&small))))
    });
    let e = exporter(LIMIT);
    g.bench_function("exporter_encode_check_send", |b| {
        b.iter(|| rt.block_on(e.consume(black_box(small.clone()))).unwrap())
    });
    g.finish();

    let big = reference_traces(&realistic_traces_request(40_000));
    let big_len = encode_to_vec(&big).len();
    assert!(big_len > 3 * LIMIT, "{big_len}");
    let mut g = c.benchmark_group("export_40000_spans_over_the_limit");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(big_len as u64));
    g.bench_function("encode_only", |b| {
        b.iter(|| black_box(encode_to_vec(black_box(&big))))
    });
    let e = exporter(LIMIT);
    g.bench_function("exporter_encode_split_4mib_send", |b| {
        b.iter(|| rt.block_on(e.consume(black_box(big.clone()))).unwrap())
    });
    g.finish();

    // 20 parts of 2,000 spans, each encoded, as the exporter sends them.
    let mut g = c.benchmark_group("split_40000_spans_in_20_parts_and_encode");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(big_len as u64));
    g.bench_function("contiguous_slices", |b| {
        b.iter(|| {
            for part in big.split_items(2_000).unwrap() {
                black_box(encode_to_vec(&part));
            }
        })
    });
    g.bench_function("one_filter_per_part", |b| {
        b.iter(|| {
            for part in split_by_filters(&big, 2_000) {
                black_box(encode_to_vec(&part));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, request_size);
criterion_main!(benches);
