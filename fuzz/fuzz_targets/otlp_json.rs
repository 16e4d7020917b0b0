//! OTLP/JSON, as each signal (`sluice_engine::fuzzing::otlp_json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_engine::fuzzing::otlp_json(data);
});
