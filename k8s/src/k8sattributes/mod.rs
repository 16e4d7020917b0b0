//! `k8sattributes`: the Collector's Kubernetes attributes processor. Finds the pod each
//! resource came from and adds its metadata (namespace, pod name and uid, start time,
//! deployment, node, container image, labels, annotations) as resource attributes. Full
//! reference, RBAC and differences from the Collector: `README.md` in this folder.
//!
//! ```yaml
//! processors:
//!   k8sattributes:
//!     auth_type: serviceAccount
//!     filter:
//!       node_from_env_var: KUBE_NODE_NAME     # this node's pods only
//!     extract:
//!       metadata: [k8s.namespace.name, k8s.pod.name, k8s.pod.uid, k8s.deployment.name, k8s.node.name]
//!       labels:
//!         - {tag_name: app, key: app.kubernetes.io/name, from: pod}
//!     pod_association:
//!       - sources: [{from: resource_attribute, name: k8s.pod.ip}]
//!       - sources: [{from: connection}]
//! ```
//!
//! Shape: the watches ([`watch`]) keep a [`cache::PodCache`] current in background tasks; the
//! processor itself does no I/O: per payload it takes the cache's read lock once and runs
//! [`enrich::enrich`], one lookup per resource row and one rebuild of the resource attribute
//! table. The connection's address is the payload's origin, which a `batch` that mixes peers
//! clears: like the Collector's, this processor belongs before `batch`.

pub mod cache;
pub mod config;
pub mod enrich;
pub mod watch;

use std::sync::{Arc, Mutex, RwLock, Weak};

use hashbrown::HashMap;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    ConsumerRef, Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use sluice_engine::payload::Payload;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{ProcessorMetrics, Telemetry};
use tokio::task::JoinHandle;

use cache::PodCache;
use config::{Compiled, K8sAttributesConfig};
use enrich::{EnrichMetrics, Lookup};
use watch::{Environment, Started, WatchMetrics, WatchTiming, Watches};

/// Builds `k8sattributes` processors. The pipelines that list one processor id (traces,
/// metrics, logs) share one [`Instance`]: one set of watches, one cache.
#[derive(Default)]
pub struct K8sAttributesFactory {
    instances: Mutex<HashMap<String, Weak<Instance>>>,
}

impl Factory for K8sAttributesFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "k8sattributes"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "adds the metadata of the Kubernetes pod each resource came from"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: K8sAttributesConfig = parse_config(config)?;
        Ok(Arc::new(c.compile()?))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<Compiled>()?;
        let key = ctx.id.to_string();
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let instance = match instances.get(&key).and_then(Weak::upgrade) {
            Some(i) => i,
            None => {
                let i = Arc::new(Instance::new(
                    (*config).clone(),
                    &ctx.telemetry,
                    &ctx.id,
                    WatchTiming::default(),
                    Environment::process(),
                ));
                instances.insert(key, Arc::downgrade(&i));
                i
            }
        };
        Ok(Arc::new(K8sAttributesProcessor::new(
            instance,
            signal,
            next,
            ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
        )))
    }
}

/// One configured `k8sattributes` processor: its watches and cache, shared by its pipelines.
pub struct Instance {
    id: ComponentId,
    watches: Arc<Watches>,
    lookup: Lookup,
    enrich_metrics: EnrichMetrics,
    env: Environment,
    started: Started,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Instance {
    /// An instance of `config`; `env` is where the API's address and credentials are read.
    pub fn new(
        config: Compiled,
        telemetry: &Telemetry,
        id: &ComponentId,
        timing: WatchTiming,
        env: Environment,
    ) -> Instance {
        let lookup = Lookup::new(&config);
        let config = Arc::new(config);
        Instance {
            id: id.clone(),
            watches: Arc::new(Watches {
                cache: Arc::new(RwLock::new(PodCache::new())),
                metrics: WatchMetrics::new(telemetry, &id.to_string()),
                config,
                timing,
                pods_synced: tokio::sync::watch::channel(false).0,
                listed_pods: Mutex::new(None),
            }),
            lookup,
            enrich_metrics: EnrichMetrics {
                lookup_miss: telemetry.counter(
                    "otelcol_otelsvc_k8s_ip_lookup_miss",
                    "Number of times pod by IP lookup failed.",
                    &[],
                ),
            },
            env,
            started: Started::default(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The cache the watches keep (for tests and benchmarks).
    pub fn cache(&self) -> &Arc<RwLock<PodCache>> {
        &self.watches.cache
    }

    pub fn config(&self) -> &Compiled {
        &self.watches.config
    }

    /// Enriches one payload from the cache (no I/O).
    pub fn enrich(&self, payload: &mut Payload) -> Result<(), enrich::EnrichError> {
        let cache = self.watches.cache.read().unwrap_or_else(|e| e.into_inner());
        enrich::enrich(
            payload,
            &cache,
            &self.watches.config,
            &self.lookup,
            &self.enrich_metrics,
        )
    }

    /// Starts the watches (once, whichever pipeline starts first).
    pub async fn start(&self) -> Result<(), ComponentError> {
        let config = &self.watches.config;
        if config.passthrough || !self.started.first() {
            return Ok(());
        }
        let node = match (&config.node, &config.node_from_env_var) {
            (Some(n), _) => Some(n.clone()),
            (None, Some(var)) => match self.env.var(var) {
                Some(v) => Some(v),
                None => {
                    return Err(ComponentError::new(
                        &self.id,
                        watch::ClientError::NodeEnv(var.clone()),
                    ));
                }
            },
            (None, None) => None,
        };
        let client = watch::make_client(config.auth_type, &config.context, &self.env)
            .await
            .map_err(|e| ComponentError::new(&self.id, e))?;
        let tasks = self.watches.spawn(client, node);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        if config.wait_for_metadata {
            let mut synced = self.watches.pods_synced.subscribe();
            let wait =
                tokio::time::timeout(config.wait_for_metadata_timeout, synced.wait_for(|s| *s));
            if !matches!(wait.await, Ok(Ok(_))) {
                self.stop();
                return Err(ComponentError::new(
                    &self.id,
                    format!(
                        "failed to wait for caches to sync: no pod list within wait_for_metadata_timeout ({:?})",
                        config.wait_for_metadata_timeout
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Stops the watches.
    pub fn stop(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processor of one pipeline.
pub struct K8sAttributesProcessor {
    instance: Arc<Instance>,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
}

impl K8sAttributesProcessor {
    pub fn new(
        instance: Arc<Instance>,
        signal: Signal,
        next: ConsumerRef,
        metrics: ProcessorMetrics,
    ) -> Self {
        K8sAttributesProcessor {
            instance,
            signal,
            next,
            metrics,
        }
    }

    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }
}

impl Consumer for K8sAttributesProcessor {
    fn consume(&self, mut payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let items = payload.item_count();
            self.metrics.incoming(self.signal, items);
            self.instance
                .enrich(&mut payload)
                .map_err(|e| ConsumeError::Permanent(format!("k8sattributes processor: {e}")))?;
            self.metrics.outgoing(self.signal, items);
            self.next.consume(payload).await
        })
    }
}

impl Lifecycle for K8sAttributesProcessor {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(self.instance.start())
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.instance.stop() })
    }
}

#[cfg(test)]
mod tests;
