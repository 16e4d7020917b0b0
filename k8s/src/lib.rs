//! Kubernetes integration for sluice: the pod metadata cache behind `k8sattributes`, the
//! headless-service endpoint resolver behind the `loadbalancing` exporter, the kubelet client
//! behind `kubeletstats`, and the deployment manifests under `k8s/config/` and `k8s/manifests/`.
//!
//! Nothing here yet: the agent-side issues build it. The crate exists now so the workspace has
//! its final shape and `kube` can stay behind this crate (and a cargo feature) when it arrives.
