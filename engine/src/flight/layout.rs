//! How tables are laid out on the wire when that differs from memory, and back.
//!
//! - **Attribute tables** travel sorted by key (stable: within a key, in memory order, so by
//!   parent), with `parent_id` delta-coded within each run of one key and a `position` column
//!   (the row's index among its parent's attributes) to put every row back where it was.
//!   Sorted by key, a column holds one attribute's values together (all the `http.route`s,
//!   then all the `url.full`s), so the key and type columns become runs and similar values sit
//!   side by side for the compressor: about 5 bytes less per span on `sluice loadgen`
//!   traffic (BENCHMARKS.md, "Arrow Flight hop").
//! - **Spans**: a trace id crosses once per batch: a `trace_ordinal` column numbers the
//!   batch's trace ids in order of first appearance, and a row whose trace id appeared before
//!   carries the ordinal and 16 zero bytes. A parent span id that is the span id of a row of
//!   the same batch (most parents: an SDK exports a trace's spans together) crosses as that row
//!   (`parent_row`, the row + 1; 0 = the bytes are on the wire) and 8 zero bytes. The start
//!   time crosses as the (zigzag) difference from the previous row's, the end as the duration,
//!   both in byte planes. Random ids and full timestamps barely compress; runs of zeros and
//!   small numbers do: 17.45 -> 14.97 bytes per span for the spans table of the realistic
//!   generator, 23.1 -> 21.5 on `sluice loadgen` traffic (BENCHMARKS.md, "Arrow Flight hop").
//!
//! All are exact: the receiver restores the memory layout bit for bit, and checks what it is
//! given (every attribute row lands on a distinct slot of its parent; an ordinal names a trace
//! id already seen or the next one; a parent row exists and has a span id).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, UInt32Array, UInt64Array};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::compute;
use arrow::datatypes::{UInt32Type, UInt64Type};
use hashbrown::HashMap;

use super::WireError;
use crate::schema::{Table, col};

/// A trace or span id (16 or 8 bytes) as one integer, the key of the id maps below: hashing a
/// `u128` is two multiplies, where a byte slice went through the slice hasher (std's SipHash
/// was ~7 % of the Flight encoder's time, BENCHMARKS.md "The Flight encoder's own cost").
fn id_key(id: &[u8]) -> u128 {
    let mut k = [0u8; 16];
    k[..id.len()].copy_from_slice(id);
    u128::from_ne_bytes(k)
}

/// Id columns are 16 (trace) or 8 (span) bytes wide by schema; anything wider cannot be a key.
fn check_id_width(width: usize) -> Result<(), WireError> {
    if width > 16 {
        return Err(WireError::encode(format!(
            "an id column {width} bytes wide"
        )));
    }
    Ok(())
}

/// The wire schema's extra column of attribute tables.
pub(super) const POSITION: &str = "position";

/// An attribute table (memory layout, `key` already over the stream dictionary) in wire
/// order: rows sorted by key code, parent ids delta-coded per key run, `position` inserted
/// after `key`.
pub(super) fn attrs_to_wire(columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>, WireError> {
    let parents = columns[0].as_primitive::<UInt32Type>().values();
    let codes = columns[1]
        .as_dictionary_opt::<UInt32Type>()
        .ok_or_else(|| WireError::encode("attribute keys are not a dictionary"))?
        .keys()
        .values();
    let n = parents.len();
    // A counting sort by key code: stable, O(rows + distinct codes).
    let max_code = codes.iter().copied().max().unwrap_or(0) as usize;
    let mut starts = vec![0u32; max_code + 2];
    for &c in codes.iter() {
        starts[c as usize + 1] += 1;
    }
    for i in 0..=max_code {
        starts[i + 1] += starts[i];
    }
    let mut order = vec![0u32; n];
    for (row, &c) in codes.iter().enumerate() {
        let slot = &mut starts[c as usize];
        order[*slot as usize] = row as u32;
        *slot += 1;
    }
    // Position of each row among its parent's rows (the table is sorted by parent).
    let mut position = vec![0u32; n];
    let mut run_start = 0usize;
    for row in 0..n {
        if row > 0 && parents[row] != parents[row - 1] {
            run_start = row;
        }
        position[row] = (row - run_start) as u32;
    }
    let mut delta = Vec::with_capacity(n);
    let mut wire_position = Vec::with_capacity(n);
    let mut previous: Option<(u32, u32)> = None; // (key code, parent)
    for &row in &order {
        let (code, parent) = (codes[row as usize], parents[row as usize]);
        delta.push(match previous {
            Some((c, p)) if c == code => parent - p,
            _ => parent,
        });
        previous = Some((code, parent));
        wire_position.push(position[row as usize]);
    }
    let order = UInt32Array::from(order);
    let take = |c: &ArrayRef| compute::take(c, &order, None).map_err(WireError::from);
    let mut out: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 1);
    out.push(Arc::new(UInt32Array::from(delta)));
    out.push(take(&columns[1])?);
    out.push(Arc::new(UInt32Array::from(wire_position)));
    for c in &columns[2..] {
        out.push(take(c)?);
    }
    Ok(out)
}

/// The memory layout of an attribute table received in wire order, for a parent table of
/// `parent_rows` rows. Checks that every row lands on its own slot of an existing parent.
pub(super) fn attrs_from_wire(
    t: Table,
    columns: Vec<ArrayRef>,
    parent_rows: usize,
) -> Result<Vec<ArrayRef>, WireError> {
    let bad = |what: String| WireError::malformed(format!("table {t:?}: {what}"));
    let delta = columns[0].as_primitive::<UInt32Type>().values();
    let codes = columns[1]
        .as_dictionary_opt::<UInt32Type>()
        .ok_or_else(|| bad("keys are not a dictionary".into()))?
        .keys()
        .values();
    let position = columns[2].as_primitive::<UInt32Type>().values();
    let n = delta.len();
    let mut parents = Vec::with_capacity(n);
    let mut previous: Option<(u32, u32)> = None;
    for row in 0..n {
        let code = codes[row];
        let parent = match previous {
            Some((c, p)) if c == code => p
                .checked_add(delta[row])
                .ok_or_else(|| bad(format!("row {row}: parent id overflows")))?,
            _ => delta[row],
        };
        if parent as usize >= parent_rows {
            return Err(bad(format!(
                "row {row}: parent_id {parent} out of range ({parent_rows} parent rows)"
            )));
        }
        parents.push(parent);
        previous = Some((code, parent));
    }
    // Where each parent's rows start in memory order.
    let mut starts = vec![0u32; parent_rows + 1];
    for &p in &parents {
        starts[p as usize + 1] += 1;
    }
    for i in 0..parent_rows {
        starts[i + 1] += starts[i];
    }
    let mut source = vec![u32::MAX; n];
    for row in 0..n {
        let p = parents[row] as usize;
        let count = starts[p + 1] - starts[p];
        if position[row] >= count {
            return Err(bad(format!(
                "row {row}: position {} of a parent with {count} rows",
                position[row]
            )));
        }
        let slot = &mut source[(starts[p] + position[row]) as usize];
        if *slot != u32::MAX {
            return Err(bad(format!(
                "rows {} and {row} claim the same position of parent {p}",
                *slot
            )));
        }
        *slot = row as u32;
    }
    // Every slot is claimed: n rows, n slots, none twice.
    let memory_parents: Vec<u32> = (0..parent_rows)
        .flat_map(|p| std::iter::repeat_n(p as u32, (starts[p + 1] - starts[p]) as usize))
        .collect();
    let source = UInt32Array::from(source);
    let take = |c: &ArrayRef| compute::take(c, &source, None).map_err(|e| bad(e.to_string()));
    let mut out: Vec<ArrayRef> = Vec::with_capacity(columns.len() - 1);
    out.push(Arc::new(UInt32Array::new(
        ScalarBuffer::from(memory_parents),
        None,
    )));
    out.push(take(&columns[1])?);
    for c in &columns[3..] {
        out.push(take(c)?);
    }
    Ok(out)
}

/// The wire schema's extra columns of the spans table: after `trace_id` and after
/// `parent_span_id`.
pub(super) const TRACE_ORDINAL: &str = "trace_ordinal";
pub(super) const PARENT_ROW: &str = "parent_row";

/// Where the spans table's transformed columns are, by the names of a schema's columns.
struct SpanColumns {
    trace_id: usize,
    span_id: usize,
    parent_span_id: usize,
    start: usize,
    end: usize,
}

impl SpanColumns {
    fn find(names: &[&str]) -> Option<Self> {
        let at = |name| names.iter().position(|n| *n == name);
        Some(SpanColumns {
            trace_id: at(col::TRACE_ID)?,
            span_id: at(col::SPAN_ID)?,
            parent_span_id: at(col::PARENT_SPAN_ID)?,
            start: at(col::START_TIME_UNIX_NANO)?,
            end: at(col::END_TIME_UNIX_NANO)?,
        })
    }
}

/// Spans in wire form (`columns` in the memory schema's order, `names` its column names):
/// times as start deltas and durations in byte planes, repeated trace ids and parent span ids
/// found in the batch as references; the two reference columns inserted after the columns
/// they complete, as the wire schema has them.
pub(super) fn spans_to_wire(names: &[&str], columns: &mut Vec<ArrayRef>) -> Result<(), WireError> {
    let c = SpanColumns::find(names)
        .ok_or_else(|| WireError::encode("the spans table lacks an id or time column"))?;
    let (start, duration) = times_to_wire(
        columns[c.start].as_primitive::<UInt64Type>(),
        columns[c.end].as_primitive::<UInt64Type>(),
    );
    let (trace_ids, ordinals) = trace_ids_to_wire(columns[c.trace_id].as_fixed_size_binary())?;
    let (parents, parent_rows) = parents_to_wire(
        columns[c.span_id].as_fixed_size_binary(),
        columns[c.parent_span_id].as_fixed_size_binary(),
    )?;
    columns[c.start] = Arc::new(start);
    columns[c.end] = Arc::new(duration);
    columns[c.trace_id] = Arc::new(trace_ids);
    columns[c.parent_span_id] = Arc::new(parents);
    // The later column first, so the earlier index stays right.
    columns.insert(c.parent_span_id + 1, Arc::new(parent_rows));
    columns.insert(c.trace_id + 1, Arc::new(ordinals));
    Ok(())
}

/// Spans back from wire form (`names`: the wire schema's column names): the memory layout,
/// the reference columns removed. Checks every reference.
pub(super) fn spans_from_wire(
    names: &[&str],
    columns: &mut Vec<ArrayRef>,
) -> Result<(), WireError> {
    let bad = |what: String| WireError::malformed(format!("table Spans: {what}"));
    let at = |name| names.iter().position(|n| *n == name);
    let (Some(c), Some(o), Some(r)) = (SpanColumns::find(names), at(TRACE_ORDINAL), at(PARENT_ROW))
    else {
        return Err(bad("the wire schema lacks an id or time column".into()));
    };
    let (start, end) = times_from_wire(
        columns[c.start].as_primitive::<UInt64Type>(),
        columns[c.end].as_primitive::<UInt64Type>(),
    );
    let trace_ids = trace_ids_from_wire(
        columns[c.trace_id].as_fixed_size_binary(),
        columns[o].as_primitive::<UInt32Type>(),
    )
    .map_err(bad)?;
    let parents = parents_from_wire(
        columns[c.span_id].as_fixed_size_binary(),
        columns[c.parent_span_id].as_fixed_size_binary(),
        columns[r].as_primitive::<UInt32Type>(),
    )
    .map_err(bad)?;
    columns[c.start] = Arc::new(start);
    columns[c.end] = Arc::new(end);
    columns[c.trace_id] = Arc::new(trace_ids);
    columns[c.parent_span_id] = Arc::new(parents);
    // The later column first.
    columns.remove(r.max(o));
    columns.remove(r.min(o));
    Ok(())
}

/// (start, end) as they travel: the start as the zigzag-coded difference from the previous
/// row's start (spans of a batch start close together), the end as the duration
/// (`end - start`, wrapping), both in byte planes ([`byte_planes`]). Eight bytes of a time
/// become the two or three that vary.
fn times_to_wire(start: &UInt64Array, end: &UInt64Array) -> (UInt64Array, UInt64Array) {
    let mut previous = 0u64;
    let deltas = start.values().iter().map(|&t| {
        let d = t.wrapping_sub(previous) as i64;
        previous = t;
        ((d << 1) ^ (d >> 63)) as u64
    });
    let durations = end
        .values()
        .iter()
        .zip(start.values().iter())
        .map(|(&e, &s)| e.wrapping_sub(s));
    (
        byte_planes(deltas, start.len()),
        byte_planes(durations, end.len()),
    )
}

fn times_from_wire(start: &UInt64Array, duration: &UInt64Array) -> (UInt64Array, UInt64Array) {
    let mut previous = 0u64;
    let starts: Vec<u64> = from_byte_planes(start)
        .map(|z| {
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            previous = previous.wrapping_add(d as u64);
            previous
        })
        .collect();
    let ends: Vec<u64> = from_byte_planes(duration)
        .zip(&starts)
        .map(|(d, &s)| s.wrapping_add(d))
        .collect();
    (starts.into(), ends.into())
}

/// `n` values with their bytes regrouped by significance (every value's lowest byte, then
/// every second byte, ...: Parquet's BYTE_STREAM_SPLIT), read as u64s again. The high bytes of
/// small numbers become long runs of zeros, which the compressor removes whole; interleaved,
/// each value's zeros cost a match of their own.
fn byte_planes(values: impl Iterator<Item = u64>, n: usize) -> UInt64Array {
    let mut planes = vec![0u8; n * 8];
    for (i, v) in values.enumerate() {
        for (b, byte) in v.to_le_bytes().into_iter().enumerate() {
            planes[b * n + i] = byte;
        }
    }
    planes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect::<Vec<u64>>()
        .into()
}

fn from_byte_planes(planes: &UInt64Array) -> impl Iterator<Item = u64> + '_ {
    let n = planes.len();
    let bytes: &[u8] = planes.values().inner().as_slice();
    (0..n).map(move |i| {
        let mut v = [0u8; 8];
        for (b, byte) in v.iter_mut().enumerate() {
            *byte = bytes[b * n + i];
        }
        u64::from_le_bytes(v)
    })
}

/// `ids` with every id that appeared in an earlier row zeroed, and each row's ordinal: the
/// number of the distinct id in order of first appearance. Null rows stay null, ordinal 0.
fn trace_ids_to_wire(
    ids: &FixedSizeBinaryArray,
) -> Result<(FixedSizeBinaryArray, UInt32Array), WireError> {
    let width = ids.value_length() as usize;
    check_id_width(width)?;
    let mut seen: HashMap<u128, u32> = HashMap::with_capacity(ids.len() / 8 + 1);
    let mut values = vec![0u8; ids.len() * width];
    let mut ordinals = Vec::with_capacity(ids.len());
    for row in 0..ids.len() {
        if ids.is_null(row) {
            ordinals.push(0);
            continue;
        }
        let id = ids.value(row);
        let next = seen.len() as u32;
        let ordinal = *seen.entry(id_key(id)).or_insert(next);
        if ordinal == next {
            values[row * width..(row + 1) * width].copy_from_slice(id);
        }
        ordinals.push(ordinal);
    }
    let wire = FixedSizeBinaryArray::try_new(
        width as i32,
        Buffer::from_vec(values),
        ids.nulls().cloned(),
    )?;
    Ok((wire, UInt32Array::from(ordinals)))
}

fn trace_ids_from_wire(
    wire: &FixedSizeBinaryArray,
    ordinals: &UInt32Array,
) -> Result<FixedSizeBinaryArray, String> {
    let width = wire.value_length() as usize;
    let mut firsts: Vec<usize> = Vec::new(); // ordinal -> the row that carries the id
    let mut values = vec![0u8; wire.len() * width];
    for (row, &ordinal) in ordinals.values().iter().enumerate() {
        if wire.is_null(row) {
            if ordinal != 0 {
                return Err(format!("row {row}: a null trace id with ordinal {ordinal}"));
            }
            continue;
        }
        let source = match (ordinal as usize).cmp(&firsts.len()) {
            std::cmp::Ordering::Equal => {
                firsts.push(row);
                row
            }
            std::cmp::Ordering::Less => firsts[ordinal as usize],
            std::cmp::Ordering::Greater => {
                return Err(format!(
                    "row {row}: trace ordinal {ordinal} before trace {} appeared",
                    firsts.len()
                ));
            }
        };
        values[row * width..(row + 1) * width].copy_from_slice(wire.value(source));
    }
    FixedSizeBinaryArray::try_new(
        width as i32,
        Buffer::from_vec(values),
        wire.nulls().cloned(),
    )
    .map_err(|e| e.to_string())
}

/// `parents` with every parent span id that is the span id of a row of the batch zeroed,
/// and the row (+ 1) in the reference column; 0 where the bytes stay. The first row with a
/// span id is the one named when several rows share it.
fn parents_to_wire(
    span_ids: &FixedSizeBinaryArray,
    parents: &FixedSizeBinaryArray,
) -> Result<(FixedSizeBinaryArray, UInt32Array), WireError> {
    let width = parents.value_length() as usize;
    check_id_width(width)?;
    if span_ids.value_length() as usize != width {
        // Keys are zero-padded: ids of two widths could compare equal.
        return Err(WireError::encode(
            "span_id and parent_span_id differ in width",
        ));
    }
    let mut rows: HashMap<u128, u32> = HashMap::with_capacity(span_ids.len());
    for row in 0..span_ids.len() {
        if span_ids.is_valid(row) {
            rows.entry(id_key(span_ids.value(row)))
                .or_insert(row as u32);
        }
    }
    let mut values = vec![0u8; parents.len() * width];
    let mut refs = Vec::with_capacity(parents.len());
    for row in 0..parents.len() {
        let found = if parents.is_valid(row) {
            rows.get(&id_key(parents.value(row))).copied()
        } else {
            None
        };
        match found {
            Some(r) => refs.push(r + 1),
            None => {
                if parents.is_valid(row) {
                    values[row * width..(row + 1) * width].copy_from_slice(parents.value(row));
                }
                refs.push(0);
            }
        }
    }
    let wire = FixedSizeBinaryArray::try_new(
        width as i32,
        Buffer::from_vec(values),
        parents.nulls().cloned(),
    )?;
    Ok((wire, UInt32Array::from(refs)))
}

fn parents_from_wire(
    span_ids: &FixedSizeBinaryArray,
    wire: &FixedSizeBinaryArray,
    refs: &UInt32Array,
) -> Result<FixedSizeBinaryArray, String> {
    let width = wire.value_length() as usize;
    if span_ids.value_length() as usize != width {
        return Err("span_id and parent_span_id differ in width".into());
    }
    let mut values = vec![0u8; wire.len() * width];
    for (row, &r) in refs.values().iter().enumerate() {
        let out = &mut values[row * width..(row + 1) * width];
        if r == 0 {
            if wire.is_valid(row) {
                out.copy_from_slice(wire.value(row));
            }
            continue;
        }
        let source = (r - 1) as usize;
        if wire.is_null(row) {
            return Err(format!(
                "row {row}: a null parent span id refers to row {source}"
            ));
        }
        if source >= span_ids.len() || span_ids.is_null(source) {
            return Err(format!(
                "row {row}: parent_row {r} names no span id ({} rows)",
                span_ids.len()
            ));
        }
        out.copy_from_slice(span_ids.value(source));
    }
    FixedSizeBinaryArray::try_new(
        width as i32,
        Buffer::from_vec(values),
        wire.nulls().cloned(),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(width: i32, rows: &[Option<&[u8]>]) -> FixedSizeBinaryArray {
        FixedSizeBinaryArray::try_from_sparse_iter_with_size(rows.iter().copied(), width).unwrap()
    }

    #[test]
    fn repeated_trace_ids_cross_once() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let memory = ids(
            16,
            &[Some(&a), Some(&b), None, Some(&a), Some(&b), Some(&a)],
        );
        let (wire, ordinals) = trace_ids_to_wire(&memory).unwrap();
        assert_eq!(ordinals.values().as_ref(), &[0, 1, 0, 0, 1, 0]);
        assert_eq!(wire.value(0), &a);
        assert_eq!(wire.value(1), &b);
        assert!(wire.is_null(2));
        for row in [3, 4, 5] {
            assert_eq!(wire.value(row), &[0u8; 16], "row {row} is a reference");
        }
        assert_eq!(trace_ids_from_wire(&wire, &ordinals).unwrap(), memory);
    }

    #[test]
    fn a_trace_ordinal_ahead_of_the_ids_seen_is_refused() {
        let wire = ids(16, &[Some(&[1; 16]), Some(&[0; 16])]);
        let e = trace_ids_from_wire(&wire, &UInt32Array::from(vec![0, 2])).unwrap_err();
        assert!(
            e.contains("row 1: trace ordinal 2 before trace 1 appeared"),
            "{e}"
        );
        let wire = ids(16, &[None]);
        let e = trace_ids_from_wire(&wire, &UInt32Array::from(vec![3])).unwrap_err();
        assert!(e.contains("a null trace id with ordinal 3"), "{e}");
    }

    #[test]
    fn parents_in_the_batch_cross_as_rows() {
        let spans = ids(8, &[Some(&[1; 8]), Some(&[2; 8]), None, Some(&[1; 8])]);
        // a child of row 1, a root, a parent outside the batch, a child of the first [1; 8]
        let parents = ids(8, &[Some(&[2; 8]), None, Some(&[7; 8]), Some(&[1; 8])]);
        let (wire, rows) = parents_to_wire(&spans, &parents).unwrap();
        assert_eq!(rows.values().as_ref(), &[2, 0, 0, 1]);
        assert_eq!(wire.value(0), &[0u8; 8]);
        assert!(wire.is_null(1));
        assert_eq!(wire.value(2), &[7u8; 8]);
        assert_eq!(parents_from_wire(&spans, &wire, &rows).unwrap(), parents);
    }

    #[test]
    fn a_parent_row_without_a_span_id_is_refused() {
        let spans = ids(8, &[Some(&[1; 8]), None]);
        let wire = ids(8, &[Some(&[0; 8]), Some(&[0; 8])]);
        for (refs, want) in [
            (vec![0, 3], "row 1: parent_row 3 names no span id (2 rows)"),
            (vec![2, 0], "row 0: parent_row 2 names no span id (2 rows)"),
        ] {
            let e = parents_from_wire(&spans, &wire, &UInt32Array::from(refs)).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let wire = ids(8, &[None, Some(&[0; 8])]);
        let e = parents_from_wire(&spans, &wire, &UInt32Array::from(vec![1, 0])).unwrap_err();
        assert!(e.contains("a null parent span id refers to row 0"), "{e}");
    }
}
