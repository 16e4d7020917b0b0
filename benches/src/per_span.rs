//! The per-span baselines of the attribute kernels (`benches/attributes.rs`, and the
//! `delete_base` / `upsert_base` modes of `examples/ottl_profile.rs`): the Collector's way on
//! its own data model, where `pcommon.Map` is a slice of key/values edited span by span.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// Calls `f` on every span's attributes.
pub fn each_span(req: &mut ExportTraceServiceRequest, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for sp in &mut ss.spans {
                f(&mut sp.attributes);
            }
        }
    }
}

/// Deletes `key` from every span: a `retain` over each span's `Vec<KeyValue>`.
pub fn delete_key(req: &mut ExportTraceServiceRequest, key: &str) {
    each_span(req, |a| a.retain(|kv| kv.key != key));
}

/// Sets string attribute `key` to `value` on every span: find the key, overwrite or push a new
/// `KeyValue` (a `String` per span, as `PutStr` copies).
pub fn upsert_str(req: &mut ExportTraceServiceRequest, key: &str, value: &str) {
    each_span(req, |a| {
        let v = AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        };
        match a.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = Some(v),
            None => a.push(KeyValue {
                key: key.to_string(),
                value: Some(v),
                key_strindex: 0,
            }),
        }
    });
}
