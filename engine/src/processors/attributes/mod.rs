//! `attributes`: inserts, updates, upserts, deletes, hashes, extracts and converts attributes of
//! spans, log records and metric data points, as the Collector's attributes processor does.
//!
//! ```yaml
//! processors:
//!   attributes/example:
//!     include:                      # optional; see matcher.rs for the properties
//!       match_type: strict
//!       services: [checkout]
//!     exclude:
//!       match_type: regexp
//!       span_names: ["^/health"]
//!     actions:                      # required, applied in order
//!       - {key: db.statement, action: delete}
//!       - {key: env, value: prod, action: insert}       # only where absent
//!       - {key: peer, from_attribute: net.peer.name, action: upsert}
//!       - {key: client, from_context: client.address, action: insert}
//!       - {key: user.email, action: hash}               # SHA-256 hex
//!       - {key: http.url, pattern: "^(?P<scheme>\\w+)://", action: extract}
//!       - {key: http.status_code, converted_type: int, action: convert}
//! ```
//!
//! Each action is a column kernel over the signal's attribute table
//! ([`crate::kernels::attributes`]); include/exclude is a mask over the spans / log records /
//! metrics table ([`matcher`]) that limits the kernels to the matching parents. Metric actions
//! act on every data point table (number, histogram, exponential histogram, summary) under the
//! metrics the mask selects; exemplar attributes are untouched, as in the Collector.

pub mod actions;
pub mod matcher;

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::kernels::attributes::KernelError;
use crate::payload::{Payload, PayloadError};
use crate::schema::{Signal, Table};
use crate::telemetry::ProcessorMetrics;

use actions::{ActionConfig, Actions};
use matcher::{MatchProperties, Matcher};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    #[serde(default)]
    pub include: Option<MatchProperties>,
    #[serde(default)]
    pub exclude: Option<MatchProperties>,
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
}

/// The parsed and compiled config.
#[derive(Debug)]
pub struct Compiled {
    actions: Actions,
    matcher: Matcher,
}

impl Compiled {
    pub fn parse(config: &serde_json::Value) -> Result<Compiled, ConfigError> {
        let c: AttributesConfig = parse_config(config)?;
        Ok(Compiled {
            actions: Actions::compile(&c.actions, "actions")?,
            matcher: Matcher::compile(c.include.as_ref(), c.exclude.as_ref())?,
        })
    }
}

pub struct AttributesFactory;

impl Factory for AttributesFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "attributes"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "inserts, updates, deletes, hashes, extracts and converts span, log and data point attributes"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(Compiled::parse(config)?))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<Compiled>()?;
        config
            .matcher
            .validate_for(signal)
            .map_err(|e| ComponentError::new(&ctx.id, e))?;
        Ok(Arc::new(AttributesProcessor {
            config,
            signal,
            next,
            metrics: ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct AttributesProcessor {
    config: Arc<Compiled>,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// The table whose rows include/exclude selects, and the attribute tables under it.
fn targets(signal: Signal) -> (Table, &'static [(Table, Table)]) {
    use Table::*;
    match signal {
        Signal::Traces => (Spans, &[(Spans, SpanAttrs)]),
        Signal::Logs => (Logs, &[(Logs, LogAttrs)]),
        Signal::Metrics => (
            Metrics,
            &[
                (NumberPoints, NumberPointAttrs),
                (HistogramPoints, HistogramPointAttrs),
                (ExpHistogramPoints, ExpHistogramPointAttrs),
                (SummaryPoints, SummaryPointAttrs),
            ],
        ),
    }
}

/// Runs the actions on every attribute table of `payload`, limited to what include/exclude
/// selects.
pub fn process(config: &Compiled, mut payload: Payload) -> Result<Payload, ProcessError> {
    let (owner, tables) = targets(payload.signal());
    let owner_mask = config.matcher.mask(&payload, owner)?;
    for &(items, attrs) in tables {
        let n = payload.table(items).num_rows();
        if payload.table(attrs).num_rows() == 0 && n == 0 {
            continue;
        }
        // Metric points: a point is selected when its metric is (one gather by parent_id).
        let mask = match (&owner_mask, items == owner) {
            (Some(m), true) => Some(m.clone()),
            (Some(m), false) => Some(
                payload
                    .parent_ids(items)
                    .values()
                    .iter()
                    .map(|&p| Some(m.value(p as usize)))
                    .collect::<BooleanArray>(),
            ),
            (None, _) => None,
        };
        let table: RecordBatch = payload.table(attrs).clone();
        let out = config.actions.apply(
            table,
            n,
            mask.as_ref(),
            actions::RequestContext::of(&payload),
        )?;
        payload.set(attrs, out)?;
    }
    Ok(payload)
}

impl Consumer for AttributesProcessor {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let items = payload.item_count();
            self.metrics.incoming(self.signal, items);
            // A kernel error means the payload breaks the data model's invariants, which the
            // decoders guarantee; refuse it rather than pass on something half-changed.
            let out = process(&self.config, payload)
                .map_err(|e| ConsumeError::Permanent(format!("attributes processor: {e}")))?;
            self.metrics.outgoing(self.signal, out.item_count());
            self.next.consume(out).await
        })
    }
}

impl Lifecycle for AttributesProcessor {}

#[cfg(test)]
pub(crate) mod tests;
