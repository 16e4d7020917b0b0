//! sluice's agent environment: everything that talks to the cluster or the machine the agent
//! runs on. The Kubernetes API (kube-rs) feeds the pod metadata cache behind `k8sattributes` and
//! the endpoint resolver behind the `loadbalancing` exporter; the kubelet client feeds
//! `kubeletstats`; cloud metadata services feed `resourcedetection`. The engine stays free of
//! I/O: processors built here read caches that this crate's background tasks keep current, and
//! apply them with the engine's column kernels.
//!
//! The deployment configs live beside the crate, under `k8s/config/`.

pub mod k8sattributes;
pub mod kubeletstats;
pub mod resourcedetection;
pub mod service_endpoints;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use sluice_engine::component::Factory;

/// Every component factory of this crate.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(k8sattributes::K8sAttributesFactory::default()),
        Arc::new(kubeletstats::KubeletStatsFactory),
        Arc::new(resourcedetection::ResourceDetectionFactory::default()),
    ]
}
