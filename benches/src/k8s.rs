//! Inputs of the `k8sattributes` benchmarks (`benches/k8sattributes.rs`,
//! `benches/k8sattributes_cache.rs`): realistic pods, a traces request whose resources are
//! some of those pods, and the per-resource-map baseline of the enrichment kernel.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, StringDictionaryBuilder, UInt8Builder, UInt32Builder,
};
use arrow::datatypes::{UInt8Type, UInt32Type};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_engine::payload::Payload;
use sluice_engine::schema::{AnyValueType, Table};
use sluice_k8s::k8sattributes::cache::{KeyBuilder, PodCache};

/// The IP of pod `i` (10.(i / 65536).(i / 256 % 256).(i % 256) + 1).
pub fn pod_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)
}

/// Pod `i`: a Deployment's pod (ReplicaSet owner, pod-template-hash), labels and annotations
/// as a real cluster has them, one container with a status, on one of 20 nodes.
pub fn pod(i: usize) -> Pod {
    let app = ["checkout", "cart", "payment", "frontend", "inventory"][i % 5];
    let hash = format!("{:010x}", i * 7919 % 0xffff_ffff);
    let rs = format!("{app}-{}", &hash[..9]);
    let name = format!("{rs}-{:05x}", i);
    let mut p = Pod::default();
    p.metadata.name = Some(name.clone());
    p.metadata.namespace = Some(["shop", "payments", "web"][i % 3].into());
    p.metadata.uid = Some(format!("6f1e{i:04x}-2b3c-4d5e-8f90-{i:012x}"));
    p.metadata.creation_timestamp = Some(Time(
        Timestamp::from_second(1_700_000_000 + i as i64).expect("valid time"),
    ));
    p.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/name".into(), app.into()),
        ("app.kubernetes.io/version".into(), "1.4.2".into()),
        ("pod-template-hash".into(), hash[..9].to_string()),
    ]));
    p.metadata.annotations = Some(BTreeMap::from([(
        "kubectl.kubernetes.io/restartedAt".into(),
        "2024-05-01T10:00:00Z".into(),
    )]));
    p.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs,
        uid: format!("rs-{}", i % 50),
        controller: Some(true),
        ..Default::default()
    }]);
    p.spec = Some(PodSpec {
        node_name: Some(format!("ip-10-0-{}-7.ec2.internal", i % 20)),
        containers: vec![Container {
            name: app.into(),
            image: Some(format!(
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/{app}:1.4.2"
            )),
            ..Default::default()
        }],
        ..Default::default()
    });
    p.status = Some(PodStatus {
        pod_ip: Some(pod_ip(i)),
        start_time: Some(Time(
            Timestamp::from_second(1_700_000_005 + i as i64).expect("valid time"),
        )),
        phase: Some("Running".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: app.into(),
            container_id: Some(format!("containerd://{:064x}", i)),
            image: format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/{app}:1.4.2"),
            ready: true,
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A traces request with one resource per pod of `pods` (an SDK's resource: service,
/// telemetry SDK, host, and `k8s.pod.ip` as an agent's OTLP clients set it), `spans_per`
/// spans each.
pub fn request_from_pods(pods: &[usize], spans_per: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: pods
            .iter()
            .map(|&i| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv(
                            "service.name",
                            ["checkout", "cart", "payment", "frontend", "inventory"][i % 5],
                        ),
                        kv("service.version", "1.4.2"),
                        kv("telemetry.sdk.name", "opentelemetry"),
                        kv("telemetry.sdk.language", "java"),
                        kv("telemetry.sdk.version", "1.38.0"),
                        kv("host.name", &format!("pod-{i}")),
                        kv("k8s.pod.ip", &pod_ip(i)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans_per)
                        .map(|s| Span {
                            trace_id: (0..16).map(|b| (b + s + i) as u8).collect(),
                            span_id: (0..8).map(|b| (b * 3 + s) as u8 | 1).collect(),
                            name: "GET /api/v1/cart".into(),
                            start_time_unix_nano: 1_700_000_000_000_000_000 + s as u64,
                            end_time_unix_nano: 1_700_000_000_001_000_000 + s as u64,
                            attributes: vec![kv("http.request.method", "GET")],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// One value of a per-resource map.
#[derive(Clone)]
enum MapValue {
    Str(String),
    Int(i64),
    /// Any other type: the row's type and (for bytes, arrays, maps) its bytes.
    Other(u8, Option<Vec<u8>>, Option<f64>, Option<bool>),
}

/// The per-resource-map baseline of the enrichment: each resource's attributes copied out of
/// the table into a map of owned keys and values (as the Collector holds a resource's
/// `pcommon.Map`), the pod looked up by `k8s.pod.ip` (the same cache, the same one lookup),
/// the pod's and its container's attributes inserted where absent (a `String` copy each, as
/// `PutStr` makes), and
/// the resource attribute table built again from the maps, row by row.
pub fn enrich_per_resource_map(payload: &Payload, cache: &PodCache) -> RecordBatch {
    let n = payload.table(Table::Resources).num_rows();
    let attrs = payload.table(Table::ResourceAttrs);
    let ids = attrs.column(0).as_primitive::<UInt32Type>();
    let keys = attrs.column(1).as_dictionary::<UInt32Type>();
    let dict = keys.values().as_string::<i32>();
    let types = attrs.column(2).as_primitive::<UInt8Type>();
    let strs = attrs.column(3).as_string::<i32>();
    let ints = attrs
        .column(4)
        .as_primitive::<arrow::datatypes::Int64Type>();
    let doubles = attrs
        .column(5)
        .as_primitive::<arrow::datatypes::Float64Type>();
    let bools = attrs.column(6).as_boolean();
    let bytes = attrs.column(7).as_binary::<i32>();
    let mut maps: Vec<Vec<(String, MapValue)>> = vec![Vec::new(); n];
    for r in 0..attrs.num_rows() {
        let k = dict.value(keys.keys().value(r) as usize).to_string();
        let v = match types.value(r) {
            t if t == AnyValueType::Str as u8 => MapValue::Str(strs.value(r).to_string()),
            t if t == AnyValueType::Int as u8 => MapValue::Int(ints.value(r)),
            t => MapValue::Other(
                t,
                bytes.is_valid(r).then(|| bytes.value(r).to_vec()),
                doubles.is_valid(r).then(|| doubles.value(r)),
                bools.is_valid(r).then(|| bools.value(r)),
            ),
        };
        maps[ids.value(r) as usize].push((k, v));
    }
    let mut key = KeyBuilder::default();
    for m in &mut maps {
        let ip = m.iter().find_map(|(k, v)| match v {
            MapValue::Str(s) if k == "k8s.pod.ip" => Some(s.clone()),
            _ => None,
        });
        let Some(ip) = ip else { continue };
        key.clear();
        key.connection(&ip);
        if let Some(pod) = cache.pod(key.as_str()) {
            // The pod's attributes, then its only container's (as the kernel's enrichment).
            let container = match pod.containers.as_slice() {
                [only] => only.attributes.as_slice(),
                _ => &[],
            };
            for (k, v) in pod.attributes.iter().chain(container) {
                if !m.iter().any(|(have, _)| have == k) {
                    m.push((k.clone(), MapValue::Str(v.clone())));
                }
            }
        }
    }
    let mut parent = UInt32Builder::new();
    let mut key_b = StringDictionaryBuilder::<UInt32Type>::new();
    let mut ty = UInt8Builder::new();
    let mut s = StringBuilder::new();
    let mut i = Int64Builder::new();
    let mut d = Float64Builder::new();
    let mut b = BooleanBuilder::new();
    let mut by = BinaryBuilder::new();
    for (p, m) in maps.iter().enumerate() {
        for (k, v) in m {
            parent.append_value(p as u32);
            key_b.append_value(k);
            match v {
                MapValue::Str(x) => {
                    ty.append_value(AnyValueType::Str as u8);
                    s.append_value(x);
                    i.append_null();
                    d.append_null();
                    b.append_null();
                    by.append_null();
                }
                MapValue::Int(x) => {
                    ty.append_value(AnyValueType::Int as u8);
                    s.append_null();
                    i.append_value(*x);
                    d.append_null();
                    b.append_null();
                    by.append_null();
                }
                MapValue::Other(t, bytes, dbl, bl) => {
                    ty.append_value(*t);
                    s.append_null();
                    i.append_null();
                    d.append_option(*dbl);
                    b.append_option(*bl);
                    by.append_option(bytes.as_deref());
                }
            }
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(parent.finish()),
        Arc::new(key_b.finish()),
        Arc::new(ty.finish()),
        Arc::new(s.finish()),
        Arc::new(i.finish()),
        Arc::new(d.finish()),
        Arc::new(b.finish()),
        Arc::new(by.finish()),
    ];
    RecordBatch::try_new(Table::ResourceAttrs.schema(), columns).expect("the attributes schema")
}
