//! The `resourcedetection` apply benchmark's work, one operation N times, for callgrind
//! (repeatable instruction counts where criterion's wall times on a shared machine are not).
//!
//! `cargo build --profile bench -p sluice-benches --example resourcedetection_profile`, then
//! `valgrind --tool=callgrind target/release/examples/resourcedetection_profile WHAT 200` and
//! the same with `0`: the difference divided by 200 is instructions per operation. WHAT is
//! - `override`, `insert`: `ResourceMerge::apply` on the decoded 10-resource payload;
//! - `per_resource_override`, `per_resource_insert`: the Collector's `MergeResource` on a clone
//!   of the request (subtract `clone`);
//! - `clone`: the clone of the request alone;
//! - `compare`: N rounds of the kernel and the per-resource merge back to back, for each mode
//!   (the merge's clone untimed); prints each one's median and minimum wall time.
//!
//! Both ways are checked to give the same request first.

use std::hint::black_box;
use std::time::{Duration, Instant};

use prost::Message;
use sluice_benches::resourcedetection::{detected, merge_per_resource, ten_resources};
use sluice_k8s::resourcedetection::ResourceMerge;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "override".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);

    let req = ten_resources();
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("decodes");
    let d = detected();
    for overwrite in [true, false] {
        let mut theirs = req.clone();
        merge_per_resource(&mut theirs, &d, overwrite);
        let ours = ResourceMerge::new(d.clone(), overwrite)
            .apply(payload.clone())
            .expect("applies");
        assert_eq!(
            sluice_engine::otlp::encode_to_vec(&ours),
            theirs.encode_to_vec(),
            "the kernel and the per-resource merge disagree (override {overwrite})"
        );
    }

    let merge_override = ResourceMerge::new(d.clone(), true);
    let merge_insert = ResourceMerge::new(d.clone(), false);
    let mut sink = 0usize;
    match what.as_str() {
        "override" => (0..n).for_each(|_| {
            sink += merge_override
                .apply(black_box(payload.clone()))
                .expect("applies")
                .item_count()
        }),
        "insert" => (0..n).for_each(|_| {
            sink += merge_insert
                .apply(black_box(payload.clone()))
                .expect("applies")
                .item_count()
        }),
        "per_resource_override" | "per_resource_insert" => {
            let overwrite = what == "per_resource_override";
            (0..n).for_each(|_| {
                let mut r = black_box(&req).clone();
                merge_per_resource(&mut r, &d, overwrite);
                sink += r.resource_spans.len();
            })
        }
        "clone" => (0..n).for_each(|_| sink += black_box(&req).clone().resource_spans.len()),
        "compare" => {
            for (name, merge, overwrite) in [
                ("override", &merge_override, true),
                ("insert", &merge_insert, false),
            ] {
                let (mut ours, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
                for _ in 0..n {
                    let p = payload.clone();
                    let t = Instant::now();
                    sink += black_box(merge.apply(black_box(p)).expect("applies")).item_count();
                    ours.push(t.elapsed());
                    let mut r = req.clone();
                    let t = Instant::now();
                    merge_per_resource(black_box(&mut r), &d, overwrite);
                    base.push(t.elapsed());
                    sink += black_box(r).resource_spans.len();
                }
                let stats = |v: &mut Vec<Duration>| {
                    v.sort();
                    (v[v.len() / 2], v[0])
                };
                let (om, omin) = stats(&mut ours);
                let (bm, bmin) = stats(&mut base);
                println!(
                    "{name}, {n} rounds: kernel median {om:?} min {omin:?}; per-resource merge \
                     median {bm:?} min {bmin:?}"
                );
            }
        }
        other => panic!("unknown WHAT {other:?}"),
    }
    black_box(sink);
}
