//! `k8sattributes` cache: heap bytes per cached pod, and how long the watch takes to catch up
//! with 10,000 pods served by the fake Kubernetes API server (list in pages of 500 over TLS,
//! JSON decode by kube-rs, extraction, cache insert).
//!
//! - Memory: a counting wrapper around mimalloc tracks live heap bytes; the figure is (live
//!   bytes after caching 10,000 pods - before) / 10,000, with the Collector's default metadata.
//!   Each pod's API object is dropped once extracted, so only what the cache keeps counts
//!   (the entry, its attribute strings, its three identifiers: uid, IP, `k8s.pod.ip`).
//! - Catch-up: from the processor's start (`wait_for_metadata: true`) until the first list is
//!   in the cache; 5 runs against one server (a new processor each), median, min and max.
//!
//! `cargo bench -p sluice-benches --bench k8sattributes_cache`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_benches::k8s::pod;
use sluice_engine::component::{ComponentId, parse_config};
use sluice_engine::telemetry::Telemetry;
use sluice_k8s::k8sattributes::Instance;
use sluice_k8s::k8sattributes::cache::{PodCache, PodEntry};
use sluice_k8s::k8sattributes::config::K8sAttributesConfig;
use sluice_k8s::k8sattributes::watch::{Environment, WatchTiming};
use sluice_k8s::testing::FakeApiServer;

#[global_allocator]
static GLOBAL: sluice_benches::alloc::Counting = sluice_benches::alloc::Counting;

const PODS: usize = 10_000;

fn main() {
    let config = parse_config::<K8sAttributesConfig>(&serde_json::json!({
        "auth_type": "kubeConfig",
        "wait_for_metadata": true,
        "wait_for_metadata_timeout": "120s"
    }))
    .expect("config parses")
    .compile()
    .expect("config compiles");

    // Memory per cached pod.
    let before = sluice_benches::alloc::live();
    let mut cache = PodCache::new();
    for i in 0..PODS {
        let entry = PodEntry::from_api(&pod(i), &config, &cache);
        cache.add_or_update(entry, &config.associations);
    }
    let after = sluice_benches::alloc::live();
    println!(
        "cache: {PODS} pods, {} identifiers, {:.0} bytes per pod",
        cache.len(),
        (after - before) as f64 / PODS as f64
    );
    drop(cache);

    // Catch-up from the fake API server.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = FakeApiServer::start_default().await;
        for i in 0..PODS {
            server.apply(&pod(i));
        }
        let vars: BTreeMap<String, String> = BTreeMap::from([(
            "KUBECONFIG".to_string(),
            server.kubeconfig().display().to_string(),
        )]);
        let vars = Arc::new(vars);
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..5 {
            let vars = vars.clone();
            let env = Environment {
                vars: Arc::new(move |k| vars.get(k).cloned()),
                service_account_dir: server.dir().to_path_buf(),
            };
            let instance = Instance::new(
                config.clone(),
                &Telemetry::new(),
                &ComponentId::parse("k8sattributes").expect("id"),
                WatchTiming::default(),
                env,
            );
            let t0 = Instant::now();
            instance.start().await.expect("synced");
            let took = t0.elapsed();
            let pods = instance.cache().read().expect("cache").distinct_pods();
            assert_eq!(pods, PODS, "every pod cached");
            times.push(took);
            instance.stop();
        }
        times.sort();
        println!(
            "catch-up: {PODS} pods in {:.0} ms median (min {:.0}, max {:.0}; 5 runs)",
            times[2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[4].as_secs_f64() * 1e3
        );
    });
}
