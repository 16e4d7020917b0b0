//! [`PartsTables`]: a payload made of several payloads one after the other, whose tables are
//! concatenated only when something reads them.
//!
//! Why: `batch` merges the payloads it buffered into one request, and an Arrow concat copies
//! every column again (strings included) although the exporter next in line only encodes
//! the result — and encoding the parts one after the other writes the same request, since
//! top-level repeated fields of protobuf concatenate. So `batch` hands on the list
//! ([`super::Payload::concat_deferred`]); the encoder walks it, counts and sizes are sums,
//! and splitting to `send_batch_max_size` regroups parts. A component that reads a table gets
//! the concatenation, built once and shared by clones, as before.

use std::sync::OnceLock;

use super::Payload;
use crate::schema::Signal;

#[derive(Debug)]
pub(super) struct PartsTables {
    pub signal: Signal,
    pub parts: Vec<Payload>,
    pub items: usize,
    merged: OnceLock<Payload>,
}

impl PartsTables {
    pub fn new(signal: Signal, parts: Vec<Payload>) -> Self {
        PartsTables {
            signal,
            items: parts.iter().map(Payload::item_count).sum(),
            parts,
            merged: OnceLock::new(),
        }
    }

    /// The parts' tables concatenated, once. [`super::Payload::concat_deferred`] defers only
    /// parts whose tables have the schemas the concatenation expects, so it does not fail; if
    /// it ever did, that is a bug, logged loudly, and the payload reads as empty rather than
    /// taking a pipeline worker down with a panic.
    pub fn merged(&self) -> &Payload {
        self.merged
            .get_or_init(|| match Payload::concat(self.signal, &self.parts) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, items = self.items, "internal: deferred parts do not concatenate (a bug); their items are lost");
                    Payload::empty(self.signal)
                }
            })
    }

    pub fn merged_if_read(&self) -> Option<&Payload> {
        self.merged.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::testing::{
        arb_logs_request, arb_metrics_request, arb_traces_request, assert_payload_eq,
    };
    use crate::otlp::{decode, encode_to_vec};
    use proptest::prelude::*;
    use prost::Message;

    fn requests(signal: Signal) -> BoxedStrategy<Vec<Vec<u8>>> {
        let one = match signal {
            Signal::Traces => arb_traces_request().prop_map(|r| r.encode_to_vec()).boxed(),
            Signal::Metrics => arb_metrics_request()
                .prop_map(|r| r.encode_to_vec())
                .boxed(),
            Signal::Logs => arb_logs_request().prop_map(|r| r.encode_to_vec()).boxed(),
        };
        proptest::collection::vec(one, 2..6).boxed()
    }

    fn decoded(signal: Signal, bodies: &[Vec<u8>]) -> Vec<Payload> {
        bodies
            .iter()
            .filter_map(|b| decode(signal, b).ok())
            .collect()
    }

    /// Deferred is concatenated, as far as anyone can tell: the same bytes encoded, the same
    /// tables read, the same counts; splitting to a size regroups parts without losing,
    /// duplicating or reordering an item.
    fn deferred_is_concat(signal: Signal, bodies: &[Vec<u8>], max: usize) {
        let parts = decoded(signal, bodies);
        if parts.len() < 2 {
            return;
        }
        let eager = Payload::concat(signal, &parts).unwrap();
        let deferred = Payload::concat_deferred(signal, parts.clone()).unwrap();
        assert!(deferred.parts().is_some(), "decoded parts are deferred");
        assert_eq!(deferred.item_count(), eager.item_count());
        assert_eq!(
            deferred.memory_size(),
            parts.iter().map(Payload::memory_size).sum::<usize>(),
            "before a read, the parts' bytes"
        );
        assert_eq!(encode_to_vec(&deferred), encode_to_vec(&eager));
        let sliced = crate::otlp::encode_to_slices(&deferred);
        assert!(sliced.len() <= 1, "decoded parts encode into one slice");
        assert_eq!(sliced.concat(), encode_to_vec(&eager));
        let chunks = deferred.split_items(max).unwrap();
        let mut rejoined = Vec::new();
        for c in &chunks {
            assert!(c.item_count() <= max || max == 0, "chunk over {max}");
            rejoined.extend(encode_to_vec(c));
        }
        // Splits drop containers left without items (as splitting the concatenation does):
        // compare what has items.
        assert_eq!(
            with_items_only(signal, &rejoined),
            with_items_only(signal, &encode_to_vec(&eager))
        );
        // A read concatenates: the tables are the eager concatenation's.
        assert_payload_eq(&deferred, &eager);
        assert!(
            deferred.parts().is_some(),
            "reading does not change what it is"
        );
    }

    /// Every item of the request with its resource and scope (each encoded): what a split
    /// keeps, whichever envelopes it repeats or drops.
    fn with_items_only(signal: Signal, body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let mut out = Vec::new();
        match signal {
            Signal::Traces => {
                let r = trace::v1::ExportTraceServiceRequest::decode(body).unwrap();
                for mut rs in r.resource_spans {
                    let scopes = std::mem::take(&mut rs.scope_spans);
                    for mut ss in scopes {
                        let items = std::mem::take(&mut ss.spans);
                        for i in items {
                            out.push((rs.encode_to_vec(), ss.encode_to_vec(), i.encode_to_vec()));
                        }
                    }
                }
            }
            Signal::Logs => {
                let r = logs::v1::ExportLogsServiceRequest::decode(body).unwrap();
                for mut rl in r.resource_logs {
                    let scopes = std::mem::take(&mut rl.scope_logs);
                    for mut sl in scopes {
                        let items = std::mem::take(&mut sl.log_records);
                        for i in items {
                            out.push((rl.encode_to_vec(), sl.encode_to_vec(), i.encode_to_vec()));
                        }
                    }
                }
            }
            Signal::Metrics => {
                let r = metrics::v1::ExportMetricsServiceRequest::decode(body).unwrap();
                for mut rm in r.resource_metrics {
                    let scopes = std::mem::take(&mut rm.scope_metrics);
                    for mut sm in scopes {
                        let items = std::mem::take(&mut sm.metrics);
                        for m in items {
                            // One entry per data point: the metric holding just that point.
                            let mut one =
                                |m: &mut opentelemetry_proto::tonic::metrics::v1::Metric| {
                                    out.push((
                                        rm.encode_to_vec(),
                                        sm.encode_to_vec(),
                                        m.encode_to_vec(),
                                    ));
                                };
                            macro_rules! points {
                                ($d:expr, $variant:ident) => {{
                                    for p in std::mem::take(&mut $d.data_points) {
                                        let mut d = $d.clone();
                                        d.data_points = vec![p];
                                        let mut single = m.clone();
                                        single.data = Some(Data::$variant(d));
                                        one(&mut single);
                                    }
                                }};
                            }
                            match m.data.clone() {
                                Some(Data::Gauge(mut d)) => points!(d, Gauge),
                                Some(Data::Sum(mut d)) => points!(d, Sum),
                                Some(Data::Histogram(mut d)) => points!(d, Histogram),
                                Some(Data::ExponentialHistogram(mut d)) => {
                                    points!(d, ExponentialHistogram)
                                }
                                Some(Data::Summary(mut d)) => points!(d, Summary),
                                None => {}
                            }
                        }
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn deferred_traces_are_their_concatenation(b in requests(Signal::Traces), max in 1usize..12) {
            deferred_is_concat(Signal::Traces, &b, max);
        }
        #[test]
        fn deferred_metrics_are_their_concatenation(b in requests(Signal::Metrics), max in 1usize..12) {
            deferred_is_concat(Signal::Metrics, &b, max);
        }
        #[test]
        fn deferred_logs_are_their_concatenation(b in requests(Signal::Logs), max in 1usize..12) {
            deferred_is_concat(Signal::Logs, &b, max);
        }
    }

    #[test]
    fn one_part_or_parts_of_another_signal_are_not_deferred() {
        let wire = crate::otlp::testing::wire_traces(0, 2, 3, 4);
        let p = decode(Signal::Traces, &encode_to_vec(&wire)).unwrap();
        assert!(p.wire().is_none() && p.parts().is_none());
        let one = Payload::concat_deferred(Signal::Traces, vec![p.clone()]).unwrap();
        assert!(one.parts().is_none());
        assert!(Payload::concat_deferred(Signal::Logs, vec![p.clone(), p]).is_err());
    }

    /// Deferred parts mixing wire forms and decoded payloads are sent as the wire parts' own
    /// slices (the bodies they came in, not copied) with the decoded neighbours' encoding
    /// between them: the same bytes as encoding the whole.
    #[test]
    fn mixed_parts_are_sent_as_their_slices() {
        use crate::otlp::testing::wire_traces;
        let decoded = |p: &Payload| decode(Signal::Traces, &encode_to_vec(p)).unwrap();
        let (wire_a, wire_d) = (wire_traces(0, 2, 3, 10), wire_traces(300, 3, 1, 10));
        let parts = vec![
            wire_a.clone(),
            decoded(&wire_traces(100, 1, 4, 10)),
            decoded(&wire_traces(200, 1, 2, 10)),
            wire_d.clone(),
        ];
        let deferred = Payload::concat_deferred(Signal::Traces, parts).unwrap();
        assert!(deferred.parts().is_some());
        let slices = crate::otlp::encode_to_slices(&deferred);
        assert_eq!(slices.len(), 3, "wire, the two decoded parts, wire");
        assert_eq!(slices.concat(), encode_to_vec(&deferred));
        let body = |p: &Payload| p.wire().unwrap().slices()[0].as_ptr();
        assert_eq!(slices[0].as_ptr(), body(&wire_a), "not copied");
        assert_eq!(slices[2].as_ptr(), body(&wire_d), "not copied");
    }
}
