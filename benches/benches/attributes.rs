//! Attribute kernels vs a straightforward per-span baseline over the same 1000 realistic spans
//! (~10 attributes each):
//!
//! - `delete_key`: drop `user_agent.original` from every span. Kernel: one key predicate per
//!   distinct key, one filter over the span attribute table. Baseline: the Collector's way on
//!   its own data model (`pcommon.Map` is a slice of key/values): for each span, `retain` over
//!   its `Vec<KeyValue>`.
//! - `upsert`: set `deployment.environment = "prod"` on every span. Kernel: `set_key` (one
//!   index pass, one interleave per column). Baseline: for each span, find the key, overwrite
//!   or push a new `KeyValue` (a `String` per span, as `PutStr` copies).
//!
//! The baseline's input is a fresh clone of the prost request per iteration (criterion's
//! `iter_batched`: the clone is not timed); the kernels read shared Arrow buffers, so need none.
//!
//! `cargo bench -p sluice-benches --bench attributes -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::{per_span, realistic_traces_request};
use sluice_engine::Table;
use sluice_engine::kernels::attributes::{AnyValues, KeySet, Scalar, SetMode, Values};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS: usize = 1000;
const DELETED: &str = "user_agent.original";

fn attributes(c: &mut Criterion) {
    let req = realistic_traces_request(SPANS);
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("valid request");
    let attrs = payload.table(Table::SpanAttrs).clone();
    let spans = payload.table(Table::Spans).num_rows();
    eprintln!("{spans} spans, {} span attributes", attrs.num_rows());

    let mut g = c.benchmark_group("attributes_1000_spans");
    g.throughput(Throughput::Elements(SPANS as u64));

    let keys = KeySet::new([DELETED]);
    g.bench_function("delete_key/kernel", |b| {
        b.iter(|| {
            sluice_engine::kernels::attributes::delete_keys(black_box(&attrs), &keys, None)
                .expect("valid table")
        })
    });
    g.bench_function("delete_key/per_span", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                per_span::delete_key(&mut r, DELETED);
                r
            },
            BatchSize::SmallInput,
        )
    });

    let value = AnyValues::scalar(&Scalar::Str("prod".into()));
    g.bench_function("upsert/kernel", |b| {
        b.iter(|| {
            sluice_engine::kernels::attributes::set_key(
                black_box(&attrs),
                spans,
                None,
                "deployment.environment",
                Values::Scalar(&value),
                SetMode::Upsert,
            )
            .expect("valid table")
        })
    });
    g.bench_function("upsert/per_span", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                per_span::upsert_str(&mut r, "deployment.environment", "prod");
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, attributes);
criterion_main!(benches);
