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
    let set = |kinds: &[AnyValueType]| {
        BooleanBuffer::collect_bool(n, |i| kinds.iter().any(|k| *k as u8 == types[i]))
    };
    use AnyValueType::*;
    for (name, kinds) in [
        (col::STR, &[Str][..]),
        (col::INT, &[Int]),
        (col::DOUBLE, &[Double]),
        (col::BOOL, &[Bool]),
        (col::BYTES, &[Bytes, Array, Map]),
    ] {
        let values = column(name)?;
        let want = set(kinds);
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
