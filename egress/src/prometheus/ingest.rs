//! From a metrics [`Payload`] to series updates: one pass over the Arrow tables, resource by
//! resource, scope by scope, metric by metric, point by point.
//!
//! Follows the Collector's exporter: `resourcetotelemetry.WrapMetricsExporter` (resource
//! attributes copied onto every data point when `resource_to_telemetry_conversion.enabled`,
//! overriding data point attributes of the same key), `lastValueAccumulator.Accumulate` and
//! `timeseriesSignature` (a series is its metric, scope, data point attributes, `job` and
//! `instance`), `collector.go` `getMetricMetadata` (labels: data point attributes,
//! `otel_scope_<attr>`, `otel_scope_name`, `otel_scope_version`, `otel_scope_schema_url`,
//! `job`, `instance`, const labels) and `createTargetInfoMetrics`.
//!
//! A series' identity is hashed (xxh3-128) from the same parts without building the
//! signature string; the label text is only rendered the first time a series is seen.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use sluice_engine::Payload;
use sluice_engine::otlp::encode::columns::{Ids, Lists, Opt, Strs, lists, opt, prim};
use sluice_engine::schema::{MetricType, Table, col};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128, xxh3_128_with_seed};

use super::labels::{
    AttrTable, LabelError, LabelNames, child_starts, render_labels, render_target_labels,
};
use super::naming::{MetricNamer, OtelKind};
use super::store::{
    DropReason, Exemplar, FamilyType, HistogramPoint, MAX_LABEL_BYTES, NewSeries, NumberPoint,
    Store, SummaryPoint, Temporality,
};

/// OTLP's `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// How OTLP names and attributes become Prometheus names and labels (from the config).
pub struct Translator {
    pub namer: MetricNamer,
    pub labels: LabelNames,
    pub const_labels: Vec<(String, String)>,
    pub resource_to_telemetry: bool,
    pub exclude_service_attributes: bool,
    pub without_scope_info: bool,
    /// Metric names by (OTLP name, unit, kind); `None`: cannot be named.
    names: HashMap<NameKey, Option<Box<str>>>,
}

type NameKey = (Box<str>, Box<str>, OtelKind);

/// Data points taken and dropped by one [`ingest`] call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub dropped: Vec<(DropReason, usize)>,
}

impl Outcome {
    fn drop(&mut self, reason: DropReason, n: usize) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((reason, n)),
        }
    }

    fn record(&mut self, r: Result<(), DropReason>) {
        match r {
            Ok(()) => self.accepted += 1,
            Err(reason) => self.drop(reason, 1),
        }
    }

    pub fn dropped_total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

impl Translator {
    pub fn new(
        namer: MetricNamer,
        const_labels: Vec<(String, String)>,
        resource_to_telemetry: bool,
        exclude_service_attributes: bool,
        without_scope_info: bool,
    ) -> Self {
        Translator {
            namer,
            labels: LabelNames::default(),
            const_labels,
            resource_to_telemetry,
            exclude_service_attributes,
            without_scope_info,
            names: HashMap::new(),
        }
    }

    fn metric_name(&mut self, name: &str, unit: &str, kind: OtelKind) -> Option<&str> {
        let key = (Box::from(name), Box::from(unit), kind);
        if !self.names.contains_key(&key) {
            let built = self
                .namer
                .build(name, unit, kind)
                .ok()
                .map(String::into_boxed_str);
            self.names.insert(key.clone(), built);
        }
        self.names.get(&key).and_then(|n| n.as_deref())
    }
}

/// One resource, prepared once per payload.
struct ResourceCtx<'a> {
    job: Option<String>,
    instance: Option<String>,
    target: u32,
    /// Attributes copied onto data points (conversion on), with their hashes.
    merged: Vec<(&'a str, Cow<'a, str>)>,
    merged_hash: u128,
}

/// One scope, prepared once per payload.
struct ScopeCtx<'a> {
    name: &'a str,
    version: &'a str,
    schema_url: &'a str,
    attrs: Vec<(String, Cow<'a, str>)>,
    hash: u128,
}

#[inline]
fn attr_hash(key: &str, value: &str) -> u128 {
    xxh3_128_with_seed(value.as_bytes(), xxh3_64(key.as_bytes()))
}

fn utf8(b: &[u8]) -> &str {
    // Utf8 columns were validated by arrow when the arrays were built.
    std::str::from_utf8(b).unwrap_or("")
}

fn hash_parts(parts: &[&[u8]]) -> u128 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
        buf.extend_from_slice(p);
    }
    xxh3_128(&buf)
}

fn opt_bytes(v: &Option<String>) -> Vec<u8> {
    match v {
        Some(s) => {
            let mut b = vec![1u8];
            b.extend_from_slice(s.as_bytes());
            b
        }
        None => vec![0u8],
    }
}

/// Reads an exemplars table (number, histogram or exponential histogram).
struct Exemplars<'a> {
    starts: Vec<u32>,
    time: &'a [u64],
    int: Opt<'a, i64>,
    double: Opt<'a, f64>,
    span_id: Ids<'a>,
    trace_id: Ids<'a>,
}

impl<'a> Exemplars<'a> {
    fn new(p: &'a Payload, t: Table, n_points: usize) -> Self {
        let b = p.table(t);
        Exemplars {
            starts: child_starts(p.parent_ids(t).values(), n_points),
            time: prim::<UInt64Type>(b, col::TIME_UNIX_NANO),
            int: opt::<Int64Type>(b, col::INT_VALUE),
            double: opt::<Float64Type>(b, col::DOUBLE_VALUE),
            span_id: Ids::of(b, col::SPAN_ID),
            trace_id: Ids::of(b, col::TRACE_ID),
        }
    }

    fn rows(&self, point: usize) -> std::ops::Range<usize> {
        match (self.starts.get(point), self.starts.get(point + 1)) {
            (Some(&s), Some(&e)) => s as usize..e as usize,
            _ => 0..0,
        }
    }

    /// `convertExemplars`: value from int or double, ids unless empty (all zero).
    fn get(&self, e: usize) -> Exemplar {
        let value = match (self.int.get(e), self.double.get(e)) {
            (Some(i), _) => i as f64,
            (None, Some(d)) => d,
            (None, None) => 0.0,
        };
        fn id<const N: usize>(v: Option<&[u8]>) -> Option<[u8; N]> {
            v.filter(|b| b.iter().any(|&x| x != 0))
                .and_then(|b| b.try_into().ok())
        }
        Exemplar {
            value,
            time: self.time[e],
            trace_id: id(self.trace_id.get(e)),
            span_id: id(self.span_id.get(e)),
        }
    }
}

/// Applies every data point of `p` to `store`.
pub fn ingest(tr: &mut Translator, store: &mut Store, p: &Payload, now: u64) -> Outcome {
    let mut out = Outcome::default();
    let n_res = p.table(Table::Resources).num_rows();
    let res_attrs = AttrTable::new(p.table(Table::ResourceAttrs), n_res);

    // Resources: job, instance, target_info, the attributes copied onto points.
    let mut resources: Vec<ResourceCtx<'_>> = Vec::with_capacity(n_res);
    for r in 0..n_res {
        let all: Vec<(&str, Cow<'_, str>)> = res_attrs
            .rows(r)
            .map(|row| (res_attrs.key(row), res_attrs.value(row)))
            .collect();
        let get = |k: &str| {
            all.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        };
        // extractJob / extractInstance (exporter utils.go)
        let job = get("service.name").map(|name| match get("service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        });
        let instance = get("service.instance.id");
        let target = match (&job, &instance) {
            // resourceSignature: both must be non-empty
            (Some(j), Some(i)) if !j.is_empty() && !i.is_empty() => {
                let identity = hash_parts(&[b"\xfftarget_info", j.as_bytes(), i.as_bytes()]);
                let labels = &mut tr.labels;
                store.target(identity, || render_target_labels(labels, &all, j, i).ok())
            }
            _ => u32::MAX,
        };
        let mut merged = Vec::new();
        let mut merged_hash = 0u128;
        if tr.resource_to_telemetry {
            for (k, v) in &all {
                if tr.exclude_service_attributes
                    && matches!(
                        *k,
                        "service.name" | "service.instance.id" | "service.namespace"
                    )
                {
                    continue;
                }
                // A repeated resource key: PutEmpty keeps one, the last value.
                if let Some(pos) = merged
                    .iter()
                    .position(|(mk, _): &(&str, Cow<'_, str>)| mk == k)
                {
                    let (_, old): (&str, Cow<'_, str>) = merged.remove(pos);
                    merged_hash = merged_hash.wrapping_sub(attr_hash(k, &old));
                }
                merged_hash = merged_hash.wrapping_add(attr_hash(k, v));
                merged.push((*k, v.clone()));
            }
        }
        resources.push(ResourceCtx {
            job,
            instance,
            target,
            merged,
            merged_hash,
        });
    }

    // Scopes: name, version, schema URL, attributes.
    let scopes_t = p.table(Table::Scopes);
    let n_scopes = scopes_t.num_rows();
    let scope_res = p.parent_ids(Table::Scopes).values();
    let scope_names = Strs::of(scopes_t, col::NAME);
    let scope_versions = Strs::of(scopes_t, col::VERSION);
    let scope_urls = Strs::of(scopes_t, col::SCHEMA_URL);
    let scope_attr_t = AttrTable::new(p.table(Table::ScopeAttrs), n_scopes);
    let scopes: Vec<ScopeCtx<'_>> = (0..n_scopes)
        .map(|s| {
            let attrs: Vec<(String, Cow<'_, str>)> = scope_attr_t
                .rows(s)
                .map(|row| {
                    (
                        format!("otel_scope_{}", scope_attr_t.key(row)),
                        scope_attr_t.value(row),
                    )
                })
                .collect();
            let (name, version, schema_url) = (
                utf8(scope_names.get(s)),
                utf8(scope_versions.get(s)),
                utf8(scope_urls.get(s)),
            );
            let attrs_hash = attrs
                .iter()
                .fold(0u128, |h, (k, v)| h.wrapping_add(attr_hash(k, v)));
            let hash = hash_parts(&[
                name.as_bytes(),
                version.as_bytes(),
                schema_url.as_bytes(),
                &attrs_hash.to_le_bytes(),
            ]);
            ScopeCtx {
                name,
                version,
                schema_url,
                attrs,
                hash,
            }
        })
        .collect();

    // Metrics.
    let metrics_t = p.table(Table::Metrics);
    let n_metrics = metrics_t.num_rows();
    let metric_scope = p.parent_ids(Table::Metrics).values();
    let m_name = Strs::of(metrics_t, col::NAME);
    let m_desc = Strs::of(metrics_t, col::DESCRIPTION);
    let m_unit = Strs::of(metrics_t, col::UNIT);
    let m_type = prim::<UInt8Type>(metrics_t, col::METRIC_TYPE);
    let m_temporality = prim::<Int32Type>(metrics_t, col::AGGREGATION_TEMPORALITY);
    let m_monotonic = metrics_t
        .column_by_name(col::IS_MONOTONIC)
        .expect("metrics schema has is_monotonic")
        .as_boolean();
    let meta = AttrTable::new(p.table(Table::MetricMetadata), n_metrics);

    let pts = Points::new(p, n_metrics);

    for m in 0..n_metrics {
        let Some(scope) = scopes.get(metric_scope[m] as usize) else {
            continue;
        };
        let Some(res) = resources.get(scope_res[metric_scope[m] as usize] as usize) else {
            continue;
        };
        let mtype = MetricType::from_u8(m_type[m]).unwrap_or(MetricType::Empty);
        let name = utf8(m_name.get(m));
        let unit = utf8(m_unit.get(m));
        let help = utf8(m_desc.get(m));
        let monotonic = m_monotonic.value(m);
        let temporality = match m_temporality[m] {
            1 => Temporality::Delta,
            2 => Temporality::Cumulative,
            _ => Temporality::Unspecified,
        };
        let (kind, fam_type) = match mtype {
            MetricType::Gauge => {
                let untyped = meta.find(m, "prometheus.type").as_deref() == Some("unknown");
                (
                    OtelKind::Gauge,
                    if untyped {
                        FamilyType::Untyped
                    } else {
                        FamilyType::Gauge
                    },
                )
            }
            MetricType::Sum if monotonic => (OtelKind::MonotonicCounter, FamilyType::Counter),
            MetricType::Sum => (OtelKind::NonMonotonicCounter, FamilyType::Gauge),
            MetricType::Histogram => (OtelKind::Histogram, FamilyType::Histogram),
            MetricType::ExponentialHistogram => {
                (OtelKind::ExponentialHistogram, FamilyType::Histogram)
            }
            MetricType::Summary => (OtelKind::Summary, FamilyType::Summary),
            MetricType::Empty => continue,
        };
        let points = pts.range(mtype, m);
        if mtype == MetricType::Sum {
            if temporality == Temporality::Unspecified {
                out.drop(DropReason::UnspecifiedTemporality, points.len());
                continue;
            }
            if temporality == Temporality::Delta && !monotonic {
                out.drop(DropReason::NonMonotonicDelta, points.len());
                continue;
            }
        }
        let Some(family_name) = tr.metric_name(name, unit, kind).map(str::to_string) else {
            out.drop(DropReason::InvalidMetricName, points.len());
            continue;
        };
        let fid = match store.family_id(&family_name, fam_type, help) {
            Ok(f) => f,
            Err(reason) => {
                out.drop(reason, points.len());
                continue;
            }
        };
        let base = hash_parts(&[
            name.as_bytes(),
            unit.as_bytes(),
            &[mtype as u8, u8::from(monotonic)],
            &scope.hash.to_le_bytes(),
            &opt_bytes(&res.job),
            &opt_bytes(&res.instance),
        ]);
        let attrs_t = pts.attrs(mtype);
        for pt in points {
            // The data point's attributes, with the resource's copied over them.
            let mut h = res.merged_hash;
            for row in attrs_t.rows(pt) {
                let k = attrs_t.key(row);
                if res.merged.iter().any(|(rk, _)| *rk == k) {
                    continue;
                }
                h = h.wrapping_add(attr_hash(k, &attrs_t.value(row)));
            }
            let mut id = [0u8; 32];
            id[..16].copy_from_slice(&base.to_le_bytes());
            id[16..].copy_from_slice(&h.to_le_bytes());
            let identity = xxh3_128(&id);
            let flags = pts.flags(mtype, pt);
            if flags & NO_RECORDED_VALUE != 0 {
                store.remove(identity);
                out.accepted += 1;
                continue;
            }
            let labels = || new_series(tr, res, scope, attrs_t, pt);
            let r = match mtype {
                MetricType::Gauge | MetricType::Sum => {
                    let np = &pts.number;
                    let value = match (np.int.get(pt), np.double.get(pt)) {
                        (Some(i), _) => i as f64,
                        (None, Some(d)) => d,
                        (None, None) => 0.0,
                    };
                    let exemplar = np.exemplars.rows(pt).last().map(|e| np.exemplars.get(e));
                    store.number(
                        fid,
                        identity,
                        (mtype == MetricType::Sum).then_some(temporality),
                        NumberPoint {
                            start: np.start[pt],
                            time: np.time[pt],
                            value,
                            exemplar,
                        },
                        now,
                        labels,
                    )
                }
                MetricType::Histogram => {
                    let hp = &pts.histogram;
                    store.histogram(
                        fid,
                        identity,
                        temporality,
                        HistogramPoint {
                            start: hp.start[pt],
                            time: hp.time[pt],
                            count: hp.count[pt],
                            sum: hp.sum.get(pt),
                            bounds: hp.bounds.get(pt),
                            counts: hp.counts.get(pt),
                            exemplars: hp.exemplars.rows(pt).map(|e| hp.exemplars.get(e)).collect(),
                            exponential: false,
                        },
                        now,
                        labels,
                    )
                }
                MetricType::ExponentialHistogram => {
                    let ep = &pts.exp;
                    // convertExponentialHistogram refuses these scales (custom buckets: -53).
                    let scale = ep.scale[pt];
                    if scale < -4 {
                        Err(DropReason::UnsupportedScale)
                    } else {
                        store.histogram(
                            fid,
                            identity,
                            temporality,
                            HistogramPoint {
                                start: ep.start[pt],
                                time: ep.time[pt],
                                count: ep.count[pt],
                                sum: ep.sum.get(pt),
                                bounds: &[],
                                counts: &[],
                                exemplars: Vec::new(),
                                exponential: true,
                            },
                            now,
                            labels,
                        )
                    }
                }
                MetricType::Summary => {
                    let sp = &pts.summary;
                    store.summary(
                        fid,
                        identity,
                        SummaryPoint {
                            start: sp.start[pt],
                            time: sp.time[pt],
                            count: sp.count[pt],
                            sum: sp.sum[pt],
                            quantiles: sp.quantiles.get(pt),
                            values: sp.values.get(pt),
                        },
                        now,
                        labels,
                    )
                }
                // (metrics without data have no points)
                MetricType::Empty => continue,
            };
            out.record(r);
        }
    }
    out
}

/// Labels of a series seen for the first time.
fn new_series(
    tr: &mut Translator,
    res: &ResourceCtx<'_>,
    scope: &ScopeCtx<'_>,
    attrs_t: &AttrTable<'_>,
    pt: usize,
) -> Result<NewSeries, DropReason> {
    let mut attrs: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        Vec::with_capacity(attrs_t.rows(pt).len() + res.merged.len() + scope.attrs.len());
    for row in attrs_t.rows(pt) {
        let k = attrs_t.key(row);
        if res.merged.iter().any(|(rk, _)| *rk == k) {
            continue;
        }
        attrs.push((Cow::Borrowed(k), attrs_t.value(row)));
    }
    for (k, v) in &res.merged {
        attrs.push((Cow::Borrowed(*k), v.clone()));
    }
    let mut fixed: Vec<(&str, &str)> = Vec::with_capacity(5 + tr.const_labels.len());
    if !tr.without_scope_info {
        for (k, v) in &scope.attrs {
            attrs.push((Cow::Borrowed(k.as_str()), v.clone()));
        }
        fixed.push(("otel_scope_name", scope.name));
        fixed.push(("otel_scope_version", scope.version));
        fixed.push(("otel_scope_schema_url", scope.schema_url));
    }
    if let Some(job) = &res.job {
        fixed.push(("job", job));
    }
    if let Some(instance) = &res.instance {
        fixed.push(("instance", instance));
    }
    for (k, v) in &tr.const_labels {
        fixed.push((k, v));
    }
    let body = render_labels(&mut tr.labels, &mut attrs, &fixed).map_err(|e| match e {
        LabelError::InvalidName => DropReason::InvalidLabelName,
        LabelError::Conflict => DropReason::LabelConflict,
    })?;
    if body.len() > MAX_LABEL_BYTES {
        return Err(DropReason::TooLarge);
    }
    Ok(NewSeries {
        body,
        target: res.target,
    })
}

struct NumberCols<'a> {
    starts: Vec<u32>,
    start: &'a [u64],
    time: &'a [u64],
    int: Opt<'a, i64>,
    double: Opt<'a, f64>,
    flags: &'a [u32],
    attrs: AttrTable<'a>,
    exemplars: Exemplars<'a>,
}

struct HistogramCols<'a> {
    starts: Vec<u32>,
    start: &'a [u64],
    time: &'a [u64],
    count: &'a [u64],
    sum: Opt<'a, f64>,
    bounds: Lists<'a, f64>,
    counts: Lists<'a, u64>,
    flags: &'a [u32],
    attrs: AttrTable<'a>,
    exemplars: Exemplars<'a>,
}

struct ExpCols<'a> {
    starts: Vec<u32>,
    start: &'a [u64],
    time: &'a [u64],
    count: &'a [u64],
    sum: Opt<'a, f64>,
    scale: &'a [i32],
    flags: &'a [u32],
    attrs: AttrTable<'a>,
}

struct SummaryCols<'a> {
    starts: Vec<u32>,
    start: &'a [u64],
    time: &'a [u64],
    count: &'a [u64],
    sum: &'a [f64],
    quantiles: Lists<'a, f64>,
    values: Lists<'a, f64>,
    flags: &'a [u32],
    attrs: AttrTable<'a>,
}

/// The four point tables of a payload, grouped by metric.
struct Points<'a> {
    number: NumberCols<'a>,
    histogram: HistogramCols<'a>,
    exp: ExpCols<'a>,
    summary: SummaryCols<'a>,
}

fn range(starts: &[u32], m: usize) -> std::ops::Range<usize> {
    match (starts.get(m), starts.get(m + 1)) {
        (Some(&s), Some(&e)) => s as usize..e as usize,
        _ => 0..0,
    }
}

impl<'a> Points<'a> {
    fn new(p: &'a Payload, n_metrics: usize) -> Self {
        let starts = |t: Table| child_starts(p.parent_ids(t).values(), n_metrics);
        let nb = p.table(Table::NumberPoints);
        let hb = p.table(Table::HistogramPoints);
        let eb = p.table(Table::ExpHistogramPoints);
        let sb = p.table(Table::SummaryPoints);
        Points {
            number: NumberCols {
                starts: starts(Table::NumberPoints),
                start: prim::<UInt64Type>(nb, col::START_TIME_UNIX_NANO),
                time: prim::<UInt64Type>(nb, col::TIME_UNIX_NANO),
                int: opt::<Int64Type>(nb, col::INT_VALUE),
                double: opt::<Float64Type>(nb, col::DOUBLE_VALUE),
                flags: prim::<UInt32Type>(nb, col::FLAGS),
                attrs: AttrTable::new(p.table(Table::NumberPointAttrs), nb.num_rows()),
                exemplars: Exemplars::new(p, Table::NumberExemplars, nb.num_rows()),
            },
            histogram: HistogramCols {
                starts: starts(Table::HistogramPoints),
                start: prim::<UInt64Type>(hb, col::START_TIME_UNIX_NANO),
                time: prim::<UInt64Type>(hb, col::TIME_UNIX_NANO),
                count: prim::<UInt64Type>(hb, col::COUNT),
                sum: opt::<Float64Type>(hb, col::SUM),
                bounds: lists::<Float64Type>(hb, col::EXPLICIT_BOUNDS),
                counts: lists::<UInt64Type>(hb, col::BUCKET_COUNTS),
                flags: prim::<UInt32Type>(hb, col::FLAGS),
                attrs: AttrTable::new(p.table(Table::HistogramPointAttrs), hb.num_rows()),
                exemplars: Exemplars::new(p, Table::HistogramExemplars, hb.num_rows()),
            },
            exp: ExpCols {
                starts: starts(Table::ExpHistogramPoints),
                start: prim::<UInt64Type>(eb, col::START_TIME_UNIX_NANO),
                time: prim::<UInt64Type>(eb, col::TIME_UNIX_NANO),
                count: prim::<UInt64Type>(eb, col::COUNT),
                sum: opt::<Float64Type>(eb, col::SUM),
                scale: prim::<Int32Type>(eb, col::SCALE),
                flags: prim::<UInt32Type>(eb, col::FLAGS),
                attrs: AttrTable::new(p.table(Table::ExpHistogramPointAttrs), eb.num_rows()),
            },
            summary: SummaryCols {
                starts: starts(Table::SummaryPoints),
                start: prim::<UInt64Type>(sb, col::START_TIME_UNIX_NANO),
                time: prim::<UInt64Type>(sb, col::TIME_UNIX_NANO),
                count: prim::<UInt64Type>(sb, col::COUNT),
                sum: prim::<Float64Type>(sb, col::SUM_F64),
                quantiles: lists::<Float64Type>(sb, col::QUANTILES),
                values: lists::<Float64Type>(sb, col::QUANTILE_VALUES),
                flags: prim::<UInt32Type>(sb, col::FLAGS),
                attrs: AttrTable::new(p.table(Table::SummaryPointAttrs), sb.num_rows()),
            },
        }
    }

    fn range(&self, t: MetricType, m: usize) -> std::ops::Range<usize> {
        match t {
            MetricType::Gauge | MetricType::Sum => range(&self.number.starts, m),
            MetricType::Histogram => range(&self.histogram.starts, m),
            MetricType::ExponentialHistogram => range(&self.exp.starts, m),
            MetricType::Summary => range(&self.summary.starts, m),
            MetricType::Empty => 0..0,
        }
    }

    fn attrs(&self, t: MetricType) -> &AttrTable<'a> {
        match t {
            MetricType::Histogram => &self.histogram.attrs,
            MetricType::ExponentialHistogram => &self.exp.attrs,
            MetricType::Summary => &self.summary.attrs,
            _ => &self.number.attrs,
        }
    }

    fn flags(&self, t: MetricType, pt: usize) -> u32 {
        match t {
            MetricType::Histogram => self.histogram.flags[pt],
            MetricType::ExponentialHistogram => self.exp.flags[pt],
            MetricType::Summary => self.summary.flags[pt],
            _ => self.number.flags[pt],
        }
    }
}
