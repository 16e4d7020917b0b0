//! OTLP protobuf / JSON -> Arrow ([`Payload`]).
//!
//! # Protobuf (the hot path)
//!
//! A hand-written wire decoder walks `Export{Trace,Metrics,Logs}ServiceRequest` (the same wire
//! layout as `TracesData`/`MetricsData`/`LogsData`) and appends each field straight into plain
//! `Vec` column buffers; Arrow arrays are built once at the end. There is no prost struct per
//! span/point/record and no heap allocation per span: strings are copied once into the column
//! value buffers, and dictionary columns (names, attribute keys, ...) look their value up in a
//! hash map that borrows the input bytes.
//!
//! Behaviour, as prost's where it matters (so a prost round trip agrees):
//! - Unknown fields of wire types varint, fixed64, length-delimited and fixed32 are skipped
//!   (forward compatibility); groups and wire types 6/7 are rejected (prost and the
//!   Collector's Go decoder skip an unknown field of the deprecated group type; no OTLP
//!   sender writes one). A known field with the
//!   wrong wire type is rejected. Packed and unpacked encodings of repeated scalars are both
//!   accepted.
//! - Scalar fields repeated within a message: the last occurrence wins; repeated embedded
//!   singular messages (`resource`, `scope`, `status`) merge field by field.
//! - Strings that are not valid UTF-8 are taken, with each invalid sequence replaced by U+FFFD,
//!   and counted ([`DecodeStats::replaced_invalid_utf8`]): the Collector's decoder does not check
//!   UTF-8 at all (it passes the bytes on), and one bad string must not fail a whole request.
//!   Plain string columns are validated in bulk when the Arrow array is built and repaired
//!   only if that fails; dictionary values when first inserted (only bad requests pay).
//! - Ids: `trace_id` must be empty or 16 bytes, `span_id`/`parent_span_id` empty or 8 (as the
//!   Collector requires); empty is null.
//! - `AnyValue`: see [`crate::schema`]. `array_value`/`kvlist_value` are kept as the bytes of
//!   the whole `AnyValue` message (type Array/Map), checked by a walk of their own (see
//!   `nested`): nesting up to [`MAX_ANY_VALUE_DEPTH`] levels, deeper is refused naming the
//!   path. The profiles-only
//!   fields `KeyValue.key_strindex` and `AnyValue.string_value_strindex` are ignored: the
//!   former is read and dropped, the latter makes the value Empty (the spec says to treat it
//!   as absent outside profiles).
//! - Metrics: if a `Metric` carries several different `data` oneof fields, the last one wins as
//!   in prost; the discarded ones are validated with prost but not stored.
//!
//! Acceptance is differential-tested against prost on mutated and truncated requests: we accept
//! exactly what prost accepts, minus bad id lengths and unknown group fields. Known differences in *content*, all for
//! encodings no protobuf library produces: a repeated `value`
//! (KeyValue) or `body` (LogRecord) message merges scalar values but keeps only the last
//! occurrence's bytes for array/kvlist values. Accepted here and not by prost: strings that are
//! not valid UTF-8 (repaired, above), and AnyValues nested past prost's recursion limit (100
//! nested messages, about 33 kvlist levels) up to [`MAX_ANY_VALUE_DEPTH`] (sluice builds prost
//! with `no-recursion-limit`, so the components that read nested values with prost take them).
//!
//! Resource use: columns grow with the input only; every row comes from at least two input
//! bytes, so row counts fit `u32` and value buffers fit `i32` offsets for any request up to
//! [`MAX_REQUEST_BYTES`]. Worst-case expansion (a request of empty spans) is about 50 bytes of
//! Arrow per input byte, below prost's (a `Span` struct is ~250 bytes).
//! Traces reserve their span and span attribute columns up front from the request length (about
//! one byte per input byte in all, given back in `finish` where unused), which saves the copies
//! of growing them by doubling.
//!
//! # The skim
//!
//! [`skim`] walks a request with the same [`wire::Reader`] and builds nothing: where a pipeline
//! only forwards data, a request it finds clean (one this decoder accepts with nothing to
//! repair) is passed on as its bytes instead of being decoded (see `skim.rs`).
//!
//! # JSON
//!
//! OTLP/JSON is parsed into opentelemetry-proto's prost types with serde, encoded to protobuf
//! and decoded by the same protobuf decoder, so one code path builds Arrow.

pub(super) mod builders;
mod common;
mod json;
mod logs;
mod metrics;
mod nested;
mod skim;
mod split;
mod traces;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};

use crate::payload::Payload;
use crate::schema::{Signal, Table};
use common::{Common, Items};
use wire::{Kind, R, err};

pub use json::{decode_json, decode_json_with_stats};
pub use nested::MAX_ANY_VALUE_DEPTH;
pub use skim::{Skim, SkimmedResource, skim};
pub use split::{ItemSplitter, SplitError, Walked};

/// What a decode repaired rather than refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Strings that were not valid UTF-8, stored with U+FFFD for each invalid sequence.
    pub replaced_invalid_utf8: usize,
}

thread_local! {
    /// Strings repaired by the decode running on this thread. A decode is synchronous, so
    /// [`run`] resets it before and reads it after; the column builders add to it on their
    /// (cold) repair paths without carrying a counter through every call.
    static REPLACED_UTF8: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(crate) fn count_replaced_utf8(n: usize) {
    if n > 0 {
        REPLACED_UTF8.with(|c| c.set(c.get() + n));
    }
}

/// Checks an encoded array or kvlist `AnyValue` as the decoder does (wire format, nesting up
/// to [`MAX_ANY_VALUE_DEPTH`]); for receivers of already-decoded data (Arrow Flight).
pub fn check_nested_value(b: &[u8]) -> Result<(), DecodeError> {
    nested::check(wire::Reader::new(b, 0))?;
    Ok(())
}

/// The largest request the decoder accepts: Arrow `Utf8`/`Binary` columns use `i32` offsets and
/// a column can hold up to the whole request. (Receivers cap requests far lower.)
pub const MAX_REQUEST_BYTES: usize = i32::MAX as usize;

/// Why a request could not be decoded. `path` names the field as in the OTLP protobuf
/// definitions, e.g. `resource_spans[0].scope_spans[1].spans[7].trace_id`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a valid protobuf encoding (truncated, bad varint, length past the
    /// end, wrong wire type for a known field, group wire type, ...).
    #[error("malformed OTLP protobuf at {path}{}: {reason}", at_byte(*offset))]
    Malformed {
        path: String,
        /// Byte offset in the request where the problem was detected, when known.
        offset: Option<usize>,
        reason: String,
    },
    /// A trace or span id has a length other than 0 or the id's size.
    #[error("invalid id at {path}: {len} bytes, must be empty or {expected} bytes")]
    InvalidIdLength {
        path: String,
        len: usize,
        expected: usize,
    },
    /// A nested message decoded with prost (array/kvlist value, entity ref, ...) is invalid.
    #[error("invalid nested value at {path}: {detail}")]
    InvalidNestedValue { path: String, detail: String },
    #[error("request of {len} bytes exceeds the decoder limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The body is not valid OTLP/JSON for this signal.
    #[error("invalid OTLP/JSON {signal} request: {detail}")]
    Json {
        signal: &'static str,
        detail: String,
    },
    /// A decoder bug (an Arrow array could not be built); never caused by input alone.
    #[error("internal decoder error: {0}")]
    Internal(String),
}

fn at_byte(offset: Option<usize>) -> String {
    offset.map(|o| format!(" (byte {o})")).unwrap_or_default()
}

impl DecodeError {
    /// The field path the error refers to, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            DecodeError::Malformed { path, .. }
            | DecodeError::InvalidIdLength { path, .. }
            | DecodeError::InvalidNestedValue { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl From<wire::Error> for DecodeError {
    fn from(e: wire::Error) -> Self {
        let path = e.path_string();
        match e.kind {
            Kind::BadIdLength { len, expected } => DecodeError::InvalidIdLength {
                path,
                len,
                expected,
            },
            Kind::Nested(detail) => DecodeError::InvalidNestedValue { path, detail },
            Kind::TooLarge { len, max } => DecodeError::TooLarge { len, max },
            Kind::Internal(d) => DecodeError::Internal(d),
            ref k @ (Kind::Truncated { .. }
            | Kind::VarintTooLong
            | Kind::LengthPastEnd { .. }
            | Kind::FieldNumberZero
            | Kind::KeyTooLarge(_)
            | Kind::BadWireType(_)
            | Kind::WrongWireType { .. }) => DecodeError::Malformed {
                path,
                offset: e.offset,
                reason: k.to_string(),
            },
        }
    }
}

/// Bytes of memory decoding a request of `wire_len` bytes is expected to need at its peak (the
/// column buffers being filled, with their slack, and for JSON the parsed document and the
/// protobuf it is turned into), for admission before decoding: receivers reserve this much
/// from the memory account and resize the reservation to the payload's exact
/// [`Payload::memory_size`] once decoded.
///
/// The factors are measured, not guessed: `tests/decode_peak.rs` (its own counting allocator)
/// checks that they cover the peak of realistic requests of every signal and of the shapes that
/// expand most in practice (hundreds of thousands of small spans; a span with a million
/// repeated attributes). They do not cover the pathological worst case (a request made of empty
/// messages decodes to ~50 bytes per input byte): such a request is held to the limit by the
/// resize after decoding, which refuses it if it does not fit.
pub fn decoded_size_estimate(signal: Signal, wire_len: usize, json: bool) -> usize {
    let factor = match (json, signal) {
        (false, Signal::Traces) => DECODE_PEAK_FACTOR_TRACES,
        (false, _) => DECODE_PEAK_FACTOR_OTHER,
        (true, _) => DECODE_PEAK_FACTOR_JSON,
    };
    wire_len
        .saturating_mul(factor)
        .saturating_add(DECODE_PEAK_FIXED)
}

/// Peak decode memory that does not grow with the request (tables, schemas, small buffers).
pub const DECODE_PEAK_FIXED: usize = 64 * 1024;

/// Peak decode memory per protobuf byte for traces (see [`decoded_size_estimate`]).
pub const DECODE_PEAK_FACTOR_TRACES: usize = 4;
/// ... for metrics and logs.
pub const DECODE_PEAK_FACTOR_OTHER: usize = 4;
/// ... per OTLP/JSON byte (serde's document, the prost request, its protobuf, then Arrow).
pub const DECODE_PEAK_FACTOR_JSON: usize = 16;

/// Decodes a protobuf `Export{Trace,Metrics,Logs}ServiceRequest` of `signal`.
pub fn decode(signal: Signal, buf: &[u8]) -> Result<Payload, DecodeError> {
    decode_with_stats(signal, buf).map(|(p, _)| p)
}

/// [`decode`], also saying what was repaired (for the receivers' counters).
pub fn decode_with_stats(
    signal: Signal,
    buf: &[u8],
) -> Result<(Payload, DecodeStats), DecodeError> {
    REPLACED_UTF8.with(|c| c.set(0));
    let payload = match signal {
        Signal::Traces => decode_traces(buf),
        Signal::Metrics => decode_metrics(buf),
        Signal::Logs => decode_logs(buf),
    }?;
    let stats = DecodeStats {
        replaced_invalid_utf8: REPLACED_UTF8.with(|c| c.replace(0)),
    };
    Ok((payload, stats))
}

/// Decodes a protobuf `ExportTraceServiceRequest` (or `TracesData`).
pub fn decode_traces(buf: &[u8]) -> Result<Payload, DecodeError> {
    run(buf, traces)
}

/// Decodes a protobuf `ExportMetricsServiceRequest` (or `MetricsData`).
pub fn decode_metrics(buf: &[u8]) -> Result<Payload, DecodeError> {
    run(buf, metrics)
}

/// Decodes a protobuf `ExportLogsServiceRequest` (or `LogsData`).
pub fn decode_logs(buf: &[u8]) -> Result<Payload, DecodeError> {
    run(buf, logs)
}

/// Runs a decoder in fast mode. (Strict mode, which takes the general field loops everywhere,
/// is what the tests compare the fast paths against.)
fn run(buf: &[u8], f: fn(&[u8], bool) -> R<Payload>) -> Result<Payload, DecodeError> {
    if buf.len() > MAX_REQUEST_BYTES {
        return Err(err(
            Kind::TooLarge {
                len: buf.len(),
                max: MAX_REQUEST_BYTES,
            },
            None,
        )
        .into());
    }
    Ok(f(buf, false)?)
}

fn walk<'a, D: Items<'a>>(buf: &'a [u8], d: &mut D, strict: bool) -> R<common::CommonColumns> {
    let mut c = Common::new(strict);
    c.request(d, buf)?;
    c.finish()
}

fn traces(buf: &[u8], strict: bool) -> R<Payload> {
    let mut d = traces::Traces::new(strict, buf.len());
    let c = walk(buf, &mut d, strict)?;
    let [spans, span_attrs, events, event_attrs, links, link_attrs] = d.finish()?;
    assemble(
        Signal::Traces,
        c,
        vec![
            (Table::Spans, spans),
            (Table::SpanAttrs, span_attrs),
            (Table::SpanEvents, events),
            (Table::SpanEventAttrs, event_attrs),
            (Table::SpanLinks, links),
            (Table::SpanLinkAttrs, link_attrs),
        ],
    )
}

fn metrics(buf: &[u8], strict: bool) -> R<Payload> {
    let mut d = metrics::Metrics::new(strict);
    let c = walk(buf, &mut d, strict)?;
    assemble(Signal::Metrics, c, d.finish()?)
}

fn logs(buf: &[u8], strict: bool) -> R<Payload> {
    let mut d = logs::Logs::new(strict);
    let c = walk(buf, &mut d, strict)?;
    let [records, attrs] = d.finish()?;
    assemble(
        Signal::Logs,
        c,
        vec![(Table::Logs, records), (Table::LogAttrs, attrs)],
    )
}

fn assemble(
    signal: Signal,
    c: common::CommonColumns,
    rest: Vec<(Table, Vec<ArrayRef>)>,
) -> R<Payload> {
    let internal = |e: &dyn std::fmt::Display| err(Kind::Internal(e.to_string()), None);
    let mut tables = Vec::with_capacity(rest.len() + 4);
    for (t, cols) in [
        (Table::Resources, c.resources),
        (Table::ResourceAttrs, c.resource_attrs),
        (Table::Scopes, c.scopes),
        (Table::ScopeAttrs, c.scope_attrs),
    ]
    .into_iter()
    .chain(rest)
    {
        let batch = RecordBatch::try_new(Arc::clone(&t.schema()), cols)
            .map_err(|e| internal(&format_args!("{t:?}: {e}")))?;
        tables.push((t, batch));
    }
    Payload::from_tables(signal, tables).map_err(|e| internal(&e))
}
