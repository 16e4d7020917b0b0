//! The scrape: every family of the [`Store`] as Prometheus text format 0.0.4 or OpenMetrics
//! 1.0.0, byte for byte what client_golang's `expfmt` writes for the Collector
//! (`text_create.go` `MetricFamilyToText`, `openmetrics_create.go` `MetricFamilyToOpenMetrics`).
//!
//! Vectorized: a gauge or counter family is written in blocks of rows, three passes per block
//! over its columns:
//! 1. the value column is formatted into fixed-size slots (one tight loop, no other work; the
//!    slots of a block stay in cache);
//! 2. the output size is summed from the label text length and the slot lengths, and buffer
//!    space reserved once;
//! 3. each line is the row's pre-rendered `name{labels} ` text, its value slot and `\n`,
//!    copied back to back (rows removed since the last compaction are skipped).
//!
//! The output is a list of ~1 MiB chunks ([`Chunks`]), not one buffer: memory the allocator
//! reuses from scrape to scrape, streamed to the scraper as it is.
//!
//! Histograms and summaries write several lines per row from the same pre-rendered label
//! text, with the `le` / `quantile` label text pre-rendered once per bucket layout.

use super::gofmt::{self, SLOT};
use super::labels::escape_help;
use super::store::{Exemplar, Family, FamilyType, Layout, RowValues, Store};

/// An exposition format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0` (or 0.0.1: the same text)
    OpenMetrics,
}

/// The exposition as a list of byte chunks of about [`Chunks::TARGET`] bytes: a scrape of a
/// million series is hundreds of megabytes, and one buffer that size would be fresh memory
/// (page faults, zeroing) on every scrape and a peak as large; chunks this size are reused
/// by the allocator from scrape to scrape and stream out one by one.
///
/// The exporter does not keep chunks between scrapes: holding a scrape's worth of memory (about
/// as much again as the series state) would cost more than the allocator's page faults save.
/// Benchmarks hand used chunks back ([`Chunks::reusing`]) to time the encoder alone.
#[derive(Default)]
pub struct Chunks {
    done: Vec<Vec<u8>>,
    cur: Vec<u8>,
    spare: Vec<Vec<u8>>,
}

impl Chunks {
    pub const TARGET: usize = 1 << 20;

    /// Chunks that write into `spare` buffers (cleared) before allocating new ones.
    pub fn reusing(mut spare: Vec<Vec<u8>>) -> Self {
        spare.iter_mut().for_each(Vec::clear);
        Chunks {
            done: Vec::new(),
            cur: spare.pop().unwrap_or_default(),
            spare,
        }
    }

    /// A buffer with room for about `size` more bytes.
    #[inline]
    fn block(&mut self, size: usize) -> &mut Vec<u8> {
        if !self.cur.is_empty() && self.cur.len() + size > Self::TARGET {
            let next = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(Self::TARGET.max(size)));
            self.done.push(std::mem::replace(&mut self.cur, next));
        }
        self.cur.reserve(size);
        &mut self.cur
    }

    pub fn into_vec(mut self) -> Vec<Vec<u8>> {
        if !self.cur.is_empty() {
            self.done.push(self.cur);
        }
        self.done
    }

    pub fn len(&self) -> usize {
        self.done.iter().map(Vec::len).sum::<usize>() + self.cur.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of a gauge or counter family written per block (one size computation and one
/// buffer request per block).
const BLOCK_ROWS: usize = 4096;

/// Scratch columns reused from scrape to scrape.
#[derive(Default)]
pub struct Encoder {
    values: Vec<[u8; SLOT]>,
    value_len: Vec<u8>,
    stamps: Vec<[u8; SLOT]>,
    stamp_len: Vec<u8>,
}

impl Encoder {
    /// Writes every family of `store` (prepared by [`Store::prepare_scrape`]) to `out`.
    pub fn encode(
        &mut self,
        store: &Store,
        format: Format,
        send_timestamps: bool,
        out: &mut Chunks,
    ) {
        for &fid in store.by_name.values() {
            let fam = store.family(fid);
            if fam.live_rows() == 0 {
                continue;
            }
            header(
                fam,
                format,
                out.block(2 * fam.name.len() + fam.help.len() + 32),
            );
            let stamps = send_timestamps && !fam.is_target_info;
            match store.values(fid) {
                RowValues::Number { value, exemplar } => {
                    self.number_family(fam, value, exemplar, format, stamps, out)
                }
                RowValues::Histogram {
                    count,
                    sum,
                    layout,
                    at,
                    buckets,
                    exemplars,
                } => {
                    let h = Hist {
                        count,
                        sum,
                        layout,
                        at,
                        buckets,
                        exemplars,
                        layouts: &store.layouts,
                    };
                    self.stamps(&fam.rows.time, format, stamps);
                    histogram_family(fam, &h, format, self.stamp_col(stamps), out)
                }
                RowValues::Summary {
                    count,
                    sum,
                    at,
                    len,
                    quantiles,
                } => {
                    self.stamps(&fam.rows.time, format, stamps);
                    let s = (count, sum, at, len, quantiles);
                    summary_family(fam, s, format, self.stamp_col(stamps), out)
                }
            }
        }
        if format == Format::OpenMetrics {
            out.block(6).extend_from_slice(b"# EOF\n");
        }
    }

    /// Formats a timestamp column (`send_timestamps`): milliseconds in the text format,
    /// seconds as a float in OpenMetrics.
    fn stamps(&mut self, times: &[u64], format: Format, on: bool) {
        if !on {
            return;
        }
        let n = times.len();
        self.stamps.resize(n, [0; SLOT]);
        self.stamp_len.resize(n, 0);
        for ((slot, len), &t) in self
            .stamps
            .iter_mut()
            .zip(self.stamp_len.iter_mut())
            .zip(times)
        {
            let ms = gofmt::unix_millis(t);
            *len = match format {
                Format::Text => {
                    let mut b = itoa::Buffer::new();
                    let s = b.format(ms).as_bytes();
                    slot[..s.len()].copy_from_slice(s);
                    s.len() as u8
                }
                Format::OpenMetrics => gofmt::om_float(ms as f64 / 1000.0, slot) as u8,
            };
        }
    }

    fn stamp_col(&self, on: bool) -> Option<(&[[u8; SLOT]], &[u8])> {
        on.then_some((&self.stamps[..], &self.stamp_len[..]))
    }

    fn number_family(
        &mut self,
        fam: &Family,
        value: &[f64],
        exemplar: &[Option<Box<Exemplar>>],
        format: Format,
        stamps: bool,
        out: &mut Chunks,
    ) {
        let n = value.len();
        let fmt = match format {
            Format::Text => gofmt::go_g,
            Format::OpenMetrics => gofmt::om_float,
        };
        self.values.resize(BLOCK_ROWS, [0; SLOT]);
        self.value_len.resize(BLOCK_ROWS, 0);
        let text = &fam.rows.text;
        let ends = &fam.rows.text_end;
        let live = &fam.rows.live;
        let exemplars = format == Format::OpenMetrics && fam.ty == FamilyType::Counter;
        for first in (0..n).step_by(BLOCK_ROWS) {
            let rows = first..(first + BLOCK_ROWS).min(n);
            let k = rows.len();
            // Pass 1: the block's values (and timestamps), column by column, into slots.
            for ((slot, len), &v) in self
                .values
                .iter_mut()
                .zip(self.value_len.iter_mut())
                .zip(&value[rows.clone()])
            {
                *len = fmt(v, slot) as u8;
            }
            self.stamps(&fam.rows.time[rows.clone()], format, stamps);
            // Pass 2: the block's size (dead rows included: a reservation, not a length).
            let mut size = ends[rows.end - 1] as usize - fam.rows.text_start(first) + k;
            size += self.value_len[..k]
                .iter()
                .map(|&l| l as usize)
                .sum::<usize>();
            if stamps {
                size += k + self.stamp_len[..k]
                    .iter()
                    .map(|&l| l as usize)
                    .sum::<usize>();
            }
            let out = out.block(size);
            // Pass 3: the lines, label text and value slot back to back.
            let mut start = fam.rows.text_start(first);
            for (j, i) in rows.enumerate() {
                let end = ends[i] as usize;
                if !live[i] {
                    start = end;
                    continue;
                }
                out.extend_from_slice(&text[start..end]);
                start = end;
                out.extend_from_slice(&self.values[j][..self.value_len[j] as usize]);
                if stamps {
                    out.push(b' ');
                    out.extend_from_slice(&self.stamps[j][..self.stamp_len[j] as usize]);
                }
                if exemplars && let Some(e) = &exemplar[i] {
                    write_exemplar(e, out);
                }
                out.push(b'\n');
            }
        }
    }
}

/// `# HELP` and `# TYPE` lines.
fn header(fam: &Family, format: Format, out: &mut Vec<u8>) {
    let name: &str = &fam.name;
    match format {
        Format::Text => {
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            escape_help(&fam.help, false, out);
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(match fam.ty {
                FamilyType::Counter => b" counter\n",
                FamilyType::Gauge => b" gauge\n",
                FamilyType::Untyped => b" untyped\n",
                FamilyType::Histogram => b" histogram\n",
                FamilyType::Summary => b" summary\n",
            });
        }
        Format::OpenMetrics => {
            // Counters are named without `_total` in HELP and TYPE; a counter without the
            // suffix is typed `unknown` to stay valid OpenMetrics.
            let (short, ty): (&str, &[u8]) = match fam.ty {
                FamilyType::Counter => match name.strip_suffix("_total") {
                    Some(s) => (s, b" counter\n"),
                    None => (name, b" unknown\n"),
                },
                FamilyType::Gauge => (name, b" gauge\n"),
                FamilyType::Untyped => (name, b" unknown\n"),
                FamilyType::Histogram => (name, b" histogram\n"),
                FamilyType::Summary => (name, b" summary\n"),
            };
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(short.as_bytes());
            out.push(b' ');
            escape_help(&fam.help, true, out);
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(short.as_bytes());
            out.extend_from_slice(ty);
        }
    }
}

/// ` # {trace_id="...",span_id="..."} value timestamp` (`writeExemplar`). An exemplar with
/// neither id gets `{}`: expfmt would write nothing there, which OpenMetrics parsers refuse.
fn write_exemplar(e: &Exemplar, out: &mut Vec<u8>) {
    out.extend_from_slice(b" # {");
    let mut first = true;
    if let Some(t) = &e.trace_id {
        out.extend_from_slice(b"trace_id=\"");
        out.extend_from_slice(hex::encode(t).as_bytes());
        out.push(b'"');
        first = false;
    }
    if let Some(s) = &e.span_id {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"span_id=\"");
        out.extend_from_slice(hex::encode(s).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"} ");
    gofmt::push_om_float(out, e.value);
    out.push(b' ');
    gofmt::push_om_float(out, e.time as i64 as f64 / 1e9);
}

/// One sample line: `name<suffix>{<labels>[,<extra>]} <value>[ <ts>]` (no braces when there
/// are no labels at all).
#[inline]
fn line_start(name: &str, suffix: &[u8], body: &[u8], extra: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix);
    match (body.is_empty(), extra) {
        (true, None) => {}
        (true, Some(x)) => {
            out.push(b'{');
            out.extend_from_slice(x);
            out.push(b'}');
        }
        (false, None) => {
            out.push(b'{');
            out.extend_from_slice(body);
            out.push(b'}');
        }
        (false, Some(x)) => {
            out.push(b'{');
            out.extend_from_slice(body);
            out.push(b',');
            out.extend_from_slice(x);
            out.push(b'}');
        }
    }
    out.push(b' ');
}

#[inline]
fn line_end(stamp: Option<&[u8]>, out: &mut Vec<u8>) {
    if let Some(s) = stamp {
        out.push(b' ');
        out.extend_from_slice(s);
    }
    out.push(b'\n');
}

/// A count: a float in the text format (`float64(count)`), an integer in OpenMetrics.
#[inline]
fn push_count(c: u64, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text => gofmt::push_go_g(out, c as f64),
        Format::OpenMetrics => out.extend_from_slice(itoa::Buffer::new().format(c).as_bytes()),
    }
}

#[inline]
fn push_float(v: f64, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text => gofmt::push_go_g(out, v),
        Format::OpenMetrics => gofmt::push_om_float(out, v),
    }
}

struct Hist<'a> {
    count: &'a [u64],
    sum: &'a [f64],
    layout: &'a [u32],
    at: &'a [u32],
    buckets: &'a [u64],
    exemplars: &'a [Option<Box<[Exemplar]>>],
    layouts: &'a [Layout],
}

const LE_INF: &[u8] = b"le=\"+Inf\"";

fn histogram_family(
    fam: &Family,
    h: &Hist<'_>,
    format: Format,
    stamps: Option<(&[[u8; SLOT]], &[u8])>,
    chunks: &mut Chunks,
) {
    let name: &str = &fam.name;
    let om = format == Format::OpenMetrics;
    let mut bucket_exemplar: Vec<Option<&Exemplar>> = Vec::new();
    for row in (0..fam.rows.len()).filter(|&r| fam.rows.live[r]) {
        let body = fam.rows.text_of(row);
        let layout = &h.layouts[h.layout[row] as usize];
        let out = chunks.block((name.len() + body.len() + 64) * (layout.order.len() + 3));
        let stamp = stamps.map(|(s, l)| &s[row][..l[row] as usize]);
        let counts = &h.buckets[h.at[row] as usize..h.at[row] as usize + layout.raw.len()];
        // withExemplarsMetric: each exemplar goes to the first bucket whose upper bound is
        // >= its value, else to +Inf; a later one replaces an earlier one.
        let n_buckets = layout.order.len();
        bucket_exemplar.clear();
        bucket_exemplar.resize(n_buckets + 1, None);
        if om && let Some(ex) = &h.exemplars[row] {
            for e in ex.iter() {
                let i = layout
                    .order
                    .iter()
                    .position(|&o| layout.raw[o as usize] >= e.value)
                    .unwrap_or(n_buckets);
                bucket_exemplar[i] = Some(e);
            }
        }
        let les = if om { &layout.le_om } else { &layout.le_text };
        let mut cum = 0u64;
        for (j, &orig) in layout.order.iter().enumerate() {
            cum = cum.wrapping_add(counts[orig as usize]);
            line_start(name, b"_bucket", body, Some(&les[j]), out);
            push_count(cum, format, out);
            if let Some(s) = stamp {
                out.push(b' ');
                out.extend_from_slice(s);
            }
            if let Some(e) = bucket_exemplar[j] {
                write_exemplar(e, out);
            }
            out.push(b'\n');
        }
        if !layout.has_inf {
            line_start(name, b"_bucket", body, Some(LE_INF), out);
            push_count(h.count[row], format, out);
            if let Some(s) = stamp {
                out.push(b' ');
                out.extend_from_slice(s);
            }
            if let Some(e) = bucket_exemplar[n_buckets] {
                write_exemplar(e, out);
            }
            out.push(b'\n');
        }
        line_start(name, b"_sum", body, None, out);
        push_float(h.sum[row], format, out);
        line_end(stamp, out);
        line_start(name, b"_count", body, None, out);
        push_count(h.count[row], format, out);
        line_end(stamp, out);
    }
}

type SummaryCols<'a> = (&'a [u64], &'a [f64], &'a [u32], &'a [u32], &'a [(f64, f64)]);

fn summary_family(
    fam: &Family,
    (count, sum, at, len, quantiles): SummaryCols<'_>,
    format: Format,
    stamps: Option<(&[[u8; SLOT]], &[u8])>,
    chunks: &mut Chunks,
) {
    let name: &str = &fam.name;
    let mut q_label = Vec::with_capacity(32);
    for row in (0..fam.rows.len()).filter(|&r| fam.rows.live[r]) {
        let body = fam.rows.text_of(row);
        let out = chunks.block((name.len() + body.len() + 64) * (len[row] as usize + 2));
        let stamp = stamps.map(|(s, l)| &s[row][..l[row] as usize]);
        let a = at[row] as usize;
        for &(q, v) in &quantiles[a..a + len[row] as usize] {
            q_label.clear();
            q_label.extend_from_slice(b"quantile=\"");
            push_float(q, format, &mut q_label);
            q_label.push(b'"');
            line_start(name, b"", body, Some(&q_label), out);
            push_float(v, format, out);
            line_end(stamp, out);
        }
        line_start(name, b"_sum", body, None, out);
        push_float(sum[row], format, out);
        line_end(stamp, out);
        line_start(name, b"_count", body, None, out);
        push_count(count[row], format, out);
        line_end(stamp, out);
    }
}
