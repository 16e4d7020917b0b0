//! The `loadbalancing` exporter's split: a realistic 1,000-span payload (~63 traces of 16 spans
//! across 4 resources and 8 scopes, ~10 attributes per span) routed by trace id over the
//! Collector's ring of 3 backends.
//! - `positions`: the routing key of every span hashed to its ring position (CRC-32 of the
//!   trace id, once per run of equal ids);
//! - `split`: positions, backends, and every backend's part cut in one pass
//!   (`Payload::partition`; attribute tables left pending);
//! - `split_per_backend_filter`: the same positions and backends, then one `filter_tables` per
//!   backend (the split before `partition`, kept here as the A/B baseline);
//! - `split_and_settle` / `split_per_backend_filter_and_settle`: the same, then every part's
//!   tables built, as the exporter queue does when it takes a part (the full copy of every
//!   span, attribute, event and link).
//! - `split_wire`: the request still as its bytes (a wire form, as a pipeline that reads no
//!   tables holds it), split by a walk of its spans' trace ids and re-framed per backend
//!   (`routing::split_wire`): the whole of what routing costs on that path, as the parts are
//!   sent as they are; `split_wire_to_bytes` adds writing each part out as one request body
//!   (what the exporter's encode does with it).
//!
//! `cargo bench -p sluice-benches --bench loadbalancing -- --warm-up-time 2 --measurement-time 5`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_benches::routing::{settled, split_per_backend_filter};
use sluice_engine::kernels::routing::{self, HashRing, RoutingKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let buf = realistic_traces_request(1000).encode_to_vec();
    let payload = sluice_engine::otlp::decode_traces(&buf).expect("valid");
    let endpoints: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:4317")).collect();
    let ring = HashRing::new(&endpoints).expect("ring");
    let key = RoutingKey::TraceId;
    let parts = settled(routing::split(&payload, &key, &ring).expect("split"));
    assert_eq!(
        parts.len(),
        3,
        "the payload spreads over the three backends"
    );
    // Both ways cut the same parts.
    let baseline = settled(split_per_backend_filter(&payload, &key, &ring));
    for ((a, pa), (b, pb)) in parts.iter().zip(&baseline) {
        assert_eq!(a, b);
        for (t, batch) in pa.tables() {
            assert_eq!(batch, pb.table(t), "{t:?}");
        }
    }
    let body = bytes::Bytes::from(buf.clone());
    let skim = sluice_engine::otlp::skim(sluice_engine::Signal::Traces, &body).expect("clean");
    let wire = sluice_engine::Payload::from_wire(
        sluice_engine::Signal::Traces,
        sluice_engine::payload::WireForm::new(body, &skim),
    );
    let wire_parts = routing::split_wire(&wire, &key, &ring)
        .expect("a wire form")
        .expect("split");
    assert_eq!(
        wire_parts
            .iter()
            .map(|(b, p)| (*b, p.item_count()))
            .collect::<Vec<_>>(),
        parts
            .iter()
            .map(|(b, p)| (*b, p.item_count()))
            .collect::<Vec<_>>(),
        "the wire split sends as many spans to each backend"
    );
    let mut g = c.benchmark_group("loadbalancing_1000_spans_3_backends");
    g.throughput(Throughput::Elements(payload.item_count() as u64));
    g.bench_function("positions", |b| {
        b.iter(|| routing::item_positions(&payload, &key).expect("positions"))
    });
    g.bench_function("split", |b| {
        b.iter(|| routing::split(&payload, &key, &ring).expect("split"))
    });
    g.bench_function("split_per_backend_filter", |b| {
        b.iter(|| split_per_backend_filter(&payload, &key, &ring))
    });
    g.bench_function("split_and_settle", |b| {
        b.iter(|| settled(routing::split(&payload, &key, &ring).expect("split")))
    });
    g.bench_function("split_per_backend_filter_and_settle", |b| {
        b.iter(|| settled(split_per_backend_filter(&payload, &key, &ring)))
    });
    g.bench_function("split_wire", |b| {
        b.iter(|| {
            routing::split_wire(&wire, &key, &ring)
                .expect("wire")
                .expect("split")
        })
    });
    g.bench_function("split_wire_to_bytes", |b| {
        b.iter(|| {
            routing::split_wire(&wire, &key, &ring)
                .expect("wire")
                .expect("split")
                .iter()
                .map(|(_, p)| sluice_engine::otlp::encode_to_bytes(p).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
