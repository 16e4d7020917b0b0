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

use crate::otlp::decode::{ItemSplitter, Skim, SplitError};
use crate::payload::Payload;
use crate::schema::Signal;

/// The protobuf bytes of one or more clean export requests of one signal: a list of top-level
/// `resource_*` fields, each a byte range of one of the request bodies it came in.
#[derive(Clone, Debug)]
pub struct WireForm {
    chunks: Vec<Bytes>,
    resources: Vec<WireResource>,
    items: usize,
    bytes: usize,
}

/// One top-level `resource_*` field: `chunks[chunk][start..end]`, with the items under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WireResource {
    chunk: usize,
    start: usize,
    end: usize,
    items: usize,
    /// Its skim's [`SkimmedResource::trace_id_leads`](crate::otlp::decode::SkimmedResource):
    /// a split by trace id reads each span's first field only.
    trace_id_leads: bool,
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
        Self::in_place(Bytes::copy_from_slice(&body), skim)
    }

    /// The request `body`, as a clean skim of it found it, kept where it is: for a body whose
    /// buffer is its own size (an uncompressed gRPC message, which the receive path reads into
    /// a buffer reserved for its length; an HTTP body read into a buffer of its
    /// `Content-Length`), where [`WireForm::new`]'s copy would only fault in fresh pages for
    /// the same bytes.
    pub fn in_place(body: Bytes, skim: &Skim) -> Self {
        let resources: Vec<WireResource> = skim
            .resources
            .iter()
            .map(|r| WireResource {
                chunk: 0,
                start: r.start,
                end: r.end,
                items: r.items,
                trace_id_leads: r.trace_id_leads,
            })
            .collect();
        WireForm {
            bytes: resources.iter().map(|r| r.end - r.start).sum(),
            chunks: vec![body],
            resources,
            items: skim.items,
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

    /// The bytes of each top-level resource field, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.resources
            .iter()
            .map(|r| &self.chunks[r.chunk][r.start..r.end])
    }

    /// Appends the request's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes);
        for p in self.pieces() {
            out.extend_from_slice(p);
        }
    }

    /// The request's bytes as slices of the bodies they came in, uncopied, in order: one per
    /// run of adjacent resource fields of one body (a request passed on whole is one slice).
    /// What a sender writes to the socket one after the other, so a batch of wire forms is
    /// sent without being copied into one buffer first.
    pub fn slices(&self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = Vec::new();
        let mut run: Option<(usize, usize, usize)> = None;
        for r in &self.resources {
            run = match run {
                Some((chunk, start, end)) if chunk == r.chunk && end == r.start => {
                    Some((chunk, start, r.end))
                }
                Some((chunk, start, end)) => {
                    out.push(self.chunks[chunk].slice(start..end));
                    Some((r.chunk, r.start, r.end))
                }
                None => Some((r.chunk, r.start, r.end)),
            };
        }
        if let Some((chunk, start, end)) = run {
            out.push(self.chunks[chunk].slice(start..end));
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
        let mut out = WireForm {
            chunks: Vec::new(),
            resources: Vec::new(),
            items: 0,
            bytes: 0,
        };
        for p in parts {
            let base = out.chunks.len();
            out.chunks.extend(p.chunks.iter().cloned());
            out.resources
                .extend(p.resources.iter().map(|r| WireResource {
                    chunk: r.chunk + base,
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
            parts.push(self.part(&self.resources[from..to]));
            from = to;
        }
        Some(parts)
    }

    /// The wire form of `resources` (a range of this one's), keeping only the chunks they use.
    fn part(&self, resources: &[WireResource]) -> WireForm {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut map: Vec<Option<usize>> = vec![None; self.chunks.len()];
        let resources: Vec<WireResource> = resources
            .iter()
            .map(|r| {
                let chunk = *map[r.chunk].get_or_insert_with(|| {
                    chunks.push(self.chunks[r.chunk].clone());
                    chunks.len() - 1
                });
                WireResource { chunk, ..*r }
            })
            .collect();
        WireForm {
            chunks,
            items: resources.iter().map(|r| r.items).sum(),
            bytes: resources.iter().map(|r| r.end - r.start).sum(),
            resources,
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
    /// items all go to one backend is taken as its byte range; one whose items go to several
    /// is re-framed for each of them into a new buffer per backend ([`ItemSplitter`]), one
    /// of [`part_buffers`]' when a part before it has been let go.
    /// Resources and scopes without items are left out of the parts (as the decoded split
    /// leaves out containers without children), unless every item goes to one backend: then
    /// the wire form goes whole, as the decoded split passes a payload on uncopied.
    pub fn split_by_item(
        &self,
        splitter: &mut ItemSplitter,
        parts: usize,
        mut backend_of: impl FnMut(&[u8]) -> usize,
    ) -> Result<WireSplit, SplitError> {
        // Each backend's resources; a chunk index of `self.chunks.len()` is its new buffer,
        // sized exactly before anything is written (growing it by doubling, then shrinking it
        // to its size, was a realloc and a copy of every byte again).
        let framed = self.chunks.len();
        let mut kept: Vec<Vec<WireResource>> = vec![Vec::new(); parts];
        let mut sizes = vec![0usize; parts];
        // The resources re-framed, by walk index, with their field.
        let mut reframed: Vec<(usize, &[u8])> = Vec::new();
        let mut used: Option<usize> = None;
        let mut several = false;
        splitter.clear();
        for (walk, r) in self.resources.iter().enumerate() {
            let field = &self.chunks[r.chunk][r.start..r.end];
            let walked = splitter.walk(field, r.trace_id_leads, &mut backend_of)?;
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
                kept[b].push(*r);
                continue;
            }
            for &b in splitter.backends(walk) {
                let (len, items) = splitter.framed_len(walk, b);
                // Its items are copied as they are, so their trace ids still lead.
                kept[b].push(WireResource {
                    chunk: framed,
                    start: sizes[b],
                    end: sizes[b] + len,
                    items,
                    trace_id_leads: r.trace_id_leads,
                });
                sizes[b] += len;
            }
            reframed.push((walk, field));
        }
        let Some(first) = used else {
            return Ok(WireSplit::Nothing);
        };
        if !several {
            return Ok(WireSplit::One(first));
        }
        let mut outs: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| {
                if n == 0 {
                    Vec::new()
                } else {
                    part_buffers::take(n)
                }
            })
            .collect();
        for &(walk, field) in &reframed {
            for &b in splitter.backends(walk) {
                splitter.write(walk, field, b, &mut outs[b]);
            }
        }
        let mut split = Vec::new();
        for (b, (resources, out)) in kept.into_iter().zip(outs).enumerate() {
            if resources.is_empty() {
                continue;
            }
            if out.len() != sizes[b] {
                return Err(SplitError::new("a part's size differs from its sizing"));
            }
            let out = part_buffers::lend(out);
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut map: Vec<Option<usize>> = vec![None; framed + 1];
            let resources: Vec<WireResource> = resources
                .into_iter()
                .map(|r| {
                    let chunk = *map[r.chunk].get_or_insert_with(|| {
                        chunks.push(if r.chunk == framed {
                            out.clone()
                        } else {
                            self.chunks[r.chunk].clone()
                        });
                        chunks.len() - 1
                    });
                    WireResource { chunk, ..r }
                })
                .collect();
            split.push((
                b,
                WireForm {
                    chunks,
                    items: resources.iter().map(|r| r.items).sum(),
                    bytes: resources.iter().map(|r| r.end - r.start).sum(),
                    resources,
                },
            ));
        }
        Ok(WireSplit::Parts(split))
    }
}

/// The buffers re-framed parts are written into, kept for the next split when a part is let
/// go (sent, or dropped) instead of being freed.
///
/// Why: a backend's part of a full batch is a megabyte or more, and mimalloc serves such an
/// allocation from pages it has given back to the OS in the meantime, which the kernel zeroes
/// on first touch, every batch: a tenth of the `loadbalancing` agent's CPU (BENCHMARKS.md, "Load
/// balancing while the bytes are hot"; buffers of 256 KiB fared no better). A few buffers
/// kept here are written again while their pages are still mapped.
///
/// Bounded: at most [`IDLE_BUFFERS`] idle buffers of at most [`IDLE_BYTES`] together are kept;
/// a buffer let go beyond that is freed as before. Only idle buffers are held here: a part in
/// a queue holds its buffer as any payload holds its bytes (and the memory account counts it
/// as one, by its rows).
pub(crate) mod part_buffers {
    use std::sync::Mutex;

    use bytes::Bytes;

    /// Idle buffers kept at most: a part per backend of a few batches in flight.
    pub(crate) const IDLE_BUFFERS: usize = 8;
    /// Idle bytes kept at most, all buffers together.
    pub(crate) const IDLE_BYTES: usize = 8 * 1024 * 1024;

    /// The process's pool, which [`WireForm::split_by_item`](super::WireForm::split_by_item)
    /// writes its parts into.
    static PARTS: Pool = Pool::new(IDLE_BUFFERS, IDLE_BYTES);

    /// An empty buffer with room for `len` bytes, from the process's pool.
    pub(crate) fn take(len: usize) -> Vec<u8> {
        PARTS.take(len)
    }

    /// `buffer` as `Bytes` that give it back to the process's pool when the last of them is
    /// dropped.
    pub(crate) fn lend(buffer: Vec<u8>) -> Bytes {
        PARTS.lend(buffer)
    }

    /// Frees the process's idle buffers (the memory limiter does, before it asks the
    /// allocator to give free memory back: idle buffers are not in the memory account).
    pub(crate) fn release_idle() {
        PARTS.release_idle();
    }

    /// Idle buffers, bounded by count and by their bytes together.
    pub(crate) struct Pool {
        idle: Mutex<Vec<Vec<u8>>>,
        max_buffers: usize,
        max_bytes: usize,
    }

    impl Pool {
        pub(crate) const fn new(max_buffers: usize, max_bytes: usize) -> Self {
            Pool {
                idle: Mutex::new(Vec::new()),
                max_buffers,
                max_bytes,
            }
        }

        /// An empty buffer with room for `len` bytes: an idle one when there is one (the
        /// largest, grown if it is short), else a new one.
        pub(crate) fn take(&self, len: usize) -> Vec<u8> {
            let kept = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let largest = (0..idle.len()).max_by_key(|&i| idle[i].capacity());
                largest.map(|i| idle.swap_remove(i))
            };
            match kept {
                Some(mut buffer) => {
                    buffer.clear();
                    buffer.reserve_exact(len);
                    buffer
                }
                None => Vec::with_capacity(len),
            }
        }

        /// `buffer` as `Bytes` that give it back to this pool when the last of them is
        /// dropped.
        pub(crate) fn lend(&'static self, buffer: Vec<u8>) -> Bytes {
            Bytes::from_owner(Recycled { buffer, pool: self })
        }

        /// Frees every idle buffer.
        pub(crate) fn release_idle(&self) {
            let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
            drop(idle);
        }

        /// Keeps `buffer` if the bounds allow, else frees it.
        fn give_back(&self, buffer: Vec<u8>) {
            if buffer.capacity() == 0 || buffer.capacity() > self.max_bytes {
                return;
            }
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let held: usize = idle.iter().map(Vec::capacity).sum();
            if idle.len() < self.max_buffers && held + buffer.capacity() <= self.max_bytes {
                idle.push(buffer);
            }
            // Otherwise `buffer` is freed here, after the lock (locals drop in reverse order).
        }

        /// Idle buffers now, and their bytes.
        #[cfg(test)]
        pub(crate) fn idle(&self) -> (usize, usize) {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            (idle.len(), idle.iter().map(Vec::capacity).sum())
        }
    }

    /// A buffer lent out as `Bytes`, given back to its pool when they are all dropped.
    struct Recycled {
        buffer: Vec<u8>,
        pool: &'static Pool,
    }

    impl AsRef<[u8]> for Recycled {
        fn as_ref(&self) -> &[u8] {
            &self.buffer
        }
    }

    impl Drop for Recycled {
        fn drop(&mut self) {
            self.pool.give_back(std::mem::take(&mut self.buffer));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn pool(max_buffers: usize, max_bytes: usize) -> &'static Pool {
            Box::leak(Box::new(Pool::new(max_buffers, max_bytes)))
        }

        /// A buffer let go (every `Bytes` of it dropped, clones and slices included) is the
        /// next one taken: the same allocation, emptied, its pages already mapped.
        #[test]
        fn a_buffer_let_go_is_taken_again_empty() {
            let pool = pool(4, 1 << 20);
            let mut buffer = pool.take(1000);
            assert!(buffer.is_empty() && buffer.capacity() >= 1000);
            buffer.extend_from_slice(&[7; 1000]);
            let at = buffer.as_ptr();
            let bytes = pool.lend(buffer);
            let slice = bytes.slice(10..20);
            let clone = bytes.clone();
            drop(bytes);
            assert_eq!(&clone[..3], &[7, 7, 7], "lent out, it is not reused");
            assert_eq!(pool.idle().0, 0);
            drop(clone);
            assert_eq!(pool.idle().0, 0, "a slice still holds it");
            drop(slice);
            assert_eq!(pool.idle().0, 1);
            let again = pool.take(600);
            assert_eq!(again.as_ptr(), at);
            assert!(again.is_empty());
            assert_eq!(pool.idle().0, 0);
            // Too short for what is asked: grown.
            let grown = {
                let b = pool.lend(again);
                drop(b);
                pool.take(5000)
            };
            assert!(grown.capacity() >= 5000 && grown.is_empty());
        }

        /// Idle buffers stay within the count and byte bounds; the rest are freed; the
        /// largest idle buffer is taken first.
        #[test]
        fn idle_buffers_are_bounded() {
            let pool = pool(3, 10_000);
            let lent: Vec<Bytes> = [1000, 2000, 3000, 4000, 50_000]
                .into_iter()
                .map(|n| pool.lend(vec![1; n]))
                .collect();
            drop(lent);
            let (buffers, bytes) = pool.idle();
            assert!(buffers <= 3 && bytes <= 10_000, "{buffers} {bytes}");
            assert_eq!(
                (buffers, bytes),
                (3, 6000),
                "1000, 2000, 3000 kept; 4000 over the count, 50,000 over the bytes"
            );
            assert!(pool.take(1).capacity() >= 3000);
            // The memory limiter's purge frees the rest.
            pool.release_idle();
            assert_eq!(pool.idle(), (0, 0));
        }
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

    /// `in_place` keeps the body where it arrived (its slices point into it); `new` copies it
    /// into a buffer of its own; both read back the same request.
    #[test]
    fn in_place_keeps_the_received_buffer_and_new_copies_it() {
        let body = Bytes::from(sample_traces());
        let s = skim(Signal::Traces, &body).expect("clean");
        let kept = WireForm::in_place(body.clone(), &s);
        let copied = WireForm::new(body.clone(), &s);
        let within = |b: &Bytes| body.as_ptr_range().contains(&b.as_ptr());
        assert!(kept.slices().iter().all(within));
        assert!(!copied.slices().iter().any(within));
        assert_eq!(kept.to_bytes(), body);
        assert_eq!(copied.to_bytes(), body);
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
            "the request and the re-framed buffer"
        );
        let body = req.encode_to_vec();
        let r1 = &whole.chunks[whole.resources[1].chunk]
            [whole.resources[1].start..whole.resources[1].end];
        assert!(body.windows(r1.len()).any(|w| w == r1));
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

    use super::super::Slot;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
}
