"""Forwarding without decoding: a pipeline that reads no tables (otlp -> batch -> otlp) passes
clean protobuf requests on as their bytes (`sluice_receiver_undecoded_requests_total`), and
what arrives is what was sent; what is not clean (malformed, not UTF-8) gets today's answers.

Real peers on both sides: the OpenTelemetry Python SDK and raw grpcio / HTTP clients send, the
OTLP sink (opentelemetry-proto, grpcio) receives and decodes.
"""

import grpc
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from conftest import otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, make_trace_request
from sdk_workload import SdkClient, check_all

PB = {"Content-Type": "application/x-protobuf"}


def forward(sink, exporter: str = "otlp") -> dict:
    target = ({"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}} if exporter == "otlp"
              else {"endpoint": sink.http_endpoint})
    return {
        "receivers": {"otlp": otlp_receiver()},
        # A small max size, so that batches are also split (at resource boundaries).
        "processors": {"batch": {"timeout": "100ms", "send_batch_size": 40,
                                 "send_batch_max_size": 50}},
        "exporters": {exporter: target},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], [exporter])},
    }


def rich_request(index: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """A request of 3 resources x 7 spans with every kind of attribute value, events, links
    and status: what must come out unchanged."""
    req, _ = make_trace_request(0, "f0e0%04x" % index)
    del req.resource_spans[:]
    for r in range(3):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{index}-{r}"
        rs.schema_url = "https://opentelemetry.io/schemas/1.24.0"
        ss = rs.scope_spans.add()
        ss.scope.name = "e2e.forward"
        ss.scope.version = "1.0"
        for i in range(7):
            sp = ss.spans.add()
            sp.trace_id = bytes([index % 256, r, i]) + b"\x01" * 13
            sp.span_id = bytes([index % 256, r, i]) + b"\x02" * 5
            sp.name = f"op-{index}-{r}-{i} \u00e9\u4e16"
            sp.kind = 1 + i % 5
            sp.start_time_unix_nano = 1_700_000_000_000_000_000 + i
            sp.end_time_unix_nano = 1_700_000_000_000_100_000 + i
            a = sp.attributes
            a.add(key="s").value.string_value = "x" * (i * 40)
            a.add(key="i").value.int_value = -i
            a.add(key="d").value.double_value = i / 3
            a.add(key="b").value.bool_value = bool(i % 2)
            a.add(key="bytes").value.bytes_value = bytes(range(i))
            arr = a.add(key="arr").value.array_value
            arr.values.add().string_value = "a"
            arr.values.add().int_value = 7
            kv = a.add(key="kv").value.kvlist_value
            kv.values.add(key="k", value=common_pb2.AnyValue(string_value="v"))
            ev = sp.events.add(name="ev", time_unix_nano=5)
            ev.attributes.add(key="e").value.string_value = "1"
            sp.links.add(trace_id=b"\x09" * 16, span_id=b"\x08" * 8, trace_state="t=1")
            sp.status.code = 2
            sp.status.message = "boom"
    return req


def resources_by_service(requests_):
    out = {}
    for req in requests_:
        for rs in req.resource_spans:
            name = rs.resource.attributes[0].value.string_value
            assert name not in out, f"resource {name} arrived twice"
            out[name] = rs
    return out


def test_sent_requests_arrive_identical_and_undecoded(sluice, sink):
    s = sluice(forward(sink))
    sent = [rich_request(i) for i in range(6)]
    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        export = ch.unary_unary(GRPC_METHODS["traces"])
        for req in sent[:3]:
            export(req.SerializeToString(), timeout=10)
    for req in sent[3:]:
        r = requests.post(s.http_endpoint + "/v1/traces", data=req.SerializeToString(),
                          headers=PB, timeout=10)
        assert r.status_code == 200, r.text
    total = sum(len(ss.spans) for req in sent for rs in req.resource_spans
                for ss in rs.scope_spans)
    assert sink.wait_for(lambda k: len(k.spans()) >= total, 15)
    received = [r.request for r in sink.received("traces")]
    # Decoded on both sides: every resource, with all it holds, exactly as sent.
    want = resources_by_service(sent)
    got = resources_by_service(received)
    assert sorted(got) == sorted(want)
    for name, rs in want.items():
        assert got[name] == rs, f"resource {name} changed on the way"
    # Batches of at most 50 spans: split at resources (21 spans each), never inside one.
    assert all(sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans) <= 50
               for req in received)
    # Counted as today, and none of it decoded.
    assert s.wait_metric("otelcol_exporter_sent_spans_total", lambda v: v == total,
                         exporter="otlp") == total
    for transport in ("grpc", "http"):
        assert s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp",
                        transport=transport) == total / 2
        assert s.metric("sluice_receiver_undecoded_requests_total", receiver="otlp",
                        transport=transport) == 3


def test_the_sdks_requests_are_forwarded_undecoded_over_both_exporters(sluice, sink):
    for exporter, transport in (("otlp", "grpc"), ("otlphttp", "http")):
        sink.clear()
        s = sluice(forward(sink, exporter), name=f"fwd-{exporter}")
        client = SdkClient(transport, s.grpc_endpoint if transport == "grpc"
                           else s.http_endpoint)
        try:
            sent = client.send_all()
        finally:
            client.shutdown()
        check_all(sent, sink, timeout=15)
        # The SDK's traces, metrics and logs went on as bytes.
        undecoded = s.wait_metric("sluice_receiver_undecoded_requests_total",
                                  lambda v: v is not None and v >= 3, receiver="otlp",
                                  transport=transport)
        assert undecoded >= 3
        assert not s.metric("otelcol_exporter_send_failed_spans_total", exporter=exporter)


def test_bad_requests_get_todays_answers_through_the_forwarding_pipeline(sluice, sink):
    s = sluice(forward(sink))
    good = rich_request(1).SerializeToString()
    # Malformed: refused before it is acknowledged, over both transports.
    r = requests.post(s.http_endpoint + "/v1/traces", data=good[: len(good) // 2], headers=PB,
                      timeout=10)
    assert r.status_code == 400
    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        try:
            ch.unary_unary(GRPC_METHODS["traces"])(good[:-3], timeout=10)
            raise AssertionError("a truncated request was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
            assert "malformed" in e.details()
    # A span name that is not UTF-8: taken, repaired (U+FFFD), counted, delivered.
    req, _ = make_trace_request(2, "badc0de1")
    req.resource_spans[0].scope_spans[0].spans[1].name = "\U0001F600"
    body = bytearray(req.SerializeToString())
    at = body.find("\U0001F600".encode())
    body[at] = 0xFF
    r = requests.post(s.http_endpoint + "/v1/traces", data=bytes(body), headers=PB, timeout=10)
    assert r.status_code == 200, r.text
    assert sink.wait_for(lambda k: len(k.spans()) >= 2, 15)
    names = {sp["name"] for sp in sink.spans()}
    assert any("\ufffd" in n for n in names), names
    assert s.metric("sluice_receiver_invalid_utf8_strings_total", receiver="otlp",
                    transport="http") == 1
    assert s.metric("otelcol_receiver_failed_requests_total", receiver="otlp",
                    transport="http", reason="decode") == 1
    assert s.metric("otelcol_receiver_failed_requests_total", receiver="otlp",
                    transport="grpc", reason="decode") == 1
    # None of these went on as bytes.
    assert not s.metric("sluice_receiver_undecoded_requests_total", receiver="otlp",
                        transport="http")
    # Logs: a clean request goes on as bytes, its records counted.
    logs = logs_service_pb2.ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for i in range(4):
        sl.log_records.add(severity_text="INFO", body=common_pb2.AnyValue(string_value=f"l{i}"))
    r = requests.post(s.http_endpoint + "/v1/logs", data=logs.SerializeToString(), headers=PB,
                      timeout=10)
    assert r.status_code == 200
    assert sink.wait_for(lambda k: len(k.log_records()) >= 4, 15)
    assert s.metric("otelcol_receiver_accepted_log_records_total", receiver="otlp",
                    transport="http") == 4
    assert s.metric("sluice_receiver_undecoded_requests_total", receiver="otlp",
                    transport="http") == 1
