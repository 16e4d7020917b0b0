//! Stream dictionaries: one per dictionary-encoded wire column, kept for the life of a Flight
//! stream, so a value (an attribute key, a span name, a pod name) crosses the wire once per
//! stream instead of once per batch.
//!
//! Values get keys in first-seen order and never move, so the dictionary a batch needs is the
//! previous batch's plus what is new: arrow-ipc's `DictionaryTracker` sees a prefix and sends
//! only the new tail as an IPC delta. Past [`MAX_ENTRIES`] values or [`START_OVER_BYTES`] the
//! dictionary starts over (the tracker then sends a replacement), which bounds what both ends
//! hold.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray, UInt32Array};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::UInt32Type;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::WireError;

/// The protocol's bound: a sender starts a stream dictionary over before it holds more values
/// than this...
pub const MAX_ENTRIES: usize = 1 << 16;
/// ... or more bytes of values than this (what receivers accept, plus one message of new
/// values; kept at 1 MiB so receivers of this version accept the senders of earlier ones).
pub const MAX_BYTES: usize = 1 << 20;
/// Where this sender starts over: 128 KiB of values, well before [`MAX_BYTES`], because every
/// batch that adds a value costs both ends work in proportion to the whole dictionary
/// (arrow-ipc's tracker keeps a copy and compares the prefix value by value to find the delta;
/// the reader concatenates the delta onto a copy). Unique values (URLs with session ids,
/// message ids) are what fill a dictionary, and re-sending the repeated vocabulary after a
/// start-over costs little once compressed: on loadgen traffic 1 MiB -> 128 KiB took the send
/// from 654 to 582 ns per span and the receive from 411 to 391, for +0.1 B/span (BENCHMARKS.md,
/// "The Flight encoder's own cost").
const START_OVER_BYTES: usize = 128 << 10;

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
        if self.len() > MAX_ENTRIES || self.bytes.len() > START_OVER_BYTES {
            self.index.clear();
            self.offsets.truncate(1);
            self.bytes.clear();
            self.values = None;
        }
    }

    /// The key of `v`, added if new.
    fn key_of(&mut self, v: &[u8]) -> Result<u32, WireError> {
        self.key_of_hashed(v, self.hasher.hash_one(v))
    }

    /// [`Self::key_of`] with `v`'s hash already computed by this dictionary's hasher.
    fn key_of_hashed(&mut self, v: &[u8], hash: u64) -> Result<u32, WireError> {
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
            self.encode_plain(strings)?
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

    /// The stream key of every row of a plain string column (0 for nulls).
    ///
    /// Rows repeat values: a batch of 8,192 loadgen spans has ~72,000 attribute rows and ~5,000
    /// distinct values. Each row is first looked up in a table of the batch's own distinct
    /// values (small enough to stay in the cache, compared against the batch's bytes), and
    /// only a value new to the batch goes to the stream dictionary, whose table, offsets and
    /// bytes (up to 64 Ki values) missed the cache on most rows when every row went
    /// there (BENCHMARKS.md, "The Flight encoder's own cost").
    fn encode_plain(&mut self, strings: &StringArray) -> Result<Vec<u32>, WireError> {
        /// A distinct value of the batch: its hash, the first row holding it, its stream key.
        struct Seen {
            hash: u64,
            row: u32,
            key: u32,
        }
        let mut seen: HashTable<Seen> = HashTable::with_capacity(strings.len() / 8 + 16);
        let mut keys = Vec::with_capacity(strings.len());
        for i in 0..strings.len() {
            if strings.is_null(i) {
                keys.push(0);
                continue;
            }
            let v = strings.value(i).as_bytes();
            let hash = self.hasher.hash_one(v);
            let found = seen.find(hash, |s| strings.value(s.row as usize).as_bytes() == v);
            let key = match found {
                Some(s) => s.key,
                None => {
                    let key = self.key_of_hashed(v, hash)?;
                    seen.insert_unique(
                        hash,
                        Seen {
                            hash,
                            row: i as u32,
                            key,
                        },
                        |s| s.hash,
                    );
                    key
                }
            };
            keys.push(key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every row's key names its value in the stream dictionary, and the dictionary holds each
    /// distinct value once, in the order the rows first showed it (across batches: what the
    /// IPC delta relies on). Small alphabets make values repeat within and across batches.
    fn check(batches: &[Vec<Option<String>>]) {
        let mut dict = StreamDict::new();
        let mut first_seen: Vec<String> = Vec::new();
        for rows in batches {
            let column: ArrayRef = Arc::new(StringArray::from(rows.clone()));
            let encoded = dict.encode(&column).expect("encodes");
            let encoded = encoded.as_dictionary::<UInt32Type>();
            let values = encoded.values().as_string::<i32>();
            for (row, v) in rows.iter().enumerate() {
                match v {
                    None => assert!(encoded.is_null(row)),
                    Some(v) => {
                        let key = encoded.keys().value(row) as usize;
                        assert_eq!(values.value(key), v, "row {row}");
                        if !first_seen.contains(v) {
                            first_seen.push(v.clone());
                        }
                    }
                }
            }
            let all: Vec<&str> = values.iter().map(|v| v.expect("no null values")).collect();
            assert_eq!(all, first_seen);
        }
    }

    proptest! {
        #[test]
        fn plain_strings_get_their_stream_keys(
            batches in prop::collection::vec(
                prop::collection::vec(prop::option::weighted(0.9, "[ab]{0,3}"), 0..60),
                1..4,
            )
        ) {
            check(&batches);
        }
    }

    #[test]
    fn a_value_repeated_after_many_distinct_ones_keeps_its_first_key() {
        // Enough distinct values to make the batch-local table grow while an early value is
        // still to come again.
        let mut rows: Vec<Option<String>> = vec![Some("first".into()), None];
        rows.extend((0..5_000).map(|i| Some(format!("v{i}"))));
        rows.push(Some("first".into()));
        check(&[rows.clone(), rows]);
    }
}
