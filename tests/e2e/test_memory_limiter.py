"""Memory pressure: with the process above memory_limiter's soft limit, sluice refuses new data
before reading it, with the status clients retry on (gRPC RESOURCE_EXHAUSTED with a RetryInfo,
HTTP 429 + Retry-After), counts the refusals by reason, and keeps serving. (The overload and
big-request tests are in test_overload.py.)"""

import uuid

import grpc
import requests

from conftest import otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, make_trace_request


def test_over_the_limit_refuses_with_retryable_statuses(sluice):
    # A 1 MiB limit is below any process's RSS: every request is refused.
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"memory_limiter": {"check_interval": "100ms", "limit_mib": 1,
                                          "spike_limit_mib": 0}},
        "exporters": {"debug": {}},
        "service": {"pipelines": pipelines(["otlp"], ["memory_limiter"], ["debug"],
                                           signals=("traces",))},
    })
    req, _ = make_trace_request(3, uuid.uuid4().hex, first=0)
    body = req.SerializeToString()

    r = requests.post(s.http_endpoint + "/v1/traces", data=body, timeout=10,
                      headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 429, r.text
    assert r.headers.get("Retry-After"), "clients are told when to retry"

    with grpc.insecure_channel(s.grpc_endpoint) as ch:
        try:
            ch.unary_unary(GRPC_METHODS["traces"])(body, timeout=10)
            raise AssertionError("expected RESOURCE_EXHAUSTED")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            assert "memory" in e.details()
            # OTLP clients retry RESOURCE_EXHAUSTED only with a RetryInfo in the details.
            details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin", b"")
            assert b"google.rpc.RetryInfo" in details, details

    # Refused before the body was read: counted as requests, by reason (no items are known).
    for transport in ("http", "grpc"):
        assert s.metric("sluice_memory_refused_requests_total", receiver="otlp",
                        transport=transport, reason="above_soft_limit") == 1
    assert s.metric("sluice_memory_limiter_refusing") == 1
    assert s.metric("sluice_memory_limit_bytes", limit="hard") == 2**20
    assert (s.metric("otelcol_receiver_accepted_spans_total", receiver="otlp") or 0) == 0
    assert (s.metric("otelcol_receiver_refused_spans_total", receiver="otlp") or 0) == 0
