//! spanmetrics: counts and histograms per series, and — wired before tail sampling in a real
//! pipeline graph — counts every span received, not only the kept ones.

use std::collections::BTreeMap;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::clock::VirtualClock;
use crate::component::{Service as Svc, SignalConsumers};
use crate::config::{Registry, Source, load};
use crate::health::Health;
use crate::otlp::testing::reference_traces;
use crate::processors::test_support::Capture;
use crate::service::Service;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// `n` spans of `service`: span i has trace i, duration (i % 4) * 3 ms, status error if i % 5 == 0.
fn spans(service: Option<&str>, first: u64, n: u64) -> Payload {
    let spans = (first..first + n)
        .map(|i| {
            // Random-looking trace ids, as real ones are (the Collector's FNV-1a hash barely
            // moves its top bits for ids that differ only in their last bytes).
            let mix = |x: u64| {
                (x ^ 0x5851_F42D_4C95_7F2D)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .rotate_left(29)
                    .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            };
            let mut tid = mix(i).to_le_bytes().to_vec();
            tid.extend_from_slice(&mix(i ^ 0xFFFF).to_le_bytes());
            Span {
                trace_id: tid,
                span_id: i.to_be_bytes().to_vec(),
                name: if i % 2 == 0 {
                    "GET /a".into()
                } else {
                    "GET /b".into()
                },
                kind: 2,
                start_time_unix_nano: T0,
                end_time_unix_nano: T0 + (i % 4) * 3 * MS,
                status: Some(Status {
                    code: if i % 5 == 0 { 2 } else { 0 },
                    ..Default::default()
                }),
                attributes: vec![kv("http.method", "GET")],
                ..Default::default()
            }
        })
        .collect();
    let mut attributes = vec![kv("k8s.pod.name", "pod-1")];
    if let Some(s) = service {
        attributes.push(kv("service.name", s));
    }
    reference_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn decode(p: &Payload) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest::decode(crate::otlp::encode_to_vec(p).as_slice()).unwrap()
}

fn attr(kvs: &[KeyValue], k: &str) -> String {
    kvs.iter()
        .find(|x| x.key == k)
        .and_then(|x| x.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// (span.name, status.code) -> calls; and the same key -> (histogram count, sum, buckets).
type Calls = BTreeMap<(String, String), i64>;
type Durations = BTreeMap<(String, String), (u64, f64, Vec<u64>)>;

fn summarize(reqs: &[ExportMetricsServiceRequest]) -> (Calls, Durations) {
    let mut calls = BTreeMap::new();
    let mut durations = BTreeMap::new();
    for req in reqs {
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                assert_eq!(sm.scope.as_ref().unwrap().name, "spanmetricsconnector");
                for m in &sm.metrics {
                    match &m.data {
                        Some(Data::Sum(s)) => {
                            assert_eq!(m.name, "traces.span.metrics.calls");
                            assert!(s.is_monotonic);
                            for dp in &s.data_points {
                                let k = (
                                    attr(&dp.attributes, "span.name"),
                                    attr(&dp.attributes, "status.code"),
                                );
                                let Some(number_data_point::Value::AsInt(v)) = dp.value else {
                                    panic!()
                                };
                                calls.insert(k, v);
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            assert_eq!(
                                (m.name.as_str(), m.unit.as_str()),
                                ("traces.span.metrics.duration", "ms")
                            );
                            for dp in &h.data_points {
                                let k = (
                                    attr(&dp.attributes, "span.name"),
                                    attr(&dp.attributes, "status.code"),
                                );
                                durations.insert(
                                    k,
                                    (dp.count, dp.sum.unwrap(), dp.bucket_counts.clone()),
                                );
                            }
                        }
                        other => panic!("unexpected metric {other:?}"),
                    }
                }
            }
        }
    }
    (calls, durations)
}

fn connector(yaml: &str) -> (SpanMetrics, Capture, Arc<VirtualClock>) {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    let parsed = SpanMetricsFactory.parse_config(&v).unwrap();
    let config = parsed.downcast::<SpanMetricsConfig>().unwrap();
    let out = Capture::default();
    let clock = VirtualClock::new(T0);
    let c = SpanMetrics::new(
        (*config).clone(),
        Arc::new(out.clone()),
        clock.clone(),
        &Telemetry::new(),
        "spanmetrics",
    );
    (c, out, clock)
}

#[tokio::test]
async fn counts_calls_and_durations_per_service_name_kind_and_status() {
    let (c, out, _) = connector("{}");
    c.consume(spans(Some("checkout"), 0, 40)).await.unwrap();
    c.consume(spans(None, 100, 10)).await.unwrap(); // no service.name: not counted
    c.flush().await;
    let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
    assert_eq!(reqs.len(), 1);
    let rm = &reqs[0].resource_metrics;
    assert_eq!(rm.len(), 1);
    let res = rm[0].resource.as_ref().unwrap();
    assert_eq!(attr(&res.attributes, "service.name"), "checkout");
    assert_eq!(attr(&res.attributes, "k8s.pod.name"), "pod-1");
    let dp = match &rm[0].scope_metrics[0].metrics[0].data {
        Some(Data::Sum(s)) => &s.data_points[0],
        _ => panic!(),
    };
    assert_eq!(attr(&dp.attributes, "service.name"), "checkout");
    assert_eq!(attr(&dp.attributes, "span.kind"), "SPAN_KIND_SERVER");
    let (calls, durations) = summarize(&reqs);
    // 40 spans: even -> /a, odd -> /b; i % 5 == 0 -> error.
    let want: Calls = [
        (("GET /a".to_string(), "STATUS_CODE_ERROR".to_string()), 4),
        (("GET /a".into(), "STATUS_CODE_UNSET".into()), 16),
        (("GET /b".into(), "STATUS_CODE_ERROR".into()), 4),
        (("GET /b".into(), "STATUS_CODE_UNSET".into()), 16),
    ]
    .into();
    assert_eq!(calls, want);
    assert_eq!(calls.values().sum::<i64>(), 40);
    // /a spans (even i) last 0 or 6 ms: buckets le=2 (0 ms) and le=6 (6 ms).
    let (count, sum, buckets) =
        &durations[&("GET /a".to_string(), "STATUS_CODE_UNSET".to_string())];
    assert_eq!(*count, 16);
    assert_eq!(buckets.len(), 17);
    assert_eq!(buckets[0] + buckets[2], 16, "{buckets:?}");
    assert_eq!(*sum, buckets[2] as f64 * 6.0);
}

#[tokio::test]
async fn cumulative_keeps_counting_and_delta_resets() {
    for (temporality, second) in [
        ("AGGREGATION_TEMPORALITY_CUMULATIVE", 80),
        ("AGGREGATION_TEMPORALITY_DELTA", 40),
    ] {
        let (c, out, clock) = connector(&format!(
            "{{aggregation_temporality: {temporality}, dimensions: [{{name: http.method}}, {{name: tenant, default: none}}]}}"
        ));
        c.consume(spans(Some("s"), 0, 40)).await.unwrap();
        c.flush().await;
        clock.advance_to(T0 + 60_000 * MS);
        c.consume(spans(Some("s"), 0, 40)).await.unwrap();
        c.flush().await;
        let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
        let (calls, _) = summarize(&reqs[1..]);
        assert_eq!(calls.values().sum::<i64>(), second, "{temporality}");
        let dp = match &reqs[1].resource_metrics[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => s.data_points[0].clone(),
            _ => panic!(),
        };
        assert_eq!(attr(&dp.attributes, "http.method"), "GET");
        assert_eq!(
            attr(&dp.attributes, "tenant"),
            "none",
            "the default fills a missing dimension"
        );
    }
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let err = |yaml: &str| {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        SpanMetricsFactory
            .parse_config(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(
        err("{exemplars: {enabled: true}}")
            .contains("exemplars.enabled: exemplars is not supported")
    );
    assert!(
        err("{dimensions: [{name: span.kind}]}").contains("duplicate dimension name span.kind")
    );
    assert!(err("{aggregation_temporality: SOMETIMES}").contains("aggregation_temporality"));
    assert!(err("{histogram: {unit: h}}").contains("histogram.unit"));
    assert!(err("{dimensionz: []}").contains("unknown field `dimensionz`"));
}

/// A receiver that hands its consumers to the test, and an exporter that records.
struct TestComponents {
    receivers: Arc<Mutex<Vec<SignalConsumers>>>,
    exported: Arc<Mutex<BTreeMap<String, Capture>>>,
    kind: Kind,
}

impl Lifecycle for TestComponents {}
impl Factory for TestComponents {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn type_name(&self) -> &'static str {
        if self.kind == Kind::Receiver {
            "test"
        } else {
            "capture"
        }
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Traces, Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "test"
    }
    fn parse_config(&self, _: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(()))
    }
    fn build_receiver(
        &self,
        _: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Svc>, ComponentError> {
        self.receivers.lock().unwrap().push(consumers);
        Ok(Arc::new(TestComponents {
            receivers: Arc::default(),
            exported: Arc::default(),
            kind: Kind::Receiver,
        }))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = Capture::default();
        self.exported
            .lock()
            .unwrap()
            .insert(ctx.id.to_string(), c.clone());
        Ok(Arc::new(c))
    }
}

impl Lifecycle for Capture {}

#[tokio::test]
async fn before_tail_sampling_spanmetrics_counts_every_span_received_not_only_the_kept() {
    let receivers: Arc<Mutex<Vec<SignalConsumers>>> = Arc::default();
    let exported: Arc<Mutex<BTreeMap<String, Capture>>> = Arc::default();
    let mut factories: Vec<Arc<dyn Factory>> = vec![
        Arc::new(TestComponents {
            receivers: receivers.clone(),
            exported: exported.clone(),
            kind: Kind::Receiver,
        }),
        Arc::new(TestComponents {
            receivers: receivers.clone(),
            exported: exported.clone(),
            kind: Kind::Exporter,
        }),
    ];
    factories.extend(crate::processors::factories());
    factories.extend(crate::connectors::factories());
    let registry = Registry::new(factories);
    let yaml = "
receivers: {test: {}}
processors:
  tail_sampling:
    decision_wait: 30s
    policies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]
exporters: {capture/traces: {}, capture/metrics: {}}
connectors: {spanmetrics: {}}
service:
  pipelines:
    traces/spanmetrics: {receivers: [test], exporters: [spanmetrics]}
    traces: {receivers: [test], processors: [tail_sampling], exporters: [capture/traces]}
    metrics/spanmetrics: {receivers: [spanmetrics], exporters: [capture/metrics]}
";
    let cfg = load(
        &[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }],
        &|_| None,
        &registry,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let clock = VirtualClock::new(T0);
    let telemetry = Telemetry::new();
    let svc = Service::build(&cfg, &registry, &telemetry, clock, Health::default()).unwrap();
    svc.start().await.unwrap();
    let consumers = receivers.lock().unwrap().pop().unwrap();
    let mut sent = 0;
    for k in 0..20u64 {
        consumers[&Signal::Traces]
            .consume(spans(Some("frontend"), k * 500, 500))
            .await
            .unwrap();
        sent += 500;
    }
    // SIGTERM path: tail sampling decides everything, spanmetrics flushes, exporters get it.
    svc.shutdown().await;
    let exported = exported.lock().unwrap();
    let kept = exported["capture/traces"].items() as i64;
    let reqs: Vec<_> = exported["capture/metrics"]
        .got
        .lock()
        .unwrap()
        .iter()
        .map(decode)
        .collect();
    let (calls, _) = summarize(&reqs);
    assert_eq!(
        calls.values().sum::<i64>(),
        sent,
        "calls count every span received"
    );
    assert!(
        (4000..6000).contains(&kept),
        "about half kept: {kept}\n{}",
        telemetry.render()
    );
}

/// One generated span: (resource index, name index, kind, status, `m` on the span, duration ms).
type GenSpan = (usize, usize, i32, i32, Option<i64>, u64);

/// The aggregation checked against a straightforward model: for each span, find
/// `service.name` on its resource, each dimension on the span, then on the resource, then its
/// default, and count the span under the resulting label set. Covers several resources, string
/// and int dimension values, missing dimensions with and without a default.
mod grouping_matches_a_per_span_model {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 3] = ["GET /a", "GET /b", "SELECT"];

    fn int_kv(k: &str, v: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
            ..Default::default()
        }
    }

    /// Resources: 0 "a" with resource-level `m` = "res", 1 "b" without, 2 without service.name.
    fn resource(i: usize) -> Vec<KeyValue> {
        match i {
            0 => vec![kv("service.name", "a"), kv("m", "res")],
            1 => vec![kv("service.name", "b"), kv("k8s.pod.name", "p")],
            _ => vec![kv("k8s.pod.name", "orphan")],
        }
    }

    fn request(spans: &[GenSpan]) -> ExportTraceServiceRequest {
        // One ResourceSpans per generated span keeps resource order arbitrary, as on the wire.
        let resource_spans = spans
            .iter()
            .enumerate()
            .map(|(i, &(r, n, kind, status, m, ms))| ResourceSpans {
                resource: Some(Resource {
                    attributes: resource(r),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: NAMES[n].into(),
                        kind,
                        start_time_unix_nano: T0,
                        end_time_unix_nano: T0 + ms * MS,
                        status: Some(Status {
                            code: status,
                            ..Default::default()
                        }),
                        attributes: m.map(|v| int_kv("m", v)).into_iter().collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    type Labels = Vec<(String, String)>;

    fn label(v: &Option<AnyValue>) -> String {
        format!("{:?}", v.as_ref().and_then(|v| v.value.clone()))
    }

    fn model(spans: &[GenSpan]) -> BTreeMap<Labels, (i64, u64, f64)> {
        let mut out: BTreeMap<Labels, (i64, u64, f64)> = BTreeMap::new();
        for &(r, n, kind, status, m, ms) in spans {
            let res = resource(r);
            let Some(service) = res.iter().find(|kv| kv.key == "service.name") else {
                continue;
            };
            let m_value = match m {
                Some(v) => Some(label(&int_kv("m", v).value)),
                None => res
                    .iter()
                    .find(|kv| kv.key == "m")
                    .map(|kv| label(&kv.value)),
            };
            let mut labels = vec![
                ("service.name".to_string(), label(&service.value)),
                ("span.name".into(), label(&kv("", NAMES[n]).value)),
                (
                    "span.kind".into(),
                    label(&kv("", span_kind_str(kind)).value),
                ),
                (
                    "status.code".into(),
                    label(&kv("", status_code_str(status)).value),
                ),
                ("t".into(), label(&kv("", "x").value)),
            ];
            if let Some(m) = m_value {
                labels.push(("m".into(), m));
            }
            labels.sort();
            let e = out.entry(labels).or_default();
            e.0 += 1;
            e.1 += 1;
            e.2 += ms as f64;
        }
        out
    }

    fn observed(reqs: &[ExportMetricsServiceRequest]) -> BTreeMap<Labels, (i64, u64, f64)> {
        let mut out: BTreeMap<Labels, (i64, u64, f64)> = BTreeMap::new();
        let labels = |attrs: &[KeyValue]| {
            let mut l: Labels = attrs
                .iter()
                .map(|kv| (kv.key.clone(), label(&kv.value)))
                .collect();
            l.sort();
            l
        };
        for rm in reqs.iter().flat_map(|r| &r.resource_metrics) {
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                match &m.data {
                    Some(Data::Sum(s)) => {
                        for dp in &s.data_points {
                            let Some(number_data_point::Value::AsInt(v)) = dp.value else {
                                panic!("calls are ints")
                            };
                            out.entry(labels(&dp.attributes)).or_default().0 += v;
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for dp in &h.data_points {
                            let e = out.entry(labels(&dp.attributes)).or_default();
                            e.1 += dp.count;
                            e.2 += dp.sum.unwrap_or_default();
                        }
                    }
                    other => panic!("unexpected metric {other:?}"),
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn per_label_set_counts_and_sums(
            spans in proptest::collection::vec(
                (0usize..3, 0usize..3, 1i32..4, 0i32..3, proptest::option::of(200i64..203), 0u64..40),
                0..60,
            ),
            split in 0usize..60,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let (c, out, _) = connector("{dimensions: [{name: m}, {name: t, default: x}]}");
                // Two batches, so series continue across consume calls.
                let split = split.min(spans.len());
                for part in [&spans[..split], &spans[split..]] {
                    c.consume(reference_traces(&request(part))).await.unwrap();
                }
                c.flush().await;
                let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
                prop_assert_eq!(observed(&reqs), model(&spans));
                Ok(())
            })?;
        }
    }
}

/// The replay driver's view: a flush is due `metrics_flush_interval` after the last one (in
/// data time) once spans were counted, not before; the flushed points carry that moment; a
/// flush with nothing new counted is not asked for (a replay's end terminates).
#[tokio::test]
async fn under_a_virtual_clock_flushes_are_due_every_interval_of_data_time_while_spans_flow() {
    let (c, out, clock) = connector("{metrics_flush_interval: 15s}");
    assert_eq!(c.next_virtual_deadline(), None, "nothing counted yet");
    clock.advance_to(T0 + 4_000 * MS);
    c.consume(spans(Some("checkout"), 0, 10)).await.unwrap();
    assert_eq!(c.next_virtual_deadline(), Some(T0 + 15_000 * MS));

    clock.advance_to(T0 + 15_000 * MS - 1);
    c.on_virtual_time().await;
    assert!(
        out.got.lock().unwrap().is_empty(),
        "not due a nanosecond early"
    );

    clock.advance_to(T0 + 15_000 * MS);
    c.on_virtual_time().await;
    let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
    assert_eq!(reqs.len(), 1);
    let dp = match &reqs[0].resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(Data::Sum(s)) => s.data_points[0].clone(),
        _ => panic!(),
    };
    assert_eq!(
        dp.time_unix_nano,
        T0 + 15_000 * MS,
        "stamped with the data time"
    );
    assert_eq!(summarize(&reqs).0.values().sum::<i64>(), 10);
    assert_eq!(
        c.next_virtual_deadline(),
        None,
        "nothing new since the flush"
    );

    // Spans 40 s later, after a quiet spell: more than an interval since the last flush, so
    // the consume that brings them flushes at once, them included.
    clock.advance_to(T0 + 55_000 * MS);
    c.consume(spans(Some("checkout"), 10, 5)).await.unwrap();
    let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
    assert_eq!(reqs.len(), 2, "a consume past the interval flushes inline");
    assert_eq!(
        summarize(&reqs[1..]).0.values().sum::<i64>(),
        15,
        "cumulative"
    );
    assert_eq!(c.next_virtual_deadline(), None);
}

/// A resource is identified by its attribute set: the same attributes in another order (and in
/// another payload) are one resource; the same key with a value of another type is another.
#[tokio::test]
async fn a_resource_is_its_attribute_set_whatever_the_order_and_payload() {
    fn int(k: &str, v: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
            ..Default::default()
        }
    }
    fn with_resource(attributes: Vec<KeyValue>, spans_of: Payload) -> Payload {
        let mut req =
            ExportTraceServiceRequest::decode(crate::otlp::encode_to_vec(&spans_of).as_slice())
                .unwrap();
        req.resource_spans[0].resource = Some(Resource {
            attributes,
            ..Default::default()
        });
        reference_traces(&req)
    }
    let (c, out, _) = connector("{}");
    let svc = || kv("service.name", "s");
    let pod = || kv("k8s.pod.name", "p");
    c.consume(with_resource(
        vec![svc(), pod(), int("n", 1)],
        spans(None, 0, 10),
    ))
    .await
    .unwrap();
    c.consume(with_resource(
        vec![int("n", 1), pod(), svc()],
        spans(None, 10, 10),
    ))
    .await
    .unwrap();
    c.consume(with_resource(
        vec![svc(), pod(), kv("n", "1")],
        spans(None, 20, 5),
    ))
    .await
    .unwrap();
    c.flush().await;
    let reqs: Vec<_> = out.got.lock().unwrap().iter().map(decode).collect();
    let mut calls_by_n: Vec<(String, i64)> = reqs[0]
        .resource_metrics
        .iter()
        .map(|rm| {
            let attrs = &rm.resource.as_ref().unwrap().attributes;
            let n = attrs.iter().find(|a| a.key == "n").unwrap().value.clone();
            let calls = match &rm.scope_metrics[0].metrics[0].data {
                Some(Data::Sum(s)) => s
                    .data_points
                    .iter()
                    .map(|dp| match dp.value {
                        Some(number_data_point::Value::AsInt(v)) => v,
                        _ => panic!(),
                    })
                    .sum(),
                _ => panic!(),
            };
            (format!("{:?}", n.unwrap().value.unwrap()), calls)
        })
        .collect();
    calls_by_n.sort();
    assert_eq!(
        calls_by_n,
        [
            ("IntValue(1)".to_string(), 20),
            ("StringValue(\"1\")".to_string(), 5)
        ]
    );
}
