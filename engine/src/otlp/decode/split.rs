//! Splitting a clean request's bytes by trace id without decoding it: the wire-level half of
//! routing a [`crate::payload::WireForm`] (the `loadbalancing` exporter's `traceID` key).
//!
//! One top-level `resource_spans` (or `resource_logs`) field at a time: [`ItemSplitter::walk`]
//! reads its envelope, each `scope_*` envelope and, inside each item (span, log record), only
//! its `trace_id`, asking the caller which backend that id goes to and recording byte ranges.
//! When every item of the resource goes to one backend (and no scope is empty) the caller
//! takes the resource field as it is; otherwise [`ItemSplitter::write`] re-frames it for each
//! backend: the resource's other fields (`resource`, `schema_url`) copied as they are, each
//! scope holding items of that backend with its other fields (`scope`, `schema_url`) copied as
//! they are and its items' fields copied, length prefixes recomputed. A scope left without
//! items is dropped, as the decoded split drops containers without children
//! ([`crate::payload::Payload::partition`]), so both give the same parts.
//!
//! The bytes are a wire form's, which only a clean skim makes ([`super::skim`]): the fields are
//! the known ones, well formed. The walk still checks every length it follows and says
//! [`SplitError`] rather than trusting them (the caller then routes the decoded tables).
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

/// One `scope_*` field: its other fields, its items and its items' tally per backend, as index
/// ranges of the splitter's lists.
#[derive(Debug, Clone, Copy)]
struct Scope {
    fields: (u32, u32),
    items: (u32, u32),
    tallies: (u32, u32),
}

/// The items of one scope that go to one backend: how many, and their bytes. Kept as the walk
/// meets the items so that sizing and writing a part read one entry per scope instead of
/// going through every item of the scope again for every backend (which was a tenth of the
/// split: BENCHMARKS.md, "Load balancing while the bytes are hot").
#[derive(Debug, Clone, Copy)]
struct Tally {
    backend: usize,
    items: usize,
    bytes: usize,
}

/// One walked resource field: index ranges of the splitter's lists.
#[derive(Debug, Clone, Copy)]
struct Resource {
    fields: (u32, u32),
    scopes: (u32, u32),
    backends: (u32, u32),
}

/// Walks and re-frames the resource fields of one request (or of a batch of them): each
/// [`walk`](Self::walk) appends a resource to its lists, so that every backend's part can be
/// sized exactly ([`framed_len`](Self::framed_len)) before any is written
/// ([`write`](Self::write)); the lists are reused after a [`clear`](Self::clear).
#[derive(Debug)]
pub struct ItemSplitter {
    signal: Signal,
    /// The item message's `trace_id` key: `Span.trace_id = 1`, `LogRecord.trace_id = 9`.
    trace_id_key: u32,
    resources: Vec<Resource>,
    /// The resources' fields other than `scope_*`, as ranges of their resource field.
    resource_fields: Vec<Range>,
    scopes: Vec<Scope>,
    /// The scopes' fields other than their items.
    scope_fields: Vec<Range>,
    /// Every item field (key, length, message) with its backend.
    items: Vec<(Range, usize)>,
    /// Each scope's items per backend, in order of first appearance in the scope.
    tallies: Vec<Tally>,
    /// Each resource's backends, in order of first appearance.
    backends: Vec<usize>,
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
            signal,
            trace_id_key,
            resources: Vec::new(),
            resource_fields: Vec::new(),
            scopes: Vec::new(),
            scope_fields: Vec::new(),
            items: Vec::new(),
            tallies: Vec::new(),
            backends: Vec::new(),
        })
    }

    /// The signal whose requests it splits.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Items its lists have room for without growing.
    pub fn item_capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Forgets every walked resource.
    pub fn clear(&mut self) {
        self.resources.clear();
        self.resource_fields.clear();
        self.scopes.clear();
        self.scope_fields.clear();
        self.items.clear();
        self.tallies.clear();
        self.backends.clear();
    }

    /// Walks the top-level resource field `field` (its key, length and message): every item's
    /// backend is `backend_of(its trace_id bytes)`, the bytes empty for an item without one.
    /// The resource is the next index (from 0 after a [`clear`](Self::clear)) for
    /// [`framed_len`](Self::framed_len) and [`write`](Self::write).
    ///
    /// `trace_id_leads`: the skim found every item's first field to be its only trace id
    /// ([`super::SkimmedResource::trace_id_leads`]), so the walk reads that field and steps
    /// over the rest of the item by its length — one field per span instead of every field.
    /// An item whose first field is not its trace id anyway is walked whole. Alone, this
    /// gained nothing end to end (the agent's walk waits on cache misses, not on parsing);
    /// with [`prefetch`] the two together cut the load-balancing agent's CPU per span by ~7 %
    /// (BENCHMARKS.md, "The walk with its bytes asked for ahead").
    pub fn walk(
        &mut self,
        field: &[u8],
        trace_id_leads: bool,
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
        let mut mixed = false;
        let mut prefetched = 0;
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
            let (scope_fields_from, scope_items_from, scope_tallies_from) = (
                self.scope_fields.len(),
                self.items.len(),
                self.tallies.len(),
            );
            while scope.has_more() {
                let start = scope.base() + scope.pos();
                prefetch(field, &mut prefetched, start + PREFETCH_DISTANCE);
                let k = scope.key().map_err(malformed)?;
                if k != key(2, LEN) {
                    skip(&mut scope, k).ok_or(SplitError("malformed protobuf"))?;
                    let end = scope.base() + scope.pos();
                    self.scope_fields.push(range(start, end));
                    continue;
                }
                let mut item = scope.message().map_err(malformed)?;
                let end = scope.base() + scope.pos();
                let trace_id =
                    if trace_id_leads && item.all().first() == Some(&(self.trace_id_key as u8)) {
                        item.key().map_err(malformed)?;
                        item.bytes().map_err(malformed)?
                    } else {
                        // The last `trace_id` counts, as a decoder reads a field given twice.
                        let mut trace_id: &[u8] = &[];
                        while item.has_more() {
                            let k = item.key().map_err(malformed)?;
                            if k == self.trace_id_key {
                                trace_id = item.bytes().map_err(malformed)?;
                            } else {
                                skip(&mut item, k).ok_or(SplitError("malformed protobuf"))?;
                            }
                        }
                        trace_id
                    };
                let backend = backend_of(trace_id);
                let mine = &self.backends[backends_from..];
                match mine.first() {
                    None => self.backends.push(backend),
                    Some(&first) if first == backend => {}
                    Some(_) => {
                        mixed = true;
                        if !mine.contains(&backend) {
                            self.backends.push(backend);
                        }
                    }
                }
                let item = range(start, end);
                match self.tallies[scope_tallies_from..]
                    .iter_mut()
                    .find(|t| t.backend == backend)
                {
                    Some(t) => {
                        t.items += 1;
                        t.bytes += item.len();
                    }
                    None => self.tallies.push(Tally {
                        backend,
                        items: 1,
                        bytes: item.len(),
                    }),
                }
                self.items.push((item, backend));
            }
            empty_scope |= self.items.len() == scope_items_from;
            self.scopes.push(Scope {
                fields: (scope_fields_from as u32, self.scope_fields.len() as u32),
                items: (scope_items_from as u32, self.items.len() as u32),
                tallies: (scope_tallies_from as u32, self.tallies.len() as u32),
            });
        }
        self.resources.push(Resource {
            fields: (fields_from as u32, self.resource_fields.len() as u32),
            scopes: (scopes_from as u32, self.scopes.len() as u32),
            backends: (backends_from as u32, self.backends.len() as u32),
        });
        Ok(Walked {
            items: self.items.len() - items_from,
            only: match (mixed, self.backends.get(backends_from)) {
                (false, Some(&b)) => Some(b),
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

    /// The bytes of walked resource `resource` re-framed for `backend` (key and length
    /// included), and its items; `(0, 0)` when none of its items goes there.
    pub fn framed_len(&self, resource: usize, backend: usize) -> (usize, usize) {
        let r = &self.resources[resource];
        let mut len = sum_len(&self.resource_fields[r.fields.0 as usize..r.fields.1 as usize]);
        let mut items = 0;
        for s in &self.scopes[r.scopes.0 as usize..r.scopes.1 as usize] {
            let (scope_len, n) = self.scope_len(s, backend);
            if n > 0 {
                items += n;
                len += 1 + varint_len(scope_len) + scope_len;
            }
        }
        if items == 0 {
            return (0, 0);
        }
        (1 + varint_len(len) + len, items)
    }

    /// A scope's message length holding `backend`'s items, and how many.
    fn scope_len(&self, s: &Scope, backend: usize) -> (usize, usize) {
        match self.tallies[s.tallies.0 as usize..s.tallies.1 as usize]
            .iter()
            .find(|t| t.backend == backend)
        {
            Some(t) => (
                t.bytes + sum_len(&self.scope_fields[s.fields.0 as usize..s.fields.1 as usize]),
                t.items,
            ),
            None => (0, 0),
        }
    }

    /// Appends walked resource `resource` (whose bytes are `field`) re-framed for `backend`
    /// to `out`: its other fields as they are, each scope holding items of `backend` with
    /// its other fields as they are and those items, lengths recomputed. Returns the bytes
    /// written ([`framed_len`](Self::framed_len)'s).
    pub fn write(&self, resource: usize, field: &[u8], backend: usize, out: &mut Vec<u8>) -> usize {
        let (total, _) = self.framed_len(resource, backend);
        if total == 0 {
            return 0;
        }
        let r = &self.resources[resource];
        let copy = |out: &mut Vec<u8>, ranges: &[Range]| {
            for x in ranges {
                out.extend_from_slice(&field[x.start as usize..x.end as usize]);
            }
        };
        let start = out.len();
        out.reserve(total);
        let resource_fields = &self.resource_fields[r.fields.0 as usize..r.fields.1 as usize];
        let mut len = sum_len(resource_fields);
        let scopes = &self.scopes[r.scopes.0 as usize..r.scopes.1 as usize];
        for s in scopes {
            let (scope_len, n) = self.scope_len(s, backend);
            if n > 0 {
                len += 1 + varint_len(scope_len) + scope_len;
            }
        }
        out.push(key(1, LEN) as u8);
        put_varint(out, len);
        copy(out, resource_fields);
        for s in scopes {
            let (scope_len, n) = self.scope_len(s, backend);
            if n == 0 {
                continue;
            }
            out.push(key(2, LEN) as u8);
            put_varint(out, scope_len);
            copy(
                out,
                &self.scope_fields[s.fields.0 as usize..s.fields.1 as usize],
            );
            for (x, _) in self.items[s.items.0 as usize..s.items.1 as usize]
                .iter()
                .filter(|(_, b)| *b == backend)
            {
                out.extend_from_slice(&field[x.start as usize..x.end as usize]);
            }
        }
        out.len() - start
    }
}

/// How far ahead of the span being walked its bytes are asked into the cache.
const PREFETCH_DISTANCE: usize = 2048;

/// Asks the CPU to bring `field[*done..upto]` into the cache, a line at a time, and moves
/// `*done` on. Why: the walk follows each span's length to the next span, a chain of
/// dependent loads, and in the agent the batch it walks (~2.5 MB received over up to 200 ms)
/// is out of the cache, so each span cost a miss the next could not overlap (walking one field
/// per span without this, 64 % of the walk's samples sat on the load of a span's first byte).
/// The bytes are sequential, so lines asked for this far ahead arrive while the spans before
/// them are walked.
/// Elsewhere than on x86-64 (no stable prefetch intrinsic) it does nothing.
#[inline(always)]
fn prefetch(field: &[u8], done: &mut usize, upto: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let upto = upto.min(field.len());
        while *done < upto {
            // SAFETY: `*done < field.len()`, so the pointer is inside `field`; a prefetch
            // neither reads into the program nor faults.
            #[allow(unused_unsafe)]
            unsafe {
                use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T0>(field.as_ptr().add(*done).cast());
            }
            *done += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (field, done, upto);
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

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut want = Vec::new();
            prost::encoding::encode_varint(v as u64, &mut want);
            assert_eq!(out, want, "{v}");
        }
    }
}
