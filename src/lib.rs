//! The library half of the `sluice` binary: what the binary and the code that checks it from
//! outside (the fuzz targets in `fuzz/`, `tests/`) must share, namely the registry of every
//! component and the config loader's fuzz entry point.

use std::sync::Arc;

use sluice_engine::component::Factory;
use sluice_engine::config::Registry;

pub mod fuzzing;
pub mod health_check;

/// Every component sluice has, as `sluice validate` and `sluice run` know them.
pub fn registry() -> Registry {
    let mut factories: Vec<Arc<dyn Factory>> = Vec::new();
    factories.extend(sluice_ingest::factories());
    factories.extend(sluice_engine::processors::factories());
    factories.extend(sluice_engine::connectors::factories());
    factories.extend(sluice_egress::factories());
    factories.extend(sluice_k8s::factories());
    factories.push(Arc::new(health_check::HealthCheckFactory));
    Registry::new(factories)
}
