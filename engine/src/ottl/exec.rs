//! Runs compiled conditions and statements over a payload: conditions become masks, editors
//! become writes to attribute tables and columns (through [`crate::kernels::attributes`]).
//!
//! Statements of a group run one after the other, each over all items of the context at once.
//! This matches the Collector (which runs all statements on one item, then the next) because
//! a statement only changes its own item, or a field shared with other items that the group
//! does not read (the checker refuses the rest, see `check::compile_group`).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, DictionaryArray, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, UInt8Array, UInt32Array,
};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, UInt32Type};
use prost::Message as _;
use serde::Deserialize;

use super::ast::CmpOp;
use super::check::{
    Cond, Condition, Editor, Expr, Lit, PatternMode, Statement, condition_reads, statement_reads,
};
use super::context::{Column, Context, Field, PathRef, attrs_table};
use super::eval::{Errs, Eval, Lookups, NONE, V, Val};
use crate::kernels::attributes::{self as ka, AnyValues, KeySet, SetMode, Values};
use crate::payload::{Payload, PayloadError};
use crate::schema::{AnyValueType, Table, col};

/// What happens when a statement or condition fails on an item (the Collector's
/// `error_mode`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Skip the statement (or count the condition as false) for that item, log, go on.
    Ignore,
    /// The same, without logging.
    Silent,
    /// Fail the whole payload: the error goes back to the receiver.
    Propagate,
}

/// Failures that did not stop processing (`ignore`/`silent`), for logging and counting.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Items on which a statement or condition failed.
    pub errors: usize,
    /// The first failure: statement text and message.
    pub first: Option<(String, String)>,
    /// Whether any failure was under `ignore` (to be logged).
    pub log: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("OTTL `{text}` failed: {message}")]
    Failed { text: String, message: String },
    #[error("kernel: {0}")]
    Kernel(#[from] ka::KernelError),
    #[error("payload: {0}")]
    Payload(#[from] PayloadError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Applies `mode` to the errors of one statement or condition: `Err` under `propagate`,
/// otherwise counted in `report` and returned so the caller can skip those items.
fn handle(
    err: Option<Errs>,
    mode: ErrorMode,
    text: &str,
    report: &mut RunReport,
) -> Result<Option<Errs>, RunError> {
    let Some(e) = err else { return Ok(None) };
    if mode == ErrorMode::Propagate {
        return Err(RunError::Failed {
            text: text.to_string(),
            message: e.first,
        });
    }
    report.errors += e.count();
    report.log |= mode == ErrorMode::Ignore;
    if report.first.is_none() {
        report.first = Some((text.to_string(), e.first.clone()));
    }
    Ok(Some(e))
}

fn clear_errors(mask: &mut [bool], err: &Option<Errs>) {
    if let Some(e) = err {
        mask.iter_mut().zip(&e.rows).for_each(|(m, e)| *m &= !*e);
    }
}

/// The paths a set of conditions and statements reads (for [`Lookups::new`]).
pub fn reads(statements: &[Statement], conditions: &[Condition]) -> Vec<PathRef> {
    let mut out = Vec::new();
    for s in statements {
        statement_reads(s, &mut out);
    }
    for c in conditions {
        condition_reads(&c.cond, &mut out);
    }
    out
}

/// Per row of `table`: whether any of `conditions` holds, Go style: conditions in order, an
/// item stops at the first that matches (so a later condition's errors on it do not count).
/// Under `ignore`/`silent` a condition that fails on an item counts as false for it.
pub fn any_matches(
    p: &Payload,
    table: Table,
    conditions: &[Condition],
    mode: ErrorMode,
    lookups: &mut Lookups,
    report: &mut RunReport,
) -> Result<Vec<bool>, RunError> {
    let mut ev = Eval::new(p, table, lookups);
    let mut matched = vec![false; ev.len()];
    for c in conditions {
        if matched.iter().all(|m| *m) {
            break;
        }
        let undecided: Vec<bool> = matched.iter().map(|m| !m).collect();
        let m = ev.cond(&c.cond, Some(&undecided));
        let err = handle(m.err, mode, &c.text, report)?;
        let mut hit = m.bits;
        clear_errors(&mut hit, &err);
        matched.iter_mut().zip(&hit).for_each(|(a, b)| *a |= *b);
    }
    Ok(matched)
}

/// Statements run in one context, with the group's conditions (ORed) deciding which items
/// they run on: the transform processor's statement group.
pub struct StatementGroup {
    pub context: Context,
    pub conditions: Vec<Condition>,
    pub mode: ErrorMode,
    /// The statements as they run: consecutive ones fused where that gives the same result
    /// with fewer passes (see [`fuse_deletes`], [`fuse_first_of`]).
    steps: Vec<Step>,
    reads: Vec<PathRef>,
}

/// One pass over the items.
enum Step {
    One(Statement),
    /// `set(T, E1) where T == nil`, `set(T, E2) where T == nil`, ...: T gets the first of
    /// E1, E2, ... that has a value, in one write (see [`fuse_first_of`]).
    FirstOf {
        target: PathRef,
        condition: Cond,
        /// The fused statements, in order (their values and texts).
        parts: Vec<Statement>,
    },
}

impl StatementGroup {
    pub fn new(
        context: Context,
        statements: Vec<Statement>,
        conditions: Vec<Condition>,
        mode: ErrorMode,
    ) -> Self {
        let statements = fuse_deletes(statements);
        let reads = reads(&statements, &conditions);
        StatementGroup {
            context,
            steps: fuse_first_of(context, statements),
            conditions,
            mode,
            reads,
        }
    }

    pub fn run(&self, p: &mut Payload, report: &mut RunReport) -> Result<(), RunError> {
        for &table in self.context.tables() {
            if p.table(table).num_rows() == 0 {
                continue;
            }
            let mut lookups = Lookups::new(self.context, &self.reads);
            let group = if self.conditions.is_empty() {
                None
            } else {
                let m = any_matches(p, table, &self.conditions, self.mode, &mut lookups, report)?;
                if !m.iter().any(|x| *x) {
                    continue;
                }
                Some(m)
            };
            for step in &self.steps {
                let group = group.as_deref();
                match step {
                    Step::One(s) => {
                        run_statement(p, table, s, group, self.mode, &mut lookups, report)?
                    }
                    Step::FirstOf {
                        target,
                        condition,
                        parts,
                    } => run_first_of(
                        p,
                        table,
                        (target, condition, parts),
                        group,
                        self.mode,
                        &mut lookups,
                        report,
                    )?,
                }
            }
        }
        Ok(())
    }
}

/// Consecutive unconditional `delete_key`s on one map become one pass deleting a key set.
fn fuse_deletes(statements: Vec<Statement>) -> Vec<Statement> {
    let mut out: Vec<Statement> = Vec::with_capacity(statements.len());
    for s in statements {
        if let (Some(prev), Editor::DeleteKeys { map, keys }) = (out.last_mut(), &s.editor)
            && prev.condition.is_none()
            && s.condition.is_none()
            && let Editor::DeleteKeys {
                map: prev_map,
                keys: prev_keys,
            } = &mut prev.editor
            && prev_map == map
        {
            prev_keys.extend(keys.iter().cloned());
            prev.text = format!("{}; {}", prev.text, s.text);
            continue;
        }
        out.push(s);
    }
    out
}

/// Fuses runs of two or more `set(T, E) where T == nil` on the same attribute `T` of the
/// items' own level (the coalescing idiom: "the first of these that has a value") into one
/// [`Step::FirstOf`]. Running them one by one re-reads `T` after each write and rebuilds the
/// attribute table once per statement that sets anything; fused, `T` is read once, each `E`
/// only on the items still without a value, and the table is rebuilt once.
///
/// The result is the same: a statement only sets `T` where it is nil and its value is not
/// (`set` ignores nil), so an item ends with the value of the first statement whose value it
/// has; a later statement runs exactly on the items that are still nil, whatever its value
/// reads (`T` too: still nil there). Errors under `ignore` leave an item nil for that
/// statement, as unfused; each statement's errors are reported under its own text.
/// Items of another level would make "last item wins" interact with the guard, so only
/// targets on the context's own level fuse.
fn fuse_first_of(context: Context, statements: Vec<Statement>) -> Vec<Step> {
    fn guard_target(s: &Statement, context: Context) -> Option<&PathRef> {
        let Editor::Set { target, .. } = &s.editor else {
            return None;
        };
        let own = target.level == context && matches!(target.field, Field::Attribute(_));
        let nil_guard = match &s.condition {
            Some(Cond::Cmp(Expr::Path(p), CmpOp::Eq, Expr::Lit(Lit::Nil)))
            | Some(Cond::Cmp(Expr::Lit(Lit::Nil), CmpOp::Eq, Expr::Path(p))) => p == target,
            _ => false,
        };
        (own && nil_guard).then_some(target)
    }
    let mut steps: Vec<Step> = Vec::with_capacity(statements.len());
    let mut run: Vec<Statement> = Vec::new();
    let flush = |run: &mut Vec<Statement>, steps: &mut Vec<Step>| {
        if run.len() >= 2 {
            let first = &run[0];
            let target = guard_target(first, context).expect("in a run").clone();
            let condition = first.condition.clone().expect("guarded");
            steps.push(Step::FirstOf {
                target,
                condition,
                parts: std::mem::take(run),
            });
        } else {
            steps.extend(run.drain(..).map(Step::One));
        }
    };
    for s in statements {
        let t = guard_target(&s, context);
        let continues = match (t, run.first()) {
            (Some(t), Some(first)) => guard_target(first, context) == Some(t),
            _ => false,
        };
        if !continues {
            flush(&mut run, &mut steps);
        }
        if t.is_some() {
            run.push(s);
        } else {
            steps.push(Step::One(s));
        }
    }
    flush(&mut run, &mut steps);
    steps
}

/// Runs a [`Step::FirstOf`]: the guard once, then each part's value on the items that still
/// have none, then one write.
fn run_first_of(
    p: &mut Payload,
    table: Table,
    (target, condition, parts): (&PathRef, &Cond, &[Statement]),
    group: Option<&[bool]>,
    mode: ErrorMode,
    lookups: &mut Lookups,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let Field::Attribute(key) = &target.field else {
        unreachable!("fuse_first_of only fuses attribute targets")
    };
    let snap = p.clone();
    let mut ev = Eval::new(&snap, table, lookups);
    let n = ev.len();
    // Items selected whose target is still nil.
    let mut unset: Vec<bool> = group.map_or_else(|| vec![true; n], <[bool]>::to_vec);
    let m = ev.cond(condition, Some(&unset));
    let err = handle(m.err, mode, &parts[0].text, report)?;
    unset.iter_mut().zip(&m.bits).for_each(|(a, b)| *a &= *b);
    clear_errors(&mut unset, &err);
    // Per item: which part's value it takes (NONE: none).
    let mut chosen: Vec<u32> = vec![NONE; n];
    let mut values = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        if !unset.iter().any(|x| *x) {
            break;
        }
        let Editor::Set { value, .. } = &part.editor else {
            unreachable!("fuse_first_of only fuses set")
        };
        let v = ev.expr(value, Some(&unset));
        let err = handle(v.err, mode, &part.text, report)?;
        for i in 0..n {
            let failed = err.as_ref().is_some_and(|e| e.rows[i]);
            if unset[i] && !failed && storable(v.col.get(i)) {
                chosen[i] = k as u32;
                unset[i] = false;
            }
        }
        values.push(v.col);
    }
    if chosen.iter().all(|c| *c == NONE) {
        return Ok(());
    }
    let vals = any_values(n, |i| match chosen[i] {
        NONE => V::Nil,
        k => values[k as usize].get(i),
    });
    let a = attrs_table(table).expect("own level has attributes");
    let new = set_attr(&snap, a, n, key, &vals, SetMode::Upsert)?;
    p.set(a, new)?;
    lookups.invalidate(a);
    Ok(())
}

/// Sets `key` in attribute table `a` of `snap` for every parent with a value in `vals`: one
/// rebuild, fused with the table's pending one if it has one (see `PendingRows`).
fn set_attr(
    snap: &Payload,
    a: Table,
    parents: usize,
    key: &str,
    vals: &AnyValues,
    mode: SetMode,
) -> Result<RecordBatch, RunError> {
    let values = Values::PerParent(vals);
    Ok(match snap.pending(a) {
        Some(rows) => ka::set_key_pending(rows, parents, None, key, values, mode)?,
        None => ka::set_key(snap.table(a), parents, None, key, values, mode)?,
    })
}

/// Whether `set` stores `v` in an attribute (nil and ids leave it unset, see [`any_values`]).
fn storable(v: V<'_>) -> bool {
    !matches!(v, V::Nil | V::SpanId(_) | V::TraceId(_))
}

/// Per row of the `level` table: the last item (row of the context table) that is selected
/// and has a value, or NONE. "Last wins" is what running the statement item by item leaves in
/// a field shared by several items.
fn last_source(
    mask: &[bool],
    map: &[u32],
    parents: usize,
    present: impl Fn(usize) -> bool,
) -> Vec<u32> {
    let mut src = vec![NONE; parents];
    for (i, (&m, &p)) in mask.iter().zip(map).enumerate() {
        if m && present(i) {
            src[p as usize] = i as u32;
        }
    }
    src
}

/// Per row of the `level` table: whether any selected item maps to it.
fn lift_any(mask: &[bool], map: &[u32], parents: usize) -> Vec<bool> {
    let mut out = vec![false; parents];
    for (&m, &p) in mask.iter().zip(map) {
        if m {
            out[p as usize] = true;
        }
    }
    out
}

fn run_statement(
    p: &mut Payload,
    table: Table,
    s: &Statement,
    group: Option<&[bool]>,
    mode: ErrorMode,
    lookups: &mut Lookups,
    report: &mut RunReport,
) -> Result<(), RunError> {
    // Reads come from this snapshot (cheap: shared Arrow buffers) while `p` is rewritten.
    let snap = p.clone();
    let mut ev = Eval::new(&snap, table, lookups);
    let n = ev.len();
    let mut mask: Vec<bool> = group.map_or_else(|| vec![true; n], <[bool]>::to_vec);
    if let Some(c) = &s.condition {
        let m = ev.cond(c, Some(&mask));
        let err = handle(m.err, mode, &s.text, report)?;
        mask.iter_mut().zip(&m.bits).for_each(|(a, b)| *a &= *b);
        clear_errors(&mut mask, &err);
    }
    if !mask.iter().any(|x| *x) {
        return Ok(());
    }
    let (lt, map) = ev.rows_of(s.editor.writes().0);
    let parents = snap.table(lt).num_rows();
    let attrs = attrs_table(lt);
    match &s.editor {
        Editor::Set { target, value } => {
            let v = ev.expr(value, Some(&mask));
            let err = handle(v.err, mode, &s.text, report)?;
            clear_errors(&mut mask, &err);
            let src = last_source(&mask, &map, parents, |i| v.col.get(i) != V::Nil);
            if src.iter().all(|x| *x == NONE) {
                return Ok(());
            }
            let at = |q: usize| match src[q] {
                NONE => V::Nil,
                i => v.col.get(i as usize),
            };
            match &target.field {
                Field::Attribute(key) => {
                    let a = attrs.expect("level has attributes");
                    let vals = any_values(parents, at);
                    let new = set_attr(&snap, a, parents, key, &vals, SetMode::Upsert)?;
                    p.set(a, new)?;
                    lookups.invalidate(a);
                }
                Field::Column(c) => write_column(p, lt, *c, parents, at)?,
                Field::Attributes => {}
            }
        }
        Editor::ReplacePattern {
            target,
            pattern,
            replacement,
        } => {
            let cur = ev.path(target);
            let rep = ev.expr(replacement, Some(&mask));
            let mut err = rep.err;
            let mut new: Vec<Option<String>> = vec![None; n];
            for i in (0..n).filter(|&i| mask[i]) {
                match (cur.get(i), rep.col.get(i)) {
                    (V::Str(old), V::Str(r)) => {
                        if let Cow::Owned(x) = pattern.replace_all(old, r) {
                            new[i] = Some(x);
                        }
                    }
                    (_, V::Str(_)) => {}
                    (_, other) => {
                        let e = err.get_or_insert_with(|| Errs {
                            rows: vec![false; n],
                            first: format!("expected string but got {}", other.type_name()),
                        });
                        e.rows[i] = true;
                    }
                }
            }
            let err = handle(err, mode, &s.text, report)?;
            if let Some(e) = &err {
                new.iter_mut().zip(&e.rows).for_each(|(x, bad)| {
                    if *bad {
                        *x = None
                    }
                });
            }
            if new.iter().all(Option::is_none) {
                return Ok(());
            }
            // The checker keeps replace_pattern on the context's own level: item = parent.
            let at = |q: usize| new[q].as_deref().map_or(V::Nil, V::Str);
            match &target.field {
                Field::Attribute(key) => {
                    let a = attrs.expect("level has attributes");
                    let vals = any_values(parents, at);
                    let out = set_attr(&snap, a, parents, key, &vals, SetMode::Update)?;
                    p.set(a, out)?;
                    lookups.invalidate(a);
                }
                Field::Column(c) => write_column(p, lt, *c, parents, at)?,
                Field::Attributes => {}
            }
        }
        Editor::ReplaceAllPatterns {
            mode: pmode,
            pattern,
            replacement,
            ..
        } => {
            let rep = ev.expr(replacement, Some(&mask));
            let mut err = rep.err;
            for i in (0..n).filter(|&i| mask[i]) {
                let got = rep.col.get(i);
                if !matches!(got, V::Str(_)) {
                    let other = got;
                    let e = err.get_or_insert_with(|| Errs {
                        rows: vec![false; n],
                        first: format!("expected string but got {}", other.type_name()),
                    });
                    e.rows[i] = true;
                }
            }
            let err = handle(err, mode, &s.text, report)?;
            clear_errors(&mut mask, &err);
            let a = attrs.expect("level has attributes");
            let replacement = |q: usize| match (mask[q], rep.col.get(q)) {
                (true, V::Str(r)) => Some(r),
                _ => None,
            };
            let out = match pmode {
                PatternMode::Value => {
                    ka::replace_in_values(snap.table(a), pattern, replacement, None)?
                }
                PatternMode::Key => ka::replace_in_keys(snap.table(a), pattern, replacement, None)?,
            };
            p.set(a, out)?;
            lookups.invalidate(a);
        }
        map_editor => {
            let a = attrs.expect("map editors name an attribute map");
            let selected = lift_any(&mask, &map, parents);
            let all = selected.iter().all(|x| *x);
            let sel = BooleanArray::from(selected);
            let parents_mask = (!all).then_some(&sel);
            // Deleting editors only narrow the rows of a pending table (the filter before,
            // or an earlier delete): the copy is left to whoever reads or rebuilds it next.
            let deleting = match map_editor {
                Editor::DeleteKeys { keys, .. } => {
                    let keys = KeySet::new(keys.iter().cloned());
                    Some(ka::delete_pending(
                        &snap.pending_or_whole(a),
                        |k| keys.contains(k),
                        parents_mask,
                    )?)
                }
                Editor::KeepKeys { keys, .. } => {
                    let keys = KeySet::new(keys.iter().cloned());
                    Some(ka::delete_pending(
                        &snap.pending_or_whole(a),
                        |k| !keys.contains(k),
                        parents_mask,
                    )?)
                }
                Editor::DeleteMatchingKeys { pattern, .. } => Some(ka::delete_pending(
                    &snap.pending_or_whole(a),
                    |k| pattern.is_match(k),
                    parents_mask,
                )?),
                _ => None,
            };
            if let Some(rows) = deleting {
                p.set_pending(a, rows)?;
                lookups.invalidate(a);
                return Ok(());
            }
            let t = snap.table(a);
            let out = match map_editor {
                Editor::Limit {
                    limit, priority, ..
                } => ka::limit_keys(
                    t,
                    *limit,
                    &KeySet::new(priority.iter().cloned()),
                    parents_mask,
                )?,
                Editor::TruncateAll { limit, marker, .. } => {
                    ka::truncate_strings(t, *limit, marker, parents_mask)?
                }
                _ => unreachable!("handled above"),
            };
            p.set(a, out)?;
            lookups.invalidate(a);
        }
    }
    Ok(())
}

/// Typed value columns (an attribute table's layout) holding `at(row)` for `n` rows; nil (and
/// ids, which the Collector does not store in attributes) leave the row without a value.
fn any_values<'v>(n: usize, at: impl Fn(usize) -> V<'v>) -> AnyValues {
    let vals: Vec<V<'v>> = (0..n).map(at).collect();
    let type_of = |v: &V<'v>| -> Option<AnyValueType> {
        Some(match v {
            V::Str(_) => AnyValueType::Str,
            V::Int(_) => AnyValueType::Int,
            V::Double(_) => AnyValueType::Double,
            V::Bool(_) => AnyValueType::Bool,
            V::Bytes(_) => AnyValueType::Bytes,
            V::Array(_) | V::List(_) => AnyValueType::Array,
            V::Map(_) => AnyValueType::Map,
            V::Nil | V::SpanId(_) | V::TraceId(_) => return None,
        })
    };
    let types: UInt8Array = vals.iter().map(|v| type_of(v).map(|t| t as u8)).collect();
    // A value column is built only if some row has its type (usually one: the string
    // column); the others are all-null arrays, without a pass over the rows.
    let used = |t: &[AnyValueType]| {
        vals.iter()
            .any(|v| type_of(v).is_some_and(|x| t.contains(&x)))
    };
    let column = |t: &[AnyValueType], dt: DataType, build: &dyn Fn() -> ArrayRef| -> ArrayRef {
        if used(t) {
            build()
        } else {
            crate::kernels::nulls::null_array(&dt, n)
        }
    };
    let str = column(&[AnyValueType::Str], DataType::Utf8, &|| {
        let a: StringArray = vals
            .iter()
            .map(|v| match v {
                V::Str(x) => Some(*x),
                _ => None,
            })
            .collect();
        Arc::new(a)
    });
    let int = column(&[AnyValueType::Int], DataType::Int64, &|| {
        let a: Int64Array = vals
            .iter()
            .map(|v| match v {
                V::Int(x) => Some(*x),
                _ => None,
            })
            .collect();
        Arc::new(a)
    });
    let double = column(&[AnyValueType::Double], DataType::Float64, &|| {
        let a: Float64Array = vals
            .iter()
            .map(|v| match v {
                V::Double(x) => Some(*x),
                _ => None,
            })
            .collect();
        Arc::new(a)
    });
    let bool = column(&[AnyValueType::Bool], DataType::Boolean, &|| {
        let a: BooleanArray = vals
            .iter()
            .map(|v| match v {
                V::Bool(x) => Some(*x),
                _ => None,
            })
            .collect();
        Arc::new(a)
    });
    let bytes_types = [AnyValueType::Bytes, AnyValueType::Array, AnyValueType::Map];
    let bytes = column(&bytes_types, DataType::Binary, &|| {
        let owned: Vec<Option<Cow<'v, [u8]>>> = vals
            .iter()
            .map(|v| match v {
                V::Bytes(x) | V::Array(x) | V::Map(x) => Some(Cow::Borrowed(*x)),
                V::List(items) => Some(Cow::Owned(encode_list(items))),
                _ => None,
            })
            .collect();
        let a: BinaryArray = owned.iter().map(|x| x.as_deref()).collect();
        Arc::new(a)
    });
    AnyValues {
        types,
        str: str.as_string::<i32>().clone(),
        int: int.as_primitive::<Int64Type>().clone(),
        double: double.as_primitive::<Float64Type>().clone(),
        bool: bool.as_boolean().clone(),
        bytes: bytes.as_binary::<i32>().clone(),
    }
}

/// A list value (`Split`'s result) as the protobuf encoding of an `AnyValue` array, the form
/// array attributes are stored in.
fn encode_list(items: &[Val<'_>]) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value::Value as P};
    fn one(v: &Val<'_>) -> AnyValue {
        let value = match v.as_v() {
            V::Str(s) => Some(P::StringValue(s.to_string())),
            V::Int(i) => Some(P::IntValue(i)),
            V::Double(d) => Some(P::DoubleValue(d)),
            V::Bool(b) => Some(P::BoolValue(b)),
            V::Bytes(b) => Some(P::BytesValue(b.to_vec())),
            V::List(l) => Some(P::ArrayValue(ArrayValue {
                values: l.iter().map(one).collect(),
            })),
            _ => None,
        };
        AnyValue { value }
    }
    AnyValue {
        value: Some(P::ArrayValue(ArrayValue {
            values: items.iter().map(one).collect(),
        })),
    }
    .encode_to_vec()
}

/// Writes a fixed column of table `t` where `at(row)` has a value of the column's type;
/// other rows keep theirs (the Collector's setters ignore values of another type).
fn write_column<'v>(
    p: &mut Payload,
    t: Table,
    c: Column,
    rows: usize,
    at: impl Fn(usize) -> V<'v>,
) -> Result<(), RunError> {
    let batch = p.table(t).clone();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let index = |name: &str| batch.schema().index_of(name);
    let mut status_written: Vec<usize> = Vec::new();
    match c {
        Column::Name
        | Column::Version
        | Column::Description
        | Column::Unit
        | Column::SeverityText => {
            let name = match c {
                Column::Name => col::NAME,
                Column::Version => col::VERSION,
                Column::Description => col::DESCRIPTION,
                Column::Unit => col::UNIT,
                _ => col::SEVERITY_TEXT,
            };
            let i = index(name)?;
            let updates: Vec<(usize, &str)> = (0..rows)
                .filter_map(|r| match at(r) {
                    V::Str(s) => Some((r, s)),
                    _ => None,
                })
                .collect();
            if updates.is_empty() {
                return Ok(());
            }
            columns[i] = write_dict(columns[i].as_dictionary::<UInt32Type>(), &updates)?;
        }
        Column::Kind | Column::StatusCode | Column::SeverityNumber => {
            let name = match c {
                Column::Kind => col::KIND,
                Column::StatusCode => col::STATUS_CODE,
                _ => col::SEVERITY_NUMBER,
            };
            let i = index(name)?;
            let mut values = columns[i].as_primitive::<Int32Type>().values().to_vec();
            let mut any = false;
            for (r, v) in values.iter_mut().enumerate() {
                if let V::Int(x) = at(r) {
                    // Go converts int64 to the proto's int32 enum the same way (wrapping).
                    *v = x as i32;
                    any = true;
                    status_written.push(r);
                }
            }
            if !any {
                return Ok(());
            }
            columns[i] = Arc::new(Int32Array::from(values));
        }
        Column::StatusMessage => {
            let i = index(col::STATUS_MESSAGE)?;
            let old = columns[i].as_string::<i32>();
            let mut changed = false;
            let new: StringArray = (0..rows)
                .map(|r| match at(r) {
                    V::Str(s) => {
                        changed = true;
                        status_written.push(r);
                        Some(s.to_string())
                    }
                    _ => Some(old.value(r).to_string()),
                })
                .collect();
            if !changed {
                return Ok(());
            }
            columns[i] = Arc::new(new);
        }
        Column::Body => {
            let first = index(&format!("body_{}", col::TYPE))?;
            let targets: Vec<usize> = (0..rows).filter(|&r| at(r) != V::Nil).collect();
            if targets.is_empty() {
                return Ok(());
            }
            let src = any_values(targets.len(), |k| at(targets[k]));
            let mut idx: Vec<(usize, usize)> = (0..rows).map(|r| (0, r)).collect();
            for (k, &r) in targets.iter().enumerate() {
                idx[r] = (1, k);
            }
            let old_cols: Vec<ArrayRef> = columns[first..first + 6].to_vec();
            let old: Vec<&dyn Array> = old_cols.iter().map(|c| c.as_ref()).collect();
            let new: [&dyn Array; 6] = [
                &src.types,
                &src.str,
                &src.int,
                &src.double,
                &src.bool,
                &src.bytes,
            ];
            for k in 0..6 {
                let mut out = arrow::compute::interleave(&[old[k], new[k]], &idx)?;
                if k == 0 {
                    // `body_type` is not nullable: every row has a type.
                    out = Arc::new(UInt8Array::from(
                        out.as_primitive::<arrow::datatypes::UInt8Type>()
                            .iter()
                            .map(|x| x.unwrap_or(AnyValueType::Empty as u8))
                            .collect::<Vec<u8>>(),
                    ));
                }
                columns[first + k] = out;
            }
        }
        // The checker only lets settable columns through.
        _ => return Ok(()),
    }
    if matches!(c, Column::StatusCode | Column::StatusMessage) && !status_written.is_empty() {
        let i = index(col::STATUS_PRESENT)?;
        let mut present: Vec<bool> = columns[i]
            .as_boolean()
            .iter()
            .map(|x| x.unwrap_or(false))
            .collect();
        for r in status_written {
            present[r] = true;
        }
        columns[i] = Arc::new(BooleanArray::from(present));
    }
    p.set(t, RecordBatch::try_new(batch.schema(), columns)?)?;
    Ok(())
}

/// A dictionary string column with some rows replaced: new strings are appended to the
/// dictionary (once each), the other rows keep their keys.
fn write_dict(
    d: &DictionaryArray<UInt32Type>,
    updates: &[(usize, &str)],
) -> Result<ArrayRef, RunError> {
    let values = d.values().as_string::<i32>();
    let mut keys: Vec<u32> = d.keys().values().to_vec();
    let mut added: Vec<&str> = Vec::new();
    let mut index: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let base = values.len() as u32;
    for &(r, s) in updates {
        let k = *index.entry(s).or_insert_with(|| {
            added.push(s);
            base + added.len() as u32 - 1
        });
        keys[r] = k;
    }
    let all: StringArray = (0..values.len())
        .map(|i| Some(values.value(i)))
        .chain(added.iter().map(|s| Some(*s)))
        .collect();
    Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(
        UInt32Array::from(keys),
        Arc::new(all),
    )?))
}
