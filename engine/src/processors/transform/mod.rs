//! `transform`: modifies telemetry with OTTL statements, as the Collector's transform
//! processor does. Statements are compiled at config load into column kernels (see
//! [`crate::ottl`]): a `where` clause is a mask, `delete_key` drops rows of an attribute
//! table, `set` writes a column.
//!
//! ```yaml
//! processors:
//!   transform/clean:
//!     error_mode: ignore            # ignore (the default) | silent | propagate
//!     trace_statements:             # flat form: paths carry their context, which is inferred
//!       - delete_key(resource.attributes, "process.command")
//!       - delete_key(span.attributes, "db.connection_string")
//!   transform/peer:
//!     trace_statements:             # groups: a context, optional ORed conditions, statements
//!       - context: span
//!         error_mode: propagate
//!         conditions: ['kind == SPAN_KIND_CLIENT']
//!         statements:
//!           - set(attributes["peer.service"], attributes["server.address"]) where attributes["peer.service"] == nil
//! ```
//!
//! `trace_statements` (contexts resource, scope, span, spanevent), `metric_statements`
//! (resource, scope, metric, datapoint), `log_statements` (resource, scope, log). A list is
//! either all strings (one group, context inferred: the deepest context any path names) or
//! all groups; a group without `context` infers it the same way. Groups run in order over the
//! whole payload; within a group, statements run in order.
//!
//! `error_mode`: a statement that fails on an item is skipped for that item (`ignore` logs,
//! `silent` does not); under `propagate` the payload is refused with the error. Transform
//! never drops items.

use std::sync::Arc;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::ottl::{
    Context, ErrorMode, GroupEntry, RunError, RunReport, StatementGroup, compile_group_all,
};
use crate::payload::Payload;
use crate::schema::Signal;
use crate::telemetry::ProcessorMetrics;

#[cfg(test)]
mod tests;

fn ignore() -> ErrorMode {
    ErrorMode::Ignore
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "ignore")]
    error_mode: ErrorMode,
    #[serde(default)]
    trace_statements: Vec<serde_json::Value>,
    #[serde(default)]
    metric_statements: Vec<serde_json::Value>,
    #[serde(default)]
    log_statements: Vec<serde_json::Value>,
    /// The Collector's `flatten_data` (logs): not supported; refused when true.
    #[serde(default)]
    flatten_data: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupConfig {
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    error_mode: Option<ErrorMode>,
    #[serde(default)]
    conditions: Vec<String>,
    statements: Vec<String>,
    /// Accepted and meaningless here: sluice has no `cache` path.
    #[serde(default)]
    #[allow(dead_code)]
    shared_cache: bool,
}

/// The compiled config: statement groups per signal.
pub struct TransformConfig {
    traces: Vec<Arc<StatementGroup>>,
    metrics: Vec<Arc<StatementGroup>>,
    logs: Vec<Arc<StatementGroup>>,
}

impl TransformConfig {
    /// The first error only; see [`TransformConfig::parse_all`].
    pub fn parse(config: &serde_json::Value) -> Result<TransformConfig, ConfigError> {
        Self::parse_all(config).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Parses and compiles every statement, reporting the error of each one that has one.
    pub fn parse_all(config: &serde_json::Value) -> Result<TransformConfig, Vec<ConfigError>> {
        let raw: RawConfig = parse_config(config).map_err(|e| vec![e])?;
        if raw.flatten_data {
            return Err(vec![ConfigError::new(
                "flatten_data",
                "flatten_data is not supported by sluice",
            )]);
        }
        let mode = raw.error_mode;
        let mut errors = Vec::new();
        let mut signal_groups = |signal, entries: &[serde_json::Value], field| {
            groups(signal, entries, mode, field).unwrap_or_else(|e| {
                errors.extend(e);
                Vec::new()
            })
        };
        let traces = signal_groups(Signal::Traces, &raw.trace_statements, "trace_statements");
        let metrics = signal_groups(Signal::Metrics, &raw.metric_statements, "metric_statements");
        let logs = signal_groups(Signal::Logs, &raw.log_statements, "log_statements");
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(TransformConfig {
            traces,
            metrics,
            logs,
        })
    }

    fn groups(&self, signal: Signal) -> &[Arc<StatementGroup>] {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}

/// The statement groups of one signal; every error, each at its path
/// (`trace_statements[2]`, `trace_statements[0].conditions[1]`).
fn groups(
    signal: Signal,
    entries: &[serde_json::Value],
    default_mode: ErrorMode,
    field: &str,
) -> Result<Vec<Arc<StatementGroup>>, Vec<ConfigError>> {
    let strings: Vec<String> = entries
        .iter()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect();
    if !strings.is_empty() && strings.len() != entries.len() {
        return Err(vec![ConfigError::new(
            field,
            "configuring multiple configuration styles is not supported: use either a list of \
             statements or a list of groups ({context, statements})",
        )]);
    }
    // `statements_at`: where the group's statements are (`trace_statements` for the flat
    // form, `trace_statements[0].statements` for a group).
    let compile = |statements: &[String],
                   conditions: &[String],
                   context: Option<Context>,
                   mode: ErrorMode,
                   statements_at: &str,
                   conditions_at: &str|
     -> Result<Arc<StatementGroup>, Vec<ConfigError>> {
        let (ctx, stmts, conds) = compile_group_all(statements, conditions, signal, context)
            .map_err(|errors| {
                errors
                    .into_iter()
                    .map(|(entry, e)| {
                        let path = match entry {
                            GroupEntry::Statement(i) => format!("{statements_at}[{i}]"),
                            GroupEntry::Condition(i) => format!("{conditions_at}[{i}]"),
                        };
                        ConfigError::new(path, e.render())
                    })
                    .collect::<Vec<_>>()
            })?;
        Ok(Arc::new(StatementGroup::new(ctx, stmts, conds, mode)))
    };
    if !strings.is_empty() {
        // The flat form: one group; the statement index is the list index.
        let g = compile(&strings, &[], None, default_mode, field, field)?;
        return Ok(vec![g]);
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{field}[{i}]");
        if !entry.is_object() {
            errors.push(ConfigError::new(
                path,
                "expected a group {context, statements, conditions, error_mode}",
            ));
            continue;
        }
        let g: GroupConfig = match parse_config(entry) {
            Ok(g) => g,
            Err(e) => {
                errors.push(e.within(&path));
                continue;
            }
        };
        let context = match &g.context {
            None => None,
            Some(name) => {
                let allowed = Context::of_signal(signal);
                match Context::parse(name).filter(|c| allowed.contains(c)) {
                    Some(c) => Some(c),
                    None => {
                        let names: Vec<&str> = allowed.iter().map(|c| c.name()).collect();
                        errors.push(ConfigError::new(
                            format!("{path}.context"),
                            format!(
                                "unknown context {name:?} for {}; expected one of {}",
                                signal.as_str(),
                                names.join(", ")
                            ),
                        ));
                        continue;
                    }
                }
            }
        };
        match compile(
            &g.statements,
            &g.conditions,
            context,
            g.error_mode.unwrap_or(default_mode),
            &format!("{path}.statements"),
            &format!("{path}.conditions"),
        ) {
            Ok(g) => out.push(g),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

pub struct TransformFactory;

impl Factory for TransformFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "transform"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "modifies spans, metrics and logs with OTTL statements compiled to column kernels"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(TransformConfig::parse(config)?))
    }
    fn parse_config_all(
        &self,
        config: &serde_json::Value,
    ) -> Result<ParsedConfig, Vec<ConfigError>> {
        Ok(Arc::new(TransformConfig::parse_all(config)?))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<TransformConfig>()?;
        Ok(Arc::new(Transform {
            id: ctx.id.to_string(),
            program: config.program(signal),
            signal,
            next,
            metrics: ProcessorMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct Transform {
    id: String,
    program: TransformProgram,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
}

/// A transform config compiled for one signal: what [`Transform`] runs on every payload.
#[derive(Clone)]
pub struct TransformProgram {
    groups: Vec<Arc<StatementGroup>>,
}

impl TransformConfig {
    /// The statement groups for `signal`'s pipelines.
    pub fn program(&self, signal: Signal) -> TransformProgram {
        TransformProgram {
            groups: self.groups(signal).to_vec(),
        }
    }
}

impl TransformProgram {
    /// Runs every group over the payload, in order. `Err` under `propagate`.
    pub fn apply(&self, payload: &mut Payload) -> Result<RunReport, RunError> {
        let mut report = RunReport::default();
        for g in &self.groups {
            g.run(payload, &mut report)?;
        }
        Ok(report)
    }
}

impl Consumer for Transform {
    fn consume(&self, mut payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = payload.item_count();
            self.metrics.incoming(self.signal, n);
            let report = self.program.apply(&mut payload).map_err(|e| {
                tracing::error!(processor = %self.id, error = %e, "transform: refusing the payload");
                ConsumeError::Permanent(format!("{}: {e}", self.id))
            })?;
            if report.log
                && let Some((text, msg)) = &report.first
            {
                tracing::warn!(
                    processor = %self.id,
                    failed = report.errors,
                    "OTTL statement failed (error_mode: ignore, skipped for those items): `{text}`: {msg}"
                );
            }
            self.next.consume(payload).await?;
            self.metrics.outgoing(self.signal, n);
            Ok(())
        })
    }
}

impl Lifecycle for Transform {}
