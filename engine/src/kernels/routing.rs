//! Routing for the `loadbalancing` exporter: the OpenTelemetry Collector's consistent-hash ring,
//! and the kernel that splits a payload into one payload per backend.
//!
//! # The ring ([`HashRing`]), as the Collector builds it
//!
//! `exporter/loadbalancingexporter/consistent_hashing.go`, bit for bit, so sluice agents and
//! Collector agents given the same backends send every trace id to the same gateway:
//! - 36,000 positions ([`MAX_POSITIONS`]), 100 points per endpoint ([`POINTS_PER_ENDPOINT`]);
//! - endpoints in the resolver's order (sorted: every resolver sorts), each endpoint's point
//!   `i` at `crc32_ieee(endpoint bytes ++ [i as u8]) % 36000`; a position already taken keeps
//!   its earlier owner;
//! - a key's position is `crc32_ieee(key) % 36000`; its backend is the first ring item at or
//!   after that position, wrapping to the first item (the Go code's `bsearch` is this lower
//!   bound, see the golden cases).
//!
//! Lookups are one table read: the owner of each of the 36,000 key positions is computed once
//! per ring (72 KB), so routing a span is a CRC-32 of its 16 trace-id bytes and a load.
//! `engine/testdata/loadbalancing/ring_golden.py` derives golden cases from the Go algorithm
//! independently (Python's `zlib.crc32` is CRC-32/IEEE); the tests check every one.
//!
//! # The split ([`split`])
//!
//! The routing key of every item (span, log record, data point) is turned into a ring position
//! in one pass over the key column (for `traceID`: the `trace_id` column, hashed once per run
//! of equal ids), the positions into backends through the ring's table, and the payload is cut
//! into every backend's part at once ([`Payload::partition`]): one pass over the backends finds
//! each backend's runs of items (a trace's spans sit together, so a part is a few runs), and
//! every related table (resources, scopes, attributes, events, links, metrics) follows its
//! items by searches in the sorted parent ids; containers left empty go. Each part equals a
//! [`Payload::filter_tables`] of the payload by its backend (property-tested). A payload whose
//! items all go to one backend is passed on as it is, uncopied.
//!
//! # Routing keys ([`RoutingKey`]) and what each hashes
//!
//! The Collector's per-signal rules, as its source reads (v0.15x):
//! - `traceID`, traces: the 16 raw trace-id bytes of each span (an absent id hashes as 16 zero
//!   bytes, as the Collector's zero `TraceID`).
//! - `traceID`, logs: the lowercase hex of each record's trace id (`TraceID.String()`); a record
//!   without one gets a random key (the Collector's `randomTraceID`), so such records spread.
//! - `service`: traces hash `service.name=<value>|` (the attribute rule below); logs and
//!   metrics hash the resource's `service.name` string value (`""` when absent or not a
//!   string).
//! - `attributes` with `routing_attributes: [a, b, ...]`: each attribute is looked up on the
//!   resource, then the scope, then the item. Traces and logs write `a=<value>|` per attribute
//!   (`a=|` when absent), values in `pcommon` `AsString` form; spans also know the pseudo
//!   attributes `span.kind` (`Server`, `Client`, ...) and `span.name`, log records
//!   `log.severity` (severity text) and `log.body`; metrics concatenate the string values
//!   found (a non-string value and an absent one add nothing). For traces the item is the
//!   first span of its (resource, scope, trace id) group, as the Collector splits traces into
//!   those groups before keying them: all spans of a trace in one scope go together.
//! - `metric`, metrics: the metric name (all points of a metric together).
//! - `resource` (logs, metrics) and `streamID` (metrics): the Collector hashes its internal
//!   identity of the resource (or of resource + scope + metric + point attributes); sluice
//!   hashes a canonical form of the same fields (attributes sorted by key, with their types), so
//!   the same resource or stream always goes to the same backend, but not necessarily to the
//!   backend a Collector agent would pick.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, UInt32Type};

use crate::kernels::attributes::{self, AnyValues, KernelError};
use crate::otlp::decode::{ItemSplitter, SplitError};
use crate::payload::{Payload, PayloadError, WireSplit};
use crate::schema::{AnyValueType, Signal, Table, col};

/// Positions on the ring: 360 degrees with two decimals, as the Collector's `maxPositions`.
pub const MAX_POSITIONS: u32 = 36_000;
/// Ring points per endpoint, as the Collector's `defaultWeight`.
pub const POINTS_PER_ENDPOINT: usize = 100;

/// The Collector's consistent-hash ring over a list of endpoints.
#[derive(Clone, Debug)]
pub struct HashRing {
    endpoints: Vec<String>,
    /// `(position, endpoint index)`, sorted by position; positions are unique.
    items: Vec<(u32, u16)>,
    /// The endpoint index owning every key position `0..MAX_POSITIONS`: the first item at or
    /// after the position, wrapping to the first item. Empty when the ring is.
    owner_at: Box<[u16]>,
}

/// The ring position of `key`: `crc32_ieee(key) % 36000`.
#[inline]
pub fn position_of(key: &[u8]) -> u32 {
    crc32fast::hash(key) % MAX_POSITIONS
}

impl HashRing {
    /// The ring of `endpoints`, in the order given (the resolvers sort them, as the
    /// Collector's do; the order decides which endpoint keeps a contested position).
    /// At most 65,535 endpoints.
    pub fn new(endpoints: &[String]) -> Result<HashRing, RoutingError> {
        if endpoints.len() > usize::from(u16::MAX) {
            return Err(RoutingError::TooManyEndpoints(endpoints.len()));
        }
        let mut taken = vec![false; MAX_POSITIONS as usize];
        let mut items = Vec::with_capacity(endpoints.len() * POINTS_PER_ENDPOINT);
        let mut hasher_input = Vec::new();
        for (e, endpoint) in endpoints.iter().enumerate() {
            for i in 0..POINTS_PER_ENDPOINT {
                hasher_input.clear();
                hasher_input.extend_from_slice(endpoint.as_bytes());
                // Go's `byte(i)`: i < 100 always fits.
                hasher_input.push(i as u8);
                let pos = position_of(&hasher_input);
                if !std::mem::replace(&mut taken[pos as usize], true) {
                    items.push((pos, e as u16));
                }
            }
        }
        items.sort_unstable_by_key(|&(pos, _)| pos);
        let mut owner_at = vec![
            0u16;
            if items.is_empty() {
                0
            } else {
                MAX_POSITIONS as usize
            }
        ];
        if let Some(&(_, first_owner)) = items.first() {
            // Walk positions downwards keeping the first item at or after each.
            let mut next = items.len();
            for p in (0..MAX_POSITIONS).rev() {
                while next > 0 && items[next - 1].0 >= p {
                    next -= 1;
                }
                owner_at[p as usize] = items.get(next).map_or(first_owner, |&(_, o)| o);
            }
        }
        Ok(HashRing {
            endpoints: endpoints.to_vec(),
            items,
            owner_at: owner_at.into_boxed_slice(),
        })
    }

    /// The endpoints, as given; backends are indexes into this list.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// `(position, endpoint)` of every ring item, by position.
    pub fn items(&self) -> impl Iterator<Item = (u32, &str)> {
        self.items
            .iter()
            .map(|&(p, e)| (p, self.endpoints[usize::from(e)].as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The backend (endpoint index) owning ring position `pos` (`< MAX_POSITIONS`).
    #[inline]
    pub fn backend_at(&self, pos: u32) -> Option<usize> {
        self.owner_at.get(pos as usize).map(|&o| usize::from(o))
    }

    /// The backend of a routing key.
    pub fn backend_for(&self, key: &[u8]) -> Option<usize> {
        self.backend_at(position_of(key))
    }
}

/// Two rings are equal when their items are (the Collector's `hashRing.equal`): the same
/// positions owned by the same endpoint names.
impl PartialEq for HashRing {
    fn eq(&self, other: &Self) -> bool {
        self.items.len() == other.items.len() && self.items().eq(other.items())
    }
}

/// What decides an item's backend (the Collector's `routing_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutingKey {
    TraceId,
    Service,
    Resource,
    Metric,
    StreamId,
    /// `attributes`, with `routing_attributes`.
    Attributes(Vec<String>),
}

impl RoutingKey {
    /// Whether the Collector accepts this key for `signal`.
    pub fn supports(&self, signal: Signal) -> bool {
        use RoutingKey::*;
        matches!(
            (self, signal),
            (TraceId | Service | Attributes(_), Signal::Traces)
                | (TraceId | Service | Resource | Attributes(_), Signal::Logs)
                | (
                    Service | Resource | Metric | StreamId | Attributes(_),
                    Signal::Metrics
                )
        )
    }

    /// The config name.
    pub fn name(&self) -> &'static str {
        match self {
            RoutingKey::TraceId => "traceID",
            RoutingKey::Service => "service",
            RoutingKey::Resource => "resource",
            RoutingKey::Metric => "metric",
            RoutingKey::StreamId => "streamID",
            RoutingKey::Attributes(_) => "attributes",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("routing_key {key} does not apply to {signal}")]
    Unsupported {
        key: &'static str,
        signal: &'static str,
    },
    #[error("a ring holds at most 65535 endpoints, got {0}")]
    TooManyEndpoints(usize),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// The ring position of every item of `payload` under `key`: one `Vec` per item table of the
/// payload's signal, in [`Signal::item_tables`] order.
pub fn item_positions(
    payload: &Payload,
    key: &RoutingKey,
) -> Result<Vec<(Table, Vec<u32>)>, RoutingError> {
    let signal = payload.signal();
    if !key.supports(signal) {
        return Err(RoutingError::Unsupported {
            key: key.name(),
            signal: signal.as_str(),
        });
    }
    match signal {
        Signal::Traces => Ok(vec![(Table::Spans, span_positions(payload, key)?)]),
        Signal::Logs => Ok(vec![(Table::Logs, log_positions(payload, key)?)]),
        Signal::Metrics => point_positions(payload, key),
    }
}

/// Splits `payload` by backend: `(backend, its part)` for every backend that receives items,
/// in backend order. Empty for an empty ring or an empty payload.
pub fn split(
    payload: &Payload,
    key: &RoutingKey,
    ring: &HashRing,
) -> Result<Vec<(usize, Payload)>, RoutingError> {
    if ring.is_empty() || payload.is_empty() {
        return Ok(Vec::new());
    }
    let positions = item_positions(payload, key)?;
    split_by_positions(payload, &positions, ring)
}

/// [`split`] for a payload still in its wire form ([`crate::payload::WireForm`]) under
/// `traceID` (traces, logs): its items routed by a skim of their trace ids, without decoding
/// ([`crate::payload::WireForm::split_by_item`]), each id hashed as [`split`] hashes the decoded column, so both
/// send every item to the same backend, in the same order, with the same resource and scope
/// envelopes. `None` when this does not apply (not a wire form, another key, metrics): use
/// [`split`]. An error only for bytes a clean skim would not have passed (a bug), which the
/// caller can route decoded instead.
pub fn split_wire(
    payload: &Payload,
    key: &RoutingKey,
    ring: &HashRing,
) -> Option<Result<Vec<(usize, Payload)>, SplitError>> {
    let wire = payload.wire()?;
    if *key != RoutingKey::TraceId {
        return None;
    }
    let signal = payload.signal();
    let mut splitter = take_splitter(signal)?;
    if ring.is_empty() || wire.items() == 0 {
        return Some(Ok(Vec::new()));
    }
    let parts = ring.endpoints().len();
    let split = match signal {
        // The raw 16 bytes (an absent id as 16 zeros), one CRC per run of equal ids.
        Signal::Traces => {
            let mut last: Option<([u8; 16], usize)> = None;
            wire.split_by_item(&mut splitter, parts, |id: &[u8]| {
                let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
                match last {
                    Some((prev, b)) if prev == id => b,
                    _ => {
                        let b = usize::from(ring.owner_at[position_of(&id) as usize]);
                        last = Some((id, b));
                        b
                    }
                }
            })
        }
        // Lowercase hex; a record without an id (or with the zero id) a random key.
        _ => wire.split_by_item(&mut splitter, parts, |id: &[u8]| {
            let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
            let key = if id == [0u8; 16] {
                random_trace_key()
            } else {
                hex_lower(&id)
            };
            usize::from(ring.owner_at[position_of(&key) as usize])
        }),
    };
    keep_splitter(splitter);
    Some(split.map(|s| {
        match s {
            WireSplit::Nothing => Vec::new(),
            WireSplit::One(b) => vec![(b, payload.clone())],
            WireSplit::Parts(parts) => parts
                .into_iter()
                .map(|(b, form)| (b, Payload::from_wire(signal, form)))
                .collect(),
        }
    }))
}

thread_local! {
    /// The splitter [`split_wire`] last used on this thread, its lists kept for the next call:
    /// a batch's lists are hundreds of KiB, and growing them afresh for every batch
    /// (reallocations and freshly faulted pages) cost as much as a quarter of the walk.
    static SPLITTER: std::cell::Cell<Option<ItemSplitter>> = const { std::cell::Cell::new(None) };
}

/// This thread's kept splitter for `signal`'s requests, or a new one; `None` for metrics.
fn take_splitter(signal: Signal) -> Option<ItemSplitter> {
    match SPLITTER.with(|s| s.take()) {
        Some(splitter) if splitter.signal() == signal => Some(splitter),
        _ => ItemSplitter::new(signal),
    }
}

/// Keeps `splitter` for this thread's next [`split_wire`], unless its lists grew past what a
/// usual batch needs (one huge batch should not hold its lists for the life of the thread).
fn keep_splitter(splitter: ItemSplitter) {
    const KEPT_ITEMS_MAX: usize = 64 * 1024;
    if splitter.item_capacity() <= KEPT_ITEMS_MAX {
        SPLITTER.with(|s| s.set(Some(splitter)));
    }
}

/// [`split`] with the positions already computed (by [`item_positions`]): every item's backend
/// through the ring's owner table, then all parts cut in one pass ([`Payload::partition`]).
pub fn split_by_positions(
    payload: &Payload,
    positions: &[(Table, Vec<u32>)],
    ring: &HashRing,
) -> Result<Vec<(usize, Payload)>, RoutingError> {
    if ring.is_empty() {
        return Ok(Vec::new());
    }
    let owners: Vec<(Table, Vec<u16>)> = positions
        .iter()
        .map(|(t, pos)| (*t, pos.iter().map(|&p| ring.owner_at[p as usize]).collect()))
        .collect();
    let refs: Vec<(Table, &[u16])> = owners.iter().map(|(t, o)| (*t, o.as_slice())).collect();
    Ok(payload.partition(&refs, ring.endpoints().len())?)
}

/// The split as it was before [`Payload::partition`]: every item's backend through the ring,
/// then one mask and one `filter_tables` per backend. The model the one-pass split is checked
/// against (its proptest) and the baseline the `loadbalancing` bench measures it beside.
#[cfg(any(test, feature = "testing"))]
pub fn split_per_backend_filter(
    payload: &Payload,
    positions: &[(Table, Vec<u32>)],
    ring: &HashRing,
) -> Result<Vec<(usize, Payload)>, RoutingError> {
    let owners: Vec<(Table, Vec<usize>)> = positions
        .iter()
        .map(|(t, pos)| (*t, pos.iter().filter_map(|&p| ring.backend_at(p)).collect()))
        .collect();
    let mut parts = Vec::new();
    for b in 0..ring.endpoints().len() {
        if !owners.iter().any(|(_, o)| o.contains(&b)) {
            continue;
        }
        let masks: Vec<(Table, Vec<bool>)> = owners
            .iter()
            .map(|(t, o)| (*t, o.iter().map(|&x| x == b).collect()))
            .collect();
        let refs: Vec<(Table, &[bool])> = masks.iter().map(|(t, m)| (*t, m.as_slice())).collect();
        parts.push((b, payload.filter_tables(&refs)?));
    }
    Ok(parts)
}

// ---------------------------------------------------------------------------------------------
// Keys per signal

/// The positions of the spans' trace ids: one CRC per run of equal ids (spans of a trace
/// usually sit together). Ids compare as one 128-bit word each, read from the value buffer.
fn trace_id_positions(ids: &FixedSizeBinaryArray) -> Vec<u32> {
    let zero_pos = position_of(&[0u8; 16]);
    // The schema's trace ids are 16 bytes; `value_data` starts at the array's first value.
    let words = ids.value_data().chunks_exact(16);
    let mut out = Vec::with_capacity(ids.len());
    let mut last: Option<(u128, u32)> = None;
    for (i, id) in words.take(ids.len()).enumerate() {
        if ids.is_null(i) {
            out.push(zero_pos);
            continue;
        }
        let word = u128::from_ne_bytes(id.try_into().unwrap_or([0; 16]));
        let pos = match last {
            Some((prev, pos)) if prev == word => pos,
            _ => position_of(id),
        };
        last = Some((word, pos));
        out.push(pos);
    }
    out
}

fn trace_ids(batch: &RecordBatch) -> &FixedSizeBinaryArray {
    batch
        .column_by_name(col::TRACE_ID)
        .expect("spans and logs have trace_id")
        .as_fixed_size_binary()
}

fn u32_column<'a>(batch: &'a RecordBatch, name: &str) -> &'a [u32] {
    batch
        .column_by_name(name)
        .expect("schema column")
        .as_primitive::<UInt32Type>()
        .values()
}

/// For every row of a dictionary-encoded string column, its string.
fn dict_strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    let dict = batch
        .column_by_name(name)
        .expect("schema column")
        .as_dictionary::<UInt32Type>();
    let values = dict.values().as_string::<i32>();
    dict.keys()
        .iter()
        .map(|k| k.map_or(String::new(), |k| values.value(k as usize).to_string()))
        .collect()
}

/// The value of attribute `key` for every parent, as `pcommon` `Value.AsString` writes it
/// (`None` where the parent has no such attribute).
fn as_string_of(
    attrs: &RecordBatch,
    parents: usize,
    key: &str,
) -> Result<Vec<Option<String>>, KernelError> {
    let values = attributes::lookup(attrs, parents, key)?;
    Ok(strings(&attributes::as_strings(&values)))
}

/// The value of attribute `key` for every parent as `pcommon` `Value.Str()` reads it: the
/// string of a string value, `""` for any other type, `None` where the attribute is absent.
fn str_of(
    attrs: &RecordBatch,
    parents: usize,
    key: &str,
) -> Result<Vec<Option<String>>, KernelError> {
    let values = attributes::lookup(attrs, parents, key)?;
    Ok((0..values.len())
        .map(|i| match values.value_type(i) {
            None => None,
            Some(AnyValueType::Str) => Some(values.str.value(i).to_string()),
            Some(_) => Some(String::new()),
        })
        .collect())
}

fn strings(a: &StringArray) -> Vec<Option<String>> {
    a.iter().map(|s| s.map(str::to_string)).collect()
}

/// `name=value|`, or `name=|` for an absent attribute (the Collector's
/// `buildAttributeRoutingKey*`).
fn push_attribute(buf: &mut Vec<u8>, name: &str, value: Option<&str>) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'=');
    if let Some(v) = value {
        buf.extend_from_slice(v.as_bytes());
    }
    buf.push(b'|');
}

/// The Collector's `ptrace.SpanKind.String()`.
fn span_kind_name(kind: i32) -> &'static str {
    match kind {
        0 => "Unspecified",
        1 => "Internal",
        2 => "Server",
        3 => "Client",
        4 => "Producer",
        5 => "Consumer",
        _ => "",
    }
}

fn span_positions(payload: &Payload, key: &RoutingKey) -> Result<Vec<u32>, RoutingError> {
    let spans = payload.table(Table::Spans);
    let names: Vec<String> = match key {
        RoutingKey::TraceId => return Ok(trace_id_positions(trace_ids(spans))),
        RoutingKey::Service => vec!["service.name".to_string()],
        RoutingKey::Attributes(a) => a.clone(),
        _ => unreachable_key(key, Signal::Traces)?,
    };
    let n_spans = spans.num_rows();
    let scopes = payload.table(Table::Scopes);
    let n_res = payload.table(Table::Resources).num_rows();
    let n_scopes = scopes.num_rows();
    let scope_of = u32_column(spans, col::PARENT_ID);
    let resource_of = u32_column(scopes, col::PARENT_ID);
    let span_names = names
        .iter()
        .any(|n| n == "span.name")
        .then(|| dict_strings(spans, col::NAME));
    let kinds = spans
        .column_by_name(col::KIND)
        .expect("spans have kind")
        .as_primitive::<Int32Type>()
        .values();
    let mut per_level = Vec::with_capacity(names.len());
    for n in &names {
        per_level.push((
            as_string_of(payload.table(Table::ResourceAttrs), n_res, n)?,
            as_string_of(payload.table(Table::ScopeAttrs), n_scopes, n)?,
            as_string_of(payload.table(Table::SpanAttrs), n_spans, n)?,
        ));
    }
    // The Collector keys each (resource, scope, trace id) group by its first span.
    let ids = trace_ids(spans);
    let mut leader_of = vec![0u32; n_spans];
    let mut first_in_scope: HashMap<[u8; 16], u32> = HashMap::new();
    for i in 0..n_spans {
        if i == 0 || scope_of[i] != scope_of[i - 1] {
            first_in_scope.clear();
        }
        let mut id = [0u8; 16];
        if ids.is_valid(i) {
            id.copy_from_slice(ids.value(i));
        }
        leader_of[i] = *first_in_scope.entry(id).or_insert(i as u32);
    }
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(n_spans);
    for i in 0..n_spans {
        let lead = leader_of[i] as usize;
        let scope = scope_of[i] as usize;
        let res = resource_of[scope] as usize;
        buf.clear();
        for (n, (r, s, sp)) in names.iter().zip(&per_level) {
            let v = match (&r[res], &s[scope]) {
                (Some(v), _) | (None, Some(v)) => Some(v.as_str()),
                (None, None) => match n.as_str() {
                    "span.kind" => Some(span_kind_name(kinds[lead])),
                    "span.name" => span_names.as_ref().map(|s| s[lead].as_str()),
                    _ => sp[lead].as_deref(),
                },
            };
            push_attribute(&mut buf, n, v);
        }
        out.push(position_of(&buf));
    }
    Ok(out)
}

/// A pseudo-random key for a log record without a trace id, as the Collector's
/// `randomTraceID` (four random bytes, then zeros), in hex.
fn random_trace_key() -> [u8; 32] {
    static STATE: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);
    let mut x = STATE.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&x.to_le_bytes()[..4]);
    hex_lower(&id)
}

fn hex_lower(id: &[u8; 16]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

fn log_positions(payload: &Payload, key: &RoutingKey) -> Result<Vec<u32>, RoutingError> {
    let logs = payload.table(Table::Logs);
    let n_logs = logs.num_rows();
    let scopes = payload.table(Table::Scopes);
    let n_res = payload.table(Table::Resources).num_rows();
    let n_scopes = scopes.num_rows();
    let scope_of = u32_column(logs, col::PARENT_ID);
    let resource_of = u32_column(scopes, col::PARENT_ID);
    let per_resource = |keys: Vec<Vec<u8>>| -> Vec<u32> {
        let pos: Vec<u32> = keys.iter().map(|k| position_of(k)).collect();
        scope_of
            .iter()
            .map(|&s| pos[resource_of[s as usize] as usize])
            .collect()
    };
    match key {
        RoutingKey::TraceId => {
            let ids = trace_ids(logs);
            Ok((0..n_logs)
                .map(|i| {
                    let mut id = [0u8; 16];
                    if ids.is_valid(i) {
                        id.copy_from_slice(ids.value(i));
                    }
                    let key = if id == [0u8; 16] {
                        random_trace_key()
                    } else {
                        hex_lower(&id)
                    };
                    position_of(&key)
                })
                .collect())
        }
        RoutingKey::Service => {
            let svc = str_of(payload.table(Table::ResourceAttrs), n_res, "service.name")?;
            Ok(per_resource(
                svc.into_iter()
                    .map(|s| s.unwrap_or_default().into_bytes())
                    .collect(),
            ))
        }
        RoutingKey::Resource => Ok(per_resource(canonical_attrs(
            payload.table(Table::ResourceAttrs),
            n_res,
        ))),
        RoutingKey::Attributes(names) => {
            let body = body_strings(logs);
            let severity = dict_strings(logs, col::SEVERITY_TEXT);
            let mut per_level = Vec::with_capacity(names.len());
            for n in names {
                per_level.push((
                    as_string_of(payload.table(Table::ResourceAttrs), n_res, n)?,
                    as_string_of(payload.table(Table::ScopeAttrs), n_scopes, n)?,
                    as_string_of(payload.table(Table::LogAttrs), n_logs, n)?,
                ));
            }
            let mut buf = Vec::new();
            Ok((0..n_logs)
                .map(|i| {
                    let scope = scope_of[i] as usize;
                    let res = resource_of[scope] as usize;
                    buf.clear();
                    for (n, (r, s, l)) in names.iter().zip(&per_level) {
                        let v = match (&r[res], &s[scope]) {
                            (Some(v), _) | (None, Some(v)) => Some(v.as_str()),
                            (None, None) => match n.as_str() {
                                "log.severity" => Some(severity[i].as_str()),
                                "log.body" => Some(body[i].as_deref().unwrap_or_default()),
                                _ => l[i].as_deref(),
                            },
                        };
                        push_attribute(&mut buf, n, v);
                    }
                    position_of(&buf)
                })
                .collect())
        }
        _ => unreachable_key(key, Signal::Logs),
    }
}

/// Each log record's body in `AsString` form.
fn body_strings(logs: &RecordBatch) -> Vec<Option<String>> {
    let start = logs
        .schema()
        .index_of("body_type")
        .expect("logs have body columns");
    let body = AnyValues::from_columns(&logs.columns()[start..start + 6]);
    strings(&attributes::as_strings(&body))
}

/// The item tables of metrics with their attribute tables.
const POINT_TABLES: [(Table, Table); 4] = [
    (Table::NumberPoints, Table::NumberPointAttrs),
    (Table::HistogramPoints, Table::HistogramPointAttrs),
    (Table::ExpHistogramPoints, Table::ExpHistogramPointAttrs),
    (Table::SummaryPoints, Table::SummaryPointAttrs),
];

fn point_positions(
    payload: &Payload,
    key: &RoutingKey,
) -> Result<Vec<(Table, Vec<u32>)>, RoutingError> {
    let metrics = payload.table(Table::Metrics);
    let scopes = payload.table(Table::Scopes);
    let n_res = payload.table(Table::Resources).num_rows();
    let n_scopes = scopes.num_rows();
    let n_metrics = metrics.num_rows();
    let scope_of_metric = u32_column(metrics, col::PARENT_ID);
    let resource_of = u32_column(scopes, col::PARENT_ID);
    // A position per metric, spread to its points.
    let per_metric = |pos: Vec<u32>| -> Vec<(Table, Vec<u32>)> {
        POINT_TABLES
            .iter()
            .map(|&(t, _)| {
                let metric_of = payload.parent_ids(t).values();
                (t, metric_of.iter().map(|&m| pos[m as usize]).collect())
            })
            .collect()
    };
    let resource_positions = |keys: Vec<Vec<u8>>| -> Vec<u32> {
        let pos: Vec<u32> = keys.iter().map(|k| position_of(k)).collect();
        scope_of_metric
            .iter()
            .map(|&s| pos[resource_of[s as usize] as usize])
            .collect()
    };
    match key {
        RoutingKey::Service => {
            let svc = str_of(payload.table(Table::ResourceAttrs), n_res, "service.name")?;
            Ok(per_metric(resource_positions(
                svc.into_iter()
                    .map(|s| s.unwrap_or_default().into_bytes())
                    .collect(),
            )))
        }
        RoutingKey::Resource => Ok(per_metric(resource_positions(canonical_attrs(
            payload.table(Table::ResourceAttrs),
            n_res,
        )))),
        RoutingKey::Metric => {
            let names = dict_strings(metrics, col::NAME);
            Ok(per_metric(
                names.iter().map(|n| position_of(n.as_bytes())).collect(),
            ))
        }
        RoutingKey::StreamId => {
            let res = canonical_attrs(payload.table(Table::ResourceAttrs), n_res);
            let scope_attrs = canonical_attrs(payload.table(Table::ScopeAttrs), n_scopes);
            let scope_names = dict_strings(scopes, col::NAME);
            let scope_versions = dict_strings(scopes, col::VERSION);
            let metric_names = dict_strings(metrics, col::NAME);
            let units = dict_strings(metrics, col::UNIT);
            let types = metrics
                .column_by_name(col::METRIC_TYPE)
                .expect("metrics have metric_type")
                .as_primitive::<arrow::datatypes::UInt8Type>()
                .values();
            let temporality = metrics
                .column_by_name(col::AGGREGATION_TEMPORALITY)
                .expect("metrics have aggregation_temporality")
                .as_primitive::<Int32Type>()
                .values();
            let monotonic = metrics
                .column_by_name(col::IS_MONOTONIC)
                .expect("metrics have is_monotonic")
                .as_boolean();
            // The metric's identity, once per metric.
            let metric_keys: Vec<Vec<u8>> = (0..n_metrics)
                .map(|m| {
                    let s = scope_of_metric[m] as usize;
                    let mut k = Vec::new();
                    k.extend_from_slice(&res[resource_of[s] as usize]);
                    k.push(0x1e);
                    for part in [&scope_names[s], &scope_versions[s]] {
                        k.extend_from_slice(part.as_bytes());
                        k.push(0x1f);
                    }
                    k.extend_from_slice(&scope_attrs[s]);
                    k.push(0x1e);
                    k.extend_from_slice(metric_names[m].as_bytes());
                    k.push(0x1f);
                    k.extend_from_slice(units[m].as_bytes());
                    k.push(0x1f);
                    let mut meta = String::new();
                    let _ = write!(
                        meta,
                        "{}/{}/{}",
                        types[m],
                        temporality[m],
                        monotonic.value(m)
                    );
                    k.extend_from_slice(meta.as_bytes());
                    k.push(0x1e);
                    k
                })
                .collect();
            let mut out = Vec::with_capacity(POINT_TABLES.len());
            for (t, attrs_table) in POINT_TABLES {
                let points = payload.table(t).num_rows();
                let metric_of = payload.parent_ids(t).values();
                let point_attrs = canonical_attrs(payload.table(attrs_table), points);
                let mut buf = Vec::new();
                let pos = (0..points)
                    .map(|p| {
                        buf.clear();
                        buf.extend_from_slice(&metric_keys[metric_of[p] as usize]);
                        buf.extend_from_slice(&point_attrs[p]);
                        position_of(&buf)
                    })
                    .collect();
                out.push((t, pos));
            }
            Ok(out)
        }
        RoutingKey::Attributes(names) => {
            let mut res_vals = Vec::new();
            let mut scope_vals = Vec::new();
            for n in names {
                res_vals.push(str_of(payload.table(Table::ResourceAttrs), n_res, n)?);
                scope_vals.push(str_of(payload.table(Table::ScopeAttrs), n_scopes, n)?);
            }
            let mut out = Vec::with_capacity(POINT_TABLES.len());
            for (t, attrs_table) in POINT_TABLES {
                let points = payload.table(t).num_rows();
                let metric_of = payload.parent_ids(t).values();
                let mut point_vals = Vec::new();
                for n in names {
                    point_vals.push(str_of(payload.table(attrs_table), points, n)?);
                }
                let mut buf = Vec::new();
                let pos = (0..points)
                    .map(|p| {
                        let scope = scope_of_metric[metric_of[p] as usize] as usize;
                        let res = resource_of[scope] as usize;
                        buf.clear();
                        for k in 0..names.len() {
                            let v = res_vals[k][res]
                                .as_deref()
                                .or(scope_vals[k][scope].as_deref())
                                .or(point_vals[k][p].as_deref());
                            if let Some(v) = v {
                                buf.extend_from_slice(v.as_bytes());
                            }
                        }
                        position_of(&buf)
                    })
                    .collect();
                out.push((t, pos));
            }
            Ok(out)
        }
        RoutingKey::TraceId => unreachable_key(key, Signal::Metrics),
    }
}

fn unreachable_key<T>(key: &RoutingKey, signal: Signal) -> Result<T, RoutingError> {
    Err(RoutingError::Unsupported {
        key: key.name(),
        signal: signal.as_str(),
    })
}

/// For every parent, its attributes in a canonical byte form: sorted by key, each
/// `key \x1f type \x1f AsString value \x1e` (the first of a duplicated key).
fn canonical_attrs(attrs: &RecordBatch, parents: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(); parents];
    let ids = attributes::parent_ids(attrs);
    let keys = attributes::keys(attrs);
    let key_values = keys.values().as_string::<i32>();
    let values = AnyValues::of_rows(attrs);
    let texts = attributes::as_strings(&values);
    let mut row = 0;
    let mut entries: Vec<(&str, u8, &str)> = Vec::new();
    while row < ids.len() {
        let parent = ids[row] as usize;
        entries.clear();
        while row < ids.len() && ids[row] as usize == parent {
            let k = keys.keys().value(row) as usize;
            let ty = if values.types.is_valid(row) {
                values.types.value(row)
            } else {
                0
            };
            let text = if texts.is_valid(row) {
                texts.value(row)
            } else {
                ""
            };
            entries.push((key_values.value(k), ty, text));
            row += 1;
        }
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        if let Some(slot) = out.get_mut(parent) {
            for (k, ty, v) in &entries {
                slot.extend_from_slice(k.as_bytes());
                slot.push(0x1f);
                slot.push(*ty);
                slot.push(0x1f);
                slot.extend_from_slice(v.as_bytes());
                slot.push(0x1e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
