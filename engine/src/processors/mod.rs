//! Processors: each a kernel over a [`crate::Payload`]'s columns.

use std::sync::Arc;

use crate::component::Factory;

pub mod attributes;
pub mod batch;
pub mod filter;
pub mod hand_over;
pub mod memory_limiter;
pub mod resource;
pub mod tail_sampling;
#[cfg(test)]
pub(crate) mod test_support;
pub mod transform;

/// Every processor factory in the engine.
pub fn factories() -> Vec<Arc<dyn Factory>> {
    vec![
        Arc::new(batch::BatchFactory),
        Arc::new(memory_limiter::MemoryLimiterFactory),
        Arc::new(tail_sampling::TailSamplingFactory),
        Arc::new(filter::FilterFactory),
        Arc::new(transform::TransformFactory),
        Arc::new(attributes::AttributesFactory),
        Arc::new(resource::ResourceFactory),
    ]
}
