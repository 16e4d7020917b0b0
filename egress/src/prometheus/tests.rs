//! The exporter against its peers: golden files (OTLP/JSON in -> exact exposition out, every
//! text scrape checked by `promtool check metrics`), the HTTP endpoint (negotiation, gzip),
//! and the accumulation rules one by one.
//!
//! Golden cases live in `egress/testdata/prometheus/<case>/case.json`:
//! `{"config": {...}, "steps": [{"at": "10s", "send": "in.json", "accepted": 3,
//! "dropped": {"out_of_order": 1}}, {"at": "20s", "scrape": "out.txt", "format": "text"}]}`.
//! Time is a virtual clock at 2023-11-14T22:13:20Z + `at`. `UPDATE_GOLDEN=1 cargo test`
//! rewrites the expected files (then read the diff: the files are the specification).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use sluice_engine::Payload;
use sluice_engine::clock::VirtualClock;
use sluice_engine::component::{ComponentId, Consumer, Lifecycle, parse_config};
use sluice_engine::config_types::parse_duration;
use sluice_engine::otlp::testing::reference_metrics;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::Telemetry;

use super::*;

const T0: u64 = 1_700_000_000_000_000_000;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/prometheus")
}

fn config(v: serde_json::Value) -> PrometheusConfig {
    let c: PrometheusConfig = parse_config(&v).expect("config parses");
    c.validate().expect("config is valid");
    c
}

/// `promtool check metrics` on a text exposition: parse errors and lint problems both fail.
pub(crate) fn promtool_check(text: &[u8], what: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool not runnable ({e}): install Debian's `prometheus` package \
             (bash scripts/setup-test-env.sh does)"
        ),
    };
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text)
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics refused {what} ({}):\n{}{}\n--- exposition ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(text)
    );
}

fn reason_by_name(name: &str) -> DropReason {
    *DropReason::ALL
        .iter()
        .find(|r| r.as_str() == name)
        .unwrap_or_else(|| panic!("unknown drop reason {name}"))
}

fn run_case(dir: &Path) -> usize {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("case.json")).expect("case.json"))
            .expect("case.json is JSON");
    let cfg = config(spec["config"].clone());
    let mut state = State::new(&cfg);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut scrapes = 0;
    let steps = spec["steps"].as_array().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let at = parse_duration(step["at"].as_str().unwrap_or("0s")).expect("at");
        let now = T0 + at.as_nanos() as u64;
        let ctx = format!("{}: step {i}", dir.display());
        if let Some(file) = step["send"].as_str() {
            let bytes = std::fs::read(dir.join(file)).expect(file);
            let payload = sluice_engine::otlp::decode_json(Signal::Metrics, &bytes)
                .unwrap_or_else(|e| panic!("{ctx}: {file}: {e}"));
            let outcome = state.ingest(&payload, now);
            if let Some(n) = step["accepted"].as_u64() {
                assert_eq!(outcome.accepted as u64, n, "{ctx}: accepted points");
            }
            let want: BTreeMap<&str, u64> = step["dropped"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.as_str(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            let got: BTreeMap<&str, u64> = outcome
                .dropped
                .iter()
                .map(|(r, n)| (r.as_str(), *n as u64))
                .collect();
            for k in want.keys() {
                reason_by_name(k);
            }
            assert_eq!(got, want, "{ctx}: dropped points by reason");
        }
        if let Some(file) = step["scrape"].as_str() {
            let format = match step["format"].as_str().unwrap_or("text") {
                "text" => Format::Text,
                "openmetrics" => Format::OpenMetrics,
                f => panic!("{ctx}: unknown format {f}"),
            };
            let got = state.scrape(format, now);
            let path = dir.join(file);
            if update {
                std::fs::write(&path, &got).expect("write golden");
            }
            let want = std::fs::read(&path).unwrap_or_default();
            assert!(
                got == want,
                "{ctx}: scrape differs from {}\n--- got ---\n{}\n--- want ---\n{}",
                path.display(),
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
            if format == Format::Text && !got.is_empty() {
                promtool_check(&got, &path.display().to_string());
            }
            scrapes += 1;
        }
    }
    scrapes
}

#[test]
fn golden_files() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("egress/testdata/prometheus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "golden cases missing: {dirs:?}");
    let scrapes: usize = dirs.iter().map(|d| run_case(d)).sum();
    assert!(scrapes >= dirs.len());
}

// ------------------------------------------------------------------------ builders

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> Payload {
    reference_metrics(&ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    version: "1".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn number(start: u64, time: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        attributes: attrs,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(
    name: &str,
    temporality: AggregationTemporality,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} sum"),
        unit: "1".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} gauge"),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn scrape_text(state: &mut State, now: u64) -> String {
    String::from_utf8(state.scrape(Format::Text, now)).expect("utf-8 exposition")
}

fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].to_string())
}

// ------------------------------------------------------------------------ rules

#[test]
fn delta_sums_accumulate_and_misaligned_deltas_restart() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    let s = |start, time, v| {
        request(
            vec![],
            vec![sum(
                "jobs",
                AggregationTemporality::Delta,
                true,
                vec![number(start, time, v, vec![])],
            )],
        )
    };
    let series =
        r#"jobs_total{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="1"}"#;
    for (start, time, v, want) in [
        (T0, T0 + 10, 3.0, "3"),
        (T0 + 10, T0 + 20, 4.0, "7"),   // aligned: 3 + 4
        (T0 + 20, T0 + 30, 0.5, "7.5"), // aligned again
        (T0 + 100, T0 + 110, 2.0, "2"), // gap: starts over, as the Collector does
    ] {
        let o = st.ingest(&s(start, time, v), T0);
        assert_eq!((o.accepted, o.dropped_total()), (1, 0));
        assert_eq!(
            sample(&scrape_text(&mut st, T0), series).as_deref(),
            Some(want)
        );
    }
    // older than what is stored: dropped, counted
    let o = st.ingest(&s(T0, T0 + 50, 9.0), T0);
    assert_eq!(o.dropped, vec![(DropReason::OutOfOrder, 1)]);
    assert_eq!(
        sample(&scrape_text(&mut st, T0), series).as_deref(),
        Some("2")
    );
    // non-monotonic deltas have no cumulative form: dropped, counted
    let o = st.ingest(
        &request(
            vec![],
            vec![sum(
                "queue",
                AggregationTemporality::Delta,
                false,
                vec![number(T0, T0, 1.0, vec![])],
            )],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::NonMonotonicDelta, 1)]);
}

#[test]
fn cumulative_resets_and_gauges_keep_the_latest_point() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    let c = |start, time, v| {
        request(
            vec![],
            vec![sum(
                "req",
                AggregationTemporality::Cumulative,
                true,
                vec![number(start, time, v, vec![])],
            )],
        )
    };
    st.ingest(&c(T0, T0 + 10, 100.0), T0);
    // a counter reset (new start time, lower value) is shown as sent: Prometheus' rate()
    // handles resets
    st.ingest(&c(T0 + 15, T0 + 20, 5.0), T0);
    let series =
        r#"req_total{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="1"}"#;
    assert_eq!(
        sample(&scrape_text(&mut st, T0), series).as_deref(),
        Some("5")
    );
    let g = |time, v| {
        request(
            vec![],
            vec![gauge("temp", vec![number(0, time, v, vec![])])],
        )
    };
    st.ingest(&g(T0 + 10, 20.5), T0);
    let o = st.ingest(&g(T0 + 5, 99.0), T0);
    assert_eq!(o.dropped, vec![(DropReason::OutOfOrder, 1)]);
    st.ingest(&g(T0 + 10, 21.0), T0); // same timestamp: replaces
    let series = r#"temp{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="1"}"#;
    assert_eq!(
        sample(&scrape_text(&mut st, T0), series).as_deref(),
        Some("21")
    );
}

#[test]
fn no_recorded_value_removes_the_series() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    st.ingest(
        &request(
            vec![],
            vec![gauge("up", vec![number(0, T0, 1.0, vec![kv("a", "1")])])],
        ),
        T0,
    );
    assert!(scrape_text(&mut st, T0).contains("up{"));
    let mut stale = number(0, T0 + 1, 0.0, vec![kv("a", "1")]);
    stale.flags = 1;
    let o = st.ingest(&request(vec![], vec![gauge("up", vec![stale])]), T0);
    assert_eq!(o.accepted, 1);
    assert_eq!(scrape_text(&mut st, T0), "");
    assert_eq!(st.store.series_count(), 0);
}

#[test]
fn delta_histograms_accumulate_bucket_by_bucket() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    let h = |start, time, counts: Vec<u64>, s| {
        let count = counts.iter().sum();
        request(
            vec![],
            vec![Metric {
                name: "latency".into(),
                description: "Request latency".into(),
                unit: "s".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        count,
                        sum: Some(s),
                        bucket_counts: counts,
                        explicit_bounds: vec![0.1, 1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                })),
                ..Default::default()
            }],
        )
    };
    st.ingest(&h(T0, T0 + 10, vec![1, 2, 3], 7.5), T0);
    st.ingest(&h(T0 + 10, T0 + 20, vec![0, 1, 1], 2.25), T0);
    let text = scrape_text(&mut st, T0);
    let l = r#"otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="1""#;
    for (series, want) in [
        (format!("latency_seconds_bucket{{{l},le=\"0.1\"}}"), "1"),
        (format!("latency_seconds_bucket{{{l},le=\"1\"}}"), "4"),
        (format!("latency_seconds_bucket{{{l},le=\"+Inf\"}}"), "8"),
        (format!("latency_seconds_sum{{{l}}}"), "9.75"),
        (format!("latency_seconds_count{{{l}}}"), "8"),
    ] {
        assert_eq!(
            sample(&text, &series).as_deref(),
            Some(want),
            "{series}\n{text}"
        );
    }
    // starting before the stored point's time: a second writer, dropped
    let o = st.ingest(&h(T0 + 5, T0 + 30, vec![1, 1, 1], 1.0), T0);
    assert_eq!(o.dropped, vec![(DropReason::MisalignedDelta, 1)]);
    promtool_check(text.as_bytes(), "delta histogram");
}

#[test]
fn series_expire_on_the_injected_clock() {
    let cfg = config(serde_json::json!({"endpoint": "x:1", "metric_expiration": "1m"}));
    let mut st = State::new(&cfg);
    st.ingest(
        &request(vec![], vec![gauge("a", vec![number(0, T0, 1.0, vec![])])]),
        T0,
    );
    st.ingest(
        &request(vec![], vec![gauge("b", vec![number(0, T0, 1.0, vec![])])]),
        T0 + 50_000_000_000,
    );
    let at_60s = scrape_text(&mut st, T0 + 60_000_000_000);
    assert!(
        at_60s.contains("\na{") && at_60s.contains("\nb{"),
        "{at_60s}"
    );
    let at_61s = scrape_text(&mut st, T0 + 61_000_000_000);
    assert!(
        !at_61s.contains("\na{") && at_61s.contains("\nb{"),
        "{at_61s}"
    );
    assert!(
        !at_61s.contains("# TYPE a "),
        "an empty family goes too:\n{at_61s}"
    );
    assert_eq!(scrape_text(&mut st, T0 + 111_000_000_000), "");
    assert_eq!(st.store.series_count(), 0);
}

#[test]
fn series_keep_their_first_seen_order_as_they_come_and_go() {
    // Series arrive in random order over several batches, some expire, some come back: every
    // scrape holds exactly the live series, in the order they were (last) first seen, also
    // across compactions of the table.
    let cfg = config(serde_json::json!({"endpoint": "x:1", "metric_expiration": "10s"}));
    let mut st = State::new(&cfg);
    let mut live: Vec<(String, u64)> = Vec::new(); // (pod, last update), first-seen order
    let mut rng = 0x9e3779b97f4a7c15u64;
    for round in 0..40u64 {
        let now = T0 + round * 1_000_000_000;
        let mut points = Vec::new();
        for _ in 0..30 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let pod = format!("pod-{:03}", rng % 300);
            points.push(number(0, now, round as f64, vec![kv("pod", &pod)]));
            match live.iter_mut().find(|(p, _)| *p == pod) {
                Some(e) => e.1 = now,
                None => live.push((pod, now)),
            }
        }
        st.ingest(&request(vec![], vec![gauge("g", points)]), now);
        live.retain(|(_, t)| *t + 10_000_000_000 >= now);
        let text = scrape_text(&mut st, now);
        let pods: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("g{"))
            .map(|l| &l[l.find("pod=\"").unwrap() + 5..][..7])
            .collect();
        let want: Vec<&str> = live.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(pods, want, "round {round}");
        assert_eq!(st.store.series_count(), live.len());
    }
}

#[test]
fn bounded_memory_per_series() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    let huge = "x".repeat(store::MAX_LABEL_BYTES + 1);
    let o = st.ingest(
        &request(
            vec![],
            vec![gauge("g", vec![number(0, T0, 1.0, vec![kv("v", &huge)])])],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::TooLarge, 1)]);
    let o = st.ingest(
        &request(
            vec![],
            vec![Metric {
                name: "h".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        explicit_bounds: (0..=store::MAX_BUCKETS).map(|i| i as f64).collect(),
                        bucket_counts: vec![0; store::MAX_BUCKETS + 2],
                        time_unix_nano: T0,
                        ..Default::default()
                    }],
                    aggregation_temporality: 2,
                })),
                ..Default::default()
            }],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::TooLarge, 1)]);
    assert_eq!(st.store.series_count(), 0);
}

#[test]
fn invalid_names_and_label_conflicts_are_counted() {
    let mut st = State::new(&config(serde_json::json!({"endpoint": "x:1"})));
    let o = st.ingest(
        &request(vec![], vec![gauge("...", vec![number(0, T0, 1.0, vec![])])]),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::InvalidMetricName, 1)]);
    let o = st.ingest(
        &request(
            vec![],
            vec![gauge("g", vec![number(0, T0, 1.0, vec![kv("__x", "1")])])],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::InvalidLabelName, 1)]);
    let o = st.ingest(
        &request(
            vec![kv("service.name", "svc")],
            vec![gauge("g", vec![number(0, T0, 1.0, vec![kv("job", "1")])])],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::LabelConflict, 1)]);
    // a gauge and a counter that normalize to one name: the first type wins
    st.ingest(
        &request(
            vec![],
            vec![gauge("hits_total", vec![number(0, T0, 1.0, vec![])])],
        ),
        T0,
    );
    let o = st.ingest(
        &request(
            vec![],
            vec![sum(
                "hits",
                AggregationTemporality::Cumulative,
                true,
                vec![number(0, T0, 1.0, vec![])],
            )],
        ),
        T0,
    );
    assert_eq!(o.dropped, vec![(DropReason::TypeConflict, 1)]);
}

// ------------------------------------------------------------------------ negotiation

#[test]
fn content_negotiation_follows_expfmt() {
    let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(
        negotiate(prometheus_2, true),
        (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE)
    );
    assert_eq!(
        negotiate(prometheus_2, false),
        (Format::Text, TEXT_CONTENT_TYPE)
    );
    assert_eq!(negotiate("", true).0, Format::Text);
    assert_eq!(negotiate("*/*", true).0, Format::Text);
    assert_eq!(
        negotiate(
            "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0",
            true
        )
        .0,
        Format::OpenMetrics
    );
    assert_eq!(
        negotiate(
            "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.9",
            true
        )
        .0,
        Format::Text
    );
    // protobuf is not served: the next acceptable range is used
    assert_eq!(
        negotiate("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,text/plain;version=0.0.4;q=0.5", true).0,
        Format::Text
    );
    assert!(gzip_accepted("gzip, deflate"));
    assert!(gzip_accepted("br;q=1.0, gzip;q=0.8"));
    assert!(!gzip_accepted("gzip;q=0"));
    assert!(!gzip_accepted("identity"));
}

// ------------------------------------------------------------------------ over HTTP

async fn http_get(
    addr: SocketAddr,
    accept: &str,
    encoding: Option<&str>,
) -> (u16, HeaderMap, Vec<u8>) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{addr}/metrics")).header("accept", accept);
    if let Some(e) = encoding {
        req = req.header("accept-encoding", e);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .expect("GET /metrics");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn serves_negotiated_formats_and_gzip_on_the_configured_endpoint() {
    let clock = VirtualClock::new(T0);
    let t = Telemetry::new();
    let cfg = config(serde_json::json!({
        "endpoint": "127.0.0.1:0",
        "enable_open_metrics": true,
        "resource_to_telemetry_conversion": {"enabled": true}
    }));
    let exp = PrometheusExporter::new(
        ComponentId::parse("prometheus").unwrap(),
        cfg,
        &t,
        clock.clone(),
    );
    exp.start().await.expect("starts");
    let addr = exp.local_addr().expect("bound");
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "binds exactly the endpoint's address"
    );
    let p = request(
        vec![
            kv("service.name", "checkout"),
            kv("k8s.pod.name", "checkout-1"),
        ],
        vec![
            sum(
                "http.requests",
                AggregationTemporality::Cumulative,
                true,
                vec![number(T0, T0, 42.0, vec![kv("http.method", "GET")])],
            ),
            Metric {
                unit: "1".into(),
                ..gauge("cpu.utilization", vec![number(0, T0, 0.25, vec![])])
            },
        ],
    );
    exp.consume(p).await.expect("consumed");
    assert_eq!(
        t.value(
            "otelcol_exporter_sent_metric_points",
            &[("exporter", "prometheus")]
        ),
        Some(2.0)
    );

    let (status, headers, text) = http_get(addr, "text/plain", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], TEXT_CONTENT_TYPE);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains(r#"http_requests_total{http_method="GET",job="checkout",k8s_pod_name="checkout-1",otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="1",service_name="checkout"} 42"#), "{text}");
    assert!(text.contains("cpu_utilization_ratio{"), "{text}");
    promtool_check(text.as_bytes(), "HTTP scrape");

    let (_, headers, om) = http_get(
        addr,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        None,
    )
    .await;
    assert_eq!(headers["content-type"], OPENMETRICS_CONTENT_TYPE);
    let om = String::from_utf8(om).unwrap();
    assert!(
        om.starts_with("# HELP cpu_utilization_ratio") && om.ends_with("# EOF\n"),
        "{om}"
    );
    assert!(
        om.contains("# TYPE http_requests counter\n") && om.contains("} 42.0\n"),
        "{om}"
    );

    let (_, headers, gz) = http_get(addr, "text/plain", Some("gzip")).await;
    assert_eq!(headers["content-encoding"], "gzip");
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped)
        .unwrap();
    assert_eq!(unzipped, text);

    // other paths are not the metrics endpoint
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let r = client
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // a port in use fails start with the address in the message
    let cfg2 = config(serde_json::json!({"endpoint": addr.to_string()}));
    let exp2 = PrometheusExporter::new(
        ComponentId::parse("prometheus/2").unwrap(),
        cfg2,
        &t,
        Arc::new(VirtualClock::default()),
    );
    let err = exp2.start().await.expect_err("port in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    exp.shutdown().await;
}
