//! The pipeline graph: components built from a checked [`Config`], wired, started, stopped.
//!
//! - Exporters: one instance per id, shared by every pipeline that lists it.
//! - Processors: one instance per (pipeline, id), chained back to front so each knows its next.
//! - Receivers: one instance per id, handed the first consumer of every pipeline it feeds, by
//!   signal (a [`FanOut`] when it feeds several pipelines of one signal).
//! - A pipeline with several exporters fans out to them.
//!
//! Start: exporters, processors, receivers, extensions; then health is Ready.
//! Shutdown: health ShuttingDown; extensions and receivers stop (no new data), processors flush
//! front to back (batch hands its buffer to the exporters), exporters drain their queues.
//! Each step is bounded by [`SHUTDOWN_STEP_TIMEOUT`] and a timeout is logged, never hidden.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::component::{
    BuildContext, ComponentError, ComponentId, ConsumerRef, FanOut, Kind, Node, Service as Svc,
};
use crate::config::{Config, PipelineId, Registry};
use crate::health::{Health, Status};
use crate::schema::Signal;
use crate::telemetry::Telemetry;

/// How long one component may take to shut down before the service moves on (and says so).
pub const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A pipeline's processors in pipeline order (first processor first).
type Chain = Vec<(ComponentId, Arc<dyn Node>)>;

pub struct Service {
    exporters: Vec<(ComponentId, Arc<dyn Node>)>,
    processors: Vec<(PipelineId, Chain)>,
    receivers: Vec<(ComponentId, Arc<dyn Svc>)>,
    extensions: Vec<(ComponentId, Arc<dyn Svc>)>,
    health: Health,
}

impl Service {
    pub fn build(
        config: &Config,
        registry: &Registry,
        telemetry: &Telemetry,
        clock: Arc<dyn Clock>,
        health: Health,
    ) -> Result<Service, ComponentError> {
        let ctx = |kind: Kind, id: &ComponentId| -> Result<BuildContext, ComponentError> {
            let parsed = config
                .components
                .get(&(kind, id.clone()))
                .ok_or_else(|| ComponentError::new(id, "internal: component config missing"))?;
            Ok(BuildContext {
                id: id.clone(),
                config: parsed.clone(),
                telemetry: telemetry.clone(),
                clock: clock.clone(),
            })
        };
        let factory = |kind: Kind, id: &ComponentId| {
            registry
                .get(kind, &id.type_name)
                .cloned()
                .ok_or_else(|| ComponentError::new(id, format!("no {} factory", kind.label())))
        };

        // Exporters, once per id.
        let mut exporters: BTreeMap<ComponentId, Arc<dyn Node>> = BTreeMap::new();
        for p in config.pipelines.values() {
            for id in &p.exporters {
                if !exporters.contains_key(id) {
                    let e =
                        factory(Kind::Exporter, id)?.build_exporter(ctx(Kind::Exporter, id)?)?;
                    exporters.insert(id.clone(), e);
                }
            }
        }

        // Processors per pipeline, back to front; collect each pipeline's first consumer.
        let mut processors = Vec::new();
        let mut heads: BTreeMap<ComponentId, BTreeMap<Signal, Vec<ConsumerRef>>> = BTreeMap::new();
        for (pid, p) in &config.pipelines {
            let mut next: ConsumerRef = match p.exporters.as_slice() {
                [one] => exporters[one].clone(),
                many => Arc::new(FanOut(
                    many.iter()
                        .map(|id| exporters[id].clone() as ConsumerRef)
                        .collect(),
                )),
            };
            let mut chain = Vec::new();
            for id in p.processors.iter().rev() {
                let node = factory(Kind::Processor, id)?.build_processor(
                    ctx(Kind::Processor, id)?,
                    pid.signal,
                    next,
                )?;
                next = node.clone();
                chain.push((id.clone(), node));
            }
            chain.reverse();
            processors.push((pid.clone(), chain));
            for r in &p.receivers {
                heads
                    .entry(r.clone())
                    .or_default()
                    .entry(pid.signal)
                    .or_default()
                    .push(next.clone());
            }
        }

        // Receivers, once per id, with one consumer per signal.
        let mut receivers = Vec::new();
        for (id, by_signal) in heads {
            let consumers = by_signal
                .into_iter()
                .map(|(s, mut v)| {
                    let c: ConsumerRef = if v.len() == 1 {
                        v.remove(0)
                    } else {
                        Arc::new(FanOut(v))
                    };
                    (s, c)
                })
                .collect();
            let r = factory(Kind::Receiver, &id)?
                .build_receiver(ctx(Kind::Receiver, &id)?, consumers)?;
            receivers.push((id, r));
        }

        let mut extensions = Vec::new();
        for id in &config.extensions {
            let e = factory(Kind::Extension, id)?
                .build_extension(ctx(Kind::Extension, id)?, health.clone())?;
            extensions.push((id.clone(), e));
        }

        Ok(Service {
            exporters: exporters.into_iter().collect(),
            processors,
            receivers,
            extensions,
            health,
        })
    }

    /// Starts everything, downstream first, so no component ever sends to one not yet started.
    pub async fn start(&self) -> Result<(), ComponentError> {
        self.health.set(Status::Starting);
        for (_, e) in &self.exporters {
            e.start().await?;
        }
        for (_, chain) in &self.processors {
            for (_, p) in chain.iter().rev() {
                p.start().await?;
            }
        }
        for (_, r) in &self.receivers {
            r.start().await?;
        }
        for (_, x) in &self.extensions {
            x.start().await?;
        }
        self.health.set(Status::Ready);
        tracing::info!(
            receivers = self.receivers.len(),
            pipelines = self.processors.len(),
            exporters = self.exporters.len(),
            "sluice is ready"
        );
        Ok(())
    }

    /// Stops upstream first so data in flight reaches the exporters and is flushed.
    pub async fn shutdown(&self) {
        self.health.set(Status::ShuttingDown);
        for (id, r) in &self.receivers {
            bounded(id, r.shutdown()).await;
        }
        for (_, chain) in &self.processors {
            for (id, p) in chain {
                bounded(id, p.shutdown()).await;
            }
        }
        for (id, e) in &self.exporters {
            bounded(id, e.shutdown()).await;
        }
        for (id, x) in &self.extensions {
            bounded(id, x.shutdown()).await;
        }
        tracing::info!("sluice stopped");
    }
}

async fn bounded(id: &ComponentId, f: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(SHUTDOWN_STEP_TIMEOUT, f)
        .await
        .is_err()
    {
        tracing::warn!(component = %id, "shutdown did not finish within {SHUTDOWN_STEP_TIMEOUT:?}; moving on");
    }
}

#[cfg(test)]
mod tests;
