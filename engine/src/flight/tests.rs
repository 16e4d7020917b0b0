//! The Flight codec: round trips (fixtures, proptest payloads, several payloads per stream so
//! dictionary deltas and resets happen), what crosses the wire once, limits, and decoding
//! mutated streams without panicking.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt8Array};
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow::ipc::{MessageHeader, root_as_message};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;

use super::*;
use crate::otlp::testing::{
    arb_logs_request, arb_metrics_request, arb_traces_request, assert_payload_eq, payload_diff,
    reference_logs, reference_metrics, reference_traces,
};
use crate::otlp::{decode_json, encode_to_vec};
use crate::payload::Payload;
use crate::schema::{Signal, Table, col};

const ALL_COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Zstd, Compression::Lz4];

/// Encodes `payloads` on one stream and decodes them back, checking sequence numbers.
fn round_trip(compression: Compression, payloads: &[Payload]) -> Vec<Payload> {
    let mut enc = Encoder::new(compression);
    let mut dec = Decoder::new(Limits::default());
    payloads
        .iter()
        .map(|p| {
            let mut msgs = Vec::new();
            let seq = enc.encode(p, &mut msgs).expect("encode");
            let mut out = None;
            for m in &msgs {
                if let Some(d) = dec.decode(m).expect("decode") {
                    assert!(out.is_none(), "one payload per PayloadEnd");
                    assert_eq!(d.seq, seq);
                    assert_eq!(d.signal, p.signal());
                    out = Some(d.payload.expect("a valid payload"));
                }
            }
            out.expect("the last message ends the payload")
        })
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/testdata/otlp-examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Flight and OTLP deliver the same data: the fixtures, read as OTLP/JSON, come out of a Flight
/// round trip as payloads equal to what went in, encoding to the same OTLP bytes.
#[test]
fn fixtures_round_trip_to_the_same_otlp() {
    for (file, signal) in [
        ("trace.json", Signal::Traces),
        ("metrics.json", Signal::Metrics),
        ("logs.json", Signal::Logs),
    ] {
        let mut p = decode_json(signal, &fixture(file)).unwrap();
        p.origin = Some("10.1.2.3:4567".parse().unwrap());
        for c in ALL_COMPRESSIONS {
            let back = round_trip(c, &[p.clone(), p.clone()]);
            for b in &back {
                assert_payload_eq(&p, b);
                assert_eq!(encode_to_vec(b), encode_to_vec(&p), "{file} {c:?}");
                assert_eq!(b.origin, p.origin);
            }
        }
    }
}

fn arb_payloads() -> impl Strategy<Value = Vec<Payload>> {
    let one = prop_oneof![
        arb_traces_request().prop_map(|r| reference_traces(&r)),
        arb_metrics_request().prop_map(|r| reference_metrics(&r)),
        arb_logs_request().prop_map(|r| reference_logs(&r)),
    ];
    prop::collection::vec(one, 1..5)
}

fn arb_compression() -> impl Strategy<Value = Compression> {
    prop::sample::select(ALL_COMPRESSIONS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any payloads, any signals mixed on one stream, any compression: each comes back equal,
    /// with the same OTLP encoding.
    #[test]
    fn payloads_round_trip(payloads in arb_payloads(), c in arb_compression()) {
        let back = round_trip(c, &payloads);
        for (p, b) in payloads.iter().zip(&back) {
            prop_assert_eq!(payload_diff(p, b), None);
            prop_assert_eq!(encode_to_vec(b), encode_to_vec(p));
        }
    }

    /// Spans whose trace ids repeat and whose parents are spans of the same batch (the wire
    /// sends such ids as references), with empty ids, duplicate span ids, parents outside
    /// the batch, in one or several record batches: each comes back equal.
    #[test]
    fn spans_with_shared_ids_round_trip(
        spans in prop::collection::vec((0usize..5, 0usize..7, 0usize..9), 1..60),
        c in arb_compression(),
        max in prop::sample::select(vec![64usize, 300, 1 << 20]),
    ) {
        // Trace ids from a pool of four (or empty); span ids from a pool of six (or empty:
        // duplicates happen); parents: none, a span id of the pool (in the batch or not), or
        // an id no span has.
        let trace_pool: Vec<Vec<u8>> = (1..=4u8).map(|i| vec![i; 16]).collect();
        let span_pool: Vec<Vec<u8>> = (1..=6u8).map(|i| vec![i, 0, 0, 0, 0, 0, 0, i]).collect();
        let pick = |pool: &[Vec<u8>], i: usize| pool.get(i).cloned().unwrap_or_default();
        let spans: Vec<Span> = spans
            .iter()
            .map(|&(t, s, p)| Span {
                trace_id: pick(&trace_pool, t),
                span_id: pick(&span_pool, s),
                parent_span_id: match p {
                    0 => vec![],
                    8 => vec![9; 8],
                    p => pick(&span_pool, p - 1),
                },
                name: format!("s{t}{s}{p}"),
                start_time_unix_nano: 1_700_000_000_000_000_000 + p as u64,
                end_time_unix_nano: 1_700_000_000_000_000_500 + s as u64,
                ..Default::default()
            })
            .collect();
        let payload = reference_traces(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        });
        let mut enc = Encoder::new(c).with_max_message_bytes(max);
        let mut dec = Decoder::new(Limits::default());
        let mut msgs = Vec::new();
        enc.encode(&payload, &mut msgs).unwrap();
        let mut back = None;
        for m in &msgs {
            if let Some(d) = dec.decode(m).unwrap() {
                back = Some(d.payload.unwrap());
            }
        }
        let back = back.unwrap();
        prop_assert_eq!(payload_diff(&payload, &back), None);
        prop_assert_eq!(encode_to_vec(&back), encode_to_vec(&payload));
    }

    /// Small messages: tables go as several record batches, and still come back whole.
    #[test]
    fn tables_split_into_several_record_batches_come_back_whole(req in arb_traces_request(), max in 1usize..400) {
        let p = reference_traces(&req);
        let mut enc = Encoder::new(Compression::None).with_max_message_bytes(max);
        let mut dec = Decoder::new(Limits::default());
        let mut msgs = Vec::new();
        enc.encode(&p, &mut msgs).unwrap();
        let mut back = None;
        for m in &msgs {
            if let Some(d) = dec.decode(m).unwrap() {
                back = Some(d.payload.unwrap());
            }
        }
        prop_assert_eq!(payload_diff(&p, &back.unwrap()), None);
    }

    /// Mutated streams (bytes flipped in any part of any message, messages dropped or
    /// repeated) are refused or read, never a panic; whatever is read passes the same checks
    /// as decoded OTLP and encodes to OTLP.
    #[test]
    fn mutated_streams_never_panic(
        payloads in arb_payloads(),
        c in arb_compression(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..6, any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut enc = Encoder::new(c);
        let mut msgs = Vec::new();
        for p in &payloads {
            enc.encode(p, &mut msgs).unwrap();
        }
        for (which, what, at, byte) in edits {
            let i = which.index(msgs.len());
            let m = &mut msgs[i];
            let flip = |b: &Bytes| -> Bytes {
                if b.is_empty() {
                    return Bytes::from(vec![byte]);
                }
                let mut v = b.to_vec();
                let k = at.index(v.len());
                v[k] ^= byte | 1;
                Bytes::from(v)
            };
            match what {
                0 => m.header = flip(&m.header),
                1 => m.body = flip(&m.body),
                2 => m.app_metadata = flip(&m.app_metadata),
                3 => { let len = at.index(m.body.len() + 1); m.body = m.body.slice(..len); }
                4 => { msgs.remove(i); }
                _ => { let m = m.clone(); msgs.insert(i, m); }
            }
            if msgs.is_empty() {
                break;
            }
        }
        let panics_before = decode::panics_caught();
        let mut dec = Decoder::new(Limits::default());
        for m in &msgs {
            match dec.decode(m) {
                Ok(Some(Decoded { payload: Ok(p), .. })) => {
                    p.validate().unwrap();
                    validate_content(&p).unwrap();
                    let _ = encode_to_vec(&p);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        prop_assert_eq!(decode::panics_caught(), panics_before, "arrow-ipc panicked on a mutated message");
    }
}

fn trace_with_names(names: impl IntoIterator<Item = String>, pod: &str) -> Payload {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let spans = names
        .into_iter()
        .map(|name| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name,
            attributes: vec![
                kv("http.route", "/api/v1/cart"),
                kv("http.request.method", "GET"),
            ],
            ..Default::default()
        })
        .collect();
    reference_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("k8s.pod.name", pod), kv("service.name", "cart")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn header_types(msgs: &[WireMessage]) -> Vec<MessageHeader> {
    msgs.iter()
        .filter(|m| !m.header.is_empty())
        .map(|m| root_as_message(&m.header).unwrap().header_type())
        .collect()
}

/// Keys, names and resource values cross the wire once per stream: a second payload with the
/// same vocabulary sends no dictionary at all, and one new span name is a delta of one value.
#[test]
fn dictionaries_cross_the_wire_once_per_stream() {
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("GET /route/{}", i % 3))
            .collect::<Vec<_>>()
    };
    let a = trace_with_names(names(50), "cart-1");
    let mut enc = Encoder::new(Compression::None);
    let mut first = Vec::new();
    enc.encode(&a, &mut first).unwrap();
    let types = header_types(&first);
    assert!(types.contains(&MessageHeader::Schema));
    assert!(types.contains(&MessageHeader::DictionaryBatch));

    let mut second = Vec::new();
    enc.encode(&a, &mut second).unwrap();
    let types = header_types(&second);
    assert!(!types.contains(&MessageHeader::Schema), "schemas go once");
    assert!(
        !types.contains(&MessageHeader::DictionaryBatch),
        "nothing new, no dictionary: {types:?}"
    );
    let bytes = |m: &[WireMessage]| m.iter().map(WireMessage::len).sum::<usize>();
    assert!(
        bytes(&second) < bytes(&first),
        "{} vs {}",
        bytes(&second),
        bytes(&first)
    );

    let mut with_new = names(50);
    with_new[7] = "POST /new".into();
    let mut third = Vec::new();
    enc.encode(&trace_with_names(with_new, "cart-1"), &mut third)
        .unwrap();
    let deltas: Vec<_> = third
        .iter()
        .filter_map(|m| {
            let msg = root_as_message(&m.header).ok()?;
            let d = msg.header_as_dictionary_batch()?;
            Some((d.isDelta(), d.data()?.length()))
        })
        .collect();
    assert_eq!(deltas, vec![(true, 1)], "one span name added, as a delta");

    // And the receiver reads all three back.
    let mut dec = Decoder::new(Limits::default());
    let mut got = Vec::new();
    for m in first.iter().chain(&second).chain(&third) {
        if let Some(d) = dec.decode(m).unwrap() {
            got.push(d.payload.unwrap());
        }
    }
    assert_eq!(got.len(), 3);
    assert_payload_eq(&got[1], &a);
    assert_eq!(
        got[2].table(Table::Spans).num_rows(),
        50,
        "the third payload is whole"
    );
}

/// Past its bounds a stream dictionary starts over (a replacement, not a delta), and the
/// receiver keeps reading correctly; payloads hold only the values they use.
#[test]
fn dictionaries_start_over_past_their_bounds() {
    let per_batch = 20_000;
    let batches = MAX_DICTIONARY_ENTRIES / per_batch + 2;
    let payloads: Vec<Payload> = (0..batches)
        .map(|b| {
            trace_with_names(
                (0..per_batch).map(|i| format!("span {}", b * per_batch + i)),
                &format!("pod-{b}"),
            )
        })
        .collect();
    let mut enc = Encoder::new(Compression::Zstd);
    let mut dec = Decoder::new(Limits::default());
    let mut replacements = 0;
    for p in &payloads {
        let mut msgs = Vec::new();
        enc.encode(p, &mut msgs).unwrap();
        for m in &msgs {
            if let Ok(msg) = root_as_message(&m.header)
                && let Some(d) = msg.header_as_dictionary_batch()
                && !d.isDelta()
            {
                replacements += 1;
            }
            if let Some(d) = dec.decode(m).unwrap() {
                let got = d.payload.unwrap();
                assert_payload_eq(p, &got);
                let names = got.table(Table::Spans).column_by_name(col::NAME).unwrap();
                let values = names.as_any_dictionary().values().len();
                assert!(values <= 2 * per_batch, "a payload holds {values} names");
            }
        }
    }
    // The first of each table's dictionaries, then the span names starting over.
    assert!(replacements > 4, "{replacements} replacements");
}

#[test]
fn the_hello_names_protocol_and_version() {
    assert_eq!(hello(), Bytes::from_static(b"sluice-arrow/2"));
    check_hello(&hello()).unwrap();
    // Version 1 (before the spans' id references) is another format: refused, never misread.
    let e = check_hello(b"sluice-arrow/1").unwrap_err();
    assert!(matches!(e, WireError::Version(_)));
    assert!(
        e.to_string().contains("sluice-arrow/1") && e.to_string().contains("sluice-arrow/2"),
        "{e}"
    );
    assert!(matches!(check_hello(b""), Err(WireError::Malformed(_))));
    assert!(matches!(
        check_hello(b"arrow-flight-sql"),
        Err(WireError::Malformed(_))
    ));
}

/// The table ids are part of the protocol: pinned, distinct, and none is the payload end.
#[test]
fn wire_table_ids_are_fixed() {
    let ids: Vec<u8> = Table::ALL.iter().map(|&t| wire_table_id(t)).collect();
    assert_eq!(
        ids,
        vec![
            1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
            33, 34, 35, 40, 41
        ]
    );
    for t in Table::ALL {
        assert_eq!(table_of_wire_id(wire_table_id(t)), Some(t));
    }
    assert_eq!(table_of_wire_id(PAYLOAD_END), None);
}

#[test]
fn payload_end_and_ack_round_trip() {
    let end = PayloadEnd {
        seq: 7,
        signal: Signal::Metrics,
        origin: Some("[::1]:80".parse().unwrap()),
    };
    assert_eq!(PayloadEnd::parse(&end.to_bytes()).unwrap(), end);
    let none = PayloadEnd {
        origin: None,
        ..end
    };
    assert_eq!(PayloadEnd::parse(&none.to_bytes()).unwrap(), none);
    let ack = Ack {
        seq: u64::MAX,
        code: Ack::RESOURCE_EXHAUSTED,
        message: "memory limiter".into(),
    };
    assert_eq!(Ack::parse(&ack.to_bytes()).unwrap(), ack);
    assert!(Ack::parse(&[0; 8]).is_err());
    assert!(PayloadEnd::parse(&[PAYLOAD_END, 1]).is_err());
}

/// A schema with other columns (another version, a bug) is refused as a version problem,
/// naming the column.
#[test]
fn a_different_schema_is_refused_clearly() {
    let schema = arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "parent_id",
        arrow::datatypes::DataType::UInt64,
        false,
    )]);
    let mut tracker = DictionaryTracker::new(false);
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        &schema,
        &mut tracker,
        &IpcWriteOptions::default(),
    );
    let msg = WireMessage {
        header: Bytes::from(encoded.ipc_message),
        body: Bytes::new(),
        app_metadata: Bytes::from(vec![wire_table_id(Table::Spans)]),
    };
    let e = Decoder::new(Limits::default()).decode(&msg).unwrap_err();
    assert!(matches!(e, WireError::Version(_)), "{e:?}");
    assert!(
        e.to_string().contains("parent_id") && e.to_string().contains("UInt64"),
        "{e}"
    );
}

fn decode_all(dec: &mut Decoder, msgs: &[WireMessage]) -> Result<Vec<Decoded>, WireError> {
    let mut out = Vec::new();
    for m in msgs {
        if let Some(d) = dec.decode(m)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// A payload over the receiver's limit is answered TooLarge, and the stream goes on: the next
/// payload (whose dictionaries build on the refused one's) is read correctly.
#[test]
fn a_payload_over_the_limit_is_refused_and_the_stream_goes_on() {
    let big = trace_with_names((0..5000).map(|i| format!("big {i}")), "p");
    let small = trace_with_names((0..10).map(|i| format!("big {i}")), "p");
    let mut enc = Encoder::new(Compression::Zstd).with_max_message_bytes(4096);
    let mut msgs = Vec::new();
    enc.encode(&big, &mut msgs).unwrap();
    enc.encode(&small, &mut msgs).unwrap();
    let mut dec = Decoder::new(Limits {
        max_payload_bytes: 50_000,
        ..Limits::default()
    });
    let got = decode_all(&mut dec, &msgs).unwrap();
    assert_eq!(got.len(), 2);
    assert!(
        matches!(&got[0].payload, Err(WireError::TooLarge(m)) if m.contains("split")),
        "{:?}",
        got[0].payload
    );
    assert_payload_eq(got[1].payload.as_ref().unwrap(), &small);
}

/// Data that decodes as Arrow but breaks what OTLP guarantees is refused for that payload
/// only.
#[test]
fn payloads_that_otlp_could_not_carry_are_refused() {
    let good = trace_with_names(["a".to_string()], "p");
    // An attribute whose type says Int while its str column is set.
    let attrs = good.table(Table::SpanAttrs);
    let mut columns: Vec<ArrayRef> = attrs.columns().to_vec();
    let type_col = attrs.schema().index_of(col::TYPE).unwrap();
    columns[type_col] = Arc::new(UInt8Array::from(vec![2u8; attrs.num_rows()]));
    let mut bad = good.clone();
    bad.set(
        Table::SpanAttrs,
        RecordBatch::try_new(attrs.schema(), columns).unwrap(),
    )
    .unwrap();
    // A span attached to a scope that does not exist.
    let spans = good.table(Table::Spans);
    let mut columns: Vec<ArrayRef> = spans.columns().to_vec();
    columns[0] = Arc::new(arrow::array::UInt32Array::from(vec![5u32]));
    let mut orphan = good.clone();
    orphan
        .set(
            Table::Spans,
            RecordBatch::try_new(spans.schema(), columns).unwrap(),
        )
        .unwrap();

    let mut enc = Encoder::new(Compression::None);
    let mut msgs = Vec::new();
    for p in [&bad, &orphan, &good] {
        enc.encode(p, &mut msgs).unwrap();
    }
    let got = decode_all(&mut Decoder::new(Limits::default()), &msgs).unwrap();
    assert!(
        matches!(&got[0].payload, Err(WireError::Malformed(m)) if m.contains("type")),
        "{:?}",
        got[0].payload
    );
    assert!(
        matches!(&got[1].payload, Err(WireError::Malformed(m)) if m.contains("parent_id")),
        "{:?}",
        got[1].payload
    );
    assert_payload_eq(got[2].payload.as_ref().unwrap(), &good);
}

/// Stream-level faults end the stream: a gap in the sequence, a message naming no table, a
/// record batch for a table whose schema never came, a declared decompressed size too large to
/// allocate.
#[test]
fn stream_faults_are_errors() {
    let p = trace_with_names(["a".to_string()], "p");
    let mut enc = Encoder::new(Compression::Zstd);
    let mut msgs = Vec::new();
    enc.encode(&p, &mut msgs).unwrap();

    let mut gap = msgs.clone();
    let last = gap.len() - 1;
    gap[last].app_metadata = PayloadEnd {
        seq: 2,
        signal: Signal::Traces,
        origin: None,
    }
    .to_bytes();
    let e = decode_all(&mut Decoder::new(Limits::default()), &gap).unwrap_err();
    assert!(e.to_string().contains("payload 2 after payload 0"), "{e}");

    let e = Decoder::new(Limits::default())
        .decode(&WireMessage {
            app_metadata: Bytes::from_static(&[99]),
            ..msgs[0].clone()
        })
        .unwrap_err();
    assert!(e.to_string().contains("names no table"), "{e}");

    let batch = msgs
        .iter()
        .position(|m| {
            root_as_message(&m.header).is_ok_and(|x| x.header_type() == MessageHeader::RecordBatch)
        })
        .unwrap();
    let e = Decoder::new(Limits::default())
        .decode(&msgs[batch])
        .unwrap_err();
    assert!(e.to_string().contains("before the schema"), "{e}");

    // Claim an absurd uncompressed length in a compressed buffer: refused before arrow-ipc
    // would allocate it.
    let mut bomb = msgs.clone();
    let msg = root_as_message(&bomb[batch].header).unwrap();
    let rb = msg.header_as_record_batch().unwrap();
    let buf = rb
        .buffers()
        .unwrap()
        .iter()
        .find(|b| b.length() >= 8)
        .unwrap();
    let mut body = bomb[batch].body.to_vec();
    let at = buf.offset() as usize;
    body[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
    bomb[batch].body = Bytes::from(body);
    let got = decode_all(&mut Decoder::new(Limits::default()), &bomb).unwrap();
    assert!(
        matches!(got[0].payload, Err(WireError::TooLarge(_))),
        "{:?}",
        got[0].payload
    );
}

/// Resource attribute values are dictionary-encoded on the wire only: in memory they stay
/// plain UTF-8, as the OTLP decoder makes them.
#[test]
fn wire_only_dictionaries_are_plain_in_memory() {
    let p = trace_with_names(["a".to_string()], "pod-1");
    let back = round_trip(Compression::None, &[p]);
    let str_col = back[0]
        .table(Table::ResourceAttrs)
        .column_by_name(col::STR)
        .unwrap()
        .clone();
    assert!(str_col.as_any().downcast_ref::<StringArray>().is_some());
}

/// A buffer whose length is not a whole number of its values (an offsets buffer one byte
/// short) is refused as malformed before arrow-ipc reads it: arrow-data's validation would
/// assert (panic) on it rather than report it. Found by `mutated_streams_never_panic`.
#[test]
fn a_buffer_of_partial_values_is_refused_without_a_panic() {
    let p = trace_with_names(["a".to_string(), "bb".to_string()], "p");
    let mut enc = Encoder::new(Compression::None);
    let mut msgs = Vec::new();
    enc.encode(&p, &mut msgs).unwrap();
    let spans_batch = msgs
        .iter()
        .position(|m| {
            m.app_metadata.first().and_then(|&id| table_of_wire_id(id)) == Some(Table::Spans)
                && root_as_message(&m.header)
                    .is_ok_and(|x| x.header_type() == MessageHeader::RecordBatch)
        })
        .unwrap();
    let widths = decode::buffer_widths(
        decode::wire_table(Table::Spans)
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type()),
    );
    let header = msgs[spans_batch].header.clone();
    let message = root_as_message(&header).unwrap();
    let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
    let (i, length_at) = buffers
        .iter()
        .enumerate()
        .zip(buffers.bytes().chunks(16))
        .find(|((i, b), _)| widths[*i] > 1 && b.length() >= widths[*i] as i64)
        .map(|((i, _), raw)| {
            // A flatbuffers `Buffer` struct: offset (i64), length (i64), in the header's bytes.
            (i, raw.as_ptr() as usize - header.as_ptr() as usize + 8)
        })
        .unwrap();
    let mut edited = header.to_vec();
    let length = i64::from_le_bytes(edited[length_at..length_at + 8].try_into().unwrap());
    edited[length_at..length_at + 8].copy_from_slice(&(length - 1).to_le_bytes());
    msgs[spans_batch].header = Bytes::from(edited);

    let panics_before = decode::panics_caught();
    let e = decode_all(&mut Decoder::new(Limits::default()), &msgs).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "buffer {i} is {} bytes, not a whole number",
            length - 1
        )),
        "{e}"
    );
    assert_eq!(decode::panics_caught(), panics_before);
}
