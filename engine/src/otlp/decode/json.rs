//! OTLP/JSON -> [`Payload`]: serde into opentelemetry-proto's prost types, encode to protobuf,
//! then the protobuf decoder, so that one code path builds Arrow. Not a hot path.
//!
//! opentelemetry-proto's serde support (0.33) follows the OTLP/JSON spec for what matters most
//! (lowerCamelCase keys, hex trace/span ids, int64 as string or number, integer enums, unknown
//! fields ignored), and the three examples of the opentelemetry-proto repository decode. Gaps
//! fixed here, around the edges:
//! - `null` (proto3 JSON: the field's default) is rejected by its serde; nulls are dropped first.
//! - The metric `data`, number-point `value` and exemplar `value` oneofs are `#[serde(flatten)]`
//!   `Option`s, which *silently* become `None` when their content fails to parse: a histogram
//!   with a bad field vanished without an error. Such losses are detected after parsing by
//!   walking the JSON alongside the result, and reported with the field path.
//! - Doubles written as `"NaN"`, `"Infinity"`, `"-Infinity"` (proto3 JSON) are only accepted in
//!   `quantileValues`; in `asDouble`, `sum`, `min`, `max`, `zeroThreshold` and
//!   `explicitBounds` they are substituted before parsing and patched in after.
//!
//! - Enum fields by name (`"kind": "SPAN_KIND_SERVER"`, `"code": "STATUS_CODE_ERROR"`,
//!   `"severityNumber": "SEVERITY_NUMBER_INFO"`, `"aggregationTemporality":
//!   "AGGREGATION_TEMPORALITY_CUMULATIVE"`) are accepted as well as numbers, as the Collector's
//!   decoder accepts them: replaced by their numbers in the same walk that drops nulls.
//! - Errors name the field: a request serde refuses is decoded again with its path tracked
//!   (`resourceSpans[0].scopeSpans[0].spans[1].traceId: odd number of digits`); only bad
//!   requests pay for the tracking.
//!
//! - Non-finite `doubleValue`s in AnyValues (attributes, log bodies, at any depth), which this
//!   serde refuses: each is swapped for a 7-byte marker `stringValue` before parsing, and the
//!   marker's 9 bytes in the encoded protobuf (`0x0a 0x07 marker`) for the double's 9 bytes
//!   (`0x21` + 8 bytes), same length, so no length prefix changes. A marker is used only if
//!   the encoded request holds it exactly where it was put (else another marker is tried).
//!
//! Still not accepted (rejected with a clear error, none silently): 32-bit integers as strings.

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::metrics::v1 as pb;
use prost::Message;
use serde_json::Value;

use super::{DecodeError, DecodeStats};
use crate::payload::Payload;
use crate::schema::Signal;

/// Decodes an OTLP/JSON `Export{Trace,Metrics,Logs}ServiceRequest` of `signal`.
pub fn decode_json(signal: Signal, buf: &[u8]) -> Result<Payload, DecodeError> {
    decode_json_with_stats(signal, buf).map(|(p, _)| p)
}

/// [`decode_json`], also saying what was repaired. A body that is not valid UTF-8 (JSON must
/// be) is read with each invalid sequence replaced by U+FFFD: the JSON syntax is ASCII, so
/// only string contents change; each such sequence counts as one replaced string.
pub fn decode_json_with_stats(
    signal: Signal,
    buf: &[u8],
) -> Result<(Payload, DecodeStats), DecodeError> {
    let (buf, replaced) = match std::str::from_utf8(buf) {
        Ok(_) => (std::borrow::Cow::Borrowed(buf), 0),
        Err(_) => repair_json_utf8(buf),
    };
    let (payload, mut stats) = decode_json_valid(signal, &buf)?;
    stats.replaced_invalid_utf8 += replaced;
    Ok((payload, stats))
}

#[cold]
fn repair_json_utf8(buf: &[u8]) -> (std::borrow::Cow<'_, [u8]>, usize) {
    let invalid = buf
        .utf8_chunks()
        .filter(|c| !c.invalid().is_empty())
        .count();
    let fixed = String::from_utf8_lossy(buf).into_owned().into_bytes();
    (std::borrow::Cow::Owned(fixed), invalid)
}

fn decode_json_valid(signal: Signal, buf: &[u8]) -> Result<(Payload, DecodeStats), DecodeError> {
    let json_err = |detail: String| DecodeError::Json {
        signal: signal.as_str(),
        detail,
    };
    let mut v: Value = serde_json::from_slice(buf).map_err(|e| json_err(e.to_string()))?;
    normalize(&mut v);
    if count_special_any_doubles(&v) > 0 {
        return decode_with_special_doubles(signal, v, buf);
    }
    let proto = to_proto(signal, v, buf)?;
    super::decode_with_stats(signal, &proto)
}

fn to_proto(signal: Signal, v: Value, buf: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let json_err = |detail: String| DecodeError::Json {
        signal: signal.as_str(),
        detail,
    };
    Ok(match signal {
        Signal::Traces => serde_json::from_value::<ExportTraceServiceRequest>(v)
            .map_err(|e| json_err(at_field::<ExportTraceServiceRequest>(buf, e, |_| {})))?
            .encode_to_vec(),
        Signal::Metrics => metrics_from_json(v, buf).map_err(json_err)?.encode_to_vec(),
        Signal::Logs => serde_json::from_value::<ExportLogsServiceRequest>(v)
            .map_err(|e| json_err(at_field::<ExportLogsServiceRequest>(buf, e, |_| {})))?
            .encode_to_vec(),
    })
}

/// The 7-byte marker standing for a special double: `kind` is `N`, `P` (+inf) or `M` (-inf);
/// control characters make it improbable in real strings, and `salt` varies it if it occurs.
fn special_marker(kind: u8, salt: u16) -> [u8; 7] {
    let d = |n: u16| b'0' + (n % 10) as u8;
    [0x01, 0x1e, 0x02, kind, d(salt / 100), d(salt / 10), d(salt)]
}

fn special_kind(x: f64) -> u8 {
    if x.is_nan() {
        b'N'
    } else if x > 0.0 {
        b'P'
    } else {
        b'M'
    }
}

/// AnyValue objects (`{"doubleValue": ...}`) whose double is `"NaN"`, `"Infinity"` or
/// `"-Infinity"`.
fn count_special_any_doubles(v: &Value) -> usize {
    match v {
        Value::Object(m) => {
            usize::from(m.get("doubleValue").and_then(special_f64).is_some())
                + m.values().map(count_special_any_doubles).sum::<usize>()
        }
        Value::Array(a) => a.iter().map(count_special_any_doubles).sum(),
        _ => 0,
    }
}

fn substitute_any_doubles(v: &mut Value, salt: u16) {
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get("doubleValue").and_then(special_f64) {
                m.remove("doubleValue");
                let marker = special_marker(special_kind(x), salt);
                // ASCII control characters: valid UTF-8.
                let marker = String::from_utf8_lossy(&marker).into_owned();
                m.insert("stringValue".into(), Value::String(marker));
            }
            m.values_mut().for_each(|x| substitute_any_doubles(x, salt));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute_any_doubles(x, salt)),
        _ => {}
    }
}

#[cold]
fn decode_with_special_doubles(
    signal: Signal,
    v: Value,
    buf: &[u8],
) -> Result<(Payload, DecodeStats), DecodeError> {
    let expected = count_special_any_doubles(&v);
    for salt in 0..1000u16 {
        let mut sv = v.clone();
        substitute_any_doubles(&mut sv, salt);
        let mut proto = to_proto(signal, sv, buf)?;
        let patterns = [
            (b'N', f64::NAN),
            (b'P', f64::INFINITY),
            (b'M', f64::NEG_INFINITY),
        ]
        .map(|(kind, x)| {
            let mut p = vec![0x0a, 0x07];
            p.extend_from_slice(&special_marker(kind, salt));
            (p, x)
        });
        let found: Vec<(usize, f64)> = proto
            .windows(9)
            .enumerate()
            .filter_map(|(i, w)| patterns.iter().find(|(p, _)| p == w).map(|(_, x)| (i, *x)))
            .collect();
        if found.len() != expected {
            continue; // the marker also occurs elsewhere: try another
        }
        for (i, x) in found {
            proto[i] = 0x21; // double_value = 4, fixed64
            proto[i + 1..i + 9].copy_from_slice(&x.to_le_bytes());
        }
        return super::decode_with_stats(signal, &proto);
    }
    Err(DecodeError::Json {
        signal: signal.as_str(),
        detail: "cannot place the non-finite doubleValues of this request".into(),
    })
}

/// An error of serde at the field it is about (`resourceSpans[0].scopeSpans[0].spans[1]
/// .traceId: odd number of digits`). Tracking the path costs an allocation per key, so the
/// fast path does not: only a request that failed is decoded again, with the tracking on.
/// `prepare` repeats what was done to the JSON before the failed attempt.
fn at_field<T: serde::de::DeserializeOwned>(
    buf: &[u8],
    first: serde_json::Error,
    prepare: impl FnOnce(&mut Value),
) -> String {
    let Ok(mut v) = serde_json::from_slice::<Value>(buf) else {
        return first.to_string();
    };
    normalize(&mut v);
    prepare(&mut v);
    match serde_path_to_error::deserialize::<_, T>(v) {
        Err(e) if e.path().iter().next().is_some() => {
            format!("{}: {}", e.path(), e.inner())
        }
        _ => first.to_string(),
    }
}

/// What the JSON needs before serde reads it, in one walk:
/// - proto3 JSON: a `null` field value means the default; removing the key says the same.
/// - Enum fields given by name (`"kind": "SPAN_KIND_SERVER"`), which the Collector accepts as
///   well as numbers, become their numbers. Only a name of the field's own enum is replaced;
///   anything else is left for serde to refuse. The keys are field names of the OTLP messages,
///   never user data (attributes are `{"key": ..., "value": ...}` lists), so a key identifies
///   its field.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            for (k, x) in m.iter_mut() {
                match x {
                    Value::String(name) => {
                        if let Some(n) = enum_number(k, name) {
                            *x = Value::from(n);
                        }
                    }
                    Value::Object(_) | Value::Array(_) => normalize(x),
                    _ => {}
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The number of enum value `name` of the enum field `key`, if it is one.
fn enum_number(key: &str, name: &str) -> Option<i32> {
    use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    match key {
        "kind" => SpanKind::from_str_name(name).map(|e| e as i32),
        "code" => StatusCode::from_str_name(name).map(|e| e as i32),
        "severityNumber" => SeverityNumber::from_str_name(name).map(|e| e as i32),
        "aggregationTemporality" => {
            pb::AggregationTemporality::from_str_name(name).map(|e| e as i32)
        }
        _ => None,
    }
}

fn special_f64(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Double-valued keys of metric data points that this serde cannot read as special strings.
const DOUBLE_KEYS: &[&str] = &["asDouble", "sum", "min", "max", "zeroThreshold"];

/// Replaces special-float strings at double-valued keys (and in `explicitBounds`) by 0 so
/// serde accepts them; [`fix_point`] patches the real values back in.
fn substitute_specials(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if DOUBLE_KEYS.contains(&k.as_str()) && special_f64(x).is_some() {
                    *x = Value::from(0);
                } else if k == "explicitBounds"
                    && let Value::Array(a) = x
                {
                    for e in a.iter_mut().filter(|e| special_f64(e).is_some()) {
                        *e = Value::from(0);
                    }
                } else {
                    substitute_specials(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(substitute_specials),
        _ => {}
    }
}

fn metrics_from_json(orig: Value, buf: &[u8]) -> Result<ExportMetricsServiceRequest, String> {
    let mut sanitized = orig.clone();
    substitute_specials(&mut sanitized);
    let mut req: ExportMetricsServiceRequest = serde_json::from_value(sanitized)
        .map_err(|e| at_field::<ExportMetricsServiceRequest>(buf, e, substitute_specials))?;
    // Walk the original JSON alongside the result (serde keeps order and counts).
    let list = list_of;
    for (i, (rj, rp)) in list(&orig, "resourceMetrics")
        .iter()
        .zip(&mut req.resource_metrics)
        .enumerate()
    {
        for (j, (sj, sp)) in list(rj, "scopeMetrics")
            .iter()
            .zip(&mut rp.scope_metrics)
            .enumerate()
        {
            for (k, (mj, mp)) in list(sj, "metrics").iter().zip(&mut sp.metrics).enumerate() {
                let path = format!("resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}]");
                fix_metric(mj, mp, &path)?;
            }
        }
    }
    Ok(req)
}

fn fix_metric(mj: &Value, mp: &mut pb::Metric, path: &str) -> Result<(), String> {
    use pb::metric::Data;
    const DATA: [&str; 5] = [
        "gauge",
        "sum",
        "histogram",
        "exponentialHistogram",
        "summary",
    ];
    let Some((key, dj)) = DATA.iter().rev().find_map(|k| mj.get(*k).map(|d| (*k, d))) else {
        return Ok(());
    };
    let Some(data) = mp.data.as_mut() else {
        // serde's flattened oneof swallowed an error: parse the part alone to report it.
        let mut d = dj.clone();
        substitute_specials(&mut d);
        let why = match key {
            "gauge" => serde_json::from_value::<pb::Gauge>(d).err(),
            "sum" => serde_json::from_value::<pb::Sum>(d).err(),
            "histogram" => serde_json::from_value::<pb::Histogram>(d).err(),
            "exponentialHistogram" => serde_json::from_value::<pb::ExponentialHistogram>(d).err(),
            _ => serde_json::from_value::<pb::Summary>(d).err(),
        };
        return Err(format!(
            "{path}.{key}: {}",
            why.map(|e| e.to_string())
                .unwrap_or_else(|| "could not be parsed".into())
        ));
    };
    let points = list_of(dj, "dataPoints");
    let at = |n: usize| format!("{path}.{key}.dataPoints[{n}]");
    match data {
        Data::Gauge(pb::Gauge { data_points }) | Data::Sum(pb::Sum { data_points, .. }) => {
            for (n, (pj, pp)) in points.iter().zip(data_points).enumerate() {
                pp.value = number_value(pj, pp.value.take(), &at(n))?;
                fix_exemplars(pj, &mut pp.exemplars, &at(n))?;
            }
        }
        Data::Histogram(h) => {
            for (n, (pj, pp)) in points.iter().zip(&mut h.data_points).enumerate() {
                fix_opt(pj, "sum", &mut pp.sum);
                fix_opt(pj, "min", &mut pp.min);
                fix_opt(pj, "max", &mut pp.max);
                for (b, x) in list_of(pj, "explicitBounds")
                    .iter()
                    .zip(&mut pp.explicit_bounds)
                {
                    if let Some(f) = special_f64(b) {
                        *x = f;
                    }
                }
                fix_exemplars(pj, &mut pp.exemplars, &at(n))?;
            }
        }
        Data::ExponentialHistogram(h) => {
            for (n, (pj, pp)) in points.iter().zip(&mut h.data_points).enumerate() {
                fix_opt(pj, "sum", &mut pp.sum);
                fix_opt(pj, "min", &mut pp.min);
                fix_opt(pj, "max", &mut pp.max);
                if let Some(f) = pj.get("zeroThreshold").and_then(special_f64) {
                    pp.zero_threshold = f;
                }
                fix_exemplars(pj, &mut pp.exemplars, &at(n))?;
            }
        }
        Data::Summary(s) => {
            for (pj, pp) in points.iter().zip(&mut s.data_points) {
                if let Some(f) = pj.get("sum").and_then(special_f64) {
                    pp.sum = f;
                }
            }
        }
    }
    Ok(())
}

fn list_of(v: &Value, k: &str) -> Vec<Value> {
    v.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn fix_opt(pj: &Value, k: &str, x: &mut Option<f64>) {
    if let Some(f) = pj.get(k).and_then(special_f64) {
        *x = Some(f);
    }
}

fn fix_exemplars(pj: &Value, exemplars: &mut [pb::Exemplar], at: &str) -> Result<(), String> {
    for (e, (ej, ep)) in list_of(pj, "exemplars").iter().zip(exemplars).enumerate() {
        ep.value = exemplar_value(ej, ep.value.take(), &format!("{at}.exemplars[{e}]"))?;
    }
    Ok(())
}

/// The `asDouble`/`asInt` oneof of a number point: patched for special doubles, and an error
/// instead of a silent `None` when serde dropped it.
fn number_value(
    pj: &Value,
    parsed: Option<pb::number_data_point::Value>,
    at: &str,
) -> Result<Option<pb::number_data_point::Value>, String> {
    use pb::number_data_point::Value as V;
    Ok(match one_of_value(pj, parsed.is_some(), at)? {
        Some(f) => Some(V::AsDouble(f)),
        None => parsed,
    })
}

fn exemplar_value(
    ej: &Value,
    parsed: Option<pb::exemplar::Value>,
    at: &str,
) -> Result<Option<pb::exemplar::Value>, String> {
    use pb::exemplar::Value as V;
    Ok(match one_of_value(ej, parsed.is_some(), at)? {
        Some(f) => Some(V::AsDouble(f)),
        None => parsed,
    })
}

/// Shared check for `asDouble`/`asInt` oneofs: `Some(f)` when `asDouble` is a special double
/// string; an error when the JSON has a value that serde did not parse.
fn one_of_value(j: &Value, parsed: bool, at: &str) -> Result<Option<f64>, String> {
    if let Some(f) = j.get("asDouble").and_then(special_f64) {
        return Ok(Some(f));
    }
    if !parsed {
        for k in ["asDouble", "asInt"] {
            if let Some(x) = j.get(k) {
                return Err(format!(
                    "{at}.{k}: invalid value {x} (expected a number, or for asInt a decimal string)"
                ));
            }
        }
    }
    Ok(None)
}
