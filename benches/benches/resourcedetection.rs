//! The `resourcedetection` apply kernel: merging a detected resource (the ec2 detector's nine
//! attributes and two from `OTEL_RESOURCE_ATTRIBUTES`) into a 1000-span payload with 10
//! resources (100 spans each, ~14 attributes per resource, `host.name` already set by the SDK).
//! The work is per resource row, never per span, so throughput is counted in resources.
//!
//! - `kernel/override` (`override: true`, upsert) and `kernel/insert` (`override: false`):
//!   `ResourceMerge::apply` on the decoded payload (the `resource` processor's actions over the
//!   resource attribute table, then the schema URL on the resources table).
//! - `per_resource/*`: the Collector's `MergeResource` on its own data model, resource by
//!   resource over the prost request (find the key, overwrite or push; a `String` per value, as
//!   `PutStr` copies). Its input is a fresh clone per iteration (`iter_batched`, not timed).
//!
//! `cargo bench -p sluice-benches --bench resourcedetection -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::resourcedetection::{RESOURCES, detected, merge_per_resource, ten_resources};
use sluice_k8s::resourcedetection::ResourceMerge;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn resourcedetection(c: &mut Criterion) {
    let req = ten_resources();
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("valid request");
    eprintln!(
        "{} resources, {} resource attributes, {} spans",
        payload.table(sluice_engine::Table::Resources).num_rows(),
        payload
            .table(sluice_engine::Table::ResourceAttrs)
            .num_rows(),
        payload.item_count()
    );
    let mut g = c.benchmark_group("resourcedetection_apply_10_resources_1000_spans");
    g.throughput(Throughput::Elements(RESOURCES as u64));
    for (name, overwrite) in [("override", true), ("insert", false)] {
        let merge = ResourceMerge::new(detected(), overwrite);
        g.bench_function(format!("kernel/{name}"), |b| {
            b.iter(|| {
                merge
                    .apply(black_box(payload.clone()))
                    .expect("valid payload")
            })
        });
        let d = detected();
        g.bench_function(format!("per_resource/{name}"), |b| {
            b.iter_batched(
                || req.clone(),
                |mut r| {
                    merge_per_resource(&mut r, &d, overwrite);
                    r
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, resourcedetection);
criterion_main!(benches);
