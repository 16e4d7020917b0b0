//! sluice-ingest: receivers — the I/O edge where OTLP bytes come in and become Arrow.

use std::sync::Arc;

use sluice_engine::component::Factory;

pub mod flight;
pub mod otlp;

/// Every receiver factory.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(otlp::OtlpReceiverFactory),
        Arc::new(flight::FlightReceiverFactory),
    ]
}
