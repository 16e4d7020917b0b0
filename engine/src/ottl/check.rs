//! The checker: resolves paths against a context, checks function names, arguments and types,
//! and turns the syntax tree into the typed form the evaluator runs ([`Expr`], [`Cond`],
//! [`Editor`]). Everything outside the subset is refused here, at config load, with the
//! position of the offending part and what is supported.

use std::sync::Arc;

use regex::Regex;

use super::ast::{self, CmpOp, Pos};
use super::context::{
    Context, Field, PathRef, Ty, enum_value, field_names, has_attributes, lookup_field, path_type,
    settable,
};
use super::error::{OttlError, Result};
use super::parser::{parse_condition, parse_statement};
use crate::schema::Signal;

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Nil,
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    SpanId([u8; 8]),
    TraceId([u8; 16]),
}

/// `ConvertCase`'s target case.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
    Snake,
    Camel,
}

/// A checked value expression.
#[derive(Clone, Debug)]
pub enum Expr {
    Lit(Lit),
    Path(PathRef),
    List(Vec<Expr>),
    /// `Split(...)[i]`.
    Index(Box<Expr>, i64),
    IsMatch(Box<Expr>, Arc<Regex>),
    IsString(Box<Expr>),
    IsInt(Box<Expr>),
    IsRootSpan,
    Concat(Vec<Expr>, Box<Expr>),
    Split(Box<Expr>, String),
    Substring(Box<Expr>, Box<Expr>, Box<Expr>),
    ConvertCase(Box<Expr>, Case),
    Int(Box<Expr>),
    String(Box<Expr>),
}

/// A checked boolean expression.
#[derive(Clone, Debug)]
pub enum Cond {
    Const(bool),
    Cmp(Expr, CmpOp, Expr),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    /// A bool-valued converter.
    Value(Expr),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PatternMode {
    Key,
    Value,
}

/// A checked editor invocation. Map editors name the context whose `attributes` they edit.
#[derive(Clone, Debug)]
pub enum Editor {
    Set {
        target: PathRef,
        value: Expr,
    },
    DeleteKeys {
        map: Context,
        keys: Vec<String>,
    },
    DeleteMatchingKeys {
        map: Context,
        pattern: Arc<Regex>,
    },
    KeepKeys {
        map: Context,
        keys: Vec<String>,
    },
    Limit {
        map: Context,
        limit: usize,
        priority: Vec<String>,
    },
    TruncateAll {
        map: Context,
        limit: usize,
        marker: String,
    },
    ReplacePattern {
        target: PathRef,
        pattern: Arc<Regex>,
        replacement: Expr,
    },
    ReplaceAllPatterns {
        map: Context,
        mode: PatternMode,
        pattern: Arc<Regex>,
        replacement: Expr,
    },
}

/// What an editor writes on its level.
pub enum Written<'e> {
    /// These attribute keys.
    Keys(Vec<&'e str>),
    /// Attribute keys not known at load (a pattern, a limit, all values).
    AnyKey,
    Column(super::context::Column),
}

impl Editor {
    /// The level this editor writes, and what it writes there.
    pub fn writes(&self) -> (Context, Written<'_>) {
        fn target(t: &PathRef) -> Written<'_> {
            match &t.field {
                Field::Attribute(k) => Written::Keys(vec![k.as_str()]),
                Field::Column(c) => Written::Column(*c),
                Field::Attributes => Written::AnyKey,
            }
        }
        match self {
            Editor::Set { target: t, .. } | Editor::ReplacePattern { target: t, .. } => {
                (t.level, target(t))
            }
            Editor::DeleteKeys { map, keys } => (
                *map,
                Written::Keys(keys.iter().map(String::as_str).collect()),
            ),
            Editor::DeleteMatchingKeys { map, .. }
            | Editor::KeepKeys { map, .. }
            | Editor::Limit { map, .. }
            | Editor::TruncateAll { map, .. }
            | Editor::ReplaceAllPatterns { map, .. } => (*map, Written::AnyKey),
        }
    }
}

/// A checked statement.
#[derive(Clone, Debug)]
pub struct Statement {
    pub text: String,
    pub context: Context,
    pub editor: Editor,
    pub condition: Option<Cond>,
}

/// A checked condition.
#[derive(Clone, Debug)]
pub struct Condition {
    pub text: String,
    pub context: Context,
    pub cond: Cond,
}

pub const CONVERTERS: &str = "Concat, ConvertCase, Int, IsInt, IsMatch, IsRootSpan, IsString, \
                              SpanID, Split, String, Substring, TraceID";
pub const EDITORS: &str = "delete_key, delete_matching_keys, keep_keys, limit, \
                           replace_all_patterns, replace_pattern, set, truncate_all";

/// A parse or check error together with the text it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextError {
    pub text: String,
    pub error: OttlError,
}

impl TextError {
    pub fn render(&self) -> String {
        self.error.render(&self.text)
    }
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// Compiles one statement in an explicit context, or with the context inferred from its path
/// prefixes when `context` is `None`.
pub fn compile_statement(
    text: &str,
    signal: Signal,
    context: Option<Context>,
) -> std::result::Result<Statement, TextError> {
    let with_text = |error| TextError {
        text: text.to_string(),
        error,
    };
    let ast = parse_statement(text).map_err(with_text)?;
    let ctx = match context {
        Some(c) => c,
        None => infer(signal, &statement_paths(&ast)).map_err(with_text)?,
    };
    Checker::new(signal, ctx, context.is_none())
        .statement(text, &ast)
        .map_err(with_text)
}

/// Compiles one condition (filter processor, `conditions:` of a statement group).
pub fn compile_condition(
    text: &str,
    signal: Signal,
    context: Option<Context>,
) -> std::result::Result<Condition, TextError> {
    let with_text = |error| TextError {
        text: text.to_string(),
        error,
    };
    let ast = parse_condition(text).map_err(with_text)?;
    let ctx = match context {
        Some(c) => c,
        None => {
            let mut paths = Vec::new();
            bool_paths(&ast, &mut paths);
            infer(signal, &paths).map_err(with_text)?
        }
    };
    let cond = Checker::new(signal, ctx, context.is_none())
        .cond(&ast)
        .map_err(with_text)?;
    Ok(Condition {
        text: text.to_string(),
        context: ctx,
        cond,
    })
}

/// A group of statements run in one context, with optional group conditions (ORed), as in
/// the transform processor's advanced form; or a flat list whose context is inferred (the
/// deepest context any path names, as the Collector infers it). The first error only; see
/// [`compile_group_all`] for every one.
pub fn compile_group(
    statements: &[String],
    conditions: &[String],
    signal: Signal,
    context: Option<Context>,
) -> std::result::Result<(Context, Vec<Statement>, Vec<Condition>), TextError> {
    compile_group_all(statements, conditions, signal, context)
        .map_err(|mut errors| errors.swap_remove(0).1)
}

/// The entry of a group an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupEntry {
    Statement(usize),
    Condition(usize),
}

/// A statement group compiled: its context, statements and conditions.
pub type CompiledGroup = (Context, Vec<Statement>, Vec<Condition>);

/// [`compile_group`], reporting the error of every statement and condition that has one (in
/// list order, statements first), so that `sluice validate` lists them all in one run. The
/// group-wide check (order independence) runs once every entry compiles.
pub fn compile_group_all(
    statements: &[String],
    conditions: &[String],
    signal: Signal,
    context: Option<Context>,
) -> std::result::Result<CompiledGroup, Vec<(GroupEntry, TextError)>> {
    let mut errors: Vec<(GroupEntry, TextError)> = Vec::new();
    let text_error = |text: &String, error| TextError {
        text: text.clone(),
        error,
    };
    let ctx = match context {
        Some(c) => c,
        None => {
            let mut deepest: Option<(Context, String)> = None;
            for (i, text) in statements.iter().enumerate() {
                let inferred =
                    parse_statement(text).and_then(|ast| infer(signal, &statement_paths(&ast)));
                let c = match inferred {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push((GroupEntry::Statement(i), text_error(text, e)));
                        continue;
                    }
                };
                deepest = match deepest {
                    None => Some((c, text.clone())),
                    Some((d, t)) if c.within(d) => Some((c, if c == d { t } else { text.clone() })),
                    Some((d, t)) if d.within(c) => Some((d, t)),
                    Some((d, t)) => {
                        let error = OttlError::new(
                            Pos::new(0, text.len()),
                            format!(
                                "this statement runs in the {} context, but `{t}` runs in the {} \
                                 context; statements of one list share a context",
                                c.name(),
                                d.name()
                            ),
                        )
                        .help("split them into groups with `context:` and `statements:`");
                        errors.push((GroupEntry::Statement(i), text_error(text, error)));
                        Some((d, t))
                    }
                };
            }
            match deepest {
                Some((c, _)) => c,
                None => Context::of_signal(signal)[0],
            }
        }
    };
    let inferred = context.is_none();
    let mut stmts = Vec::with_capacity(statements.len());
    for (i, t) in statements.iter().enumerate() {
        if errors.iter().any(|(at, _)| *at == GroupEntry::Statement(i)) {
            continue;
        }
        let checked = parse_statement(t)
            .and_then(|ast| Checker::new(signal, ctx, inferred).statement(t, &ast));
        match checked {
            Ok(s) => stmts.push(s),
            Err(e) => errors.push((GroupEntry::Statement(i), text_error(t, e))),
        }
    }
    let mut conds = Vec::with_capacity(conditions.len());
    for (i, t) in conditions.iter().enumerate() {
        match compile_condition(t, signal, Some(ctx)) {
            Ok(c) => conds.push(c),
            Err(e) => errors.push((GroupEntry::Condition(i), e)),
        }
    }
    if !errors.is_empty() {
        errors.sort_by_key(|(at, _)| match at {
            GroupEntry::Statement(i) => (0, *i),
            GroupEntry::Condition(i) => (1, *i),
        });
        return Err(errors);
    }
    if let Err(e) = check_order_independent(&stmts, &conds) {
        let at = statements
            .iter()
            .position(|s| *s == e.text)
            .map_or(GroupEntry::Statement(0), GroupEntry::Statement);
        return Err(vec![(at, e)]);
    }
    Ok((ctx, stmts, conds))
}

/// sluice runs a group statement by statement over all items (column at a time); the
/// Collector runs it item by item. The two agree unless a statement writes a field shared by
/// several items (a resource attribute written from the span context) that the group also
/// reads, or that another statement of the group also writes: then each span would see (or
/// undo) what was written for the spans before it, and the last span's statements, not the
/// last statement, would decide the value. Such groups are refused rather than run
/// differently.
fn check_order_independent(
    stmts: &[Statement],
    conds: &[Condition],
) -> std::result::Result<(), TextError> {
    for (i, w) in stmts.iter().enumerate() {
        let (level, written) = w.editor.writes();
        if level == w.context {
            continue;
        }
        // Another statement writing the same shared field (e.g. `delete_key` then `set` of one
        // resource attribute under span-dependent conditions).
        let overlaps = |other: &Written<'_>| match (&written, other) {
            (Written::Column(a), Written::Column(b)) => a == b,
            (Written::Column(_), _) | (_, Written::Column(_)) => false,
            (Written::AnyKey, _) | (_, Written::AnyKey) => true,
            (Written::Keys(a), Written::Keys(b)) => a.iter().any(|k| b.contains(k)),
        };
        if let Some(other) = stmts[..i].iter().find(|o| {
            let (other_level, other_written) = o.editor.writes();
            other_level == level && overlaps(&other_written)
        }) {
            return Err(TextError {
                text: w.text.clone(),
                error: OttlError::new(
                    Pos::new(0, w.text.len()),
                    format!(
                        "this {} statement writes a {} field that `{}` in the same group also \
                         writes; the Collector would apply both for each {} in turn, so the last \
                         {}'s statements decide the value, which sluice (running each statement \
                         over all items at once) does not reproduce",
                        w.context.name(),
                        level.name(),
                        other.text,
                        w.context.name(),
                        w.context.name()
                    ),
                )
                .help(format!(
                    "move the statements into their own group with `context: {}`",
                    level.name()
                )),
            });
        }
        let conflicts = |p: &PathRef| {
            p.level == level
                && match (&written, &p.field) {
                    (Written::Column(a), Field::Column(b)) => a == b,
                    (Written::Column(_), _) | (_, Field::Column(_)) => false,
                    (Written::AnyKey, _) | (_, Field::Attributes) => true,
                    (Written::Keys(keys), Field::Attribute(k)) => keys.contains(&k.as_str()),
                }
        };
        let mut reads = Vec::new();
        for s in stmts {
            editor_reads(&s.editor, &mut reads);
            if let Some(c) = &s.condition {
                cond_reads(c, &mut reads);
            }
        }
        for c in conds {
            cond_reads(&c.cond, &mut reads);
        }
        if let Some(p) = reads.into_iter().find(|p| conflicts(p)) {
            return Err(TextError {
                text: w.text.clone(),
                error: OttlError::new(
                    Pos::new(0, w.text.len()),
                    format!(
                        "this {} statement writes {}, which the same group also reads; the \
                         Collector would let each {} see the writes made for the ones before it, \
                         which sluice (running each statement over all items at once) does not \
                         reproduce",
                        w.context.name(),
                        p.describe(),
                        w.context.name()
                    ),
                )
                .help(format!(
                    "move the statement into its own group with `context: {}`",
                    level.name()
                )),
            });
        }
    }
    Ok(())
}

fn editor_reads(e: &Editor, out: &mut Vec<PathRef>) {
    match e {
        Editor::Set { value, .. } => expr_reads(value, out),
        Editor::ReplacePattern {
            target,
            replacement,
            ..
        } => {
            out.push(target.clone());
            expr_reads(replacement, out);
        }
        Editor::ReplaceAllPatterns {
            replacement, map, ..
        } => {
            out.push(PathRef {
                level: *map,
                field: Field::Attributes,
            });
            expr_reads(replacement, out);
        }
        Editor::Limit { map, .. } | Editor::TruncateAll { map, .. } => out.push(PathRef {
            level: *map,
            field: Field::Attributes,
        }),
        _ => {}
    }
}

fn cond_reads(c: &Cond, out: &mut Vec<PathRef>) {
    match c {
        Cond::Const(_) => {}
        Cond::Cmp(a, _, b) => {
            expr_reads(a, out);
            expr_reads(b, out);
        }
        Cond::Not(a) => cond_reads(a, out),
        Cond::And(a, b) | Cond::Or(a, b) => {
            cond_reads(a, out);
            cond_reads(b, out);
        }
        Cond::Value(e) => expr_reads(e, out),
    }
}

/// Every path an expression reads.
pub fn expr_reads(e: &Expr, out: &mut Vec<PathRef>) {
    match e {
        Expr::Lit(_) | Expr::IsRootSpan => {}
        Expr::Path(p) => out.push(p.clone()),
        Expr::List(items) => items.iter().for_each(|x| expr_reads(x, out)),
        Expr::Concat(items, d) => {
            items.iter().for_each(|x| expr_reads(x, out));
            expr_reads(d, out);
        }
        Expr::Index(a, _)
        | Expr::IsMatch(a, _)
        | Expr::IsString(a)
        | Expr::IsInt(a)
        | Expr::Split(a, _)
        | Expr::ConvertCase(a, _)
        | Expr::Int(a)
        | Expr::String(a) => expr_reads(a, out),
        Expr::Substring(a, b, c) => {
            expr_reads(a, out);
            expr_reads(b, out);
            expr_reads(c, out);
        }
    }
}

/// Every path a condition reads (for the lookups the evaluator prepares).
pub fn condition_reads(c: &Cond, out: &mut Vec<PathRef>) {
    cond_reads(c, out)
}

/// Every path a statement reads, target included where the editor reads it.
pub fn statement_reads(s: &Statement, out: &mut Vec<PathRef>) {
    editor_reads(&s.editor, out);
    if let Some(c) = &s.condition {
        cond_reads(c, out);
    }
}

// ------------------------------------------------------------------------------ inference

/// The first field of every path (name and position), for context inference.
fn statement_paths(s: &ast::Statement) -> Vec<(String, Pos)> {
    let mut out = Vec::new();
    call_paths(&s.editor, &mut out);
    if let Some(c) = &s.condition {
        bool_paths(c, &mut out);
    }
    out
}

fn call_paths(c: &ast::Call, out: &mut Vec<(String, Pos)>) {
    if c.name == "IsRootSpan" {
        out.push(("span".into(), c.name_pos));
    }
    for a in &c.args {
        value_paths(&a.value, out);
    }
}

fn value_paths(v: &ast::Value, out: &mut Vec<(String, Pos)>) {
    match v {
        ast::Value::Path(p) => {
            if let Some(f) = p.fields.first() {
                out.push((f.name.clone(), f.pos));
            }
        }
        ast::Value::Converter(c) => call_paths(c, out),
        ast::Value::List(items, _) => items.iter().for_each(|i| value_paths(i, out)),
        _ => {}
    }
}

fn bool_paths(b: &ast::BoolExpr, out: &mut Vec<(String, Pos)>) {
    match b {
        ast::BoolExpr::Or(a, c) | ast::BoolExpr::And(a, c) => {
            bool_paths(a, out);
            bool_paths(c, out);
        }
        ast::BoolExpr::Not(a, _) => bool_paths(a, out),
        ast::BoolExpr::Compare { left, right, .. } => {
            value_paths(left, out);
            value_paths(right, out);
        }
        ast::BoolExpr::Value(v) => value_paths(v, out),
    }
}

fn prefix_context(signal: Signal, name: &str) -> Option<Context> {
    let c = if name == "instrumentation_scope" {
        Context::Scope
    } else {
        Context::parse(name)?
    };
    Context::of_signal(signal).contains(&c).then_some(c)
}

/// The deepest context named by a path prefix; every prefix must be on one line of ancestry.
fn infer(signal: Signal, paths: &[(String, Pos)]) -> Result<Context> {
    let mut deepest: Option<Context> = None;
    for (name, pos) in paths {
        let Some(c) = prefix_context(signal, name) else {
            let prefixes: Vec<&str> = Context::of_signal(signal)
                .iter()
                .map(|c| c.name())
                .collect();
            if Context::parse(name).is_some() {
                return Err(OttlError::new(
                    *pos,
                    format!("`{name}` paths are not available for {}", signal.as_str()),
                )
                .help(format!(
                    "{} contexts: {}",
                    signal.as_str(),
                    prefixes.join(", ")
                )));
            }
            let example = match signal {
                Signal::Traces => "`span.name`",
                Signal::Metrics => "`metric.name`",
                Signal::Logs => "`log.body`",
            };
            return Err(OttlError::new(
                *pos,
                format!(
                    "`{name}` is not a context: without `context:`, every path starts with the \
                     context it belongs to"
                ),
            )
            .help(format!(
                "{} paths start with {}: e.g. {example}, `resource.attributes[\"k\"]`",
                signal.as_str(),
                prefixes.join(", ")
            )));
        };
        deepest = match deepest {
            None => Some(c),
            Some(d) if c.within(d) => Some(c),
            Some(d) if d.within(c) => Some(d),
            Some(d) => {
                return Err(OttlError::new(
                    *pos,
                    format!(
                        "{} and {} paths cannot be used together: neither belongs to the other",
                        c.name(),
                        d.name()
                    ),
                ));
            }
        };
    }
    deepest.ok_or_else(|| {
        OttlError::new(
            Pos::new(0, 0),
            "cannot infer the context: the statement names no path",
        )
        .help("use the form with `context:` and `statements:`")
    })
}

// ------------------------------------------------------------------------------ checker

struct Checker {
    signal: Signal,
    ctx: Context,
    /// Paths must carry their context prefix (flat forms without `context:`).
    prefixed: bool,
}

/// A function parameter: name (snake_case, as named arguments spell it) and whether required.
type Param = (&'static str, bool);

impl Checker {
    fn new(signal: Signal, ctx: Context, prefixed: bool) -> Self {
        Checker {
            signal,
            ctx,
            prefixed,
        }
    }

    fn statement(&self, text: &str, s: &ast::Statement) -> Result<Statement> {
        let editor = self.editor(&s.editor)?;
        // The Collector applies these once per item of the statement's context: on a map
        // shared by many items (resource attributes from the span context) a pattern is
        // applied again and again to its own output. Not reproduced: refused.
        let shared = match &editor {
            Editor::ReplacePattern { target, .. } => Some(target.level),
            Editor::ReplaceAllPatterns { map, .. } => Some(*map),
            _ => None,
        };
        if let Some(level) = shared.filter(|l| *l != self.ctx) {
            return Err(OttlError::new(
                s.editor.pos,
                format!(
                    "{} on {} fields from the {} context would be applied once per {}",
                    s.editor.name,
                    level.name(),
                    self.ctx.name(),
                    self.ctx.name()
                ),
            )
            .help(format!(
                "put it in a group with `context: {}`",
                level.name()
            )));
        }
        let condition = s.condition.as_ref().map(|c| self.cond(c)).transpose()?;
        Ok(Statement {
            text: text.to_string(),
            context: self.ctx,
            editor,
            condition,
        })
    }

    // -------------------------------------------------------------------------- paths

    fn path(&self, p: &ast::Path) -> Result<PathRef> {
        let first = &p.fields[0];
        let (level, rest) = match prefix_context(self.signal, &first.name) {
            Some(c) => {
                if let Some(k) = first.keys.first() {
                    return Err(OttlError::new(
                        k.pos(),
                        format!("`{}` is a context and cannot be indexed", first.name),
                    ));
                }
                if !self.ctx.within(c) {
                    return Err(OttlError::new(
                        p.pos,
                        format!(
                            "a {} statement cannot read {} fields: a {} has many of them",
                            self.ctx.name(),
                            c.name(),
                            self.ctx.name()
                        ),
                    )
                    .help(format!(
                        "{} paths are available in the {} context and below",
                        c.name(),
                        c.name()
                    )));
                }
                (c, &p.fields[1..])
            }
            None if Context::parse(&first.name).is_some() => {
                return Err(OttlError::new(
                    first.pos,
                    format!(
                        "`{}` paths are not available for {}",
                        first.name,
                        self.signal.as_str()
                    ),
                )
                .help(format!(
                    "{} contexts: {}",
                    self.signal.as_str(),
                    Context::of_signal(self.signal)
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => {
                if self.prefixed {
                    return Err(OttlError::new(
                        first.pos,
                        format!(
                            "`{}` has no context prefix: without `context:`, every path starts \
                             with its context (`{}.{}`)",
                            first.name,
                            self.ctx.name(),
                            first.name
                        ),
                    ));
                }
                (self.ctx, &p.fields[..])
            }
        };
        let Some(head) = rest.first() else {
            return Err(OttlError::new(
                p.pos,
                format!(
                    "`{}` alone is not a value; name one of its fields",
                    level.name()
                ),
            )
            .help(format!(
                "{} fields: {}",
                level.name(),
                field_names(level).join(", ")
            )));
        };
        if head.name == "attributes" && rest.len() == 1 && has_attributes(level) {
            return match head.keys.as_slice() {
                [] => Ok(PathRef {
                    level,
                    field: Field::Attributes,
                }),
                [ast::Key::Str(k, _)] => Ok(PathRef {
                    level,
                    field: Field::Attribute(k.clone()),
                }),
                [ast::Key::Str(..), more, ..] => Err(OttlError::new(
                    more.pos(),
                    "indexing into an attribute value (maps and lists) is not in sluice's OTTL \
                     subset",
                )),
                [ast::Key::Int(_, pos), ..] => Err(OttlError::new(
                    *pos,
                    "attributes are indexed by a string key: attributes[\"key\"]",
                )),
                [ast::Key::Expr(pos), ..] => Err(OttlError::new(
                    *pos,
                    "only literal keys are supported: attributes[\"key\"]",
                )),
            };
        }
        if head.name == "attributes" && !has_attributes(level) {
            return Err(OttlError::new(
                head.pos,
                format!(
                    "a {} has no attributes; data point attributes are `datapoint.attributes`",
                    level.name()
                ),
            ));
        }
        if let Some(k) = rest.iter().flat_map(|f| f.keys.first()).next() {
            return Err(OttlError::new(
                k.pos(),
                "only `attributes` can be indexed in sluice's OTTL subset",
            ));
        }
        let name: Vec<&str> = rest.iter().map(|f| f.name.as_str()).collect();
        let name = name.join(".");
        let pos = rest[0].pos.to(rest[rest.len() - 1].pos);
        match lookup_field(level, &name) {
            Some((c, _, _)) => Ok(PathRef {
                level,
                field: Field::Column(c),
            }),
            None => Err(OttlError::new(
                pos,
                format!(
                    "unknown path `{name}` in the {} context{}",
                    level.name(),
                    if name == "cache" {
                        " (the cache is not in sluice's OTTL subset)"
                    } else {
                        ""
                    }
                ),
            )
            .help(format!(
                "{} paths: {}",
                level.name(),
                field_names(level).join(", ")
            ))),
        }
    }

    // -------------------------------------------------------------------------- values

    fn value(&self, v: &ast::Value) -> Result<(Expr, Ty)> {
        Ok(match v {
            ast::Value::Nil(_) => (Expr::Lit(Lit::Nil), Ty::Nil),
            ast::Value::Bool(b, _) => (Expr::Lit(Lit::Bool(*b)), Ty::Bool),
            ast::Value::Int(i, _) => (Expr::Lit(Lit::Int(*i)), Ty::Int),
            ast::Value::Float(f, _) => (Expr::Lit(Lit::Double(*f)), Ty::Double),
            ast::Value::Str(s, _) => (Expr::Lit(Lit::Str(s.clone())), Ty::Str),
            ast::Value::Bytes(b, _) => (Expr::Lit(Lit::Bytes(b.clone())), Ty::Bytes),
            ast::Value::Enum(name, pos) => match enum_value(name) {
                Some(i) => (Expr::Lit(Lit::Int(i)), Ty::Int),
                None => {
                    return Err(OttlError::new(*pos, format!("unknown enum `{name}`")).help(
                        "enums: SPAN_KIND_*, STATUS_CODE_*, SEVERITY_NUMBER_*, \
                         METRIC_DATA_TYPE_*, AGGREGATION_TEMPORALITY_*",
                    ));
                }
            },
            ast::Value::Path(p) => {
                let r = self.path(p)?;
                let ty = path_type(&r);
                (Expr::Path(r), ty)
            }
            ast::Value::List(items, _) => {
                let items = items
                    .iter()
                    .map(|i| self.scalar_value(i).map(|(e, _)| e))
                    .collect::<Result<Vec<_>>>()?;
                (Expr::List(items), Ty::List)
            }
            ast::Value::Converter(c) => self.converter(c)?,
        })
    }

    /// A value that is not a whole attribute map.
    fn scalar_value(&self, v: &ast::Value) -> Result<(Expr, Ty)> {
        let (e, ty) = self.value(v)?;
        if ty == Ty::Map {
            return Err(OttlError::new(
                v.pos(),
                "a whole attribute map cannot be used as a value here; name one attribute: \
                 attributes[\"key\"]",
            ));
        }
        Ok((e, ty))
    }

    fn bind<'c>(
        &self,
        call: &'c ast::Call,
        params: &[Param],
    ) -> Result<Vec<Option<&'c ast::Value>>> {
        let mut out: Vec<Option<&ast::Value>> = vec![None; params.len()];
        let mut positional = 0;
        for a in &call.args {
            let i = match &a.name {
                None => {
                    if positional >= params.len() {
                        return Err(OttlError::new(
                            a.value.pos(),
                            format!(
                                "`{}` takes at most {} arguments: {}",
                                call.name,
                                params.len(),
                                signature(params)
                            ),
                        ));
                    }
                    positional += 1;
                    positional - 1
                }
                Some((n, pos)) => params.iter().position(|(p, _)| p == n).ok_or_else(|| {
                    OttlError::new(
                        *pos,
                        format!(
                            "`{}` has no argument named `{n}`: {}",
                            call.name,
                            signature(params)
                        ),
                    )
                })?,
            };
            if out[i].is_some() {
                return Err(OttlError::new(
                    a.value.pos(),
                    format!("argument `{}` given twice", params[i].0),
                ));
            }
            out[i] = Some(&a.value);
        }
        for (i, (name, required)) in params.iter().enumerate() {
            if *required && out[i].is_none() {
                return Err(OttlError::new(
                    call.pos,
                    format!(
                        "`{}` needs its `{name}` argument: {}",
                        call.name,
                        signature(params)
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn converter(&self, c: &ast::Call) -> Result<(Expr, Ty)> {
        let arg = |args: &[Option<&ast::Value>], i: usize| -> Result<(Expr, Ty)> {
            match args[i] {
                Some(v) => self.scalar_value(v),
                None => Ok((Expr::Lit(Lit::Nil), Ty::Nil)),
            }
        };
        let (expr, ty) = match c.name.as_str() {
            "IsMatch" => {
                let a = self.bind(c, &[("target", true), ("pattern", true)])?;
                let (target, _) = arg(&a, 0)?;
                let pattern = self.regex(req(&a, 1), "IsMatch")?;
                (Expr::IsMatch(Box::new(target), pattern), Ty::Bool)
            }
            "IsString" | "IsInt" => {
                let a = self.bind(c, &[("target", true)])?;
                let (target, _) = arg(&a, 0)?;
                let e = if c.name == "IsString" {
                    Expr::IsString(Box::new(target))
                } else {
                    Expr::IsInt(Box::new(target))
                };
                (e, Ty::Bool)
            }
            "IsRootSpan" => {
                self.bind(c, &[])?;
                if !self.ctx.within(Context::Span) {
                    return Err(OttlError::new(
                        c.name_pos,
                        format!(
                            "IsRootSpan is only available in the span context and below, not {}",
                            self.ctx.name()
                        ),
                    ));
                }
                (Expr::IsRootSpan, Ty::Bool)
            }
            "Concat" => {
                let a = self.bind(c, &[("vals", true), ("delimiter", true)])?;
                let vals = req(&a, 0);
                let ast::Value::List(items, _) = vals else {
                    return Err(OttlError::new(
                        vals.pos(),
                        "Concat takes a list of values: Concat([a, b], \"-\")",
                    ));
                };
                let items = items
                    .iter()
                    .map(|i| {
                        let (e, ty) = self.scalar_value(i)?;
                        if ty == Ty::List {
                            return Err(OttlError::new(
                                i.pos(),
                                "Concat cannot concatenate a list",
                            ));
                        }
                        Ok(e)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (d, dty) = arg(&a, 1)?;
                self.string_getter(dty, req(&a, 1).pos(), "Concat", "delimiter")?;
                (Expr::Concat(items, Box::new(d)), Ty::Str)
            }
            "Split" => {
                let a = self.bind(c, &[("target", true), ("delimiter", true)])?;
                let (target, tty) = arg(&a, 0)?;
                self.string_getter(tty, req(&a, 0).pos(), "Split", "target")?;
                let d = self.str_lit(req(&a, 1), "Split's delimiter")?;
                (Expr::Split(Box::new(target), d), Ty::List)
            }
            "Substring" => {
                let a = self.bind(
                    c,
                    &[
                        ("target", true),
                        ("start", true),
                        ("length", true),
                        ("utf8_safe", false),
                    ],
                )?;
                if let Some(v) = a[3] {
                    return Err(OttlError::new(
                        v.pos(),
                        "Substring's utf8_safe argument is not supported; sluice never splits a \
                         UTF-8 character (a byte range that would is an error for that item)",
                    ));
                }
                let (target, tty) = arg(&a, 0)?;
                self.string_getter(tty, req(&a, 0).pos(), "Substring", "target")?;
                let (start, sty) = arg(&a, 1)?;
                self.int_getter(sty, req(&a, 1).pos(), "Substring", "start")?;
                let (len, lty) = arg(&a, 2)?;
                self.int_getter(lty, req(&a, 2).pos(), "Substring", "length")?;
                (
                    Expr::Substring(Box::new(target), Box::new(start), Box::new(len)),
                    Ty::Str,
                )
            }
            "ConvertCase" => {
                let a = self.bind(c, &[("target", true), ("to_case", true)])?;
                let (target, tty) = arg(&a, 0)?;
                self.string_getter(tty, req(&a, 0).pos(), "ConvertCase", "target")?;
                let v = req(&a, 1);
                let case = match self.str_lit(v, "ConvertCase's case")?.as_str() {
                    "lower" => Case::Lower,
                    "upper" => Case::Upper,
                    "snake" => Case::Snake,
                    "camel" => Case::Camel,
                    other => {
                        return Err(OttlError::new(
                            v.pos(),
                            format!(
                                "invalid case `{other}`, allowed cases are: lower, upper, snake, camel"
                            ),
                        ));
                    }
                };
                (Expr::ConvertCase(Box::new(target), case), Ty::Str)
            }
            "Int" | "String" => {
                let a = self.bind(c, &[("target", true)])?;
                let (target, _) = arg(&a, 0)?;
                if c.name == "Int" {
                    (Expr::Int(Box::new(target)), Ty::Int)
                } else {
                    (Expr::String(Box::new(target)), Ty::Str)
                }
            }
            "SpanID" | "TraceID" => {
                let a = self.bind(c, &[("bytes", true)])?;
                let v = req(&a, 0);
                let n = if c.name == "SpanID" { 8 } else { 16 };
                let bytes = match v {
                    ast::Value::Bytes(b, _) => b.clone(),
                    ast::Value::Str(s, _) => decode_hex(s).unwrap_or_default(),
                    _ => Vec::new(),
                };
                if bytes.len() != n {
                    return Err(OttlError::new(
                        v.pos(),
                        format!(
                            "{} takes exactly {n} bytes, as a 0x literal or a hex string",
                            c.name
                        ),
                    ));
                }
                let lit = if n == 8 {
                    Lit::SpanId(bytes.try_into().expect("8 bytes"))
                } else {
                    Lit::TraceId(bytes.try_into().expect("16 bytes"))
                };
                let ty = if n == 8 { Ty::SpanId } else { Ty::TraceId };
                (Expr::Lit(lit), ty)
            }
            other => {
                return Err(OttlError::new(
                    c.name_pos,
                    format!("`{other}` is not a converter in sluice's OTTL subset"),
                )
                .help(format!("supported converters: {CONVERTERS}")));
            }
        };
        match c.keys.as_slice() {
            [] => Ok((expr, ty)),
            [ast::Key::Int(i, _)] if matches!(expr, Expr::Split(..)) => {
                Ok((Expr::Index(Box::new(expr), *i), Ty::Any))
            }
            [k, ..] => Err(OttlError::new(
                k.pos(),
                "only a Split result can be indexed, by an int: Split(x, \",\")[0]",
            )),
        }
    }

    fn string_getter(&self, ty: Ty, pos: Pos, func: &str, what: &str) -> Result<()> {
        match ty {
            Ty::Str | Ty::Any => Ok(()),
            other => Err(OttlError::new(
                pos,
                format!("{func} expects a string {what}, got {}", other.name()),
            )),
        }
    }

    fn int_getter(&self, ty: Ty, pos: Pos, func: &str, what: &str) -> Result<()> {
        match ty {
            Ty::Int | Ty::Any => Ok(()),
            other => Err(OttlError::new(
                pos,
                format!("{func} expects an int {what}, got {}", other.name()),
            )),
        }
    }

    fn str_lit(&self, v: &ast::Value, what: &str) -> Result<String> {
        match v {
            ast::Value::Str(s, _) => Ok(s.clone()),
            _ => Err(OttlError::new(
                v.pos(),
                format!("{what} must be a string literal"),
            )),
        }
    }

    fn int_lit(&self, v: &ast::Value, what: &str) -> Result<i64> {
        match v {
            ast::Value::Int(i, _) => Ok(*i),
            _ => Err(OttlError::new(
                v.pos(),
                format!("{what} must be an int literal"),
            )),
        }
    }

    fn str_list(&self, v: &ast::Value, what: &str) -> Result<Vec<String>> {
        match v {
            ast::Value::List(items, _) => items.iter().map(|i| self.str_lit(i, what)).collect(),
            _ => Err(OttlError::new(
                v.pos(),
                format!("{what} must be a list of string literals: [\"a\", \"b\"]"),
            )),
        }
    }

    fn regex(&self, v: &ast::Value, func: &str) -> Result<Arc<Regex>> {
        let pattern = self.str_lit(v, &format!("{func}'s pattern"))?;
        super::regex::compile(&pattern).map(Arc::new).map_err(|e| {
            OttlError::new(
                v.pos(),
                format!("the pattern supplied to {func} is not a valid RE2 regexp: {e}"),
            )
        })
    }

    // -------------------------------------------------------------------------- conditions

    fn cond(&self, b: &ast::BoolExpr) -> Result<Cond> {
        Ok(match b {
            ast::BoolExpr::Or(a, c) => Cond::Or(Box::new(self.cond(a)?), Box::new(self.cond(c)?)),
            ast::BoolExpr::And(a, c) => Cond::And(Box::new(self.cond(a)?), Box::new(self.cond(c)?)),
            ast::BoolExpr::Not(a, _) => Cond::Not(Box::new(self.cond(a)?)),
            ast::BoolExpr::Compare {
                left, op, right, ..
            } => {
                let (l, _) = self.scalar_value(left)?;
                let (r, _) = self.scalar_value(right)?;
                Cond::Cmp(l, *op, r)
            }
            ast::BoolExpr::Value(v) => {
                let (e, ty) = self.value(v)?;
                match (e, ty) {
                    (Expr::Lit(Lit::Bool(b)), _) => Cond::Const(b),
                    (e @ Expr::IsMatch(..), _)
                    | (e @ Expr::IsString(_), _)
                    | (e @ Expr::IsInt(_), _)
                    | (e @ Expr::IsRootSpan, _) => Cond::Value(e),
                    (_, ty) => {
                        return Err(OttlError::new(
                            v.pos(),
                            format!(
                                "a condition must be a comparison, `true`/`false` or a converter \
                                 that returns a bool; this is {}",
                                match ty {
                                    Ty::Any => "a value of any type".to_string(),
                                    t => format!("a {}", t.name()),
                                }
                            ),
                        )
                        .help("compare it: attributes[\"flag\"] == true"));
                    }
                }
            }
        })
    }

    // -------------------------------------------------------------------------- editors

    fn map_target(&self, v: &ast::Value, func: &str) -> Result<Context> {
        if let ast::Value::Path(p) = v {
            let r = self.path(p)?;
            if r.field == Field::Attributes {
                return Ok(r.level);
            }
        }
        Err(OttlError::new(
            v.pos(),
            format!("{func} works on an attribute map: attributes, resource.attributes, ..."),
        ))
    }

    fn set_target(&self, v: &ast::Value, func: &str) -> Result<PathRef> {
        let ast::Value::Path(p) = v else {
            return Err(OttlError::new(
                v.pos(),
                format!("{func}'s target must be a path"),
            ));
        };
        let r = self.path(p)?;
        if !settable(&r) {
            return Err(
                OttlError::new(p.pos, format!("{} cannot be set by sluice", r.describe())).help(
                    "settable: attributes[\"key\"] of every context; span name, kind, status.code, \
                 status.message; spanevent name; scope name, version; metric name, description, \
                 unit; log body, severity_number, severity_text",
                ),
            );
        }
        Ok(r)
    }

    fn editor(&self, c: &ast::Call) -> Result<Editor> {
        Ok(match c.name.as_str() {
            "set" => {
                let a = self.bind(c, &[("target", true), ("value", true)])?;
                let target = self.set_target(req(&a, 0), "set")?;
                let (value, vty) = self.scalar_value(req(&a, 1))?;
                let tty = path_type(&target);
                let ok = match tty {
                    Ty::Any => true,
                    Ty::Str => matches!(vty, Ty::Str | Ty::Any | Ty::Nil),
                    Ty::Int => matches!(vty, Ty::Int | Ty::Any | Ty::Nil),
                    _ => false,
                };
                if !ok {
                    return Err(OttlError::new(
                        req(&a, 1).pos(),
                        format!(
                            "{} is {} {}; the value is {} {}",
                            target.describe(),
                            article(tty),
                            tty.name(),
                            article(vty),
                            vty.name()
                        ),
                    ));
                }
                Editor::Set { target, value }
            }
            "delete_key" => {
                let a = self.bind(c, &[("target", true), ("key", true)])?;
                Editor::DeleteKeys {
                    map: self.map_target(req(&a, 0), "delete_key")?,
                    keys: vec![self.str_lit(req(&a, 1), "delete_key's key")?],
                }
            }
            "delete_matching_keys" => {
                let a = self.bind(c, &[("target", true), ("pattern", true)])?;
                Editor::DeleteMatchingKeys {
                    map: self.map_target(req(&a, 0), "delete_matching_keys")?,
                    pattern: self.regex(req(&a, 1), "delete_matching_keys")?,
                }
            }
            "keep_keys" => {
                let a = self.bind(c, &[("target", true), ("keys", true)])?;
                Editor::KeepKeys {
                    map: self.map_target(req(&a, 0), "keep_keys")?,
                    keys: self.str_list(req(&a, 1), "keep_keys' keys")?,
                }
            }
            "limit" => {
                let a = self.bind(
                    c,
                    &[("target", true), ("limit", true), ("priority_keys", false)],
                )?;
                let map = self.map_target(req(&a, 0), "limit")?;
                let limit = self.int_lit(req(&a, 1), "limit's limit")?;
                let priority = match a[2] {
                    Some(v) => self.str_list(v, "limit's priority_keys")?,
                    None => Vec::new(),
                };
                if limit < 1 {
                    return Err(OttlError::new(
                        req(&a, 1).pos(),
                        format!("invalid limit for limit function, {limit} cannot be less than 1"),
                    ));
                }
                if priority.len() as i64 > limit {
                    return Err(OttlError::new(
                        a[2].map_or(c.pos, |v| v.pos()),
                        format!(
                            "invalid limit for limit function, there are {} priority keys, more \
                             than the limit {limit}",
                            priority.len()
                        ),
                    ));
                }
                Editor::Limit {
                    map,
                    limit: limit as usize,
                    priority,
                }
            }
            "truncate_all" => {
                let a = self.bind(
                    c,
                    &[
                        ("target", true),
                        ("limit", true),
                        ("utf8_safe", false),
                        ("truncation_marker", false),
                    ],
                )?;
                let map = self.map_target(req(&a, 0), "truncate_all")?;
                let limit = self.int_lit(req(&a, 1), "truncate_all's limit")?;
                if limit < 0 {
                    return Err(OttlError::new(
                        req(&a, 1).pos(),
                        format!(
                            "invalid limit for truncate_all function, {limit} cannot be negative"
                        ),
                    ));
                }
                if let Some(v) = a[2] {
                    match v {
                        ast::Value::Bool(true, _) => {}
                        _ => {
                            return Err(OttlError::new(
                                v.pos(),
                                "utf8_safe can only be true in sluice: values are always cut at a \
                                 character boundary so they stay valid UTF-8",
                            ));
                        }
                    }
                }
                let marker = match a[3] {
                    Some(v) => self.str_lit(v, "truncate_all's truncation_marker")?,
                    None => String::new(),
                };
                if marker.len() as i64 > limit {
                    return Err(OttlError::new(
                        a[3].map_or(c.pos, |v| v.pos()),
                        "the truncation marker is longer than the limit",
                    ));
                }
                Editor::TruncateAll {
                    map,
                    limit: limit as usize,
                    marker,
                }
            }
            "replace_pattern" => {
                let a = self.bind(
                    c,
                    &[
                        ("target", true),
                        ("regex", true),
                        ("replacement", true),
                        ("function", false),
                        ("replacement_format", false),
                    ],
                )?;
                self.no_function(&a[3..])?;
                let target = self.set_target(req(&a, 0), "replace_pattern")?;
                let tty = path_type(&target);
                if !matches!(tty, Ty::Str | Ty::Any) {
                    return Err(OttlError::new(
                        req(&a, 0).pos(),
                        format!(
                            "replace_pattern works on strings; {} is {}",
                            target.describe(),
                            tty.name()
                        ),
                    ));
                }
                let (replacement, rty) = self.scalar_value(req(&a, 2))?;
                self.string_getter(rty, req(&a, 2).pos(), "replace_pattern", "replacement")?;
                Editor::ReplacePattern {
                    target,
                    pattern: self.regex(req(&a, 1), "replace_pattern")?,
                    replacement,
                }
            }
            "replace_all_patterns" => {
                let a = self.bind(
                    c,
                    &[
                        ("target", true),
                        ("mode", true),
                        ("regex", true),
                        ("replacement", true),
                        ("function", false),
                        ("replacement_format", false),
                    ],
                )?;
                self.no_function(&a[4..])?;
                let map = self.map_target(req(&a, 0), "replace_all_patterns")?;
                let mode_v = req(&a, 1);
                let mode = match self.str_lit(mode_v, "replace_all_patterns' mode")?.as_str() {
                    "key" => PatternMode::Key,
                    "value" => PatternMode::Value,
                    other => {
                        return Err(OttlError::new(
                            mode_v.pos(),
                            format!("invalid mode {other:?}, must be \"key\" or \"value\""),
                        ));
                    }
                };
                let (replacement, rty) = self.scalar_value(req(&a, 3))?;
                self.string_getter(rty, req(&a, 3).pos(), "replace_all_patterns", "replacement")?;
                Editor::ReplaceAllPatterns {
                    map,
                    mode,
                    pattern: self.regex(req(&a, 2), "replace_all_patterns")?,
                    replacement,
                }
            }
            other => {
                return Err(OttlError::new(
                    c.name_pos,
                    format!("`{other}` is not an editor in sluice's OTTL subset"),
                )
                .help(format!("supported editors: {EDITORS}")));
            }
        })
    }

    fn no_function(&self, optional: &[Option<&ast::Value>]) -> Result<()> {
        match optional.iter().flatten().next() {
            Some(v) => Err(OttlError::new(
                v.pos(),
                "the optional function and replacement_format arguments are not in sluice's OTTL \
                 subset",
            )),
            None => Ok(()),
        }
    }
}

/// A required argument (`bind` checked it is there).
fn req<'v>(a: &[Option<&'v ast::Value>], i: usize) -> &'v ast::Value {
    a[i].expect("required argument")
}

fn article(t: Ty) -> &'static str {
    match t {
        Ty::Int | Ty::Any => "an",
        _ => "a",
    }
}

fn signature(params: &[Param]) -> String {
    let names: Vec<String> = params
        .iter()
        .map(|(n, req)| {
            if *req {
                n.to_string()
            } else {
                format!("[{n}]")
            }
        })
        .collect();
    format!("({})", names.join(", "))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
