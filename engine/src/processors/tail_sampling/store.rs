//! Where undecided spans wait: one [`Shard`] per lock, each a time wheel of [`Bucket`]s keyed
//! by the tick at which their traces are decided.
//!
//! A trace belongs to the bucket of its deadline (first arrival + `decision_wait`, rounded up
//! to a tick) for its whole life, and every span of it — the first ones and the late ones — is
//! appended to that bucket. So when a bucket fires, its spans are exactly the spans of the
//! traces being decided: no search, no partial segments left behind.
//!
//! Spans arrive as [`Part`]s (a `Payload` filtered to the bucket's rows, plus each row's trace
//! ordinal in the bucket). Parts are *sealed* into a compact [`Segment`] once a bucket holds
//! [`SEAL_SPANS`] unsealed spans (and, at each tick, when it holds [`SEAL_MIN_SPANS`]): see
//! [`super::segment`] for the encoding, which removes what makes decoded spans large in memory
//! (mostly-null typed value columns, repeated strings, wide integers) without a general-purpose
//! compressor. A bucket's segments are read once, when it fires, and only for the rows kept.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroUsize;

use hashbrown::HashMap;
use lru::LruCache;

use super::policy::{Part, TraceId};
pub use super::segment::Segment;
use crate::payload::{Payload, PayloadError};
use crate::schema::Table;

/// Unsealed spans in a bucket that trigger sealing on arrival.
pub const SEAL_SPANS: usize = 4096;
/// At each tick, buckets with at least this many unsealed spans are sealed (fewer are left as
/// they are: small segments carry more per-segment overhead, and what stays unsealed is bounded
/// by `SEAL_MIN_SPANS` per bucket).
pub const SEAL_MIN_SPANS: usize = 256;

/// The traces decided at one tick, and all their spans.
#[derive(Default)]
pub struct Bucket {
    pub ids: Vec<TraceId>,
    /// The clock when the first trace of this bucket arrived.
    pub first_seen: u64,
    pub segments: Vec<Segment>,
    pub pending: Vec<Part>,
    pub pending_spans: usize,
    pub spans: usize,
    /// Bytes held (segments, unsealed parts, trace ids), kept up to date for the gauge.
    pub bytes: usize,
    /// What the spans took as Arrow tables when they came, the size kept traces are released
    /// at again (sealing stores them in ~0.4× of it).
    pub arrow_bytes: usize,
    /// The growth charged to the memory account for this bucket ([`Bucket::regrow`]).
    pub growth: usize,
}

impl Bucket {
    /// Seals the unsealed parts into one segment; returns the change in resident bytes.
    fn seal(&mut self) -> Result<isize, PayloadError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let before: usize = self.pending.iter().map(part_bytes).sum();
        // If sealing fails (an internal error) the parts stay pending; sealing is tried again
        // later, and a bucket that cannot be sealed when it fires is counted as failed.
        let seg = Segment::seal(&self.pending)?;
        self.pending.clear();
        self.pending_spans = 0;
        let after = seg.resident_bytes();
        self.segments.push(seg);
        self.bytes = self.bytes + after - before;
        Ok(after as isize - before as isize)
    }

    /// Sets the growth expected of this bucket when it is released: what sealing saved,
    /// times the share of spans kept (in per mille) — released kept traces take their Arrow
    /// size again. Returns the change, for the memory account.
    pub fn regrow(&mut self, keep_per_mille: u32) -> isize {
        let saved = self.arrow_bytes.saturating_sub(self.bytes);
        let growth = saved * keep_per_mille.min(1000) as usize / 1000;
        let delta = growth as isize - self.growth as isize;
        self.growth = growth;
        delta
    }

    /// The bucket's traces and all its spans as segments, in arrival order (unsealed parts
    /// are sealed now).
    pub fn into_segments(mut self) -> Result<(Vec<TraceId>, Vec<Segment>), PayloadError> {
        self.seal()?;
        Ok((self.ids, self.segments))
    }
}

pub fn part_bytes(p: &Part) -> usize {
    p.payload.memory_size() + p.ordinals.capacity() * 4
}

/// Decisions remembered after a trace's spans are released, so late spans follow them.
///
/// With `decision_cache` sizes set, two LRU caches as in the Collector. A kind whose cache size
/// is 0 uses a FIFO of the most recent `fallback` decisions instead: the Collector keeps a
/// decided trace in its trace map until `num_traces` newer traces push it out, which is the
/// same reach.
pub struct DecisionMemory {
    sampled: Option<LruCache<TraceId, u64>>,
    not_sampled: Option<LruCache<TraceId, u64>>,
    recent: HashMap<TraceId, (bool, u64)>,
    recent_order: VecDeque<TraceId>,
    recent_cap: usize,
}

impl DecisionMemory {
    pub fn new(sampled_cache: usize, non_sampled_cache: usize, fallback: usize) -> Self {
        DecisionMemory {
            sampled: NonZeroUsize::new(sampled_cache).map(LruCache::new),
            not_sampled: NonZeroUsize::new(non_sampled_cache).map(LruCache::new),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            recent_cap: fallback.max(1),
        }
    }

    /// `Some((sampled, decided_at))` if the trace was decided and is still remembered.
    pub fn get(&mut self, id: &TraceId) -> Option<(bool, u64)> {
        if let Some(at) = self.sampled.as_mut().and_then(|c| c.get(id)) {
            return Some((true, *at));
        }
        if let Some(at) = self.not_sampled.as_mut().and_then(|c| c.get(id)) {
            return Some((false, *at));
        }
        self.recent.get(id).copied()
    }

    pub fn record(&mut self, id: TraceId, sampled: bool, at: u64) {
        let cache = if sampled {
            self.sampled.as_mut()
        } else {
            self.not_sampled.as_mut()
        };
        match cache {
            Some(c) => {
                c.put(id, at);
            }
            None => {
                if self.recent.insert(id, (sampled, at)).is_none() {
                    self.recent_order.push_back(id);
                }
                while self.recent_order.len() > self.recent_cap {
                    if let Some(old) = self.recent_order.pop_front() {
                        self.recent.remove(&old);
                    }
                }
            }
        }
    }
}

/// Where a span goes on arrival.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Buffered: the trace's bucket (fire tick) and ordinal in it.
    Buffer(u64, u32),
    /// Its trace was decided: sampled (bool) at the given time.
    Decided(bool, u64),
}

/// One lock's worth of the store.
pub struct Shard {
    /// Undecided traces: fire tick of their bucket, ordinal in it.
    pub traces: HashMap<TraceId, (u64, u32)>,
    pub wheel: BTreeMap<u64, Bucket>,
    pub memory: DecisionMemory,
    /// The share of decided spans kept, in per mille (a running average over decisions; all
    /// of them until the first decision): how much of a bucket is expected to be released.
    pub keep_per_mille: u32,
}

/// What ingesting one payload into one shard did.
#[derive(Default, Debug)]
pub struct Ingested {
    pub new_traces: u64,
    pub buffered_spans: usize,
    /// Change in resident bytes.
    pub bytes: isize,
    /// Change in the growth expected at release ([`Bucket::regrow`]).
    pub growth: isize,
    /// Late spans by cached decision.
    pub late_sampled_spans: usize,
    pub late_not_sampled_spans: usize,
    /// Age in seconds (now − decision time) of each late trace group.
    pub late_ages: Vec<f64>,
}

impl Shard {
    pub fn new(memory: DecisionMemory) -> Self {
        Shard {
            traces: HashMap::new(),
            wheel: BTreeMap::new(),
            memory,
            keep_per_mille: 1000,
        }
    }

    /// Routes `rows` of `payload` (their trace ids in `ids`, indexed by row): spans of decided
    /// traces set `pass[row]` when sampled; the rest are appended to their buckets, a new trace
    /// going to the bucket of `new_fire_tick`.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest(
        &mut self,
        payload: &Payload,
        ids: &[TraceId],
        rows: &[u32],
        now: u64,
        new_fire_tick: u64,
        pass: &mut [bool],
    ) -> Result<Ingested, PayloadError> {
        let mut out = Ingested::default();
        // (fire tick, mask over the payload's span rows, ordinals in row order)
        let mut groups: Vec<(u64, Vec<bool>, Vec<u32>)> = Vec::new();
        let mut last: Option<(TraceId, Route)> = None;
        for &row in rows {
            let id = &ids[row as usize];
            let route = match last {
                Some((prev, r)) if prev == *id => r,
                _ => {
                    let r = self.route(id, now, new_fire_tick, &mut out);
                    if let Route::Decided(_, at) = r {
                        out.late_ages.push(now.saturating_sub(at) as f64 / 1e9);
                    }
                    last = Some((*id, r));
                    r
                }
            };
            match route {
                Route::Decided(true, _) => {
                    pass[row as usize] = true;
                    out.late_sampled_spans += 1;
                }
                Route::Decided(false, _) => out.late_not_sampled_spans += 1,
                Route::Buffer(tick, ordinal) => {
                    let g = match groups.iter().position(|g| g.0 == tick) {
                        Some(i) => i,
                        None => {
                            groups.push((tick, vec![false; pass.len()], Vec::new()));
                            groups.len() - 1
                        }
                    };
                    groups[g].1[row as usize] = true;
                    groups[g].2.push(ordinal);
                }
            }
        }
        for (tick, mask, ordinals) in groups {
            let mut part_payload = if ordinals.len() == pass.len() {
                payload.clone() // every span of the payload: no copy
            } else {
                payload.filter(Table::Spans, &mask)?
            };
            // Buffered until sealed: built now, not holding the whole payload's tables.
            part_payload.settle();
            let part = Part {
                payload: part_payload,
                ordinals,
            };
            let bucket = self
                .wheel
                .get_mut(&tick)
                .expect("routed to an existing bucket");
            let size = part_bytes(&part);
            let spans = part.ordinals.len();
            bucket.pending.push(part);
            bucket.pending_spans += spans;
            bucket.spans += spans;
            bucket.bytes += size;
            bucket.arrow_bytes += size;
            out.buffered_spans += spans;
            out.bytes += size as isize;
            if bucket.pending_spans >= SEAL_SPANS {
                // The spans are buffered either way: a failed seal leaves them unsealed.
                match bucket.seal() {
                    Ok(d) => out.bytes += d,
                    Err(e) => tracing::error!(error = %e, "tail_sampling: cannot seal spans"),
                }
                out.growth += bucket.regrow(self.keep_per_mille);
            }
        }
        Ok(out)
    }

    fn route(&mut self, id: &TraceId, now: u64, new_fire_tick: u64, out: &mut Ingested) -> Route {
        if let Some(&(tick, ordinal)) = self.traces.get(id) {
            return Route::Buffer(tick, ordinal);
        }
        if let Some((sampled, at)) = self.memory.get(id) {
            return Route::Decided(sampled, at);
        }
        let bucket = self.wheel.entry(new_fire_tick).or_insert_with(|| Bucket {
            first_seen: now,
            ..Bucket::default()
        });
        let ordinal = bucket.ids.len() as u32;
        bucket.ids.push(*id);
        bucket.bytes += std::mem::size_of::<TraceId>();
        self.traces.insert(*id, (new_fire_tick, ordinal));
        out.new_traces += 1;
        out.bytes += std::mem::size_of::<TraceId>() as isize + TRACE_INDEX_ENTRY_BYTES as isize;
        Route::Buffer(new_fire_tick, ordinal)
    }

    /// Removes and returns the bucket firing first if it is due at `now_tick` (or `force`),
    /// together with the bytes it held; its traces leave the index.
    pub fn take_next(&mut self, now_tick: u64, force: bool) -> Option<(u64, Bucket)> {
        let (&tick, _) = self.wheel.first_key_value()?;
        if tick > now_tick && !force {
            return None;
        }
        let bucket = self.wheel.remove(&tick)?;
        for id in &bucket.ids {
            self.traces.remove(id);
        }
        Some((tick, bucket))
    }

    /// Seals buckets holding at least [`SEAL_MIN_SPANS`] unsealed spans; returns the change in
    /// resident bytes and in expected growth. A bucket that cannot be sealed (an internal
    /// error, logged) stays unsealed and the others are still sealed: the changes returned
    /// are always every change made, so the gauges never drift.
    pub fn seal_idle(&mut self) -> (isize, isize) {
        let (mut bytes, mut growth) = (0, 0);
        for b in self.wheel.values_mut() {
            if b.pending_spans >= SEAL_MIN_SPANS {
                match b.seal() {
                    Ok(d) => bytes += d,
                    Err(e) => tracing::error!(error = %e, "tail_sampling: cannot seal spans"),
                }
                growth += b.regrow(self.keep_per_mille);
            }
        }
        (bytes, growth)
    }

    /// Folds one decision's outcome (`kept` of `spans`) into the share of spans kept.
    pub fn observe_kept(&mut self, kept: usize, spans: usize) {
        if let Some(now) = (kept.min(spans) * 1000).checked_div(spans) {
            // A running average: a burst of one outcome moves it within a few decisions.
            self.keep_per_mille = (3 * self.keep_per_mille + now as u32) / 4;
        }
    }
}

/// What one trace costs in the shard's index besides its id in the bucket (hash map entry:
/// 16-byte key, 12-byte value, control byte, padding; at the map's typical load).
pub const TRACE_INDEX_ENTRY_BYTES: usize = 40;
