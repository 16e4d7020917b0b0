//! OTLP/JSON: the protobuf encoding read back into the opentelemetry-proto types, serialized
//! with their serde support, then pruned to the OTLP/JSON shape.
//!
//! opentelemetry-proto's serde output already follows OTLP/JSON for names (lowerCamelCase),
//! ids (hex; lowercase, which the spec accepts as case-insensitive), 64-bit integers (decimal
//! strings), enums (integers) and `bytesValue` (base64). Where it deviates, we fix around it:
//! - it writes every field, defaults included (`"droppedAttributesCount":0`, `"traceId":""`,
//!   `"events":[]`) and absent messages as `null`; the proto3 JSON mapping omits them, and
//!   `null` is not what OTLP/JSON receivers expect. [`prune`] drops nulls and default scalars,
//!   except for fields whose presence carries meaning (set oneofs such as `"intValue":"0"`,
//!   `optional` `sum`/`min`/`max`). Empty objects (`"value":{}`, `"status":{}`) are kept: they
//!   are present messages.
//! - NOT fixed: non-finite doubles (NaN, ±Infinity) come out of serde_json as `null` instead
//!   of the proto3 JSON strings `"NaN"`/`"Infinity"`, and are then pruned (a NaN `doubleValue`
//!   becomes an empty value). Fixing it needs a serde `Serializer` adapter.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

use super::{EncodeError, encode_to_vec};
use crate::payload::Payload;
use crate::schema::Signal;

/// Encodes the payload as OTLP/JSON on one line, no trailing newline: `{"resourceSpans":[...]}`
/// (the same object for `Export*ServiceRequest` and `TracesData`/`MetricsData`/`LogsData`),
/// which is also one line of the Collector's file exporter format.
pub fn encode_json(payload: &Payload) -> Result<Vec<u8>, EncodeError> {
    let pb = encode_to_vec(payload);
    let mut v = match payload.signal() {
        Signal::Traces => serde_json::to_value(ExportTraceServiceRequest::decode(&pb[..])?)?,
        Signal::Metrics => serde_json::to_value(ExportMetricsServiceRequest::decode(&pb[..])?)?,
        Signal::Logs => serde_json::to_value(ExportLogsServiceRequest::decode(&pb[..])?)?,
    };
    prune(&mut v);
    Ok(serde_json::to_vec(&v)?)
}

/// Fields written even when zero/empty: set oneof members and proto3 `optional` fields, whose
/// presence is data.
const KEEP_DEFAULT: &[&str] = &[
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "asDouble",
    "asInt",
    "sum",
    "min",
    "max",
    // Valid to omit when empty, but opentelemetry-proto's own deserializer requires them
    // (ArrayValue/KeyValueList have no `serde(default)`, nor KeyValue, EntityRef and the
    // request itself), so they stay for readers built on that crate.
    "values",
    "key",
    "schemaUrl",
    "type",
    "idKeys",
    "descriptionKeys",
    "resourceSpans",
    "resourceMetrics",
    "resourceLogs",
];

/// The scalar 64-bit integer fields of the three signals: OTLP/JSON writes them as strings, so
/// their zero is the string "0". Any other string field holding "0" (a span or event named
/// "0", a severity text "0") is data and stays.
const INT64_FIELDS: &[&str] = &[
    "timeUnixNano",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "observedTimeUnixNano",
    "count",
    "zeroCount",
];

fn is_default(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || (s == "0" && INT64_FIELDS.contains(&key)),
        Value::Array(a) => a.is_empty(),
        Value::Object(_) => false,
    }
}

pub(super) fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, v| {
                !v.is_null() && (KEEP_DEFAULT.contains(&k.as_str()) || !is_default(k, v))
            });
            for v in map.values_mut() {
                prune(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}
