//! Attribute values as label values, label sets as exposition text.
//!
//! - [`AttrTable`]: an attribute table read row by row, each value as pdata's
//!   `Value.AsString()` (`pcommon/value.go`): strings as they are, ints in decimal, doubles as
//!   ES6 numbers, bools `true`/`false`, bytes in standard base64, maps and arrays as
//!   `encoding/json` writes `AsRaw()` (sorted keys, HTML-safe escaping).
//! - [`LabelSet`]: the labels of one series, built once when the series is first seen: names
//!   through the translator's label namer, attribute collisions joined with `;` in the order
//!   of the original keys (the translator's rule, `prometheusremotewrite/helper.go`
//!   `createAttributes`), sorted by name (client_golang's `MakeLabelPairs`), values escaped
//!   as `expfmt` escapes them, rendered to text that every scrape then copies as it is.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, UInt8Type};
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;
use sluice_engine::otlp::encode::columns::{Strs, prim};
use sluice_engine::schema::{AnyValueType, col};

use super::gofmt;
use super::naming;

/// One attribute table (any of the `*Attrs` tables) with its rows grouped by parent.
pub struct AttrTable<'a> {
    starts: Vec<u32>,
    keys: Strs<'a>,
    types: &'a [u8],
    strs: Strs<'a>,
    ints: &'a [i64],
    doubles: &'a [f64],
    bools: &'a BooleanArray,
    bytes: Strs<'a>,
}

/// Row ranges of a child table sorted by `parent_id`: children of parent `p` are
/// `starts[p]..starts[p + 1]`.
pub fn child_starts(parent: &[u32], n_parents: usize) -> Vec<u32> {
    let mut starts = vec![0u32; n_parents + 1];
    for &p in parent {
        if let Some(c) = starts.get_mut(p as usize + 1) {
            *c += 1;
        }
    }
    for i in 0..n_parents {
        starts[i + 1] += starts[i];
    }
    starts
}

impl<'a> AttrTable<'a> {
    pub fn new(batch: &'a RecordBatch, n_parents: usize) -> Self {
        let parent = sluice_engine::payload::parent_ids(batch).values();
        AttrTable {
            starts: child_starts(parent, n_parents),
            keys: Strs::of(batch, col::KEY),
            types: prim::<UInt8Type>(batch, col::TYPE),
            strs: Strs::of(batch, col::STR),
            ints: prim::<Int64Type>(batch, col::INT),
            doubles: prim::<Float64Type>(batch, col::DOUBLE),
            bools: batch
                .column_by_name(col::BOOL)
                .expect("attrs schema has bool")
                .as_boolean(),
            bytes: Strs::of(batch, col::BYTES),
        }
    }

    /// The attribute rows of parent `p`.
    #[inline]
    pub fn rows(&self, p: usize) -> std::ops::Range<usize> {
        match (self.starts.get(p), self.starts.get(p + 1)) {
            (Some(&s), Some(&e)) => s as usize..e as usize,
            _ => 0..0,
        }
    }

    #[inline]
    pub fn key(&self, row: usize) -> &'a str {
        // Keys are Utf8 in the schema: arrow validated them when the array was built.
        std::str::from_utf8(self.keys.get(row)).unwrap_or("")
    }

    /// The value of `row` as pdata's `Value.AsString()`.
    pub fn value(&self, row: usize) -> Cow<'a, str> {
        match AnyValueType::from_u8(self.types[row]) {
            Some(AnyValueType::Str) => {
                Cow::Borrowed(std::str::from_utf8(self.strs.get(row)).unwrap_or(""))
            }
            Some(AnyValueType::Int) => {
                Cow::Owned(itoa::Buffer::new().format(self.ints[row]).to_string())
            }
            Some(AnyValueType::Double) => Cow::Owned(gofmt::es6(self.doubles[row])),
            Some(AnyValueType::Bool) => Cow::Borrowed(if self.bools.value(row) {
                "true"
            } else {
                "false"
            }),
            Some(AnyValueType::Bytes) => {
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(self.bytes.get(row)))
            }
            Some(AnyValueType::Array) | Some(AnyValueType::Map) => {
                Cow::Owned(nested_as_string(self.bytes.get(row)))
            }
            Some(AnyValueType::Empty) | Some(AnyValueType::Absent) | None => Cow::Borrowed(""),
        }
    }

    /// The value of the attribute `key` of parent `p`: the first match, as `pcommon.Map.Get`
    /// returns it.
    pub fn find(&self, p: usize, key: &str) -> Option<Cow<'a, str>> {
        self.rows(p)
            .find(|&r| self.key(r) == key)
            .map(|r| self.value(r))
    }
}

/// A map or array attribute (stored as the protobuf of the whole `AnyValue`) as
/// `json.Marshal(v.AsRaw())`; `""` when Go's marshal would fail (NaN, infinities).
fn nested_as_string(encoded: &[u8]) -> String {
    let Ok(v) = AnyValue::decode(encoded) else {
        return String::new();
    };
    let mut out = String::new();
    if go_json(&v, &mut out) {
        out
    } else {
        String::new()
    }
}

/// `encoding/json` of `Value.AsRaw()`; false if the value has no JSON form.
fn go_json(v: &AnyValue, out: &mut String) -> bool {
    use any_value::Value as V;
    match &v.value {
        // (a string-table index only means something inside profiles)
        None | Some(V::StringValueStrindex(_)) => out.push_str("null"),
        Some(V::StringValue(s)) => json_string(s, out),
        Some(V::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(V::IntValue(i)) => out.push_str(itoa::Buffer::new().format(*i)),
        Some(V::DoubleValue(d)) => {
            if !d.is_finite() {
                return false;
            }
            out.push_str(&gofmt::es6(*d));
        }
        Some(V::BytesValue(b)) => {
            json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
        }
        Some(V::ArrayValue(a)) => {
            out.push('[');
            for (i, x) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !go_json(x, out) {
                    return false;
                }
            }
            out.push(']');
        }
        Some(V::KvlistValue(kv)) => {
            // AsRaw builds a Go map: a repeated key keeps the last value; json sorts keys.
            let mut m: std::collections::BTreeMap<&str, &AnyValue> = Default::default();
            let empty = AnyValue::default();
            for e in &kv.values {
                m.insert(&e.key, e.value.as_ref().unwrap_or(&empty));
            }
            out.push('{');
            for (i, (k, x)) in m.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(k, out);
                out.push(':');
                if !go_json(x, out) {
                    return false;
                }
            }
            out.push('}');
        }
    }
    true
}

/// A JSON string as `encoding/json` writes it (HTML-safe: `<`, `>`, `&` escaped).
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a label value escaped for the exposition formats (`\` -> `\\`, `"` -> `\"`,
/// newline -> `\n`; `quotedEscaper` in `text_create.go`).
#[inline]
pub fn escape_label_value(v: &str, out: &mut Vec<u8>) {
    let b = v.as_bytes();
    if !b.iter().any(|&c| c == b'\\' || c == b'"' || c == b'\n') {
        out.extend_from_slice(b);
        return;
    }
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
}

/// Appends HELP text escaped: text format 0.0.4 escapes `\` and newline; OpenMetrics also `"`.
pub fn escape_help(v: &str, open_metrics: bool, out: &mut Vec<u8>) {
    for &c in v.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if open_metrics => out.extend_from_slice(b"\\\""),
            c => out.push(c),
        }
    }
}

/// Why a series' labels cannot be exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelError {
    /// An attribute key normalizes to nothing usable (empty, or a reserved `__` name).
    InvalidName,
    /// An attribute label has the name of a label the exporter sets itself (`job`,
    /// `instance`, `otel_scope_*`, a const label): client_golang refuses the duplicate.
    Conflict,
}

/// Translated label names, cached across batches (keys repeat on every data point).
#[derive(Default)]
pub struct LabelNames {
    cache: HashMap<Box<str>, Option<Box<str>>>,
}

impl LabelNames {
    /// The label name of an attribute key, `None` if it cannot be a label.
    pub fn get(&mut self, key: &str) -> Option<&str> {
        if !self.cache.contains_key(key) {
            let name = naming::label_name(key)
                .ok()
                .filter(|n| naming::is_usable_label_name(n))
                .map(String::into_boxed_str);
            self.cache.insert(key.into(), name);
        }
        self.cache.get(key).and_then(|n| n.as_deref())
    }
}

/// Builds the label text of a series.
///
/// `attrs`: (original key, value) of the attribute-derived labels (data point attributes,
/// merged resource attributes, `otel_scope_`-prefixed scope attributes), in any order;
/// `fixed`: the labels the exporter sets itself (scope name/version/schema URL, `job`,
/// `instance`, const labels), already valid names.
pub fn render_labels(
    names: &mut LabelNames,
    attrs: &mut [(Cow<'_, str>, Cow<'_, str>)],
    fixed: &[(&str, &str)],
) -> Result<Vec<u8>, LabelError> {
    // Collisions are joined in the order of the original keys.
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut labels: Vec<(String, String)> = Vec::with_capacity(attrs.len() + fixed.len());
    for (key, value) in attrs.iter() {
        let name = names.get(key).ok_or(LabelError::InvalidName)?;
        match labels.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(value);
            }
            None => labels.push((name.to_string(), value.to_string())),
        }
    }
    for (name, value) in fixed {
        if labels.iter().any(|(n, _)| n == name) {
            return Err(LabelError::Conflict);
        }
        labels.push((name.to_string(), value.to_string()));
    }
    Ok(render_sorted(labels))
}

/// `name="value",...` of `labels` sorted by name (client_golang's `MakeLabelPairs` order).
fn render_sorted(mut labels: Vec<(String, String)>) -> Vec<u8> {
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut body = Vec::with_capacity(labels.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(n.as_bytes());
        body.extend_from_slice(b"=\"");
        escape_label_value(v, &mut body);
        body.push(b'"');
    }
    body
}

/// The labels of `target_info` (`createTargetInfoMetrics` in the exporter's `collector.go`):
/// resource attributes except `service.name`, `service.namespace`, `service.instance.id`,
/// collisions joined with `;` in attribute order, plus `job` and `instance`; no const labels.
pub fn render_target_labels(
    names: &mut LabelNames,
    attrs: &[(&str, Cow<'_, str>)],
    job: &str,
    instance: &str,
) -> Result<Vec<u8>, LabelError> {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(attrs.len() + 2);
    for (key, value) in attrs {
        if matches!(
            *key,
            "service.name" | "service.namespace" | "service.instance.id"
        ) {
            continue;
        }
        let name = names.get(key).ok_or(LabelError::InvalidName)?;
        match labels.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(value);
            }
            None => labels.push((name.to_string(), value.to_string())),
        }
    }
    // job and instance are set last in the Collector's map, overriding same-named attributes.
    labels.retain(|(n, _)| n != "job" && n != "instance");
    labels.push(("job".into(), job.into()));
    labels.push(("instance".into(), instance.into()));
    Ok(render_sorted(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    #[test]
    fn nested_values_render_as_go_json() {
        let map = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![
                    KeyValue {
                        key: "z".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::IntValue(3)),
                        }),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "a".into(),
                        value: Some(s("<b>")),
                        ..Default::default()
                    },
                ],
            })),
        };
        assert_eq!(
            nested_as_string(&map.encode_to_vec()),
            r#"{"a":"\u003cb\u003e","z":3}"#
        );
        let arr = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    s("x"),
                    AnyValue {
                        value: Some(any_value::Value::DoubleValue(1.5)),
                    },
                    AnyValue { value: None },
                ],
            })),
        };
        assert_eq!(nested_as_string(&arr.encode_to_vec()), r#"["x",1.5,null]"#);
        let nan = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::DoubleValue(f64::NAN)),
                }],
            })),
        };
        assert_eq!(nested_as_string(&nan.encode_to_vec()), "");
    }

    #[test]
    fn labels_sorted_escaped_and_collisions_joined() {
        let mut names = LabelNames::default();
        let mut attrs = vec![
            (Cow::Borrowed("http.method"), Cow::Borrowed("GET")),
            (Cow::Borrowed("a_b"), Cow::Borrowed("second")),
            (Cow::Borrowed("a.b"), Cow::Borrowed("first")),
            (Cow::Borrowed("path"), Cow::Borrowed("C:\\dir \"x\"\nnext")),
        ];
        let r = render_labels(&mut names, &mut attrs, &[("job", "svc")]).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            r#"a_b="first;second",http_method="GET",job="svc",path="C:\\dir \"x\"\nnext""#
        );

        let mut clash = vec![(Cow::Borrowed("job"), Cow::Borrowed("x"))];
        assert_eq!(
            render_labels(&mut names, &mut clash, &[("job", "svc")]).err(),
            Some(LabelError::Conflict)
        );
        let mut reserved = vec![(Cow::Borrowed("__name__"), Cow::Borrowed("x"))];
        assert_eq!(
            render_labels(&mut names, &mut reserved, &[]).err(),
            Some(LabelError::InvalidName)
        );
    }

    #[test]
    fn target_labels_drop_service_attributes() {
        let mut names = LabelNames::default();
        let attrs = vec![
            ("service.name", Cow::Borrowed("checkout")),
            ("k8s.pod.name", Cow::Borrowed("checkout-1")),
            ("service.instance.id", Cow::Borrowed("i-1")),
            ("k8s_pod.name", Cow::Borrowed("dup")),
        ];
        let r = render_target_labels(&mut names, &attrs, "checkout", "i-1").unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            r#"instance="i-1",job="checkout",k8s_pod_name="checkout-1;dup""#
        );
    }
}
