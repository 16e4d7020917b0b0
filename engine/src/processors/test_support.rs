//! Small helpers for processor tests: payloads of n spans, and a consumer that records.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::trace::v1::Span;

use crate::component::{BoxFuture, ConsumeError, Consumer};
pub use crate::otlp::testing::one_scope;
use crate::payload::Payload;

/// A traces payload of `n` spans whose span ids are `first..first + n` (big-endian).
pub fn spans(first: u64, n: usize) -> Payload {
    let spans = (0..n as u64)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: (first + i).to_be_bytes().to_vec(),
            name: "s".into(),
            ..Default::default()
        })
        .collect();
    one_scope(spans)
}

/// A traces payload in its wire form: `resources` resources of `per_resource` spans each,
/// span ids numbered from `first` (big-endian), as [`spans`] numbers them.
pub fn wire_spans(first: u64, resources: usize, per_resource: usize) -> Payload {
    crate::otlp::testing::wire_traces(first, resources, per_resource, 1)
}

/// The span ids of a traces payload, as numbers.
pub fn span_ids(p: &Payload) -> Vec<u64> {
    use arrow::array::{Array, AsArray};
    let c = p
        .table(crate::Table::Spans)
        .column_by_name("span_id")
        .expect("span_id");
    let c = c.as_fixed_size_binary();
    (0..c.len())
        .map(|i| u64::from_be_bytes(c.value(i).try_into().expect("8 bytes")))
        .collect()
}

/// Records every payload; optionally refuses.
#[derive(Default, Clone)]
pub struct Capture {
    pub got: Arc<Mutex<Vec<Payload>>>,
    pub refuse: Arc<Mutex<Option<ConsumeError>>>,
}

impl Capture {
    pub fn items(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(Payload::item_count)
            .sum()
    }
    pub fn batches(&self) -> Vec<usize> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(Payload::item_count)
            .collect()
    }
}

/// A [`Capture`] that says it takes wire forms, as the OTLP exporters do.
#[derive(Default, Clone)]
pub struct WireCapture(pub Capture);

impl Consumer for WireCapture {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.consume(p)
    }

    fn keeps_wire_form(&self) -> bool {
        true
    }
}

impl Consumer for Capture {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
            }
            self.got.lock().unwrap().push(p);
            Ok(())
        })
    }
}
