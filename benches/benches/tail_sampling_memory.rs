//! Resident bytes per buffered span in tail_sampling vs the span's OTLP protobuf size
//! (target <= 0.6x), measured with allocator statistics: a counting wrapper around mimalloc
//! tracks live heap bytes; the figure is (live bytes after buffering − live bytes before) /
//! spans buffered, with every input payload decoded afresh from protobuf and dropped after
//! `consume`, so only what the processor keeps is counted (segments, unsealed parts, trace
//! index, wheel, decision memory).
//!
//! 100k traces of 4 spans (400 requests of 1000 realistic spans, `benches/src/lib.rs`)
//! arrive over 30 s of virtual time (decision_wait 30 s: nothing is decided yet).
//!
//! `cargo bench -p sluice-benches --bench tail_sampling_memory`

use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use prost::Message;
use sluice_benches::{realistic_traces_request, with_trace_ids};
use sluice_engine::Payload;
use sluice_engine::clock::VirtualClock;
use sluice_engine::component::{BoxFuture, ComponentId, ConsumeError, Consumer};
use sluice_engine::processors::tail_sampling::{
    Compression, Options, TailSampling, TailSamplingConfig,
};
use sluice_engine::telemetry::Telemetry;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Nop;
impl Consumer for Nop {
    fn consume(&self, _: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async { Ok(()) })
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let buf = realistic_traces_request(1000).encode_to_vec();
    let requests = 400u64;
    let t0 = 1_700_000_000_000_000_000u64;
    let arrow = sluice_engine::otlp::decode_traces(&buf)
        .expect("valid")
        .memory_size();
    println!(
        "input: {requests} requests x 1000 spans, {} protobuf B/span; decoded Arrow {} B/span ({:.2}x)",
        buf.len() / 1000,
        arrow / 1000,
        arrow as f64 / buf.len() as f64
    );
    println!(
        "| compression | resident B/span (allocator) | x protobuf | processor's own gauge B/span |"
    );
    println!("|---|---|---|---|");
    for compression in [Compression::Lz4, Compression::Zstd, Compression::None] {
        let config: TailSamplingConfig = serde_json::from_value(serde_json::json!({
            "decision_wait": "30s", "num_traces": 200_000,
            "policies": [{"name": "all", "type": "always_sample"}]
        }))
        .expect("config");
        let telemetry = Telemetry::new();
        let clock = VirtualClock::new(t0);
        let before = LIVE.load(Ordering::Relaxed);
        let ts = TailSampling::new(
            &config,
            &ComponentId::parse("tail_sampling").expect("id"),
            Arc::new(Nop),
            clock.clone(),
            &telemetry,
            Options {
                shards: 2,
                compression,
            },
        );
        rt.block_on(async {
            for k in 0..requests {
                clock.advance_to(t0 + k * 75_000_000);
                let fresh = sluice_engine::otlp::decode_traces(&buf).expect("valid");
                ts.consume(with_trace_ids(&fresh, k, 4))
                    .await
                    .expect("consume");
            }
        });
        let live = LIVE.load(Ordering::Relaxed) - before;
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
            "| {compression:?} | {:.0} | {:.2}x | {:.0} |",
            live as f64 / spans,
            live as f64 / spans / (buf.len() as f64 / 1000.0),
            gauge / spans
        );
        drop(ts);
    }
}
