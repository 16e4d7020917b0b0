"""The shipped gateway config (k8s/config/gateway.yaml) run by the real binary: the Python SDK
sends a request trace that calls Redis, PostgreSQL, MongoDB and RabbitMQ, plus probe, ELB,
SDK self-trace and bare-connection noise; the otlp/jaeger exporter (pointed at a sink through
JAEGER_ENDPOINT) delivers exactly the request, cleaned, with peer.service on the DB/queue
client spans; self-telemetry counts the dropped spans under the Collector's name.

The request trace has a failed Redis call, so the shipped tail_sampling keeps it by its `errors`
policy; spanmetrics (ahead of sampling) counts its spans into the prometheus exporter.

sluice runs on the file as shipped plus a second --config that moves the listeners to free
loopback ports and shortens the waits (decision_wait, flush intervals) so the test takes
seconds (files merge as the Collector merges them)."""

from __future__ import annotations

import time
import urllib.request

import pytest
from opentelemetry.trace import Status, StatusCode

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind

from conftest import REPO_ROOT, Sluice, free_port, metric_sum

GATEWAY = REPO_ROOT / "k8s" / "config" / "gateway.yaml"


def gateway_overrides(jaeger_endpoint: str) -> dict:
    """The second --config that runs the shipped gateway on loopback in seconds: listeners on
    free ports, otlp/jaeger to the given endpoint, short batch, decision and flush waits."""
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
            "http": {"endpoint": f"127.0.0.1:{free_port()}"},
        }}, "flight": {"endpoint": f"127.0.0.1:{free_port()}"}},
        "processors": {"batch": {"timeout": "100ms"},
                       "tail_sampling": {"decision_wait": "1s"}},
        "connectors": {"spanmetrics": {"metrics_flush_interval": "1s"}},
        "exporters": {"otlp/jaeger": {"endpoint": jaeger_endpoint},
                      "prometheus": {"endpoint": f"127.0.0.1:{free_port()}"}},
    }


@pytest.fixture
def gateway(tmp_path, sink, monkeypatch):
    monkeypatch.setenv("JAEGER_ENDPOINT", sink.grpc_endpoint)
    override = gateway_overrides(sink.grpc_endpoint)
    g = Sluice(override, tmp_path, "gateway", base=GATEWAY).start()
    yield g
    rc = g.stop()
    assert rc == 0, f"gateway exited with {rc}\n{g.log_tail()}"


def send(endpoint: str) -> tuple[set[str], set[str], dict[str, str]]:
    """Sends the workload; returns (kept span names, noise span names, peer.service wanted)."""
    resource = Resource.create({
        "service.name": "orders",
        "k8s.pod.name": "orders-7d9f8b6c5d-x2k4q",
        "process.command": "/app/server.py",
        "process.executable": "/usr/local/bin/python3.12",
        "process.pid": 1,
        "os.type": "linux",
        "os.version": "6.1.0-18-cloud-amd64",
        "db.connection_string": "mysql://app:hunter2@legacy-db:3306/app",
    })
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5)))
    tracer = provider.get_tracer("opentelemetry.instrumentation.flask", "0.48b0")

    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER, attributes={
        "http.request.method": "POST", "http.route": "/orders", "url.path": "/orders",
        "user_agent.original": "python-requests/2.32.3", "http.response.status_code": 201,
    }):
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
            "db.system": "redis", "db.statement": "GET cart:42",
            "net.peer.name": "redis-master.cache.svc", "net.peer.port": 6379,
        }) as redis_get:
            redis_get.set_status(Status(StatusCode.ERROR, "READONLY replica"))
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT, attributes={
            "db.system": "postgresql", "server.address": "orders-db.data.svc",
            "server.port": 5432,
            "db.connection_string": "postgresql://orders:s3cret@orders-db.data.svc/orders",
        }):
            pass
        with tracer.start_as_current_span("find orders.items", kind=SpanKind.CLIENT, attributes={
            "db.system.name": "mongodb", "server.address": "mongo-0.mongo.data.svc",
        }):
            pass
        with tracer.start_as_current_span("orders.created send", kind=SpanKind.PRODUCER,
                                          attributes={"messaging.system": "rabbitmq",
                                                      "net.peer.name": "rabbitmq.queue.svc"}):
            pass
        # process details copied onto a span by hand: cleaned there too
        with tracer.start_as_current_span("compute totals", kind=SpanKind.INTERNAL, attributes={
            "process.command": "/app/worker.py", "process.executable": "/usr/bin/python3",
            "os.type": "linux", "os.version": "6.1.0", "invoice.id": "INV-42",
        }):
            pass
        with tracer.start_as_current_span("tcp.connect", kind=SpanKind.INTERNAL):
            pass  # inside the request: kept

    noise = {
        "GET /healthz": ({"url.path": "/healthz", "user_agent.original": "kube-probe/1.30"},
                         SpanKind.SERVER),
        "GET /readyz": ({"http.target": "/readyz"}, SpanKind.SERVER),
        "GET /metrics": ({"http.route": "/metrics"}, SpanKind.SERVER),
        "GET / (ELB)": ({"user_agent.original": "ELB-HealthChecker/2.0"}, SpanKind.SERVER),
        "opentelemetry.proto.collector.trace.v1.TraceService/Export": (
            {"rpc.system": "grpc",
             "rpc.service": "opentelemetry.proto.collector.trace.v1.TraceService"},
            SpanKind.CLIENT),
        "dns.lookup": ({}, SpanKind.CLIENT),
    }
    for name, (attributes, kind) in noise.items():
        with tracer.start_as_current_span(name, kind=kind, attributes=attributes,
                                          context=None):
            pass
    # a bare root tcp.connect (not inside the request): noise
    tracer.start_span("tcp.connect", kind=SpanKind.INTERNAL).end()
    provider.force_flush()
    provider.shutdown()
    kept = {"POST /orders", "GET", "SELECT orders", "find orders.items",
            "orders.created send", "compute totals", "tcp.connect"}
    peer = {"GET": "redis-master.cache.svc", "SELECT orders": "orders-db.data.svc",
            "find orders.items": "mongo-0.mongo.data.svc",
            "orders.created send": "rabbitmq.queue.svc"}
    return kept, set(noise) | {"tcp.connect (root)"}, peer


def test_gateway_config_with_the_python_sdk(gateway, sink):
    kept, noise, peer = send(gateway.grpc_endpoint)
    assert sink.wait_for(lambda s: len(s.spans()) >= len(kept), timeout=15), sink.spans()
    spans = sink.spans()
    names = [s["name"] for s in spans]
    assert sorted(names) == sorted(kept), names
    # exactly the noise was dropped, and counted as the Collector counts it
    filtered = gateway.wait_metric("otelcol_processor_filter_spans_filtered_total",
                                   lambda v: v == len(noise), filter="filter/noise")
    assert filtered == len(noise)
    assert gateway.metric("otelcol_processor_dropped_spans_total", processor="filter/noise",
                          reason="filtered") == len(noise)
    assert gateway.wait_metric("otelcol_exporter_sent_spans_total", lambda v: v == len(kept),
                               exporter="otlp/jaeger") == len(kept)
    for s in spans:
        res = s["resource"]
        # the five leak-prone attributes are gone from the resource and from every span
        for gone in ("process.command", "process.executable", "os.type", "os.version",
                     "db.connection_string"):
            assert gone not in res, (s["name"], res)
            assert gone not in s["attributes"], (s["name"], s["attributes"])
        assert res["service.name"] == "orders" and res["process.pid"] == 1
        assert res["telemetry.sdk.language"] == "python"
        assert s["attributes"].get("peer.service") == peer.get(s["name"]), s
    totals = next(s for s in spans if s["name"] == "compute totals")
    assert totals["attributes"] == {"invoice.id": "INV-42"}, totals
    pg = next(s for s in spans if s["name"] == "SELECT orders")
    assert pg["attributes"]["server.address"] == "orders-db.data.svc"

    # spanmetrics ahead of tail sampling: one call per kept span (the noise was filtered before
    # it), on the gateway's prometheus exporter, with the resource attributes as labels.
    prom = gateway.config["exporters"]["prometheus"]["endpoint"]

    def calls() -> float | None:
        with urllib.request.urlopen(f"http://{prom}/metrics", timeout=5) as r:
            text = r.read().decode()
        return metric_sum(text, "traces_span_metrics_calls_total", service_name="orders")

    deadline = time.monotonic() + 15
    while calls() != len(kept) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert calls() == len(kept), calls()
