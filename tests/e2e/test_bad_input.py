"""Bad input against a running sluice: each gets the right error with a message, sluice keeps
serving, and the refusals are counted in self-telemetry."""

import functools
import zlib

import grpc
import pytest
import requests
from google.rpc import status_pb2

from conftest import otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, make_trace_request

MAX_BODY = 1024 * 1024  # receivers.otlp.protocols.http.max_request_body_size in these tests
PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def config(sink) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver(http_extra={"max_request_body_size": MAX_BODY})},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], ["otlp"])},
    }


def valid_body(n=3, run_id="0badc0de"):
    return make_trace_request(n, run_id)[0].SerializeToString()


@functools.lru_cache(maxsize=1)
def gzip_bomb(size=200 * 1024 * 1024) -> bytes:
    """`size` bytes of zeros, gzip-compressed (about 200 KiB), built without holding them."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    chunk = bytes(1024 * 1024)
    parts = [c.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(c.flush())
    return b"".join(parts)


def oversized_body() -> bytes:
    req, _ = make_trace_request(1, "0b16b0d1")
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    sp.attributes.add(key="big").value.string_value = "x" * (2 * MAX_BODY)
    return req.SerializeToString()


# name -> (path, headers, body factory, acceptable statuses, counted as a failed request)
HTTP_CASES = {
    "garbage_protobuf": ("/v1/traces", PB, lambda: b"\xff" * 64, {400}, True),
    "truncated_protobuf": ("/v1/traces", PB,
                           lambda: valid_body(20)[: len(valid_body(20)) // 2], {400}, True),
    "garbage_metrics": ("/v1/metrics", PB, lambda: b"\x0a\xff\xff\xff\x0f\x01", {400}, True),
    "garbage_logs": ("/v1/logs", PB, lambda: b"\xff" * 64, {400}, True),
    "invalid_json": ("/v1/traces", JSON, lambda: b'{"resourceSpans": [ {"scopeSpans": ', {400},
                     True),
    "json_wrong_shape": ("/v1/traces", JSON, lambda: b'{"resourceSpans": "not a list"}', {400},
                         True),
    "corrupt_gzip": ("/v1/traces", {**PB, "Content-Encoding": "gzip"},
                     lambda: b"\x1f\x8b\x08\x00garbage-not-deflate", {400}, True),
    "gzip_bomb": ("/v1/traces", {**PB, "Content-Encoding": "gzip"}, gzip_bomb, {400, 413},
                  True),
    "oversized_body": ("/v1/traces", PB, oversized_body, {413}, True),
    "wrong_content_type": ("/v1/traces", {"Content-Type": "text/plain"},
                           lambda: b"hello", {415}, True),
    "unknown_content_encoding": ("/v1/traces", {**PB, "Content-Encoding": "snappy-ish"},
                                 valid_body, {400, 415}, True),
    "unknown_path": ("/v1/tracez", PB, valid_body, {404}, False),
}


def error_message(r: requests.Response) -> str:
    """The message of an OTLP/HTTP error response (google.rpc.Status in protobuf or JSON, or
    plain text)."""
    ctype = r.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype == "application/x-protobuf":
        st = status_pb2.Status()
        try:
            st.ParseFromString(r.content)
            return st.message
        except Exception:  # noqa: BLE001
            return ""
    if ctype == "application/json":
        try:
            j = r.json()
            return str(j.get("message") or j) if isinstance(j, dict) else str(j)
        except ValueError:
            pass
    return r.text.strip()


def post(s, path, headers, body):
    try:
        return requests.post(s.http_endpoint + path, data=body, headers=headers, timeout=30)
    except requests.exceptions.RequestException as e:
        pytest.fail(f"POST {path} ({len(body)} bytes, {headers}): no HTTP answer, {e!r}; "
                    f"sluice alive: {s.proc.poll() is None}", pytrace=False)


def assert_still_serves(s, sink, run_id: str):
    """A valid request over HTTP and one over gRPC are accepted and delivered."""
    req, ids_http = make_trace_request(2, run_id, first=0)
    r = post(s, "/v1/traces", PB, req.SerializeToString())
    assert r.status_code == 200, f"valid request after bad input: {r.status_code} {r.text!r}"
    req, ids_grpc = make_trace_request(2, run_id, first=100)
    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        ch.unary_unary(GRPC_METHODS["traces"])(req.SerializeToString(), timeout=10)
    want = set(ids_http + ids_grpc)
    assert sink.wait_for(lambda k: want <= {x["span_id"] for x in k.spans()}, 15), \
        "valid spans sent after the bad input never reached the sink"


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_bad_http_input(sluice, sink, case):
    path, headers, make_body, statuses, counted = HTTP_CASES[case]
    s = sluice(config(sink))
    r = post(s, path, headers, make_body())
    assert r.status_code in statuses, (
        f"{case}: got HTTP {r.status_code} {r.text[:300]!r}, want one of {sorted(statuses)}")
    assert error_message(r), f"{case}: HTTP {r.status_code} without an error message"
    assert s.proc.poll() is None, f"{case}: sluice died"
    assert_still_serves(s, sink, "c0ffee%02x" % (len(case) % 256))
    if counted:
        failed = s.wait_metric("otelcol_receiver_failed_requests_total",
                               lambda v: v is not None and v >= 1, receiver="otlp",
                               transport="http")
        refused = s.metric("otelcol_receiver_refused_spans_total", receiver="otlp",
                           transport="http")
        assert (failed or 0) >= 1 or (refused or 0) >= 1, (
            f"{case}: refusal not in self-telemetry "
            f"(otelcol_receiver_failed_requests_total={failed}, refused_spans={refused})")


def test_all_bad_http_input_in_a_row(sluice, sink):
    """Everything above against one instance; afterwards it still serves, and every counted
    refusal is in otelcol_receiver_failed_requests_total."""
    s = sluice(config(sink))
    counted = 0
    for case, (path, headers, make_body, statuses, is_counted) in HTTP_CASES.items():
        r = post(s, path, headers, make_body())
        assert r.status_code in statuses, f"{case}: HTTP {r.status_code} {r.text[:300]!r}"
        counted += is_counted
    assert s.proc.poll() is None
    assert_still_serves(s, sink, "a11bad00")
    failed = s.wait_metric("otelcol_receiver_failed_requests_total",
                           lambda v: v is not None and v >= counted, receiver="otlp",
                           transport="http")
    assert failed is not None and failed >= counted, (
        f"otelcol_receiver_failed_requests_total{{transport=http}} = {failed}, "
        f"want >= {counted}\n{s.scrape()}")
    # a reason label says why
    text = s.scrape()
    assert 'reason="' in "\n".join(l for l in text.splitlines()
                                   if l.startswith("otelcol_receiver_failed_requests_total"))


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_bad_grpc_input(sluice, sink, signal):
    s = sluice(config(sink))
    bodies = {
        "garbage": b"\xff" * 64,
        "truncated": valid_body(20)[: len(valid_body(20)) // 2],
    }
    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        call = ch.unary_unary(GRPC_METHODS[signal])  # no (de)serializer: raw bytes
        for name, body in bodies.items():
            with pytest.raises(grpc.RpcError) as e:
                call(body, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                f"{signal}/{name}: got {e.value.code()} {e.value.details()!r}")
            assert e.value.details(), f"{signal}/{name}: INVALID_ARGUMENT without a message"
    assert s.proc.poll() is None
    assert_still_serves(s, sink, "9badc0de")
    failed = s.wait_metric("otelcol_receiver_failed_requests_total",
                           lambda v: v is not None and v >= len(bodies), receiver="otlp",
                           transport="grpc")
    assert failed is not None and failed >= len(bodies), (
        f"otelcol_receiver_failed_requests_total{{transport=grpc}} = {failed}, "
        f"want >= {len(bodies)}")
