//! Capture reading: every format and compression reads back what was written (property
//! test over arbitrary OTLP of all three signals), and every kind of damage is an error that
//! names the file and the offset of the record.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;
use sluice_engine::Payload;
use sluice_engine::otlp::testing::{
    arb_logs_request, arb_metrics_request, arb_traces_request, payload_diff,
};
use sluice_engine::schema::Signal;

use super::reader::{CaptureError, FileReader, Sniffed, sniff_proto_signal};

/// A request as protobuf bytes with its signal.
#[derive(Clone, Debug)]
struct Req(Signal, Vec<u8>);

/// Arbitrary requests whose items carry the fields real exporters always write (times, a
/// metric name), so a protobuf record's signal can be told: the reader's documented rule.
fn arb_req() -> impl Strategy<Value = Req> {
    prop_oneof![
        arb_traces_request().prop_map(|mut r: ExportTraceServiceRequest| {
            for s in r
                .resource_spans
                .iter_mut()
                .flat_map(|r| &mut r.scope_spans)
                .flat_map(|s| &mut s.spans)
            {
                s.end_time_unix_nano |= 1;
            }
            Req(Signal::Traces, r.encode_to_vec())
        }),
        arb_metrics_request().prop_map(|mut r: ExportMetricsServiceRequest| {
            for m in r
                .resource_metrics
                .iter_mut()
                .flat_map(|r| &mut r.scope_metrics)
                .flat_map(|s| &mut s.metrics)
            {
                m.name.insert(0, 'm');
            }
            Req(Signal::Metrics, r.encode_to_vec())
        }),
        arb_logs_request().prop_map(|mut r: ExportLogsServiceRequest| {
            for l in r
                .resource_logs
                .iter_mut()
                .flat_map(|r| &mut r.scope_logs)
                .flat_map(|s| &mut s.log_records)
            {
                l.observed_time_unix_nano |= 1;
            }
            Req(Signal::Logs, r.encode_to_vec())
        }),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    JsonLines,
    JsonArray,
    Proto,
    /// The Collector's `compression: zstd`: length-prefixed zstd records.
    ProtoZstdRecords,
    JsonZstdRecords,
}

#[derive(Clone, Copy, Debug)]
enum Whole {
    None,
    Gzip,
    Zstd,
}

fn json_of(r: &Req) -> Vec<u8> {
    let p = sluice_engine::otlp::decode(r.0, &r.1).expect("valid request");
    sluice_engine::otlp::encode_json(&p).expect("encodes")
}

fn prefixed(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

fn write_capture(reqs: &[Req], layout: Layout, whole: Whole) -> Vec<u8> {
    let mut out = Vec::new();
    match layout {
        Layout::JsonLines => {
            for r in reqs {
                out.extend_from_slice(&json_of(r));
                out.push(b'\n');
            }
        }
        Layout::JsonArray => {
            out.extend_from_slice(b"[\n");
            for (i, r) in reqs.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n  ");
                }
                out.extend_from_slice(&json_of(r));
            }
            out.extend_from_slice(b"\n]\n");
        }
        Layout::Proto => reqs.iter().for_each(|r| prefixed(&mut out, &r.1)),
        Layout::ProtoZstdRecords => reqs
            .iter()
            .for_each(|r| prefixed(&mut out, &zstd::bulk::compress(&r.1, 1).unwrap())),
        Layout::JsonZstdRecords => reqs
            .iter()
            .for_each(|r| prefixed(&mut out, &zstd::bulk::compress(&json_of(r), 1).unwrap())),
    }
    match whole {
        Whole::None => out,
        Whole::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&out).unwrap();
            e.finish().unwrap()
        }
        Whole::Zstd => zstd::bulk::compress(&out, 1).unwrap(),
    }
}

fn reader_of(name: &str, bytes: Vec<u8>) -> FileReader {
    FileReader::from_reader(name.into(), Box::new(std::io::Cursor::new(bytes))).expect("opens")
}

fn read_all(r: &mut FileReader) -> Result<Vec<Payload>, CaptureError> {
    let mut out = Vec::new();
    while let Some(rec) = r.next_record() {
        out.push(rec?.payload);
    }
    Ok(out)
}

fn with_items(ps: Vec<Payload>) -> Vec<Payload> {
    ps.into_iter().filter(|p| p.item_count() > 0).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_layout_and_compression_reads_back_what_was_written(
        reqs in proptest::collection::vec(arb_req(), 0..5),
        layout in prop_oneof![
            Just(Layout::JsonLines), Just(Layout::JsonArray), Just(Layout::Proto),
            Just(Layout::ProtoZstdRecords), Just(Layout::JsonZstdRecords)
        ],
        whole in prop_oneof![Just(Whole::None), Just(Whole::Gzip), Just(Whole::Zstd)],
    ) {
        let bytes = write_capture(&reqs, layout, whole);
        let mut r = reader_of("cap", bytes);
        let got = with_items(read_all(&mut r).map_err(|e| TestCaseError::fail(e.to_string()))?);
        let want = with_items(
            reqs.iter()
                .map(|q| sluice_engine::otlp::decode(q.0, &q.1).unwrap())
                .collect(),
        );
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.signal(), w.signal());
            if let Some(d) = payload_diff(g, w) {
                return Err(TestCaseError::fail(d));
            }
        }
    }

    /// Damage anywhere gives errors, never a panic, and never more items than were written.
    #[test]
    fn damaged_captures_never_panic(
        reqs in proptest::collection::vec(arb_req(), 1..4),
        layout in prop_oneof![Just(Layout::JsonLines), Just(Layout::Proto), Just(Layout::JsonArray)],
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let mut bytes = write_capture(&reqs, layout, Whole::None);
        let written: usize = reqs
            .iter()
            .map(|q| sluice_engine::otlp::decode(q.0, &q.1).unwrap().item_count())
            .sum();
        let i = flip.index(bytes.len());
        bytes[i] ^= 0x5a;
        bytes.truncate(cut.index(bytes.len() + 1));
        let mut r = reader_of("damaged", bytes);
        let mut items = 0;
        for _ in 0..100 {
            match r.next_record() {
                None => break,
                Some(Ok(rec)) => items += rec.payload.item_count(),
                Some(Err(e)) => prop_assert!(e.to_string().starts_with("damaged: "), "{e}"),
            }
        }
        prop_assert!(items <= written);
    }
}

fn a_trace_request(n: u8) -> Vec<u8> {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![i + 1; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("span {i}"),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bad(e: CaptureError) -> (u64, String, bool) {
    match e {
        CaptureError::Bad {
            offset,
            reason,
            fatal,
            ..
        } => (offset, reason, fatal),
        other => panic!("expected a bad-record error, got {other}"),
    }
}

#[test]
fn a_truncated_protobuf_capture_names_the_file_and_the_records_offset() {
    let rec = a_trace_request(3);
    let mut bytes = Vec::new();
    prefixed(&mut bytes, &rec);
    prefixed(&mut bytes, &rec);
    let second = (rec.len() + 4) as u64;
    bytes.truncate(bytes.len() - 5);
    let mut r = reader_of("traces.bin", bytes);
    assert_eq!(r.next_record().unwrap().unwrap().payload.item_count(), 3);
    let e = r.next_record().unwrap().unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("traces.bin: offset {second}: truncated")),
        "{text}"
    );
    assert!(e.is_fatal());
    assert!(
        r.next_record().is_none(),
        "nothing is read past lost framing"
    );

    // Cut inside the length prefix.
    let mut bytes = Vec::new();
    prefixed(&mut bytes, &rec);
    bytes.extend_from_slice(&[0, 0]);
    let mut r = reader_of("t2.bin", bytes);
    r.next_record().unwrap().unwrap();
    let (offset, reason, fatal) = bad(r.next_record().unwrap().unwrap_err());
    assert_eq!(offset, second);
    assert!(reason.contains("4-byte length") && fatal, "{reason}");
}

#[test]
fn a_corrupt_record_is_skippable_and_the_next_one_reads() {
    let rec = a_trace_request(2);
    let mut bytes = Vec::new();
    prefixed(&mut bytes, &rec);
    // A well-framed record whose body is not OTLP: a span whose trace id is 3 bytes.
    let mut broken = rec.clone();
    let at = broken
        .windows(17)
        .position(|w| w[0] == 16 && w[1..].iter().all(|b| *b == 1))
        .expect("trace id field");
    broken[at] = 3; // the trace id's length: 3, the rest of the message is now garbage
    prefixed(&mut bytes, &broken);
    prefixed(&mut bytes, &rec);
    let mut r = reader_of("mixed.bin", bytes);
    assert_eq!(r.next_record().unwrap().unwrap().payload.item_count(), 2);
    let e = r.next_record().unwrap().unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("mixed.bin: offset {}: ", rec.len() + 4)),
        "{e}"
    );
    assert_eq!(r.next_record().unwrap().unwrap().payload.item_count(), 2);
    assert!(r.next_record().is_none());
}

#[test]
fn a_file_of_another_format_is_named_not_a_capture() {
    let mut r = reader_of("notes.txt", b"hello, this is not a capture\n".to_vec());
    let e = r.next_record().unwrap().unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("notes.txt: offset 0: not a capture"),
        "{text}"
    );
    // A JSON file that is not OTLP.
    let mut r = reader_of("other.json", b"{\"name\": \"x\"}\n".to_vec());
    let text = r.next_record().unwrap().unwrap_err().to_string();
    assert!(
        text.starts_with("other.json: offset 0: not an OTLP export request"),
        "{text}"
    );
}

#[test]
fn json_lines_damage_is_reported_per_line() {
    let good = json_of(&Req(Signal::Traces, a_trace_request(1)));
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"\n%%% garbage %%%\n");
    let garbage_at = good.len() as u64 + 1;
    bytes.extend_from_slice(&good);
    bytes.extend_from_slice(b"\n");
    let truncated_at = bytes.len() as u64;
    bytes.extend_from_slice(&good[..good.len() / 2]);
    let mut r = reader_of("cap.jsonl", bytes);
    assert_eq!(r.next_record().unwrap().unwrap().payload.item_count(), 1);
    let (offset, reason, fatal) = bad(r.next_record().unwrap().unwrap_err());
    assert_eq!((offset, fatal), (garbage_at, false), "{reason}");
    assert!(reason.contains("found '%'"), "{reason}");
    assert_eq!(r.next_record().unwrap().unwrap().payload.item_count(), 1);
    let (offset, reason, fatal) = bad(r.next_record().unwrap().unwrap_err());
    assert_eq!((offset, fatal), (truncated_at, true));
    assert!(reason.starts_with("truncated"), "{reason}");
}

#[test]
fn a_truncated_gzip_capture_says_so_with_a_decompressed_offset() {
    let reqs: Vec<Req> = (0..20)
        .map(|_| Req(Signal::Traces, a_trace_request(50)))
        .collect();
    let mut bytes = write_capture(&reqs, Layout::Proto, Whole::Gzip);
    bytes.truncate(bytes.len() * 2 / 3);
    let mut r = reader_of("cap.bin.gz", bytes);
    let mut n = 0;
    let err = loop {
        match r.next_record() {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => break e,
            None => panic!("a truncated gzip file read to its end without an error"),
        }
    };
    assert!(n < 20);
    let text = err.to_string();
    assert!(
        text.starts_with("cap.bin.gz: offset ") && text.contains("(decompressed)"),
        "{text}"
    );
    assert!(err.is_fatal());
}

#[test]
fn protobuf_records_are_told_apart_by_their_items() {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    };
    assert_eq!(
        sniff_proto_signal(&a_trace_request(1)),
        Sniffed::Signal(Signal::Traces)
    );
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default()],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        sniff_proto_signal(&metrics.encode_to_vec()),
        Sniffed::Signal(Signal::Metrics)
    );
    // A gauge named with 16 characters and described with 8 has a span's id lengths (fields 1
    // and 2): its name, a string, says metric (a span's trace id is random bytes).
    let sixteen = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.time".into(),
                    description: "Duration".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default()],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        sniff_proto_signal(&sixteen.encode_to_vec()),
        Sniffed::Signal(Signal::Metrics)
    );
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 5,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        sniff_proto_signal(&logs.encode_to_vec()),
        Sniffed::Signal(Signal::Logs)
    );
    assert_eq!(
        sniff_proto_signal(&ExportTraceServiceRequest::default().encode_to_vec()),
        Sniffed::Empty
    );
}
