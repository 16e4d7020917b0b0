//! sluice-ingest: receivers.

use std::sync::Arc;

use sluice_engine::component::Factory;

/// Every receiver factory.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    Vec::new()
}
