//! A straightforward per-span OTTL interpreter over `opentelemetry_proto` structs: the way the
//! Collector runs OTTL, one item at a time, attributes as a list of key-values searched
//! linearly (as `pcommon.Map.Get` does).
//!
//! Not part of the product (feature `testing`): it is the reference the column engine is
//! property-tested against, and the baseline of the OTTL benchmark. It shares the checked
//! program and the value-level rules (comparison, string forms, `Substring`, ...) with the
//! engine, so what it checks is the vectorisation: row maps, dictionary fast paths, masks,
//! short-circuit error handling, writes through the attribute kernels. Traces only (the
//! `resource`, `scope` and `span` contexts).

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value as P,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message as _;

use super::check::{Cond, Condition, Editor, Expr, PatternMode, Statement};
use super::context::{Column, Context, Field, PathRef};
use super::eval::{self, V, Val};
use super::exec::ErrorMode;

/// One span with its scope and resource.
pub struct Item<'a> {
    pub resource: &'a mut Option<Resource>,
    pub scope: &'a Option<InstrumentationScope>,
    pub span: &'a mut Span,
}

fn attr_value(attrs: &[KeyValue], key: &str) -> Val<'static> {
    match attrs.iter().find(|kv| kv.key == key) {
        Some(kv) => any_to_val(kv.value.as_ref()),
        None => Val::Nil,
    }
}

fn any_to_val(v: Option<&AnyValue>) -> Val<'static> {
    let Some(av) = v else { return Val::Nil };
    match &av.value {
        Some(P::StringValue(s)) => Val::Str(Cow::Owned(s.clone())),
        Some(P::IntValue(i)) => Val::Int(*i),
        Some(P::DoubleValue(d)) => Val::Double(*d),
        Some(P::BoolValue(b)) => Val::Bool(*b),
        Some(P::BytesValue(b)) => Val::Bytes(Cow::Owned(b.clone())),
        Some(P::ArrayValue(_)) => Val::Array(Cow::Owned(av.encode_to_vec())),
        Some(P::KvlistValue(_)) => Val::Map(Cow::Owned(av.encode_to_vec())),
        _ => Val::Nil,
    }
}

fn val_to_any(v: V<'_>) -> Option<AnyValue> {
    let value = match v {
        V::Str(s) => P::StringValue(s.to_string()),
        V::Int(i) => P::IntValue(i),
        V::Double(d) => P::DoubleValue(d),
        V::Bool(b) => P::BoolValue(b),
        V::Bytes(b) => P::BytesValue(b.to_vec()),
        V::Array(b) | V::Map(b) => return AnyValue::decode(b).ok(),
        V::List(items) => P::ArrayValue(ArrayValue {
            values: items.iter().filter_map(|x| val_to_any(x.as_v())).collect(),
        }),
        V::Nil | V::SpanId(_) | V::TraceId(_) => return None,
    };
    Some(AnyValue { value: Some(value) })
}

fn id<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

fn id_string(b: &[u8]) -> Val<'static> {
    if b.iter().all(|x| *x == 0) {
        Val::Str(Cow::Borrowed(""))
    } else {
        Val::Str(Cow::Owned(hex::encode(b)))
    }
}

impl Item<'_> {
    fn attrs(&self, level: Context) -> &[KeyValue] {
        match level {
            Context::Resource => self.resource.as_ref().map_or(&[], |r| &r.attributes),
            Context::Scope => self.scope.as_ref().map_or(&[], |s| &s.attributes),
            _ => &self.span.attributes,
        }
    }

    fn attrs_mut(&mut self, level: Context) -> &mut Vec<KeyValue> {
        match level {
            Context::Resource => {
                &mut self
                    .resource
                    .get_or_insert_with(Default::default)
                    .attributes
            }
            _ => &mut self.span.attributes,
        }
    }

    fn path(&self, p: &PathRef) -> Val<'static> {
        let s = &*self.span;
        match (&p.field, p.level) {
            (Field::Attribute(k), level) => attr_value(self.attrs(level), k),
            (Field::Attributes, _) => Val::Nil,
            (Field::Column(c), Context::Scope) => {
                let scope = self.scope.clone().unwrap_or_default();
                match c {
                    Column::Name => Val::Str(Cow::Owned(scope.name)),
                    Column::Version => Val::Str(Cow::Owned(scope.version)),
                    _ => Val::Int(scope.dropped_attributes_count as i64),
                }
            }
            (Field::Column(_), Context::Resource) => Val::Int(
                self.resource
                    .as_ref()
                    .map_or(0, |r| r.dropped_attributes_count as i64),
            ),
            (Field::Column(c), _) => {
                let status = s.status.clone().unwrap_or_default();
                match c {
                    Column::Name => Val::Str(Cow::Owned(s.name.clone())),
                    Column::Kind => Val::Int(s.kind as i64),
                    Column::StatusCode => Val::Int(status.code as i64),
                    Column::StatusMessage => Val::Str(Cow::Owned(status.message)),
                    Column::TraceId => Val::TraceId(id(&s.trace_id)),
                    Column::SpanId => Val::SpanId(id(&s.span_id)),
                    Column::ParentSpanId => Val::SpanId(id(&s.parent_span_id)),
                    Column::TraceIdString => id_string(&s.trace_id),
                    Column::SpanIdString => id_string(&s.span_id),
                    Column::ParentSpanIdString => id_string(&s.parent_span_id),
                    Column::TraceState => Val::Str(Cow::Owned(s.trace_state.clone())),
                    Column::StartTime => Val::Int(s.start_time_unix_nano as i64),
                    Column::EndTime => Val::Int(s.end_time_unix_nano as i64),
                    Column::DroppedAttributesCount => Val::Int(s.dropped_attributes_count as i64),
                    Column::DroppedEventsCount => Val::Int(s.dropped_events_count as i64),
                    Column::DroppedLinksCount => Val::Int(s.dropped_links_count as i64),
                    Column::Flags => Val::Int(s.flags as i64),
                    _ => Val::Nil,
                }
            }
        }
    }

    pub fn expr(&self, e: &Expr) -> Result<Val<'static>, String> {
        Ok(match e {
            Expr::Lit(l) => Val::from_lit(l),
            Expr::Path(p) => self.path(p),
            Expr::List(items) => Val::List(
                items
                    .iter()
                    .map(|x| self.expr(x))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Expr::Index(list, i) => match self.expr(list)? {
                Val::List(items) => usize::try_from(*i)
                    .ok()
                    .and_then(|k| items.get(k).cloned())
                    .ok_or_else(|| format!("index {i} out of bounds"))?,
                _ => Val::Nil,
            },
            Expr::IsMatch(..) | Expr::IsString(_) | Expr::IsInt(_) | Expr::IsRootSpan => {
                Val::Bool(self.bool_expr(e)?)
            }
            Expr::Concat(items, delim) => {
                let d = match self.expr(delim)? {
                    Val::Str(s) => s.into_owned(),
                    other => return Err(format!("delimiter {}", other.as_v().type_name())),
                };
                let mut out = String::new();
                for (k, x) in items.iter().enumerate() {
                    if k > 0 {
                        out.push_str(&d);
                    }
                    let v = self.expr(x)?;
                    if !eval::string_like(v.as_v(), &mut out)? {
                        out.push_str("<nil>");
                    }
                }
                Val::Str(Cow::Owned(out))
            }
            Expr::Split(t, d) => match self.expr(t)? {
                Val::Str(s) => Val::List(
                    eval::go_split(&s, d)
                        .into_iter()
                        .map(|x| Val::Str(Cow::Owned(x.to_string())))
                        .collect(),
                ),
                other => return Err(format!("Split of {}", other.as_v().type_name())),
            },
            Expr::Substring(t, s, l) => {
                let (t, s, l) = (self.expr(t)?, self.expr(s)?, self.expr(l)?);
                let out = eval::substring(t.as_v(), s.as_v(), l.as_v())?;
                Val::Str(Cow::Owned(out.to_string()))
            }
            Expr::ConvertCase(t, case) => match self.expr(t)? {
                Val::Str(s) => Val::Str(Cow::Owned(eval::convert_case(&s, *case))),
                other => return Err(format!("ConvertCase of {}", other.as_v().type_name())),
            },
            Expr::Int(t) => eval::int_like(self.expr(t)?.as_v()),
            Expr::String(t) => {
                let mut out = String::new();
                match eval::string_like(self.expr(t)?.as_v(), &mut out)? {
                    true => Val::Str(Cow::Owned(out)),
                    false => Val::Nil,
                }
            }
        })
    }

    fn bool_expr(&self, e: &Expr) -> Result<bool, String> {
        Ok(match e {
            Expr::IsMatch(t, re) => {
                let v = self.expr(t)?;
                let mut s = String::new();
                match v.as_v() {
                    V::Nil => false,
                    other => eval::string_like(other, &mut s)? && re.is_match(&s),
                }
            }
            Expr::IsString(t) => matches!(self.expr(t)?, Val::Str(_)),
            Expr::IsInt(t) => matches!(self.expr(t)?, Val::Int(_)),
            Expr::IsRootSpan => self.span.parent_span_id.iter().all(|b| *b == 0),
            other => self.expr(other)? == Val::Bool(true),
        })
    }

    /// Go's evaluation: left to right, `and`/`or` short-circuit, the first error stops it.
    pub fn cond(&self, c: &Cond) -> Result<bool, String> {
        Ok(match c {
            Cond::Const(b) => *b,
            Cond::Value(e) => self.bool_expr(e)?,
            Cond::Not(a) => !self.cond(a)?,
            Cond::And(a, b) => self.cond(a)? && self.cond(b)?,
            Cond::Or(a, b) => self.cond(a)? || self.cond(b)?,
            Cond::Cmp(l, op, r) => {
                let (l, r) = (self.expr(l)?, self.expr(r)?);
                eval::compare(l.as_v(), *op, r.as_v())
            }
        })
    }

    fn set(&mut self, target: &PathRef, v: V<'_>) {
        match &target.field {
            Field::Attribute(k) => {
                let Some(av) = val_to_any(v) else { return };
                let attrs = self.attrs_mut(target.level);
                match attrs.iter_mut().find(|kv| kv.key == *k) {
                    Some(kv) => kv.value = Some(av),
                    None => attrs.push(KeyValue {
                        key: k.clone(),
                        value: Some(av),
                        ..Default::default()
                    }),
                }
            }
            Field::Column(c) => {
                let s = &mut *self.span;
                match (c, v) {
                    (Column::Name, V::Str(x)) => s.name = x.to_string(),
                    (Column::Kind, V::Int(x)) => s.kind = x as i32,
                    (Column::StatusCode, V::Int(x)) => {
                        s.status.get_or_insert_with(Status::default).code = x as i32
                    }
                    (Column::StatusMessage, V::Str(x)) => {
                        s.status.get_or_insert_with(Status::default).message = x.to_string()
                    }
                    _ => {}
                }
            }
            Field::Attributes => {}
        }
    }

    /// Runs one statement on this item; `Err` is the statement's error.
    pub fn run(&mut self, s: &Statement) -> Result<(), String> {
        if let Some(c) = &s.condition
            && !self.cond(c)?
        {
            return Ok(());
        }
        match &s.editor {
            Editor::Set { target, value } => {
                let v = self.expr(value)?;
                if v != Val::Nil {
                    self.set(target, v.as_v());
                }
            }
            Editor::ReplacePattern {
                target,
                pattern,
                replacement,
            } => {
                let r = match self.expr(replacement)? {
                    Val::Str(r) => r.into_owned(),
                    other => return Err(format!("replacement {}", other.as_v().type_name())),
                };
                if let Val::Str(old) = self.path(target) {
                    let new = pattern.replace_all(&old, r.as_str()).into_owned();
                    self.set(target, V::Str(&new));
                }
            }
            Editor::ReplaceAllPatterns {
                map,
                mode,
                pattern,
                replacement,
            } => {
                let r = match self.expr(replacement)? {
                    Val::Str(r) => r.into_owned(),
                    other => return Err(format!("replacement {}", other.as_v().type_name())),
                };
                let attrs = self.attrs_mut(*map);
                match mode {
                    PatternMode::Value => {
                        for kv in attrs.iter_mut() {
                            if let Some(AnyValue {
                                value: Some(P::StringValue(s)),
                            }) = &mut kv.value
                            {
                                *s = pattern.replace_all(s, r.as_str()).into_owned();
                            }
                        }
                    }
                    PatternMode::Key => {
                        let mut out: Vec<KeyValue> = Vec::new();
                        for kv in attrs.drain(..) {
                            let key = if pattern.is_match(&kv.key) {
                                pattern.replace_all(&kv.key, r.as_str()).into_owned()
                            } else {
                                kv.key.clone()
                            };
                            match out.iter_mut().find(|x| x.key == key) {
                                Some(x) => x.value = kv.value,
                                None => out.push(KeyValue { key, ..kv }),
                            }
                        }
                        *attrs = out;
                    }
                }
            }
            Editor::DeleteKeys { map, keys } => {
                self.attrs_mut(*map).retain(|kv| !keys.contains(&kv.key))
            }
            Editor::KeepKeys { map, keys } => {
                self.attrs_mut(*map).retain(|kv| keys.contains(&kv.key))
            }
            Editor::DeleteMatchingKeys { map, pattern } => {
                self.attrs_mut(*map).retain(|kv| !pattern.is_match(&kv.key))
            }
            Editor::Limit {
                map,
                limit,
                priority,
            } => {
                let attrs = self.attrs_mut(*map);
                if attrs.len() > *limit {
                    let mut count = priority
                        .iter()
                        .filter(|k| attrs.iter().any(|kv| kv.key == **k))
                        .count();
                    attrs.retain(|kv| {
                        if priority.contains(&kv.key) {
                            return true;
                        }
                        if count < *limit {
                            count += 1;
                            return true;
                        }
                        false
                    });
                }
            }
            Editor::TruncateAll { map, limit, marker } => {
                for kv in self.attrs_mut(*map).iter_mut() {
                    if let Some(AnyValue {
                        value: Some(P::StringValue(s)),
                    }) = &mut kv.value
                        && s.len() > *limit
                    {
                        let mut cut = limit - marker.len();
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        s.truncate(cut);
                        s.push_str(marker);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Calls `f` on every span with its scope and resource.
pub fn for_each_item(
    req: &mut ExportTraceServiceRequest,
    mut f: impl FnMut(&mut Item<'_>) -> Result<(), String>,
) -> Result<(), String> {
    for rs in &mut req.resource_spans {
        let resource = &mut rs.resource;
        for ss in &mut rs.scope_spans {
            let scope = &ss.scope;
            for span in &mut ss.spans {
                f(&mut Item {
                    resource,
                    scope,
                    span,
                })?;
            }
        }
    }
    Ok(())
}

/// Runs a span-context statement group item by item (all statements on a span, then the
/// next), with the group conditions deciding which spans it runs on. Returns the number of
/// failures under `ignore`/`silent`; `Err` under `propagate`.
pub fn run_group(
    req: &mut ExportTraceServiceRequest,
    statements: &[Statement],
    conditions: &[Condition],
    mode: ErrorMode,
) -> Result<usize, String> {
    let mut errors = 0;
    for_each_item(req, |item| {
        let mut selected = conditions.is_empty();
        for c in conditions {
            match item.cond(&c.cond) {
                Ok(true) => {
                    selected = true;
                    break;
                }
                Ok(false) => {}
                Err(e) if mode == ErrorMode::Propagate => return Err(e),
                Err(_) => errors += 1,
            }
        }
        if !selected {
            return Ok(());
        }
        for s in statements {
            match item.run(s) {
                Ok(()) => {}
                Err(e) if mode == ErrorMode::Propagate => return Err(e),
                Err(_) => errors += 1,
            }
        }
        Ok(())
    })?;
    Ok(errors)
}

/// Whether each span matches any of the span-context `conditions` (in request order).
pub fn matches(
    req: &mut ExportTraceServiceRequest,
    conditions: &[Condition],
    mode: ErrorMode,
) -> Result<Vec<bool>, String> {
    let mut out = Vec::new();
    for_each_item(req, |item| {
        let mut hit = false;
        for c in conditions {
            match item.cond(&c.cond) {
                Ok(true) => {
                    hit = true;
                    break;
                }
                Ok(false) => {}
                Err(e) if mode == ErrorMode::Propagate => return Err(e),
                Err(_) => {}
            }
        }
        out.push(hit);
        Ok(())
    })?;
    Ok(out)
}

/// Drops the spans matching any of `conditions`, then scopes and resources left without
/// spans (as the filter processor does). Returns the number of spans dropped.
pub fn filter(
    req: &mut ExportTraceServiceRequest,
    conditions: &[Condition],
    mode: ErrorMode,
) -> Result<usize, String> {
    let drop = matches(req, conditions, mode)?;
    let mut it = drop.iter();
    let mut dropped = 0;
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|_| {
                let d = *it.next().unwrap_or(&false);
                dropped += usize::from(d);
                !d
            });
        }
    }
    if dropped > 0 {
        for rs in &mut req.resource_spans {
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    }
    Ok(dropped)
}
