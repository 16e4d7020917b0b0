//! OTLP protobuf decode: prost (`ExportTraceServiceRequest::decode`, the reference) vs sluice's
//! hand-written decoder straight to Arrow (`sluice_engine::otlp::decode_traces`), and the
//! validating skim that replaces the decode where data is forwarded as bytes
//! (`sluice_engine::otlp::skim`).
//!
//! `cargo bench -p sluice-benches --bench decode -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_benches::realistic_traces_request;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn decode_traces(c: &mut Criterion) {
    let spans = 1000;
    let buf = realistic_traces_request(spans).encode_to_vec();
    let payload = sluice_engine::otlp::decode_traces(&buf).expect("valid request");
    eprintln!(
        "request: {} spans, {} protobuf bytes ({:.0} B/span); Arrow after decode: {} bytes ({:.0} B/span)",
        spans,
        buf.len(),
        buf.len() as f64 / spans as f64,
        payload.memory_size(),
        payload.memory_size() as f64 / spans as f64,
    );

    for (t, b) in payload.tables() {
        if b.num_rows() > 0 {
            eprintln!(
                "  {t:?}: {} rows, {} bytes ({:.0} B/span)",
                b.num_rows(),
                b.get_array_memory_size(),
                b.get_array_memory_size() as f64 / spans as f64
            );
        }
    }

    let mut g = c.benchmark_group("decode_traces_1000_spans");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("prost", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&buf[..])).expect("valid"))
    });
    g.bench_function("sluice_arrow", |b| {
        b.iter(|| sluice_engine::otlp::decode_traces(black_box(&buf[..])).expect("valid"))
    });
    assert!(sluice_engine::otlp::skim(sluice_engine::Signal::Traces, &buf).is_some());
    g.bench_function("sluice_skim", |b| {
        b.iter(|| sluice_engine::otlp::skim(sluice_engine::Signal::Traces, black_box(&buf[..])))
    });
    g.finish();
}

criterion_group!(benches, decode_traces);
criterion_main!(benches);
