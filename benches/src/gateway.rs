//! The gateway's OTTL processors (`filter/noise`, `transform/clean-attrs`,
//! `transform/peer-service`) exactly as `k8s/config/gateway.yaml` ships them, compiled two
//! ways: sluice's programs over Arrow payloads, and the per-span interpreter baseline
//! (`sluice_engine::ottl::interp`) over prost structs. Shared by `benches/ottl.rs` and
//! `examples/ottl_profile.rs`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use sluice_engine::Payload;
use sluice_engine::ottl::{
    Condition, Context, ErrorMode, Statement, compile_condition, compile_group, interp,
};
use sluice_engine::processors::filter::{FilterConfig, FilterProgram};
use sluice_engine::processors::transform::{TransformConfig, TransformProgram};
use sluice_engine::schema::Signal;

pub const GATEWAY_YAML: &str = include_str!("../../k8s/config/gateway.yaml");

fn processor(doc: &serde_json::Value, id: &str) -> serde_json::Value {
    doc["processors"][id].clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

fn doc() -> serde_json::Value {
    serde_saphyr::from_str(GATEWAY_YAML).expect("gateway.yaml")
}

/// The three processors as sluice runs them.
pub struct Programs {
    pub filter: FilterProgram,
    pub clean: TransformProgram,
    pub peer: TransformProgram,
}

impl Programs {
    pub fn new() -> Self {
        let doc = doc();
        Programs {
            filter: FilterConfig::parse(&processor(&doc, "filter/noise"))
                .expect("filter/noise")
                .program(Signal::Traces),
            clean: TransformConfig::parse(&processor(&doc, "transform/clean-attrs"))
                .expect("transform/clean-attrs")
                .program(Signal::Traces),
            peer: TransformConfig::parse(&processor(&doc, "transform/peer-service"))
                .expect("transform/peer-service")
                .program(Signal::Traces),
        }
    }

    /// filter/noise, then clean-attrs, then peer-service, as the pipeline runs them; then
    /// every table built, so that rebuilds the processors leave pending (attribute tables of
    /// events and links after the filter, see `PendingRows`) are counted too.
    pub fn run(&self, p: &Payload) -> Payload {
        let (mut out, _) = self.filter.apply(p).expect("error_mode ignore");
        self.clean.apply(&mut out).expect("error_mode ignore");
        self.peer.apply(&mut out).expect("error_mode ignore");
        out.tables().for_each(|(_, t)| {
            std::hint::black_box(t.num_rows());
        });
        out
    }
}

impl Default for Programs {
    fn default() -> Self {
        Self::new()
    }
}

/// The same three processors as the per-span interpreter runs them (span context; the flat
/// clean-attrs group is inferred as span context, so its resource deletes run per span, as
/// the Collector runs them).
pub struct Reference {
    noise: Vec<Condition>,
    clean: Vec<Statement>,
    peer: (Vec<Statement>, Vec<Condition>),
}

impl Reference {
    pub fn new() -> Self {
        let doc = doc();
        let noise = strings(&processor(&doc, "filter/noise")["traces"]["span"])
            .iter()
            .map(|c| compile_condition(c, Signal::Traces, Some(Context::Span)).expect("compiles"))
            .collect();
        let clean = strings(&processor(&doc, "transform/clean-attrs")["trace_statements"]);
        let (_, clean, _) = compile_group(&clean, &[], Signal::Traces, None).expect("compiles");
        let g = &processor(&doc, "transform/peer-service")["trace_statements"][0];
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

    pub fn run(&self, req: &mut ExportTraceServiceRequest) {
        interp::filter(req, &self.noise, ErrorMode::Ignore).expect("ignore");
        interp::run_group(req, &self.clean, &[], ErrorMode::Ignore).expect("ignore");
        interp::run_group(req, &self.peer.0, &self.peer.1, ErrorMode::Ignore).expect("ignore");
    }
}

impl Default for Reference {
    fn default() -> Self {
        Self::new()
    }
}
