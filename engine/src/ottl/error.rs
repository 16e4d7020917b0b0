//! Errors in OTTL text, with the position they refer to, rendered the way a config error is
//! read: the statement, a caret under the offending part, and what is supported instead.

use std::fmt;

use super::ast::Pos;

/// A problem found in one statement or condition at config load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OttlError {
    pub message: String,
    pub pos: Pos,
    /// What would have been accepted (the supported functions, paths, ...).
    pub help: Option<String>,
}

impl OttlError {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        OttlError {
            message: message.into(),
            pos,
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The 1-based column (in characters) where the problem starts.
    pub fn column(&self, text: &str) -> usize {
        let start = self.pos.start.min(text.len());
        text.get(..start).map_or(start, |s| s.chars().count()) + 1
    }

    /// `column N: message`, then the statement with a caret line under the problem, then the
    /// help. Multi-line so that `sluice validate` shows where the problem is at a glance.
    pub fn render(&self, text: &str) -> String {
        let col = self.column(text);
        let shown: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
            .collect();
        let width = text
            .get(self.pos.start.min(text.len())..self.pos.end.min(text.len()))
            .map_or(1, |s| s.chars().count().max(1));
        let mut out = format!(
            "OTTL error at column {col}: {}\n      {shown}\n      {}{}",
            self.message,
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        if let Some(h) = &self.help {
            out.push_str("\n      ");
            out.push_str(h);
        }
        out
    }
}

impl fmt::Display for OttlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.pos.start)
    }
}

impl std::error::Error for OttlError {}

pub type Result<T> = std::result::Result<T, OttlError>;
