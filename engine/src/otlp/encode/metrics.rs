//! Metrics: `ExportMetricsServiceRequest` from the metrics table and the four data point
//! tables (with their exemplars).

use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};

use super::columns::{Ids, Lists, Opt, Strs, bools, lists, opt, prim};
use super::wire::*;
use super::{Attrs, Envelope, add_to_parents, child_starts, range};
use crate::payload::Payload;
use crate::schema::{MetricType, Table, col};

/// An exemplars table, sized per data point.
struct Exemplars<'a> {
    time: &'a [u64],
    int: Opt<'a, i64>,
    double: Opt<'a, f64>,
    span_id: Ids<'a>,
    trace_id: Ids<'a>,
    attrs: Attrs<'a>,
    body: Vec<usize>,
    starts: Vec<u32>,
    per_point: Vec<usize>,
}

impl<'a> Exemplars<'a> {
    fn new(p: &'a Payload, t: Table, attrs_t: Table, n_points: usize) -> Self {
        let b = p.table(t);
        let n = b.num_rows();
        let parent = p.parent_ids(t).values();
        let time = prim::<UInt64Type>(b, col::TIME_UNIX_NANO);
        let int = opt::<Int64Type>(b, col::INT_VALUE);
        let double = opt::<Float64Type>(b, col::DOUBLE_VALUE);
        let span_id = Ids::of(b, col::SPAN_ID);
        let trace_id = Ids::of(b, col::TRACE_ID);
        let attrs = Attrs::new(p, attrs_t, n);
        let body: Vec<usize> = (0..n)
            .map(|e| {
                let value = if int.get(e).is_some() || double.get(e).is_some() {
                    9
                } else {
                    0
                };
                fixed64_size(time[e]) + value + span_id.size(e) + trace_id.size(e) + attrs.size(e)
            })
            .collect();
        let mut per_point = vec![0usize; n_points];
        add_to_parents(
            &mut per_point,
            parent,
            body.iter().map(|&l| len_field_size(l)),
        );
        Exemplars {
            time,
            int,
            double,
            span_id,
            trace_id,
            attrs,
            body,
            starts: child_starts(parent, n_points),
            per_point,
        }
    }

    #[inline]
    fn size(&self, point: usize) -> usize {
        self.per_point.get(point).copied().unwrap_or(0)
    }

    fn write(&self, out: &mut Out<'_>, tag: u8, point: usize) {
        for e in range(&self.starts, point) {
            put_header(out, tag, self.body[e]);
            put_fixed64(out, 0x11, self.time[e]);
            // value oneof (as_double = 3, as_int = 6) sits at its lowest tag, 3
            if let Some(i) = self.int.get(e) {
                put_fixed64_always(out, 0x31, i as u64);
            } else if let Some(d) = self.double.get(e) {
                put_fixed64_always(out, 0x19, d.to_bits());
            }
            self.span_id.write(out, 0x22, e);
            self.trace_id.write(out, 0x2a, e);
            self.attrs.write(out, 0x3a, e);
        }
    }
}

#[inline]
fn packed_fixed_size(n: usize) -> usize {
    if n == 0 { 0 } else { len_field_size(8 * n) }
}

#[inline]
fn put_packed_fixed(out: &mut Out<'_>, tag: u8, values: impl ExactSizeIterator<Item = u64>) {
    if values.len() == 0 {
        return;
    }
    put_header(out, tag, 8 * values.len());
    for v in values {
        out.put(&v.to_le_bytes());
    }
}

#[inline]
fn opt_f64_size(v: Option<f64>) -> usize {
    if v.is_some() { 9 } else { 0 }
}

#[inline]
fn put_opt_f64(out: &mut Out<'_>, tag: u8, v: Option<f64>) {
    if let Some(v) = v {
        put_fixed64_always(out, tag, v.to_bits());
    }
}

/// Exponential histogram `Buckets` body: `offset` (sint32) and packed varint counts.
#[inline]
fn buckets_body(offset: i32, counts: &[u64]) -> usize {
    let packed: usize = counts.iter().map(|&c| varint_len(c)).sum();
    varint_size(zigzag32(offset))
        + if packed == 0 {
            0
        } else {
            len_field_size(packed)
        }
}

fn put_buckets(out: &mut Out<'_>, tag: u8, offset: Option<i32>, counts: &[u64]) {
    // A null offset is an absent Buckets message.
    let Some(offset) = offset else { return };
    put_header(out, tag, buckets_body(offset, counts));
    put_varint_field(out, 0x08, zigzag32(offset));
    if !counts.is_empty() {
        let packed: usize = counts.iter().map(|&c| varint_len(c)).sum();
        put_header(out, 0x12, packed);
        for &c in counts {
            put_varint(out, c);
        }
    }
}

pub(super) fn encode(p: &Payload, out: &mut Vec<u8>) {
    let metrics = p.table(Table::Metrics);
    let n_metrics = metrics.num_rows();

    // --- number points (gauge, sum)
    let t = p.table(Table::NumberPoints);
    let np_n = t.num_rows();
    let np_parent = p.parent_ids(Table::NumberPoints).values();
    let np_start = prim::<UInt64Type>(t, col::START_TIME_UNIX_NANO);
    let np_time = prim::<UInt64Type>(t, col::TIME_UNIX_NANO);
    let np_int = opt::<Int64Type>(t, col::INT_VALUE);
    let np_double = opt::<Float64Type>(t, col::DOUBLE_VALUE);
    let np_flags = prim::<UInt32Type>(t, col::FLAGS);
    let np_attrs = Attrs::new(p, Table::NumberPointAttrs, np_n);
    let np_ex = Exemplars::new(p, Table::NumberExemplars, Table::NumberExemplarAttrs, np_n);
    let np_body: Vec<usize> = (0..np_n)
        .map(|i| {
            let value = if np_int.get(i).is_some() || np_double.get(i).is_some() {
                9
            } else {
                0
            };
            fixed64_size(np_start[i])
                + fixed64_size(np_time[i])
                + value
                + np_ex.size(i)
                + np_attrs.size(i)
                + varint_size(np_flags[i] as u64)
        })
        .collect();

    // --- histogram points
    let t = p.table(Table::HistogramPoints);
    let hp_n = t.num_rows();
    let hp_parent = p.parent_ids(Table::HistogramPoints).values();
    let hp_start = prim::<UInt64Type>(t, col::START_TIME_UNIX_NANO);
    let hp_time = prim::<UInt64Type>(t, col::TIME_UNIX_NANO);
    let hp_count = prim::<UInt64Type>(t, col::COUNT);
    let hp_sum = opt::<Float64Type>(t, col::SUM);
    let hp_buckets: Lists<u64> = lists::<UInt64Type>(t, col::BUCKET_COUNTS);
    let hp_bounds: Lists<f64> = lists::<Float64Type>(t, col::EXPLICIT_BOUNDS);
    let hp_flags = prim::<UInt32Type>(t, col::FLAGS);
    let hp_min = opt::<Float64Type>(t, col::MIN);
    let hp_max = opt::<Float64Type>(t, col::MAX);
    let hp_attrs = Attrs::new(p, Table::HistogramPointAttrs, hp_n);
    let hp_ex = Exemplars::new(
        p,
        Table::HistogramExemplars,
        Table::HistogramExemplarAttrs,
        hp_n,
    );
    let hp_body: Vec<usize> = (0..hp_n)
        .map(|i| {
            fixed64_size(hp_start[i])
                + fixed64_size(hp_time[i])
                + fixed64_size(hp_count[i])
                + opt_f64_size(hp_sum.get(i))
                + packed_fixed_size(hp_buckets.get(i).len())
                + packed_fixed_size(hp_bounds.get(i).len())
                + hp_ex.size(i)
                + hp_attrs.size(i)
                + varint_size(hp_flags[i] as u64)
                + opt_f64_size(hp_min.get(i))
                + opt_f64_size(hp_max.get(i))
        })
        .collect();

    // --- exponential histogram points
    let t = p.table(Table::ExpHistogramPoints);
    let ep_n = t.num_rows();
    let ep_parent = p.parent_ids(Table::ExpHistogramPoints).values();
    let ep_start = prim::<UInt64Type>(t, col::START_TIME_UNIX_NANO);
    let ep_time = prim::<UInt64Type>(t, col::TIME_UNIX_NANO);
    let ep_count = prim::<UInt64Type>(t, col::COUNT);
    let ep_sum = opt::<Float64Type>(t, col::SUM);
    let ep_scale = prim::<Int32Type>(t, col::SCALE);
    let ep_zero_count = prim::<UInt64Type>(t, col::ZERO_COUNT);
    let ep_pos_offset = opt::<Int32Type>(t, col::POSITIVE_OFFSET);
    let ep_pos_counts = lists::<UInt64Type>(t, col::POSITIVE_BUCKET_COUNTS);
    let ep_neg_offset = opt::<Int32Type>(t, col::NEGATIVE_OFFSET);
    let ep_neg_counts = lists::<UInt64Type>(t, col::NEGATIVE_BUCKET_COUNTS);
    let ep_flags = prim::<UInt32Type>(t, col::FLAGS);
    let ep_min = opt::<Float64Type>(t, col::MIN);
    let ep_max = opt::<Float64Type>(t, col::MAX);
    let ep_zero_threshold = prim::<Float64Type>(t, col::ZERO_THRESHOLD);
    let ep_attrs = Attrs::new(p, Table::ExpHistogramPointAttrs, ep_n);
    let ep_ex = Exemplars::new(
        p,
        Table::ExpHistogramExemplars,
        Table::ExpHistogramExemplarAttrs,
        ep_n,
    );
    let buckets_size = |offset: Option<i32>, counts: &[u64]| {
        offset.map_or(0, |o| len_field_size(buckets_body(o, counts)))
    };
    let ep_body: Vec<usize> = (0..ep_n)
        .map(|i| {
            ep_attrs.size(i)
                + fixed64_size(ep_start[i])
                + fixed64_size(ep_time[i])
                + fixed64_size(ep_count[i])
                + opt_f64_size(ep_sum.get(i))
                + varint_size(zigzag32(ep_scale[i]))
                + fixed64_size(ep_zero_count[i])
                + buckets_size(ep_pos_offset.get(i), ep_pos_counts.get(i))
                + buckets_size(ep_neg_offset.get(i), ep_neg_counts.get(i))
                + varint_size(ep_flags[i] as u64)
                + ep_ex.size(i)
                + opt_f64_size(ep_min.get(i))
                + opt_f64_size(ep_max.get(i))
                + double_size(ep_zero_threshold[i])
        })
        .collect();

    // --- summary points
    let t = p.table(Table::SummaryPoints);
    let sp_n = t.num_rows();
    let sp_parent = p.parent_ids(Table::SummaryPoints).values();
    let sp_start = prim::<UInt64Type>(t, col::START_TIME_UNIX_NANO);
    let sp_time = prim::<UInt64Type>(t, col::TIME_UNIX_NANO);
    let sp_count = prim::<UInt64Type>(t, col::COUNT);
    let sp_sum = prim::<Float64Type>(t, col::SUM_F64);
    let sp_quantiles = lists::<Float64Type>(t, col::QUANTILES);
    let sp_values = lists::<Float64Type>(t, col::QUANTILE_VALUES);
    let sp_flags = prim::<UInt32Type>(t, col::FLAGS);
    let sp_attrs = Attrs::new(p, Table::SummaryPointAttrs, sp_n);
    let quantile_body = |q: f64, v: f64| double_size(q) + double_size(v);
    let sp_body: Vec<usize> = (0..sp_n)
        .map(|i| {
            let quantiles: usize = sp_quantiles
                .get(i)
                .iter()
                .zip(sp_values.get(i))
                .map(|(&q, &v)| len_field_size(quantile_body(q, v)))
                .sum();
            fixed64_size(sp_start[i])
                + fixed64_size(sp_time[i])
                + fixed64_size(sp_count[i])
                + double_size(sp_sum[i])
                + quantiles
                + sp_attrs.size(i)
                + varint_size(sp_flags[i] as u64)
        })
        .collect();

    // --- points per metric, one table per metric type
    let per_metric = |parent: &[u32], body: &[usize]| {
        let mut v = vec![0usize; n_metrics];
        add_to_parents(&mut v, parent, body.iter().map(|&l| len_field_size(l)));
        v
    };
    let np_per_metric = per_metric(np_parent, &np_body);
    let hp_per_metric = per_metric(hp_parent, &hp_body);
    let ep_per_metric = per_metric(ep_parent, &ep_body);
    let sp_per_metric = per_metric(sp_parent, &sp_body);
    let np_starts = child_starts(np_parent, n_metrics);
    let hp_starts = child_starts(hp_parent, n_metrics);
    let ep_starts = child_starts(ep_parent, n_metrics);
    let sp_starts = child_starts(sp_parent, n_metrics);

    // --- metrics, sized per scope
    let m_parent = p.parent_ids(Table::Metrics).values();
    let name = Strs::of(metrics, col::NAME);
    let description = Strs::of(metrics, col::DESCRIPTION);
    let unit = Strs::of(metrics, col::UNIT);
    let metric_type = prim::<UInt8Type>(metrics, col::METRIC_TYPE);
    let temporality = prim::<Int32Type>(metrics, col::AGGREGATION_TEMPORALITY);
    let monotonic = bools(metrics, col::IS_MONOTONIC);
    let metadata = Attrs::new(p, Table::MetricMetadata, n_metrics);

    // (oneof tag, data message body) for metric m; None = data oneof unset
    let data = |m: usize| -> Option<(u8, usize)> {
        let temporality = varint_size(i32_wire(temporality[m]));
        Some(match MetricType::from_u8(metric_type[m])? {
            MetricType::Empty => return None,
            MetricType::Gauge => (0x2a, np_per_metric[m]),
            MetricType::Sum => (
                0x3a,
                np_per_metric[m] + temporality + if monotonic.value(m) { 2 } else { 0 },
            ),
            MetricType::Histogram => (0x4a, hp_per_metric[m] + temporality),
            MetricType::ExponentialHistogram => (0x52, ep_per_metric[m] + temporality),
            MetricType::Summary => (0x5a, sp_per_metric[m]),
        })
    };
    let m_body: Vec<usize> = (0..n_metrics)
        .map(|m| {
            str_size(name.len_of(m))
                + str_size(description.len_of(m))
                + str_size(unit.len_of(m))
                + data(m).map_or(0, |(_, len)| len_field_size(len))
                + metadata.size(m)
        })
        .collect();
    let n_scopes = p.table(Table::Scopes).num_rows();
    let mut per_scope = vec![0usize; n_scopes];
    add_to_parents(
        &mut per_scope,
        m_parent,
        m_body.iter().map(|&l| len_field_size(l)),
    );
    let m_starts = child_starts(m_parent, n_scopes);

    let env = Envelope::new(p, &per_scope);
    env.write(out, |out, scope| {
        for m in range(&m_starts, scope) {
            put_header(out, 0x12, m_body[m]);
            put_str(out, 0x0a, name.get(m));
            put_str(out, 0x12, description.get(m));
            put_str(out, 0x1a, unit.get(m));
            if let Some((tag, len)) = data(m) {
                put_header(out, tag, len);
                match tag {
                    0x2a | 0x3a => {
                        for i in range(&np_starts, m) {
                            put_header(out, 0x0a, np_body[i]);
                            put_fixed64(out, 0x11, np_start[i]);
                            put_fixed64(out, 0x19, np_time[i]);
                            // value oneof (as_double = 4, as_int = 6) sits at tag 4
                            if let Some(v) = np_int.get(i) {
                                put_fixed64_always(out, 0x31, v as u64);
                            } else if let Some(v) = np_double.get(i) {
                                put_fixed64_always(out, 0x21, v.to_bits());
                            }
                            np_ex.write(out, 0x2a, i);
                            np_attrs.write(out, 0x3a, i);
                            put_varint_field(out, 0x40, np_flags[i] as u64);
                        }
                    }
                    0x4a => {
                        for i in range(&hp_starts, m) {
                            put_header(out, 0x0a, hp_body[i]);
                            put_fixed64(out, 0x11, hp_start[i]);
                            put_fixed64(out, 0x19, hp_time[i]);
                            put_fixed64(out, 0x21, hp_count[i]);
                            put_opt_f64(out, 0x29, hp_sum.get(i));
                            let buckets = hp_buckets.get(i);
                            put_packed_fixed(out, 0x32, buckets.iter().copied());
                            let bounds = hp_bounds.get(i);
                            put_packed_fixed(out, 0x3a, bounds.iter().map(|b| b.to_bits()));
                            hp_ex.write(out, 0x42, i);
                            hp_attrs.write(out, 0x4a, i);
                            put_varint_field(out, 0x50, hp_flags[i] as u64);
                            put_opt_f64(out, 0x59, hp_min.get(i));
                            put_opt_f64(out, 0x61, hp_max.get(i));
                        }
                    }
                    0x52 => {
                        for i in range(&ep_starts, m) {
                            put_header(out, 0x0a, ep_body[i]);
                            ep_attrs.write(out, 0x0a, i);
                            put_fixed64(out, 0x11, ep_start[i]);
                            put_fixed64(out, 0x19, ep_time[i]);
                            put_fixed64(out, 0x21, ep_count[i]);
                            put_opt_f64(out, 0x29, ep_sum.get(i));
                            put_varint_field(out, 0x30, zigzag32(ep_scale[i]));
                            put_fixed64(out, 0x39, ep_zero_count[i]);
                            put_buckets(out, 0x42, ep_pos_offset.get(i), ep_pos_counts.get(i));
                            put_buckets(out, 0x4a, ep_neg_offset.get(i), ep_neg_counts.get(i));
                            put_varint_field(out, 0x50, ep_flags[i] as u64);
                            ep_ex.write(out, 0x5a, i);
                            put_opt_f64(out, 0x61, ep_min.get(i));
                            put_opt_f64(out, 0x69, ep_max.get(i));
                            put_double(out, 0x71, ep_zero_threshold[i]);
                        }
                    }
                    0x5a => {
                        for i in range(&sp_starts, m) {
                            put_header(out, 0x0a, sp_body[i]);
                            put_fixed64(out, 0x11, sp_start[i]);
                            put_fixed64(out, 0x19, sp_time[i]);
                            put_fixed64(out, 0x21, sp_count[i]);
                            put_double(out, 0x29, sp_sum[i]);
                            for (&q, &v) in sp_quantiles.get(i).iter().zip(sp_values.get(i)) {
                                put_header(out, 0x32, quantile_body(q, v));
                                put_double(out, 0x09, q);
                                put_double(out, 0x11, v);
                            }
                            sp_attrs.write(out, 0x3a, i);
                            put_varint_field(out, 0x40, sp_flags[i] as u64);
                        }
                    }
                    _ => {}
                }
                // the data message's own scalar fields follow its points (tags 2, 3)
                match tag {
                    0x3a => {
                        put_varint_field(out, 0x10, i32_wire(temporality[m]));
                        if monotonic.value(m) {
                            out.put(&[0x18, 0x01]);
                        }
                    }
                    0x4a | 0x52 => put_varint_field(out, 0x10, i32_wire(temporality[m])),
                    _ => {}
                }
            }
            metadata.write(out, 0x62, m);
        }
    });
}
