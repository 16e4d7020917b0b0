//! Sealed segments: the compact columnar form in which buffered spans wait for their decision.
//!
//! Decoded spans are large in memory (`BENCHMARKS.md`: ~745 B of Arrow per span for ~530 B of
//! protobuf), and a general-purpose compressor over them (Arrow IPC with LZ4 or zstd, the first
//! version of this store) made compression and decompression most of tail sampling's CPU time.
//! A segment instead stores each column of each traces table in a form that is cheap to build and
//! cheap to take rows from, and that removes what makes decoded spans large:
//!
//! - **values of valid rows only**: a mostly-null column (the `int`, `double`, `bytes`, `bool`
//!   value columns of attribute tables, `parent_span_id` of root spans) costs its validity bitmap
//!   and its present values; an all-null column costs nothing;
//! - **integers as offsets from the column's minimum**, in the narrowest of 0/1/2/4/8 bytes
//!   (parent ids, types, kinds, status codes, flags, dropped counts, timestamps within a segment);
//!   doubles are stored as their bits the same way, so they round-trip exactly;
//! - **strings and byte strings dictionary-encoded per segment** (attribute values, span names,
//!   keys, trace states, ...): each distinct value is stored once, rows hold narrowed indexes.
//!   Routes, user agents, SQL, resource attributes repeat across spans; unique values (ids,
//!   addresses) cost what they cost. An attribute's value is first compared with the last value
//!   of the same key (most keys keep one value for long stretches), then looked up by hash.
//!
//! Taking rows out ([`take`]) writes the kept rows of every segment of a bucket straight into
//! one payload of the sluice schema: one copy of what is kept, none of what is dropped, no
//! intermediate payloads to concatenate. Row selection follows [`Payload::filter_tables`] exactly
//! (children go with their span, scopes and resources left without spans go), so a kept trace
//! leaves as it would have from the decoded payload.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, DictionaryArray,
    FixedSizeBinaryArray, GenericByteArray, PrimitiveArray, RecordBatch, StringArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, BinaryType, ByteArrayType, DataType, Float64Type, Int32Type, Int64Type,
    UInt8Type, UInt32Type, UInt64Type, Utf8Type,
};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::policy::{Part, SpanColumns};
use crate::payload::{Payload, PayloadError};
use crate::schema::{Signal, Table, col};

/// The traces tables, in `Signal::Traces.tables()` order (parents before children).
fn tables() -> &'static [Table] {
    Signal::Traces.tables()
}

/// Position of `t` in [`tables`].
fn slot(t: Table) -> usize {
    tables()
        .iter()
        .position(|x| *x == t)
        .expect("a traces table")
}

/// Sealed spans of one wheel bucket: every traces table in compact form, plus each span row's
/// trace ordinal in the bucket.
pub struct Segment {
    tables: Vec<EncodedTable>,
    ordinals: Narrow,
    spans: usize,
}

struct EncodedTable {
    rows: usize,
    columns: Vec<Column>,
}

/// One column: validity (if any row is null) and the values of the valid rows, in row order.
struct Column {
    nulls: Option<NullBuffer>,
    values: Values,
}

enum Values {
    /// Every row is null.
    Null,
    /// Integers (and doubles, as bits) as `base` + offset, in order-preserving `u64` form.
    Int {
        base: u64,
        offsets: Narrow,
    },
    Bool(BooleanBuffer),
    /// Fixed-width byte strings (ids), back to back.
    Fixed(Vec<u8>),
    /// Strings or byte strings: the segment's distinct values and one index per valid row.
    Bytes {
        dict: ArrayRef,
        keys: Narrow,
    },
}

/// Unsigned integers in the narrowest width that holds the largest (`Zero`: all zero).
enum Narrow {
    Zero,
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Width {
    Zero,
    U8,
    U16,
    U32,
    U64,
}

fn width_of(max: u64) -> Width {
    if max == 0 {
        Width::Zero
    } else if max <= u64::from(u8::MAX) {
        Width::U8
    } else if max <= u64::from(u16::MAX) {
        Width::U16
    } else if max <= u64::from(u32::MAX) {
        Width::U32
    } else {
        Width::U64
    }
}

impl Narrow {
    /// `values` (all `<= max`) narrowed. The casts cannot truncate: the width holds `max`.
    fn new(values: impl Iterator<Item = u64>, max: u64) -> Narrow {
        match width_of(max) {
            Width::Zero => Narrow::Zero,
            Width::U8 => Narrow::U8(values.map(|x| x as u8).collect()),
            Width::U16 => Narrow::U16(values.map(|x| x as u16).collect()),
            Width::U32 => Narrow::U32(values.map(|x| x as u32).collect()),
            Width::U64 => Narrow::U64(values.collect()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Narrow::Zero => 0,
            Narrow::U8(v) => v.capacity(),
            Narrow::U16(v) => v.capacity() * 2,
            Narrow::U32(v) => v.capacity() * 4,
            Narrow::U64(v) => v.capacity() * 8,
        }
    }

    /// Appends `f(value)` for each index of `idx` (`null` for null rows) to `out`.
    #[inline]
    fn gather<O: Copy>(&self, idx: &Idx, null: O, f: impl Fn(u64) -> O, out: &mut Vec<O>) {
        match self {
            Narrow::Zero => idx.map_into(&ZEROS, null, |_: u8| f(0), out, true),
            Narrow::U8(v) => idx.map_into(v, null, |x| f(u64::from(x)), out, false),
            Narrow::U16(v) => idx.map_into(v, null, |x| f(u64::from(x)), out, false),
            Narrow::U32(v) => idx.map_into(v, null, |x| f(u64::from(x)), out, false),
            Narrow::U64(v) => idx.map_into(v, null, f, out, false),
        }
    }
}

/// Stands in for the values of a `Narrow::Zero` (any index reads 0).
static ZEROS: [u8; 1] = [0];

/// Integer types stored as offsets: an order-preserving map to `u64` (so min/max bound the
/// offsets) and back. Doubles map to their bits (order does not matter for them, exactness does).
trait Ordinal: ArrowPrimitiveType {
    fn to_ord(v: Self::Native) -> u64;
    fn from_ord(o: u64) -> Self::Native;
}

const SIGN: u64 = 1 << 63;

impl Ordinal for UInt8Type {
    fn to_ord(v: u8) -> u64 {
        u64::from(v)
    }
    fn from_ord(o: u64) -> u8 {
        o as u8
    }
}
impl Ordinal for UInt32Type {
    fn to_ord(v: u32) -> u64 {
        u64::from(v)
    }
    fn from_ord(o: u64) -> u32 {
        o as u32
    }
}
impl Ordinal for UInt64Type {
    fn to_ord(v: u64) -> u64 {
        v
    }
    fn from_ord(o: u64) -> u64 {
        o
    }
}
impl Ordinal for Int32Type {
    fn to_ord(v: i32) -> u64 {
        (i64::from(v) as u64) ^ SIGN
    }
    fn from_ord(o: u64) -> i32 {
        ((o ^ SIGN) as i64) as i32
    }
}
impl Ordinal for Int64Type {
    fn to_ord(v: i64) -> u64 {
        (v as u64) ^ SIGN
    }
    fn from_ord(o: u64) -> i64 {
        (o ^ SIGN) as i64
    }
}
impl Ordinal for Float64Type {
    fn to_ord(v: f64) -> u64 {
        v.to_bits()
    }
    fn from_ord(o: u64) -> f64 {
        f64::from_bits(o)
    }
}

fn unsupported(t: Table, dt: &DataType) -> PayloadError {
    PayloadError::Schema {
        table: t,
        detail: format!("tail_sampling cannot store a {dt} column"),
    }
}

fn internal(t: Table, detail: &str) -> PayloadError {
    PayloadError::Invariant {
        table: t,
        detail: format!("tail_sampling segment: {detail} (internal error)"),
    }
}

/// Validity of the concatenation of `arrays`, `None` if every row is valid.
fn concat_nulls(arrays: &[&dyn Array], len: usize) -> Option<NullBuffer> {
    if arrays.iter().all(|a| a.null_count() == 0) {
        return None;
    }
    let mut b = BooleanBufferBuilder::new(len);
    for a in arrays {
        match a.nulls() {
            Some(n) => b.append_buffer(n.inner()),
            None => b.append_n(a.len(), true),
        }
    }
    Some(NullBuffer::new(b.finish()))
}

/// Index of the `str` and `key` columns in attribute tables.
fn attrs_columns() -> (usize, usize) {
    let s = crate::schema::attrs_schema();
    (
        s.index_of(col::KEY).expect("key"),
        s.index_of(col::STR).expect("str"),
    )
}

impl Segment {
    /// Seals `parts` (in order) into one segment.
    pub fn seal(parts: &[Part]) -> Result<Segment, PayloadError> {
        let (key_col, str_col) = attrs_columns();
        let mut encoded = Vec::with_capacity(tables().len());
        for &t in tables() {
            let batches: Vec<&RecordBatch> = parts.iter().map(|p| p.payload.table(t)).collect();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            // What each part's parent ids are shifted by (its parents' position in the
            // concatenation), as `Payload::concat` does.
            let shifts: Vec<u64> = match t.parent() {
                Some(p) => parts
                    .iter()
                    .scan(0u64, |at, part| {
                        let s = *at;
                        *at += part.payload.table(p).num_rows() as u64;
                        Some(s)
                    })
                    .collect(),
                None => vec![0; parts.len()],
            };
            let schema = t.schema();
            let mut columns: Vec<Column> = Vec::with_capacity(schema.fields().len());
            for (i, field) in schema.fields().iter().enumerate() {
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(i).as_ref()).collect();
                let shift = (i == 0 && t.parent().is_some()).then_some(shifts.as_slice());
                // An attribute's value is grouped by its key (encoded just before).
                let groups = (t.is_attrs() && i == str_col)
                    .then(|| columns[key_col].group_keys(rows))
                    .flatten();
                columns.push(encode(
                    t,
                    field.data_type(),
                    &arrays,
                    rows,
                    shift,
                    groups.as_ref(),
                )?);
            }
            encoded.push(EncodedTable { rows, columns });
        }
        let spans = encoded[slot(Table::Spans)].rows;
        let count: usize = parts.iter().map(|p| p.ordinals.len()).sum();
        if count != spans {
            return Err(internal(Table::Spans, "one ordinal per span expected"));
        }
        let max = parts
            .iter()
            .flat_map(|p| &p.ordinals)
            .copied()
            .max()
            .unwrap_or(0);
        let ordinals = Narrow::new(
            parts
                .iter()
                .flat_map(|p| &p.ordinals)
                .map(|&o| u64::from(o)),
            u64::from(max),
        );
        Ok(Segment {
            tables: encoded,
            ordinals,
            spans,
        })
    }

    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Each span row's trace ordinal in its bucket.
    pub fn ordinals(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.spans);
        self.ordinals
            .gather(&Idx::Range(self.spans), 0, |x| x as u32, &mut out);
        out
    }

    /// Bytes this segment keeps allocated.
    pub fn resident_bytes(&self) -> usize {
        let columns: usize = self
            .tables
            .iter()
            .flat_map(|t| &t.columns)
            .map(|c| {
                let nulls = c.nulls.as_ref().map_or(0, |n| n.buffer().capacity());
                nulls
                    + match &c.values {
                        Values::Null => 0,
                        Values::Int { offsets, .. } => offsets.bytes(),
                        Values::Bool(b) => b.inner().capacity(),
                        Values::Fixed(bytes) => bytes.capacity(),
                        Values::Bytes { dict, keys } => dict.get_array_memory_size() + keys.bytes(),
                    }
            })
            .sum();
        let headers: usize = self
            .tables
            .iter()
            .map(|t| t.columns.capacity() * std::mem::size_of::<Column>())
            .sum();
        columns
            + headers
            + self.tables.capacity() * std::mem::size_of::<EncodedTable>()
            + self.ordinals.bytes()
            + std::mem::size_of::<Self>()
    }

    /// A numeric column of the spans table, every row (null rows read as 0).
    fn span_column<T: Ordinal>(&self, name: &str) -> Vec<T::Native> {
        let i = Table::Spans
            .schema()
            .index_of(name)
            .expect("a spans column");
        let t = &self.tables[slot(Table::Spans)];
        let mut out = Vec::with_capacity(t.rows);
        push_ints::<T>(&t.columns[i], &Pick::All(t.rows), &mut out, None);
        out
    }

    /// What the per-trace aggregates of the policies read.
    pub fn span_columns(&self) -> SpanColumns {
        SpanColumns {
            ordinals: self.ordinals(),
            start: self.span_column::<UInt64Type>(col::START_TIME_UNIX_NANO),
            end: self.span_column::<UInt64Type>(col::END_TIME_UNIX_NANO),
            status: self.span_column::<Int32Type>(col::STATUS_CODE),
        }
    }

    /// Every span, decoded (for policies that read attributes).
    pub fn open(&self) -> Result<Part, PayloadError> {
        Ok(Part {
            payload: take(&[(self, None)])?,
            ordinals: self.ordinals(),
        })
    }

    /// The `parent_id` column of child table `t`, every row.
    fn parent_ids(&self, t: Table) -> Vec<u32> {
        self.column_u32(slot(t), 0)
    }

    fn column_u32(&self, table: usize, column: usize) -> Vec<u32> {
        let e = &self.tables[table];
        let mut out = Vec::with_capacity(e.rows);
        push_ints::<UInt32Type>(&e.columns[column], &Pick::All(e.rows), &mut out, None);
        out
    }
}

impl Column {
    /// For a dictionary-encoded column without nulls: each row's key and the number of keys.
    fn group_keys(&self, rows: usize) -> Option<(Vec<u32>, usize)> {
        match (&self.nulls, &self.values) {
            (None, Values::Bytes { dict, keys }) => {
                let mut out = Vec::with_capacity(rows);
                keys.gather(&Idx::Range(rows), 0, |k| k as u32, &mut out);
                Some((out, dict.len()))
            }
            _ => None,
        }
    }
}

fn encode(
    t: Table,
    dt: &DataType,
    arrays: &[&dyn Array],
    rows: usize,
    shift: Option<&[u64]>,
    groups: Option<&(Vec<u32>, usize)>,
) -> Result<Column, PayloadError> {
    let nulls = concat_nulls(arrays, rows);
    if nulls.as_ref().is_some_and(|n| n.null_count() == rows) {
        return Ok(Column {
            nulls,
            values: Values::Null,
        });
    }
    let values = match dt {
        DataType::UInt8 => encode_ints::<UInt8Type>(arrays, shift),
        DataType::UInt32 => encode_ints::<UInt32Type>(arrays, shift),
        DataType::UInt64 => encode_ints::<UInt64Type>(arrays, shift),
        DataType::Int32 => encode_ints::<Int32Type>(arrays, shift),
        DataType::Int64 => encode_ints::<Int64Type>(arrays, shift),
        DataType::Float64 => encode_ints::<Float64Type>(arrays, shift),
        DataType::Boolean => {
            let mut b = BooleanBufferBuilder::new(rows);
            for a in arrays {
                let a = a.as_boolean();
                match a.nulls() {
                    None => b.append_buffer(a.values()),
                    Some(n) => n.valid_indices().for_each(|i| b.append(a.value(i))),
                }
            }
            Values::Bool(b.finish())
        }
        DataType::FixedSizeBinary(w) => {
            let width = usize::try_from(*w).map_err(|_| unsupported(t, dt))?;
            let mut bytes = Vec::with_capacity(rows * width);
            for a in arrays {
                let a = a.as_fixed_size_binary();
                match a.nulls() {
                    // `value_data` of a sliced array starts at its first row.
                    None => bytes.extend_from_slice(&a.value_data()[..a.len() * width]),
                    Some(n) => n
                        .valid_indices()
                        .for_each(|i| bytes.extend_from_slice(a.value(i))),
                }
            }
            bytes.shrink_to_fit();
            Values::Fixed(bytes)
        }
        DataType::Utf8 => {
            let mut d = DictBuilder::new(rows, groups);
            for a in arrays {
                d.add_all(a.as_string::<i32>());
            }
            d.finish::<Utf8Type>(t)?
        }
        DataType::Binary => {
            let mut d = DictBuilder::new(rows, None);
            for a in arrays {
                d.add_all(a.as_binary::<i32>());
            }
            d.finish::<BinaryType>(t)?
        }
        DataType::Dictionary(k, v) if **k == DataType::UInt32 && **v == DataType::Utf8 => {
            let mut d = DictBuilder::new(rows, None);
            for a in arrays {
                d.add_dictionary(a.as_dictionary::<UInt32Type>(), t)?;
            }
            d.finish::<Utf8Type>(t)?
        }
        _ => return Err(unsupported(t, dt)),
    };
    Ok(Column { nulls, values })
}

/// Two passes over the sources: the range of the valid values, then their offsets from its
/// minimum, written straight in the narrow width. Columns without nulls (most of them) are
/// plain loops over slices, which the compiler vectorizes.
fn encode_ints<T: Ordinal>(arrays: &[&dyn Array], shift: Option<&[u64]>) -> Values {
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for (k, a) in arrays.iter().enumerate() {
        let a = a.as_primitive::<T>();
        let s = shift.map_or(0, |s| s[k]);
        match a.nulls() {
            None => {
                for &v in a.values().iter() {
                    let o = T::to_ord(v).wrapping_add(s);
                    lo = lo.min(o);
                    hi = hi.max(o);
                }
            }
            Some(n) => n.valid_indices().for_each(|i| {
                let o = T::to_ord(a.value(i)).wrapping_add(s);
                lo = lo.min(o);
                hi = hi.max(o);
            }),
        }
    }
    if lo > hi {
        // no valid value
        return Values::Int {
            base: 0,
            offsets: Narrow::Zero,
        };
    }
    /// The valid values' offsets from `lo`, narrowed by `f`.
    fn collect<T: Ordinal, N>(
        arrays: &[&dyn Array],
        shift: Option<&[u64]>,
        lo: u64,
        f: impl Fn(u64) -> N,
    ) -> Vec<N> {
        let mut v = Vec::with_capacity(arrays.iter().map(|a| a.len() - a.null_count()).sum());
        for (k, a) in arrays.iter().enumerate() {
            let a = a.as_primitive::<T>();
            let s = shift.map_or(0, |s| s[k]);
            match a.nulls() {
                None => v.extend(
                    a.values()
                        .iter()
                        .map(|&x| f(T::to_ord(x).wrapping_add(s).wrapping_sub(lo))),
                ),
                Some(n) => v.extend(
                    n.valid_indices()
                        .map(|i| f(T::to_ord(a.value(i)).wrapping_add(s).wrapping_sub(lo))),
                ),
            }
        }
        v
    }
    // The casts cannot truncate: every offset is <= hi - lo, which the width holds.
    let offsets = match width_of(hi - lo) {
        Width::Zero => Narrow::Zero,
        Width::U8 => Narrow::U8(collect::<T, _>(arrays, shift, lo, |o| o as u8)),
        Width::U16 => Narrow::U16(collect::<T, _>(arrays, shift, lo, |o| o as u16)),
        Width::U32 => Narrow::U32(collect::<T, _>(arrays, shift, lo, |o| o as u32)),
        Width::U64 => Narrow::U64(collect::<T, _>(arrays, shift, lo, |o| o)),
    };
    Values::Int { base: lo, offsets }
}

/// Byte-string equality for short values without a call into `memcmp` (most attribute values
/// are under 32 bytes): two overlapping word compares.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn word<const W: usize>(s: &[u8], at: usize) -> [u8; W] {
        s[at..].first_chunk::<W>().copied().unwrap_or([0; W])
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        17..=32 => {
            word::<16>(a, 0) == word::<16>(b, 0) && word::<16>(a, n - 16) == word::<16>(b, n - 16)
        }
        _ => a == b,
    }
}

/// A per-segment dictionary of byte strings.
struct DictBuilder<'g> {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    offsets: Vec<usize>,
    values: Vec<u8>,
    keys: Vec<u32>,
    /// The previous value's key: runs of equal values skip the hash.
    last: u32,
    /// For attribute values: each row's attribute key, and the last value seen per key.
    groups: Option<&'g [u32]>,
    last_by_group: Vec<u32>,
    /// Row number in the concatenation (indexes `groups`).
    row: usize,
}

const NONE: u32 = u32::MAX;

impl<'g> DictBuilder<'g> {
    fn new(rows: usize, groups: Option<&'g (Vec<u32>, usize)>) -> Self {
        DictBuilder {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            offsets: vec![0],
            values: Vec::new(),
            keys: Vec::with_capacity(rows),
            last: NONE,
            groups: groups.map(|g| g.0.as_slice()),
            last_by_group: groups.map_or(Vec::new(), |g| vec![NONE; g.1]),
            row: 0,
        }
    }

    #[inline]
    fn value(&self, k: u32) -> &[u8] {
        &self.values[self.offsets[k as usize]..self.offsets[k as usize + 1]]
    }

    /// The key of `v`, for row `row` of the concatenation. Inlined into the row loops (a call
    /// per value cost more than the hint check); the hash lookup stays out of line.
    #[inline(always)]
    fn intern_row(&mut self, row: usize, v: &[u8]) -> u32 {
        let group = self.groups.and_then(|g| g.get(row)).map(|&g| g as usize);
        let hint = match group {
            Some(g) => self.last_by_group.get(g).copied().unwrap_or(NONE),
            None => self.last,
        };
        if hint != NONE && same(self.value(hint), v) {
            return hint;
        }
        let k = self.intern(v);
        match group {
            Some(g) => {
                if let Some(slot) = self.last_by_group.get_mut(g) {
                    *slot = k;
                }
            }
            None => self.last = k,
        }
        k
    }

    #[inline(never)]
    fn intern(&mut self, v: &[u8]) -> u32 {
        let h = self.hasher.hash_one(v);
        let (offsets, values) = (&self.offsets, &self.values);
        let at = |k: u32| &values[offsets[k as usize]..offsets[k as usize + 1]];
        if let Some(&k) = self.table.find(h, |&k| same(at(k), v)) {
            return k;
        }
        let k = (self.offsets.len() - 1) as u32;
        self.values.extend_from_slice(v);
        self.offsets.push(self.values.len());
        let (offsets, values, hasher) = (&self.offsets, &self.values, &self.hasher);
        self.table.insert_unique(h, k, |&k| {
            hasher.hash_one(&values[offsets[k as usize]..offsets[k as usize + 1]])
        });
        k
    }

    fn add_all<T: ByteArrayType<Offset = i32>>(&mut self, a: &GenericByteArray<T>) {
        let base = self.row;
        self.row += a.len();
        match a.nulls() {
            None => (0..a.len()).for_each(|i| {
                let k = self.intern_row(base + i, a.value(i).as_ref());
                self.keys.push(k);
            }),
            Some(n) => n.valid_indices().for_each(|i| {
                let k = self.intern_row(base + i, a.value(i).as_ref());
                self.keys.push(k);
            }),
        }
    }

    /// A dictionary column: each of its values used here is interned once, rows are remapped.
    fn add_dictionary(
        &mut self,
        a: &DictionaryArray<UInt32Type>,
        t: Table,
    ) -> Result<(), PayloadError> {
        let values = a
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| unsupported(t, a.values().data_type()))?;
        let mut remap = vec![NONE; values.len()];
        let keys = a.keys();
        for i in 0..a.len() {
            if keys.is_null(i) {
                continue;
            }
            let v = keys.value(i) as usize;
            let slot = remap
                .get_mut(v)
                .ok_or_else(|| internal(t, "dictionary key out of range"))?;
            if *slot == NONE {
                *slot = self.intern(values.value(v).as_bytes());
            }
            self.keys.push(*slot);
        }
        Ok(())
    }

    fn finish<T: ByteArrayType<Offset = i32>>(self, t: Table) -> Result<Values, PayloadError> {
        let offsets: Vec<i32> = self
            .offsets
            .iter()
            .map(|&o| i32::try_from(o))
            .collect::<Result<_, _>>()
            .map_err(|_| internal(t, "over 2 GiB of distinct values"))?;
        let max = (self.offsets.len() - 1).saturating_sub(1) as u64;
        let keys = Narrow::new(self.keys.iter().map(|&k| u64::from(k)), max);
        let dict: GenericByteArray<T> = GenericByteArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(self.values),
            None,
        )?;
        Ok(Values::Bytes {
            dict: Arc::new(dict),
            keys,
        })
    }
}

/// Rows of one table of one segment to take, ascending.
enum Pick {
    All(usize),
    Some(SomeRows),
}

/// Picked rows, also as a bitmap over the table's rows with the number of picked rows before
/// each 64-row word (so a picked row's output position is found from its word, in O(1)).
struct SomeRows {
    rows: Vec<u32>,
    words: Vec<u64>,
    starts: Vec<u32>,
}

impl Pick {
    /// The rows where `mask` is true: packed into words first, then read off word by word.
    fn of_mask(mask: &[bool]) -> Pick {
        let words: Vec<u64> = mask
            .chunks(64)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u64, |w, (i, &k)| w | (u64::from(k) << i))
            })
            .collect();
        let mut starts = Vec::with_capacity(words.len());
        let mut rows = Vec::with_capacity(mask.len());
        for (w, &bits) in words.iter().enumerate() {
            starts.push(rows.len() as u32);
            let mut m = bits;
            while m != 0 {
                rows.push((w * 64) as u32 + m.trailing_zeros());
                m &= m - 1;
            }
        }
        Pick::Some(SomeRows {
            rows,
            words,
            starts,
        })
    }

    fn len(&self) -> usize {
        match self {
            Pick::All(n) => *n,
            Pick::Some(s) => s.rows.len(),
        }
    }
}

/// A null row (`null` value of a gather into keys).
const NULL_ROW: u32 = u32::MAX;

/// Where each picked row of a column reads its value: its index among the stored (valid)
/// values, or null.
enum Idx<'a> {
    /// Rows `0..n`, none null.
    Range(usize),
    /// These rows, none null.
    Rows(&'a [u32]),
    /// `len` rows, null but for `hits`: (output position, stored-value index), ascending.
    Sparse { len: usize, hits: Vec<(u32, u32)> },
    /// `n` null rows.
    AllNull(usize),
}

impl<'a> Idx<'a> {
    fn of(c: &Column, pick: &'a Pick) -> Idx<'a> {
        match (&c.values, &c.nulls, pick) {
            (Values::Null, _, p) => Idx::AllNull(p.len()),
            (_, None, Pick::All(n)) => Idx::Range(*n),
            (_, None, Pick::Some(s)) => Idx::Rows(&s.rows),
            (_, Some(nulls), p) => {
                // Word by word over the validity and the pick: only rows both valid and picked
                // are visited (attribute value columns are mostly null), each placed by
                // popcounts: its output position among the picked rows, its index among the
                // stored values.
                let mut hits = Vec::with_capacity(p.len().min(nulls.len() - nulls.null_count()));
                let mut stored = 0u32;
                // `iter_padded` always ends with the remainder word, even an empty one when
                // the length is a multiple of 64: take exactly the words the rows fill (the
                // pick has that many).
                let words = nulls.len().div_ceil(64);
                let chunks = nulls.inner().bit_chunks();
                for (w, valid) in chunks.iter_padded().take(words).enumerate() {
                    let (picked, before) = match p {
                        Pick::All(_) => (u64::MAX, (w * 64) as u32),
                        Pick::Some(s) => (s.words[w], s.starts[w]),
                    };
                    let mut m = valid & picked;
                    while m != 0 {
                        let below = (1u64 << m.trailing_zeros()) - 1;
                        hits.push((
                            before + (picked & below).count_ones(),
                            stored + (valid & below).count_ones(),
                        ));
                        m &= m - 1;
                    }
                    stored += valid.count_ones();
                }
                Idx::Sparse { len: p.len(), hits }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Idx::Range(n) | Idx::AllNull(n) | Idx::Sparse { len: n, .. } => *n,
            Idx::Rows(r) => r.len(),
        }
    }

    /// Appends `f(src[i])` for each index (`null` for null rows); `broadcast`: `src` holds one
    /// value that every index reads.
    #[inline]
    fn map_into<N: Copy, O: Copy>(
        &self,
        src: &[N],
        null: O,
        f: impl Fn(N) -> O,
        out: &mut Vec<O>,
        broadcast: bool,
    ) {
        if let Idx::Sparse { len, hits } = self {
            let base = out.len();
            out.resize(base + len, null);
            for &(at, i) in hits {
                out[base + at as usize] = f(src[if broadcast { 0 } else { i as usize }]);
            }
            return;
        }
        if broadcast {
            let v = f(src[0]);
            match self {
                Idx::AllNull(n) => out.extend(std::iter::repeat_n(null, *n)),
                _ => out.extend(std::iter::repeat_n(v, self.len())),
            }
            return;
        }
        match self {
            Idx::Range(n) => out.extend(src[..*n].iter().map(|&x| f(x))),
            Idx::Rows(r) => out.extend(r.iter().map(|&i| f(src[i as usize]))),
            Idx::AllNull(n) | Idx::Sparse { len: n, .. } => {
                out.extend(std::iter::repeat_n(null, *n))
            }
        }
    }

    /// Calls `f(Some(i))` for each stored-value index, `f(None)` for each null row.
    #[inline]
    fn each(&self, mut f: impl FnMut(Option<usize>)) {
        match self {
            Idx::Range(n) => (0..*n).for_each(|i| f(Some(i))),
            Idx::Rows(r) => r.iter().for_each(|&i| f(Some(i as usize))),
            Idx::Sparse { len, hits } => {
                let mut next = hits.iter().peekable();
                for at in 0..*len {
                    match next.next_if(|h| h.0 as usize == at) {
                        Some(&(_, i)) => f(Some(i as usize)),
                        None => f(None),
                    }
                }
            }
            Idx::AllNull(n) => (0..*n).for_each(|_| f(None)),
        }
    }
}

/// Validity of an output column, built across inputs: bits packed into words by hand (a
/// per-bit `BooleanBufferBuilder::append` was a visible share of taking rows out).
struct Validity {
    words: Vec<u64>,
    len: usize,
    nulls: usize,
}

impl Validity {
    fn new(len: usize) -> Self {
        Validity {
            words: Vec::with_capacity(len.div_ceil(64)),
            len: 0,
            nulls: 0,
        }
    }

    #[inline]
    fn bit(&mut self, valid: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        if let Some(w) = self.words.last_mut() {
            *w |= u64::from(valid) << (self.len % 64);
        }
        self.len += 1;
    }

    fn valid_run(&mut self, mut n: usize) {
        while n > 0 && !self.len.is_multiple_of(64) {
            self.bit(true);
            n -= 1;
        }
        self.words.extend(std::iter::repeat_n(u64::MAX, n / 64));
        self.len += n / 64 * 64;
        for _ in 0..n % 64 {
            self.bit(true);
        }
    }

    fn null_run(&mut self, n: usize) {
        self.nulls += n;
        self.len += n;
        self.words.resize(self.len.div_ceil(64), 0);
    }

    fn push(&mut self, idx: &Idx) {
        match idx {
            Idx::Range(_) | Idx::Rows(_) => self.valid_run(idx.len()),
            Idx::AllNull(n) => self.null_run(*n),
            Idx::Sparse { len, hits } => {
                let at = self.len;
                self.null_run(*len);
                for &(k, _) in hits {
                    let i = at + k as usize;
                    self.words[i / 64] |= 1 << (i % 64);
                }
                self.nulls -= hits.len();
            }
        }
    }

    fn finish(self) -> Option<NullBuffer> {
        (self.nulls > 0).then(|| {
            NullBuffer::new(BooleanBuffer::new(
                Buffer::from_vec(self.words),
                0,
                self.len,
            ))
        })
    }
}

/// Appends the picked rows of an integer column to `out` (null rows as 0), recording validity
/// if asked.
fn push_ints<T: Ordinal>(
    c: &Column,
    pick: &Pick,
    out: &mut Vec<T::Native>,
    validity: Option<&mut Validity>,
) {
    let idx = Idx::of(c, pick);
    match &c.values {
        Values::Int { base, offsets } => {
            let base = *base;
            offsets.gather(
                &idx,
                T::Native::default(),
                |o| T::from_ord(base.wrapping_add(o)),
                out,
            );
        }
        // All null (an integer column is never encoded otherwise).
        _ => out.extend(std::iter::repeat_n(T::Native::default(), idx.len())),
    }
    if let Some(v) = validity {
        v.push(&idx);
    }
}

/// Which rows of each table of a segment to take, and their parents' new row numbers.
struct Selection {
    picks: Vec<Pick>,
    /// Per child table: the taken rows' parent ids, renumbered within this segment's output.
    parents: Vec<Vec<u32>>,
}

/// Which rows to take from `seg` given the spans to keep (`None`: every row of every table):
/// exactly what [`Payload::filter_tables`] keeps for that span mask.
fn select(seg: &Segment, keep_spans: Option<&[bool]>) -> Selection {
    let ts = tables();
    let parent_slot = |t: Table| t.parent().map(slot);
    let parent_ids: Vec<Vec<u32>> = ts
        .iter()
        .map(|&t| match t.parent() {
            Some(_) => seg.parent_ids(t),
            None => Vec::new(),
        })
        .collect();
    let Some(spans_mask) = keep_spans.filter(|m| m.contains(&false)) else {
        return Selection {
            picks: seg.tables.iter().map(|e| Pick::All(e.rows)).collect(),
            parents: parent_ids,
        };
    };
    let mut keep: Vec<Option<Vec<bool>>> = vec![None; ts.len()];
    keep[slot(Table::Spans)] = Some(spans_mask.to_vec());
    // Children follow their parent's mask, for the tables whose parent mask `changed` (parents
    // come before children in `ts`, so one pass carries a change down the tree).
    let cascade = |keep: &mut Vec<Option<Vec<bool>>>, changed: &mut Vec<bool>, skip: usize| {
        for (s, &t) in ts.iter().enumerate() {
            let Some(p) = parent_slot(t).filter(|&p| changed[p] && s != skip) else {
                continue;
            };
            let (parents, children) = keep.split_at_mut(s);
            let Some(pk) = parents[p].as_deref() else {
                continue;
            };
            let ids = &parent_ids[s];
            let m = children[0].get_or_insert_with(|| vec![true; ids.len()]);
            m.iter_mut()
                .zip(ids)
                .for_each(|(k, &p)| *k &= pk[p as usize]);
            changed[s] = true;
        }
    };
    let mut changed = vec![false; ts.len()];
    changed[slot(Table::Spans)] = true;
    cascade(&mut keep, &mut changed, usize::MAX);
    // Spans were dropped (the filter "touched" the spans table): scopes left without spans
    // go, then resources left without scopes. Only their other children need the cascade
    // again: no kept span is under a scope that goes.
    changed.fill(false);
    for (container, child) in [
        (Table::Scopes, Table::Spans),
        (Table::Resources, Table::Scopes),
    ] {
        let (cs, ps) = (slot(child), slot(container));
        let Some(child_keep) = keep[cs].as_ref().filter(|m| m.contains(&false)) else {
            continue;
        };
        let mut has_child = vec![false; seg.tables[ps].rows];
        parent_ids[cs]
            .iter()
            .zip(child_keep)
            .filter(|(_, k)| **k)
            .for_each(|(&p, _)| has_child[p as usize] = true);
        let m = keep[ps].get_or_insert_with(|| vec![true; has_child.len()]);
        m.iter_mut().zip(&has_child).for_each(|(k, h)| *k &= *h);
        changed[ps] = true;
    }
    cascade(&mut keep, &mut changed, slot(Table::Spans));
    let mut picks = Vec::with_capacity(ts.len());
    let mut parents = Vec::with_capacity(ts.len());
    for (s, &t) in ts.iter().enumerate() {
        let pick = match &keep[s] {
            Some(m) => Pick::of_mask(m),
            None => Pick::All(seg.tables[s].rows),
        };
        let new_parent: Option<Vec<u32>> = parent_slot(t).and_then(|p| {
            keep[p].as_ref().map(|pk| {
                let mut next = 0u32;
                pk.iter()
                    .map(|&k| {
                        let id = next;
                        next += u32::from(k);
                        id
                    })
                    .collect()
            })
        });
        let ids = &parent_ids[s];
        let taken: Vec<u32> = match (&pick, &new_parent) {
            _ if t.parent().is_none() => Vec::new(),
            (Pick::Some(r), Some(np)) => r
                .rows
                .iter()
                .map(|&i| np[ids[i as usize] as usize])
                .collect(),
            (Pick::Some(r), None) => r.rows.iter().map(|&i| ids[i as usize]).collect(),
            (Pick::All(_), Some(np)) => ids.iter().map(|&p| np[p as usize]).collect(),
            (Pick::All(_), None) => ids.clone(),
        };
        parents.push(taken);
        picks.push(pick);
    }
    Selection { picks, parents }
}

/// Takes rows out of segments into one payload, in order: for each `(segment, keep)`, the spans
/// where `keep` is true (every span for `None`) with everything that belongs to them, as
/// `Payload::filter(Table::Spans, keep)` of the segment's decoded payload would keep them.
pub fn take(segments: &[(&Segment, Option<&[bool]>)]) -> Result<Payload, PayloadError> {
    let selections: Vec<Selection> = segments.iter().map(|(s, k)| select(s, *k)).collect();
    let mut out = Vec::with_capacity(tables().len());
    for (s, &t) in tables().iter().enumerate() {
        let schema = t.schema();
        let total: usize = selections.iter().map(|sel| sel.picks[s].len()).sum();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            let array = if i == 0 && t.parent().is_some() {
                // parent ids: renumbered per segment, shifted by the parent rows of the
                // segments before.
                let p = slot(t.parent().expect("child table"));
                let mut ids = Vec::with_capacity(total);
                let mut shift = 0u32;
                for sel in &selections {
                    ids.extend(sel.parents[s].iter().map(|&x| x + shift));
                    shift += sel.picks[p].len() as u32;
                }
                Arc::new(UInt32Array::from(ids)) as ArrayRef
            } else {
                let inputs: Vec<(&Column, &Pick)> = segments
                    .iter()
                    .zip(&selections)
                    .map(|((seg, _), sel)| (&seg.tables[s].columns[i], &sel.picks[s]))
                    .collect();
                build(t, field.data_type(), &inputs, total)?
            };
            columns.push(array);
        }
        out.push((t, RecordBatch::try_new(schema, columns)?));
    }
    Payload::from_tables(Signal::Traces, out)
}

/// Builds one output column of `dt` from the picked rows of each input.
fn build(
    t: Table,
    dt: &DataType,
    inputs: &[(&Column, &Pick)],
    total: usize,
) -> Result<ArrayRef, PayloadError> {
    fn ints<T: Ordinal>(inputs: &[(&Column, &Pick)], total: usize) -> ArrayRef {
        let mut values = Vec::with_capacity(total);
        let mut validity = Validity::new(total);
        for (c, pick) in inputs {
            push_ints::<T>(c, pick, &mut values, Some(&mut validity));
        }
        Arc::new(PrimitiveArray::<T>::new(
            ScalarBuffer::from(values),
            validity.finish(),
        ))
    }
    Ok(match dt {
        DataType::UInt8 => ints::<UInt8Type>(inputs, total),
        DataType::UInt32 => ints::<UInt32Type>(inputs, total),
        DataType::UInt64 => ints::<UInt64Type>(inputs, total),
        DataType::Int32 => ints::<Int32Type>(inputs, total),
        DataType::Int64 => ints::<Int64Type>(inputs, total),
        DataType::Float64 => ints::<Float64Type>(inputs, total),
        DataType::Boolean => {
            let mut values = BooleanBufferBuilder::new(total);
            let mut validity = Validity::new(total);
            for (c, pick) in inputs {
                let idx = Idx::of(c, pick);
                match &c.values {
                    Values::Bool(b) => idx.each(|r| values.append(r.is_some_and(|r| b.value(r)))),
                    _ => values.append_n(idx.len(), false),
                }
                validity.push(&idx);
            }
            Arc::new(BooleanArray::new(values.finish(), validity.finish()))
        }
        DataType::FixedSizeBinary(w) => {
            let width = usize::try_from(*w).map_err(|_| unsupported(t, dt))?;
            let mut bytes = Vec::with_capacity(total * width);
            let mut validity = Validity::new(total);
            for (c, pick) in inputs {
                let idx = Idx::of(c, pick);
                match (&c.values, &idx) {
                    (Values::Fixed(src), Idx::Range(n)) => {
                        bytes.extend_from_slice(&src[..n * width]);
                    }
                    (Values::Fixed(src), _) => idx.each(|r| match r {
                        Some(r) => bytes.extend_from_slice(&src[r * width..(r + 1) * width]),
                        None => bytes.resize(bytes.len() + width, 0),
                    }),
                    _ => bytes.resize(bytes.len() + idx.len() * width, 0),
                }
                validity.push(&idx);
            }
            Arc::new(FixedSizeBinaryArray::try_new(
                *w,
                Buffer::from_vec(bytes),
                validity.finish(),
            )?)
        }
        DataType::Utf8 => bytes::<Utf8Type>(t, inputs, total)?,
        DataType::Binary => bytes::<BinaryType>(t, inputs, total)?,
        DataType::Dictionary(_, _) => {
            let mut keys = Vec::with_capacity(total);
            let mut validity = Validity::new(total);
            let mut dicts: Vec<&dyn Array> = Vec::new();
            let mut shift = 0u32;
            for (c, pick) in inputs {
                let idx = Idx::of(c, pick);
                if let Values::Bytes { dict, keys: k } = &c.values {
                    k.gather(&idx, 0, |x| x as u32 + shift, &mut keys);
                    shift += dict.len() as u32;
                    dicts.push(dict.as_ref());
                } else {
                    keys.extend(std::iter::repeat_n(0, idx.len()));
                }
                validity.push(&idx);
            }
            let values: ArrayRef = match dicts.len() {
                0 => Arc::new(StringArray::from(Vec::<&str>::new())),
                1 => Arc::new(dicts[0].as_string::<i32>().clone()),
                _ => arrow::compute::concat(&dicts)?,
            };
            Arc::new(DictionaryArray::<UInt32Type>::try_new(
                UInt32Array::new(ScalarBuffer::from(keys), validity.finish()),
                values,
            )?)
        }
        _ => return Err(unsupported(t, dt)),
    })
}

/// A string or byte-string column: each picked value copied out of its segment's dictionary,
/// into buffers sized exactly in a first pass.
fn bytes<T: ByteArrayType<Offset = i32>>(
    t: Table,
    inputs: &[(&Column, &Pick)],
    total: usize,
) -> Result<ArrayRef, PayloadError> {
    let mut validity = Validity::new(total);
    // Per input: its dictionary's offsets and values, and each picked row's key (NULL_ROW: null).
    type Picked<'a> = (Option<(&'a [i32], &'a [u8])>, Vec<u32>);
    let mut picked: Vec<Picked> = Vec::with_capacity(inputs.len());
    let mut bytes_len = 0usize;
    for (c, pick) in inputs {
        let idx = Idx::of(c, pick);
        let mut keys = Vec::with_capacity(idx.len());
        let dict = match &c.values {
            Values::Bytes { dict, keys: k } => {
                let d = dict.as_bytes::<T>();
                let offs: &[i32] = d.value_offsets();
                k.gather(&idx, NULL_ROW, |x| x as u32, &mut keys);
                bytes_len += keys
                    .iter()
                    .filter(|&&k| k != NULL_ROW)
                    .map(|&k| (offs[k as usize + 1] - offs[k as usize]) as usize)
                    .sum::<usize>();
                Some((offs, d.value_data()))
            }
            _ => {
                keys.extend(std::iter::repeat_n(NULL_ROW, idx.len()));
                None
            }
        };
        validity.push(&idx);
        picked.push((dict, keys));
    }
    if i32::try_from(bytes_len).is_err() {
        return Err(internal(t, "over 2 GiB of values in one column"));
    }
    let mut offsets: Vec<i32> = Vec::with_capacity(total + 1);
    offsets.push(0);
    let mut values: Vec<u8> = Vec::with_capacity(bytes_len);
    for (dict, keys) in &picked {
        match dict {
            Some((offs, data)) => {
                for &k in keys {
                    if k != NULL_ROW {
                        let (a, b) = (offs[k as usize] as usize, offs[k as usize + 1] as usize);
                        values.extend_from_slice(&data[a..b]);
                    }
                    // fits: the total was checked above
                    offsets.push(values.len() as i32);
                }
            }
            None => offsets.extend(std::iter::repeat_n(values.len() as i32, keys.len())),
        }
    }
    // SAFETY: `offsets` start at 0 and ascend to `values.len()` (one push after each value
    // appended above), and every value is a whole value of a dictionary of type `T` that was
    // validated when its segment was sealed (`DictBuilder::finish`), so the values are valid
    // for `T` (UTF-8 for strings). Validating again cost ~5% of a steady state (callgrind).
    let a: GenericByteArray<T> = unsafe {
        GenericByteArray::new_unchecked(
            OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            validity.finish(),
        )
    };
    Ok(Arc::new(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::testing::{arb_traces_request, assert_payload_eq, reference_traces};
    use crate::processors::test_support::one_scope;
    use proptest::prelude::*;

    /// Splits `p` into up to three parts by span (`cut` picks each span's part), as ingest
    /// filters a request into buckets; ordinals are arbitrary but distinct per span.
    fn parts_of(p: &Payload, cut: &[u8]) -> Vec<Part> {
        let n = p.item_count();
        (0..3u8)
            .map(|k| {
                let mask: Vec<bool> = (0..n).map(|i| cut[i % cut.len()] % 3 == k).collect();
                let payload = p.filter(Table::Spans, &mask).unwrap();
                let ordinals = (0..n as u32)
                    .zip(&mask)
                    .filter(|(_, m)| **m)
                    .map(|(i, _)| i * 7 % 1000)
                    .collect();
                Part { payload, ordinals }
            })
            .filter(|part| !part.payload.is_empty())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Sealed then taken whole, parts come back as their concatenation, value for value
        /// (nulls, empty strings, doubles bit for bit, dictionary values, parent ids).
        #[test]
        fn sealed_segments_read_back_exactly(req in arb_traces_request(), cut in prop::collection::vec(any::<u8>(), 1..8)) {
            let p = reference_traces(&req);
            let mut parts = parts_of(&p, &cut);
            parts.push(Part { payload: p.clone(), ordinals: (0..p.item_count() as u32).collect() });
            let seg = Segment::seal(&parts).unwrap();
            let back = seg.open().unwrap();
            back.payload.validate().unwrap();
            let payloads: Vec<Payload> = parts.iter().map(|x| x.payload.clone()).collect();
            assert_payload_eq(&back.payload, &Payload::concat(Signal::Traces, &payloads).unwrap());
            let ordinals: Vec<u32> = parts.iter().flat_map(|x| x.ordinals.clone()).collect();
            prop_assert_eq!(back.ordinals, ordinals.clone());
            prop_assert_eq!(seg.ordinals(), ordinals);
            prop_assert_eq!(seg.spans(), p.item_count() * 2);
        }

        /// An OTLP request decoded, sealed and read back encodes to the very bytes it came
        /// from: every span, attribute (all value types), event, link, scope and resource.
        #[test]
        fn a_sealed_request_encodes_back_to_its_own_bytes(req in arb_traces_request()) {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
            use prost::Message;
            let bytes = req.encode_to_vec();
            let decoded = crate::otlp::decode(Signal::Traces, &bytes).unwrap();
            let n = decoded.item_count() as u32;
            let seg = Segment::seal(&[Part { payload: decoded, ordinals: (0..n).collect() }]).unwrap();
            let back = crate::otlp::encode_to_vec(&seg.open().unwrap().payload);
            prop_assert_eq!(
                ExportTraceServiceRequest::decode(back.as_slice()).unwrap(),
                ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap()
            );
            prop_assert_eq!(back, bytes);
        }

        /// Taking kept spans out of several segments gives what filtering each segment's
        /// decoded payload and concatenating the results gives (the path before segments).
        #[test]
        fn taking_kept_spans_is_filter_then_concat(
            a in arb_traces_request(),
            b in arb_traces_request(),
            seed in any::<u64>(),
            cut in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let (pa, pb) = (reference_traces(&a), reference_traces(&b));
            let sa = Segment::seal(&parts_of(&pa, &cut)).unwrap();
            let sb = Segment::seal(&[Part { payload: pb.clone(), ordinals: vec![0; pb.item_count()] }]).unwrap();
            let decoded = [sa.open().unwrap().payload, pb];
            let masks: Vec<Vec<bool>> = decoded
                .iter()
                .enumerate()
                .map(|(k, d)| (0..d.item_count()).map(|i| (seed >> ((i + k * 13) % 64)) & 1 == 1).collect())
                .collect();
            let want: Vec<Payload> = decoded.iter().zip(&masks).map(|(d, m)| d.filter(Table::Spans, m).unwrap()).collect();
            let got = take(&[(&sa, Some(&masks[0])), (&sb, Some(&masks[1]))]).unwrap();
            got.validate().unwrap();
            assert_payload_eq(&got, &Payload::concat(Signal::Traces, &want).unwrap());
        }
    }

    /// A string or int attribute (for the hand-written requests below).
    fn kv(
        k: &str,
        v: opentelemetry_proto::tonic::common::v1::any_value::Value,
    ) -> opentelemetry_proto::tonic::common::v1::KeyValue {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// Tables whose row counts are multiples of 64 (128 spans, 256 attribute rows with a
    /// mostly-null int column) and a mask that drops spans: the gather over validity words
    /// must stop at the rows (arrow's `iter_padded` adds an empty remainder word here; reading
    /// it panicked in the gateway, found by the end-to-end benchmark's smoke test).
    #[test]
    fn taking_from_tables_of_whole_64_row_words() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::trace::v1::Span;
        let spans: Vec<Span> = (0..128u64)
            .map(|i| Span {
                trace_id: (i / 4 + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("span {}", i % 5),
                attributes: vec![
                    kv("http.route", Value::StringValue(format!("/r/{}", i % 7))),
                    kv(
                        "http.response.status_code",
                        Value::IntValue(200 + i as i64 % 3),
                    ),
                ],
                ..Default::default()
            })
            .collect();
        let p = one_scope(spans);
        assert_eq!(p.table(Table::SpanAttrs).num_rows(), 256);
        let seg = Segment::seal(&[Part {
            payload: p.clone(),
            ordinals: (0..128).map(|i| i / 4).collect(),
        }])
        .unwrap();
        for keep_every in [2, 3, 64] {
            let mask: Vec<bool> = (0..128).map(|i| i % keep_every == 0).collect();
            let got = take(&[(&seg, Some(&mask))]).unwrap();
            got.validate().unwrap();
            assert_payload_eq(&got, &p.filter(Table::Spans, &mask).unwrap());
        }
    }

    /// 1,000 spans whose attributes repeat a small vocabulary (and leave the int, double,
    /// bool and bytes columns mostly or entirely null) seal to a fraction of their Arrow size.
    #[test]
    fn mostly_null_and_repeated_columns_take_little_room() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        use opentelemetry_proto::tonic::trace::v1::Span;
        let routes = ["/api/v1/users/{id}", "/api/v1/cart", "/healthz"];
        let spans: Vec<Span> = (0..1000u64)
            .map(|i| Span {
                trace_id: (i / 4 + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("GET {}", routes[i as usize % 3]),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000,
                end_time_unix_nano: 1_700_000_000_000_000_000 + i * 1_000_000 + 5_000_000,
                attributes: vec![
                    kv(
                        "http.route",
                        Value::StringValue(routes[i as usize % 3].into()),
                    ),
                    kv("http.request.method", Value::StringValue("GET".into())),
                    kv("url.scheme", Value::StringValue("https".into())),
                    kv(
                        "user_agent.original",
                        Value::StringValue("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0".into()),
                    ),
                    kv(
                        "server.address",
                        Value::StringValue("shop.example.com".into()),
                    ),
                    kv("http.response.status_code", Value::IntValue(200)),
                ],
                ..Default::default()
            })
            .collect();
        let p = one_scope(spans);
        let seg = Segment::seal(&[Part {
            payload: p.clone(),
            ordinals: (0..1000).map(|i| i / 4).collect(),
        }])
        .unwrap();
        let (arrow, sealed) = (p.memory_size(), seg.resident_bytes());
        assert!(
            sealed * 4 < arrow,
            "sealed {sealed} B vs {arrow} B of Arrow"
        );
        assert_payload_eq(&seg.open().unwrap().payload, &p);
    }
}
