//! How tables are laid out on the wire when that differs from memory, and back.
//!
//! - **Attribute tables** travel sorted by key (stable: within a key, in memory order, so by
//!   parent), with `parent_id` delta-coded within each run of one key and a `position` column
//!   (the row's index among its parent's attributes) to put every row back where it was.
//!   Sorted by key, a column holds one attribute's values together (all the `http.route`s,
//!   then all the `url.full`s), so the key and type columns become runs and similar values sit
//!   side by side for the compressor: about 5 bytes less per span on `sluice loadgen`
//!   traffic (BENCHMARKS.md, "Arrow Flight hop").
//! - **Spans** carry `end_time_unix_nano` as the duration (`end - start`, wrapping), a number
//!   with fewer significant bytes.
//!
//! Both are exact: the receiver restores the memory layout bit for bit, and checks what it
//! is given (every row lands on a distinct slot of its parent).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, UInt32Array};
use arrow::buffer::ScalarBuffer;
use arrow::compute;
use arrow::datatypes::{UInt32Type, UInt64Type};

use super::WireError;
use crate::schema::{Table, col};

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

/// Spans in wire form: `end_time_unix_nano` replaced by `end - start` (wrapping).
pub(super) fn spans_to_wire(schema_columns: &[&str], columns: &mut [ArrayRef]) {
    map_end(schema_columns, columns, u64::wrapping_sub);
}

/// Spans back from wire form.
pub(super) fn spans_from_wire(schema_columns: &[&str], columns: &mut [ArrayRef]) {
    map_end(schema_columns, columns, u64::wrapping_add);
}

fn map_end(names: &[&str], columns: &mut [ArrayRef], f: fn(u64, u64) -> u64) {
    let at = |name| names.iter().position(|n| *n == name);
    let (Some(s), Some(e)) = (at(col::START_TIME_UNIX_NANO), at(col::END_TIME_UNIX_NANO)) else {
        return;
    };
    let start = columns[s].as_primitive::<UInt64Type>();
    let end = columns[e].as_primitive::<UInt64Type>();
    let mapped: arrow::array::UInt64Array =
        compute::binary(end, start, f).expect("two columns of one batch have the same length");
    columns[e] = Arc::new(mapped);
}
