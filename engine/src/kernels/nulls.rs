//! All-null arrays without allocating or zeroing memory.
//!
//! Most value columns of an attribute table are entirely null (a batch whose attributes are
//! all strings has null int, double, bool and bytes columns), and every kernel that rebuilds
//! an attribute table, like the decoder, makes them anew. Arrow's `new_null_array` allocates
//! and zeroes a values buffer and a validity bitmap for each: in the gateway's OTTL chain that
//! was 4–5% of the instructions, and on a busy process fresh pages are faulted in and cleared
//! by the kernel too.
//!
//! An all-null array of the types attribute and span tables use needs only zeroes: zero
//! values, a zero (all null) validity bitmap, zero offsets for strings and bytes. So these
//! arrays are slices of one zero-filled buffer per power-of-two size, made once per process
//! and shared by every array (Arrow buffers are immutable: nobody writes to it).
//!
//! Memory accounting: an array's reported size is its buffers' capacity, so a slice of a
//! shared buffer reports that buffer's size: at most twice the array's own, because a request
//! gets the smallest size class that fits it. Buffers above [`MAX_SHARED`] are not shared
//! (the arrays are then allocated as Arrow does), so the resident cost is bounded (< 2 ×
//! `MAX_SHARED` in all).

use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
    UInt8Array, UInt32Array, UInt64Array, new_null_array,
};
use arrow::buffer::{BooleanBuffer, Buffer, MutableBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;

/// The largest shared zero buffer (4 MiB: a million-row bitmap or 512 k 64-bit values).
pub const MAX_SHARED: usize = 1 << 22;
/// The smallest size class (smaller requests share it).
const MIN_CLASS: u32 = 12;
const CLASSES: usize = 22 - MIN_CLASS as usize + 1;

static ZEROS: [OnceLock<Buffer>; CLASSES] = [const { OnceLock::new() }; CLASSES];

/// `bytes` zero bytes from a shared buffer, or `None` above [`MAX_SHARED`].
fn zeros(bytes: usize) -> Option<Buffer> {
    if bytes > MAX_SHARED {
        return None;
    }
    let class = bytes.next_power_of_two().trailing_zeros().max(MIN_CLASS);
    let slot = &ZEROS[(class - MIN_CLASS) as usize];
    let buf = slot.get_or_init(|| MutableBuffer::from_len_zeroed(1 << class).into());
    Some(buf.slice_with_length(0, bytes))
}

/// An all-null array of `data_type` and `len` rows, sharing zeroed memory where the type is one
/// of the plain types tables use (else, and for very long arrays, as `new_null_array` makes it).
pub fn null_array(data_type: &DataType, len: usize) -> ArrayRef {
    shared(data_type, len).unwrap_or_else(|| new_null_array(data_type, len))
}

/// Whether `array` lies in the process-wide zero buffers (an all-null array [`null_array`]
/// shared): it holds no memory of its own, so memory accounting counts it as nothing.
pub fn is_shared_zeros(array: &dyn Array) -> bool {
    let Some(nulls) = array.nulls() else {
        return false;
    };
    let ptr = nulls.buffer().data_ptr();
    ZEROS
        .iter()
        .any(|z| z.get().is_some_and(|b| b.data_ptr() == ptr))
}

/// Bytes of `batch`'s buffers that it holds, for the memory account: the bytes of its rows in
/// each column ([`column_memory_size`]), less the columns that lie in the shared zero buffers.
pub fn batch_memory_size(batch: &arrow::array::RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .filter(|c| !is_shared_zeros(c.as_ref()))
        .map(|c| column_memory_size(c.as_ref()))
        .sum()
}

/// Bytes of `array`'s rows: for the plain types tables use, row count × width, the string and
/// bytes values between its first and last offset, and its validity bits; for other types
/// (dictionaries, ...) Arrow's `get_array_memory_size` (its buffers' capacity).
///
/// Why not the capacity for all: a slice shares its source's buffers, and the parts of a split
/// (`Payload::split_items`: `batch`'s `send_batch_max_size`, the exporters' request size limit)
/// would each count the whole source — measured: five parts counted 4.4× the bytes allocated
/// (`engine/tests/decode_peak.rs`). Counting rows, parts add up to their source. What this
/// leaves out (buffers' spare capacity; a slice's source living on after the other parts were
/// dropped) is in RSS, which the account reads at every check.
pub fn column_memory_size(array: &dyn Array) -> usize {
    use arrow::array::AsArray;
    let rows = array.len();
    let validity = array.nulls().map_or(0, |_| rows.div_ceil(8));
    let values = match array.data_type() {
        DataType::Boolean => rows.div_ceil(8),
        DataType::Utf8 => {
            let offsets = array.as_string::<i32>().value_offsets();
            (rows + 1) * 4 + (offsets[rows] - offsets[0]) as usize
        }
        DataType::Binary => {
            let offsets = array.as_binary::<i32>().value_offsets();
            (rows + 1) * 4 + (offsets[rows] - offsets[0]) as usize
        }
        DataType::FixedSizeBinary(width) => rows * *width as usize,
        t if t.is_primitive() => rows * t.primitive_width().unwrap_or(0),
        _ => return array.get_array_memory_size(),
    };
    values + validity
}

fn shared(data_type: &DataType, len: usize) -> Option<ArrayRef> {
    let nulls = NullBuffer::new(BooleanBuffer::new(zeros(len.div_ceil(8))?, 0, len));
    fn values<T: arrow::datatypes::ArrowNativeType>(len: usize) -> Option<ScalarBuffer<T>> {
        Some(ScalarBuffer::new(
            zeros(len * std::mem::size_of::<T>())?,
            0,
            len,
        ))
    }
    let offsets = || -> Option<OffsetBuffer<i32>> {
        // SAFETY-free: all-zero offsets are valid (every row is empty).
        Some(OffsetBuffer::new(values::<i32>(len + 1)?))
    };
    Some(match data_type {
        DataType::UInt8 => Arc::new(UInt8Array::new(values(len)?, Some(nulls))),
        DataType::UInt32 => Arc::new(UInt32Array::new(values(len)?, Some(nulls))),
        DataType::UInt64 => Arc::new(UInt64Array::new(values(len)?, Some(nulls))),
        DataType::Int32 => Arc::new(Int32Array::new(values(len)?, Some(nulls))),
        DataType::Int64 => Arc::new(Int64Array::new(values(len)?, Some(nulls))),
        DataType::Float64 => Arc::new(Float64Array::new(values(len)?, Some(nulls))),
        DataType::Boolean => Arc::new(BooleanArray::new(
            BooleanBuffer::new(zeros(len.div_ceil(8))?, 0, len),
            Some(nulls),
        )),
        DataType::Utf8 => Arc::new(StringArray::new(
            offsets()?,
            Buffer::from_vec(Vec::<u8>::new()),
            Some(nulls),
        )),
        DataType::Binary => Arc::new(BinaryArray::new(
            offsets()?,
            Buffer::from_vec(Vec::<u8>::new()),
            Some(nulls),
        )),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn shared_null_arrays_equal_arrows_own() {
        let types = [
            DataType::UInt8,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Int32,
            DataType::Int64,
            DataType::Float64,
            DataType::Boolean,
            DataType::Utf8,
            DataType::Binary,
            DataType::FixedSizeBinary(8),
        ];
        for dt in &types {
            for len in [0, 1, 7, 8, 9, 1000, 4097 * 8, MAX_SHARED + 1] {
                let ours = null_array(dt, len);
                let arrows = new_null_array(dt, len);
                ours.to_data().validate_full().expect("valid");
                assert_eq!(ours.data_type(), dt);
                assert_eq!(ours.len(), len);
                assert_eq!(ours.null_count(), len, "{dt} {len}");
                assert_eq!(&ours, &arrows, "{dt} {len}");
            }
        }
    }

    #[test]
    fn shared_arrays_hold_nothing_and_others_do() {
        let shared = null_array(&DataType::Int64, 1000);
        assert!(is_shared_zeros(shared.as_ref()));
        assert!(!is_shared_zeros(
            new_null_array(&DataType::Int64, 1000).as_ref()
        ));
        assert!(!is_shared_zeros(
            null_array(&DataType::Int64, MAX_SHARED).as_ref()
        ));
        let own = Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef;
        assert!(!is_shared_zeros(own.as_ref()));
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("a", DataType::Int64, true),
            arrow::datatypes::Field::new("b", DataType::Int64, true),
        ]));
        let b = arrow::array::RecordBatch::try_new(
            schema,
            vec![null_array(&DataType::Int64, 2), own.clone()],
        )
        .unwrap();
        assert_eq!(batch_memory_size(&b), column_memory_size(own.as_ref()));
        // Two Int64 rows and their validity bits.
        assert_eq!(column_memory_size(own.as_ref()), 2 * 8 + 1);
    }

    /// The parts of a sliced column count their own rows, so they add up to the whole
    /// (strings: offsets and the values between them).
    #[test]
    fn slices_count_their_rows_and_add_up_to_the_whole() {
        let strings: ArrayRef = Arc::new(StringArray::from(
            (0..100)
                .map(|i| Some("x".repeat(i % 7)))
                .collect::<Vec<_>>(),
        ));
        let ints: ArrayRef = Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>()));
        for whole in [strings, ints] {
            let parts: usize = [(0, 30), (30, 50), (80, 20)]
                .into_iter()
                .map(|(o, l)| column_memory_size(whole.slice(o, l).as_ref()))
                .sum();
            let own = column_memory_size(whole.as_ref());
            // Each string part has one offset more than its rows.
            assert!(parts >= own && parts <= own + 2 * 4, "{parts} vs {own}");
            assert!(own <= whole.get_array_memory_size());
        }
    }

    #[test]
    fn a_shared_buffer_is_at_most_twice_the_array() {
        for len in [1usize, 100, 5000, 70_000, MAX_SHARED / 8] {
            let a = null_array(&DataType::Int64, len);
            let own = len * 8 + len.div_ceil(8);
            let reported = a.get_array_memory_size();
            assert!(
                reported <= 2 * own + 2 * 4096 + 256,
                "{len}: {reported} vs {own}"
            );
        }
    }
}
