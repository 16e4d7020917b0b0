//! `--report out.html`: one self-contained page (inline CSS and SVG, no script, nothing
//! fetched), charts drawn by plotters' SVG backend: kept vs dropped traces over data time,
//! decisions per sampling policy, the top span-metric dimension values; and the report's
//! tables. With `--compare`, each chart once per run, side by side.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::report::{FullReport, Report};

const W: u32 = 560;
const H: u32 = 300;
const KEPT: RGBColor = RGBColor(46, 125, 50);
const DROPPED: RGBColor = RGBColor(198, 40, 40);
const INPUT: RGBColor = RGBColor(21, 101, 192);

pub fn render(full: &FullReport) -> String {
    let mut h = String::with_capacity(64 << 10);
    h.push_str(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sluice replay report</title><style>\
         body{font-family:sans-serif;margin:24px;color:#222;background:#fff}\
         h1{font-size:22px}h2{font-size:18px;margin-top:28px}\
         table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
         td:first-child,th:first-child{text-align:left}.runs{display:grid;gap:16px;grid-template-columns:repeat(auto-fit,minmax(560px,1fr))}\
         .run{min-width:0}.chart{border:1px solid #eee;margin:6px 0}.note{color:#666;font-size:13px}\
         </style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>sluice replay</h1><p class=\"note\">schema version {}; {} run(s)</p>",
        full.schema_version,
        full.runs.len()
    );
    if !full.differences.is_empty() {
        h.push_str("<h2>Differences (base → compare)</h2><table><tr><th>figure</th><th>base</th><th>compare</th><th>change</th></tr>");
        for d in full.differences.iter().filter(|d| d.base != d.other) {
            let show = |v: f64| {
                if d.unit == "ratio" {
                    format!("{:.1} %", v * 100.0)
                } else {
                    format!("{v}")
                }
            };
            let change = match d.change {
                Some(c) if d.unit != "ratio" => format!("{:+.0} %", c * 100.0),
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{change}</td></tr>",
                esc(&d.what),
                show(d.base),
                show(d.other)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<div class=\"runs\">");
    for (i, r) in full.runs.iter().enumerate() {
        let label = match (full.runs.len(), i) {
            (1, _) => String::new(),
            (_, 0) => "base: ".into(),
            _ => "compare: ".into(),
        };
        run_section(&mut h, &label, r);
    }
    h.push_str("</div></body></html>\n");
    h
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn run_section(h: &mut String, label: &str, r: &Report) {
    let i = &r.info;
    let _ = write!(
        h,
        "<div class=\"run\"><h2>{}{}</h2><p class=\"note\">{} record(s) from {}; {:.1} s of data time replayed in {:.2} s{}{}</p>",
        esc(label),
        esc(&i.configs.join(" + ")),
        i.records,
        esc(&i.captures.join(", ")),
        i.data_end_unix_nano.saturating_sub(i.data_start_unix_nano) as f64 / 1e9,
        i.wall_seconds,
        if i.dry_run { ", dry run" } else { "" },
        if i.interrupted {
            " — INTERRUPTED: partial report"
        } else {
            ""
        }
    );
    h.push_str(&timeline_chart(r));
    h.push_str(&policy_chart(r));
    h.push_str(&dimension_chart(r));
    h.push_str("<table><tr><th>component</th><th>in</th><th>out</th><th>dropped</th></tr>");
    let _ = write!(
        h,
        "<tr><td>capture (receivers)</td><td>{}</td><td></td><td>{}</td></tr>",
        r.input.spans + r.input.metric_points + r.input.log_records,
        r.refused.spans + r.refused.metric_points + r.refused.log_records
    );
    for p in &r.processors {
        let tot = |c: &super::report::SignalCounts| c.spans + c.metric_points + c.log_records;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.id),
            tot(&p.incoming),
            tot(&p.outgoing),
            esc(&p
                .dropped
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    h.push_str(
        "</table><table><tr><th>exporter</th><th>items sent</th><th>bytes</th><th>failed</th></tr>",
    );
    for e in &r.exporters {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.id),
            e.sent.spans + e.sent.metric_points + e.sent.log_records,
            e.bytes,
            esc(&e
                .failed
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    h.push_str("</table>");
    let w = &r.watched_traces;
    let _ = write!(
        h,
        "<p>Error traces kept {} of {}; slow traces (a span ≥ {} ms) kept {} of {}.</p>",
        w.error_traces_kept,
        w.error_traces_seen,
        i.slow_threshold_ms,
        w.slow_traces_kept,
        w.slow_traces_seen
    );
    for p in &r.prometheus {
        let _ = write!(
            h,
            "<p>{}: {} series ({} span-metric) and {} bytes per scrape.</p>",
            esc(&p.id),
            p.series,
            p.span_metric_series,
            p.bytes_per_scrape
        );
    }
    h.push_str("</div>");
}

/// An SVG chart drawn by `draw`, or a note saying why there is none.
fn svg(
    title: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, (W, H)).into_drawing_area();
        let r = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root));
        r.and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => format!("<div class=\"chart\" title=\"{}\">{buf}</div>", esc(title)),
        Err(e) => format!(
            "<p class=\"note\">{}: not drawn ({})</p>",
            esc(title),
            esc(&e)
        ),
    }
}

/// How many bars the timeline chart has at most: steps are summed into bins.
const TIMELINE_BINS: usize = 120;

fn timeline_chart(r: &Report) -> String {
    let rows = &r.timeline.rows;
    if rows.is_empty() {
        return "<p class=\"note\">No timeline (nothing replayed).</p>".into();
    }
    let has_traces = rows.iter().any(|x| x.traces_new > 0);
    let step = r.timeline.step_seconds.max(1e-9);
    let x_max = rows.last().map_or(step, |x| x.t).max(step);
    let bins = ((x_max / step).ceil() as usize).clamp(1, TIMELINE_BINS);
    let width = x_max / bins as f64;
    // Per-bin sums of the per-step deltas of the cumulative rows: (green, red).
    let mut sums = vec![(0.0f64, 0.0f64); bins];
    let mut prev = (0u64, 0u64, 0u64);
    for row in rows {
        let b = (((row.t - step / 2.0).max(0.0) / width) as usize).min(bins - 1);
        let d = |now: u64, before: u64| now.saturating_sub(before) as f64;
        if has_traces {
            sums[b].0 += d(row.traces_sampled, prev.0);
            sums[b].1 += d(row.traces_not_sampled, prev.1);
        } else {
            sums[b].0 += d(row.items_in, prev.2);
        }
        prev = (row.traces_sampled, row.traces_not_sampled, row.items_in);
    }
    let (title, legend, y_desc) = if has_traces {
        (
            "traces kept vs dropped over data time",
            ("kept", "dropped"),
            format!("traces per {width:.0} s"),
        )
    } else {
        (
            "items in over data time",
            ("items in", ""),
            format!("items per {width:.0} s"),
        )
    };
    svg(title, |root| {
        let y_max = sums.iter().map(|(a, b)| a + b).fold(1.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(34)
            .y_label_area_size(54)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("data time (s)")
            .y_desc(y_desc.as_str())
            .draw()
            .map_err(|e| e.to_string())?;
        let bar = |i: usize, lo: f64, hi: f64, color: RGBColor| {
            let x0 = i as f64 * width;
            Rectangle::new(
                [(x0 + width * 0.1, lo), (x0 + width * 0.9, hi)],
                color.filled(),
            )
        };
        chart
            .draw_series(
                sums.iter()
                    .enumerate()
                    .filter(|(_, (a, _))| *a > 0.0)
                    .map(|(i, (a, _))| bar(i, 0.0, *a, if has_traces { KEPT } else { INPUT })),
            )
            .map_err(|e| e.to_string())?
            .label(legend.0)
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 12, y + 5)],
                    (if has_traces { KEPT } else { INPUT }).filled(),
                )
            });
        if has_traces {
            chart
                .draw_series(
                    sums.iter()
                        .enumerate()
                        .filter(|(_, (_, b))| *b > 0.0)
                        .map(|(i, (a, b))| bar(i, *a, a + b, DROPPED)),
                )
                .map_err(|e| e.to_string())?
                .label(legend.1)
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], DROPPED.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Horizontal bars: one row per label, two values (green, red) per row.
fn bars(title: &str, rows: &[(String, f64, f64)], legend: (&str, &str)) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let x_max = rows.iter().map(|r| r.1 + r.2).fold(1.0f64, f64::max) * 1.15;
    let n = rows.len();
    svg(title, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..x_max, 0f64..n as f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (_, a, b)) in rows.iter().enumerate() {
            let y0 = (n - 1 - i) as f64 + 0.15;
            let y1 = y0 + 0.55;
            chart
                .draw_series([
                    Rectangle::new([(0.0, y0), (*a, y1)], KEPT.filled()),
                    Rectangle::new([(*a, y0), (a + b, y1)], DROPPED.filled()),
                ])
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (name, a, b))| {
                Text::new(
                    format!("{name}: {a} {} / {b} {}", legend.0, legend.1),
                    (x_max * 0.01, (n - 1 - i) as f64 + 0.85),
                    ("sans-serif", 13).into_font(),
                )
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn policy_chart(r: &Report) -> String {
    let mut rows = Vec::new();
    for ts in &r.tail_sampling {
        for p in &ts.policies {
            let name = if r.tail_sampling.len() > 1 {
                format!("{}/{}", ts.id, p.policy)
            } else {
                p.policy.clone()
            };
            rows.push((name, p.sampled_traces as f64, p.not_sampled_traces as f64));
        }
    }
    bars(
        "decisions per sampling policy (traces)",
        &rows,
        ("sampled", "not sampled"),
    )
}

fn dimension_chart(r: &Report) -> String {
    let mut rows = Vec::new();
    for p in &r.prometheus {
        for d in &p.top_span_metric_dimensions {
            for v in d.top.iter().take(3) {
                rows.push((format!("{}={}", d.dimension, v.value), v.calls, 0.0));
            }
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.truncate(12);
    bars(
        "top span-metric dimension values (calls)",
        &rows,
        ("calls", ""),
    )
}
