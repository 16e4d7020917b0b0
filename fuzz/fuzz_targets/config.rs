//! The config loader: YAML text to a checked config, as `sluice validate` does
//! (`sluice::fuzzing::config`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sluice_engine::config::Registry;

static REGISTRY: LazyLock<Registry> = LazyLock::new(sluice::registry);

fuzz_target!(|data: &[u8]| {
    sluice::fuzzing::config(data, &REGISTRY);
});
