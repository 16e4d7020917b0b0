//! Rebuilding columns from runs of rows: drop-in replacements for arrow's `filter` and
//! `interleave` on the column types of the sluice schemas.
//!
//! Arrow's kernels work row by row: a filtered string column pushes one offset per row with a
//! checked conversion, an interleave appends one value per index (and merges dictionaries).
//! Processors keep or splice rows in long runs: a filter keeps the attributes of whole spans,
//! an insert adds one row at the end of a parent's run. Here each run is copied at once: one
//! `memcpy` of its values, one vectorised add over its offsets, one bit-range copy of its
//! validity. Results are the same arrays, value for value, as arrow's (property-tested
//! below); dictionaries from different sources are concatenated rather than merged.
//!
//! Types without a run-based path (lists, ...) fall back to arrow's kernels.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, FixedSizeBinaryArray,
    GenericByteArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute;
use arrow::datatypes::{
    ArrowPrimitiveType, BinaryType, ByteArrayType, DataType, Float64Type, Int32Type, Int64Type,
    UInt8Type, UInt32Type, UInt64Type, Utf8Type,
};
use arrow::error::ArrowError;

/// A run of rows `start..start + len` of source `src`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub src: usize,
    pub start: usize,
    pub len: usize,
}

/// Coalesces `(source, row)` indices into runs of consecutive rows of one source.
pub fn runs_of(indices: &[(usize, usize)]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for &(src, row) in indices {
        match runs.last_mut() {
            Some(r) if r.src == src && r.start + r.len == row => r.len += 1,
            _ => runs.push(Run {
                src,
                start: row,
                len: 1,
            }),
        }
    }
    runs
}

/// The runs of `true` in a mask (null = false).
pub fn runs_of_mask(mask: &BooleanArray) -> Vec<Run> {
    let bits = match mask.nulls() {
        Some(n) => mask.values() & n.inner(),
        None => mask.values().clone(),
    };
    arrow::buffer::BooleanBuffer::set_slices(&bits)
        .map(|(start, end)| Run {
            src: 0,
            start,
            len: end - start,
        })
        .collect()
}

/// `runs` with their source-0 rows read through `view`: row `i` of source 0 stands for the
/// `i`-th row of `view` (runs of source 0 of some other table, ascending). Other sources pass
/// through. Source-0 runs of `runs` must be ascending (a rebuild's are).
///
/// This is how a rebuild of a table that is itself still pending (see
/// [`crate::payload::PendingRows`]) gathers from the pending table's base directly.
pub fn compose(view: &[Run], runs: &[Run]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::with_capacity(runs.len() + view.len());
    // The view run holding view row `at`, and the view row it starts at.
    let (mut k, mut k_start) = (0usize, 0usize);
    let push = |out: &mut Vec<Run>, r: Run| match out.last_mut() {
        Some(l) if l.src == r.src && l.start + l.len == r.start => l.len += r.len,
        _ => out.push(r),
    };
    for r in runs {
        if r.src != 0 {
            push(&mut out, *r);
            continue;
        }
        let (mut at, end) = (r.start, r.start + r.len);
        while at < end {
            while k_start + view[k].len <= at {
                k_start += view[k].len;
                k += 1;
            }
            let v = &view[k];
            let take = (k_start + v.len).min(end) - at;
            push(
                &mut out,
                Run {
                    src: 0,
                    start: v.start + (at - k_start),
                    len: take,
                },
            );
            at += take;
        }
    }
    out
}

/// All `len` rows of source 0 as runs (none when empty).
pub fn runs_of_len(len: usize) -> Vec<Run> {
    if len == 0 {
        Vec::new()
    } else {
        vec![Run {
            src: 0,
            start: 0,
            len,
        }]
    }
}

/// The runs of `true` in a slice of bools, eight at a time where eight agree.
pub fn runs_of_bools(mask: &[bool]) -> Vec<Run> {
    const ALL: u64 = 0x0101_0101_0101_0101;
    // SAFETY: a bool is one byte holding 0 or 1, so the slice reads as bytes.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(mask.as_ptr().cast(), mask.len()) };
    let mut runs = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < mask.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([2; 8]));
            if (word == ALL && start.is_some()) || (word == 0 && start.is_none()) {
                i += 8;
                continue;
            }
        }
        match (mask[i], start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push(Run {
                    src: 0,
                    start: s,
                    len: i - s,
                });
                start = None;
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(s) = start {
        runs.push(Run {
            src: 0,
            start: s,
            len: mask.len() - s,
        });
    }
    runs
}

/// The rows of a child table whose parents are in `parent_runs`, given the child's
/// `parent_ids` (sorted, as every child table is): each run of parents is one run of children,
/// found by two searches (galloping from the previous boundary), without visiting the rows.
pub fn child_runs(parent_runs: &[Run], parent_ids: &[u32]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::with_capacity(parent_runs.len());
    let mut at = 0usize;
    for r in parent_runs {
        let (lo, hi) = (r.start as u32, (r.start + r.len) as u32);
        let start = first_at_least(parent_ids, at, lo);
        let end = first_at_least(parent_ids, start, hi);
        match out.last_mut() {
            // Parents between two runs may have no children: the child runs then touch.
            Some(last) if last.start + last.len == start => last.len += end - start,
            _ if end > start => out.push(Run {
                src: 0,
                start,
                len: end - start,
            }),
            _ => {}
        }
        at = end;
    }
    out
}

/// The first index at or after `from` whose id is at least `target`, in sorted `ids`: a
/// galloping search (steps 1, 2, 4, ... then a binary search in the last step), since the next
/// run boundary is usually a few rows ahead, where a binary search over the whole rest of a
/// 10,000-row table costs 14 mispredicted steps.
pub(crate) fn first_at_least(ids: &[u32], from: usize, target: u32) -> usize {
    let (mut lo, mut hi, mut step) = (from, from, 1usize);
    while hi < ids.len() && ids[hi] < target {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(ids.len());
    lo + ids[lo..hi].partition_point(|&p| p < target)
}

/// The rows of `batch` in `runs` (of source 0), in order: [`filter_record_batch`] with the runs
/// of its mask already known.
pub fn gather_batch(batch: &RecordBatch, runs: &[Run]) -> Result<RecordBatch, ArrowError> {
    let rows = total(runs);
    if rows == batch.num_rows() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| gather_runs(&[c.as_ref()], runs))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// Same as `arrow::compute::interleave`.
pub fn interleave(
    values: &[&dyn Array],
    indices: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    interleave_runs(values, &runs_of(indices), indices)
}

/// [`interleave`] with the runs of `indices` already computed (several columns spliced the
/// same way compute them once).
pub fn interleave_runs(
    values: &[&dyn Array],
    runs: &[Run],
    indices: &[(usize, usize)],
) -> Result<ArrayRef, ArrowError> {
    gather(values, runs).unwrap_or_else(|| compute::interleave(values, indices))
}

/// The array made of `runs` of `values` (arrow's `interleave` for types without a run-based
/// path).
pub fn gather_runs(values: &[&dyn Array], runs: &[Run]) -> Result<ArrayRef, ArrowError> {
    gather(values, runs).unwrap_or_else(|| {
        let indices: Vec<(usize, usize)> = runs
            .iter()
            .flat_map(|r| (r.start..r.start + r.len).map(move |i| (r.src, i)))
            .collect();
        compute::interleave(values, &indices)
    })
}

/// Same as `arrow::compute::filter_record_batch`.
pub fn filter_record_batch(
    batch: &RecordBatch,
    predicate: &BooleanArray,
) -> Result<RecordBatch, ArrowError> {
    if predicate.len() != batch.num_rows() {
        return Err(ArrowError::InvalidArgumentError(format!(
            "filter predicate has {} rows, the batch {}",
            predicate.len(),
            batch.num_rows()
        )));
    }
    let runs = runs_of_mask(predicate);
    let rows: usize = runs.iter().map(|r| r.len).sum();
    if rows == batch.num_rows() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| gather(&[c.as_ref()], &runs).unwrap_or_else(|| compute::filter(c, predicate)))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// The array made of `runs` of `sources` (all of one type), or `None` for a type without a
/// run-based path.
pub fn gather(sources: &[&dyn Array], runs: &[Run]) -> Option<Result<ArrayRef, ArrowError>> {
    let dt = sources.first()?.data_type().clone();
    if sources.iter().any(|s| *s.data_type() != dt) {
        return Some(Err(ArrowError::InvalidArgumentError(
            "interleave: sources of different types".into(),
        )));
    }
    let lens: Vec<usize> = sources.iter().map(|s| s.len()).collect();
    if let Some(bad) = runs
        .iter()
        .find(|r| lens.get(r.src).is_none_or(|&n| r.start + r.len > n))
    {
        return Some(Err(ArrowError::InvalidArgumentError(format!(
            "row range {}..{} of source {} out of bounds",
            bad.start,
            bad.start + bad.len,
            bad.src
        ))));
    }
    // A value column of a type nobody used (the `double` column of string attributes): all
    // null in, all null out, without touching the runs.
    if sources.iter().all(|s| s.null_count() == s.len()) && !matches!(dt, DataType::Dictionary(..))
    {
        return Some(Ok(null_array(sources, total(runs))));
    }
    let out: ArrayRef = match &dt {
        DataType::UInt8 => Arc::new(primitive::<UInt8Type>(sources, runs)),
        DataType::UInt32 => Arc::new(primitive::<UInt32Type>(sources, runs)),
        DataType::UInt64 => Arc::new(primitive::<UInt64Type>(sources, runs)),
        DataType::Int32 => Arc::new(primitive::<Int32Type>(sources, runs)),
        DataType::Int64 => Arc::new(primitive::<Int64Type>(sources, runs)),
        DataType::Float64 => Arc::new(primitive::<Float64Type>(sources, runs)),
        DataType::Boolean => Arc::new(boolean(sources, runs)),
        DataType::Utf8 => return Some(bytes::<Utf8Type>(sources, runs)),
        DataType::Binary => return Some(bytes::<BinaryType>(sources, runs)),
        DataType::FixedSizeBinary(w) => return Some(fixed(sources, runs, *w)),
        DataType::Dictionary(k, v) if **k == DataType::UInt32 && **v == DataType::Utf8 => {
            return Some(dictionary(sources, runs));
        }
        _ => return None,
    };
    Some(Ok(out))
}

/// An all-null array of `len` rows of the type of `sources`: a slice of the first source that
/// is all null and long enough when that keeps at least half of it (so the memory a small
/// result reports, its buffers' capacity, stays bounded), else one over shared zeroes
/// ([`super::nulls`]): no allocation, no zeroing either way.
pub(crate) fn null_array(sources: &[&dyn Array], len: usize) -> ArrayRef {
    let reusable =
        |s: &&&dyn Array| s.null_count() == s.len() && s.len() >= len && len * 2 >= s.len();
    match sources.iter().find(reusable) {
        Some(s) => s.slice(0, len),
        None => super::nulls::null_array(sources[0].data_type(), len),
    }
}

fn nulls(sources: &[&dyn Array], runs: &[Run], len: usize) -> Option<NullBuffer> {
    if sources.iter().all(|s| s.null_count() == 0) {
        return None;
    }
    // Per source: its validity bits (`None`: all valid).
    let bits: Vec<Option<&arrow::buffer::BooleanBuffer>> = sources
        .iter()
        .map(|s| s.nulls().map(NullBuffer::inner))
        .collect();
    let mut b = Bits::with_capacity(len);
    for r in runs {
        match bits[r.src] {
            None => b.append_n(r.len, true),
            Some(n) => b.append_range(n.values(), n.offset() + r.start, r.len),
        }
    }
    Some(NullBuffer::new(b.finish()))
}

pub(crate) fn total(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.len).sum()
}

/// A bitmap built by appending bit ranges of other bitmaps, 56 bits at a time (one unaligned
/// 8-byte read and one or two word writes), so that a run of one row costs a few instructions
/// where arrow's `BooleanBufferBuilder::append_packed_range` goes through its general
/// bit-copy routine.
pub(crate) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    pub fn with_capacity(bits: usize) -> Self {
        Bits {
            words: Vec::with_capacity(bits.div_ceil(64) + 1),
            len: 0,
        }
    }

    /// Reads `k` <= 56 bits of `src` starting at bit `at` (LSB first, as Arrow packs them).
    #[inline(always)]
    fn read(src: &[u8], at: usize, k: usize) -> u64 {
        let byte = at / 8;
        let word = match src.get(byte..byte + 8) {
            Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            None => {
                let mut w = [0u8; 8];
                let avail = src.len().saturating_sub(byte).min(8);
                w[..avail].copy_from_slice(&src[byte..byte + avail]);
                u64::from_le_bytes(w)
            }
        };
        (word >> (at % 8)) & ((1u64 << k) - 1)
    }

    /// Appends `k` <= 64 bits (the low bits of `v`; higher bits must be zero).
    #[inline(always)]
    fn push(&mut self, v: u64, k: usize) {
        let (w, s) = (self.len / 64, self.len % 64);
        let need = (self.len + k).div_ceil(64);
        if self.words.len() < need {
            self.words.resize(need, 0);
        }
        self.words[w] |= v << s;
        if s + k > 64 {
            self.words[w + 1] |= v >> (64 - s);
        }
        self.len += k;
    }

    /// Appends bits `at..at + len` of the packed bitmap `src`.
    #[inline]
    pub fn append_range(&mut self, src: &[u8], mut at: usize, mut len: usize) {
        while len > 0 {
            let k = len.min(56);
            self.push(Self::read(src, at, k), k);
            at += k;
            len -= k;
        }
    }

    /// Appends `n` copies of `v`.
    #[inline]
    pub fn append_n(&mut self, mut n: usize, v: bool) {
        while n > 0 {
            let k = n.min(64);
            self.push(if v { u64::MAX >> (64 - k) } else { 0 }, k);
            n -= k;
        }
    }

    pub fn finish(mut self) -> arrow::buffer::BooleanBuffer {
        self.words.resize(self.len.div_ceil(64), 0);
        arrow::buffer::BooleanBuffer::new(Buffer::from_vec(self.words), 0, self.len)
    }
}

/// Copies `runs` of `sources` into one vector: short runs element by element (a `memcpy` call
/// costs more than copying a few values), long ones with `copy_nonoverlapping`.
pub(crate) fn copy_runs<T: Copy>(sources: &[&[T]], runs: &[Run], len: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    let mut at = 0usize;
    let dst = out.as_mut_ptr();
    for r in runs {
        let src = &sources[r.src][r.start..r.start + r.len];
        assert!(at + src.len() <= len, "runs longer than their total");
        // SAFETY: `at + src.len() <= len`, the capacity, checked above; `src` is a valid slice
        // that cannot overlap the fresh allocation.
        unsafe {
            if src.len() <= 8 {
                for (i, v) in src.iter().enumerate() {
                    dst.add(at + i).write(*v);
                }
            } else {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(at), src.len());
            }
        }
        at += src.len();
    }
    // SAFETY: the first `at` elements were written above.
    unsafe { out.set_len(at) };
    out
}

fn primitive<T: ArrowPrimitiveType>(sources: &[&dyn Array], runs: &[Run]) -> PrimitiveArray<T> {
    let len = total(runs);
    let typed: Vec<&[T::Native]> = sources
        .iter()
        .map(|s| s.as_primitive::<T>().values().as_ref())
        .collect();
    let values = copy_runs(&typed, runs, len);
    PrimitiveArray::<T>::new(ScalarBuffer::from(values), nulls(sources, runs, len))
        .with_data_type(sources[0].data_type().clone())
}

fn boolean(sources: &[&dyn Array], runs: &[Run]) -> BooleanArray {
    let len = total(runs);
    let typed: Vec<&arrow::buffer::BooleanBuffer> =
        sources.iter().map(|s| s.as_boolean().values()).collect();
    let mut b = Bits::with_capacity(len);
    for r in runs {
        let v = typed[r.src];
        b.append_range(v.values(), v.offset() + r.start, r.len);
    }
    BooleanArray::new(b.finish(), nulls(sources, runs, len))
}

fn bytes<T: ByteArrayType<Offset = i32>>(
    sources: &[&dyn Array],
    runs: &[Run],
) -> Result<ArrayRef, ArrowError> {
    let typed: Vec<&GenericByteArray<T>> = sources.iter().map(|s| s.as_bytes::<T>()).collect();
    let len = total(runs);
    let (offsets, values) = byte_runs(&typed, runs, len)?;
    let nulls = nulls(sources, runs, len);
    // SAFETY: see `byte_runs`.
    Ok(Arc::new(unsafe {
        GenericByteArray::<T>::new_unchecked(offsets, values, nulls)
    }))
}

/// The offsets and value bytes of `runs` of byte arrays, without validity. Per run: one
/// vectorisable add over its offsets and one copy of its bytes.
///
/// The offsets start at 0 and grow by the lengths of whole values of valid arrays of this
/// type, and the bytes are exactly those values' bytes in that order, so every offset is in
/// bounds and (for Utf8) every value is the UTF-8 it was in its source: callers may build the
/// array unchecked, skipping a re-validation of every byte of data that was valid a moment ago.
pub(crate) fn byte_runs<T: ByteArrayType<Offset = i32>>(
    typed: &[&GenericByteArray<T>],
    runs: &[Run],
    len: usize,
) -> Result<(OffsetBuffer<i32>, Buffer), ArrowError> {
    let mut size = 0usize;
    for r in runs {
        let o = typed[r.src].value_offsets();
        size += (o[r.start + r.len] - o[r.start]) as usize;
    }
    if size > i32::MAX as usize {
        return Err(ArrowError::OffsetOverflowError(size));
    }
    let mut offsets: Vec<i32> = Vec::with_capacity(len + 1);
    offsets.push(0);
    let mut values: Vec<u8> = Vec::with_capacity(size);
    for r in runs {
        let a = typed[r.src];
        let o = &a.value_offsets()[r.start..=r.start + r.len];
        let (first, last) = (o[0], o[r.len]);
        // `values.len()` <= `size`, checked to fit in i32 above.
        let delta = values.len() as i32 - first;
        offsets.extend(o[1..].iter().map(|x| x + delta));
        values.extend_from_slice(&a.value_data()[first as usize..last as usize]);
    }
    // SAFETY: as the doc says: offsets start at 0, are non-decreasing (copied differences of
    // valid offsets) and end at `values.len()`.
    let offsets = unsafe { OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)) };
    Ok((offsets, Buffer::from_vec(values)))
}

fn fixed(sources: &[&dyn Array], runs: &[Run], width: i32) -> Result<ArrayRef, ArrowError> {
    let len = total(runs);
    let w = width as usize;
    let mut values: Vec<u8> = Vec::with_capacity(len * w);
    for r in runs {
        let a: &FixedSizeBinaryArray = sources[r.src].as_fixed_size_binary();
        let data = a.value_data();
        values.extend_from_slice(&data[r.start * w..(r.start + r.len) * w]);
    }
    Ok(Arc::new(FixedSizeBinaryArray::try_new(
        width,
        Buffer::from_vec(values),
        nulls(sources, runs, len),
    )?))
}

fn dictionary(sources: &[&dyn Array], runs: &[Run]) -> Result<ArrayRef, ArrowError> {
    let dicts: Vec<&DictionaryArray<UInt32Type>> = sources
        .iter()
        .map(|s| s.as_dictionary::<UInt32Type>())
        .collect();
    let first_values = dicts[0].values();
    let shared = runs.is_empty() || dicts.iter().all(|d| Arc::ptr_eq(d.values(), first_values));
    // Key offset of each source in the output dictionary.
    let (values, base): (ArrayRef, Vec<u32>) = if shared {
        (first_values.clone(), vec![0; dicts.len()])
    } else {
        let used: Vec<bool> = (0..dicts.len())
            .map(|i| runs.iter().any(|r| r.src == i))
            .collect();
        let mut base = Vec::with_capacity(dicts.len());
        let mut parts: Vec<&dyn Array> = Vec::new();
        let mut at = 0u32;
        for (d, u) in dicts.iter().zip(&used) {
            base.push(at);
            if *u {
                parts.push(d.values().as_ref());
                at += d.values().len() as u32;
            }
        }
        (compute::concat(&parts)?, base)
    };
    let len = total(runs);
    let key_values: Vec<&[u32]> = dicts.iter().map(|d| d.keys().values().as_ref()).collect();
    let mut keys = copy_runs(&key_values, runs, len);
    if base.iter().any(|b| *b != 0) {
        let mut at = 0;
        for r in runs {
            let b = base[r.src];
            keys[at..at + r.len].iter_mut().for_each(|k| *k += b);
            at += r.len;
        }
    }
    let key_sources: Vec<&dyn Array> = dicts.iter().map(|d| d.keys() as &dyn Array).collect();
    let keys =
        PrimitiveArray::<UInt32Type>::new(ScalarBuffer::from(keys), nulls(&key_sources, runs, len));
    // SAFETY: every key is a key of a valid dictionary array, shifted by the position of that
    // array's values in `values` (or unshifted when all sources share one values array), so
    // it indexes `values`. This skips re-checking every key.
    Ok(Arc::new(unsafe {
        DictionaryArray::<UInt32Type>::new_unchecked(keys, values)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Float64Array, Int32Array, StringArray, UInt64Array};
    use proptest::prelude::*;

    fn logical(a: &dyn Array) -> Vec<String> {
        let a = match a.data_type() {
            DataType::Dictionary(..) => compute::cast(a, &DataType::Utf8).unwrap(),
            _ => arrow::array::make_array(a.to_data()),
        };
        (0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    "<null>".into()
                } else {
                    arrow::util::display::array_value_to_string(&a, i).unwrap()
                }
            })
            .collect()
    }

    fn arb_strings() -> impl Strategy<Value = Vec<Option<String>>> {
        prop::collection::vec(prop::option::weighted(0.8, "[a-zé]{0,6}"), 0..40)
    }

    fn arrays(v: &[Option<String>]) -> Vec<ArrayRef> {
        let strs: StringArray = v.iter().map(|x| x.as_deref()).collect();
        let bins: BinaryArray = v.iter().map(|x| x.as_deref().map(str::as_bytes)).collect();
        let ints: Int32Array = v
            .iter()
            .map(|x| x.as_ref().map(|s| s.len() as i32))
            .collect();
        let u64s: UInt64Array = v
            .iter()
            .map(|x| x.as_ref().map(|s| s.len() as u64 * 7))
            .collect();
        let f64s: Float64Array = v
            .iter()
            .map(|x| x.as_ref().map(|s| s.len() as f64 / 3.0))
            .collect();
        let bools: BooleanArray = v
            .iter()
            .map(|x| x.as_ref().map(|s| s.len() % 2 == 0))
            .collect();
        let fixed = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            v.iter().map(|x| x.as_ref().map(|s| [s.len() as u8; 4])),
            4,
        )
        .unwrap();
        let dict: DictionaryArray<UInt32Type> = v.iter().map(|x| x.as_deref()).collect();
        vec![
            Arc::new(strs),
            Arc::new(bins),
            Arc::new(ints),
            Arc::new(u64s),
            Arc::new(f64s),
            Arc::new(bools),
            Arc::new(fixed),
            Arc::new(dict),
        ]
    }

    proptest! {
        #[test]
        fn filter_equals_arrows(v in arb_strings(), mask in prop::collection::vec(prop::option::weighted(0.9, any::<bool>()), 40), offset in 0usize..3) {
            for a in arrays(&v) {
                let a = a.slice(offset.min(a.len()), a.len() - offset.min(a.len()));
                let m: BooleanArray = mask[..a.len()].iter().copied().collect();
                let ours = gather(&[a.as_ref()], &runs_of_mask(&m)).expect("supported").unwrap();
                let theirs = compute::filter(&a, &m).unwrap();
                prop_assert_eq!(logical(ours.as_ref()), logical(theirs.as_ref()), "{:?}", a.data_type());
                ours.to_data().validate_full().unwrap();
            }
        }

        #[test]
        fn interleave_equals_arrows(x in arb_strings(), y in arb_strings(), picks in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..60)) {
            let (ax, ay) = (arrays(&x), arrays(&y));
            for (a, b) in ax.iter().zip(&ay) {
                let idx: Vec<(usize, usize)> = picks
                    .iter()
                    .filter_map(|(second, i)| {
                        let n = if *second { b.len() } else { a.len() };
                        (n > 0).then(|| (usize::from(*second), i.index(n)))
                    })
                    .collect();
                let ours = interleave(&[a.as_ref(), b.as_ref()], &idx).unwrap();
                let theirs = compute::interleave(&[a.as_ref(), b.as_ref()], &idx).unwrap();
                prop_assert_eq!(logical(ours.as_ref()), logical(theirs.as_ref()), "{:?}", a.data_type());
                ours.to_data().validate_full().unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn runs_of_bools_are_the_runs_of_true(mask in prop::collection::vec(prop::bool::weighted(0.9), 0..100)) {
            let want: Vec<Run> = runs_of_mask(&BooleanArray::from(mask.clone()));
            prop_assert_eq!(runs_of_bools(&mask), want);
        }

        #[test]
        fn compose_reads_source_0_through_the_view(
            keep in prop::collection::vec(prop::bool::weighted(0.7), 0..60),
            picks in prop::collection::vec((0usize..2, any::<prop::sample::Index>()), 0..40),
        ) {
            // A view: the kept rows of a base table; runs over (view, another source).
            let view = runs_of_bools(&keep);
            let view_rows: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
            let mut indices: Vec<(usize, usize)> = Vec::new();
            let mut next_view_row = 0usize;
            for (src, i) in picks {
                if src == 0 && !view_rows.is_empty() {
                    // ascending source-0 rows
                    next_view_row = (next_view_row + i.index(3)).min(view_rows.len() - 1);
                    if indices.iter().any(|&(s, r)| s == 0 && r >= next_view_row) {
                        continue;
                    }
                    indices.push((0, next_view_row));
                } else {
                    indices.push((1, i.index(10)));
                }
            }
            let runs = runs_of(&indices);
            let want: Vec<(usize, usize)> = indices
                .iter()
                .map(|&(s, r)| if s == 0 { (0, view_rows[r]) } else { (s, r) })
                .collect();
            let got: Vec<(usize, usize)> = compose(&view, &runs)
                .iter()
                .flat_map(|r| (r.start..r.start + r.len).map(move |i| (r.src, i)))
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn child_runs_are_the_runs_of_rows_with_a_kept_parent(
            parent_keep in prop::collection::vec(prop::bool::weighted(0.7), 1..40),
            children in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4), 0..40),
        ) {
            // Sorted parent ids: 0..4 children for randomly chosen parents.
            let mut ids: Vec<u32> = children
                .iter()
                .flat_map(|(p, n)| std::iter::repeat_n(p.index(parent_keep.len()) as u32, *n))
                .collect();
            ids.sort_unstable();
            let want = runs_of_bools(&ids.iter().map(|&p| parent_keep[p as usize]).collect::<Vec<_>>());
            prop_assert_eq!(child_runs(&runs_of_bools(&parent_keep), &ids), want);
        }

        #[test]
        fn bits_append_like_arrows_builder(
            bits in prop::collection::vec(any::<bool>(), 0..400),
            cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..150, any::<bool>()), 0..12),
        ) {
            let src = arrow::buffer::BooleanBuffer::from(bits.clone());
            let mut ours = Bits::with_capacity(0);
            let mut theirs = arrow::array::BooleanBufferBuilder::new(0);
            for (at, len, constant) in cuts {
                if constant {
                    ours.append_n(len, at.index(2) == 1);
                    theirs.append_n(len, at.index(2) == 1);
                } else if !bits.is_empty() {
                    let start = at.index(bits.len());
                    let len = len.min(bits.len() - start);
                    ours.append_range(src.values(), start, len);
                    theirs.append_packed_range(start..start + len, src.values());
                }
            }
            let (ours, theirs) = (ours.finish(), theirs.finish());
            prop_assert_eq!(ours.iter().collect::<Vec<_>>(), theirs.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn runs_coalesce_consecutive_rows() {
        assert_eq!(
            runs_of(&[(0, 0), (0, 1), (0, 2), (1, 0), (0, 3), (0, 5)]),
            vec![
                Run {
                    src: 0,
                    start: 0,
                    len: 3
                },
                Run {
                    src: 1,
                    start: 0,
                    len: 1
                },
                Run {
                    src: 0,
                    start: 3,
                    len: 1
                },
                Run {
                    src: 0,
                    start: 5,
                    len: 1
                },
            ]
        );
    }
}
