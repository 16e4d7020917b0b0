//! Payload -> Flight messages, keeping a stream's state (schemas sent, dictionaries).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{
    DictionaryHandling, DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use arrow::ipc::{CompressionType, MetadataVersion};
use bytes::Bytes;

use super::dict::StreamDict;
use super::layout;
use super::{PayloadEnd, WireError, WireMessage, wire_table_id};
use crate::payload::Payload;
use crate::schema::Table;

/// Arrow IPC body compression: each buffer of a message compressed on its own (the IPC
/// format's `BodyCompression`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Zstd,
    Lz4,
}

/// The zstd level of IPC body compression: 1, not arrow-ipc's default 3. Measured
/// (BENCHMARKS.md, "The hop benchmark with both ends holding Arrow"): the same bytes on the
/// wire once gRPC's zstd has compressed each whole message (21.6 against 21.7 B/span), and the
/// send 0.83× the time (zstd's level 3 tables miss the cache far more; the instruction counts
/// are equal).
const IPC_ZSTD_LEVEL: i32 = 1;

/// A record batch message aims at this many bytes of Arrow data before compression; larger
/// tables go as several record batches (the receiver's per-message limit defaults to 4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2 << 20;

/// The encoding state of one stream. Not `Clone`: a stream has exactly one.
///
/// If [`Encoder::encode`] fails, the stream is unusable (its dictionaries may be ahead of what
/// the receiver saw): [`Encoder::is_poisoned`] says so, and the caller starts a new stream.
pub struct Encoder {
    options: IpcWriteOptions,
    context: IpcWriteContext,
    tables: Vec<Option<TableState>>,
    last_seq: u64,
    max_message_bytes: usize,
    poisoned: bool,
}

struct TableState {
    tracker: DictionaryTracker,
    wire: &'static super::decode::WireTable,
    /// One per dictionary column of the wire schema, in column order.
    dicts: Vec<StreamDict>,
}

impl Encoder {
    pub fn new(compression: Compression) -> Self {
        let (compression, level) = match compression {
            Compression::None => (None, None),
            Compression::Zstd => (Some(CompressionType::ZSTD), Some(IPC_ZSTD_LEVEL)),
            Compression::Lz4 => (Some(CompressionType::LZ4_FRAME), None),
        };
        // 8-byte alignment (not arrow-ipc's default 64): the padding of every buffer is sent
        // too, and the receiver copies into aligned memory wherever it must anyway.
        let options = IpcWriteOptions::try_new(8, false, MetadataVersion::V5)
            .expect("8-byte alignment, V5")
            .with_dictionary_handling(DictionaryHandling::Delta)
            .try_with_compression(compression)
            .expect("metadata V5 supports compression")
            .try_with_compression_level(level)
            .expect("a zstd level in zstd's range, or none");
        Encoder {
            options,
            context: IpcWriteContext::default(),
            tables: (0..Table::COUNT).map(|_| None).collect(),
            last_seq: 0,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            poisoned: false,
        }
    }

    /// Record batches aim at `n` bytes of Arrow data each (before compression).
    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n.max(1);
        self
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The sequence number of the last payload encoded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends the messages of `payload` to `out` and returns its sequence number. On error,
    /// nothing is appended and the encoder is poisoned.
    pub fn encode(
        &mut self,
        payload: &Payload,
        out: &mut Vec<WireMessage>,
    ) -> Result<u64, WireError> {
        if self.poisoned {
            return Err(WireError::encode(
                "the stream failed before: start a new one",
            ));
        }
        let start = out.len();
        match self.encode_tables(payload, out) {
            Ok(()) => {
                self.last_seq += 1;
                out.push(WireMessage {
                    app_metadata: PayloadEnd {
                        seq: self.last_seq,
                        signal: payload.signal(),
                        origin: payload.origin,
                    }
                    .to_bytes(),
                    ..Default::default()
                });
                Ok(self.last_seq)
            }
            Err(e) => {
                out.truncate(start);
                self.poisoned = true;
                Err(e)
            }
        }
    }

    fn encode_tables(
        &mut self,
        payload: &Payload,
        out: &mut Vec<WireMessage>,
    ) -> Result<(), WireError> {
        let generator = IpcDataGenerator::default();
        for (t, batch) in payload.tables() {
            if batch.num_rows() == 0 {
                continue;
            }
            let tag = Bytes::from(vec![wire_table_id(t)]);
            let state = match &mut self.tables[t as usize] {
                Some(s) => s,
                slot @ None => {
                    let wire = super::decode::wire_table(t);
                    let mut tracker = DictionaryTracker::new(false);
                    let schema = generator.schema_to_bytes_with_dictionary_tracker(
                        &wire.schema,
                        &mut tracker,
                        &self.options,
                    );
                    out.push(WireMessage {
                        header: Bytes::from(schema.ipc_message),
                        body: Bytes::new(),
                        app_metadata: tag.clone(),
                    });
                    slot.insert(TableState {
                        tracker,
                        wire,
                        dicts: wire
                            .dict_columns
                            .iter()
                            .map(|_| StreamDict::new())
                            .collect(),
                    })
                }
            };
            let wire = to_wire(t, state, batch)?;
            for chunk in chunks(&wire, self.max_message_bytes) {
                let (dictionaries, message) = generator.encode(
                    &chunk,
                    &mut state.tracker,
                    &self.options,
                    &mut self.context,
                )?;
                for d in dictionaries.into_iter().chain([message]) {
                    out.push(WireMessage {
                        header: Bytes::from(d.ipc_message),
                        body: Bytes::from(d.arrow_data),
                        app_metadata: tag.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A table's batch in its wire schema: dictionary columns over the stream's dictionaries,
/// then the layout transforms ([`super::layout`]).
fn to_wire(
    t: Table,
    state: &mut TableState,
    batch: &RecordBatch,
) -> Result<RecordBatch, WireError> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (dict, &c) in state.dicts.iter_mut().zip(&state.wire.dict_columns) {
        dict.reset_if_full();
        columns[c] = dict.encode(&columns[c])?;
    }
    if t.is_attrs() {
        columns = layout::attrs_to_wire(columns)?;
    } else if t == Table::Spans {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        layout::spans_to_wire(&names, &mut columns)?;
    }
    let schema: SchemaRef = state.wire.schema.clone();
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `batch` in slices of about `max_bytes` of Arrow data each (dictionary values, which go in
/// their own messages, not counted).
fn chunks(batch: &RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes: usize = batch
        .columns()
        .iter()
        .map(|c| match c.as_any_dictionary_opt() {
            Some(d) => d.keys().to_data().get_slice_memory_size().unwrap_or(0),
            None => c.to_data().get_slice_memory_size().unwrap_or(0),
        })
        .sum();
    if bytes <= max_bytes || rows <= 1 {
        return vec![batch.clone()];
    }
    let per_chunk = (rows * max_bytes / bytes).max(1);
    (0..rows)
        .step_by(per_chunk)
        .map(|start| batch.slice(start, per_chunk.min(rows - start)))
        .collect()
}
