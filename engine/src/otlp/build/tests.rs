//! The builder against the reference converter: a random tree of resources, scopes, metrics
//! and points built with [`MetricsBuilder`] must hold exactly what the same tree written as an
//! OTLP request (empty metrics, scopes and resources left out, as the builder does) decodes to.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;

use super::*;
use crate::otlp::testing::{assert_payload_eq, reference_metrics};

#[derive(Clone, Debug)]
enum TestAttr {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

#[derive(Clone, Debug)]
struct TestPoint {
    start: u64,
    time: u64,
    value: NumberValue,
    attrs: Vec<(&'static str, TestAttr)>,
}

#[derive(Clone, Debug)]
struct TestMetric {
    spec: MetricSpec<'static>,
    points: Vec<TestPoint>,
}

#[derive(Clone, Debug)]
struct TestScope {
    name: &'static str,
    version: &'static str,
    metrics: Vec<TestMetric>,
}

#[derive(Clone, Debug)]
struct TestResource {
    attrs: Vec<(&'static str, TestAttr)>,
    scopes: Vec<TestScope>,
}

const KEYS: [&str; 4] = ["k8s.pod.name", "interface", "direction", "k8s.node.name"];

fn arb_attr() -> impl Strategy<Value = TestAttr> {
    prop_oneof![
        "[a-z0-9.-]{0,12}".prop_map(TestAttr::Str),
        "\\PC{0,4}".prop_map(TestAttr::Str),
        any::<i64>().prop_map(TestAttr::Int),
        any::<f64>().prop_map(TestAttr::Double),
        any::<bool>().prop_map(TestAttr::Bool),
    ]
}

fn arb_attrs() -> impl Strategy<Value = Vec<(&'static str, TestAttr)>> {
    prop::collection::vec((prop::sample::select(&KEYS[..]), arb_attr()), 0..4)
}

fn arb_spec() -> impl Strategy<Value = MetricSpec<'static>> {
    let kind = prop_oneof![
        Just(NumberKind::Gauge),
        (
            prop::sample::select(&[Temporality::Cumulative, Temporality::Delta][..]),
            any::<bool>()
        )
            .prop_map(|(temporality, monotonic)| NumberKind::Sum {
                temporality,
                monotonic
            }),
    ];
    (
        prop::sample::select(&["container.cpu.time", "k8s.pod.memory.usage", ""][..]),
        prop::sample::select(&["CPU time", ""][..]),
        prop::sample::select(&["s", "By", "{cpu}", ""][..]),
        kind,
    )
        .prop_map(|(name, description, unit, kind)| MetricSpec {
            name,
            description,
            unit,
            kind,
        })
}

fn arb_point() -> impl Strategy<Value = TestPoint> {
    let value = prop_oneof![
        any::<i64>().prop_map(NumberValue::Int),
        any::<f64>().prop_map(NumberValue::Double),
    ];
    (any::<u64>(), any::<u64>(), value, arb_attrs()).prop_map(|(start, time, value, attrs)| {
        TestPoint {
            start,
            time,
            value,
            attrs,
        }
    })
}

fn arb_tree() -> impl Strategy<Value = Vec<TestResource>> {
    let metric = (arb_spec(), prop::collection::vec(arb_point(), 0..3))
        .prop_map(|(spec, points)| TestMetric { spec, points });
    let scope = (
        prop::sample::select(&["scope-a", ""][..]),
        prop::sample::select(&["1.0", ""][..]),
        prop::collection::vec(metric, 0..3),
    )
        .prop_map(|(name, version, metrics)| TestScope {
            name,
            version,
            metrics,
        });
    let resource = (arb_attrs(), prop::collection::vec(scope, 0..3))
        .prop_map(|(attrs, scopes)| TestResource { attrs, scopes });
    prop::collection::vec(resource, 0..4)
}

fn attr_value(a: &TestAttr) -> AttrValue<'_> {
    match a {
        TestAttr::Str(s) => AttrValue::Str(s),
        TestAttr::Int(i) => AttrValue::Int(*i),
        TestAttr::Double(d) => AttrValue::Double(*d),
        TestAttr::Bool(b) => AttrValue::Bool(*b),
    }
}

fn key_values(attrs: &[(&'static str, TestAttr)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(match v {
                    TestAttr::Str(s) => any_value::Value::StringValue(s.clone()),
                    TestAttr::Int(i) => any_value::Value::IntValue(*i),
                    TestAttr::Double(d) => any_value::Value::DoubleValue(*d),
                    TestAttr::Bool(b) => any_value::Value::BoolValue(*b),
                }),
            }),
            ..Default::default()
        })
        .collect()
}

fn build(tree: &[TestResource]) -> Result<Payload, BuildError> {
    let mut b = MetricsBuilder::new();
    for r in tree {
        b.resource();
        for (k, v) in &r.attrs {
            b.resource_attr(k, attr_value(v));
        }
        for s in &r.scopes {
            b.scope(s.name, s.version);
            for m in &s.metrics {
                b.metric(m.spec);
                for p in &m.points {
                    b.point(p.start, p.time, p.value);
                    for (k, v) in &p.attrs {
                        b.point_attr(k, attr_value(v));
                    }
                }
            }
        }
    }
    b.finish()
}

/// The same tree as an OTLP request, without what has no points under it.
fn request(tree: &[TestResource]) -> ExportMetricsServiceRequest {
    let resource_metrics = tree
        .iter()
        .filter_map(|r| {
            let scope_metrics: Vec<ScopeMetrics> = r
                .scopes
                .iter()
                .filter_map(|s| {
                    let metrics: Vec<Metric> = s
                        .metrics
                        .iter()
                        .filter(|m| !m.points.is_empty())
                        .map(|m| {
                            let data_points = m
                                .points
                                .iter()
                                .map(|p| NumberDataPoint {
                                    attributes: key_values(&p.attrs),
                                    start_time_unix_nano: p.start,
                                    time_unix_nano: p.time,
                                    value: Some(match p.value {
                                        NumberValue::Int(i) => number_data_point::Value::AsInt(i),
                                        NumberValue::Double(d) => {
                                            number_data_point::Value::AsDouble(d)
                                        }
                                    }),
                                    ..Default::default()
                                })
                                .collect();
                            let data = match m.spec.kind {
                                NumberKind::Gauge => metric::Data::Gauge(Gauge { data_points }),
                                NumberKind::Sum {
                                    temporality,
                                    monotonic,
                                } => metric::Data::Sum(Sum {
                                    data_points,
                                    aggregation_temporality: temporality as i32,
                                    is_monotonic: monotonic,
                                }),
                            };
                            Metric {
                                name: m.spec.name.into(),
                                description: m.spec.description.into(),
                                unit: m.spec.unit.into(),
                                data: Some(data),
                                ..Default::default()
                            }
                        })
                        .collect();
                    (!metrics.is_empty()).then(|| ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: s.name.into(),
                            version: s.version.into(),
                            ..Default::default()
                        }),
                        metrics,
                        ..Default::default()
                    })
                })
                .collect();
            (!scope_metrics.is_empty()).then(|| ResourceMetrics {
                resource: Some(Resource {
                    attributes: key_values(&r.attrs),
                    ..Default::default()
                }),
                scope_metrics,
                ..Default::default()
            })
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn builds_what_the_reference_converter_makes_of_the_same_request(tree in arb_tree()) {
        let built = build(&tree).expect("a well-ordered build succeeds");
        built.validate().expect("invariants hold");
        assert_payload_eq(&built, &reference_metrics(&request(&tree)));
    }
}

#[test]
fn nothing_without_points_is_emitted() {
    let mut b = MetricsBuilder::new();
    b.resource();
    b.resource_attr("k8s.volume.name", AttrValue::Str("empty"));
    b.scope("s", "1");
    b.metric(MetricSpec {
        name: "m",
        description: "",
        unit: "1",
        kind: NumberKind::Gauge,
    });
    let p = b.finish().unwrap();
    assert_eq!(p.table(Table::Resources).num_rows(), 0);
    assert_eq!(p.table(Table::ResourceAttrs).num_rows(), 0);
    assert_eq!(p.table(Table::Metrics).num_rows(), 0);
    assert!(p.is_empty());
}

#[test]
fn out_of_order_calls_are_an_error_not_a_panic() {
    let mut b = MetricsBuilder::new();
    b.point(0, 0, NumberValue::Int(1));
    assert!(matches!(b.finish(), Err(BuildError::Misuse(_))));

    let mut b = MetricsBuilder::new();
    b.resource();
    b.scope("s", "");
    b.metric(MetricSpec {
        name: "m",
        description: "",
        unit: "",
        kind: NumberKind::Gauge,
    });
    b.point_attr("k", AttrValue::Int(1));
    assert!(matches!(b.finish(), Err(BuildError::Misuse(_))));

    // a new resource needs a scope of its own
    let mut b = MetricsBuilder::new();
    b.resource();
    b.scope("s", "");
    b.metric(MetricSpec {
        name: "m",
        description: "",
        unit: "",
        kind: NumberKind::Gauge,
    });
    b.point(0, 0, NumberValue::Int(1));
    b.resource();
    b.metric(MetricSpec {
        name: "m",
        description: "",
        unit: "",
        kind: NumberKind::Gauge,
    });
    b.point(0, 0, NumberValue::Int(1));
    assert!(matches!(b.finish(), Err(BuildError::Misuse(_))));
}
