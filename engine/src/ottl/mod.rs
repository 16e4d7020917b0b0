//! OTTL, the OpenTelemetry Transformation Language, compiled to column kernels.
//!
//! The Collector interprets OTTL statements item by item. sluice parses and checks them once,
//! at config load ([`check`]), and runs each one over all items of a batch at once ([`eval`],
//! [`exec`]): a condition is a boolean mask over the rows of the context's table, `where`
//! clauses are masks, `delete_key` / `delete_matching_keys` / `keep_keys` / `limit` remove
//! rows of an attribute table, `set` writes a computed column.
//!
//! # The subset
//!
//! - Contexts `resource`, `scope`, `span`, `spanevent`, `metric`, `datapoint`, `log`, with
//!   their paths ([`context`]): `name`, `kind`, `status.code`, `status.message`, `trace_id`,
//!   `span_id`, `parent_span_id` (and `.string`), start/end times, `attributes`,
//!   `attributes["k"]`, `resource.attributes["k"]`, `instrumentation_scope.name`/`.version`
//!   (and `scope.*`), metric `name`/`description`/`unit`/`type`, data point values and times,
//!   log `body`, `severity_number`, `severity_text`, ... Paths may carry their context prefix
//!   (`span.name`); without `context:` they must, and the context is inferred from them.
//! - Literals (strings with Go escapes, ints, floats, bools, `nil`, `0x` bytes), enums
//!   (`SPAN_KIND_*`, `STATUS_CODE_*`, `SEVERITY_NUMBER_*`, `METRIC_DATA_TYPE_*`,
//!   `AGGREGATION_TEMPORALITY_*`), lists as function arguments.
//! - `==`, `!=`, `<`, `<=`, `>`, `>=` with the Collector's comparison rules (nil equals only
//!   nil; values of different types are only "not equal"; ints and doubles compare as
//!   numbers); `and`, `or`, `not`, parentheses.
//! - Converters: `IsMatch`, `IsString`, `IsInt`, `IsRootSpan`, `Concat`, `Split` (and
//!   `Split(...)[i]`), `Substring`, `ConvertCase`, `Int`, `String`, `SpanID`, `TraceID`.
//! - Editors: `set`, `delete_key`, `delete_matching_keys`, `keep_keys`, `limit`,
//!   `truncate_all`, `replace_pattern`, `replace_all_patterns`, with `where` clauses.
//! - Regular expressions are Go RE2 ([`regex`]).
//!
//! Anything else (math, maps, other functions, `cache`, nested indexing, ...) is refused at
//! config load with the statement, the column and what is supported.

pub mod ast;
pub mod check;
pub mod context;
pub mod error;
pub mod eval;
pub mod exec;
#[cfg(any(test, feature = "testing"))]
pub mod interp;
pub mod parser;
pub mod regex;

pub use check::{
    Condition, GroupEntry, Statement, TextError, compile_condition, compile_group,
    compile_group_all, compile_statement,
};
pub use context::Context;
pub use exec::{ErrorMode, RunError, RunReport, StatementGroup, any_matches};

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
