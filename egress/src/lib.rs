//! sluice-egress: exporters — the I/O edge where Arrow leaves as OTLP (or text, or files).

use std::sync::Arc;

use sluice_engine::component::Factory;

pub mod debug;
pub mod file;
pub mod file_storage;
pub mod flight;
pub mod grpc_target;
pub mod loadbalancing;
pub mod nop;
pub mod otlp;
pub mod prometheus;
pub mod queue;
#[cfg(test)]
mod tests;

/// Every exporter factory.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(otlp::OtlpGrpcFactory),
        Arc::new(otlp::OtlpHttpFactory),
        Arc::new(flight::FlightExporterFactory),
        Arc::new(debug::DebugFactory),
        Arc::new(file::FileFactory),
        Arc::new(nop::NopFactory),
        Arc::new(prometheus::PrometheusFactory),
        Arc::new(loadbalancing::LoadBalancingFactory {
            type_name: "loadbalancing",
        }),
        Arc::new(loadbalancing::LoadBalancingFactory {
            type_name: "load_balancing",
        }),
        Arc::new(file_storage::FileStorageFactory),
    ]
}
