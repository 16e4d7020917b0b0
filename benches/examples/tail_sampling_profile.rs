//! The `tail_sampling` bench's steady state (one shard, 100k traces in flight, a 1,000-span
//! request every 75 ms of virtual time, a bucket of ~13,000 spans decided every second) for
//! callgrind, whose instruction counts are repeatable where criterion's wall times on a shared
//! machine are not.
//!
//! `cargo build --profile bench -p sluice-benches --example tail_sampling_profile`, then
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=tail_sampling_profile::steady
//! target/release/examples/tail_sampling_profile 400`: instructions in `steady` divided by 400
//! are instructions per 1,000-span request through ingest and decisions (the fill to 100k
//! traces is not counted). 400 requests cover 30 decided buckets and 100 sealed segments.

use std::sync::Arc;

use prost::Message;
use sluice_benches::Nop;
use sluice_benches::{realistic_traces_request, with_trace_ids};
use sluice_engine::Payload;
use sluice_engine::clock::VirtualClock;
use sluice_engine::component::{ComponentId, Consumer};
use sluice_engine::processors::tail_sampling::{Options, TailSampling};
use sluice_engine::telemetry::Telemetry;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STEP_NS: u64 = 75_000_000;

#[inline(never)]
fn steady(
    rt: &tokio::runtime::Runtime,
    ts: &TailSampling,
    clock: &VirtualClock,
    pool: &[Payload],
    now: &mut u64,
    from: usize,
    n: usize,
) {
    for k in from..from + n {
        *now += STEP_NS;
        clock.advance_to(*now);
        rt.block_on(ts.consume(pool[k % pool.len()].clone()))
            .expect("consume");
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let buf = realistic_traces_request(1000).encode_to_vec();
    let base = sluice_engine::otlp::decode_traces(&buf).expect("valid");
    let pool: Vec<Payload> = (0..2000).map(|k| with_trace_ids(&base, k, 4)).collect();
    let config = sluice_benches::tail_sampling_config();
    let t0 = 1_700_000_000_000_000_000u64;
    let clock = VirtualClock::new(t0);
    let ts = TailSampling::new(
        &config,
        &ComponentId::parse("tail_sampling").expect("id"),
        Arc::new(Nop),
        clock.clone(),
        &Telemetry::new(),
        Options { shards: 1 },
    );
    let mut now = t0;
    let fill = 400; // 100k traces of 4 spans in flight
    // (in one `block_on`, unlike `steady`, so the two are not merged into one function)
    rt.block_on(async {
        for p in &pool[..fill] {
            now += STEP_NS;
            clock.advance_to(now);
            ts.consume(p.clone()).await.expect("consume");
        }
    });
    steady(&rt, &ts, &clock, &pool, &mut now, fill, n);
    println!("{n} requests of 1000 spans after a fill of {fill}");
}
