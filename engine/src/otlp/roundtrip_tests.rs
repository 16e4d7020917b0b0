//! The codec's defining property, for all three signals, on proptest-generated OTLP requests
//! (opentelemetry-proto types, encoded by prost):
//!
//! 1. decode(prost bytes) equals the slow, obviously-correct reference converter applied to
//!    the request as prost reads those bytes back;
//! 2. encode(decoded payload) is byte-for-byte the prost encoding, so decoding it again with
//!    prost gives back a request equal to the original.

use crate::Signal;
use crate::otlp::testing::{
    arb_logs_request, arb_metrics_request, arb_traces_request, assert_payload_eq, reference_logs,
    reference_metrics, reference_traces,
};
use crate::otlp::{decode, encode_to_vec};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;

fn check<M: Message + Default + PartialEq + std::fmt::Debug>(
    signal: Signal,
    req: &M,
    reference: impl Fn(&M) -> crate::Payload,
) {
    let bytes = req.encode_to_vec();
    // prost's own round trip is lossy in one corner (a non-optional `-0.0` double equals the
    // default and is not written), so the property is stated against what is on the wire.
    let canonical = M::decode(bytes.as_slice()).expect("prost decodes its own encoding");
    let decoded = decode(signal, &bytes).expect("valid request decodes");
    decoded
        .validate()
        .expect("decoded payload keeps the invariants");
    assert_payload_eq(&decoded, &reference(&canonical));
    let encoded = encode_to_vec(&decoded);
    assert_eq!(
        M::decode(encoded.as_slice()).expect("our encoding is valid protobuf"),
        canonical
    );
    assert_eq!(encoded, bytes, "encoding is byte-identical to prost's");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn traces_round_trip(req in arb_traces_request()) {
        check::<ExportTraceServiceRequest>(Signal::Traces, &req, reference_traces);
    }

    #[test]
    fn metrics_round_trip(req in arb_metrics_request()) {
        check::<ExportMetricsServiceRequest>(Signal::Metrics, &req, reference_metrics);
    }

    #[test]
    fn logs_round_trip(req in arb_logs_request()) {
        check::<ExportLogsServiceRequest>(Signal::Logs, &req, reference_logs);
    }
}
