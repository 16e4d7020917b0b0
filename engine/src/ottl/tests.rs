//! The OTTL suite: table-driven cases (statement or condition, input spans, expected output)
//! for every operator, converter and editor of the subset, nil handling, type mismatches and
//! regex edge cases, checked against the Collector's documented semantics (pkg/ottl
//! LANGUAGE.md "Comparison Rules", ottlfuncs README). Every case also runs through the
//! per-span reference interpreter (`interp`), which must agree with the column engine.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value as P,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

use super::check::compile_group;
use super::eval::Lookups;
use super::exec::reads;
use super::*;
use crate::otlp::encode_to_vec;
use crate::otlp::testing::reference_traces;
use crate::schema::{Signal, Table};

// ------------------------------------------------------------------------------ fixtures

fn av(v: P) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}
fn kv(k: &str, v: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v,
        ..Default::default()
    }
}
fn s(k: &str, v: &str) -> KeyValue {
    kv(k, av(P::StringValue(v.into())))
}
fn i(k: &str, v: i64) -> KeyValue {
    kv(k, av(P::IntValue(v)))
}
fn d(k: &str, v: f64) -> KeyValue {
    kv(k, av(P::DoubleValue(v)))
}
fn b(k: &str, v: bool) -> KeyValue {
    kv(k, av(P::BoolValue(v)))
}
/// A key whose `AnyValue` has no value set: nil in OTTL.
fn empty(k: &str) -> KeyValue {
    kv(k, Some(AnyValue { value: None }))
}

fn span(n: u8, name: &str, kind: i32, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![0, 0, 0, 0, 0, 0, 0, n],
        name: name.into(),
        kind,
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", "svc"), s("host.name", "h1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "scope-a".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A: a probe (server; int, double, bool, empty and bytes attributes).
/// B: a database client span with the same keys but other types, status ERROR.
/// C: a child span without attributes.
fn abc() -> ExportTraceServiceRequest {
    let mut b_span = span(
        2,
        "SELECT",
        3,
        vec![
            s("db.system", "postgresql"),
            s("http.status_code", "200"),
            i("ratio", 2),
        ],
    );
    b_span.status = Some(Status {
        code: 2,
        message: "boom".into(),
    });
    let mut c_span = span(3, "redis GET", 3, vec![]);
    c_span.parent_span_id = vec![0, 0, 0, 0, 0, 0, 0, 2];
    request(vec![
        span(
            1,
            "GET /healthz",
            2,
            vec![
                s("url.path", "/healthz"),
                i("http.status_code", 200),
                d("ratio", 0.5),
                b("flag", true),
                empty("empty"),
                kv("bytes", av(P::BytesValue(vec![1, 2]))),
                s("digits", "42"),
            ],
        ),
        b_span,
        c_span,
    ])
}

fn spans_of(req: &ExportTraceServiceRequest) -> Vec<Span> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| s.spans.clone())
        .collect()
}

// ------------------------------------------------------------------------------ runners

/// The column engine's match mask for a span-context condition, and the number of items it
/// failed on (under `ignore`).
fn engine_matches(cond: &str, req: &ExportTraceServiceRequest) -> (Vec<bool>, usize) {
    let c = compile_condition(cond, Signal::Traces, Some(Context::Span))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let p = reference_traces(req);
    let mut lookups = Lookups::new(Context::Span, &reads(&[], std::slice::from_ref(&c)));
    let mut report = RunReport::default();
    let m = any_matches(
        &p,
        Table::Spans,
        &[c],
        ErrorMode::Ignore,
        &mut lookups,
        &mut report,
    )
    .expect("ignore never fails");
    (m, report.errors)
}

fn interp_matches(cond: &str, req: &ExportTraceServiceRequest) -> Vec<bool> {
    let c = compile_condition(cond, Signal::Traces, Some(Context::Span)).expect("compiles");
    interp::matches(&mut req.clone(), &[c], ErrorMode::Ignore).expect("ignore never fails")
}

/// Runs a span-context group with the engine; returns the request after it, and the report.
fn engine_run(
    statements: &[&str],
    conditions: &[&str],
    mode: ErrorMode,
    req: &ExportTraceServiceRequest,
) -> Result<(ExportTraceServiceRequest, RunReport), RunError> {
    let st: Vec<String> = statements.iter().map(|x| x.to_string()).collect();
    let co: Vec<String> = conditions.iter().map(|x| x.to_string()).collect();
    let (ctx, stmts, conds) = compile_group(&st, &co, Signal::Traces, Some(Context::Span))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let group = StatementGroup::new(ctx, stmts, conds, mode);
    let mut p = reference_traces(req);
    let mut report = RunReport::default();
    group.run(&mut p, &mut report)?;
    p.validate().expect("valid payload after the statements");
    let out = ExportTraceServiceRequest::decode(encode_to_vec(&p).as_slice()).expect("decodes");
    Ok((out, report))
}

fn interp_run(
    statements: &[&str],
    conditions: &[&str],
    mode: ErrorMode,
    req: &ExportTraceServiceRequest,
) -> Result<ExportTraceServiceRequest, String> {
    let st: Vec<String> = statements.iter().map(|x| x.to_string()).collect();
    let co: Vec<String> = conditions.iter().map(|x| x.to_string()).collect();
    let (_, stmts, conds) =
        compile_group(&st, &co, Signal::Traces, Some(Context::Span)).expect("compiles");
    let mut out = req.clone();
    interp::run_group(&mut out, &stmts, &conds, mode)?;
    Ok(out)
}

// ------------------------------------------------------------------------------ conditions

/// (condition, expected match per span A, B, C, expected number of failed items)
const CONDITIONS: &[(&str, [bool; 3], usize)] = &[
    // equality on strings, dictionary-encoded names
    (r#"name == "GET /healthz""#, [true, false, false], 0),
    (r#"name != "GET /healthz""#, [false, true, true], 0),
    (r#""SELECT" == name"#, [false, true, false], 0),
    (
        r#"attributes["url.path"] == "/healthz""#,
        [true, false, false],
        0,
    ),
    // nil: an absent key and an empty value are nil; nil equals only nil and orders nothing
    (r#"attributes["url.path"] == nil"#, [false, true, true], 0),
    (r#"attributes["url.path"] != nil"#, [true, false, false], 0),
    (r#"attributes["empty"] == nil"#, [true, true, true], 0),
    (r#"attributes["missing"] < 1"#, [false, false, false], 0),
    (r#"attributes["missing"] >= nil"#, [false, false, false], 0),
    ("nil == nil", [true, true, true], 0),
    (r#""" == nil"#, [false, false, false], 0),
    // type mismatch: "not equal" only
    (
        r#"attributes["http.status_code"] == 200"#,
        [true, false, false],
        0,
    ),
    (
        r#"attributes["http.status_code"] != 200"#,
        [false, true, true],
        0,
    ),
    (
        r#"attributes["http.status_code"] == "200""#,
        [false, true, false],
        0,
    ),
    (
        r#"attributes["http.status_code"] > 100"#,
        [true, false, false],
        0,
    ),
    (
        r#"attributes["http.status_code"] < "3""#,
        [false, true, false],
        0,
    ),
    (r#"attributes["flag"] == "true""#, [false, false, false], 0),
    // ints and doubles compare as numbers
    (r#"attributes["ratio"] < 1"#, [true, false, false], 0),
    (r#"attributes["ratio"] == 2.0"#, [false, true, false], 0),
    (r#"attributes["ratio"] >= 0.5"#, [true, true, false], 0),
    (r#"attributes["ratio"] <= 0.5"#, [true, false, false], 0),
    // bools order false < true; bytes compare bytewise
    (r#"attributes["flag"] == true"#, [true, false, false], 0),
    (r#"attributes["flag"] > false"#, [true, false, false], 0),
    (r#"attributes["bytes"] == 0x0102"#, [true, false, false], 0),
    (r#"attributes["bytes"] < 0x0103"#, [true, false, false], 0),
    // enums and int fields
    ("kind == SPAN_KIND_CLIENT", [false, true, true], 0),
    ("kind == 3", [false, true, true], 0),
    ("kind > SPAN_KIND_SERVER", [false, true, true], 0),
    ("status.code == STATUS_CODE_ERROR", [false, true, false], 0),
    (r#"status.message == "boom""#, [false, true, false], 0),
    ("start_time_unix_nano == 0", [true, true, true], 0),
    // boolean operators: not > and > or; parentheses
    (
        r#"name == "SELECT" or name == "GET /healthz" and kind == SPAN_KIND_SERVER"#,
        [true, true, false],
        0,
    ),
    (
        r#"(name == "SELECT" or name == "GET /healthz") and kind == SPAN_KIND_SERVER"#,
        [true, false, false],
        0,
    ),
    (r#"not name == "SELECT""#, [true, false, true], 0),
    (
        r#"not (kind == SPAN_KIND_CLIENT and attributes["db.system"] != nil)"#,
        [true, false, true],
        0,
    ),
    ("true", [true, true, true], 0),
    ("not true or false", [false, false, false], 0),
    // other levels: resource and scope, legacy and prefixed
    (
        r#"resource.attributes["service.name"] == "svc""#,
        [true, true, true],
        0,
    ),
    (
        r#"instrumentation_scope.name == "scope-a""#,
        [true, true, true],
        0,
    ),
    (r#"scope.version == "1.0""#, [true, true, true], 0),
    (r#"span.name == "SELECT""#, [false, true, false], 0),
    // ids
    ("IsRootSpan()", [true, true, false], 0),
    (
        "parent_span_id == SpanID(0x0000000000000000)",
        [true, true, false],
        0,
    ),
    (
        r#"span_id.string == "0000000000000001""#,
        [true, false, false],
        0,
    ),
    (r#"parent_span_id.string == """#, [true, true, false], 0),
    (
        "trace_id == TraceID(0x07070707070707070707070707070707)",
        [true, true, true],
        0,
    ),
    // a bytes literal is not a trace id: different types
    (
        "trace_id == 0x07070707070707070707070707070707",
        [false, false, false],
        0,
    ),
    // IsMatch: unanchored RE2; non-strings are converted; nil never matches
    (r#"IsMatch(name, "^GET ")"#, [true, false, false], 0),
    (r#"IsMatch(name, "ELE")"#, [false, true, false], 0),
    (r#"IsMatch(name, "")"#, [true, true, true], 0),
    (
        r#"IsMatch(attributes["url.path"], "^/(healthz?|readyz?)$")"#,
        [true, false, false],
        0,
    ),
    (
        r#"IsMatch(attributes["missing"], ".*")"#,
        [false, false, false],
        0,
    ),
    (
        r#"IsMatch(attributes["http.status_code"], "^2\\d\\d$")"#,
        [true, true, false],
        0,
    ),
    (
        r#"IsMatch(attributes["ratio"], "^0\\.5$")"#,
        [true, false, false],
        0,
    ),
    (
        r#"IsMatch(attributes["flag"], "^true$")"#,
        [true, false, false],
        0,
    ),
    (
        r#"IsMatch(attributes["bytes"], "^0102$")"#,
        [true, false, false],
        0,
    ),
    (r#"IsMatch(name, "(?i)select")"#, [false, true, false], 0),
    (
        r#"IsMatch(attributes["digits"], "^\\d+$")"#,
        [true, false, false],
        0,
    ),
    (r#"IsMatch(name, "\\bGET\\b")"#, [true, false, true], 0),
    (r#"IsMatch("literal", "^lit")"#, [true, true, true], 0),
    // IsString / IsInt
    (
        r#"IsString(attributes["http.status_code"])"#,
        [false, true, false],
        0,
    ),
    (
        r#"IsInt(attributes["http.status_code"])"#,
        [true, false, false],
        0,
    ),
    ("IsString(name)", [true, true, true], 0),
    ("IsInt(kind)", [true, true, true], 0),
    (
        r#"IsString(attributes["missing"])"#,
        [false, false, false],
        0,
    ),
    (r#"IsInt(attributes["ratio"])"#, [false, true, false], 0),
    // Concat: string forms, nil as <nil>
    (
        r#"Concat([name, attributes["http.status_code"]], "|") == "GET /healthz|200""#,
        [true, false, false],
        0,
    ),
    (
        r#"Concat([name, attributes["http.status_code"]], "|") == "redis GET|<nil>""#,
        [false, false, true],
        0,
    ),
    (
        r#"Concat([attributes["ratio"], attributes["flag"]], "") == "0.5true""#,
        [true, false, false],
        0,
    ),
    (
        r#"Concat([attributes["bytes"]], "") == "0102""#,
        [true, false, false],
        0,
    ),
    (r#"Concat([], "-") == """#, [true, true, true], 0),
    // Split, indexed; Split of nil is an error (counted, condition false)
    (
        r#"Split(attributes["url.path"], "/")[1] == "healthz""#,
        [true, false, false],
        2,
    ),
    (r#"Split(name, " ")[1] == "GET""#, [false, false, true], 1),
    // Substring: byte offsets; out of range is an error
    (r#"Substring(name, 0, 3) == "GET""#, [true, false, false], 0),
    (r#"Substring(name, 6, 3) == "GET""#, [false, false, true], 1),
    (r#"Substring(name, 0, 20) == "x""#, [false, false, false], 3),
    (r#"Substring(name, -1, 2) == "x""#, [false, false, false], 3),
    // `and` evaluates its right side only where the left is true: no errors
    (
        r#"attributes["url.path"] != nil and Substring(attributes["url.path"], 0, 4) == "/hea""#,
        [true, false, false],
        0,
    ),
    (
        r#"attributes["url.path"] == nil or Substring(attributes["url.path"], 0, 4) == "/hea""#,
        [true, true, true],
        0,
    ),
    // ConvertCase
    (
        r#"ConvertCase(name, "upper") == "SELECT""#,
        [false, true, false],
        0,
    ),
    (
        r#"ConvertCase(name, "lower") == "select""#,
        [false, true, false],
        0,
    ),
    (
        r#"ConvertCase(name, "snake") == "get_/healthz""#,
        [true, false, false],
        0,
    ),
    (
        r#"ConvertCase(name, "camel") == "RedisGet""#,
        [false, false, true],
        0,
    ),
    (
        r#"ConvertCase(attributes["ratio"], "upper") == "X""#,
        [false, false, false],
        3,
    ),
    // Int / String
    (
        r#"Int(attributes["http.status_code"]) == 200"#,
        [true, true, false],
        0,
    ),
    (r#"Int("2.0") == nil"#, [true, true, true], 0),
    (r#"Int(attributes["ratio"]) == 0"#, [true, false, false], 0),
    (r#"Int(attributes["flag"]) == 1"#, [true, false, false], 0),
    (
        r#"String(attributes["ratio"]) == "0.5""#,
        [true, false, false],
        0,
    ),
    (
        r#"String(attributes["http.status_code"]) == "200""#,
        [true, true, false],
        0,
    ),
    (
        r#"String(attributes["missing"]) == nil"#,
        [true, true, true],
        0,
    ),
];

#[test]
fn conditions_follow_the_collector_semantics() {
    let req = abc();
    let mut failures = Vec::new();
    for (cond, want, want_errors) in CONDITIONS {
        let (got, errors) = engine_matches(cond, &req);
        let reference = interp_matches(cond, &req);
        if got != want || errors != *want_errors || reference != got {
            failures.push(format!(
                "{cond}\n    engine {got:?} ({errors} errors), reference {reference:?}, want {want:?} ({want_errors} errors)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn propagate_fails_the_payload_with_the_statement_and_message() {
    let c = compile_condition(
        r#"Substring(name, 0, 20) == "x""#,
        Signal::Traces,
        Some(Context::Span),
    )
    .unwrap();
    let p = reference_traces(&abc());
    let mut lookups = Lookups::new(Context::Span, &[]);
    let err = any_matches(
        &p,
        Table::Spans,
        &[c],
        ErrorMode::Propagate,
        &mut lookups,
        &mut RunReport::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Substring(name, 0, 20)") && msg.contains("invalid range"),
        "{msg}"
    );
}

#[test]
fn regex_edge_cases_are_re2() {
    let req = request(vec![
        span(1, "٣", 0, vec![]),          // a Unicode digit, not an RE2 \d
        span(2, "é", 0, vec![]),          // not an RE2 \w
        span(3, "a.b", 0, vec![]),        // literal dot
        span(4, "line\nnext", 0, vec![]), // `.` does not match \n, (?s) makes it
    ]);
    for (cond, want) in [
        (r#"IsMatch(name, "^\\d$")"#, [false, false, false, false]),
        (r#"IsMatch(name, "^\\pN$")"#, [true, false, false, false]),
        (r#"IsMatch(name, "^\\w$")"#, [false, false, false, false]),
        (r#"IsMatch(name, "^\\W+$")"#, [true, true, false, false]),
        (r#"IsMatch(name, "^a\\.b$")"#, [false, false, true, false]),
        (
            r#"IsMatch(name, "^\\Qa.b\\E$")"#,
            [false, false, true, false],
        ),
        (
            r#"IsMatch(name, "^line.next$")"#,
            [false, false, false, false],
        ),
        (
            r#"IsMatch(name, "(?s)^line.next$")"#,
            [false, false, false, true],
        ),
        (
            r#"IsMatch(name, "(?m)^next$")"#,
            [false, false, false, true],
        ),
        (
            r#"IsMatch(name, "^[[:alpha:]]")"#,
            [false, false, true, true],
        ),
    ] {
        let (got, _) = engine_matches(cond, &req);
        assert_eq!(got, want, "{cond}");
        assert_eq!(interp_matches(cond, &req), want, "{cond} (reference)");
    }
}

// ------------------------------------------------------------------------------ statements

/// A span as (name, kind, status code, attributes) for comparisons.
type Shape = (String, i32, i32, Vec<KeyValue>);

fn shape(req: &ExportTraceServiceRequest) -> Vec<Shape> {
    spans_of(req)
        .into_iter()
        .map(|s| {
            (
                s.name,
                s.kind,
                s.status.map_or(0, |st| st.code),
                s.attributes,
            )
        })
        .collect()
}

fn resource_attrs(req: &ExportTraceServiceRequest) -> Vec<KeyValue> {
    req.resource_spans[0]
        .resource
        .clone()
        .unwrap_or_default()
        .attributes
}

/// Runs `statements` with the engine and the reference; both must agree; returns the shape.
fn run(statements: &[&str]) -> (Vec<Shape>, Vec<KeyValue>, usize) {
    run_on(statements, &[], &abc())
}

fn run_on(
    statements: &[&str],
    conditions: &[&str],
    req: &ExportTraceServiceRequest,
) -> (Vec<Shape>, Vec<KeyValue>, usize) {
    let (out, report) = engine_run(statements, conditions, ErrorMode::Ignore, req)
        .unwrap_or_else(|e| panic!("{statements:?}: {e}"));
    let reference = interp_run(statements, conditions, ErrorMode::Ignore, req).expect("reference");
    assert_eq!(
        shape(&out),
        shape(&reference),
        "{statements:?}: engine vs reference"
    );
    assert_eq!(
        resource_attrs(&out),
        resource_attrs(&reference),
        "{statements:?}: resource attributes, engine vs reference"
    );
    (shape(&out), resource_attrs(&out), report.errors)
}

fn attrs_of(shapes: &[Shape], span: usize) -> Vec<(String, Option<P>)> {
    shapes[span]
        .3
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
        .collect()
}

fn keys_of(shapes: &[Shape], span: usize) -> Vec<String> {
    shapes[span].3.iter().map(|kv| kv.key.clone()).collect()
}

fn get(shapes: &[Shape], span: usize, key: &str) -> Option<P> {
    attrs_of(shapes, span)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v)
}

fn sv(x: &str) -> Option<P> {
    Some(P::StringValue(x.into()))
}

#[test]
fn set_writes_attributes_and_fields() {
    let (out, _, _) = run(&[r#"set(attributes["new"], "v")"#]);
    for sp in 0..3 {
        assert_eq!(get(&out, sp, "new"), sv("v"));
        assert_eq!(
            keys_of(&out, sp).last().map(String::as_str),
            Some("new"),
            "appended last"
        );
    }
    let (out, _, _) = run(&[r#"set(attributes["new"], 5) where name == "SELECT""#]);
    assert_eq!(get(&out, 0, "new"), None);
    assert_eq!(get(&out, 1, "new"), Some(P::IntValue(5)));
    // nil values are not written
    let (out, _, _) = run(&[r#"set(attributes["copy"], attributes["url.path"])"#]);
    assert_eq!(get(&out, 0, "copy"), sv("/healthz"));
    assert_eq!(get(&out, 1, "copy"), None);
    // update in place keeps the key's position
    let (out, _, _) =
        run(&[r#"set(attributes["http.status_code"], Int(attributes["http.status_code"]))"#]);
    assert_eq!(get(&out, 1, "http.status_code"), Some(P::IntValue(200)));
    assert_eq!(keys_of(&out, 1), ["db.system", "http.status_code", "ratio"]);
    // doubles, bools, other paths, converters
    let (out, _, _) = run(&[
        r#"set(attributes["d"], 1.25)"#,
        r#"set(attributes["b"], false)"#,
        r#"set(attributes["svc"], resource.attributes["service.name"])"#,
        r##"set(attributes["c"], Concat([name, kind], "#"))"##,
        r#"set(attributes["parts"], Split("a,b", ","))"#,
    ]);
    assert_eq!(get(&out, 2, "d"), Some(P::DoubleValue(1.25)));
    assert_eq!(get(&out, 2, "b"), Some(P::BoolValue(false)));
    assert_eq!(get(&out, 2, "svc"), sv("svc"));
    assert_eq!(get(&out, 2, "c"), sv("redis GET#3"));
    assert_eq!(
        get(&out, 2, "parts"),
        Some(P::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: sv("a") }, AnyValue { value: sv("b") }]
        }))
    );
}

#[test]
fn set_writes_span_fields_with_type_checks() {
    let (out, _, _) = run(&[
        r#"set(name, Concat([name, "!"], ""))"#,
        "set(kind, SPAN_KIND_INTERNAL) where kind == SPAN_KIND_CLIENT",
        r#"set(status.code, STATUS_CODE_OK) where attributes["http.status_code"] == 200"#,
    ]);
    assert_eq!(
        out.iter()
            .map(|s| (s.0.as_str(), s.1, s.2))
            .collect::<Vec<_>>(),
        [
            ("GET /healthz!", 2, 1),
            ("SELECT!", 1, 2),
            ("redis GET!", 1, 0)
        ]
    );
    // a value of the wrong type at run time leaves the field alone (the Collector's setters)
    let (out, _, _) = run(&[r#"set(name, attributes["http.status_code"])"#]);
    assert_eq!(out[0].0, "GET /healthz"); // int: ignored
    assert_eq!(out[1].0, "200");
    assert_eq!(out[2].0, "redis GET"); // nil: ignored
    let (out, _, _) = run(&[r#"set(status.message, "why") where name == "redis GET""#]);
    assert_eq!(out[2].2, 0);
}

#[test]
fn set_on_the_resource_from_the_span_context_is_last_wins() {
    let (_, res, _) = run(&[r#"set(resource.attributes["env"], "prod")"#]);
    assert_eq!(res.last().unwrap().key, "env");
    let (_, res, _) =
        run(&[r#"set(resource.attributes["last"], name) where kind == SPAN_KIND_CLIENT"#]);
    let last = res.iter().find(|kv| kv.key == "last").unwrap();
    assert_eq!(last.value.clone().unwrap().value, sv("redis GET"));
}

#[test]
fn map_editors() {
    let (out, _, _) = run(&[r#"delete_key(attributes, "url.path")"#]);
    assert!(!keys_of(&out, 0).contains(&"url.path".to_string()));
    assert_eq!(keys_of(&out, 0).len(), 6);
    let (out, _, _) = run(&[r#"delete_matching_keys(attributes, "^(http|db)\\.")"#]);
    assert_eq!(keys_of(&out, 1), ["ratio"]);
    let (out, _, _) =
        run(&[r#"keep_keys(attributes, ["db.system", "ratio"]) where kind == SPAN_KIND_CLIENT"#]);
    assert_eq!(
        keys_of(&out, 0).len(),
        7,
        "server span untouched by the where clause"
    );
    assert_eq!(keys_of(&out, 1), ["db.system", "ratio"]);
    let (out, _, _) = run(&[r#"limit(attributes, 2, ["flag"])"#]);
    assert_eq!(keys_of(&out, 0), ["url.path", "flag"]);
    assert_eq!(keys_of(&out, 1), ["db.system", "http.status_code"]);
    let (out, _, _) = run(&[r#"delete_key(resource.attributes, "host.name")"#]);
    assert_eq!(out.len(), 3);
}

#[test]
fn truncate_all_cuts_at_character_boundaries() {
    let req = request(vec![span(
        1,
        "s",
        0,
        vec![
            s("a", "/healthz"),
            s("e", "ééé"),
            i("n", 123456),
            s("short", "ab"),
        ],
    )]);
    let (out, _, _) = run_on(&["truncate_all(attributes, 3)"], &[], &req);
    assert_eq!(get(&out, 0, "a"), sv("/he"));
    assert_eq!(
        get(&out, 0, "e"),
        sv("é"),
        "3 bytes would split the second é"
    );
    assert_eq!(get(&out, 0, "n"), Some(P::IntValue(123456)));
    assert_eq!(get(&out, 0, "short"), sv("ab"));
    let (out, _, _) = run_on(
        &[r#"truncate_all(attributes, 5, truncation_marker = "…")"#],
        &[],
        &req,
    );
    assert_eq!(get(&out, 0, "a"), sv("/h…"));
    assert_eq!(get(&out, 0, "short"), sv("ab"));
}

#[test]
fn replace_pattern_and_replace_all_patterns() {
    let (out, _, _) =
        run(&[r#"replace_pattern(attributes["url.path"], "^/(\\w+)$", "/probe/$1")"#]);
    assert_eq!(get(&out, 0, "url.path"), sv("/probe/healthz"));
    let (out, _, _) = run(&[r#"replace_pattern(name, "GET", "get")"#]);
    assert_eq!(out[2].0, "redis get");
    // only strings are touched
    let (out, _, _) = run(&[r##"replace_all_patterns(attributes, "value", "\\d", "#")"##]);
    assert_eq!(get(&out, 1, "http.status_code"), sv("###"));
    assert_eq!(get(&out, 0, "http.status_code"), Some(P::IntValue(200)));
    assert_eq!(get(&out, 0, "digits"), sv("##"));
    let (out, _, _) = run(&[r#"replace_all_patterns(attributes, "key", "^http\\.", "h.")"#]);
    assert_eq!(keys_of(&out, 1), ["db.system", "h.status_code", "ratio"]);
    // keys that collide: the first position keeps the last value
    let req = request(vec![span(
        1,
        "s",
        0,
        vec![i("a.x", 1), i("k", 0), i("b.x", 2)],
    )]);
    let (out, _, _) = run_on(
        &[r#"replace_all_patterns(attributes, "key", "^[ab]\\.", "")"#],
        &[],
        &req,
    );
    assert_eq!(
        attrs_of(&out, 0),
        vec![
            ("x".to_string(), Some(P::IntValue(2))),
            ("k".to_string(), Some(P::IntValue(0)))
        ]
    );
}

#[test]
fn group_conditions_and_where_clauses() {
    let (out, _, _) = run_on(
        &[
            r#"set(attributes["client"], true)"#,
            r#"set(attributes["pg"], true) where attributes["db.system"] == "postgresql""#,
        ],
        &["kind == SPAN_KIND_CLIENT"],
        &abc(),
    );
    assert_eq!(get(&out, 0, "client"), None);
    assert_eq!(get(&out, 1, "client"), Some(P::BoolValue(true)));
    assert_eq!(get(&out, 2, "client"), Some(P::BoolValue(true)));
    assert_eq!(get(&out, 1, "pg"), Some(P::BoolValue(true)));
    assert_eq!(get(&out, 2, "pg"), None);
    // a later statement sees what an earlier one wrote on the same span
    let (out, _, _) = run(&[
        r#"set(attributes["a"], "1")"#,
        r#"set(attributes["b"], Concat([attributes["a"], "2"], "")) where attributes["a"] != nil"#,
    ]);
    assert_eq!(get(&out, 2, "b"), sv("12"));
}

#[test]
fn error_modes() {
    // ignore: the failing span is skipped, the others are written
    let (out, _, errors) = run(&[r#"set(attributes["sub"], Substring(name, 0, 7))"#]);
    assert_eq!(errors, 1);
    assert_eq!(get(&out, 0, "sub"), sv("GET /he"));
    assert_eq!(get(&out, 1, "sub"), None);
    assert_eq!(get(&out, 2, "sub"), sv("redis G"));
    // a failing where clause skips the statement for that span
    let (out, _, errors) =
        run(&[r#"set(attributes["x"], 1) where Substring(name, 0, 7) == "redis G""#]);
    assert_eq!(errors, 1);
    assert_eq!(get(&out, 2, "x"), Some(P::IntValue(1)));
    // silent counts without logging
    let (_, report) = engine_run(
        &[r#"set(attributes["sub"], Substring(name, 0, 7))"#],
        &[],
        ErrorMode::Silent,
        &abc(),
    )
    .unwrap();
    assert_eq!((report.errors, report.log), (1, false));
    // propagate fails the payload, and the reference fails too
    let err = engine_run(
        &[r#"set(attributes["sub"], Substring(name, 0, 7))"#],
        &[],
        ErrorMode::Propagate,
        &abc(),
    )
    .expect_err("propagate fails");
    assert!(err.to_string().contains("Substring"), "{err}");
    assert!(
        interp_run(
            &[r#"set(attributes["sub"], Substring(name, 0, 7))"#],
            &[],
            ErrorMode::Propagate,
            &abc()
        )
        .is_err()
    );
}

// ------------------------------------------------------------------------------ bad OTTL

/// (statement or condition, context, expected column, text the message must contain)
const BAD: &[(&str, Option<Context>, usize, &str)] = &[
    (
        r#"set(attributes["x"], SHA256(name))"#,
        Some(Context::Span),
        22,
        "not a converter",
    ),
    (
        r#"flatten(attributes)"#,
        Some(Context::Span),
        1,
        "not an editor",
    ),
    (
        r#"IsMatch(name, "(")"#,
        Some(Context::Span),
        15,
        "not a valid RE2",
    ),
    (
        r#"IsMatch(name, "a\\1")"#,
        Some(Context::Span),
        15,
        "backreference",
    ),
    (
        r#"attributes["a"]["b"] == 1"#,
        Some(Context::Span),
        16,
        "indexing into an attribute",
    ),
    (
        r#"nme == "x""#,
        Some(Context::Span),
        1,
        "unknown path `nme`",
    ),
    (
        r#"set(trace_id, TraceID(0x00000000000000000000000000000001))"#,
        Some(Context::Span),
        5,
        "cannot be set",
    ),
    (
        r#"set(name, 5)"#,
        Some(Context::Span),
        11,
        "span.name is a string",
    ),
    (
        r#"Substring(name, "0", 1) == "x""#,
        Some(Context::Span),
        17,
        "expects an int start",
    ),
    (
        r#"Substring(kind, 0, 1) == "x""#,
        Some(Context::Span),
        11,
        "expects a string target",
    ),
    (
        r#"span.name == "x""#,
        Some(Context::Resource),
        1,
        "cannot read span fields",
    ),
    (r#"name == "x""#, None, 1, "not a context"),
    (
        r#"limit(attributes, 1, ["a", "b"])"#,
        Some(Context::Span),
        22,
        "priority keys",
    ),
    (
        r#"ConvertCase(name, "title") == "x""#,
        Some(Context::Span),
        19,
        "invalid case",
    ),
    (
        r#"delete_key(name, "x")"#,
        Some(Context::Span),
        12,
        "attribute map",
    ),
    (
        "IsRootSpan()",
        Some(Context::Resource),
        1,
        "only available in the span context",
    ),
    (
        r#"attributes["x"]"#,
        Some(Context::Span),
        1,
        "a condition must be a comparison",
    ),
    (
        r#"kind == SPAN_KIND_NOPE"#,
        Some(Context::Span),
        9,
        "unknown enum",
    ),
    (
        r#"metric.name == "x""#,
        Some(Context::Span),
        1,
        "not available for traces",
    ),
    (
        r#"set(attributes["x"], attributes)"#,
        Some(Context::Span),
        22,
        "whole attribute map",
    ),
    (
        r#"truncate_all(attributes, 10, false)"#,
        Some(Context::Span),
        30,
        "utf8_safe",
    ),
    (
        r#"set(attributes["x"], "a", "b")"#,
        Some(Context::Span),
        27,
        "at most 2 arguments",
    ),
    (
        r#"delete_key(attributes, key = "a", key = "b")"#,
        Some(Context::Span),
        41,
        "given twice",
    ),
    (
        r#"replace_pattern(name, "a", "b", SHA256)"#,
        Some(Context::Span),
        33,
        "not in sluice's OTTL subset",
    ),
    (
        r#"set(attributes["x"], 1 + 2)"#,
        Some(Context::Span),
        24,
        "math",
    ),
    (
        r#"Split(name, ",")["a"] == "x""#,
        Some(Context::Span),
        17,
        "indexed, by an int",
    ),
];

#[test]
fn bad_ottl_points_at_the_statement_and_position() {
    let mut failures = Vec::new();
    for (text, ctx, col, want) in BAD {
        let err = if text.starts_with(|c: char| c.is_ascii_lowercase())
            && text.contains('(')
            && !text.contains("==")
            && !text.starts_with("attributes")
        {
            compile_statement(text, Signal::Traces, *ctx).err()
        } else {
            compile_condition(text, Signal::Traces, *ctx).err()
        };
        match err {
            None => failures.push(format!("{text}: compiled, should have failed")),
            Some(e) => {
                let got = e.error.column(&e.text);
                let rendered = e.render();
                if got != *col || !rendered.contains(want) || !rendered.contains(text) {
                    failures.push(format!(
                        "{text}: column {got} (want {col}), want {want:?}:\n{rendered}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn order_dependent_groups_are_refused() {
    let err = compile_group(
        &[
            r#"set(resource.attributes["x"], name)"#.to_string(),
            r#"set(attributes["y"], resource.attributes["x"])"#.to_string(),
        ],
        &[],
        Signal::Traces,
        Some(Context::Span),
    )
    .unwrap_err();
    assert!(
        err.render().contains("context: resource"),
        "{}",
        err.render()
    );
    // Two statements writing one resource attribute under span-dependent conditions (found by
    // `groups_after_a_filter_equal_per_span_execution`): per span, a root span after a child
    // deletes what the child set; statement by statement, the set comes last.
    let group = |statements: &[&str]| {
        compile_group(
            &statements.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            &[],
            Signal::Traces,
            Some(Context::Span),
        )
    };
    let err = group(&[
        r#"delete_key(resource.attributes, "http.route") where IsRootSpan()"#,
        r#"set(resource.attributes["http.route"], true) where not IsRootSpan()"#,
    ])
    .unwrap_err();
    assert!(
        err.render().contains("also writes") && err.render().contains("context: resource"),
        "{}",
        err.render()
    );
    // Different keys, or writes at the span's own level, stay allowed.
    assert!(
        group(&[
            r#"delete_key(resource.attributes, "a")"#,
            r#"set(resource.attributes["b"], true)"#,
            r#"set(attributes["c"], 1)"#,
            r#"delete_key(attributes, "c") where IsRootSpan()"#,
        ])
        .is_ok()
    );
    let err = compile_statement(
        r#"replace_pattern(resource.attributes["x"], "a", "b")"#,
        Signal::Traces,
        Some(Context::Span),
    )
    .unwrap_err();
    assert!(err.render().contains("once per span"), "{}", err.render());
}

#[test]
fn context_inference_picks_the_deepest_prefix() {
    let g = |xs: &[&str]| {
        compile_group(
            &xs.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            &[],
            Signal::Traces,
            None,
        )
    };
    assert_eq!(
        g(&[r#"delete_key(resource.attributes, "a")"#]).unwrap().0,
        Context::Resource
    );
    assert_eq!(
        g(&[
            r#"delete_key(resource.attributes, "a")"#,
            r#"delete_key(span.attributes, "b")"#
        ])
        .unwrap()
        .0,
        Context::Span
    );
    assert_eq!(
        g(&[r#"set(span.attributes["x"], "y") where spanevent.name == "e""#])
            .unwrap()
            .0,
        Context::SpanEvent
    );
    assert!(g(&[r#"set(attributes["x"], "y")"#]).is_err());
    let c = compile_condition(
        r#"IsMatch(scope.name, "x") and span.kind == 2"#,
        Signal::Traces,
        None,
    )
    .unwrap();
    assert_eq!(c.context, Context::Span);
    assert!(
        compile_condition(
            r#"span.name == "a" or spanevent.name == "b""#,
            Signal::Traces,
            None
        )
        .is_ok()
    );
    assert!(compile_condition(r#"log.body == "a""#, Signal::Traces, None).is_err());
}
