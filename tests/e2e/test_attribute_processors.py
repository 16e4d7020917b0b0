"""The real OpenTelemetry Python SDK -> sluice with the agent's `resource` processor
(service.instance.id from k8s.pod.name, metrics-pipeline.md section 9) and an `attributes`
processor deleting a key -> OTLP sink: exactly those changes arrive, nothing else."""

import uuid

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import otlp_receiver, pipelines


def send_spans(endpoint: str, resource: dict, run_id: str, n: int) -> None:
    # Resource(...) rather than Resource.create(...): recent SDKs' create() adds a random
    # service.instance.id, and this test needs a resource without one.
    provider = TracerProvider(resource=Resource(resource))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True,
                                             timeout=5)))
    tracer = provider.get_tracer("e2e.attributes")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("run.id", run_id)
            span.set_attribute("db.connection_string", "postgres://user:secret@db/app")
            span.set_attribute("http.route", "/orders")
    provider.shutdown()


def test_resource_inserts_instance_id_and_attributes_deletes_a_key(sluice, sink):
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {
            "resource": {"attributes": [
                {"key": "service.instance.id", "from_attribute": "k8s.pod.name",
                 "action": "insert"},
            ]},
            "attributes/scrub": {"actions": [
                {"key": "db.connection_string", "action": "delete"},
            ]},
            "batch": {"timeout": "100ms"},
        },
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["resource", "attributes/scrub", "batch"],
                                           ["otlp"], signals=["traces"])},
    })
    run_id = uuid.uuid4().hex
    send_spans(s.grpc_endpoint, {"service.name": "checkout", "k8s.pod.name": "checkout-7d9f-abc"},
               run_id, 3)
    # An SDK that sets its own instance id keeps it: `insert` never overwrites.
    send_spans(s.grpc_endpoint, {"service.name": "cart", "k8s.pod.name": "cart-1",
                                 "service.instance.id": "from-sdk"}, run_id, 2)

    def ours(sink_):
        return [sp for sp in sink_.spans() if sp["attributes"].get("run.id") == run_id]

    assert sink.wait_for(lambda k: len(ours(k)) == 5, timeout=15), sink.spans()
    spans = ours(sink)
    for sp in spans:
        assert "db.connection_string" not in sp["attributes"], sp
        assert sp["attributes"]["http.route"] == "/orders"
        assert set(sp["attributes"]) == {"run.id", "http.route"}
    instance = {sp["resource"]["service.name"]: sp["resource"]["service.instance.id"]
                for sp in spans}
    assert instance == {"checkout": "checkout-7d9f-abc", "cart": "from-sdk"}
    # the rest of the resource is untouched
    resources = {frozenset(sp["resource"].items()) for sp in spans}
    assert resources == {
        frozenset({"service.name": "checkout", "k8s.pod.name": "checkout-7d9f-abc",
                   "service.instance.id": "checkout-7d9f-abc"}.items()),
        frozenset({"service.name": "cart", "k8s.pod.name": "cart-1",
                   "service.instance.id": "from-sdk"}.items()),
    }

    got = s.wait_metric("otelcol_processor_outgoing_items_total", lambda v: v >= 5,
                        processor="attributes/scrub", otel_signal="traces")
    assert got >= 5


def test_include_metadata_feeds_from_context(sluice, sink):
    """`include_metadata: true` on both protocols: the SDK's exporter headers (gRPC metadata,
    HTTP headers) reach `attributes`' `from_context: metadata.<key>` (before `batch`, as in the
    Collector); without a header the attribute is left alone."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    receiver = otlp_receiver()
    for proto in ("grpc", "http"):
        receiver["protocols"][proto]["include_metadata"] = True
    s = sluice({
        "receivers": {"otlp": receiver},
        "processors": {"attributes/tenant": {"actions": [
            {"key": "tenant", "from_context": "metadata.x-tenant", "action": "upsert"},
        ]}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["attributes/tenant"], ["otlp"],
                                           signals=["traces"])},
    })
    run_id = uuid.uuid4().hex
    for name, exporter in [
        ("grpc", OTLPSpanExporter(endpoint=f"http://{s.grpc_endpoint}", insecure=True,
                                  timeout=5, headers={"x-tenant": "acme"})),
        ("http", HttpSpanExporter(endpoint=f"{s.http_endpoint}/v1/traces", timeout=5,
                                  headers={"X-Tenant": "globex"})),
        ("none", OTLPSpanExporter(endpoint=f"http://{s.grpc_endpoint}", insecure=True,
                                  timeout=5)),
    ]:
        provider = TracerProvider(resource=Resource({"service.name": name}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("e2e.metadata").start_as_current_span(name) as span:
            span.set_attribute("run.id", run_id)
        provider.shutdown()

    def ours(sink_):
        return [sp for sp in sink_.spans() if sp["attributes"].get("run.id") == run_id]

    assert sink.wait_for(lambda k: len(ours(k)) == 3, timeout=15), sink.spans()
    tenant = {sp["name"]: sp["attributes"].get("tenant") for sp in ours(sink)}
    assert tenant == {"grpc": "acme", "http": "globex", "none": None}, tenant
