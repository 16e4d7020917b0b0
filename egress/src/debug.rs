//! The `debug` exporter: writes what arrives to sluice's log (stderr).
//!
//! ```yaml
//! exporters:
//!   debug:
//!     verbosity: basic   # basic: one line per batch; normal: one line per item; detailed: OTLP/JSON
//! ```

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, Factory, Kind,
    Lifecycle, Node, ParsedConfig, parse_config,
};
use sluice_engine::schema::{Signal, Table, col};
use sluice_engine::telemetry::ExporterMetrics;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Accepted for compatibility; every batch is logged.
    #[serde(default)]
    pub sampling_initial: Option<u64>,
    #[serde(default)]
    pub sampling_thereafter: Option<u64>,
    #[serde(default)]
    pub use_internal_logger: Option<bool>,
}

pub struct DebugFactory;

impl Factory for DebugFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "debug"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "logs received data to stderr (basic, normal, detailed)"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(parse_config::<DebugConfig>(config)?))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<DebugConfig>()?;
        Ok(Arc::new(DebugExporter {
            id: ctx.id.to_string(),
            verbosity: c.verbosity,
            metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct DebugExporter {
    id: String,
    verbosity: Verbosity,
    metrics: ExporterMetrics,
}

impl DebugExporter {
    fn names(p: &Payload) -> Vec<String> {
        let table = match p.signal() {
            Signal::Traces => Table::Spans,
            Signal::Metrics => Table::Metrics,
            Signal::Logs => {
                return (0..p.table(Table::Logs).num_rows())
                    .map(|i| format!("log record {i}"))
                    .collect();
            }
        };
        let Some(c) = p.table(table).column_by_name(col::NAME) else {
            return vec![];
        };
        let Ok(c) = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8) else {
            return vec![];
        };
        let c = c.as_string::<i32>();
        (0..c.len()).map(|i| c.value(i).to_string()).collect()
    }
}

impl Consumer for DebugExporter {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = p.item_count();
            let s = p.signal();
            tracing::info!(
                exporter = %self.id,
                resources = p.table(Table::Resources).num_rows(),
                "{}: {n} {}",
                s.as_str(),
                s.item_noun().replace('_', " ")
            );
            match self.verbosity {
                Verbosity::Basic => {}
                Verbosity::Normal => {
                    for name in Self::names(&p) {
                        tracing::info!(exporter = %self.id, "{name}");
                    }
                }
                Verbosity::Detailed => match sluice_engine::otlp::encode_json(&p) {
                    Ok(j) => tracing::info!(exporter = %self.id, "{}", String::from_utf8_lossy(&j)),
                    Err(e) => {
                        tracing::warn!(exporter = %self.id, error = %e, "cannot render as JSON")
                    }
                },
            }
            self.metrics.sent(s, n);
            Ok(())
        })
    }
}

impl Lifecycle for DebugExporter {}
