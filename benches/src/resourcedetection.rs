//! The `resourcedetection` apply benchmark's input and baseline (`benches/resourcedetection.rs`,
//! `examples/resourcedetection_profile.rs`): a 1000-span request with 10 resources, a detected
//! resource as the ec2 and env detectors find it, and the Collector's `MergeResource` on its own
//! data model.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use sluice_k8s::resourcedetection::DetectedResource;

use crate::realistic_traces_request_seeded;

pub const RESOURCES: usize = 10;
pub const SPANS_PER_RESOURCE: usize = 100;

/// 10 resources of 100 spans (~14 attributes each, `host.name` among them): each generated
/// request's first resource, holding all the spans that request made.
pub fn ten_resources() -> ExportTraceServiceRequest {
    let resource_spans = (0..RESOURCES as u64)
        .map(|i| {
            let req = realistic_traces_request_seeded(SPANS_PER_RESOURCE, 0x5EED_0000 + i);
            let mut all = req.resource_spans.into_iter();
            let mut first = all.next().expect("at least one resource");
            for rs in all {
                first.scope_spans.extend(rs.scope_spans);
            }
            first
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The ec2 detector's nine attributes and two from `OTEL_RESOURCE_ATTRIBUTES`.
pub fn detected() -> DetectedResource {
    let pairs = [
        ("deployment.environment.name", "prod"),
        ("team", "observability"),
        ("cloud.provider", "aws"),
        ("cloud.platform", "aws_ec2"),
        ("cloud.region", "ap-south-1"),
        ("cloud.account.id", "210987654321"),
        ("cloud.availability_zone", "ap-south-1a"),
        ("host.id", "i-0a1b2c3d4e5f67890"),
        ("host.image.id", "ami-0fedcba9876543210"),
        ("host.type", "m6i.xlarge"),
        ("host.name", "ip-192-168-4-15.ap-south-1.compute.internal"),
    ];
    DetectedResource {
        attributes: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        schema_url: "https://opentelemetry.io/schemas/1.6.1".into(),
    }
}

/// The Collector's `MergeResource` + `MergeSchemaURL`, resource by resource, on prost structs
/// (find the key, overwrite or push; a `String` per value, as `PutStr` copies).
pub fn merge_per_resource(
    req: &mut ExportTraceServiceRequest,
    d: &DetectedResource,
    overwrite: bool,
) {
    for rs in &mut req.resource_spans {
        if rs.schema_url.is_empty() {
            rs.schema_url = d.schema_url.clone();
        }
        let attrs = &mut rs.resource.get_or_insert_with(Default::default).attributes;
        for (k, v) in &d.attributes {
            let value = || AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            };
            match attrs.iter_mut().find(|kv| kv.key == *k) {
                Some(kv) if overwrite => kv.value = Some(value()),
                Some(_) => {}
                None => attrs.push(KeyValue {
                    key: k.clone(),
                    value: Some(value()),
                    key_strindex: 0,
                }),
            }
        }
    }
}
