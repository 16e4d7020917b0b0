//! Applying the detected resource to payloads: a kernel over the resources table, never per
//! item. A payload's resources are a handful of rows (one per ResourceSpans / ResourceMetrics
//! / ResourceLogs), so the cost is per resource row, whatever the number of spans under them.
//!
//! The attributes go through the `resource` processor's compiled actions (the engine's
//! `set_key` kernel over the resource attribute table): `upsert` with `override: true`,
//! `insert` (only where the key is absent) otherwise — the Collector's `MergeResource`. The
//! resource's `schema_url` is set where it is empty (the Collector's `MergeSchemaURL`), and a
//! ResourceX that had no `resource` message gets one (pdata always has one, so the Collector
//! writes the detected attributes there too).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use sluice_engine::payload::{Payload, PayloadError};
use sluice_engine::processors::attributes::actions::{ActionConfig, Actions};
use sluice_engine::processors::resource;
use sluice_engine::schema::{Table, col};

/// What detection found: attributes in merge order (no key twice) and the schema URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectedResource {
    pub attributes: Vec<(String, String)>,
    pub schema_url: String,
}

impl DetectedResource {
    /// Merges a later detector's result into this one: its attributes only where this one has
    /// none of that key (an earlier detector wins), its schema URL only if this one has none.
    pub fn merge_later(&mut self, later: DetectedResource) {
        for (k, v) in later.attributes {
            if !self.attributes.iter().any(|(have, _)| *have == k) {
                self.attributes.push((k, v));
            }
        }
        if self.schema_url.is_empty() {
            self.schema_url = later.schema_url;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.schema_url.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("resource attributes: {0}")]
    Attributes(#[from] sluice_engine::processors::attributes::ProcessError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("resources table: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// A detected resource, compiled once per detection for every payload after it.
pub struct ResourceMerge {
    detected: DetectedResource,
    /// `None` when nothing was detected (payloads pass untouched).
    actions: Option<Actions>,
}

impl ResourceMerge {
    pub fn new(detected: DetectedResource, override_existing: bool) -> ResourceMerge {
        let action = if override_existing {
            "upsert"
        } else {
            "insert"
        };
        let configs: Vec<ActionConfig> = detected
            .attributes
            .iter()
            .map(|(k, v)| ActionConfig {
                key: k.clone(),
                value: Some(serde_json::Value::String(v.clone())),
                action: action.into(),
                ..Default::default()
            })
            .collect();
        // A string value under a non-empty key always compiles; an empty key (never produced
        // by the detectors) would be refused, and then nothing is applied.
        let actions = if configs.is_empty() {
            None
        } else {
            Actions::compile(&configs, "attributes").ok()
        };
        ResourceMerge { detected, actions }
    }

    pub fn detected(&self) -> &DetectedResource {
        &self.detected
    }

    /// The merged payload. Nothing detected: the payload itself, untouched.
    pub fn apply(&self, payload: Payload) -> Result<Payload, ApplyError> {
        if self.detected.is_empty() {
            return Ok(payload);
        }
        let mut payload = match &self.actions {
            Some(actions) => resource::process(actions, payload)?,
            None => payload,
        };
        let resources = payload.table(Table::Resources);
        let present = resources.column_by_name(col::PRESENT);
        let schema_url = resources.column_by_name(col::SCHEMA_URL);
        let (Some(present), Some(schema_url)) = (present, schema_url) else {
            return Ok(payload); // the schema guarantees both
        };
        let new_present = (self.actions.is_some() && present.as_boolean().false_count() > 0)
            .then(|| Arc::new(BooleanArray::from(vec![true; present.len()])) as ArrayRef);
        let urls = schema_url.as_string::<i32>();
        let new_url = (!self.detected.schema_url.is_empty()
            && urls.iter().any(|u| u.is_none_or(str::is_empty)))
        .then(|| {
            Arc::new(StringArray::from_iter_values(urls.iter().map(
                |u| match u {
                    Some(u) if !u.is_empty() => u,
                    _ => self.detected.schema_url.as_str(),
                },
            ))) as ArrayRef
        });
        if new_present.is_none() && new_url.is_none() {
            return Ok(payload);
        }
        let schema = resources.schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .zip(resources.columns())
            .map(|(f, c)| match f.name().as_str() {
                n if n == col::PRESENT => new_present.clone().unwrap_or_else(|| c.clone()),
                n if n == col::SCHEMA_URL => new_url.clone().unwrap_or_else(|| c.clone()),
                _ => c.clone(),
            })
            .collect();
        let batch = RecordBatch::try_new(schema, columns)?;
        payload.set(Table::Resources, batch)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use proptest::prelude::*;
    use prost::Message;
    use sluice_engine::otlp::encode_to_vec;
    use sluice_engine::otlp::testing::{arb_traces_request, reference_traces};

    use super::*;

    /// The Collector's `MergeResource` and `MergeSchemaURL`, resource by resource, on the
    /// request itself; a key a sender repeated is updated everywhere, as sluice's kernels keep
    /// copies equal.
    fn merge_by_hand(
        mut req: ExportTraceServiceRequest,
        d: &DetectedResource,
        overwrite: bool,
    ) -> ExportTraceServiceRequest {
        for rs in &mut req.resource_spans {
            if rs.schema_url.is_empty() {
                rs.schema_url = d.schema_url.clone();
            }
            if d.attributes.is_empty() {
                continue;
            }
            let attrs = &mut rs.resource.get_or_insert_with(Default::default).attributes;
            for (k, v) in &d.attributes {
                let value = Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v.clone())),
                });
                if attrs.iter().any(|a| a.key == *k) {
                    if overwrite {
                        attrs
                            .iter_mut()
                            .filter(|a| a.key == *k)
                            .for_each(|a| a.value = value.clone());
                    }
                } else {
                    attrs.push(KeyValue {
                        key: k.clone(),
                        value,
                        key_strindex: 0,
                    });
                }
            }
        }
        req
    }

    fn arb_detected() -> impl Strategy<Value = DetectedResource> {
        let key = prop::sample::select(vec![
            "service.name",
            "k8s.pod.name",
            "a",
            "cloud.region",
            "host.name",
        ]);
        (
            prop::collection::btree_map(key, "[a-z0-9 .-]{0,12}", 0..5),
            prop_oneof![
                Just(String::new()),
                Just("https://opentelemetry.io/schemas/1.6.1".to_string())
            ],
        )
            .prop_map(|(attrs, schema_url)| DetectedResource {
                attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                schema_url,
            })
    }

    proptest! {
        /// Any request, any detected resource, either mode: what sluice sends is what merging
        /// by hand on the request gives.
        #[test]
        fn apply_is_the_collectors_merge(
            req in arb_traces_request(),
            detected in arb_detected(),
            overwrite in any::<bool>(),
        ) {
            let merge = ResourceMerge::new(detected.clone(), overwrite);
            let out = merge.apply(reference_traces(&req)).unwrap();
            out.validate().unwrap();
            let got = ExportTraceServiceRequest::decode(encode_to_vec(&out).as_slice()).unwrap();
            prop_assert_eq!(got, merge_by_hand(req, &detected, overwrite));
        }
    }
}
