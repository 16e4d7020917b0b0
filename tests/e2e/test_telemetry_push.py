"""sluice's own metrics pushed over OTLP: `service.telemetry.metrics.readers` with a `periodic`
reader, as the Collector's internal telemetry is configured. A real OTLP sink receives them
over gRPC and over HTTP; the OpenTelemetry Python SDK sends the spans they count.

- the pushed `otelcol_receiver_accepted_spans` (a cumulative monotonic sum, the Collector's
  instrument name without Prometheus' `_total`) equals what the SDK sent, with the receiver's
  labels as attributes and `service.name`, `service.instance.id` and the configured
  `service.telemetry.resource` on the resource;
- the push on SIGTERM carries the final counts;
- with readers and no Prometheus pull reader there is no /metrics endpoint (as the Collector).
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import Sluice, otlp_receiver, to_yaml
from otlp_sink import OtlpSink, flatten_points


def send_spans(endpoint: str, n: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "pushed"}))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5)))
    tracer = provider.get_tracer("e2e.telemetry_push")
    for i in range(n):
        tracer.start_span(f"op-{i}").end()
    provider.shutdown()


def accepted(sink: OtlpSink) -> list[dict]:
    return [p for p in flatten_points(sink.requests("metrics"))
            if p["metric"] == "otelcol_receiver_accepted_spans"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_self_telemetry_is_pushed_over_otlp(sluice, protocol):
    sink = OtlpSink().start()
    try:
        endpoint = (sink.grpc_endpoint if protocol == "grpc"
                    else f"{sink.http_endpoint}/v1/metrics")
        if protocol == "grpc" and not endpoint.startswith("http"):
            endpoint = f"http://{endpoint}"
        s = sluice({
            "receivers": {"otlp": otlp_receiver()},
            "exporters": {"nop": {}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}},
                "telemetry": {
                    "resource": {"k8s.pod.name": "otel-gateway-collector-0"},
                    "metrics": {"readers": [{"periodic": {
                        "interval": 300,
                        "exporter": {"otlp": {"protocol": protocol, "endpoint": endpoint}},
                    }}]},
                },
            },
        })
        send_spans(s.grpc_endpoint, 7)
        assert sink.wait_for(lambda _: any(p["value"] == 7 for p in accepted(sink)), timeout=15), \
            accepted(sink)
        point = next(p for p in accepted(sink) if p["value"] == 7)
        assert point["type"] == "sum" and point["is_monotonic"], point
        assert point["temporality"] == 2, "cumulative"
        assert point["attributes"] == {"receiver": "otlp", "transport": "grpc"}, point
        assert point["resource"]["service.name"] == "sluice"
        assert point["resource"]["k8s.pod.name"] == "otel-gateway-collector-0"
        assert point["resource"]["service.instance.id"]
        assert point["start_time_unix_nano"] < point["time_unix_nano"]

        # The push at shutdown carries what arrived after the last tick.
        send_spans(s.grpc_endpoint, 3)
        before = len(sink.requests("metrics"))
        assert s.stop() == 0, s.log_tail()
        s.exit_reported = True
        assert len(sink.requests("metrics")) > before
        last = [p for p in accepted(sink) if p["attributes"].get("transport") == "grpc"][-1]
        assert last["value"] == 10, last
    finally:
        sink.stop()


def test_readers_without_a_pull_reader_serve_no_metrics_endpoint(tmp_path):
    sink = OtlpSink().start()
    try:
        config = {
            "receivers": {"otlp": otlp_receiver()},
            "exporters": {"nop": {}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["nop"]}},
                "telemetry": {"metrics": {"readers": [{"periodic": {
                    "interval": 200,
                    "exporter": {"otlp": {"protocol": "grpc",
                                          "endpoint": f"http://{sink.grpc_endpoint}"}},
                }}]}},
            },
        }
        s = Sluice(config, tmp_path, "no-pull")
        # The harness adds an address for /metrics; without it only the reader runs.
        del s.config["service"]["telemetry"]["metrics"]["address"]
        s.config_path.write_text(to_yaml(s.config) + "\n")
        s.start(wait_ready=True)
        try:
            assert sink.wait_for(lambda _: accepted(sink), timeout=15)
        finally:
            assert s.stop() == 0, s.log_tail()
        log = s.log_path.read_text()
        assert "self-telemetry pushed over OTLP" in log, log
        assert "self-telemetry on /metrics" not in log, log
    finally:
        sink.stop()
