//! The gateway's OTTL processors (`filter/noise`, `transform/clean-attrs`,
//! `transform/peer-service`, from `k8s/config/gateway.yaml` as shipped) on a realistic batch:
//! sluice's column kernels side by side with a straightforward per-span interpreter of the
//! same compiled statements over `opentelemetry-proto` structs (the way the Collector runs
//! OTTL: item by item, attributes searched linearly). The interpreter is the benchmark's
//! baseline only (`sluice_engine::ottl::interp`, feature `testing`).
//!
//! Both start from decoded data (Arrow tables / proto structs) and end with the modified data;
//! neither includes decode or encode. The interpreter's input is a fresh clone per iteration,
//! made outside the timed part. Before timing, both outputs are checked to encode to the same
//! bytes.
//!
//! `cargo bench -p sluice-benches --bench ottl -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice_benches::gateway_traces_request;
use sluice_engine::ottl::interp;
use sluice_engine::ottl::{Context, ErrorMode, compile_condition, compile_group};
use sluice_engine::processors::filter::FilterConfig;
use sluice_engine::processors::transform::TransformConfig;
use sluice_engine::schema::Signal;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GATEWAY: &str = include_str!("../../k8s/config/gateway.yaml");

fn processor(doc: &serde_json::Value, id: &str) -> serde_json::Value {
    doc["processors"][id].clone()
}

/// The same three processors as the interpreter runs them (span context; the flat
/// clean-attrs group is inferred as span context, so its resource deletes run per span, as the
/// Collector runs them).
struct Reference {
    noise: Vec<sluice_engine::ottl::Condition>,
    clean: Vec<sluice_engine::ottl::Statement>,
    peer: (
        Vec<sluice_engine::ottl::Statement>,
        Vec<sluice_engine::ottl::Condition>,
    ),
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

fn reference(doc: &serde_json::Value) -> Reference {
    let noise = strings(&processor(doc, "filter/noise")["traces"]["span"])
        .iter()
        .map(|c| compile_condition(c, Signal::Traces, Some(Context::Span)).expect("compiles"))
        .collect();
    let clean = strings(&processor(doc, "transform/clean-attrs")["trace_statements"]);
    let (_, clean, _) = compile_group(&clean, &[], Signal::Traces, None).expect("compiles");
    let g = &processor(doc, "transform/peer-service")["trace_statements"][0];
    let (_, stmts, conds) = compile_group(
        &strings(&g["statements"]),
        &strings(&g["conditions"]),
        Signal::Traces,
        Some(Context::Span),
    )
    .expect("compiles");
    Reference {
        noise,
        clean,
        peer: (stmts, conds),
    }
}

fn run_reference(
    r: &Reference,
    req: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    interp::filter(req, &r.noise, ErrorMode::Ignore).expect("ignore");
    interp::run_group(req, &r.clean, &[], ErrorMode::Ignore).expect("ignore");
    interp::run_group(req, &r.peer.0, &r.peer.1, ErrorMode::Ignore).expect("ignore");
}

fn gateway(c: &mut Criterion) {
    let doc: serde_json::Value = serde_saphyr::from_str(GATEWAY).expect("gateway.yaml");
    let filter = FilterConfig::parse(&processor(&doc, "filter/noise"))
        .expect("filter/noise")
        .program(Signal::Traces);
    let clean = TransformConfig::parse(&processor(&doc, "transform/clean-attrs"))
        .expect("transform/clean-attrs")
        .program(Signal::Traces);
    let peer = TransformConfig::parse(&processor(&doc, "transform/peer-service"))
        .expect("transform/peer-service")
        .program(Signal::Traces);
    let reference = reference(&doc);

    let spans = 1000;
    let req = gateway_traces_request(spans);
    let payload = sluice_engine::otlp::decode_traces(&req.encode_to_vec()).expect("decodes");
    let run_sluice = |p: &sluice_engine::Payload| {
        let (mut out, _) = filter.apply(p).expect("ignore");
        clean.apply(&mut out).expect("ignore");
        peer.apply(&mut out).expect("ignore");
        out
    };

    // Same result both ways, byte for byte.
    let ours = run_sluice(&payload);
    let mut theirs = req.clone();
    run_reference(&reference, &mut theirs);
    assert_eq!(
        sluice_engine::otlp::encode_to_vec(&ours),
        theirs.encode_to_vec(),
        "column kernels and the per-span interpreter disagree"
    );
    eprintln!(
        "input: {spans} spans; {} kept after filter/noise, {} with peer.service",
        ours.item_count(),
        theirs
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.attributes.iter().any(|kv| kv.key == "peer.service"))
            .count()
    );

    let mut g = c.benchmark_group("gateway_ottl_1000_spans");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("per_span_interpreter", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                run_reference(&reference, &mut r);
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sluice_kernels", |b| {
        b.iter(|| run_sluice(black_box(&payload)))
    });
    g.finish();

    // Where the time goes, processor by processor (sluice only).
    let filtered = filter.apply(&payload).expect("ignore").0;
    let mut cleaned = filtered.clone();
    clean.apply(&mut cleaned).expect("ignore");
    let mut g = c.benchmark_group("gateway_ottl_parts_1000_spans");
    g.throughput(Throughput::Elements(spans as u64));
    g.bench_function("filter_noise", |b| {
        b.iter(|| filter.apply(black_box(&payload)))
    });
    g.bench_function("transform_clean_attrs", |b| {
        b.iter_batched(
            || filtered.clone(),
            |mut p| {
                clean.apply(&mut p).expect("ignore");
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("transform_peer_service", |b| {
        b.iter_batched(
            || cleaned.clone(),
            |mut p| {
                peer.apply(&mut p).expect("ignore");
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, gateway);
criterion_main!(benches);
