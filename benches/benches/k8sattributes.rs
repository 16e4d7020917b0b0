//! `k8sattributes` enrichment: the column kernel vs a per-resource-map baseline.
//!
//! Input: a payload of 1,000 spans from 50 pods (20 spans per resource; each resource as an
//! SDK sends it: service, SDK, host and `k8s.pod.ip`), enriched from a cache of 10,000 pods
//! with the Collector's default metadata (8 attributes per pod).
//!
//! - `kernel`: `enrich` as the processor runs it: one cache lookup per resource row, then one
//!   rebuild of the resource attribute table (`insert_strings`); spans are not touched.
//! - `per_resource_map`: the same lookups, but each resource's attributes copied into a map of
//!   owned strings, the pod's attributes inserted where absent (a copy each), and the table
//!   built again from the maps (see `sluice_benches::k8s::enrich_per_resource_map`).
//!
//! Throughput is in spans: the cost is per resource row, so spans per resource set the rate.
//!
//! `cargo bench -p sluice-benches --bench k8sattributes -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::k8s::{enrich_per_resource_map, pod, request_from_pods};
use sluice_engine::Table;
use sluice_engine::component::parse_config;
use sluice_k8s::k8sattributes::cache::{PodCache, PodEntry};
use sluice_k8s::k8sattributes::config::K8sAttributesConfig;
use sluice_k8s::k8sattributes::enrich::{EnrichMetrics, Lookup, enrich};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CACHED_PODS: usize = 10_000;
const RESOURCES: usize = 50;
const SPANS_PER_RESOURCE: usize = 20;

fn enrichment(c: &mut Criterion) {
    let config = parse_config::<K8sAttributesConfig>(&serde_json::Value::Null)
        .expect("defaults parse")
        .compile()
        .expect("defaults compile");
    let mut cache = PodCache::new();
    for i in 0..CACHED_PODS {
        let entry = PodEntry::from_api(&pod(i), &config, &cache);
        cache.add_or_update(entry, &config.associations);
    }
    let pods: Vec<usize> = (0..RESOURCES).map(|k| k * 197 % CACHED_PODS).collect();
    let req = request_from_pods(&pods, SPANS_PER_RESOURCE);
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("valid request");
    let lookup = Lookup::new(&config);
    let metrics = EnrichMetrics::default();

    // Both produce the same resource attributes (as sets per resource).
    let mut ours = payload.clone();
    enrich(&mut ours, &cache, &config, &lookup, &metrics).expect("enriches");
    let theirs = enrich_per_resource_map(&payload, &cache);
    assert_eq!(
        ours.table(Table::ResourceAttrs).num_rows(),
        theirs.num_rows(),
        "same attributes added"
    );
    assert_eq!(
        ours.table(Table::ResourceAttrs).num_rows(),
        RESOURCES * (7 + 8),
        "every resource got the 8 default attributes"
    );
    assert_eq!(metrics.lookup_miss.get(), 0);

    let mut g = c.benchmark_group("k8sattributes_1000_spans_50_pods");
    g.throughput(Throughput::Elements(
        (RESOURCES * SPANS_PER_RESOURCE) as u64,
    ));
    g.bench_function("kernel", |b| {
        b.iter(|| {
            let mut p = black_box(&payload).clone();
            enrich(&mut p, &cache, &config, &lookup, &metrics).expect("enriches");
            p
        })
    });
    g.bench_function("per_resource_map", |b| {
        b.iter(|| enrich_per_resource_map(black_box(&payload), &cache))
    });
    g.finish();
}

criterion_group!(benches, enrichment);
criterion_main!(benches);
