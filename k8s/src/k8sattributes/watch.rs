//! The watches that keep the [`PodCache`] current: kube-rs `watcher`s (list, then watch from
//! the list's `resourceVersion`, re-list on `410 Gone`) for pods (this node's, with the
//! configured selectors), ReplicaSets (deployment names), namespaces and nodes (only when
//! their labels, annotations or uids are extracted). Errors never stop a watch: it backs off
//! (exponentially, reset after a success) and tries again, while the cache keeps serving what
//! it had. Each error is counted as a watch restart; each re-list after the first as a relist.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hashbrown::HashSet;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use sluice_engine::telemetry::{Counter, Gauge, Telemetry};
use tokio::sync::watch as signal;
use tokio_stream::StreamExt;

use super::cache::{DELETE_GRACE, OwnerEntry, PodCache, PodEntry, ReplicaSetEntry};
use super::config::{AuthType, Compiled};

/// Where a pod's service account is mounted.
pub use crate::SERVICE_ACCOUNT_DIR;

/// Timing of the watches (tests shorten it).
#[derive(Clone, Debug)]
pub struct WatchTiming {
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How often deleted pods past their grace period are purged.
    pub purge_interval: Duration,
    pub delete_grace: Duration,
    /// How long the pod watch waits for the ReplicaSet list first (deployment names of the
    /// pods in the first list), as the Collector's informer dependencies do.
    pub replicaset_wait: Duration,
}

impl Default for WatchTiming {
    fn default() -> Self {
        WatchTiming {
            min_backoff: Duration::from_millis(800),
            max_backoff: Duration::from_secs(30),
            purge_interval: Duration::from_secs(5),
            delete_grace: DELETE_GRACE,
            replicaset_wait: Duration::from_secs(5),
        }
    }
}

/// Why the API could not be reached at all (a start error).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("in-cluster config: {0}")]
    InCluster(String),
    #[error("kubeconfig: {0}")]
    KubeConfig(String),
    #[error("kube client: {0}")]
    Client(String),
    #[error("filter.node_from_env_var: environment variable {0} is not set")]
    NodeEnv(String),
}

/// Where the API's address and credentials are read: environment variables
/// (`KUBERNETES_SERVICE_HOST`/`_PORT`, `KUBECONFIG`, `HOME`, the node name's variable) and
/// the service account mount. The process's own by default; tests give each processor one of
/// its own.
#[derive(Clone)]
pub struct Environment {
    pub vars: crate::VarLookup,
    pub service_account_dir: PathBuf,
}

impl Environment {
    /// This process's environment and the pod's service account mount (moved by
    /// `SLUICE_SERVICE_ACCOUNT_DIR`, as for every component).
    pub fn process() -> Self {
        Environment {
            vars: Arc::new(|k| std::env::var(k).ok()),
            service_account_dir: crate::service_account_dir(),
        }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).filter(|v| !v.is_empty())
    }
}

/// Builds the kube client `auth_type` asks for.
pub async fn make_client(
    auth_type: AuthType,
    context: &str,
    env: &Environment,
) -> Result<Client, ClientError> {
    let config = match auth_type {
        AuthType::KubeConfig => {
            // As kube-rs's `Config::from_kubeconfig` and kubectl: `KUBECONFIG` (the first
            // file of a list), else `~/.kube/config`.
            let path = match env.var("KUBECONFIG") {
                Some(list) => PathBuf::from(list.split(':').next().unwrap_or_default()),
                None => match env.var("HOME") {
                    Some(home) => PathBuf::from(home).join(".kube").join("config"),
                    None => {
                        return Err(ClientError::KubeConfig(
                            "neither KUBECONFIG nor HOME is set".into(),
                        ));
                    }
                },
            };
            let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| ClientError::KubeConfig(format!("{}: {e}", path.display())))?;
            let options = kube::config::KubeConfigOptions {
                context: (!context.is_empty()).then(|| context.to_string()),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| ClientError::KubeConfig(format!("{}: {e}", path.display())))?
        }
        AuthType::ServiceAccount => in_cluster_config(env)?,
        AuthType::None => {
            let mut c = kube::Config::new(service_url(env)?);
            c.accept_invalid_certs = true;
            c
        }
        AuthType::Tls => {
            return Err(ClientError::Client("auth_type tls is not supported".into()));
        }
    };
    Client::try_from(config).map_err(|e| ClientError::Client(e.to_string()))
}

fn service_url(env: &Environment) -> Result<http::Uri, ClientError> {
    let var = |k: &str| {
        env.var(k).ok_or_else(|| {
            ClientError::InCluster(format!("{k} is not set (not running in a pod?)"))
        })
    };
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port = var("KUBERNETES_SERVICE_PORT")?;
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host,
    };
    format!("https://{host}:{port}")
        .parse()
        .map_err(|e| ClientError::InCluster(format!("API server URL: {e}")))
}

/// kube-rs's in-cluster config, read from the environment's service account directory: the
/// token file (re-read by kube-rs as it rotates), the CA (also re-read), the namespace.
fn in_cluster_config(env: &Environment) -> Result<kube::Config, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let dir = &env.service_account_dir;
    let mut config = kube::Config::new(service_url(env)?);
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path)
        .map_err(|e| ClientError::InCluster(format!("{}: {e}", ca_path.display())))?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&ca)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ClientError::InCluster(format!("{}: {e}", ca_path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::InCluster(format!(
            "{}: no certificate",
            ca_path.display()
        )));
    }
    let token: PathBuf = dir.join("token");
    if !token.exists() {
        return Err(ClientError::InCluster(format!(
            "{}: missing",
            token.display()
        )));
    }
    config.root_cert = Some(certs);
    config.root_cert_file = Some(ca_path);
    config.auth_info.token_file = Some(token.display().to_string());
    if let Ok(ns) = std::fs::read_to_string(dir.join("namespace")) {
        config.default_namespace = ns.trim().to_string();
    }
    Ok(config)
}

/// The self-telemetry of the watches: the Collector's `otelcol_otelsvc_k8s_*` counters and
/// sluice's watch restarts and relists.
#[derive(Clone)]
pub struct WatchMetrics {
    pub pod_added: Counter,
    pub pod_updated: Counter,
    pub pod_deleted: Counter,
    pub pod_table_size: Gauge,
    pub namespace: [Counter; 3],
    pub node: [Counter; 3],
    pub replicaset: [Counter; 3],
    telemetry: Telemetry,
    processor: String,
}

impl WatchMetrics {
    pub fn new(t: &Telemetry, processor: &str) -> Self {
        let c = |name: &'static str, help: &'static str| t.counter(name, help, &[]);
        WatchMetrics {
            pod_added: c(
                "otelcol_otelsvc_k8s_pod_added",
                "Number of pod add events received",
            ),
            pod_updated: c(
                "otelcol_otelsvc_k8s_pod_updated",
                "Number of pod update events received",
            ),
            pod_deleted: c(
                "otelcol_otelsvc_k8s_pod_deleted",
                "Number of pod delete events received",
            ),
            pod_table_size: t.gauge(
                "otelcol_otelsvc_k8s_pod_table_size",
                "Size of table containing pod info",
                &[],
            ),
            namespace: [
                c(
                    "otelcol_otelsvc_k8s_namespace_added",
                    "Number of namespace add events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_namespace_updated",
                    "Number of namespace update events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_namespace_deleted",
                    "Number of namespace delete events received",
                ),
            ],
            node: [
                c(
                    "otelcol_otelsvc_k8s_node_added",
                    "Number of node add events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_node_updated",
                    "Number of node update events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_node_deleted",
                    "Number of node delete events received",
                ),
            ],
            replicaset: [
                c(
                    "otelcol_otelsvc_k8s_replicaset_added",
                    "Number of ReplicaSet add events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_replicaset_updated",
                    "Number of ReplicaSet update events received",
                ),
                c(
                    "otelcol_otelsvc_k8s_replicaset_deleted",
                    "Number of ReplicaSet delete events received",
                ),
            ],
            telemetry: t.clone(),
            processor: processor.to_string(),
        }
    }

    fn restarts(&self, resource: &str) -> Counter {
        self.telemetry.counter(
            "sluice_processor_k8sattributes_watch_restarts",
            "Watch errors after which the watch was restarted (with backoff), by resource",
            &[("processor", &self.processor), ("resource", resource)],
        )
    }

    fn relists(&self, resource: &str) -> Counter {
        self.telemetry.counter(
            "sluice_processor_k8sattributes_relists",
            "Lists after the first (a watch that could not resume), by resource",
            &[("processor", &self.processor), ("resource", resource)],
        )
    }
}

/// The shared state of one `k8sattributes` instance's watches.
pub struct Watches {
    pub cache: Arc<RwLock<PodCache>>,
    pub config: Arc<Compiled>,
    pub metrics: WatchMetrics,
    pub timing: WatchTiming,
    /// True once the first pod list has been applied.
    pub pods_synced: signal::Sender<bool>,
    /// The uids of a pod list in progress (between `Init` and `InitDone`).
    pub listed_pods: std::sync::Mutex<Option<HashSet<String>>>,
}

impl Watches {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PodCache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PodCache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns every watch this config needs, and the purge of deleted pods; returns the tasks.
    pub fn spawn(
        self: &Arc<Self>,
        client: Client,
        node: Option<String>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let rules = &self.config.rules;
        let (rs_synced_tx, rs_synced) = signal::channel(!rules.watch_replicasets());
        if rules.watch_replicasets() {
            let w = self.clone();
            let api: Api<ReplicaSet> = Api::all(client.clone());
            tasks.push(tokio::spawn(async move {
                w.run(
                    api,
                    watcher::Config::default(),
                    "replicasets",
                    rs_synced_tx,
                    |w, e| w.on_replicaset(e),
                )
                .await
            }));
        }
        if rules.watch_namespaces() {
            let w = self.clone();
            let api: Api<Namespace> = Api::all(client.clone());
            tasks.push(tokio::spawn(async move {
                w.run(
                    api,
                    watcher::Config::default(),
                    "namespaces",
                    signal::channel(false).0,
                    |w, e| w.on_owner(e, true),
                )
                .await
            }));
        }
        if rules.watch_nodes() {
            let w = self.clone();
            let api: Api<Node> = Api::all(client.clone());
            tasks.push(tokio::spawn(async move {
                w.run(
                    api,
                    watcher::Config::default(),
                    "nodes",
                    signal::channel(false).0,
                    |w, e| w.on_owner(e, false),
                )
                .await
            }));
        }
        let w = self.clone();
        let api: Api<Pod> = match &self.config.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let wc = watcher::Config {
            field_selector: self.config.field_selector(node.as_deref()),
            label_selector: self.config.label_selector(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            // Pods of the first list get their deployment names if ReplicaSets are known.
            let mut rs = rs_synced;
            let _ = tokio::time::timeout(w.timing.replicaset_wait, rs.wait_for(|s| *s)).await;
            let synced = w.pods_synced.clone();
            w.run(api, wc, "pods", synced, |w, e| w.on_pod(e)).await
        }));
        let w = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(w.timing.purge_interval);
            loop {
                tick.tick().await;
                let mut cache = w.write();
                cache.purge(Instant::now(), w.timing.delete_grace);
                w.metrics.pod_table_size.set(cache.len() as i64);
            }
        }));
        tasks
    }

    /// Runs one watch forever: events go to `apply`; errors back off and restart.
    async fn run<K>(
        self: Arc<Self>,
        api: Api<K>,
        config: watcher::Config,
        resource: &'static str,
        synced: signal::Sender<bool>,
        apply: impl Fn(&Self, Event<K>) + Send,
    ) where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let restarts = self.metrics.restarts(resource);
        let relists = self.metrics.relists(resource);
        let mut stream = std::pin::pin!(watcher::watcher(api, config));
        let mut backoff = self.timing.min_backoff;
        let mut lists = 0u64;
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    if failing {
                        tracing::info!(resource, "Kubernetes watch recovered");
                        failing = false;
                    }
                    backoff = self.timing.min_backoff;
                    match &e {
                        Event::Init => {
                            lists += 1;
                            if lists > 1 {
                                relists.add(1);
                            }
                        }
                        Event::InitDone => {
                            apply(&self, e);
                            synced.send_replace(true);
                            continue;
                        }
                        _ => {}
                    }
                    apply(&self, e);
                }
                Err(err) => {
                    restarts.add(1);
                    if !failing {
                        tracing::warn!(resource, error = %err, "Kubernetes watch failed; retrying with backoff, the cache keeps serving");
                        failing = true;
                    } else {
                        tracing::debug!(resource, error = %err, "Kubernetes watch still failing");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.timing.max_backoff);
                }
            }
        }
    }

    fn on_pod(&self, e: Event<Pod>) {
        let associations = &self.config.associations;
        let listed = || self.listed_pods.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::Init => *listed() = Some(HashSet::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let entry = PodEntry::from_api(&pod, &self.config, &self.read());
                if let Some(set) = listed().as_mut() {
                    set.insert(entry.uid.clone());
                }
                let mut cache = self.write();
                if cache.add_or_update(entry, associations) {
                    self.metrics.pod_added.add(1);
                } else {
                    self.metrics.pod_updated.add(1);
                }
                self.metrics.pod_table_size.set(cache.len() as i64);
            }
            Event::Delete(pod) => {
                self.metrics.pod_deleted.add(1);
                let entry = PodEntry::from_api(&pod, &self.config, &self.read());
                self.write().forget(&entry, associations, Instant::now());
            }
            Event::InitDone => {
                // Pods that were not in the new list were deleted while the watch was away.
                let seen = listed().take();
                if let Some(listed) = seen {
                    let gone = self
                        .write()
                        .forget_unlisted(&listed, associations, Instant::now());
                    self.metrics.pod_deleted.add(gone as u64);
                }
            }
        }
    }

    fn on_replicaset(&self, e: Event<ReplicaSet>) {
        let [added, updated, deleted] = &self.metrics.replicaset;
        match e {
            Event::InitApply(rs) | Event::Apply(rs) => {
                let uid = rs.metadata.uid.clone().unwrap_or_default();
                let mut cache = self.write();
                if cache.replicaset(&uid).is_some() {
                    updated.add(1);
                } else {
                    added.add(1);
                }
                cache.set_replicaset(uid, ReplicaSetEntry::from_api(&rs));
            }
            Event::Delete(rs) => {
                deleted.add(1);
                self.write()
                    .remove_replicaset(rs.metadata.uid.as_deref().unwrap_or(""));
            }
            Event::Init | Event::InitDone => {}
        }
    }

    fn on_owner<K>(&self, e: Event<K>, namespace: bool)
    where
        K: kube::Resource + OwnerKind,
    {
        let [added, updated, deleted] = if namespace {
            &self.metrics.namespace
        } else {
            &self.metrics.node
        };
        match e {
            Event::InitApply(o) | Event::Apply(o) => {
                let name = o.meta().name.clone().unwrap_or_default();
                let entry = o.entry(&self.config);
                let mut cache = self.write();
                let known = if namespace {
                    cache.namespace(&name).is_some()
                } else {
                    cache.node(&name).is_some()
                };
                if known {
                    updated.add(1)
                } else {
                    added.add(1)
                }
                if namespace {
                    cache.set_namespace(name, entry);
                } else {
                    cache.set_node(name, entry);
                }
            }
            Event::Delete(o) => {
                deleted.add(1);
                let name = o.meta().name.clone().unwrap_or_default();
                if namespace {
                    self.write().remove_namespace(&name);
                } else {
                    self.write().remove_node(&name);
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }
}

/// Namespaces and nodes: what the cache keeps of them.
pub trait OwnerKind {
    fn entry(&self, config: &Compiled) -> OwnerEntry;
}

impl OwnerKind for Namespace {
    fn entry(&self, config: &Compiled) -> OwnerEntry {
        OwnerEntry::from_namespace(self, config)
    }
}

impl OwnerKind for Node {
    fn entry(&self, config: &Compiled) -> OwnerEntry {
        OwnerEntry::from_node(self, config)
    }
}

/// Set once a start has spawned the watches (one set per processor instance, shared by the
/// pipelines that list it).
#[derive(Default)]
pub struct Started(AtomicBool);

impl Started {
    /// True the first time only.
    pub fn first(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}
