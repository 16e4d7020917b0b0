//! The benchmark's 1,000-span request, encoded by one encoder N times (for callgrind, whose
//! instruction counts are repeatable where criterion's wall times on a shared machine are not),
//! or by both encoders interleaved (for a time ratio that load changes do not skew).
//!
//! `cargo build --profile bench -p sluice-benches --example encode_profile`, then
//! - `valgrind --tool=callgrind target/release/examples/encode_profile sluice 50` and the same
//!   with `0`: the difference divided by 50 is instructions per encode (`prost` likewise);
//! - `target/release/examples/encode_profile compare 2000`: 2000 rounds of one prost encode
//!   and one sluice encode back to back; prints each one's median and minimum and the ratios;
//! - `target/release/examples/encode_profile compare-decode 2000`: the same for decoding the
//!   request's bytes (prost into `opentelemetry-proto` structs, sluice into Arrow);
//! - `valgrind --tool=callgrind target/release/examples/encode_profile sluice-decode 50` (and
//!   `prost-decode`): N decodes, for instruction counts as above; `sluice-decode` also prints
//!   the decoded payload's Arrow memory per span (`Payload::memory_size`);
//! - `sluice-decode-file N FILE` (callgrind, as above): every request of a `file` exporter
//!   capture (`format: proto`) decoded N times;
//! - `sluice-skim N` (callgrind, as above) and `compare-skim N` (interleaved, decode against
//!   skim): the validating skim that stands in for the decode where data is forwarded as bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_engine::otlp::testing::reference_traces;
use sluice_engine::schema::Signal;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "sluice".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let req = realistic_traces_request(1_000);
    let payload = reference_traces(&req);
    let prost = || black_box(black_box(&req).encode_to_vec()).len();
    let sluice = || black_box(sluice_engine::otlp::encode_to_vec(black_box(&payload))).len();
    assert_eq!(
        sluice_engine::otlp::encode_to_vec(&payload),
        req.encode_to_vec()
    );
    match which.as_str() {
        "prost" | "sluice" => {
            let f: &dyn Fn() -> usize = if which == "prost" { &prost } else { &sluice };
            let total: usize = (0..n).map(|_| f()).sum();
            println!("{which}: {n} encodes, {total} bytes");
        }
        "compare" => interleaved(n, &prost, &sluice),
        "sluice-decode-file" => {
            // `sluice-decode-file N FILE`: every request of a `file` exporter capture
            // (`format: proto`), decoded N times (e.g. `sluice loadgen` traffic, whose span
            // kinds alternate where the 1,000-span request's come in runs).
            let path = args.next().expect("sluice-decode-file N FILE");
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let requests = sluice_benches::capture_requests(&data);
            let mut total = 0usize;
            for _ in 0..n {
                for r in &requests {
                    total += sluice_engine::otlp::decode(Signal::Traces, black_box(r))
                        .expect("decode")
                        .item_count();
                }
            }
            println!("{total} spans decoded");
        }
        "sluice-decode" | "prost-decode" => {
            let bytes = req.encode_to_vec();
            let mut total = 0usize;
            for _ in 0..n {
                total += if which == "prost-decode" {
                    ExportTraceServiceRequest::decode(black_box(bytes.as_slice()))
                        .expect("decode")
                        .resource_spans
                        .len()
                } else {
                    sluice_engine::otlp::decode(Signal::Traces, black_box(&bytes))
                        .expect("decode")
                        .item_count()
                };
            }
            let p = sluice_engine::otlp::decode(Signal::Traces, &bytes).expect("decode");
            println!(
                "{which}: {n} decodes, {total} items; sluice Arrow memory {} B ({:.1} B/span)",
                p.memory_size(),
                p.memory_size() as f64 / p.item_count() as f64
            );
        }
        "sluice-skim" => {
            let bytes = req.encode_to_vec();
            let total: usize = (0..n)
                .map(|_| {
                    sluice_engine::otlp::skim(Signal::Traces, black_box(&bytes))
                        .expect("clean")
                        .items
                })
                .sum();
            println!("{which}: {n} skims, {total} items");
        }
        "compare-skim" => {
            let bytes = req.encode_to_vec();
            let decode = || {
                sluice_engine::otlp::decode(Signal::Traces, black_box(&bytes))
                    .expect("decode")
                    .item_count()
            };
            let skim = || {
                sluice_engine::otlp::skim(Signal::Traces, black_box(&bytes))
                    .expect("clean")
                    .items
            };
            interleaved(n, &decode, &skim);
        }
        "compare-decode" => {
            let bytes = req.encode_to_vec();
            let prost = || {
                ExportTraceServiceRequest::decode(black_box(bytes.as_slice()))
                    .expect("decode")
                    .resource_spans
                    .len()
            };
            let sluice = || {
                sluice_engine::otlp::decode(Signal::Traces, black_box(&bytes))
                    .expect("decode")
                    .item_count()
            };
            interleaved(n, &prost, &sluice);
        }
        other => panic!(
            "unknown mode {other}: prost, sluice, compare, compare-decode, sluice-decode, prost-decode, sluice-skim or compare-skim"
        ),
    }
}

/// `n` rounds of one `prost` call and one `sluice` call back to back (so load that comes and
/// goes hits both alike); prints each one's median and minimum and the ratios.
fn interleaved(n: usize, prost: &dyn Fn() -> usize, sluice: &dyn Fn() -> usize) {
    let time = |f: &dyn Fn() -> usize| {
        let t = Instant::now();
        black_box(f());
        t.elapsed()
    };
    let (mut p, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        p.push(time(prost));
        s.push(time(sluice));
    }
    p.sort();
    s.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (pm, sm) = (us(p[n / 2]), us(s[n / 2]));
    let (p0, s0) = (us(p[0]), us(s[0]));
    println!(
        "median: prost {pm:.1} µs, sluice {sm:.1} µs, ratio {:.2}x; \
         minimum: prost {p0:.1} µs, sluice {s0:.1} µs, ratio {:.2}x",
        pm / sm,
        p0 / s0
    );
}
