//! The Arrow hop between a sluice agent and a sluice gateway: [`Payload`]s as Arrow IPC
//! messages in an Arrow Flight `DoPut` stream, both directions in one module (as the OTLP
//! codec), so the round trip is one property test and the decode path is a plain function
//! over messages (fuzzable, proptested with mutated bytes). The transports are the `flight`
//! exporter (`sluice-egress`) and the `flight` receiver (`sluice-ingest`); the wire format
//! is written down, versioned, in `ingest/src/flight/README.md`.
//!
//! In short: a stream starts with a hello naming the protocol and its version
//! ([`hello`], [`check_hello`]). Each payload is then a run of IPC messages, each tagged in
//! its `app_metadata` with the table it belongs to ([`wire_table_id`]): a table's schema the
//! first time the table appears on the stream, its dictionary deltas, its record batches;
//! and a closing message ([`PayloadEnd`]) with the payload's sequence number, signal and
//! origin. The receiver answers every payload with an [`Ack`] carrying its sequence number
//! and a gRPC status code.
//!
//! Dictionary-encoded columns use stream dictionaries ([`dict`]): attribute keys, names and
//! resource attribute values cross the wire once per stream, not once per batch.

mod decode;
mod dict;
mod encode;
mod layout;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::schema::{Signal, Table};

#[cfg(any(test, feature = "testing"))]
pub use decode::panics_caught;
pub use decode::{Decoded, Decoder, Limits};
pub use dict::{MAX_BYTES as MAX_DICTIONARY_BYTES, MAX_ENTRIES as MAX_DICTIONARY_ENTRIES};
pub use encode::{Compression, Encoder};
pub use validate::validate_content;

/// The protocol name in the hello.
pub const PROTOCOL: &str = "sluice-arrow";
/// The wire format version. Anything that changes what a byte means (a table's columns, the
/// metadata layouts, the table ids, the dictionary rules) bumps it; a receiver refuses any
/// other version instead of guessing.
pub const VERSION: u32 = 2;

/// One Flight message as the codec sees it: `FlightData` without the descriptor (which only
/// the hello uses). `header` is an IPC `Message` flatbuffer (empty for a [`PayloadEnd`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WireMessage {
    pub header: Bytes,
    pub body: Bytes,
    pub app_metadata: Bytes,
}

impl WireMessage {
    /// Bytes this message puts on the wire (before gRPC framing).
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len() + self.app_metadata.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a stream could not be encoded or decoded. The receiver answers every decode error with
/// gRPC `INVALID_ARGUMENT` (or `FAILED_PRECONDITION` for [`WireError::Version`]) and ends the
/// stream: after bad data its dictionary state cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The peer speaks another version of the protocol (or another protocol).
    #[error("{0}")]
    Version(String),
    /// The peer sent something that is not a valid stream of this version.
    #[error("{0}")]
    Malformed(String),
    /// A payload, message or dictionary is over the receiver's limits.
    #[error("{0}")]
    TooLarge(String),
    /// The sender could not encode a payload (a bug: payloads have fixed schemas).
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The receiver refused a payload for now (no room in memory): not a fault of the data,
    /// the sender retries it later ([`Decoder::refuse_payload`]).
    #[error("{0}")]
    Refused(String),
}

impl WireError {
    pub(crate) fn malformed(m: impl Into<String>) -> Self {
        WireError::Malformed(m.into())
    }
    pub(crate) fn encode(m: impl Into<String>) -> Self {
        WireError::Encode(m.into())
    }
}

impl From<arrow::error::ArrowError> for WireError {
    fn from(e: arrow::error::ArrowError) -> Self {
        WireError::Encode(e.to_string())
    }
}

/// About how many bytes of Arrow data `payload`'s record batches decode to at the receiver
/// (what its `max_payload_size_mib` limits): every column's bytes, slices counted as slices;
/// a dictionary column counts its keys (its values travel once per stream, within their own
/// bound). Plain strings that travel as dictionaries count in full: an overestimate, on the
/// safe side of the receiver's limit.
pub fn payload_size(payload: &crate::Payload) -> usize {
    use arrow::array::{Array, AsArray};
    payload
        .tables()
        .flat_map(|(_, batch)| batch.columns().iter())
        .map(|c| match c.as_any_dictionary_opt() {
            Some(d) => d.keys().to_data().get_slice_memory_size().unwrap_or(0),
            None => c.to_data().get_slice_memory_size().unwrap_or(0),
        })
        .sum()
}

/// The hello: the `cmd` of the `FlightDescriptor` on a stream's first message,
/// `sluice-arrow/<version>`.
pub fn hello() -> Bytes {
    Bytes::from(format!("{PROTOCOL}/{VERSION}"))
}

/// Checks a stream's hello: the right protocol and exactly this version.
pub fn check_hello(cmd: &[u8]) -> Result<(), WireError> {
    let text = String::from_utf8_lossy(&cmd[..cmd.len().min(64)]);
    let Some(version) = text
        .strip_prefix(PROTOCOL)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Err(WireError::malformed(format!(
            "not a sluice Arrow stream: the first message's descriptor must be `{PROTOCOL}/{VERSION}`, got {text:?}"
        )));
    };
    if version != VERSION.to_string() {
        return Err(WireError::Version(format!(
            "the sender speaks {PROTOCOL}/{version}, this receiver {PROTOCOL}/{VERSION}: run the same sluice version on both ends (or OTLP between them)"
        )));
    }
    Ok(())
}

/// The id a table has on the wire (the first byte of a table message's `app_metadata`).
/// Fixed by the protocol version, independent of [`Table`]'s declaration order.
pub fn wire_table_id(t: Table) -> u8 {
    use Table::*;
    match t {
        Resources => 1,
        ResourceAttrs => 2,
        Scopes => 3,
        ScopeAttrs => 4,
        Spans => 10,
        SpanAttrs => 11,
        SpanEvents => 12,
        SpanEventAttrs => 13,
        SpanLinks => 14,
        SpanLinkAttrs => 15,
        Metrics => 20,
        MetricMetadata => 21,
        NumberPoints => 22,
        NumberPointAttrs => 23,
        NumberExemplars => 24,
        NumberExemplarAttrs => 25,
        HistogramPoints => 26,
        HistogramPointAttrs => 27,
        HistogramExemplars => 28,
        HistogramExemplarAttrs => 29,
        ExpHistogramPoints => 30,
        ExpHistogramPointAttrs => 31,
        ExpHistogramExemplars => 32,
        ExpHistogramExemplarAttrs => 33,
        SummaryPoints => 34,
        SummaryPointAttrs => 35,
        Logs => 40,
        LogAttrs => 41,
    }
}

/// The table a wire id names.
pub fn table_of_wire_id(id: u8) -> Option<Table> {
    Table::ALL.into_iter().find(|&t| wire_table_id(t) == id)
}

/// The first byte of a [`PayloadEnd`]'s `app_metadata` (no table has this id).
pub const PAYLOAD_END: u8 = 0xFF;

fn wire_signal(s: Signal) -> u8 {
    match s {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

fn signal_of_wire(b: u8) -> Option<Signal> {
    Signal::ALL.into_iter().find(|&s| wire_signal(s) == b)
}

/// The message that closes a payload: `app_metadata` =
/// `0xFF, seq: u64 LE, signal: u8 (1 traces, 2 metrics, 3 logs), origin: UTF-8 "ip:port"
/// (possibly empty)`; no header, no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadEnd {
    /// 1 for a stream's first payload, then +1 each.
    pub seq: u64,
    pub signal: Signal,
    /// Where the sender received the data from (its own [`crate::Payload::origin`]).
    pub origin: Option<SocketAddr>,
}

impl PayloadEnd {
    pub fn to_bytes(&self) -> Bytes {
        let origin = self.origin.map(|o| o.to_string()).unwrap_or_default();
        let mut b = BytesMut::with_capacity(10 + origin.len());
        b.put_u8(PAYLOAD_END);
        b.put_u64_le(self.seq);
        b.put_u8(wire_signal(self.signal));
        b.put_slice(origin.as_bytes());
        b.freeze()
    }

    pub fn parse(mut b: &[u8]) -> Result<Self, WireError> {
        if b.len() < 10 || b[0] != PAYLOAD_END {
            return Err(WireError::malformed(
                "payload end: app_metadata shorter than 10 bytes",
            ));
        }
        b.advance(1);
        let seq = b.get_u64_le();
        let signal = signal_of_wire(b.get_u8())
            .ok_or_else(|| WireError::malformed("payload end: unknown signal"))?;
        let origin = if b.is_empty() {
            None
        } else {
            let text = std::str::from_utf8(b)
                .map_err(|_| WireError::malformed("payload end: origin is not UTF-8"))?;
            Some(text.parse().map_err(|_| {
                WireError::malformed(format!("payload end: origin {text:?} is not ip:port"))
            })?)
        };
        Ok(PayloadEnd {
            seq,
            signal,
            origin,
        })
    }
}

/// The receiver's answer to one payload (`PutResult.app_metadata`): `seq: u64 LE,
/// code: u8 (a gRPC status code), message: UTF-8`. Acks come in payload order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    /// 0 = accepted; otherwise why not, as the OTLP receiver would answer the same request:
    /// 8 `RESOURCE_EXHAUSTED` (memory limiter), 14 `UNAVAILABLE` (queue full), 3
    /// `INVALID_ARGUMENT` (refused for good), 11 `OUT_OF_RANGE` (payload over the receiver's
    /// size limit: split it), 12 `UNIMPLEMENTED` (no pipeline for the signal).
    pub code: u8,
    pub message: String,
}

impl Ack {
    pub const OK: u8 = 0;
    pub const INVALID_ARGUMENT: u8 = 3;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const OUT_OF_RANGE: u8 = 11;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const UNAVAILABLE: u8 = 14;

    pub fn ok(seq: u64) -> Self {
        Ack {
            seq,
            code: Ack::OK,
            message: String::new(),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(9 + self.message.len());
        b.put_u64_le(self.seq);
        b.put_u8(self.code);
        b.put_slice(self.message.as_bytes());
        b.freeze()
    }

    pub fn parse(mut b: &[u8]) -> Result<Self, WireError> {
        if b.len() < 9 {
            return Err(WireError::malformed("ack shorter than 9 bytes"));
        }
        let seq = b.get_u64_le();
        let code = b.get_u8();
        Ok(Ack {
            seq,
            code,
            message: String::from_utf8_lossy(b).into_owned(),
        })
    }
}
