//! The Flight receiver's decoding of a stream's messages, framed as
//! `sluice_engine::fuzzing::flight_messages` reads them (`flight_stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_engine::fuzzing::flight_stream(data);
});
