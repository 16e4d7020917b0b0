//! Kernels over attribute tables.
//!
//! Every attribute table has the schema [`attrs_schema`]: `parent_id` (the owner's row in the
//! parent table), `key` (dictionary-encoded UTF-8), `type` ([`AnyValueType`]) and one nullable
//! value column per type (`str`, `int`, `double`, `bool`, `bytes`). Rows are sorted by
//! `parent_id`, so "the attributes of parent p" is a contiguous run. Every kernel here takes a
//! table with that invariant and returns one with it (rows of a parent keep their order; an
//! inserted attribute goes at the end of its parent's run, as `pcommon.Map.PutEmpty` appends).
//!
//! # API
//!
//! Selecting rows and parents:
//! - [`KeySet`]: a set of keys, built once at config load.
//! - [`key_mask`]: a row mask from a predicate on the key. The predicate runs once per
//!   distinct key in the dictionary, then one gather over the key indices gives the row mask:
//!   `key_mask(attrs, |k| k == "http.url")`, `key_mask(attrs, |k| re.is_match(k))`.
//! - [`rows_of_parents`]: the rows whose parent is selected by a mask over the parent table
//!   (the compiled `where` clause of an OTTL statement, an include/exclude match).
//!
//! Removing rows (one filter over every column; order kept):
//! - [`delete_rows`]: drop the rows of a mask; the primitive behind the next four.
//! - [`delete_keys`] / [`delete_matching_keys`]: drop rows whose key is in a set / matches a
//!   regex (OTTL `delete_key`, `delete_matching_keys`; the Collector's `delete` action).
//! - [`keep_keys`]: drop rows whose key is not in a set (OTTL `keep_keys`).
//! - [`limit_keys`]: keep at most `limit` attributes per parent, priority keys first (OTTL
//!   `limit`).
//!
//! Each takes `parents: Option<&BooleanArray>`: `None` acts on every parent; `Some(mask)`
//! (one entry per parent row, null = false) acts only on the selected parents' rows.
//!
//! Writing values:
//! - [`AnyValues`]: typed values as columns (`types`, null where there is no value, plus the
//!   five value columns), either one value for every parent ([`Values::Scalar`], from
//!   [`AnyValues::scalar`]) or one per parent row ([`Values::PerParent`], from
//!   [`AnyValues::from_strings`], [`AnyValues::from_ints`], [`AnyValues::from_doubles`],
//!   [`AnyValues::from_bools`], or [`lookup`] of another key).
//! - [`set_key`] with [`SetMode::Insert`] (only where the key is absent: the Collector's
//!   `insert`), [`SetMode::Update`] (only where present: `update`), [`SetMode::Upsert`]
//!   (`upsert`, OTTL `set(attributes["k"], ...)`). A parent whose value is null is left alone,
//!   as the Collector leaves a span alone when `from_attribute` is absent. Other rows are not
//!   touched. One pass builds an index list, then one interleave per column.
//! - [`set_keys`]: [`set_key`] for several keys in one rebuild (consecutive `insert`/`upsert`
//!   actions with values, a detected resource merged into every resource).
//! - [`lookup`]: the typed value of key K for every parent row (null where absent): the
//!   source of `from_attribute`, and of any OTTL expression that reads `attributes["k"]`.
//! - [`insert_strings`]: many string attributes per parent, each added where the parent lacks
//!   the key (optionally also where its value is empty), in one rebuild: what an enrichment
//!   that looks each parent up somewhere (`k8sattributes`' pod cache) produces, as
//!   [`StringsPerParent`].
//!
//! Per-row by nature (each value is hashed, parsed or matched on its own; no heap allocation
//! per row: hex goes through a stack buffer, regex captures reuse one location buffer):
//! - [`hash_rows`]: SHA-256 hex of each selected value, exactly as the Collector's `hash`
//!   action (`sha2Hasher` in `internal/coreinternal/attraction`: SHA-256 since v0.75, SHA-1
//!   before): a string hashes its UTF-8 bytes, a bool one byte (1/0), an int or double its
//!   8 little-endian bytes; any other type becomes the empty string.
//! - [`convert_rows`]: the Collector's `convert` action (`string`, `int`, `double`).
//! - [`as_strings`]: every value in its `pcommon` `AsString` form (what `services` and
//!   `log_bodies` matching compare against).
//! - [`extract`]: a regex with named groups over a key's string value, one string column per
//!   group (the Collector's `extract` action upserts each).
//!
//! # Duplicate keys
//!
//! OTLP forbids a key twice in one attribute list but does not stop a sender from doing it.
//! [`lookup`] reads the first row of the key; [`set_key`] updates every row of the key (so the
//! copies stay equal) and inserts nothing where the key exists; deletes remove every row.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, DictionaryArray, Float64Array, Int64Array,
    RecordBatch, StringArray, StringBuilder, UInt8Array, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute;
use arrow::datatypes::UInt32Type;
use arrow::error::ArrowError;
use base64::Engine as _;
use hashbrown::HashSet;
use prost::Message as _;
use regex::Regex;
use sha2::{Digest, Sha256};

use super::ranges::{self, Run};
use crate::payload::PendingRows;
use crate::schema::AnyValueType;
#[cfg(doc)]
use crate::schema::attrs_schema;

/// Column positions in [`attrs_schema`].
mod idx {
    pub const PARENT_ID: usize = 0;
    pub const KEY: usize = 1;
    /// `type`, then `str`, `int`, `double`, `bool`, `bytes`: the six value columns.
    pub const TYPE: usize = 2;
    pub const VALUES: std::ops::Range<usize> = 2..8;
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("{what} has {got} rows, expected {expected}")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("attribute table has parent_id {parent_id}, but the parent table has {parents} rows")]
    ParentOutOfRange { parent_id: u32, parents: usize },
}

pub type Result<T> = std::result::Result<T, KernelError>;

/// A set of attribute keys, built once (at config load) and checked once per distinct key of
/// a table's dictionary.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashSet<String>,
}

impl KeySet {
    pub fn new<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> Self {
        KeySet {
            keys: keys.into_iter().map(Into::into).collect(),
        }
    }
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl<S: Into<String>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        KeySet::new(iter)
    }
}

// ---------------------------------------------------------------------------------------------
// Column access
// ---------------------------------------------------------------------------------------------

/// The `parent_id` values of an attribute table.
pub fn parent_ids(attrs: &RecordBatch) -> &[u32] {
    attrs
        .column(idx::PARENT_ID)
        .as_primitive::<UInt32Type>()
        .values()
}

/// The `key` column of an attribute table.
pub fn keys(attrs: &RecordBatch) -> &DictionaryArray<UInt32Type> {
    attrs.column(idx::KEY).as_dictionary::<UInt32Type>()
}

/// The `type` column of an attribute table.
pub fn types(attrs: &RecordBatch) -> &UInt8Array {
    attrs
        .column(idx::TYPE)
        .as_primitive::<arrow::datatypes::UInt8Type>()
}

/// `true` for every row whose key satisfies `pred`. `pred` is called once per dictionary
/// value (distinct key), never per row; the row mask is one gather over the key indices.
pub fn key_mask(attrs: &RecordBatch, mut pred: impl FnMut(&str) -> bool) -> BooleanArray {
    let keys = keys(attrs);
    let dict = keys.values().as_string::<i32>();
    let hit: Vec<bool> = (0..dict.len())
        .map(|i| dict.is_valid(i) && pred(dict.value(i)))
        .collect();
    let ids = keys.keys();
    // Keys are non-null by schema; a null key (never produced by sluice) matches nothing.
    let buf = BooleanBuffer::collect_bool(ids.len(), |i| {
        ids.is_valid(i) && hit.get(ids.value(i) as usize).copied().unwrap_or(false)
    });
    BooleanArray::new(buf, None)
}

/// A parent mask as a plain bit buffer (null = not selected), checked against the number of
/// parents when that is known.
fn parent_bits(parents: &BooleanArray) -> BooleanBuffer {
    match parents.nulls() {
        Some(n) => parents.values() & n.inner(),
        None => parents.values().clone(),
    }
}

/// Checks that every `parent_id` is below `num_parents` (the table is sorted, so the last is
/// the largest).
fn check_parents(attrs: &RecordBatch, num_parents: usize) -> Result<()> {
    match parent_ids(attrs).last() {
        Some(&last) if last as usize >= num_parents => Err(KernelError::ParentOutOfRange {
            parent_id: last,
            parents: num_parents,
        }),
        _ => Ok(()),
    }
}

/// The rows whose parent is selected by `parents` (one entry per parent row, null = false).
pub fn rows_of_parents(attrs: &RecordBatch, parents: &BooleanArray) -> Result<BooleanArray> {
    check_parents(attrs, parents.len())?;
    let bits = parent_bits(parents);
    let ids = parent_ids(attrs);
    Ok(BooleanArray::new(
        BooleanBuffer::collect_bool(ids.len(), |i| bits.value(ids[i] as usize)),
        None,
    ))
}

/// `rows AND (row's parent selected)`, or `rows` when every parent is selected.
fn restrict(
    attrs: &RecordBatch,
    rows: BooleanArray,
    parents: Option<&BooleanArray>,
) -> Result<BooleanArray> {
    match parents {
        None => Ok(rows),
        Some(p) => Ok(compute::and(&rows, &rows_of_parents(attrs, p)?)?),
    }
}

// ---------------------------------------------------------------------------------------------
// Removing rows
// ---------------------------------------------------------------------------------------------

/// Drops the rows where `delete` is true (null = keep). Order is kept, so the table stays
/// sorted by `parent_id`. Returns the input (no copy) when nothing is deleted.
pub fn delete_rows(attrs: &RecordBatch, delete: &BooleanArray) -> Result<RecordBatch> {
    if delete.len() != attrs.num_rows() {
        return Err(KernelError::Length {
            what: "row mask",
            got: delete.len(),
            expected: attrs.num_rows(),
        });
    }
    let delete = parent_bits(delete);
    if delete.count_set_bits() == 0 {
        return Ok(attrs.clone());
    }
    let keep = !&delete;
    let runs: Vec<Run> = keep
        .set_slices()
        .map(|(start, end)| Run {
            src: 0,
            start,
            len: end - start,
        })
        .collect();
    Ok(rebuild::gather_rows(attrs, &runs)?)
}

/// [`delete_keys`], [`keep_keys`] and [`delete_matching_keys`] on a table whose rebuild is
/// pending: drops the rows whose key satisfies `delete_key` (judged once per dictionary value)
/// and whose parent (new numbering) is selected by `parents`, by narrowing the runs. Nothing
/// is copied: the rebuild stays pending (see [`PendingRows`]).
pub fn delete_pending(
    rows: &PendingRows,
    mut delete_key: impl FnMut(&str) -> bool,
    parents: Option<&BooleanArray>,
) -> Result<PendingRows> {
    let base = rows.base();
    let dict = keys(base);
    let dict_values = dict.values().as_string::<i32>();
    let hit: Vec<bool> = (0..dict_values.len())
        .map(|i| dict_values.is_valid(i) && delete_key(dict_values.value(i)))
        .collect();
    if !hit.iter().any(|h| *h) {
        return Ok(rows.narrowed(rows.runs().to_vec()));
    }
    let selected = parents.map(parent_bits);
    let ids = parent_ids(base);
    let key_ids = dict.keys();
    let key_values = key_ids.values();
    let null_keys = key_ids.null_count() > 0;
    // Most rows are kept: runs are cut only at deleted rows.
    let mut runs: Vec<Run> = Vec::with_capacity(rows.runs().len() + 16);
    for run in rows.runs() {
        let mut from = run.start;
        for r in run.start..run.start + run.len {
            // Keys are non-null by schema; a null key (never produced by sluice) is kept.
            if !hit.get(key_values[r] as usize).copied().unwrap_or(false)
                || (null_keys && key_ids.is_null(r))
            {
                continue;
            }
            if let Some(s) = &selected {
                let p = rows.parent_of(ids, r) as usize;
                if p >= s.len() {
                    return Err(KernelError::ParentOutOfRange {
                        parent_id: p as u32,
                        parents: s.len(),
                    });
                }
                if !s.value(p) {
                    continue;
                }
            }
            push_run(&mut runs, 0, from, r - from);
            from = r + 1;
        }
        push_run(&mut runs, 0, from, run.start + run.len - from);
    }
    Ok(rows.narrowed(runs))
}

/// Deletes every attribute whose key is in `keys` (of the selected parents).
pub fn delete_keys(
    attrs: &RecordBatch,
    keys: &KeySet,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let rows = restrict(attrs, key_mask(attrs, |k| keys.contains(k)), parents)?;
    delete_rows(attrs, &rows)
}

/// Deletes every attribute whose key matches `pattern` (unanchored, as Go's `MatchString`
/// and OTTL's `delete_matching_keys`; anchor the pattern to match whole keys).
pub fn delete_matching_keys(
    attrs: &RecordBatch,
    pattern: &Regex,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let rows = restrict(attrs, key_mask(attrs, |k| pattern.is_match(k)), parents)?;
    delete_rows(attrs, &rows)
}

/// Keeps only the attributes whose key is in `keys` (of the selected parents; the others keep
/// everything).
pub fn keep_keys(
    attrs: &RecordBatch,
    keys: &KeySet,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let rows = restrict(attrs, key_mask(attrs, |k| !keys.contains(k)), parents)?;
    delete_rows(attrs, &rows)
}

/// Keeps at most `limit` attributes per selected parent, as OTTL `limit`: attributes whose key
/// is in `priority` are kept first, then the others in order until `limit` is reached. Kept
/// attributes stay in their original order.
///
/// One scan of each parent's run (sorted table: runs are contiguous), two passes over the run:
/// count its priority keys, then mark the rows past the budget.
pub fn limit_keys(
    attrs: &RecordBatch,
    limit: usize,
    priority: &KeySet,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    if let Some(p) = parents {
        check_parents(attrs, p.len())?;
    }
    let selected = parents.map(parent_bits);
    let is_priority = key_mask(attrs, |k| priority.contains(k));
    let is_priority = is_priority.values();
    let ids = parent_ids(attrs);
    let mut delete = vec![false; ids.len()];
    let mut start = 0;
    while start < ids.len() {
        let p = ids[start];
        let end = start + ids[start..].iter().take_while(|&&x| x == p).count();
        if selected.as_ref().is_none_or(|s| s.value(p as usize)) && end - start > limit {
            let prio = (start..end).filter(|&i| is_priority.value(i)).count();
            let mut budget = limit.saturating_sub(prio);
            let mut prio_budget = limit;
            for (i, d) in delete.iter_mut().enumerate().take(end).skip(start) {
                if is_priority.value(i) {
                    *d = prio_budget == 0;
                    prio_budget = prio_budget.saturating_sub(1);
                } else {
                    *d = budget == 0;
                    budget = budget.saturating_sub(1);
                }
            }
        }
        start = end;
    }
    delete_rows(attrs, &BooleanArray::from(delete))
}

// ---------------------------------------------------------------------------------------------
// Typed values as columns
// ---------------------------------------------------------------------------------------------

/// One attribute value, as written in config (`value:` of an action, an OTTL literal).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// Typed values as columns, in the attribute tables' layout: `types` holds the
/// [`AnyValueType`] (null = no value), and the value column for that type holds the value.
#[derive(Clone, Debug)]
pub struct AnyValues {
    pub types: UInt8Array,
    pub str: StringArray,
    pub int: Int64Array,
    pub double: Float64Array,
    pub bool: BooleanArray,
    pub bytes: BinaryArray,
}

impl AnyValues {
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Whether row `i` has a value.
    pub fn is_present(&self, i: usize) -> bool {
        self.types.is_valid(i)
    }

    /// The type of row `i`, `None` where there is no value.
    pub fn value_type(&self, i: usize) -> Option<AnyValueType> {
        self.types
            .is_valid(i)
            .then(|| AnyValueType::from_u8(self.types.value(i)))
            .flatten()
    }

    /// The six columns in attribute-table order (`type`, `str`, `int`, `double`, `bool`,
    /// `bytes`).
    fn columns(&self) -> [&dyn Array; 6] {
        [
            &self.types,
            &self.str,
            &self.int,
            &self.double,
            &self.bool,
            &self.bytes,
        ]
    }

    /// Six columns in the layout of [`crate::schema::any_value_fields`] (an attribute table's
    /// value columns, or the logs table's `body_*` columns). Their types are fixed by the
    /// schema; a wrong type is a programming error and panics.
    pub fn from_columns(cols: &[ArrayRef]) -> AnyValues {
        AnyValues {
            types: cols[0].as_primitive().clone(),
            str: cols[1].as_string().clone(),
            int: cols[2].as_primitive().clone(),
            double: cols[3].as_primitive().clone(),
            bool: cols[4].as_boolean().clone(),
            bytes: cols[5].as_binary().clone(),
        }
    }

    /// One row holding `value`.
    pub fn scalar(value: &Scalar) -> AnyValues {
        match value {
            Scalar::Str(s) => AnyValues::from_strings(StringArray::from(vec![s.as_str()])),
            Scalar::Int(i) => AnyValues::from_ints(Int64Array::from(vec![*i])),
            Scalar::Double(d) => AnyValues::from_doubles(Float64Array::from(vec![*d])),
            Scalar::Bool(b) => AnyValues::from_bools(BooleanArray::from(vec![*b])),
            Scalar::Bytes(b) => AnyValues::from_bytes(BinaryArray::from(vec![b.as_slice()])),
        }
    }

    /// `len` rows with no value.
    pub fn nulls(len: usize) -> AnyValues {
        AnyValues {
            types: UInt8Array::new_null(len),
            str: StringArray::new_null(len),
            int: Int64Array::new_null(len),
            double: Float64Array::new_null(len),
            bool: BooleanArray::new_null(len),
            bytes: BinaryArray::new_null(len),
        }
    }

    /// The `types` column for `values`: `ty` where valid, null elsewhere (shares the null
    /// buffer, no per-row work).
    fn types_like(values: &dyn Array, ty: AnyValueType) -> UInt8Array {
        UInt8Array::new(vec![ty as u8; values.len()].into(), values.logical_nulls())
    }

    /// String values, one per row (null = no value).
    pub fn from_strings(values: StringArray) -> AnyValues {
        let mut v = AnyValues::nulls(values.len());
        v.types = AnyValues::types_like(&values, AnyValueType::Str);
        v.str = values;
        v
    }

    /// Int values, one per row (null = no value).
    pub fn from_ints(values: Int64Array) -> AnyValues {
        let mut v = AnyValues::nulls(values.len());
        v.types = AnyValues::types_like(&values, AnyValueType::Int);
        v.int = values;
        v
    }

    /// Double values, one per row (null = no value).
    pub fn from_doubles(values: Float64Array) -> AnyValues {
        let mut v = AnyValues::nulls(values.len());
        v.types = AnyValues::types_like(&values, AnyValueType::Double);
        v.double = values;
        v
    }

    /// Bool values, one per row (null = no value).
    pub fn from_bools(values: BooleanArray) -> AnyValues {
        let mut v = AnyValues::nulls(values.len());
        v.types = AnyValues::types_like(&values, AnyValueType::Bool);
        v.bool = values;
        v
    }

    /// Bytes values, one per row (null = no value).
    pub fn from_bytes(values: BinaryArray) -> AnyValues {
        let mut v = AnyValues::nulls(values.len());
        v.types = AnyValues::types_like(&values, AnyValueType::Bytes);
        v.bytes = values;
        v
    }

    /// The value columns of an attribute table, one value per attribute row.
    pub fn of_rows(attrs: &RecordBatch) -> AnyValues {
        AnyValues::from_columns(&attrs.columns()[idx::VALUES])
    }
}

/// Where [`set_key`] takes its values from.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// The same value for every parent: row 0 of a one-row [`AnyValues`] (build it once with
    /// [`AnyValues::scalar`]).
    Scalar(&'a AnyValues),
    /// One value per parent row; a null type = no value there, that parent is left alone.
    PerParent(&'a AnyValues),
}

/// What [`set_key`] does where the key exists and where it does not.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SetMode {
    /// Add the key where it is absent; leave existing values alone.
    Insert,
    /// Overwrite the key where it exists; add nothing.
    Update,
    /// Overwrite where it exists, add where absent.
    Upsert,
}

/// The typed value of `key` for every parent row (`num_parents` rows), null where the parent
/// has no such attribute. One gather per value column.
pub fn lookup(attrs: &RecordBatch, num_parents: usize, key: &str) -> Result<AnyValues> {
    check_parents(attrs, num_parents)?;
    let hit = key_mask(attrs, |k| k == key);
    let ids = parent_ids(attrs);
    let mut first = vec![u32::MAX; num_parents];
    for row in hit.values().set_indices() {
        let slot = &mut first[ids[row] as usize];
        // The first row of a duplicated key wins.
        if *slot == u32::MAX {
            *slot = row as u32;
        }
    }
    let take_idx: UInt32Array = first
        .iter()
        .map(|&r| (r != u32::MAX).then_some(r))
        .collect();
    let cols = attrs.columns()[idx::VALUES]
        .iter()
        .map(|c| compute::take(c.as_ref(), &take_idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(AnyValues::from_columns(&cols))
}

/// For each of `keys`, the first row holding it for every parent row (`num_parents` rows),
/// `u32::MAX` where the parent has no such attribute: the row index behind `lookup`, for many
/// keys in one pass. Keys are judged once per dictionary value; the pass over the rows is one
/// table lookup per row. (Added for OTTL, whose conditions read several keys of one table and
/// compare them in place rather than copying their values out.)
pub fn first_rows_of_keys(
    attrs: &RecordBatch,
    num_parents: usize,
    keys: &[String],
) -> Vec<Vec<u32>> {
    let all = ranges::runs_of_len(attrs.num_rows());
    first_rows_in(attrs, &all, None, num_parents, keys)
}

/// [`first_rows_of_keys`] of pending rows ([`PendingRows`]), without building them: rows of
/// the pending table's base, parents in the new numbering.
pub fn first_rows_of_keys_pending(
    rows: &PendingRows,
    num_parents: usize,
    keys: &[String],
) -> Vec<Vec<u32>> {
    let new_ids = rows.new_ids().map(|m| m.as_slice());
    first_rows_in(rows.base(), rows.runs(), new_ids, num_parents, keys)
}

/// The rows `runs` of `attrs`, their parent ids mapped through `new_ids`, as
/// [`first_rows_of_keys`] reads them.
fn first_rows_in(
    attrs: &RecordBatch,
    runs: &[Run],
    new_ids: Option<&[u32]>,
    num_parents: usize,
    keys: &[String],
) -> Vec<Vec<u32>> {
    let mut out = vec![vec![u32::MAX; num_parents]; keys.len()];
    if keys.is_empty() || runs.is_empty() {
        return out;
    }
    let dict = self::keys(attrs);
    let values = dict.values().as_string::<i32>();
    // dictionary index -> slot in `keys` (u32::MAX: not wanted)
    let slot_of: Vec<u32> = (0..values.len())
        .map(|i| {
            if values.is_null(i) {
                return u32::MAX;
            }
            let v = values.value(i);
            keys.iter()
                .position(|k| k == v)
                .map_or(u32::MAX, |p| p as u32)
        })
        .collect();
    if slot_of.iter().all(|s| *s == u32::MAX) {
        return out;
    }
    let ids = parent_ids(attrs);
    let key_idx = dict.keys().values();
    for run in runs {
        let rows = run.start..run.start + run.len;
        for (row, &k) in rows.clone().zip(&key_idx[rows]) {
            let slot = slot_of.get(k as usize).copied().unwrap_or(u32::MAX);
            if slot == u32::MAX {
                continue;
            }
            let p = ids[row];
            let p = new_ids.map_or(p, |m| m[p as usize]);
            if let Some(cell) = out[slot as usize].get_mut(p as usize)
                && *cell == u32::MAX
            {
                *cell = row as u32;
            }
        }
    }
    out
}

/// Inserts, updates or upserts attribute `key` (see [`SetMode`]) on the selected parents
/// (`parents`: one entry per parent row, null = false; `None` = all `num_parents`), with values
/// from `values`. Rows of other keys and of unselected parents are untouched; an inserted row
/// goes at the end of its parent's run.
///
/// The key is judged once per dictionary value, the rows holding it are found with one pass
/// over the key indices, and the output is spliced from runs of old rows and the new values
/// ([`rebuild`]): the parent and key columns only where rows are inserted, the value columns
/// with their validity derived from `type`. An inserted key already in the dictionary reuses
/// its entry.
pub fn set_key(
    attrs: &RecordBatch,
    num_parents: usize,
    parents: Option<&BooleanArray>,
    key: &str,
    values: Values<'_>,
    mode: SetMode,
) -> Result<RecordBatch> {
    let side = KeySide {
        parent_col: attrs.column(idx::PARENT_ID).as_primitive().clone(),
        key_col: attrs.column(idx::KEY).clone(),
        values: attrs,
        view: None,
    };
    set_keys_on(side, num_parents, parents, &[(key, values)], mode, || {
        attrs.clone()
    })
}

/// [`set_key`] for several keys at once, with the same `mode` and `parents`: one rebuild of the
/// table instead of one per key, and the result of calling [`set_key`] for each `(key, values)`
/// in turn (a parent's inserted rows in the order of `sets`). A key given twice is set in turn,
/// key by key, as that order then matters.
pub fn set_keys(
    attrs: &RecordBatch,
    num_parents: usize,
    parents: Option<&BooleanArray>,
    sets: &[(&str, Values<'_>)],
    mode: SetMode,
) -> Result<RecordBatch> {
    let distinct = sets
        .iter()
        .enumerate()
        .all(|(i, (k, _))| sets[..i].iter().all(|(earlier, _)| earlier != k));
    if !distinct {
        let mut out = attrs.clone();
        for (key, values) in sets {
            out = set_key(&out, num_parents, parents, key, *values, mode)?;
        }
        return Ok(out);
    }
    let side = KeySide {
        parent_col: attrs.column(idx::PARENT_ID).as_primitive().clone(),
        key_col: attrs.column(idx::KEY).clone(),
        values: attrs,
        view: None,
    };
    set_keys_on(side, num_parents, parents, sets, mode, || attrs.clone())
}

/// [`set_key`] on an attribute table whose rebuild is pending ([`PendingRows`]): one rebuild
/// that gathers the kept rows' values from the pending table's base and splices the new ones
/// in, instead of building the pending table and then rebuilding it again. Only the parent
/// and key columns of the pending rows are gathered first (four bytes a row each).
pub fn set_key_pending(
    rows: &PendingRows,
    num_parents: usize,
    parents: Option<&BooleanArray>,
    key: &str,
    values: Values<'_>,
    mode: SetMode,
) -> Result<RecordBatch> {
    let base = rows.base();
    let base_keys = keys(base);
    if base_keys.null_count() > 0 {
        // Never produced by sluice (keys are non-null by schema): the plain way.
        return set_key(rows.build(), num_parents, parents, key, values, mode);
    }
    let len = rows.num_rows();
    let mut ids = ranges::copy_runs(&[parent_ids(base)], rows.runs(), len);
    if let Some(m) = rows.new_ids() {
        ids.iter_mut().for_each(|p| *p = m[*p as usize]);
    }
    let key_idx = ranges::copy_runs(&[base_keys.keys().values().as_ref()], rows.runs(), len);
    // SAFETY: every index is one of the base table's, valid for the same dictionary values.
    let key_col = unsafe {
        DictionaryArray::<UInt32Type>::new_unchecked(
            UInt32Array::new(ScalarBuffer::from(key_idx), None),
            base_keys.values().clone(),
        )
    };
    let side = KeySide {
        parent_col: UInt32Array::new(ScalarBuffer::from(ids), None),
        key_col: Arc::new(key_col),
        values: base,
        view: Some(rows.runs()),
    };
    set_keys_on(side, num_parents, parents, &[(key, values)], mode, || {
        rows.build().clone()
    })
}

/// The key side of an attribute table for [`set_key`]: its parent and key columns, and where
/// its rows' values are: `values` itself, or the rows `view` of it (a pending table).
struct KeySide<'a> {
    parent_col: UInt32Array,
    key_col: ArrayRef,
    values: &'a RecordBatch,
    view: Option<&'a [Run]>,
}

/// A row [`set_keys_on`] inserts: before old row `at`, for `parent`, the value of set `set`
/// from its source row `src`.
#[derive(Clone, Copy)]
struct Insert {
    at: usize,
    parent: u32,
    set: usize,
    src: usize,
}

/// The kernel behind [`set_key`], [`set_key_pending`] and [`set_keys`]: every `(key, values)`
/// of `sets` (distinct keys) in one rebuild, with the result of setting them one after the
/// other (a parent's inserted rows follow its old rows, in the order of `sets`).
fn set_keys_on(
    side: KeySide<'_>,
    num_parents: usize,
    parents: Option<&BooleanArray>,
    sets: &[(&str, Values<'_>)],
    mode: SetMode,
    unchanged: impl FnOnce() -> RecordBatch,
) -> Result<RecordBatch> {
    if let Some(&last) = side.parent_col.values().last()
        && last as usize >= num_parents
    {
        return Err(KernelError::ParentOutOfRange {
            parent_id: last,
            parents: num_parents,
        });
    }
    if let Some(p) = parents
        && p.len() != num_parents
    {
        return Err(KernelError::Length {
            what: "parent mask",
            got: p.len(),
            expected: num_parents,
        });
    }
    // Each set's values, whether they are one per parent, and whether they can set anything
    // (a scalar with no value sets nothing).
    let mut sources: Vec<(&AnyValues, bool)> = Vec::with_capacity(sets.len());
    for (_, values) in sets {
        sources.push(match *values {
            Values::Scalar(v) => {
                if v.is_empty() {
                    return Err(KernelError::Length {
                        what: "scalar value",
                        got: 0,
                        expected: 1,
                    });
                }
                (v, false)
            }
            Values::PerParent(v) => {
                if v.len() != num_parents {
                    return Err(KernelError::Length {
                        what: "per-parent values",
                        got: v.len(),
                        expected: num_parents,
                    });
                }
                (v, true)
            }
        });
    }
    let live: Vec<bool> = sources
        .iter()
        .map(|(src, per_parent)| *per_parent || src.is_present(0))
        .collect();
    if !live.contains(&true) {
        return Ok(unchanged());
    }
    let selected = parents.map(parent_bits);
    // The source row of set `s`'s value for parent p, if p is selected and has one.
    let source = |s: usize, p: usize| -> Option<usize> {
        if !live[s] || selected.as_ref().is_some_and(|m| !m.value(p)) {
            return None;
        }
        let (src, per_parent) = sources[s];
        if per_parent {
            src.is_present(p).then_some(p)
        } else {
            Some(0)
        }
    };

    let ids = side.parent_col.values();
    let dict = side.key_col.as_dictionary::<UInt32Type>();
    let dict_values = dict.values().as_string::<i32>();
    // Dictionary entry -> the set whose key it is (`NONE`: no set's), judged once per entry;
    // and each set's first entry, if its key is in the dictionary at all.
    const NONE: u32 = u32::MAX;
    let mut existing_entry: Vec<Option<u32>> = vec![None; sets.len()];
    let set_of_entry: Vec<u32> = (0..dict_values.len())
        .map(|i| {
            if !dict_values.is_valid(i) {
                return NONE;
            }
            let value = dict_values.value(i);
            match sets.iter().position(|(k, _)| *k == value) {
                Some(s) => {
                    existing_entry[s].get_or_insert(i as u32);
                    s as u32
                }
                None => NONE,
            }
        })
        .collect();
    // has_key[s * num_parents + p]: parent p already holds set s's key.
    let mut has_key = vec![false; sets.len() * num_parents];
    // (row, set, source row): rows whose value is replaced, ascending.
    let mut updates: Vec<(usize, usize, usize)> = Vec::new();
    if existing_entry.iter().any(Option::is_some) {
        let k = dict.keys();
        for r in 0..k.len() {
            if !k.is_valid(r) {
                continue;
            }
            let s = set_of_entry
                .get(k.value(r) as usize)
                .copied()
                .unwrap_or(NONE);
            if s == NONE {
                continue;
            }
            let (s, p) = (s as usize, ids[r] as usize);
            has_key[s * num_parents + p] = true;
            if mode != SetMode::Insert
                && let Some(src) = source(s, p)
            {
                updates.push((r, s, src));
            }
        }
    }
    // New rows at the end of their parent's run (ascending), a parent's in the order of `sets`.
    let mut inserts: Vec<Insert> = Vec::with_capacity(match mode {
        SetMode::Update => 0,
        _ => num_parents * sets.len(),
    });
    if mode != SetMode::Update {
        let mut at = 0usize;
        for p in 0..num_parents {
            let mut end_found = false;
            for s in 0..sets.len() {
                if has_key[s * num_parents + p] {
                    continue;
                }
                if let Some(src) = source(s, p) {
                    if !end_found {
                        // The end of p's run: usually a few rows on (galloping, not a binary
                        // search over the rest of the table).
                        at = super::ranges::first_at_least(ids, at, p as u32 + 1);
                        end_found = true;
                    }
                    inserts.push(Insert {
                        at,
                        parent: p as u32,
                        set: s,
                        src,
                    });
                }
            }
        }
    }
    if updates.is_empty() && inserts.is_empty() {
        return Ok(unchanged());
    }

    // Value runs: old rows (source 0) with updated and inserted rows from the sets' values
    // (source 1 + set).
    let n = ids.len();
    let len = n + inserts.len();
    let mut runs: Vec<Run> = Vec::with_capacity(2 * (updates.len() + inserts.len()) + 1);
    let mut row = 0usize;
    let (mut u, mut i) = (updates.iter().peekable(), inserts.iter().peekable());
    loop {
        // An update of row r comes before an insert at position r (the insert follows the
        // parent's last old row, which is r - 1 or earlier).
        let (at, from_source, from, replaces) = match (u.peek(), i.peek()) {
            (Some(&&(r, s, src)), Some(ins)) if r < ins.at => {
                u.next();
                (r, 1 + s, src, true)
            }
            (_, Some(&&ins)) => {
                i.next();
                (ins.at, 1 + ins.set, ins.src, false)
            }
            (Some(&&(r, s, src)), None) => {
                u.next();
                (r, 1 + s, src, true)
            }
            (None, None) => break,
        };
        push_run(&mut runs, 0, row, at - row);
        push_run(&mut runs, from_source, from, 1);
        row = if replaces { at + 1 } else { at };
    }
    push_run(&mut runs, 0, row, n - row);

    let schema = side.values.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    if inserts.is_empty() {
        columns.push(Arc::new(side.parent_col.clone()));
        columns.push(side.key_col.clone());
    } else {
        columns.push(Arc::new(UInt32Array::new(
            ScalarBuffer::from(splice(ids, &inserts, |ins| ins.parent)),
            None,
        )));
        // An inserted key already in the dictionary reuses its entry; the others are appended.
        let mut entry_of_set: Vec<u32> = existing_entry.iter().map(|e| e.unwrap_or(NONE)).collect();
        let mut new_keys: Vec<&str> = Vec::new();
        for ins in &inserts {
            if entry_of_set[ins.set] == NONE {
                entry_of_set[ins.set] = (dict_values.len() + new_keys.len()) as u32;
                new_keys.push(sets[ins.set].0);
            }
        }
        let dict_values = if new_keys.is_empty() {
            dict.values().clone()
        } else {
            compute::concat(&[dict_values, &StringArray::from(new_keys)])?
        };
        let keys = splice(dict.keys().values(), &inserts, |ins| entry_of_set[ins.set]);
        let key_nulls = dict.keys().nulls().map(|n| {
            let mut b = super::ranges::Bits::with_capacity(len);
            let mut row = 0;
            for ins in &inserts {
                b.append_range(n.inner().values(), n.inner().offset() + row, ins.at - row);
                b.append_n(1, true);
                row = ins.at;
            }
            b.append_range(n.inner().values(), n.inner().offset() + row, n.len() - row);
            NullBuffer::new(b.finish())
        });
        // SAFETY: every key is an old key of a valid dictionary array (indexing the same
        // values or a prefix of the extended ones) or a set's entry, which indexes its key in
        // them.
        columns.push(Arc::new(unsafe {
            DictionaryArray::<UInt32Type>::new_unchecked(
                UInt32Array::new(ScalarBuffer::from(keys), key_nulls),
                dict_values,
            )
        }));
    }
    // Old rows' values from where they are: the table, or the pending table's base.
    let runs = match side.view {
        None => runs,
        Some(view) => ranges::compose(view, &runs),
    };
    let mut value_sources = Vec::with_capacity(1 + sets.len());
    value_sources.push(rebuild::value_cols(side.values));
    value_sources.extend(sources.iter().map(|(src, _)| src.columns()));
    columns.extend(rebuild::gather_values(&value_sources, &runs, len)?);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `old` with `value(insert)` placed before old element `insert.at` for every insert
/// (ascending positions).
fn splice<T: Copy>(old: &[T], inserts: &[Insert], value: impl Fn(&Insert) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(old.len() + inserts.len());
    let mut row = 0;
    for ins in inserts {
        let at = ins.at;
        out.extend_from_slice(&old[row..at]);
        out.push(value(ins));
        row = at;
    }
    out.extend_from_slice(&old[row..]);
    out
}

/// Appends a run of `len` rows of `src` from `start` (nothing for an empty run), extending the
/// last run when it continues it.
fn push_run(runs: &mut Vec<Run>, src: usize, start: usize, len: usize) {
    if len == 0 {
        return;
    }
    match runs.last_mut() {
        Some(r) if r.src == src && r.start + r.len == start => r.len += len,
        _ => runs.push(Run { src, start, len }),
    }
}

/// Overwrites the values of some rows: `targets` (ascending row indexes) get row `i` of
/// `src` for the `i`-th target. One gather per value column ([`rebuild::gather_values`]).
fn overwrite_rows(attrs: &RecordBatch, targets: &[usize], src: &AnyValues) -> Result<RecordBatch> {
    if targets.is_empty() {
        return Ok(attrs.clone());
    }
    let n = attrs.num_rows();
    let mut runs: Vec<Run> = Vec::with_capacity(2 * targets.len() + 1);
    let mut row = 0;
    for (i, &t) in targets.iter().enumerate() {
        push_run(&mut runs, 0, row, t - row);
        push_run(&mut runs, 1, i, 1);
        row = t + 1;
    }
    push_run(&mut runs, 0, row, n - row);
    let mut columns: Vec<ArrayRef> = attrs.columns()[..idx::TYPE].to_vec();
    columns.extend(rebuild::gather_values(
        &[rebuild::value_cols(attrs), src.columns()],
        &runs,
        n,
    )?);
    Ok(RecordBatch::try_new(attrs.schema(), columns)?)
}

// ---------------------------------------------------------------------------------------------
// Per-row by nature
// ---------------------------------------------------------------------------------------------

/// Replaces the value of every row selected by `rows` (null = no) with the lowercase hex
/// SHA-256 of that value, as the Collector's `hash` action does (see the module doc for the
/// bytes each type hashes). Per row by nature: every value is hashed on its own; the digest is
/// hex-encoded into a stack buffer and appended straight into the output string column.
pub fn hash_rows(attrs: &RecordBatch, rows: &BooleanArray) -> Result<RecordBatch> {
    if rows.len() != attrs.num_rows() {
        return Err(KernelError::Length {
            what: "row mask",
            got: rows.len(),
            expected: attrs.num_rows(),
        });
    }
    let targets: Vec<usize> = parent_bits(rows).set_indices().collect();
    let v = AnyValues::of_rows(attrs);
    let mut out = StringBuilder::with_capacity(targets.len(), targets.len() * 64);
    let mut hex_buf = [0u8; 64];
    for &r in &targets {
        let digest = match v.value_type(r) {
            Some(AnyValueType::Str) => Some(Sha256::digest(v.str.value(r).as_bytes())),
            Some(AnyValueType::Bool) => Some(Sha256::digest([u8::from(v.bool.value(r))])),
            Some(AnyValueType::Int) => Some(Sha256::digest(v.int.value(r).to_le_bytes())),
            Some(AnyValueType::Double) => {
                Some(Sha256::digest(v.double.value(r).to_bits().to_le_bytes()))
            }
            // The Collector hashes nothing for other types and stores "".
            _ => None,
        };
        match digest {
            Some(d) => {
                hex::encode_to_slice(d.as_slice(), &mut hex_buf)
                    .map_err(|e| ArrowError::ComputeError(format!("hex: {e}")))?;
                // hex digits are ASCII
                out.append_value(std::str::from_utf8(&hex_buf).unwrap_or_default());
            }
            None => out.append_value(""),
        }
    }
    overwrite_rows(attrs, &targets, &AnyValues::from_strings(out.finish()))
}

/// The target of the Collector's `convert` action (`converted_type`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConvertTarget {
    String,
    Int,
    Double,
}

/// Converts the value of every row selected by `rows` to `target`, as the Collector's
/// `convert` action: to `string` every value becomes its string form (`pcommon.Value.AsString`:
/// ints in decimal, doubles as JSON numbers, bools `true`/`false`, bytes base64, maps and
/// arrays as JSON, empty as ""); to `int` a double is truncated, a bool is 1/0, a string is
/// parsed as a base-10 integer; to `double` an int or bool converts, a string is parsed as a
/// float. A value that cannot be converted (unparseable string, a map to int) is left as it
/// is, as the Collector does. Per row by nature (formatting and parsing each value).
pub fn convert_rows(
    attrs: &RecordBatch,
    rows: &BooleanArray,
    target: ConvertTarget,
) -> Result<RecordBatch> {
    if rows.len() != attrs.num_rows() {
        return Err(KernelError::Length {
            what: "row mask",
            got: rows.len(),
            expected: attrs.num_rows(),
        });
    }
    let v = AnyValues::of_rows(attrs);
    let mut targets = Vec::new();
    let mut scratch = String::new();
    match target {
        ConvertTarget::String => {
            let mut out = StringBuilder::new();
            for r in parent_bits(rows).set_indices() {
                let ty = v.value_type(r);
                if ty == Some(AnyValueType::Str) {
                    continue;
                }
                scratch.clear();
                value_as_string(&v, r, &mut scratch);
                out.append_value(&scratch);
                targets.push(r);
            }
            overwrite_rows(attrs, &targets, &AnyValues::from_strings(out.finish()))
        }
        ConvertTarget::Int => {
            let mut out = Vec::new();
            for r in parent_bits(rows).set_indices() {
                let converted = match v.value_type(r) {
                    // `int64(f)` in Go; Rust's `as` saturates where Go's result is undefined.
                    Some(AnyValueType::Double) => Some(v.double.value(r) as i64),
                    Some(AnyValueType::Bool) => Some(i64::from(v.bool.value(r))),
                    Some(AnyValueType::Str) => parse_go_int(v.str.value(r)),
                    _ => None,
                };
                if let Some(i) = converted {
                    out.push(i);
                    targets.push(r);
                }
            }
            overwrite_rows(attrs, &targets, &AnyValues::from_ints(out.into()))
        }
        ConvertTarget::Double => {
            let mut out = Vec::new();
            for r in parent_bits(rows).set_indices() {
                let converted = match v.value_type(r) {
                    Some(AnyValueType::Int) => Some(v.int.value(r) as f64),
                    Some(AnyValueType::Bool) => Some(f64::from(u8::from(v.bool.value(r)))),
                    Some(AnyValueType::Str) => parse_go_float(v.str.value(r)),
                    _ => None,
                };
                if let Some(d) = converted {
                    out.push(d);
                    targets.push(r);
                }
            }
            overwrite_rows(attrs, &targets, &AnyValues::from_doubles(out.into()))
        }
    }
}

/// Every value in its string form, as `pcommon.Value.AsString` writes it (see
/// [`convert_rows`]); null where there is no value. Per row by nature (formatting); strings are
/// copied as they are.
pub fn as_strings(values: &AnyValues) -> StringArray {
    let mut out = StringBuilder::with_capacity(values.len(), values.str.values().len());
    let mut scratch = String::new();
    for r in 0..values.len() {
        match values.value_type(r) {
            None => out.append_null(),
            Some(AnyValueType::Str) => out.append_value(values.str.value(r)),
            Some(_) => {
                scratch.clear();
                value_as_string(values, r, &mut scratch);
                out.append_value(&scratch);
            }
        }
    }
    out.finish()
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, no spaces or underscores.
pub(crate) fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal input, `Inf`/`Infinity`/`NaN` in any case.
/// (Go also takes hexadecimal floats and `_` separators after a base prefix; those stay
/// unconverted here.)
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let special = ["inf", "infinity", "nan"]
        .iter()
        .any(|w| body.eq_ignore_ascii_case(w));
    if !special
        && !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse().ok()
}

/// `pcommon.Value.AsString` of row `r`, appended to `out`.
fn value_as_string(v: &AnyValues, r: usize, out: &mut String) {
    use std::fmt::Write as _;
    match v.value_type(r) {
        Some(AnyValueType::Str) => out.push_str(v.str.value(r)),
        Some(AnyValueType::Int) => {
            let _ = write!(out, "{}", v.int.value(r));
        }
        Some(AnyValueType::Double) => go_json_float(v.double.value(r), out),
        Some(AnyValueType::Bool) => out.push_str(if v.bool.value(r) { "true" } else { "false" }),
        Some(AnyValueType::Bytes) => {
            base64::engine::general_purpose::STANDARD.encode_string(v.bytes.value(r), out)
        }
        Some(AnyValueType::Array | AnyValueType::Map) => {
            match opentelemetry_proto::tonic::common::v1::AnyValue::decode(v.bytes.value(r)) {
                Ok(av) => json_any_value(&av, out),
                Err(_) => out.push_str("null"),
            }
        }
        Some(AnyValueType::Empty | AnyValueType::Absent) | None => {}
    }
}

/// A double the way Go's `encoding/json` writes it (and `pcommon` `AsString` uses): shortest
/// round-trip digits, plain notation for 1e-6 <= |f| < 1e21, else `1e+21` / `1e-7`.
pub(crate) fn go_json_float(f: f64, out: &mut String) {
    use std::fmt::Write as _;
    if !f.is_finite() {
        // pcommon: "json: unsupported value: +Inf"
        let g = if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        };
        let _ = write!(out, "json: unsupported value: {g}");
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let start = out.len();
        let _ = write!(out, "{f:e}");
        // Rust writes `1e21` / `1.5e-7`; Go writes `1e+21` / `1.5e-7`.
        if let Some(e) = out[start..].find('e')
            && !out[start + e + 1..].starts_with('-')
        {
            out.insert(start + e + 1, '+');
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

/// `json.Marshal` of a protobuf-encoded `AnyValue` (the `bytes` of an array or map
/// attribute), appended to `out`; `null` if it does not decode.
pub(crate) fn any_value_json(encoded: &[u8], out: &mut String) {
    match opentelemetry_proto::tonic::common::v1::AnyValue::decode(encoded) {
        Ok(av) => json_any_value(&av, out),
        Err(_) => out.push_str("null"),
    }
}

/// `json.Marshal(value.AsRaw())` of an `AnyValue`: maps with sorted keys (Go sorts map keys),
/// bytes as base64, empty values as null.
fn json_any_value(av: &opentelemetry_proto::tonic::common::v1::AnyValue, out: &mut String) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use std::fmt::Write as _;
    match &av.value {
        // a string-table index exists only in profiles, never in attributes sluice decodes
        None | Some(V::StringValueStrindex(_)) => out.push_str("null"),
        Some(V::StringValue(s)) => json_string(s, out),
        Some(V::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(V::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(V::DoubleValue(d)) => go_json_float(*d, out),
        Some(V::BytesValue(b)) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(V::ArrayValue(a)) => {
            out.push('[');
            for (i, x) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_any_value(x, out);
            }
            out.push(']');
        }
        Some(V::KvlistValue(kv)) => {
            let mut entries: Vec<_> = kv.values.iter().collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            // A Go map keeps the last of duplicated keys.
            entries.dedup_by(|later, earlier| {
                let same = later.key == earlier.key;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
            out.push('{');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&e.key, out);
                out.push(':');
                match &e.value {
                    Some(v) => json_any_value(v, out),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
    }
}

/// A JSON string as Go's `encoding/json` escapes it (`<`, `>`, `&` as \u00XX, too).
pub(crate) fn json_string(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Runs `pattern` over the string value of `key` of every parent (`num_parents` rows) and
/// returns, for each named group in pattern order, a string column with one entry per parent:
/// the group's text where the value matched (`""` for a group that did not take part, as Go's
/// `FindStringSubmatch` gives), null where the key is absent, not a string, or did not match.
/// The Collector's `extract` action upserts each group's column under the group's name.
/// Per row by nature (a regex per value); one capture-location buffer is reused for every row.
pub fn extract(
    attrs: &RecordBatch,
    num_parents: usize,
    key: &str,
    pattern: &Regex,
) -> Result<Vec<(String, StringArray)>> {
    let source = lookup(attrs, num_parents, key)?;
    let groups: Vec<(usize, String)> = pattern
        .capture_names()
        .enumerate()
        .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
        .collect();
    let mut builders: Vec<StringBuilder> = groups.iter().map(|_| StringBuilder::new()).collect();
    let mut locs = pattern.capture_locations();
    for p in 0..num_parents {
        let matched = (source.value_type(p) == Some(AnyValueType::Str))
            .then(|| source.str.value(p))
            .and_then(|s| pattern.captures_read(&mut locs, s).map(|_| s));
        for ((g, _), b) in groups.iter().zip(&mut builders) {
            match matched {
                Some(s) => b.append_value(locs.get(*g).map(|(a, z)| &s[a..z]).unwrap_or("")),
                None => b.append_null(),
            }
        }
    }
    Ok(groups
        .into_iter()
        .zip(builders)
        .map(|((_, name), mut b)| (name, b.finish()))
        .collect())
}

/// Truncates every string value of the selected parents to at most `limit` bytes, as OTTL
/// `truncate_all` does: cut at a UTF-8 character boundary (never inside a character, so a
/// value may end up shorter than `limit`), with `marker` appended to every value that was cut
/// and counted within `limit`. Other types are left alone. (Added for OTTL.)
pub fn truncate_strings(
    attrs: &RecordBatch,
    limit: usize,
    marker: &str,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let str_ty = AnyValueType::Str as u8;
    let ty = types(attrs).values();
    let rows = restrict(
        attrs,
        BooleanArray::new(
            BooleanBuffer::collect_bool(ty.len(), |i| ty[i] == str_ty),
            None,
        ),
        parents,
    )?;
    let strs = attrs.column(idx::TYPE + 1).as_string::<i32>();
    let keep = limit.saturating_sub(marker.len());
    let mut targets = Vec::new();
    let mut out = StringBuilder::new();
    let mut buf = String::new();
    for r in parent_bits(&rows).set_indices() {
        let v = strs.value(r);
        if v.len() <= limit {
            continue;
        }
        let mut cut = keep;
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        buf.clear();
        buf.push_str(&v[..cut]);
        buf.push_str(marker);
        out.append_value(&buf);
        targets.push(r);
    }
    overwrite_rows(attrs, &targets, &AnyValues::from_strings(out.finish()))
}

/// Replaces every match of `pattern` in the string values of the selected parents with the
/// parent's replacement (`replacement(parent)`, expanded as Go's `ReplaceAllString`: `$1`,
/// `${name}`, `$$`), as OTTL `replace_all_patterns(..., "value", ...)`. A parent whose
/// replacement is `None` is left alone; other types are left alone. Per row by nature (a
/// regex per value). (Added for OTTL.)
pub fn replace_in_values<'r>(
    attrs: &RecordBatch,
    pattern: &Regex,
    replacement: impl Fn(usize) -> Option<&'r str>,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    let str_ty = AnyValueType::Str as u8;
    let ty = types(attrs).values();
    let rows = restrict(
        attrs,
        BooleanArray::new(
            BooleanBuffer::collect_bool(ty.len(), |i| ty[i] == str_ty),
            None,
        ),
        parents,
    )?;
    let strs = attrs.column(idx::TYPE + 1).as_string::<i32>();
    let ids = parent_ids(attrs);
    let mut targets = Vec::new();
    let mut out = StringBuilder::new();
    for r in parent_bits(&rows).set_indices() {
        let Some(rep) = replacement(ids[r] as usize) else {
            continue;
        };
        let v = strs.value(r);
        if let std::borrow::Cow::Owned(new) = pattern.replace_all(v, rep) {
            out.append_value(&new);
            targets.push(r);
        }
    }
    overwrite_rows(attrs, &targets, &AnyValues::from_strings(out.finish()))
}

/// Renames the keys of the selected parents that match `pattern` to
/// `pattern.replace_all(key, replacement(parent))`, as OTTL
/// `replace_all_patterns(..., "key", ...)`. The Collector builds a new map with `PutEmpty`
/// in the old order, so when two keys of one parent end up equal the first one's position
/// holds the last one's value; the same happens here. A parent whose replacement is `None`
/// is left alone. (Added for OTTL.)
pub fn replace_in_keys<'r>(
    attrs: &RecordBatch,
    pattern: &Regex,
    replacement: impl Fn(usize) -> Option<&'r str>,
    parents: Option<&BooleanArray>,
) -> Result<RecordBatch> {
    if let Some(p) = parents {
        check_parents(attrs, p.len())?;
    }
    let selected = parents.map(parent_bits);
    let dict = keys(attrs);
    let dict_values = dict.values().as_string::<i32>();
    let key_idx = dict.keys();
    let key_of = |r: usize| -> &str {
        if key_idx.is_null(r) {
            ""
        } else {
            dict_values.value(key_idx.value(r) as usize)
        }
    };
    let ids = parent_ids(attrs);
    let n = ids.len();
    // Output rows: (parent, key, row whose value it holds).
    let mut out: Vec<(u32, String, u32)> = Vec::with_capacity(n);
    let mut changed = false;
    let mut start = 0;
    while start < n {
        let p = ids[start];
        let end = start + ids[start..].iter().take_while(|&&x| x == p).count();
        let rep = if selected.as_ref().is_none_or(|s| s.value(p as usize)) {
            replacement(p as usize)
        } else {
            None
        };
        let run_start = out.len();
        for r in start..end {
            let old = key_of(r);
            let new = match rep {
                Some(rep) if pattern.is_match(old) => pattern.replace_all(old, rep).into_owned(),
                _ => old.to_string(),
            };
            changed |= new != old;
            match out[run_start..].iter_mut().find(|(_, k, _)| *k == new) {
                Some(slot) => {
                    slot.2 = r as u32;
                    changed = true;
                }
                None => out.push((p, new, r as u32)),
            }
        }
        start = end;
    }
    if !changed {
        return Ok(attrs.clone());
    }
    let take_idx = UInt32Array::from(out.iter().map(|o| o.2).collect::<Vec<_>>());
    let mut builder = arrow::array::StringDictionaryBuilder::<UInt32Type>::new();
    for (_, k, _) in &out {
        builder.append_value(k);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
        )),
        Arc::new(builder.finish()),
    ];
    for c in &attrs.columns()[idx::VALUES] {
        columns.push(compute::take(c.as_ref(), &take_idx, None)?);
    }
    Ok(RecordBatch::try_new(attrs.schema(), columns)?)
}

// ---------------------------------------------------------------------------------------------
// Many string attributes per parent, where absent
// ---------------------------------------------------------------------------------------------

/// String attributes to add, grouped by parent row, in parent order: what an enrichment finds
/// for each parent (the pod metadata of a resource, say). Built by pushing each parent's pairs
/// and closing it with [`StringsPerParent::end_parent`]; the strings are borrowed from
/// wherever they live (a cache), nothing is copied until the table is rebuilt.
#[derive(Clone, Debug, Default)]
pub struct StringsPerParent<'a> {
    /// Parent `p`'s pairs are `pairs[ends[p - 1]..ends[p]]`.
    ends: Vec<u32>,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> StringsPerParent<'a> {
    pub fn with_capacity(parents: usize, pairs: usize) -> Self {
        StringsPerParent {
            ends: Vec::with_capacity(parents),
            pairs: Vec::with_capacity(pairs),
        }
    }

    /// Adds `key = value` to the current parent.
    pub fn push(&mut self, key: &'a str, value: &'a str) {
        self.pairs.push((key, value));
    }

    /// Closes the current parent (possibly with no pairs) and starts the next.
    pub fn end_parent(&mut self) {
        self.ends.push(self.pairs.len() as u32);
    }

    /// Parents closed so far.
    pub fn num_parents(&self) -> usize {
        self.ends.len()
    }

    /// Pairs pushed so far, over all parents.
    pub fn num_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Parent `p`'s pairs.
    pub fn of(&self, p: usize) -> &[(&'a str, &'a str)] {
        let start = if p == 0 { 0 } else { self.ends[p - 1] as usize };
        &self.pairs[start..self.ends[p] as usize]
    }
}

/// Whether row `r`'s value reads as the empty string (pdata's `AsString() == ""`): an empty
/// string or byte string, an `AnyValue` with no value, a key with no value at all.
fn is_empty_value(attrs: &RecordBatch, r: usize) -> bool {
    let t = types(attrs).value(r);
    match AnyValueType::from_u8(t) {
        Some(AnyValueType::Empty | AnyValueType::Absent) => true,
        Some(AnyValueType::Str) => {
            let s = attrs.column(idx::TYPE + 1).as_string::<i32>();
            s.is_valid(r) && s.value_length(r) == 0
        }
        Some(AnyValueType::Bytes) => {
            let b = attrs.column(idx::VALUES.end - 1).as_binary::<i32>();
            b.is_valid(r) && b.value_length(r) == 0
        }
        _ => false,
    }
}

/// Adds each parent's string pairs from `add` (one entry per parent row of `attrs`' parent
/// table) where the parent has no attribute of that key; with `replace_empty`, also replaces
/// an existing value that reads as empty (see [`is_empty_value`]: what the Collector's
/// `k8sattributes` does). Existing values are otherwise never touched; within one parent the
/// first pair of a key wins. New rows go at the end of their parent's run.
///
/// One pass over the table's key indices (keys judged once per dictionary value) finds what
/// each parent has; the output is one splice of runs of old rows and the new values, as
/// [`set_key`] does for one key, so adding ten keys costs one rebuild, not ten.
pub fn insert_strings(
    attrs: &RecordBatch,
    add: &StringsPerParent<'_>,
    replace_empty: bool,
) -> Result<RecordBatch> {
    let num_parents = add.num_parents();
    check_parents(attrs, num_parents)?;
    if add.num_pairs() == 0 {
        return Ok(attrs.clone());
    }
    // Distinct keys to add, each a slot.
    let mut slot_of_key: hashbrown::HashMap<&str, u32> = hashbrown::HashMap::new();
    for (k, _) in &add.pairs {
        let next = slot_of_key.len() as u32;
        slot_of_key.entry(k).or_insert(next);
    }
    let slots = slot_of_key.len();
    let dict = keys(attrs);
    let dict_values = dict.values().as_string::<i32>();
    // dictionary index -> slot (u32::MAX: a key nobody adds)
    let slot_of_entry: Vec<u32> = (0..dict_values.len())
        .map(|i| {
            if dict_values.is_null(i) {
                return u32::MAX;
            }
            slot_of_key
                .get(dict_values.value(i))
                .copied()
                .unwrap_or(u32::MAX)
        })
        .collect();
    let ids = parent_ids(attrs);
    let key_idx = dict.keys();
    // Per slot: the row holding it for the parent being looked at (u32::MAX: none).
    let mut row_of_slot = vec![u32::MAX; slots];
    let mut touched: Vec<usize> = Vec::new();
    let mut added = vec![false; slots];
    // (row, value): rows whose value is replaced; (position, parent, slot): new rows before
    // old row `position`, with their values in `insert_values`. Both ascending.
    let mut updates: Vec<(usize, &str)> = Vec::new();
    let mut inserts: Vec<(usize, u32, usize)> = Vec::new();
    let mut insert_values: Vec<&str> = Vec::new();
    let mut row = 0usize;
    for p in 0..num_parents {
        while row < ids.len() && ids[row] as usize == p {
            if key_idx.is_valid(row) {
                let s = slot_of_entry
                    .get(key_idx.value(row) as usize)
                    .copied()
                    .unwrap_or(u32::MAX);
                if s != u32::MAX && row_of_slot[s as usize] == u32::MAX {
                    // The first row of a duplicated key is the one judged.
                    row_of_slot[s as usize] = row as u32;
                    touched.push(s as usize);
                }
            }
            row += 1;
        }
        for &(k, v) in add.of(p) {
            let s = slot_of_key[k] as usize;
            if added[s] {
                continue;
            }
            added[s] = true;
            touched.push(s);
            match row_of_slot[s] {
                u32::MAX => {
                    inserts.push((row, p as u32, s));
                    insert_values.push(v);
                }
                r if replace_empty && is_empty_value(attrs, r as usize) => {
                    updates.push((r as usize, v));
                }
                _ => {}
            }
        }
        for &s in &touched {
            row_of_slot[s] = u32::MAX;
            added[s] = false;
        }
        touched.clear();
    }
    if updates.is_empty() && inserts.is_empty() {
        return Ok(attrs.clone());
    }
    updates.sort_unstable_by_key(|u| u.0);

    // New values in output order (source 1 of the value runs), and the runs.
    let n = ids.len();
    let len = n + inserts.len();
    let mut new_values = StringBuilder::with_capacity(
        updates.len() + inserts.len(),
        updates.iter().map(|u| u.1.len()).sum::<usize>()
            + insert_values.iter().map(|v| v.len()).sum::<usize>(),
    );
    let mut runs: Vec<Run> = Vec::with_capacity(2 * (updates.len() + inserts.len()) + 1);
    let mut at_row = 0usize;
    let (mut u, mut i) = (
        updates.iter().peekable(),
        inserts.iter().zip(&insert_values).peekable(),
    );
    let mut next_new = 0usize;
    loop {
        // An update of row r comes before an insert at position r (see `set_key_on`).
        let (at, value, replaces) = match (u.peek(), i.peek()) {
            (Some(&&(r, v)), Some(&(&(pos, _, _), _))) if r < pos => {
                u.next();
                (r, v, true)
            }
            (_, Some(&(&(pos, _, _), &v))) => {
                i.next();
                (pos, v, false)
            }
            (Some(&&(r, v)), None) => {
                u.next();
                (r, v, true)
            }
            (None, None) => break,
        };
        push_run(&mut runs, 0, at_row, at - at_row);
        push_run(&mut runs, 1, next_new, 1);
        new_values.append_value(value);
        next_new += 1;
        at_row = if replaces { at + 1 } else { at };
    }
    push_run(&mut runs, 0, at_row, n - at_row);
    let src = AnyValues::from_strings(new_values.finish());

    let schema = attrs.schema();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    if inserts.is_empty() {
        columns.push(attrs.column(idx::PARENT_ID).clone());
        columns.push(attrs.column(idx::KEY).clone());
    } else {
        // The shared splice takes `Insert`s (`set` is the slot here, `src` the new value's index).
        let spliced: Vec<Insert> = inserts
            .iter()
            .enumerate()
            .map(|(src, &(at, parent, set))| Insert {
                at,
                parent,
                set,
                src,
            })
            .collect();
        columns.push(Arc::new(UInt32Array::new(
            ScalarBuffer::from(splice(ids, &spliced, |ins| ins.parent)),
            None,
        )));
        // Dictionary entries for keys the table does not have yet, appended once each.
        let mut entry_of_slot = vec![u32::MAX; slots];
        for (e, &s) in slot_of_entry.iter().enumerate() {
            if s != u32::MAX && entry_of_slot[s as usize] == u32::MAX {
                entry_of_slot[s as usize] = e as u32;
            }
        }
        let mut key_of_slot = vec![""; slots];
        for (k, &s) in &slot_of_key {
            key_of_slot[s as usize] = k;
        }
        let mut extra: Vec<&str> = Vec::new();
        for &(_, _, s) in &inserts {
            if entry_of_slot[s] == u32::MAX {
                entry_of_slot[s] = (dict_values.len() + extra.len()) as u32;
                extra.push(key_of_slot[s]);
            }
        }
        let dict_out: ArrayRef = if extra.is_empty() {
            dict.values().clone()
        } else {
            compute::concat(&[dict_values, &StringArray::from(extra)])?
        };
        let keys = splice(key_idx.values(), &spliced, |ins| entry_of_slot[ins.set]);
        let key_nulls = key_idx.nulls().map(|nb| {
            let mut b = super::ranges::Bits::with_capacity(len);
            let mut r = 0;
            for &(at, _, _) in &inserts {
                b.append_range(nb.inner().values(), nb.inner().offset() + r, at - r);
                b.append_n(1, true);
                r = at;
            }
            b.append_range(nb.inner().values(), nb.inner().offset() + r, nb.len() - r);
            NullBuffer::new(b.finish())
        });
        // SAFETY: every key is an old key of a valid dictionary array (indexing the same
        // values, a prefix of the extended ones) or an entry found or appended above.
        columns.push(Arc::new(unsafe {
            DictionaryArray::<UInt32Type>::new_unchecked(
                UInt32Array::new(ScalarBuffer::from(keys), key_nulls),
                dict_out,
            )
        }));
    }
    let old = rebuild::value_cols(attrs);
    columns.extend(rebuild::gather_values(&[old, src.columns()], &runs, len)?);
    Ok(RecordBatch::try_new(schema, columns)?)
}

mod rebuild;
pub(crate) use rebuild::gather_rows;
#[cfg(test)]
mod tests;
