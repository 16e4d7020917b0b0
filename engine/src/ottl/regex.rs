//! Go RE2 regular expressions on the Rust `regex` crate.
//!
//! OTTL patterns are Go `regexp` (RE2) syntax. The `regex` crate is RE2-like; the differences
//! that change what a pattern matches are handled by rewriting the pattern before compiling:
//!
//! - Perl classes are ASCII in Go (`\d` = `[0-9]`, `\s` = `[\t\n\f\r ]`, `\w` =
//!   `[0-9A-Za-z_]`, `\b` an ASCII word boundary) but Unicode in Rust: rewritten to the ASCII
//!   sets (inside a class too).
//! - `\Q...\E` quotes a literal in Go; Rust has no such syntax: the text is escaped.
//! - Inside a class, Go reads `[` (not starting `[:name:]`) and `&`, `~`, `--` literally; Rust
//!   reads nested classes and set operations: they are escaped.
//! - Octal escapes (`\123`) are Go syntax: enabled; a lone `\1`..`\9` (a backreference,
//!   which RE2 does not have) is refused as Go refuses it.
//!
//! Matching is unanchored (`regexp.MatchString`), and `replace_all` expands `$1`, `${name}`
//! and `$$` as Go's `ReplaceAllString` does.

use regex::{Regex, RegexBuilder};

/// Compiles a Go RE2 pattern; the error text is the regex crate's, which names the problem.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let translated = translate(pattern)?;
    RegexBuilder::new(&translated)
        .octal(true)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => one_line(&s, &translated),
            other => other.to_string(),
        })
}

/// The crate's multi-line syntax error (pattern, caret line, `error: ...`) as one line:
/// `unclosed group at "(healthz"`.
fn one_line(s: &str, pattern: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let what = lines
        .iter()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(s)
        .to_string();
    // The caret line sits under the pattern, both indented by 4.
    let at = lines
        .iter()
        .find(|l| l.trim_start().starts_with('^') && l.trim().chars().all(|c| c == '^'))
        .and_then(|l| l.find('^'))
        .and_then(|col| col.checked_sub(4))
        .and_then(|col| pattern.char_indices().nth(col).map(|(i, _)| &pattern[i..]));
    match at {
        Some(rest) if !rest.is_empty() => format!("{what} at {rest:?}"),
        _ => what,
    }
}

const DIGIT: &str = "0-9";
const SPACE: &str = r"\t\n\x0C\r ";
const WORD: &str = "0-9A-Za-z_";

fn translate(p: &str) -> Result<String, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 16);
    let mut i = 0;
    // Inside `[...]`: the index where the class content started (to know if `]` is first).
    let mut class_start: Option<usize> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&e) = chars.get(i + 1) else {
                return Err("trailing backslash at end of expression".into());
            };
            match e {
                'Q' => {
                    // Literal text up to \E (or the end), escaped.
                    let mut j = i + 2;
                    let mut lit = String::new();
                    while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'E')) {
                        lit.push(chars[j]);
                        j += 1;
                    }
                    let escaped = regex::escape(&lit);
                    if class_start.is_some() {
                        // In a class each char stands for itself; escape them all.
                        for ch in lit.chars() {
                            push_class_literal(&mut out, ch);
                        }
                    } else {
                        out.push_str(&escaped);
                    }
                    i = if j < chars.len() { j + 2 } else { j };
                    continue;
                }
                'd' | 'D' | 's' | 'S' | 'w' | 'W' => {
                    let set = match e.to_ascii_lowercase() {
                        'd' => DIGIT,
                        's' => SPACE,
                        _ => WORD,
                    };
                    let negated = e.is_ascii_uppercase();
                    match (class_start.is_some(), negated) {
                        (true, false) => out.push_str(set),
                        _ => {
                            out.push('[');
                            if negated {
                                out.push('^');
                            }
                            out.push_str(set);
                            out.push(']');
                        }
                    }
                    i += 2;
                    continue;
                }
                'b' | 'B' if class_start.is_none() => {
                    out.push_str(if e == 'b' { r"(?-u:\b)" } else { r"(?-u:\B)" });
                    i += 2;
                    continue;
                }
                '1'..='9' => {
                    let next_octal = chars.get(i + 2).is_some_and(|d| ('0'..='7').contains(d));
                    if e > '7' || !next_octal {
                        return Err(format!(
                            "invalid escape sequence `\\{e}`: backreferences are not supported \
                             (RE2 syntax)"
                        ));
                    }
                    out.push('\\');
                    out.push(e);
                    i += 2;
                    continue;
                }
                'p' | 'P' | 'x' if chars.get(i + 2) == Some(&'{') => {
                    // `\p{Greek}`, `\x{263a}`: copy through the closing brace.
                    let mut j = i + 2;
                    while j < chars.len() && chars[j] != '}' {
                        j += 1;
                    }
                    let end = (j + 1).min(chars.len());
                    out.extend(&chars[i..end]);
                    i = end;
                    continue;
                }
                _ => {
                    out.push('\\');
                    out.push(e);
                    i += 2;
                    continue;
                }
            }
        }
        match class_start {
            None => {
                if c == '[' {
                    out.push('[');
                    i += 1;
                    if chars.get(i) == Some(&'^') {
                        out.push('^');
                        i += 1;
                    }
                    class_start = Some(i);
                    // A `]` first in a class is a literal in both Go and Rust.
                    if chars.get(i) == Some(&']') {
                        out.push_str(r"\]");
                        i += 1;
                    }
                    continue;
                }
                out.push(c);
                i += 1;
            }
            Some(_) => {
                match c {
                    ']' => {
                        out.push(']');
                        class_start = None;
                        i += 1;
                    }
                    '[' if chars.get(i + 1) == Some(&':') => {
                        // POSIX class `[:alpha:]`: same in both; copy through `:]`.
                        let mut j = i + 2;
                        while j + 1 < chars.len() && !(chars[j] == ':' && chars[j + 1] == ']') {
                            j += 1;
                        }
                        let end = (j + 2).min(chars.len());
                        out.extend(&chars[i..end]);
                        i = end;
                    }
                    '[' | '&' | '~' => {
                        push_class_literal(&mut out, c);
                        i += 1;
                    }
                    '-' if out.ends_with('-') => {
                        push_class_literal(&mut out, c);
                        i += 1;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(out)
}

fn push_class_literal(out: &mut String, c: char) {
    if c.is_ascii_punctuation() {
        out.push('\\');
    }
    out.push(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        compile(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .is_match(s)
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        // U+0663 ARABIC-INDIC DIGIT THREE is a Unicode digit but not a Go `\d`.
        assert!(m(r"^\d+$", "123"));
        assert!(!m(r"^\d+$", "\u{663}"));
        assert!(m(r"^\D$", "\u{663}"));
        assert!(!m(r"^\w+$", "é"));
        assert!(m(r"^\W$", "é"));
        assert!(!m(r"^\s$", "\u{a0}")); // no-break space is not a Go \s
        assert!(m(r"^\s$", "\x0c"));
        assert!(m(r"^[\d_]+$", "1_2"));
        assert!(!m(r"^[\d]+$", "\u{663}"));
        assert!(m(r"^[^\d]$", "x"));
        assert!(m(r"^[\D]$", "x"));
        // \b is an ASCII word boundary: between é and a letter there is none in Unicode terms,
        // but in Go é is not a word char, so "é" + "x" has a boundary before x.
        assert!(m(r"\bx", "éx"));
    }

    #[test]
    fn go_only_syntax() {
        assert!(m(r"^\Q.*+\E$", ".*+"));
        assert!(!m(r"^\Q.*\E$", "ab"));
        assert!(m(r"^[a[]$", "["));
        assert!(m(r"^[a&&b]$", "&"));
        assert!(m(r"^\101$", "A"));
        assert!(m(r"^[[:alpha:]]+$", "abc"));
        assert!(m(r"^[]a]$", "]"));
        assert!(m(r"^\p{Greek}$", "λ"));
        assert!(m(r"^\x{263a}$", "☺"));
    }

    #[test]
    fn unanchored_like_match_string() {
        assert!(m("ell", "hello"));
        assert!(!m("^ell", "hello"));
        assert!(m("(?i)HELLO", "hello"));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        assert!(compile("(").is_err());
        assert!(compile(r"(a)\1").unwrap_err().contains("backreference"));
        assert!(compile(r"a\").is_err());
        assert!(compile("[a-").is_err());
        assert!(compile("(?=x)").is_err()); // no lookaround in RE2
    }

    #[test]
    fn replacement_expands_like_go() {
        let re = compile(r"(?P<word>\w+)@(\w+)").unwrap();
        assert_eq!(re.replace_all("a@b c@d", "$2.$word"), "b.a d.c");
        assert_eq!(re.replace_all("a@b", "$$1"), "$1");
        assert_eq!(re.replace_all("a@b", "${2}x"), "bx");
        assert_eq!(re.replace_all("a@b", "$2x"), ""); // `$2x` names group "2x": empty
    }
}
