//! OTTL contexts (what a statement runs over) and the paths each one offers, mapped onto the
//! sluice tables and columns.

use crate::schema::{Signal, Table};

/// An OTTL context: the kind of item a statement or condition runs once per.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    Resource,
    Scope,
    Span,
    SpanEvent,
    Metric,
    DataPoint,
    Log,
}

impl Context {
    pub const ALL: [Context; 7] = [
        Context::Resource,
        Context::Scope,
        Context::Span,
        Context::SpanEvent,
        Context::Metric,
        Context::DataPoint,
        Context::Log,
    ];

    /// The name used in config (`context: span`) and as a path prefix (`span.name`).
    pub fn name(self) -> &'static str {
        match self {
            Context::Resource => "resource",
            Context::Scope => "scope",
            Context::Span => "span",
            Context::SpanEvent => "spanevent",
            Context::Metric => "metric",
            Context::DataPoint => "datapoint",
            Context::Log => "log",
        }
    }

    pub fn parse(s: &str) -> Option<Context> {
        Context::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The context one level up (a span's scope, a data point's metric).
    pub fn parent(self) -> Option<Context> {
        match self {
            Context::Resource => None,
            Context::Scope => Some(Context::Resource),
            Context::Span | Context::Metric | Context::Log => Some(Context::Scope),
            Context::SpanEvent => Some(Context::Span),
            Context::DataPoint => Some(Context::Metric),
        }
    }

    pub fn depth(self) -> usize {
        self.parent().map_or(0, |p| p.depth() + 1)
    }

    /// Whether every item of `self` has exactly one `other` (`other` is `self` or above it).
    pub fn within(self, other: Context) -> bool {
        let mut c = Some(self);
        while let Some(x) = c {
            if x == other {
                return true;
            }
            c = x.parent();
        }
        false
    }

    /// The contexts a signal's statements may use, top down.
    pub fn of_signal(signal: Signal) -> &'static [Context] {
        match signal {
            Signal::Traces => &[
                Context::Resource,
                Context::Scope,
                Context::Span,
                Context::SpanEvent,
            ],
            Signal::Metrics => &[
                Context::Resource,
                Context::Scope,
                Context::Metric,
                Context::DataPoint,
            ],
            Signal::Logs => &[Context::Resource, Context::Scope, Context::Log],
        }
    }

    /// The tables whose rows are the items of this context (data points live in four).
    pub fn tables(self) -> &'static [Table] {
        match self {
            Context::Resource => &[Table::Resources],
            Context::Scope => &[Table::Scopes],
            Context::Span => &[Table::Spans],
            Context::SpanEvent => &[Table::SpanEvents],
            Context::Metric => &[Table::Metrics],
            Context::DataPoint => &[
                Table::NumberPoints,
                Table::HistogramPoints,
                Table::ExpHistogramPoints,
                Table::SummaryPoints,
            ],
            Context::Log => &[Table::Logs],
        }
    }

    /// The context whose items are the rows of `t`.
    pub fn of_table(t: Table) -> Option<Context> {
        Context::ALL.into_iter().find(|c| c.tables().contains(&t))
    }
}

/// The attribute table of the items in table `t`.
pub fn attrs_table(t: Table) -> Option<Table> {
    use Table::*;
    Some(match t {
        Resources => ResourceAttrs,
        Scopes => ScopeAttrs,
        Spans => SpanAttrs,
        SpanEvents => SpanEventAttrs,
        NumberPoints => NumberPointAttrs,
        HistogramPoints => HistogramPointAttrs,
        ExpHistogramPoints => ExpHistogramPointAttrs,
        SummaryPoints => SummaryPointAttrs,
        Logs => LogAttrs,
        _ => return None,
    })
}

/// The static type of a value, as far as it is known at config load. `Any` is an attribute
/// value (or log body): its type is known per row only.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    Nil,
    Str,
    Int,
    Double,
    Bool,
    Bytes,
    SpanId,
    TraceId,
    List,
    /// A whole attribute map (only the target of map editors).
    Map,
    Any,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Nil => "nil",
            Ty::Str => "string",
            Ty::Int => "int",
            Ty::Double => "double",
            Ty::Bool => "bool",
            Ty::Bytes => "bytes",
            Ty::SpanId => "span id",
            Ty::TraceId => "trace id",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Any => "any value",
        }
    }
}

/// A fixed field of an item (anything but attributes).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Name,
    Version,
    Kind,
    StatusCode,
    StatusMessage,
    TraceId,
    SpanId,
    ParentSpanId,
    TraceIdString,
    SpanIdString,
    ParentSpanIdString,
    TraceState,
    StartTime,
    EndTime,
    Time,
    ObservedTime,
    DroppedAttributesCount,
    DroppedEventsCount,
    DroppedLinksCount,
    Flags,
    Description,
    Unit,
    MetricType,
    AggregationTemporality,
    IsMonotonic,
    ValueInt,
    ValueDouble,
    Count,
    Sum,
    Body,
    SeverityNumber,
    SeverityText,
    EventName,
}

/// What a path names within its context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `attributes`: the whole map.
    Attributes,
    /// `attributes["key"]`.
    Attribute(String),
    Column(Column),
}

/// A resolved path: the context that owns the field and the field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathRef {
    pub level: Context,
    pub field: Field,
}

impl PathRef {
    /// How the path reads in an error message: `resource.attributes["k"]`.
    pub fn describe(&self) -> String {
        let field = match &self.field {
            Field::Attributes => "attributes".to_string(),
            Field::Attribute(k) => format!("attributes[{k:?}]"),
            Field::Column(c) => field_name(self.level, *c).unwrap_or("?").to_string(),
        };
        format!("{}.{field}", self.level.name())
    }
}

/// One field of a context: its path name, type, and whether `set` may write it.
struct FieldDef {
    name: &'static str,
    column: Column,
    ty: Ty,
    settable: bool,
}

const fn f(name: &'static str, column: Column, ty: Ty, settable: bool) -> FieldDef {
    FieldDef {
        name,
        column,
        ty,
        settable,
    }
}

const RESOURCE_FIELDS: &[FieldDef] = {
    use Column::*;
    &[f(
        "dropped_attributes_count",
        DroppedAttributesCount,
        Ty::Int,
        false,
    )]
};

const SCOPE_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("name", Name, Ty::Str, true),
        f("version", Version, Ty::Str, true),
        f(
            "dropped_attributes_count",
            DroppedAttributesCount,
            Ty::Int,
            false,
        ),
    ]
};

const SPAN_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("name", Name, Ty::Str, true),
        f("kind", Kind, Ty::Int, true),
        f("status.code", StatusCode, Ty::Int, true),
        f("status.message", StatusMessage, Ty::Str, true),
        f("trace_id", TraceId, Ty::TraceId, false),
        f("span_id", SpanId, Ty::SpanId, false),
        f("parent_span_id", ParentSpanId, Ty::SpanId, false),
        f("trace_id.string", TraceIdString, Ty::Str, false),
        f("span_id.string", SpanIdString, Ty::Str, false),
        f("parent_span_id.string", ParentSpanIdString, Ty::Str, false),
        f("trace_state", TraceState, Ty::Str, false),
        f("start_time_unix_nano", StartTime, Ty::Int, false),
        f("end_time_unix_nano", EndTime, Ty::Int, false),
        f(
            "dropped_attributes_count",
            DroppedAttributesCount,
            Ty::Int,
            false,
        ),
        f("dropped_events_count", DroppedEventsCount, Ty::Int, false),
        f("dropped_links_count", DroppedLinksCount, Ty::Int, false),
        f("flags", Flags, Ty::Int, false),
    ]
};

const SPANEVENT_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("name", Name, Ty::Str, true),
        f("time_unix_nano", Time, Ty::Int, false),
        f(
            "dropped_attributes_count",
            DroppedAttributesCount,
            Ty::Int,
            false,
        ),
    ]
};

const METRIC_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("name", Name, Ty::Str, true),
        f("description", Description, Ty::Str, true),
        f("unit", Unit, Ty::Str, true),
        f("type", MetricType, Ty::Int, false),
        f(
            "aggregation_temporality",
            AggregationTemporality,
            Ty::Int,
            false,
        ),
        f("is_monotonic", IsMonotonic, Ty::Bool, false),
    ]
};

const DATAPOINT_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("start_time_unix_nano", StartTime, Ty::Int, false),
        f("time_unix_nano", Time, Ty::Int, false),
        f("value_int", ValueInt, Ty::Int, false),
        f("value_double", ValueDouble, Ty::Double, false),
        f("count", Count, Ty::Int, false),
        f("sum", Sum, Ty::Double, false),
        f("flags", Flags, Ty::Int, false),
    ]
};

const LOG_FIELDS: &[FieldDef] = {
    use Column::*;
    &[
        f("body", Body, Ty::Any, true),
        f("severity_number", SeverityNumber, Ty::Int, true),
        f("severity_text", SeverityText, Ty::Str, true),
        f("time_unix_nano", Time, Ty::Int, false),
        f("observed_time_unix_nano", ObservedTime, Ty::Int, false),
        f("trace_id", TraceId, Ty::TraceId, false),
        f("span_id", SpanId, Ty::SpanId, false),
        f("trace_id.string", TraceIdString, Ty::Str, false),
        f("span_id.string", SpanIdString, Ty::Str, false),
        f("flags", Flags, Ty::Int, false),
        f("event_name", EventName, Ty::Str, false),
        f(
            "dropped_attributes_count",
            DroppedAttributesCount,
            Ty::Int,
            false,
        ),
    ]
};

fn fields(level: Context) -> &'static [FieldDef] {
    match level {
        Context::Resource => RESOURCE_FIELDS,
        Context::Scope => SCOPE_FIELDS,
        Context::Span => SPAN_FIELDS,
        Context::SpanEvent => SPANEVENT_FIELDS,
        Context::Metric => METRIC_FIELDS,
        Context::DataPoint => DATAPOINT_FIELDS,
        Context::Log => LOG_FIELDS,
    }
}

/// Every context except metric has `attributes`.
pub fn has_attributes(level: Context) -> bool {
    level != Context::Metric
}

pub fn field_name(level: Context, c: Column) -> Option<&'static str> {
    fields(level).iter().find(|d| d.column == c).map(|d| d.name)
}

/// The column named `name` (`status.code`) in `level`.
pub fn lookup_field(level: Context, name: &str) -> Option<(Column, Ty, bool)> {
    fields(level)
        .iter()
        .find(|d| d.name == name)
        .map(|d| (d.column, d.ty, d.settable))
}

/// The field names of `level`, for "supported paths" help.
pub fn field_names(level: Context) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    if has_attributes(level) {
        v.push("attributes");
        v.push("attributes[\"key\"]");
    }
    v.extend(fields(level).iter().map(|d| d.name));
    v
}

/// The static type of a resolved path.
pub fn path_type(p: &PathRef) -> Ty {
    match &p.field {
        Field::Attributes => Ty::Map,
        Field::Attribute(_) => Ty::Any,
        Field::Column(c) => fields(p.level)
            .iter()
            .find(|d| d.column == *c)
            .map_or(Ty::Any, |d| d.ty),
    }
}

pub fn settable(p: &PathRef) -> bool {
    match &p.field {
        Field::Attributes => false,
        Field::Attribute(_) => true,
        Field::Column(c) => fields(p.level).iter().any(|d| d.column == *c && d.settable),
    }
}

/// The enums every context understands (the Collector's span, log and metric enums).
pub fn enum_value(name: &str) -> Option<i64> {
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        "METRIC_DATA_TYPE_NONE" => 0,
        "METRIC_DATA_TYPE_GAUGE" => 1,
        "METRIC_DATA_TYPE_SUM" => 2,
        "METRIC_DATA_TYPE_HISTOGRAM" => 3,
        "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM" => 4,
        "METRIC_DATA_TYPE_SUMMARY" => 5,
        "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
        "AGGREGATION_TEMPORALITY_DELTA" => 1,
        "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
        "SEVERITY_NUMBER_UNSPECIFIED" => 0,
        _ => return severity(name),
    })
}

fn severity(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
    let (level, n) = match rest.char_indices().find(|(_, c)| c.is_ascii_digit()) {
        Some((i, _)) => (&rest[..i], rest[i..].parse::<i64>().ok()?),
        None => (rest, 1),
    };
    if !(1..=4).contains(&n) || (n == 1 && rest.len() != level.len()) {
        return None;
    }
    let base = match level {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    };
    Some(base + n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_follow_the_proto_numbering() {
        assert_eq!(enum_value("SPAN_KIND_CLIENT"), Some(3));
        assert_eq!(enum_value("STATUS_CODE_ERROR"), Some(2));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO"), Some(9));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN4"), Some(16));
        assert_eq!(enum_value("SEVERITY_NUMBER_FATAL"), Some(21));
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO1"), None);
        assert_eq!(enum_value("SEVERITY_NUMBER_INFO5"), None);
        assert_eq!(enum_value("METRIC_DATA_TYPE_SUMMARY"), Some(5));
        assert_eq!(enum_value("SPAN_KIND_BOGUS"), None);
    }

    #[test]
    fn ancestry() {
        assert!(Context::SpanEvent.within(Context::Resource));
        assert!(Context::DataPoint.within(Context::Metric));
        assert!(!Context::Span.within(Context::SpanEvent));
        assert!(!Context::Log.within(Context::Span));
        assert_eq!(Context::DataPoint.depth(), 3);
        for c in Context::ALL {
            for &t in c.tables() {
                assert_eq!(Context::of_table(t), Some(c));
            }
        }
    }
}
