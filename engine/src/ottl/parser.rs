//! Lexer and recursive-descent parser for OTTL statements and conditions.
//!
//! Follows the grammar of the Collector's `pkg/ottl` (LANGUAGE.md): an editor invocation with
//! an optional `where` clause; boolean expressions of comparisons, boolean literals and
//! converters joined by `and`, `or`, `not` and parentheses (`not` binds tightest, then `and`,
//! then `or`); values that are literals (strings with Go escapes, ints, floats, `true`/`false`,
//! `nil`, `0x` bytes), enums, paths with `["key"]`/`[0]` indexes, converter calls (optionally
//! indexed) and lists. Math expressions, maps and lambdas are part of OTTL but not of the
//! subset sluice compiles: they are recognised and refused here with their position.

use super::ast::*;
use super::error::{OttlError, Result};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier starting with a lowercase letter or `_`: path part, editor, keyword.
    Lower(String),
    /// An identifier starting with an uppercase letter: converter or enum.
    Upper(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    Assign,
    Cmp(CmpOp),
    /// `+ - * /`
    Math(char),
    Arrow,
    Eof,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Lower(s) | Tok::Upper(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::Bytes(_) => "bytes literal".into(),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Dot => "`.`".into(),
        Tok::Colon => "`:`".into(),
        Tok::Assign => "`=`".into(),
        Tok::Cmp(op) => format!("`{}`", op.as_str()),
        Tok::Math(c) => format!("`{c}`"),
        Tok::Arrow => "`=>`".into(),
        Tok::Eof => "the end of the statement".into(),
    }
}

fn is_value_end(t: &Tok) -> bool {
    matches!(
        t,
        Tok::Lower(_)
            | Tok::Upper(_)
            | Tok::Str(_)
            | Tok::Int(_)
            | Tok::Float(_)
            | Tok::Bytes(_)
            | Tok::RParen
            | Tok::RBracket
            | Tok::RBrace
    )
}

fn lex(text: &str) -> Result<Vec<(Tok, Pos)>> {
    let b = text.as_bytes();
    let mut out: Vec<(Tok, Pos)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            b',' => Some(Tok::Comma),
            b':' => Some(Tok::Colon),
            b'*' | b'/' => Some(Tok::Math(c as char)),
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, Pos::new(i, i + 1)));
            i += 1;
            continue;
        }
        let two = b.get(i + 1).copied();
        match (c, two) {
            (b'=', Some(b'=')) => {
                out.push((Tok::Cmp(CmpOp::Eq), Pos::new(i, i + 2)));
                i += 2;
                continue;
            }
            (b'=', Some(b'>')) => {
                out.push((Tok::Arrow, Pos::new(i, i + 2)));
                i += 2;
                continue;
            }
            (b'=', _) => {
                out.push((Tok::Assign, Pos::new(i, i + 1)));
                i += 1;
                continue;
            }
            (b'!', Some(b'=')) => {
                out.push((Tok::Cmp(CmpOp::Ne), Pos::new(i, i + 2)));
                i += 2;
                continue;
            }
            (b'<', Some(b'=')) => {
                out.push((Tok::Cmp(CmpOp::Le), Pos::new(i, i + 2)));
                i += 2;
                continue;
            }
            (b'>', Some(b'=')) => {
                out.push((Tok::Cmp(CmpOp::Ge), Pos::new(i, i + 2)));
                i += 2;
                continue;
            }
            (b'<', _) => {
                out.push((Tok::Cmp(CmpOp::Lt), Pos::new(i, i + 1)));
                i += 1;
                continue;
            }
            (b'>', _) => {
                out.push((Tok::Cmp(CmpOp::Gt), Pos::new(i, i + 1)));
                i += 1;
                continue;
            }
            _ => {}
        }
        if c == b'"' {
            let (s, end) = unquote(text, i)?;
            out.push((Tok::Str(s), Pos::new(start, end)));
            i = end;
            continue;
        }
        if c == b'0' && matches!(two, Some(b'x' | b'X')) {
            let mut j = i + 2;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            let hex = &text[i + 2..j];
            if hex.is_empty() || !hex.len().is_multiple_of(2) {
                return Err(OttlError::new(
                    Pos::new(start, j),
                    "a bytes literal needs an even, non-zero number of hex digits after 0x",
                ));
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|k| u8::from_str_radix(&hex[k..k + 2], 16))
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|_| OttlError::new(Pos::new(start, j), "invalid hex digits"))?;
            out.push((Tok::Bytes(bytes), Pos::new(start, j)));
            i = j;
            continue;
        }
        let signed_number = matches!(c, b'+' | b'-')
            && (two.is_some_and(|d| d.is_ascii_digit())
                || (two == Some(b'.') && b.get(i + 2).is_some_and(u8::is_ascii_digit)))
            && !out.last().is_some_and(|(t, _)| is_value_end(t));
        if c.is_ascii_digit()
            || (c == b'.' && two.is_some_and(|d| d.is_ascii_digit()))
            || signed_number
        {
            let (tok, end) = number(text, i)?;
            out.push((tok, Pos::new(start, end)));
            i = end;
            continue;
        }
        if c == b'+' || c == b'-' {
            out.push((Tok::Math(c as char), Pos::new(i, i + 1)));
            i += 1;
            continue;
        }
        if c == b'.' {
            out.push((Tok::Dot, Pos::new(i, i + 1)));
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let word = text[i..j].to_string();
            let tok = if c.is_ascii_uppercase() {
                Tok::Upper(word)
            } else {
                Tok::Lower(word)
            };
            out.push((tok, Pos::new(i, j)));
            i = j;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or('?');
        return Err(OttlError::new(
            Pos::new(i, i + ch.len_utf8()),
            format!("unexpected character `{ch}`"),
        ));
    }
    out.push((Tok::Eof, Pos::new(b.len(), b.len())));
    Ok(out)
}

/// `[+-]digits[.digits][e[+-]digits]` or `[+-].digits...`; an int unless it has a `.` or an
/// exponent.
fn number(text: &str, start: usize) -> Result<(Tok, usize)> {
    let b = text.as_bytes();
    let mut j = start;
    if matches!(b[j], b'+' | b'-') {
        j += 1;
    }
    let digits = |mut k: usize| {
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        k
    };
    j = digits(j);
    let mut float = false;
    if j < b.len() && b[j] == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        float = true;
        j = digits(j + 1);
    }
    if j < b.len() && matches!(b[j], b'e' | b'E') {
        let mut k = j + 1;
        if k < b.len() && matches!(b[k], b'+' | b'-') {
            k += 1;
        }
        if b.get(k).is_some_and(u8::is_ascii_digit) {
            float = true;
            j = digits(k);
        }
    }
    let s = &text[start..j];
    let pos = Pos::new(start, j);
    if float {
        s.parse::<f64>()
            .map(|f| (Tok::Float(f), j))
            .map_err(|_| OttlError::new(pos, format!("invalid number `{s}`")))
    } else {
        s.parse::<i64>()
            .map(|n| (Tok::Int(n), j))
            .map_err(|_| OttlError::new(pos, format!("`{s}` does not fit in a 64-bit integer")))
    }
}

/// A double-quoted string with Go's escapes (`strconv.Unquote`, as OTTL reads string
/// literals): `\a \b \f \n \r \t \v \\ \"`, `\xHH`, `\ooo`, `\uHHHH`, `\UHHHHHHHH`. Returns the
/// value and the byte offset after the closing quote.
fn unquote(text: &str, start: usize) -> Result<(String, usize)> {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(OttlError::new(
                Pos::new(start, text.len()),
                "string literal is not closed (missing `\"`)",
            ));
        };
        match c {
            b'"' => break,
            b'\n' => {
                return Err(OttlError::new(
                    Pos::new(i, i + 1),
                    "a string literal cannot contain a raw newline; write \\n",
                ));
            }
            b'\\' => {
                let esc = b.get(i + 1).copied();
                let bad = |len: usize| {
                    OttlError::new(
                        Pos::new(i, (i + len).min(text.len())),
                        "invalid escape in string literal",
                    )
                    .help(
                        "OTTL strings use Go escapes: \\\\ \\\" \\n \\t \\r \\xHH \\uHHHH; a regex \
                         `\\d` is written \"\\\\d\" in OTTL (and '\"\\\\d\"' in YAML single quotes)",
                    )
                };
                let simple = match esc {
                    Some(b'a') => Some(7u8),
                    Some(b'b') => Some(8),
                    Some(b'f') => Some(12),
                    Some(b'n') => Some(b'\n'),
                    Some(b'r') => Some(b'\r'),
                    Some(b't') => Some(b'\t'),
                    Some(b'v') => Some(11),
                    Some(b'\\') => Some(b'\\'),
                    Some(b'"') => Some(b'"'),
                    _ => None,
                };
                if let Some(v) = simple {
                    out.push(v);
                    i += 2;
                    continue;
                }
                let hex = |from: usize, n: usize| -> Option<u32> {
                    let s = text.get(from..from + n)?;
                    if s.bytes().all(|d| d.is_ascii_hexdigit()) {
                        u32::from_str_radix(s, 16).ok()
                    } else {
                        None
                    }
                };
                match esc {
                    Some(b'x') => {
                        let v = hex(i + 2, 2).ok_or_else(|| bad(4))?;
                        out.push(v as u8);
                        i += 4;
                    }
                    Some(b'u') | Some(b'U') => {
                        let n = if esc == Some(b'u') { 4 } else { 8 };
                        let ch = hex(i + 2, n)
                            .and_then(char::from_u32)
                            .ok_or_else(|| bad(2 + n))?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += 2 + n;
                    }
                    Some(d @ b'0'..=b'7') => {
                        let s = text.get(i + 1..i + 4).ok_or_else(|| bad(4))?;
                        if !s.bytes().all(|o| (b'0'..=b'7').contains(&o)) || d > b'3' {
                            return Err(bad(4));
                        }
                        let v = u8::from_str_radix(s, 8).map_err(|_| bad(4))?;
                        out.push(v);
                        i += 4;
                    }
                    _ => return Err(bad(2)),
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    let end = i + 1;
    String::from_utf8(out)
        .map(|s| (s, end))
        .map_err(|_| OttlError::new(Pos::new(start, end), "string literal is not valid UTF-8"))
}

struct Parser<'t> {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    text: &'t str,
}

const MATH: &str = "math expressions (`+ - * /`) are not in sluice's OTTL subset";

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Result<Self> {
        Ok(Parser {
            toks: lex(text)?,
            at: 0,
            text,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.at + 1).min(self.toks.len() - 1)].0
    }
    fn pos(&self) -> Pos {
        self.toks[self.at].1
    }
    fn prev_end(&self) -> usize {
        if self.at == 0 {
            0
        } else {
            self.toks[self.at - 1].1.end
        }
    }
    fn bump(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Lower(w) if w == kw)
    }
    fn unexpected(&self, expected: &str) -> OttlError {
        OttlError::new(
            self.pos(),
            format!("expected {expected}, found {}", describe(self.peek())),
        )
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<Pos> {
        if *self.peek() == t {
            Ok(self.bump().1)
        } else {
            Err(self.unexpected(what))
        }
    }

    fn statement(&mut self) -> Result<Statement> {
        let (name, name_pos) = match self.peek().clone() {
            Tok::Lower(w) if !is_keyword(&w) && *self.peek2() == Tok::LParen => (w, self.bump().1),
            Tok::Upper(w) if *self.peek2() == Tok::LParen => {
                return Err(OttlError::new(
                    self.pos(),
                    format!(
                        "a statement starts with an editor (a lowercase function such as `set` or \
                         `delete_key`); `{w}` is a converter"
                    ),
                ));
            }
            _ => return Err(self.unexpected("an editor call such as `set(...)`")),
        };
        let editor = self.call_rest(name, name_pos)?;
        let condition = if self.is_kw("where") {
            self.bump();
            Some(self.bool_expr()?)
        } else {
            None
        };
        self.end()?;
        Ok(Statement { editor, condition })
    }

    fn end(&self) -> Result<()> {
        match self.peek() {
            Tok::Eof => Ok(()),
            Tok::Math(_) => Err(OttlError::new(self.pos(), MATH)),
            _ => Err(self.unexpected("`where`, `and`, `or` or the end of the statement")),
        }
    }

    /// After the name: `(args)` and, for converters, `[key]...`.
    fn call_rest(&mut self, name: String, name_pos: Pos) -> Result<Call> {
        self.expect(Tok::LParen, "`(`")?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                let arg_name = match (self.peek().clone(), self.peek2()) {
                    (Tok::Lower(w), Tok::Assign) => {
                        let p = self.bump().1;
                        self.bump();
                        Some((w, p))
                    }
                    _ => None,
                };
                if arg_name.is_none() && args.iter().any(|a: &Arg| a.name.is_some()) {
                    return Err(OttlError::new(
                        self.pos(),
                        "positional arguments must come before named arguments",
                    ));
                }
                let value = self.value()?;
                args.push(Arg {
                    name: arg_name,
                    value,
                });
                match self.peek() {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RParen => break,
                    Tok::Math(_) => return Err(OttlError::new(self.pos(), MATH)),
                    _ => return Err(self.unexpected("`,` or `)`")),
                }
            }
        }
        self.expect(Tok::RParen, "`)`")?;
        let keys = self.keys()?;
        Ok(Call {
            name,
            name_pos,
            args,
            keys,
            pos: Pos::new(name_pos.start, self.prev_end()),
        })
    }

    fn keys(&mut self) -> Result<Vec<Key>> {
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            let open = self.bump().1;
            let key = match self.peek().clone() {
                Tok::Str(s) if *self.peek2() == Tok::RBracket => {
                    self.bump();
                    Key::Str(s, Pos::new(open.start, self.pos().end))
                }
                Tok::Int(n) if *self.peek2() == Tok::RBracket => {
                    self.bump();
                    Key::Int(n, Pos::new(open.start, self.pos().end))
                }
                _ => {
                    let v = self.value()?;
                    Key::Expr(Pos::new(open.start, v.pos().end + 1))
                }
            };
            self.expect(Tok::RBracket, "`]`")?;
            keys.push(key);
        }
        Ok(keys)
    }

    fn bool_expr(&mut self) -> Result<BoolExpr> {
        let mut left = self.bool_and()?;
        while self.is_kw("or") {
            self.bump();
            let right = self.bool_and()?;
            left = BoolExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn bool_and(&mut self) -> Result<BoolExpr> {
        let mut left = self.bool_not()?;
        while self.is_kw("and") {
            self.bump();
            let right = self.bool_not()?;
            left = BoolExpr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn bool_not(&mut self) -> Result<BoolExpr> {
        if self.is_kw("not") {
            let p = self.bump().1;
            let inner = self.bool_not()?;
            let pos = p.to(inner.pos());
            return Ok(BoolExpr::Not(Box::new(inner), pos));
        }
        self.bool_primary()
    }

    fn bool_primary(&mut self) -> Result<BoolExpr> {
        if *self.peek() == Tok::LParen {
            let open = self.bump().1;
            let inner = self.bool_expr()?;
            if let Tok::Math(_) = self.peek() {
                return Err(OttlError::new(self.pos(), MATH));
            }
            self.expect(Tok::RParen, "`)` closing the group opened here")
                .map_err(|e| e.help(format!("group opened at byte {}", open.start)))?;
            if let Tok::Cmp(_) = self.peek() {
                return Err(OttlError::new(
                    self.pos(),
                    "cannot compare a parenthesised expression (grouping values is math, which \
                     is not in the subset)",
                ));
            }
            return Ok(inner);
        }
        let left = self.value()?;
        if let Tok::Cmp(op) = *self.peek() {
            self.bump();
            let right = self.value()?;
            let pos = left.pos().to(right.pos());
            if let Tok::Cmp(_) = self.peek() {
                return Err(OttlError::new(
                    self.pos(),
                    "comparisons cannot be chained; join them with `and`",
                ));
            }
            return Ok(BoolExpr::Compare {
                left,
                op,
                right,
                pos,
            });
        }
        Ok(BoolExpr::Value(left))
    }

    fn value(&mut self) -> Result<Value> {
        let v = self.value_inner()?;
        if let Tok::Math(_) = self.peek() {
            return Err(OttlError::new(self.pos(), MATH));
        }
        if *self.peek() == Tok::Arrow {
            return Err(OttlError::new(
                self.pos(),
                "lambda expressions are not in sluice's OTTL subset",
            ));
        }
        Ok(v)
    }

    fn value_inner(&mut self) -> Result<Value> {
        let (tok, pos) = (self.peek().clone(), self.pos());
        match tok {
            Tok::Str(s) => {
                self.bump();
                Ok(Value::Str(s, pos))
            }
            Tok::Int(n) => {
                self.bump();
                Ok(Value::Int(n, pos))
            }
            Tok::Float(f) => {
                self.bump();
                Ok(Value::Float(f, pos))
            }
            Tok::Bytes(b) => {
                self.bump();
                Ok(Value::Bytes(b, pos))
            }
            Tok::LBracket => {
                self.bump();
                let mut items = Vec::new();
                if *self.peek() != Tok::RBracket {
                    loop {
                        items.push(self.value()?);
                        match self.peek() {
                            Tok::Comma => {
                                self.bump();
                            }
                            Tok::RBracket => break,
                            _ => return Err(self.unexpected("`,` or `]`")),
                        }
                    }
                }
                let close = self.expect(Tok::RBracket, "`]`")?;
                Ok(Value::List(items, pos.to(close)))
            }
            Tok::LBrace => Err(OttlError::new(
                pos,
                "map literals (`{...}`) are not in sluice's OTTL subset",
            )),
            Tok::LParen => Err(OttlError::new(pos, MATH)),
            Tok::Upper(name) => {
                self.bump();
                if *self.peek() == Tok::LParen {
                    Ok(Value::Converter(self.call_rest(name, pos)?))
                } else {
                    Ok(Value::Enum(name, pos))
                }
            }
            Tok::Lower(w) => match w.as_str() {
                "nil" => {
                    self.bump();
                    Ok(Value::Nil(pos))
                }
                "true" | "false" => {
                    self.bump();
                    Ok(Value::Bool(w == "true", pos))
                }
                "where" | "and" | "or" | "not" => Err(self.unexpected("a value")),
                _ if *self.peek2() == Tok::LParen => Err(OttlError::new(
                    pos,
                    format!(
                        "`{w}` is an editor and cannot be used as a value (converters, which \
                         return values, start with an uppercase letter)"
                    ),
                )),
                _ => self.path(),
            },
            _ => Err(self.unexpected("a value (literal, path, enum or converter)")),
        }
    }

    fn path(&mut self) -> Result<Value> {
        let start = self.pos().start;
        let mut fields = Vec::new();
        loop {
            let (tok, pos) = (self.peek().clone(), self.pos());
            let Tok::Lower(name) = tok else {
                return Err(self.unexpected("a path field (lowercase name)"));
            };
            self.bump();
            let keys = self.keys()?;
            fields.push(Field { name, pos, keys });
            if *self.peek() == Tok::Dot {
                self.bump();
            } else {
                break;
            }
        }
        Ok(Value::Path(Path {
            fields,
            pos: Pos::new(start, self.prev_end()),
        }))
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(w, "where" | "and" | "or" | "not" | "true" | "false" | "nil")
}

/// Parses one statement: `editor(args) [where condition]`.
pub fn parse_statement(text: &str) -> Result<Statement> {
    let mut p = Parser::new(text)?;
    if *p.peek() == Tok::Eof {
        return Err(OttlError::new(Pos::new(0, 0), "empty statement"));
    }
    let s = p.statement()?;
    debug_assert!(p.text.len() >= s.editor.pos.end);
    Ok(s)
}

/// Parses one condition (a boolean expression), as in the filter processor.
pub fn parse_condition(text: &str) -> Result<BoolExpr> {
    let mut p = Parser::new(text)?;
    if *p.peek() == Tok::Eof {
        return Err(OttlError::new(Pos::new(0, 0), "empty condition"));
    }
    let c = p.bool_expr()?;
    p.end()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(s: &str) -> BoolExpr {
        parse_condition(s).unwrap_or_else(|e| panic!("{s}: {}", e.render(s)))
    }

    #[test]
    fn precedence_not_then_and_then_or() {
        let c = cond("a == 1 or not b == 2 and c == 3");
        let BoolExpr::Or(left, right) = c else {
            panic!("or at the top")
        };
        assert!(matches!(*left, BoolExpr::Compare { .. }));
        let BoolExpr::And(l, r) = *right else {
            panic!("and under or")
        };
        assert!(matches!(*l, BoolExpr::Not(..)));
        assert!(matches!(*r, BoolExpr::Compare { .. }));
    }

    #[test]
    fn parentheses_group() {
        let c = cond("(a == 1 or b == 2) and c == 3");
        assert!(matches!(c, BoolExpr::And(..)));
    }

    #[test]
    fn literals_and_escapes() {
        let s = parse_statement(r#"set(attributes["k"], "a\"b\\c\n\x41\u00e9\101")"#).unwrap();
        let Value::Str(v, _) = &s.editor.args[1].value else {
            panic!()
        };
        assert_eq!(v, "a\"b\\c\nAéA");
        let c = cond("x == -1 and y == +2.5 and z == .5 and w == 0xff00 and v == 1e3");
        let mut lits = Vec::new();
        fn walk(b: &BoolExpr, out: &mut Vec<Value>) {
            match b {
                BoolExpr::And(a, c) | BoolExpr::Or(a, c) => {
                    walk(a, out);
                    walk(c, out);
                }
                BoolExpr::Compare { right, .. } => out.push(right.clone()),
                _ => {}
            }
        }
        walk(&c, &mut lits);
        assert!(matches!(lits[0], Value::Int(-1, _)));
        assert!(matches!(lits[1], Value::Float(f, _) if f == 2.5));
        assert!(matches!(lits[2], Value::Float(f, _) if f == 0.5));
        assert!(matches!(&lits[3], Value::Bytes(b, _) if b == &vec![0xff, 0]));
        assert!(matches!(lits[4], Value::Float(f, _) if f == 1000.0));
    }

    #[test]
    fn paths_keys_converters_lists_named_args() {
        let s = parse_statement(
            r#"truncate_all(resource.attributes, 10, truncation_marker = "…") where Split(name, ",")[1] == "b" and kind == SPAN_KIND_CLIENT"#,
        )
        .unwrap();
        assert_eq!(s.editor.name, "truncate_all");
        assert_eq!(
            s.editor.args[2].name.as_ref().unwrap().0,
            "truncation_marker"
        );
        let Value::Path(p) = &s.editor.args[0].value else {
            panic!()
        };
        assert_eq!(p.fields.len(), 2);
        let c = cond(r#"Concat([name, "x", 1], "-") == "a-x-1""#);
        let BoolExpr::Compare {
            left: Value::Converter(call),
            ..
        } = c
        else {
            panic!()
        };
        assert!(matches!(&call.args[0].value, Value::List(items, _) if items.len() == 3));
    }

    fn err(s: &str) -> OttlError {
        parse_condition(s)
            .err()
            .or_else(|| parse_statement(s).err())
            .unwrap_or_else(|| panic!("{s} should not parse"))
    }

    #[test]
    fn errors_point_at_the_problem() {
        let s = r#"attributes["a"] == 1 + 2"#;
        let e = parse_condition(s).unwrap_err();
        assert_eq!(e.column(s), 22, "{}", e.render(s));
        assert!(e.message.contains("math"), "{e}");
        let s = r#"name == "unterminated"#;
        assert_eq!(parse_condition(s).unwrap_err().column(s), 9);
        let s = r#"IsMatch(name, "\d")"#;
        let e = parse_condition(s).unwrap_err();
        assert_eq!(e.column(s), 16, "{}", e.render(s));
        assert!(e.help.unwrap().contains("\\\\d"));
        assert!(err("name == {\"a\": 1}").message.contains("map"));
        assert!(err("a == 1 == 2").message.contains("chained"));
        assert!(err("name == ").message.contains("expected a value"));
        assert!(err("IsMatch(name, \"x\")").message.contains("converter"));
        let s = "set(name, \"x\") where";
        assert_eq!(parse_statement(s).unwrap_err().column(s), 21);
        let s = "set(name, \"x\") whre name == \"y\"";
        let e = parse_statement(s).unwrap_err();
        assert_eq!(e.column(s), 16);
        assert!(err("x == 9223372036854775808").message.contains("64-bit"));
        assert!(err("set(name, 0x1)").message.contains("even"));
        assert!(
            err("name == \"a\" and")
                .message
                .contains("expected a value")
        );
        let lambda = parse_statement("set(attributes[\"a\"], x => x)").unwrap_err();
        assert!(lambda.message.contains("lambda"), "{lambda}");
    }

    #[test]
    fn render_shows_a_caret_under_the_problem() {
        let s = r#"name == "a" or attributes["k"] ~ 1"#;
        let e = parse_condition(s).unwrap_err();
        let r = e.render(s);
        assert!(
            r.starts_with("OTTL error at column 32: unexpected character `~`"),
            "{r}"
        );
        let caret_line = r.lines().nth(2).unwrap();
        assert_eq!(caret_line.find('^'), Some(6 + 31), "{r}");
    }
}
