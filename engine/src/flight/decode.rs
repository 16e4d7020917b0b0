//! Flight messages -> payloads: a plain function over messages ([`Decoder::decode`]), with
//! every check a receiver needs before data enters a pipeline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, DictionaryArray, RecordBatch, UInt32Array};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::compute;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use arrow::ipc::reader::{RecordBatchDecoder, read_dictionary};
use arrow::ipc::{MessageHeader, MetadataVersion};

use super::layout::{self, PARENT_ROW, POSITION, TRACE_ORDINAL};
use super::{PAYLOAD_END, PayloadEnd, WireError, WireMessage, table_of_wire_id};
use crate::payload::Payload;
use crate::schema::{Signal, Table, col, dict_utf8};

/// A table's layout on the wire: the sluice schema, with some UTF-8 columns dictionary-encoded
/// (over stream dictionaries) that are plain in memory, and the transforms of [`layout`]
/// (attribute tables sorted by key with a `position` column; span durations).
///
/// [`layout`]: super::layout
pub(super) struct WireTable {
    pub schema: SchemaRef,
    /// Columns of the memory schema that are dictionaries on the wire, in column order
    /// (memory schema indexes: the encoder dictionary-encodes before the layout transforms).
    pub dict_columns: Vec<usize>,
}

/// Whether `column` of `t` is dictionary-encoded on the wire although it is plain UTF-8 in
/// memory: attribute values. Resource attribute values (the same pods' values in every batch)
/// then cross the wire once per stream; methods, routes, peers, statuses once per stream too;
/// unique values (URLs with ids) cost a key each, which the compressor mostly removes.
fn dictionary_on_the_wire(t: Table, column: &str) -> bool {
    t.is_attrs() && column == col::STR
}

pub(super) fn wire_table(t: Table) -> &'static WireTable {
    static TABLES: OnceLock<Vec<WireTable>> = OnceLock::new();
    &TABLES.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|&t| {
                let schema = t.schema();
                let mut fields = Vec::with_capacity(schema.fields().len() + 1);
                let mut dict_columns = Vec::new();
                for (i, f) in schema.fields().iter().enumerate() {
                    if f.data_type() == &dict_utf8() {
                        dict_columns.push(i);
                        fields.push(f.as_ref().clone());
                    } else if f.data_type() == &DataType::Utf8
                        && dictionary_on_the_wire(t, f.name())
                    {
                        dict_columns.push(i);
                        fields.push(Field::new(f.name(), dict_utf8(), f.is_nullable()));
                    } else {
                        fields.push(f.as_ref().clone());
                    }
                    if t.is_attrs() && f.name() == col::KEY {
                        fields.push(Field::new(POSITION, DataType::UInt32, false));
                    }
                    if t == Table::Spans && f.name() == col::TRACE_ID {
                        fields.push(Field::new(TRACE_ORDINAL, DataType::UInt32, false));
                    }
                    if t == Table::Spans && f.name() == col::PARENT_SPAN_ID {
                        fields.push(Field::new(PARENT_ROW, DataType::UInt32, false));
                    }
                }
                WireTable {
                    schema: Arc::new(Schema::new(fields)),
                    dict_columns,
                }
            })
            .collect()
    })[t as usize]
}

/// What a receiver accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest payload, in bytes of Arrow data after decompression; a larger one is read
    /// past (its dictionaries still apply) and answered `OUT_OF_RANGE`.
    pub max_payload_bytes: usize,
    /// The largest stream dictionary (bytes of values) of one column. A sender starts its
    /// dictionaries over at [`super::MAX_DICTIONARY_BYTES`]; one batch's new values come on top.
    pub max_dictionary_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 << 20,
            max_dictionary_bytes: super::MAX_DICTIONARY_BYTES + (16 << 20),
        }
    }
}

/// Panics inside arrow-ipc caught by [`Decoder::decode`] (the mutation tests expect none).
static PANICS_CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Panics inside arrow-ipc caught so far in this process (for the mutation tests and fuzzing,
/// which expect none).
#[cfg(any(test, feature = "testing"))]
pub fn panics_caught() -> u64 {
    PANICS_CAUGHT.load(Ordering::Relaxed)
}

/// One payload read off a stream.
#[derive(Debug)]
pub struct Decoded {
    pub seq: u64,
    pub signal: Signal,
    /// The origin the sender gave (where it received the data from).
    pub origin: Option<SocketAddr>,
    /// The payload, or why it cannot enter a pipeline ([`WireError::TooLarge`], or
    /// [`WireError::Malformed`] content): the stream itself is fine, the payload is refused.
    pub payload: Result<Payload, WireError>,
}

/// The decoding state of one stream.
pub struct Decoder {
    limits: Limits,
    tables: Vec<Option<TableState>>,
    /// The current payload's record batches, by table.
    pending: Vec<Vec<RecordBatch>>,
    pending_bytes: usize,
    over_limit: bool,
    /// The receiver refused the current payload ([`Decoder::refuse_payload`]): its record
    /// batches are read past, its end answered with this.
    refused: Option<WireError>,
    last_seq: u64,
}

struct TableState {
    /// The sender's schema (equal to the wire schema; it carries the dictionary ids).
    schema: SchemaRef,
    dictionaries: HashMap<i64, ArrayRef>,
    /// [`buffer_widths`] of a record batch of this table, and of a dictionary batch.
    record_widths: Vec<usize>,
    dictionary_widths: Vec<usize>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            tables: (0..Table::COUNT).map(|_| None).collect(),
            pending: (0..Table::COUNT).map(|_| Vec::new()).collect(),
            pending_bytes: 0,
            over_limit: false,
            refused: None,
            last_seq: 0,
        }
    }

    /// Bytes of Arrow data of the current payload's record batches decoded so far (what its
    /// payload will hold, before the layout is undone).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether the current payload is being read past (over the size limit, or refused).
    pub fn is_reading_past(&self) -> bool {
        self.over_limit || self.refused.is_some()
    }

    /// Refuses the current payload (the receiver has no room for it now): what it decoded is
    /// dropped, its remaining record batches are read past without being decoded (dictionary
    /// messages still apply: the stream goes on), and its end is answered with `why`.
    pub fn refuse_payload(&mut self, why: WireError) {
        self.pending.iter_mut().for_each(Vec::clear);
        self.pending_bytes = 0;
        self.refused.get_or_insert(why);
    }

    /// Reads one message (after the hello). Returns the payload it completes, if it is a
    /// [`PayloadEnd`]. An error means the stream cannot go on.
    pub fn decode(&mut self, msg: &WireMessage) -> Result<Option<Decoded>, WireError> {
        let Some(&tag) = msg.app_metadata.first() else {
            return Err(WireError::malformed(
                "a message without app_metadata (every message names its table or ends a payload)",
            ));
        };
        if tag == PAYLOAD_END {
            if !msg.header.is_empty() || !msg.body.is_empty() {
                return Err(WireError::malformed(
                    "a payload end with an IPC header or body",
                ));
            }
            return self.finish(PayloadEnd::parse(&msg.app_metadata)?).map(Some);
        }
        let table = match (table_of_wire_id(tag), msg.app_metadata.len()) {
            (Some(t), 1) => t,
            _ => {
                return Err(WireError::malformed(format!(
                    "app_metadata {:?} names no table",
                    &msg.app_metadata[..msg.app_metadata.len().min(16)]
                )));
            }
        };
        // arrow-ipc is trusted to report bad input as errors; a panic inside it on crafted
        // input must still not take the receiver down.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.table_message(table, msg)))
            .unwrap_or_else(|_| {
                PANICS_CAUGHT.fetch_add(1, Ordering::Relaxed);
                Err(WireError::malformed(format!(
                    "table {table:?}: unreadable IPC message"
                )))
            })
            .map(|()| None)
    }

    fn table_message(&mut self, t: Table, msg: &WireMessage) -> Result<(), WireError> {
        let bad = |what: String| WireError::malformed(format!("table {t:?}: {what}"));
        let message = arrow::ipc::root_as_message(&msg.header)
            .map_err(|e| bad(format!("not an IPC message: {e}")))?;
        let version = message.version();
        if version != MetadataVersion::V5 {
            return Err(bad(format!(
                "IPC metadata version {version:?}, expected V5"
            )));
        }
        let body = Buffer::from(msg.body.clone());
        if message.bodyLength() != body.len() as i64 {
            return Err(bad(format!(
                "IPC message says {} body bytes, got {}",
                message.bodyLength(),
                body.len()
            )));
        }
        match message.header_type() {
            MessageHeader::Schema => {
                if self.tables[t as usize].is_some() {
                    return Err(bad("schema sent twice on one stream".into()));
                }
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| bad("schema message without a schema".into()))?;
                let schema = arrow::ipc::convert::try_fb_to_schema(fb)
                    .map_err(|e| bad(format!("schema: {e}")))?;
                let want = &wire_table(t).schema;
                if schema.fields() != want.fields() {
                    return Err(WireError::Version(format!(
                        "table {t:?}: the sender's columns differ from {}/{}'s ({}): is the sender another sluice version?",
                        super::PROTOCOL,
                        super::VERSION,
                        describe_difference(want, &schema)
                    )));
                }
                let record_widths = buffer_widths(schema.fields().iter().map(|f| f.data_type()));
                let dictionary_widths = dictionary_value_widths(&schema);
                self.tables[t as usize] = Some(TableState {
                    schema: Arc::new(schema),
                    dictionaries: HashMap::new(),
                    record_widths,
                    dictionary_widths,
                });
            }
            MessageHeader::DictionaryBatch => {
                let state = self.tables[t as usize]
                    .as_mut()
                    .ok_or_else(|| bad("dictionary before the schema".into()))?;
                let dict = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| bad("dictionary message without a dictionary".into()))?;
                let data = dict
                    .data()
                    .ok_or_else(|| bad("dictionary message without data".into()))?;
                decoded_size(
                    &data,
                    &body,
                    &state.dictionary_widths,
                    self.limits.max_dictionary_bytes,
                )
                .map_err(|e| bad(format!("dictionary {}: {e}", dict.id())))?;
                read_dictionary(
                    &body,
                    dict,
                    &state.schema,
                    &mut state.dictionaries,
                    &version,
                )
                .map_err(|e| bad(format!("dictionary {}: {e}", dict.id())))?;
                let values = state
                    .dictionaries
                    .get(&dict.id())
                    .ok_or_else(|| bad(format!("dictionary {} was not kept", dict.id())))?;
                if values.null_count() > 0 {
                    return Err(bad(format!("dictionary {} has null values", dict.id())));
                }
                let size = values
                    .to_data()
                    .get_slice_memory_size()
                    .unwrap_or(usize::MAX);
                if size > self.limits.max_dictionary_bytes {
                    return Err(WireError::TooLarge(format!(
                        "table {t:?}: dictionary {} grew to {size} bytes (limit {}): the sender must start it over",
                        dict.id(),
                        self.limits.max_dictionary_bytes
                    )));
                }
            }
            MessageHeader::RecordBatch => {
                let state = self.tables[t as usize]
                    .as_ref()
                    .ok_or_else(|| bad("record batch before the schema".into()))?;
                let rb = message
                    .header_as_record_batch()
                    .ok_or_else(|| bad("record batch message without a batch".into()))?;
                let budget = self
                    .limits
                    .max_payload_bytes
                    .saturating_sub(self.pending_bytes);
                let size = match decoded_size(&rb, &body, &state.record_widths, budget) {
                    Ok(n) => n,
                    Err(BodyError::TooLarge) => {
                        // Read past the rest of the payload; its end is answered OUT_OF_RANGE.
                        self.over_limit = true;
                        self.pending.iter_mut().for_each(Vec::clear);
                        return Ok(());
                    }
                    Err(e) => return Err(bad(format!("record batch: {e}"))),
                };
                if self.is_reading_past() {
                    return Ok(());
                }
                let batch = RecordBatchDecoder::try_new(
                    &body,
                    rb,
                    state.schema.clone(),
                    &state.dictionaries,
                    &version,
                )
                .and_then(|d| d.with_require_alignment(false).read_record_batch())
                .map_err(|e| bad(format!("record batch: {e}")))?;
                self.pending_bytes += size;
                self.pending[t as usize].push(batch);
            }
            other => return Err(bad(format!("unexpected IPC message type {other:?}"))),
        }
        Ok(())
    }

    fn finish(&mut self, end: PayloadEnd) -> Result<Decoded, WireError> {
        if end.seq != self.last_seq + 1 {
            return Err(WireError::malformed(format!(
                "payload {} after payload {}: payloads are numbered 1, 2, 3, ... on a stream",
                end.seq, self.last_seq
            )));
        }
        self.last_seq = end.seq;
        let pending: Vec<Vec<RecordBatch>> = self.pending.iter_mut().map(std::mem::take).collect();
        self.pending_bytes = 0;
        let refused = self.refused.take();
        let payload = if std::mem::take(&mut self.over_limit) {
            Err(WireError::TooLarge(format!(
                "payload {} is larger than {} bytes of Arrow data: split it",
                end.seq, self.limits.max_payload_bytes
            )))
        } else if let Some(why) = refused {
            Err(why)
        } else {
            build(end.signal, pending).map(|mut p| {
                p.origin = end.origin;
                p
            })
        };
        Ok(Decoded {
            seq: end.seq,
            signal: end.signal,
            origin: end.origin,
            payload,
        })
    }
}

/// The payload of `signal` from its tables' record batches, checked like decoded OTLP.
fn build(signal: Signal, mut pending: Vec<Vec<RecordBatch>>) -> Result<Payload, WireError> {
    if let Some(t) = Table::ALL
        .into_iter()
        .find(|t| !pending[*t as usize].is_empty() && !signal.tables().contains(t))
    {
        return Err(WireError::malformed(format!(
            "table {t:?} in a {} payload",
            signal.as_str()
        )));
    }
    let mut payload = Payload::empty(signal);
    // Parents before children: an attribute table's layout needs its parent's row count.
    for &t in signal.tables() {
        let batches = std::mem::take(&mut pending[t as usize]);
        if batches.is_empty() {
            continue;
        }
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one batch"),
            _ => compute::concat_batches(&batches[0].schema(), &batches)
                .map_err(|e| WireError::malformed(format!("table {t:?}: {e}")))?,
        };
        let parent_rows = t.parent().map_or(0, |p| payload.table(p).num_rows());
        payload
            .set(t, from_wire(t, batch, parent_rows)?)
            .map_err(|e| WireError::malformed(e.to_string()))?;
    }
    payload
        .validate()
        .map_err(|e| WireError::malformed(e.to_string()))?;
    super::validate_content(&payload).map_err(WireError::Malformed)?;
    Ok(payload)
}

/// A wire batch in the sluice schema.
fn from_wire(t: Table, batch: RecordBatch, parent_rows: usize) -> Result<RecordBatch, WireError> {
    let wire = wire_table(t);
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    // The layout first, while the string columns are still dictionaries (a reorder moves keys,
    // not strings).
    if t.is_attrs() {
        columns = layout::attrs_from_wire(t, columns, parent_rows)?;
    } else if t == Table::Spans {
        let names: Vec<&str> = wire
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        layout::spans_from_wire(&names, &mut columns)?;
    }
    let schema = t.schema();
    for &c in &wire.dict_columns {
        columns[c] = match schema.field(c).data_type() {
            DataType::Utf8 => compute::cast(&columns[c], &DataType::Utf8)
                .map_err(|e| WireError::malformed(format!("table {t:?}: {e}")))?,
            _ => compact(&columns[c], rows)?,
        };
    }
    RecordBatch::try_new(schema, columns)
        .map_err(|e| WireError::malformed(format!("table {t:?}: {e}")))
}

/// A dictionary column over a stream dictionary, reduced to the values its rows use when the
/// stream dictionary is much larger than the batch (so a payload does not hold, nor count in
/// its memory size, a stream's worth of values).
fn compact(column: &ArrayRef, rows: usize) -> Result<ArrayRef, WireError> {
    let Some(dict) = column.as_dictionary_opt::<UInt32Type>() else {
        return Err(WireError::malformed(
            "a dictionary column is not keyed by UInt32",
        ));
    };
    let n = dict.values().len();
    if n <= 1024 || n <= 2 * rows {
        return Ok(column.clone());
    }
    let mut new_key = vec![u32::MAX; n];
    let mut used = Vec::new();
    for &k in dict.keys().values().iter() {
        // Keys were checked against the dictionary when the batch was read (null rows may
        // hold anything: they map to key 0).
        if let Some(slot) = new_key.get_mut(k as usize)
            && *slot == u32::MAX
        {
            *slot = used.len() as u32;
            used.push(k);
        }
    }
    let values = compute::take(dict.values(), &UInt32Array::from(used), None)
        .map_err(|e| WireError::malformed(e.to_string()))?;
    let keys: Vec<u32> = dict
        .keys()
        .values()
        .iter()
        .map(|&k| {
            new_key
                .get(k as usize)
                .copied()
                .filter(|&v| v != u32::MAX)
                .unwrap_or(0)
        })
        .collect();
    let keys = UInt32Array::new(ScalarBuffer::from(keys), dict.keys().nulls().cloned());
    let array = DictionaryArray::<UInt32Type>::try_new(keys, values)
        .map_err(|e| WireError::malformed(e.to_string()))?;
    Ok(Arc::new(array))
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
    Bad(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("too large"),
            BodyError::Bad(m) => f.write_str(m),
        }
    }
}

/// The byte width each buffer of arrays of `types` must be a multiple of, in IPC buffer order
/// (depth first: a validity bitmap, the type's own buffers, then its children's); 1 for
/// bitmaps and variable-width data. arrow-data's validation asserts this (a panic) rather than
/// reporting it, so a crafted length must be refused before arrow-ipc reads the message.
pub(super) fn buffer_widths<'a>(types: impl IntoIterator<Item = &'a DataType>) -> Vec<usize> {
    fn push(t: &DataType, out: &mut Vec<usize>) {
        if matches!(t, DataType::Null) {
            return; // no buffers in IPC
        }
        out.push(1); // validity
        for spec in arrow::array::layout(t).buffers {
            out.push(match spec {
                arrow::array::BufferSpec::FixedWidth { byte_width, .. } => byte_width.max(1),
                _ => 1,
            });
        }
        match t {
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => push(f.data_type(), out),
            DataType::Struct(fields) => fields.iter().for_each(|f| push(f.data_type(), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    types.into_iter().for_each(|t| push(t, &mut out));
    out
}

/// [`buffer_widths`] of a dictionary batch of `schema`: its value type's, when every
/// dictionary column has the same value type (`Utf8`); otherwise none are checked
/// here (arrow-ipc still checks the rest).
fn dictionary_value_widths(schema: &Schema) -> Vec<usize> {
    fn values(t: &DataType, out: &mut Vec<DataType>) {
        match t {
            DataType::Dictionary(_, v) => out.push(v.as_ref().clone()),
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => values(f.data_type(), out),
            DataType::Struct(fields) => fields.iter().for_each(|f| values(f.data_type(), out)),
            _ => {}
        }
    }
    let mut types = Vec::new();
    schema
        .fields()
        .iter()
        .for_each(|f| values(f.data_type(), &mut types));
    match types.split_first() {
        Some((first, rest)) if rest.iter().all(|t| t == first) => buffer_widths([first]),
        _ => Vec::new(),
    }
}

/// The bytes of Arrow data a record batch (or dictionary) message decodes to, checked before
/// anything is allocated: every buffer lies within the body, its (decompressed) length is a
/// multiple of its element width (`widths`, from [`buffer_widths`]), and with body compression
/// each buffer's declared uncompressed length (which arrow-ipc would allocate up front) counts.
fn decoded_size(
    rb: &arrow::ipc::RecordBatch<'_>,
    body: &Buffer,
    widths: &[usize],
    limit: usize,
) -> Result<usize, BodyError> {
    let buffers = rb
        .buffers()
        .ok_or_else(|| BodyError::Bad("no buffer list".into()))?;
    let compressed = rb.compression().is_some();
    let mut total: usize = 0;
    for (i, b) in buffers.iter().enumerate() {
        let (offset, length) = (b.offset(), b.length());
        let end = offset.checked_add(length);
        let inside = offset >= 0 && length >= 0 && end.is_some_and(|e| e <= body.len() as i64);
        if !inside {
            return Err(BodyError::Bad(format!(
                "buffer {offset}+{length} outside the {}-byte body",
                body.len()
            )));
        }
        let (offset, length) = (offset as usize, length as usize);
        let size = if compressed && length > 0 {
            if length < 8 {
                return Err(BodyError::Bad(
                    "compressed buffer shorter than its length prefix".into(),
                ));
            }
            let mut prefix = [0u8; 8];
            prefix.copy_from_slice(&body[offset..offset + 8]);
            match i64::from_le_bytes(prefix) {
                -1 => length - 8,
                n if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                n => return Err(BodyError::Bad(format!("uncompressed length {n}"))),
            }
        } else {
            length
        };
        // An empty compressed buffer stays empty; otherwise `size` is what arrow-ipc builds.
        let width = widths.get(i).copied().unwrap_or(1);
        if size % width != 0 {
            return Err(BodyError::Bad(format!(
                "buffer {i} is {size} bytes, not a whole number of {width}-byte values"
            )));
        }
        total = total.saturating_add(size);
        if total > limit {
            return Err(BodyError::TooLarge);
        }
    }
    Ok(total)
}

/// The first column where two schemas differ, for the error message.
fn describe_difference(want: &Schema, got: &Schema) -> String {
    for (i, w) in want.fields().iter().enumerate() {
        match got.fields().get(i) {
            None => return format!("column {} `{}` missing", i, w.name()),
            Some(g) if g.as_ref() != w.as_ref() => {
                return format!(
                    "column {i}: expected `{}` {} (nullable: {}), got `{}` {} (nullable: {})",
                    w.name(),
                    w.data_type(),
                    w.is_nullable(),
                    g.name(),
                    g.data_type(),
                    g.is_nullable()
                );
            }
            _ => {}
        }
    }
    format!(
        "{} columns expected, got {}",
        want.fields().len(),
        got.fields().len()
    )
}
