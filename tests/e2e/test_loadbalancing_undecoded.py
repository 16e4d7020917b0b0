"""The loadbalancing agent routes clean protobuf requests without decoding them: with
`protocol.otlp` and `routing_key: traceID`, `otlp -> batch -> loadbalancing` keeps each request
as its bytes, reads only its spans' trace ids, and sends every backend its spans re-framed in
their resource and scope envelopes (`sluice_receiver_undecoded_requests_total` counts them).

Real processes: raw grpcio / HTTP clients (opentelemetry-proto) and the OpenTelemetry Python
SDK send to a sluice agent, which routes over three sink sluices (otlp -> otlp), each
forwarding to its own OTLP sink (opentelemetry-proto, grpcio) that decodes what arrives.
Checked at the sinks: every trace whole on the one sink the Collector's ring (computed in
Python, independently) names, every span once and exactly as sent, under exactly the resource
and scope it was sent under; counts in = out."""

from __future__ import annotations

import grpc
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import free_port, otlp_receiver, pipelines
from otlp_sink import GRPC_METHODS, OtlpSink
from sdk_workload import SdkClient
from test_loadbalancing import collector_backend, wait_for

PB = {"Content-Type": "application/x-protobuf"}
TRACES = 48


def sink_sluice_config(listen: str, sink: OtlpSink) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": listen}}}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], [], ["otlp"])},
    }


def agent_config(backends: list[str]) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms", "send_batch_size": 200,
                                 "send_batch_max_size": 400}},
        "exporters": {"loadbalancing": {
            "routing_key": "traceID",
            "protocol": {"otlp": {"tls": {"insecure": True}, "timeout": "5s"}},
            "resolver": {"static": {"hostnames": backends}}}},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], ["loadbalancing"],
                                           signals=("traces",))},
    }


def trace_id(t: int) -> bytes:
    return bytes([0xA0, t % 256]) + t.to_bytes(4, "big") * 3 + b"\x5a\x5a"


def request(index: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """3 resources x 2 scopes x 6 spans; each span of another trace (48 traces, each with
    spans in many requests, resources and scopes), so nearly every scope is split between
    backends. Envelopes carry attributes and schema URLs that must arrive unchanged."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    n = 0
    for r in range(3):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc-{r}"
        rs.resource.attributes.add(key="host.name").value.string_value = f"host-{index % 4}"
        rs.resource.dropped_attributes_count = r
        rs.schema_url = f"https://opentelemetry.io/schemas/1.{r}.0"
        for s in range(2):
            ss = rs.scope_spans.add()
            ss.scope.name = f"lib-{s}"
            ss.scope.version = f"{index}.{s}"
            ss.scope.attributes.add(key="scope.k").value.int_value = s
            ss.schema_url = f"https://scope/{r}/{s}"
            for i in range(6):
                sp = ss.spans.add()
                sp.trace_id = trace_id((index * 7 + n * 5) % TRACES)
                sp.span_id = index.to_bytes(4, "big") + n.to_bytes(4, "big")
                sp.name = f"op-{index}-{n} \u00e9"
                sp.kind = 1 + n % 5
                sp.start_time_unix_nano = 1_700_000_000_000_000_000 + n
                sp.end_time_unix_nano = 1_700_000_000_000_100_000 + n
                sp.attributes.add(key="n").value.int_value = n
                sp.attributes.add(key="pad").value.string_value = "x" * (n * 13 % 200)
                sp.events.add(name="ev", time_unix_nano=5)
                sp.status.code = n % 3
                n += 1
    return req


def spans_with_envelopes(reqs) -> dict[tuple[bytes, bytes], tuple]:
    """(trace id, span id) -> (resource, resource schema URL, scope, scope schema URL, span),
    each a serialized message (compared byte for byte after a decode and re-encode)."""
    out = {}
    for req in reqs:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    key = (sp.trace_id, sp.span_id)
                    assert key not in out, f"span {key} twice"
                    out[key] = (rs.resource.SerializeToString(deterministic=True), rs.schema_url,
                                ss.scope.SerializeToString(deterministic=True), ss.schema_url,
                                sp.SerializeToString(deterministic=True))
    return out


def test_traces_are_routed_whole_as_bytes(sluice):
    sinks = [OtlpSink().start() for _ in range(3)]
    backends = []
    for i, sink in enumerate(sinks):
        listen = f"127.0.0.1:{free_port()}"
        sluice(sink_sluice_config(listen, sink), name=f"sink{i}")
        backends.append(listen)
    agent = sluice(agent_config(backends), name="agent")
    try:
        sent = [request(i) for i in range(24)]
        with grpc.insecure_channel(agent.grpc_endpoint) as ch:
            export = ch.unary_unary(GRPC_METHODS["traces"])
            for req in sent[:12]:
                export(req.SerializeToString(), timeout=10)
        for req in sent[12:]:
            r = requests.post(agent.http_endpoint + "/v1/traces", data=req.SerializeToString(),
                              headers=PB, timeout=10)
            assert r.status_code == 200, r.text
        want = spans_with_envelopes(sent)
        total = len(want)
        wait_for("every span at the sinks",
                 lambda: sum(len(s.spans()) for s in sinks) >= total)

        got_at = [spans_with_envelopes(s.requests("traces")) for s in sinks]
        # Counts in = out: every span once, none twice across sinks.
        assert sum(len(g) for g in got_at) == total
        # Each span exactly as sent, under exactly its resource and scope.
        for g in got_at:
            for key, envelope in g.items():
                assert envelope == want[key], f"span {key} changed on the way"
        # Every trace whole on the sink the Collector's ring names.
        for i, g in enumerate(got_at):
            for tid, _ in g:
                assert collector_backend(backends, tid.hex()) == backends[i], tid.hex()
        assert all(got_at), "48 traces over three backends"

        # Routed as bytes: every request went on undecoded; the backends count what they sent.
        undecoded = sum(agent.metric("sluice_receiver_undecoded_requests_total",
                                     receiver="otlp", transport=t) or 0
                        for t in ("grpc", "http"))
        assert undecoded == len(sent)
        assert agent.wait_metric("otelcol_exporter_sent_spans_total",
                                 lambda v: v == total) == total
        assert not agent.metric("otelcol_exporter_send_failed_spans_total")
        assert not agent.metric("otelcol_exporter_enqueue_failed_spans_total")

        # The OpenTelemetry SDK's requests (one trace each, batched together by the agent):
        # routed the same way, every trace whole where the ring says.
        for s in sinks:
            s.clear()
        client = SdkClient("grpc", agent.grpc_endpoint)
        try:
            for _ in range(12):
                # Every span the client sent so far (one more trace of 4 spans each time).
                sdk_sent = client.send_traces()
        finally:
            client.shutdown()
        wait_for("the SDK's spans at the sinks",
                 lambda: sum(len(s.spans()) for s in sinks) >= len(sdk_sent))
        arrived = [(i, sp) for i, s in enumerate(sinks) for sp in s.spans()]
        assert sorted(sp["span_id"] for _, sp in arrived) == \
            sorted(sp["span_id"] for sp in sdk_sent)
        for i, sp in arrived:
            assert collector_backend(backends, sp["trace_id"]) == backends[i]
        assert len({sp["trace_id"] for sp in sdk_sent}) == 12
        assert agent.metric("sluice_receiver_undecoded_requests_total", receiver="otlp",
                            transport="grpc") == 12 + 12
    finally:
        for s in sinks:
            s.stop()
