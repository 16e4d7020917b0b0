//! Borrowed, typed views of the payload's Arrow columns for the encoder's hot loops.
//!
//! The schemas are fixed and checked by [`crate::Payload::set`], so the downcasts here cannot
//! fail on a payload; a failure would be a programming error in the schema, hence `expect`.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, UInt32Type};

pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing: schema is checked by Payload::set"))
        .as_ref()
}

/// A Utf8, Binary or Dictionary<UInt32, Utf8> column read as byte strings. Null slots read as
/// whatever their offsets span (empty for arrow's builders); callers only read nullable
/// columns where the row's type says a value is there.
#[derive(Clone, Copy)]
pub struct Strs<'a> {
    keys: Option<&'a [u32]>,
    offsets: &'a [i32],
    data: &'a [u8],
}

impl<'a> Strs<'a> {
    pub fn new(a: &'a dyn Array) -> Self {
        match a.data_type() {
            DataType::Dictionary(_, _) => {
                let d = a.as_dictionary::<UInt32Type>();
                let v = d.values().as_string::<i32>();
                Strs {
                    keys: Some(d.keys().values()),
                    offsets: v.value_offsets(),
                    data: v.value_data(),
                }
            }
            DataType::Utf8 => {
                let v = a.as_string::<i32>();
                Strs {
                    keys: None,
                    offsets: v.value_offsets(),
                    data: v.value_data(),
                }
            }
            DataType::Binary => {
                let v = a.as_binary::<i32>();
                Strs {
                    keys: None,
                    offsets: v.value_offsets(),
                    data: v.value_data(),
                }
            }
            other => panic!("not a string column: {other}"),
        }
    }

    pub fn of(batch: &'a RecordBatch, name: &str) -> Self {
        Self::new(column(batch, name))
    }

    /// For a dictionary column: (the keys, the number of dictionary values).
    pub fn dictionary(&self) -> Option<(&'a [u32], usize)> {
        self.keys.map(|k| (k, self.offsets.len().saturating_sub(1)))
    }

    /// The `j`th dictionary value (or the `j`th row of a plain column).
    #[inline(always)]
    pub fn value(&self, j: usize) -> &'a [u8] {
        let start = self.offsets[j] as usize;
        let end = self.offsets[j + 1] as usize;
        &self.data[start..end]
    }

    #[inline(always)]
    pub fn get(&self, i: usize) -> &'a [u8] {
        let j = match self.keys {
            Some(k) => k[i] as usize,
            None => i,
        };
        // Arrow validated the offsets when the array was built: monotonic and in bounds.
        let start = self.offsets[j] as usize;
        let end = self.offsets[j + 1] as usize;
        &self.data[start..end]
    }

    /// The bytes all values are slices of (see [`Strs::bounds`]).
    #[inline(always)]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// `(start, len)` of row `i`'s value in [`Strs::data`].
    #[inline(always)]
    pub fn bounds(&self, i: usize) -> (usize, usize) {
        let j = match self.keys {
            Some(k) => k[i] as usize,
            None => i,
        };
        let start = self.offsets[j] as usize;
        (start, (self.offsets[j + 1] as usize).saturating_sub(start))
    }

    #[inline(always)]
    pub fn len_of(&self, i: usize) -> usize {
        let j = match self.keys {
            Some(k) => k[i] as usize,
            None => i,
        };
        (self.offsets[j + 1] - self.offsets[j]) as usize
    }
}

/// A primitive column's values (never null in the schema).
pub fn prim<'a, T: ArrowPrimitiveType>(batch: &'a RecordBatch, name: &str) -> &'a [T::Native] {
    column(batch, name).as_primitive::<T>().values()
}

/// A nullable primitive column: null means "absent" (optional field, unset oneof).
#[derive(Clone, Copy)]
pub struct Opt<'a, T> {
    values: &'a [T],
    nulls: Option<&'a NullBuffer>,
}

impl<'a, T: Copy> Opt<'a, T> {
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<T> {
        match self.nulls {
            Some(n) if n.is_null(i) => None,
            _ => Some(self.values[i]),
        }
    }
}

pub fn opt<'a, T: ArrowPrimitiveType>(batch: &'a RecordBatch, name: &str) -> Opt<'a, T::Native> {
    let a = column(batch, name).as_primitive::<T>();
    Opt {
        values: a.values(),
        nulls: a.nulls(),
    }
}

pub fn bools<'a>(batch: &'a RecordBatch, name: &str) -> &'a BooleanArray {
    column(batch, name).as_boolean()
}

/// A nullable FixedSizeBinary id column: null = empty id, not written.
#[derive(Clone, Copy)]
pub struct Ids<'a> {
    /// All ids back to back, `width` bytes each (null slots hold zeros).
    values: &'a [u8],
    width: usize,
    nulls: Option<&'a NullBuffer>,
}

impl<'a> Ids<'a> {
    pub fn of(batch: &'a RecordBatch, name: &str) -> Self {
        let arr = column(batch, name).as_fixed_size_binary();
        let width = arr.value_length() as usize;
        Ids {
            // Already sliced to the array (row `i` at `i * width`), as `value(i)` reads it.
            values: arr.value_data(),
            width,
            nulls: arr.nulls(),
        }
    }

    #[inline(always)]
    fn present(&self, i: usize) -> bool {
        self.nulls.is_none_or(|n| n.is_valid(i))
    }

    /// Row `i`'s id, `None` when absent (read by the Prometheus exporter for exemplars).
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.present(i)
            .then(|| &self.values[i * self.width..(i + 1) * self.width])
    }

    /// The field size with a one-byte tag, 0 when absent.
    #[inline(always)]
    pub fn size(&self, i: usize) -> usize {
        if self.present(i) { 2 + self.width } else { 0 }
    }

    /// Writes row `i`'s id as field `tag`, unless absent.
    #[inline(always)]
    pub fn write(&self, out: &mut super::wire::Out<'_>, tag: u8, i: usize) {
        if self.present(i) {
            // Ids are 8 or 16 bytes: the length varint is one byte.
            out.put_array([tag, self.width as u8]);
            out.put_within::<16>(self.values, i * self.width, self.width);
        }
    }
}

/// A `List<primitive>` column as (offsets, flat values).
#[derive(Clone, Copy)]
pub struct Lists<'a, T> {
    offsets: &'a [i32],
    values: &'a [T],
}

impl<'a, T> Lists<'a, T> {
    #[inline(always)]
    pub fn get(&self, i: usize) -> &'a [T] {
        let s = self.offsets[i] as usize;
        let e = self.offsets[i + 1] as usize;
        // Offsets index the child array; a malformed list cannot reach here (arrow validated
        // it), but stay in bounds anyway rather than panic.
        self.values.get(s..e).unwrap_or(&[])
    }
}

pub fn lists<'a, T: ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Lists<'a, T::Native> {
    let l = column(batch, name).as_list::<i32>();
    Lists {
        offsets: l.value_offsets(),
        values: l.values().as_primitive::<T>().values(),
    }
}
