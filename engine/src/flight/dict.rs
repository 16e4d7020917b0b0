//! Stream dictionaries: one per dictionary-encoded wire column, kept for the life of a Flight
//! stream, so a value (an attribute key, a span name, a pod name) crosses the wire once per
//! stream instead of once per batch.
//!
//! Values get keys in first-seen order and never move, so the dictionary a batch needs is the
//! previous batch's plus what is new: arrow-ipc's `DictionaryTracker` sees a prefix and sends
//! only the new tail as an IPC delta. Past [`MAX_ENTRIES`] or [`MAX_BYTES`] the dictionary
//! starts over (the tracker then sends a replacement), which bounds what both ends hold.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray, UInt32Array};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::UInt32Type;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::WireError;

/// A stream dictionary starts over once it holds more values than this...
pub const MAX_ENTRIES: usize = 1 << 16;
/// ... or more bytes of values than this.
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Default)]
pub(super) struct StreamDict {
    /// Key of each value, found by hashing the value's bytes.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    /// The values as an Arrow array, built when first asked for after a change: a batch that
    /// adds nothing reuses the previous array, so the tracker sees the same buffers and sends
    /// nothing.
    values: Option<ArrayRef>,
}

impl StreamDict {
    pub(super) fn new() -> Self {
        StreamDict {
            offsets: vec![0],
            ..Default::default()
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Starts over if the dictionary is past its bounds (before a batch adds to it).
    pub(super) fn reset_if_full(&mut self) {
        if self.len() > MAX_ENTRIES || self.bytes.len() > MAX_BYTES {
            self.index.clear();
            self.offsets.truncate(1);
            self.bytes.clear();
            self.values = None;
        }
    }

    /// The key of `v`, added if new.
    fn key_of(&mut self, v: &[u8]) -> Result<u32, WireError> {
        let hash = self.hasher.hash_one(v);
        let (offsets, bytes) = (&self.offsets, &self.bytes);
        let found = self.index.find(hash, |&k| {
            let k = k as usize;
            &bytes[offsets[k] as usize..offsets[k + 1] as usize] == v
        });
        if let Some(&k) = found {
            return Ok(k);
        }
        let k = self.len() as u32;
        self.bytes.extend_from_slice(v);
        let end = i32::try_from(self.bytes.len())
            .map_err(|_| WireError::encode("a stream dictionary outgrew 2 GiB"))?;
        self.offsets.push(end);
        let hasher = &self.hasher;
        let (offsets, bytes) = (&self.offsets, &self.bytes);
        self.index.insert_unique(hash, k, |&k| {
            let k = k as usize;
            hasher.hash_one(&bytes[offsets[k] as usize..offsets[k + 1] as usize])
        });
        self.values = None;
        Ok(k)
    }

    /// The dictionary's values, in key order.
    fn values(&mut self) -> ArrayRef {
        if let Some(v) = &self.values {
            return v.clone();
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets.clone()));
        // SAFETY-free: the offsets are monotonic and end at bytes.len(), and every value was
        // copied from a valid UTF-8 string.
        let values: ArrayRef = Arc::new(StringArray::new(
            offsets,
            Buffer::from(self.bytes.clone()),
            None,
        ));
        self.values = Some(values.clone());
        values
    }

    /// `column` (a dictionary of UTF-8 strings keyed by `UInt32`, or plain UTF-8) as a
    /// dictionary over this stream dictionary.
    pub(super) fn encode(&mut self, column: &ArrayRef) -> Result<ArrayRef, WireError> {
        let nulls = column.logical_nulls();
        let keys: Vec<u32> = if let Some(dict) = column.as_dictionary_opt::<UInt32Type>() {
            // Map each of the batch's own dictionary values once, then every row by lookup.
            let local = dict
                .values()
                .as_string_opt::<i32>()
                .ok_or_else(|| WireError::encode("dictionary values are not UTF-8 strings"))?;
            let mut stream_key = Vec::with_capacity(local.len());
            for i in 0..local.len() {
                stream_key.push(self.key_of(local.value(i).as_bytes())?);
            }
            dict.keys()
                .values()
                .iter()
                .enumerate()
                .map(|(row, &k)| match stream_key.get(k as usize) {
                    Some(&s) => s,
                    // Only a null row may hold a key outside its dictionary.
                    None => {
                        debug_assert!(dict.keys().is_null(row));
                        0
                    }
                })
                .collect()
        } else if let Some(strings) = column.as_string_opt::<i32>() {
            let mut keys = Vec::with_capacity(strings.len());
            for i in 0..strings.len() {
                keys.push(if strings.is_null(i) {
                    0
                } else {
                    self.key_of(strings.value(i).as_bytes())?
                });
            }
            keys
        } else {
            return Err(WireError::encode(format!(
                "cannot dictionary-encode a {} column",
                column.data_type()
            )));
        };
        let keys = UInt32Array::new(ScalarBuffer::from(keys), nulls);
        let array = DictionaryArray::<UInt32Type>::try_new(keys, self.values())?;
        Ok(Arc::new(array))
    }
}
