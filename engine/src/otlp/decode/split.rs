//! Splitting a clean request's bytes by trace id without decoding it: the wire-level half of
//! routing a [`crate::payload::WireForm`] (the `loadbalancing` exporter's `traceID` key).
//!
//! One top-level `resource_spans` (or `resource_logs`) field at a time: [`ItemSplitter::walk`]
//! reads its envelope, each `scope_*` envelope and, inside each item (span, log record), only
//! its `trace_id`, asking the caller which backend that id goes to and recording byte ranges.
//! When every item of the resource goes to one backend (and no scope is empty) the caller
//! takes the resource field as it is; otherwise [`ItemSplitter::reframe`] re-frames it for
//! each backend as a sequence of [`Piece`]s: new envelope bytes (the resource's key and
//! recomputed length, its other fields — `resource`, `schema_url` — as they are; each scope
//! holding items of that backend with its key, recomputed length and other fields — `scope`,
//! `schema_url`) and, between them, the backend's items as byte ranges of the field, not
//! copied: consecutive items of one backend are one range. A scope left without items is
//! dropped, as the decoded split drops containers without children
//! ([`crate::payload::Payload::partition`]), so both give the same parts.
//!
//! The bytes are a wire form's, which only a clean skim makes ([`super::skim`]): the fields are
//! the known ones, well formed, and an item has at most one `trace_id` (the skim refuses a
//! second one, which a decoder would read as the last one given), so the walk takes the first
//! `trace_id` of an item and jumps to the item's end by its length prefix. The walk still
//! checks every length it follows and says [`SplitError`] rather than trusting them (the
//! caller then routes the decoded tables).
//!
//! Fields of different numbers may come in any order in protobuf, and a re-framed scope puts
//! its other fields before its items; fields of one number (a repeated field, or a message
//! field given twice, which merges) keep their order, so the decoder reads the same.

use super::wire::{I32, I64, LEN, Reader, VARINT, key};
use crate::schema::Signal;

/// The bytes did not have the shape a clean request has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot split the request's bytes: {0}")]
pub struct SplitError(&'static str);

impl SplitError {
    pub(crate) fn new(why: &'static str) -> Self {
        SplitError(why)
    }
}

/// What [`ItemSplitter::walk`] learned about one resource field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// Items (spans, log records) under it.
    pub items: usize,
    /// The one backend every item goes to, when there is one (`None`: none or several).
    pub only: Option<usize>,
    /// Whether a scope holds no item (a split drops it).
    pub empty_scope: bool,
}

impl Walked {
    /// Whether the field goes to its one backend as it is: one backend, and nothing a split
    /// would drop.
    pub fn whole(&self) -> Option<usize> {
        self.only.filter(|_| !self.empty_scope)
    }
}

/// One piece of a backend's re-framed resource ([`ItemSplitter::reframe`]), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Envelope bytes to write (keys, recomputed lengths, the envelopes' other fields).
    Envelope(&'a [u8]),
    /// Items of the backend, as they are: this byte range of the walked field.
    Items { start: usize, end: usize },
    /// The backend's re-framed resource is complete: `bytes` long (key and length included),
    /// holding `items` items.
    End { bytes: usize, items: usize },
}

/// A byte range of the resource field being walked.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u32,
    end: u32,
}

impl Range {
    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

/// One `scope_*` field: its other fields and its items, as index ranges of the splitter's lists.
#[derive(Debug, Clone, Copy)]
struct Scope {
    fields: (u32, u32),
    items: (u32, u32),
}

/// One walked resource field: index ranges of the splitter's lists.
#[derive(Debug, Clone, Copy)]
struct Resource {
    fields: (u32, u32),
    scopes: (u32, u32),
    backends: (u32, u32),
    /// Where its per-scope, per-backend tally and its per-backend sizes start, once
    /// [`ItemSplitter::size`]d (`u32::MAX` before).
    tally: u32,
    sized: u32,
}

/// What one backend's re-framed resource holds ([`ItemSplitter::size`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartSize {
    /// Its bytes, key and length included.
    pub bytes: usize,
    pub items: usize,
    /// Of its bytes, those of new envelopes and of runs of items shorter than the caller's
    /// bound: what a caller copying those runs writes.
    pub copied: usize,
    /// Its message's length (what its length prefix says).
    message: usize,
}

/// Walks and re-frames the resource fields of one request (or of a batch of them): each
/// [`walk`](Self::walk) appends a resource to its lists, [`size`](Self::size) tells what each
/// backend's part of it holds, so that every part can be sized exactly before any is written
/// by [`reframe`](Self::reframe); the lists are reused after a [`clear`](Self::clear).
#[derive(Debug)]
pub struct ItemSplitter {
    /// The item message's `trace_id` key: `Span.trace_id = 1`, `LogRecord.trace_id = 9`.
    trace_id_key: u32,
    resources: Vec<Resource>,
    /// The resources' fields other than `scope_*`, as ranges of their resource field.
    resource_fields: Vec<Range>,
    scopes: Vec<Scope>,
    /// The scopes' fields other than their items.
    scope_fields: Vec<Range>,
    /// Every item field (key, length and message) with its backend's slot: its index in its
    /// resource's backends.
    items: Vec<(Range, u32)>,
    /// Each resource's backends, in order of first appearance.
    backends: Vec<usize>,
    /// Per sized resource, scope and backend slot (`tally + scope * backends + slot`): the
    /// bytes and count of the slot's items in the scope.
    tally: Vec<(usize, usize)>,
    /// Per sized resource and backend slot: what the slot's part of the resource holds.
    sized: Vec<PartSize>,
}

impl ItemSplitter {
    /// A splitter for `signal`'s requests; `None` for metrics (a data point has no trace id).
    pub fn new(signal: Signal) -> Option<Self> {
        let trace_id_key = match signal {
            Signal::Traces => key(1, LEN),
            Signal::Logs => key(9, LEN),
            Signal::Metrics => return None,
        };
        Some(ItemSplitter {
            trace_id_key,
            resources: Vec::new(),
            resource_fields: Vec::new(),
            scopes: Vec::new(),
            scope_fields: Vec::new(),
            items: Vec::new(),
            backends: Vec::new(),
            tally: Vec::new(),
            sized: Vec::new(),
        })
    }

    /// Forgets every walked resource.
    pub fn clear(&mut self) {
        self.resources.clear();
        self.resource_fields.clear();
        self.scopes.clear();
        self.scope_fields.clear();
        self.items.clear();
        self.backends.clear();
        self.tally.clear();
        self.sized.clear();
    }

    /// Walks the top-level resource field `field` (its key, length and message): every item's
    /// backend is `backend_of(its trace_id bytes)`, the bytes empty for an item without one.
    /// The resource is the next index (from 0 after a [`clear`](Self::clear)) for
    /// [`size`](Self::size) and [`reframe`](Self::reframe).
    pub fn walk(
        &mut self,
        field: &[u8],
        backend_of: &mut impl FnMut(&[u8]) -> usize,
    ) -> Result<Walked, SplitError> {
        if field.len() > u32::MAX as usize {
            return Err(SplitError("a resource over 4 GiB"));
        }
        let malformed = |_| SplitError("malformed protobuf");
        let mut top = Reader::new(field, 0);
        if top.key().map_err(malformed)? != key(1, LEN) {
            return Err(SplitError("not a top-level resource field"));
        }
        let mut resource = top.message().map_err(malformed)?;
        if top.has_more() {
            return Err(SplitError("more than one top-level field"));
        }
        let (fields_from, scopes_from, items_from, backends_from) = (
            self.resource_fields.len(),
            self.scopes.len(),
            self.items.len(),
            self.backends.len(),
        );
        let mut empty_scope = false;
        // The slot of the last item's backend: spans of one trace tend to come together.
        let mut last_slot = 0u32;
        while resource.has_more() {
            let start = resource.base() + resource.pos();
            let k = resource.key().map_err(malformed)?;
            if k != key(2, LEN) {
                skip(&mut resource, k).ok_or(SplitError("malformed protobuf"))?;
                let end = resource.base() + resource.pos();
                self.resource_fields.push(range(start, end));
                continue;
            }
            let mut scope = resource.message().map_err(malformed)?;
            let (scope_fields_from, scope_items_from) = (self.scope_fields.len(), self.items.len());
            while scope.has_more() {
                let start = scope.base() + scope.pos();
                let k = scope.key().map_err(malformed)?;
                if k != key(2, LEN) {
                    skip(&mut scope, k).ok_or(SplitError("malformed protobuf"))?;
                    let end = scope.base() + scope.pos();
                    self.scope_fields.push(range(start, end));
                    continue;
                }
                let mut item = scope.message().map_err(malformed)?;
                let end = scope.base() + scope.pos();
                // A clean item has at most one `trace_id` (the skim refuses a second): the
                // first is the one, and the rest of the item is skipped by its length.
                let mut trace_id: &[u8] = &[];
                while item.has_more() {
                    let k = item.key().map_err(malformed)?;
                    if k == self.trace_id_key {
                        trace_id = item.bytes().map_err(malformed)?;
                        break;
                    }
                    skip(&mut item, k).ok_or(SplitError("malformed protobuf"))?;
                }
                let backend = backend_of(trace_id);
                let mine = &self.backends[backends_from..];
                let slot = match mine.get(last_slot as usize) {
                    Some(&b) if b == backend => last_slot,
                    _ => match mine.iter().position(|&b| b == backend) {
                        Some(i) => i as u32,
                        None => {
                            self.backends.push(backend);
                            (self.backends.len() - 1 - backends_from) as u32
                        }
                    },
                };
                last_slot = slot;
                self.items.push((range(start, end), slot));
            }
            empty_scope |= self.items.len() == scope_items_from;
            self.scopes.push(Scope {
                fields: (scope_fields_from as u32, self.scope_fields.len() as u32),
                items: (scope_items_from as u32, self.items.len() as u32),
            });
        }
        self.resources.push(Resource {
            fields: (fields_from as u32, self.resource_fields.len() as u32),
            scopes: (scopes_from as u32, self.scopes.len() as u32),
            backends: (backends_from as u32, self.backends.len() as u32),
            tally: u32::MAX,
            sized: u32::MAX,
        });
        Ok(Walked {
            items: self.items.len() - items_from,
            only: match &self.backends[backends_from..] {
                [b] => Some(*b),
                _ => None,
            },
            empty_scope,
        })
    }

    /// The backends walked resource `resource` has items for, in order of first appearance.
    pub fn backends(&self, resource: usize) -> &[usize] {
        let r = &self.resources[resource];
        &self.backends[r.backends.0 as usize..r.backends.1 as usize]
    }

    /// Sizes each backend's part of walked resource `resource` ([`sizes`](Self::sizes)): runs
    /// of items shorter than `copy_below` bytes count as copied (a run: items of one backend
    /// one after the other in the bytes, as [`reframe`](Self::reframe) hands them out). One
    /// pass over its items.
    pub fn size(&mut self, resource: usize, copy_below: usize) {
        let r = self.resources[resource];
        let slots = (r.backends.1 - r.backends.0) as usize;
        let scopes = &self.scopes[r.scopes.0 as usize..r.scopes.1 as usize];
        let tally_from = self.tally.len();
        self.tally.resize(tally_from + scopes.len() * slots, (0, 0));
        let sized_from = self.sized.len();
        self.sized.resize(sized_from + slots, PartSize::default());
        let sized = &mut self.sized[sized_from..];
        for (s, scope) in scopes.iter().enumerate() {
            let tally = &mut self.tally[tally_from + s * slots..tally_from + (s + 1) * slots];
            let items = &self.items[scope.items.0 as usize..scope.items.1 as usize];
            // (slot, bytes, end) of the run being measured.
            let mut run: Option<(u32, usize, u32)> = None;
            for &(x, slot) in items {
                let t = &mut tally[slot as usize];
                t.0 += x.len();
                t.1 += 1;
                run = match run {
                    Some((s, len, end)) if s == slot && end == x.start => {
                        Some((s, len + x.len(), x.end))
                    }
                    Some((s, len, _)) => {
                        if len < copy_below {
                            sized[s as usize].copied += len;
                        }
                        Some((slot, x.len(), x.end))
                    }
                    None => Some((slot, x.len(), x.end)),
                };
            }
            if let Some((s, len, _)) = run
                && len < copy_below
            {
                sized[s as usize].copied += len;
            }
        }
        let resource_fields =
            sum_len(&self.resource_fields[r.fields.0 as usize..r.fields.1 as usize]);
        for (slot, part) in sized.iter_mut().enumerate() {
            let mut len = resource_fields;
            let mut envelopes = resource_fields;
            for (s, scope) in scopes.iter().enumerate() {
                let (bytes, items) = self.tally[tally_from + s * slots + slot];
                if items > 0 {
                    let fields = sum_len(
                        &self.scope_fields[scope.fields.0 as usize..scope.fields.1 as usize],
                    );
                    let scope_len = bytes + fields;
                    len += 1 + varint_len(scope_len) + scope_len;
                    envelopes += 1 + varint_len(scope_len) + fields;
                    part.items += items;
                }
            }
            part.message = len;
            part.bytes = 1 + varint_len(len) + len;
            part.copied += 1 + varint_len(len) + envelopes;
        }
        self.resources[resource].tally = tally_from as u32;
        self.resources[resource].sized = sized_from as u32;
    }

    /// Each backend of [`size`](Self::size)d resource `resource` with what its part holds.
    pub fn sizes(&self, resource: usize) -> impl Iterator<Item = (usize, PartSize)> + '_ {
        let r = self.resources[resource];
        let sized = match r.sized {
            u32::MAX => &[][..],
            from => &self.sized[from as usize..from as usize + self.backends(resource).len()],
        };
        self.backends(resource)
            .iter()
            .copied()
            .zip(sized.iter().copied())
    }

    /// Re-frames walked resource `resource` (whose bytes are `field`; [`size`](Self::size)d
    /// first) for each of its [`backends`](Self::backends): `emit(backend, piece)` receives,
    /// backend by backend in order (calls for different backends interleave), the resource's
    /// new envelope, then per scope holding items of the backend its new envelope and those
    /// items as ranges of `field` (one range per run of consecutive items), then
    /// [`Piece::End`].
    pub fn reframe(&self, resource: usize, field: &[u8], mut emit: impl FnMut(usize, Piece<'_>)) {
        let r = self.resources[resource];
        if r.tally == u32::MAX {
            return;
        }
        let backends = &self.backends[r.backends.0 as usize..r.backends.1 as usize];
        let slots = backends.len();
        let scopes = &self.scopes[r.scopes.0 as usize..r.scopes.1 as usize];
        let tally = &self.tally[r.tally as usize..r.tally as usize + scopes.len() * slots];
        let resource_fields = &self.resource_fields[r.fields.0 as usize..r.fields.1 as usize];
        let sizes = &self.sized[r.sized as usize..r.sized as usize + slots];
        let mut header = [0u8; 11];
        // Each backend's resource: its key, its length, its other fields.
        for (&backend, size) in backends.iter().zip(sizes) {
            emit(
                backend,
                Piece::Envelope(put_header(&mut header, key(1, LEN), size.message)),
            );
            for x in resource_fields {
                emit(
                    backend,
                    Piece::Envelope(&field[x.start as usize..x.end as usize]),
                );
            }
        }
        for (s, scope) in scopes.iter().enumerate() {
            let fields = &self.scope_fields[scope.fields.0 as usize..scope.fields.1 as usize];
            for (slot, &backend) in backends.iter().enumerate() {
                let (bytes, n) = tally[s * slots + slot];
                if n == 0 {
                    continue;
                }
                let scope_len = bytes + sum_len(fields);
                emit(
                    backend,
                    Piece::Envelope(put_header(&mut header, key(2, LEN), scope_len)),
                );
                for x in fields {
                    emit(
                        backend,
                        Piece::Envelope(&field[x.start as usize..x.end as usize]),
                    );
                }
            }
            // Runs of consecutive items of one backend, each handed out once (adjacent in
            // the bytes: a scope field between two items ends a run).
            let items = &self.items[scope.items.0 as usize..scope.items.1 as usize];
            let mut i = 0;
            while i < items.len() {
                let (first, slot) = items[i];
                let mut end = first.end;
                i += 1;
                while i < items.len() && items[i].1 == slot && items[i].0.start == end {
                    end = items[i].0.end;
                    i += 1;
                }
                emit(
                    backends[slot as usize],
                    Piece::Items {
                        start: first.start as usize,
                        end: end as usize,
                    },
                );
            }
        }
        for (&backend, size) in backends.iter().zip(sizes) {
            emit(
                backend,
                Piece::End {
                    bytes: size.bytes,
                    items: size.items,
                },
            );
        }
    }
}

/// `key` and `len` as a length-delimited field's header, written to the front of `buf`.
fn put_header(buf: &mut [u8; 11], key: u32, len: usize) -> &[u8] {
    // The keys written here are field 1 or 2 of wire type LEN: one byte.
    buf[0] = key as u8;
    let mut n = 1;
    let mut v = len;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    &buf[..n + 1]
}

fn sum_len(ranges: &[Range]) -> usize {
    ranges.iter().map(|r| r.len()).sum()
}

/// Skips the value of a field with key `k`: [`Reader::skip_value`], inlined (the walk skips
/// every field of every item but the trace id, and a call per field was a quarter of it).
#[inline(always)]
fn skip(r: &mut Reader<'_>, k: u32) -> Option<()> {
    match k & 7 {
        LEN => r.bytes().ok().map(drop),
        VARINT => r.varint().ok().map(drop),
        I64 => r.fixed64().ok().map(drop),
        I32 => r.fixed32().ok().map(drop),
        _ => None,
    }
}

fn range(start: usize, end: usize) -> Range {
    // The field is under 4 GiB (checked by the walk).
    Range {
        start: start as u32,
        end: end as u32,
    }
}

fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_written_as_protobuf_writes_them() {
        for v in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            1 << 40,
        ] {
            let mut header = [0u8; 11];
            let out = put_header(&mut header, key(2, LEN), v);
            assert_eq!(out.len(), 1 + varint_len(v), "{v}");
            let mut want = vec![key(2, LEN) as u8];
            prost::encoding::encode_varint(v as u64, &mut want);
            assert_eq!(out, want, "{v}");
        }
    }
}
