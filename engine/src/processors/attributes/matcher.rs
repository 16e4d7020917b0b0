//! `include` / `exclude` of the attributes processor (the Collector's `filterconfig.MatchConfig`
//! with `filterspan`, `filterlog` and `filtermetric` semantics), compiled to a boolean mask over
//! spans, log records or metrics.
//!
//! A span (log record, metric) is processed when it matches `include` (if set) and does not
//! match `exclude` (if set). Within one `include`/`exclude` every property that is set must
//! match: `services`, `span_names`, `span_kinds`, `log_bodies`, `log_severity_texts`,
//! `metric_names` match when any listed item matches; `attributes` and `resources` when every
//! listed key is present (and its value matches, if given); `libraries` when every listed
//! library matches the scope (this is what the Collector's code does, though its README says
//! "at least one"). `match_type: strict` compares whole strings; `regexp` is an unanchored Go
//! regexp match (as `regexp.MatchString`).
//!
//! Each property is evaluated where it lives, once per row of that table (resource, scope,
//! span), and string properties once per distinct dictionary value; the three masks are then
//! joined down through `parent_id` with two gathers.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{Int32Type, UInt32Type};
use hashbrown::HashSet;
use regex::Regex;
use serde::Deserialize;

use crate::component::ConfigError;
use crate::kernels::attributes::{self as k, AnyValues, KernelError, Scalar};
use crate::payload::Payload;
use crate::schema::{AnyValueType, Signal, Table, col};

use super::actions::scalar_from_config;

/// `include:` / `exclude:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchProperties {
    #[serde(default)]
    pub match_type: String,
    /// The Collector's regexp result cache; sluice evaluates string properties once per
    /// distinct value in a batch, which is that cache's purpose, so the settings are accepted
    /// and have nothing to tune.
    #[serde(default)]
    pub regexp: Option<RegexpConfig>,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub span_names: Vec<String>,
    #[serde(default)]
    pub span_kinds: Vec<String>,
    #[serde(default)]
    pub log_bodies: Vec<String>,
    #[serde(default)]
    pub log_severity_texts: Vec<String>,
    #[serde(default)]
    pub log_severity_number: Option<SeverityNumberConfig>,
    #[serde(default)]
    pub metric_names: Vec<String>,
    #[serde(default)]
    pub attributes: Vec<AttributeConfig>,
    #[serde(default)]
    pub resources: Vec<AttributeConfig>,
    #[serde(default)]
    pub libraries: Vec<LibraryConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexpConfig {
    #[serde(default)]
    pub cacheenabled: bool,
    #[serde(default)]
    pub cachemaxnumentries: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeConfig {
    pub key: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    #[serde(default)]
    pub name: String,
    /// Unset: any version; set (even to ""): exactly that version.
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityNumberConfig {
    /// A severity number (9) or name (`INFO`, `warn2`).
    #[serde(default)]
    pub min: Option<serde_json::Value>,
    #[serde(default)]
    pub match_undefined: bool,
}

/// Strict: the string equals an item. Regexp: an item matches somewhere in the string.
#[derive(Debug)]
enum FilterSet {
    Strict(HashSet<String>),
    Regexp(Vec<Regex>),
}

impl FilterSet {
    fn matches(&self, s: &str) -> bool {
        match self {
            FilterSet::Strict(set) => set.contains(s),
            FilterSet::Regexp(res) => res.iter().any(|r| r.is_match(s)),
        }
    }
}

#[derive(Debug)]
enum ValueMatch {
    /// Key present, any value.
    Any,
    /// Same type and value.
    Strict(Scalar),
    /// The value's string form (strings, bools, ints, doubles only) matches.
    Regexp(Regex),
}

#[derive(Debug)]
struct AttributeMatcher {
    key: String,
    value: ValueMatch,
}

/// One compiled `include` or `exclude`.
#[derive(Debug)]
struct Properties {
    services: Option<FilterSet>,
    span_names: Option<FilterSet>,
    span_kinds: Option<FilterSet>,
    log_bodies: Option<FilterSet>,
    log_severity_texts: Option<FilterSet>,
    log_severity_number: Option<(i32, bool)>,
    metric_names: Option<FilterSet>,
    attributes: Vec<AttributeMatcher>,
    resources: Vec<AttributeMatcher>,
    libraries: Vec<(FilterSet, Option<FilterSet>)>,
    /// Which fields are set, for the per-signal validation at build time.
    config: MatchProperties,
}

/// `include` and `exclude`, compiled.
#[derive(Debug, Default)]
pub struct Matcher {
    include: Option<Properties>,
    exclude: Option<Properties>,
}

const SPAN_KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

impl Matcher {
    /// Compiles `include` and `exclude` (regexes, values, match type). Which properties a
    /// signal accepts is checked by [`Matcher::validate_for`] when a pipeline is built.
    pub fn compile(
        include: Option<&MatchProperties>,
        exclude: Option<&MatchProperties>,
    ) -> Result<Matcher, ConfigError> {
        let one = |mp: Option<&MatchProperties>, field: &str| {
            mp.map(|mp| Properties::compile(mp).map_err(|e| e.within(field)))
                .transpose()
        };
        Ok(Matcher {
            include: one(include, "include")?,
            exclude: one(exclude, "exclude")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// The Collector's `ValidateForSpans` / `ValidateForLogs` /
    /// `CreateMetricMatchPropertiesFromDefault`: which properties make sense for `signal`.
    pub fn validate_for(&self, signal: Signal) -> Result<(), ConfigError> {
        for (field, p) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Some(p) = p {
                validate(&p.config, signal).map_err(|e| e.within(field))?;
            }
        }
        Ok(())
    }

    /// The rows of `owner` (Spans, Logs or Metrics) to process, or `None` for all of them.
    pub fn mask(&self, p: &Payload, owner: Table) -> Result<Option<BooleanArray>, KernelError> {
        if self.is_empty() {
            return Ok(None);
        }
        let n = p.table(owner).num_rows();
        let mut process = BooleanBuffer::new_set(n);
        if let Some(inc) = &self.include {
            process = &process & &inc.matches(p, owner)?;
        }
        if let Some(exc) = &self.exclude {
            process = &process & &!&exc.matches(p, owner)?;
        }
        Ok(Some(BooleanArray::new(process, None)))
    }
}

fn filter_set(items: &[String], regexp: bool, field: &str) -> Result<FilterSet, ConfigError> {
    if regexp {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Regex::new(s).map_err(|e| {
                    ConfigError::new(
                        format!("{field}[{i}]"),
                        format!("invalid regexp {s:?}: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(FilterSet::Regexp)
    } else {
        Ok(FilterSet::Strict(items.iter().cloned().collect()))
    }
}

fn optional_set(
    items: &[String],
    regexp: bool,
    field: &str,
) -> Result<Option<FilterSet>, ConfigError> {
    (!items.is_empty())
        .then(|| filter_set(items, regexp, field))
        .transpose()
}

fn attribute_matchers(
    items: &[AttributeConfig],
    regexp: bool,
    field: &str,
) -> Result<Vec<AttributeMatcher>, ConfigError> {
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at = |sub: &str, msg: String| ConfigError::new(format!("{field}[{i}].{sub}"), msg);
            if a.key.is_empty() {
                return Err(at("key", "can't have empty key in the list of attributes".into()));
            }
            let value = match &a.value {
                None => ValueMatch::Any,
                Some(v) => {
                    let s = scalar_from_config(v).map_err(|m| at("value", m))?;
                    match (regexp, s) {
                        (true, Scalar::Str(re)) => ValueMatch::Regexp(
                            Regex::new(&re)
                                .map_err(|e| at("value", format!("invalid regexp {re:?}: {e}")))?,
                        ),
                        (true, other) => {
                            return Err(at(
                                "value",
                                format!("match_type=regexp for {:?} only supports strings, but found {other:?}", a.key),
                            ));
                        }
                        (false, s) => ValueMatch::Strict(s),
                    }
                }
            };
            Ok(AttributeMatcher {
                key: a.key.clone(),
                value,
            })
        })
        .collect()
}

fn parse_severity(v: &serde_json::Value) -> Result<i32, String> {
    const NAMES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .filter(|i| (0..=24).contains(i))
            .ok_or_else(|| format!("{n} is not a severity number (0..=24)")),
        serde_json::Value::String(s) => {
            let upper = s.to_ascii_uppercase();
            let (name, level) = match upper.char_indices().find(|(_, c)| c.is_ascii_digit()) {
                Some((at, _)) => (&upper[..at], upper[at..].parse::<i32>().unwrap_or(0)),
                None => (upper.as_str(), 1),
            };
            NAMES
                .iter()
                .position(|n| *n == name)
                .filter(|_| (1..=4).contains(&level))
                .map(|i| i as i32 * 4 + level)
                .ok_or_else(|| format!("{s:?} is not a severity (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, optionally followed by 2, 3 or 4)"))
        }
        other => Err(format!("{other} is not a severity")),
    }
}

impl Properties {
    fn compile(mp: &MatchProperties) -> Result<Properties, ConfigError> {
        let regexp = match mp.match_type.as_str() {
            "strict" => false,
            "regexp" => true,
            other => {
                return Err(ConfigError::new(
                    "match_type",
                    format!("unrecognized match_type: {other:?}, valid types are: [regexp strict]"),
                ));
            }
        };
        if !regexp && mp.regexp.is_some() {
            return Err(ConfigError::new(
                "regexp",
                "the regexp section applies only to match_type: regexp",
            ));
        }
        let log_severity_number = mp
            .log_severity_number
            .as_ref()
            .map(|s| {
                let min = match &s.min {
                    Some(v) => parse_severity(v)
                        .map_err(|m| ConfigError::new("log_severity_number.min", m))?,
                    None => 0,
                };
                Ok::<_, ConfigError>((min, s.match_undefined))
            })
            .transpose()?;
        let libraries = mp
            .libraries
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let field = format!("libraries[{i}]");
                Ok((
                    filter_set(
                        std::slice::from_ref(&l.name),
                        regexp,
                        &format!("{field}.name"),
                    )?,
                    l.version
                        .as_ref()
                        .map(|v| {
                            filter_set(std::slice::from_ref(v), regexp, &format!("{field}.version"))
                        })
                        .transpose()?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Properties {
            services: optional_set(&mp.services, regexp, "services")?,
            span_names: optional_set(&mp.span_names, regexp, "span_names")?,
            span_kinds: optional_set(&mp.span_kinds, regexp, "span_kinds")?,
            log_bodies: optional_set(&mp.log_bodies, regexp, "log_bodies")?,
            log_severity_texts: optional_set(&mp.log_severity_texts, regexp, "log_severity_texts")?,
            log_severity_number,
            metric_names: optional_set(&mp.metric_names, regexp, "metric_names")?,
            attributes: attribute_matchers(&mp.attributes, regexp, "attributes")?,
            resources: attribute_matchers(&mp.resources, regexp, "resources")?,
            libraries,
            config: mp.clone(),
        })
    }

    /// Which rows of `owner` (Spans, Logs, Metrics) these properties match.
    fn matches(&self, p: &Payload, owner: Table) -> Result<BooleanBuffer, KernelError> {
        let resources = p.table(Table::Resources).num_rows();
        let scopes = p.table(Table::Scopes);
        let items = p.table(owner);
        // Resource level: services, resources.
        let mut res = BooleanBuffer::new_set(resources);
        let res_attrs = p.table(Table::ResourceAttrs);
        if let Some(fs) = &self.services {
            let names = k::as_strings(&k::lookup(res_attrs, resources, "service.name")?);
            res = &res
                & &BooleanBuffer::collect_bool(resources, |r| {
                    fs.matches(if names.is_valid(r) {
                        names.value(r)
                    } else {
                        "<nil-service-name>"
                    })
                });
        }
        for m in &self.resources {
            res = &res & &attribute_mask(res_attrs, resources, m)?;
        }
        // Scope level: libraries.
        let mut scope = BooleanBuffer::new_set(scopes.num_rows());
        for (name, version) in &self.libraries {
            scope = &scope & &dict_mask(column(scopes, col::NAME), name);
            if let Some(v) = version {
                scope = &scope & &dict_mask(column(scopes, col::VERSION), v);
            }
        }
        // Item level.
        let n = items.num_rows();
        let mut item = BooleanBuffer::new_set(n);
        // Each property is read only from the table that has it; `validate_for` has refused
        // properties of another signal.
        let (spans, logs) = (owner == Table::Spans, owner == Table::Logs);
        let names = match owner {
            Table::Metrics => &self.metric_names,
            Table::Spans => &self.span_names,
            _ => &None,
        };
        if let Some(fs) = names {
            item = &item & &dict_mask(column(items, col::NAME), fs);
        }
        if let Some(fs) = self.span_kinds.as_ref().filter(|_| spans) {
            let kinds = column(items, col::KIND).as_primitive::<Int32Type>();
            let hit: Vec<bool> = SPAN_KINDS.iter().map(|s| fs.matches(s)).collect();
            let other = fs.matches("");
            item = &item
                & &BooleanBuffer::collect_bool(n, |i| {
                    usize::try_from(kinds.value(i))
                        .ok()
                        .and_then(|k| hit.get(k).copied())
                        .unwrap_or(other)
                });
        }
        if let Some(fs) = self.log_bodies.as_ref().filter(|_| logs) {
            let cols: Vec<ArrayRef> = ["type", "str", "int", "double", "bool", "bytes"]
                .iter()
                .map(|c| column(items, &format!("body_{c}")).clone())
                .collect();
            let bodies = k::as_strings(&AnyValues::from_columns(&cols));
            item = &item
                & &BooleanBuffer::collect_bool(n, |i| {
                    fs.matches(if bodies.is_valid(i) {
                        bodies.value(i)
                    } else {
                        ""
                    })
                });
        }
        if let Some(fs) = self.log_severity_texts.as_ref().filter(|_| logs) {
            item = &item & &dict_mask(column(items, col::SEVERITY_TEXT), fs);
        }
        if let Some((min, undefined)) = self.log_severity_number.filter(|_| logs) {
            let sev: &Int32Array = column(items, col::SEVERITY_NUMBER).as_primitive();
            item = &item
                & &BooleanBuffer::collect_bool(n, |i| match sev.value(i) {
                    0 => undefined,
                    s => s >= min,
                });
        }
        if !self.attributes.is_empty() && (spans || logs) {
            let attrs = p.table(attrs_of(owner));
            for m in &self.attributes {
                item = &item & &attribute_mask(attrs, n, m)?;
            }
        }
        // Join: item -> scope -> resource.
        let scope_of = p.parent_ids(owner).values();
        let res_of = p.parent_ids(Table::Scopes).values();
        Ok(BooleanBuffer::collect_bool(n, |i| {
            let s = scope_of[i] as usize;
            item.value(i) && scope.value(s) && res.value(res_of[s] as usize)
        }))
    }
}

fn attrs_of(owner: Table) -> Table {
    if owner == Table::Spans {
        Table::SpanAttrs
    } else {
        Table::LogAttrs
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("schema has column {name}"))
}

/// A filter set over a dictionary-encoded string column: evaluated once per dictionary value,
/// then gathered by key.
fn dict_mask(column: &ArrayRef, fs: &FilterSet) -> BooleanBuffer {
    let dict = column.as_dictionary::<UInt32Type>();
    let values = dict.values().as_string::<i32>();
    let hit: Vec<bool> = (0..values.len())
        .map(|i| values.is_valid(i) && fs.matches(values.value(i)))
        .collect();
    let keys = dict.keys();
    BooleanBuffer::collect_bool(keys.len(), |i| {
        keys.is_valid(i) && hit.get(keys.value(i) as usize).copied().unwrap_or(false)
    })
}

/// Parents (`n` rows) whose attributes satisfy one attribute matcher.
fn attribute_mask(
    attrs: &RecordBatch,
    n: usize,
    m: &AttributeMatcher,
) -> Result<BooleanBuffer, KernelError> {
    let v = k::lookup(attrs, n, &m.key)?;
    Ok(match &m.value {
        ValueMatch::Any => BooleanBuffer::collect_bool(n, |i| v.is_present(i)),
        ValueMatch::Strict(s) => BooleanBuffer::collect_bool(n, |i| match (v.value_type(i), s) {
            (Some(AnyValueType::Str), Scalar::Str(x)) => v.str.value(i) == x,
            (Some(AnyValueType::Int), Scalar::Int(x)) => v.int.value(i) == *x,
            (Some(AnyValueType::Double), Scalar::Double(x)) => v.double.value(i) == *x,
            (Some(AnyValueType::Bool), Scalar::Bool(x)) => v.bool.value(i) == *x,
            (Some(AnyValueType::Bytes), Scalar::Bytes(x)) => v.bytes.value(i) == x.as_slice(),
            _ => false,
        }),
        // Per row by nature: a regex over each value's string form.
        ValueMatch::Regexp(re) => {
            let mut buf = String::new();
            BooleanBuffer::collect_bool(n, |i| {
                use std::fmt::Write as _;
                buf.clear();
                let s: &str = match v.value_type(i) {
                    Some(AnyValueType::Str) => v.str.value(i),
                    Some(AnyValueType::Bool) => {
                        if v.bool.value(i) {
                            "true"
                        } else {
                            "false"
                        }
                    }
                    Some(AnyValueType::Int) => {
                        let _ = write!(buf, "{}", v.int.value(i));
                        &buf
                    }
                    // strconv.FormatFloat(f, 'f', -1, 64)
                    Some(AnyValueType::Double) => {
                        let d = v.double.value(i);
                        if d.is_infinite() {
                            buf.push_str(if d > 0.0 { "+Inf" } else { "-Inf" });
                        } else {
                            let _ = write!(buf, "{d}");
                        }
                        &buf
                    }
                    _ => return false,
                };
                re.is_match(s)
            })
        }
    })
}

fn validate(mp: &MatchProperties, signal: Signal) -> Result<(), ConfigError> {
    let set = |name: &'static str, present: bool| present.then_some(name);
    let spans_only = [
        set("services", !mp.services.is_empty()),
        set("span_names", !mp.span_names.is_empty()),
        set("span_kinds", !mp.span_kinds.is_empty()),
    ];
    let logs_only = [
        set("log_bodies", !mp.log_bodies.is_empty()),
        set("log_severity_texts", !mp.log_severity_texts.is_empty()),
        set("log_severity_number", mp.log_severity_number.is_some()),
    ];
    let metrics_only = [set("metric_names", !mp.metric_names.is_empty())];
    let shared = [
        set("attributes", !mp.attributes.is_empty()),
        set("libraries", !mp.libraries.is_empty()),
    ];
    let resources = set("resources", !mp.resources.is_empty());
    let invalid = |field: &str, what: &str| {
        ConfigError::new(
            field,
            format!("is not valid for {what} (signal {})", signal.as_str()),
        )
    };
    let (own, foreign, what, required): (Vec<_>, Vec<_>, _, &str) = match signal {
        Signal::Traces => (
            spans_only.iter().chain(&shared).flatten().collect(),
            logs_only.iter().chain(&metrics_only).flatten().collect(),
            "spans",
            "at least one of \"services\", \"span_names\", \"span_kinds\", \"attributes\", \"libraries\" or \"resources\" must be specified",
        ),
        Signal::Logs => (
            logs_only.iter().chain(&shared).flatten().collect(),
            spans_only.iter().chain(&metrics_only).flatten().collect(),
            "log records",
            "at least one of \"attributes\", \"libraries\", \"resources\", \"log_bodies\", \"log_severity_texts\" or \"log_severity_number\" must be specified",
        ),
        Signal::Metrics => (
            metrics_only.iter().flatten().collect(),
            spans_only
                .iter()
                .chain(&logs_only)
                .chain(&shared)
                .flatten()
                .collect(),
            "metrics",
            "at least one of \"metric_names\" or \"resources\" must be specified",
        ),
    };
    if let Some(field) = foreign.first() {
        return Err(invalid(field, what));
    }
    if own.is_empty() && resources.is_none() {
        return Err(ConfigError::new("", required));
    }
    if signal == Signal::Traces && mp.match_type == "strict" {
        for (i, kind) in mp.span_kinds.iter().enumerate() {
            if !SPAN_KINDS[1..].contains(&kind.as_str()) {
                return Err(ConfigError::new(
                    format!("span_kinds[{i}]"),
                    format!(
                        "{kind:?} must be one of the standard span kinds when match_type=strict: {:?}",
                        &SPAN_KINDS[1..]
                    ),
                ));
            }
        }
    }
    Ok(())
}
