//! The pipeline graph: components built from a checked [`Config`], wired, started, stopped.
//!
//! - Exporters: one instance per id, shared by every pipeline that lists it.
//! - Processors: one instance per (pipeline, id), chained back to front so each knows its next.
//! - Receivers: one instance per id, handed the first consumer of every pipeline it feeds, by
//!   signal (a [`FanOut`] when it feeds several pipelines of one signal).
//! - A pipeline with several exporters fans out to them.
//! - Connectors (the `connectors` section) are exporters of one pipeline and receivers of
//!   another, as in the Collector: one instance per (connector, from signal, to signal), fed by
//!   every pipeline of the `from` signal that lists it in `exporters` and feeding every
//!   pipeline of the `to` signal that lists it in `receivers`.
//!
//! Start: exporters, then pipelines and connectors downstream first, receivers, extensions;
//! then health is Ready.
//! Shutdown: health ShuttingDown; receivers stop (no new data); pipelines flush in data-flow
//! order, processors front to back (batch hands its buffer on), each connector after the
//! pipelines feeding it and before those it feeds; exporters drain their queues, all at once;
//! extensions. Each step is bounded by the component's
//! [`Lifecycle::shutdown_timeout`](crate::component::Lifecycle::shutdown_timeout)
//! ([`SHUTDOWN_STEP_TIMEOUT`] unless it has a deadline of its own) and a timeout is logged,
//! never hidden.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::component::{
    BuildContext, ComponentError, ComponentId, ConsumerRef, Extensions, FanOut, Kind, Node,
    Service as Svc,
};
use crate::config::{Config, PipelineId, Registry, pipeline_order};
use crate::health::{Health, Status};
use crate::schema::Signal;
use crate::telemetry::Telemetry;

/// How long one component may take to shut down before the service moves on (and says so).
pub const SHUTDOWN_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A pipeline's processors in pipeline order (first processor first).
type Chain = Vec<(ComponentId, Arc<dyn Node>)>;

/// A connector's instances: (from signal, to signal, node).
type ConnectorNodes = Vec<(Signal, Signal, Arc<dyn Node>)>;

/// One step of the shutdown order (start runs the steps backwards).
enum Step {
    /// The processors of `processors[i]`.
    Pipeline(usize),
    /// A connector's instances (one per signal pair), after every pipeline that feeds it and
    /// before every pipeline it feeds.
    Connector(ComponentId, Vec<Arc<dyn Node>>),
}

pub struct Service {
    exporters: Vec<(ComponentId, Arc<dyn Node>)>,
    /// In data-flow order: a pipeline comes after the pipelines that feed it via connectors.
    processors: Vec<(PipelineId, Chain)>,
    /// Shutdown order of pipelines and connectors, upstream first.
    steps: Vec<Step>,
    receivers: Vec<(ComponentId, Arc<dyn Svc>)>,
    extensions: Vec<(ComponentId, Arc<dyn Svc>)>,
    health: Health,
}

fn one_or_fan_out(mut v: Vec<ConsumerRef>) -> ConsumerRef {
    if v.len() == 1 {
        v.remove(0)
    } else {
        Arc::new(FanOut(v))
    }
}

impl Service {
    pub fn build(
        config: &Config,
        registry: &Registry,
        telemetry: &Telemetry,
        clock: Arc<dyn Clock>,
        health: Health,
    ) -> Result<Service, ComponentError> {
        let extensions = Extensions::new(
            config
                .extensions
                .iter()
                .filter_map(|id| {
                    let parsed = config.components.get(&(Kind::Extension, id.clone()))?;
                    Some((id.clone(), parsed.clone()))
                })
                .collect(),
        );
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
                extensions: extensions.clone(),
            })
        };
        let factory = |kind: Kind, id: &ComponentId| {
            registry
                .get(kind, &id.type_name)
                .cloned()
                .ok_or_else(|| ComponentError::new(id, format!("no {} factory", kind.label())))
        };

        // What each component is wired for: self-telemetry shows a component's per-signal
        // series only for those signals.
        let mut wiring = Vec::new();
        for (pid, p) in &config.pipelines {
            let of = |kind: Kind, ids: &[ComponentId]| {
                ids.iter()
                    .map(move |id| (kind, id.clone(), pid.signal))
                    .collect::<Vec<_>>()
            };
            wiring.extend(of(Kind::Receiver, &p.receivers));
            wiring.extend(of(Kind::Processor, &p.processors));
            wiring.extend(of(Kind::Exporter, &p.exporters));
            wiring.extend(of(Kind::Connector, &p.connectors_in));
            wiring.extend(of(Kind::Connector, &p.connectors_out));
        }
        telemetry.set_wiring(wiring);

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

        let order = pipeline_order(config).ok_or_else(|| ComponentError {
            id: "service".into(),
            message: "connectors form a cycle".into(),
        })?;

        // Pipelines downstream first, so a connector's instance can be handed the first
        // consumers of the pipelines it feeds; processors back to front within a pipeline.
        let mut heads: BTreeMap<PipelineId, ConsumerRef> = BTreeMap::new();
        let mut connectors: BTreeMap<ComponentId, ConnectorNodes> = BTreeMap::new();
        let mut chains: BTreeMap<PipelineId, Chain> = BTreeMap::new();
        let mut receiver_heads: BTreeMap<ComponentId, BTreeMap<Signal, Vec<ConsumerRef>>> =
            BTreeMap::new();
        for pid in order.iter().rev() {
            let p = &config.pipelines[pid];
            let mut outs: Vec<ConsumerRef> = p
                .exporters
                .iter()
                .map(|id| exporters[id].clone() as ConsumerRef)
                .collect();
            for c in &p.connectors_out {
                let f = factory(Kind::Connector, c)?;
                for &(from, to) in f.connects().iter().filter(|(from, _)| *from == pid.signal) {
                    let fed: Vec<ConsumerRef> = config
                        .pipelines
                        .iter()
                        .filter(|(q, qp)| q.signal == to && qp.connectors_in.contains(c))
                        .map(|(q, _)| heads[q].clone())
                        .collect();
                    if fed.is_empty() {
                        continue;
                    }
                    let built = connectors.entry(c.clone()).or_default();
                    let node = match built.iter().find(|(f2, t2, _)| *f2 == from && *t2 == to) {
                        Some((_, _, n)) => n.clone(),
                        None => {
                            let n = f.build_connector(
                                ctx(Kind::Connector, c)?,
                                from,
                                to,
                                one_or_fan_out(fed),
                            )?;
                            built.push((from, to, n.clone()));
                            n
                        }
                    };
                    outs.push(node);
                }
            }
            let mut next = one_or_fan_out(outs);
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
            chains.insert(pid.clone(), chain);
            heads.insert(pid.clone(), next);
        }
        // A receiver feeding several pipelines of one signal fans out in data-flow order.
        for pid in &order {
            for r in &config.pipelines[pid].receivers {
                receiver_heads
                    .entry(r.clone())
                    .or_default()
                    .entry(pid.signal)
                    .or_default()
                    .push(heads[pid].clone());
            }
        }

        // Shutdown order: pipelines upstream first, each connector right after the last
        // pipeline that feeds it.
        let mut processors = Vec::new();
        let mut steps = Vec::new();
        for (i, pid) in order.iter().enumerate() {
            processors.push((pid.clone(), chains.remove(pid).unwrap_or_default()));
            steps.push(Step::Pipeline(i));
            for c in &config.pipelines[pid].connectors_out {
                let feeders_done = order[..=i]
                    .iter()
                    .filter(|q| config.pipelines[*q].connectors_out.contains(c))
                    .count()
                    == order
                        .iter()
                        .filter(|q| config.pipelines[*q].connectors_out.contains(c))
                        .count();
                if feeders_done && let Some(nodes) = connectors.remove(c) {
                    steps.push(Step::Connector(
                        c.clone(),
                        nodes.into_iter().map(|(_, _, n)| n).collect(),
                    ));
                }
            }
        }

        // Receivers, once per id, with one consumer per signal.
        let mut receivers = Vec::new();
        for (id, by_signal) in receiver_heads {
            let consumers = by_signal
                .into_iter()
                .map(|(s, v)| (s, one_or_fan_out(v)))
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
            steps,
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
        for step in self.steps.iter().rev() {
            match step {
                Step::Pipeline(i) => {
                    for (_, p) in self.processors[*i].1.iter().rev() {
                        p.start().await?;
                    }
                }
                Step::Connector(_, nodes) => {
                    for n in nodes {
                        n.start().await?;
                    }
                }
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

    /// Stops upstream first so data in flight reaches the exporters and is flushed: receivers,
    /// then pipelines in data-flow order with each connector after the pipelines feeding it
    /// (traces -> spanmetrics -> metrics pipeline), then exporters.
    ///
    /// Returns the exporters whose shutdown did not finish — it panicked, or ran past its own
    /// bound (`shutdown_timeout`) — since what such an exporter still held is neither
    /// delivered, kept nor counted: the caller must not report a clean stop.
    pub async fn shutdown(&self) -> Vec<ComponentId> {
        self.health.set(Status::ShuttingDown);
        for (id, r) in &self.receivers {
            bounded(id, r.shutdown()).await;
        }
        for step in &self.steps {
            match step {
                Step::Pipeline(i) => {
                    for (id, p) in &self.processors[*i].1 {
                        bounded(id, p.shutdown()).await;
                    }
                }
                Step::Connector(id, nodes) => {
                    for n in nodes {
                        bounded(id, n.shutdown()).await;
                    }
                }
            }
        }
        // Concurrently: each drains its own queue against its own deadline, so the slowest
        // one (not their sum) bounds the stop.
        let mut draining = tokio::task::JoinSet::new();
        let mut exporter_of_task = HashMap::new();
        for (id, e) in &self.exporters {
            let (task_id, e) = (id.clone(), e.clone());
            let task = draining.spawn(async move {
                bounded_by(&task_id, e.shutdown_timeout(), e.shutdown()).await
            });
            exporter_of_task.insert(task.id(), id.clone());
        }
        let mut unfinished = Vec::new();
        while let Some(joined) = draining.join_next_with_id().await {
            match joined {
                Ok((_, true)) => {}
                Ok((task, false)) => unfinished.extend(exporter_of_task.remove(&task)),
                Err(e) => {
                    let id = exporter_of_task.remove(&e.id());
                    tracing::error!(
                        exporter = id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
                        "the exporter's shutdown failed ({e}): what it still held is not accounted for"
                    );
                    unfinished.extend(id);
                }
            }
        }
        for (id, x) in &self.extensions {
            bounded(id, x.shutdown()).await;
        }
        tracing::info!("sluice stopped");
        unfinished
    }
}

impl Service {
    /// Under a virtual clock: the earliest moment (Unix ns) at which a processor, connector or
    /// exporter has something due ([`Lifecycle::next_virtual_deadline`](crate::component::Lifecycle::next_virtual_deadline)).
    pub fn next_virtual_deadline(&self) -> Option<u64> {
        self.virtual_time_nodes()
            .filter_map(|n| n.next_virtual_deadline())
            .min()
    }

    /// Under a virtual clock: lets every processor, connector and exporter do what is due at
    /// the clock's time, in data-flow order (a pipeline before the connectors and pipelines it
    /// feeds, processors front to back), so what one releases reaches the next before the next
    /// looks at its own deadline.
    pub async fn on_virtual_time(&self) {
        for n in self.virtual_time_nodes() {
            n.on_virtual_time().await;
        }
    }

    fn virtual_time_nodes(&self) -> impl Iterator<Item = &Arc<dyn Node>> {
        self.steps
            .iter()
            .flat_map(|step| -> Box<dyn Iterator<Item = &Arc<dyn Node>> + '_> {
                match step {
                    Step::Pipeline(i) => Box::new(self.processors[*i].1.iter().map(|(_, n)| n)),
                    Step::Connector(_, nodes) => Box::new(nodes.iter()),
                }
            })
            .chain(self.exporters.iter().map(|(_, e)| e))
    }
}

async fn bounded(id: &ComponentId, f: impl std::future::Future<Output = ()>) {
    bounded_by(id, SHUTDOWN_STEP_TIMEOUT, f).await;
}

/// Whether `f` finished within `limit`.
async fn bounded_by(
    id: &ComponentId,
    limit: Duration,
    f: impl std::future::Future<Output = ()>,
) -> bool {
    let finished = tokio::time::timeout(limit, f).await.is_ok();
    if !finished {
        tracing::warn!(component = %id, "shutdown did not finish within {limit:?}; moving on");
    }
    finished
}

#[cfg(test)]
mod tests;
