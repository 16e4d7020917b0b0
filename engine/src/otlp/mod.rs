//! OTLP <-> Arrow codec.
//!
//! - [`decode`]: OTLP protobuf (`Export*ServiceRequest`, which has the same wire layout as
//!   `TracesData`/`MetricsData`/`LogsData`) and OTLP/JSON -> [`crate::Payload`]. The protobuf
//!   path is a hand-written wire decoder that appends straight into Arrow buffers: no prost
//!   struct per span.
//! - [`encode`]: [`crate::Payload`] -> OTLP protobuf (hand-written) and OTLP/JSON.
//! - [`build`]: metrics payloads built directly by components that produce metrics (scrapers).
//!
//! prost / opentelemetry-proto stay the reference: the round-trip property tests and the
//! criterion benchmarks compare against them.

pub mod build;
pub mod decode;
pub mod encode;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod roundtrip_tests;

pub use decode::{
    DecodeError, DecodeStats, MAX_ANY_VALUE_DEPTH, check_nested_value, decode, decode_json,
    decode_json_with_stats, decode_logs, decode_metrics, decode_traces, decode_with_stats,
    decoded_size_estimate, skim,
};
pub use encode::{
    EncodeError, encode, encode_json, encode_to_bytes, encode_to_slices, encode_to_vec,
};
