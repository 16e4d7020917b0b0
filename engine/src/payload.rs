//! [`Payload`]: the unit of data that flows through a pipeline — one signal's tables (see
//! [`crate::schema`]) plus where the data came from.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute;
use arrow::datatypes::UInt32Type;

use crate::kernels::ranges::{self, Run};
use crate::schema::{Signal, Table, col};

mod parts;
mod wire;
use parts::PartsTables;
use wire::WireTables;
pub(crate) use wire::part_buffers;
pub use wire::{WireForm, WireSplit};

/// One signal's worth of telemetry as normalized Arrow tables.
///
/// Cloning is cheap (Arrow buffers are reference counted), which is what fan-out to several
/// pipelines relies on.
#[derive(Clone, Debug)]
pub struct Payload {
    signal: Signal,
    /// Indexed by `Table as usize`; only the signal's own tables are `Some`.
    tables: [Option<Slot>; Table::COUNT],
    /// The peer that sent this data (the receiving socket's remote address), kept for
    /// enrichment such as `k8sattributes`, which runs before `batch`. A concat of payloads from
    /// different peers has no single origin and gets `None`.
    pub origin: Option<SocketAddr>,
    /// The request's client metadata (HTTP headers, gRPC metadata) when the receiver has
    /// `include_metadata: true`, for `attributes`' `from_context: metadata.<key>`. As `origin`,
    /// a concat keeps it only when every part has the same.
    pub metadata: Option<Arc<ClientMetadata>>,
}

/// A request's metadata: keys lowercase (HTTP header names and gRPC metadata keys are
/// case-insensitive), each with its values in the order they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMetadata(pub std::collections::BTreeMap<String, Vec<String>>);

impl ClientMetadata {
    /// The values of `key` (any case); empty when absent.
    pub fn get(&self, key: &str) -> &[String] {
        self.0
            .get(&key.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// Adds a value of `key`.
    pub fn push(&mut self, key: &str, value: String) {
        self.0
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value);
    }
}

/// A table as a payload holds it: built, or an attribute table whose rebuild is deferred.
#[derive(Clone, Debug)]
enum Slot {
    Ready(RecordBatch),
    /// Shared by clones, so a table built through one clone is built for all.
    Pending(Arc<PendingRows>),
    /// A table of a payload still in its wire form ([`WireForm`]): every table of the payload
    /// holds the same one, decoded on the first read of any of them.
    Wire(Arc<WireTables>),
    /// A table of a payload that is several payloads one after the other
    /// ([`Payload::concat_deferred`]): every table holds the same list, concatenated on the
    /// first read of any of them.
    Parts(Arc<PartsTables>),
}

/// An attribute table whose rebuild is deferred: the rows of `base` in `runs`, in order, each
/// row's parent id mapped through `new_ids` (old parent row -> new) when set.
///
/// Why: every kernel that drops attribute rows (a filter dropping spans, `delete_key`,
/// `keep_keys`, ...) would otherwise copy every kept row, strings included, and the next
/// editor copies them all again. Dropping rows from a pending table only narrows its runs,
/// and the copy happens once: when someone reads the table ([`Payload::table`] builds it), or
/// fused into the next rebuild (`set` gathers from `base` directly, see
/// [`crate::kernels::attributes::set_key_pending`]).
#[derive(Debug)]
pub struct PendingRows {
    base: RecordBatch,
    runs: Vec<Run>,
    new_ids: Option<Arc<Vec<u32>>>,
    built: OnceLock<RecordBatch>,
}

impl PendingRows {
    /// Rows `runs` (of source 0, ascending, within `base`) of attribute table `base` (which
    /// errors name as `table`), parent ids mapped through `new_ids` (which must cover every
    /// parent id of `base`).
    pub fn new(
        table: Table,
        base: RecordBatch,
        runs: Vec<Run>,
        new_ids: Option<Arc<Vec<u32>>>,
    ) -> Result<Self, PayloadError> {
        let n = base.num_rows();
        let mut end = 0;
        for r in &runs {
            if r.src != 0 || r.start < end || r.start + r.len > n {
                return Err(PayloadError::Invariant {
                    table,
                    detail: format!("pending run {}..{} of {n} rows", r.start, r.start + r.len),
                });
            }
            end = r.start + r.len;
        }
        // Parent ids are sorted (the table invariant every kernel and encoder relies on): the
        // last is the largest.
        if let Some(ids) = &new_ids
            && parent_ids(&base)
                .values()
                .last()
                .is_some_and(|&p| p as usize >= ids.len())
        {
            return Err(PayloadError::Invariant {
                table,
                detail: "pending parent map does not cover every parent".into(),
            });
        }
        Ok(PendingRows {
            base,
            runs,
            new_ids,
            built: OnceLock::new(),
        })
    }

    /// All rows of `table`, as a pending table (to narrow).
    pub fn whole(table: RecordBatch) -> Self {
        let runs = ranges::runs_of_len(table.num_rows());
        PendingRows {
            base: table,
            runs,
            new_ids: None,
            built: OnceLock::new(),
        }
    }

    /// The table the rows are taken from.
    pub fn base(&self) -> &RecordBatch {
        &self.base
    }

    /// The rows of `base`, ascending.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Old parent row -> new parent row, if the parent table was filtered.
    pub fn new_ids(&self) -> Option<&Arc<Vec<u32>>> {
        self.new_ids.as_ref()
    }

    pub fn num_rows(&self) -> usize {
        ranges::total(&self.runs)
    }

    /// The parent row (new numbering) of `base` row `r`.
    #[inline]
    pub fn parent_of(&self, base_parents: &[u32], r: usize) -> u32 {
        let p = base_parents[r];
        self.new_ids.as_ref().map_or(p, |m| m[p as usize])
    }

    /// The same rows, narrowed to `runs` (a subset of this table's runs).
    pub fn narrowed(&self, runs: Vec<Run>) -> Self {
        PendingRows {
            base: self.base.clone(),
            runs,
            new_ids: self.new_ids.clone(),
            built: OnceLock::new(),
        }
    }

    /// The table, built once.
    pub fn build(&self) -> &RecordBatch {
        self.built.get_or_init(|| {
            // `new` checked the runs and the parent map: neither step can fail.
            let rows = crate::kernels::attributes::gather_rows(&self.base, &self.runs)
                .expect("pending runs lie within the base table");
            match &self.new_ids {
                None => rows,
                Some(m) => {
                    let ids: UInt32Array = parent_ids(&rows).unary(|old| m[old as usize]);
                    let mut columns = rows.columns().to_vec();
                    columns[0] = Arc::new(ids);
                    RecordBatch::try_new(rows.schema(), columns)
                        .expect("same schema, same row count")
                }
            }
        })
    }

    fn is_built(&self) -> bool {
        self.built.get().is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("table {table:?} is not part of a {signal:?} payload")]
    WrongTable { signal: Signal, table: Table },
    #[error("table {table:?}: schema does not match the sluice schema: {detail}")]
    Schema { table: Table, detail: String },
    #[error("table {table:?}: {detail}")]
    Invariant { table: Table, detail: String },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The empty table `t`, built once: every payload has all its signal's tables, and most
/// requests leave several empty (events, links, scope attributes...). Building them anew for
/// each request (an Arrow array per column, each with its own buffers) was about a quarter of
/// the CPU of receiving 100-span requests and dropping them (BENCHMARKS.md, issue 17); a clone
/// is one reference count per column.
fn empty_table(t: Table) -> RecordBatch {
    static EMPTY: OnceLock<Vec<RecordBatch>> = OnceLock::new();
    EMPTY.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|&t| RecordBatch::new_empty(t.schema()))
            .collect()
    })[t as usize]
        .clone()
}

/// `batch` has table `t`'s schema (the same fields; the schema's metadata is not compared).
fn check_schema(t: Table, batch: &RecordBatch) -> Result<(), PayloadError> {
    let want = t.schema();
    // Decoders and kernels build their batches with the shared schema: one pointer compare.
    if Arc::ptr_eq(&batch.schema(), &want) || batch.schema().fields() == want.fields() {
        return Ok(());
    }
    Err(PayloadError::Schema {
        table: t,
        detail: format!("got {:?}", batch.schema().fields()),
    })
}

impl Payload {
    /// A payload of `signal` with every table present and empty.
    pub fn empty(signal: Signal) -> Self {
        let mut tables: [Option<Slot>; Table::COUNT] = Default::default();
        for &t in signal.tables() {
            tables[t as usize] = Some(Slot::Ready(empty_table(t)));
        }
        Payload {
            signal,
            tables,
            origin: None,
            metadata: None,
        }
    }

    /// Builds a payload from complete tables (one per table of `signal`, any order; a table
    /// not given is empty). Checks schemas, not invariants: call [`Payload::validate`] for
    /// those.
    pub fn from_tables(
        signal: Signal,
        tables: impl IntoIterator<Item = (Table, RecordBatch)>,
    ) -> Result<Self, PayloadError> {
        let mut p = Payload {
            signal,
            tables: Default::default(),
            origin: None,
            metadata: None,
        };
        for (t, batch) in tables {
            if !signal.tables().contains(&t) {
                return Err(PayloadError::WrongTable { signal, table: t });
            }
            check_schema(t, &batch)?;
            p.tables[t as usize] = Some(Slot::Ready(batch));
        }
        for &t in signal.tables() {
            p.tables[t as usize].get_or_insert_with(|| Slot::Ready(empty_table(t)));
        }
        Ok(p)
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The table `t`. Panics if `t` is not a table of this payload's signal: that is a
    /// programming error, never a data error.
    /// A pending table ([`PendingRows`]) is built on first read.
    pub fn table(&self, t: Table) -> &RecordBatch {
        match self.slot(t) {
            Slot::Ready(b) => b,
            Slot::Pending(p) => p.build(),
            Slot::Wire(w) => w.decoded().table(t),
            Slot::Parts(p) => p.merged().table(t),
        }
    }

    fn slot(&self, t: Table) -> &Slot {
        self.tables[t as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("{t:?} is not a table of a {:?} payload", self.signal))
    }

    /// Attribute table `t` if its rebuild is still pending (not yet read), for kernels that
    /// fuse their own rebuild with it.
    pub fn pending(&self, t: Table) -> Option<&PendingRows> {
        match self.slot(t) {
            Slot::Pending(p) if !p.is_built() => Some(p),
            _ => None,
        }
    }

    /// Attribute table `t`'s pending rows, built or not: for readers that look rows up in the
    /// pending table's base instead of building it. Which form a table is in changes only
    /// through [`Payload::set`] / [`Payload::set_pending`], so row numbers found this way stay
    /// valid until the table is replaced.
    pub fn pending_rows(&self, t: Table) -> Option<&PendingRows> {
        match self.slot(t) {
            Slot::Pending(p) => Some(p),
            Slot::Ready(_) | Slot::Wire(_) | Slot::Parts(_) => None,
        }
    }

    /// Attribute table `t` as pending rows: the pending ones, or all rows of the built table.
    pub fn pending_or_whole(&self, t: Table) -> PendingRows {
        match self.pending(t) {
            Some(p) => p.narrowed(p.runs.clone()),
            None => PendingRows::whole(self.table(t).clone()),
        }
    }

    /// Replaces attribute table `t` with pending rows (built when first read).
    pub fn set_pending(&mut self, t: Table, rows: PendingRows) -> Result<(), PayloadError> {
        if !t.is_attrs() || self.tables[t as usize].is_none() {
            return Err(PayloadError::WrongTable {
                signal: self.signal,
                table: t,
            });
        }
        if rows.base.schema().fields() != t.schema().fields() {
            return Err(PayloadError::Schema {
                table: t,
                detail: format!("got {:?}", rows.base.schema().fields()),
            });
        }
        self.tables[t as usize] = Some(Slot::Pending(Arc::new(rows)));
        Ok(())
    }

    /// Replaces table `t`; its schema must be exactly the sluice schema of `t`.
    pub fn set(&mut self, t: Table, batch: RecordBatch) -> Result<(), PayloadError> {
        if self.tables[t as usize].is_none() {
            return Err(PayloadError::WrongTable {
                signal: self.signal,
                table: t,
            });
        }
        check_schema(t, &batch)?;
        self.tables[t as usize] = Some(Slot::Ready(batch));
        Ok(())
    }

    /// The tables of this payload, parents before children.
    pub fn tables(&self) -> impl Iterator<Item = (Table, &RecordBatch)> {
        self.signal.tables().iter().map(|&t| (t, self.table(t)))
    }

    /// Spans, data points or log records: what self-telemetry counts as items.
    pub fn item_count(&self) -> usize {
        if let Some(w) = self.wire() {
            return w.items();
        }
        if let Some(p) = self.parts_tables() {
            return p.items;
        }
        self.signal
            .item_tables()
            .iter()
            .map(|&t| self.table(t).num_rows())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.item_count() == 0
    }

    /// The newest time its items carry (Unix ns): span end times, data point times, log
    /// record times and observed times; `None` when no item has one (all zero or absent).
    /// What a clock driven by the data moves to when this payload arrives (offline replay).
    pub fn newest_time(&self) -> Option<u64> {
        let columns: &[(Table, &str)] = match self.signal {
            Signal::Traces => &[(Table::Spans, col::END_TIME_UNIX_NANO)],
            Signal::Metrics => &[
                (Table::NumberPoints, col::TIME_UNIX_NANO),
                (Table::HistogramPoints, col::TIME_UNIX_NANO),
                (Table::ExpHistogramPoints, col::TIME_UNIX_NANO),
                (Table::SummaryPoints, col::TIME_UNIX_NANO),
            ],
            Signal::Logs => &[
                (Table::Logs, col::TIME_UNIX_NANO),
                (Table::Logs, col::OBSERVED_TIME_UNIX_NANO),
            ],
        };
        columns
            .iter()
            .filter_map(|(t, name)| {
                let c = self.table(*t).column_by_name(name)?;
                compute::max(c.as_primitive_opt::<arrow::datatypes::UInt64Type>()?)
            })
            .filter(|t| *t > 0)
            .max()
    }

    /// Bytes of Arrow buffers held by this payload: what the memory account counts for it.
    /// A pending table counts what it holds: its base, and its result once built. All-null
    /// columns in the process-wide shared zero buffers ([`crate::kernels::nulls`]) count as
    /// nothing: they are allocated once per process, not per payload. Other buffers shared
    /// with another payload (fan-out clones, dictionary values shared by the chunks of one
    /// split) are counted in each: an over-estimate, never an under-estimate.
    ///
    /// A wire form counts its bytes, and its decoded tables once something read them, once
    /// for all the tables that share it.
    pub fn memory_size(&self) -> usize {
        use crate::kernels::nulls::batch_memory_size;
        let mut wire_seen: Option<&Arc<WireTables>> = None;
        let mut parts_seen: Option<&Arc<PartsTables>> = None;
        self.tables
            .iter()
            .flatten()
            .map(|slot| match slot {
                Slot::Parts(p) if parts_seen.is_some_and(|seen| Arc::ptr_eq(seen, p)) => 0,
                Slot::Parts(p) => {
                    // As for wire slots: one list per payload.
                    parts_seen = Some(p);
                    p.parts.iter().map(Payload::memory_size).sum::<usize>()
                        + p.merged_if_read().map_or(0, Payload::memory_size)
                }
                Slot::Ready(b) => batch_memory_size(b),
                Slot::Pending(p) => {
                    batch_memory_size(&p.base) + p.built.get().map_or(0, batch_memory_size)
                }
                Slot::Wire(w) if wire_seen.is_some_and(|seen| Arc::ptr_eq(seen, w)) => 0,
                Slot::Wire(w) => {
                    // A payload's wire slots all hold one wire form (a later `set` replaces
                    // slots, never adds another form), so remembering the last one suffices.
                    wire_seen = Some(w);
                    w.form.len() + w.decoded_if_read().map_or(0, Payload::memory_size)
                }
            })
            .sum()
    }

    /// A payload of `signal` in its wire form: the tables are decoded from it when first read.
    pub fn from_wire(signal: Signal, form: WireForm) -> Self {
        let shared = Arc::new(WireTables::new(signal, form));
        let mut tables: [Option<Slot>; Table::COUNT] = Default::default();
        for &t in signal.tables() {
            tables[t as usize] = Some(Slot::Wire(shared.clone()));
        }
        Payload {
            signal,
            tables,
            origin: None,
            metadata: None,
        }
    }

    /// Several payloads of `signal` one after the other, as one: what [`Payload::concat`]
    /// gives, without concatenating tables until one is read (the encoder writes the parts one
    /// after the other; counts and sizes are sums; see `payload/parts.rs`). Parts in their
    /// wire form stay so (the encoder writes their bytes); if every part is one, the result is
    /// one wire form, as with `concat`. Falls back to `concat` when a part's tables do not
    /// have the schemas a concatenation needs, so that its error comes now.
    pub fn concat_deferred(signal: Signal, parts: Vec<Payload>) -> Result<Payload, PayloadError> {
        if parts.len() < 2 || parts.iter().all(|p| p.wire().is_some()) {
            return match <[Payload; 1]>::try_from(parts) {
                Ok([one]) if one.signal == signal => Ok(one),
                Ok([one]) => Payload::concat(signal, &[one]),
                Err(parts) => Payload::concat(signal, &parts),
            };
        }
        let deferrable = parts.iter().all(|p| {
            p.signal == signal
                && (p.wire().is_some()
                    || signal.tables().iter().all(|&t| {
                        let schema = match p.slot(t) {
                            Slot::Ready(b) => b.schema(),
                            Slot::Pending(rows) => rows.base.schema(),
                            // Decoded or merged tables are made by sluice: canonical.
                            Slot::Wire(_) | Slot::Parts(_) => return true,
                        };
                        same_types(&schema, &t.schema())
                    }))
        });
        if !deferrable {
            return Payload::concat(signal, &parts);
        }
        let origin = parts[0].origin;
        let origin = parts
            .iter()
            .all(|p| p.origin == origin)
            .then_some(origin)
            .flatten();
        let metadata = parts[0].metadata.clone();
        let metadata = parts
            .iter()
            .all(|p| p.metadata == metadata)
            .then_some(metadata)
            .flatten();
        let shared = Arc::new(PartsTables::new(signal, parts));
        let mut tables: [Option<Slot>; Table::COUNT] = Default::default();
        for &t in signal.tables() {
            tables[t as usize] = Some(Slot::Parts(shared.clone()));
        }
        Ok(Payload {
            signal,
            tables,
            origin,
            metadata,
        })
    }

    /// The parts this payload still is ([`Payload::concat_deferred`]), if none of its tables
    /// was replaced since.
    pub fn parts(&self) -> Option<&[Payload]> {
        self.parts_tables().map(|p| p.parts.as_slice())
    }

    fn parts_tables(&self) -> Option<&PartsTables> {
        let mut tables = self.signal.tables().iter().map(|&t| self.slot(t));
        let Some(Slot::Parts(first)) = tables.next() else {
            return None;
        };
        tables
            .all(|s| matches!(s, Slot::Parts(p) if Arc::ptr_eq(p, first)))
            .then_some(first.as_ref())
    }

    /// The wire form this payload still is, if none of its tables was replaced since it was
    /// made from one (reading tables does not change it: they are its decoding). What an
    /// encoder writes as it is.
    pub fn wire(&self) -> Option<&WireForm> {
        let mut tables = self.signal.tables().iter().map(|&t| self.slot(t));
        let Some(Slot::Wire(first)) = tables.next() else {
            return None;
        };
        tables
            .all(|s| matches!(s, Slot::Wire(w) if Arc::ptr_eq(w, first)))
            .then_some(&first.form)
    }

    /// Builds every pending table ([`PendingRows`]) and lets go of what it was built from.
    /// For payloads that are kept a while (buffered by `batch` or tail sampling, queued for
    /// an exporter), so a pending table's base is not held beside its result.
    /// A wire form stays one (its bytes are what is kept), unless its tables were read: then
    /// the tables are kept and the bytes let go.
    pub fn settle(&mut self) {
        let signal = self.signal;
        for (t, slot) in Table::ALL.iter().zip(self.tables.iter_mut()) {
            let Some(slot) = slot else { continue };
            match slot {
                Slot::Pending(p) => *slot = Slot::Ready(p.build().clone()),
                Slot::Wire(w) if w.decoded_if_read().is_some() && signal.tables().contains(t) => {
                    *slot = Slot::Ready(w.decoded().table(*t).clone());
                }
                Slot::Parts(p) if p.merged_if_read().is_some() && signal.tables().contains(t) => {
                    *slot = Slot::Ready(p.merged().table(*t).clone());
                }
                _ => {}
            }
        }
    }

    /// The `parent_id` column of child table `t`.
    pub fn parent_ids(&self, t: Table) -> &UInt32Array {
        parent_ids(self.table(t))
    }

    /// Checks the data-model invariants: every child's `parent_id` is a row of its parent
    /// table, and every child table is sorted by `parent_id`.
    pub fn validate(&self) -> Result<(), PayloadError> {
        for (t, batch) in self.tables() {
            let Some(parent) = t.parent() else { continue };
            let parent_rows = self.table(parent).num_rows() as u32;
            let ids = parent_ids(batch);
            if ids.null_count() > 0 {
                return Err(invariant(t, "parent_id has nulls"));
            }
            let mut prev = 0u32;
            for &id in ids.values() {
                if id >= parent_rows {
                    return Err(invariant(
                        t,
                        format!("parent_id {id} out of range ({parent_rows} {parent:?} rows)"),
                    ));
                }
                if id < prev {
                    return Err(invariant(t, "not sorted by parent_id"));
                }
                prev = id;
            }
        }
        Ok(())
    }

    /// Concatenates payloads of one signal into one, rebasing parent ids. Order is kept, so
    /// the invariants hold if they held for each input.
    ///
    /// Payloads all in their wire form concatenate to a wire form (their byte ranges, listed:
    /// nothing is copied or decoded); any other mix is decoded and concatenated as tables.
    pub fn concat(signal: Signal, parts: &[Payload]) -> Result<Payload, PayloadError> {
        let mut out = Payload::empty(signal);
        if parts.is_empty() {
            return Ok(out);
        }
        let wires: Option<Vec<&WireForm>> = parts
            .iter()
            .map(|p| p.wire().filter(|_| p.signal == signal))
            .collect();
        if let Some(wires) = wires {
            out = Payload::from_wire(signal, WireForm::concat(wires));
        }
        let origin = parts[0].origin;
        out.origin = if parts.iter().all(|p| p.origin == origin) {
            origin
        } else {
            None
        };
        let metadata = &parts[0].metadata;
        out.metadata = if parts.iter().all(|p| p.metadata == *metadata) {
            metadata.clone()
        } else {
            None
        };
        if out.wire().is_some() {
            return Ok(out);
        }
        for &t in signal.tables() {
            let mut batches = Vec::with_capacity(parts.len());
            let mut parent_offset = 0u32;
            for p in parts {
                if p.signal != signal {
                    return Err(PayloadError::WrongTable {
                        signal: p.signal,
                        table: t,
                    });
                }
                let batch = p.table(t);
                match t.parent() {
                    Some(_) if parent_offset > 0 => {
                        batches.push(add_to_parent_ids(batch, parent_offset)?);
                    }
                    _ => batches.push(batch.clone()),
                }
                if let Some(parent) = t.parent() {
                    parent_offset += p.table(parent).num_rows() as u32;
                }
            }
            out.tables[t as usize] =
                Some(Slot::Ready(compute::concat_batches(&t.schema(), &batches)?));
        }
        Ok(out)
    }
}

impl Payload {
    /// Keeps the rows of `table` where `keep` is true, and everything that belongs to them.
    ///
    /// Shorthand for [`Payload::filter_tables`] with one table.
    pub fn filter(&self, table: Table, keep: &[bool]) -> Result<Payload, PayloadError> {
        self.filter_tables(&[(table, keep)])
    }

    /// Keeps the rows of each given table where its mask is true, then:
    /// - cascades down: a row is kept only if its parent is (attributes of a dropped span go);
    /// - prunes up along the item path: a scope left with no spans (metrics, log records), a
    ///   metric left with no points, a resource left with no scopes is dropped, as the
    ///   Collector's processors drop empty containers;
    /// - renumbers `parent_id`s densely (one prefix sum per parent table).
    ///
    /// Order is kept, so the invariants hold. This is the primitive behind filtering, sampling
    /// decisions and batch splitting.
    pub fn filter_tables(&self, masks: &[(Table, &[bool])]) -> Result<Payload, PayloadError> {
        let tables = self.signal.tables();
        let mut keep: Vec<Option<Vec<bool>>> = vec![None; Table::COUNT];
        for &(t, m) in masks {
            if m.len() != self.table(t).num_rows() {
                return Err(invariant(
                    t,
                    format!(
                        "mask has {} rows, table {}",
                        m.len(),
                        self.table(t).num_rows()
                    ),
                ));
            }
            // An all-true mask keeps everything: no mask.
            if m.iter().any(|k| !k) {
                keep[t as usize] = Some(m.to_vec());
            }
        }
        self.cascade_down(&mut keep);
        // Prune containers left empty, nearest first (points -> metrics -> scopes -> resources).
        let mut pruned = false;
        for &container in tables.iter().rev() {
            let children: Vec<Table> = tables
                .iter()
                .copied()
                .filter(|c| c.parent() == Some(container) && is_structural(*c))
                .collect();
            if children.is_empty() || !children.iter().any(|c| touched(&keep, *c)) {
                continue;
            }
            let rows = self.table(container).num_rows();
            let mut has_child = vec![false; rows];
            for c in &children {
                let ids = self.parent_ids(*c).values();
                match &keep[*c as usize] {
                    Some(m) => ids
                        .iter()
                        .zip(m)
                        .filter(|(_, k)| **k)
                        .for_each(|(&p, _)| has_child[p as usize] = true),
                    None => ids.iter().for_each(|&p| has_child[p as usize] = true),
                }
            }
            let kept = |r: usize| keep[container as usize].as_ref().is_none_or(|m| m[r]);
            if (0..rows).any(|r| kept(r) && !has_child[r]) {
                let m = keep[container as usize].get_or_insert_with(|| vec![true; rows]);
                m.iter_mut().zip(&has_child).for_each(|(k, h)| *k &= *h);
                pruned = true;
            }
        }
        if pruned {
            self.cascade_down(&mut keep);
        }
        // Apply: filter rows, then map each child's parent ids to the parent's new numbering.
        // Every table is replaced below; starting from a clone (shared buffers) avoids building
        // empty tables only to drop them.
        let mut out = self.clone();
        // Per filtered parent table: old row -> new row.
        let mut new_ids: Vec<Option<Arc<Vec<u32>>>> = vec![None; Table::COUNT];
        // Runs of kept rows, per table that was filtered.
        let mut kept_runs: Vec<Option<Vec<Run>>> = vec![None; Table::COUNT];
        for &t in tables {
            let parent_runs = t.parent().and_then(|p| kept_runs[p as usize].as_deref());
            let runs = match (&keep[t as usize], parent_runs) {
                (None, None) => None,
                // Attribute tables (leaves, not cascaded above): the rows of the kept parents,
                // found from the parents' runs by searching the sorted parent ids.
                (None, Some(parent)) => {
                    Some(ranges::child_runs(parent, self.parent_ids(t).values()))
                }
                // An attribute table with a mask of its own and a filtered parent: both apply.
                (Some(m), Some(parent)) if t.is_attrs() => {
                    let mut both = vec![false; m.len()];
                    for r in ranges::child_runs(parent, self.parent_ids(t).values()) {
                        both[r.start..r.start + r.len]
                            .copy_from_slice(&m[r.start..r.start + r.len]);
                    }
                    Some(ranges::runs_of_bools(&both))
                }
                (Some(m), _) => Some(ranges::runs_of_bools(m)),
            };
            let Some(runs) = runs else {
                // Untouched (its slot, pending or not, is already in `out`).
                continue;
            };
            // Old row -> new row of the parent table, if it was filtered.
            let parent_map = t.parent().and_then(|p| {
                let parent_keep = keep[p as usize].as_ref()?;
                let m = new_ids[p as usize].get_or_insert_with(|| {
                    let mut next = 0u32;
                    Arc::new(
                        parent_keep
                            .iter()
                            .map(|&k| {
                                let id = next;
                                next += u32::from(k);
                                id
                            })
                            .collect(),
                    )
                });
                Some(m.clone())
            });
            let batch = self.table(t);
            let slot = if t.is_attrs() {
                // Attribute tables are the largest: their copy waits for a reader, or for
                // the next editor to do it in its own rebuild (see `PendingRows`).
                Slot::Pending(Arc::new(PendingRows::new(
                    t,
                    batch.clone(),
                    runs.clone(),
                    parent_map,
                )?))
            } else {
                let filtered = ranges::gather_batch(batch, &runs)?;
                Slot::Ready(match parent_map {
                    Some(m) => {
                        let ids: UInt32Array = parent_ids(&filtered).unary(|old| m[old as usize]);
                        let mut columns = filtered.columns().to_vec();
                        columns[0] = Arc::new(ids);
                        RecordBatch::try_new(filtered.schema(), columns)?
                    }
                    None => filtered,
                })
            };
            kept_runs[t as usize] = Some(runs);
            out.tables[t as usize] = Some(slot);
        }
        Ok(out)
    }

    /// A child row is kept only if its parent row is. Attribute tables (leaves, and the
    /// largest tables) are left out: [`Payload::filter_tables`] finds their kept rows from
    /// their parent's.
    fn cascade_down(&self, keep: &mut [Option<Vec<bool>>]) {
        for &t in self.signal.tables() {
            let Some(parent) = t.parent() else { continue };
            if keep[parent as usize].is_none() || t.is_attrs() {
                continue;
            }
            let ids = self.parent_ids(t).values();
            let mut m = keep[t as usize]
                .take()
                .unwrap_or_else(|| vec![true; ids.len()]);
            let pk = keep[parent as usize].as_deref().unwrap_or_default();
            m.iter_mut()
                .zip(ids.iter())
                .for_each(|(k, &p)| *k &= pk[p as usize]);
            keep[t as usize] = Some(m);
        }
    }

    /// Cuts the payload into parts by the owner of every item: `owners` gives, per item table
    /// (spans, data points, log records), the part `0..parts` of each of its rows. Returns
    /// `(part, its payload)` for every part that received items, in part order.
    ///
    /// Each part equals [`Payload::filter_tables`] with the mask `owner == part` on every item
    /// table: the same rows in the same order, containers left empty pruned, attribute tables
    /// left pending. But all parts are cut in one pass: the owners are read once, into the
    /// runs of rows each part owns, and every other table's rows follow from its parent's or
    /// children's runs (by searches in the sorted parent ids, without visiting the rows), where
    /// a filter per part builds, cascades and prunes a full mask of every table for each part.
    /// Items of one routing key sit together (a trace's spans, a metric's points), so a part is
    /// a few runs of every table and its rows are copied run by run.
    ///
    /// An item table missing from `owners` is kept whole in every part (as by a filter without
    /// its mask). When a single part owns everything, it is this payload, uncopied.
    pub fn partition(
        &self,
        owners: &[(Table, &[u16])],
        parts: usize,
    ) -> Result<Vec<(usize, Payload)>, PayloadError> {
        // Per part, per table: its kept rows as runs; `None` = every row.
        let mut kept: Vec<Vec<Option<Vec<Run>>>> = vec![vec![None; Table::COUNT]; parts];
        let mut used = vec![false; parts];
        for &(t, own) in owners {
            if !self.signal.item_tables().contains(&t) {
                return Err(PayloadError::WrongTable {
                    signal: self.signal,
                    table: t,
                });
            }
            let rows = self.table(t).num_rows();
            if own.len() != rows {
                return Err(invariant(
                    t,
                    format!("{} owners for {rows} rows", own.len()),
                ));
            }
            for part in kept.iter_mut() {
                part[t as usize] = Some(Vec::new());
            }
            let mut start = 0;
            while start < own.len() {
                let b = own[start];
                let len = own[start..].iter().take_while(|&&o| o == b).count();
                let runs = kept
                    .get_mut(usize::from(b))
                    .and_then(|part| part[t as usize].as_mut())
                    .ok_or_else(|| invariant(t, format!("owner {b} of {parts} parts")))?;
                runs.push(Run { src: 0, start, len });
                used[usize::from(b)] = true;
                start += len;
            }
            // A part owning every row of the table keeps it whole.
            for part in kept.iter_mut() {
                if part[t as usize]
                    .as_deref()
                    .is_some_and(|r| ranges::total(r) == rows)
                {
                    part[t as usize] = None;
                }
            }
        }
        let used: Vec<usize> = (0..parts).filter(|&b| used[b]).collect();
        if let [only] = used[..] {
            return Ok(vec![(only, self.clone())]);
        }
        used.into_iter()
            .map(|b| Ok((b, self.part_of_runs(std::mem::take(&mut kept[b]))?)))
            .collect()
    }

    /// The part keeping the item-table rows `kept` (runs per table, `None` = all), with every
    /// other table following: containers (resources, scopes, metrics) keep the rows that still
    /// have a structural child, the rest (attributes, events, links, exemplars) the rows whose
    /// parent is kept. [`Payload::partition`]'s cut of one part.
    fn part_of_runs(&self, mut kept: Vec<Option<Vec<Run>>>) -> Result<Payload, PayloadError> {
        let tables = self.signal.tables();
        let items = self.signal.item_tables();
        // Containers, children first: the rows with a kept structural child, once a child lost
        // rows (an untouched container keeps even the empty rows it came with, as a filter).
        for &c in tables.iter().rev() {
            let children = || {
                tables
                    .iter()
                    .copied()
                    .filter(move |ch| ch.parent() == Some(c) && is_structural(*ch))
            };
            if items.contains(&c) || !children().any(|ch| kept[ch as usize].is_some()) {
                continue;
            }
            let mut has_child = vec![false; self.table(c).num_rows()];
            for ch in children() {
                let ids = self.parent_ids(ch).values();
                match &kept[ch as usize] {
                    None => ids.iter().for_each(|&p| has_child[p as usize] = true),
                    // Each distinct parent of the run once: a search to the next parent.
                    Some(runs) => {
                        for r in runs {
                            let (mut i, end) = (r.start, r.start + r.len);
                            while i < end {
                                let p = ids[i];
                                has_child[p as usize] = true;
                                i += ids[i..end].partition_point(|&x| x == p);
                            }
                        }
                    }
                }
            }
            let runs = ranges::runs_of_bools(&has_child);
            if ranges::total(&runs) < has_child.len() {
                kept[c as usize] = Some(runs);
            }
        }
        // The rest, parents first: the rows of kept parents.
        let is_container = |t: Table| {
            tables
                .iter()
                .any(|ch| ch.parent() == Some(t) && is_structural(*ch))
        };
        for &t in tables {
            if items.contains(&t) || is_container(t) {
                continue;
            }
            if let Some(parent_runs) = t.parent().and_then(|p| kept[p as usize].as_deref()) {
                kept[t as usize] =
                    Some(ranges::child_runs(parent_runs, self.parent_ids(t).values()));
            }
        }
        // Build: a table is rebuilt when it lost rows or its parent did (its parent ids are
        // renumbered); the others are shared with this payload as they are. Slots are filled
        // one by one rather than cloning the payload and replacing them (a clone of every
        // table only to drop most of it was 5% of the split).
        let mut out = Payload {
            signal: self.signal,
            tables: Default::default(),
            origin: self.origin,
            metadata: self.metadata.clone(),
        };
        let mut new_ids: Vec<Option<Arc<Vec<u32>>>> = vec![None; Table::COUNT];
        for &t in tables {
            let parent_runs = t
                .parent()
                .and_then(|p| Some((p, kept[p as usize].as_deref()?)));
            if kept[t as usize].is_none() && parent_runs.is_none() {
                out.tables[t as usize] = self.tables[t as usize].clone();
                continue;
            }
            let batch = self.table(t);
            let runs = kept[t as usize]
                .clone()
                .unwrap_or_else(|| ranges::runs_of_len(batch.num_rows()));
            // Old parent row -> new, for the kept parent rows (never read for the others).
            let parent_map = parent_runs.map(|(p, pr)| {
                new_ids[p as usize]
                    .get_or_insert_with(|| {
                        let mut m = vec![0u32; self.table(p).num_rows()];
                        let mut next = 0u32;
                        for r in pr {
                            for slot in &mut m[r.start..r.start + r.len] {
                                *slot = next;
                                next += 1;
                            }
                        }
                        Arc::new(m)
                    })
                    .clone()
            });
            let slot = if t.is_attrs() {
                // As a filter leaves them: copied when read, or by the next editor's rebuild.
                Slot::Pending(Arc::new(PendingRows::new(
                    t,
                    batch.clone(),
                    runs,
                    parent_map,
                )?))
            } else {
                let rows = ranges::gather_batch(batch, &runs)?;
                Slot::Ready(match parent_map {
                    Some(m) => shift_parent_ids(&rows, |old| m[old as usize])?,
                    None => rows,
                })
            };
            out.tables[t as usize] = Some(slot);
        }
        Ok(out)
    }

    /// Splits into consecutive payloads of at most `max_items` items each (spans, data points,
    /// log records), order kept; each carries the resources, scopes and metrics its items need
    /// (a resource, scope or metric whose items fall in two parts is in both).
    ///
    /// Linear in the payload, whatever the number of parts: a part is a contiguous row range of
    /// every table (children are sorted by parent, so the rows under a range of parents are a
    /// range), taken as zero-copy slices with only the `parent_id` columns rebased. The
    /// exporters split oversized requests with it, so its cost must not grow with the parts.
    ///
    /// A wire form is split at its top-level resources, staying a wire form, unless one
    /// resource alone holds more than `max_items`: then it is decoded and split as tables.
    pub fn split_items(&self, max_items: usize) -> Result<Vec<Payload>, PayloadError> {
        let total = self.item_count();
        if max_items == 0 || total <= max_items {
            return Ok(vec![self.clone()]);
        }
        if let Some(parts) = self.parts() {
            return split_parts(self.signal, parts, max_items);
        }
        if let Some(parts) = self.wire().and_then(|w| w.split_items(max_items)) {
            return Ok(parts
                .into_iter()
                .map(|form| Payload {
                    origin: self.origin,
                    metadata: self.metadata.clone(),
                    ..Payload::from_wire(self.signal, form)
                })
                .collect());
        }
        self.item_chunks(max_items)
            .iter()
            .map(|items| self.slice_items(items))
            .collect()
    }

    /// The item rows of each part: per item table, a row range (empty where the part has none).
    /// Items count in OTLP order: for metrics that is metric by metric, a metric's points being
    /// contiguous in its point table.
    fn item_chunks(&self, max_items: usize) -> Vec<Vec<(Table, Range<usize>)>> {
        // (first sort key, table, rows): one run per metric for metrics, the whole table
        // otherwise.
        let mut runs: Vec<(u32, Table, Range<usize>)> = Vec::new();
        for &t in self.signal.item_tables() {
            let rows = self.table(t).num_rows();
            if self.signal != Signal::Metrics {
                runs.push((0, t, 0..rows));
                continue;
            }
            let ids = self.parent_ids(t).values();
            let mut i = 0;
            while i < ids.len() {
                let j = i + ids[i..].iter().take_while(|&&p| p == ids[i]).count();
                runs.push((ids[i], t, i..j));
                i = j;
            }
        }
        runs.sort_by_key(|r| r.0);
        let empty = || -> Vec<(Table, Range<usize>)> {
            self.signal
                .item_tables()
                .iter()
                .map(|&t| (t, 0..0))
                .collect()
        };
        let mut chunks = Vec::new();
        let mut current = empty();
        let mut room = max_items;
        for (_, t, rows) in runs {
            let mut from = rows.start;
            while from < rows.end {
                let take = (rows.end - from).min(room);
                let r = &mut current
                    .iter_mut()
                    .find(|(tt, _)| *tt == t)
                    .expect("an item table of this signal")
                    .1;
                // Extends the part's range in this table (rows only ever follow on).
                *r = if r.start == r.end {
                    from..from + take
                } else {
                    r.start..from + take
                };
                from += take;
                room -= take;
                if room == 0 {
                    chunks.push(std::mem::replace(&mut current, empty()));
                    room = max_items;
                }
            }
        }
        if room < max_items {
            chunks.push(current);
        }
        chunks
    }

    /// The part holding item rows `items`: every table sliced to the rows the items need.
    fn slice_items(&self, items: &[(Table, Range<usize>)]) -> Result<Payload, PayloadError> {
        let tables = self.signal.tables();
        let mut range: Vec<Option<Range<usize>>> = vec![None; Table::COUNT];
        for (t, r) in items {
            range[*t as usize] = Some(r.clone());
        }
        // Containers (metrics, scopes, resources), children first: from the first to the last
        // parent of their structural children's rows.
        for &c in tables.iter().rev() {
            if range[c as usize].is_some() {
                continue;
            }
            let mut span: Option<Range<usize>> = None;
            for &child in tables {
                if child.parent() != Some(c) || !is_structural(child) {
                    continue;
                }
                let Some(r) = range[child as usize].clone().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let ids = self.parent_ids(child).values();
                let (lo, hi) = (ids[r.start] as usize, ids[r.end - 1] as usize + 1);
                span = Some(match span {
                    Some(s) => s.start.min(lo)..s.end.max(hi),
                    None => lo..hi,
                });
            }
            if let Some(s) = span {
                range[c as usize] = Some(s);
            }
        }
        // Everything else (attributes, events, links, exemplars), parents first: the rows
        // whose parent is in the parent's range.
        for &t in tables {
            if range[t as usize].is_some() {
                continue;
            }
            let r = match t.parent() {
                Some(p) => {
                    let pr = range[p as usize].clone().unwrap_or(0..0);
                    let ids = self.parent_ids(t).values();
                    let start = ids.partition_point(|&id| (id as usize) < pr.start);
                    let end = start + ids[start..].partition_point(|&id| (id as usize) < pr.end);
                    start..end
                }
                None => 0..0,
            };
            range[t as usize] = Some(r);
        }
        let mut out = self.clone();
        for &t in tables {
            let r = range[t as usize].clone().unwrap_or(0..0);
            let mut batch = self.table(t).slice(r.start, r.len());
            if let Some(p) = t.parent() {
                let offset = range[p as usize].as_ref().map_or(0, |pr| pr.start) as u32;
                if offset > 0 {
                    batch = shift_parent_ids(&batch, |id| id - offset)?;
                }
            }
            out.tables[t as usize] = Some(Slot::Ready(batch));
        }
        Ok(out)
    }
}

/// Tables whose rows make their parent non-empty (not attributes, events, links, exemplars).
fn is_structural(t: Table) -> bool {
    use Table::*;
    matches!(
        t,
        Scopes
            | Spans
            | Metrics
            | Logs
            | NumberPoints
            | HistogramPoints
            | ExpHistogramPoints
            | SummaryPoints
    )
}

fn touched(keep: &[Option<Vec<bool>>], t: Table) -> bool {
    keep[t as usize]
        .as_ref()
        .is_some_and(|m| m.iter().any(|k| !k))
}

fn invariant(table: Table, detail: impl Into<String>) -> PayloadError {
    PayloadError::Invariant {
        table,
        detail: detail.into(),
    }
}

/// The `parent_id` column of a child table's batch.
pub fn parent_ids(batch: &RecordBatch) -> &UInt32Array {
    batch
        .column_by_name(col::PARENT_ID)
        .expect("child tables have parent_id")
        .as_primitive::<UInt32Type>()
}

fn add_to_parent_ids(batch: &RecordBatch, offset: u32) -> Result<RecordBatch, PayloadError> {
    shift_parent_ids(batch, |id| id + offset)
}

fn shift_parent_ids(
    batch: &RecordBatch,
    shift: impl Fn(u32) -> u32,
) -> Result<RecordBatch, PayloadError> {
    let shifted: UInt32Array = parent_ids(batch).unary(shift);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[0] = std::sync::Arc::new(shifted);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Whether two schemas have the same columns of the same types (names and nullability aside:
/// what a concatenation needs).
fn same_types(a: &arrow::datatypes::Schema, b: &arrow::datatypes::Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.data_type() == y.data_type())
}

/// Splits deferred parts into payloads of at most `max_items` items: consecutive parts grouped
/// greedily in order (each group deferred again, so nothing is concatenated), a part larger
/// than `max_items` split on its own.
fn split_parts(
    signal: Signal,
    parts: &[Payload],
    max_items: usize,
) -> Result<Vec<Payload>, PayloadError> {
    let mut out = Vec::new();
    let mut group: Vec<Payload> = Vec::new();
    let mut items = 0;
    let flush = |group: &mut Vec<Payload>, out: &mut Vec<Payload>| -> Result<(), PayloadError> {
        if !group.is_empty() {
            out.push(Payload::concat_deferred(signal, std::mem::take(group))?);
        }
        Ok(())
    };
    for p in parts {
        let n = p.item_count();
        if n > max_items {
            flush(&mut group, &mut out)?;
            items = 0;
            out.extend(p.split_items(max_items)?);
            continue;
        }
        if items + n > max_items {
            flush(&mut group, &mut out)?;
            items = 0;
        }
        group.push(p.clone());
        items += n;
    }
    flush(&mut group, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BooleanArray;

    #[test]
    fn empty_payloads_are_valid_and_concat_to_empty() {
        for signal in Signal::ALL {
            let p = Payload::empty(signal);
            p.validate().unwrap();
            assert_eq!(p.item_count(), 0);
            let c = Payload::concat(signal, &[p.clone(), p]).unwrap();
            c.validate().unwrap();
            assert!(c.is_empty());
        }
    }

    /// `from_tables` fills the tables not given with the shared empty ones, and refuses a table
    /// of another signal or with another schema, as `set` does.
    #[test]
    fn from_tables_fills_missing_tables_and_checks_the_given_ones() {
        let spans = Payload::empty(Signal::Traces).table(Table::Spans).clone();
        let p = Payload::from_tables(Signal::Traces, [(Table::Spans, spans.clone())]).unwrap();
        p.validate().unwrap();
        for &t in Signal::Traces.tables() {
            assert_eq!(p.table(t).schema().fields(), t.schema().fields(), "{t:?}");
            assert_eq!(p.table(t).num_rows(), 0);
        }
        // The empty tables are one shared set: a clone, not a build per payload.
        let (a, b) = (Payload::empty(Signal::Logs), Payload::empty(Signal::Logs));
        assert!(Arc::ptr_eq(
            a.table(Table::Logs).column(0),
            b.table(Table::Logs).column(0)
        ));
        let wrong = Payload::from_tables(Signal::Logs, [(Table::Spans, spans.clone())]);
        assert!(matches!(wrong, Err(PayloadError::WrongTable { .. })));
        let other_schema = Payload::empty(Signal::Logs).table(Table::Logs).clone();
        let mismatched = Payload::from_tables(Signal::Traces, [(Table::Spans, other_schema)]);
        assert!(matches!(mismatched, Err(PayloadError::Schema { .. })));
    }

    /// A concat keeps the peer and the client metadata only when every part has the same:
    /// a batch of several clients' requests belongs to none of them.
    #[test]
    fn concat_keeps_origin_and_metadata_only_when_shared() {
        let mut m = ClientMetadata::default();
        m.push("x-tenant", "acme".into());
        let mut a = Payload::empty(Signal::Traces);
        a.origin = Some("10.0.0.1:1".parse().unwrap());
        a.metadata = Some(Arc::new(m.clone()));
        let same = a.clone();
        let c = Payload::concat(Signal::Traces, &[a.clone(), same]).unwrap();
        assert_eq!(c.origin, a.origin);
        assert_eq!(c.metadata.as_deref(), Some(&m));
        let mut other = a.clone();
        let mut m2 = m.clone();
        m2.push("x-tenant", "globex".into());
        other.metadata = Some(Arc::new(m2));
        let c = Payload::concat(Signal::Traces, &[a.clone(), other]).unwrap();
        assert_eq!(c.origin, a.origin);
        assert_eq!(c.metadata, None);
        assert_eq!(m.get("X-Tenant"), ["acme".to_string()]);
        assert!(m.get("absent").is_empty());
    }

    use crate::otlp::testing::{
        arb_logs_request, arb_metrics_request, arb_traces_request, reference_logs,
        reference_metrics, reference_traces,
    };
    use crate::otlp::{decode, encode_to_vec};
    use proptest::prelude::*;

    fn span_ids(p: &Payload) -> Vec<Option<Vec<u8>>> {
        let col = p
            .table(Table::Spans)
            .column_by_name(col::SPAN_ID)
            .unwrap()
            .as_fixed_size_binary()
            .clone();
        (0..col.len())
            .map(|i| col.is_valid(i).then(|| col.value(i).to_vec()))
            .collect()
    }

    fn attr_count_per_item(p: &Payload, items: Table, attrs: Table) -> Vec<usize> {
        let mut n = vec![0; p.table(items).num_rows()];
        p.parent_ids(attrs)
            .values()
            .iter()
            .for_each(|&i| n[i as usize] += 1);
        n
    }

    /// [`Payload::filter_tables`] the plain way: a full mask per table, cascaded to every
    /// table, containers pruned when a child table lost rows, arrow's `filter`, parent ids
    /// renumbered by a prefix sum.
    fn filter_model(p: &Payload, masks: &[(Table, Vec<bool>)]) -> Payload {
        let tables = p.signal.tables();
        let mut keep: Vec<Vec<bool>> = Table::ALL
            .iter()
            .map(|&t| {
                vec![
                    true;
                    if tables.contains(&t) {
                        p.table(t).num_rows()
                    } else {
                        0
                    }
                ]
            })
            .collect();
        masks
            .iter()
            .for_each(|(t, m)| keep[*t as usize] = m.clone());
        let cascade = |keep: &mut Vec<Vec<bool>>| {
            for &t in tables {
                if let Some(parent) = t.parent() {
                    for (i, &pid) in p.parent_ids(t).values().iter().enumerate() {
                        keep[t as usize][i] &= keep[parent as usize][pid as usize];
                    }
                }
            }
        };
        cascade(&mut keep);
        for &container in tables.iter().rev() {
            let children: Vec<Table> = tables
                .iter()
                .copied()
                .filter(|c| c.parent() == Some(container) && is_structural(*c))
                .collect();
            if !children.iter().any(|c| keep[*c as usize].contains(&false)) {
                continue;
            }
            let mut has_child = vec![false; p.table(container).num_rows()];
            for c in &children {
                for (i, &pid) in p.parent_ids(*c).values().iter().enumerate() {
                    has_child[pid as usize] |= keep[*c as usize][i];
                }
            }
            for (k, h) in keep[container as usize].iter_mut().zip(has_child) {
                *k &= h;
            }
        }
        cascade(&mut keep);
        let mut out = p.clone();
        for &t in tables {
            let mask = BooleanArray::from(keep[t as usize].clone());
            let mut batch = compute::filter_record_batch(p.table(t), &mask).unwrap();
            if let Some(parent) = t.parent() {
                let mut new_id = Vec::new();
                let mut next = 0u32;
                for &k in &keep[parent as usize] {
                    new_id.push(next);
                    next += u32::from(k);
                }
                let ids: UInt32Array = parent_ids(&batch).unary(|old| new_id[old as usize]);
                let mut columns = batch.columns().to_vec();
                columns[0] = std::sync::Arc::new(ids);
                batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
            }
            out.tables[t as usize] = Some(Slot::Ready(batch));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// A filter leaves attribute tables pending: built on first read (once for all
        /// clones), counted with their base until settled, and equal to the settled tables.
        #[test]
        fn pending_tables_build_once_and_settle(
            req in arb_traces_request(),
            seed in any::<u64>(),
        ) {
            let p = reference_traces(&req);
            let n = p.table(Table::Spans).num_rows();
            prop_assume!(n > 0);
            let mask: Vec<bool> = (0..n).map(|i| (seed >> (i % 64)) & 1 == 1 || i == 0).collect();
            prop_assume!(mask.iter().any(|k| !k));
            let f = p.filter(Table::Spans, &mask).unwrap();
            let pending = f.pending(Table::SpanAttrs).expect("span attributes left pending");
            prop_assert_eq!(pending.base().num_rows(), p.table(Table::SpanAttrs).num_rows());
            prop_assert!(f.memory_size() >= crate::kernels::nulls::batch_memory_size(pending.base()));
            let clone = f.clone();
            let built = f.table(Table::SpanAttrs).clone();
            // Built through one clone: built for the other too (same rows, no second build).
            prop_assert!(clone.pending(Table::SpanAttrs).is_none());
            prop_assert!(clone.pending_rows(Table::SpanAttrs).is_some());
            let mut settled = clone.clone();
            settled.settle();
            prop_assert!(settled.pending_rows(Table::SpanAttrs).is_none());
            prop_assert_eq!(settled.table(Table::SpanAttrs), &built);
            let sizes: usize = settled.tables().map(|(_, b)| crate::kernels::nulls::batch_memory_size(b)).sum();
            prop_assert_eq!(settled.memory_size(), sizes);
            prop_assert_eq!(encode_to_vec(&settled), encode_to_vec(&f));
        }

        #[test]
        fn filtering_spans_keeps_exactly_the_kept_spans_with_their_attributes(
            req in arb_traces_request(),
            seed in any::<u64>(),
        ) {
            let p = reference_traces(&req);
            let n = p.table(Table::Spans).num_rows();
            let mask: Vec<bool> = (0..n).map(|i| (seed >> (i % 64)) & 1 == 1).collect();
            let f = p.filter(Table::Spans, &mask).unwrap();
            f.validate().unwrap();
            prop_assert_eq!(f.item_count(), mask.iter().filter(|k| **k).count());
            let want: Vec<_> = span_ids(&p).into_iter().zip(&mask).filter(|(_, k)| **k).map(|(s, _)| s).collect();
            prop_assert_eq!(span_ids(&f), want);
            let attrs_before: Vec<usize> = attr_count_per_item(&p, Table::Spans, Table::SpanAttrs)
                .into_iter().zip(&mask).filter(|(_, k)| **k).map(|(a, _)| a).collect();
            prop_assert_eq!(attr_count_per_item(&f, Table::Spans, Table::SpanAttrs), attrs_before);
            // What is left is still a valid OTLP request that decodes to itself.
            let bytes = encode_to_vec(&f);
            let again = decode(Signal::Traces, &bytes).unwrap();
            prop_assert_eq!(encode_to_vec(&again), bytes);
            if mask.iter().any(|k| !k) {
                // Once something is dropped, no container is left empty (as in the Collector);
                // an unfiltered payload keeps the empty scopes it came with.
                prop_assert!(f.table(Table::Scopes).num_rows() <= p.table(Table::Scopes).num_rows());
                let scopes_with_spans: std::collections::BTreeSet<u32> = f.parent_ids(Table::Spans).values().iter().copied().collect();
                prop_assert_eq!(scopes_with_spans.len(), f.table(Table::Scopes).num_rows());
            }
        }

        #[test]
        fn filtering_several_tables_equals_the_row_by_row_model(
            req in arb_traces_request(),
            seeds in prop::collection::vec(any::<u64>(), Table::COUNT),
            which in prop::collection::vec(prop::bool::weighted(0.4), Table::COUNT),
        ) {
            let p = reference_traces(&req);
            let masks: Vec<(Table, Vec<bool>)> = p
                .signal
                .tables()
                .iter()
                .filter(|t| which[**t as usize])
                .map(|&t| {
                    let seed = seeds[t as usize];
                    // Mostly true, in runs: as filters and deletes produce them.
                    let m = (0..p.table(t).num_rows()).map(|i| (seed >> ((i / 2) % 64)) & 1 == 1 || i % 3 == 2).collect();
                    (t, m)
                })
                .collect();
            let refs: Vec<(Table, &[bool])> = masks.iter().map(|(t, m)| (*t, m.as_slice())).collect();
            let ours = p.filter_tables(&refs).unwrap();
            ours.validate().unwrap();
            let want = filter_model(&p, &masks);
            for &t in p.signal.tables() {
                prop_assert_eq!(ours.table(t), want.table(t), "{:?}", t);
            }
        }

        /// Cutting every part at once equals one filter per part, on traces, metrics and logs
        /// with owners in runs of any length (a trace's spans together, or scattered): the
        /// same parts, the same rows in the same order in every table, attribute tables left
        /// pending where they lose rows.
        #[test]
        fn partition_equals_one_filter_per_part(
            t in arb_traces_request(),
            m in arb_metrics_request(),
            l in arb_logs_request(),
            parts in 1usize..5,
            run in 1usize..6,
            seed in any::<u64>(),
        ) {
            for p in [reference_traces(&t), reference_metrics(&m), reference_logs(&l)] {
                let mut x = seed | 1;
                let owners: Vec<(Table, Vec<u16>)> = p
                    .signal
                    .item_tables()
                    .iter()
                    .map(|&t| {
                        let own = (0..p.table(t).num_rows())
                            .map(|i| {
                                if i % run == 0 {
                                    x ^= x << 13;
                                    x ^= x >> 7;
                                    x ^= x << 17;
                                }
                                ((x >> 33) % parts as u64) as u16
                            })
                            .collect();
                        (t, own)
                    })
                    .collect();
                let refs: Vec<(Table, &[u16])> =
                    owners.iter().map(|(t, o)| (*t, o.as_slice())).collect();
                let ours = p.partition(&refs, parts).unwrap();
                let mut want = Vec::new();
                for b in 0..parts {
                    if !owners.iter().any(|(_, o)| o.contains(&(b as u16))) {
                        continue;
                    }
                    let masks: Vec<(Table, Vec<bool>)> = owners
                        .iter()
                        .map(|(t, o)| (*t, o.iter().map(|&x| usize::from(x) == b).collect()))
                        .collect();
                    let refs: Vec<(Table, &[bool])> =
                        masks.iter().map(|(t, m)| (*t, m.as_slice())).collect();
                    want.push((b, p.filter_tables(&refs).unwrap()));
                }
                prop_assert_eq!(
                    ours.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
                    want.iter().map(|(b, _)| *b).collect::<Vec<_>>()
                );
                for ((b, part), (_, model)) in ours.iter().zip(&want) {
                    part.validate().unwrap();
                    for &t in p.signal.tables() {
                        // Pending where the filter leaves it pending, except where every row
                        // stays under an unchanged numbering: then the table is shared as it
                        // is (the filter renumbers through an identity map).
                        if model.pending_rows(t).is_some() && part.pending_rows(t).is_none() {
                            prop_assert_eq!(part.table(t), p.table(t), "{:?} part {} {:?}", p.signal, b, t);
                        }
                        prop_assert_eq!(part.table(t), model.table(t), "{:?} part {} {:?}", p.signal, b, t);
                    }
                }
                let items: usize = ours.iter().map(|(_, x)| x.item_count()).sum();
                prop_assert_eq!(items, p.item_count());
            }
        }

        #[test]
        fn partition_refuses_owners_that_do_not_fit(t in arb_traces_request()) {
            let p = reference_traces(&t);
            let n = p.table(Table::Spans).num_rows();
            prop_assume!(n > 0);
            let short = vec![0u16; n - 1];
            prop_assert!(p.partition(&[(Table::Spans, short.as_slice())], 2).is_err());
            let beyond = vec![2u16; n];
            prop_assert!(p.partition(&[(Table::Spans, beyond.as_slice())], 2).is_err());
            let scopes = vec![0u16; p.table(Table::Scopes).num_rows()];
            prop_assert!(p.partition(&[(Table::Scopes, scopes.as_slice())], 2).is_err());
        }

        #[test]
        fn split_chunks_are_bounded_and_concatenate_back(req in arb_traces_request(), max in 1usize..7) {
            let p = reference_traces(&req);
            let chunks = p.split_items(max).unwrap();
            let mut ids = Vec::new();
            let mut attrs = Vec::new();
            for c in &chunks {
                c.validate().unwrap();
                prop_assert!(c.item_count() <= max);
                ids.extend(span_ids(c));
                attrs.extend(attr_count_per_item(c, Table::Spans, Table::SpanAttrs));
                // A part is a valid request on its own (slices, rebased parent ids).
                let bytes = encode_to_vec(c);
                let again = decode(Signal::Traces, &bytes).unwrap();
                prop_assert_eq!(encode_to_vec(&again), bytes);
            }
            prop_assert_eq!(ids, span_ids(&p));
            prop_assert_eq!(attrs, attr_count_per_item(&p, Table::Spans, Table::SpanAttrs));
        }

        #[test]
        fn split_metrics_and_logs_keeps_every_item(m in arb_metrics_request(), l in arb_logs_request(), max in 1usize..5) {
            for p in [reference_metrics(&m), reference_logs(&l)] {
                let chunks = p.split_items(max).unwrap();
                let mut total = 0;
                let mut parts = Vec::new();
                for c in &chunks {
                    c.validate().unwrap();
                    prop_assert!(c.item_count() <= max || chunks.len() == 1);
                    total += c.item_count();
                    let bytes = encode_to_vec(c);
                    let again = decode(p.signal(), &bytes).unwrap();
                    prop_assert_eq!(encode_to_vec(&again), bytes);
                    parts.push(c.clone());
                }
                prop_assert_eq!(total, p.item_count());
                // Items in order, each with what it carries: the parts' item tables (parent
                // ids aside) concatenate to the whole's.
                for &t in p.signal().item_tables() {
                    let cols = |x: &Payload| x.table(t).columns()[1..].to_vec();
                    let glued: Vec<_> = (0..cols(&p).len())
                        .map(|i| {
                            let pieces: Vec<_> = parts.iter().map(|c| cols(c)[i].clone()).collect();
                            let refs: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                            arrow::compute::concat(&refs).unwrap()
                        })
                        .collect();
                    for (a, b) in glued.iter().zip(cols(&p)) {
                        prop_assert_eq!(a.to_data(), b.to_data(), "{:?}", t);
                    }
                }
            }
        }
    }
}
