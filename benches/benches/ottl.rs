//! The gateway's OTTL processors (`filter/noise`, `transform/clean-attrs`,
//! `transform/peer-service`, from `k8s/config/gateway.yaml` as shipped) on a realistic batch:
//! sluice's column kernels side by side with a straightforward per-span interpreter of the
//! same compiled statements over `opentelemetry-proto` structs (the way the Collector runs
//! OTTL: item by item, attributes searched linearly). The interpreter is the benchmark's
//! baseline only (`sluice_engine::ottl::interp`, feature `testing`).
//!
//! Both start from decoded data (Arrow tables / proto structs) and end with the modified data;
//! neither includes decode or encode. The interpreter's input is a fresh clone per iteration,
//! made outside the timed part. Before timing, both outputs are checked to encode to the same
//! bytes.
//!
//! `cargo bench -p sluice-benches --bench ottl -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::gateway::{Programs, Reference};
use sluice_benches::gateway_traces_request;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gateway(c: &mut Criterion) {
    let programs = Programs::new();
    let (filter, clean, peer) = (&programs.filter, &programs.clean, &programs.peer);
    let reference = Reference::new();

    let spans = 1000;
    let req = gateway_traces_request(spans);
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("decodes");
    let run_sluice = |p: &sluice_engine::Payload| programs.run(p);

    // Same result both ways, byte for byte.
    let ours = run_sluice(&payload);
    let mut theirs = req.clone();
    reference.run(&mut theirs);
    assert_eq!(
        sluice_engine::otlp::encode_to_vec(&ours),
        theirs.encode_to_vec(),
        "column kernels and the per-span interpreter disagree"
    );
    eprintln!(
        "input: {spans} spans; {} kept after filter/noise, {} with peer.service",
        ours.item_count(),
        theirs
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.attributes.iter().any(|kv| kv.key == "peer.service"))
            .count()
    );

    let mut g = c.benchmark_group("gateway_ottl_1000_spans");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("per_span_interpreter", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                reference.run(&mut r);
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sluice_kernels", |b| {
        b.iter(|| run_sluice(black_box(&payload)))
    });
    g.finish();

    // Where the time goes, processor by processor (sluice only).
    let filtered = filter.apply(&payload).expect("ignore").0;
    let mut cleaned = filtered.clone();
    clean.apply(&mut cleaned).expect("ignore");
    let mut g = c.benchmark_group("gateway_ottl_parts_1000_spans");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("filter_noise", |b| {
        b.iter(|| filter.apply(black_box(&payload)))
    });
    g.bench_function("transform_clean_attrs", |b| {
        b.iter_batched(
            || filtered.clone(),
            |mut p| {
                clean.apply(&mut p).expect("ignore");
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("transform_peer_service", |b| {
        b.iter_batched(
            || cleaned.clone(),
            |mut p| {
                peer.apply(&mut p).expect("ignore");
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, gateway);
criterion_main!(benches);
