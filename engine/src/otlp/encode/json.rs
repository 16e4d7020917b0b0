//! OTLP/JSON: the protobuf encoding read back into the opentelemetry-proto types and
//! serialized with their serde support.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{EncodeError, encode_to_vec};
use crate::payload::Payload;
use crate::schema::Signal;

/// Encodes the payload as OTLP/JSON on one line, no trailing newline: `{"resourceSpans":[...]}`
/// (the same object for `Export*ServiceRequest` and `TracesData`/`MetricsData`/`LogsData`),
/// which is also one line of the Collector's file exporter format.
pub fn encode_json(payload: &Payload) -> Result<Vec<u8>, EncodeError> {
    let pb = encode_to_vec(payload);
    Ok(match payload.signal() {
        Signal::Traces => serde_json::to_vec(&ExportTraceServiceRequest::decode(&pb[..])?)?,
        Signal::Metrics => serde_json::to_vec(&ExportMetricsServiceRequest::decode(&pb[..])?)?,
        Signal::Logs => serde_json::to_vec(&ExportLogsServiceRequest::decode(&pb[..])?)?,
    })
}
