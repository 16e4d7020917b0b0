//! The entry points of the fuzz targets (`fuzz/` at the repository root, run by
//! `scripts/fuzz.sh` under `cargo +nightly fuzz`) and of the stable test that replays their
//! committed corpus on every CI run (`tests/fuzz_corpus.rs`): one function per target, so the
//! fuzzer and CI check the same properties of the same code.
//!
//! Each function takes arbitrary bytes and panics only on a bug: a decoder that panics, accepts
//! what it must refuse (or the reverse), loses items, or produces a payload that does not
//! survive its own round trip. Bad input itself is never a failure: it must be refused with an
//! error, which these functions then ignore.

use bytes::Bytes;
use prost::Message;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::flight::{self, Compression, Decoded, Decoder, Encoder, Limits, WireMessage};
use crate::otlp::testing::payload_diff;
use crate::otlp::{self, DecodeError};
use crate::payload::Payload;
use crate::schema::Signal;

/// Items (spans, data points, log records) in a request as prost decodes it, or why prost
/// refuses it.
fn prost_item_count(signal: Signal, data: &[u8]) -> Result<usize, prost::DecodeError> {
    Ok(match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(data)?
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
        Signal::Metrics => ExportMetricsServiceRequest::decode(data)?
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                None => 0,
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
            })
            .sum(),
        Signal::Logs => ExportLogsServiceRequest::decode(data)?
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum(),
    })
}

/// The protobuf decoder on `data` as an `Export<signal>ServiceRequest`, checked against prost:
/// - a decoded payload is valid ([`Payload::validate`]) and holds as many items as prost counts;
/// - it accepts what prost accepts, except the documented differences (ids of the wrong length
///   are refused, AnyValues nested deeper than [`otlp::MAX_ANY_VALUE_DEPTH`] are refused, unknown
///   fields of the group wire types are refused, strings that are not UTF-8 are repaired or
///   replaced by a later occurrence where prost refuses them);
/// - every refusal names the field it is about;
/// - decode -> encode -> decode gives the same payload, and the repaired encoding is valid for
///   prost;
/// - what the skim finds clean, the decoder accepts with nothing repaired, and a payload made
///   of its wire form reads as the decoded payload ([`skim_agrees`]).
pub fn otlp_protobuf(signal: Signal, data: &[u8]) {
    let ours = otlp::decode_with_stats(signal, data);
    skim_agrees(signal, data, &ours);
    let prost = prost_item_count(signal, data);
    match &ours {
        Ok((payload, _)) => {
            if let Err(e) = payload.validate() {
                panic!("decoded payload is invalid: {e}");
            }
            match &prost {
                Ok(n) => assert_eq!(payload.item_count(), *n, "item count differs from prost's"),
                // Strings that are not UTF-8 are repaired and counted, or were the earlier
                // occurrence of a singular field that a later one replaced (last wins, as in
                // prost, which still checks every occurrence).
                Err(e) => assert!(
                    e.to_string().contains("UTF-8"),
                    "accepted what prost refuses: {e}"
                ),
            }
            round_trip(payload);
        }
        Err(e) => {
            assert!(
                e.path().is_some_and(|p| !p.is_empty()),
                "a refusal without a field path: {e}"
            );
            let documented = matches!(e, DecodeError::InvalidIdLength { .. })
                || e.to_string().contains("nested deeper than")
                || refuses_groups(e);
            if let (Ok(_), false) = (&prost, documented) {
                panic!("refused what prost accepts: {e}");
            }
        }
    }
}

/// The skim's promise ([`otlp::skim`]): a request it finds clean is one the decoder accepts
/// (`decoded`, its result on `data`) with no string repaired, with the items the skim counted;
/// its resources are the whole request, back to back, their items adding up; and the payload
/// made of the wire form has the decoded payload's tables and encodes to the request's bytes.
pub fn skim_agrees(
    signal: Signal,
    data: &[u8],
    decoded: &Result<(Payload, otlp::DecodeStats), DecodeError>,
) {
    let Some(skim) = otlp::skim(signal, data) else {
        return;
    };
    let (payload, stats) = match decoded {
        Ok(d) => d,
        Err(e) => panic!("the skim found clean what the decoder refuses: {e}"),
    };
    assert_eq!(
        stats.replaced_invalid_utf8, 0,
        "the skim found clean what the decoder repairs"
    );
    assert_eq!(
        skim.items,
        payload.item_count(),
        "the skim counts other items"
    );
    let mut at = 0;
    for r in &skim.resources {
        assert_eq!(r.start, at, "resources are not back to back");
        at = r.end;
    }
    assert_eq!(at, data.len(), "resources do not cover the request");
    assert_eq!(
        skim.resources.iter().map(|r| r.items).sum::<usize>(),
        skim.items,
        "resource items do not add up"
    );
    let wire = Payload::from_wire(
        signal,
        crate::payload::WireForm::new(Bytes::copy_from_slice(data), &skim),
    );
    assert_eq!(wire.item_count(), skim.items);
    assert_eq!(
        otlp::encode_to_vec(&wire),
        data,
        "a wire form encodes to other bytes"
    );
    if let Some(diff) = payload_diff(payload, &wire) {
        panic!("a wire form reads other tables than the decode: {diff}");
    }
}

/// Groups (wire types 3 and 4, deprecated, never written by an OTLP sender) are refused
/// wherever they appear; prost skips them as unknown fields (the module docs of
/// [`otlp::decode`] list the difference).
fn refuses_groups(e: &DecodeError) -> bool {
    let text = e.to_string();
    text.contains("(start-group) is not supported") || text.contains("(end-group) is not supported")
}

/// Encodes a decoded payload back to OTLP protobuf and decodes it again: the same data, and an
/// encoding prost reads with the same item count.
fn round_trip(payload: &Payload) {
    let signal = payload.signal();
    let encoded = otlp::encode_to_vec(payload);
    match prost_item_count(signal, &encoded) {
        Ok(n) => assert_eq!(n, payload.item_count(), "prost counts other items"),
        Err(e) => panic!("the encoder wrote what prost refuses: {e}"),
    }
    let again = otlp::decode(signal, &encoded)
        .unwrap_or_else(|e| panic!("the encoder wrote what the decoder refuses: {e}"));
    if let Some(diff) = payload_diff(payload, &again) {
        panic!("decode -> encode -> decode changed the payload: {diff}");
    }
}

/// The OTLP/JSON decoder on `data`, as each of the three signals (a body is one signal's
/// request; the others must refuse it cleanly or read what they recognise). A decoded payload
/// is valid, survives the protobuf round trip, and its own JSON encoding decodes to the same
/// payload.
pub fn otlp_json(data: &[u8]) {
    for signal in Signal::ALL {
        let Ok(payload) = otlp::decode_json(signal, data) else {
            continue;
        };
        if let Err(e) = payload.validate() {
            panic!("decoded {signal:?} JSON payload is invalid: {e}");
        }
        round_trip(&payload);
        let json = otlp::encode_json(&payload)
            .unwrap_or_else(|e| panic!("cannot encode a decoded {signal:?} payload as JSON: {e}"));
        let again = otlp::decode_json(signal, &json)
            .unwrap_or_else(|e| panic!("the JSON encoder wrote what the decoder refuses: {e}"));
        if let Some(diff) = payload_diff(&payload, &again) {
            panic!("JSON decode -> encode -> decode changed the {signal:?} payload: {diff}");
        }
    }
}

/// Splits fuzz input into the messages of one Flight stream: each message is three
/// length-prefixed fields (`u32` little endian length, then the bytes) in the order header,
/// body, app_metadata. A length past the end takes what is left; input that ends inside a
/// length ends the stream. [`flight_frame`] is the inverse.
pub fn flight_messages(mut data: &[u8]) -> Vec<WireMessage> {
    fn field(data: &mut &[u8]) -> Option<Bytes> {
        let (len, rest) = data.split_first_chunk::<4>()?;
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        let (field, rest) = rest.split_at(len);
        *data = rest;
        Some(Bytes::copy_from_slice(field))
    }
    let mut messages = Vec::new();
    while let (Some(header), Some(body), Some(app_metadata)) =
        (field(&mut data), field(&mut data), field(&mut data))
    {
        messages.push(WireMessage {
            header,
            body,
            app_metadata,
        });
    }
    messages
}

/// The fuzz input [`flight_messages`] reads as `messages` (for seed corpora).
pub fn flight_frame(messages: &[WireMessage]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        for f in [&m.header, &m.body, &m.app_metadata] {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
    }
    out
}

/// What the Flight receiver does with a stream's messages after the hello
/// ([`Decoder::decode`] on each, until the first error), on the messages in `data`
/// ([`flight_messages`]). arrow-ipc must not panic (the decoder catches it, but counts it: a
/// bug to fix); a payload that is delivered passes the same checks as decoded OTLP, encodes to
/// OTLP that decodes with the same item count, and comes back equal through a fresh stream.
pub fn flight_stream(data: &[u8]) {
    let panics_before = flight::panics_caught();
    let mut decoder = Decoder::new(Limits::default());
    for message in flight_messages(data) {
        match decoder.decode(&message) {
            Ok(Some(Decoded {
                payload: Ok(payload),
                ..
            })) => check_flight_payload(&payload),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(
        flight::panics_caught(),
        panics_before,
        "arrow-ipc panicked on a Flight message"
    );
}

fn check_flight_payload(payload: &Payload) {
    if let Err(e) = payload.validate() {
        panic!("a Flight payload is invalid: {e}");
    }
    if let Err(e) = flight::validate_content(payload) {
        panic!("a delivered Flight payload fails the content checks: {e}");
    }
    let encoded = otlp::encode_to_vec(payload);
    let reread = otlp::decode(payload.signal(), &encoded)
        .unwrap_or_else(|e| panic!("a Flight payload encodes to OTLP the decoder refuses: {e}"));
    assert_eq!(
        reread.item_count(),
        payload.item_count(),
        "a Flight payload's items change through OTLP"
    );
    let mut messages = Vec::new();
    Encoder::new(Compression::None)
        .encode(payload, &mut messages)
        .unwrap_or_else(|e| panic!("cannot encode a decoded Flight payload again: {e}"));
    let mut decoder = Decoder::new(Limits::default());
    let mut again = None;
    for m in &messages {
        if let Some(d) = decoder
            .decode(m)
            .unwrap_or_else(|e| panic!("a re-encoded Flight payload does not decode: {e}"))
        {
            again = Some(
                d.payload
                    .unwrap_or_else(|e| panic!("a re-encoded Flight payload is refused: {e}")),
            );
        }
    }
    let again = again.expect("the encoder ends every payload");
    if let Some(diff) = payload_diff(payload, &again) {
        panic!("a Flight payload changes through a second stream: {diff}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::MAX_ANY_VALUE_DEPTH;

    #[test]
    fn flight_framing_round_trips() {
        let messages = vec![
            WireMessage {
                header: Bytes::from_static(b"h"),
                body: Bytes::new(),
                app_metadata: Bytes::from_static(&[1, 2, 3]),
            },
            WireMessage::default(),
        ];
        assert_eq!(flight_messages(&flight_frame(&messages)), messages);
        // A truncated tail ends the stream; a length past the end takes the rest.
        let mut framed = flight_frame(&messages[..1]);
        framed.extend_from_slice(&[9, 0, 0]);
        assert_eq!(flight_messages(&framed), messages[..1]);
        let past_the_end = flight_messages(&[1, 0, 0, 0, b'x', 0, 0, 0, 0, 100, 0, 0, 0, b'm']);
        assert_eq!(past_the_end.len(), 1);
        assert_eq!(past_the_end[0].header, Bytes::from_static(b"x"));
        assert_eq!(past_the_end[0].app_metadata, Bytes::from_static(b"m"));
    }

    #[test]
    fn nesting_bound_message_matches_what_otlp_protobuf_allows() {
        // `otlp_protobuf` recognises the depth refusal by its text: keep them in step.
        let e = otlp::check_nested_value(&deep_array(MAX_ANY_VALUE_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("nested deeper than"), "{e}");
    }

    /// Found by the `otlp_traces` target: prost skips an unknown field of the group wire type,
    /// sluice refuses it (documented); the target must take that as agreement.
    #[test]
    fn an_unknown_group_field_is_refused_where_prost_skips_it() {
        let mut request = Vec::new();
        prost::encoding::encode_key(100, prost::encoding::WireType::StartGroup, &mut request);
        prost::encoding::encode_key(100, prost::encoding::WireType::EndGroup, &mut request);
        assert_eq!(prost_item_count(Signal::Traces, &request).unwrap(), 0);
        let e = otlp::decode(Signal::Traces, &request).unwrap_err();
        assert!(refuses_groups(&e), "{e}");
        otlp_protobuf(Signal::Traces, &request);
    }

    /// Found by the `otlp_metrics` target: a singular string sent twice, the first occurrence
    /// not UTF-8. The last occurrence wins (as in prost), so nothing is repaired, but prost
    /// refuses the request for the first one.
    #[test]
    fn an_invalid_string_replaced_by_a_later_occurrence_is_accepted() {
        let mut resource_metrics = Vec::new();
        prost::encoding::bytes::encode(3, &b"\xff".to_vec(), &mut resource_metrics);
        prost::encoding::string::encode(3, &"https://schema".to_string(), &mut resource_metrics);
        let mut request = Vec::new();
        prost::encoding::bytes::encode(1, &resource_metrics, &mut request);
        assert!(prost_item_count(Signal::Metrics, &request).is_err());
        let (payload, stats) = otlp::decode_with_stats(Signal::Metrics, &request).unwrap();
        assert_eq!(stats.replaced_invalid_utf8, 0);
        assert_eq!(payload.table(crate::Table::Resources).num_rows(), 1);
        otlp_protobuf(Signal::Metrics, &request);
    }

    fn deep_array(levels: usize) -> Vec<u8> {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value::Value};
        let mut v = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..levels {
            v = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        v.encode_to_vec()
    }
}
