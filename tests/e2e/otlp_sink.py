"""An OTLP sink for end-to-end tests: receives traces, metrics and logs over OTLP/gRPC and
OTLP/HTTP (protobuf, and JSON), records every request, and can be stopped and restarted on the
same ports (for exporter-outage tests).

Built on the official `opentelemetry-proto` package and `grpcio`; the HTTP side is stdlib
`http.server` in a thread.

    sink = OtlpSink()            # picks free ports on 127.0.0.1
    sink.start()
    ... point an exporter at sink.grpc_endpoint / sink.http_endpoint ...
    sink.wait_for(lambda s: len(s.spans()) >= 3, timeout=10)
    sink.stop(); sink.start()    # same ports again
    sink.close()
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

try:  # optional: zstd request bodies on the HTTP side
    import zstandard  # type: ignore
except ImportError:  # pragma: no cover
    zstandard = None

TRACES, METRICS, LOGS = "traces", "metrics", "logs"

REQUEST_TYPES = {
    TRACES: trace_service_pb2.ExportTraceServiceRequest,
    METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
    LOGS: logs_service_pb2.ExportLogsServiceRequest,
}
RESPONSE_TYPES = {
    TRACES: trace_service_pb2.ExportTraceServiceResponse,
    METRICS: metrics_service_pb2.ExportMetricsServiceResponse,
    LOGS: logs_service_pb2.ExportLogsServiceResponse,
}
HTTP_PATHS = {"/v1/traces": TRACES, "/v1/metrics": METRICS, "/v1/logs": LOGS}
GRPC_METHODS = {
    TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago and that this process has not handed out
    before. The kernel may give the same ephemeral port to two binds in a row once the first
    socket is closed, so without the memory two endpoints of one config can collide."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 1000 tries")


@dataclass
class Received:
    signal: str  # traces | metrics | logs
    transport: str  # grpc | http
    request: Any  # Export*ServiceRequest
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


# --------------------------------------------------------------------------------------------
# Flattening helpers (also usable on requests built by tests)
# --------------------------------------------------------------------------------------------


def any_value(v) -> Any:
    """AnyValue -> plain Python value (lists for arrays, dicts for kvlists)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attrs(kvs) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def flatten_spans(requests) -> list[dict]:
    out = []
    for req in requests:
        for rs in req.resource_spans:
            res = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append(
                        {
                            "trace_id": sp.trace_id.hex(),
                            "span_id": sp.span_id.hex(),
                            "parent_span_id": sp.parent_span_id.hex(),
                            "name": sp.name,
                            "kind": sp.kind,
                            "start_time_unix_nano": sp.start_time_unix_nano,
                            "end_time_unix_nano": sp.end_time_unix_nano,
                            "attributes": attrs(sp.attributes),
                            "events": [
                                {
                                    "name": e.name,
                                    "time_unix_nano": e.time_unix_nano,
                                    "attributes": attrs(e.attributes),
                                }
                                for e in sp.events
                            ],
                            "links": [
                                {
                                    "trace_id": l.trace_id.hex(),
                                    "span_id": l.span_id.hex(),
                                    "attributes": attrs(l.attributes),
                                }
                                for l in sp.links
                            ],
                            "status_code": sp.status.code,
                            "status_message": sp.status.message,
                            "resource": res,
                            "scope_name": ss.scope.name,
                            "scope_version": ss.scope.version,
                        }
                    )
    return out


def flatten_points(requests) -> list[dict]:
    """One dict per data point: metric name/type/unit, point attributes, resource attributes
    and the point's values (value / count / sum / bucket_counts / explicit_bounds)."""
    out = []
    for req in requests:
        for rm in req.resource_metrics:
            res = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    mtype = m.WhichOneof("data")
                    if mtype is None:
                        continue
                    data = getattr(m, mtype)
                    base = {
                        "metric": m.name,
                        "type": mtype,
                        "unit": m.unit,
                        "description": m.description,
                        "resource": res,
                        "scope_name": sm.scope.name,
                    }
                    if mtype == "sum":
                        base["is_monotonic"] = data.is_monotonic
                        base["temporality"] = data.aggregation_temporality
                    elif mtype in ("histogram", "exponential_histogram"):
                        base["temporality"] = data.aggregation_temporality
                    for p in data.data_points:
                        d = dict(base)
                        d["attributes"] = attrs(p.attributes)
                        d["start_time_unix_nano"] = p.start_time_unix_nano
                        d["time_unix_nano"] = p.time_unix_nano
                        if mtype in ("sum", "gauge"):
                            vk = p.WhichOneof("value")
                            d["value"] = getattr(p, vk) if vk else None
                        elif mtype == "histogram":
                            d["count"] = p.count
                            d["sum"] = p.sum if p.HasField("sum") else None
                            d["bucket_counts"] = list(p.bucket_counts)
                            d["explicit_bounds"] = list(p.explicit_bounds)
                            d["min"] = p.min if p.HasField("min") else None
                            d["max"] = p.max if p.HasField("max") else None
                        elif mtype == "exponential_histogram":
                            d["count"] = p.count
                            d["sum"] = p.sum if p.HasField("sum") else None
                        elif mtype == "summary":
                            d["count"] = p.count
                            d["sum"] = p.sum
                            d["quantiles"] = [(q.quantile, q.value) for q in p.quantile_values]
                        out.append(d)
    return out


def flatten_logs(requests) -> list[dict]:
    out = []
    for req in requests:
        for rl in req.resource_logs:
            res = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    out.append(
                        {
                            "time_unix_nano": lr.time_unix_nano,
                            "observed_time_unix_nano": lr.observed_time_unix_nano,
                            "severity_number": lr.severity_number,
                            "severity_text": lr.severity_text,
                            "body": any_value(lr.body) if lr.HasField("body") else None,
                            "attributes": attrs(lr.attributes),
                            "trace_id": lr.trace_id.hex(),
                            "span_id": lr.span_id.hex(),
                            "event_name": lr.event_name,
                            "resource": res,
                            "scope_name": sl.scope.name,
                        }
                    )
    return out


# --------------------------------------------------------------------------------------------
# OTLP/JSON decoding (ids are hex in OTLP/JSON, base64 in proto3 JSON)
# --------------------------------------------------------------------------------------------

_HEX_ID_KEYS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids_to_b64(obj):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in _HEX_ID_KEYS and isinstance(v, str):
                out[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                out[k] = _hex_ids_to_b64(v)
        return out
    if isinstance(obj, list):
        return [_hex_ids_to_b64(x) for x in obj]
    return obj


def parse_otlp_json(signal: str, body: bytes):
    msg = REQUEST_TYPES[signal]()
    json_format.ParseDict(_hex_ids_to_b64(json.loads(body)), msg, ignore_unknown_fields=True)
    return msg


# --------------------------------------------------------------------------------------------
# The sink
# --------------------------------------------------------------------------------------------


class _GrpcService:
    def __init__(self, sink: "OtlpSink", signal: str):
        self.sink, self.signal = sink, signal

    def Export(self, request, context):  # noqa: N802 (grpc naming)
        code = self.sink._grpc_failure
        if code is not None:
            context.abort(code, "sink: injected failure")
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        self.sink._record(Received(self.signal, "grpc", request, md))
        return RESPONSE_TYPES[self.signal]()


class _Traces(_GrpcService, trace_service_pb2_grpc.TraceServiceServicer):
    pass


class _Metrics(_GrpcService, metrics_service_pb2_grpc.MetricsServiceServicer):
    pass


class _Logs(_GrpcService, logs_service_pb2_grpc.LogsServiceServicer):
    pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, sink: "OtlpSink"):
        self.sink = sink
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def close_connections(self):
        with self.conns_lock:
            conns, self.conns = list(self.conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def setup(self):
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        signal = HTTP_PATHS.get(self.path.split("?")[0])
        if signal is None:
            return self._reply(404, b"sink: unknown path")
        if sink._http_failure is not None:
            return self._reply(sink._http_failure, b"sink: injected failure")
        enc = (self.headers.get("Content-Encoding") or "").strip().lower()
        try:
            if enc == "gzip":
                body = gzip.decompress(body)
            elif enc in ("deflate", "zlib"):
                body = zlib.decompress(body)
            elif enc == "zstd":
                if zstandard is None:
                    return self._reply(415, b"sink: zstd not available")
                body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30)
            elif enc not in ("", "identity"):
                return self._reply(415, b"sink: unsupported content-encoding " + enc.encode())
        except Exception as e:  # noqa: BLE001
            return self._reply(400, f"sink: bad {enc} body: {e}".encode())
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype == "application/x-protobuf":
                req = REQUEST_TYPES[signal].FromString(body)
                resp_body, resp_ctype = RESPONSE_TYPES[signal]().SerializeToString(), ctype
            elif ctype == "application/json":
                req = parse_otlp_json(signal, body)
                resp_body, resp_ctype = b"{}", ctype
            else:
                return self._reply(415, b"sink: unsupported content-type " + ctype.encode())
        except (DecodeError, ValueError, json_format.ParseError) as e:
            return self._reply(400, f"sink: cannot decode body: {e}".encode())
        headers = {k.lower(): v for k, v in self.headers.items()}
        sink._record(Received(signal, "http", req, headers))
        self._reply(200, resp_body, resp_ctype)


class OtlpSink:
    """Records every OTLP export request it receives over gRPC and HTTP.

    Thread-safe. `stop()` closes both listeners and every open connection; `start()` binds the
    same ports again. Recorded requests survive stop/start (use `clear()` to forget them).
    """

    def __init__(self, grpc_port: int | None = None, http_port: int | None = None,
                 host: str = "127.0.0.1"):
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        self._lock = threading.Condition()
        self._received: list[Received] = []
        self._grpc_server: grpc.Server | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_failure: grpc.StatusCode | None = None
        self._http_failure: int | None = None

    # ---- endpoints ----
    @property
    def grpc_endpoint(self) -> str:
        """host:port, as the Collector's `otlp` exporter wants it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL, as the Collector's `otlphttp` exporter wants it (it appends /v1/...)."""
        return f"http://{self.host}:{self.http_port}"

    # ---- lifecycle ----
    @property
    def running(self) -> bool:
        return self._grpc_server is not None

    def start(self, timeout: float = 10.0) -> "OtlpSink":
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        # gRPC
        while True:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=8),
                options=[
                    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                    ("grpc.so_reuseport", 0),
                ],
            )
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self, TRACES), server)
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
                _Metrics(self, METRICS), server)
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self, LOGS), server)
            try:
                bound = server.add_insecure_port(f"{self.host}:{self.grpc_port}")
            except RuntimeError:
                bound = 0
            if bound == self.grpc_port:
                break
            server.stop(0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink: cannot bind gRPC port {self.host}:{self.grpc_port}")
            time.sleep(0.1)
        server.start()
        self._grpc_server = server
        # HTTP
        while True:
            try:
                httpd = _HttpServer((self.host, self.http_port), _HttpHandler, self)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._grpc_server.stop(0)
                    self._grpc_server = None
                    raise RuntimeError(
                        f"sink: cannot bind HTTP port {self.host}:{self.http_port}") from None
                time.sleep(0.1)
        self._http_server = httpd
        self._http_thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"otlp-sink-http-{self.http_port}", daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Close both listeners and every open connection (in-flight calls are cancelled)."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=0).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server.close_connections()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- failure injection ----
    def fail_with(self, grpc_code: grpc.StatusCode | None = None,
                  http_status: int | None = None) -> None:
        """Answer every export with this error (None: accept again)."""
        self._grpc_failure, self._http_failure = grpc_code, http_status

    # ---- recorded data ----
    def _record(self, r: Received) -> None:
        with self._lock:
            self._received.append(r)
            self._lock.notify_all()

    def received(self, signal: str | None = None, transport: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received
                    if (signal is None or r.signal == signal)
                    and (transport is None or r.transport == transport)]

    def requests(self, signal: str, transport: str | None = None) -> list:
        return [r.request for r in self.received(signal, transport)]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def spans(self, transport: str | None = None) -> list[dict]:
        return flatten_spans(self.requests(TRACES, transport))

    def points(self, transport: str | None = None) -> list[dict]:
        return flatten_points(self.requests(METRICS, transport))

    def log_records(self, transport: str | None = None) -> list[dict]:
        return flatten_logs(self.requests(LOGS, transport))

    def wait_for(self, predicate: Callable[["OtlpSink"], bool], timeout: float = 10.0) -> bool:
        """Wait until predicate(sink) is true; returns its last value (False on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                # predicate may call back into the sink: release the lock meanwhile
                self._lock.release()
                try:
                    ok = predicate(self)
                finally:
                    self._lock.acquire()
                if ok:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))


# --------------------------------------------------------------------------------------------
# Building requests by hand (for raw clients)
# --------------------------------------------------------------------------------------------


def make_trace_request(n_spans: int, run_id: str, first: int = 0,
                       service_name: str = "e2e-raw", pad: int = 0):
    """An ExportTraceServiceRequest with n spans whose span ids encode (run, index) and whose
    attributes carry e2e.run_id / e2e.index (and, with `pad`, an `e2e.pad` string of that many
    bytes, to make spans as large as a test needs). Returns (request, [span_id hex])."""
    from opentelemetry.proto.common.v1 import common_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", service_name), ("e2e.run_id", run_id)):
        rs.resource.attributes.add(key=k, value=common_pb2.AnyValue(string_value=v))
    ss = rs.scope_spans.add()
    ss.scope.name = "e2e.raw"
    run = int(run_id[:8], 16) if all(c in "0123456789abcdef" for c in run_id[:8]) else 0
    ids = []
    now = time.time_ns()
    for i in range(first, first + n_spans):
        sp = ss.spans.add()
        sp.trace_id = run.to_bytes(4, "big") + b"\x00" * 8 + i.to_bytes(4, "big")
        sp.span_id = run.to_bytes(4, "big") + (i + 1).to_bytes(4, "big")
        sp.name = f"span-{i}"
        sp.kind = 2
        sp.start_time_unix_nano = now
        sp.end_time_unix_nano = now + 1_000_000
        sp.attributes.add(key="e2e.run_id", value=common_pb2.AnyValue(string_value=run_id))
        sp.attributes.add(key="e2e.index", value=common_pb2.AnyValue(int_value=i))
        if pad:
            sp.attributes.add(key="e2e.pad",
                              value=common_pb2.AnyValue(string_value=f"{i:0>{pad}}"))
        ids.append(sp.span_id.hex())
    return req, ids
