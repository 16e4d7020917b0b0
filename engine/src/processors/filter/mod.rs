//! `filter`: drops spans, span events, metrics, data points and log records that match OTTL
//! conditions, as the Collector's filter processor does. Conditions are compiled at config
//! load into masks over the item tables (see [`crate::ottl`]).
//!
//! ```yaml
//! processors:
//!   filter/noise:
//!     error_mode: ignore          # ignore | silent | propagate (the default)
//!     traces:
//!       resource: ['attributes["k8s.namespace.name"] == "kube-system"']
//!       span:                     # any condition true: the span goes, with its events and links
//!         - 'attributes["url.path"] == "/healthz"'
//!       spanevent:
//!         - 'name == "debug"'
//!     metrics:
//!       metric: ['name == "noisy.metric"']          # the metric and all its points
//!       datapoint: ['attributes["env"] == "test"']  # a metric left without points goes
//!     logs:
//!       log_record: ['severity_number < SEVERITY_NUMBER_WARN']
//! ```
//!
//! The newer form with context inference is accepted too: `trace_conditions`,
//! `metric_conditions`, `log_conditions`, each a list of conditions whose paths carry their
//! context (`span.name`, `resource.attributes["k"]`), or of groups
//! `{error_mode, conditions}`. A condition runs in the deepest context it names; contexts run
//! top down and what a higher level drops is not looked at again.
//!
//! Conditions of one level are ORed. Scopes and resources left without items are dropped, as
//! the Collector does. A payload left empty is not passed on. Dropped items are counted as
//! the Collector counts them, `otelcol_processor_filter_{spans,datapoints,logs}.filtered`
//! (rendered `otelcol_processor_filter_spans_filtered_total{filter="filter/noise"}`), and in
//! `otelcol_processor_dropped_{spans,metric_points,log_records}{reason="filtered"}`.
//! `error_mode`: a condition that fails on an item counts as false for it (`ignore` logs it,
//! `silent` does not); under `propagate` the payload is refused with the error (receivers
//! answer the client with a non-retryable error). The legacy `include`/`exclude` form is
//! refused with a pointer to the OTTL form.

use std::sync::Arc;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::ottl::eval::Lookups;
use crate::ottl::exec::reads;
use crate::ottl::{
    Condition, Context, ErrorMode, RunError, RunReport, any_matches, compile_condition,
};
use crate::payload::Payload;
use crate::schema::{Signal, Table};
use crate::telemetry::{Counter, ProcessorMetrics};

#[cfg(test)]
mod tests;

fn propagate() -> ErrorMode {
    ErrorMode::Propagate
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TracesBlock {
    #[serde(default)]
    resource: Vec<String>,
    #[serde(default)]
    span: Vec<String>,
    #[serde(default)]
    spanevent: Vec<String>,
    #[serde(default)]
    include: Option<serde_json::Value>,
    #[serde(default)]
    exclude: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsBlock {
    #[serde(default)]
    resource: Vec<String>,
    #[serde(default)]
    metric: Vec<String>,
    #[serde(default)]
    datapoint: Vec<String>,
    #[serde(default)]
    include: Option<serde_json::Value>,
    #[serde(default)]
    exclude: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsBlock {
    #[serde(default)]
    resource: Vec<String>,
    #[serde(default)]
    log_record: Vec<String>,
    #[serde(default)]
    include: Option<serde_json::Value>,
    #[serde(default)]
    exclude: Option<serde_json::Value>,
}

/// The YAML shape (compiled into [`FilterConfig`] by the factory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "propagate")]
    error_mode: ErrorMode,
    #[serde(default)]
    traces: TracesBlock,
    #[serde(default)]
    metrics: MetricsBlock,
    #[serde(default)]
    logs: LogsBlock,
    #[serde(default)]
    trace_conditions: Vec<serde_json::Value>,
    #[serde(default)]
    metric_conditions: Vec<serde_json::Value>,
    #[serde(default)]
    log_conditions: Vec<serde_json::Value>,
    /// Legacy top-level `spans:` block (include/exclude).
    #[serde(default)]
    spans: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionGroup {
    #[serde(default)]
    error_mode: Option<ErrorMode>,
    conditions: Vec<String>,
}

/// Conditions of one context, run with one error mode.
#[derive(Clone)]
struct Level {
    context: Context,
    mode: ErrorMode,
    conditions: Vec<Condition>,
}

/// The compiled config: per signal, levels top down.
pub struct FilterConfig {
    traces: Vec<Level>,
    metrics: Vec<Level>,
    logs: Vec<Level>,
}

impl FilterConfig {
    fn levels(&self, signal: Signal) -> &[Level] {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }
}

const LEGACY: &str = "the legacy include/exclude form is not supported; write OTTL conditions \
                      (traces.span, metrics.metric, logs.log_record, ...)";

/// Compiles a list of conditions; the error of every one that has one goes to `errors`.
fn compile(
    signal: Signal,
    context: Option<Context>,
    texts: &[String],
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Condition> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match compile_condition(t, signal, context) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(ConfigError::new(format!("{path}[{i}]"), e.render()));
                None
            }
        })
        .collect()
}

/// Appends conditions to the level of their context and mode (keeping order), creating it.
fn add(levels: &mut Vec<Level>, mode: ErrorMode, conditions: Vec<Condition>) {
    for c in conditions {
        match levels
            .iter_mut()
            .find(|l| l.context == c.context && l.mode == mode)
        {
            Some(l) => l.conditions.push(c),
            None => levels.push(Level {
                context: c.context,
                mode,
                conditions: vec![c],
            }),
        }
    }
}

fn inferred(
    signal: Signal,
    entries: &[serde_json::Value],
    default_mode: ErrorMode,
    field: &str,
    levels: &mut Vec<Level>,
    errors: &mut Vec<ConfigError>,
) {
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("{field}[{i}]");
        match entry {
            serde_json::Value::String(s) => match compile_condition(s, signal, None) {
                Ok(c) => add(levels, default_mode, vec![c]),
                Err(e) => errors.push(ConfigError::new(path, e.render())),
            },
            obj @ serde_json::Value::Object(_) => {
                let g: ConditionGroup = match parse_config(obj) {
                    Ok(g) => g,
                    Err(e) => {
                        errors.push(e.within(&path));
                        continue;
                    }
                };
                let conds = compile(
                    signal,
                    None,
                    &g.conditions,
                    &format!("{path}.conditions"),
                    errors,
                );
                add(levels, g.error_mode.unwrap_or(default_mode), conds);
            }
            _ => errors.push(ConfigError::new(
                path,
                "expected a condition (string) or a group {error_mode, conditions}",
            )),
        }
    }
}

impl FilterConfig {
    /// The first error only; see [`FilterConfig::parse_all`].
    pub fn parse(config: &serde_json::Value) -> Result<FilterConfig, ConfigError> {
        Self::parse_all(config).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Parses and compiles every condition, reporting the error of each one that has one.
    pub fn parse_all(config: &serde_json::Value) -> Result<FilterConfig, Vec<ConfigError>> {
        let raw: RawConfig = parse_config(config).map_err(|e| vec![e])?;
        if raw.spans.is_some() {
            return Err(vec![ConfigError::new("spans", LEGACY)]);
        }
        let legacy = [
            (
                "traces",
                raw.traces.include.is_some() || raw.traces.exclude.is_some(),
            ),
            (
                "metrics",
                raw.metrics.include.is_some() || raw.metrics.exclude.is_some(),
            ),
            (
                "logs",
                raw.logs.include.is_some() || raw.logs.exclude.is_some(),
            ),
        ];
        if let Some((block, _)) = legacy.iter().find(|(_, used)| *used) {
            return Err(vec![ConfigError::new(*block, LEGACY)]);
        }
        let mode = raw.error_mode;
        let mut errors = Vec::new();
        let (mut traces, mut metrics, mut logs) = (Vec::new(), Vec::new(), Vec::new());
        let blocks: [(Signal, Context, &[String], &str); 8] = [
            (
                Signal::Traces,
                Context::Resource,
                &raw.traces.resource,
                "traces.resource",
            ),
            (
                Signal::Traces,
                Context::Span,
                &raw.traces.span,
                "traces.span",
            ),
            (
                Signal::Traces,
                Context::SpanEvent,
                &raw.traces.spanevent,
                "traces.spanevent",
            ),
            (
                Signal::Metrics,
                Context::Resource,
                &raw.metrics.resource,
                "metrics.resource",
            ),
            (
                Signal::Metrics,
                Context::Metric,
                &raw.metrics.metric,
                "metrics.metric",
            ),
            (
                Signal::Metrics,
                Context::DataPoint,
                &raw.metrics.datapoint,
                "metrics.datapoint",
            ),
            (
                Signal::Logs,
                Context::Resource,
                &raw.logs.resource,
                "logs.resource",
            ),
            (
                Signal::Logs,
                Context::Log,
                &raw.logs.log_record,
                "logs.log_record",
            ),
        ];
        for (signal, ctx, texts, path) in blocks {
            let levels = match signal {
                Signal::Traces => &mut traces,
                Signal::Metrics => &mut metrics,
                Signal::Logs => &mut logs,
            };
            add(
                levels,
                mode,
                compile(signal, Some(ctx), texts, path, &mut errors),
            );
        }
        inferred(
            Signal::Traces,
            &raw.trace_conditions,
            mode,
            "trace_conditions",
            &mut traces,
            &mut errors,
        );
        inferred(
            Signal::Metrics,
            &raw.metric_conditions,
            mode,
            "metric_conditions",
            &mut metrics,
            &mut errors,
        );
        inferred(
            Signal::Logs,
            &raw.log_conditions,
            mode,
            "log_conditions",
            &mut logs,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        for levels in [&mut traces, &mut metrics, &mut logs] {
            levels.sort_by_key(|l| l.context.depth());
        }
        Ok(FilterConfig {
            traces,
            metrics,
            logs,
        })
    }
}

pub struct FilterFactory;

impl Factory for FilterFactory {
    fn kind(&self) -> Kind {
        Kind::Processor
    }
    fn type_name(&self) -> &'static str {
        "filter"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "drops spans, span events, metrics, data points and log records matching OTTL conditions"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(FilterConfig::parse(config)?))
    }
    fn parse_config_all(
        &self,
        config: &serde_json::Value,
    ) -> Result<ParsedConfig, Vec<ConfigError>> {
        Ok(Arc::new(FilterConfig::parse_all(config)?))
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let config = ctx.config::<FilterConfig>()?;
        let metrics = ProcessorMetrics::new(&ctx.telemetry, &ctx.id);
        let id = ctx.id.to_string();
        let (name, help) = match signal {
            Signal::Traces => (
                "otelcol_processor_filter_spans_filtered",
                "Number of spans dropped by the filter processor",
            ),
            Signal::Metrics => (
                "otelcol_processor_filter_datapoints_filtered",
                "Number of metric data points dropped by the filter processor",
            ),
            Signal::Logs => (
                "otelcol_processor_filter_logs_filtered",
                "Number of logs dropped by the filter processor",
            ),
        };
        Ok(Arc::new(Filter {
            id: id.clone(),
            program: config.program(signal),
            signal,
            next,
            filtered: ctx.telemetry.counter(name, help, &[("filter", &id)]),
            dropped: metrics.dropped(signal, "filtered"),
            metrics,
        }))
    }
}

pub struct Filter {
    id: String,
    program: FilterProgram,
    signal: Signal,
    next: ConsumerRef,
    metrics: ProcessorMetrics,
    filtered: Counter,
    dropped: Counter,
}

/// A filter config compiled for one signal: what [`Filter`] runs on every payload.
#[derive(Clone)]
pub struct FilterProgram {
    levels: Vec<Level>,
}

impl FilterConfig {
    /// The conditions for `signal`'s pipelines.
    pub fn program(&self, signal: Signal) -> FilterProgram {
        FilterProgram {
            levels: self.levels(signal).to_vec(),
        }
    }
}

impl FilterProgram {
    /// The payload without the matching items (and containers left empty), and the report of
    /// conditions that failed under `ignore`/`silent`. `Err` under `propagate`.
    pub fn apply(&self, p: &Payload) -> Result<(Payload, RunReport), RunError> {
        let mut report = RunReport::default();
        // Per table: rows dropped by a condition at their own level.
        let mut drop: Vec<Option<Vec<bool>>> = vec![None; Table::COUNT];
        for level in &self.levels {
            let mut lookups = Lookups::new(level.context, &reads(&[], &level.conditions));
            for &table in level.context.tables() {
                if p.table(table).num_rows() == 0 {
                    continue;
                }
                let gone = gone_rows(p, table, &drop);
                let matched = any_matches_alive(p, table, level, &gone, &mut lookups, &mut report)?;
                let slot = drop[table as usize].get_or_insert_with(|| vec![false; matched.len()]);
                slot.iter_mut().zip(&matched).for_each(|(d, m)| *d |= *m);
            }
        }
        let keep: Vec<(Table, Vec<bool>)> = drop
            .into_iter()
            .enumerate()
            .filter_map(|(t, d)| {
                let d = d?;
                d.iter()
                    .any(|x| *x)
                    .then(|| (Table::ALL[t], d.iter().map(|x| !x).collect()))
            })
            .collect();
        if keep.is_empty() {
            return Ok((p.clone(), report));
        }
        let masks: Vec<(Table, &[bool])> = keep.iter().map(|(t, m)| (*t, m.as_slice())).collect();
        Ok((p.filter_tables(&masks)?, report))
    }
}

/// Per row of `table`: whether an ancestor row was already dropped (then its conditions are
/// not evaluated, as the Collector never visits it).
fn gone_rows(p: &Payload, table: Table, drop: &[Option<Vec<bool>>]) -> Vec<bool> {
    let n = p.table(table).num_rows();
    let mut chain = vec![table];
    while let Some(parent) = chain.last().and_then(|t| t.parent()) {
        chain.push(parent);
    }
    // Walk from the top: gone[t][i] = gone[parent][pid[i]] || drop[t][i].
    let mut gone: Option<Vec<bool>> = None;
    for &t in chain.iter().rev() {
        let here = if t == table {
            None
        } else {
            drop[t as usize].clone()
        };
        let inherited: Option<Vec<bool>> = gone.map(|g| {
            p.parent_ids(t)
                .values()
                .iter()
                .map(|&pid| g[pid as usize])
                .collect()
        });
        gone = match (inherited, here) {
            (None, h) => h,
            (Some(i), None) => Some(i),
            (Some(i), Some(h)) => Some(i.iter().zip(&h).map(|(a, b)| *a || *b).collect()),
        };
    }
    gone.unwrap_or_else(|| vec![false; n])
}

/// [`any_matches`] over the rows that are still alive.
fn any_matches_alive(
    p: &Payload,
    table: Table,
    level: &Level,
    gone: &[bool],
    lookups: &mut Lookups,
    report: &mut RunReport,
) -> Result<Vec<bool>, RunError> {
    if !gone.iter().any(|g| *g) {
        return any_matches(p, table, &level.conditions, level.mode, lookups, report);
    }
    if gone.iter().all(|g| *g) {
        return Ok(vec![false; gone.len()]);
    }
    // Evaluate over the surviving rows only, so errors on dropped items do not count.
    let alive: Vec<bool> = gone.iter().map(|g| !g).collect();
    let sub = p.filter(table, &alive)?;
    let mut sub_lookups = Lookups::new(level.context, &reads(&[], &level.conditions));
    let m = any_matches(
        &sub,
        table,
        &level.conditions,
        level.mode,
        &mut sub_lookups,
        report,
    )?;
    let mut it = m.into_iter();
    Ok(alive
        .iter()
        .map(|a| *a && it.next().unwrap_or(false))
        .collect())
}

impl Consumer for Filter {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let before = payload.item_count();
            self.metrics.incoming(self.signal, before);
            let (out, report) = self.program.apply(&payload).map_err(|e| {
                tracing::error!(processor = %self.id, error = %e, "filter: refusing the payload");
                ConsumeError::Permanent(format!("{}: {e}", self.id))
            })?;
            if report.log
                && let Some((text, msg)) = &report.first
            {
                tracing::warn!(
                    processor = %self.id,
                    failed = report.errors,
                    "OTTL condition failed (error_mode: ignore, counted as false): `{text}`: {msg}"
                );
            }
            let after = out.item_count();
            let gone = before.saturating_sub(after) as u64;
            self.filtered.add(gone);
            self.dropped.add(gone);
            if after == 0 {
                return Ok(());
            }
            self.next.consume(out).await?;
            self.metrics.outgoing(self.signal, after);
            Ok(())
        })
    }
}

impl Lifecycle for Filter {}
