//! OTLP/JSON -> [`Payload`]: serde into opentelemetry-proto's prost types, encode to protobuf,
//! then the protobuf decoder, so that one code path builds Arrow.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message;

use super::DecodeError;
use crate::payload::Payload;
use crate::schema::Signal;

/// Decodes an OTLP/JSON `Export{Trace,Metrics,Logs}ServiceRequest` of `signal`.
pub fn decode_json(signal: Signal, buf: &[u8]) -> Result<Payload, DecodeError> {
    let json_err = |e: serde_json::Error| DecodeError::Json {
        signal: signal.as_str(),
        detail: e.to_string(),
    };
    let proto = match signal {
        Signal::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(buf)
            .map_err(json_err)?
            .encode_to_vec(),
        Signal::Metrics => serde_json::from_slice::<ExportMetricsServiceRequest>(buf)
            .map_err(json_err)?
            .encode_to_vec(),
        Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(buf)
            .map_err(json_err)?
            .encode_to_vec(),
    };
    super::decode(signal, &proto)
}
