//! Column builders over plain `Vec`s. The decoders append into these while walking the wire
//! bytes; Arrow arrays are built once, in `finish`.
//!
//! UTF-8: dictionary values are validated when first inserted (once per distinct string).
//! Plain `Utf8` columns are validated in bulk by `StringArray::try_new` in `finish` (one pass
//! over the value buffer plus a char-boundary check per offset), which is much cheaper than one
//! `from_utf8` call per short string. When that bulk check fails the decoder runs again in
//! strict mode, validating each string where it is read, to name the offending field.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, BooleanBufferBuilder, DictionaryArray,
    FixedSizeBinaryArray, ListArray, NullBufferBuilder, PrimitiveArray, StringArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float64Type, Int64Type, UInt8Type, UInt32Type,
};
use hashbrown::HashMap;

use super::wire::{Kind, R, err};
use crate::kernels::nulls::null_array;

#[cold]
fn internal(e: impl std::fmt::Display) -> super::wire::Error {
    err(Kind::Internal(e.to_string()), None)
}

/// Gives back the growth slack of a column buffer: Arrow keeps the `Vec`'s allocation, and
/// decoded batches may sit in memory for a while (batching, tail sampling).
fn tight<T>(mut v: Vec<T>) -> Vec<T> {
    if v.capacity() - v.len() > 4096 / std::mem::size_of::<T>().max(1) {
        v.shrink_to_fit();
    }
    v
}

/// Sets a singular string field: the last occurrence wins, as in prost. (prost also refuses
/// a replaced occurrence that is not UTF-8; sluice takes invalid UTF-8 anywhere, see
/// `utf8_array`, so the replaced one needs no check.)
#[inline(always)]
pub(crate) fn set_str<'a>(slot: &mut &'a [u8], new: &'a [u8], _field: &'static str) -> R<()> {
    *slot = new;
    Ok(())
}

fn offsets(v: Vec<i32>) -> OffsetBuffer<i32> {
    let v = tight(v);
    // Offsets are built monotonically from 0 by construction; `new` re-checks (cheap).
    OffsetBuffer::new(ScalarBuffer::from(v))
}

fn utf8_array(offs: Vec<i32>, values: Vec<u8>, nulls: Option<NullBuffer>) -> R<StringArray> {
    let offsets = offsets(offs);
    let values = tight(values);
    // Telemetry strings are nearly always ASCII, and for ASCII values `try_new`'s per-offset
    // char-boundary check (a third of this function's time) cannot fail.
    if values.is_ascii()
        && offsets.last() as usize <= values.len()
        && nulls.as_ref().is_none_or(|n| n.len() == offsets.len() - 1)
    {
        // SAFETY: `new_unchecked` is sound when `try_new` would not error. `try_new` checks:
        // offsets non-negative and increasing (checked by `OffsetBuffer::new` in `offsets`),
        // the last offset within `values` and the null buffer's length (both checked just
        // above), the values valid UTF-8 and every offset on a char boundary (ASCII is valid
        // UTF-8 and every byte index of ASCII is a char boundary).
        return Ok(unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(values), nulls) });
    }
    let values = Buffer::from_vec(values);
    match StringArray::try_new(offsets.clone(), values.clone(), nulls.clone()) {
        Ok(a) => Ok(a),
        Err(_) => repair_utf8(&offsets, values.as_slice(), nulls),
    }
}

/// The column again with each value that is not valid UTF-8 made valid (every invalid sequence
/// becomes U+FFFD), counted (see `count_replaced_utf8`). The Collector's decoder does not check
/// UTF-8 at all and passes such bytes on; Arrow strings must be valid, and one bad value must
/// not cost the whole request.
#[cold]
fn repair_utf8(
    offsets: &OffsetBuffer<i32>,
    values: &[u8],
    nulls: Option<NullBuffer>,
) -> R<StringArray> {
    let mut out = Vec::with_capacity(values.len() + 64);
    let mut offs = Vec::with_capacity(offsets.len());
    offs.push(0i32);
    let mut replaced = 0;
    for w in offsets.windows(2) {
        let s = values.get(w[0] as usize..w[1] as usize).unwrap_or_default();
        if std::str::from_utf8(s).is_ok() {
            out.extend_from_slice(s);
        } else {
            replaced += 1;
            out.extend_from_slice(String::from_utf8_lossy(s).as_bytes());
        }
        offs.push(
            i32::try_from(out.len())
                .map_err(|_| internal("repaired strings overflow i32 offsets"))?,
        );
    }
    super::count_replaced_utf8(replaced);
    StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offs)),
        Buffer::from_vec(out),
        nulls,
    )
    .map_err(internal)
}

/// A dictionary-encoded UTF-8 column (`Dictionary<UInt32, Utf8>`). The map borrows the input
/// buffer: the same attribute keys and span names repeat on every span.
pub(crate) struct Dict<'a> {
    map: HashMap<&'a [u8], u32>,
    values: Vec<u8>,
    offsets: Vec<i32>,
    keys: Vec<u32>,
    /// The last string seen at each slot (attribute index within its parent, or 0) and its
    /// key. Spans of one kind carry the same keys in the same order, so comparing against the
    /// previous span's key at the same position usually skips the hash lookup entirely.
    recent: Vec<(&'a [u8], u32)>,
}

/// Slots beyond this are not cached (attribute lists are rarely longer).
const MAX_SLOTS: usize = 64;

#[cfg(test)]
pub(crate) fn short_eq_for_tests(a: &[u8], b: &[u8]) -> bool {
    short_eq(a, b)
}

/// Equality for short byte strings without a `memcmp` call: word-sized loads, the last one
/// overlapping. Keys and names are typically 4 to 40 bytes.
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let load = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    let mut i = 0;
    while i + 8 < n {
        if load(a, i) != load(b, i) {
            return false;
        }
        i += 8;
    }
    load(a, n - 8) == load(b, n - 8)
}

impl<'a> Dict<'a> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A dictionary column expecting about `rows` rows (see [`Attrs::with_capacity`]).
    pub fn with_capacity(rows: usize) -> Self {
        Dict {
            map: HashMap::new(),
            values: Vec::new(),
            offsets: vec![0],
            keys: Vec::with_capacity(rows),
            recent: Vec::new(),
        }
    }

    /// Appends `s` (a value that is not position-dependent: names, units, ...).
    #[inline]
    pub fn push(&mut self, s: &'a [u8]) -> R<()> {
        self.push_at(0, s)
    }

    /// Appends `s`, seen at position `slot` of its parent (e.g. the attribute index).
    #[inline(always)]
    pub fn push_at(&mut self, slot: u32, s: &'a [u8]) -> R<()> {
        let slot = slot as usize;
        if let Some(&(prev, k)) = self.recent.get(slot)
            && short_eq(prev, s)
        {
            self.keys.push(k);
            return Ok(());
        }
        let k = match self.map.get(s) {
            Some(&k) => k,
            None => self.insert(s)?,
        };
        self.keys.push(k);
        if let Some(r) = self.recent.get_mut(slot) {
            *r = (s, k);
        } else if slot == self.recent.len() && slot < MAX_SLOTS {
            self.recent.push((s, k));
        }
        Ok(())
    }

    #[inline(never)]
    fn insert(&mut self, s: &'a [u8]) -> R<u32> {
        let k = self.map.len() as u32;
        if std::str::from_utf8(s).is_ok() {
            self.values.extend_from_slice(s);
        } else {
            // Stored with U+FFFD for each invalid sequence; the map keeps the raw bytes, so
            // the same raw string maps to the same entry.
            super::count_replaced_utf8(1);
            self.values
                .extend_from_slice(String::from_utf8_lossy(s).as_bytes());
        }
        self.offsets.push(self.values.len() as i32);
        self.map.insert(s, k);
        Ok(k)
    }

    pub fn finish(self) -> R<ArrayRef> {
        let values = utf8_array(self.offsets, self.values, None)?;
        let keys = UInt32Array::new(ScalarBuffer::from(tight(self.keys)), None);
        let d = DictionaryArray::<UInt32Type>::try_new(keys, Arc::new(values)).map_err(internal)?;
        Ok(Arc::new(d))
    }
}

/// A non-null `Utf8` column, validated in bulk at `finish`.
pub(crate) struct Str {
    values: Vec<u8>,
    offsets: Vec<i32>,
}

impl Str {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }
    /// A column expecting about `rows` rows (string bytes grow as they come).
    pub fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Str {
            values: Vec::new(),
            offsets,
        }
    }
    #[inline]
    pub fn push(&mut self, s: &[u8]) {
        self.values.extend_from_slice(s);
        self.offsets.push(self.values.len() as i32);
    }
    pub fn finish(self) -> R<ArrayRef> {
        Ok(Arc::new(utf8_array(self.offsets, self.values, None)?))
    }
}

/// A non-null `Binary` column whose current row can be appended to piecewise (`entity_refs`).
pub(crate) struct Bin {
    values: Vec<u8>,
    offsets: Vec<i32>,
}

impl Bin {
    pub fn new() -> Self {
        Bin {
            values: Vec::new(),
            offsets: vec![0],
        }
    }
    /// Appends to the open row.
    pub fn extend(&mut self, b: &[u8]) {
        self.values.extend_from_slice(b);
    }
    /// Closes the open row.
    pub fn close_row(&mut self) {
        self.offsets.push(self.values.len() as i32);
    }
    pub fn finish(self) -> ArrayRef {
        Arc::new(BinaryArray::new(
            offsets(self.offsets),
            Buffer::from_vec(tight(self.values)),
            None,
        ))
    }
}

/// A nullable `FixedSizeBinary(N)` column (ids): an empty input is null.
pub(crate) struct FixedBin<const N: usize> {
    values: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl<const N: usize> FixedBin<N> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }
    /// A column expecting about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        FixedBin {
            values: Vec::with_capacity(rows * N),
            nulls: NullBufferBuilder::new(rows),
        }
    }
    /// `b` must be empty or `N` bytes long (checked by the caller, which knows the field).
    #[inline]
    pub fn push(&mut self, b: &[u8]) {
        if b.len() == N {
            self.values.extend_from_slice(b);
            self.nulls.append_non_null();
        } else {
            self.values.extend_from_slice(&[0u8; N]);
            self.nulls.append_null();
        }
    }
    pub fn finish(mut self) -> R<ArrayRef> {
        let a = FixedSizeBinaryArray::try_new(
            N as i32,
            Buffer::from_vec(tight(self.values)),
            self.nulls.finish(),
        )
        .map_err(internal)?;
        Ok(Arc::new(a))
    }
}

/// Checks an id field's length: empty or exactly `N` bytes.
#[inline(always)]
pub(crate) fn check_id<const N: usize>(b: &[u8], field: &'static str) -> R<()> {
    if b.is_empty() || b.len() == N {
        Ok(())
    } else {
        Err(super::wire::field_err(
            Kind::BadIdLength {
                len: b.len(),
                expected: N,
            },
            field,
        ))
    }
}

pub(crate) fn prim<T: ArrowPrimitiveType>(v: Vec<T::Native>) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(tight(v)), None))
}

/// A nullable primitive column.
pub(crate) struct OptPrim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> OptPrim<T> {
    pub fn new() -> Self {
        OptPrim {
            values: Vec::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }
    #[inline]
    pub fn push(&mut self, v: Option<T::Native>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.nulls.append_non_null();
            }
            None => {
                self.values.push(T::Native::default());
                self.nulls.append_null();
            }
        }
    }
    pub fn finish(mut self) -> ArrayRef {
        Arc::new(PrimitiveArray::<T>::new(
            ScalarBuffer::from(tight(self.values)),
            self.nulls.finish(),
        ))
    }
}

pub(crate) fn bools(v: &[bool]) -> ArrayRef {
    let mut b = BooleanBufferBuilder::new(v.len());
    for &x in v {
        b.append(x);
    }
    Arc::new(BooleanArray::new(b.finish(), None))
}

/// A non-null `List<T>` column with non-null items (bucket counts, bounds, quantiles).
pub(crate) struct List<T: ArrowPrimitiveType> {
    pub values: Vec<T::Native>,
    offsets: Vec<i32>,
}

impl<T: ArrowPrimitiveType> List<T> {
    pub fn new() -> Self {
        List {
            values: Vec::new(),
            offsets: vec![0],
        }
    }
    /// Closes the open row (its items were pushed to `values`).
    pub fn close_row(&mut self) {
        self.offsets.push(self.values.len() as i32);
    }
    pub fn finish(self) -> R<ArrayRef> {
        let field = Arc::new(Field::new("item", T::DATA_TYPE, false));
        let values = PrimitiveArray::<T>::new(ScalarBuffer::from(tight(self.values)), None);
        let a = ListArray::try_new(field, offsets(self.offsets), Arc::new(values), None)
            .map_err(internal)?;
        Ok(Arc::new(a))
    }
}

/// An `AnyValue` as read from the wire, before it is appended. Slices borrow the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Empty,
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    /// The protobuf encoding of the whole `AnyValue` message holding an `array_value`.
    Array(&'a [u8]),
    /// The protobuf encoding of the whole `AnyValue` message holding a `kvlist_value`.
    Map(&'a [u8]),
    /// An array (`map: false`) or kvlist value holding strings that are not valid UTF-8:
    /// stored repaired (see `nested::repair`).
    NeedsRepair {
        bytes: &'a [u8],
        map: bool,
    },
    /// A `KeyValue` without a `value` message.
    Absent,
}

// AnyValueType codes (see schema::AnyValueType).
const T_EMPTY: u8 = 0;
const T_STR: u8 = 1;
const T_INT: u8 = 2;
const T_DOUBLE: u8 = 3;
const T_BOOL: u8 = 4;
const T_ARRAY: u8 = 5;
const T_MAP: u8 = 6;
const T_BYTES: u8 = 7;
const T_ABSENT: u8 = 8;

/// The typed value columns of `AnyValue`s (`type`, `str`, `int`, `double`, `bool`, `bytes`).
///
/// Values are kept compact per type while decoding (one push per value instead of one push
/// plus four nulls); `finish` expands each column to one slot per row using the `type`
/// column, with fast paths for the usual all-one-type and none-of-this-type columns.
pub(crate) struct AnyCols {
    ty: Vec<u8>,
    str_values: Vec<u8>,
    /// Dense: one offset per row (non-string rows repeat the previous offset), because
    /// strings are the common case and this avoids an expansion pass in `finish`.
    str_offsets: Vec<i32>,
    str_count: usize,
    ints: Vec<i64>,
    doubles: Vec<f64>,
    bools: Vec<bool>,
    bin_values: Vec<u8>,
    bin_offsets: Vec<i32>,
}

impl AnyCols {
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    /// Columns expecting about `rows` values and `str_bytes` bytes of string values (see
    /// [`Attrs::with_capacity`]).
    pub fn with_capacity(rows: usize, str_bytes: usize) -> Self {
        let mut str_offsets = Vec::with_capacity(rows + 1);
        str_offsets.push(0);
        AnyCols {
            ty: Vec::with_capacity(rows),
            str_values: Vec::with_capacity(str_bytes),
            str_offsets,
            str_count: 0,
            ints: Vec::new(),
            doubles: Vec::new(),
            bools: Vec::new(),
            bin_values: Vec::new(),
            bin_offsets: vec![0],
        }
    }

    #[inline(always)]
    pub fn push(&mut self, v: Val<'_>) {
        if let Val::Str(s) = v {
            self.ty.push(T_STR);
            self.str_values.extend_from_slice(s);
            self.str_offsets.push(self.str_values.len() as i32);
            self.str_count += 1;
            return;
        }
        self.str_offsets.push(self.str_values.len() as i32);
        match v {
            Val::Str(_) => {}
            Val::Int(i) => {
                self.ty.push(T_INT);
                self.ints.push(i);
            }
            Val::Double(d) => {
                self.ty.push(T_DOUBLE);
                self.doubles.push(d);
            }
            Val::Bool(b) => {
                self.ty.push(T_BOOL);
                self.bools.push(b);
            }
            Val::Bytes(b) | Val::Array(b) | Val::Map(b) => {
                self.ty.push(match v {
                    Val::Bytes(_) => T_BYTES,
                    Val::Array(_) => T_ARRAY,
                    _ => T_MAP,
                });
                self.bin_values.extend_from_slice(b);
                self.bin_offsets.push(self.bin_values.len() as i32);
            }
            Val::NeedsRepair { bytes, map } => {
                self.ty.push(if map { T_MAP } else { T_ARRAY });
                match super::nested::repair(bytes) {
                    Ok((fixed, n)) => {
                        super::count_replaced_utf8(n);
                        self.bin_values.extend_from_slice(&fixed);
                    }
                    // Cannot happen: `nested::check` accepted these bytes.
                    Err(_) => self.bin_values.extend_from_slice(bytes),
                }
                self.bin_offsets.push(self.bin_values.len() as i32);
            }
            Val::Empty => self.ty.push(T_EMPTY),
            Val::Absent => self.ty.push(T_ABSENT),
        }
    }

    /// The six columns, in schema order.
    pub fn finish(self) -> R<[ArrayRef; 6]> {
        let n = self.ty.len();
        let ty = &self.ty;
        let str_col: ArrayRef = {
            let count = self.str_count;
            if count == 0 {
                null_array(&DataType::Utf8, n)
            } else if count == n {
                Arc::new(utf8_array(self.str_offsets, self.str_values, None)?)
            } else {
                let nulls = BooleanBuffer::collect_bool(n, |i| ty[i] == T_STR);
                Arc::new(utf8_array(
                    self.str_offsets,
                    self.str_values,
                    Some(NullBuffer::new(nulls)),
                )?)
            }
        };
        let bin_col: ArrayRef = {
            let count = self.bin_offsets.len() - 1;
            let is_bin = |t: u8| t == T_BYTES || t == T_ARRAY || t == T_MAP;
            if count == 0 {
                null_array(&DataType::Binary, n)
            } else if count == n {
                Arc::new(BinaryArray::new(
                    offsets(self.bin_offsets),
                    Buffer::from_vec(tight(self.bin_values)),
                    None,
                ))
            } else {
                let (offs, nulls) = expand_offsets(ty, is_bin, &self.bin_offsets);
                Arc::new(BinaryArray::new(
                    offsets(offs),
                    Buffer::from_vec(tight(self.bin_values)),
                    Some(nulls),
                ))
            }
        };
        let int_col = expand_prim::<Int64Type>(ty, T_INT, self.ints);
        let double_col = expand_prim::<Float64Type>(ty, T_DOUBLE, self.doubles);
        let bool_col: ArrayRef = if self.bools.is_empty() {
            null_array(&DataType::Boolean, n)
        } else {
            let mut values = BooleanBufferBuilder::new(n);
            let mut nulls = BooleanBufferBuilder::new(n);
            let mut it = self.bools.iter();
            for &t in ty {
                let is = t == T_BOOL;
                nulls.append(is);
                values.append(is && it.next().copied().unwrap_or(false));
            }
            Arc::new(BooleanArray::new(
                values.finish(),
                Some(NullBuffer::new(nulls.finish())),
            ))
        };
        let ty_col = prim::<UInt8Type>(self.ty);
        Ok([ty_col, str_col, int_col, double_col, bool_col, bin_col])
    }
}

/// Expands compact offsets (one entry per value of the wanted type) to one per row: rows of
/// other types become empty null slots.
fn expand_offsets(ty: &[u8], want: impl Fn(u8) -> bool, compact: &[i32]) -> (Vec<i32>, NullBuffer) {
    let mut out = Vec::with_capacity(ty.len() + 1);
    out.push(0);
    let last = compact.len() - 1;
    let mut j = 0usize;
    for &t in ty {
        j += want(t) as usize;
        // `compact` has one more entry than values of the wanted type; j never passes it.
        out.push(compact[j.min(last)]);
    }
    let nulls = BooleanBuffer::collect_bool(ty.len(), |i| want(ty[i]));
    (out, NullBuffer::new(nulls))
}

fn expand_prim<T: ArrowPrimitiveType>(ty: &[u8], code: u8, compact: Vec<T::Native>) -> ArrayRef {
    let n = ty.len();
    if compact.is_empty() {
        return null_array(&T::DATA_TYPE, n);
    }
    let mut values = Vec::with_capacity(n);
    let mut it = compact.into_iter();
    for &t in ty {
        values.push(if t == code {
            it.next().unwrap_or_default()
        } else {
            T::Native::default()
        });
    }
    let nulls = BooleanBuffer::collect_bool(n, |i| ty[i] == code);
    Arc::new(PrimitiveArray::<T>::new(
        ScalarBuffer::from(values),
        Some(NullBuffer::new(nulls)),
    ))
}

/// An attribute table (schema `attrs_schema`).
pub(crate) struct Attrs<'a> {
    pub parent: Vec<u32>,
    pub key: Dict<'a>,
    pub vals: AnyCols,
}

impl<'a> Attrs<'a> {
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }

    /// A table expecting about `rows` attributes with `str_bytes` bytes of string values:
    /// sizing the buffers up front saves the copies of growing them by doubling (a copy of
    /// each buffer's final size, in total), and leaves less slack for `finish` to give back.
    pub fn with_capacity(rows: usize, str_bytes: usize) -> Self {
        Attrs {
            parent: Vec::with_capacity(rows),
            key: Dict::with_capacity(rows),
            vals: AnyCols::with_capacity(rows, str_bytes),
        }
    }

    pub fn finish(self) -> R<Vec<ArrayRef>> {
        let mut cols = vec![prim::<UInt32Type>(self.parent), self.key.finish()?];
        cols.extend(self.vals.finish()?);
        Ok(cols)
    }
}
