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

use std::path::PathBuf;
use std::sync::Arc;

use sluice_engine::component::Factory;

/// Where Kubernetes mounts a pod's service account: `token`, `ca.crt`, `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Moves [`SERVICE_ACCOUNT_DIR`] for every component of the process (tests, a run outside a
/// pod): kubeletstats' token and CA, k8sattributes' `serviceAccount` auth, the loadbalancing
/// exporter's namespace.
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "SLUICE_SERVICE_ACCOUNT_DIR";

/// Looks up an environment variable by name: the process's own, or a test's.
pub type VarLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The service account directory of this process: [`SERVICE_ACCOUNT_DIR_ENV`] if set.
pub fn service_account_dir() -> PathBuf {
    std::env::var(SERVICE_ACCOUNT_DIR_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from)
}

/// Every component factory of this crate.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(k8sattributes::K8sAttributesFactory::default()),
        Arc::new(kubeletstats::KubeletStatsFactory),
        Arc::new(resourcedetection::ResourceDetectionFactory::default()),
    ]
}
