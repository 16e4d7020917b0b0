//! Encoding a realistic 1,000-span trace export: prost from structs vs sluice from a Payload.
//!
//! `cargo bench -p sluice-benches --bench encode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_engine::otlp::testing::reference_traces;

fn encode_traces(c: &mut Criterion) {
    let req = realistic_traces_request(1_000);
    let payload = reference_traces(&req);
    let expected = req.encode_to_vec();
    assert_eq!(
        sluice_engine::otlp::encode_to_vec(&payload),
        expected,
        "encoder must match prost before being timed"
    );

    let mut group = c.benchmark_group("encode_traces_1000_spans");
    group.throughput(Throughput::Bytes(expected.len() as u64));
    group.bench_function("prost_encode_to_vec", |b| {
        b.iter(|| black_box(black_box(&req).encode_to_vec()))
    });
    group.bench_function("sluice_encode_to_vec", |b| {
        b.iter(|| black_box(sluice_engine::otlp::encode_to_vec(black_box(&payload))))
    });
    // Reusing the output buffer, as an exporter with a pooled buffer would.
    let mut out = Vec::with_capacity(expected.len());
    group.bench_function("sluice_encode_reused_buffer", |b| {
        b.iter(|| {
            out.clear();
            sluice_engine::otlp::encode(black_box(&payload), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode_traces);
criterion_main!(benches);
