//! The `forward` connector: the exporter end of one pipeline hands every payload, unchanged, to
//! the pipelines of the same signal that list it as a receiver (the Collector's
//! `connector/forwardconnector`). It is how one pipeline's processing is shared before a fork:
//! the shipped gateway filters and cleans spans once, then forwards them both to `spanmetrics`
//! and to the tail-sampling pipeline.
//!
//! ```yaml
//! connectors:
//!   forward/sampling: {}        # no settings
//! service:
//!   pipelines:
//!     traces/in:  {receivers: [otlp], processors: [filter/noise], exporters: [forward/sampling]}
//!     traces:     {receivers: [forward/sampling], processors: [tail_sampling], exporters: [otlp]}
//! ```
//!
//! Back-pressure passes through: a refusal downstream is returned to the pipeline upstream, so
//! its receiver answers the client with a retryable status, as with any exporter.

use std::sync::Arc;

use serde::Deserialize;

use crate::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, ConsumerRef,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use crate::payload::Payload;
use crate::schema::Signal;

/// No settings: the Collector's forward connector has none either.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {}

pub struct ForwardFactory;

impl Factory for ForwardFactory {
    fn kind(&self) -> Kind {
        Kind::Connector
    }
    fn type_name(&self) -> &'static str {
        "forward"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "passes payloads unchanged to the pipelines of the same signal that receive from it"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: ForwardConfig = parse_config(config)?;
        Ok(Arc::new(c))
    }
    fn connects(&self) -> &'static [(Signal, Signal)] {
        &[
            (Signal::Traces, Signal::Traces),
            (Signal::Metrics, Signal::Metrics),
            (Signal::Logs, Signal::Logs),
        ]
    }
    fn build_connector(
        &self,
        _ctx: BuildContext,
        _from: Signal,
        _to: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        Ok(Arc::new(Forward(next)))
    }
}

struct Forward(ConsumerRef);

impl Consumer for Forward {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.consume(payload)
    }
}

impl Lifecycle for Forward {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::WallClock;
    use crate::component::ComponentId;
    use crate::processors::test_support::{Capture, span_ids, spans};
    use crate::telemetry::Telemetry;

    #[tokio::test]
    async fn passes_payloads_through_unchanged_and_refusals_back() {
        let capture = Arc::new(Capture::default());
        let ctx = BuildContext {
            id: ComponentId::parse("forward").unwrap(),
            config: ForwardFactory
                .parse_config(&serde_json::Value::Null)
                .unwrap(),
            telemetry: Telemetry::new(),
            clock: Arc::new(WallClock),
            extensions: Default::default(),
        };
        let f = ForwardFactory
            .build_connector(ctx, Signal::Traces, Signal::Traces, capture.clone())
            .unwrap();
        f.consume(spans(10, 5)).await.unwrap();
        assert_eq!(capture.items(), 5);
        assert_eq!(
            span_ids(&capture.got.lock().unwrap()[0]),
            span_ids(&spans(10, 5))
        );
        *capture.refuse.lock().unwrap() = Some(ConsumeError::Refused("full".into()));
        assert_eq!(
            f.consume(spans(20, 1)).await,
            Err(ConsumeError::Refused("full".into()))
        );

        // settings are refused: there are none
        let e = ForwardFactory
            .parse_config(&serde_json::json!({"x": 1}))
            .expect_err("unknown field refused");
        assert!(e.message.contains("unknown field"), "{e}");
    }
}
