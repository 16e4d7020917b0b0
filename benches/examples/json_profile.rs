//! OTLP/JSON decode (`sluice_engine::otlp::decode_json`), N times, for callgrind, whose
//! instruction counts are repeatable where wall times on a shared machine are not.
//!
//! `cargo build --profile bench -p sluice-benches --example json_profile`, then
//! `valgrind --tool=callgrind target/release/examples/json_profile WORKLOAD N` and the same
//! with N = 0: the difference divided by N is instructions per decode. Workloads:
//! - `fixtures`: the three opentelemetry-proto examples (trace, metrics, logs), one of each;
//! - `traces`: the benchmark's 1,000-span request as OTLP/JSON, enums as numbers;
//! - `traces-names`: the same with every enum written by name (`"kind": "SPAN_KIND_SERVER"`).

use std::hint::black_box;

use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_engine::Signal;
use sluice_engine::otlp::{decode_json, decode_traces, encode_json};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURES: [(Signal, &[u8]); 3] = [
    (
        Signal::Traces,
        include_bytes!("../../engine/testdata/otlp-examples/trace.json"),
    ),
    (
        Signal::Metrics,
        include_bytes!("../../engine/testdata/otlp-examples/metrics.json"),
    ),
    (
        Signal::Logs,
        include_bytes!("../../engine/testdata/otlp-examples/logs.json"),
    ),
];

/// Span kinds and status codes by name, as some OTLP/JSON senders write them.
fn with_enum_names(v: &mut serde_json::Value) {
    use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                let n = x.as_i64().and_then(|n| i32::try_from(n).ok());
                let name = n.and_then(|n| match k.as_str() {
                    "kind" => SpanKind::try_from(n).ok().map(|e| e.as_str_name()),
                    "code" => StatusCode::try_from(n).ok().map(|e| e.as_str_name()),
                    _ => None,
                });
                match name {
                    Some(name) => *x = serde_json::Value::from(name),
                    None => with_enum_names(x),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(with_enum_names),
        _ => {}
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (workload, n) = match (args.get(1), args.get(2).map(|n| n.parse::<usize>())) {
        (Some(w), Some(Ok(n))) => (w.as_str(), n),
        _ => {
            eprintln!("usage: json_profile fixtures|traces|traces-names N");
            std::process::exit(2);
        }
    };
    let traces = || {
        let pb = realistic_traces_request(1000).encode_to_vec();
        let payload = decode_traces(&pb).expect("valid request");
        encode_json(&payload).expect("encodes")
    };
    let inputs: Vec<(Signal, Vec<u8>)> = match workload {
        "fixtures" => FIXTURES.iter().map(|(s, b)| (*s, b.to_vec())).collect(),
        "traces" => vec![(Signal::Traces, traces())],
        "traces-names" => {
            let mut v: serde_json::Value = serde_json::from_slice(&traces()).expect("JSON");
            with_enum_names(&mut v);
            vec![(Signal::Traces, serde_json::to_vec(&v).expect("JSON"))]
        }
        other => {
            eprintln!("unknown workload {other:?}");
            std::process::exit(2);
        }
    };
    // Once outside the count, so a decode error shows before any timing.
    for (signal, body) in &inputs {
        decode_json(*signal, body).expect("decodes");
    }
    for _ in 0..n {
        for (signal, body) in &inputs {
            black_box(decode_json(*signal, black_box(body)).expect("decodes"));
        }
    }
    eprintln!(
        "{workload}: {} bodies, {} bytes",
        inputs.len(),
        inputs.iter().map(|(_, b)| b.len()).sum::<usize>()
    );
}
