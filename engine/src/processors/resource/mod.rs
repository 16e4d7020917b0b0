//! `resource`: the Collector's resource processor — the attribute actions of
//! [`crate::processors::attributes::actions`] applied to resource attributes.
//!
//! ```yaml
//! processors:
//!   resource:
//!     attributes:                   # required, applied in order
//!       - key: service.instance.id
//!         from_attribute: k8s.pod.name
//!         action: insert            # only where not already set
//!       - {key: cloud.availability_zone, value: zone-1, action: upsert}
//!       - {key: host.id, action: delete}
//! ```
//!
//! A payload's resources are one small table (one row per ResourceSpans / ResourceMetrics /
//! ResourceLogs), so each action is one kernel call over the resource attribute table.

use std::sync::Arc;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::payload::Payload;
use crate::processors::attributes::ProcessError;
use crate::processors::attributes::actions::{ActionConfig, Actions};
use crate::schema::{Signal, Table};
use crate::telemetry::ProcessorMetrics;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    #[serde(default)]
    pub attributes: Vec<ActionConfig>,
}

pub struct ResourceFactory;

impl Factory for ResourceFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "resource"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "inserts, updates, deletes, hashes, extracts and converts resource attributes"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: ResourceConfig = parse_config(config)?;
        Ok(Arc::new(Actions::compile(&c.attributes, "attributes")?))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        Ok(Arc::new(ResourceProcessor {
            actions: ctx.config::<Actions>()?,
            signal,
            next,
            metrics: ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct ResourceProcessor {
    actions: Arc<Actions>,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
}

/// Runs the actions on the resource attribute table of `payload`.
pub fn process(actions: &Actions, mut payload: Payload) -> Result<Payload, ProcessError> {
    let n = payload.table(Table::Resources).num_rows();
    let attrs = payload.table(Table::ResourceAttrs).clone();
    let out = actions.apply(
        attrs,
        n,
        None,
        crate::processors::attributes::actions::RequestContext::of(&payload),
    )?;
    payload.set(Table::ResourceAttrs, out)?;
    Ok(payload)
}

impl Consumer for ResourceProcessor {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let items = payload.item_count();
            self.metrics.incoming(self.signal, items);
            let out = process(&self.actions, payload)
                .map_err(|e| ConsumeError::Permanent(format!("resource processor: {e}")))?;
            self.metrics.outgoing(self.signal, items);
            self.next.consume(out).await
        })
    }
}

impl Lifecycle for ResourceProcessor {}

#[cfg(test)]
mod tests;
