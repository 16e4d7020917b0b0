//! The content rules the OTLP decoder guarantees by construction, checked on payloads that
//! arrive as Arrow: whatever enters a pipeline from Flight could also have come from OTLP.
//! ([`crate::Payload::validate`] checks the parent links; this checks the values.)

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{UInt8Type, UInt32Type};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::payload::Payload;
use crate::schema::{AnyValueType, MetricType, Signal, Table, col};

/// Checks what the OTLP decoder guarantees and the schema cannot say:
/// - `AnyValue` columns (attribute tables, log bodies): a known `type`, exactly the value
///   column that type uses is set, and arrays / maps are valid protobuf `AnyValue`s of that
///   kind (the OTLP encoder writes them back verbatim);
/// - dictionary values and list items have no nulls;
/// - metrics: a known `metric_type`, every point in the table of its metric's type, summary
///   quantiles and values of equal length;
/// - resources: `entity_refs` are valid protobuf `EntityRef` fields.
pub fn validate_content(p: &Payload) -> Result<(), String> {
    for (t, batch) in p.tables() {
        let at = |e: String| format!("table {t:?}: {e}");
        no_null_items(batch).map_err(at)?;
        if t.is_attrs() {
            any_values(batch, "").map_err(at)?;
        }
    }
    match p.signal() {
        Signal::Logs => {
            any_values(p.table(Table::Logs), "body_").map_err(|e| format!("table Logs: {e}"))?
        }
        Signal::Metrics => metrics(p)?,
        Signal::Traces => {}
    }
    entity_refs(p.table(Table::Resources)).map_err(|e| format!("table Resources: {e}"))
}

/// Dictionary values and list items are never null in a sluice payload (the schema marks list
/// items non-null, but a record batch only checks top-level columns).
fn no_null_items(batch: &RecordBatch) -> Result<(), String> {
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let inner_nulls = if let Some(d) = column.as_any_dictionary_opt() {
            d.values().null_count()
        } else if let Some(l) = column.as_list_opt::<i32>() {
            l.values().null_count()
        } else {
            0
        };
        if inner_nulls > 0 {
            return Err(format!("column {}: null values inside", field.name()));
        }
    }
    Ok(())
}

fn any_values(batch: &RecordBatch, prefix: &str) -> Result<(), String> {
    let column = |name: &str| {
        batch
            .column_by_name(&format!("{prefix}{name}"))
            .ok_or_else(|| format!("no column {prefix}{name}"))
    };
    let types = column(col::TYPE)?.as_primitive::<UInt8Type>().values();
    if let Some(bad) = types.iter().find(|&&t| AnyValueType::from_u8(t).is_none()) {
        return Err(format!("{prefix}type {bad} is not a value type"));
    }
    let n = types.len();
    use AnyValueType::*;
    // Which value column each type sets, one bit per column; every row's bits are looked up
    // once and each column's expected validity is then a plain comparison per row, which
    // `collect_bool` packs 64 rows at a time (matching each row against a list of types per
    // column was 13 % of the Flight receiver's decode, BENCHMARKS.md "The Flight encoder's own
    // cost").
    const COLUMNS: [(&str, u8); 5] = [
        (col::STR, 1),
        (col::INT, 2),
        (col::DOUBLE, 4),
        (col::BOOL, 8),
        (col::BYTES, 16),
    ];
    let bits_of = |t: u8| match AnyValueType::from_u8(t) {
        Some(Str) => 1u8,
        Some(Int) => 2,
        Some(Double) => 4,
        Some(Bool) => 8,
        Some(Bytes | Array | Map) => 16,
        Some(Empty | Absent) | None => 0,
    };
    let mut table = [0u8; 256];
    for (t, bits) in table.iter_mut().enumerate() {
        *bits = bits_of(t as u8);
    }
    let row_bits: Vec<u8> = types.iter().map(|&t| table[t as usize]).collect();
    for (name, bit) in COLUMNS {
        let values = column(name)?;
        let want = BooleanBuffer::collect_bool(n, |i| row_bits[i] & bit != 0);
        let valid = match values.logical_nulls() {
            Some(nulls) => nulls.inner().clone(),
            None => BooleanBuffer::new_set(n),
        };
        if valid != want {
            let row = (0..n)
                .find(|&i| valid.value(i) != want.value(i))
                .unwrap_or(0);
            return Err(format!(
                "row {row}: {prefix}{name} is {} but {prefix}type is {}",
                if valid.value(row) { "set" } else { "null" },
                types[row]
            ));
        }
    }
    // Arrays and maps are kept as the protobuf encoding of the whole AnyValue.
    let bytes = column(col::BYTES)?.as_binary::<i32>();
    for (row, &t) in types.iter().enumerate() {
        let kind = match AnyValueType::from_u8(t) {
            Some(Array) => "array",
            Some(Map) => "kvlist",
            _ => continue,
        };
        // The decoder's own walk first: it bounds the nesting (prost here has no limit).
        if let Err(e) = crate::otlp::check_nested_value(bytes.value(row)) {
            return Err(format!("row {row}: {prefix}bytes: {e}"));
        }
        let ok = match AnyValue::decode(bytes.value(row)).map(|v| v.value) {
            Ok(Some(any_value::Value::ArrayValue(_))) => kind == "array",
            Ok(Some(any_value::Value::KvlistValue(_))) => kind == "kvlist",
            _ => false,
        };
        if !ok {
            return Err(format!(
                "row {row}: {prefix}bytes is not the protobuf of an {kind} AnyValue"
            ));
        }
    }
    Ok(())
}

fn metrics(p: &Payload) -> Result<(), String> {
    let metric_types = p
        .table(Table::Metrics)
        .column_by_name(col::METRIC_TYPE)
        .ok_or("table Metrics: no metric_type")?
        .as_primitive::<UInt8Type>()
        .values();
    if let Some(bad) = metric_types
        .iter()
        .find(|&&t| MetricType::from_u8(t).is_none())
    {
        return Err(format!("table Metrics: metric_type {bad} is unknown"));
    }
    for t in [
        Table::NumberPoints,
        Table::HistogramPoints,
        Table::ExpHistogramPoints,
        Table::SummaryPoints,
    ] {
        let parents = p.table(t).column(0).as_primitive::<UInt32Type>().values();
        for (row, &m) in parents.iter().enumerate() {
            let table = metric_types
                .get(m as usize)
                .and_then(|&ty| MetricType::from_u8(ty))
                .and_then(MetricType::points_table);
            if table != Some(t) {
                return Err(format!(
                    "table {t:?}: row {row} belongs to metric {m}, whose type keeps no points here"
                ));
            }
        }
    }
    let summaries = p.table(Table::SummaryPoints);
    let lists = |name| {
        summaries
            .column_by_name(name)
            .map(|c| c.as_list::<i32>().clone())
            .ok_or(format!("table SummaryPoints: no {name}"))
    };
    let (quantiles, values) = (lists(col::QUANTILES)?, lists(col::QUANTILE_VALUES)?);
    for row in 0..summaries.num_rows() {
        if quantiles.value_length(row) != values.value_length(row) {
            return Err(format!(
                "table SummaryPoints: row {row} has {} quantiles and {} values",
                quantiles.value_length(row),
                values.value_length(row)
            ));
        }
    }
    Ok(())
}

/// `entity_refs` holds the `Resource.entity_refs` fields (tag, length and message) as they
/// were received, written back verbatim.
fn entity_refs(resources: &RecordBatch) -> Result<(), String> {
    let refs = resources
        .column_by_name(col::ENTITY_REFS)
        .ok_or("no entity_refs")?
        .as_binary::<i32>();
    for row in 0..refs.len() {
        let b = refs.value(row);
        if b.is_empty() {
            continue;
        }
        let ok = Resource::decode(b)
            .is_ok_and(|r| r.attributes.is_empty() && r.dropped_attributes_count == 0);
        if !ok {
            return Err(format!(
                "row {row}: entity_refs is not a list of EntityRef fields"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, DictionaryArray, Float64Array, Int64Array,
        StringArray, UInt8Array, UInt32Array,
    };
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;
    use crate::schema::attrs_schema;

    /// One attribute row of type `t` with the value columns in `set` filled (`str`, `int`,
    /// `double`, `bool`, `bytes`); `bytes` holds what an array or map row must hold.
    fn row(t: AnyValueType, set: &[&str]) -> RecordBatch {
        let has = |c: &str| set.contains(&c);
        let bytes = match t {
            AnyValueType::Array => AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue::default())),
            }
            .encode_to_vec(),
            AnyValueType::Map => AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList::default())),
            }
            .encode_to_vec(),
            _ => b"raw".to_vec(),
        };
        let key = DictionaryArray::new(
            UInt32Array::from(vec![0]),
            Arc::new(StringArray::from(vec!["k"])),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0])),
            Arc::new(key),
            Arc::new(UInt8Array::from(vec![t as u8])),
            Arc::new(StringArray::from(vec![has(col::STR).then_some("v")])),
            Arc::new(Int64Array::from(vec![has(col::INT).then_some(1)])),
            Arc::new(Float64Array::from(vec![has(col::DOUBLE).then_some(1.0)])),
            Arc::new(BooleanArray::from(vec![has(col::BOOL).then_some(true)])),
            Arc::new(BinaryArray::from(vec![
                has(col::BYTES).then_some(bytes.as_slice()),
            ])),
        ];
        RecordBatch::try_new(Arc::new(attrs_schema()), columns).expect("the attrs schema")
    }

    /// Each type accepts exactly its own value column: with it alone the row passes; with any
    /// other column set as well, or without its own, it is refused.
    #[test]
    fn each_value_type_sets_exactly_its_column() {
        use AnyValueType::*;
        let all = [col::STR, col::INT, col::DOUBLE, col::BOOL, col::BYTES];
        for (t, own) in [
            (Empty, None),
            (Absent, None),
            (Str, Some(col::STR)),
            (Int, Some(col::INT)),
            (Double, Some(col::DOUBLE)),
            (Bool, Some(col::BOOL)),
            (Bytes, Some(col::BYTES)),
            (Array, Some(col::BYTES)),
            (Map, Some(col::BYTES)),
        ] {
            let own: Vec<&str> = own.into_iter().collect();
            assert_eq!(any_values(&row(t, &own), ""), Ok(()), "{t:?}");
            for other in all.iter().filter(|c| !own.contains(c)) {
                let mut set = own.clone();
                set.push(other);
                assert!(
                    any_values(&row(t, &set), "").is_err(),
                    "{t:?} with {other} set"
                );
            }
            if !own.is_empty() {
                assert!(
                    any_values(&row(t, &[]), "").is_err(),
                    "{t:?} with nothing set"
                );
            }
        }
    }
}
