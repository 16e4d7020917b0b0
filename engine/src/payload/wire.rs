//! [`WireForm`]: a payload kept as the OTLP protobuf bytes it arrived in, for pipelines whose
//! components never read its tables (receive → `batch` → OTLP export: pure forwarding).
//!
//! Why: decoding a request into Arrow and encoding it back is most of what such a pipeline
//! costs (BENCHMARKS.md, issue 17), and it changes nothing. A receiver that has skimmed a
//! request clean ([`crate::otlp::skim`]: the decoder would accept it as it is) hands the
//! pipeline the request's bytes; `batch` concatenates them as a list of byte ranges, splits
//! them at top-level resource boundaries, and the exporter writes them out. Repeated fields of
//! protobuf concatenate, so top-level `resource_*` fields from several requests appended are
//! one valid request.
//!
//! A component that reads a table still gets it: the first read decodes the bytes, once, into
//! tables shared by every clone of the payload (as a [`super::PendingRows`] is built once), so
//! every component stays correct without knowing wire forms exist. Only pipelines whose
//! components all say they do not read tables ([`crate::component::Consumer::keeps_wire_form`])
//! are fed wire forms at all, so none of this decoding happens on a path that reads tables
//! anyway.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::otlp::decode::{ItemSplitter, Piece, Skim, SplitError};
use crate::payload::Payload;
use crate::schema::Signal;

/// The protobuf bytes of one or more clean export requests of one signal: a list of top-level
/// `resource_*` fields, each made of byte ranges (segments) of the buffers it holds — one
/// range of a request body for a resource as it was received, or, for a resource re-framed by
/// [`WireForm::split_by_item`], bytes of the part's own buffer (new envelopes, short runs of
/// items) with long runs of items between them as ranges of the received body.
///
/// Invariants: the segments, in order, are the request's bytes; each resource is a run of
/// them (`resources` tile `segments`) whose bytes are exactly one top-level resource field
/// holding `items` items; `bytes` and `items` are the sums over the resources.
#[derive(Clone, Debug)]
pub struct WireForm {
    chunks: Vec<Bytes>,
    segments: Vec<Segment>,
    resources: Vec<WireResource>,
    items: usize,
    bytes: usize,
}

/// `chunks[chunk][start..end]`. A chunk is a request body (at most
/// [`crate::otlp::decode::MAX_REQUEST_BYTES`], under 2 GiB) or a split part's own buffer
/// (smaller than the bodies it was split from), so `u32` offsets hold it, and a split part made of
/// thousands of ranges stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    chunk: u32,
    start: u32,
    end: u32,
}

impl Segment {
    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

/// One top-level `resource_*` field: `segments[first..end]`, its bytes and the items under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WireResource {
    first: u32,
    end: u32,
    bytes: usize,
    items: usize,
}

impl WireResource {
    fn segments(self) -> std::ops::Range<usize> {
        self.first as usize..self.end as usize
    }
}

impl WireForm {
    /// The request `body`, as a clean skim of it found it.
    ///
    /// The body is copied once, into an allocation of exactly its size: a receive buffer
    /// (tonic's message buffer, which grows by doubling; a decompressed body's vector) can be
    /// up to twice the request it holds, and a `Bytes` slice of it keeps all of it alive while
    /// the memory account would count only the request. The copy is a few thousand
    /// instructions for a 36 KB request, against the ~460 k of the decode it replaces.
    pub fn new(body: Bytes, skim: &Skim) -> Self {
        let body = Bytes::copy_from_slice(&body);
        // A clean skim's body is at most `MAX_REQUEST_BYTES` (under 2 GiB): offsets fit u32.
        let segments: Vec<Segment> = skim
            .resources
            .iter()
            .map(|r| Segment {
                chunk: 0,
                start: r.start as u32,
                end: r.end as u32,
            })
            .collect();
        let resources: Vec<WireResource> = skim
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| WireResource {
                first: i as u32,
                end: i as u32 + 1,
                bytes: r.end - r.start,
                items: r.items,
            })
            .collect();
        WireForm {
            bytes: resources.iter().map(|r| r.bytes).sum(),
            chunks: vec![body],
            segments,
            resources,
            items: skim.items,
        }
    }

    fn empty() -> Self {
        WireForm {
            chunks: Vec::new(),
            segments: Vec::new(),
            resources: Vec::new(),
            items: 0,
            bytes: 0,
        }
    }

    /// Spans, data points or log records.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Bytes of the request it encodes to.
    pub fn len(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Top-level `resource_*` fields.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    fn segment_bytes(&self, s: Segment) -> &[u8] {
        &self.chunks[s.chunk as usize][s.start as usize..s.end as usize]
    }

    /// The request's bytes, range after range, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.segments.iter().map(|&s| self.segment_bytes(s))
    }

    /// Appends the request's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes);
        for p in self.pieces() {
            out.extend_from_slice(p);
        }
    }

    /// The request's bytes as slices of the buffers they are in, uncopied, in order: one per
    /// run of adjacent ranges of one buffer (a request passed on whole is one slice; a
    /// re-framed part is its own buffer and its long runs of items). What a sender writes to the
    /// socket one after the other, so a batch of wire forms is sent without being copied into
    /// one buffer first.
    pub fn slices(&self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut run: Option<Segment> = None;
        for &s in &self.segments {
            run = match run {
                Some(r) if r.chunk == s.chunk && r.end == s.start => {
                    Some(Segment { end: s.end, ..r })
                }
                Some(r) => {
                    out.push(self.chunks[r.chunk as usize].slice(r.start as usize..r.end as usize));
                    Some(s)
                }
                None => Some(s),
            };
        }
        if let Some(r) = run {
            out.push(self.chunks[r.chunk as usize].slice(r.start as usize..r.end as usize));
        }
        out
    }

    /// The request's bytes: the body it came in, uncopied, when it is one range of it (a
    /// request passed on whole); else the ranges copied into one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut slices = self.slices();
        if slices.len() <= 1 {
            return slices.pop().unwrap_or_default();
        }
        let mut out = Vec::with_capacity(self.bytes);
        self.write_to(&mut out);
        Bytes::from(out)
    }

    /// The wire forms one after the other: one request holding all their resources. No
    /// bytes are copied.
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a WireForm>) -> WireForm {
        let mut out = WireForm::empty();
        for p in parts {
            let chunk_base = out.chunks.len() as u32;
            let segment_base = out.segments.len() as u32;
            out.chunks.extend(p.chunks.iter().cloned());
            out.segments.extend(p.segments.iter().map(|s| Segment {
                chunk: s.chunk + chunk_base,
                ..*s
            }));
            out.resources
                .extend(p.resources.iter().map(|r| WireResource {
                    first: r.first + segment_base,
                    end: r.end + segment_base,
                    ..*r
                }));
            out.items += p.items;
            out.bytes += p.bytes;
        }
        out
    }

    /// Splits into consecutive wire forms of at most `max_items` items each, at top-level
    /// resource boundaries, filling each part greedily in order. `None` when one resource
    /// alone holds more than `max_items` (the caller decodes and splits inside it).
    pub fn split_items(&self, max_items: usize) -> Option<Vec<WireForm>> {
        if max_items == 0 || self.items <= max_items {
            return Some(vec![self.clone()]);
        }
        if self.resources.iter().any(|r| r.items > max_items) {
            return None;
        }
        let mut parts = Vec::new();
        let mut from = 0;
        while from < self.resources.len() {
            let mut to = from;
            let mut items = 0;
            while to < self.resources.len() && items + self.resources[to].items <= max_items {
                items += self.resources[to].items;
                to += 1;
            }
            let mut part = PartBuilder::new(self.chunks.len());
            for r in &self.resources[from..to] {
                part.push_resource(self, *r);
            }
            parts.push(part.finish(|c| self.chunks[c].clone()));
            from = to;
        }
        Some(parts)
    }
}

/// Runs of items shorter than this are copied into a split part's own buffer (with the
/// envelopes around them) rather than taken as ranges of the received buffer. A range costs
/// more than copying a few hundred bytes: a `Bytes` slice whose reference count, shared by
/// every backend's sender, is touched on each send, and the OTLP exporters join slices under
/// 64 KiB into frames anyway (a copy), so referencing short runs only moved the copy and added
/// the counts: measured 0.44 against 0.40 CPU-s per million spans when every run was a range
/// (BENCHMARKS.md, "Load balancing by reference"). Small in unit tests, so that the property
/// tests, whose spans are short, take both ways.
#[cfg(not(test))]
const REFERENCED_FROM: usize = 4096;
#[cfg(test)]
const REFERENCED_FROM: usize = 64;

/// One wire form being built from another's resources and bytes of its own. Chunk indexes are
/// the source's (`0..source_chunks`), then `source_chunks` for the part's own buffer, then
/// whatever the caller numbers above it; [`finish`](Self::finish) keeps only the chunks used.
struct PartBuilder {
    source_chunks: usize,
    /// The part's own bytes: envelopes and short runs of items, copied.
    own: Vec<u8>,
    segments: Vec<Segment>,
    resources: Vec<WireResource>,
    /// The first segment of the resource being built.
    open: usize,
}

impl PartBuilder {
    fn new(source_chunks: usize) -> Self {
        Self::with_capacity(source_chunks, 0, 0)
    }

    /// Room for `segments` ranges and `own` bytes of its own before the lists grow.
    fn with_capacity(source_chunks: usize, segments: usize, own: usize) -> Self {
        PartBuilder {
            source_chunks,
            own: Vec::with_capacity(own),
            segments: Vec::with_capacity(segments),
            resources: Vec::new(),
            open: 0,
        }
    }

    /// Resource `r` of `source` as it is.
    fn push_resource(&mut self, source: &WireForm, r: WireResource) {
        let first = self.segments.len() as u32;
        self.segments
            .extend_from_slice(&source.segments[r.segments()]);
        self.resources.push(WireResource {
            first,
            end: self.segments.len() as u32,
            ..r
        });
        self.open = self.segments.len();
    }

    /// Appends a range to the resource being built, extending its last range when adjacent.
    fn push_segment(&mut self, s: Segment) {
        if self.segments.len() > self.open
            && let Some(last) = self.segments.last_mut()
            && last.chunk == s.chunk
            && last.end == s.start
        {
            last.end = s.end;
            return;
        }
        self.segments.push(s);
    }

    /// Appends `bytes` copied to the part's own buffer.
    fn push_own(&mut self, bytes: &[u8]) {
        let start = self.own.len() as u32;
        self.own.extend_from_slice(bytes);
        self.push_segment(Segment {
            chunk: self.source_chunks as u32,
            start,
            end: self.own.len() as u32,
        });
    }

    /// Closes the resource being built: `bytes` long (what its ranges must add up to),
    /// holding `items`.
    fn end_resource(&mut self, bytes: usize, items: usize) -> Result<(), SplitError> {
        let built: usize = self.segments[self.open..].iter().map(|s| s.len()).sum();
        if built != bytes {
            return Err(SplitError::new("a part's size differs from its sizing"));
        }
        self.resources.push(WireResource {
            first: self.open as u32,
            end: self.segments.len() as u32,
            bytes,
            items,
        });
        self.open = self.segments.len();
        Ok(())
    }

    /// The wire form, its chunks renumbered to those its ranges use: `chunk(i)` for the
    /// caller's chunk `i`, the part's own buffer for its own.
    fn finish(mut self, chunk: impl Fn(usize) -> Bytes) -> WireForm {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut map: Vec<Option<u32>> = Vec::new();
        let mut own = Some(std::mem::take(&mut self.own));
        for s in &mut self.segments {
            let c = s.chunk as usize;
            if map.len() <= c {
                map.resize(c + 1, None);
            }
            s.chunk = *map[c].get_or_insert_with(|| {
                chunks.push(if c == self.source_chunks {
                    Bytes::from(own.take().unwrap_or_default())
                } else {
                    chunk(c)
                });
                (chunks.len() - 1) as u32
            });
        }
        WireForm {
            chunks,
            items: self.resources.iter().map(|r| r.items).sum(),
            bytes: self.resources.iter().map(|r| r.bytes).sum(),
            segments: self.segments,
            resources: self.resources,
        }
    }
}

/// Where [`WireForm::split_by_item`] sent a wire form's items.
#[derive(Debug)]
pub enum WireSplit {
    /// Every item to this backend: the wire form goes as it is.
    One(usize),
    /// Each backend's part, in backend order; no part is empty.
    Parts(Vec<(usize, WireForm)>),
    /// No item at all.
    Nothing,
}

impl WireForm {
    /// Splits by the backend of each item's trace id (`backend_of(trace_id bytes)`, the bytes
    /// empty for an item without one; backends `0..parts`), without decoding: a resource whose
    /// items all go to one backend is taken as its ranges; one whose items go to several is
    /// re-framed for each of them ([`ItemSplitter::reframe`]): new envelopes, and the
    /// backend's runs of items — a long run (at least `REFERENCED_FROM`, 4 KiB) as a range of
    /// the buffer it was received in, which the part shares, uncopied; a short one copied with
    /// the envelopes into the part's own buffer (one per backend, for all its re-framed
    /// resources). Resources and scopes without items are left out of the parts (as the
    /// decoded split leaves out containers without children), unless every item goes to one
    /// backend: then the wire form goes whole, as the decoded split passes a payload on
    /// uncopied.
    ///
    /// A part counts its own bytes ([`len`](Self::len)): its own buffer's and the ranges it
    /// takes. The received buffers it shares are freed when the last part using them is, so
    /// while one backend's part waits after the others were sent, the buffers hold more than
    /// the waiting part counts (at most the rest of what was split).
    pub fn split_by_item(
        &self,
        splitter: &mut ItemSplitter,
        parts: usize,
        mut backend_of: impl FnMut(&[u8]) -> usize,
    ) -> Result<WireSplit, SplitError> {
        /// A resource as a backend's part takes it.
        enum Taken {
            /// As it is, by one backend.
            Whole(usize, WireResource),
            /// Re-framed (walk index): its field is `chunk[offset..offset + len]`.
            Reframed(usize, usize, usize, usize),
        }
        let source_chunks = self.chunks.len();
        // Resources of several ranges (parts of an earlier split, split again when their
        // backend goes away) are walked joined: chunk `source_chunks + 1 + i` is `joined[i]`.
        let mut joined: Vec<Bytes> = Vec::new();
        let chunk_bytes = |joined: &[Bytes], c: usize| -> Bytes {
            match c.checked_sub(source_chunks + 1) {
                Some(j) => joined[j].clone(),
                None => self.chunks[c].clone(),
            }
        };
        let mut used: Option<usize> = None;
        let mut several = false;
        let mut taken: Vec<Taken> = Vec::with_capacity(self.resources.len());
        // Each backend's own bytes, known before any is written: its buffer is allocated once,
        // at its size (growing it by doubling was a copy of it all again).
        let mut own = vec![0usize; parts];
        splitter.clear();
        for (walk, r) in self.resources.iter().enumerate() {
            let segments = &self.segments[r.segments()];
            let (chunk, offset) = match segments {
                [s] => (s.chunk as usize, s.start as usize),
                _ => {
                    let mut bytes = Vec::with_capacity(r.bytes);
                    for &s in segments {
                        bytes.extend_from_slice(self.segment_bytes(s));
                    }
                    joined.push(Bytes::from(bytes));
                    (source_chunks + joined.len(), 0)
                }
            };
            let field = match chunk.checked_sub(source_chunks + 1) {
                Some(j) => &joined[j][..],
                None => &self.chunks[chunk][offset..offset + r.bytes],
            };
            let walked = splitter.walk(field, &mut backend_of)?;
            if walked.items != r.items {
                return Err(SplitError::new("item count differs from the skim's"));
            }
            for &b in splitter.backends(walk) {
                if b >= parts {
                    return Err(SplitError::new("a backend out of range"));
                }
                match used {
                    None => used = Some(b),
                    Some(u) if u != b => several = true,
                    Some(_) => {}
                }
            }
            if walked.items == 0 {
                continue;
            }
            if let Some(b) = walked.whole() {
                taken.push(Taken::Whole(b, *r));
                continue;
            }
            splitter.size(walk, REFERENCED_FROM);
            for (b, size) in splitter.sizes(walk) {
                own[b] += size.copied;
            }
            taken.push(Taken::Reframed(walk, chunk, offset, r.bytes));
        }
        let Some(first) = used else {
            return Ok(WireSplit::Nothing);
        };
        if !several {
            return Ok(WireSplit::One(first));
        }
        let mut builders: Vec<Option<PartBuilder>> = (0..parts).map(|_| None).collect();
        let capacity = 2 * self.segments.len() + 8;
        let mut failed = None;
        for t in &taken {
            match *t {
                Taken::Whole(b, r) => builders[b]
                    .get_or_insert_with(|| {
                        PartBuilder::with_capacity(source_chunks, capacity, own[b])
                    })
                    .push_resource(self, r),
                Taken::Reframed(walk, chunk, offset, len) => {
                    let field = match chunk.checked_sub(source_chunks + 1) {
                        Some(j) => &joined[j][..],
                        None => &self.chunks[chunk][offset..offset + len],
                    };
                    splitter.reframe(walk, field, |b, piece| {
                        let part = builders[b].get_or_insert_with(|| {
                            PartBuilder::with_capacity(source_chunks, capacity, own[b])
                        });
                        match piece {
                            Piece::Envelope(bytes) => part.push_own(bytes),
                            Piece::Items { start, end } if end - start < REFERENCED_FROM => {
                                part.push_own(&field[start..end]);
                            }
                            Piece::Items { start, end } => part.push_segment(Segment {
                                chunk: chunk as u32,
                                start: (offset + start) as u32,
                                end: (offset + end) as u32,
                            }),
                            Piece::End { bytes, items } => {
                                if let Err(e) = part.end_resource(bytes, items) {
                                    failed = Some(e);
                                }
                            }
                        }
                    });
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let mut split = Vec::new();
        for (b, part) in builders.into_iter().enumerate() {
            let Some(part) = part.filter(|p| !p.resources.is_empty()) else {
                continue;
            };
            if part.own.len() != own[b] {
                return Err(SplitError::new(
                    "a part's own bytes differ from their sizing",
                ));
            }
            split.push((b, part.finish(|c| chunk_bytes(&joined, c))));
        }
        Ok(WireSplit::Parts(split))
    }
}

/// A wire form and its tables, decoded on first read and shared by every clone.
#[derive(Debug)]
pub(super) struct WireTables {
    pub signal: Signal,
    pub form: WireForm,
    decoded: OnceLock<Payload>,
}

impl WireTables {
    pub fn new(signal: Signal, form: WireForm) -> Self {
        WireTables {
            signal,
            form,
            decoded: OnceLock::new(),
        }
    }

    /// The tables, decoded once. A wire form is only ever made from a request the skim found
    /// clean, and clean means the decoder accepts it (the property the skim's tests and the
    /// fuzz targets check), so the decode does not fail; if it ever did, that is a bug, logged
    /// loudly, and the payload reads as empty rather than taking the process down with a
    /// panic in a pipeline worker.
    pub fn decoded(&self) -> &Payload {
        self.decoded.get_or_init(|| {
            match crate::otlp::decode(self.signal, &self.form.to_bytes()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        items = self.form.items,
                        "internal: a request the skim found clean does not decode (a bug); its items are lost"
                    );
                    Payload::empty(self.signal)
                }
            }
        })
    }

    /// The decoded tables, if something read them.
    pub fn decoded_if_read(&self) -> Option<&Payload> {
        self.decoded.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::testing::{
        arb_logs_request, arb_metrics_request, arb_traces_request, assert_payload_eq,
        without_entity_refs_logs, without_entity_refs_metrics, without_entity_refs_traces,
    };
    use crate::otlp::{decode, skim};
    use proptest::prelude::*;
    use prost::Message;

    fn wire_payload(signal: Signal, body: Vec<u8>) -> Option<Payload> {
        let body = Bytes::from(body);
        let s = skim(signal, &body)?;
        Some(Payload::from_wire(signal, WireForm::new(body, &s)))
    }

    /// Requests as SDKs send them: resource `entity_refs` (which the skim leaves to the
    /// decoder) left out, so most requests are clean.
    fn request(signal: Signal) -> BoxedStrategy<Vec<u8>> {
        match signal {
            Signal::Traces => arb_traces_request()
                .prop_map(|r| without_entity_refs_traces(r).encode_to_vec())
                .boxed(),
            Signal::Metrics => arb_metrics_request()
                .prop_map(|r| without_entity_refs_metrics(r).encode_to_vec())
                .boxed(),
            Signal::Logs => arb_logs_request()
                .prop_map(|r| without_entity_refs_logs(r).encode_to_vec())
                .boxed(),
        }
    }

    /// Two resources, two scopes, three spans with attributes, an event and a link.
    pub(crate) fn sample_traces() -> Vec<u8> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            key_strindex: 0,
        };
        let span = |i: u8| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("span-{i}"),
            start_time_unix_nano: 1_000 + u64::from(i),
            end_time_unix_nano: 2_000 + u64::from(i),
            attributes: vec![kv("http.method", "GET"), kv("n", &i.to_string())],
            events: vec![span::Event {
                name: "e".into(),
                attributes: vec![kv("a", "b")],
                ..Default::default()
            }],
            links: vec![span::Link {
                trace_id: vec![9; 16],
                span_id: vec![9; 8],
                ..Default::default()
            }],
            ..Default::default()
        };
        let resource = |name: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", name)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource("a", vec![span(1), span(2)]),
                resource("b", vec![span(3)]),
            ],
        }
        .encode_to_vec()
    }

    fn requests() -> impl Strategy<Value = (Signal, Vec<Vec<u8>>)> {
        prop_oneof![
            Just(Signal::Traces),
            Just(Signal::Metrics),
            Just(Signal::Logs)
        ]
        .prop_flat_map(|signal| {
            (
                Just(signal),
                proptest::collection::vec(request(signal), 1..4),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Concatenating wire forms is concatenating the requests: it decodes to the concat of
        /// the decoded parts, and counts their items. Splitting at resource boundaries keeps
        /// every resource, in order, each part within the limit, and the parts concatenated
        /// are the whole again.
        #[test]
        fn concat_and_split_of_wire_forms_are_those_of_the_tables(
            (signal, bodies) in requests(),
            max in 1usize..40,
        ) {
            let parts: Vec<Payload> = bodies
                .iter()
                .filter_map(|b| wire_payload(signal, b.clone()))
                .collect();
            prop_assume!(parts.len() == bodies.len());
            let decoded: Vec<Payload> =
                bodies.iter().map(|b| decode(signal, b).unwrap()).collect();
            let merged = Payload::concat(signal, &parts).unwrap();
            let wire = merged.wire().expect("a concat of wire forms is a wire form");
            prop_assert_eq!(wire.chunks.len(), bodies.len());
            let want = Payload::concat(signal, &decoded).unwrap();
            prop_assert_eq!(merged.item_count(), want.item_count());
            // Its bytes are the bodies appended.
            let mut appended = Vec::new();
            bodies.iter().for_each(|b| appended.extend_from_slice(b));
            prop_assert_eq!(&wire.to_bytes()[..], &appended[..]);
            // Its slices are the same bytes, at most one per body (each is passed on whole),
            // none empty.
            let slices = wire.slices();
            prop_assert!(slices.len() <= bodies.len());
            prop_assert!(slices.iter().all(|s| !s.is_empty()));
            prop_assert_eq!(slices.concat(), appended.clone());
            assert_payload_eq(&decode(signal, &wire.to_bytes()).unwrap(), &want);

            let resource_items: Vec<usize> = wire.resources.iter().map(|r| r.items).collect();
            match merged.split_items(max) {
                Ok(chunks) if resource_items.iter().all(|&n| n <= max) => {
                    let again: Vec<&WireForm> = chunks
                        .iter()
                        .map(|c| c.wire().expect("a split wire form stays one"))
                        .collect();
                    for c in &again {
                        prop_assert!(c.items() <= max || c.resource_count() == 1);
                        prop_assert!(c.items() > 0 || want.item_count() == 0);
                    }
                    let rejoined = WireForm::concat(again.iter().copied());
                    prop_assert_eq!(&rejoined.to_bytes()[..], &appended[..]);
                    let sliced: Vec<u8> = again.iter().flat_map(|c| c.slices()).flatten().collect();
                    prop_assert_eq!(sliced, appended.clone());
                    prop_assert_eq!(
                        chunks.iter().map(Payload::item_count).sum::<usize>(),
                        want.item_count()
                    );
                }
                // A resource over the limit: decoded and split inside it, as any payload.
                Ok(chunks) => {
                    prop_assert!(chunks.iter().all(|c| c.wire().is_none()));
                    prop_assert!(chunks.iter().all(|c| c.item_count() <= max));
                    let back = Payload::concat(signal, &chunks).unwrap();
                    prop_assert_eq!(back.item_count(), want.item_count());
                }
                Err(e) => prop_assert!(false, "split failed: {e}"),
            }
        }
    }

    /// A wire payload reads as its decoded tables, decoded once for all clones; changing a
    /// table makes it an ordinary payload (its bytes no longer say what it holds).
    #[test]
    fn tables_are_decoded_once_on_first_read_and_an_edit_leaves_the_wire_form() {
        let body = sample_traces();
        let p = wire_payload(Signal::Traces, body.clone()).expect("clean");
        let clone = p.clone();
        assert_eq!(
            p.memory_size(),
            body.len(),
            "unread: only its bytes are held"
        );
        let want = decode(Signal::Traces, &body).unwrap();
        assert_payload_eq(&p, &want);
        // Read through one clone, decoded for the other.
        let Some(Slot::Wire(w)) = &clone.tables[crate::schema::Table::Spans as usize] else {
            panic!("a wire slot");
        };
        assert!(w.decoded_if_read().is_some());
        assert!(
            clone.memory_size() > body.len(),
            "the tables count once read"
        );
        let mut edited = clone.clone();
        let spans = edited.table(crate::schema::Table::Spans).clone();
        edited.set(crate::schema::Table::Spans, spans).unwrap();
        assert!(edited.wire().is_none());
        assert!(clone.wire().is_some());
        assert_payload_eq(&edited, &want);
        // Settling a read wire payload lets go of the bytes.
        let mut settled = clone.clone();
        settled.settle();
        assert!(settled.wire().is_none());
        assert_payload_eq(&settled, &want);
    }

    /// Splits `p`'s wire form with backend `id[0] % parts` per trace id (`parts` for an
    /// item without one), each part decoded back to its prost request.
    fn split_traces(
        body: &[u8],
        parts: usize,
    ) -> (
        WireSplit,
        Vec<(
            usize,
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        )>,
    ) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        let p = wire_payload(Signal::Traces, body.to_vec()).expect("clean");
        let mut splitter = ItemSplitter::new(Signal::Traces).unwrap();
        let split = p
            .wire()
            .unwrap()
            .split_by_item(&mut splitter, parts + 1, |id: &[u8]| {
                id.first().map_or(parts, |b| usize::from(*b) % parts)
            })
            .unwrap();
        let decoded = match &split {
            WireSplit::Parts(ps) => ps
                .iter()
                .map(|(b, f)| {
                    let bytes = f.to_bytes();
                    assert!(skim(Signal::Traces, &bytes).is_some(), "a part is clean");
                    assert_eq!(
                        skim(Signal::Traces, &bytes).unwrap().items,
                        f.items(),
                        "its item count"
                    );
                    assert_eq!(bytes.len(), f.len());
                    (*b, ExportTraceServiceRequest::decode(&bytes[..]).unwrap())
                })
                .collect(),
            _ => Vec::new(),
        };
        (split, decoded)
    }

    fn traces_request(
        resources: Vec<Vec<Vec<u8>>>,
    ) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, InstrumentationScope, KeyValue, any_value,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            key_strindex: 0,
        };
        // Resource r, scope s: its name and schema URL say where it is; a span's trace id
        // starts with its backend, its name says where it was.
        ExportTraceServiceRequest {
            resource_spans: resources
                .into_iter()
                .enumerate()
                .map(|(r, scopes)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", format!("svc-{r}"))],
                        dropped_attributes_count: r as u32,
                        ..Default::default()
                    }),
                    schema_url: format!("https://resource/{r}"),
                    scope_spans: scopes
                        .into_iter()
                        .enumerate()
                        .map(|(s, backends)| ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: format!("scope-{r}-{s}"),
                                version: "1.0".into(),
                                attributes: vec![kv("k", "v".repeat(s))],
                                dropped_attributes_count: 0,
                            }),
                            schema_url: format!("https://scope/{r}/{s}"),
                            spans: backends
                                .into_iter()
                                .enumerate()
                                .map(|(i, b)| Span {
                                    trace_id: if b == u8::MAX {
                                        Vec::new()
                                    } else {
                                        let mut id = vec![b; 16];
                                        id[15] = i as u8;
                                        id
                                    },
                                    span_id: vec![1; 8],
                                    name: format!("span-{r}-{s}-{i}"),
                                    attributes: vec![kv("i", i.to_string())],
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Each backend's part: the resources and scopes holding its spans, their other fields as
    /// they were, its spans in order; scopes without its spans (and empty ones) left out.
    #[test]
    fn mixed_resources_are_re_framed_per_backend() {
        // Resource 0: scope 0 spans to backends 0, 1, 0; scope 1 empty; scope 2 to 1.
        // Resource 1: all to backend 1 (taken whole). Resource 2: no scope.
        let req = traces_request(vec![
            vec![vec![0, 1, 0], vec![], vec![1]],
            vec![vec![1, 1]],
            vec![],
        ]);
        let (split, parts) = split_traces(&req.encode_to_vec(), 2);
        assert!(matches!(split, WireSplit::Parts(_)));
        assert_eq!(parts.len(), 2);
        let names = |r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest| -> Vec<(String, Vec<String>)> {
            r.resource_spans
                .iter()
                .flat_map(|rs| {
                    rs.scope_spans.iter().map(|ss| {
                        (
                            ss.scope.as_ref().unwrap().name.clone(),
                            ss.spans.iter().map(|s| s.name.clone()).collect(),
                        )
                    })
                })
                .collect()
        };
        let (b0, p0) = &parts[0];
        assert_eq!(*b0, 0);
        assert_eq!(
            names(p0),
            vec![(
                "scope-0-0".to_string(),
                vec!["span-0-0-0".to_string(), "span-0-0-2".to_string()]
            )]
        );
        let (b1, p1) = &parts[1];
        assert_eq!(*b1, 1);
        assert_eq!(
            names(p1),
            vec![
                ("scope-0-0".to_string(), vec!["span-0-0-1".to_string()]),
                ("scope-0-2".to_string(), vec!["span-0-2-0".to_string()]),
                (
                    "scope-1-0".to_string(),
                    vec!["span-1-0-0".to_string(), "span-1-0-1".to_string()]
                ),
            ]
        );
        // Envelopes as they were: the resource, its schema URL; the scope, its schema URL.
        for (part, resources) in [(p0, vec![0]), (p1, vec![0, 1])] {
            assert_eq!(part.resource_spans.len(), resources.len());
            for (rs, r) in part.resource_spans.iter().zip(resources) {
                let want = &req.resource_spans[r];
                assert_eq!(rs.resource, want.resource);
                assert_eq!(rs.schema_url, want.schema_url);
                for ss in &rs.scope_spans {
                    let orig = want
                        .scope_spans
                        .iter()
                        .find(|o| o.scope == ss.scope)
                        .unwrap();
                    assert_eq!(ss.schema_url, orig.schema_url);
                    for s in &ss.spans {
                        assert!(orig.spans.contains(s), "a span as it was");
                    }
                }
            }
        }
        // Resource 1 went whole: its bytes are a range of the request, not a new buffer.
        let WireSplit::Parts(forms) = split else {
            unreachable!()
        };
        let whole = &forms[1].1;
        assert_eq!(whole.resource_count(), 2);
        assert_eq!(
            whole.chunks.len(),
            2,
            "the request and the envelopes' buffer"
        );
        let body = req.encode_to_vec();
        let r1 = whole.resources[1];
        assert_eq!(r1.segments().len(), 1, "one range");
        let r1 = whole.segment_bytes(whole.segments[r1.first as usize]);
        assert!(body.windows(r1.len()).any(|w| w == r1));
    }

    /// A re-framed resource's runs of consecutive spans of one backend are one range each:
    /// a long run (at least `REFERENCED_FROM`) a range of the received request, shared and
    /// not copied; the part's own buffer holds only the envelopes and the short runs.
    #[test]
    fn long_runs_of_spans_are_ranges_of_the_request_and_short_ones_are_copied() {
        // One scope: backends 0 0 0 0 1 1 1 1 0 (runs of 4, 4 and 1; spans of one size).
        let order = vec![0, 0, 0, 0, 1, 1, 1, 1, 0];
        let req = traces_request(vec![vec![order]]);
        let body = req.encode_to_vec();
        let (split, parts) = split_traces(&body, 2);
        let WireSplit::Parts(forms) = split else {
            panic!("split in two");
        };
        let span_len = req.resource_spans[0].scope_spans[0].spans[0].encoded_len();
        let field = 1 + prost::length_delimiter_len(span_len) + span_len;
        assert!(
            field < REFERENCED_FROM && 4 * field >= REFERENCED_FROM,
            "{field}"
        );
        for (b, form) in &forms {
            let request = form
                .chunks
                .iter()
                .position(|c| c.len() == body.len() && c[..] == body[..])
                .expect("the part shares the request") as u32;
            let ranges: Vec<usize> = form
                .segments
                .iter()
                .filter(|s| s.chunk == request)
                .map(|s| s.len())
                .collect();
            // A run of four spans, one range; the single span copied.
            assert_eq!(ranges, vec![4 * field], "backend {b}");
            let own: usize = form
                .segments
                .iter()
                .filter(|s| s.chunk != request)
                .map(|s| s.len())
                .sum();
            assert_eq!(own + 4 * field, form.len(), "backend {b}");
            assert!(own < field + 200, "backend {b}: {own} bytes of its own");
            // Sent as slices: the run is the request's bytes, not a copy.
            let chunk = form.chunks[request as usize].as_ptr_range();
            assert!(
                form.slices()
                    .iter()
                    .any(|s| chunk.contains(&s.as_ptr()) && s.len() == 4 * field)
            );
        }
        let spans: Vec<usize> = parts
            .iter()
            .map(|(_, p)| p.resource_spans[0].scope_spans[0].spans.len())
            .collect();
        assert_eq!(spans, vec![5, 4]);
    }

    /// A scope field between two spans of one backend (protobuf allows any field order)
    /// ends their run: the field is not sent twice, and the part decodes as the decoded split.
    #[test]
    fn a_scope_field_between_spans_ends_a_run() {
        use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
        let req = traces_request(vec![vec![vec![0, 0, 1, 0]]]);
        let scope = &req.resource_spans[0].scope_spans[0];
        let field = |n: u8, msg: &[u8]| -> Vec<u8> {
            let mut out = vec![(n << 3) | 2];
            prost::encoding::encode_varint(msg.len() as u64, &mut out);
            out.extend_from_slice(msg);
            out
        };
        // Span 0, the schema URL, spans 1, 2 and 3, the scope.
        let mut scope_bytes = field(2, &scope.spans[0].encode_to_vec());
        scope_bytes.extend(field(3, scope.schema_url.as_bytes()));
        for s in &scope.spans[1..] {
            scope_bytes.extend(field(2, &s.encode_to_vec()));
        }
        scope_bytes.extend(field(1, &scope.scope.as_ref().unwrap().encode_to_vec()));
        let mut resource = field(
            1,
            &req.resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .encode_to_vec(),
        );
        resource.extend(field(2, &scope_bytes));
        let body = field(1, &resource);
        assert_eq!(
            ExportTraceServiceRequest::decode(&body[..])
                .unwrap()
                .resource_spans[0]
                .scope_spans[0],
            ScopeSpans { ..scope.clone() }
        );
        let (_, parts) = split_traces(&body, 2);
        let names = |b: usize| -> Vec<String> {
            let p = &parts.iter().find(|(x, _)| *x == b).unwrap().1;
            let ss = &p.resource_spans[0].scope_spans[0];
            assert_eq!(ss.schema_url, scope.schema_url);
            assert_eq!(ss.scope, scope.scope);
            ss.spans.iter().map(|s| s.name.clone()).collect()
        };
        assert_eq!(names(0), vec!["span-0-0-0", "span-0-0-1", "span-0-0-3"]);
        assert_eq!(names(1), vec!["span-0-0-2"]);
    }

    /// One backend for everything: the wire form goes whole, empty scopes and resources
    /// included (as the decoded split passes a payload on uncopied); no item: nothing.
    #[test]
    fn one_backend_takes_the_wire_form_whole() {
        let req = traces_request(vec![vec![vec![1, 1], vec![]], vec![], vec![vec![1]]]);
        let (split, _) = split_traces(&req.encode_to_vec(), 2);
        assert!(matches!(split, WireSplit::One(1)), "{split:?}");
        let req = traces_request(vec![vec![vec![], vec![]], vec![]]);
        let (split, _) = split_traces(&req.encode_to_vec(), 2);
        assert!(matches!(split, WireSplit::Nothing), "{split:?}");
        // Spans without a trace id are a key like any other (here backend 2 of 3).
        let req = traces_request(vec![vec![vec![u8::MAX, 0]]]);
        let (_, parts) = split_traces(&req.encode_to_vec(), 2);
        assert_eq!(
            parts.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert!(
            parts[1].1.resource_spans[0].scope_spans[0].spans[0]
                .trace_id
                .is_empty()
        );
    }

    /// Lengths over 127 (two- and three-byte varints) are recomputed for the part's size, as
    /// a part of a resource can need a shorter prefix than the whole.
    #[test]
    fn length_prefixes_are_recomputed() {
        // 400 spans alternating between backends: the resource is over 16 KiB (a three-byte
        // length), each part's scope under it (two bytes).
        let req = traces_request(vec![vec![(0..400).map(|i| (i % 2) as u8).collect()]]);
        let body = req.encode_to_vec();
        assert!(body.len() > 16_384 && body.len() < 2 * 16_384);
        let (_, parts) = split_traces(&body, 2);
        assert_eq!(parts.len(), 2);
        for (b, p) in &parts {
            let spans = &p.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), 200);
            assert!(spans.iter().all(|s| usize::from(s.trace_id[0]) == *b));
        }
        // Together the parts hold every span once.
        let mut all: Vec<String> = parts
            .iter()
            .flat_map(|(_, p)| {
                p.resource_spans[0].scope_spans[0]
                    .spans
                    .iter()
                    .map(|s| s.name.clone())
            })
            .collect();
        all.sort();
        let mut want: Vec<String> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.clone())
            .collect();
        want.sort();
        assert_eq!(all, want);
    }

    /// Unknown fields (in a span, a scope or a resource) make a request not clean: it is never
    /// a wire form, so the splitter never has to carry a field it does not know.
    #[test]
    fn unknown_fields_are_not_clean() {
        let req = traces_request(vec![vec![vec![0, 1]]]);
        let body = req.encode_to_vec();
        assert!(skim(Signal::Traces, &body).is_some());
        // Field 99 (varint 1) appended inside a message: the outer lengths grow by 3.
        let with_unknown = |depth: usize| -> Vec<u8> {
            let mut r = req.clone();
            let unknown = [0x98u8, 0x06, 0x01]; // key(99, VARINT), 1
            let span = r.resource_spans[0].scope_spans[0].spans[0].encode_to_vec();
            let scope = r.resource_spans[0].scope_spans[0].encode_to_vec();
            let resource = r.resource_spans[0].encode_to_vec();
            let mut inner = match depth {
                0 => resource,
                1 => scope,
                _ => span,
            };
            inner.extend_from_slice(&unknown);
            // Re-wrap by hand, inside out.
            let wrap = |field: u8, msg: &[u8], rest: &[u8]| -> Vec<u8> {
                let mut out = vec![(field << 3) | 2];
                prost::encoding::encode_varint(msg.len() as u64, &mut out);
                out.extend_from_slice(msg);
                out.extend_from_slice(rest);
                out
            };
            if depth >= 2 {
                r.resource_spans[0].scope_spans[0].spans.remove(0);
                let rest = r.resource_spans[0].scope_spans[0].encode_to_vec();
                inner = wrap(2, &inner, &rest);
            }
            if depth >= 1 {
                r.resource_spans[0].scope_spans.remove(0);
                let rest = r.resource_spans[0].encode_to_vec();
                inner = wrap(2, &inner, &rest);
            }
            wrap(1, &inner, &[])
        };
        for depth in 0..3 {
            let body = with_unknown(depth);
            assert!(
                ExportTraceServiceRequest::decode(&body[..]).is_ok(),
                "depth {depth}: well formed"
            );
            assert!(
                skim(Signal::Traces, &body).is_none(),
                "depth {depth}: not clean"
            );
        }
    }

    /// An item with two `trace_id` fields is not clean: the decoder reads the last one, the
    /// wire-level split stops at the first, so such a request is decoded (and routed by its
    /// tables, by the id the decoder kept) rather than split as bytes.
    #[test]
    fn an_item_with_two_trace_ids_is_not_clean() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        // `item` with `extra` appended, wrapped in a scope, a resource and a request.
        let wrap = |item: Vec<u8>, extra: &[u8]| -> Vec<u8> {
            let mut inner = item;
            inner.extend_from_slice(extra);
            for field in [2u8, 2, 1] {
                let mut out = vec![(field << 3) | 2];
                prost::encoding::encode_varint(inner.len() as u64, &mut out);
                out.extend_from_slice(&inner);
                inner = out;
            }
            inner
        };
        let second = |field: u8| -> Vec<u8> {
            let mut b = vec![(field << 3) | 2, 16];
            b.extend_from_slice(&[7u8; 16]);
            b
        };
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            name: "s".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let record = LogRecord {
            trace_id: vec![1; 16],
            ..Default::default()
        }
        .encode_to_vec();
        for (signal, item, field) in [(Signal::Traces, span, 1), (Signal::Logs, record, 9)] {
            let once = wrap(item.clone(), &[]);
            assert!(
                skim(signal, &once).is_some(),
                "{signal:?}: one trace id is clean"
            );
            let twice = wrap(item, &second(field));
            assert!(skim(signal, &twice).is_none(), "{signal:?}: two are not");
            // The decoder keeps the last one.
            let id = match signal {
                Signal::Traces => {
                    let r = ExportTraceServiceRequest::decode(&twice[..]).unwrap();
                    let ResourceSpans { scope_spans, .. } = &r.resource_spans[0];
                    let ScopeSpans { spans, .. } = &scope_spans[0];
                    spans[0].trace_id.clone()
                }
                _ => {
                    let r = ExportLogsServiceRequest::decode(&twice[..]).unwrap();
                    let ResourceLogs { scope_logs, .. } = &r.resource_logs[0];
                    let ScopeLogs { log_records, .. } = &scope_logs[0];
                    log_records[0].trace_id.clone()
                }
            };
            assert_eq!(id, vec![7u8; 16]);
            assert!(decode(signal, &twice).is_ok());
        }
    }

    use super::super::Slot;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
}
