//! tail_sampling throughput per core (one shard, single-threaded), with 100k traces in flight:
//! - `ingest`: spans/s into the buffers (the clock stands still: nothing is decided);
//! - `steady_state`: spans/s through ingest *and* decisions: each 1000-span request brings 250
//!   new 4-span traces and moves the virtual clock 75 ms, so with `decision_wait: 30s` 100k
//!   traces are in flight and one bucket of ~3,300 traces is decided per simulated second
//!   (policies: status ERROR, latency > 2 s, 50% probabilistic), kept spans go to a no-op
//!   consumer.
//!
//! `cargo bench -p sluice-benches --bench tail_sampling -- --warm-up-time 2 --measurement-time 4`

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

const SPANS_PER_TRACE: usize = 4;
const IN_FLIGHT: u64 = 100_000;
const STEP_NS: u64 = 75_000_000; // 30 s / (100k traces / 250 traces per request)

fn processor(clock: Arc<VirtualClock>) -> TailSampling {
    TailSampling::new(
        &sluice_benches::tail_sampling_config(),
        &ComponentId::parse("tail_sampling").expect("id"),
        Arc::new(Nop),
        clock,
        &Telemetry::new(),
        Options { shards: 1 },
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let buf = realistic_traces_request(1000).encode_to_vec();
    let base = sluice_engine::otlp::decode_traces(&buf).expect("valid");
    // Distinct trace ids per request; a pool large enough that ids do not repeat within the
    // in-flight window (400 requests = 100k traces).
    let pool: Vec<Payload> = (0..2000)
        .map(|k| with_trace_ids(&base, k, SPANS_PER_TRACE))
        .collect();
    let t0 = 1_700_000_000_000_000_000u64;
    let mut g = c.benchmark_group("tail_sampling_1000_spans");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(10);

    {
        let clock = VirtualClock::new(t0);
        let ts = processor(clock.clone());
        let mut k = 0usize;
        let mut now = t0;
        // Fill to 100k traces in flight.
        rt.block_on(async {
            for _ in 0..(IN_FLIGHT / 250) {
                now += STEP_NS;
                clock.advance_to(now);
                ts.consume(pool[k % pool.len()].clone())
                    .await
                    .expect("consume");
                k += 1;
            }
        });
        g.bench_function("steady_state_100k_in_flight", |b| {
            b.iter(|| {
                now += STEP_NS;
                clock.advance_to(now);
                rt.block_on(ts.consume(pool[k % pool.len()].clone()))
                    .expect("consume");
                k += 1;
            })
        });
    }

    // Ingest only: the clock stands still after the fill, so nothing is decided and every
    // request adds new traces to the buffers.
    let clock = VirtualClock::new(t0);
    let ts = processor(clock.clone());
    rt.block_on(async {
        for p in &pool[..(IN_FLIGHT / 250) as usize] {
            ts.consume(p.clone()).await.expect("consume");
        }
    });
    let mut k = (IN_FLIGHT / 250) as usize;
    g.bench_function("ingest_100k_in_flight", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(ts.consume(pool[k % pool.len()].clone()))
                    .expect("consume");
                k += 1;
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
