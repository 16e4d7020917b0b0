//! The backends of a Kubernetes service, as the `loadbalancing` exporter's `k8s` resolver sees
//! them: a kube-rs watch of the service's EndpointSlices (label
//! `kubernetes.io/service-name=<name>` in its namespace), turned into the Collector's backend
//! strings each time the view changes.
//!
//! - Only ready endpoints count (`conditions.ready` true, or absent, which the API defines as
//!   ready): a pod that is starting, failing its readiness probe or terminating is no backend.
//! - Each address gives one backend per configured port, `ip:port` (`[ip]:port` for IPv6), or
//!   the bare address when no port is configured; with `return_hostnames` the address is the
//!   endpoint's `hostname` followed by `.<service>.<namespace>` (the Collector's form; only the
//!   pods of a StatefulSet whose `serviceName` is this headless service have hostnames).
//! - `service` is `name` or `name.namespace`; without a namespace, the pod's own (the service
//!   account's `namespace` file), else `default`, as in the Collector.
//!
//! The watch lists, then watches from the list's `resourceVersion`, and lists again after a
//! `410 Gone`; errors back off and retry, each reported as a failed resolution (the exporter
//! keeps its last backends meanwhile). The exporter's side (ring, backends, telemetry) lives in
//! `sluice-egress`'s `loadbalancing` module; this module only reads the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio_stream::StreamExt;

use crate::k8sattributes::config::AuthType;
use crate::k8sattributes::watch::{ClientError, Environment, make_client};

/// The label the EndpointSlice controller puts on every slice of a service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Which service's endpoints, and how they become backend strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub name: String,
    pub namespace: String,
    /// One backend per port per address; none: the bare address.
    pub ports: Vec<u16>,
    pub return_hostnames: bool,
}

/// Backoff of a failing watch (tests shorten it).
#[derive(Clone, Debug)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(800),
            max: Duration::from_secs(30),
        }
    }
}

impl ServiceEndpoints {
    /// `service` as the Collector reads it: `name[.namespace]`, the namespace defaulting to
    /// the one in `env`'s service account directory, else `default`.
    pub fn new(
        service: &str,
        ports: Vec<u16>,
        return_hostnames: bool,
        env: &Environment,
    ) -> Result<ServiceEndpoints, String> {
        let (name, namespace) = match service.split_once('.') {
            Some((name, namespace)) => (name, namespace.to_string()),
            None => (
                service,
                pod_namespace(env).unwrap_or_else(|| "default".into()),
            ),
        };
        if !is_dns_label(name) {
            return Err(format!(
                "service name {name:?} is not a valid Kubernetes service name (lowercase letters, digits and '-')"
            ));
        }
        if !is_dns_label(&namespace) {
            return Err(format!(
                "namespace {namespace:?} is not a valid Kubernetes namespace: write the service as name or name.namespace (not a DNS name such as name.namespace.svc.cluster.local)"
            ));
        }
        Ok(ServiceEndpoints {
            name: name.to_string(),
            namespace,
            ports,
            return_hostnames,
        })
    }

    /// The label selector of the service's slices.
    pub fn label_selector(&self) -> String {
        format!("{SERVICE_NAME_LABEL}={}", self.name)
    }

    /// The backend strings of the ready endpoints of `slices` (unsorted, possibly repeated:
    /// the exporter sorts and deduplicates), or why they cannot be made.
    pub fn backends<'a>(
        &self,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for slice in slices {
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                let hosts: Vec<String> = if self.return_hostnames {
                    match endpoint.hostname.as_deref().filter(|h| !h.is_empty()) {
                        Some(h) => vec![format!("{h}.{}.{}", self.name, self.namespace)],
                        None => {
                            return Err(format!(
                                "endpoint {:?} of EndpointSlice {} has no hostname: return_hostnames needs a headless service named by its StatefulSet's serviceName",
                                endpoint.addresses,
                                slice.metadata.name.as_deref().unwrap_or("?"),
                            ));
                        }
                    }
                } else {
                    endpoint.addresses.clone()
                };
                for host in hosts {
                    if self.ports.is_empty() {
                        out.push(host);
                        continue;
                    }
                    for port in &self.ports {
                        // Go's net.JoinHostPort: brackets around a host with a colon (IPv6).
                        out.push(if host.contains(':') {
                            format!("[{host}]:{port}")
                        } else {
                            format!("{host}:{port}")
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Watches the service's slices with `client` until the future is dropped, calling
    /// `publish` with the backends after the first list and after every change (and with an
    /// error after every failed request, before backing off).
    pub async fn watch(
        &self,
        client: Client,
        backoff: &Backoff,
        publish: &(dyn Fn(Result<Vec<String>, String>) + Send + Sync),
    ) {
        let api: Api<EndpointSlice> = Api::namespaced(client, &self.namespace);
        let config = watcher::Config::default().labels(&self.label_selector());
        let mut stream = std::pin::pin!(watcher::watcher(api, config));
        // The slices by name: the last state of each, once the first list is complete.
        let mut slices: Option<BTreeMap<String, EndpointSlice>> = None;
        let mut listing: Option<BTreeMap<String, EndpointSlice>> = None;
        let mut delay = backoff.min;
        let key = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    publish(Err(format!(
                        "watching the EndpointSlices of service {}/{}: {e}",
                        self.namespace, self.name
                    )));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(backoff.max);
                    continue;
                }
            };
            delay = backoff.min;
            match event {
                Event::Init => listing = Some(BTreeMap::new()),
                Event::InitApply(s) => {
                    listing.get_or_insert_default().insert(key(&s), s);
                }
                Event::InitDone => slices = Some(listing.take().unwrap_or_default()),
                Event::Apply(s) => {
                    slices.get_or_insert_default().insert(key(&s), s);
                }
                Event::Delete(s) => {
                    slices.get_or_insert_default().remove(&key(&s));
                }
            }
            // Within a (re-)list nothing is published: the set is complete at InitDone.
            if listing.is_none()
                && let Some(current) = &slices
            {
                publish(self.backends(current.values()));
            }
        }
    }
}

/// A kube client as the Collector's `k8s` resolver makes one (controller-runtime's
/// `GetConfig`): the kubeconfig `KUBECONFIG` names, else the pod's service account when
/// running in a pod (`KUBERNETES_SERVICE_HOST`), else `~/.kube/config`.
pub async fn client(env: &Environment) -> Result<Client, ClientError> {
    let auth = if env.var("KUBECONFIG").is_none() && env.var("KUBERNETES_SERVICE_HOST").is_some() {
        AuthType::ServiceAccount
    } else {
        AuthType::KubeConfig
    };
    make_client(auth, "", env).await
}

/// The namespace of the pod this process runs in, from its service account mount.
fn pod_namespace(env: &Environment) -> Option<String> {
    std::fs::read_to_string(env.service_account_dir.join("namespace"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// An RFC 1123 label: what service and namespace names are.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
#[path = "service_endpoints_tests.rs"]
mod tests;
