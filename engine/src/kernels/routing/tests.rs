use std::collections::{BTreeMap, BTreeSet};

use arrow::array::AsArray;
use proptest::prelude::*;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::*;
use crate::otlp::testing::{
    arb_logs_request, arb_metrics_request, arb_traces_request, reference_logs, reference_metrics,
    reference_traces,
};

/// `n` spans of distinct traces under one resource and one scope.
fn one_scope_request(n: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = (0..n as u8)
        .map(|i| Span {
            trace_id: vec![i + 1; 16],
            span_id: vec![i + 1; 8],
            name: format!("op{i}"),
            kind: 2,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn ring(endpoints: &[&str]) -> HashRing {
    let e: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
    HashRing::new(&e).unwrap()
}

/// Every case of `engine/testdata/loadbalancing/ring_golden.json`, derived from the
/// Collector's Go algorithm by `ring_golden.py`: ring size, the first ring items, the positions
/// each endpoint owns, and the backend (and key position) of every trace id.
#[test]
fn the_ring_matches_the_collectors_golden_cases() {
    let golden: serde_json::Value = serde_json::from_str(include_str!(
        "../../../testdata/loadbalancing/ring_golden.json"
    ))
    .unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let mut routes_checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let endpoints: Vec<String> = case["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect();
        let r = HashRing::new(&endpoints).unwrap();
        assert_eq!(
            r.items().count() as u64,
            case["ring_size"].as_u64().unwrap(),
            "{name}"
        );
        let first: Vec<(u32, String)> =
            r.items().take(8).map(|(p, e)| (p, e.to_string())).collect();
        let want_first: Vec<(u32, String)> = case["first_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x[0].as_u64().unwrap() as u32,
                    x[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(first, want_first, "{name}");
        for (endpoint, n) in case["positions_owned"].as_object().unwrap() {
            let owned = r.items().filter(|(_, e)| e == endpoint).count() as u64;
            assert_eq!(owned, n.as_u64().unwrap(), "{name}: {endpoint}");
        }
        for route in case["routes"].as_array().unwrap() {
            let id = hex::decode(route["trace_id"].as_str().unwrap()).unwrap();
            assert_eq!(
                position_of(&id) as u64,
                route["position"].as_u64().unwrap(),
                "{name}"
            );
            let b = r.backend_for(&id).unwrap();
            assert_eq!(
                r.endpoints()[b],
                route["endpoint"].as_str().unwrap(),
                "{name}: trace id {}",
                route["trace_id"]
            );
            routes_checked += 1;
        }
    }
    assert!(routes_checked > 150, "{routes_checked}");
}

#[test]
fn an_empty_ring_routes_nothing() {
    let r = HashRing::new(&[]).unwrap();
    assert!(r.is_empty());
    assert_eq!(r.backend_for(b"x"), None);
    let p = reference_traces(&one_scope_request(3));
    assert!(split(&p, &RoutingKey::TraceId, &r).unwrap().is_empty());
}

#[test]
fn rings_compare_by_items() {
    assert_eq!(ring(&["a:1", "b:1"]), ring(&["a:1", "b:1"]));
    assert_ne!(ring(&["a:1", "b:1"]), ring(&["a:1", "c:1"]));
    // A duplicated endpoint adds no position (each collides with its first copy's).
    assert_eq!(
        ring(&["a:1", "a:1", "b:1"]).items().count(),
        ring(&["a:1", "b:1"]).items().count()
    );
}

/// The key of a span for the `service` routing key is `service.name=<value>|`, the
/// Collector's attribute encoding; a span without it hashes `service.name=|`.
#[test]
fn service_routing_of_spans_hashes_the_collectors_key_string() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let mut req = one_scope_request(2);
    let rs = &mut req.resource_spans[0];
    rs.resource.get_or_insert_with(Default::default).attributes = vec![KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("checkout".into())),
        }),
        ..Default::default()
    }];
    let p = reference_traces(&req);
    let pos = item_positions(&p, &RoutingKey::Service).unwrap();
    assert_eq!(pos[0].1, vec![position_of(b"service.name=checkout|"); 2]);
    req.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .clear();
    let p = reference_traces(&req);
    let pos = item_positions(
        &p,
        &RoutingKey::Attributes(vec!["service.name".into(), "span.kind".into()]),
    )
    .unwrap();
    let kind = span_kind_name(
        p.table(Table::Spans)
            .column_by_name(col::KIND)
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
    );
    assert_eq!(
        pos[0].1[0],
        position_of(format!("service.name=|span.kind={kind}|").as_bytes())
    );
}

#[test]
fn keys_that_do_not_apply_to_a_signal_are_errors() {
    let p = reference_traces(&one_scope_request(1));
    let e = item_positions(&p, &RoutingKey::Metric).unwrap_err();
    assert_eq!(e.to_string(), "routing_key metric does not apply to traces");
    assert!(!RoutingKey::TraceId.supports(Signal::Metrics));
    assert!(RoutingKey::TraceId.supports(Signal::Logs));
}

/// A trace request whose spans share a few trace ids (the generator's ids are random per span).
fn arb_traces_with_shared_ids() -> impl Strategy<Value = ExportTraceServiceRequest> {
    (
        arb_traces_request(),
        prop::collection::vec(any::<[u8; 16]>(), 1..5),
        any::<u64>(),
    )
        .prop_map(|(mut req, pool, seed)| {
            let mut k = seed;
            for rs in &mut req.resource_spans {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        k = k
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        s.trace_id = pool[(k >> 33) as usize % pool.len()].to_vec();
                    }
                }
            }
            req
        })
}

fn span_ids_and_traces(p: &Payload) -> Vec<(Vec<u8>, Vec<u8>)> {
    let spans = p.table(Table::Spans);
    let t = spans
        .column_by_name(col::TRACE_ID)
        .unwrap()
        .as_fixed_size_binary();
    let s = spans
        .column_by_name(col::SPAN_ID)
        .unwrap()
        .as_fixed_size_binary();
    (0..spans.num_rows())
        .map(|i| {
            let tid = if t.is_valid(i) {
                t.value(i).to_vec()
            } else {
                vec![0; 16]
            };
            let sid = if s.is_valid(i) {
                s.value(i).to_vec()
            } else {
                vec![]
            };
            (tid, sid)
        })
        .collect()
}

fn arb_endpoints(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,6}(\\.[a-z]{1,4})?:[0-9]{2,5}", 1..max)
        .prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Adding one backend to N moves about 1/(N+1) of the keys, and every key that moves goes
    /// to the new backend.
    #[test]
    fn adding_a_backend_moves_about_one_in_n_plus_one_keys_to_it(
        endpoints in arb_endpoints(9),
        new in "[a-z]{1,6}:[0-9]{2,5}",
        seed in any::<u64>(),
    ) {
        prop_assume!(!endpoints.contains(&new));
        let before = HashRing::new(&endpoints).unwrap();
        let mut more = endpoints.clone();
        more.push(new.clone());
        more.sort();
        let after = HashRing::new(&more).unwrap();
        let n = endpoints.len() as f64;
        let keys = 4000;
        let mut moved = 0;
        let mut x = seed | 1;
        for _ in 0..keys {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let key = [x.to_le_bytes(), x.rotate_left(29).to_le_bytes()].concat();
            let a = &before.endpoints()[before.backend_for(&key).unwrap()];
            let b = &after.endpoints()[after.backend_for(&key).unwrap()];
            if a != b {
                prop_assert_eq!(b, &new, "a key moved between two old backends");
                moved += 1;
            }
        }
        // The new backend owns about 100 of 100 (N + 1) points; its share of the circle
        // varies with where its points land: allow a wide band around 1 / (N + 1).
        let share = f64::from(moved) / f64::from(keys);
        let expected = 1.0 / (n + 1.0);
        prop_assert!(share > expected * 0.4 && share < expected * 2.2,
            "moved {share:.3}, expected about {expected:.3} (N = {n})");
    }

    /// The split of a trace payload equals the span-by-span model: every span lands in the part
    /// of the backend its trace id hashes to, each exactly once, parts are valid payloads, and
    /// all spans of a trace share a part.
    #[test]
    fn splitting_traces_sends_each_span_to_its_trace_ids_backend(
        req in arb_traces_with_shared_ids(),
        endpoints in arb_endpoints(5),
    ) {
        let p = reference_traces(&req);
        let r = HashRing::new(&endpoints).unwrap();
        let parts = split(&p, &RoutingKey::TraceId, &r).unwrap();
        let mut seen = Vec::new();
        let mut part_of_trace: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (b, part) in &parts {
            part.validate().unwrap();
            prop_assert!(!part.is_empty());
            for (tid, sid) in span_ids_and_traces(part) {
                prop_assert_eq!(r.backend_for(&tid), Some(*b));
                prop_assert_eq!(*part_of_trace.entry(tid.clone()).or_insert(*b), *b);
                seen.push((tid, sid));
            }
        }
        let mut want = span_ids_and_traces(&p);
        want.sort();
        seen.sort();
        prop_assert_eq!(seen, want);
        let backends: BTreeSet<usize> = parts.iter().map(|(b, _)| *b).collect();
        prop_assert_eq!(backends.len(), parts.len());
    }

    /// The split by the ring equals the split it replaced, one filter per backend: the same
    /// backends, and every table of every part the same rows in the same order.
    #[test]
    fn splitting_equals_one_filter_per_backend(
        req in arb_traces_with_shared_ids(),
        m in arb_metrics_request(),
        endpoints in arb_endpoints(5),
    ) {
        let r = HashRing::new(&endpoints).unwrap();
        for (p, key) in [
            (reference_traces(&req), RoutingKey::TraceId),
            (reference_metrics(&m), RoutingKey::StreamId),
        ] {
            let positions = item_positions(&p, &key).unwrap();
            let ours = split_by_positions(&p, &positions, &r).unwrap();
            let want = split_per_backend_filter(&p, &positions, &r).unwrap();
            prop_assert_eq!(ours.len(), want.len());
            for ((b, part), (wb, model)) in ours.iter().zip(&want) {
                prop_assert_eq!(b, wb);
                for &t in p.signal().tables() {
                    prop_assert_eq!(part.table(t), model.table(t), "{:?}", t);
                }
            }
        }
    }

    /// Logs and metrics under every key they take: each item exactly once, every part valid,
    /// every item of a part hashing to that part's backend.
    #[test]
    fn splitting_logs_and_metrics_keeps_every_item_once(
        l in arb_logs_request(),
        m in arb_metrics_request(),
        endpoints in arb_endpoints(4),
    ) {
        let r = HashRing::new(&endpoints).unwrap();
        let attrs = RoutingKey::Attributes(vec!["service.name".into(), "log.severity".into()]);
        for (p, keys) in [
            (reference_logs(&l), vec![RoutingKey::Service, RoutingKey::Resource, attrs.clone()]),
            (reference_metrics(&m), vec![RoutingKey::Service, RoutingKey::Resource, RoutingKey::Metric, RoutingKey::StreamId, attrs.clone()]),
        ] {
            for key in keys {
                let parts = split(&p, &key, &r).unwrap();
                let mut total = 0;
                for (b, part) in &parts {
                    part.validate().unwrap();
                    total += part.item_count();
                    for (_, pos) in item_positions(part, &key).unwrap() {
                        for x in pos {
                            prop_assert_eq!(r.backend_at(x), Some(*b), "{:?}", key);
                        }
                    }
                }
                prop_assert_eq!(total, p.item_count(), "{:?}", key);
            }
            // A trace-id split of logs routes records with ids by their hex; records without
            // one go anywhere, but every record goes somewhere once.
            if p.signal() == Signal::Logs {
                let parts = split(&p, &RoutingKey::TraceId, &r).unwrap();
                prop_assert_eq!(parts.iter().map(|(_, x)| x.item_count()).sum::<usize>(), p.item_count());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire forms: routed by a skim of their trace ids

/// `bodies` as one wire-form payload (a `batch` of several requests), or `None` if one of
/// them is not clean.
fn wire_payload(signal: Signal, bodies: &[Vec<u8>]) -> Option<Payload> {
    let parts: Option<Vec<Payload>> = bodies
        .iter()
        .map(|b| {
            let body = bytes::Bytes::from(b.clone());
            let skim = crate::otlp::skim(signal, &body)?;
            Some(Payload::from_wire(
                signal,
                crate::payload::WireForm::new(body, &skim),
            ))
        })
        .collect();
    let merged = Payload::concat(signal, &parts?).ok()?;
    merged.wire()?;
    Some(merged)
}

/// `p` without its resources that hold no scope at all (no item under them). The decoded
/// split keeps such a resource in a part whose scopes all kept an item (an untouched container
/// table keeps its rows) and drops it otherwise; the wire split drops it from every part of a
/// split payload. Either way no item is under it, so the comparison leaves it out.
fn without_scopeless_resources(p: &Payload) -> Payload {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let bytes = crate::otlp::encode_to_vec(p);
    let kept = match p.signal() {
        Signal::Traces => {
            let mut r = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            r.resource_spans.retain(|r| !r.scope_spans.is_empty());
            r.encode_to_vec()
        }
        Signal::Logs => {
            let mut r = ExportLogsServiceRequest::decode(&bytes[..]).unwrap();
            r.resource_logs.retain(|r| !r.scope_logs.is_empty());
            r.encode_to_vec()
        }
        Signal::Metrics => bytes,
    };
    crate::otlp::decode(p.signal(), &kept).unwrap()
}

/// The wire split against the decoded split of the same payload: the same backends in the
/// same order, every wire part still a wire form with its item count, and its bytes decoding
/// to exactly the decoded part (every table, row for row: the same items in the same order,
/// under the same resource and scope data; resources without any scope aside, see
/// [`without_scopeless_resources`]). Exact order, not multisets: both keep the
/// payload's order within a backend (runs of items, containers in order), so anything
/// weaker would hide a re-framing that reorders.
fn assert_wire_split_is_the_decoded_split(
    wire: &Payload,
    ring: &HashRing,
) -> Result<(), TestCaseError> {
    let signal = wire.signal();
    let bytes = wire.wire().unwrap().to_bytes();
    let decoded = crate::otlp::decode(signal, &bytes).unwrap();
    let want = split(&decoded, &RoutingKey::TraceId, ring).unwrap();
    let got = split_wire(wire, &RoutingKey::TraceId, ring)
        .expect("a wire form under traceID")
        .unwrap();
    prop_assert!(wire.wire().unwrap().items() == decoded.item_count());
    prop_assert_eq!(
        got.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        want.iter().map(|(b, _)| *b).collect::<Vec<_>>()
    );
    for ((b, part), (_, model)) in got.iter().zip(&want) {
        let form = part.wire().expect("a wire part stays a wire form");
        prop_assert_eq!(form.items(), model.item_count(), "backend {}", b);
        prop_assert_eq!(part.item_count(), model.item_count());
        prop_assert!(form.items() > 0);
        let again = crate::otlp::decode(signal, &form.to_bytes()).unwrap();
        let (again, model) = (
            without_scopeless_resources(&again),
            without_scopeless_resources(model),
        );
        if let Some(diff) = crate::otlp::testing::payload_diff(&again, &model) {
            prop_assert!(false, "backend {}: {}", b, diff);
        }
        // A part is a clean request itself: a removed backend's re-route splits it again.
        prop_assert!(crate::otlp::skim(signal, &form.to_bytes()).is_some());
        assert_a_part_is_a_wire_form_like_any(part, &model)?;
    }
    // A removed backend's part re-routed through the ring without it: split again (its
    // re-framed resources are ranges of a buffer of its own), the same as its tables'.
    if let [_, rest @ ..] = ring.endpoints()
        && !rest.is_empty()
    {
        let smaller = HashRing::new(rest).unwrap();
        for (_, part) in &got {
            assert_wire_split_once(part, &smaller)?;
        }
    }
    // The parts batched again (a `batch` after the split, or a queue's batches merged): one
    // wire form holding every part's bytes in turn.
    if got.is_empty() {
        return Ok(());
    }
    let again = Payload::concat(
        signal,
        &got.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
    )
    .unwrap();
    let form = again.wire().expect("wire parts concatenate to a wire form");
    let mut appended = Vec::new();
    got.iter()
        .for_each(|(_, p)| p.wire().unwrap().write_to(&mut appended));
    prop_assert_eq!(&form.to_bytes()[..], &appended[..]);
    prop_assert_eq!(again.item_count(), decoded.item_count());
    Ok(())
}

/// [`assert_wire_split_is_the_decoded_split`] without going deeper.
fn assert_wire_split_once(wire: &Payload, ring: &HashRing) -> Result<(), TestCaseError> {
    let signal = wire.signal();
    let decoded = crate::otlp::decode(signal, &wire.wire().unwrap().to_bytes()).unwrap();
    let want = split(&decoded, &RoutingKey::TraceId, ring).unwrap();
    let got = split_wire(wire, &RoutingKey::TraceId, ring)
        .expect("a wire form under traceID")
        .unwrap();
    prop_assert_eq!(
        got.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        want.iter().map(|(b, _)| *b).collect::<Vec<_>>()
    );
    for ((b, part), (_, model)) in got.iter().zip(&want) {
        let again = crate::otlp::decode(signal, &part.wire().unwrap().to_bytes()).unwrap();
        let (again, model) = (
            without_scopeless_resources(&again),
            without_scopeless_resources(model),
        );
        if let Some(diff) = crate::otlp::testing::payload_diff(&again, &model) {
            prop_assert!(false, "split again, backend {}: {}", b, diff);
        }
    }
    Ok(())
}

/// A split part (resources taken whole, and resources re-framed into a pooled buffer) behaves
/// as any wire form: its slices are its bytes in order; it counts its bytes in the memory
/// account; split at resources (`batch`'s and `max_request_size`'s split) its pieces are its
/// bytes and items; its tables, read, are decoded once from them.
fn assert_a_part_is_a_wire_form_like_any(
    part: &Payload,
    model: &Payload,
) -> Result<(), TestCaseError> {
    let form = part.wire().unwrap();
    let bytes = form.to_bytes();
    prop_assert_eq!(bytes.len(), form.len());
    let slices = crate::otlp::encode::encode_to_slices(part);
    prop_assert_eq!(slices.concat(), bytes.to_vec());
    prop_assert!(slices.iter().all(|s| !s.is_empty()));
    prop_assert_eq!(part.memory_size(), form.len());
    for max in [1, 2, 5] {
        let pieces = part.split_items(max).unwrap();
        prop_assert_eq!(
            pieces.iter().map(Payload::item_count).sum::<usize>(),
            part.item_count()
        );
        let mut joined = Vec::new();
        let mut decoded_pieces = Vec::new();
        for p in &pieces {
            let piece_bytes = crate::otlp::encode_to_vec(p);
            if let Some(w) = p.wire() {
                prop_assert_eq!(w.len(), piece_bytes.len());
                prop_assert!(w.items() <= max || w.resource_count() == 1);
            }
            decoded_pieces.push(crate::otlp::decode(part.signal(), &piece_bytes).unwrap());
            joined.extend_from_slice(&piece_bytes);
        }
        if pieces.iter().all(|p| p.wire().is_some()) {
            prop_assert_eq!(
                &joined[..],
                &bytes[..],
                "split at resources: the same bytes"
            );
        }
        let back = Payload::concat(part.signal(), &decoded_pieces).unwrap();
        prop_assert_eq!(back.item_count(), model.item_count());
    }
    // Read: the tables are the part's, decoded from its bytes.
    if let Some(diff) = crate::otlp::testing::payload_diff(
        &without_scopeless_resources(part),
        &without_scopeless_resources(model),
    ) {
        prop_assert!(false, "read tables: {}", diff);
    }
    prop_assert!(part.wire().is_some(), "read, it still holds its bytes");
    Ok(())
}

/// `resources` × `scopes` × `spans` spans of `traces` distinct traces interleaved (as a
/// service's batch holds many traces at once), names of 80 bytes: a batch as `batch` hands
/// the `loadbalancing` exporter.
fn interleaved_traces(resources: usize, scopes: usize, spans: usize, traces: u32) -> Vec<u8> {
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let mut n = 0u32;
    let req = ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("svc-{r}"))),
                        }),
                        key_strindex: 0,
                    }],
                    ..Default::default()
                }),
                scope_spans: (0..scopes)
                    .map(|s| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope-{s}"),
                            ..Default::default()
                        }),
                        spans: (0..spans)
                            .map(|_| {
                                n += 1;
                                let mut trace_id = [0u8; 16];
                                trace_id[..4].copy_from_slice(&(n % traces).to_be_bytes());
                                trace_id[15] = 1;
                                Span {
                                    trace_id: trace_id.to_vec(),
                                    span_id: u64::from(n).to_be_bytes().to_vec(),
                                    name: format!("{n:080}"),
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    };
    req.encode_to_vec()
}

/// The splitter a thread keeps between splits (its lists reused) and the part buffers let go
/// and written again: a batch-sized traces split, a logs split in between (another signal's
/// splitter), smaller and larger batches after, each the decoded split exactly while the
/// parts of the ones before are still held or already dropped.
#[test]
fn splits_one_after_another_reuse_the_splitter_and_buffers_and_stay_exact() {
    use prost::Message;
    let r = ring(&["a:1", "b:2", "c:3"]);
    let check = |bodies: &[Vec<u8>], signal: Signal| {
        let wire = wire_payload(signal, bodies).expect("clean");
        assert_wire_split_is_the_decoded_split(&wire, &r).unwrap();
        split_wire(&wire, &RoutingKey::TraceId, &r)
            .unwrap()
            .unwrap()
    };
    let held = check(&[interleaved_traces(4, 2, 120, 40)], Signal::Traces);
    assert_eq!(held.len(), 3, "the batch spreads over the three backends");
    let mut logs = crate::otlp::testing::without_entity_refs_logs(
        opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
            resource_logs: vec![Default::default()],
        },
    );
    logs.resource_logs[0].scope_logs = vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
        log_records: (0..40u8)
            .map(|i| opentelemetry_proto::tonic::logs::v1::LogRecord {
                trace_id: vec![i + 1; 16],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }];
    check(&[logs.encode_to_vec()], Signal::Logs);
    check(&[interleaved_traces(1, 1, 7, 5)], Signal::Traces);
    drop(held);
    check(
        &[
            interleaved_traces(2, 3, 60, 20),
            interleaved_traces(3, 1, 150, 45),
        ],
        Signal::Traces,
    );
    check(&[interleaved_traces(4, 2, 120, 40)], Signal::Traces);
}

/// A field `field` of length-delimited `body`: key, length, bytes.
fn framed(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![((field << 3) | 2) as u8];
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// The split reads only the first field of a span when the skim found every span's trace id
/// leading. Where it does not lead — a second `trace_id` later in the span (the last wins,
/// as the decoder reads a field given twice) or the trace id after other fields — the skim
/// says so for that resource and the walk reads the whole span: the split still equals the
/// decoded split, resource by resource, in one request mixing both kinds of resource.
#[test]
fn spans_whose_trace_id_does_not_lead_are_walked_whole_and_routed_as_decoded() {
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    let plain = |i: u8| {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("op{i}"),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let given_twice = |i: u8| {
        let mut s = plain(i);
        s.extend(framed(1, &[i.wrapping_mul(37).wrapping_add(101); 16]));
        s
    };
    let after_other_fields = |i: u8| {
        let mut s = framed(2, &[i; 8]);
        s.extend(framed(5, format!("op{i}").as_bytes()));
        s.extend(framed(1, &[i; 16]));
        s
    };
    let resource = |spans: Vec<Vec<u8>>| {
        let scope: Vec<u8> = spans.iter().flat_map(|s| framed(2, s)).collect();
        framed(1, &framed(2, &scope))
    };
    let leading = resource((1..=40).map(plain).collect());
    let mixed = resource(
        (1..=60u8)
            .map(|i| match i % 3 {
                0 => plain(i),
                1 => given_twice(i),
                _ => after_other_fields(i),
            })
            .collect(),
    );
    let request = [leading.clone(), mixed.clone(), leading].concat();
    let skim = crate::otlp::skim(Signal::Traces, &request).expect("clean");
    let leads: Vec<bool> = skim.resources.iter().map(|r| r.trace_id_leads).collect();
    assert_eq!(leads, [true, false, true]);
    // Each kind alone: a span given its trace id twice, and one with it after other fields.
    for i in [1u8, 2] {
        let span = if i == 1 {
            given_twice(7)
        } else {
            after_other_fields(7)
        };
        let skim = crate::otlp::skim(Signal::Traces, &resource(vec![plain(3), span])).unwrap();
        assert!(!skim.resources[0].trace_id_leads);
    }
    let wire = wire_payload(Signal::Traces, &[request]).expect("clean");
    for endpoints in [
        &["a:1", "b:2", "c:3"][..],
        &["a:1", "b:2"],
        &["x:9", "y:9", "z:9", "w:9"],
    ] {
        assert_wire_split_is_the_decoded_split(&wire, &ring(endpoints)).unwrap();
    }
}

/// Trace requests with shared ids, some spans without one, some resources sharing one trace
/// across their scopes: 1-3 requests batched.
fn arb_wire_traces() -> impl Strategy<Value = Vec<Vec<u8>>> {
    use crate::otlp::testing::without_entity_refs_traces;
    use prost::Message;
    prop::collection::vec(
        (arb_traces_with_shared_ids(), any::<u64>()).prop_map(|(mut req, seed)| {
            // About one span in eight without a trace id (hashed as sixteen zeros).
            let mut k = seed;
            for s in req
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
            {
                k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
                if (k >> 60) & 7 == 0 {
                    s.trace_id.clear();
                }
            }
            without_entity_refs_traces(req).encode_to_vec()
        }),
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Routing a traces wire form by a skim of its trace ids sends the same spans to the same
    /// backends, with the same resources and scopes, as routing its decoded tables.
    #[test]
    fn splitting_a_traces_wire_form_equals_splitting_its_tables(
        bodies in arb_wire_traces(),
        endpoints in arb_endpoints(5),
    ) {
        let wire = wire_payload(Signal::Traces, &bodies);
        prop_assume!(wire.is_some());
        let r = HashRing::new(&endpoints).unwrap();
        assert_wire_split_is_the_decoded_split(&wire.unwrap(), &r)?;
    }

    /// Logs by `traceID`, every record with a non-zero id (a record without one goes to a
    /// random backend on either path, so it cannot be compared record by record; the next
    /// test counts them): the same split as the tables'.
    #[test]
    fn splitting_a_logs_wire_form_equals_splitting_its_tables(
        reqs in prop::collection::vec((arb_logs_request(), prop::collection::vec(any::<[u8; 16]>(), 1..4)), 1..3),
        endpoints in arb_endpoints(4),
    ) {
        use prost::Message;
        let bodies: Vec<Vec<u8>> = reqs
            .into_iter()
            .map(|(mut req, pool)| {
                let records = req
                    .resource_logs
                    .iter_mut()
                    .flat_map(|r| &mut r.scope_logs)
                    .flat_map(|s| &mut s.log_records);
                for (i, l) in records.enumerate() {
                    let mut id = pool[i % pool.len()];
                    id[15] |= 1;
                    l.trace_id = id.to_vec();
                }
                crate::otlp::testing::without_entity_refs_logs(req).encode_to_vec()
            })
            .collect();
        let wire = wire_payload(Signal::Logs, &bodies);
        prop_assume!(wire.is_some());
        let r = HashRing::new(&endpoints).unwrap();
        assert_wire_split_is_the_decoded_split(&wire.unwrap(), &r)?;
    }

    /// Logs without trace ids (random backends): every record goes to exactly one part, and
    /// the parts decode to valid payloads holding them all.
    #[test]
    fn a_logs_wire_form_without_trace_ids_keeps_every_record_once(
        req in arb_logs_request(),
        endpoints in arb_endpoints(4),
    ) {
        use prost::Message;
        let mut req = crate::otlp::testing::without_entity_refs_logs(req);
        for s in req.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs) {
            for l in &mut s.log_records {
                l.trace_id.clear();
            }
        }
        let wire = wire_payload(Signal::Logs, &[req.encode_to_vec()]);
        prop_assume!(wire.is_some());
        let wire = wire.unwrap();
        let r = HashRing::new(&endpoints).unwrap();
        let parts = split_wire(&wire, &RoutingKey::TraceId, &r).unwrap().unwrap();
        let mut total = 0;
        for (_, part) in &parts {
            let again = crate::otlp::decode(Signal::Logs, &part.wire().unwrap().to_bytes()).unwrap();
            again.validate().unwrap();
            prop_assert_eq!(again.item_count(), part.item_count());
            total += again.item_count();
        }
        prop_assert_eq!(total, wire.item_count());
    }
}

/// Other keys, metrics and decoded payloads are left to the decoded split.
#[test]
fn only_wire_forms_under_trace_id_split_as_bytes() {
    let r = ring(&["a:1", "b:2"]);
    let wire = crate::otlp::testing::wire_traces(0, 2, 3, 4);
    assert!(split_wire(&wire, &RoutingKey::Service, &r).is_none());
    let decoded = reference_traces(&one_scope_request(3));
    assert!(split_wire(&decoded, &RoutingKey::TraceId, &r).is_none());
    // An empty ring routes nothing, as the decoded split.
    let empty = HashRing::new(&[]).unwrap();
    assert!(
        split_wire(&wire, &RoutingKey::TraceId, &empty)
            .unwrap()
            .unwrap()
            .is_empty()
    );
    // All spans of `wire_traces` share one trace id: the payload goes whole, uncopied.
    let parts = split_wire(&wire, &RoutingKey::TraceId, &r)
        .unwrap()
        .unwrap();
    assert_eq!(parts.len(), 1);
    assert!(std::ptr::eq(
        parts[0].1.wire().unwrap().to_bytes().as_ptr(),
        wire.wire().unwrap().to_bytes().as_ptr()
    ));
}
