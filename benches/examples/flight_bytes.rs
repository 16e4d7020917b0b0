//! Bytes per span of the agent -> gateway hop, Flight vs OTLP, on the same payloads, encoded
//! as the exporters encode them, and the time each side of each protocol takes (one pass,
//! indicative; `benches/e2e.py --configs hop` measures whole processes).
//!
//! ```sh
//! cargo run --release -p sluice-benches --example flight_bytes [-- BATCHES SPANS_PER_BATCH]
//! cargo run --release -p sluice-benches --example flight_bytes -- --capture FILE
//! cargo run --release -p sluice-benches --example flight_bytes -- --capture FILE --only zstd
//! ```
//!
//! Without arguments: 20 batches of 8192 spans from `realistic_traces_request_seeded` (a fresh
//! seed per batch, so only the vocabulary repeats). `--capture` reads the batches from a `file`
//! exporter capture (`format: proto`), e.g. `sluice loadgen` traffic batched by a sluice with
//! `batch` and `file` (how BENCHMARKS.md's figures were made).
//!
//! The `otlp` exporter compresses each request with gzip (level 6) or zstd (level 3), tonic's
//! defaults. The `flight` exporter with `compression: zstd` compresses each buffer of each IPC
//! message with zstd (level 1) and then each Flight message with gRPC's zstd;
//! `lz4` is the IPC LZ4 frame per buffer only; `none` is raw Arrow. Two rows are not forms
//! the exporter sends, for comparison: `Flight None + gRPC zstd` and `Flight Zstd, no gRPC`
//! (what gRPC's layer over zstd'd IPC costs and saves). `--only zstd` (or `none`,
//! `lz4`) encodes only that Flight form and skips OTLP: what a profiler should look at.

use std::io::Write;
use std::time::Instant;

use prost::Message;
use sluice_benches::realistic_traces_request_seeded;
use sluice_engine::flight::{Compression, Decoder, Encoder, Limits, WireMessage, table_of_wire_id};
use sluice_engine::otlp::{decode, encode_to_vec};
use sluice_engine::{Payload, Signal};

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).expect("in memory");
    e.finish().expect("in memory")
}

fn zstd3(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).expect("in memory")
}

/// The batches: generated, or read from a `file` exporter capture.
fn payloads() -> Vec<Payload> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--capture") {
        let path = argv.get(1).expect("--capture FILE");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        return sluice_benches::capture_requests(&bytes)
            .into_iter()
            .map(|r| decode(Signal::Traces, r).expect("a traces request"))
            .collect();
    }
    let args: Vec<usize> = argv.iter().filter_map(|a| a.parse().ok()).collect();
    let batches = args.first().copied().unwrap_or(20);
    let spans = args.get(1).copied().unwrap_or(8192);
    (0..batches)
        .map(|i| {
            let req = realistic_traces_request_seeded(spans, 0x1234_5678 + i as u64 * 7919);
            decode(Signal::Traces, &req.encode_to_vec()).expect("valid")
        })
        .collect()
}

/// `--only NAME`: the one Flight form to encode.
fn only() -> Option<String> {
    let argv: Vec<String> = std::env::args().collect();
    let at = argv.iter().position(|a| a == "--only")?;
    Some(
        argv.get(at + 1)
            .expect("--only none|lz4|zstd")
            .to_lowercase(),
    )
}

fn main() {
    let payloads = payloads();
    let only = only();
    let spans: usize = payloads.iter().map(Payload::item_count).sum();
    let per_span = |b: usize| b as f64 / spans as f64;
    let ns_per_span = |s: f64| s * 1e9 / spans as f64;
    println!("{} batches, {spans} spans", payloads.len());

    // OTLP: encode + compress at the agent, decompress + decode at the gateway.
    let (mut raw, mut gz, mut zs) = (0, 0, 0);
    let (mut send_s, mut receive_s) = (0f64, 0f64);
    for p in payloads.iter().filter(|_| only.is_none()) {
        let t = Instant::now();
        let body = encode_to_vec(p);
        let compressed = zstd3(&body);
        send_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let back = zstd::decode_all(&compressed[..]).expect("zstd");
        let _ = decode(Signal::Traces, &back).expect("decode");
        receive_s += t.elapsed().as_secs_f64();
        raw += body.len();
        gz += gzip(&body).len();
        zs += compressed.len();
    }
    if only.is_none() {
        println!("OTLP protobuf       {:6.1} B/span", per_span(raw));
        println!("OTLP + gzip         {:6.1} B/span", per_span(gz));
        println!(
            "OTLP + zstd         {:6.1} B/span   send {:5.0} ns/span, receive {:5.0} ns/span",
            per_span(zs),
            ns_per_span(send_s),
            ns_per_span(receive_s)
        );
    }

    // (IPC body compression, gRPC zstd over each whole message): what `compression: none`,
    // `lz4` and `zstd` send, the whole-message zstd alone over uncompressed IPC, and zstd'd
    // IPC without gRPC's zstd over it (what the second layer costs and what it saves).
    for (c, grpc_zstd) in [
        (Compression::None, false),
        (Compression::Lz4, false),
        (Compression::Zstd, true),
        (Compression::Zstd, false),
        (Compression::None, true),
    ] {
        // The forms the exporter sends: gRPC's zstd exactly when the IPC compression is zstd.
        let sent_by_the_exporter = grpc_zstd == (c == Compression::Zstd);
        let name = format!("{c:?}").to_lowercase();
        if only
            .as_deref()
            .is_some_and(|o| !sent_by_the_exporter || o != name)
        {
            continue;
        }
        let mut enc = Encoder::new(c);
        let mut dec = Decoder::new(Limits::default());
        let (mut ipc, mut wire) = (0usize, 0usize);
        let mut by_table = std::collections::BTreeMap::<String, usize>::new();
        let (mut send_s, mut receive_s) = (0f64, 0f64);
        for p in &payloads {
            let mut msgs: Vec<WireMessage> = Vec::new();
            let t = Instant::now();
            enc.encode(p, &mut msgs).expect("encode");
            // gRPC's zstd over each whole message, as the exporter sends with `zstd`.
            let framed: Vec<Vec<u8>> = msgs
                .iter()
                .map(|m| {
                    let mut whole = m.header.to_vec();
                    whole.extend_from_slice(&m.body);
                    whole.extend_from_slice(&m.app_metadata);
                    if grpc_zstd { zstd3(&whole) } else { whole }
                })
                .collect();
            send_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for (m, f) in msgs.iter().zip(&framed) {
                if grpc_zstd {
                    let _ = zstd::decode_all(&f[..]).expect("zstd");
                }
                dec.decode(m).expect("decode");
            }
            receive_s += t.elapsed().as_secs_f64();
            for (m, f) in msgs.iter().zip(&framed) {
                ipc += m.len();
                wire += f.len();
                let table = m
                    .app_metadata
                    .first()
                    .and_then(|&id| table_of_wire_id(id))
                    .map_or_else(|| "(payload ends)".to_string(), |t| format!("{t:?}"));
                *by_table.entry(table).or_default() += f.len();
            }
        }
        let name = match (c, grpc_zstd) {
            (Compression::None, true) => "Flight None + gRPC zstd".to_string(),
            (Compression::Zstd, false) => "Flight Zstd, no gRPC".to_string(),
            _ => format!("Flight {c:?}"),
        };
        println!(
            "{name:<23} {:6.1} B/span   send {:5.0} ns/span, receive {:5.0} ns/span{}",
            per_span(wire),
            ns_per_span(send_s),
            ns_per_span(receive_s),
            if c == Compression::Zstd {
                format!("   (IPC zstd alone: {:.1} B/span)", per_span(ipc))
            } else {
                String::new()
            }
        );
        for (t, b) in by_table {
            println!("    {t:<22} {:6.2} B/span", per_span(b));
        }
    }
}
