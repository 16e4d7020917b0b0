//! The OTTL and attribute benchmarks' work, one operation N times, for callgrind (repeatable
//! instruction counts where criterion's wall times on a shared machine are not) and `perf`.
//!
//! `cargo build --profile bench -p sluice-benches --example ottl_profile`, then
//! `valgrind --tool=callgrind target/release/examples/ottl_profile WHAT 20` and the same with
//! `0`: the difference divided by 20 is instructions per operation. WHAT is one of
//! - `chain`: filter/noise + clean-attrs + peer-service on the gateway batch (`benches/ottl.rs`);
//! - `filter`, `clean`, `peer`: one of the three (clean on the filtered batch, peer on the
//!   cleaned one);
//! - `interp`: the per-span interpreter on a clone of the request; `clone`: the clone alone;
//! - `delete`, `upsert`: the attribute kernels of `benches/attributes.rs`; `delete_base`,
//!   `upsert_base`: their per-span baselines on a clone (subtract `clone_realistic`);
//! - `compare`: N rounds of the chain and the interpreter back to back (the interpreter's
//!   clone untimed); prints each one's median and minimum.

use std::hint::black_box;

use arrow::array::Array as _;
use std::time::{Duration, Instant};

use prost::Message;
use sluice_benches::gateway::{Programs, Reference};
use sluice_benches::{gateway_traces_request, per_span, realistic_traces_request};
use sluice_engine::Table;
use sluice_engine::kernels::attributes::{self as ka, AnyValues, KeySet, Scalar, SetMode, Values};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "chain".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);

    let programs = Programs::new();
    let reference = Reference::new();
    let req = gateway_traces_request(1000);
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("decodes");
    let mut theirs = req.clone();
    reference.run(&mut theirs);
    assert_eq!(
        sluice_engine::otlp::encode_to_vec(&programs.run(&payload)),
        theirs.encode_to_vec(),
        "column kernels and the per-span interpreter disagree"
    );
    let filtered = programs.filter.apply(&payload).expect("ignore").0;
    let mut cleaned = filtered.clone();
    programs.clean.apply(&mut cleaned).expect("ignore");

    let realistic = realistic_traces_request(1000);
    let rp = sluice_engine::otlp::decode_traces(&realistic.encode_to_vec()).expect("decodes");
    let attrs = rp.table(Table::SpanAttrs).clone();
    let spans = rp.table(Table::Spans).num_rows();
    let deleted = KeySet::new(["user_agent.original"]);
    let prod = AnyValues::scalar(&Scalar::Str("prod".into()));

    let mut sink = 0usize;
    match what.as_str() {
        "chain" => (0..n).for_each(|_| sink += programs.run(black_box(&payload)).item_count()),
        "filter" => (0..n).for_each(|_| {
            sink += programs
                .filter
                .apply(black_box(&payload))
                .expect("ignore")
                .0
                .item_count()
        }),
        "clean" => (0..n).for_each(|_| {
            let mut p = black_box(&filtered).clone();
            programs.clean.apply(&mut p).expect("ignore");
            sink += p.item_count();
        }),
        "peer" => (0..n).for_each(|_| {
            let mut p = black_box(&cleaned).clone();
            programs.peer.apply(&mut p).expect("ignore");
            sink += p.item_count();
        }),
        "interp" => (0..n).for_each(|_| {
            let mut r = black_box(&req).clone();
            reference.run(&mut r);
            sink += r.resource_spans.len();
        }),
        "clone" => (0..n).for_each(|_| sink += black_box(&req).clone().resource_spans.len()),
        "clone_realistic" => {
            (0..n).for_each(|_| sink += black_box(&realistic).clone().resource_spans.len())
        }
        "delete" => (0..n).for_each(|_| {
            sink += ka::delete_keys(black_box(&attrs), &deleted, None)
                .expect("valid")
                .num_rows()
        }),
        "upsert" => (0..n).for_each(|_| {
            sink += ka::set_key(
                black_box(&attrs),
                spans,
                None,
                "deployment.environment",
                Values::Scalar(&prod),
                SetMode::Upsert,
            )
            .expect("valid")
            .num_rows()
        }),
        "delete_base" => (0..n).for_each(|_| {
            let mut r = black_box(&realistic).clone();
            per_span::delete_key(&mut r, "user_agent.original");
            sink += r.resource_spans.len();
        }),
        "upsert_base" => (0..n).for_each(|_| {
            let mut r = black_box(&realistic).clone();
            per_span::upsert_str(&mut r, "deployment.environment", "prod");
            sink += r.resource_spans.len();
        }),
        "compare" => {
            let (mut ours, mut base) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let t = Instant::now();
                sink += black_box(programs.run(black_box(&payload))).item_count();
                ours.push(t.elapsed());
                let mut r = req.clone();
                let t = Instant::now();
                reference.run(black_box(&mut r));
                base.push(t.elapsed());
                sink += r.resource_spans.len();
            }
            let stats = |v: &mut Vec<Duration>| {
                v.sort();
                (v[v.len() / 2], v[0])
            };
            let (om, omin) = stats(&mut ours);
            let (bm, bmin) = stats(&mut base);
            println!(
                "{n} rounds: kernels median {om:?} min {omin:?}; interpreter median {bm:?} \
                 min {bmin:?}; ratio (median) {:.2}x, (min) {:.2}x",
                bm.as_secs_f64() / om.as_secs_f64(),
                bmin.as_secs_f64() / omin.as_secs_f64()
            );
        }
        "anatomy" => anatomy(&payload, &filtered, &cleaned, n.max(50)),
        other => panic!("unknown operation {other:?}"),
    }
    println!("{what} x{n}: {sink}");
}

/// Minimum time of `f` over `n` runs.
fn min_time<R>(n: usize, mut f: impl FnMut() -> R) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// The chain's parts, each timed on its own (minimum of `n` runs).
fn anatomy(
    payload: &sluice_engine::Payload,
    filtered: &sluice_engine::Payload,
    cleaned: &sluice_engine::Payload,
    n: usize,
) {
    let spans = payload.table(Table::Spans).num_rows();
    let programs = Programs::new();
    let mask: Vec<bool> = {
        // the filter's decision, recovered from the span ids that survive
        let kept = filtered
            .table(Table::Spans)
            .column_by_name("span_id")
            .expect("span_id");
        let all = payload
            .table(Table::Spans)
            .column_by_name("span_id")
            .expect("span_id");
        let kept = arrow::array::AsArray::as_fixed_size_binary(kept.as_ref());
        let all = arrow::array::AsArray::as_fixed_size_binary(all.as_ref());
        let set: std::collections::HashSet<&[u8]> =
            (0..kept.len()).map(|i| kept.value(i)).collect();
        (0..spans).map(|i| set.contains(all.value(i))).collect()
    };
    let report = |what: &str, d: Duration| println!("{what:<44} {:>9.1} us", d.as_secs_f64() * 1e6);
    report("chain", min_time(n, || programs.run(payload)));
    report(
        "filter/noise",
        min_time(n, || programs.filter.apply(payload)),
    );
    report(
        "  Payload::filter_tables (its mask)",
        min_time(n, || payload.filter(Table::Spans, &mask)),
    );
    report(
        "clean-attrs",
        min_time(n, || {
            let mut p = filtered.clone();
            programs.clean.apply(&mut p).expect("ok");
            p
        }),
    );
    let sa = filtered.table(Table::SpanAttrs).clone();
    report(
        "  delete_keys db.connection_string",
        min_time(n, || {
            ka::delete_keys(&sa, &KeySet::new(["db.connection_string"]), None)
        }),
    );
    report(
        "peer-service",
        min_time(n, || {
            let mut p = cleaned.clone();
            programs.peer.apply(&mut p).expect("ok");
            p
        }),
    );
    let ca = cleaned.table(Table::SpanAttrs).clone();
    let kept = cleaned.table(Table::Spans).num_rows();
    let server = ka::lookup(&ca, kept, "server.address").expect("ok");
    report(
        "  set_key peer.service (server.address)",
        min_time(n, || {
            ka::set_key(
                &ca,
                kept,
                None,
                "peer.service",
                Values::PerParent(&server),
                SetMode::Upsert,
            )
        }),
    );
    report(
        "  first_rows_of_keys (6 keys)",
        min_time(n, || {
            ka::first_rows_of_keys(
                &ca,
                kept,
                &[
                    "db.system.name",
                    "db.system",
                    "messaging.system",
                    "peer.service",
                    "server.address",
                    "net.peer.name",
                ]
                .map(String::from),
            )
        }),
    );
    // regex cost per value
    let dict = ka::keys(&ca);
    let dv = arrow::array::AsArray::as_string::<i32>(dict.values().as_ref());
    let strs = arrow::array::AsArray::as_string::<i32>(ca.column(3).as_ref());
    for (key, pat) in [
        ("url.path", "^/(health|healthz|ready|readyz|livez|metrics)$"),
        (
            "http.route",
            "^/(health|healthz|ready|readyz|livez|metrics)$",
        ),
        ("user_agent.original", "^ELB-HealthChecker/"),
        ("url.full", "/v1/(traces|metrics|logs)$"),
        ("db.system", "^(mongodb|redis|postgresql)$"),
    ] {
        let re = sluice_engine::ottl::regex::compile(pat).expect("regex");
        let vals: Vec<&str> = (0..ca.num_rows())
            .filter(|&r| dv.value(dict.keys().value(r) as usize) == key && strs.is_valid(r))
            .map(|r| strs.value(r))
            .collect();
        let d = min_time(n, || vals.iter().filter(|v| re.is_match(v)).count());
        println!(
            "  regex {key:<22} {:>5} values {:>7.1} us ({:.0} ns each)",
            vals.len(),
            d.as_secs_f64() * 1e6,
            d.as_secs_f64() * 1e9 / vals.len().max(1) as f64
        );
    }
    report(
        "  filter_record_batch span attrs (keep all but 1)",
        min_time(n, || {
            let mut m = vec![true; ca.num_rows()];
            m[5] = false;
            ka::delete_rows(
                &ca,
                &arrow::array::BooleanArray::from(m.iter().map(|k| !k).collect::<Vec<_>>()),
            )
        }),
    );
}
