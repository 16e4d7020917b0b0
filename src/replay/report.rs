//! The replay's report: read from the self-telemetry registry the run filled (the counters a
//! live sluice serves on :8888, so the report and production dashboards never disagree), plus
//! what only a replay knows (the timeline, error/slow traces kept, the in-process scrape).
//! Printed as a table, written as JSON (schema: `report.schema.json` beside this file) or as
//! a self-contained HTML page ([`super::html`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use sluice_engine::component::{ComponentId, Kind};
use sluice_engine::config::Config;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Sample, Telemetry};

use super::ClockMode;
use super::wiring::WatchCounts;

/// Bumped on any incompatible change of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// What the driver knows about a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub configs: Vec<String>,
    pub captures: Vec<String>,
    pub clock: ClockMode,
    pub speed: Option<f64>,
    pub dry_run: bool,
    /// Ctrl-C: the report covers what was replayed until then.
    pub interrupted: bool,
    pub data_start_unix_nano: u64,
    pub data_end_unix_nano: u64,
    pub wall_seconds: f64,
    pub records: u64,
    pub capture_bytes: u64,
    pub bad_records: u64,
    pub bad_record_errors: Vec<String>,
    pub slow_threshold_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SignalCounts {
    pub spans: u64,
    pub metric_points: u64,
    pub log_records: u64,
}

impl SignalCounts {
    fn add(&mut self, s: Signal, n: u64) {
        match s {
            Signal::Traces => self.spans += n,
            Signal::Metrics => self.metric_points += n,
            Signal::Logs => self.log_records += n,
        }
    }
    fn total(&self) -> u64 {
        self.spans + self.metric_points + self.log_records
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub id: String,
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComponentReport {
    pub id: String,
    pub kind: String,
    pub incoming: SignalCounts,
    pub outgoing: SignalCounts,
    /// Items dropped, by reason (`not_sampled`, `filtered`, `export_failed`, ...).
    pub dropped: BTreeMap<String, u64>,
    pub refused: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PolicyReport {
    pub policy: String,
    pub sampled_traces: u64,
    pub not_sampled_traces: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    /// Upper bounds; `counts` has one more entry (+Inf). Not cumulative.
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TailSamplingReport {
    pub id: String,
    pub traces_new: u64,
    pub traces_sampled: u64,
    pub traces_not_sampled: u64,
    /// Of the decided traces, the share kept (0..1).
    pub kept_ratio: f64,
    pub policies: Vec<PolicyReport>,
    /// Spans of already decided traces that arrived late.
    pub late_spans_sampled: u64,
    pub late_spans_not_sampled: u64,
    pub traces_decided_early: u64,
    /// Data time from a trace's first span to its decision (seconds).
    pub decision_age_seconds: Option<Histogram>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExporterReport {
    pub id: String,
    pub sent: SignalCounts,
    pub failed: BTreeMap<String, u64>,
    pub enqueue_failed: u64,
    /// OTLP protobuf bytes handed to the exporter (uncompressed).
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DimensionValue {
    pub value: String,
    pub calls: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Dimension {
    pub dimension: String,
    pub top: Vec<DimensionValue>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpanMetricsReport {
    pub id: String,
    pub spans_counted: u64,
    pub flushes_refused: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PrometheusScrape {
    pub id: String,
    /// Series (lines with a value, not comments) in the final scrape.
    pub series: u64,
    pub bytes_per_scrape: u64,
    /// Span-metric series (`*calls*` of the spanmetrics connector) in the scrape.
    pub span_metric_series: u64,
    /// The span-metric label values with the most calls, per label.
    pub top_span_metric_dimensions: Vec<Dimension>,
}

impl PrometheusScrape {
    /// Reads a scrape body: counts series and bytes, and ranks span-metric label values by
    /// calls.
    pub fn of(id: &ComponentId, body: &[u8]) -> PrometheusScrape {
        let text = String::from_utf8_lossy(body);
        let mut series = 0u64;
        let mut span_series = 0u64;
        let mut by_label: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            series += 1;
            let (name, rest) = match line.find('{') {
                Some(i) => (&line[..i], &line[i..]),
                None => (line.split(' ').next().unwrap_or(line), ""),
            };
            if !(name.contains("span_metrics_calls") || name.ends_with("calls_total")) {
                continue;
            }
            span_series += 1;
            let Some(close) = rest.rfind('}') else {
                continue;
            };
            let value: f64 = rest[close + 1..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            for (k, v) in parse_labels(&rest[1..close]) {
                if matches!(k.as_str(), "job" | "instance" | "otel_scope_name") {
                    continue;
                }
                *by_label.entry(k).or_default().entry(v).or_default() += value;
            }
        }
        let top_span_metric_dimensions = by_label
            .into_iter()
            .map(|(dimension, values)| {
                let mut top: Vec<DimensionValue> = values
                    .into_iter()
                    .map(|(value, calls)| DimensionValue { value, calls })
                    .collect();
                top.sort_by(|a, b| b.calls.total_cmp(&a.calls).then(a.value.cmp(&b.value)));
                top.truncate(10);
                Dimension { dimension, top }
            })
            .collect();
        PrometheusScrape {
            id: id.to_string(),
            series,
            bytes_per_scrape: body.len() as u64,
            span_metric_series: span_series,
            top_span_metric_dimensions,
        }
    }
}

/// `a="x",b="y\"z"` -> pairs (Prometheus label escapes undone).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(x) => value.push(x),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_string(), value));
        if chars.next() != Some(',') {
            return out;
        }
    }
}

/// Cumulative counts at the end of each step of data time in which something changed: a row
/// with `t` covers `[t - step, t)` seconds after the data's start; steps without change have
/// no row.
#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    pub step_seconds: f64,
    pub rows: Vec<TimelineRow>,
    #[serde(skip)]
    start: u64,
    #[serde(skip)]
    step: u64,
    #[serde(skip)]
    now: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineRow {
    pub t: f64,
    pub items_in: u64,
    pub traces_new: u64,
    pub traces_sampled: u64,
    pub traces_not_sampled: u64,
    pub spans_out: u64,
    pub metric_points_out: u64,
    pub log_records_out: u64,
}

impl Timeline {
    pub fn new(start: u64, step: Duration) -> Self {
        Timeline {
            step_seconds: step.as_secs_f64(),
            rows: Vec::new(),
            start,
            step: (step.as_nanos() as u64).max(1),
            now: start,
        }
    }

    /// Called before the clock moves to `t`: records a row for the step that ends when the
    /// clock leaves it.
    pub fn before_advance(&mut self, t: u64, telemetry: &Telemetry) {
        let step_of = |x: u64| x.saturating_sub(self.start) / self.step;
        if t <= self.now || step_of(t) == step_of(self.now) {
            self.now = self.now.max(t);
            return;
        }
        self.record(telemetry);
        self.now = t;
    }

    /// The last row: what changed in the step the replay ended in.
    pub fn finish(&mut self, telemetry: &Telemetry) {
        self.record(telemetry);
    }

    /// A row for the step the clock is in now, if anything changed since the last row.
    fn record(&mut self, telemetry: &Telemetry) {
        let step_of = |x: u64| x.saturating_sub(self.start) / self.step;
        let end = (step_of(self.now) + 1) * self.step;
        let snap = telemetry.snapshot();
        let row = TimelineRow {
            t: end as f64 / 1e9,
            items_in: sum_prefix(&snap, "otelcol_receiver_accepted_", &[]),
            traces_new: sum(
                &snap,
                "otelcol_processor_tail_sampling_new_trace_id_received",
                &[],
            ),
            traces_sampled: sum(
                &snap,
                "otelcol_processor_tail_sampling_global_count_traces_sampled",
                &[("sampled", "true")],
            ),
            traces_not_sampled: sum(
                &snap,
                "otelcol_processor_tail_sampling_global_count_traces_sampled",
                &[("sampled", "false")],
            ),
            spans_out: sum(&snap, "otelcol_exporter_sent_spans", &[]),
            metric_points_out: sum(&snap, "otelcol_exporter_sent_metric_points", &[]),
            log_records_out: sum(&snap, "otelcol_exporter_sent_log_records", &[]),
        };
        let changed = self.rows.last().is_none_or(|last| {
            let mut l = last.clone();
            l.t = row.t;
            l != row
        });
        if changed {
            self.rows.push(row);
        }
    }
}

fn matches(s: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| s.label(k) == Some(*v))
}

fn sum(snap: &[Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
    snap.iter()
        .filter(|s| s.name == name && matches(s, labels))
        .map(|s| s.value as u64)
        .sum()
}

fn sum_prefix(snap: &[Sample], prefix: &str, labels: &[(&str, &str)]) -> u64 {
    snap.iter()
        .filter(|s| s.name.starts_with(prefix) && matches(s, labels))
        .map(|s| s.value as u64)
        .sum()
}

fn signal_of_noun(noun: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| s.item_noun() == noun)
}

/// One config's replay.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub info: RunInfo,
    pub input: SignalCounts,
    pub refused: SignalCounts,
    pub pipelines: Vec<PipelineReport>,
    pub processors: Vec<ComponentReport>,
    pub tail_sampling: Vec<TailSamplingReport>,
    pub spanmetrics: Vec<SpanMetricsReport>,
    pub exporters: Vec<ExporterReport>,
    pub prometheus: Vec<PrometheusScrape>,
    pub watched_traces: WatchCounts,
    pub timeline: Timeline,
}

impl Report {
    pub fn build(
        info: RunInfo,
        telemetry: &Telemetry,
        watched_traces: WatchCounts,
        prometheus: Vec<PrometheusScrape>,
        timeline: Timeline,
        config: &Config,
    ) -> Report {
        let snap = telemetry.snapshot();
        let mut input = SignalCounts::default();
        let mut refused = SignalCounts::default();
        let mut processors: BTreeMap<String, ComponentReport> = BTreeMap::new();
        let mut exporters: BTreeMap<String, ExporterReport> = BTreeMap::new();
        let mut spanmetrics: BTreeMap<String, SpanMetricsReport> = BTreeMap::new();
        let processor = |m: &mut BTreeMap<String, ComponentReport>, id: &str| {
            m.entry(id.to_string())
                .or_insert_with(|| ComponentReport {
                    id: id.to_string(),
                    kind: "processor".into(),
                    incoming: SignalCounts::default(),
                    outgoing: SignalCounts::default(),
                    dropped: BTreeMap::new(),
                    refused: 0,
                })
                .clone()
        };
        for s in &snap {
            let v = s.value as u64;
            let name = s.name;
            if let Some(noun) = name.strip_prefix("otelcol_receiver_accepted_") {
                if let Some(sig) = signal_of_noun(noun) {
                    input.add(sig, v);
                }
            } else if let Some(noun) = name.strip_prefix("otelcol_receiver_refused_") {
                if let Some(sig) = signal_of_noun(noun) {
                    refused.add(sig, v);
                }
            } else if let Some(id) = s.label("processor") {
                let mut c = processor(&mut processors, id);
                let sig = s
                    .label("otel_signal")
                    .and_then(|x| Signal::ALL.into_iter().find(|s| s.as_str() == x));
                match (name, sig) {
                    ("otelcol_processor_incoming_items", Some(sig)) => c.incoming.add(sig, v),
                    ("otelcol_processor_outgoing_items", Some(sig)) => c.outgoing.add(sig, v),
                    _ if name.starts_with("otelcol_processor_dropped_") && v > 0 => {
                        *c.dropped
                            .entry(s.label("reason").unwrap_or("unknown").to_string())
                            .or_default() += v;
                    }
                    _ if name.starts_with("otelcol_processor_refused_") => c.refused += v,
                    _ => {}
                }
                processors.insert(id.to_string(), c);
            } else if s.label("filter").is_some() {
                // `otelcol_processor_filter_*_filtered`: the same items as the filter's
                // `otelcol_processor_dropped_*{reason="filtered"}`, counted above.
            } else if let Some(id) = s.label("exporter") {
                let e = exporters
                    .entry(id.to_string())
                    .or_insert_with(|| ExporterReport {
                        id: id.to_string(),
                        sent: SignalCounts::default(),
                        failed: BTreeMap::new(),
                        enqueue_failed: 0,
                        bytes: 0,
                    });
                if let Some(noun) = name.strip_prefix("otelcol_exporter_sent_") {
                    if let Some(sig) = signal_of_noun(noun) {
                        e.sent.add(sig, v);
                    }
                } else if name.starts_with("otelcol_exporter_send_failed_") && v > 0 {
                    *e.failed
                        .entry(s.label("error_type").unwrap_or("unknown").to_string())
                        .or_default() += v;
                } else if name.starts_with("otelcol_exporter_enqueue_failed_") {
                    e.enqueue_failed += v;
                } else if name == "otelcol_exporter_dropped_metric_points" && v > 0 {
                    *e.failed
                        .entry(format!(
                            "not_exposed_{}",
                            s.label("reason").unwrap_or("unknown")
                        ))
                        .or_default() += v;
                } else if name == "sluice_replay_exporter_bytes" {
                    e.bytes += v;
                }
            } else if let Some(id) = s.label("connector") {
                let c = spanmetrics
                    .entry(id.to_string())
                    .or_insert_with(|| SpanMetricsReport {
                        id: id.to_string(),
                        spans_counted: 0,
                        flushes_refused: 0,
                    });
                match name {
                    "otelcol_connector_spanmetrics_spans_counted" => c.spans_counted += v,
                    "otelcol_connector_spanmetrics_flush_failed" => c.flushes_refused += v,
                    _ => {}
                }
            }
        }
        // Tail sampling, per processor id.
        let ts_ids: Vec<String> = config
            .components
            .keys()
            .filter(|(k, id)| *k == Kind::Processor && id.type_name == "tail_sampling")
            .map(|(_, id)| id.to_string())
            .collect();
        let tail_sampling = ts_ids
            .into_iter()
            .map(|id| {
                let p = [("processor", id.as_str())];
                let with = |extra: (&'static str, &'static str)| [p[0], extra];
                let traces_sampled = sum(
                    &snap,
                    "otelcol_processor_tail_sampling_global_count_traces_sampled",
                    &with(("sampled", "true")),
                );
                let traces_not_sampled = sum(
                    &snap,
                    "otelcol_processor_tail_sampling_global_count_traces_sampled",
                    &with(("sampled", "false")),
                );
                let mut policies: BTreeMap<String, PolicyReport> = BTreeMap::new();
                for s in snap.iter().filter(|s| {
                    s.name == "otelcol_processor_tail_sampling_count_traces_sampled"
                        && matches(s, &p)
                }) {
                    let name = s.label("policy").unwrap_or("").to_string();
                    let e = policies.entry(name.clone()).or_insert(PolicyReport {
                        policy: name,
                        sampled_traces: 0,
                        not_sampled_traces: 0,
                    });
                    if s.label("sampled") == Some("true") {
                        e.sampled_traces += s.value as u64;
                    } else {
                        e.not_sampled_traces += s.value as u64;
                    }
                }
                let decided = traces_sampled + traces_not_sampled;
                TailSamplingReport {
                    traces_new: sum(
                        &snap,
                        "otelcol_processor_tail_sampling_new_trace_id_received",
                        &p,
                    ),
                    traces_sampled,
                    traces_not_sampled,
                    kept_ratio: if decided == 0 {
                        0.0
                    } else {
                        traces_sampled as f64 / decided as f64
                    },
                    policies: policies.into_values().collect(),
                    late_spans_sampled: sum(
                        &snap,
                        "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
                        &with(("sampled", "true")),
                    ),
                    late_spans_not_sampled: sum(
                        &snap,
                        "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
                        &with(("sampled", "false")),
                    ),
                    traces_decided_early: sum(
                        &snap,
                        "otelcol_processor_tail_sampling_traces_decided_early",
                        &p,
                    ),
                    decision_age_seconds: snap
                        .iter()
                        .find(|s| {
                            s.name
                                == "otelcol_processor_tail_sampling_sampling_trace_removal_age_seconds"
                                && matches(s, &p)
                        })
                        .and_then(|s| s.histogram.as_ref())
                        .map(|h| Histogram {
                            bounds: h.bounds.clone(),
                            counts: h.counts.clone(),
                            sum: h.sum,
                        }),
                    id,
                }
            })
            .collect();
        let pipelines = config
            .pipelines
            .iter()
            .map(|(pid, p)| PipelineReport {
                id: pid.to_string(),
                receivers: p
                    .receivers
                    .iter()
                    .chain(&p.connectors_in)
                    .map(|c| c.to_string())
                    .collect(),
                processors: p.processors.iter().map(|c| c.to_string()).collect(),
                exporters: p
                    .exporters
                    .iter()
                    .chain(&p.connectors_out)
                    .map(|c| c.to_string())
                    .collect(),
            })
            .collect();
        Report {
            info,
            input,
            refused,
            pipelines,
            processors: processors.into_values().collect(),
            tail_sampling,
            spanmetrics: spanmetrics.into_values().collect(),
            exporters: exporters.into_values().collect(),
            prometheus,
            watched_traces,
            timeline,
        }
    }

    fn data_seconds(&self) -> f64 {
        self.info
            .data_end_unix_nano
            .saturating_sub(self.info.data_start_unix_nano) as f64
            / 1e9
    }
}

/// One line of the comparison: a figure of both runs.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub what: String,
    pub base: f64,
    pub other: f64,
    /// How to read the figures: `count`, `ratio` (0..1), `bytes`.
    pub unit: String,
    /// Relative change (other / base − 1); absent when the base is 0.
    pub change: Option<f64>,
}

/// Every run (one, or two with `--compare`) and their differences.
#[derive(Clone, Debug, Serialize)]
pub struct FullReport {
    pub schema_version: u32,
    pub runs: Vec<Report>,
    pub differences: Vec<Difference>,
}

/// The figures compared between two runs, by name.
fn figures(r: &Report) -> Vec<(String, f64, &'static str)> {
    let mut f = vec![
        ("items in".to_string(), r.input.total() as f64, "count"),
        (
            "items refused".to_string(),
            r.refused.total() as f64,
            "count",
        ),
    ];
    for ts in &r.tail_sampling {
        f.push((format!("{}: traces kept", ts.id), ts.kept_ratio, "ratio"));
        for p in &ts.policies {
            f.push((
                format!("{}: policy {} sampled traces", ts.id, p.policy),
                p.sampled_traces as f64,
                "count",
            ));
        }
    }
    let w = &r.watched_traces;
    let ratio = |k: u64, s: u64| if s == 0 { 0.0 } else { k as f64 / s as f64 };
    f.push((
        "error traces kept".into(),
        ratio(w.error_traces_kept, w.error_traces_seen),
        "ratio",
    ));
    f.push((
        format!("slow traces (>= {} ms) kept", r.info.slow_threshold_ms),
        ratio(w.slow_traces_kept, w.slow_traces_seen),
        "ratio",
    ));
    for p in &r.processors {
        for (reason, n) in &p.dropped {
            f.push((format!("{}: dropped ({reason})", p.id), *n as f64, "count"));
        }
    }
    for p in &r.prometheus {
        f.push((format!("{}: series", p.id), p.series as f64, "count"));
        f.push((
            format!("{}: span-metric series", p.id),
            p.span_metric_series as f64,
            "count",
        ));
        f.push((
            format!("{}: bytes per scrape", p.id),
            p.bytes_per_scrape as f64,
            "bytes",
        ));
    }
    let mut total = 0u64;
    for e in &r.exporters {
        f.push((
            format!("{}: items sent", e.id),
            e.sent.total() as f64,
            "count",
        ));
        f.push((format!("{}: bytes", e.id), e.bytes as f64, "bytes"));
        total += e.bytes;
    }
    f.push(("export bytes (all exporters)".into(), total as f64, "bytes"));
    f
}

impl FullReport {
    pub fn new(runs: Vec<Report>) -> Self {
        let mut differences = Vec::new();
        if let [base, other] = runs.as_slice() {
            let theirs = figures(other);
            for (what, b, unit) in figures(base) {
                let o = theirs
                    .iter()
                    .find(|(w, _, _)| *w == what)
                    .map_or(0.0, |x| x.1);
                differences.push(Difference {
                    change: (b != 0.0).then(|| o / b - 1.0),
                    what,
                    base: b,
                    other: o,
                    unit: unit.into(),
                });
            }
            for (what, o, unit) in theirs {
                if !differences.iter().any(|d| d.what == what) {
                    differences.push(Difference {
                        what,
                        base: 0.0,
                        other: o,
                        unit: unit.into(),
                        change: None,
                    });
                }
            }
        }
        FullReport {
            schema_version: SCHEMA_VERSION,
            runs,
            differences,
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let body = match OutputKind::of(path)? {
            OutputKind::Json => serde_json::to_vec_pretty(self)?,
            OutputKind::Html => super::html::render(self).into_bytes(),
        };
        std::fs::write(path, body)?;
        Ok(())
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.runs.iter().enumerate() {
            let label = if self.runs.len() > 1 {
                format!(" [{}] ", if i == 0 { "base" } else { "compare" })
            } else {
                " ".into()
            };
            let _ = writeln!(
                out,
                "replay{label}{}: {} record(s), {:.1} s of data time in {:.2} s ({:.0} items/s){}{}",
                r.info.configs.join(" + "),
                r.info.records,
                r.data_seconds(),
                r.info.wall_seconds,
                r.input.total() as f64 / r.info.wall_seconds.max(1e-6),
                if r.info.dry_run { ", dry run" } else { "" },
                if r.info.interrupted {
                    " (INTERRUPTED: partial)"
                } else {
                    ""
                },
            );
            let _ = writeln!(
                out,
                "  in: {} spans, {} metric points, {} log records{}",
                r.input.spans,
                r.input.metric_points,
                r.input.log_records,
                if r.refused.total() > 0 {
                    format!(" ({} refused)", r.refused.total())
                } else {
                    String::new()
                }
            );
            for p in &r.processors {
                let _ = writeln!(
                    out,
                    "  {:<28} in {:>10}  out {:>10}{}",
                    p.id,
                    p.incoming.total(),
                    p.outgoing.total(),
                    p.dropped
                        .iter()
                        .map(|(k, v)| format!("  dropped {v} ({k})"))
                        .collect::<String>()
                );
            }
            for ts in &r.tail_sampling {
                let _ = writeln!(
                    out,
                    "  {}: {} traces, kept {} ({:.1} %)",
                    ts.id,
                    ts.traces_new,
                    ts.traces_sampled,
                    ts.kept_ratio * 100.0
                );
                for p in &ts.policies {
                    let _ = writeln!(
                        out,
                        "    policy {:<24} sampled {:>8}  not sampled {:>8}",
                        p.policy, p.sampled_traces, p.not_sampled_traces
                    );
                }
            }
            let w = &r.watched_traces;
            let _ = writeln!(
                out,
                "  error traces kept {} / {}; slow (>= {} ms) kept {} / {}",
                w.error_traces_kept,
                w.error_traces_seen,
                r.info.slow_threshold_ms,
                w.slow_traces_kept,
                w.slow_traces_seen
            );
            for s in &r.spanmetrics {
                let _ = writeln!(out, "  {}: {} spans counted", s.id, s.spans_counted);
            }
            for p in &r.prometheus {
                let _ = writeln!(
                    out,
                    "  {}: {} series ({} span-metric), {} bytes per scrape",
                    p.id, p.series, p.span_metric_series, p.bytes_per_scrape
                );
            }
            for e in &r.exporters {
                let _ = writeln!(
                    out,
                    "  {:<28} sent {:>10}  {:>12} bytes{}",
                    e.id,
                    e.sent.total(),
                    e.bytes,
                    e.failed
                        .iter()
                        .map(|(k, v)| format!("  failed {v} ({k})"))
                        .collect::<String>()
                );
            }
        }
        if !self.differences.is_empty() {
            let _ = writeln!(out, "differences (base -> compare):");
            for d in self.differences.iter().filter(|d| d.base != d.other) {
                let show = |v: f64| match d.unit.as_str() {
                    "ratio" => format!("{:.1} %", v * 100.0),
                    _ => format!("{v}"),
                };
                let change = match (d.unit.as_str(), d.change) {
                    ("ratio", _) => String::new(),
                    (_, Some(c)) => format!(" ({:+.0} %)", c * 100.0),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {}: {} -> {}{change}",
                    d.what,
                    show(d.base),
                    show(d.other)
                );
            }
        }
        out
    }
}

/// What a `--report` path asks for, by its extension.
pub enum OutputKind {
    Json,
    Html,
}

impl OutputKind {
    pub fn of(path: &Path) -> anyhow::Result<OutputKind> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(OutputKind::Json),
            Some("html") | Some("htm") => Ok(OutputKind::Html),
            _ => bail!(
                "--report {}: the file name must end in .json or .html",
                path.display()
            ),
        }
    }
}

/// The progress bar: items, items/s and the data time reached (stderr, terminals only).
pub struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    items: std::cell::Cell<u64>,
}

impl Progress {
    /// A bar over the capture's bytes on disk (`total`), with items/s and the virtual time
    /// reached; hidden with `--quiet` or when stderr is not a terminal (indicatif's rule).
    pub fn new(quiet: bool, total: u64) -> Progress {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        };
        Progress {
            bar,
            started: Instant::now(),
            items: std::cell::Cell::new(0),
        }
    }

    /// `items` more were handed to the pipelines; `disk_read` bytes of the capture are read;
    /// the virtual clock is at `data_now`.
    pub fn update(&self, items: usize, disk_read: u64, data_now: u64) {
        let total = self.items.get() + items as u64;
        self.items.set(total);
        if self.bar.is_hidden() {
            return;
        }
        let rate = total as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar
            .set_position(disk_read.min(self.bar.length().unwrap_or(u64::MAX)));
        self.bar.set_message(format!(
            "{total} items, {rate:.0} items/s, data time {}",
            format_time(data_now)
        ));
    }

    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `2026-12-06T19:03:44.123Z` for a Unix-ns time.
pub fn format_time(unix_nanos: u64) -> String {
    match jiff::Timestamp::from_nanosecond(unix_nanos as i128) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => format!("{unix_nanos} ns"),
    }
}
