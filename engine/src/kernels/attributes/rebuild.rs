//! Rebuilding an attribute table from runs of rows, with what the attribute layout allows
//! beyond a column-by-column gather:
//!
//! - **Validity comes from `type`.** Exactly one value column is non-null per row, the one
//!   its `type` names (`bytes` for bytes, arrays and maps; none for empty and absent), which is
//!   how the decoder builds them. So the value columns' null bitmaps are not gathered run by
//!   run: the `type` column is gathered once, and each value column's validity is one
//!   vectorisable comparison over it.
//! - **A value column no row uses is not touched** (the `double`, `bool` and `bytes` columns
//!   of the usual string-and-int attributes): all null in the output too, a slice of the
//!   source's all-null column when the output is not longer, so neither copied nor zeroed.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, PrimitiveArray, RecordBatch,
    RecordBatchOptions, StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, BinaryType, Float64Type, Int64Type, UInt8Type, UInt32Type, Utf8Type,
};
use arrow::error::ArrowError;

use super::idx;
use crate::kernels::ranges::{self, Bits, Run, copy_runs};
use crate::schema::AnyValueType;

/// The six value columns of one source: an attribute table's (`type`, `str`, `int`,
/// `double`, `bool`, `bytes`) or an [`super::AnyValues`]'. A null `type` (no value) must not be
/// picked by a run.
pub(crate) type ValueCols<'a> = [&'a dyn Array; 6];

/// An attribute table's value columns.
pub(crate) fn value_cols(attrs: &RecordBatch) -> ValueCols<'_> {
    let c = &attrs.columns()[idx::VALUES];
    [
        c[0].as_ref(),
        c[1].as_ref(),
        c[2].as_ref(),
        c[3].as_ref(),
        c[4].as_ref(),
        c[5].as_ref(),
    ]
}

const T_STR: u8 = AnyValueType::Str as u8;
const T_INT: u8 = AnyValueType::Int as u8;
const T_DOUBLE: u8 = AnyValueType::Double as u8;
const T_BOOL: u8 = AnyValueType::Bool as u8;
const T_ARRAY: u8 = AnyValueType::Array as u8;
const T_MAP: u8 = AnyValueType::Map as u8;
const T_BYTES: u8 = AnyValueType::Bytes as u8;

/// One bit per byte of `bytes`: whether it is one of `wanted`. On x86-64, 16 bytes per SSE2
/// compare-and-movemask (SSE2 is part of the x86-64 baseline); elsewhere byte by byte.
pub(crate) fn bits_where_in(bytes: &[u8], wanted: &[u8]) -> BooleanBuffer {
    let mut words: Vec<u64> = Vec::with_capacity(bytes.len().div_ceil(64));
    let chunks = bytes.chunks_exact(64);
    let tail = chunks.remainder();
    for chunk in chunks {
        words.push(word_where_in(chunk, wanted));
    }
    if !tail.is_empty() {
        let mut w = 0u64;
        for (i, b) in tail.iter().enumerate() {
            w |= u64::from(wanted.contains(b)) << i;
        }
        words.push(w);
    }
    BooleanBuffer::new(Buffer::from_vec(words), 0, bytes.len())
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn word_where_in(chunk: &[u8], wanted: &[u8]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    assert_eq!(chunk.len(), 64);
    let mut w = 0u64;
    for q in 0..4 {
        // SAFETY: SSE2 is always available on x86-64; the load reads 16 of the 64 bytes of
        // `chunk` (length asserted above), unaligned loads allowed.
        let bits = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().add(q * 16).cast::<__m128i>());
            let mut hit = _mm_setzero_si128();
            for &t in wanted {
                hit = _mm_or_si128(hit, _mm_cmpeq_epi8(v, _mm_set1_epi8(t as i8)));
            }
            _mm_movemask_epi8(hit) as u16
        };
        w |= u64::from(bits) << (q * 16);
    }
    w
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn word_where_in(chunk: &[u8], wanted: &[u8]) -> u64 {
    word_where_in_scalar(chunk, wanted)
}

/// The portable [`word_where_in`]: compiled (and tested against the SSE2 one) everywhere.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn word_where_in_scalar(chunk: &[u8], wanted: &[u8]) -> u64 {
    let mut w = 0u64;
    for (i, b) in chunk.iter().enumerate() {
        w |= u64::from(wanted.contains(b)) << i;
    }
    w
}

/// A value column's validity, `wanted` being the types whose value it holds, and how many rows
/// are valid; `None` for the bitmap when every row is.
fn validity(types: &[u8], wanted: &[u8]) -> (Option<NullBuffer>, usize) {
    let bits = bits_where_in(types, wanted);
    let count = bits.count_set_bits();
    ((count != types.len()).then(|| NullBuffer::new(bits)), count)
}

/// The value columns made of `runs` of `sources` (see [`ValueCols`]), `len` rows in all.
pub(crate) fn gather_values(
    sources: &[ValueCols<'_>],
    runs: &[Run],
    len: usize,
) -> Result<[ArrayRef; 6], ArrowError> {
    let col = |k: usize| -> Vec<&dyn Array> { sources.iter().map(|s| s[k]).collect() };
    let types_in: Vec<&[u8]> = sources
        .iter()
        .map(|s| s[0].as_primitive::<UInt8Type>().values().as_ref())
        .collect();
    let types = copy_runs(&types_in, runs, len);
    // Each value column's validity, for the value columns some source has values in.
    let has_values = |k: usize| sources.iter().any(|s| s[k].null_count() < s[k].len());
    let valid = |k: usize, wanted: &[u8]| -> (Option<NullBuffer>, usize) {
        if has_values(k) {
            validity(&types, wanted)
        } else {
            (None, 0)
        }
    };
    let unused = |k: usize| -> ArrayRef { ranges::null_array(&col(k), len) };

    let str_col: ArrayRef = match valid(1, &[T_STR]) {
        (_, 0) => unused(1),
        (nulls, _) => {
            let typed: Vec<&StringArray> = sources.iter().map(|s| s[1].as_string()).collect();
            let (offsets, values) = ranges::byte_runs::<Utf8Type>(&typed, runs, len)?;
            // SAFETY: `byte_runs` copies whole values of valid arrays (see its doc).
            Arc::new(unsafe { StringArray::new_unchecked(offsets, values, nulls) })
        }
    };
    let int_col: ArrayRef = match valid(2, &[T_INT]) {
        (_, 0) => unused(2),
        (nulls, _) => Arc::new(primitive::<Int64Type>(&col(2), runs, len, nulls)),
    };
    let double_col: ArrayRef = match valid(3, &[T_DOUBLE]) {
        (_, 0) => unused(3),
        (nulls, _) => Arc::new(primitive::<Float64Type>(&col(3), runs, len, nulls)),
    };
    let bool_col: ArrayRef = match valid(4, &[T_BOOL]) {
        (_, 0) => unused(4),
        (nulls, _) => {
            let typed: Vec<&BooleanBuffer> =
                sources.iter().map(|s| s[4].as_boolean().values()).collect();
            let mut b = Bits::with_capacity(len);
            for r in runs {
                let v = typed[r.src];
                b.append_range(v.values(), v.offset() + r.start, r.len);
            }
            Arc::new(BooleanArray::new(b.finish(), nulls))
        }
    };
    let bytes_col: ArrayRef = match valid(5, &[T_BYTES, T_ARRAY, T_MAP]) {
        (_, 0) => unused(5),
        (nulls, _) => {
            let typed: Vec<&BinaryArray> = sources.iter().map(|s| s[5].as_binary()).collect();
            let (offsets, values) = ranges::byte_runs::<BinaryType>(&typed, runs, len)?;
            Arc::new(BinaryArray::new(offsets, values, nulls))
        }
    };
    let types: ArrayRef = Arc::new(PrimitiveArray::<UInt8Type>::new(
        ScalarBuffer::from(types),
        None,
    ));
    Ok([types, str_col, int_col, double_col, bool_col, bytes_col])
}

fn primitive<T: ArrowPrimitiveType>(
    sources: &[&dyn Array],
    runs: &[Run],
    len: usize,
    nulls: Option<NullBuffer>,
) -> PrimitiveArray<T> {
    let typed: Vec<&[T::Native]> = sources
        .iter()
        .map(|s| s.as_primitive::<T>().values().as_ref())
        .collect();
    PrimitiveArray::<T>::new(ScalarBuffer::from(copy_runs(&typed, runs, len)), nulls)
}

/// The rows of `attrs` in `runs` (of source 0), in order: one pass per column.
pub(crate) fn gather_rows(attrs: &RecordBatch, runs: &[Run]) -> Result<RecordBatch, ArrowError> {
    let len = ranges::total(runs);
    if len == attrs.num_rows() {
        return Ok(attrs.clone());
    }
    if let Some(bad) = runs
        .iter()
        .find(|r| r.src != 0 || r.start + r.len > attrs.num_rows())
    {
        return Err(ArrowError::InvalidArgumentError(format!(
            "row range {}..{} out of bounds",
            bad.start,
            bad.start + bad.len
        )));
    }
    let parents = attrs
        .column(idx::PARENT_ID)
        .as_primitive::<UInt32Type>()
        .values();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(attrs.num_columns());
    columns.push(Arc::new(PrimitiveArray::<UInt32Type>::new(
        ScalarBuffer::from(copy_runs(&[parents.as_ref()], runs, len)),
        None,
    )));
    let key = attrs.column(idx::KEY);
    columns.push(ranges::gather_runs(&[key.as_ref()], runs)?);
    columns.extend(gather_values(&[value_cols(attrs)], runs, len)?);
    RecordBatch::try_new_with_options(
        attrs.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(len)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_where_in_is_membership(bytes in prop::collection::vec(0u8..10, 0..300), wanted in prop::collection::vec(0u8..10, 0..4)) {
            let bits = bits_where_in(&bytes, &wanted);
            let want: Vec<bool> = bytes.iter().map(|b| wanted.contains(b)).collect();
            prop_assert_eq!(bits.iter().collect::<Vec<_>>(), want);
        }

        #[test]
        fn scalar_word_where_in_is_membership(bytes in prop::collection::vec(0u8..10, 64), wanted in prop::collection::vec(0u8..10, 0..4)) {
            let want = bytes.iter().enumerate().fold(0u64, |w, (i, b)| w | (u64::from(wanted.contains(b)) << i));
            prop_assert_eq!(word_where_in_scalar(&bytes, &wanted), want);
            // The same as the word the platform uses (SSE2 on x86-64).
            prop_assert_eq!(word_where_in(&bytes, &wanted), want);
        }
    }
}
