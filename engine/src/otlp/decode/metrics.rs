//! `ExportMetricsServiceRequest` -> Metrics, MetricMetadata and the per-type points, exemplar
//! and attribute tables (plus the common Resources/Scopes tables).

use arrow::array::ArrayRef;
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use prost::Message;

use super::builders::{Attrs, Dict, FixedBin, List, OptPrim, bools, check_id, prim, set_str};
use super::common::{Items, key_value};
use super::wire::{Ctx, Error, I64, Kind, LEN, R, Reader, VARINT, err, key, zigzag32};
use crate::schema::{MetricType, Table};
use opentelemetry_proto::tonic::metrics::v1 as pb;

/// An exemplars table and its attribute table.
struct Exemplars<'a> {
    parent: Vec<u32>,
    time: Vec<u64>,
    int_value: OptPrim<Int64Type>,
    double_value: OptPrim<Float64Type>,
    span_id: FixedBin<8>,
    trace_id: FixedBin<16>,
    attrs: Attrs<'a>,
}

impl<'a> Exemplars<'a> {
    fn new() -> Self {
        Exemplars {
            parent: Vec::new(),
            time: Vec::new(),
            int_value: OptPrim::new(),
            double_value: OptPrim::new(),
            span_id: FixedBin::new(),
            trace_id: FixedBin::new(),
            attrs: Attrs::new(),
        }
    }

    fn exemplar(&mut self, point: u32, mut r: Reader<'a>, strict: bool) -> R<()> {
        let row = self.parent.len() as u32;
        let mut time = 0u64;
        let mut value: Option<Result<i64, f64>> = None;
        let mut span_id: &[u8] = &[];
        let mut trace_id: &[u8] = &[];
        let mut n_attrs = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(7, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.attrs, row, n_attrs, m, strict)
                        .at_idx("filtered_attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, I64) => time = r.fixed64()?,
                k if k == key(3, I64) => value = Some(Err(r.f64()?)),
                k if k == key(6, I64) => value = Some(Ok(r.fixed64()? as i64)),
                k if k == key(4, LEN) => span_id = r.bytes()?,
                k if k == key(5, LEN) => trace_id = r.bytes()?,
                _ => r.skip(k, exemplar_fields)?,
            }
        }
        check_id::<8>(span_id, "span_id")?;
        check_id::<16>(trace_id, "trace_id")?;
        self.parent.push(point);
        self.time.push(time);
        self.int_value.push(value.and_then(|v| v.ok()));
        self.double_value.push(value.and_then(|v| v.err()));
        self.span_id.push(span_id);
        self.trace_id.push(trace_id);
        Ok(())
    }

    fn finish(self) -> R<[Vec<ArrayRef>; 2]> {
        Ok([
            vec![
                prim::<UInt32Type>(self.parent),
                prim::<UInt64Type>(self.time),
                self.int_value.finish(),
                self.double_value.finish(),
                self.span_id.finish()?,
                self.trace_id.finish()?,
            ],
            self.attrs.finish()?,
        ])
    }
}

fn exemplar_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        2 => ("time_unix_nano", I64),
        3 => ("as_double", I64),
        4 => ("span_id", LEN),
        5 => ("trace_id", LEN),
        6 => ("as_int", I64),
        7 => ("filtered_attributes", LEN),
        _ => return None,
    })
}

pub(crate) struct Metrics<'a> {
    strict: bool,
    // metrics
    parent: Vec<u32>,
    name: Dict<'a>,
    description: Dict<'a>,
    unit: Dict<'a>,
    metric_type: Vec<u8>,
    temporality: Vec<i32>,
    monotonic: Vec<bool>,
    metadata: Attrs<'a>,
    // number points
    n_parent: Vec<u32>,
    n_start: Vec<u64>,
    n_time: Vec<u64>,
    n_int: OptPrim<Int64Type>,
    n_double: OptPrim<Float64Type>,
    n_flags: Vec<u32>,
    n_attrs: Attrs<'a>,
    n_ex: Exemplars<'a>,
    // histogram points
    h_parent: Vec<u32>,
    h_start: Vec<u64>,
    h_time: Vec<u64>,
    h_count: Vec<u64>,
    h_sum: OptPrim<Float64Type>,
    h_buckets: List<UInt64Type>,
    h_bounds: List<Float64Type>,
    h_flags: Vec<u32>,
    h_min: OptPrim<Float64Type>,
    h_max: OptPrim<Float64Type>,
    h_attrs: Attrs<'a>,
    h_ex: Exemplars<'a>,
    // exponential histogram points
    e_parent: Vec<u32>,
    e_start: Vec<u64>,
    e_time: Vec<u64>,
    e_count: Vec<u64>,
    e_sum: OptPrim<Float64Type>,
    e_scale: Vec<i32>,
    e_zero_count: Vec<u64>,
    e_pos_offset: OptPrim<Int32Type>,
    e_pos_counts: List<UInt64Type>,
    e_neg_offset: OptPrim<Int32Type>,
    e_neg_counts: List<UInt64Type>,
    e_flags: Vec<u32>,
    e_min: OptPrim<Float64Type>,
    e_max: OptPrim<Float64Type>,
    e_zero_threshold: Vec<f64>,
    e_attrs: Attrs<'a>,
    e_ex: Exemplars<'a>,
    // summary points
    s_parent: Vec<u32>,
    s_start: Vec<u64>,
    s_time: Vec<u64>,
    s_count: Vec<u64>,
    s_sum: Vec<f64>,
    s_quantiles: List<Float64Type>,
    s_values: List<Float64Type>,
    s_flags: Vec<u32>,
    s_attrs: Attrs<'a>,
}

// Metric.data oneof tags.
const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXP_HISTOGRAM: u32 = 10;
const SUMMARY: u32 = 11;

fn metric_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("name", LEN),
        2 => ("description", LEN),
        3 => ("unit", LEN),
        GAUGE => ("gauge", LEN),
        SUM => ("sum", LEN),
        HISTOGRAM => ("histogram", LEN),
        EXP_HISTOGRAM => ("exponential_histogram", LEN),
        SUMMARY => ("summary", LEN),
        12 => ("metadata", LEN),
        _ => return None,
    })
}

fn data_name(field: u32) -> &'static str {
    metric_fields(field).map(|(n, _)| n).unwrap_or("data")
}

fn data_fields(f: u32) -> Option<(&'static str, u32)> {
    Some(match f {
        1 => ("data_points", LEN),
        2 => ("aggregation_temporality", VARINT),
        3 => ("is_monotonic", VARINT),
        _ => return None,
    })
}

#[cold]
fn nested(e: prost::DecodeError) -> Error {
    err(Kind::Nested(e.to_string()), None)
}

/// Finds which `data` oneof occurrences prost would keep: the last run of one variant (a
/// different variant resets the oneof; the same variant merges). Returns (field, start offset
/// of the run). Malformed input stops the scan; the main pass reports it.
fn winning_data(mut r: Reader<'_>) -> (u32, usize) {
    let (mut field, mut run_start) = (0u32, 0usize);
    while r.has_more() {
        let pos = r.pos();
        let Ok(k) = r.key() else { break };
        let f = k >> 3;
        if k & 7 == LEN
            && matches!(f, GAUGE | SUM | HISTOGRAM | EXP_HISTOGRAM | SUMMARY)
            && f != field
        {
            field = f;
            run_start = pos;
        }
        if r.skip_value(k & 7).is_err() {
            break;
        }
    }
    (field, run_start)
}

impl<'a> Items<'a> for Metrics<'a> {
    const RESOURCES: &'static str = "resource_metrics";
    const SCOPES: &'static str = "scope_metrics";
    const ITEMS: &'static str = "metrics";

    fn item(&mut self, scope: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.parent.len() as u32;
        let (winner, run_start) = winning_data(r);
        let mut name: &'a [u8] = &[];
        let mut description: &'a [u8] = &[];
        let mut unit: &'a [u8] = &[];
        let mut temporality = 0i32;
        let mut monotonic = false;
        let mut n_meta = 0u32;
        let mut n_points = 0u32;
        while r.has_more() {
            let pos = r.pos();
            let k = r.key()?;
            let f = k >> 3;
            match k {
                k if k == key(1, LEN) => set_str(&mut name, r.bytes()?, "name")?,
                k if k == key(2, LEN) => set_str(&mut description, r.bytes()?, "description")?,
                k if k == key(3, LEN) => set_str(&mut unit, r.bytes()?, "unit")?,
                k if k == key(12, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.metadata, row, n_meta, m, self.strict)
                        .at_idx("metadata", n_meta)?;
                    n_meta += 1;
                }
                k if k & 7 == LEN
                    && matches!(f, GAUGE | SUM | HISTOGRAM | EXP_HISTOGRAM | SUMMARY) =>
                {
                    let m = r.message()?;
                    if f == winner && pos >= run_start {
                        self.data(row, f, m, &mut temporality, &mut monotonic, &mut n_points)
                            .at(data_name(f))?;
                    } else {
                        // Replaced by a later variant: prost would decode (and validate) it,
                        // then drop it.
                        let b = m.all();
                        let v = match f {
                            GAUGE => pb::Gauge::decode(b).map(drop),
                            SUM => pb::Sum::decode(b).map(drop),
                            HISTOGRAM => pb::Histogram::decode(b).map(drop),
                            EXP_HISTOGRAM => pb::ExponentialHistogram::decode(b).map(drop),
                            _ => pb::Summary::decode(b).map(drop),
                        };
                        v.map_err(nested).at(data_name(f))?;
                    }
                }
                _ => r.skip(k, metric_fields)?,
            }
        }
        self.name.push(name).at("name")?;
        self.description.push(description).at("description")?;
        self.unit.push(unit).at("unit")?;
        let mt = match winner {
            GAUGE => MetricType::Gauge,
            SUM => MetricType::Sum,
            HISTOGRAM => MetricType::Histogram,
            EXP_HISTOGRAM => MetricType::ExponentialHistogram,
            SUMMARY => MetricType::Summary,
            _ => MetricType::Empty,
        };
        self.parent.push(scope);
        self.metric_type.push(mt as u8);
        self.temporality.push(temporality);
        self.monotonic.push(monotonic);
        Ok(())
    }
}

impl<'a> Metrics<'a> {
    pub fn new(strict: bool) -> Self {
        Metrics {
            strict,
            parent: Vec::new(),
            name: Dict::new(),
            description: Dict::new(),
            unit: Dict::new(),
            metric_type: Vec::new(),
            temporality: Vec::new(),
            monotonic: Vec::new(),
            metadata: Attrs::new(),
            n_parent: Vec::new(),
            n_start: Vec::new(),
            n_time: Vec::new(),
            n_int: OptPrim::new(),
            n_double: OptPrim::new(),
            n_flags: Vec::new(),
            n_attrs: Attrs::new(),
            n_ex: Exemplars::new(),
            h_parent: Vec::new(),
            h_start: Vec::new(),
            h_time: Vec::new(),
            h_count: Vec::new(),
            h_sum: OptPrim::new(),
            h_buckets: List::new(),
            h_bounds: List::new(),
            h_flags: Vec::new(),
            h_min: OptPrim::new(),
            h_max: OptPrim::new(),
            h_attrs: Attrs::new(),
            h_ex: Exemplars::new(),
            e_parent: Vec::new(),
            e_start: Vec::new(),
            e_time: Vec::new(),
            e_count: Vec::new(),
            e_sum: OptPrim::new(),
            e_scale: Vec::new(),
            e_zero_count: Vec::new(),
            e_pos_offset: OptPrim::new(),
            e_pos_counts: List::new(),
            e_neg_offset: OptPrim::new(),
            e_neg_counts: List::new(),
            e_flags: Vec::new(),
            e_min: OptPrim::new(),
            e_max: OptPrim::new(),
            e_zero_threshold: Vec::new(),
            e_attrs: Attrs::new(),
            e_ex: Exemplars::new(),
            s_parent: Vec::new(),
            s_start: Vec::new(),
            s_time: Vec::new(),
            s_count: Vec::new(),
            s_sum: Vec::new(),
            s_quantiles: List::new(),
            s_values: List::new(),
            s_flags: Vec::new(),
            s_attrs: Attrs::new(),
        }
    }

    /// One Gauge/Sum/Histogram/ExponentialHistogram/Summary message of metric `metric`.
    fn data(
        &mut self,
        metric: u32,
        variant: u32,
        mut r: Reader<'a>,
        temporality: &mut i32,
        monotonic: &mut bool,
        n_points: &mut u32,
    ) -> R<()> {
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => {
                    let m = r.message()?;
                    let res = match variant {
                        GAUGE | SUM => self.number_point(metric, m),
                        HISTOGRAM => self.histogram_point(metric, m),
                        EXP_HISTOGRAM => self.exp_histogram_point(metric, m),
                        _ => self.summary_point(metric, m),
                    };
                    res.at_idx("data_points", *n_points)?;
                    *n_points += 1;
                }
                k if k == key(2, VARINT) && matches!(variant, SUM | HISTOGRAM | EXP_HISTOGRAM) => {
                    *temporality = r.varint()? as i32
                }
                k if k == key(3, VARINT) && variant == SUM => *monotonic = r.varint()? != 0,
                _ => {
                    let f = k >> 3;
                    let declared = f == 1
                        || (f == 2 && matches!(variant, SUM | HISTOGRAM | EXP_HISTOGRAM))
                        || (f == 3 && variant == SUM);
                    if declared {
                        r.skip(k, data_fields)?
                    } else {
                        r.skip_value(k & 7)?
                    }
                }
            }
        }
        Ok(())
    }

    fn number_point(&mut self, metric: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.n_parent.len() as u32;
        let (mut start, mut time, mut flags) = (0u64, 0u64, 0u32);
        let mut value: Option<Result<i64, f64>> = None;
        let (mut n_attrs, mut n_ex) = (0u32, 0u32);
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(7, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.n_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, I64) => start = r.fixed64()?,
                k if k == key(3, I64) => time = r.fixed64()?,
                k if k == key(4, I64) => value = Some(Err(r.f64()?)),
                k if k == key(6, I64) => value = Some(Ok(r.fixed64()? as i64)),
                k if k == key(5, LEN) => {
                    let m = r.message()?;
                    self.n_ex
                        .exemplar(row, m, self.strict)
                        .at_idx("exemplars", n_ex)?;
                    n_ex += 1;
                }
                k if k == key(8, VARINT) => flags = r.varint()? as u32,
                _ => r.skip(k, |f| {
                    Some(match f {
                        2 => ("start_time_unix_nano", I64),
                        3 => ("time_unix_nano", I64),
                        4 => ("as_double", I64),
                        5 => ("exemplars", LEN),
                        6 => ("as_int", I64),
                        7 => ("attributes", LEN),
                        8 => ("flags", VARINT),
                        _ => return None,
                    })
                })?,
            }
        }
        self.n_parent.push(metric);
        self.n_start.push(start);
        self.n_time.push(time);
        self.n_int.push(value.and_then(|v| v.ok()));
        self.n_double.push(value.and_then(|v| v.err()));
        self.n_flags.push(flags);
        Ok(())
    }

    fn histogram_point(&mut self, metric: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.h_parent.len() as u32;
        let (mut start, mut time, mut count, mut flags) = (0u64, 0u64, 0u64, 0u32);
        let (mut sum, mut min, mut max) = (None, None, None);
        let (mut n_attrs, mut n_ex) = (0u32, 0u32);
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(9, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.h_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, I64) => start = r.fixed64()?,
                k if k == key(3, I64) => time = r.fixed64()?,
                k if k == key(4, I64) => count = r.fixed64()?,
                k if k == key(5, I64) => sum = Some(r.f64()?),
                k if k == key(6, LEN) => {
                    packed_fixed64(r.message()?, &mut self.h_buckets.values, |v| v)
                        .at("bucket_counts")?
                }
                k if k == key(6, I64) => self.h_buckets.values.push(r.fixed64()?),
                k if k == key(7, LEN) => {
                    packed_fixed64(r.message()?, &mut self.h_bounds.values, f64::from_bits)
                        .at("explicit_bounds")?
                }
                k if k == key(7, I64) => self.h_bounds.values.push(r.f64()?),
                k if k == key(8, LEN) => {
                    let m = r.message()?;
                    self.h_ex
                        .exemplar(row, m, self.strict)
                        .at_idx("exemplars", n_ex)?;
                    n_ex += 1;
                }
                k if k == key(10, VARINT) => flags = r.varint()? as u32,
                k if k == key(11, I64) => min = Some(r.f64()?),
                k if k == key(12, I64) => max = Some(r.f64()?),
                _ => r.skip(k, |f| {
                    Some(match f {
                        2 => ("start_time_unix_nano", I64),
                        3 => ("time_unix_nano", I64),
                        4 => ("count", I64),
                        5 => ("sum", I64),
                        6 => ("bucket_counts", LEN),
                        7 => ("explicit_bounds", LEN),
                        8 => ("exemplars", LEN),
                        9 => ("attributes", LEN),
                        10 => ("flags", VARINT),
                        11 => ("min", I64),
                        12 => ("max", I64),
                        _ => return None,
                    })
                })?,
            }
        }
        self.h_parent.push(metric);
        self.h_start.push(start);
        self.h_time.push(time);
        self.h_count.push(count);
        self.h_sum.push(sum);
        self.h_buckets.close_row();
        self.h_bounds.close_row();
        self.h_flags.push(flags);
        self.h_min.push(min);
        self.h_max.push(max);
        Ok(())
    }

    fn exp_histogram_point(&mut self, metric: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.e_parent.len() as u32;
        let (mut start, mut time, mut count, mut zero_count) = (0u64, 0u64, 0u64, 0u64);
        let (mut scale, mut flags, mut zero_threshold) = (0i32, 0u32, 0f64);
        let (mut sum, mut min, mut max) = (None, None, None);
        let (mut pos_offset, mut neg_offset) = (None, None);
        let (mut n_attrs, mut n_ex) = (0u32, 0u32);
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(1, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.e_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, I64) => start = r.fixed64()?,
                k if k == key(3, I64) => time = r.fixed64()?,
                k if k == key(4, I64) => count = r.fixed64()?,
                k if k == key(5, I64) => sum = Some(r.f64()?),
                k if k == key(6, VARINT) => scale = zigzag32(r.varint()?),
                k if k == key(7, I64) => zero_count = r.fixed64()?,
                k if k == key(8, LEN) => {
                    let m = r.message()?;
                    let off = pos_offset.get_or_insert(0);
                    buckets(m, off, &mut self.e_pos_counts.values).at("positive")?;
                }
                k if k == key(9, LEN) => {
                    let m = r.message()?;
                    let off = neg_offset.get_or_insert(0);
                    buckets(m, off, &mut self.e_neg_counts.values).at("negative")?;
                }
                k if k == key(10, VARINT) => flags = r.varint()? as u32,
                k if k == key(11, LEN) => {
                    let m = r.message()?;
                    self.e_ex
                        .exemplar(row, m, self.strict)
                        .at_idx("exemplars", n_ex)?;
                    n_ex += 1;
                }
                k if k == key(12, I64) => min = Some(r.f64()?),
                k if k == key(13, I64) => max = Some(r.f64()?),
                k if k == key(14, I64) => zero_threshold = r.f64()?,
                _ => r.skip(k, |f| {
                    Some(match f {
                        1 => ("attributes", LEN),
                        2 => ("start_time_unix_nano", I64),
                        3 => ("time_unix_nano", I64),
                        4 => ("count", I64),
                        5 => ("sum", I64),
                        6 => ("scale", VARINT),
                        7 => ("zero_count", I64),
                        8 => ("positive", LEN),
                        9 => ("negative", LEN),
                        10 => ("flags", VARINT),
                        11 => ("exemplars", LEN),
                        12 => ("min", I64),
                        13 => ("max", I64),
                        14 => ("zero_threshold", I64),
                        _ => return None,
                    })
                })?,
            }
        }
        self.e_parent.push(metric);
        self.e_start.push(start);
        self.e_time.push(time);
        self.e_count.push(count);
        self.e_sum.push(sum);
        self.e_scale.push(scale);
        self.e_zero_count.push(zero_count);
        self.e_pos_offset.push(pos_offset);
        self.e_pos_counts.close_row();
        self.e_neg_offset.push(neg_offset);
        self.e_neg_counts.close_row();
        self.e_flags.push(flags);
        self.e_min.push(min);
        self.e_max.push(max);
        self.e_zero_threshold.push(zero_threshold);
        Ok(())
    }

    fn summary_point(&mut self, metric: u32, mut r: Reader<'a>) -> R<()> {
        let row = self.s_parent.len() as u32;
        let (mut start, mut time, mut count, mut flags) = (0u64, 0u64, 0u64, 0u32);
        let mut sum = 0f64;
        let mut n_attrs = 0u32;
        let mut n_q = 0u32;
        while r.has_more() {
            let k = r.key()?;
            match k {
                k if k == key(7, LEN) => {
                    let m = r.message()?;
                    key_value(&mut self.s_attrs, row, n_attrs, m, self.strict)
                        .at_idx("attributes", n_attrs)?;
                    n_attrs += 1;
                }
                k if k == key(2, I64) => start = r.fixed64()?,
                k if k == key(3, I64) => time = r.fixed64()?,
                k if k == key(4, I64) => count = r.fixed64()?,
                k if k == key(5, I64) => sum = r.f64()?,
                k if k == key(6, LEN) => {
                    let m = r.message()?;
                    let (q, v) = value_at_quantile(m).at_idx("quantile_values", n_q)?;
                    self.s_quantiles.values.push(q);
                    self.s_values.values.push(v);
                    n_q += 1;
                }
                k if k == key(8, VARINT) => flags = r.varint()? as u32,
                _ => r.skip(k, |f| {
                    Some(match f {
                        2 => ("start_time_unix_nano", I64),
                        3 => ("time_unix_nano", I64),
                        4 => ("count", I64),
                        5 => ("sum", I64),
                        6 => ("quantile_values", LEN),
                        7 => ("attributes", LEN),
                        8 => ("flags", VARINT),
                        _ => return None,
                    })
                })?,
            }
        }
        self.s_parent.push(metric);
        self.s_start.push(start);
        self.s_time.push(time);
        self.s_count.push(count);
        self.s_sum.push(sum);
        self.s_quantiles.close_row();
        self.s_values.close_row();
        self.s_flags.push(flags);
        Ok(())
    }

    pub fn finish(self) -> R<Vec<(Table, Vec<ArrayRef>)>> {
        let [n_ex, n_ex_attrs] = self.n_ex.finish()?;
        let [h_ex, h_ex_attrs] = self.h_ex.finish()?;
        let [e_ex, e_ex_attrs] = self.e_ex.finish()?;
        Ok(vec![
            (
                Table::Metrics,
                vec![
                    prim::<UInt32Type>(self.parent),
                    self.name.finish()?,
                    self.description.finish()?,
                    self.unit.finish()?,
                    prim::<UInt8Type>(self.metric_type),
                    prim::<Int32Type>(self.temporality),
                    bools(&self.monotonic),
                ],
            ),
            (Table::MetricMetadata, self.metadata.finish()?),
            (
                Table::NumberPoints,
                vec![
                    prim::<UInt32Type>(self.n_parent),
                    prim::<UInt64Type>(self.n_start),
                    prim::<UInt64Type>(self.n_time),
                    self.n_int.finish(),
                    self.n_double.finish(),
                    prim::<UInt32Type>(self.n_flags),
                ],
            ),
            (Table::NumberPointAttrs, self.n_attrs.finish()?),
            (Table::NumberExemplars, n_ex),
            (Table::NumberExemplarAttrs, n_ex_attrs),
            (
                Table::HistogramPoints,
                vec![
                    prim::<UInt32Type>(self.h_parent),
                    prim::<UInt64Type>(self.h_start),
                    prim::<UInt64Type>(self.h_time),
                    prim::<UInt64Type>(self.h_count),
                    self.h_sum.finish(),
                    self.h_buckets.finish()?,
                    self.h_bounds.finish()?,
                    prim::<UInt32Type>(self.h_flags),
                    self.h_min.finish(),
                    self.h_max.finish(),
                ],
            ),
            (Table::HistogramPointAttrs, self.h_attrs.finish()?),
            (Table::HistogramExemplars, h_ex),
            (Table::HistogramExemplarAttrs, h_ex_attrs),
            (
                Table::ExpHistogramPoints,
                vec![
                    prim::<UInt32Type>(self.e_parent),
                    prim::<UInt64Type>(self.e_start),
                    prim::<UInt64Type>(self.e_time),
                    prim::<UInt64Type>(self.e_count),
                    self.e_sum.finish(),
                    prim::<Int32Type>(self.e_scale),
                    prim::<UInt64Type>(self.e_zero_count),
                    self.e_pos_offset.finish(),
                    self.e_pos_counts.finish()?,
                    self.e_neg_offset.finish(),
                    self.e_neg_counts.finish()?,
                    prim::<UInt32Type>(self.e_flags),
                    self.e_min.finish(),
                    self.e_max.finish(),
                    prim::<Float64Type>(self.e_zero_threshold),
                ],
            ),
            (Table::ExpHistogramPointAttrs, self.e_attrs.finish()?),
            (Table::ExpHistogramExemplars, e_ex),
            (Table::ExpHistogramExemplarAttrs, e_ex_attrs),
            (
                Table::SummaryPoints,
                vec![
                    prim::<UInt32Type>(self.s_parent),
                    prim::<UInt64Type>(self.s_start),
                    prim::<UInt64Type>(self.s_time),
                    prim::<UInt64Type>(self.s_count),
                    prim::<Float64Type>(self.s_sum),
                    self.s_quantiles.finish()?,
                    self.s_values.finish()?,
                    prim::<UInt32Type>(self.s_flags),
                ],
            ),
            (Table::SummaryPointAttrs, self.s_attrs.finish()?),
        ])
    }
}

/// A packed repeated fixed64/double field.
fn packed_fixed64<T>(mut r: Reader<'_>, out: &mut Vec<T>, f: impl Fn(u64) -> T) -> R<()> {
    while r.has_more() {
        out.push(f(r.fixed64()?));
    }
    Ok(())
}

/// An exponential histogram `Buckets` message: offset (sint32) and packed/unpacked uint64
/// counts, appended to the open list row.
fn buckets(mut r: Reader<'_>, offset: &mut i32, counts: &mut Vec<u64>) -> R<()> {
    while r.has_more() {
        let k = r.key()?;
        match k {
            k if k == key(1, VARINT) => *offset = zigzag32(r.varint()?),
            k if k == key(2, LEN) => {
                let mut p = r.message().at("bucket_counts")?;
                while p.has_more() {
                    counts.push(p.varint().at("bucket_counts")?);
                }
            }
            k if k == key(2, VARINT) => counts.push(r.varint()?),
            _ => r.skip(k, |f| {
                Some(match f {
                    1 => ("offset", VARINT),
                    2 => ("bucket_counts", LEN),
                    _ => return None,
                })
            })?,
        }
    }
    Ok(())
}

fn value_at_quantile(mut r: Reader<'_>) -> R<(f64, f64)> {
    let (mut q, mut v) = (0f64, 0f64);
    while r.has_more() {
        let k = r.key()?;
        match k {
            k if k == key(1, I64) => q = r.f64()?,
            k if k == key(2, I64) => v = r.f64()?,
            _ => r.skip(k, |f| {
                Some(match f {
                    1 => ("quantile", I64),
                    2 => ("value", I64),
                    _ => return None,
                })
            })?,
        }
    }
    Ok((q, v))
}
