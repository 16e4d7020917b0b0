"""A fixed workload sent with the real OpenTelemetry Python SDK (TracerProvider, MeterProvider,
LoggerProvider with OTLP exporters over gRPC or HTTP), and checks that what a sink received is
exactly that workload (attributes, resource attributes, events, status, values).

    client = SdkClient("grpc", "127.0.0.1:4317", run_id="abc")
    sent = client.send_all()          # traces, metrics, logs; force-flushed
    check_all(sent, sink)             # waits (bounded) and asserts
    client.shutdown()
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

SDK_TIMEOUT_S = 5


def _exporters(transport: str, endpoint: str, credentials=None):
    """(span, metric, log) OTLP exporters. endpoint: host:port for grpc, base URL for http.
    credentials: grpc.ChannelCredentials for TLS over gRPC (None: plaintext)."""
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if credentials is not None:
            tls = {"insecure": False, "credentials": credentials}
            url = endpoint.removeprefix("http://").removeprefix("https://")
            url = f"https://{url}"
        else:
            tls = {"insecure": True}
            url = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
        return (
            OTLPSpanExporter(endpoint=url, timeout=SDK_TIMEOUT_S, **tls),
            OTLPMetricExporter(endpoint=url, timeout=SDK_TIMEOUT_S, **tls),
            OTLPLogExporter(endpoint=url, timeout=SDK_TIMEOUT_S, **tls),
        )
    if transport == "http":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = endpoint if endpoint.startswith("http") else f"http://{endpoint}"
        base = base.rstrip("/")
        return (
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=SDK_TIMEOUT_S),
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=SDK_TIMEOUT_S),
            OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=SDK_TIMEOUT_S),
        )
    raise ValueError(f"unknown transport {transport!r}")


def _plain(v):
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


def _plain_attrs(a) -> dict:
    return {k: _plain(v) for k, v in (a or {}).items()}


@dataclass
class Sent:
    run_id: str
    resource: dict
    spans: list[dict]
    points: list[dict]  # expected: metric, type, attributes, and value fields to check
    logs: list[dict]


class SdkClient:
    def __init__(self, transport: str, endpoint: str, run_id: str | None = None,
                 service_name: str = "e2e-sdk", credentials=None):
        self.transport = transport
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.resource_attrs = {
            "service.name": service_name,
            "service.version": "1.2.3",
            "service.instance.id": f"instance-{self.run_id}",
            "deployment.environment.name": "e2e",
            "e2e.run_id": self.run_id,
            "e2e.transport": transport,
            "host.cpu.count": 2,
        }
        self.resource = Resource.create(self.resource_attrs)
        span_exp, metric_exp, log_exp = _exporters(transport, endpoint, credentials)

        self.memory = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(resource=self.resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exp, schedule_delay_millis=100, export_timeout_millis=
                               SDK_TIMEOUT_S * 1000))
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.memory))

        # Long interval: only force_flush() exports, so tests are deterministic.
        self.metric_reader = PeriodicExportingMetricReader(
            metric_exp, export_interval_millis=3_600_000, export_timeout_millis=
            SDK_TIMEOUT_S * 1000)
        self.meter_provider = MeterProvider(resource=self.resource,
                                            metric_readers=[self.metric_reader])

        self.logger_provider = LoggerProvider(resource=self.resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exp, schedule_delay_millis=100))

    # ---------------------------------------------------------------- traces
    def send_traces(self) -> list[dict]:
        tracer = self.tracer_provider.get_tracer("e2e.tracer", "0.1.0")
        with tracer.start_as_current_span(
            "GET /checkout",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "http.response.status_code": 500,
                "e2e.ratio": 0.25,
                "e2e.cached": False,
                "e2e.tags": ["a", "b", "c"],
                "e2e.ints": [1, 2, 3],
                "e2e.run_id": self.run_id,
            },
        ) as root:
            root.add_event("checkout.started", {"cart.items": 3, "cart.currency": "EUR"})
            with tracer.start_as_current_span(
                "SELECT orders", kind=SpanKind.CLIENT,
                attributes={"db.system.name": "postgresql", "db.rows": 42,
                            "e2e.run_id": self.run_id},
            ):
                pass
            with tracer.start_as_current_span(
                "charge card", kind=SpanKind.INTERNAL,
                attributes={"payment.amount": 99.95, "payment.retry": True,
                            "e2e.run_id": self.run_id},
            ) as child:
                with tracer.start_as_current_span(
                    "POST /charge", kind=SpanKind.CLIENT,
                    attributes={"server.address": "payments.internal", "server.port": 8443,
                                "e2e.run_id": self.run_id},
                ) as grandchild:
                    grandchild.add_event("retrying", {"attempt": 2})
                child.set_status(Status(StatusCode.ERROR, "card declined"))
                child.add_event("exception", {"exception.type": "CardDeclined",
                                              "exception.message": "insufficient funds"})
            root.set_status(Status(StatusCode.ERROR, "checkout failed"))
        assert self.tracer_provider.force_flush(SDK_TIMEOUT_S * 1000 * 2), "span flush timed out"
        return [self._span_dict(s) for s in self.memory.get_finished_spans()
                if s.attributes.get("e2e.run_id") == self.run_id]

    @staticmethod
    def _span_dict(s) -> dict:
        return {
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else "",
            "name": s.name,
            # SDK SpanKind is 0-based (INTERNAL=0); OTLP is 1-based (INTERNAL=1)
            "kind": s.kind.value + 1,
            "start_time_unix_nano": s.start_time,
            "end_time_unix_nano": s.end_time,
            "attributes": _plain_attrs(s.attributes),
            "events": [{"name": e.name, "time_unix_nano": e.timestamp,
                        "attributes": _plain_attrs(e.attributes)} for e in s.events],
            "status_code": {StatusCode.UNSET: 0, StatusCode.OK: 1,
                            StatusCode.ERROR: 2}[s.status.status_code],
            "status_message": s.status.description or "",
            "resource": _plain_attrs(s.resource.attributes),
            "scope_name": s.instrumentation_scope.name,
        }

    # ---------------------------------------------------------------- metrics
    def send_metrics(self) -> list[dict]:
        meter = self.meter_provider.get_meter("e2e.meter", "0.1.0")
        rid = self.run_id
        counter = meter.create_counter("e2e.requests", unit="{request}",
                                       description="requests served")
        counter.add(3, {"http.route": "/a", "e2e.run_id": rid})
        counter.add(4, {"http.route": "/b", "e2e.run_id": rid})
        counter.add(5, {"http.route": "/a", "e2e.run_id": rid})

        updown = meter.create_up_down_counter("e2e.queue.depth", unit="{item}")
        updown.add(10, {"queue": "q1", "e2e.run_id": rid})
        updown.add(-3, {"queue": "q1", "e2e.run_id": rid})
        updown.add(-2, {"queue": "q2", "e2e.run_id": rid})

        hist = meter.create_histogram("e2e.latency", unit="ms")
        for v in (5, 15, 150):
            hist.record(v, {"http.route": "/a", "e2e.run_id": rid})
        hist.record(1.5, {"http.route": "/b", "e2e.run_id": rid})

        def gauge_cb(_options: CallbackOptions):
            yield Observation(21.5, {"sensor": "s1", "e2e.run_id": rid})
            yield Observation(-4.25, {"sensor": "s2", "e2e.run_id": rid})

        meter.create_observable_gauge("e2e.temperature", callbacks=[gauge_cb], unit="Cel")

        assert self.meter_provider.force_flush(SDK_TIMEOUT_S * 1000 * 2), "metric flush timed out"
        a = lambda **kw: {**kw, "e2e.run_id": rid}  # noqa: E731
        return [
            {"metric": "e2e.requests", "type": "sum", "is_monotonic": True,
             "attributes": a(**{"http.route": "/a"}), "value": 8},
            {"metric": "e2e.requests", "type": "sum", "is_monotonic": True,
             "attributes": a(**{"http.route": "/b"}), "value": 4},
            {"metric": "e2e.queue.depth", "type": "sum", "is_monotonic": False,
             "attributes": a(queue="q1"), "value": 7},
            {"metric": "e2e.queue.depth", "type": "sum", "is_monotonic": False,
             "attributes": a(queue="q2"), "value": -2},
            {"metric": "e2e.latency", "type": "histogram",
             "attributes": a(**{"http.route": "/a"}), "count": 3, "sum": 170.0,
             "min": 5.0, "max": 150.0},
            {"metric": "e2e.latency", "type": "histogram",
             "attributes": a(**{"http.route": "/b"}), "count": 1, "sum": 1.5,
             "min": 1.5, "max": 1.5},
            {"metric": "e2e.temperature", "type": "gauge",
             "attributes": a(sensor="s1"), "value": 21.5},
            {"metric": "e2e.temperature", "type": "gauge",
             "attributes": a(sensor="s2"), "value": -4.25},
        ]

    # ---------------------------------------------------------------- logs
    def send_logs(self) -> list[dict]:
        logger = self.logger_provider.get_logger("e2e.logger", "0.1.0")
        rid = self.run_id
        expected = [
            {"body": "user logged in", "severity_number": SeverityNumber.INFO.value,
             "severity_text": "INFO",
             "attributes": {"user.id": "u-17", "login.attempts": 1, "mfa": True,
                            "e2e.run_id": rid}},
            {"body": "disk almost full", "severity_number": SeverityNumber.WARN.value,
             "severity_text": "WARN",
             "attributes": {"disk.used_ratio": 0.93, "mounts": ["/", "/var"],
                            "e2e.run_id": rid}},
        ]
        for e in expected:
            logger.emit(body=e["body"], severity_number=SeverityNumber(e["severity_number"]),
                        severity_text=e["severity_text"], attributes=e["attributes"],
                        timestamp=time.time_ns())
        tracer = self.tracer_provider.get_tracer("e2e.tracer")
        with tracer.start_as_current_span("log-context", attributes={"e2e.run_id": "-"}) as sp:
            err = {"body": "payment failed", "severity_number": SeverityNumber.ERROR.value,
                   "severity_text": "ERROR",
                   "attributes": {"payment.amount": 12.5, "e2e.run_id": rid},
                   "trace_id": f"{sp.get_span_context().trace_id:032x}",
                   "span_id": f"{sp.get_span_context().span_id:016x}"}
            logger.emit(body=err["body"], severity_number=SeverityNumber.ERROR,
                        severity_text="ERROR", attributes=err["attributes"],
                        timestamp=time.time_ns())
            expected.append(err)
        assert self.logger_provider.force_flush(SDK_TIMEOUT_S * 1000 * 2), "log flush timed out"
        return expected

    def send_all(self) -> Sent:
        spans = self.send_traces()
        points = self.send_metrics()
        logs = self.send_logs()
        return Sent(self.run_id, _plain_attrs(self.resource.attributes), spans, points, logs)

    def shutdown(self) -> None:
        for p in (self.tracer_provider, self.meter_provider, self.logger_provider):
            try:
                p.shutdown()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


# ------------------------------------------------------------------------------ checks


def _mine(items, run_id):
    return [x for x in items if x["attributes"].get("e2e.run_id") == run_id]


def check_spans(sent: Sent, sink, timeout: float = 15.0) -> None:
    want = {s["span_id"]: s for s in sent.spans}
    assert len(want) == 4, f"workload should make 4 spans, made {len(want)}"
    sink.wait_for(lambda k: set(want) <= {s["span_id"] for s in _mine(k.spans(), sent.run_id)},
                  timeout)
    got = _mine(sink.spans(), sent.run_id)
    by_id: dict[str, list] = {}
    for s in got:
        by_id.setdefault(s["span_id"], []).append(s)
    missing = set(want) - set(by_id)
    assert not missing, (f"spans never arrived: {[want[m]['name'] for m in missing]}; "
                         f"got {[s['name'] for s in got]}")
    for sid, w in want.items():
        g = by_id[sid]
        assert len(g) == 1, f"span {w['name']} arrived {len(g)} times"
        g = g[0]
        for key in ("trace_id", "parent_span_id", "name", "kind", "start_time_unix_nano",
                    "end_time_unix_nano", "attributes", "status_code", "status_message",
                    "resource", "scope_name"):
            assert g[key] == w[key], f"span {w['name']}: {key} {g[key]!r} != sent {w[key]!r}"
        ge = [{k: e[k] for k in ("name", "time_unix_nano", "attributes")} for e in g["events"]]
        assert ge == w["events"], f"span {w['name']}: events {ge!r} != sent {w['events']!r}"
    # the parent/child shape survived
    names = {w["span_id"]: w["name"] for w in want.values()}
    shape = sorted((w["name"], names.get(w["parent_span_id"], "")) for w in want.values())
    got_shape = sorted((s["name"], names.get(s["parent_span_id"], "")) for s in got)
    assert got_shape == shape


def _point_matches(p: dict, w: dict) -> bool:
    return p["metric"] == w["metric"] and p["attributes"] == w["attributes"]


def check_points(sent: Sent, sink, timeout: float = 15.0) -> None:
    def all_there(k):
        pts = _mine(k.points(), sent.run_id)
        return all(any(_point_matches(p, w) for p in pts) for w in sent.points)

    sink.wait_for(all_there, timeout)
    pts = _mine(sink.points(), sent.run_id)
    for w in sent.points:
        mine = [p for p in pts if _point_matches(p, w)]
        assert mine, (f"no data point for {w['metric']} {w['attributes']}; got "
                      f"{sorted({(p['metric'], str(p['attributes'])) for p in pts})}")
        for p in mine:  # cumulative: every export of this series carries the same values
            assert p["type"] == w["type"], f"{w['metric']}: type {p['type']} != {w['type']}"
            assert p["resource"] == sent.resource, f"{w['metric']}: resource {p['resource']}"
            for k in ("value", "count", "sum", "min", "max", "is_monotonic"):
                if k in w:
                    assert p[k] == w[k], f"{w['metric']} {w['attributes']}: {k} {p[k]} != {w[k]}"
            if w["type"] == "histogram":
                assert sum(p["bucket_counts"]) == w["count"]
                assert len(p["bucket_counts"]) == len(p["explicit_bounds"]) + 1
    units = {p["metric"]: p["unit"] for p in pts}
    assert units.get("e2e.latency") == "ms" and units.get("e2e.temperature") == "Cel", units


def check_logs(sent: Sent, sink, timeout: float = 15.0) -> None:
    bodies = {w["body"] for w in sent.logs}
    sink.wait_for(lambda k: bodies <= {r["body"] for r in _mine(k.log_records(), sent.run_id)},
                  timeout)
    got = _mine(sink.log_records(), sent.run_id)
    for w in sent.logs:
        g = [r for r in got if r["body"] == w["body"]]
        assert len(g) == 1, f"log {w['body']!r} arrived {len(g)} times"
        g = g[0]
        for k in ("severity_number", "severity_text", "attributes", "trace_id", "span_id"):
            if k in w:
                assert g[k] == w[k], f"log {w['body']!r}: {k} {g[k]!r} != sent {w[k]!r}"
        assert g["resource"] == sent.resource, f"log {w['body']!r}: resource {g['resource']}"
        assert g["scope_name"] == "e2e.logger"
        assert g["time_unix_nano"] > 0


def check_all(sent: Sent, sink, timeout: float = 15.0) -> None:
    check_spans(sent, sink, timeout)
    check_points(sent, sink, timeout)
    check_logs(sent, sink, timeout)
