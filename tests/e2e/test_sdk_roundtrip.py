"""The real OpenTelemetry Python SDK -> sluice -> OTLP sink: every span, data point and log
record arrives with its attributes and resource attributes intact."""

import pytest

from conftest import otlp_receiver, pipelines
from sdk_workload import SdkClient, check_all

# span count of the workload: 4 in send_traces + 1 ("log-context") in send_logs
WORKLOAD_SPANS = 5
WORKLOAD_LOGS = 3
WORKLOAD_POINTS = 8


def exporter_to(kind: str, target: str) -> dict:
    """Exporter config of `kind` (otlp | otlphttp) pointing at `target`
    (host:port for otlp, base URL for otlphttp)."""
    if kind == "otlp":
        return {"endpoint": target, "tls": {"insecure": True}}
    if kind == "otlphttp":
        return {"endpoint": target}
    raise ValueError(kind)


def forwarder(exporter_kind: str, target: str) -> dict:
    """otlp receiver -> batch (short timeout) -> one exporter, for all three signals."""
    return {
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {exporter_kind: exporter_to(exporter_kind, target)},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], [exporter_kind])},
    }


def sink_target(sink, exporter_kind: str) -> str:
    return sink.grpc_endpoint if exporter_kind == "otlp" else sink.http_endpoint


def sluice_target(s, exporter_kind: str) -> str:
    return s.grpc_endpoint if exporter_kind == "otlp" else s.http_endpoint


def send_workload(transport: str, s):
    client = SdkClient(transport, s.grpc_endpoint if transport == "grpc" else s.http_endpoint)
    try:
        return client.send_all()
    finally:
        # shutdown flushes again (metrics are cumulative: same values); checks tolerate it
        client.shutdown()


@pytest.mark.parametrize("exporter_kind", ["otlp", "otlphttp"])
@pytest.mark.parametrize("sdk_transport", ["grpc", "http"])
def test_sdk_roundtrip(sluice, sink, sdk_transport, exporter_kind):
    s = sluice(forwarder(exporter_kind, sink_target(sink, exporter_kind)))
    sent = send_workload(sdk_transport, s)
    check_all(sent, sink, timeout=15)
    wire = "grpc" if exporter_kind == "otlp" else "http"
    assert {r.transport for r in sink.received()} == {wire}

    # self-telemetry agrees with what went through
    accepted = s.wait_metric("otelcol_receiver_accepted_spans_total",
                             lambda v: v == WORKLOAD_SPANS, receiver="otlp",
                             transport=sdk_transport)
    assert accepted == WORKLOAD_SPANS
    sent_spans = s.wait_metric("otelcol_exporter_sent_spans_total",
                               lambda v: v == WORKLOAD_SPANS, exporter=exporter_kind)
    assert sent_spans == WORKLOAD_SPANS
    logs = s.wait_metric("otelcol_receiver_accepted_log_records_total",
                         lambda v: v == WORKLOAD_LOGS, receiver="otlp", transport=sdk_transport)
    assert logs == WORKLOAD_LOGS
    points = s.metric("otelcol_receiver_accepted_metric_points_total", receiver="otlp",
                      transport=sdk_transport)
    assert points is not None and points >= WORKLOAD_POINTS
    assert not s.metric("otelcol_receiver_refused_spans_total", receiver="otlp")
    assert not s.metric("otelcol_exporter_send_failed_spans_total", exporter=exporter_kind)


@pytest.mark.parametrize("hop", ["otlp", "otlphttp"])
def test_chain_two_sluices(sluice, sink, hop):
    """SDK -> sluice #1 --(hop)--> sluice #2 --otlp--> sink: sluice's exporter and receiver
    talk to each other."""
    second = sluice(forwarder("otlp", sink.grpc_endpoint), name="sluice2")
    first = sluice(forwarder(hop, sluice_target(second, hop)), name="sluice1")
    sent = send_workload("grpc", first)
    check_all(sent, sink, timeout=20)
    second_wire = "grpc" if hop == "otlp" else "http"
    got = second.wait_metric("otelcol_receiver_accepted_spans_total",
                             lambda v: v == WORKLOAD_SPANS, receiver="otlp",
                             transport=second_wire)
    assert got == WORKLOAD_SPANS
