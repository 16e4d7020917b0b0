//! `kubeletstats`: the cost of turning one stats summary into a metrics payload (parse with
//! serde into borrowed structs, append into the Arrow metric tables), for a node with 100 pods
//! of 3 containers each (one volume per pod, every group on: 5,315 points, ~0.3 MB of JSON).
//! `parse` is serde alone, for scale; `parse_to_value` is serde into an owned `Value` tree
//! (what a straightforward implementation reading untyped JSON starts with).
//!
//! `cargo bench -p sluice-benches --bench kubeletstats -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_k8s::kubeletstats::Scraper;
use sluice_k8s::kubeletstats::config::KubeletStatsConfig;
use sluice_k8s::kubeletstats::fake_kubelet::synthetic_summary;
use sluice_k8s::kubeletstats::summary::Summary;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let body = synthetic_summary(100, 3);
    let config: KubeletStatsConfig = serde_json::from_value(serde_json::json!({
        "auth_type": "none",
        "metric_groups": ["node", "pod", "container", "volume"],
    }))
    .expect("config");
    let enabled = config.enabled_metrics();
    let points = Scraper::payload(&config, &enabled, body.as_bytes(), "bench", 1, 0)
        .expect("payload")
        .item_count();
    eprintln!(
        "kubeletstats bench: {} bytes of summary JSON, {points} points",
        body.len()
    );
    let mut g = c.benchmark_group("kubeletstats_100_pods_x_3_containers");
    g.throughput(Throughput::Elements(points as u64));
    g.bench_function("summary_to_payload", |b| {
        b.iter(|| {
            Scraper::payload(&config, &enabled, black_box(body.as_bytes()), "bench", 1, 0)
                .expect("payload")
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| serde_json::from_slice::<Summary<'_>>(black_box(body.as_bytes())).expect("parse"))
    });
    g.bench_function("parse_to_value", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).expect("parse")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
