//! Fresh trace ids for every request the load generator sends.
//!
//! Requests come from a small pool of pre-encoded bodies, so without this every `pool`-th
//! request would repeat the same trace ids: tail sampling would see old traces grow forever
//! and merge their decisions. Instead, each send gives every trace of its body a new id
//! `TraceIds::id(n)` from a run-wide counter `n`. The ids are rewritten while the body is
//! copied into the outgoing buffer (the gRPC frame buffer, which tonic fills with a copy
//! anyway, or the HTTP body), so the cost is one pass over a body that is copied regardless,
//! plus one 16-byte write per span.
//!
//! Where the ids sit is found once per pool entry by walking the protobuf wire format
//! (`IdSlots::find`), not by re-encoding: spans of one trace share one slot group.

use std::collections::HashMap;

use bytes::BufMut;
use sluice_engine::Signal;

/// A bijective 64-bit mixer (splitmix64's finalizer): distinct inputs give distinct outputs,
/// and every output bit depends on every input bit. Maps 0 to 0.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The run's trace id sequence: `id(n)` for n = 0, 1, 2, ... are pairwise distinct (the first
/// eight bytes are a bijection of `seed + n`), random-looking in all 16 bytes (the Collector's
/// `probabilistic` policy hashes the whole id with FNV-1a, which needs random ids), and never
/// all zero (an invalid trace id).
#[derive(Clone, Copy, Debug)]
pub struct TraceIds {
    seed: u64,
}

impl TraceIds {
    pub fn new(seed: u64) -> TraceIds {
        TraceIds { seed }
    }

    /// A seed that differs between runs (and between generators started at once against the
    /// same gateway), so two runs do not repeat each other's ids either.
    pub fn for_this_run() -> TraceIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        TraceIds::new(mix64(nanos ^ (u64::from(std::process::id()) << 40)))
    }

    pub fn id(&self, n: u64) -> [u8; 16] {
        let x = self.seed.wrapping_add(n);
        // `hi` is 0 only for x = 0, and then `lo` = mix64(golden ratio) != 0.
        let hi = mix64(x);
        let lo = mix64(x ^ 0x9e37_79b9_7f4a_7c15);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&hi.to_be_bytes());
        id[8..].copy_from_slice(&lo.to_be_bytes());
        id
    }
}

/// Where the trace ids of one encoded request body are, and which of the body's traces each
/// belongs to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdSlots {
    /// (offset of the 16 id bytes in the body, index of the trace in this body), ascending.
    slots: Vec<(usize, u32)>,
    traces: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed protobuf at byte {offset}: {what}")]
pub struct WireError {
    offset: usize,
    what: &'static str,
}

/// Field numbers from the request down to the message holding the trace id, and the trace id's
/// field: `ExportTraceServiceRequest.resource_spans(1) > ResourceSpans.scope_spans(2) >
/// ScopeSpans.spans(2) > Span.trace_id(1)`; logs: `resource_logs(1) > scope_logs(2) >
/// log_records(2) > LogRecord.trace_id(9)`. Metrics carry trace ids only in exemplars, which the
/// generator does not make.
fn id_path(signal: Signal) -> Option<(&'static [u32], u32)> {
    match signal {
        Signal::Traces => Some((&[1, 2, 2], 1)),
        Signal::Logs => Some((&[1, 2, 2], 9)),
        Signal::Metrics => None,
    }
}

impl IdSlots {
    /// Finds the trace id fields of an encoded `Export*ServiceRequest`. Items with the same id
    /// in the body are one trace (they get one new id per send).
    pub fn find(signal: Signal, body: &[u8]) -> Result<IdSlots, WireError> {
        let Some((path, leaf)) = id_path(signal) else {
            return Ok(IdSlots::default());
        };
        let mut offsets = Vec::new();
        walk(body, 0, path, leaf, &mut offsets)?;
        let mut trace_of: HashMap<&[u8], u32> = HashMap::new();
        let slots = offsets
            .into_iter()
            .map(|off| {
                let next = trace_of.len() as u32;
                (off, *trace_of.entry(&body[off..off + 16]).or_insert(next))
            })
            .collect();
        Ok(IdSlots {
            slots,
            traces: trace_of.len() as u32,
        })
    }

    /// Distinct traces in the body: how many ids one send uses.
    pub fn traces(&self) -> u64 {
        u64::from(self.traces)
    }

    /// Writes `body` into `dst`, trace `k` of the body getting `ids.id(first + k)`.
    pub fn write_fresh(&self, body: &[u8], ids: &TraceIds, first: u64, dst: &mut impl BufMut) {
        let mut at = 0;
        for &(off, trace) in &self.slots {
            dst.put_slice(&body[at..off]);
            dst.put_slice(&ids.id(first.wrapping_add(u64::from(trace))));
            at = off + 16;
        }
        dst.put_slice(&body[at..]);
    }
}

fn varint(buf: &[u8], pos: &mut usize, base: usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError {
                offset: base + *pos,
                what: "truncated varint",
            });
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError {
        offset: base + *pos,
        what: "varint longer than 10 bytes",
    })
}

/// Walks the fields of the message in `buf` (at `base` in the body): descends into `path[0]`
/// (length-delimited) fields, and at the end of the path records the offsets of 16-byte `leaf`
/// fields.
fn walk(
    buf: &[u8],
    base: usize,
    path: &[u32],
    leaf: u32,
    out: &mut Vec<usize>,
) -> Result<(), WireError> {
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos, base)?;
        let (field, wire_type) = ((key >> 3) as u32, key & 7);
        match wire_type {
            0 => {
                varint(buf, &mut pos, base)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = varint(buf, &mut pos, base)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(WireError {
                        offset: base + pos,
                        what: "length past the end",
                    })?;
                match path.split_first() {
                    Some((&want, rest)) if field == want => {
                        walk(&buf[pos..end], base + pos, rest, leaf, out)?
                    }
                    None if field == leaf && len == 16 => out.push(base + pos),
                    _ => {}
                }
                pos = end;
            }
            _ => {
                return Err(WireError {
                    offset: base + pos,
                    what: "unsupported wire type",
                });
            }
        }
    }
    if pos > buf.len() {
        return Err(WireError {
            offset: base + buf.len(),
            what: "fixed-size field past the end",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::super::shapes::{self, Rng, Shape};
    use super::*;

    fn shape() -> Shape {
        Shape {
            spans_per_trace: 8,
            services: 5,
            error_rate: 0.1,
            noise_rate: 0.1,
            latency_ms: 50.0,
            resources: shapes::Resources::Enriched,
        }
    }

    fn spans(req: &ExportTraceServiceRequest) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
        req.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect()
    }

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let ids = TraceIds::new(0);
        let mut seen = HashSet::new();
        for n in 0..200_000 {
            let id = ids.id(n);
            assert_ne!(id, [0; 16]);
            assert!(seen.insert(id), "id({n}) repeated");
        }
        // Every byte varies (the probabilistic sampler hashes all of them).
        for byte in 0..16 {
            let values: HashSet<u8> = (0..1000).map(|n| ids.id(n)[byte]).collect();
            assert!(
                values.len() > 200,
                "byte {byte} takes {} values",
                values.len()
            );
        }
    }

    #[test]
    fn rewriting_changes_only_trace_ids_and_keeps_traces_together() {
        let req = shapes::traces(600, &shape(), &mut Rng(7), 1_800_000_000_000_000_000);
        let body = req.encode_to_vec();
        let slots = IdSlots::find(Signal::Traces, &body).unwrap();
        let original = spans(&req);
        assert_eq!(slots.slots.len(), original.len(), "one slot per span");
        let distinct: HashSet<&Vec<u8>> = original.iter().map(|s| &s.trace_id).collect();
        assert_eq!(slots.traces(), distinct.len() as u64);

        let ids = TraceIds::new(42);
        let mut out = Vec::new();
        slots.write_fresh(&body, &ids, 1000, &mut out);
        assert_eq!(out.len(), body.len());
        let rewritten = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        let fresh = spans(&rewritten);
        let expected: HashSet<[u8; 16]> =
            (1000..1000 + slots.traces()).map(|n| ids.id(n)).collect();
        for (a, b) in original.iter().zip(&fresh) {
            assert!(expected.contains(b.trace_id.as_slice()));
            // Everything but the trace id is unchanged.
            let mut b = (*b).clone();
            b.trace_id = a.trace_id.clone();
            assert_eq!(**a, b);
        }
        // Two spans share a new id exactly when they shared the old one.
        for (i, a) in original.iter().enumerate() {
            for (j, b) in original.iter().enumerate() {
                assert_eq!(
                    a.trace_id == b.trace_id,
                    fresh[i].trace_id == fresh[j].trace_id
                );
            }
        }
    }

    #[test]
    fn log_records_get_fresh_ids_too_and_metrics_pass_through() {
        let req = shapes::logs(50, &shape(), &mut Rng(3), 1_800_000_000_000_000_000);
        let body = req.encode_to_vec();
        let slots = IdSlots::find(Signal::Logs, &body).unwrap();
        assert_eq!(slots.traces(), 50);
        let mut out = Vec::new();
        slots.write_fresh(&body, &TraceIds::new(1), 0, &mut out);
        let logs = ExportLogsServiceRequest::decode(out.as_slice()).unwrap();
        let got: HashSet<Vec<u8>> = logs
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(|l| l.trace_id.clone())
            .collect();
        let want: HashSet<Vec<u8>> = (0..50).map(|n| TraceIds::new(1).id(n).to_vec()).collect();
        assert_eq!(got, want);

        let metrics =
            shapes::metrics(100, &shape(), &mut Rng(3), 1_800_000_000_000_000_000).encode_to_vec();
        let slots = IdSlots::find(Signal::Metrics, &metrics).unwrap();
        assert_eq!(slots.traces(), 0);
        let mut out = Vec::new();
        slots.write_fresh(&metrics, &TraceIds::new(1), 0, &mut out);
        assert_eq!(out, metrics);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let body =
            shapes::traces(50, &shape(), &mut Rng(5), 1_800_000_000_000_000_000).encode_to_vec();
        for cut in [1, 2, 3, 10, body.len() / 2, body.len() - 1] {
            // A truncated body either fails cleanly or (cut at a field boundary) parses.
            let _ = IdSlots::find(Signal::Traces, &body[..cut]);
        }
        assert_eq!(
            IdSlots::find(Signal::Traces, &[0x0a, 0x05, 0x00]),
            Err(WireError {
                offset: 2,
                what: "length past the end"
            })
        );
        assert!(
            IdSlots::find(Signal::Traces, &[0x0b]).is_err(),
            "wire type 3"
        );
    }

    proptest::proptest! {
        /// Any bytes: an error or slots inside the body, never a panic.
        #[test]
        fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(slots) = IdSlots::find(Signal::Traces, &body) {
                for &(off, _) in &slots.slots {
                    proptest::prop_assert!(off + 16 <= body.len());
                }
                let mut out = Vec::new();
                slots.write_fresh(&body, &TraceIds::new(0), 0, &mut out);
                proptest::prop_assert_eq!(out.len(), body.len());
            }
        }

        /// Any generated request: rewriting keeps every byte but the ids, and gives each of
        /// its traces one new id.
        #[test]
        fn generated_requests_keep_all_but_their_ids(
            seed in proptest::num::u64::ANY,
            span_count in 1usize..300,
            per_trace in 1usize..12,
            first in proptest::num::u64::ANY,
        ) {
            let shape = Shape { spans_per_trace: per_trace, ..shape() };
            let req = shapes::traces(span_count, &shape, &mut Rng(seed), 1_800_000_000_000_000_000);
            let body = req.encode_to_vec();
            let slots = IdSlots::find(Signal::Traces, &body).unwrap();
            let ids = TraceIds::new(seed);
            let mut out = Vec::new();
            slots.write_fresh(&body, &ids, first, &mut out);
            let mut rewritten = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
            let fresh: HashSet<Vec<u8>> = spans(&rewritten).iter().map(|s| s.trace_id.clone()).collect();
            proptest::prop_assert_eq!(fresh.len() as u64, slots.traces());
            let want: HashSet<Vec<u8>> = (0..slots.traces())
                .map(|k| ids.id(first.wrapping_add(k)).to_vec())
                .collect();
            proptest::prop_assert_eq!(fresh, want);
            // Put the old ids back: the request is the original.
            let old: Vec<Vec<u8>> = spans(&req).iter().map(|s| s.trace_id.clone()).collect();
            let mut k = 0;
            for rs in &mut rewritten.resource_spans {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        s.trace_id = old[k].clone();
                        k += 1;
                    }
                }
            }
            proptest::prop_assert_eq!(rewritten, req);
        }
    }
}
