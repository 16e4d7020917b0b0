//! The syntax tree of OTTL statements and conditions, as written (before any check). Every
//! node carries its byte range in the source text so errors can point at it.

/// A byte range `start..end` in the statement text.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub start: usize,
    pub end: usize,
}

impl Pos {
    pub fn new(start: usize, end: usize) -> Self {
        Pos { start, end }
    }
    /// The smallest range covering both.
    pub fn to(self, other: Pos) -> Pos {
        Pos {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// `editor(args) [where condition]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub editor: Call,
    pub condition: Option<BoolExpr>,
}

/// A function invocation: an editor (lowercase name) or a converter (uppercase name, possibly
/// indexed: `Split(x, ",")[0]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub name: String,
    pub name_pos: Pos,
    pub args: Vec<Arg>,
    pub keys: Vec<Key>,
    pub pos: Pos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    /// `name = value` (named argument), snake_case as the Collector writes them.
    pub name: Option<(String, Pos)>,
    pub value: Value,
}

/// `["key"]` or `[0]`; any other expression inside brackets is kept to be refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    Str(String, Pos),
    Int(i64, Pos),
    Expr(Pos),
}

impl Key {
    pub fn pos(&self) -> Pos {
        match self {
            Key::Str(_, p) | Key::Int(_, p) | Key::Expr(p) => *p,
        }
    }
}

/// One `.`-separated part of a path with the keys that follow it: `attributes["k"]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub pos: Pos,
    pub keys: Vec<Key>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub fields: Vec<Field>,
    pub pos: Pos,
}

/// A value: what function arguments and comparison operands are.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil(Pos),
    Bool(bool, Pos),
    Int(i64, Pos),
    Float(f64, Pos),
    Str(String, Pos),
    Bytes(Vec<u8>, Pos),
    /// An uppercase identifier that is not a call: `SPAN_KIND_SERVER`.
    Enum(String, Pos),
    Path(Path),
    Converter(Call),
    List(Vec<Value>, Pos),
}

impl Value {
    pub fn pos(&self) -> Pos {
        match self {
            Value::Nil(p)
            | Value::Bool(_, p)
            | Value::Int(_, p)
            | Value::Float(_, p)
            | Value::Str(_, p)
            | Value::Bytes(_, p)
            | Value::Enum(_, p)
            | Value::List(_, p) => *p,
            Value::Path(p) => p.pos,
            Value::Converter(c) => c.pos,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A boolean expression: `where` clauses and filter conditions.
#[derive(Clone, Debug, PartialEq)]
pub enum BoolExpr {
    Or(Box<BoolExpr>, Box<BoolExpr>),
    And(Box<BoolExpr>, Box<BoolExpr>),
    Not(Box<BoolExpr>, Pos),
    Compare {
        left: Value,
        op: CmpOp,
        right: Value,
        pos: Pos,
    },
    /// A value used as a boolean on its own: `true`, `IsMatch(...)`; anything else is refused
    /// by the checker with its position.
    Value(Value),
}

impl BoolExpr {
    pub fn pos(&self) -> Pos {
        match self {
            BoolExpr::Or(a, b) | BoolExpr::And(a, b) => a.pos().to(b.pos()),
            BoolExpr::Not(_, p) => *p,
            BoolExpr::Compare { pos, .. } => *pos,
            BoolExpr::Value(v) => v.pos(),
        }
    }
}
