//! The `nop` exporter (the Collector's `nopexporter`): accepts everything and drops it,
//! counting it as sent. A sink that does nothing, for measuring what is upstream of it.
//!
//! ```yaml
//! exporters:
//!   nop:
//! ```

use std::sync::Arc;

use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, Factory, Kind,
    Lifecycle, Node, ParsedConfig, parse_config,
};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::ExporterMetrics;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NopConfig {}

pub struct NopFactory;

impl Factory for NopFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "nop"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "drops everything (counted as sent): a sink for benchmarks"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(parse_config::<NopConfig>(config)?))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        Ok(Arc::new(Nop(ExporterMetrics::new(&ctx.telemetry, &ctx.id))))
    }
}

pub struct Nop(ExporterMetrics);

impl Consumer for Nop {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.sent(p.signal(), p.item_count());
        Box::pin(async { Ok(()) })
    }

    fn keeps_wire_form(&self) -> bool {
        true
    }
}

impl Lifecycle for Nop {}
