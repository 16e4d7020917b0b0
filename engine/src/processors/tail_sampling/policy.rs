//! Sampling policies, evaluated over columns for every expiring trace of a wheel bucket at once.
//!
//! Semantics are the Collector's (`processor/tailsamplingprocessor/internal/sampling/*.go` and
//! `processor.go` `makeDecision`), including its quirks where they are observable:
//! - attribute policies read resource attributes and span attributes; a value of another type
//!   reads as the Go zero value (`Str()` = "", `Int()` = 0, `Bool()` = false), and a span's
//!   string attribute must be non-empty to match;
//! - `invert_match` yields the deprecated inverted decisions (`InvertNotSampled` wins over
//!   everything but `Dropped`; `InvertSampled` samples only if no policy said `NotSampled`);
//! - `numeric_attribute` treats `min_value: 0` / `max_value: 0` as unset;
//! - `latency` with `upper_threshold_ms` samples when *some prefix* of the trace's spans (in
//!   arrival order) had a duration in `(threshold, upper]`, as the Collector's incremental check
//!   does; without an upper bound, duration (latest end − earliest start) `>= threshold_ms`;
//! - `probabilistic` hashes salt ‖ trace id with FNV-1a 64 and keeps hashes `<= threshold`,
//!   threshold = ⌊MaxUint64 × ratio⌋ computed as Go's `big.Float` does (64-bit mantissa);
//! - `rate_limiting` is a token bucket (rate `spans_per_second`, burst 2×) that starts full,
//!   as `golang.org/x/time/rate` does; `composite` budgets spans per second per sub-policy.
//!
//! Every policy sees the traces still *active*: after a `drop` policy dropped a trace (or, with
//! `sample_on_first_match`, after a policy sampled it) later policies do not evaluate it — this
//! matters for stateful policies and for the per-policy counts, as in the Collector.

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{Int64Type, UInt8Type, UInt32Type};
use regex::Regex;

use super::config::{Level, PolicyConfig};
use crate::payload::{Payload, parent_ids};
use crate::schema::{AnyValueType, Table, col};

pub type TraceId = [u8; 16];

/// One policy's verdict on one trace (the Collector's `sampling.Decision`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    NotSampled,
    Sampled,
    InvertSampled,
    InvertNotSampled,
    Dropped,
}

impl Decision {
    /// Every decision, in declaration order (`ALL[d as usize] == d`).
    pub const ALL: [Decision; 5] = [
        Decision::NotSampled,
        Decision::Sampled,
        Decision::InvertSampled,
        Decision::InvertNotSampled,
        Decision::Dropped,
    ];

    /// The `decision` label of the Collector's per-policy metrics.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Sampled | Decision::InvertSampled => "sampled",
            Decision::NotSampled | Decision::InvertNotSampled => "not_sampled",
            Decision::Dropped => "dropped",
        }
    }
    pub fn sampled_label(self) -> &'static str {
        match self {
            Decision::Sampled | Decision::InvertSampled => "true",
            _ => "false",
        }
    }
    fn is_not_sampled(self) -> bool {
        matches!(self, Decision::NotSampled | Decision::InvertNotSampled)
    }
    fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// Spans of a wheel bucket: one decoded payload and, per span row, the ordinal of its trace in
/// the bucket's trace list.
#[derive(Clone)]
pub struct Part {
    pub payload: Payload,
    pub ordinals: Vec<u32>,
}

/// The span columns the per-trace aggregates and `latency` read, for one part or sealed
/// segment of a bucket (every span row, in arrival order).
#[derive(Debug, Default)]
pub struct SpanColumns {
    pub ordinals: Vec<u32>,
    pub start: Vec<u64>,
    pub end: Vec<u64>,
    pub status: Vec<i32>,
}

/// Per-trace aggregates, computed in one pass over the span columns of all parts.
#[derive(Debug, Default)]
pub struct Aggregates {
    pub span_count: Vec<u32>,
    /// Bit `1 << status_code` for every status code (0 unset, 1 ok, 2 error) present.
    pub status: Vec<u8>,
    /// Earliest non-zero start time (0 if none).
    pub min_start: Vec<u64>,
    pub max_end: Vec<u64>,
}

pub const STATUS_UNSET: u8 = 1;
pub const STATUS_OK: u8 = 2;
pub const STATUS_ERROR: u8 = 4;

/// The expiring traces of one wheel bucket.
pub struct TraceBatch<'a> {
    pub ids: &'a [TraceId],
    /// Decoded spans, for the policies that read attributes or run OTTL conditions
    /// ([`Policy::reads_spans`]); empty when no policy does.
    pub parts: &'a [Part],
    /// The span columns of every part or segment of the bucket.
    pub spans: &'a [SpanColumns],
    pub agg: Aggregates,
    /// The clock's "now" at decision time (rate limits and composite budgets).
    pub now_unix_nanos: u64,
}

impl<'a> TraceBatch<'a> {
    /// A batch over decoded parts (aggregates computed from `spans`, which must hold the
    /// span columns of the same spans as `parts` when `parts` is not empty).
    pub fn new(
        ids: &'a [TraceId],
        spans: &'a [SpanColumns],
        parts: &'a [Part],
        now_unix_nanos: u64,
    ) -> Self {
        let n = ids.len();
        let mut agg = Aggregates {
            span_count: vec![0; n],
            status: vec![0; n],
            min_start: vec![0; n],
            max_end: vec![0; n],
        };
        for c in spans {
            for (row, &t) in c.ordinals.iter().enumerate() {
                let t = t as usize;
                agg.span_count[t] += 1;
                if let Ok(code @ 0..=2) = u8::try_from(c.status[row]) {
                    agg.status[t] |= 1 << code;
                }
                let s = c.start[row];
                if s != 0 && (agg.min_start[t] == 0 || s < agg.min_start[t]) {
                    agg.min_start[t] = s;
                }
                agg.max_end[t] = agg.max_end[t].max(c.end[row]);
            }
        }
        TraceBatch {
            ids,
            parts,
            spans,
            agg,
            now_unix_nanos,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Per trace: does any of its resources match `res`, or any of its spans match `span`, on
    /// the value of attribute `key` (first occurrence per owner, as pdata's `Map.Get`)?
    fn any_attribute(
        &self,
        key: &str,
        res: &dyn Fn(AttrValue) -> bool,
        span: &dyn Fn(AttrValue) -> bool,
    ) -> Vec<bool> {
        let mut out = vec![false; self.len()];
        for part in self.parts {
            let p = &part.payload;
            let span_hit = owner_matches(
                p.table(Table::SpanAttrs),
                p.table(Table::Spans).num_rows(),
                key,
                span,
            );
            let res_hit = owner_matches(
                p.table(Table::ResourceAttrs),
                p.table(Table::Resources).num_rows(),
                key,
                res,
            );
            let scope_resource = p.parent_ids(Table::Scopes).values();
            let span_scope = p.parent_ids(Table::Spans).values();
            for (row, &t) in part.ordinals.iter().enumerate() {
                if span_hit[row] || res_hit[scope_resource[span_scope[row] as usize] as usize] {
                    out[t as usize] = true;
                }
            }
        }
        out
    }
}

/// An attribute's value as pdata's typed getters see it.
#[derive(Copy, Clone, Debug)]
pub enum AttrValue<'b> {
    Str(&'b str),
    Int(i64),
    Bool(bool),
    Other,
}

impl<'b> AttrValue<'b> {
    /// pdata `Value.Str()`: "" unless a string.
    fn str(self) -> &'b str {
        match self {
            AttrValue::Str(s) => s,
            _ => "",
        }
    }
    /// pdata `Value.Int()`: 0 unless an int.
    fn int(self) -> i64 {
        match self {
            AttrValue::Int(i) => i,
            _ => 0,
        }
    }
    /// pdata `Value.Bool()`: false unless a bool.
    fn bool(self) -> bool {
        matches!(self, AttrValue::Bool(true))
    }
}

/// For each owner row (`owners` rows), whether its first attribute named `key` satisfies
/// `pred`. One pass over the attribute table's `key` column (dictionary indexes compared, not
/// strings) and the value columns of the matching rows.
fn owner_matches(
    attrs: &RecordBatch,
    owners: usize,
    key: &str,
    pred: &dyn Fn(AttrValue) -> bool,
) -> Vec<bool> {
    let mut out = vec![false; owners];
    if attrs.num_rows() == 0 {
        return out;
    }
    let keys = attrs
        .column_by_name(col::KEY)
        .expect("key")
        .as_dictionary::<UInt32Type>();
    let dict: &StringArray = keys.values().as_string::<i32>();
    let is_key: Vec<bool> = (0..dict.len()).map(|i| dict.value(i) == key).collect();
    if !is_key.contains(&true) {
        return out;
    }
    let key_idx = keys.keys().values();
    let parents = parent_ids(attrs).values();
    let types = attrs
        .column_by_name(col::TYPE)
        .expect("type")
        .as_primitive::<UInt8Type>()
        .values();
    let strs = attrs
        .column_by_name(col::STR)
        .expect("str")
        .as_string::<i32>();
    let ints = attrs
        .column_by_name(col::INT)
        .expect("int")
        .as_primitive::<Int64Type>();
    let bools: &BooleanArray = attrs.column_by_name(col::BOOL).expect("bool").as_boolean();
    let mut seen = vec![false; owners];
    for row in 0..attrs.num_rows() {
        if !is_key[key_idx[row] as usize] {
            continue;
        }
        let owner = parents[row] as usize;
        if std::mem::replace(&mut seen[owner], true) {
            continue; // pdata's Get returns the first attribute with the key
        }
        let v = match AnyValueType::from_u8(types[row]) {
            Some(AnyValueType::Str) => AttrValue::Str(strs.value(row)),
            Some(AnyValueType::Int) => AttrValue::Int(ints.value(row)),
            Some(AnyValueType::Bool) => AttrValue::Bool(bools.value(row)),
            _ => AttrValue::Other,
        };
        out[owner] = pred(v);
    }
    out
}

/// The Collector's probabilistic threshold: ⌊MaxUint64 × ratio⌋ where the product is rounded
/// to a 64-bit mantissa (Go `big.Float` with the precision of its `SetInt(MaxUint64)` operand,
/// round half to even) before truncation; ratios >= 1 give MaxUint64.
pub fn probabilistic_threshold(sampling_percentage: f64) -> u64 {
    let ratio = sampling_percentage / 100.0;
    if ratio <= 0.0 || ratio.is_nan() {
        return 0;
    }
    if ratio >= 1.0 {
        return u64::MAX;
    }
    // ratio = mantissa × 2^exp exactly (53-bit mantissa).
    let bits = ratio.to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let (mantissa, exp) = if raw_exp == 0 {
        (bits & ((1 << 52) - 1), -1074)
    } else {
        ((bits & ((1 << 52) - 1)) | (1 << 52), raw_exp - 1075)
    };
    // Exact product P × 2^exp with P < 2^117.
    let mut p = u128::from(u64::MAX) * u128::from(mantissa);
    let mut e = exp;
    let bitlen = 128 - p.leading_zeros() as i32;
    if bitlen > 64 {
        let shift = (bitlen - 64) as u32;
        let rem = p & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        p >>= shift;
        e += shift as i32;
        if rem > half || (rem == half && p & 1 == 1) {
            p += 1; // may carry to 2^64: still exact, handled below
        }
    }
    // Truncate P × 2^e toward zero.
    let v = if e >= 0 {
        p.checked_shl(e as u32).unwrap_or(u128::MAX)
    } else if -e >= 128 {
        0
    } else {
        p >> (-e) as u32
    };
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The Collector's `hashTraceID`: FNV-1a 64 over the salt's bytes then the trace id's.
pub fn hash_trace_id(salt: &[u8], trace_id: &TraceId) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in salt.iter().chain(trace_id.iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// A token bucket with `golang.org/x/time/rate.Limiter.AllowN` semantics (starts full).
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<u64>,
}

impl TokenBucket {
    fn new(per_second: i64) -> Self {
        let rate = per_second as f64;
        TokenBucket {
            rate,
            burst: rate * 2.0,
            tokens: rate * 2.0,
            last: None,
        }
    }
    fn allow(&mut self, now: u64, n: u32) -> bool {
        let n = f64::from(n);
        let elapsed = self
            .last
            .map_or(0.0, |l| now.saturating_sub(l) as f64 / 1e9);
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if n <= self.burst && tokens >= n {
            self.tokens = tokens - n;
            self.last = Some(now.max(self.last.unwrap_or(0)));
            true
        } else {
            false
        }
    }
}

enum StringMatcher {
    Exact(std::collections::HashSet<String>),
    Regex(Vec<Regex>),
}

impl StringMatcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            StringMatcher::Exact(set) => set.contains(s),
            StringMatcher::Regex(list) => list.iter().any(|r| r.is_match(s)),
        }
    }
}

struct CompositeSub {
    policy: Policy,
    allocated: i64,
    sampled: i64,
}

/// A built policy.
enum Kind {
    AlwaysSample,
    Latency {
        threshold_ms: i64,
        upper_ms: i64,
    },
    Numeric {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Probabilistic {
        salt: Vec<u8>,
        threshold: u64,
    },
    StatusCode {
        mask: u8,
    },
    StringAttr {
        key: String,
        matcher: StringMatcher,
        invert: bool,
    },
    RateLimiting(TokenBucket),
    SpanCount {
        min: i32,
        max: i32,
    },
    BooleanAttr {
        key: String,
        value: bool,
        invert: bool,
    },
    Ottl {
        span: Vec<crate::ottl::Condition>,
        event: Vec<crate::ottl::Condition>,
        mode: crate::ottl::ErrorMode,
    },
    And(Vec<Policy>),
    Drop(Vec<Policy>),
    Composite {
        max_total: i64,
        subs: Vec<CompositeSub>,
        second: i64,
    },
}

pub struct Policy {
    pub name: String,
    kind: Kind,
    /// Items on which an OTTL condition failed since the last [`Policy::take_errors`].
    errors: u64,
}

impl Policy {
    /// Builds from a config already checked by [`PolicyConfig::validate`].
    pub fn build(c: &PolicyConfig) -> Policy {
        let kind = match c.policy_type.as_str() {
            "latency" => Kind::Latency {
                threshold_ms: c.latency.threshold_ms,
                upper_ms: c.latency.upper_threshold_ms,
            },
            "numeric_attribute" => {
                let n = &c.numeric_attribute;
                Kind::Numeric {
                    key: n.key.clone(),
                    min: if n.min_value != 0 {
                        n.min_value
                    } else {
                        i64::MIN
                    },
                    max: if n.max_value != 0 {
                        n.max_value
                    } else {
                        i64::MAX
                    },
                    invert: n.invert_match,
                }
            }
            "probabilistic" => {
                let p = &c.probabilistic;
                let salt = if p.hash_salt.is_empty() {
                    "default-hash-seed"
                } else {
                    &p.hash_salt
                };
                Kind::Probabilistic {
                    salt: salt.as_bytes().to_vec(),
                    threshold: probabilistic_threshold(p.sampling_percentage),
                }
            }
            "status_code" => Kind::StatusCode {
                mask: c
                    .status_code
                    .status_codes
                    .iter()
                    .map(|s| match s.as_str() {
                        "OK" => STATUS_OK,
                        "ERROR" => STATUS_ERROR,
                        _ => STATUS_UNSET,
                    })
                    .fold(0, |a, b| a | b),
            },
            "string_attribute" => {
                let s = &c.string_attribute;
                let matcher = if s.enabled_regex_matching {
                    // validate() compiled every expression already
                    StringMatcher::Regex(
                        s.values.iter().filter_map(|v| Regex::new(v).ok()).collect(),
                    )
                } else {
                    StringMatcher::Exact(
                        s.values.iter().filter(|v| !v.is_empty()).cloned().collect(),
                    )
                };
                Kind::StringAttr {
                    key: s.key.clone(),
                    matcher,
                    invert: s.invert_match,
                }
            }
            "rate_limiting" => {
                Kind::RateLimiting(TokenBucket::new(c.rate_limiting.spans_per_second))
            }
            "span_count" => Kind::SpanCount {
                min: c.span_count.min_spans,
                max: c.span_count.max_spans,
            },
            "boolean_attribute" => Kind::BooleanAttr {
                key: c.boolean_attribute.key.clone(),
                value: c.boolean_attribute.value,
                invert: c.boolean_attribute.invert_match,
            },
            "ottl_condition" => {
                // validate() compiled these already
                let (span, event) = c
                    .ottl_condition
                    .as_ref()
                    .and_then(|o| o.compile().ok())
                    .unwrap_or_default();
                let mode = c
                    .ottl_condition
                    .as_ref()
                    .and_then(|o| o.error_mode)
                    .unwrap_or(crate::ottl::ErrorMode::Propagate);
                Kind::Ottl { span, event, mode }
            }
            "and" => Kind::And(c.and.and_sub_policy.iter().map(Policy::build).collect()),
            "drop" => Kind::Drop(c.drop.drop_sub_policy.iter().map(Policy::build).collect()),
            "composite" => {
                let cc = &c.composite;
                let total = cc.max_total_spans_per_second as f64;
                let default_sps = total / cc.composite_sub_policy.len().max(1) as f64;
                let subs = cc
                    .composite_sub_policy
                    .iter()
                    .map(|s| {
                        let allocated = cc
                            .rate_allocation
                            .iter()
                            .find(|r| r.policy == s.name)
                            .map_or(0.0, |r| {
                                if r.percent > 0 {
                                    r.percent as f64 / 100.0 * total
                                } else {
                                    default_sps
                                }
                            });
                        CompositeSub {
                            policy: Policy::build(s),
                            allocated: allocated as i64,
                            sampled: 0,
                        }
                    })
                    .collect();
                Kind::Composite {
                    max_total: cc.max_total_spans_per_second,
                    subs,
                    second: i64::MIN,
                }
            }
            _ => Kind::AlwaysSample,
        };
        Policy {
            name: c.name.clone(),
            kind,
            errors: 0,
        }
    }

    /// Condition failures (OTTL) counted since the last call, sub-policies included.
    pub fn take_errors(&mut self) -> u64 {
        let nested: u64 = match &mut self.kind {
            Kind::And(subs) | Kind::Drop(subs) => subs.iter_mut().map(Policy::take_errors).sum(),
            Kind::Composite { subs, .. } => subs.iter_mut().map(|s| s.policy.take_errors()).sum(),
            _ => 0,
        };
        std::mem::take(&mut self.errors) + nested
    }

    /// Whether this policy (or a sub-policy) reads decoded spans ([`TraceBatch::parts`]):
    /// attribute values or OTTL conditions. The others read only the span columns.
    pub fn reads_spans(&self) -> bool {
        match &self.kind {
            Kind::Numeric { .. }
            | Kind::StringAttr { .. }
            | Kind::BooleanAttr { .. }
            | Kind::Ottl { .. } => true,
            Kind::And(subs) | Kind::Drop(subs) => subs.iter().any(Policy::reads_spans),
            Kind::Composite { subs, .. } => subs.iter().any(|s| s.policy.reads_spans()),
            Kind::AlwaysSample
            | Kind::StatusCode { .. }
            | Kind::SpanCount { .. }
            | Kind::Probabilistic { .. }
            | Kind::Latency { .. }
            | Kind::RateLimiting(_) => false,
        }
    }

    /// Whether this is a `drop` policy (evaluated first, as in the Collector).
    pub fn is_drop(&self) -> bool {
        matches!(self.kind, Kind::Drop(_))
    }

    /// Decisions for every trace of `batch`; entries of traces not `active` are meaningless
    /// (and stateful policies do not spend anything on them).
    pub fn evaluate(&mut self, batch: &TraceBatch, active: &[bool]) -> Vec<Decision> {
        use Decision::*;
        let n = batch.len();
        let bool_to = |v: Vec<bool>| -> Vec<Decision> {
            v.into_iter()
                .map(|b| if b { Sampled } else { NotSampled })
                .collect()
        };
        let inverted = |any_match: Vec<bool>| -> Vec<Decision> {
            any_match
                .into_iter()
                .map(|m| if m { InvertNotSampled } else { InvertSampled })
                .collect()
        };
        match &mut self.kind {
            Kind::AlwaysSample => vec![Sampled; n],
            Kind::StatusCode { mask } => {
                bool_to(batch.agg.status.iter().map(|s| s & *mask != 0).collect())
            }
            Kind::SpanCount { min, max } => bool_to(
                batch
                    .agg
                    .span_count
                    .iter()
                    .map(|&c| {
                        let c = i64::from(c);
                        (*max == 0 && c >= i64::from(*min))
                            || (c >= i64::from(*min) && c <= i64::from(*max))
                    })
                    .collect(),
            ),
            Kind::Probabilistic { salt, threshold } => bool_to(
                batch
                    .ids
                    .iter()
                    .map(|id| hash_trace_id(salt, id) <= *threshold)
                    .collect(),
            ),
            Kind::Latency {
                threshold_ms,
                upper_ms,
            } => bool_to(latency(batch, *threshold_ms, *upper_ms)),
            Kind::Numeric {
                key,
                min,
                max,
                invert,
            } => {
                let (min, max) = (*min, *max);
                let hit = |v: AttrValue| (min..=max).contains(&v.int());
                let any = batch.any_attribute(key, &hit, &hit);
                if *invert { inverted(any) } else { bool_to(any) }
            }
            Kind::StringAttr {
                key,
                matcher,
                invert,
            } => {
                let res = |v: AttrValue| matcher.matches(v.str());
                let span = |v: AttrValue| {
                    let s = v.str();
                    !s.is_empty() && matcher.matches(s)
                };
                let any = batch.any_attribute(key, &res, &span);
                if *invert { inverted(any) } else { bool_to(any) }
            }
            Kind::BooleanAttr { key, value, invert } => {
                let want = *value;
                let hit = |v: AttrValue| v.bool() == want;
                let any = batch.any_attribute(key, &hit, &hit);
                if *invert { inverted(any) } else { bool_to(any) }
            }
            Kind::RateLimiting(bucket) => (0..n)
                .map(|t| {
                    if active[t] && bucket.allow(batch.now_unix_nanos, batch.agg.span_count[t]) {
                        Sampled
                    } else {
                        NotSampled
                    }
                })
                .collect(),
            Kind::Ottl { span, event, mode } => {
                let (hit, errors) = ottl_matches(batch, span, event, *mode);
                self.errors += errors;
                bool_to(hit)
            }
            Kind::And(subs) => all_of(subs, batch, active, Sampled),
            Kind::Drop(subs) => all_of(subs, batch, active, Dropped),
            Kind::Composite {
                max_total,
                subs,
                second,
            } => {
                let now_second = (batch.now_unix_nanos / 1_000_000_000) as i64;
                if *second != now_second {
                    *second = now_second;
                    subs.iter_mut().for_each(|s| s.sampled = 0);
                }
                // Sub-policy j sees the traces no earlier sub-policy sampled.
                let mut remaining = active.to_vec();
                let mut first_sampler: Vec<Option<usize>> = vec![None; n];
                for (j, sub) in subs.iter_mut().enumerate() {
                    let d = sub.policy.evaluate(batch, &remaining);
                    for t in 0..n {
                        if remaining[t] && d[t].samples() {
                            first_sampler[t] = Some(j);
                            remaining[t] = false;
                        }
                    }
                }
                (0..n)
                    .map(|t| {
                        let Some(j) = first_sampler[t].filter(|_| active[t]) else {
                            return NotSampled;
                        };
                        let sub = &mut subs[j];
                        let if_sampled = sub.sampled + i64::from(batch.agg.span_count[t]);
                        if if_sampled <= sub.allocated && if_sampled <= *max_total {
                            sub.sampled = if_sampled;
                            Sampled
                        } else {
                            NotSampled
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Per trace: does any span match a span condition or any span event an event condition?
/// Conditions run as column kernels over each part's spans / span events table (sluice's OTTL
/// compiler); a condition that fails on an item counts as false there (failures are returned).
fn ottl_matches(
    batch: &TraceBatch,
    span: &[crate::ottl::Condition],
    event: &[crate::ottl::Condition],
    mode: crate::ottl::ErrorMode,
) -> (Vec<bool>, u64) {
    use crate::ottl::eval::Lookups;
    use crate::ottl::exec::reads;
    use crate::ottl::{Context, ErrorMode, RunReport, any_matches};
    // `propagate` would fail the whole part; a sampling decision is per trace, so failures
    // count as no match (and are counted) whatever the mode.
    let run_mode = match mode {
        ErrorMode::Propagate => ErrorMode::Silent,
        m => m,
    };
    let mut out = vec![false; batch.len()];
    let mut errors = 0u64;
    for part in batch.parts {
        let p = &part.payload;
        let mut report = RunReport::default();
        if !span.is_empty() {
            let mut lookups = Lookups::new(Context::Span, &reads(&[], span));
            match any_matches(p, Table::Spans, span, run_mode, &mut lookups, &mut report) {
                Ok(m) => {
                    for (row, &t) in part.ordinals.iter().enumerate() {
                        out[t as usize] |= m[row];
                    }
                }
                Err(_) => errors += p.table(Table::Spans).num_rows() as u64,
            }
        }
        if !event.is_empty() {
            let mut lookups = Lookups::new(Context::SpanEvent, &reads(&[], event));
            match any_matches(
                p,
                Table::SpanEvents,
                event,
                run_mode,
                &mut lookups,
                &mut report,
            ) {
                Ok(m) => {
                    let owner = p.parent_ids(Table::SpanEvents).values();
                    for (e, hit) in m.iter().enumerate() {
                        if *hit {
                            out[part.ordinals[owner[e] as usize] as usize] = true;
                        }
                    }
                }
                Err(_) => errors += p.table(Table::SpanEvents).num_rows() as u64,
            }
        }
        errors += report.errors as u64;
    }
    (out, errors)
}

/// `and` / `drop`: `all` if every sub-policy samples, else NotSampled; sub-policies stop at the
/// first NotSampled for a trace.
fn all_of(
    subs: &mut [Policy],
    batch: &TraceBatch,
    active: &[bool],
    all: Decision,
) -> Vec<Decision> {
    let mut remaining = active.to_vec();
    let mut out = vec![all; batch.len()];
    for sub in subs {
        let d = sub.evaluate(batch, &remaining);
        for t in 0..batch.len() {
            if remaining[t] && d[t].is_not_sampled() {
                out[t] = Decision::NotSampled;
                remaining[t] = false;
            }
        }
    }
    out
}

fn duration_ms(min_start: u64, max_end: u64) -> i64 {
    // Go: maxTime.AsTime().Sub(minTime.AsTime()).Milliseconds(), truncated toward zero.
    (max_end as i128 - min_start as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
        / 1_000_000
}

fn latency(batch: &TraceBatch, threshold_ms: i64, upper_ms: i64) -> Vec<bool> {
    let agg = &batch.agg;
    if upper_ms == 0 {
        return (0..batch.len())
            .map(|t| duration_ms(agg.min_start[t], agg.max_end[t]) >= threshold_ms)
            .collect();
    }
    // Prefix semantics: replay spans in arrival order, checking after each.
    let n = batch.len();
    let (mut lo, mut hi, mut hit) = (vec![0u64; n], vec![0u64; n], vec![false; n]);
    for c in batch.spans {
        let (start, end) = (&c.start, &c.end);
        for (row, &t) in c.ordinals.iter().enumerate() {
            let t = t as usize;
            if start[row] != 0 && (lo[t] == 0 || start[row] < lo[t]) {
                lo[t] = start[row];
            }
            hi[t] = hi[t].max(end[row]);
            let d = duration_ms(lo[t], hi[t]);
            hit[t] |= threshold_ms < d && d <= upper_ms;
        }
    }
    hit
}

/// Builds the top-level policies in the Collector's evaluation order: `drop` policies first.
pub fn build_all(configs: &[PolicyConfig]) -> Vec<Policy> {
    debug_assert!(configs.iter().all(|c| c.validate(Level::Top).is_ok()));
    let mut drops = Vec::new();
    let mut rest = Vec::new();
    for c in configs {
        let p = Policy::build(c);
        if p.is_drop() {
            drops.push(p);
        } else {
            rest.push(p);
        }
    }
    drops.extend(rest);
    drops
}

/// The final decision for a trace, from every policy's (the Collector's `makeDecision`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Final {
    Sampled,
    NotSampled,
    Dropped,
}

impl Final {
    pub fn label(self) -> &'static str {
        match self {
            Final::Sampled => "sampled",
            Final::NotSampled => "not_sampled",
            Final::Dropped => "dropped",
        }
    }
}

/// Counts per (policy index, decision) of evaluated traces and their spans.
pub type PolicyCounts = Vec<std::collections::HashMap<Decision, (u64, u64)>>;

/// Evaluates every policy over the batch and combines: Dropped > InvertNotSampled > Sampled >
/// InvertSampled (when no NotSampled) > NotSampled.
pub fn decide(
    policies: &mut [Policy],
    batch: &TraceBatch,
    sample_on_first_match: bool,
) -> (Vec<Final>, PolicyCounts) {
    let n = batch.len();
    let mut active = vec![true; n];
    let mut seen = vec![0u8; n]; // bits: 1 Sampled, 2 NotSampled, 4 InvertSampled, 8 InvertNotSampled, 16 Dropped
    // (traces, spans) per policy and decision (`Decision as usize`), tallied in arrays: a
    // hash map entry per trace and policy was ~5% of a steady state.
    let mut tallies = vec![[(0u64, 0u64); Decision::ALL.len()]; policies.len()];
    for (i, p) in policies.iter_mut().enumerate() {
        if !active.contains(&true) {
            break;
        }
        let d = p.evaluate(batch, &active);
        for t in 0..n {
            if !active[t] {
                continue;
            }
            let e = &mut tallies[i][d[t] as usize];
            e.0 += 1;
            e.1 += u64::from(batch.agg.span_count[t]);
            seen[t] |= match d[t] {
                Decision::Sampled => 1,
                Decision::NotSampled => 2,
                Decision::InvertSampled => 4,
                Decision::InvertNotSampled => 8,
                Decision::Dropped => 16,
            };
            if d[t] == Decision::Dropped || (sample_on_first_match && d[t] == Decision::Sampled) {
                active[t] = false;
            }
        }
    }
    let finals = seen
        .iter()
        .map(|&s| {
            if s & 16 != 0 {
                Final::Dropped
            } else if s & 8 != 0 {
                Final::NotSampled
            } else if s & 1 != 0 || (s & 4 != 0 && s & 2 == 0) {
                Final::Sampled
            } else {
                Final::NotSampled
            }
        })
        .collect();
    let counts = tallies
        .iter()
        .map(|per| {
            Decision::ALL
                .iter()
                .zip(per)
                .filter(|(_, c)| c.0 > 0)
                .map(|(&d, &c)| (d, c))
                .collect()
        })
        .collect();
    (finals, counts)
}
