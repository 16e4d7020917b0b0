//! Property tests: for random spans and random conditions / statement groups of the subset,
//! the column engine gives exactly what the straightforward per-span interpreter gives (the
//! mask of a condition; the spans and resource after a group; failing or not under
//! `propagate`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as P,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message as _;

use super::check::compile_group;
use super::eval::Lookups;
use super::exec::reads;
use super::*;
use crate::otlp::encode_to_vec;
use crate::otlp::testing::reference_traces;
use crate::schema::{Signal, Table};

const KEYS: &[&str] = &["a", "b", "c", "http.route"];

fn arb_value() -> impl Strategy<Value = Option<AnyValue>> {
    let v = |x: P| Some(AnyValue { value: Some(x) });
    prop_oneof![
        prop::sample::select(vec!["", "x", "/healthz", "200", "é", "a,b", "GET /x"])
            .prop_map(move |s| v(P::StringValue(s.into()))),
        (-2i64..300).prop_map(move |i| v(P::IntValue(i))),
        prop::sample::select(vec![0.5f64, 2.0, -1.25, 200.0])
            .prop_map(move |d| v(P::DoubleValue(d))),
        any::<bool>().prop_map(move |b| v(P::BoolValue(b))),
        Just(Some(AnyValue { value: None })),
        Just(v(P::BytesValue(vec![1, 2]))),
    ]
}

/// Distinct keys (OTLP forbids duplicates), random values, random order.
fn arb_attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), arb_value()), 0..5).prop_map(
        |kvs| {
            let mut out: Vec<KeyValue> = Vec::new();
            for (k, value) in kvs {
                if !out.iter().any(|kv| kv.key == k) {
                    out.push(KeyValue {
                        key: k.into(),
                        value,
                        ..Default::default()
                    });
                }
            }
            out
        },
    )
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        prop::sample::select(vec!["GET /x", "SELECT", "redis GET", "a b", ""]),
        0i32..6,
        0i32..3,
        any::<bool>(),
        arb_attrs(),
        any::<u64>(),
    )
        .prop_map(|(name, kind, code, root, attributes, id)| Span {
            trace_id: vec![9; 16],
            span_id: id.to_be_bytes().to_vec(),
            parent_span_id: if root { vec![] } else { vec![1; 8] },
            name: name.into(),
            kind,
            attributes,
            status: (code > 0).then(|| Status {
                code,
                message: String::new(),
            }),
            ..Default::default()
        })
}

fn arb_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    prop::collection::vec(
        (
            arb_attrs(),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["lib-a", "lib-b"]),
                    prop::collection::vec(arb_span(), 0..5),
                ),
                1..3,
            ),
        ),
        1..3,
    )
    .prop_map(|resources| ExportTraceServiceRequest {
        resource_spans: resources
            .into_iter()
            .map(|(attributes, scopes)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: scopes
                    .into_iter()
                    .map(|(name, spans)| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: name.into(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    })
}

/// Paths whose values may be strings (attributes are of any type).
fn arb_str_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "name",
        r#"attributes["a"]"#,
        r#"attributes["b"]"#,
        r#"attributes["http.route"]"#,
        r#"resource.attributes["a"]"#,
        "instrumentation_scope.name",
        "span_id.string",
    ])
    .prop_map(String::from)
}

fn arb_int_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["kind", "status.code", r#"attributes["c"]"#]).prop_map(String::from)
}

fn arb_literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "nil",
        r#""x""#,
        r#""200""#,
        "200",
        "1",
        "2.0",
        "0.5",
        "true",
        r#""""#,
        "SPAN_KIND_CLIENT",
        r#""GET /x""#,
        "0x0102",
    ])
    .prop_map(String::from)
}

/// An expression that is a string or of a type known only per item (statically valid where
/// a string is expected).
fn arb_str_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => arb_str_path(),
        1 => prop::sample::select(vec![r#""x""#, r#""a,b""#, r#""GET /x""#, r#""""#]).prop_map(String::from),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            arb_any_leaf().prop_map(|v| format!("String({v})")),
            (inner.clone(), arb_any_leaf())
                .prop_map(|(a, b)| format!(r#"Concat([{a}, {b}], "-")"#)),
            (inner.clone(), 0i64..3, 1i64..3)
                .prop_map(|(v, s, l)| format!("Substring({v}, {s}, {l})")),
            inner
                .clone()
                .prop_map(|v| format!(r#"ConvertCase({v}, "upper")"#)),
            inner.prop_map(|v| format!(r#"Split({v}, ",")[0]"#)),
        ]
    })
}

fn arb_any_leaf() -> impl Strategy<Value = String> {
    prop_oneof![arb_str_path(), arb_int_path(), arb_literal()]
}

/// Any expression.
fn arb_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => arb_str_expr(),
        1 => arb_int_path(),
        1 => arb_literal(),
        1 => arb_any_leaf().prop_map(|v| format!("Int({v})")),
    ]
}

/// An expression that is an int, or of a type known only per item.
fn arb_int_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_int_path(),
        prop::sample::select(vec!["1", "200", "SPAN_KIND_CLIENT", "nil"]).prop_map(String::from),
        arb_any_leaf().prop_map(|v| format!("Int({v})")),
    ]
}

fn arb_cond() -> impl Strategy<Value = String> {
    let ops = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
    let patterns = prop::sample::select(vec!["^GET", "x", "^\\\\d+$", "", "(?i)select", "^a,"]);
    let leaf = prop_oneof![
        4 => (arb_expr(), ops, arb_expr()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        2 => (arb_expr(), patterns).prop_map(|(v, p)| format!(r#"IsMatch({v}, "{p}")"#)),
        1 => arb_expr().prop_map(|v| format!("IsString({v})")),
        1 => arb_expr().prop_map(|v| format!("IsInt({v})")),
        1 => Just("IsRootSpan()".to_string()),
        1 => Just("true".to_string()),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

fn arb_statement() -> impl Strategy<Value = String> {
    let key = prop::sample::select(KEYS.to_vec());
    let editor = prop_oneof![
        3 => (key.clone(), arb_expr()).prop_map(|(k, v)| format!(r#"set(attributes["{k}"], {v})"#)),
        1 => arb_str_expr().prop_map(|v| format!("set(name, {v})")),
        1 => arb_int_expr().prop_map(|v| format!("set(status.code, {v})")),
        1 => (key.clone(), arb_literal()).prop_map(|(k, v)| format!(r#"set(resource.attributes["{k}"], {v})"#)),
        1 => key.clone().prop_map(|k| format!(r#"delete_key(attributes, "{k}")"#)),
        1 => key.clone().prop_map(|k| format!(r#"delete_key(resource.attributes, "{k}")"#)),
        1 => Just(r#"delete_matching_keys(attributes, "^[ab]$")"#.to_string()),
        1 => (key.clone(), key.clone()).prop_map(|(a, b)| format!(r#"keep_keys(attributes, ["{a}", "{b}"])"#)),
        1 => (1i64..4, key.clone()).prop_map(|(n, k)| format!(r#"limit(attributes, {n}, ["{k}"])"#)),
        1 => (0i64..4).prop_map(|n| format!("truncate_all(attributes, {n})")),
        1 => key.clone().prop_map(|k| format!(r#"replace_pattern(attributes["{k}"], "[0-9]", "<$0>")"#)),
        1 => Just(r#"replace_pattern(name, "^(\\w+) ", "$1_")"#.to_string()),
        1 => Just(r#"replace_all_patterns(attributes, "value", "x|2", "y")"#.to_string()),
        1 => Just(r#"replace_all_patterns(attributes, "key", "^[ab]$", "c")"#.to_string()),
    ];
    (editor, prop::option::of(arb_cond())).prop_map(|(e, c)| match c {
        Some(c) => format!("{e} where {c}"),
        None => e,
    })
}

/// Per resource: its attributes, and per span (name, kind, status code, attributes).
type Shape = Vec<(Vec<KeyValue>, Vec<(String, i32, i32, Vec<KeyValue>)>)>;

fn shape(req: &ExportTraceServiceRequest) -> Shape {
    req.resource_spans
        .iter()
        .map(|rs| {
            // Resource attributes by key: span-context statements that add several resource
            // keys under span conditions add them in statement order here, in span order in
            // the Collector; attribute maps are unordered, so only keys and values count.
            let mut resource = rs.resource.clone().unwrap_or_default().attributes;
            resource.sort_by(|a, b| a.key.cmp(&b.key));
            (
                resource,
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(|s| {
                        (
                            s.name.clone(),
                            s.kind,
                            s.status.as_ref().map_or(0, |st| st.code),
                            s.attributes.clone(),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn condition_masks_equal_per_span_evaluation(req in arb_request(), conds in prop::collection::vec(arb_cond(), 1..3)) {
        // Random text may be statically ill-typed (`Substring(200, 0, 1)`): refused at load.
        let Ok(compiled) = conds
            .iter()
            .map(|c| compile_condition(c, Signal::Traces, Some(Context::Span)))
            .collect::<Result<Vec<Condition>, _>>()
        else {
            return Ok(());
        };
        let p = reference_traces(&req);
        for mode in [ErrorMode::Ignore, ErrorMode::Propagate] {
            let mut lookups = Lookups::new(Context::Span, &reads(&[], &compiled));
            let engine = any_matches(&p, Table::Spans, &compiled, mode, &mut lookups, &mut RunReport::default());
            let reference = interp::matches(&mut req.clone(), &compiled, mode);
            match (engine, reference) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?} ({:?})", conds, mode),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{:?} ({:?}): engine {:?}, reference {:?}", conds, mode, a.map(|_| ()), b.map(|_| ())),
            }
        }
    }

    #[test]
    fn statement_groups_equal_per_span_execution(
        req in arb_request(),
        statements in prop::collection::vec(arb_statement(), 1..4),
        group_cond in prop::option::of(arb_cond()),
    ) {
        let conditions: Vec<String> = group_cond.into_iter().collect();
        group_equals_per_span_execution(&req, &statements, &conditions)?;
    }

    /// Values set by one statement read back by the next ones (the engine moves the rows it
    /// already found instead of searching the rewritten table again).
    #[test]
    fn values_set_are_read_back_by_later_statements(
        req in arb_request(),
        key in prop::sample::select(KEYS.to_vec()),
        cond in prop::option::of(arb_cond()),
    ) {
        let first = match cond {
            Some(c) => format!(r#"set(attributes["{key}"], name) where {c}"#),
            None => format!(r#"set(attributes["{key}"], name) where attributes["{key}"] == nil"#),
        };
        let statements = vec![
            first,
            format!(r#"set(attributes["copy"], attributes["{key}"]) where attributes["{key}"] != nil"#),
            format!(r#"set(attributes["b"], attributes["{key}"]) where attributes["copy"] == nil"#),
            r#"set(attributes["last"], attributes["copy"])"#.to_string(),
        ];
        group_equals_per_span_execution(&req, &statements, &[])?;
    }

    /// Coalescing chains, `set(T, E) where T == nil` repeated (the engine fuses them into
    /// one pass): values of any type, nil, failing (`Substring` of a short value), reading
    /// `T` itself, with other statements and chains on other keys in between, the guard
    /// written both ways round.
    #[test]
    fn coalescing_chains_equal_per_span_execution(
        req in arb_request(),
        parts in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b"]),
                prop_oneof![
                    4 => arb_expr(),
                    1 => Just("attributes[\"T\"]".to_string()),
                    1 => Just("Concat([attributes[\"T\"], name], \"\")".to_string()),
                    1 => Just("Substring(attributes[\"c\"], 1, 2)".to_string()),
                ],
                any::<bool>(),
                prop::option::of(arb_statement()),
            ),
            1..7,
        ),
        group_cond in prop::option::of(arb_cond()),
    ) {
        let mut statements = Vec::new();
        for (key, value, nil_first, other) in parts {
            let target = format!(r#"attributes["{key}"]"#);
            let value = value.replace(r#"attributes["T"]"#, &target);
            let guard = if nil_first {
                format!("nil == {target}")
            } else {
                format!("{target} == nil")
            };
            statements.push(format!("set({target}, {value}) where {guard}"));
            statements.extend(other);
        }
        let conditions: Vec<String> = group_cond.into_iter().collect();
        group_equals_per_span_execution(&req, &statements, &conditions)?;
    }
}

proptest! {
    /// A filter, then a statement group: the filter leaves the attribute tables pending
    /// (rows of the old table, parents renumbered), and the group's reads, deletes and sets
    /// work on them without building them first. The same as filtering and running the group
    /// span by span.
    #[test]
    fn groups_after_a_filter_equal_per_span_execution(
        req in arb_request(),
        drop_cond in arb_cond(),
        statements in prop::collection::vec(arb_statement(), 1..5),
    ) {
        let Ok(drop) = compile_condition(&drop_cond, Signal::Traces, Some(Context::Span)) else {
            return Ok(());
        };
        let Ok((ctx, stmts, conds)) =
            compile_group(&statements, &[], Signal::Traces, Some(Context::Span))
        else {
            return Ok(());
        };
        let drop = [drop];
        let mode = ErrorMode::Ignore;
        let mut reference = req.clone();
        interp::filter(&mut reference, &drop, mode).expect("ignore");
        interp::run_group(&mut reference, &stmts, &conds, mode).expect("ignore");

        let p = reference_traces(&req);
        let mut lookups = Lookups::new(Context::Span, &reads(&[], &drop));
        let hit = any_matches(&p, Table::Spans, &drop, mode, &mut lookups, &mut RunReport::default())
            .expect("ignore");
        let keep: Vec<bool> = hit.iter().map(|h| !h).collect();
        let mut p = p.filter(Table::Spans, &keep).expect("filters");
        StatementGroup::new(ctx, stmts, conds, mode)
            .run(&mut p, &mut RunReport::default())
            .expect("ignore");
        p.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = ExportTraceServiceRequest::decode(encode_to_vec(&p).as_slice()).expect("decodes");
        prop_assert_eq!(shape(&got), shape(&reference), "{} / {:?}", drop_cond, statements);
    }
}

/// Runs `statements` (with group `conditions`) as a [`StatementGroup`] and with the per-span
/// interpreter, under `ignore` and `propagate`: the same spans, or both refusing.
fn group_equals_per_span_execution(
    req: &ExportTraceServiceRequest,
    statements: &[String],
    conditions: &[String],
) -> Result<(), TestCaseError> {
    // Groups whose result would depend on span order are refused at load: skip them.
    let Ok((ctx, stmts, conds)) =
        compile_group(statements, conditions, Signal::Traces, Some(Context::Span))
    else {
        return Ok(());
    };
    for mode in [ErrorMode::Ignore, ErrorMode::Propagate] {
        let group = StatementGroup::new(ctx, stmts.clone(), conds.clone(), mode);
        let mut p = reference_traces(req);
        let engine = group.run(&mut p, &mut RunReport::default());
        let mut reference = req.clone();
        let interp_result = interp::run_group(&mut reference, &stmts, &conds, mode);
        match (engine, interp_result) {
            (Ok(()), Ok(_)) => {
                p.validate()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let got = ExportTraceServiceRequest::decode(encode_to_vec(&p).as_slice())
                    .expect("decodes");
                prop_assert_eq!(
                    shape(&got),
                    shape(&reference),
                    "{:?} / {:?} ({:?})",
                    statements,
                    conditions,
                    mode
                );
            }
            (Err(_), Err(_)) => prop_assert_eq!(mode, ErrorMode::Propagate),
            (a, b) => prop_assert!(
                false,
                "{:?} ({:?}): engine {:?}, reference {:?}",
                statements,
                mode,
                a,
                b
            ),
        }
    }
    Ok(())
}
