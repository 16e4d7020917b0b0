//! What the memory account costs on the hot path, per request, beside the decode it guards:
//! a receiver admits the request (reserve body + decoded estimate), resizes the reservation to
//! the decoded payload's `memory_size`, and releases it; `batch` and the sending queue each
//! compute `memory_size` once per payload and hold it. Compared with decoding the same
//! 500-span request (what `sluice loadgen` sends).
//!
//! `cargo bench -p sluice-benches --bench accounting -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_engine::Signal;
use sluice_engine::memory::{Limits, MIB};
use sluice_engine::telemetry::Telemetry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn accounting(c: &mut Criterion) {
    let buf = realistic_traces_request(500).encode_to_vec();
    let payload = sluice_engine::otlp::decode_traces(&buf).expect("valid request");
    let t = Telemetry::new();
    t.memory().set_limits(Limits {
        soft: 800 * MIB,
        hard: 1000 * MIB,
    });
    let receiver = t.memory().holder(&t, "otlp", "in_flight");
    let queue = t.memory().holder(&t, "otlp/jaeger", "queue");

    let mut g = c.benchmark_group("accounting_500_spans");
    g.bench_function("decode (for scale)", |b| {
        b.iter(|| sluice_engine::otlp::decode_traces(black_box(&buf[..])).expect("valid"))
    });
    g.bench_function("memory_size", |b| {
        b.iter(|| black_box(&payload).memory_size())
    });
    g.bench_function("admit, resize, release", |b| {
        b.iter(|| {
            let est = sluice_engine::otlp::decoded_size_estimate(Signal::Traces, buf.len(), false);
            let mut held = receiver.admit(black_box(buf.len() + est)).expect("room");
            held.try_resize(black_box(700_000)).expect("room");
        })
    });
    g.bench_function("one request's accounting end to end", |b| {
        b.iter(|| {
            let est = sluice_engine::otlp::decoded_size_estimate(Signal::Traces, buf.len(), false);
            let mut held = receiver.admit(black_box(buf.len() + est)).expect("room");
            held.try_resize(payload.memory_size()).expect("room");
            // batch and the queue: memory_size and a hold each
            let in_batch = queue.hold(payload.memory_size());
            let in_queue = queue.hold(payload.memory_size());
            drop((held, in_batch, in_queue));
        })
    });
    g.finish();
}

criterion_group!(benches, accounting);
criterion_main!(benches);
