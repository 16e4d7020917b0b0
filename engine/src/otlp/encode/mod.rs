//! Arrow -> OTLP protobuf / JSON.
//!
//! The protobuf encoder is hand-written and produces **the same bytes prost would** for the
//! same data (fields in prost's order, which is tag order; proto3 defaults skipped exactly as
//! prost skips them; `optional` fields and set oneofs written even when zero). It runs in two
//! passes over columns, never building a per-span object:
//!
//! 1. **Sizes, bottom-up.** For each table, the encoded body length of every row is computed
//!    column by column (attribute rows from key and value lengths), then each row's field size
//!    (tag + length varint + body) is added to its parent's total in one pass over
//!    `parent_id`. Parents then know their exact body length.
//! 2. **Write, top-down.** Resources -> scopes -> items are walked once, writing exact length
//!    prefixes. Children of row `i` are the contiguous range `starts[i]..starts[i + 1]`,
//!    computed once per table, because every child table is sorted by `parent_id`.
//!
//! # Requirements on the payload
//!
//! The encoder relies on the invariants [`Payload::validate`] checks (parent ids in range,
//! child tables sorted by parent id). On a payload that breaks them it does not panic, but the
//! output is unspecified (children may be dropped or attached to the wrong parent). Data the
//! schema docs call impossible is resolved without panicking: a value column that is null
//! where the row's type says it is set reads as the slot's raw value, an unknown attribute
//! type writes no value, points in a table that does not match their metric's type are not
//! written, summary quantile/value lists of unequal length are truncated to the shorter.

/// Typed column views, shared with exporters that read payloads (prometheus).
pub mod columns;
pub(super) mod json;
mod logs;
mod metrics;
mod traces;
mod wire;

use std::ops::Range;

use arrow::array::BooleanArray;
use arrow::datatypes::UInt32Type;

use self::columns::{Strs, bools, prim};
use self::wire::*;
use crate::payload::Payload;
use crate::schema::{AnyValueType, Signal, Table, col};

pub use self::json::encode_json;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The protobuf encoding could not be read back into the OTLP types for JSON (a bug in the
    /// encoder, or a payload that breaks the schema's invariants).
    #[error("re-reading the encoded protobuf for JSON failed: {0}")]
    Reparse(#[from] prost::DecodeError),
    #[error("JSON serialization failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// Appends the payload as an `Export{Trace,Metrics,Logs}ServiceRequest` (the same bytes as the
/// matching `TracesData`/`MetricsData`/`LogsData`) to `out`.
///
/// Requires the invariants of [`Payload::validate`]; see the module docs.
///
/// A payload still in its wire form ([`Payload::wire`]) is written as the bytes it came in.
pub fn encode(payload: &Payload, out: &mut Vec<u8>) {
    if let Some(wire) = payload.wire() {
        wire.write_to(out);
        return;
    }
    // Deferred parts: one after the other is the request of all of them.
    if let Some(parts) = payload.parts() {
        let (start, items) = (out.len(), payload.item_count());
        let mut done = 0;
        for (i, p) in parts.iter().enumerate() {
            encode(p, out);
            done += p.item_count();
            if i == 0 && done > 0 && done < items {
                // One reservation for the rest, from the first part's bytes per item (and an
                // eighth more), rather than the vector doubling (and copying) part after part:
                // that growth cost more than the concatenation it replaces (BENCHMARKS.md,
                // "Batching without concatenating").
                let rest = (items - done) * (out.len() - start).div_ceil(done);
                out.reserve(rest + rest / 8);
            }
        }
        return;
    }
    match payload.signal() {
        Signal::Traces => traces::encode(payload, out),
        Signal::Metrics => metrics::encode(payload, out),
        Signal::Logs => logs::encode(payload, out),
    }
}

/// [`encode`] into a new vector (sized to the output plus [`wire::SLACK`] spare bytes).
pub fn encode_to_vec(payload: &Payload) -> Vec<u8> {
    let mut out = Vec::new();
    encode(payload, &mut out);
    out
}

/// [`encode`] as `Bytes`: a payload in its wire form that is one range of the request it came
/// in (passed on whole) is that request's buffer, not copied.
pub fn encode_to_bytes(payload: &Payload) -> bytes::Bytes {
    match payload.wire() {
        Some(wire) => wire.to_bytes(),
        None => encoded_buffers::encode(payload),
    }
}

/// [`encode`] as slices sent one after the other: a payload in its wire form is the slices of
/// the requests it came in ([`crate::payload::WireForm::slices`]), uncopied; deferred parts
/// ([`Payload::parts`]) are their wire parts' slices with the other parts' encodings between
/// them (neighbours encoded into one slice); any other payload is its encoding, one slice.
pub fn encode_to_slices(payload: &Payload) -> Vec<bytes::Bytes> {
    if let Some(wire) = payload.wire() {
        return wire.slices();
    }
    let Some(parts) = payload.parts() else {
        return vec![encoded_buffers::encode(payload)];
    };
    let mut slices = Vec::new();
    let mut encoded = encoded_buffers::take();
    for part in parts {
        match part.wire() {
            Some(wire) => {
                if !encoded.is_empty() {
                    let full = std::mem::replace(&mut encoded, encoded_buffers::take());
                    slices.push(encoded_buffers::lend(full));
                }
                slices.extend(wire.slices());
            }
            None => encode(part, &mut encoded),
        }
    }
    // Lent even when empty (its parts were all wire forms): dropped at once, it goes back to
    // the pool instead of being freed.
    let encoded = encoded_buffers::lend(encoded);
    if !encoded.is_empty() {
        slices.push(encoded);
    }
    slices
}

/// The buffers requests are encoded into for exporters ([`encode_to_slices`],
/// [`encode_to_bytes`]), kept for the next request when one is let go (sent, or dropped)
/// instead of being freed.
///
/// Why: an exported request is megabytes (a batch of 8,192 spans is ~4 MB of OTLP), mimalloc
/// serves each from pages it has given back to the OS in the meantime, and the kernel zeroes
/// them on first touch, every request: page faults under the encoder were ~2 % of the
/// gateway's samples (BENCHMARKS.md, "Encoded requests written into pooled buffers"). The
/// same pool as the load balancer's part buffers ([`crate::payload::part_buffers`]), with its
/// own bounds; idle buffers only (a request being sent holds its buffer as any request holds
/// its bytes), given up when the memory limiter asks the allocator to return free memory.
pub(crate) mod encoded_buffers {
    use bytes::Bytes;

    use crate::payload::part_buffers::Pool;

    /// Idle buffers kept at most: a few requests' worth, for the queue's consumers.
    pub(crate) const IDLE_BUFFERS: usize = 4;
    /// Idle bytes kept at most, all buffers together: four requests of the default 4 MiB
    /// `max_request_size`.
    pub(crate) const IDLE_BYTES: usize = 16 * 1024 * 1024;

    static ENCODED: Pool = Pool::new(IDLE_BUFFERS, IDLE_BYTES);

    /// An empty buffer: the largest idle one, else a new one. The encoder sizes its request
    /// before it writes and takes a new allocation rather than growing one too small
    /// ([`super::Envelope`]'s `write`), so a short idle buffer costs nothing but its return.
    pub(crate) fn take() -> Vec<u8> {
        ENCODED.take(0)
    }

    /// `buffer` as `Bytes` that give it back to the pool when the last of them is dropped.
    pub(crate) fn lend(buffer: Vec<u8>) -> Bytes {
        ENCODED.lend(buffer)
    }

    /// `payload` encoded into a pooled buffer.
    pub(crate) fn encode(payload: &crate::payload::Payload) -> Bytes {
        encode_with(&ENCODED, payload)
    }

    /// `payload` encoded into a buffer of `pool`.
    pub(crate) fn encode_with(pool: &'static Pool, payload: &crate::payload::Payload) -> Bytes {
        let mut out = pool.take(0);
        super::encode(payload, &mut out);
        pool.lend(out)
    }

    /// Frees the idle buffers (the memory limiter does, before it asks the allocator to give
    /// free memory back: idle buffers are not in the memory account).
    pub(crate) fn release_idle() {
        ENCODED.release_idle();
    }
}

// ---------------------------------------------------------------------------------------------
// Parent/child plumbing
// ---------------------------------------------------------------------------------------------

/// `starts[p]..starts[p + 1]` is the range of rows whose parent is `p` (length `n_parents + 1`).
/// Counting then prefix-summing keeps it in bounds whatever the ids are; it is only *right* for
/// sorted ids, which the payload invariants guarantee.
fn child_starts(parent: &[u32], n_parents: usize) -> Vec<u32> {
    let mut starts = vec![0u32; n_parents + 1];
    for_each_run(parent, std::iter::repeat(1u32), |p, count| {
        if let Some(c) = starts.get_mut(p as usize + 1) {
            *c += count;
        }
    });
    for i in 0..n_parents {
        starts[i + 1] += starts[i];
    }
    starts
}

/// Calls `f(id, sum of values)` once per run of equal ids. Children come sorted by parent, so
/// summing a run in a register and storing once replaces a read-modify-write of the same slot
/// per row, each waiting on the previous one's store.
#[inline(always)]
fn for_each_run<T: Copy + Default + std::ops::AddAssign>(
    ids: &[u32],
    values: impl Iterator<Item = T>,
    mut f: impl FnMut(u32, T),
) {
    let mut current = None;
    let mut sum = T::default();
    for (&id, v) in ids.iter().zip(values) {
        if current != Some(id) {
            if let Some(c) = current {
                f(c, sum);
            }
            current = Some(id);
            sum = T::default();
        }
        sum += v;
    }
    if let Some(c) = current {
        f(c, sum);
    }
}

#[inline(always)]
fn range(starts: &[u32], p: usize) -> Range<usize> {
    match (starts.get(p), starts.get(p + 1)) {
        (Some(&s), Some(&e)) => s as usize..e as usize,
        _ => 0..0,
    }
}

/// Adds `sizes[row]` to `totals[parent[row]]`: the one pass that turns child sizes into parent
/// sizes.
fn add_to_parents(totals: &mut [usize], parent: &[u32], sizes: impl Iterator<Item = usize>) {
    for_each_run(parent, sizes, |p, s| {
        if let Some(t) = totals.get_mut(p as usize) {
            *t += s;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// AnyValue and attribute tables
// ---------------------------------------------------------------------------------------------

/// The typed value columns of an AnyValue (`type`, `str`, ...; prefixed `body_` on logs).
struct AnyCols<'a> {
    ty: &'a [u8],
    s: Strs<'a>,
    i: &'a [i64],
    d: &'a [f64],
    b: &'a BooleanArray,
    by: Strs<'a>,
}

const T_EMPTY: u8 = AnyValueType::Empty as u8;
const T_STR: u8 = AnyValueType::Str as u8;
const T_INT: u8 = AnyValueType::Int as u8;
const T_DOUBLE: u8 = AnyValueType::Double as u8;
const T_BOOL: u8 = AnyValueType::Bool as u8;
const T_ARRAY: u8 = AnyValueType::Array as u8;
const T_MAP: u8 = AnyValueType::Map as u8;
const T_BYTES: u8 = AnyValueType::Bytes as u8;

impl<'a> AnyCols<'a> {
    fn new(batch: &'a arrow::array::RecordBatch, prefix: &str) -> Self {
        use arrow::datatypes::{Float64Type, Int64Type, UInt8Type};
        let name = |c: &str| format!("{prefix}{c}");
        AnyCols {
            ty: prim::<UInt8Type>(batch, &name(col::TYPE)),
            s: Strs::of(batch, &name(col::STR)),
            i: prim::<Int64Type>(batch, &name(col::INT)),
            d: prim::<Float64Type>(batch, &name(col::DOUBLE)),
            b: bools(batch, &name(col::BOOL)),
            by: Strs::of(batch, &name(col::BYTES)),
        }
    }

    /// The AnyValue message body length, or `None` when no message is written.
    #[inline(always)]
    fn body_len(&self, r: usize) -> Option<usize> {
        Some(match self.ty[r] {
            T_STR => len_field_size(self.s.len_of(r)),
            T_INT => 1 + varint_len(self.i[r] as u64),
            T_DOUBLE => 9,
            T_BOOL => 2,
            // The stored bytes are the whole AnyValue encoding.
            T_ARRAY | T_MAP => self.by.len_of(r),
            T_BYTES => len_field_size(self.by.len_of(r)),
            // An AnyValue message with no value set.
            T_EMPTY => 0,
            // `Absent` (no AnyValue message at all) or an unknown type.
            _ => return None,
        })
    }

    /// Writes the AnyValue message body (oneof fields are written even when zero/empty).
    #[inline(always)]
    fn write_body(&self, out: &mut Out<'_>, r: usize) {
        match self.ty[r] {
            T_STR => put_len_field(out, 0x0a, self.s.get(r)),
            T_INT => {
                out.push(0x18);
                put_varint(out, self.i[r] as u64);
            }
            T_DOUBLE => put_fixed64_always(out, 0x21, self.d[r].to_bits()),
            T_BOOL => out.put(&[0x10, self.b.value(r) as u8]),
            T_ARRAY | T_MAP => out.put(self.by.get(r)),
            T_BYTES => put_len_field(out, 0x3a, self.by.get(r)),
            _ => {}
        }
    }
}

/// The encoded `key` field (tag, length, bytes) of every distinct key, built once per table:
/// keys repeat on every span, so each row's key becomes one copy of precomputed bytes.
struct KeyFields<'a> {
    /// Per row: index into `offsets` (the dictionary key); `None` for a plain column, whose
    /// rows index `offsets` directly.
    idx: Option<&'a [u32]>,
    bytes: Vec<u8>,
    offsets: Vec<u32>,
}

impl<'a> KeyFields<'a> {
    fn new(key: Strs<'a>, rows: usize) -> Self {
        let (idx, n) = match key.dictionary() {
            Some((keys, n)) => (Some(keys), n),
            None => (None, rows),
        };
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        for j in 0..n {
            let k = key.value(j);
            if !k.is_empty() {
                bytes.push(0x0a);
                let mut len = k.len();
                while len >= 0x80 {
                    bytes.push((len as u8) | 0x80);
                    len >>= 7;
                }
                bytes.push(len as u8);
                bytes.extend_from_slice(k);
            }
            offsets.push(bytes.len() as u32);
        }
        // So that every key field can be read as one fixed-size block (`Out::put_within`).
        bytes.resize(bytes.len() + KEY_BLOCK, 0);
        KeyFields {
            idx,
            bytes,
            offsets,
        }
    }

    #[inline(always)]
    fn index(&self, r: usize) -> usize {
        match self.idx {
            Some(idx) => idx[r] as usize,
            None => r,
        }
    }

    /// `(start, len)` of row `r`'s key field in `bytes`.
    #[inline(always)]
    fn bounds(&self, r: usize) -> (usize, usize) {
        let j = self.index(r);
        let start = self.offsets[j] as usize;
        (start, (self.offsets[j + 1] as usize).saturating_sub(start))
    }

    #[inline(always)]
    fn size(&self, r: usize) -> usize {
        let j = self.index(r);
        (self.offsets[j + 1] - self.offsets[j]) as usize
    }
}

/// Key fields up to this long (nearly all: `http.response.status_code` is 27 bytes with its
/// header) are written as one fixed-size block.
const KEY_BLOCK: usize = 32;

/// String values up to this long are written as one fixed-size block.
const STR_BLOCK: usize = 64;

/// `val_len` marker: no AnyValue message.
const NO_VALUE: u32 = u32::MAX;

/// An attribute table, sized: `per_parent[p]` is the bytes all of `p`'s KeyValue fields take.
struct Attrs<'a> {
    key: KeyFields<'a>,
    val: AnyCols<'a>,
    /// KeyValue body length per row (fits u32: a value is at most one i32-offset Arrow slot).
    kv_len: Vec<u32>,
    /// AnyValue body length per row, or [`NO_VALUE`].
    val_len: Vec<u32>,
    starts: Vec<u32>,
    per_parent: Vec<usize>,
}

impl<'a> Attrs<'a> {
    fn new(p: &'a Payload, t: Table, n_parents: usize) -> Self {
        let batch = p.table(t);
        let rows = batch.num_rows();
        let parent = p.parent_ids(t).values();
        let key = KeyFields::new(Strs::of(batch, col::KEY), rows);
        let val = AnyCols::new(batch, "");
        // Row by row: value and KeyValue lengths; then per-parent sums.
        let mut val_len = vec![0u32; rows];
        let mut kv_len = vec![0u32; rows];
        for (r, (v, kv)) in val_len.iter_mut().zip(kv_len.iter_mut()).enumerate() {
            let (body, field) = match val.body_len(r) {
                Some(b) => (b as u32, len_field_size(b)),
                None => (NO_VALUE, 0),
            };
            *v = body;
            *kv = (key.size(r) + field) as u32;
        }
        let mut per_parent = vec![0usize; n_parents];
        add_to_parents(
            &mut per_parent,
            parent,
            kv_len.iter().map(|&l| len_field_size(l as usize)),
        );
        Attrs {
            key,
            val,
            kv_len,
            val_len,
            starts: child_starts(parent, n_parents),
            per_parent,
        }
    }

    #[inline(always)]
    fn size(&self, parent: usize) -> usize {
        self.per_parent.get(parent).copied().unwrap_or(0)
    }

    /// Writes `parent`'s attributes as repeated KeyValue field `tag`.
    #[inline]
    fn write(&self, out: &mut Out<'_>, tag: u8, parent: usize) {
        let mut o = out.local();
        let strs = self.val.s.data();
        for r in range(&self.starts, parent) {
            let kv = self.kv_len[r];
            let (key_start, key_len) = self.key.bounds(r);
            // The common row: a string value in a KeyValue under 128 bytes. Then every length
            // inside it (value, string) is under 128 too, so all four varints are one byte and
            // the headers go out as two fixed stores instead of six single-byte ones.
            if kv < 0x80 && self.val.ty[r] == T_STR {
                let (s_start, s_len) = self.val.s.bounds(r);
                o.put_array([tag, kv as u8]);
                o.put_within::<KEY_BLOCK>(&self.key.bytes, key_start, key_len);
                o.put_array([0x12, s_len as u8 + 2, 0x0a, s_len as u8]);
                o.put_within::<STR_BLOCK>(strs, s_start, s_len);
                continue;
            }
            put_header(&mut o, tag, kv as usize);
            o.put_within::<KEY_BLOCK>(&self.key.bytes, key_start, key_len);
            let len = self.val_len[r];
            if len != NO_VALUE {
                put_header(&mut o, 0x12, len as usize);
                self.val.write_body(&mut o, r);
            }
        }
        let pos = o.written();
        out.resume(pos);
    }
}

// ---------------------------------------------------------------------------------------------
// Resources and scopes, shared by the three signals
// ---------------------------------------------------------------------------------------------

/// The `Resource{Spans,Metrics,Logs}` / `Scope{Spans,Metrics,Logs}` envelope, sized.
struct Envelope<'a> {
    res_present: &'a BooleanArray,
    res_dropped: &'a [u32],
    res_schema_url: Strs<'a>,
    entity_refs: Strs<'a>,
    res_attrs: Attrs<'a>,
    res_msg: Vec<usize>,
    rs_body: Vec<usize>,
    scope_present: &'a BooleanArray,
    scope_name: Strs<'a>,
    scope_version: Strs<'a>,
    scope_dropped: &'a [u32],
    scope_schema_url: Strs<'a>,
    scope_attrs: Attrs<'a>,
    scope_msg: Vec<usize>,
    ss_body: Vec<usize>,
    scope_starts: Vec<u32>,
    total: usize,
}

impl<'a> Envelope<'a> {
    /// `items[s]`: the bytes scope `s`'s items (spans, metrics, log records) take as fields.
    fn new(p: &'a Payload, items: &[usize]) -> Self {
        let res = p.table(Table::Resources);
        let scopes = p.table(Table::Scopes);
        let (nr, ns) = (res.num_rows(), scopes.num_rows());

        let scope_present = bools(scopes, col::PRESENT);
        let scope_name = Strs::of(scopes, col::NAME);
        let scope_version = Strs::of(scopes, col::VERSION);
        let scope_dropped = prim::<UInt32Type>(scopes, col::DROPPED_ATTRIBUTES_COUNT);
        let scope_schema_url = Strs::of(scopes, col::SCHEMA_URL);
        let scope_attrs = Attrs::new(p, Table::ScopeAttrs, ns);
        let mut scope_msg = vec![0usize; ns];
        let mut ss_body = vec![0usize; ns];
        for s in 0..ns {
            let mut len = 0;
            if scope_present.value(s) {
                scope_msg[s] = str_size(scope_name.len_of(s))
                    + str_size(scope_version.len_of(s))
                    + scope_attrs.size(s)
                    + varint_size(scope_dropped[s] as u64);
                len += len_field_size(scope_msg[s]);
            }
            len += items.get(s).copied().unwrap_or(0) + str_size(scope_schema_url.len_of(s));
            ss_body[s] = len;
        }

        let res_present = bools(res, col::PRESENT);
        let res_dropped = prim::<UInt32Type>(res, col::DROPPED_ATTRIBUTES_COUNT);
        let res_schema_url = Strs::of(res, col::SCHEMA_URL);
        let entity_refs = Strs::of(res, col::ENTITY_REFS);
        let res_attrs = Attrs::new(p, Table::ResourceAttrs, nr);
        let scope_parent = p.parent_ids(Table::Scopes).values();
        let mut rs_body = vec![0usize; nr];
        add_to_parents(
            &mut rs_body,
            scope_parent,
            ss_body.iter().map(|&l| len_field_size(l)),
        );
        let mut res_msg = vec![0usize; nr];
        let mut total = 0;
        for r in 0..nr {
            if res_present.value(r) {
                res_msg[r] =
                    res_attrs.size(r) + varint_size(res_dropped[r] as u64) + entity_refs.len_of(r);
                rs_body[r] += len_field_size(res_msg[r]);
            }
            rs_body[r] += str_size(res_schema_url.len_of(r));
            total += len_field_size(rs_body[r]);
        }

        Envelope {
            res_present,
            res_dropped,
            res_schema_url,
            entity_refs,
            res_attrs,
            res_msg,
            rs_body,
            scope_present,
            scope_name,
            scope_version,
            scope_dropped,
            scope_schema_url,
            scope_attrs,
            scope_msg,
            ss_body,
            scope_starts: child_starts(scope_parent, nr),
            total,
        }
    }

    /// Appends the whole request to `vec`; `write_items(out, s)` writes scope `s`'s items as
    /// field 2.
    fn write(&self, vec: &mut Vec<u8>, write_items: impl FnMut(&mut Out<'_>, usize)) {
        if vec.is_empty() && vec.capacity() < self.total + SLACK {
            // A new allocation of the size, not a reallocation: a pooled buffer that is too
            // short would have its whole old capacity copied, for nothing, by a realloc.
            *vec = Vec::with_capacity(self.total + SLACK);
        }
        vec.reserve(self.total + SLACK);
        let start = vec.len();
        let mut out = Out::new(&mut vec.spare_capacity_mut()[..self.total + SLACK]);
        self.write_to(&mut out, write_items);
        let written = out.written();
        debug_assert_eq!(written, self.total, "size pass and write pass disagree");
        // SAFETY: `Out` writes sequentially from the start of the spare capacity: every
        // advance of its position by `n` follows a store of at least those `n` bytes (a
        // fixed-size block stores more, never fewer), so the `written` bytes after `start` are
        // initialized; and `written <= self.total + SLACK <=` the reserved capacity, because
        // `Out`'s buffer is that long and its indexing is bounds-checked. (That the size pass
        // is exact, `written == self.total`, is a correctness property, asserted in debug builds
        // and by the byte-for-byte tests against prost; safety does not rest on it.)
        unsafe { vec.set_len(start + written) };
    }

    fn write_to(&self, out: &mut Out<'_>, mut write_items: impl FnMut(&mut Out<'_>, usize)) {
        for r in 0..self.rs_body.len() {
            put_header(out, 0x0a, self.rs_body[r]);
            if self.res_present.value(r) {
                put_header(out, 0x0a, self.res_msg[r]);
                self.res_attrs.write(out, 0x0a, r);
                put_varint_field(out, 0x10, self.res_dropped[r] as u64);
                // Stored as the encoded EntityRef fields (tag 3 included).
                out.put(self.entity_refs.get(r));
            }
            for s in range(&self.scope_starts, r) {
                put_header(out, 0x12, self.ss_body[s]);
                if self.scope_present.value(s) {
                    put_header(out, 0x0a, self.scope_msg[s]);
                    put_str(out, 0x0a, self.scope_name.get(s));
                    put_str(out, 0x12, self.scope_version.get(s));
                    self.scope_attrs.write(out, 0x1a, s);
                    put_varint_field(out, 0x20, self.scope_dropped[s] as u64);
                }
                write_items(out, s);
                put_str(out, 0x1a, self.scope_schema_url.get(s));
            }
            put_str(out, 0x1a, self.res_schema_url.get(r));
        }
    }
}

#[cfg(test)]
mod tests;
