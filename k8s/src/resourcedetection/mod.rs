//! `resourcedetection`: the Collector's resource detection processor. Detects where sluice
//! runs (environment variable, host, EC2, EKS) once at start, and on `refresh_interval`, and
//! merges what it found into the resource of every payload.
//!
//! ```yaml
//! processors:
//!   resourcedetection/eks:
//!     detectors: [env, eks, ec2, system]   # merge order: an earlier detector wins a key
//!     timeout: 5s                          # for the whole detection, retries included
//!     override: false                      # true (default): detected values replace the payload's
//!     refresh_interval: 0s                 # 0: detect once, at start
//!     eks:
//!       resource_attributes:
//!         cloud.region: {enabled: true}
//!         cloud.availability_zone: {enabled: true}
//!         host.name: {enabled: true}
//!     system:
//!       hostname_sources: [os]
//! ```
//!
//! `README.md` in this folder is the reference: settings, each detector's attributes and
//! defaults, telemetry, the IMDS and EKS notes, what differs from the Collector.
//!
//! # How it runs
//!
//! - Detection is I/O, done here (`k8s/`): [`provider`] runs every configured detector at once;
//!   each retries with the Collector's backoff until `timeout` after the run began; results
//!   merge in configured order. One provider per component id serves every pipeline that
//!   lists it.
//! - Start blocks until the first detection is done: the pipeline's processors start before its
//!   receivers, so no data arrives before there is a resource to merge (the Collector blocks
//!   its start the same way). A detector still failing at `timeout` fails the start with its
//!   error (the Collector since v0.146); "not on this platform" (no IMDS answer, not on
//!   Kubernetes, not EKS) is not a failure.
//! - Applying is a kernel over the resources table ([`apply`]): the `resource` processor's
//!   `upsert` (`override: true`) or `insert` actions over the resource attribute table, the
//!   schema URL where empty. Per resource row, never per span.
//! - A refresh replaces the resource when every detector succeeded and keeps the previous one
//!   otherwise (logged); payloads in flight use whichever resource was current when they
//!   arrived.

pub mod apply;
pub mod config;
pub mod detect;
pub mod ec2;
pub mod eks;
pub mod env;
pub mod imds;
pub mod provider;
pub mod system;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig,
};
use sluice_engine::payload::Payload;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::ProcessorMetrics;

pub use apply::{DetectedResource, ResourceMerge};
pub use detect::HostEnvironment;
use provider::Provider;

/// The `resourcedetection` factory. [`ResourceDetectionFactory::default`] reads this
/// process's environment; tests give it another with [`ResourceDetectionFactory::with_host`].
#[derive(Default)]
pub struct ResourceDetectionFactory {
    host: Option<HostEnvironment>,
}

impl ResourceDetectionFactory {
    pub fn with_host(host: HostEnvironment) -> Self {
        ResourceDetectionFactory { host: Some(host) }
    }
}

/// The parsed config and the provider its pipelines share (made on the first build).
struct Parsed {
    config: config::Checked,
    provider: OnceLock<Arc<Provider>>,
}

impl Factory for ResourceDetectionFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "resourcedetection"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "detects the environment (env, system, ec2, eks) at start and merges it into every resource"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(Parsed {
            config: config::parse(config)?,
            provider: OnceLock::new(),
        }))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let parsed = ctx.config::<Parsed>()?;
        let provider = parsed
            .provider
            .get_or_init(|| {
                let host = self.host.clone().unwrap_or_else(HostEnvironment::process);
                Provider::new(&ctx.id, &parsed.config, host, &ctx.telemetry)
            })
            .clone();
        Ok(Arc::new(ResourceDetectionProcessor {
            id: ctx.id.clone(),
            provider,
            signal,
            next,
            metrics: ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct ResourceDetectionProcessor {
    id: sluice_engine::component::ComponentId,
    provider: Arc<Provider>,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
}

impl Consumer for ResourceDetectionProcessor {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let items = payload.item_count();
            self.metrics.incoming(self.signal, items);
            // A kernel error means the payload breaks the data model's invariants, which the
            // decoders guarantee; refuse it rather than pass on something half-changed.
            let out = self.provider.current().apply(payload).map_err(|e| {
                ConsumeError::Permanent(format!("resourcedetection processor: {e}"))
            })?;
            self.metrics.outgoing(self.signal, items);
            self.next.consume(out).await
        })
    }
}

impl Lifecycle for ResourceDetectionProcessor {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            self.provider
                .start()
                .await
                .map_err(|e| ComponentError::new(&self.id, e))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.provider.stop() })
    }
}
