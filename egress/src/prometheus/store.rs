//! Series state: what a scrape shows, kept as one columnar table per metric family.
//!
//! The Collector's exporter keeps, per series, a copy of the last OTLP data point
//! (`lastValueAccumulator` in `exporter/prometheusexporter/accumulator.go`) and converts every
//! stored point into client_golang objects on every scrape. Here a series is a row of its
//! family's table: its label text rendered once when the series is first seen (for gauges
//! and counters the whole `name{labels} ` prefix of its line), plus value columns updated in
//! place. A scrape copies the text and formats the value columns (see `encode.rs`).
//!
//! The accumulation rules are the Collector's (`accumulateGauge`, `accumulateSum`,
//! `accumulateHistogram`, `accumulateExponentialHistogram`, `accumulateSummary`):
//! - a point older than the stored one is dropped (out of order);
//! - delta monotonic sums accumulate when the point's start time is the stored point's time,
//!   otherwise the point starts the series again (reset);
//! - delta histograms accumulate when aligned, are dropped when they start before the stored
//!   point's time, and reset the series when they start after it;
//! - a point flagged "no recorded value" removes its series;
//! - a series not updated for `metric_expiration` disappears (`Collect`).
//!
//! Memory per series is bounded: label text at most [`MAX_LABEL_BYTES`], at most
//! [`MAX_BUCKETS`] histogram buckets and [`MAX_QUANTILES`] summary quantiles; larger series are
//! refused and counted. A new series is appended to its family's table; a removed one is only
//! marked dead (scrapes skip it) until dead rows are a quarter of the table, when a scrape
//! compacts it. So pod churn costs a scrape nothing but the new rows, and series keep the order
//! in which they were first seen (client_golang sorts them by label values; Prometheus does not
//! depend on the order, and sorting a million rows again on every change would cost a scrape
//! hundreds of milliseconds).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Largest rendered label text of one series.
pub const MAX_LABEL_BYTES: usize = 64 * 1024;
/// Most explicit bounds of one histogram data point.
pub const MAX_BUCKETS: usize = 1024;
/// Most quantiles of one summary data point.
pub const MAX_QUANTILES: usize = 256;
/// Most distinct histogram bucket layouts (sets of bounds) kept at once.
pub const MAX_LAYOUTS: usize = 16 * 1024;

const NONE: u32 = u32::MAX;

/// Why a data point did not make it into the exposition; the `reason` label of
/// `otelcol_exporter_dropped_metric_points`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Sum with `AGGREGATION_TEMPORALITY_UNSPECIFIED` (the Collector drops it).
    UnspecifiedTemporality,
    /// Non-monotonic delta sum: no cumulative form exists (the Collector drops it).
    NonMonotonicDelta,
    /// Older than the point already stored for the series.
    OutOfOrder,
    /// Delta histogram starting before the stored point's time.
    MisalignedDelta,
    /// The metric name is taken by a family of another type.
    TypeConflict,
    /// The metric name normalizes to nothing.
    InvalidMetricName,
    /// An attribute key normalizes to no usable label name.
    InvalidLabelName,
    /// An attribute label has the name of a label the exporter sets.
    LabelConflict,
    /// Bounds of memory per series: labels, buckets, quantiles, layouts.
    TooLarge,
    /// Histogram with fewer bucket counts than bounds.
    MalformedHistogram,
    /// Exponential histogram scale Prometheus cannot represent (< -4, or custom buckets).
    UnsupportedScale,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::UnspecifiedTemporality,
        DropReason::NonMonotonicDelta,
        DropReason::OutOfOrder,
        DropReason::MisalignedDelta,
        DropReason::TypeConflict,
        DropReason::InvalidMetricName,
        DropReason::InvalidLabelName,
        DropReason::LabelConflict,
        DropReason::TooLarge,
        DropReason::MalformedHistogram,
        DropReason::UnsupportedScale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnspecifiedTemporality => "unspecified_temporality",
            DropReason::NonMonotonicDelta => "non_monotonic_delta",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::MisalignedDelta => "misaligned_delta",
            DropReason::TypeConflict => "type_conflict",
            DropReason::InvalidMetricName => "invalid_metric_name",
            DropReason::InvalidLabelName => "invalid_label_name",
            DropReason::LabelConflict => "label_conflict",
            DropReason::TooLarge => "too_large",
            DropReason::MalformedHistogram => "malformed_histogram",
            DropReason::UnsupportedScale => "unsupported_scale",
        }
    }
}

/// The Prometheus type of a family.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FamilyType {
    Gauge,
    Counter,
    /// A gauge whose metadata says `prometheus.type: unknown` (scraped untyped metrics).
    Untyped,
    Histogram,
    Summary,
}

/// An exemplar as the exporter shows it (OpenMetrics only).
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub value: f64,
    pub time: u64,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
}

/// The values of one family's rows, by type.
enum Values {
    Number {
        value: Vec<f64>,
        /// Counters only, and only with OpenMetrics on (the only format that shows them).
        exemplar: Vec<Option<Box<Exemplar>>>,
    },
    Histogram {
        count: Vec<u64>,
        sum: Vec<f64>,
        /// Exponential histograms: whether the sum is known (a merge with an unknown sum has
        /// none, as in `accumulateExponentialHistogramValues`).
        has_sum: Vec<bool>,
        layout: Vec<u32>,
        /// Offset of the row's per-bound counts in `buckets` (length: the layout's bounds).
        at: Vec<u32>,
        buckets: Vec<u64>,
        exemplars: Vec<Option<Box<[Exemplar]>>>,
    },
    Summary {
        count: Vec<u64>,
        sum: Vec<f64>,
        at: Vec<u32>,
        len: Vec<u32>,
        /// (quantile, value), sorted by quantile, one per quantile.
        quantiles: Vec<(f64, f64)>,
    },
}

impl Values {
    fn new(ty: FamilyType) -> Self {
        match ty {
            FamilyType::Gauge | FamilyType::Counter | FamilyType::Untyped => Values::Number {
                value: Vec::new(),
                exemplar: Vec::new(),
            },
            FamilyType::Histogram => Values::Histogram {
                count: Vec::new(),
                sum: Vec::new(),
                has_sum: Vec::new(),
                layout: Vec::new(),
                at: Vec::new(),
                buckets: Vec::new(),
                exemplars: Vec::new(),
            },
            FamilyType::Summary => Values::Summary {
                count: Vec::new(),
                sum: Vec::new(),
                at: Vec::new(),
                len: Vec::new(),
                quantiles: Vec::new(),
            },
        }
    }
}

/// One family's series as columns, in the order they were first seen; `live[i]` is false for
/// rows removed since the last compaction.
pub(crate) struct Rows {
    identity: Vec<u128>,
    slot: Vec<u32>,
    /// Label text of all rows, back to back; row `i` ends at `text_end[i]`.
    pub(crate) text: Vec<u8>,
    pub(crate) text_end: Vec<u32>,
    target: Vec<u32>,
    updated: Vec<u64>,
    pub(crate) time: Vec<u64>,
    start: Vec<u64>,
    pub(crate) live: Vec<bool>,
    values: Values,
    dead: usize,
}

impl Rows {
    fn new(ty: FamilyType) -> Self {
        Rows {
            identity: Vec::new(),
            slot: Vec::new(),
            text: Vec::new(),
            text_end: Vec::new(),
            target: Vec::new(),
            updated: Vec::new(),
            time: Vec::new(),
            start: Vec::new(),
            live: Vec::new(),
            values: Values::new(ty),
            dead: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.identity.len()
    }

    #[inline]
    pub(crate) fn text_start(&self, row: usize) -> usize {
        if row == 0 {
            0
        } else {
            self.text_end[row - 1] as usize
        }
    }

    #[inline]
    pub(crate) fn text_of(&self, row: usize) -> &[u8] {
        &self.text[self.text_start(row)..self.text_end[row] as usize]
    }

    fn memory_bytes(&self) -> usize {
        let v = match &self.values {
            Values::Number { value, exemplar } => value.capacity() * 8 + exemplar.capacity() * 8,
            Values::Histogram {
                count,
                sum,
                has_sum,
                layout,
                at,
                buckets,
                exemplars,
            } => {
                count.capacity() * 8
                    + sum.capacity() * 8
                    + has_sum.capacity()
                    + layout.capacity() * 4
                    + at.capacity() * 4
                    + buckets.capacity() * 8
                    + exemplars.capacity() * 16
            }
            Values::Summary {
                count,
                sum,
                at,
                len,
                quantiles,
            } => {
                count.capacity() * 8
                    + sum.capacity() * 8
                    + at.capacity() * 4
                    + len.capacity() * 4
                    + quantiles.capacity() * 16
            }
        };
        v + self.identity.capacity() * 16
            + self.slot.capacity() * 4
            + self.text.capacity()
            + self.text_end.capacity() * 4
            + self.target.capacity() * 4
            + self.updated.capacity() * 8
            + self.time.capacity() * 8
            + self.start.capacity() * 8
            + self.live.capacity()
    }
}

/// A family: one `# TYPE` block of the exposition.
pub struct Family {
    pub name: Box<str>,
    pub ty: FamilyType,
    pub help: Box<str>,
    /// `target_info`: rows live while series reference them, carry no timestamp.
    pub is_target_info: bool,
    pub(crate) rows: Rows,
    /// Stable handle -> current row (rows move when the table is laid out again).
    slot_row: Vec<u32>,
    free_slots: Vec<u32>,
}

impl Family {
    fn new(name: &str, ty: FamilyType, help: &str) -> Self {
        Family {
            name: name.into(),
            ty,
            help: help.into(),
            is_target_info: false,
            rows: Rows::new(ty),
            slot_row: Vec::new(),
            free_slots: Vec::new(),
        }
    }

    pub(crate) fn live_rows(&self) -> usize {
        self.rows.len() - self.rows.dead
    }
}

/// Bucket bounds shared by the histograms that use them, with their exposition text.
pub struct Layout {
    /// The bounds as received.
    pub raw: Vec<f64>,
    /// For each distinct bound in ascending order, the index of its first occurrence in
    /// `raw` (`convertDoubleHistogram`: dedup, `sort.Float64s`, count of the first index).
    pub order: Vec<u32>,
    /// Whether the distinct bounds include +Inf (then no extra `+Inf` bucket is written).
    pub has_inf: bool,
    /// `,le="<bound>"` per distinct bound, text format then OpenMetrics.
    pub le_text: Vec<Box<[u8]>>,
    pub le_om: Vec<Box<[u8]>>,
}

impl Layout {
    fn new(raw: &[f64]) -> Self {
        let mut order: Vec<u32> = Vec::with_capacity(raw.len());
        for (i, b) in raw.iter().enumerate() {
            if !raw[..i]
                .iter()
                .any(|x| x.to_bits() == b.to_bits() || x == b)
            {
                order.push(i as u32);
            }
        }
        // sort.Float64s: ascending, NaN first.
        order.sort_by(|&a, &b| {
            let (a, b) = (raw[a as usize], raw[b as usize]);
            match (a.is_nan(), b.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
            }
        });
        let le = |om: bool| -> Vec<Box<[u8]>> {
            order
                .iter()
                .map(|&i| {
                    let mut t = b"le=\"".to_vec();
                    if om {
                        super::gofmt::push_om_float(&mut t, raw[i as usize]);
                    } else {
                        super::gofmt::push_go_g(&mut t, raw[i as usize]);
                    }
                    t.push(b'"');
                    t.into_boxed_slice()
                })
                .collect()
        };
        Layout {
            has_inf: order.iter().any(|&i| raw[i as usize] == f64::INFINITY),
            le_text: le(false),
            le_om: le(true),
            order,
            raw: raw.to_vec(),
        }
    }
}

/// Hasher for keys that are already uniformly distributed hashes (xxh3-128 identities).
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

type IdMap<V> = HashMap<u128, V, BuildHasherDefault<IdentityHasher>>;

#[derive(Copy, Clone, Debug)]
struct SeriesRef {
    family: u32,
    slot: u32,
}

/// How a data point's timing relates to the stored one.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Temporality {
    Unspecified,
    Delta,
    Cumulative,
}

pub struct NumberPoint {
    pub start: u64,
    pub time: u64,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

pub struct HistogramPoint<'a> {
    pub start: u64,
    pub time: u64,
    pub count: u64,
    pub sum: Option<f64>,
    /// Explicit bounds (empty for exponential histograms, which the text formats show as
    /// sum, count and the `+Inf` bucket, as client_golang writes a native histogram).
    pub bounds: &'a [f64],
    /// Counts of the buckets below each bound (at least `bounds.len()`).
    pub counts: &'a [u64],
    pub exemplars: Vec<Exemplar>,
    pub exponential: bool,
}

pub struct SummaryPoint<'a> {
    pub start: u64,
    pub time: u64,
    pub count: u64,
    pub sum: f64,
    pub quantiles: &'a [f64],
    pub values: &'a [f64],
}

/// What a new series needs besides its values.
pub struct NewSeries {
    /// `name="value",...` sorted by name, escaped.
    pub body: Vec<u8>,
    pub target: u32,
}

/// All series of one exporter.
pub struct Store {
    families: Vec<Option<Family>>,
    free_families: Vec<u32>,
    /// Families by name: the scrape order.
    pub(crate) by_name: BTreeMap<Box<str>, u32>,
    series: IdMap<SeriesRef>,
    pub(crate) layouts: Vec<Layout>,
    layout_ids: HashMap<Vec<u64>, u32>,
    /// Series referencing each `target_info` row, by slot.
    target_refs: Vec<u32>,
    target_family: Option<u32>,
    target_name: Box<str>,
    expiration_nanos: u64,
    keep_exemplars: bool,
}

impl Store {
    pub fn new(expiration_nanos: u64, keep_exemplars: bool, target_info_name: &str) -> Self {
        Store {
            families: Vec::new(),
            free_families: Vec::new(),
            by_name: BTreeMap::new(),
            series: IdMap::default(),
            layouts: Vec::new(),
            layout_ids: HashMap::new(),
            target_refs: Vec::new(),
            target_family: None,
            target_name: target_info_name.into(),
            expiration_nanos,
            keep_exemplars,
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub(crate) fn family(&self, id: u32) -> &Family {
        self.families[id as usize]
            .as_ref()
            .expect("family ids in by_name are live")
    }

    /// Bytes held by the state: columns, label text, the identity index (entries and
    /// control bytes), layouts.
    pub fn memory_bytes(&self) -> usize {
        let fams: usize = self
            .families
            .iter()
            .flatten()
            .map(|f| f.rows.memory_bytes() + f.slot_row.capacity() * 4 + f.name.len())
            .sum();
        let index = self.series.capacity() * (16 + std::mem::size_of::<SeriesRef>() + 1);
        let layouts: usize = self
            .layouts
            .iter()
            .map(|l| l.raw.len() * 8 + l.order.len() * 4 + l.le_text.len() * 48)
            .sum();
        fams + index + layouts
    }

    /// The family `name`, created with `ty` and `help` on first use. The first type wins, as
    /// in the Collector's `validateMetrics`; so does the first description.
    pub fn family_id(&mut self, name: &str, ty: FamilyType, help: &str) -> Result<u32, DropReason> {
        if let Some(&id) = self.by_name.get(name) {
            let f = self.family(id);
            if f.ty != ty || f.is_target_info {
                return Err(DropReason::TypeConflict);
            }
            return Ok(id);
        }
        if *name == *self.target_name {
            return Err(DropReason::TypeConflict);
        }
        Ok(self.new_family(name, ty, help))
    }

    fn new_family(&mut self, name: &str, ty: FamilyType, help: &str) -> u32 {
        let fam = Family::new(name, ty, help);
        let id = match self.free_families.pop() {
            Some(id) => {
                self.families[id as usize] = Some(fam);
                id
            }
            None => {
                self.families.push(Some(fam));
                (self.families.len() - 1) as u32
            }
        };
        self.by_name.insert(name.into(), id);
        id
    }

    fn fam_mut(&mut self, id: u32) -> &mut Family {
        self.families[id as usize]
            .as_mut()
            .expect("family ids in use are live")
    }

    /// The `target_info` row of a resource with `job` and `instance`, created from `labels`
    /// the first time; returns its handle for [`NewSeries::target`].
    pub fn target(&mut self, identity: u128, labels: impl FnOnce() -> Option<Vec<u8>>) -> u32 {
        if let Some(r) = self.series.get(&identity) {
            return r.slot;
        }
        let Some(body) = labels() else {
            return NONE;
        };
        let fid = match self.target_family {
            Some(f) => f,
            None => {
                let name = self.target_name.to_string();
                let id = self.new_family(&name, FamilyType::Gauge, "Target metadata");
                self.fam_mut(id).is_target_info = true;
                self.target_family = Some(id);
                id
            }
        };
        let text = number_prefix(&self.target_name, &body);
        let slot = self.push_row(fid, identity, &text, NONE, u64::MAX);
        let fam = self.fam_mut(fid);
        let row = fam.slot_row[slot as usize] as usize;
        fam.rows.time[row] = 0;
        if let Values::Number { value, exemplar } = &mut fam.rows.values {
            value.push(1.0);
            exemplar.push(None);
        }
        if self.target_refs.len() <= slot as usize {
            self.target_refs.resize(slot as usize + 1, 0);
        }
        self.target_refs[slot as usize] = 0;
        slot
    }

    /// Appends a row (common columns only) and returns its slot.
    fn push_row(&mut self, fid: u32, identity: u128, text: &[u8], target: u32, now: u64) -> u32 {
        let fam = self.fam_mut(fid);
        let row = fam.rows.len() as u32;
        let slot = match fam.free_slots.pop() {
            Some(s) => {
                fam.slot_row[s as usize] = row;
                s
            }
            None => {
                fam.slot_row.push(row);
                (fam.slot_row.len() - 1) as u32
            }
        };
        let r = &mut fam.rows;
        r.identity.push(identity);
        r.slot.push(slot);
        r.text.extend_from_slice(text);
        r.text_end.push(r.text.len() as u32);
        r.target.push(target);
        r.updated.push(now);
        r.time.push(0);
        r.start.push(0);
        r.live.push(true);
        self.series
            .insert(identity, SeriesRef { family: fid, slot });
        if target != NONE
            && let Some(c) = self.target_refs.get_mut(target as usize)
        {
            *c += 1;
        }
        slot
    }

    fn row_of(&self, identity: u128, fid: u32) -> Option<usize> {
        let r = self.series.get(&identity)?;
        if r.family != fid {
            return None;
        }
        let row = self.family(fid).slot_row[r.slot as usize];
        (row != NONE).then_some(row as usize)
    }

    /// Whether a text arena can take `extra` more bytes (offsets are u32).
    fn fits(&self, fid: u32, extra: usize) -> bool {
        self.family(fid).rows.text.len() + extra < u32::MAX as usize
    }

    /// Removes the series `identity` (a point flagged "no recorded value").
    pub fn remove(&mut self, identity: u128) {
        if let Some(r) = self.series.get(&identity).copied() {
            let row = self.family(r.family).slot_row[r.slot as usize];
            if row != NONE {
                self.kill(r.family, row as usize);
            }
        }
    }

    fn kill(&mut self, fid: u32, row: usize) {
        let fam = self.fam_mut(fid);
        if !fam.rows.live[row] {
            return;
        }
        fam.rows.live[row] = false;
        fam.rows.dead += 1;
        let slot = fam.rows.slot[row];
        fam.slot_row[slot as usize] = NONE;
        fam.free_slots.push(slot);
        let identity = fam.rows.identity[row];
        let target = fam.rows.target[row];
        let is_target = fam.is_target_info;
        if self
            .series
            .get(&identity)
            .is_some_and(|r| r.family == fid && r.slot == slot)
        {
            self.series.remove(&identity);
        }
        if is_target {
            if let Some(c) = self.target_refs.get_mut(slot as usize) {
                *c = 0;
            }
        } else if target != NONE
            && let Some(c) = self.target_refs.get_mut(target as usize)
        {
            *c = c.saturating_sub(1);
        }
    }

    // ---------------------------------------------------------------- gauges and sums

    /// A gauge point (`accumulateGauge`), or a sum point (`accumulateSum`) when
    /// `temporality` is given.
    pub fn number(
        &mut self,
        fid: u32,
        identity: u128,
        temporality: Option<Temporality>,
        p: NumberPoint,
        now: u64,
        new_series: impl FnOnce() -> Result<NewSeries, DropReason>,
    ) -> Result<(), DropReason> {
        let keep_exemplar = self.keep_exemplars && self.family(fid).ty == FamilyType::Counter;
        let exemplar = if keep_exemplar {
            p.exemplar.map(Box::new)
        } else {
            None
        };
        let Some(row) = self.row_of(identity, fid) else {
            let s = new_series()?;
            let text = number_prefix(&self.family(fid).name, &s.body);
            if !self.fits(fid, text.len()) {
                return Err(DropReason::TooLarge);
            }
            let slot = self.push_row(fid, identity, &text, s.target, now);
            let fam = self.fam_mut(fid);
            let row = fam.slot_row[slot as usize] as usize;
            fam.rows.time[row] = p.time;
            fam.rows.start[row] = p.start;
            if let Values::Number {
                value,
                exemplar: ex,
            } = &mut fam.rows.values
            {
                value.push(p.value);
                ex.push(exemplar);
            }
            return Ok(());
        };
        let fam = self.fam_mut(fid);
        let r = &mut fam.rows;
        if p.time < r.time[row] {
            return Err(DropReason::OutOfOrder);
        }
        let Values::Number {
            value,
            exemplar: ex,
        } = &mut r.values
        else {
            return Err(DropReason::TypeConflict);
        };
        let mut v = p.value;
        let mut start = p.start;
        if temporality == Some(Temporality::Delta) && p.start == r.time[row] {
            v += value[row];
            start = r.start[row];
        }
        value[row] = v;
        ex[row] = exemplar;
        r.start[row] = start;
        r.time[row] = p.time;
        r.updated[row] = now;
        Ok(())
    }

    // ---------------------------------------------------------------- histograms

    fn layout_id(&mut self, bounds: &[f64]) -> Result<u32, DropReason> {
        let key: Vec<u64> = bounds.iter().map(|b| b.to_bits()).collect();
        if let Some(&id) = self.layout_ids.get(&key) {
            return Ok(id);
        }
        if self.layouts.len() >= MAX_LAYOUTS {
            return Err(DropReason::TooLarge);
        }
        self.layouts.push(Layout::new(bounds));
        let id = (self.layouts.len() - 1) as u32;
        self.layout_ids.insert(key, id);
        Ok(id)
    }

    /// A histogram or exponential histogram point (`accumulateHistogram`,
    /// `accumulateExponentialHistogram`).
    pub fn histogram(
        &mut self,
        fid: u32,
        identity: u128,
        temporality: Temporality,
        p: HistogramPoint<'_>,
        now: u64,
        new_series: impl FnOnce() -> Result<NewSeries, DropReason>,
    ) -> Result<(), DropReason> {
        if p.bounds.len() > MAX_BUCKETS {
            return Err(DropReason::TooLarge);
        }
        if p.counts.len() < p.bounds.len() {
            return Err(DropReason::MalformedHistogram);
        }
        let counts = &p.counts[..p.bounds.len()];
        let layout = self.layout_id(p.bounds)?;
        let keep = self.keep_exemplars && !p.exponential;
        let exemplars = if keep && !p.exemplars.is_empty() {
            // At most one exemplar per bucket is shown; the last ones win.
            let skip = p.exemplars.len().saturating_sub(p.bounds.len() + 1);
            Some(p.exemplars[skip..].to_vec().into_boxed_slice())
        } else {
            None
        };
        let Some(row) = self.row_of(identity, fid) else {
            let s = new_series()?;
            if !self.fits(fid, s.body.len()) {
                return Err(DropReason::TooLarge);
            }
            let slot = self.push_row(fid, identity, &s.body, s.target, now);
            let fam = self.fam_mut(fid);
            let row = fam.slot_row[slot as usize] as usize;
            fam.rows.time[row] = p.time;
            fam.rows.start[row] = p.start;
            if let Values::Histogram {
                count,
                sum,
                has_sum,
                layout: lay,
                at,
                buckets,
                exemplars: ex,
            } = &mut fam.rows.values
            {
                count.push(p.count);
                sum.push(p.sum.unwrap_or(0.0));
                has_sum.push(p.sum.is_some());
                lay.push(layout);
                at.push(buckets.len() as u32);
                buckets.extend_from_slice(counts);
                ex.push(exemplars);
            }
            return Ok(());
        };
        let fam = self.fam_mut(fid);
        let r = &mut fam.rows;
        let Values::Histogram {
            count,
            sum,
            has_sum,
            layout: lay,
            at,
            buckets,
            exemplars: ex,
        } = &mut r.values
        else {
            return Err(DropReason::TypeConflict);
        };
        let (prev_start, prev_time) = (r.start[row], r.time[row]);
        match temporality {
            Temporality::Delta if p.start != prev_time => {
                // "treat misalignment as restart and reset, or violation of single-writer
                // principle and drop"
                if p.start <= prev_time {
                    return Err(DropReason::MisalignedDelta);
                }
                set_buckets(buckets, at, lay, row, layout, counts);
                count[row] = p.count;
                sum[row] = p.sum.unwrap_or(0.0);
                has_sum[row] = p.sum.is_some();
                ex[row] = exemplars;
                r.start[row] = p.start;
                r.time[row] = p.time;
            }
            Temporality::Delta => {
                // accumulateHistogramValues / accumulateExponentialHistogramValues; the merged
                // point carries no exemplars.
                let current_is_newer = p.time >= prev_time;
                if p.exponential {
                    let both = has_sum[row] && p.sum.is_some();
                    sum[row] = if both {
                        sum[row] + p.sum.unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    has_sum[row] = both;
                    count[row] += p.count;
                    if current_is_newer {
                        r.time[row] = p.time;
                    } else {
                        r.start[row] = p.start;
                    }
                } else {
                    if lay[row] == layout {
                        let a = at[row] as usize;
                        for (b, c) in buckets[a..a + counts.len()].iter_mut().zip(counts) {
                            *b += c;
                        }
                        count[row] += p.count;
                        sum[row] += p.sum.unwrap_or(0.0);
                    } else if current_is_newer {
                        // bounds differ: the newer point's values
                        set_buckets(buckets, at, lay, row, layout, counts);
                        count[row] = p.count;
                        sum[row] = p.sum.unwrap_or(0.0);
                    }
                    r.start[row] = prev_start;
                    r.time[row] = prev_time.max(p.time);
                }
                ex[row] = None;
            }
            Temporality::Cumulative => {
                if p.time < prev_time {
                    return Err(DropReason::OutOfOrder);
                }
                set_buckets(buckets, at, lay, row, layout, counts);
                count[row] = p.count;
                sum[row] = p.sum.unwrap_or(0.0);
                has_sum[row] = p.sum.is_some();
                ex[row] = exemplars;
                r.start[row] = p.start;
                r.time[row] = p.time;
            }
            Temporality::Unspecified => return Err(DropReason::UnspecifiedTemporality),
        }
        r.updated[row] = now;
        Ok(())
    }

    // ---------------------------------------------------------------- summaries

    /// A summary point (`accumulateSummary`: the latest point wins).
    pub fn summary(
        &mut self,
        fid: u32,
        identity: u128,
        p: SummaryPoint<'_>,
        now: u64,
        new_series: impl FnOnce() -> Result<NewSeries, DropReason>,
    ) -> Result<(), DropReason> {
        if p.quantiles.len() > MAX_QUANTILES {
            return Err(DropReason::TooLarge);
        }
        // A map by quantile in the Collector: one value per quantile (the last), sorted.
        let mut qs: Vec<(f64, f64)> = Vec::with_capacity(p.quantiles.len());
        for (&q, &v) in p.quantiles.iter().zip(p.values) {
            match qs.iter_mut().find(|(x, _)| x.to_bits() == q.to_bits()) {
                Some(e) => e.1 = v,
                None => qs.push((q, v)),
            }
        }
        qs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let row = match self.row_of(identity, fid) {
            Some(row) => {
                if p.time < self.family(fid).rows.time[row] {
                    return Err(DropReason::OutOfOrder);
                }
                row
            }
            None => {
                let s = new_series()?;
                if !self.fits(fid, s.body.len()) {
                    return Err(DropReason::TooLarge);
                }
                let slot = self.push_row(fid, identity, &s.body, s.target, now);
                let fam = self.fam_mut(fid);
                let row = fam.slot_row[slot as usize] as usize;
                if let Values::Summary {
                    count,
                    sum,
                    at,
                    len,
                    quantiles,
                } = &mut fam.rows.values
                {
                    count.push(0);
                    sum.push(0.0);
                    at.push(quantiles.len() as u32);
                    len.push(0);
                }
                row
            }
        };
        let fam = self.fam_mut(fid);
        let r = &mut fam.rows;
        let Values::Summary {
            count,
            sum,
            at,
            len,
            quantiles,
        } = &mut r.values
        else {
            return Err(DropReason::TypeConflict);
        };
        count[row] = p.count;
        sum[row] = p.sum;
        if len[row] as usize == qs.len() {
            let a = at[row] as usize;
            quantiles[a..a + qs.len()].copy_from_slice(&qs);
        } else {
            at[row] = quantiles.len() as u32;
            len[row] = qs.len() as u32;
            quantiles.extend_from_slice(&qs);
        }
        r.start[row] = p.start;
        r.time[row] = p.time;
        r.updated[row] = now;
        Ok(())
    }

    // ---------------------------------------------------------------- scrape preparation

    /// Removes series not updated for `metric_expiration` and `target_info` rows no series
    /// references, compacts tables that are a quarter dead, drops empty families. Called
    /// before each scrape.
    pub fn prepare_scrape(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.expiration_nanos);
        for fid in 0..self.families.len() as u32 {
            let Some(fam) = self.families[fid as usize].as_ref() else {
                continue;
            };
            if fam.is_target_info {
                continue;
            }
            let expired: Vec<usize> = fam
                .rows
                .updated
                .iter()
                .zip(&fam.rows.live)
                .enumerate()
                .filter(|(_, (u, live))| **live && **u < cutoff)
                .map(|(i, _)| i)
                .collect();
            for row in expired {
                self.kill(fid, row);
            }
        }
        if let Some(tf) = self.target_family {
            let unused: Vec<usize> = {
                let fam = self.family(tf);
                (0..fam.rows.len())
                    .filter(|&row| {
                        fam.rows.live[row]
                            && self
                                .target_refs
                                .get(fam.rows.slot[row] as usize)
                                .is_none_or(|c| *c == 0)
                    })
                    .collect()
            };
            for row in unused {
                self.kill(tf, row);
            }
        }
        for fid in 0..self.families.len() as u32 {
            let layouts = &self.layouts;
            let Some(fam) = self.families[fid as usize].as_mut() else {
                continue;
            };
            if fam.live_rows() == 0 {
                let name = fam.name.clone();
                if fam.is_target_info {
                    self.target_family = None;
                    self.target_refs.clear();
                }
                self.families[fid as usize] = None;
                self.free_families.push(fid);
                self.by_name.remove(&name);
            } else if fam.rows.dead * 4 >= fam.rows.len() {
                compact(fam, layouts);
            }
        }
    }

    pub(crate) fn values(&self, fid: u32) -> RowValues<'_> {
        let fam = self.family(fid);
        match &fam.rows.values {
            Values::Number { value, exemplar } => RowValues::Number { value, exemplar },
            Values::Histogram {
                count,
                sum,
                layout,
                at,
                buckets,
                exemplars,
                ..
            } => RowValues::Histogram {
                count,
                sum,
                layout,
                at,
                buckets,
                exemplars,
            },
            Values::Summary {
                count,
                sum,
                at,
                len,
                quantiles,
            } => RowValues::Summary {
                count,
                sum,
                at,
                len,
                quantiles,
            },
        }
    }
}

/// Borrowed value columns of a laid-out family, for the encoder.
pub(crate) enum RowValues<'a> {
    Number {
        value: &'a [f64],
        exemplar: &'a [Option<Box<Exemplar>>],
    },
    Histogram {
        count: &'a [u64],
        sum: &'a [f64],
        layout: &'a [u32],
        at: &'a [u32],
        buckets: &'a [u64],
        exemplars: &'a [Option<Box<[Exemplar]>>],
    },
    Summary {
        count: &'a [u64],
        sum: &'a [f64],
        at: &'a [u32],
        len: &'a [u32],
        quantiles: &'a [(f64, f64)],
    },
}

/// `name{labels} ` (or `name ` without labels): the fixed part of a gauge or counter line.
fn number_prefix(name: &str, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(name.len() + body.len() + 3);
    t.extend_from_slice(name.as_bytes());
    if !body.is_empty() {
        t.push(b'{');
        t.extend_from_slice(body);
        t.push(b'}');
    }
    t.push(b' ');
    t
}

fn set_buckets(
    buckets: &mut Vec<u64>,
    at: &mut [u32],
    lay: &mut [u32],
    row: usize,
    layout: u32,
    counts: &[u64],
) {
    // Same layout (the usual case): overwrite in place. Otherwise append; the old counts are
    // garbage until the next layout compacts the table.
    if lay[row] == layout {
        let a = at[row] as usize;
        buckets[a..a + counts.len()].copy_from_slice(counts);
    } else {
        at[row] = buckets.len() as u32;
        lay[row] = layout;
        buckets.extend_from_slice(counts);
    }
}

/// Drops removed rows: every column gathered to the live rows, in their order.
fn compact(fam: &mut Family, layouts: &[Layout]) {
    let r = &fam.rows;
    let order: Vec<u32> = (0..r.len())
        .filter(|&i| r.live[i])
        .map(|i| i as u32)
        .collect();
    let gather = |v: &[u64]| order.iter().map(|&i| v[i as usize]).collect::<Vec<_>>();
    let mut text = Vec::with_capacity(
        order
            .iter()
            .map(|&i| r.text_of(i as usize).len())
            .sum::<usize>(),
    );
    let mut text_end = Vec::with_capacity(order.len());
    for &i in &order {
        text.extend_from_slice(r.text_of(i as usize));
        text_end.push(text.len() as u32);
    }
    let values = match &r.values {
        Values::Number { value, exemplar } => Values::Number {
            value: order.iter().map(|&i| value[i as usize]).collect(),
            exemplar: order
                .iter()
                .map(|&i| exemplar[i as usize].clone())
                .collect(),
        },
        Values::Histogram {
            count,
            sum,
            has_sum,
            layout,
            at,
            buckets,
            exemplars,
        } => {
            let mut new_at = Vec::with_capacity(order.len());
            let mut new_buckets = Vec::new();
            for &i in &order {
                let i = i as usize;
                new_at.push(new_buckets.len() as u32);
                let a = at[i] as usize;
                let len = layouts[layout[i] as usize].raw.len();
                new_buckets.extend_from_slice(&buckets[a..a + len]);
            }
            Values::Histogram {
                count: gather(count),
                sum: order.iter().map(|&i| sum[i as usize]).collect(),
                has_sum: order.iter().map(|&i| has_sum[i as usize]).collect(),
                layout: order.iter().map(|&i| layout[i as usize]).collect(),
                at: new_at,
                buckets: new_buckets,
                exemplars: order
                    .iter()
                    .map(|&i| exemplars[i as usize].clone())
                    .collect(),
            }
        }
        Values::Summary {
            count,
            sum,
            at,
            len,
            quantiles,
        } => {
            let mut new_at = Vec::with_capacity(order.len());
            let mut new_q = Vec::new();
            for &i in &order {
                let (a, l) = (at[i as usize] as usize, len[i as usize] as usize);
                new_at.push(new_q.len() as u32);
                new_q.extend_from_slice(&quantiles[a..a + l]);
            }
            Values::Summary {
                count: gather(count),
                sum: order.iter().map(|&i| sum[i as usize]).collect(),
                at: new_at,
                len: order.iter().map(|&i| len[i as usize]).collect(),
                quantiles: new_q,
            }
        }
    };
    let new_rows = Rows {
        identity: order.iter().map(|&i| r.identity[i as usize]).collect(),
        slot: order.iter().map(|&i| r.slot[i as usize]).collect(),
        text,
        text_end,
        target: order.iter().map(|&i| r.target[i as usize]).collect(),
        updated: gather(&r.updated),
        time: gather(&r.time),
        start: gather(&r.start),
        live: vec![true; order.len()],
        values,
        dead: 0,
    };
    for (row, &slot) in new_rows.slot.iter().enumerate() {
        fam.slot_row[slot as usize] = row as u32;
    }
    fam.rows = new_rows;
}
