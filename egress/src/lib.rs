//! sluice-egress: exporters.

use std::sync::Arc;

use sluice_engine::component::Factory;

/// Every exporter factory.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    Vec::new()
}
