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
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, DictionaryArray,
    FixedSizeBinaryArray, GenericByteArray, PrimitiveArray, RecordBatch, RecordBatchOptions,
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
        return Some(Ok(arrow::array::new_null_array(&dt, total(runs))));
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

fn nulls(sources: &[&dyn Array], runs: &[Run], len: usize) -> Option<NullBuffer> {
    if sources.iter().all(|s| s.null_count() == 0) {
        return None;
    }
    // Per source: its validity bits, or whether it is all valid / all null.
    let state: Vec<(Option<&NullBuffer>, bool)> = sources
        .iter()
        .map(|s| (s.nulls(), s.null_count() == s.len()))
        .collect();
    let mut b = BooleanBufferBuilder::new(len);
    for r in runs {
        match state[r.src] {
            (None, _) => b.append_n(r.len, true),
            (Some(_), true) => b.append_n(r.len, false),
            (Some(n), false) if r.len == 1 => b.append(n.is_valid(r.start)),
            (Some(n), false) => {
                let inner = n.inner();
                b.append_packed_range(
                    inner.offset() + r.start..inner.offset() + r.start + r.len,
                    inner.values(),
                );
            }
        }
    }
    Some(NullBuffer::new(b.finish()))
}

fn total(runs: &[Run]) -> usize {
    runs.iter().map(|r| r.len).sum()
}

fn primitive<T: ArrowPrimitiveType>(sources: &[&dyn Array], runs: &[Run]) -> PrimitiveArray<T> {
    let len = total(runs);
    let typed: Vec<&[T::Native]> = sources
        .iter()
        .map(|s| s.as_primitive::<T>().values().as_ref())
        .collect();
    let mut values: Vec<T::Native> = Vec::with_capacity(len);
    for r in runs {
        values.extend_from_slice(&typed[r.src][r.start..r.start + r.len]);
    }
    PrimitiveArray::<T>::new(ScalarBuffer::from(values), nulls(sources, runs, len))
        .with_data_type(sources[0].data_type().clone())
}

fn boolean(sources: &[&dyn Array], runs: &[Run]) -> BooleanArray {
    let len = total(runs);
    let typed: Vec<&arrow::buffer::BooleanBuffer> =
        sources.iter().map(|s| s.as_boolean().values()).collect();
    let mut b = BooleanBufferBuilder::new(len);
    for r in runs {
        let v = typed[r.src];
        b.append_packed_range(
            v.offset() + r.start..v.offset() + r.start + r.len,
            v.values(),
        );
    }
    BooleanArray::new(b.finish(), nulls(sources, runs, len))
}

fn bytes<T: ByteArrayType<Offset = i32>>(
    sources: &[&dyn Array],
    runs: &[Run],
) -> Result<ArrayRef, ArrowError> {
    let len = total(runs);
    let typed: Vec<&GenericByteArray<T>> = sources.iter().map(|s| s.as_bytes::<T>()).collect();
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
        let o = a.value_offsets();
        let (first, last) = (o[r.start], o[r.start + r.len]);
        // `values.len()` <= `size`, checked to fit in i32 above.
        let delta = values.len() as i32 - first;
        offsets.extend(o[r.start + 1..=r.start + r.len].iter().map(|x| x + delta));
        values.extend_from_slice(&a.value_data()[first as usize..last as usize]);
    }
    let nulls = nulls(sources, runs, len);
    // SAFETY: the offsets start at 0 and grow by the lengths of whole values of valid arrays
    // of this type, and `values` holds exactly those values' bytes in that order, so every
    // offset is in bounds and (for Utf8) every value is the UTF-8 it was in its source. This
    // skips re-validating every byte of data that was valid a moment ago.
    Ok(Arc::new(unsafe {
        GenericByteArray::<T>::new_unchecked(
            OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            nulls,
        )
    }))
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
    let mut keys: Vec<u32> = Vec::with_capacity(len);
    for r in runs {
        let k = dicts[r.src].keys().values();
        let b = base[r.src];
        if b == 0 {
            keys.extend_from_slice(&k[r.start..r.start + r.len]);
        } else {
            keys.extend(k[r.start..r.start + r.len].iter().map(|x| x + b));
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
