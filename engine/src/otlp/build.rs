//! Building metrics payloads directly, without an OTLP request in between: for components that
//! produce metrics themselves (scrapers such as `kubeletstats`). The caller walks its own data
//! and appends resources, scopes, metrics and points; the tables are the ones the decoder
//! builds (the same column builders), so every processor and exporter treats the result exactly
//! like decoded OTLP.
//!
//! No allocation per item: names, units, descriptions and attribute keys are dictionary
//! entries that borrow the caller's strings (`'a`), attribute values are copied into the value
//! columns.
//!
//! Emptiness follows the Collector's generated metrics builders (mdatagen): a metric that gets
//! no point is not emitted, nor is a scope without metrics or a resource without scopes. So a
//! caller can open a metric (or a resource) and add points only for the fields its input has.
//!
//! Misuse (a point before any metric, an attribute before any point) is not a panic: it makes
//! [`MetricsBuilder::finish`] fail with [`BuildError::Misuse`].

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};

use super::decode::DecodeError;
use super::decode::builders::{Attrs, Bin, Dict, OptPrim, Str, Val, bools, prim};
use crate::payload::Payload;
use crate::schema::{MetricType, Signal, Table};

/// Why a payload could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The builder's methods were called out of order (a bug in the caller).
    #[error("metrics builder misuse: {0}")]
    Misuse(&'static str),
    /// An Arrow table could not be built (a bug, never caused by the values).
    #[error("internal error building metrics tables: {0}")]
    Internal(String),
}

impl From<DecodeError> for BuildError {
    fn from(e: DecodeError) -> Self {
        BuildError::Internal(e.to_string())
    }
}

/// OTLP `AggregationTemporality`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Temporality {
    Unspecified = 0,
    Delta = 1,
    Cumulative = 2,
}

/// The data kind of a number metric.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NumberKind {
    Gauge,
    Sum {
        temporality: Temporality,
        monotonic: bool,
    },
}

/// A metric's identity and shape, as the Collector's `metadata.yaml` describes it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MetricSpec<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub unit: &'a str,
    pub kind: NumberKind,
}

/// A number point's value.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum NumberValue {
    Int(i64),
    Double(f64),
}

/// An attribute value (the scalar `AnyValue` kinds).
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum AttrValue<'v> {
    Str(&'v str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// An attribute value held until its resource is emitted; strings live in `scratch`.
#[derive(Clone, Debug)]
enum HeldValue {
    Str(Range<usize>),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// Appends Gauge and Sum metrics with number points into the metrics tables of a
/// [`Payload`]. See the module documentation.
pub struct MetricsBuilder<'a> {
    // what is open but not emitted yet (emitted with the first point under it)
    pending_resource: bool,
    held_attrs: Vec<(&'a str, HeldValue)>,
    scratch: Vec<u8>,
    pending_scope: Option<(&'a str, &'a str)>,
    pending_metric: Option<MetricSpec<'a>>,
    /// A point was added since the last metric was opened (attributes go to it).
    has_point: bool,
    misuse: Option<&'static str>,
    // resources
    res_present: Vec<bool>,
    res_dropped: Vec<u32>,
    res_schema_url: Str,
    res_entity_refs: Bin,
    res_attrs: Attrs<'a>,
    // scopes
    scope_parent: Vec<u32>,
    scope_present: Vec<bool>,
    scope_name: Dict<'a>,
    scope_version: Dict<'a>,
    scope_dropped: Vec<u32>,
    scope_schema_url: Str,
    // metrics
    metric_parent: Vec<u32>,
    metric_name: Dict<'a>,
    metric_description: Dict<'a>,
    metric_unit: Dict<'a>,
    metric_type: Vec<u8>,
    metric_temporality: Vec<i32>,
    metric_monotonic: Vec<bool>,
    // number points
    point_parent: Vec<u32>,
    point_start: Vec<u64>,
    point_time: Vec<u64>,
    point_int: OptPrim<Int64Type>,
    point_double: OptPrim<Float64Type>,
    point_attrs: Attrs<'a>,
    /// Attribute index within the current point (the dictionary's position cache).
    point_attr_slot: u32,
    resource_attr_slot: u32,
}

impl Default for MetricsBuilder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> MetricsBuilder<'a> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A builder expecting about `points` number points (sizes the point columns up front).
    pub fn with_capacity(points: usize) -> Self {
        MetricsBuilder {
            pending_resource: false,
            held_attrs: Vec::new(),
            scratch: Vec::new(),
            pending_scope: None,
            pending_metric: None,
            has_point: false,
            misuse: None,
            res_present: Vec::new(),
            res_dropped: Vec::new(),
            res_schema_url: Str::new(),
            res_entity_refs: Bin::new(),
            res_attrs: Attrs::new(),
            scope_parent: Vec::new(),
            scope_present: Vec::new(),
            scope_name: Dict::new(),
            scope_version: Dict::new(),
            scope_dropped: Vec::new(),
            scope_schema_url: Str::new(),
            metric_parent: Vec::new(),
            metric_name: Dict::new(),
            metric_description: Dict::new(),
            metric_unit: Dict::new(),
            metric_type: Vec::new(),
            metric_temporality: Vec::new(),
            metric_monotonic: Vec::new(),
            point_parent: Vec::with_capacity(points),
            point_start: Vec::with_capacity(points),
            point_time: Vec::with_capacity(points),
            point_int: OptPrim::new(),
            point_double: OptPrim::new(),
            point_attrs: Attrs::new(),
            point_attr_slot: 0,
            resource_attr_slot: 0,
        }
    }

    fn misuse(&mut self, what: &'static str) {
        self.misuse.get_or_insert(what);
    }

    /// Opens a resource; the scopes opened next belong to it. Emitted with its first point.
    pub fn resource(&mut self) {
        self.pending_resource = true;
        self.held_attrs.clear();
        self.scratch.clear();
        self.pending_scope = None;
        self.pending_metric = None;
        self.has_point = false;
    }

    /// Adds an attribute to the resource opened last.
    pub fn resource_attr(&mut self, key: &'a str, value: AttrValue<'_>) {
        if !self.pending_resource {
            // Its resource was already emitted (a point was added) or never opened.
            return self.misuse("resource attribute after the resource's first point");
        }
        let held = match value {
            AttrValue::Str(s) => {
                let start = self.scratch.len();
                self.scratch.extend_from_slice(s.as_bytes());
                HeldValue::Str(start..self.scratch.len())
            }
            AttrValue::Int(i) => HeldValue::Int(i),
            AttrValue::Double(d) => HeldValue::Double(d),
            AttrValue::Bool(b) => HeldValue::Bool(b),
        };
        self.held_attrs.push((key, held));
    }

    /// Opens a scope (instrumentation scope name and version) in the current resource.
    pub fn scope(&mut self, name: &'a str, version: &'a str) {
        if !self.pending_resource && self.res_present.is_empty() {
            return self.misuse("scope before any resource");
        }
        self.pending_scope = Some((name, version));
        self.pending_metric = None;
        self.has_point = false;
    }

    /// Opens a metric in the current scope. Emitted with its first point.
    pub fn metric(&mut self, spec: MetricSpec<'a>) {
        if self.pending_scope.is_none() && self.scope_present.is_empty() {
            return self.misuse("metric before any scope");
        }
        self.pending_metric = Some(spec);
        self.has_point = false;
    }

    /// Adds a point to the metric opened last (emitting it, its scope and its resource first
    /// if this is their first point).
    pub fn point(&mut self, start_time_unix_nano: u64, time_unix_nano: u64, value: NumberValue) {
        if self.pending_metric.is_none() && self.metric_parent.is_empty() {
            return self.misuse("point before any metric");
        }
        if let Err(what) = self.emit_pending() {
            return self.misuse(what);
        }
        self.point_parent.push(self.metric_parent.len() as u32 - 1);
        self.point_start.push(start_time_unix_nano);
        self.point_time.push(time_unix_nano);
        let (int, double) = match value {
            NumberValue::Int(i) => (Some(i), None),
            NumberValue::Double(d) => (None, Some(d)),
        };
        self.point_int.push(int);
        self.point_double.push(double);
        self.point_attr_slot = 0;
        self.has_point = true;
    }

    /// Adds an attribute to the point added last.
    pub fn point_attr(&mut self, key: &'a str, value: AttrValue<'_>) {
        if !self.has_point {
            return self.misuse("point attribute before the metric's first point");
        }
        let row = self.point_parent.len() as u32 - 1;
        let slot = self.point_attr_slot;
        self.point_attr_slot += 1;
        if let Err(e) = push_attr(&mut self.point_attrs, row, slot, key, as_val(value)) {
            self.misuse(e);
        }
    }

    /// Emits what is open above the next point: resource, scope, metric.
    fn emit_pending(&mut self) -> Result<(), &'static str> {
        if self.pending_resource {
            self.pending_resource = false;
            let row = self.res_present.len() as u32;
            self.res_present.push(true);
            self.res_dropped.push(0);
            self.res_schema_url.push(b"");
            self.res_entity_refs.close_row();
            self.resource_attr_slot = 0;
            let held = std::mem::take(&mut self.held_attrs);
            for (key, value) in &held {
                let val = match value {
                    HeldValue::Str(r) => Val::Str(&self.scratch[r.clone()]),
                    HeldValue::Int(i) => Val::Int(*i),
                    HeldValue::Double(d) => Val::Double(*d),
                    HeldValue::Bool(b) => Val::Bool(*b),
                };
                let slot = self.resource_attr_slot;
                self.resource_attr_slot += 1;
                push_attr(&mut self.res_attrs, row, slot, key, val)?;
            }
            self.held_attrs = held;
            self.held_attrs.clear();
            // A new resource needs its own scope row even if the scope was opened before.
            if self.pending_scope.is_none() {
                return Err("point in a new resource before any scope");
            }
        }
        if let Some((name, version)) = self.pending_scope.take() {
            self.scope_parent.push(self.res_present.len() as u32 - 1);
            self.scope_present.push(true);
            self.scope_name
                .push(name.as_bytes())
                .map_err(|_| "scope name")?;
            self.scope_version
                .push(version.as_bytes())
                .map_err(|_| "scope version")?;
            self.scope_dropped.push(0);
            self.scope_schema_url.push(b"");
            if self.pending_metric.is_none() {
                return Err("point in a new scope before any metric");
            }
        }
        if let Some(spec) = self.pending_metric.take() {
            self.metric_parent.push(self.scope_parent.len() as u32 - 1);
            self.metric_name
                .push(spec.name.as_bytes())
                .map_err(|_| "metric name")?;
            self.metric_description
                .push(spec.description.as_bytes())
                .map_err(|_| "metric description")?;
            self.metric_unit
                .push(spec.unit.as_bytes())
                .map_err(|_| "metric unit")?;
            let (ty, temporality, monotonic) = match spec.kind {
                NumberKind::Gauge => (MetricType::Gauge, 0, false),
                NumberKind::Sum {
                    temporality,
                    monotonic,
                } => (MetricType::Sum, temporality as i32, monotonic),
            };
            self.metric_type.push(ty as u8);
            self.metric_temporality.push(temporality);
            self.metric_monotonic.push(monotonic);
        }
        Ok(())
    }

    /// Number points added so far.
    pub fn point_count(&self) -> usize {
        self.point_parent.len()
    }

    /// The metrics payload. Tables other than resources, scopes, metrics and number points
    /// (and their attributes) are empty.
    pub fn finish(self) -> Result<Payload, BuildError> {
        if let Some(what) = self.misuse {
            return Err(BuildError::Misuse(what));
        }
        let resources = vec![
            bools(&self.res_present),
            prim::<UInt32Type>(self.res_dropped),
            self.res_schema_url.finish().map_err(DecodeError::from)?,
            self.res_entity_refs.finish(),
        ];
        let resource_attrs = self.res_attrs.finish().map_err(DecodeError::from)?;
        let scopes = vec![
            prim::<UInt32Type>(self.scope_parent),
            bools(&self.scope_present),
            self.scope_name.finish().map_err(DecodeError::from)?,
            self.scope_version.finish().map_err(DecodeError::from)?,
            prim::<UInt32Type>(self.scope_dropped),
            self.scope_schema_url.finish().map_err(DecodeError::from)?,
        ];
        let metrics = vec![
            prim::<UInt32Type>(self.metric_parent),
            self.metric_name.finish().map_err(DecodeError::from)?,
            self.metric_description
                .finish()
                .map_err(DecodeError::from)?,
            self.metric_unit.finish().map_err(DecodeError::from)?,
            prim::<UInt8Type>(self.metric_type),
            prim::<Int32Type>(self.metric_temporality),
            bools(&self.metric_monotonic),
        ];
        let n = self.point_time.len();
        let points = vec![
            prim::<UInt32Type>(self.point_parent),
            prim::<UInt64Type>(self.point_start),
            prim::<UInt64Type>(self.point_time),
            self.point_int.finish(),
            self.point_double.finish(),
            prim::<UInt32Type>(vec![0; n]),
        ];
        let point_attrs = self.point_attrs.finish().map_err(DecodeError::from)?;
        let mut tables = Vec::with_capacity(7);
        for (t, cols) in [
            (Table::Resources, resources),
            (Table::ResourceAttrs, resource_attrs),
            (Table::Scopes, scopes),
            (Table::Metrics, metrics),
            (Table::NumberPoints, points),
            (Table::NumberPointAttrs, point_attrs),
        ] {
            tables.push((t, batch(t, cols)?));
        }
        Payload::from_tables(Signal::Metrics, tables)
            .map_err(|e| BuildError::Internal(e.to_string()))
    }
}

fn batch(t: Table, cols: Vec<ArrayRef>) -> Result<RecordBatch, BuildError> {
    RecordBatch::try_new(Arc::clone(&t.schema()), cols)
        .map_err(|e| BuildError::Internal(format!("{t:?}: {e}")))
}

fn as_val(v: AttrValue<'_>) -> Val<'_> {
    match v {
        AttrValue::Str(s) => Val::Str(s.as_bytes()),
        AttrValue::Int(i) => Val::Int(i),
        AttrValue::Double(d) => Val::Double(d),
        AttrValue::Bool(b) => Val::Bool(b),
    }
}

fn push_attr<'a>(
    attrs: &mut Attrs<'a>,
    row: u32,
    slot: u32,
    key: &'a str,
    value: Val<'_>,
) -> Result<(), &'static str> {
    attrs
        .key
        .push_at(slot, key.as_bytes())
        .map_err(|_| "attribute key")?;
    attrs.parent.push(row);
    attrs.vals.push(value);
    Ok(())
}

#[cfg(test)]
mod tests;
