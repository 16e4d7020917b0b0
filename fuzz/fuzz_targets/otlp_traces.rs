//! OTLP protobuf: an `ExportTraceServiceRequest` through sluice's decoder, checked against
//! prost (`sluice_engine::fuzzing::otlp_protobuf`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::Signal;

fuzz_target!(|data: &[u8]| {
    sluice_engine::fuzzing::otlp_protobuf(Signal::Traces, data);
});
