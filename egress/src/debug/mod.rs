//! The `debug` exporter: writes what arrives to sluice's log (stderr).
//!
//! ```yaml
//! exporters:
//!   debug:
//!     verbosity: basic   # basic: one line per batch; normal: one line per item; detailed: OTLP/JSON
//! ```
//!
//! `normal` writes the Collector's lines: a span as `name trace_id span_id k=v ...`, a log record
//! as `body k=v ...`, a data point as `name{k=v,...} value`.

use std::sync::Arc;

use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, ConsumeError, Consumer, Factory, Kind,
    Lifecycle, NoEffect, Node, ParsedConfig, parse_config,
};
use sluice_engine::schema::{Signal, Table};
use sluice_engine::telemetry::ExporterMetrics;

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Normal,
    Detailed,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Accepted without effect (warned, as the two below): every batch is logged.
    #[serde(default)]
    pub sampling_initial: Option<u64>,
    #[serde(default)]
    pub sampling_thereafter: Option<u64>,
    #[serde(default)]
    pub use_internal_logger: Option<bool>,
}

pub struct DebugFactory;

impl Factory for DebugFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "debug"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics, Signal::Logs]
    }
    fn description(&self) -> &'static str {
        "logs received data to stderr (basic, normal, detailed)"
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        const SAMPLING: &str = "every batch is written, none sampled away";
        const SETTINGS: &[NoEffect] = &[
            NoEffect::new("sampling_initial", SAMPLING),
            NoEffect::new("sampling_thereafter", SAMPLING),
            NoEffect::new(
                "use_internal_logger",
                "the exporter always writes through sluice's log (stderr), never to stdout",
            )
            .only_when("false"),
        ];
        SETTINGS
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(parse_config::<DebugConfig>(config)?))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<DebugConfig>()?;
        Ok(Arc::new(DebugExporter {
            id: ctx.id.to_string(),
            verbosity: c.verbosity,
            metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id),
        }))
    }
}

pub struct DebugExporter {
    id: String,
    verbosity: Verbosity,
    metrics: ExporterMetrics,
}

/// `verbosity: normal`: one line per item, as the Collector's debug exporter writes them:
/// a span as `name trace_id span_id k=v ...`, a log record as `body k=v ...`, a metric data
/// point as `name{k=v,...} value` (histograms and summaries: `count=.. sum=..`).
mod normal {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Sum, metric, number_data_point};
    use prost::Message;
    use sluice_engine::Payload;
    use sluice_engine::schema::Signal;

    /// The payload's items, a line each; an error if sluice's own encoding does not read back.
    pub fn lines(p: &Payload) -> Result<Vec<String>, prost::DecodeError> {
        let bytes = sluice_engine::otlp::encode_to_vec(p);
        Ok(match p.signal() {
            Signal::Traces => traces(&ExportTraceServiceRequest::decode(bytes.as_slice())?),
            Signal::Metrics => metrics(&ExportMetricsServiceRequest::decode(bytes.as_slice())?),
            Signal::Logs => logs(&ExportLogsServiceRequest::decode(bytes.as_slice())?),
        })
    }

    fn traces(req: &ExportTraceServiceRequest) -> Vec<String> {
        let spans = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        spans
            .map(|s| {
                let mut line = format!(
                    "{} {} {}",
                    s.name,
                    hex::encode(&s.trace_id),
                    hex::encode(&s.span_id)
                );
                for kv in &s.attributes {
                    line.push(' ');
                    line.push_str(&attribute(kv));
                }
                line
            })
            .collect()
    }

    fn logs(req: &ExportLogsServiceRequest) -> Vec<String> {
        let records = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records);
        records
            .map(|r| {
                let mut line = r.body.as_ref().map(as_string).unwrap_or_default();
                for kv in &r.attributes {
                    line.push(' ');
                    line.push_str(&attribute(kv));
                }
                line
            })
            .collect()
    }

    fn metrics(req: &ExportMetricsServiceRequest) -> Vec<String> {
        let mut out = Vec::new();
        let all = req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for m in all {
            // `name{k=v,...} value`, a line per data point.
            let mut point = |attributes: &[KeyValue], value: String| {
                let labels: Vec<String> = attributes.iter().map(attribute).collect();
                let line = format!("{}{{{}}} {value}", m.name, labels.join(","));
                out.push(line.trim_end().to_string());
            };
            let count_sum = |count: u64, sum: Option<f64>| match sum {
                Some(sum) => format!("count={count} sum={sum}"),
                None => format!("count={count}"),
            };
            match &m.data {
                Some(
                    metric::Data::Gauge(Gauge { data_points })
                    | metric::Data::Sum(Sum { data_points, .. }),
                ) => {
                    for p in data_points {
                        point(&p.attributes, number(&p.value));
                    }
                }
                Some(metric::Data::Histogram(h)) => {
                    for p in &h.data_points {
                        point(&p.attributes, count_sum(p.count, p.sum));
                    }
                }
                Some(metric::Data::ExponentialHistogram(h)) => {
                    for p in &h.data_points {
                        point(&p.attributes, count_sum(p.count, p.sum));
                    }
                }
                Some(metric::Data::Summary(s)) => {
                    for p in &s.data_points {
                        point(&p.attributes, count_sum(p.count, Some(p.sum)));
                    }
                }
                None => point(&[], String::new()),
            }
        }
        out
    }

    fn number(v: &Option<number_data_point::Value>) -> String {
        match v {
            Some(number_data_point::Value::AsInt(i)) => i.to_string(),
            Some(number_data_point::Value::AsDouble(d)) => d.to_string(),
            None => String::new(),
        }
    }

    fn attribute(kv: &KeyValue) -> String {
        format!(
            "{}={}",
            kv.key,
            kv.value.as_ref().map(as_string).unwrap_or_default()
        )
    }

    /// A value as text, as pdata's `AsString`: strings as they are, bytes base64, arrays and
    /// maps as JSON.
    fn as_string(v: &AnyValue) -> String {
        use any_value::Value as V;
        match &v.value {
            // The profiles-only string table index means nothing outside profiles.
            None | Some(V::StringValueStrindex(_)) => String::new(),
            Some(V::StringValue(s)) => s.clone(),
            Some(V::BoolValue(b)) => b.to_string(),
            Some(V::IntValue(i)) => i.to_string(),
            Some(V::DoubleValue(d)) => d.to_string(),
            Some(V::BytesValue(b)) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(b)
            }
            Some(V::ArrayValue(a)) => serde_json::Value::Array(
                a.values
                    .iter()
                    .map(|x| serde_json::Value::from(as_string(x)))
                    .collect(),
            )
            .to_string(),
            Some(V::KvlistValue(m)) => serde_json::Value::Object(
                m.values
                    .iter()
                    .map(|kv| {
                        let v = kv.value.as_ref().map(as_string).unwrap_or_default();
                        (kv.key.clone(), serde_json::Value::from(v))
                    })
                    .collect(),
            )
            .to_string(),
        }
    }
}

impl Consumer for DebugExporter {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let n = p.item_count();
            let s = p.signal();
            tracing::info!(
                exporter = %self.id,
                resources = p.table(Table::Resources).num_rows(),
                "{}: {n} {}",
                s.as_str(),
                s.item_noun().replace('_', " ")
            );
            match self.verbosity {
                Verbosity::Basic => {}
                Verbosity::Normal => match normal::lines(&p) {
                    Ok(lines) => {
                        for line in lines {
                            tracing::info!(exporter = %self.id, "{line}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(exporter = %self.id, error = %e, "cannot render the items")
                    }
                },
                Verbosity::Detailed => match sluice_engine::otlp::encode_json(&p) {
                    Ok(j) => tracing::info!(exporter = %self.id, "{}", String::from_utf8_lossy(&j)),
                    Err(e) => {
                        tracing::warn!(exporter = %self.id, error = %e, "cannot render as JSON")
                    }
                },
            }
            self.metrics.sent(s, n);
            Ok(())
        })
    }
}

impl Lifecycle for DebugExporter {}

#[cfg(test)]
mod tests {
    use sluice_engine::otlp::decode_json;
    use sluice_engine::schema::Signal;

    /// `verbosity: normal` prints one line per item, as the Collector's debug exporter does.
    #[test]
    fn normal_prints_a_line_per_item_as_the_collector() {
        let traces = decode_json(
            Signal::Traces,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
                {"name":"GET /orders","traceId":"5b8efff798038103d269b633813fc60c",
                 "spanId":"eee19b7ec3c1b174","attributes":[
                    {"key":"http.route","value":{"stringValue":"/orders"}},
                    {"key":"http.status_code","value":{"intValue":"200"}}]},
                {"name":"SELECT","traceId":"5b8efff798038103d269b633813fc60c",
                 "spanId":"eee19b7ec3c1b175"}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            super::normal::lines(&traces).unwrap(),
            vec![
                "GET /orders 5b8efff798038103d269b633813fc60c eee19b7ec3c1b174 http.route=/orders http.status_code=200",
                "SELECT 5b8efff798038103d269b633813fc60c eee19b7ec3c1b175",
            ]
        );
        let logs = decode_json(
            Signal::Logs,
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
                {"body":{"stringValue":"order 42 paid"},"attributes":[
                    {"key":"order.id","value":{"intValue":"42"}},
                    {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}}]},
                {"body":{"stringValue":"bye"}}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            super::normal::lines(&logs).unwrap(),
            vec![r#"order 42 paid order.id=42 tags=["a"]"#, "bye"]
        );
        let metrics = decode_json(
            Signal::Metrics,
            br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
                {"name":"queue.depth","gauge":{"dataPoints":[
                    {"asInt":"7","attributes":[{"key":"queue","value":{"stringValue":"a"}},
                                               {"key":"shard","value":{"intValue":"1"}}]}]}},
                {"name":"latency","histogram":{"dataPoints":[{"count":"3","sum":1.5}]}}
            ]}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            super::normal::lines(&metrics).unwrap(),
            vec![
                "queue.depth{queue=a,shard=1} 7",
                "latency{} count=3 sum=1.5"
            ]
        );
    }
}
