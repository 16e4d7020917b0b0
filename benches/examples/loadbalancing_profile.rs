//! The `loadbalancing` bench's split (a realistic 1,000-span request, ~63 traces, routed by
//! trace id over the Collector's ring of 3 backends) for callgrind, whose instruction counts
//! are repeatable where criterion's wall times on a shared machine are not.
//!
//! `cargo build --profile bench -p sluice-benches --example loadbalancing_profile`, then
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=loadbalancing_profile::run
//! target/release/examples/loadbalancing_profile split 200`: instructions in `run` divided by
//! 200 are instructions per split of the 1,000 spans. Steps: `positions` (ring positions
//! only), `split` (positions, owners, parts with attribute tables pending), `settle` (the
//! same, then every part's tables built, as the exporter queue does when it takes a part);
//! `filter` and `filter_settle`: the same two with the split before `Payload::partition`, one
//! `filter_tables` per backend (the A/B baseline).

use prost::Message;
use sluice_benches::realistic_traces_request;
use sluice_benches::routing::{settled, split_per_backend_filter};
use sluice_engine::Payload;
use sluice_engine::kernels::routing::{self, HashRing, RoutingKey};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[inline(never)]
fn run(step: &str, payload: &Payload, ring: &HashRing, n: usize) -> usize {
    let key = RoutingKey::TraceId;
    let mut items = 0;
    for _ in 0..n {
        items += match step {
            "positions" => routing::item_positions(payload, &key).expect("positions")[0]
                .1
                .len(),
            "split" => routing::split(payload, &key, ring)
                .expect("split")
                .iter()
                .map(|(_, p)| p.item_count())
                .sum(),
            "settle" => {
                let mut parts = routing::split(payload, &key, ring).expect("split");
                for (_, p) in &mut parts {
                    p.settle();
                }
                parts.iter().map(|(_, p)| p.item_count()).sum()
            }
            "filter" => split_per_backend_filter(payload, &key, ring)
                .iter()
                .map(|(_, p)| p.item_count())
                .sum(),
            "filter_settle" => settled(split_per_backend_filter(payload, &key, ring))
                .iter()
                .map(|(_, p)| p.item_count())
                .sum(),
            other => {
                panic!("unknown step {other:?}: positions, split, settle, filter or filter_settle")
            }
        };
    }
    items
}

fn main() {
    let mut args = std::env::args().skip(1);
    let step = args.next().unwrap_or_else(|| "split".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let buf = realistic_traces_request(1000).encode_to_vec();
    let payload = sluice_engine::otlp::decode_traces(&buf).expect("valid");
    let endpoints: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:4317")).collect();
    let ring = HashRing::new(&endpoints).expect("ring");
    let items = run(&step, &payload, &ring, n);
    println!("{step} x {n}: {items} items");
}
