"""Self-test of the harness, no sluice involved: the real SDK exports straight to the sink.
If these fail, the harness is broken, not sluice."""

import gzip

import grpc
import pytest
import requests

from otlp_sink import GRPC_METHODS, OtlpSink
from sdk_workload import SdkClient, check_all
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_to_sink(transport):
    with OtlpSink() as sink:
        endpoint = sink.grpc_endpoint if transport == "grpc" else sink.http_endpoint
        client = SdkClient(transport, endpoint)
        try:
            sent = client.send_all()
            check_all(sent, sink, timeout=10)
            assert {r.transport for r in sink.received()} == {transport}
        finally:
            client.shutdown()


def _request(span_id: bytes):
    req = trace_service_pb2.ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name = b"\x01" * 16, span_id, "x"
    return req


def test_sink_restart_same_ports_and_http_details():
    sink = OtlpSink().start()
    try:
        body = _request(b"\x02" * 8).SerializeToString()
        url = sink.http_endpoint + "/v1/traces"
        s = requests.Session()  # keep-alive connection, must be cut by stop()
        r = s.post(url, data=gzip.compress(body), timeout=5,
                   headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        assert r.status_code == 200
        assert s.post(url, data=b"{}", headers={"Content-Type": "text/plain"}, timeout=5
                      ).status_code == 415
        r = s.post(url, timeout=5, headers={"Content-Type": "application/json"},
                   json={"resourceSpans": [{"scopeSpans": [{"spans": [
                       {"traceId": "01" * 16, "spanId": "03" * 8, "name": "j"}]}]}]})
        assert r.status_code == 200, r.text
        assert sorted(x["span_id"] for x in sink.spans()) == ["02" * 8, "03" * 8]

        sink.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            s.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        with grpc.insecure_channel(sink.grpc_endpoint) as ch:
            call = ch.unary_unary(GRPC_METHODS["traces"])
            with pytest.raises(grpc.RpcError) as e:
                call(body, timeout=2)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE

        sink.start()  # same ports
        assert s.post(url, data=body, timeout=5,
                      headers={"Content-Type": "application/x-protobuf"}).status_code == 200
        with grpc.insecure_channel(sink.grpc_endpoint) as ch:
            ch.unary_unary(GRPC_METHODS["traces"])(_request(b"\x04" * 8).SerializeToString(),
                                                   timeout=5)
        assert sorted(x["span_id"] for x in sink.spans()) == sorted(
            ["02" * 8, "03" * 8, "02" * 8, "04" * 8])
        assert len(sink.received(transport="grpc")) == 1

        sink.fail_with(grpc.StatusCode.UNAVAILABLE, 503)
        assert s.post(url, data=body, timeout=5,
                      headers={"Content-Type": "application/x-protobuf"}).status_code == 503
        sink.fail_with(None, None)
    finally:
        sink.stop()
