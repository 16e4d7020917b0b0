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

use super::wire::{LEN, Reader, key};
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

/// One `scope_*` field: its other fields and its items, as index ranges of the splitter's lists.
#[derive(Debug, Clone, Copy)]
struct Scope {
    fields: (u32, u32),
    items: (u32, u32),
}

/// Walks and re-frames resource fields of one signal; its lists are reused from one resource
/// to the next.
#[derive(Debug)]
pub struct ItemSplitter {
    /// The item message's `trace_id` key: `Span.trace_id = 1`, `LogRecord.trace_id = 9`.
    trace_id_key: u32,
    /// The resource's fields other than `scope_*`.
    resource_fields: Vec<Range>,
    scopes: Vec<Scope>,
    /// The scopes' fields other than their items.
    scope_fields: Vec<Range>,
    /// Every item field (key, length, message) with its backend.
    items: Vec<(Range, usize)>,
    /// The backends of the walked resource, in order of first appearance.
    backends: Vec<usize>,
    /// The re-framed length of each scope for the backend being written (0: not written).
    scope_lens: Vec<usize>,
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
            resource_fields: Vec::new(),
            scopes: Vec::new(),
            scope_fields: Vec::new(),
            items: Vec::new(),
            backends: Vec::new(),
            scope_lens: Vec::new(),
        })
    }

    /// Walks the top-level resource field `field` (its key, length and message): every item's
    /// backend is `backend_of(its trace_id bytes)`, the bytes empty for an item without one.
    pub fn walk(
        &mut self,
        field: &[u8],
        backend_of: &mut impl FnMut(&[u8]) -> usize,
    ) -> Result<Walked, SplitError> {
        self.resource_fields.clear();
        self.scopes.clear();
        self.scope_fields.clear();
        self.items.clear();
        self.backends.clear();
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
        let mut empty_scope = false;
        let mut mixed = false;
        while resource.has_more() {
            let start = resource.base() + resource.pos();
            let k = resource.key().map_err(malformed)?;
            if k != key(2, LEN) {
                resource.skip_value(k & 7).map_err(malformed)?;
                let end = resource.base() + resource.pos();
                self.resource_fields.push(range(start, end));
                continue;
            }
            let mut scope = resource.message().map_err(malformed)?;
            let (fields_from, items_from) = (self.scope_fields.len(), self.items.len());
            while scope.has_more() {
                let start = scope.base() + scope.pos();
                let k = scope.key().map_err(malformed)?;
                if k != key(2, LEN) {
                    scope.skip_value(k & 7).map_err(malformed)?;
                    let end = scope.base() + scope.pos();
                    self.scope_fields.push(range(start, end));
                    continue;
                }
                let mut item = scope.message().map_err(malformed)?;
                let end = scope.base() + scope.pos();
                // The last `trace_id` counts, as a decoder reads a field given twice.
                let mut trace_id: &[u8] = &[];
                while item.has_more() {
                    let k = item.key().map_err(malformed)?;
                    if k == self.trace_id_key {
                        trace_id = item.bytes().map_err(malformed)?;
                    } else {
                        item.skip_value(k & 7).map_err(malformed)?;
                    }
                }
                let backend = backend_of(trace_id);
                match self.backends.first() {
                    None => self.backends.push(backend),
                    Some(&first) if first == backend => {}
                    Some(_) => {
                        mixed = true;
                        if !self.backends.contains(&backend) {
                            self.backends.push(backend);
                        }
                    }
                }
                self.items.push((range(start, end), backend));
            }
            empty_scope |= self.items.len() == items_from;
            self.scopes.push(Scope {
                fields: (fields_from as u32, self.scope_fields.len() as u32),
                items: (items_from as u32, self.items.len() as u32),
            });
        }
        Ok(Walked {
            items: self.items.len(),
            only: match (mixed, self.backends.first()) {
                (false, Some(&b)) => Some(b),
                _ => None,
            },
            empty_scope,
        })
    }

    /// After a [`walk`](Self::walk) of `field`: appends the re-framed resource field of every
    /// backend its items go to onto `outs[backend]`, and calls `placed(backend, start, end,
    /// items)` with where it was written.
    pub fn write(
        &mut self,
        field: &[u8],
        outs: &mut [Vec<u8>],
        mut placed: impl FnMut(usize, usize, usize, usize),
    ) -> Result<(), SplitError> {
        let resource_fields: usize = self.resource_fields.iter().map(|r| r.len()).sum();
        for bi in 0..self.backends.len() {
            let b = self.backends[bi];
            let out = outs
                .get_mut(b)
                .ok_or(SplitError("a backend out of range"))?;
            // Each scope's length for this backend, then the resource's.
            self.scope_lens.clear();
            let mut resource_len = resource_fields;
            let mut items = 0;
            for s in &self.scopes {
                let mine: usize = self.items[s.items.0 as usize..s.items.1 as usize]
                    .iter()
                    .filter(|(_, ib)| *ib == b)
                    .map(|(r, _)| {
                        items += 1;
                        r.len()
                    })
                    .sum();
                if mine == 0 {
                    self.scope_lens.push(0);
                    continue;
                }
                let len = mine
                    + self.scope_fields[s.fields.0 as usize..s.fields.1 as usize]
                        .iter()
                        .map(|r| r.len())
                        .sum::<usize>();
                self.scope_lens.push(len);
                resource_len += 1 + varint_len(len) + len;
            }
            let start = out.len();
            out.reserve(1 + varint_len(resource_len) + resource_len);
            out.push(key(1, LEN) as u8);
            put_varint(out, resource_len);
            for r in &self.resource_fields {
                out.extend_from_slice(&field[r.start as usize..r.end as usize]);
            }
            for (s, &len) in self.scopes.iter().zip(&self.scope_lens) {
                if len == 0 {
                    continue;
                }
                out.push(key(2, LEN) as u8);
                put_varint(out, len);
                for r in &self.scope_fields[s.fields.0 as usize..s.fields.1 as usize] {
                    out.extend_from_slice(&field[r.start as usize..r.end as usize]);
                }
                for (r, _) in self.items[s.items.0 as usize..s.items.1 as usize]
                    .iter()
                    .filter(|(_, ib)| *ib == b)
                {
                    out.extend_from_slice(&field[r.start as usize..r.end as usize]);
                }
            }
            placed(b, start, out.len(), items);
        }
        Ok(())
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
