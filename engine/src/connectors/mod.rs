//! Connectors: the exporter end of one pipeline and the receiver end of another (the
//! Collector's `connectors` section). The pipeline graph wires them (`crate::service`).

use std::sync::Arc;

use crate::component::Factory;

pub mod forward;
pub mod spanmetrics;

/// Every connector factory in the engine.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(forward::ForwardFactory),
        Arc::new(spanmetrics::SpanMetricsFactory),
    ]
}
