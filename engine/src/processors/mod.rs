//! Processors: each a kernel over a [`crate::Payload`]'s columns.

use std::sync::Arc;

use crate::component::Factory;

/// Every processor factory in the engine.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    Vec::new()
}
