//! Resident bytes per buffered span in tail_sampling vs the span's OTLP protobuf size
//! (target <= 0.6x), measured with allocator statistics: a counting wrapper around mimalloc
//! tracks live heap bytes; the figure is (live bytes after buffering − live bytes before) /
//! spans buffered, with every input payload decoded afresh from protobuf and dropped after
//! `consume`, so only what the processor keeps is counted (segments, unsealed parts, trace
//! index, wheel, decision memory).
//!
//! 100k traces of 4 spans (400 requests of 1000 realistic spans, `benches/src/lib.rs`)
//! arrive over 30 s of virtual time (decision_wait 30 s: nothing is decided yet). Three inputs,
//! from kindest to harshest for per-segment dictionaries:
//! - `same request`: one request repeated with new trace ids (the figure issue 4 reported);
//! - `fresh requests`: each request generated with its own seed (new span ids, pods, peer
//!   addresses, timings, picks of routes and agents);
//! - `fresh + unique url.full`: as above, and every server span's `url.full` carries a unique
//!   16-hex-digit request id, so ~half the spans have a value no other span shares.
//!
//! `cargo bench -p sluice-benches --bench tail_sampling_memory`

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use sluice_benches::Nop;
use sluice_benches::{realistic_traces_request, realistic_traces_request_seeded, with_trace_ids};
use sluice_engine::clock::VirtualClock;
use sluice_engine::component::{ComponentId, Consumer};
use sluice_engine::processors::tail_sampling::{Options, TailSampling, TailSamplingConfig};
use sluice_engine::telemetry::Telemetry;

#[global_allocator]
static GLOBAL: sluice_benches::alloc::Counting = sluice_benches::alloc::Counting;

/// Request `k` of an input, as protobuf bytes.
fn request(input: &str, k: u64) -> Vec<u8> {
    let mut req = match input {
        "same request" => realistic_traces_request(1000),
        _ => realistic_traces_request_seeded(1000, 0x5EED_0000 + k * 0x9E37_79B9),
    };
    if input == "fresh + unique url.full" {
        let mut n = k * 1_000_000;
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    for kv in &mut span.attributes {
                        if let (Some(Value::StringValue(v)), "url.full") = (
                            kv.value.as_mut().and_then(|v| v.value.as_mut()),
                            kv.key.as_str(),
                        ) {
                            n += 1;
                            let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                            v.push_str(&format!("&request_id={id:016x}"));
                        }
                    }
                }
            }
        }
    }
    req.encode_to_vec()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let requests = 400u64;
    let t0 = 1_700_000_000_000_000_000u64;
    println!(
        "| input | protobuf B/span | decoded Arrow B/span | resident B/span (allocator) | x protobuf | processor's own gauge B/span |"
    );
    println!("|---|---|---|---|---|---|");
    for input in ["same request", "fresh requests", "fresh + unique url.full"] {
        let bufs: Vec<Vec<u8>> = (0..requests).map(|k| request(input, k)).collect();
        let protobuf = bufs.iter().map(Vec::len).sum::<usize>() as f64 / (requests * 1000) as f64;
        let arrow = sluice_engine::otlp::decode_traces(&bufs[0])
            .expect("valid")
            .memory_size() as f64
            / 1000.0;
        let config: TailSamplingConfig = serde_json::from_value(serde_json::json!({
            "decision_wait": "30s", "num_traces": 200_000,
            "policies": [{"name": "all", "type": "always_sample"}]
        }))
        .expect("config");
        let telemetry = Telemetry::new();
        let clock = VirtualClock::new(t0);
        let before = sluice_benches::alloc::live();
        let ts = TailSampling::new(
            &config,
            &ComponentId::parse("tail_sampling").expect("id"),
            Arc::new(Nop),
            clock.clone(),
            &telemetry,
            Options { shards: 2 },
        );
        rt.block_on(async {
            for (k, buf) in bufs.iter().enumerate() {
                let k = k as u64;
                clock.advance_to(t0 + k * 75_000_000);
                let fresh = sluice_engine::otlp::decode_traces(buf).expect("valid");
                ts.consume(with_trace_ids(&fresh, k, 4))
                    .await
                    .expect("consume");
            }
        });
        let live = sluice_benches::alloc::live() - before;
        let spans = (requests * 1000) as f64;
        let gauge = telemetry
            .value(
                "otelcol_processor_tail_sampling_buffered_bytes",
                &[("processor", "tail_sampling")],
            )
            .unwrap_or(0.0);
        let on_memory = telemetry
            .value(
                "otelcol_processor_tail_sampling_sampling_traces_on_memory",
                &[("processor", "tail_sampling")],
            )
            .unwrap_or(0.0);
        assert_eq!(on_memory, 100_000.0, "every trace still buffered");
        println!(
            "| {input} | {protobuf:.0} | {arrow:.0} | {:.0} | {:.2}x | {:.0} |",
            live as f64 / spans,
            live as f64 / spans / protobuf,
            gauge / spans
        );
        drop(ts);
    }
}
