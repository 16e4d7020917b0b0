//! Tail sampling on a virtual clock: decisions, late spans, latency edges, the Collector's
//! probabilistic hash, whole-trace export, early decisions, shutdown, and a property test of the
//! store's accounting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;

use super::policy::{hash_trace_id, probabilistic_threshold};
use super::*;
use crate::clock::VirtualClock;
use crate::component::{ComponentId, ConsumeError};
use crate::otlp::testing::reference_traces;
use crate::processors::test_support::Capture;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// A span for tests: trace and span ids are small numbers (big-endian in the id bytes).
#[derive(Clone, Debug)]
struct S {
    trace: u64,
    span: u64,
    start: u64,
    end: u64,
    status: i32,
    attrs: Vec<(&'static str, any_value::Value)>,
    service: &'static str,
    resource_attrs: Vec<(&'static str, any_value::Value)>,
    event: Option<&'static str>,
}

fn s(trace: u64, span: u64, start: u64, end: u64) -> S {
    S {
        trace,
        span,
        start,
        end,
        status: 0,
        attrs: vec![],
        service: "svc",
        resource_attrs: vec![],
        event: None,
    }
}

fn tid(trace: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&trace.to_be_bytes());
    id[0] = 0x5a; // never all-zero
    id
}

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn payload(spans: &[S]) -> Payload {
    // one ResourceSpans per (service, resource attrs) in order of first appearance
    let mut resources: Vec<ResourceSpans> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for x in spans {
        let key = format!("{}{:?}", x.service, x.resource_attrs);
        let i = match keys.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                keys.push(key);
                let mut attributes = vec![kv(
                    "service.name",
                    any_value::Value::StringValue(x.service.into()),
                )];
                attributes.extend(x.resource_attrs.iter().map(|(k, v)| kv(k, v.clone())));
                resources.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans::default()],
                    ..Default::default()
                });
                resources.len() - 1
            }
        };
        resources[i].scope_spans[0].spans.push(Span {
            trace_id: tid(x.trace).to_vec(),
            span_id: x.span.to_be_bytes().to_vec(),
            name: format!("op{}", x.span % 3),
            start_time_unix_nano: x.start,
            end_time_unix_nano: x.end,
            status: Some(Status {
                code: x.status,
                ..Default::default()
            }),
            attributes: x.attrs.iter().map(|(k, v)| kv(k, v.clone())).collect(),
            events: x
                .event
                .map(|name| opentelemetry_proto::tonic::trace::v1::span::Event {
                    name: name.into(),
                    time_unix_nano: x.start,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
    }
    reference_traces(&ExportTraceServiceRequest {
        resource_spans: resources,
    })
}

fn config(yaml: &str) -> TailSamplingConfig {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    let c: TailSamplingConfig = crate::component::parse_config(&v).unwrap();
    c.validate().unwrap();
    c
}

struct Harness {
    ts: TailSampling,
    out: Capture,
    clock: Arc<VirtualClock>,
    telemetry: Telemetry,
}

fn harness(yaml: &str, shards: usize) -> Harness {
    let clock = VirtualClock::new(T0);
    let out = Capture::default();
    let telemetry = Telemetry::new();
    let ts = TailSampling::new(
        &config(yaml),
        &ComponentId::parse("tail_sampling").unwrap(),
        Arc::new(out.clone()),
        clock.clone(),
        &telemetry,
        Options { shards },
    );
    Harness {
        ts,
        out,
        clock,
        telemetry,
    }
}

impl Harness {
    async fn send(&self, spans: &[S]) {
        self.ts.consume(payload(spans)).await.unwrap();
    }
    async fn at(&self, t: u64) {
        self.clock.advance_to(t);
        self.ts.fire_due().await;
    }
    /// (trace, span) of every exported span, per exported payload.
    fn exported(&self) -> Vec<Vec<(u64, u64)>> {
        self.out.got.lock().unwrap().iter().map(ids_of).collect()
    }
    fn exported_traces(&self) -> BTreeSet<u64> {
        self.exported()
            .into_iter()
            .flatten()
            .map(|(t, _)| t)
            .collect()
    }
    fn metric(&self, name: &str, labels: &[(&'static str, &str)]) -> f64 {
        let mut l = vec![("processor", "tail_sampling")];
        l.extend_from_slice(labels);
        self.telemetry.value(name, &l).unwrap_or(0.0)
    }
}

fn ids_of(p: &Payload) -> Vec<(u64, u64)> {
    let spans = p.table(Table::Spans);
    let t = spans
        .column_by_name("trace_id")
        .unwrap()
        .as_fixed_size_binary()
        .clone();
    let s = spans
        .column_by_name("span_id")
        .unwrap()
        .as_fixed_size_binary()
        .clone();
    (0..t.len())
        .map(|i| {
            (
                u64::from_be_bytes(t.value(i)[8..].try_into().unwrap()),
                u64::from_be_bytes(s.value(i).try_into().unwrap()),
            )
        })
        .collect()
}

const ERRORS_30S: &str = "
decision_wait: 30s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
";

#[tokio::test]
async fn an_error_span_arriving_25s_after_the_first_span_keeps_the_trace() {
    let h = harness(ERRORS_30S, 2);
    h.send(&[s(1, 1, T0, T0 + 10 * MS), s(2, 20, T0, T0 + 10 * MS)])
        .await;
    h.at(T0 + 25 * SEC).await;
    let mut err = s(1, 2, T0 + 25 * SEC, T0 + 25 * SEC + MS);
    err.status = 2;
    h.send(&[err, s(2, 21, T0 + 25 * SEC, T0 + 25 * SEC + MS)])
        .await;
    h.at(T0 + 29 * SEC).await;
    assert!(
        h.exported().is_empty(),
        "nothing is decided before decision_wait"
    );
    h.at(T0 + 30 * SEC).await;
    assert_eq!(
        h.exported(),
        vec![vec![(1, 1), (1, 2)]],
        "trace 1 whole, trace 2 not at all"
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_count_traces_sampled",
            &[
                ("policy", "errors"),
                ("sampled", "true"),
                ("decision", "sampled")
            ]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            &[("sampled", "false"), ("decision", "not_sampled")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_dropped_spans",
            &[("reason", "not_sampled")]
        ),
        2.0
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[]
        ),
        0.0
    );
}

#[tokio::test]
async fn a_span_arriving_after_the_decision_follows_the_cached_decision() {
    let h = harness(
        "decision_wait: 30s\ndecision_cache: {sampled_cache_size: 100, non_sampled_cache_size: 100}\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]",
        1,
    );
    let mut err = s(1, 1, T0, T0 + MS);
    err.status = 2;
    h.send(&[err, s(2, 20, T0, T0 + MS)]).await;
    h.at(T0 + 31 * SEC).await;
    assert_eq!(h.exported_traces(), BTreeSet::from([1]));
    // Late spans: the kept trace's go straight through, the dropped trace's are dropped, even
    // though neither late span has an error.
    h.clock.advance_to(T0 + 40 * SEC);
    h.send(&[
        s(1, 2, T0 + 40 * SEC, T0 + 40 * SEC + MS),
        s(2, 21, T0 + 40 * SEC, T0 + 40 * SEC + MS),
    ])
    .await;
    assert_eq!(h.exported(), vec![vec![(1, 1)], vec![(1, 2)]]);
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
            &[("sampled", "true")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_early_releases_from_cache_decision",
            &[("sampled", "false")]
        ),
        1.0
    );
    assert_eq!(
        h.metric("otelcol_processor_tail_sampling_new_trace_id_received", &[]),
        2.0
    );
    let text = h.telemetry.render();
    assert!(
        text.contains("otelcol_processor_tail_sampling_sampling_late_span_age_seconds_bucket{processor=\"tail_sampling\",le=\"10\"} 2\n"),
        "{text}"
    );
    // Nothing is buffered for the late spans.
    h.at(T0 + 100 * SEC).await;
    assert_eq!(h.exported().len(), 2);
}

#[tokio::test]
async fn without_decision_caches_recent_decisions_are_still_followed() {
    let h = harness(ERRORS_30S, 1);
    let mut err = s(1, 1, T0, T0 + MS);
    err.status = 2;
    h.send(&[err]).await;
    h.at(T0 + 30 * SEC).await;
    h.send(&[s(1, 2, T0 + 35 * SEC, T0 + 35 * SEC + MS)]).await;
    assert_eq!(h.exported(), vec![vec![(1, 1)], vec![(1, 2)]]);
}

/// A trace of two spans whose overall duration is `d` nanoseconds.
fn trace_of_duration(trace: u64, d: u64) -> Vec<S> {
    vec![
        s(trace, trace * 10, T0, T0 + d / 2),
        s(trace, trace * 10 + 1, T0 + d / 4, T0 + d),
    ]
}

#[tokio::test]
async fn latency_threshold_at_the_edges() {
    let h = harness(
        "decision_wait: 1s\npolicies: [{name: slow, type: latency, latency: {threshold_ms: 1000}}]",
        2,
    );
    // Go's Duration.Milliseconds() truncates: 999.999 ms is 999 ms.
    let cases = [
        (1, 999_999_999, false),
        (2, 1000 * MS, true),
        (3, 1000 * MS + 500_000, true),
        (4, 500 * MS, false),
    ];
    for (t, d, _) in cases {
        h.send(&trace_of_duration(t, d)).await;
    }
    h.at(T0 + 2 * SEC).await;
    let want: BTreeSet<u64> = cases.iter().filter(|c| c.2).map(|c| c.0).collect();
    assert_eq!(h.exported_traces(), want);
}

#[tokio::test]
async fn latency_with_an_upper_threshold_at_the_edges_and_in_arrival_order() {
    let h = harness(
        "decision_wait: 1s\npolicies: [{name: band, type: latency, latency: {threshold_ms: 1000, upper_threshold_ms: 2000}}]",
        1,
    );
    let cases = [
        (1, 1000 * MS, false),
        (2, 1001 * MS, true),
        (3, 2000 * MS, true),
        (4, 2001 * MS, false),
    ];
    for (t, d, _) in cases {
        h.send(&trace_of_duration(t, d)).await;
    }
    // The Collector checks after every span: a trace that was 1.5 s long after its first span
    // and 3 s after its second is sampled (the first prefix was in range) ...
    h.send(&[s(5, 50, T0, T0 + 1500 * MS), s(5, 51, T0, T0 + 3000 * MS)])
        .await;
    // ... but not in the other order.
    h.send(&[s(6, 61, T0, T0 + 3000 * MS), s(6, 60, T0, T0 + 1500 * MS)])
        .await;
    h.at(T0 + 2 * SEC).await;
    assert_eq!(h.exported_traces(), BTreeSet::from([2, 3, 5]));
}

#[test]
fn probabilistic_hash_and_threshold_agree_with_the_collector_on_known_trace_ids() {
    // Table computed by engine/testdata/tail_sampling/probabilistic_known_ids.py from the
    // Collector's published algorithm: opentelemetry-collector-contrib,
    // processor/tailsamplingprocessor/internal/sampling/probabilistic.go (hashTraceID: FNV-1a
    // 64 over salt then trace id; calculateThreshold: big.Float(MaxUint64) * ratio).
    let rows: Vec<serde_json::Value> = serde_json::from_str(include_str!(
        "../../../testdata/tail_sampling/probabilistic_known_ids.json"
    ))
    .unwrap();
    assert!(rows.len() > 800);
    let mut sampled = 0;
    for r in &rows {
        let hex = r["trace_id"].as_str().unwrap();
        let id: [u8; 16] = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let salt = r["hash_salt"].as_str().unwrap();
        let pct = r["sampling_percentage"].as_f64().unwrap();
        let seed = if salt.is_empty() {
            "default-hash-seed"
        } else {
            salt
        };
        let hash = hash_trace_id(seed.as_bytes(), &id);
        let threshold = probabilistic_threshold(pct);
        assert_eq!(format!("{hash:016x}"), r["hash"].as_str().unwrap(), "{r}");
        assert_eq!(
            format!("{threshold:016x}"),
            r["threshold"].as_str().unwrap(),
            "{r}"
        );
        assert_eq!(hash <= threshold, r["sampled"].as_bool().unwrap(), "{r}");
        sampled += usize::from(hash <= threshold);
    }
    assert!(sampled > 0 && sampled < rows.len());
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn probabilistic_keeps_half_of_100k_trace_ids_and_the_processor_keeps_exactly_those() {
    let mut st = 7u64;
    let ids: Vec<[u8; 16]> = (0..100_000)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&splitmix(&mut st).to_le_bytes());
            id[8..].copy_from_slice(&splitmix(&mut st).to_le_bytes());
            id
        })
        .collect();
    let mut policies = policy::build_all(&config("policies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]").policies);
    let batch = TraceBatch::new(&ids, &[], &[], T0);
    let (finals, counts) = policy::decide(&mut policies, &batch, false);
    let kept = finals.iter().filter(|f| **f == Final::Sampled).count();
    // Binomial(100k, 0.5): sigma = 158; ±1000 is > 6 sigma.
    assert!((49_000..=51_000).contains(&kept), "kept {kept} of 100000");
    assert_eq!(counts[0][&policy::Decision::Sampled].0, kept as u64);
    for (id, f) in ids.iter().zip(&finals) {
        let by_hash = hash_trace_id(b"default-hash-seed", id) <= probabilistic_threshold(50.0);
        assert_eq!(*f == Final::Sampled, by_hash);
    }
}

/// Kept spans were acknowledged when they came: a next component that refuses them for now (a
/// full sending queue) gets them again until it takes them, and none is dropped.
#[tokio::test(start_paused = true)]
async fn kept_spans_refused_for_now_are_offered_again_not_dropped() {
    let h = harness(
        "decision_wait: 5s\npolicies: [{name: all, type: always_sample}]",
        2,
    );
    h.send(&[
        s(1, 10, T0, T0 + MS),
        s(2, 20, T0, T0 + MS),
        s(2, 21, T0, T0 + MS),
    ])
    .await;
    *h.out.refuse.lock().unwrap() = Some(ConsumeError::Unavailable("sending queue is full".into()));
    let lift_after_a_while = async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(h.exported().is_empty(), "refused, so nothing is out yet");
        *h.out.refuse.lock().unwrap() = None;
    };
    tokio::join!(h.at(T0 + 10 * SEC), lift_after_a_while);
    let mut got: Vec<(u64, u64)> = h.exported().into_iter().flatten().collect();
    got.sort_unstable();
    assert_eq!(got, [(1, 10), (2, 20), (2, 21)]);
    assert_eq!(
        h.metric(
            "otelcol_processor_dropped_spans",
            &[("reason", "export_failed")]
        ),
        0.0
    );
}

#[tokio::test]
async fn every_span_of_a_kept_trace_leaves_together_and_none_of_a_dropped_one() {
    let h = harness(
        "decision_wait: 5s\npolicies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]",
        4,
    );
    // 400 traces of 5 spans each, interleaved over 5 requests one second apart.
    for round in 0..5u64 {
        h.clock.advance_to(T0 + round * SEC);
        let spans: Vec<S> = (0..400u64)
            .map(|t| {
                s(
                    t + 1,
                    (t + 1) * 100 + round,
                    T0 + round * SEC,
                    T0 + round * SEC + MS,
                )
            })
            .collect();
        h.send(&spans).await;
    }
    h.at(T0 + 60 * SEC).await;
    let mut payload_of: BTreeMap<u64, usize> = BTreeMap::new();
    let mut spans_of: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (i, p) in h.exported().iter().enumerate() {
        for &(t, sp) in p {
            assert_eq!(
                *payload_of.entry(t).or_insert(i),
                i,
                "trace {t} split across payloads"
            );
            assert!(
                spans_of.entry(t).or_default().insert(sp),
                "span {sp} exported twice"
            );
        }
    }
    let want: BTreeSet<u64> = (1..=400)
        .filter(|t| hash_trace_id(b"default-hash-seed", &tid(*t)) <= probabilistic_threshold(50.0))
        .collect();
    assert_eq!(spans_of.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(spans_of.values().all(|s| s.len() == 5));
    let kept = want.len() as f64 * 5.0;
    assert_eq!(
        h.metric(
            "otelcol_processor_outgoing_items",
            &[("otel_signal", "traces")]
        ),
        kept
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_dropped_spans",
            &[("reason", "not_sampled")]
        ),
        2000.0 - kept
    );
}

#[tokio::test]
async fn policies_combine_as_in_the_collector() {
    // drop wins over sampled; inverted string match; and; composite budget.
    let h = harness(
        r#"
decision_wait: 1s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - name: no-health
    type: drop
    drop: {drop_sub_policy: [{name: health, type: string_attribute, string_attribute: {key: url.path, values: ["/health.*"], enabled_regex_matching: true}}]}
  - name: checkout-and-big
    type: and
    and: {and_sub_policy: [
      {name: svc, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}},
      {name: big, type: numeric_attribute, numeric_attribute: {key: http.response.body.size, min_value: 1000}}]}
  - {name: not-debug, type: boolean_attribute, boolean_attribute: {key: debug, value: true, invert_match: true}}
"#,
        1,
    );
    use any_value::Value::*;
    let mut t1 = s(1, 1, T0, T0 + MS); // error + /health -> dropped
    t1.status = 2;
    t1.attrs = vec![
        ("url.path", StringValue("/healthz".into())),
        ("debug", BoolValue(true)),
    ];
    let mut t2 = s(2, 2, T0, T0 + MS); // checkout (resource) and big (span) -> sampled
    t2.service = "checkout";
    t2.attrs = vec![("http.response.body.size", IntValue(5000))];
    let mut t3 = s(3, 3, T0, T0 + MS); // checkout but small; debug=true -> InvertNotSampled
    t3.service = "checkout";
    t3.attrs = vec![
        ("http.response.body.size", IntValue(10)),
        ("debug", BoolValue(true)),
    ];
    // nothing matches; debug absent -> InvertSampled, but `errors` said NotSampled -> not sampled
    let t4 = s(4, 4, T0, T0 + MS);
    let mut t5 = s(5, 5, T0, T0 + MS); // checkout, body size as a string reads as 0 -> not in range
    t5.service = "checkout";
    t5.attrs = vec![
        ("http.response.body.size", StringValue("5000".into())),
        ("debug", BoolValue(true)),
    ];
    let mut t6 = s(6, 6, T0, T0 + MS); // error, but debug=true (inverted not sampled wins)
    t6.status = 2;
    t6.attrs = vec![("debug", BoolValue(true))];
    h.send(&[t1, t2, t3, t4, t5, t6]).await;
    h.at(T0 + 2 * SEC).await;
    let mut t7 = s(7, 7, T0, T0 + MS); // checkout and big, but debug=true: InvertNotSampled wins
    t7.service = "checkout";
    t7.attrs = vec![
        ("http.response.body.size", IntValue(5000)),
        ("debug", BoolValue(true)),
    ];
    h.send(&[t7]).await;
    h.at(T0 + 2 * SEC).await;
    assert_eq!(h.exported_traces(), BTreeSet::from([2]));
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            &[("sampled", "false"), ("decision", "dropped")]
        ),
        1.0
    );
    // An inverted match alone samples when no policy said NotSampled.
    let inv = harness(
        "decision_wait: 1s\npolicies: [{name: nd, type: boolean_attribute, boolean_attribute: {key: debug, value: true, invert_match: true}}]",
        1,
    );
    let mut debug = s(2, 2, T0, T0 + MS);
    debug.resource_attrs = vec![("debug", BoolValue(true))];
    inv.send(&[s(1, 1, T0, T0 + MS), debug]).await;
    inv.at(T0 + 2 * SEC).await;
    assert_eq!(
        inv.exported_traces(),
        BTreeSet::from([1]),
        "resource attributes count too"
    );
    // After the drop policy dropped trace 1, later policies did not evaluate it.
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_count_traces_sampled",
            &[
                ("policy", "errors"),
                ("sampled", "true"),
                ("decision", "sampled")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn ottl_condition_samples_traces_with_a_matching_span_or_span_event() {
    let h = harness(
        r#"
decision_wait: 1s
policies:
  - name: vip-or-retry
    type: ottl_condition
    ottl_condition:
      error_mode: ignore
      span: ['attributes["customer.tier"] == "vip" and kind == SPAN_KIND_UNSPECIFIED']
      spanevent: ['name == "retry"']
"#,
        2,
    );
    use any_value::Value::*;
    let mut vip = s(1, 1, T0, T0 + MS);
    vip.attrs = vec![("customer.tier", StringValue("vip".into()))];
    let mut retried = s(2, 2, T0, T0 + MS);
    retried.event = Some("retry");
    let mut other = s(3, 3, T0, T0 + MS);
    other.attrs = vec![("customer.tier", StringValue("free".into()))];
    other.event = Some("log");
    h.send(&[
        vip,
        s(1, 10, T0, T0 + MS),
        retried,
        other,
        s(4, 4, T0, T0 + MS),
    ])
    .await;
    h.at(T0 + 2 * SEC).await;
    assert_eq!(h.exported(), vec![vec![(1, 1), (1, 10), (2, 2)]]);
}

#[tokio::test]
async fn rate_limiting_and_composite_budget_spans_per_second() {
    let h = harness(
        r#"
decision_wait: 1s
policies:
  - name: budget
    type: composite
    composite:
      max_total_spans_per_second: 10
      composite_sub_policy:
        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
        - {name: rest, type: always_sample}
      rate_allocation: [{policy: errors, percent: 50}, {policy: rest, percent: 50}]
"#,
        1,
    );
    // 3 error traces of 2 spans (budget 5: two fit), 4 plain traces of 2 spans (two fit).
    let mut spans = Vec::new();
    for t in 1..=7u64 {
        for k in 0..2 {
            let mut x = s(t, t * 10 + k, T0, T0 + MS);
            x.status = if t <= 3 { 2 } else { 0 };
            spans.push(x);
        }
    }
    h.send(&spans).await;
    h.at(T0 + 2 * SEC).await;
    assert_eq!(h.exported_traces(), BTreeSet::from([1, 2, 4, 5]));

    let r = harness(
        "decision_wait: 1s\npolicies: [{name: rl, type: rate_limiting, rate_limiting: {spans_per_second: 3}}]",
        1,
    );
    // Burst is 2 x 3 = 6 spans: traces of 4 and 2 spans pass, the third (2 spans) does not.
    let mut spans = Vec::new();
    for (t, n) in [(1u64, 4u64), (2, 2), (3, 2)] {
        spans.extend((0..n).map(|k| s(t, t * 10 + k, T0, T0 + MS)));
    }
    r.send(&spans).await;
    r.at(T0 + 2 * SEC).await;
    assert_eq!(r.exported_traces(), BTreeSet::from([1, 2]));
}

#[tokio::test]
async fn past_num_traces_the_oldest_traces_are_decided_early_and_counted() {
    let h = harness(
        "decision_wait: 30s\nnum_traces: 10\npolicies: [{name: all, type: always_sample}]",
        1,
    );
    for t in 0..10u64 {
        h.clock.advance_to(T0 + t * SEC);
        h.send(&[s(t + 1, t + 1, T0 + t * SEC, T0 + t * SEC + MS)])
            .await;
    }
    assert!(h.exported().is_empty());
    h.clock.advance_to(T0 + 10 * SEC);
    h.send(&[s(11, 11, T0 + 10 * SEC, T0 + 10 * SEC + MS)])
        .await;
    assert_eq!(
        h.exported(),
        vec![vec![(1, 1)]],
        "the oldest trace went first, decided, not dropped"
    );
    assert_eq!(
        h.metric("otelcol_processor_tail_sampling_traces_decided_early", &[]),
        1.0
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[]
        ),
        10.0
    );
}

/// Sealing stores spans in a fraction of their Arrow size; kept traces are released at that
/// size again. The memory account sees the difference as expected growth from the moment
/// the spans are sealed until they are released, so the limiter does not admit what the
/// release would not have room for.
#[tokio::test]
async fn sealed_spans_count_at_their_release_size_until_released() {
    let h = harness(
        "decision_wait: 2s\npolicies: [{name: all, type: always_sample}]",
        1,
    );
    let account = h.telemetry.memory().clone();
    let mut spans: Vec<S> = (1..=5000u64)
        .map(|t| s(t / 50 + 1, t, T0, T0 + MS))
        .collect();
    for x in &mut spans {
        x.attrs = vec![(
            "http.route",
            any_value::Value::StringValue(format!("/api/v1/items/{}", x.span % 7)),
        )];
    }
    let arrow = payload(&spans).memory_size() as f64;
    // More than SEAL_SPANS: sealed as it is buffered.
    h.send(&spans).await;
    let compact = h.metric("otelcol_processor_tail_sampling_buffered_bytes", &[]);
    let growth = account.expected_growth() as f64;
    assert!(
        compact < 0.8 * arrow,
        "sealed: {compact} B held for {arrow} B of Arrow tables"
    );
    assert!(growth > 0.0);
    // Held + growth = what the spans took when they came (+ the trace index).
    let total = compact + growth;
    assert!(
        (arrow..=arrow * 1.1 + 101.0 * 56.0).contains(&total),
        "held {compact} + growth {growth} for {arrow} B of Arrow tables"
    );
    assert_eq!(account.used(), account.held() + account.expected_growth());
    h.at(T0 + 3 * SEC).await;
    assert_eq!(h.exported_traces().len(), 101);
    assert_eq!(account.expected_growth(), 0);
    assert_eq!(account.held(), 0);
}

/// Only what is kept is released: the growth expected of a bucket follows the share of spans
/// the policies have been keeping.
#[tokio::test]
async fn expected_growth_follows_the_share_of_spans_kept() {
    let h = harness(ERRORS_30S, 1);
    let account = h.telemetry.memory().clone();
    let mut growths = Vec::new();
    for round in 0..10u64 {
        let now = T0 + round * 31 * SEC;
        h.clock.advance_to(now);
        // No errors: nothing is kept.
        let spans: Vec<S> = (1..=5000u64)
            .map(|t| s(round * 1000 + t / 50 + 1, round * 10_000 + t, now, now + MS))
            .collect();
        h.send(&spans).await;
        growths.push(account.expected_growth());
        h.at(now + 30 * SEC + SEC).await;
        assert_eq!(account.expected_growth(), 0, "round {round}");
    }
    assert!(h.exported_traces().is_empty());
    // Until a decision is seen, all of it is expected back; after nine decisions keeping
    // nothing, a tenth of that at most (0.75^9 of it).
    assert!(growths[0] > 0);
    assert!(growths[9] * 10 < growths[0], "growth per round {growths:?}");
}

#[tokio::test]
async fn shutdown_decides_and_flushes_every_buffered_trace() {
    let h = harness(ERRORS_30S, 3);
    let mut spans = Vec::new();
    for t in 1..=1000u64 {
        let mut x = s(t, t, T0, T0 + MS);
        x.status = if t % 2 == 0 { 2 } else { 1 };
        spans.push(x);
    }
    h.send(&spans).await;
    assert!(h.metric("otelcol_processor_tail_sampling_buffered_bytes", &[]) > 0.0);
    h.ts.shutdown().await;
    assert_eq!(
        h.exported_traces(),
        (1..=1000).filter(|t| t % 2 == 0).collect()
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_sampling_traces_on_memory",
            &[]
        ),
        0.0
    );
    assert_eq!(
        h.metric("otelcol_processor_tail_sampling_buffered_spans", &[]),
        0.0
    );
    assert_eq!(
        h.metric("otelcol_processor_tail_sampling_buffered_bytes", &[]),
        0.0
    );
    assert!(matches!(
        h.ts.consume(payload(&[s(5000, 1, T0, T0)])).await,
        Err(ConsumeError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_large_backlog_leaves_in_bounded_payloads_at_shutdown_and_on_a_tick() {
    // More kept spans than one release may carry, in one bucket: they used to leave as one
    // payload, as large as the backlog.
    let n = 2 * RELEASE_MAX_SPANS as u64 + 100;
    let all: Vec<S> = (1..=n).map(|t| s(t / 3 + 1, t, T0, T0 + MS)).collect();
    for at_shutdown in [true, false] {
        let h = harness(
            "decision_wait: 30s\npolicies: [{name: all, type: always_sample}]",
            1,
        );
        h.send(&all).await;
        if at_shutdown {
            h.ts.shutdown().await;
        } else {
            h.at(T0 + 30 * SEC).await;
        }
        let sizes: Vec<usize> = h.exported().iter().map(Vec::len).collect();
        assert!(
            sizes.len() >= 3 && sizes.iter().all(|&k| k <= RELEASE_MAX_SPANS),
            "payload sizes {sizes:?}"
        );
        let mut spans: Vec<u64> = h.exported().into_iter().flatten().map(|(_, s)| s).collect();
        spans.sort_unstable();
        assert_eq!(spans, (1..=n).collect::<Vec<_>>(), "every kept span, once");
    }
}

#[tokio::test]
async fn shutdown_can_drop_pending_traces_instead_and_counts_them() {
    let h = harness(
        "decision_wait: 30s\ndrop_pending_traces_on_shutdown: true\npolicies: [{name: all, type: always_sample}]",
        2,
    );
    h.send(&[s(1, 1, T0, T0 + MS), s(2, 2, T0, T0 + MS)]).await;
    h.ts.shutdown().await;
    assert!(h.exported().is_empty());
    assert_eq!(
        h.metric("otelcol_processor_dropped_spans", &[("reason", "shutdown")]),
        2.0
    );
}

#[tokio::test]
async fn a_captured_hour_replays_on_a_data_driven_clock_without_waiting() {
    let clock = VirtualClock::driven_by_data(0);
    let out = Capture::default();
    let telemetry = Telemetry::new();
    let ts = TailSampling::new(
        &config(
            "decision_wait: 30s\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]",
        ),
        &ComponentId::parse("tail_sampling").unwrap(),
        Arc::new(out.clone()),
        clock.clone(),
        &telemetry,
        Options { shards: 2 },
    );
    // One hour of traffic, one request per second, 10 traces per request; every trace gets a
    // second span 20 s later, every 7th trace's late span is an error.
    let mut total = 0usize;
    for sec in 0..3600u64 {
        let now = T0 + sec * SEC;
        let mut spans: Vec<S> = (0..10)
            .map(|k| s(sec * 10 + k, (sec * 10 + k) * 2, now, now + MS))
            .collect();
        if sec >= 20 {
            for k in 0..10 {
                let t = (sec - 20) * 10 + k;
                let mut late = s(t, t * 2 + 1, now, now + MS);
                late.status = if t % 7 == 0 { 2 } else { 0 };
                spans.push(late);
            }
        }
        total += spans.len();
        ts.consume(payload(&spans)).await.unwrap();
    }
    assert_eq!(clock.now_unix_nanos(), T0 + 3599 * SEC + MS);
    let decided_before_shutdown: usize = out.items();
    ts.shutdown().await;
    let kept: BTreeMap<u64, usize> =
        out.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(ids_of)
            .fold(BTreeMap::new(), |mut m, (t, _)| {
                *m.entry(t).or_default() += 1;
                m
            });
    let want: BTreeSet<u64> = (0..35_800).filter(|t| t % 7 == 0).collect();
    assert_eq!(kept.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(
        kept.values().all(|n| *n == 2),
        "every kept trace has both spans"
    );
    assert!(decided_before_shutdown as f64 > 0.9 * (want.len() * 2) as f64);
    let dropped = telemetry
        .value(
            "otelcol_processor_dropped_spans",
            &[("processor", "tail_sampling"), ("reason", "not_sampled")],
        )
        .unwrap();
    assert_eq!(out.items() + dropped as usize, total);
}

#[test]
fn config_errors_name_the_policy_and_what_is_wrong() {
    let err = |yaml: &str| {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        TailSamplingFactory
            .parse_config(&v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err(
        "policies: [{name: o, type: ottl_condition, ottl_condition: {span: ['attributes[\"a\"] === 1']}}]",
    );
    assert!(e.contains("policies[0].ottl_condition.span[0]: "), "{e}");
    let e =
        err("policies: [{name: o, type: ottl_condition, ottl_condition: {span: ['Nope(name)']}}]");
    assert!(
        e.contains("policies[0].ottl_condition.span[0]: ") && e.contains("Nope"),
        "{e}"
    );
    let e = err("policies: [{name: o, type: ottl_condition, ottl_condition: {}}]");
    assert!(
        e.contains("expected at least one span or spanevent condition"),
        "{e}"
    );
    let e = err("policies: [{name: t, type: trace_state}]");
    assert!(e.contains("not supported by sluice yet"), "{e}");
    let e = err("policies: [{name: t, type: nope}]");
    assert!(e.contains("unknown policy type \"nope\""), "{e}");
    let e = err("policies: [{name: s, type: status_code, status_code: {status_codes: [BAD]}}]");
    assert!(
        e.contains("policies[0].status_code.status_codes[0]: unknown status code \"BAD\""),
        "{e}"
    );
    let e = err("policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]");
    assert!(e.contains("duplicate policy name"), "{e}");
    let e = err(
        "policies: [{name: a, type: and, and: {and_sub_policy: [{name: d, type: drop, drop: {drop_sub_policy: [{name: x, type: always_sample}]}}]}}]",
    );
    assert!(
        e.contains("and.and_sub_policy[0].type: a \"drop\" policy cannot be nested here"),
        "{e}"
    );
    let e = err("decision_wait: 30s");
    assert!(e.contains("policies"), "{e}");
    let e = err("policies: [{name: a, type: always_sample}]\nnum_tracess: 5");
    assert!(e.contains("unknown field `num_tracess`"), "{e}");
}

/// One step of the property test: spans of some traces (small pool, so traces recur and
/// late spans happen) arriving at some time offset.
#[derive(Clone, Debug)]
struct Step {
    advance_ms: u64,
    spans: Vec<(u64, bool)>, // (trace, error?)
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        0u64..4000,
        prop::collection::vec((0u64..40, prop::bool::weighted(0.1)), 1..30),
    )
        .prop_map(|(advance_ms, spans)| Step { advance_ms, spans });
    prop::collection::vec(step, 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every span is exported exactly once or counted as dropped; a trace is exported only if
    /// the policies keep it, and then every span that was buffered for it leaves together.
    #[test]
    fn every_span_is_exported_once_or_counted_as_dropped(
        steps in arb_steps(),
        shards in 1usize..4,
        cache in prop::bool::ANY,
        num_traces in 3u64..50,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cache = if cache { "decision_cache: {sampled_cache_size: 1000, non_sampled_cache_size: 1000}\n" } else { "" };
            let h = harness(&format!("decision_wait: 3s\nnum_traces: {num_traces}\n{cache}policies:\n  - {{name: e, type: status_code, status_code: {{status_codes: [ERROR]}}}}\n  - {{name: p, type: probabilistic, probabilistic: {{sampling_percentage: 30}}}}\n"), shards);
            let mut sent = 0usize;
            let mut next_span = 0u64;
            let mut now = T0;
            for step in &steps {
                now += step.advance_ms * MS;
                h.clock.advance_to(now);
                h.ts.fire_due().await;
                let spans: Vec<S> = step.spans.iter().map(|&(t, e)| {
                    next_span += 1;
                    let mut x = s(t, next_span, now, now + MS);
                    x.status = if e { 2 } else { 0 };
                    x
                }).collect();
                sent += spans.len();
                h.send(&spans).await;
            }
            h.ts.shutdown().await;
            let exported: Vec<(u64, u64)> = h.exported().into_iter().flatten().collect();
            let unique: BTreeSet<u64> = exported.iter().map(|x| x.1).collect();
            prop_assert_eq!(unique.len(), exported.len(), "a span was exported twice");
            let dropped = h.metric("otelcol_processor_dropped_spans", &[("reason", "not_sampled")]) as usize;
            prop_assert_eq!(exported.len() + dropped, sent);
            prop_assert_eq!(h.metric("otelcol_processor_dropped_spans", &[("reason", "export_failed")]), 0.0);
            prop_assert_eq!(h.metric("otelcol_processor_tail_sampling_buffered_spans", &[]), 0.0);
            prop_assert_eq!(h.metric("otelcol_processor_tail_sampling_buffered_bytes", &[]), 0.0);
            // ... and so is its share of the memory account the memory limiter reads.
            prop_assert_eq!(h.telemetry.memory().held(), 0);
            prop_assert_eq!(h.telemetry.memory().expected_growth(), 0);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_ticker_fires_decisions_on_the_wall_clock() {
    let out = Capture::default();
    let ts = TailSampling::new(
        &config("decision_wait: 200ms\npolicies: [{name: all, type: always_sample}]"),
        &ComponentId::parse("tail_sampling").unwrap(),
        Arc::new(out.clone()),
        Arc::new(crate::clock::WallClock),
        &Telemetry::new(),
        Options::default(),
    );
    ts.start().await.unwrap();
    let now = crate::clock::WallClock.now_unix_nanos();
    ts.consume(payload(&[s(1, 1, now, now + MS)]))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while out.items() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no decision within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ts.shutdown().await;
    assert_eq!(out.items(), 1);
}

#[test]
fn decision_tallies_index_decisions_by_declaration_order() {
    for (i, d) in policy::Decision::ALL.iter().enumerate() {
        assert_eq!(*d as usize, i, "{d:?}");
    }
}

/// The replay driver's view: `next_virtual_deadline` is the moment the first buffered trace
/// is due (its `decision_wait` in data time, on the 100 ms tick), nothing is decided a nanosecond
/// before it, and `on_virtual_time` at that moment decides it.
#[tokio::test]
async fn the_next_virtual_deadline_is_when_the_first_trace_is_decided() {
    let h = harness(ERRORS_30S, 2);
    assert_eq!(h.ts.next_virtual_deadline(), None, "nothing buffered");
    h.send(&[s(1, 1, T0, T0 + 10 * MS)]).await;
    h.clock.advance_to(T0 + 5 * SEC);
    h.send(&[s(2, 2, T0 + 5 * SEC, T0 + 5 * SEC + 10 * MS)])
        .await;

    let first = h.ts.next_virtual_deadline().expect("a trace waits on time");
    assert!(
        (T0 + 30 * SEC..=T0 + 30 * SEC + MAX_TICK_NS).contains(&first),
        "decision_wait after the first span, on the tick: {first}"
    );
    h.clock.advance_to(first - 1);
    h.ts.on_virtual_time().await;
    assert_eq!(
        h.ts.next_virtual_deadline(),
        Some(first),
        "still due at the same moment"
    );
    assert!(h.out.got.lock().unwrap().is_empty());

    h.clock.advance_to(first);
    h.ts.on_virtual_time().await;
    let second = h.ts.next_virtual_deadline().expect("trace 2 still waits");
    assert_eq!(
        second,
        first + 5 * SEC,
        "the second trace, 5 s of data time later"
    );
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            &[("sampled", "false"), ("decision", "not_sampled")]
        ),
        1.0,
        "trace 1 decided (no error: not sampled)"
    );

    h.clock.advance_to(second);
    h.ts.on_virtual_time().await;
    assert_eq!(h.ts.next_virtual_deadline(), None, "nothing left waiting");
    assert_eq!(
        h.metric(
            "otelcol_processor_tail_sampling_global_count_traces_sampled",
            &[("sampled", "false"), ("decision", "not_sampled")]
        ),
        2.0
    );
}

#[tokio::test]
async fn kept_spans_of_a_bucket_of_several_segments_leave_once_in_order_and_bounded() {
    // Enough spans in one bucket for several sealed segments (sealed every SEAL_SPANS), half of
    // them kept: every kept span leaves once, in arrival order, in payloads of at most
    // RELEASE_MAX_SPANS, more than one of them.
    let n = 6 * crate::processors::tail_sampling::store::SEAL_SPANS as u64;
    let all: Vec<S> = (1..=n).map(|t| s(t, t, T0, T0 + MS)).collect();
    let h = harness(
        "decision_wait: 30s\npolicies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}]",
        1,
    );
    for chunk in all.chunks(500) {
        h.send(chunk).await;
    }
    h.at(T0 + 30 * SEC).await;
    let sizes: Vec<usize> = h.exported().iter().map(Vec::len).collect();
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|&k| k <= RELEASE_MAX_SPANS),
        "payload sizes {sizes:?}"
    );
    let kept = h.metric(
        "otelcol_processor_tail_sampling_count_spans_sampled",
        &[
            ("policy", "half"),
            ("sampled", "true"),
            ("decision", "sampled"),
        ],
    );
    let mut spans: Vec<u64> = h.exported().into_iter().flatten().map(|(_, s)| s).collect();
    assert!(kept > 0.0);
    assert_eq!(spans.len() as f64, kept);
    let before = spans.clone();
    spans.sort_unstable();
    spans.dedup();
    assert_eq!(spans.len(), before.len(), "every kept span once");
    assert_eq!(spans, before, "in arrival order");
}
