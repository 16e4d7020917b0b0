//! Evaluates checked expressions and conditions over every item of a context at once.
//!
//! A context's items are the rows of one table (spans, data points of one kind, ...). Each
//! expression becomes a column over those rows ([`Col`]): a path is a view of a table column
//! (gathered through parent links when it belongs to an ancestor: a span reading its
//! resource's attribute), a comparison or converter is one loop over its operand columns, a
//! condition is a boolean mask. Nothing walks a span as an object, and nothing is
//! interpreted per row: the tree is walked once per batch.
//!
//! Two lookups carry most of the work and are shared between expressions
//! ([`Lookups`]): for each attribute table, the row of each key the program reads, for every
//! parent (one pass over the table's key column for all keys at once, judged once per
//! dictionary value); and the row maps from a context's table up to its ancestors.
//!
//! Per-row errors (a `Substring` out of range, `Split` of a non-string) are a mask plus the
//! first message, combined the way Go evaluates: `a and b` only evaluates `b` where `a` is
//! true, so `b`'s errors elsewhere do not count.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use regex::Regex;

use super::ast::CmpOp;
use super::check::{Case, Cond, Expr, Lit};
use super::context::{Column, Context, Field, PathRef, attrs_table};
use crate::kernels::attributes as ka;
use crate::payload::Payload;
use crate::schema::{AnyValueType, Table, col};

/// "No row" in a row map (the key is absent: the value is nil).
pub const NONE: u32 = u32::MAX;

/// One row's value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum V<'b> {
    Nil,
    Str(&'b str),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(&'b [u8]),
    SpanId(&'b [u8]),
    TraceId(&'b [u8]),
    /// An `AnyValue` array, protobuf-encoded (attribute tables' representation).
    Array(&'b [u8]),
    /// An `AnyValue` key-value list, protobuf-encoded.
    Map(&'b [u8]),
    List(&'b [Val<'b>]),
}

/// One row's value, owned or borrowed from the payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    Nil,
    Str(Cow<'a, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Cow<'a, [u8]>),
    SpanId([u8; 8]),
    TraceId([u8; 16]),
    Array(Cow<'a, [u8]>),
    Map(Cow<'a, [u8]>),
    List(Vec<Val<'a>>),
}

impl<'a> Val<'a> {
    pub fn as_v(&self) -> V<'_> {
        match self {
            Val::Nil => V::Nil,
            Val::Str(s) => V::Str(s),
            Val::Int(i) => V::Int(*i),
            Val::Double(d) => V::Double(*d),
            Val::Bool(b) => V::Bool(*b),
            Val::Bytes(b) => V::Bytes(b),
            Val::SpanId(b) => V::SpanId(b),
            Val::TraceId(b) => V::TraceId(b),
            Val::Array(b) => V::Array(b),
            Val::Map(b) => V::Map(b),
            Val::List(l) => V::List(l),
        }
    }

    pub fn from_lit(l: &Lit) -> Val<'static> {
        match l {
            Lit::Nil => Val::Nil,
            Lit::Str(s) => Val::Str(Cow::Owned(s.clone())),
            Lit::Int(i) => Val::Int(*i),
            Lit::Double(d) => Val::Double(*d),
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Bytes(b) => Val::Bytes(Cow::Owned(b.clone())),
            Lit::SpanId(b) => Val::SpanId(*b),
            Lit::TraceId(b) => Val::TraceId(*b),
        }
    }
}

impl<'b> V<'b> {
    pub fn to_val(self) -> Val<'b> {
        match self {
            V::Nil => Val::Nil,
            V::Str(s) => Val::Str(Cow::Borrowed(s)),
            V::Int(i) => Val::Int(i),
            V::Double(d) => Val::Double(d),
            V::Bool(b) => Val::Bool(b),
            V::Bytes(b) => Val::Bytes(Cow::Borrowed(b)),
            V::SpanId(b) => Val::SpanId(b.try_into().unwrap_or([0; 8])),
            V::TraceId(b) => Val::TraceId(b.try_into().unwrap_or([0; 16])),
            V::Array(b) => Val::Array(Cow::Borrowed(b)),
            V::Map(b) => Val::Map(Cow::Borrowed(b)),
            V::List(l) => Val::List(l.to_vec()),
        }
    }

    /// The type name Go would print in an error ("expected string but got int64").
    pub fn type_name(self) -> &'static str {
        match self {
            V::Nil => "nil",
            V::Str(_) => "string",
            V::Int(_) => "int64",
            V::Double(_) => "float64",
            V::Bool(_) => "bool",
            V::Bytes(_) => "[]byte",
            V::SpanId(_) => "pcommon.SpanID",
            V::TraceId(_) => "pcommon.TraceID",
            V::Array(_) => "pcommon.Slice",
            V::Map(_) => "pcommon.Map",
            V::List(_) => "[]any",
        }
    }
}

/// The typed value columns of an attribute table (or of the logs table's body), read by row.
#[derive(Clone, Copy)]
pub struct AnyCols<'a> {
    ty: &'a [u8],
    str: &'a StringArray,
    int: &'a [i64],
    double: &'a [f64],
    bool: &'a BooleanArray,
    bytes: &'a BinaryArray,
}

impl<'a> AnyCols<'a> {
    /// Columns `type, str, int, double, bool, bytes` starting at `first`.
    fn at(batch: &'a RecordBatch, first: usize) -> Self {
        let c = |i: usize| batch.column(first + i);
        AnyCols {
            ty: c(0).as_primitive::<UInt8Type>().values(),
            str: c(1).as_string::<i32>(),
            int: c(2).as_primitive::<Int64Type>().values(),
            double: c(3).as_primitive::<Float64Type>().values(),
            bool: c(4).as_boolean(),
            bytes: c(5).as_binary::<i32>(),
        }
    }

    pub fn of_attrs(batch: &'a RecordBatch) -> Self {
        AnyCols::at(batch, 2)
    }

    pub fn of_body(logs: &'a RecordBatch) -> Self {
        let first = logs
            .schema()
            .index_of(&format!("body_{}", col::TYPE))
            .expect("logs table has body columns");
        AnyCols::at(logs, first)
    }

    #[inline]
    pub fn get(&self, row: usize) -> V<'a> {
        match AnyValueType::from_u8(self.ty[row]) {
            Some(AnyValueType::Str) => V::Str(self.str.value(row)),
            Some(AnyValueType::Int) => V::Int(self.int[row]),
            Some(AnyValueType::Double) => V::Double(self.double[row]),
            Some(AnyValueType::Bool) => V::Bool(self.bool.value(row)),
            Some(AnyValueType::Bytes) => V::Bytes(self.bytes.value(row)),
            Some(AnyValueType::Array) => V::Array(self.bytes.value(row)),
            Some(AnyValueType::Map) => V::Map(self.bytes.value(row)),
            // An empty value is nil in OTTL (`ValueTypeEmpty == nil`).
            Some(AnyValueType::Empty | AnyValueType::Absent) | None => V::Nil,
        }
    }
}

/// A value per item of the context.
pub enum Col<'a> {
    /// The same value for every item.
    Scalar(Val<'a>),
    /// Per item, a row of typed value columns, or [`NONE`] for nil.
    Any(AnyCols<'a>, Vec<u32>),
    /// Per item, a key into a dictionary's values (never nil).
    Dict(&'a StringArray, Vec<u32>),
    /// Per item, a row of a plain string column (never nil).
    Utf8(&'a StringArray, Vec<u32>),
    Ints(Vec<i64>),
    Rows(Vec<Val<'a>>),
}

impl<'a> Col<'a> {
    #[inline]
    pub fn get(&self, i: usize) -> V<'_> {
        match self {
            Col::Scalar(v) => v.as_v(),
            Col::Any(c, rows) => match rows[i] {
                NONE => V::Nil,
                r => c.get(r as usize),
            },
            Col::Dict(values, keys) => V::Str(values.value(keys[i] as usize)),
            Col::Utf8(a, rows) => V::Str(a.value(rows[i] as usize)),
            Col::Ints(v) => V::Int(v[i]),
            Col::Rows(v) => v[i].as_v(),
        }
    }
}

/// Rows where evaluation failed, and the first failure's message.
#[derive(Clone, Debug)]
pub struct Errs {
    pub rows: Vec<bool>,
    pub first: String,
}

impl Errs {
    pub fn count(&self) -> usize {
        self.rows.iter().filter(|e| **e).count()
    }
}

fn merge(a: Option<Errs>, b: Option<Errs>) -> Option<Errs> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(mut a), Some(b)) => {
            a.rows.iter_mut().zip(&b.rows).for_each(|(x, y)| *x |= *y);
            Some(a)
        }
    }
}

/// A column plus where it failed.
pub struct Out<'a> {
    pub col: Col<'a>,
    pub err: Option<Errs>,
}

/// A condition's result: `bits` is meaningful where `err` is not set.
#[derive(Clone, Debug)]
pub struct Mask {
    pub bits: Vec<bool>,
    pub err: Option<Errs>,
}

/// Row maps and attribute lookups, shared by every expression evaluated on one payload.
/// Owned data only, so it outlives the borrow of the payload a single evaluation needs and is
/// invalidated table by table as a transform writes.
#[derive(Default)]
pub struct Lookups {
    /// The keys the program reads, per attribute table: found in one pass.
    wanted: HashMap<Table, Vec<String>>,
    /// (attribute table, key) -> per parent row: the key's first row, or NONE; `None` when
    /// no parent has the key (a whole condition on it is then decided without a pass).
    attr_rows: HashMap<(Table, String), Option<Arc<Vec<u32>>>>,
    /// (table, ancestor table) -> per row of table: its ancestor's row.
    maps: HashMap<(Table, Table), Arc<Vec<u32>>>,
}

impl Lookups {
    /// Lookups for a program that reads `paths` when run over `ctx` items.
    pub fn new(ctx: Context, paths: &[PathRef]) -> Self {
        let mut wanted: HashMap<Table, Vec<String>> = HashMap::new();
        for p in paths {
            if let Field::Attribute(k) = &p.field {
                for t in level_tables(ctx, p.level) {
                    if let Some(a) = attrs_table(t) {
                        let keys = wanted.entry(a).or_default();
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
            }
        }
        Lookups {
            wanted,
            ..Default::default()
        }
    }

    /// Forget what was read from `t` (it was rewritten).
    pub fn invalidate(&mut self, t: Table) {
        self.attr_rows.retain(|(a, _), _| *a != t);
    }

    fn map(&mut self, p: &Payload, from: Table, to: Table) -> Arc<Vec<u32>> {
        if let Some(m) = self.maps.get(&(from, to)) {
            return m.clone();
        }
        let mut t = from;
        let mut map: Vec<u32> = (0..p.table(from).num_rows() as u32).collect();
        while t != to {
            let ids = p.parent_ids(t).values();
            map.iter_mut().for_each(|r| *r = ids[*r as usize]);
            t = t.parent().expect("`to` is an ancestor of `from`");
        }
        let m = Arc::new(map);
        self.maps.insert((from, to), m.clone());
        m
    }

    /// Per parent row of `attrs`' parent table: the first row of `key`, or NONE; `None` if
    /// no parent has it.
    fn attr_rows(&mut self, p: &Payload, attrs: Table, key: &str) -> Option<Arc<Vec<u32>>> {
        if let Some(r) = self.attr_rows.get(&(attrs, key.to_string())) {
            return r.clone();
        }
        let mut keys: Vec<String> = self.wanted.get(&attrs).cloned().unwrap_or_default();
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
        let parent = attrs.parent().expect("attribute tables have a parent");
        let parents = p.table(parent).num_rows();
        // Rows of a pending table are found in its base (see `attr_values`), unbuilt.
        let rows = match p.pending_rows(attrs) {
            Some(pending) => ka::first_rows_of_keys_pending(pending, parents, &keys),
            None => ka::first_rows_of_keys(p.table(attrs), parents, &keys),
        };
        for (k, r) in keys.into_iter().zip(rows) {
            let found = r.iter().any(|&x| x != NONE);
            self.attr_rows
                .insert((attrs, k), found.then(|| Arc::new(r)));
        }
        self.attr_rows[&(attrs, key.to_string())].clone()
    }
}

/// The table whose rows [`Lookups`] finds for attribute table `a`: a pending table's base
/// (read without building it), else the table.
fn attr_values(p: &Payload, a: Table) -> &RecordBatch {
    match p.pending_rows(a) {
        Some(pending) => pending.base(),
        None => p.table(a),
    }
}

/// The tables of `level` that the items of `ctx` map to (the point tables for a data point
/// context, one table otherwise).
fn level_tables(ctx: Context, level: Context) -> Vec<Table> {
    ctx.tables()
        .iter()
        .map(|&t| ancestor_table(t, level))
        .collect()
}

/// The table of `level` above (or equal to) table `t`.
pub fn ancestor_table(t: Table, level: Context) -> Table {
    let mut x = t;
    loop {
        if Context::of_table(x) == Some(level) {
            return x;
        }
        x = x
            .parent()
            .expect("level is an ancestor of the table's context");
    }
}

/// Evaluates expressions over the rows of one table of a payload.
pub struct Eval<'a, 'l> {
    p: &'a Payload,
    /// The table whose rows are the items.
    table: Table,
    n: usize,
    lookups: &'l mut Lookups,
}

impl<'a, 'l> Eval<'a, 'l> {
    pub fn new(p: &'a Payload, table: Table, lookups: &'l mut Lookups) -> Self {
        Eval {
            p,
            table,
            n: p.table(table).num_rows(),
            lookups,
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Per item: the row of `level`'s table it belongs to (identity for the item's own level).
    pub fn rows_of(&mut self, level: Context) -> (Table, Arc<Vec<u32>>) {
        let t = ancestor_table(self.table, level);
        (t, self.lookups.map(self.p, self.table, t))
    }

    // ------------------------------------------------------------------------- paths

    pub fn path(&mut self, r: &PathRef) -> Col<'a> {
        let (t, map) = self.rows_of(r.level);
        let own = t == self.table;
        let gather = |rows: &[u32]| -> Vec<u32> {
            if own {
                rows.to_vec()
            } else {
                map.iter()
                    .map(|&m| rows.get(m as usize).copied().unwrap_or(NONE))
                    .collect()
            }
        };
        let batch = self.p.table(t);
        match &r.field {
            Field::Attribute(k) => {
                let a = attrs_table(t).expect("level has attributes");
                match self.lookups.attr_rows(self.p, a, k) {
                    // The key is on no item: nil for all, as one value.
                    None => Col::Scalar(Val::Nil),
                    Some(rows) => {
                        Col::Any(AnyCols::of_attrs(attr_values(self.p, a)), gather(&rows))
                    }
                }
            }
            // Rejected by the checker as a value; nil if it ever gets here.
            Field::Attributes => Col::Scalar(Val::Nil),
            Field::Column(c) => {
                let ident: Vec<u32>;
                let rows: &[u32] = if own {
                    ident = (0..self.n as u32).collect();
                    &ident
                } else {
                    &map
                };
                column(batch, t, *c, rows)
            }
        }
    }

    // ------------------------------------------------------------------------- expressions

    /// The value of `e` for every item. With a selection, only the selected items are
    /// computed (the others are nil and never fail): what Go's short-circuit evaluation and a
    /// `where` clause leave unevaluated.
    pub fn expr(&mut self, e: &Expr, sel: Sel<'_>) -> Out<'a> {
        let ok = |col| Out { col, err: None };
        let n = self.n;
        let on = |i: usize| sel.is_none_or(|s| s[i]);
        match e {
            Expr::Lit(l) => ok(Col::Scalar(Val::from_lit(l))),
            Expr::Path(p) => ok(self.path(p)),
            Expr::IsMatch(..) | Expr::IsString(_) | Expr::IsInt(_) | Expr::IsRootSpan => {
                let m = self.bool_expr(e, sel);
                Out {
                    col: Col::Rows(m.bits.into_iter().map(Val::Bool).collect()),
                    err: m.err,
                }
            }
            Expr::List(items) => {
                let outs: Vec<Out<'a>> = items.iter().map(|x| self.expr(x, sel)).collect();
                let err = outs.iter().fold(None, |a, o| merge(a, o.err.clone()));
                let rows = (0..n)
                    .map(|i| match on(i) {
                        true => Val::List(outs.iter().map(|o| owned(o.col.get(i))).collect()),
                        false => Val::Nil,
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::Concat(items, delim) => {
                let outs: Vec<Out<'a>> = items.iter().map(|x| self.expr(x, sel)).collect();
                let d = self.expr(delim, sel);
                let mut err = outs
                    .iter()
                    .fold(d.err.clone(), |a, o| merge(a, o.err.clone()));
                let mut rows = Vec::with_capacity(n);
                let mut s = String::new();
                for i in 0..n {
                    if !on(i) {
                        rows.push(Val::Nil);
                        continue;
                    }
                    s.clear();
                    let delim = match d.col.get(i) {
                        V::Str(x) => x,
                        other => {
                            fail(&mut err, n, i, || {
                                format!(
                                    "Concat: expected string delimiter but got {}",
                                    other.type_name()
                                )
                            });
                            rows.push(Val::Nil);
                            continue;
                        }
                    };
                    let mut failed = None;
                    for (k, o) in outs.iter().enumerate() {
                        if k > 0 {
                            s.push_str(delim);
                        }
                        match string_like(o.col.get(i), &mut s) {
                            Ok(true) => {}
                            Ok(false) => s.push_str("<nil>"),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => {
                            fail(&mut err, n, i, || format!("Concat: {e}"));
                            rows.push(Val::Nil);
                        }
                        None => rows.push(Val::Str(Cow::Owned(s.clone()))),
                    }
                }
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::Split(target, delim) => {
                let t = self.expr(target, sel);
                let mut err = t.err;
                let rows = (0..n)
                    .map(|i| match (on(i), t.col.get(i)) {
                        (false, _) => Val::Nil,
                        (true, V::Str(s)) => Val::List(
                            go_split(s, delim)
                                .into_iter()
                                .map(|x| Val::Str(Cow::Owned(x.to_string())))
                                .collect(),
                        ),
                        (true, other) => {
                            fail(&mut err, n, i, || {
                                format!("Split: expected string but got {}", other.type_name())
                            });
                            Val::Nil
                        }
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::Index(list, idx) => {
                let l = self.expr(list, sel);
                let mut err = l.err;
                let rows = (0..n)
                    .map(|i| match (on(i), l.col.get(i)) {
                        (true, V::List(items)) => {
                            match usize::try_from(*idx).ok().and_then(|k| items.get(k)) {
                                Some(v) => owned(v.as_v()),
                                None => {
                                    fail(&mut err, n, i, || {
                                        format!(
                                            "index {idx} out of bounds (length {})",
                                            items.len()
                                        )
                                    });
                                    Val::Nil
                                }
                            }
                        }
                        // not selected, or a failed Split: already an error on this row
                        _ => Val::Nil,
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::Substring(target, start, length) => {
                let t = self.expr(target, sel);
                let s = self.expr(start, sel);
                let l = self.expr(length, sel);
                let mut err = merge(merge(s.err, l.err), t.err);
                let rows = (0..n)
                    .map(|i| {
                        if !on(i) {
                            return Val::Nil;
                        }
                        match substring(t.col.get(i), s.col.get(i), l.col.get(i)) {
                            Ok(v) => Val::Str(Cow::Owned(v.to_string())),
                            Err(e) => {
                                fail(&mut err, n, i, || format!("Substring: {e}"));
                                Val::Nil
                            }
                        }
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::ConvertCase(target, case) => {
                let t = self.expr(target, sel);
                let mut err = t.err;
                let rows = (0..n)
                    .map(|i| match (on(i), t.col.get(i)) {
                        (false, _) => Val::Nil,
                        (true, V::Str(s)) => Val::Str(Cow::Owned(convert_case(s, *case))),
                        (true, other) => {
                            fail(&mut err, n, i, || {
                                format!(
                                    "ConvertCase: expected string but got {}",
                                    other.type_name()
                                )
                            });
                            Val::Nil
                        }
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
            Expr::Int(target) => {
                let t = self.expr(target, sel);
                let rows = (0..n)
                    .map(|i| match on(i) {
                        true => int_like(t.col.get(i)),
                        false => Val::Nil,
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err: t.err,
                }
            }
            Expr::String(target) => {
                let t = self.expr(target, sel);
                let mut err = t.err;
                let mut s = String::new();
                let rows = (0..n)
                    .map(|i| {
                        if !on(i) {
                            return Val::Nil;
                        }
                        s.clear();
                        match string_like(t.col.get(i), &mut s) {
                            Ok(true) => Val::Str(Cow::Owned(s.clone())),
                            Ok(false) => Val::Nil,
                            Err(e) => {
                                fail(&mut err, n, i, || format!("String: {e}"));
                                Val::Nil
                            }
                        }
                    })
                    .collect();
                Out {
                    col: Col::Rows(rows),
                    err,
                }
            }
        }
    }

    /// A bool-valued converter as a mask (false where not selected).
    fn bool_expr(&mut self, e: &Expr, sel: Sel<'_>) -> Mask {
        let n = self.n;
        match e {
            Expr::IsMatch(target, re) => {
                let t = self.expr(target, sel);
                Mask {
                    bits: is_match(&t.col, re, n, sel),
                    err: t.err,
                }
            }
            Expr::IsString(target) | Expr::IsInt(target) => {
                let want_str = matches!(e, Expr::IsString(_));
                let t = self.expr(target, sel);
                let bits = (0..n)
                    .map(|i| match t.col.get(i) {
                        V::Str(_) => want_str,
                        V::Int(_) => !want_str,
                        _ => false,
                    })
                    .collect();
                Mask { bits, err: t.err }
            }
            Expr::IsRootSpan => {
                let (t, map) = self.rows_of(Context::Span);
                let ids = self
                    .p
                    .table(t)
                    .column_by_name(col::PARENT_SPAN_ID)
                    .expect("spans have parent_span_id")
                    .as_fixed_size_binary();
                let bits = map
                    .iter()
                    .map(|&r| {
                        let r = r as usize;
                        ids.is_null(r) || ids.value(r).iter().all(|b| *b == 0)
                    })
                    .collect();
                Mask { bits, err: None }
            }
            other => {
                // Not a bool converter (the checker only lets these through): compare to true.
                let o = self.expr(other, sel);
                Mask {
                    bits: (0..n).map(|i| o.col.get(i) == V::Bool(true)).collect(),
                    err: o.err,
                }
            }
        }
    }

    // ------------------------------------------------------------------------- conditions

    /// The condition for every item. With a selection, unselected items are false and never
    /// fail. `a and b` evaluates `b` only where `a` is true, `a or b` only where `a` is false,
    /// as Go does; errors on other items do not exist.
    pub fn cond(&mut self, c: &Cond, sel: Sel<'_>) -> Mask {
        let n = self.n;
        let mut m = match c {
            Cond::Const(b) => Mask {
                bits: vec![*b; n],
                err: None,
            },
            Cond::Value(e) => self.bool_expr(e, sel),
            Cond::Not(a) => {
                let mut m = self.cond(a, sel);
                m.bits.iter_mut().for_each(|b| *b = !*b);
                m
            }
            Cond::And(a, b) | Cond::Or(a, b) => {
                let and = matches!(c, Cond::And(..));
                let ma = self.cond(a, sel);
                // Where `b` still decides: selected, `a` did not fail, and `a` is true (and) /
                // false (or).
                let next: Vec<bool> = (0..n)
                    .map(|i| {
                        sel.is_none_or(|s| s[i])
                            && ma.bits[i] == and
                            && !ma.err.as_ref().is_some_and(|e| e.rows[i])
                    })
                    .collect();
                if !next.iter().any(|x| *x) {
                    ma
                } else {
                    let mb = self.cond(b, Some(&next));
                    let bits = (0..n)
                        .map(|i| if next[i] { mb.bits[i] } else { ma.bits[i] })
                        .collect();
                    Mask {
                        bits,
                        err: merge(ma.err, mb.err),
                    }
                }
            }
            Cond::Cmp(l, op, r) => {
                let lo = self.expr(l, sel);
                let ro = self.expr(r, sel);
                let bits = compare_cols(&lo.col, *op, &ro.col, n);
                Mask {
                    bits,
                    err: merge(lo.err, ro.err),
                }
            }
        };
        if let Some(s) = sel {
            m.bits.iter_mut().zip(s).for_each(|(b, s)| *b &= *s);
        }
        m
    }
}

/// Which items an evaluation is for (`None`: all).
pub type Sel<'s> = Option<&'s [bool]>;

fn fail(err: &mut Option<Errs>, n: usize, row: usize, msg: impl FnOnce() -> String) {
    let e = err.get_or_insert_with(|| Errs {
        rows: vec![false; n],
        first: msg(),
    });
    e.rows[row] = true;
}

fn owned(v: V<'_>) -> Val<'static> {
    match v {
        V::Nil => Val::Nil,
        V::Str(s) => Val::Str(Cow::Owned(s.to_string())),
        V::Int(i) => Val::Int(i),
        V::Double(d) => Val::Double(d),
        V::Bool(b) => Val::Bool(b),
        V::Bytes(b) => Val::Bytes(Cow::Owned(b.to_vec())),
        V::SpanId(b) => Val::SpanId(b.try_into().unwrap_or([0; 8])),
        V::TraceId(b) => Val::TraceId(b.try_into().unwrap_or([0; 16])),
        V::Array(b) => Val::Array(Cow::Owned(b.to_vec())),
        V::Map(b) => Val::Map(Cow::Owned(b.to_vec())),
        V::List(l) => Val::List(l.iter().map(|x| owned(x.as_v())).collect()),
    }
}

/// A fixed column of `batch` (table `t`) read at `rows`.
fn column<'a>(batch: &'a RecordBatch, t: Table, c: Column, rows: &[u32]) -> Col<'a> {
    let get = |name: &str| batch.column_by_name(name);
    let ints = |name: &str| -> Col<'a> {
        let Some(a) = get(name) else {
            return Col::Scalar(Val::Nil);
        };
        let v: Vec<i64> = match a.data_type() {
            arrow::datatypes::DataType::Int32 => {
                let x = a.as_primitive::<Int32Type>().values();
                rows.iter().map(|&r| x[r as usize] as i64).collect()
            }
            arrow::datatypes::DataType::UInt32 => {
                let x = a.as_primitive::<UInt32Type>().values();
                rows.iter().map(|&r| x[r as usize] as i64).collect()
            }
            arrow::datatypes::DataType::UInt64 => {
                let x = a.as_primitive::<UInt64Type>().values();
                rows.iter().map(|&r| x[r as usize] as i64).collect()
            }
            arrow::datatypes::DataType::UInt8 => {
                let x = a.as_primitive::<UInt8Type>().values();
                rows.iter().map(|&r| x[r as usize] as i64).collect()
            }
            _ => return Col::Scalar(Val::Nil),
        };
        Col::Ints(v)
    };
    let dict = |name: &str| -> Col<'a> {
        let Some(a) = get(name) else {
            return Col::Scalar(Val::Nil);
        };
        let d = a.as_dictionary::<UInt32Type>();
        let keys = d.keys().values();
        Col::Dict(
            d.values().as_string::<i32>(),
            rows.iter().map(|&r| keys[r as usize]).collect(),
        )
    };
    let utf8 = |name: &str| -> Col<'a> {
        match get(name) {
            Some(a) => Col::Utf8(a.as_string::<i32>(), rows.to_vec()),
            None => Col::Scalar(Val::Nil),
        }
    };
    let id = |name: &str, string: bool| -> Col<'a> {
        let Some(a) = get(name) else {
            return Col::Scalar(Val::Nil);
        };
        let a: &FixedSizeBinaryArray = a.as_fixed_size_binary();
        let width = a.value_length() as usize;
        Col::Rows(
            rows.iter()
                .map(|&r| {
                    let r = r as usize;
                    let bytes: &[u8] = if a.is_null(r) { &[] } else { a.value(r) };
                    if string {
                        // pdata: an empty (all-zero) id prints as "".
                        if bytes.iter().all(|b| *b == 0) {
                            Val::Str(Cow::Borrowed(""))
                        } else {
                            Val::Str(Cow::Owned(hex::encode(bytes)))
                        }
                    } else if width == 8 {
                        Val::SpanId(bytes.try_into().unwrap_or([0; 8]))
                    } else {
                        Val::TraceId(bytes.try_into().unwrap_or([0; 16]))
                    }
                })
                .collect(),
        )
    };
    let nullable_f64 = |name: &str| -> Col<'a> {
        let Some(a) = get(name) else {
            return Col::Scalar(Val::Nil);
        };
        let a: &Float64Array = a.as_primitive();
        Col::Rows(
            rows.iter()
                .map(|&r| match a.is_valid(r as usize) {
                    true => Val::Double(a.value(r as usize)),
                    false => Val::Nil,
                })
                .collect(),
        )
    };
    match c {
        Column::Name => dict(col::NAME),
        Column::Version => dict(col::VERSION),
        Column::Description => dict(col::DESCRIPTION),
        Column::Unit => dict(col::UNIT),
        Column::SeverityText => dict(col::SEVERITY_TEXT),
        Column::EventName => dict(col::EVENT_NAME),
        Column::Kind => ints(col::KIND),
        Column::StatusCode => ints(col::STATUS_CODE),
        Column::SeverityNumber => ints(col::SEVERITY_NUMBER),
        Column::AggregationTemporality => ints(col::AGGREGATION_TEMPORALITY),
        Column::MetricType => ints(col::METRIC_TYPE),
        Column::StartTime => ints(col::START_TIME_UNIX_NANO),
        Column::EndTime => ints(col::END_TIME_UNIX_NANO),
        Column::Time => ints(col::TIME_UNIX_NANO),
        Column::ObservedTime => ints(col::OBSERVED_TIME_UNIX_NANO),
        Column::DroppedAttributesCount => ints(col::DROPPED_ATTRIBUTES_COUNT),
        Column::DroppedEventsCount => ints(col::DROPPED_EVENTS_COUNT),
        Column::DroppedLinksCount => ints(col::DROPPED_LINKS_COUNT),
        Column::Flags => ints(col::FLAGS),
        Column::Count => ints(col::COUNT),
        Column::StatusMessage => utf8(col::STATUS_MESSAGE),
        Column::TraceState => utf8(col::TRACE_STATE),
        Column::TraceId => id(col::TRACE_ID, false),
        Column::SpanId => id(col::SPAN_ID, false),
        Column::ParentSpanId => id(col::PARENT_SPAN_ID, false),
        Column::TraceIdString => id(col::TRACE_ID, true),
        Column::SpanIdString => id(col::SPAN_ID, true),
        Column::ParentSpanIdString => id(col::PARENT_SPAN_ID, true),
        Column::IsMonotonic => match get(col::IS_MONOTONIC) {
            Some(a) => {
                let a = a.as_boolean();
                Col::Rows(
                    rows.iter()
                        .map(|&r| Val::Bool(a.value(r as usize)))
                        .collect(),
                )
            }
            None => Col::Scalar(Val::Nil),
        },
        Column::ValueInt if t == Table::NumberPoints => {
            let a: &Int64Array = batch
                .column_by_name(col::INT_VALUE)
                .expect("number points have int_value")
                .as_primitive();
            Col::Rows(
                rows.iter()
                    .map(|&r| match a.is_valid(r as usize) {
                        true => Val::Int(a.value(r as usize)),
                        false => Val::Nil,
                    })
                    .collect(),
            )
        }
        Column::ValueDouble if t == Table::NumberPoints => nullable_f64(col::DOUBLE_VALUE),
        Column::ValueInt | Column::ValueDouble => Col::Scalar(Val::Nil),
        Column::Sum => nullable_f64(col::SUM),
        Column::Body => {
            let cols = AnyCols::of_body(batch);
            Col::Any(cols, rows.to_vec())
        }
    }
}

// ----------------------------------------------------------------------------- comparisons

/// OTTL's comparison rules (LANGUAGE.md, "Comparison Rules"): same types compare normally
/// (ints and doubles as numbers, strings and bytes bytewise, false < true); nil equals only
/// nil and orders nothing; different types are only "not equal"; ids, maps and lists only
/// support `==`/`!=`.
pub fn compare(a: V<'_>, op: CmpOp, b: V<'_>) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (V::Nil, V::Nil) => {
            return match op {
                CmpOp::Eq => true,
                CmpOp::Ne => false,
                _ => false,
            };
        }
        (V::Int(x), V::Int(y)) => Some(x.cmp(&y)),
        (V::Int(x), V::Double(y)) => (x as f64).partial_cmp(&y),
        (V::Double(x), V::Int(y)) => x.partial_cmp(&(y as f64)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(&y),
        (V::Str(x), V::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (V::Bool(x), V::Bool(y)) => Some(x.cmp(&y)),
        (V::Bytes(x), V::Bytes(y)) => Some(x.cmp(y)),
        (V::SpanId(x), V::SpanId(y))
        | (V::TraceId(x), V::TraceId(y))
        | (V::Array(x), V::Array(y))
        | (V::Map(x), V::Map(y)) => {
            return match op {
                CmpOp::Eq => x == y,
                CmpOp::Ne => x != y,
                _ => false,
            };
        }
        (V::List(x), V::List(y)) => {
            let eq = x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| compare(p.as_v(), CmpOp::Eq, q.as_v()));
            return match op {
                CmpOp::Eq => eq,
                CmpOp::Ne => !eq,
                _ => false,
            };
        }
        _ => return op == CmpOp::Ne,
    };
    match ord {
        // NaN: every comparison is false except `!=`
        None => op == CmpOp::Ne,
        Some(o) => match op {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        },
    }
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    }
}

fn compare_cols(a: &Col<'_>, op: CmpOp, b: &Col<'_>, n: usize) -> Vec<bool> {
    match (a, b) {
        (_, Col::Scalar(s)) => compare_scalar(a, op, s.as_v(), n),
        (Col::Scalar(s), _) => compare_scalar(b, flip(op), s.as_v(), n),
        _ => (0..n).map(|i| compare(a.get(i), op, b.get(i))).collect(),
    }
}

/// `col op scalar` for every item. A dictionary column is judged once per distinct value.
fn compare_scalar(c: &Col<'_>, op: CmpOp, s: V<'_>, n: usize) -> Vec<bool> {
    match c {
        Col::Scalar(x) => vec![compare(x.as_v(), op, s); n],
        Col::Dict(values, keys) => {
            let per_value = per_dict_value(values, |v| compare(V::Str(v), op, s));
            keys.iter().map(|&k| per_value[k as usize]).collect()
        }
        Col::Any(cols, rows) => {
            if s == V::Nil && matches!(op, CmpOp::Eq | CmpOp::Ne) {
                // `attributes["k"] == nil`: absent, or present with no value.
                let eq = op == CmpOp::Eq;
                let (empty, absent) = (AnyValueType::Empty as u8, AnyValueType::Absent as u8);
                return rows
                    .iter()
                    .map(|&r| {
                        let nil = r == NONE || {
                            let t = cols.ty[r as usize];
                            t == empty || t == absent
                        };
                        nil == eq
                    })
                    .collect();
            }
            if let V::Str(want) = s {
                // The common case (an attribute compared with a string literal) without the
                // generic dispatch: one type check and one byte comparison per item.
                let nil = compare(V::Nil, op, s);
                let str_ty = AnyValueType::Str as u8;
                return rows
                    .iter()
                    .map(|&r| {
                        if r == NONE {
                            nil
                        } else if cols.ty[r as usize] == str_ty {
                            compare(V::Str(cols.str.value(r as usize)), op, V::Str(want))
                        } else {
                            compare(cols.get(r as usize), op, s)
                        }
                    })
                    .collect();
            }
            rows.iter()
                .map(|&r| match r {
                    NONE => compare(V::Nil, op, s),
                    r => compare(cols.get(r as usize), op, s),
                })
                .collect()
        }
        // `kind == SPAN_KIND_CLIENT`, `status.code != ...`: integers against an integer, one
        // vectorisable comparison per item instead of the generic dispatch.
        Col::Ints(v) => match s {
            V::Int(y) => v
                .iter()
                .map(|&x| match op {
                    CmpOp::Eq => x == y,
                    CmpOp::Ne => x != y,
                    CmpOp::Lt => x < y,
                    CmpOp::Le => x <= y,
                    CmpOp::Gt => x > y,
                    CmpOp::Ge => x >= y,
                })
                .collect(),
            _ => v.iter().map(|&x| compare(V::Int(x), op, s)).collect(),
        },
        _ => (0..n).map(|i| compare(c.get(i), op, s)).collect(),
    }
}

fn per_dict_value(values: &StringArray, f: impl Fn(&str) -> bool) -> Vec<bool> {
    (0..values.len())
        .map(|i| values.is_valid(i) && f(values.value(i)))
        .collect()
}

// ----------------------------------------------------------------------------- converters

fn is_match(c: &Col<'_>, re: &Regex, n: usize, sel: Sel<'_>) -> Vec<bool> {
    let one = |v: V<'_>| -> bool {
        match v {
            V::Str(s) => re.is_match(s),
            V::Nil => false,
            other => {
                let mut s = String::new();
                matches!(string_like(other, &mut s), Ok(true)) && re.is_match(&s)
            }
        }
    };
    let on = |i: usize| sel.is_none_or(|s| s[i]);
    match c {
        Col::Scalar(v) => vec![one(v.as_v()); n],
        Col::Dict(values, keys) => {
            // Once per distinct value that a selected item has.
            let mut memo: Vec<u8> = vec![0; values.len()];
            keys.iter()
                .enumerate()
                .map(|(i, &k)| {
                    on(i) && {
                        let slot = &mut memo[k as usize];
                        if *slot == 0 {
                            *slot = 1 + u8::from(
                                values.is_valid(k as usize)
                                    && re.is_match(values.value(k as usize)),
                            );
                        }
                        *slot == 2
                    }
                })
                .collect()
        }
        Col::Any(cols, rows) => {
            let str_ty = AnyValueType::Str as u8;
            // The previous string and its result: attribute values repeat from span to span
            // (`db.system`, `http.route`), and comparing with the last one is cheaper than
            // running the regex again.
            let mut last: Option<(&str, bool)> = None;
            rows.iter()
                .enumerate()
                .map(|(i, &r)| {
                    if r == NONE || !on(i) {
                        false
                    } else if cols.ty[r as usize] == str_ty {
                        let s = cols.str.value(r as usize);
                        match last {
                            Some((prev, hit)) if prev == s => hit,
                            _ => {
                                let hit = re.is_match(s);
                                last = Some((s, hit));
                                hit
                            }
                        }
                    } else {
                        one(cols.get(r as usize))
                    }
                })
                .collect()
        }
        _ => (0..n).map(|i| on(i) && one(c.get(i))).collect(),
    }
}

/// Go's `StringLikeGetter`: appends the string form of `v` to `out`; `Ok(false)` for nil.
/// Strings as they are, bytes and ids as hex, ints in decimal, doubles and bools as Go's
/// `encoding/json` writes them, maps and arrays as JSON.
pub fn string_like(v: V<'_>, out: &mut String) -> Result<bool, String> {
    use std::fmt::Write as _;
    match v {
        V::Nil => return Ok(false),
        V::Str(s) => out.push_str(s),
        V::Int(i) => {
            let _ = write!(out, "{i}");
        }
        V::Double(d) => {
            if !d.is_finite() {
                return Err(format!("json: unsupported value: {d}"));
            }
            ka::go_json_float(d, out);
        }
        V::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        V::Bytes(b) | V::SpanId(b) | V::TraceId(b) => out.push_str(&hex::encode(b)),
        V::Array(b) | V::Map(b) => ka::any_value_json(b, out),
        V::List(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match x.as_v() {
                    V::Str(s) => {
                        let mut tmp = String::new();
                        ka::json_string(s, &mut tmp);
                        out.push_str(&tmp);
                    }
                    V::Nil => out.push_str("null"),
                    other => {
                        string_like(other, out)?;
                    }
                }
            }
            out.push(']');
        }
    }
    Ok(true)
}

/// Go's `IntLikeGetter` as the `Int` converter uses it: ints as they are, doubles truncated,
/// bools 1/0, strings parsed base 10 (nil when they do not parse), anything else nil.
pub fn int_like(v: V<'_>) -> Val<'static> {
    match v {
        V::Int(i) => Val::Int(i),
        V::Double(d) => Val::Int(d as i64),
        V::Bool(b) => Val::Int(i64::from(b)),
        V::Str(s) => ka::parse_go_int(s).map_or(Val::Nil, Val::Int),
        _ => Val::Nil,
    }
}

/// Go's `strings.Split`: an empty separator splits into UTF-8 characters (none for "").
pub fn go_split<'s>(s: &'s str, sep: &str) -> Vec<&'s str> {
    if sep.is_empty() {
        return s
            .char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect();
    }
    s.split(sep).collect()
}

/// The Collector's `Substring`: byte offsets; errors for a negative start, a length below 1,
/// a range past the end, a non-string or nil target. A range that would cut a UTF-8
/// character is an error too (Go would produce invalid UTF-8, which a string column cannot
/// hold).
pub fn substring<'b>(target: V<'b>, start: V<'_>, length: V<'_>) -> Result<&'b str, String> {
    let start = match start {
        V::Int(i) => i,
        other => {
            return Err(format!(
                "expected int64 start but got {}",
                other.type_name()
            ));
        }
    };
    if start < 0 {
        return Err(format!(
            "invalid start for substring function, {start} cannot be negative"
        ));
    }
    let length = match length {
        V::Int(i) => i,
        other => {
            return Err(format!(
                "expected int64 length but got {}",
                other.type_name()
            ));
        }
    };
    if length <= 0 {
        return Err(format!(
            "invalid length for substring function, {length} cannot be negative or zero"
        ));
    }
    let s = match target {
        V::Str(s) => s,
        other => return Err(format!("expected string but got {}", other.type_name())),
    };
    let len = s.len() as i64;
    if start > len || length > len - start {
        return Err(format!(
            "invalid range for substring function, start({start})+length({length}) cannot be \
             greater than the length of target string({len})"
        ));
    }
    let (a, z) = (start as usize, (start + length) as usize);
    s.get(a..z).ok_or_else(|| {
        format!("the range {a}..{z} would split a UTF-8 character of the target string")
    })
}

pub fn convert_case(s: &str, case: Case) -> String {
    match case {
        Case::Lower => s.to_lowercase(),
        Case::Upper => s.to_uppercase(),
        Case::Snake => to_snake(s),
        Case::Camel => to_camel(s),
    }
}

/// `strcase.ToSnake` (github.com/iancoleman/strcase), byte for byte: ASCII case changes
/// start words, acronyms stay one word (`JSONData` -> `json_data`), ` _-.` become `_`.
fn to_snake(s: &str) -> String {
    let s = s.trim();
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len() + 2);
    for (i, &orig) in b.iter().enumerate() {
        let v_is_cap = orig.is_ascii_uppercase();
        let v_is_low = orig.is_ascii_lowercase();
        let v = if v_is_cap { orig + 32 } else { orig };
        if let Some(&next) = b.get(i + 1) {
            let v_is_num = v.is_ascii_digit();
            let next_is_cap = next.is_ascii_uppercase();
            let next_is_low = next.is_ascii_lowercase();
            let next_is_num = next.is_ascii_digit();
            if (v_is_cap && (next_is_low || next_is_num))
                || (v_is_low && (next_is_cap || next_is_num))
                || (v_is_num && (next_is_cap || next_is_low))
            {
                if v_is_cap && next_is_low && i > 0 && b[i - 1].is_ascii_uppercase() {
                    out.push(b'_');
                }
                out.push(v);
                if v_is_low || v_is_num || next_is_num {
                    out.push(b'_');
                }
                continue;
            }
        }
        if matches!(v, b' ' | b'_' | b'-' | b'.') {
            out.push(b'_');
        } else {
            out.push(v);
        }
    }
    // Only ASCII bytes were changed or inserted, so the result is UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// `strcase.ToCamel`, byte for byte: the first letter and letters after ` _-.` or a digit are
/// uppercased, other characters than ASCII letters and digits are dropped.
fn to_camel(s: &str) -> String {
    let s = s.trim();
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut cap_next = true;
    let mut prev_is_cap = false;
    for (i, &orig) in s.as_bytes().iter().enumerate() {
        let v_is_cap = orig.is_ascii_uppercase();
        let v_is_low = orig.is_ascii_lowercase();
        let mut v = orig;
        if cap_next {
            if v_is_low {
                v -= 32;
            }
        } else if i == 0 {
            if v_is_cap {
                v += 32;
            }
        } else if prev_is_cap && v_is_cap {
            v += 32;
        }
        prev_is_cap = v_is_cap;
        if v_is_cap || v_is_low {
            out.push(v);
            cap_next = false;
        } else if v.is_ascii_digit() {
            out.push(v);
            cap_next = true;
        } else {
            cap_next = matches!(v, b'_' | b' ' | b'-' | b'.');
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_rules() {
        use CmpOp::*;
        assert!(compare(V::Nil, Eq, V::Nil));
        assert!(!compare(V::Nil, Le, V::Nil));
        assert!(!compare(V::Nil, Eq, V::Str("")));
        assert!(compare(V::Nil, Ne, V::Int(0)));
        assert!(!compare(V::Str("1"), Eq, V::Int(1)));
        assert!(compare(V::Str("1"), Ne, V::Int(1)));
        assert!(!compare(V::Str("1"), Lt, V::Int(2)));
        assert!(compare(V::Int(1), Eq, V::Double(1.0)));
        assert!(compare(V::Int(1), Lt, V::Double(1.5)));
        assert!(compare(V::Bool(false), Lt, V::Bool(true)));
        assert!(compare(V::Str("B"), Lt, V::Str("a")));
        assert!(!compare(V::Double(f64::NAN), Eq, V::Double(f64::NAN)));
        assert!(compare(V::Double(f64::NAN), Ne, V::Double(f64::NAN)));
        assert!(compare(V::SpanId(&[1; 8]), Eq, V::SpanId(&[1; 8])));
        assert!(!compare(V::SpanId(&[1; 8]), Le, V::SpanId(&[1; 8])));
        assert!(!compare(V::SpanId(&[1; 8]), Eq, V::Bytes(&[1; 8])));
    }

    #[test]
    fn strcase_matches_go() {
        // Expected values from github.com/iancoleman/strcase's tests.
        for (input, want) in [
            ("testCase", "test_case"),
            ("TestCase", "test_case"),
            ("Test Case", "test_case"),
            (" Test Case", "test_case"),
            ("Test Case ", "test_case"),
            ("test", "test"),
            ("test_case", "test_case"),
            ("Test", "test"),
            ("", ""),
            ("ManyManyWords", "many_many_words"),
            ("manyManyWords", "many_many_words"),
            ("AnyKind of_string", "any_kind_of_string"),
            ("numbers2and55with000", "numbers_2_and_55_with_000"),
            ("JSONData", "json_data"),
            ("userID", "user_id"),
            ("AAAbbb", "aa_abbb"),
        ] {
            assert_eq!(to_snake(input), want, "{input}");
        }
        for (input, want) in [
            ("test_case", "TestCase"),
            ("test.case", "TestCase"),
            ("test", "Test"),
            ("TestCase", "TestCase"),
            (" test  case ", "TestCase"),
            ("", ""),
            ("many_many_words", "ManyManyWords"),
            ("AnyKind of_string", "AnyKindOfString"),
            ("odd-fix", "OddFix"),
            ("numbers2And55with000", "Numbers2And55With000"),
            ("ID", "Id"),
        ] {
            assert_eq!(to_camel(input), want, "{input}");
        }
    }

    #[test]
    fn substring_rules() {
        assert_eq!(
            substring(V::Str("123456789"), V::Int(0), V::Int(3)),
            Ok("123")
        );
        assert_eq!(substring(V::Str("123"), V::Int(1), V::Int(2)), Ok("23"));
        assert!(substring(V::Str("123"), V::Int(1), V::Int(3)).is_err());
        assert!(substring(V::Str("123"), V::Int(-1), V::Int(1)).is_err());
        assert!(substring(V::Str("123"), V::Int(0), V::Int(0)).is_err());
        assert!(substring(V::Nil, V::Int(0), V::Int(1)).is_err());
        assert!(substring(V::Int(5), V::Int(0), V::Int(1)).is_err());
        assert!(substring(V::Str("é"), V::Int(0), V::Int(1)).is_err());
    }

    #[test]
    fn split_like_go() {
        assert_eq!(go_split("a,b,,c", ","), vec!["a", "b", "", "c"]);
        assert_eq!(go_split("", ","), vec![""]);
        assert_eq!(go_split("héllo", ""), vec!["h", "é", "l", "l", "o"]);
        assert!(go_split("", "").is_empty());
    }

    #[test]
    fn string_like_forms() {
        let s = |v: V<'_>| {
            let mut out = String::new();
            string_like(v, &mut out).map(|present| present.then_some(out))
        };
        assert_eq!(s(V::Int(-5)), Ok(Some("-5".into())));
        assert_eq!(s(V::Double(1.5)), Ok(Some("1.5".into())));
        assert_eq!(s(V::Double(100.0)), Ok(Some("100".into())));
        assert_eq!(s(V::Double(1e21)), Ok(Some("1e+21".into())));
        assert_eq!(s(V::Bool(true)), Ok(Some("true".into())));
        assert_eq!(s(V::Bytes(&[0xab, 0x01])), Ok(Some("ab01".into())));
        assert_eq!(s(V::Nil), Ok(None));
        assert!(s(V::Double(f64::INFINITY)).is_err());
    }
}
