#!/usr/bin/env python3
"""A stand-in for the sluice binary, to check the e2e HARNESS itself (not a product).

    .venv/bin/pip install pyyaml   # only this script needs it
    SLUICE_BIN=tests/e2e/fake_sluice.py .venv/bin/pytest -q tests/e2e -k "roundtrip or chain or outage"

It understands just what the harness's configs use: an `otlp` receiver (gRPC + HTTP protobuf),
`otlp` / `otlphttp` exporters with retry_on_failure and sending_queue (queue_size,
num_consumers), the health_check extension, self-telemetry in Prometheus text, and SIGTERM.
No validation, no processors (batch is ignored), no JSON, no compression. Run with the
venv's python (shebang resolves `python3`; the harness runs it directly).
"""

import os
import queue
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
_VENV_PY = os.path.join(HERE, "..", "..", ".venv", "bin", "python")
if not sys.prefix.endswith(".venv") and os.path.exists(_VENV_PY):
    os.execv(_VENV_PY, [_VENV_PY, os.path.abspath(__file__), *sys.argv[1:]])
sys.path.insert(0, HERE)

import grpc  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402

from otlp_sink import GRPC_METHODS, REQUEST_TYPES  # noqa: E402

LOCK = threading.Lock()
COUNTERS = defaultdict(float)  # (name, frozenset(labels)) -> value
ITEM = {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}


def inc(name, n, **labels):
    with LOCK:
        COUNTERS[(name, tuple(sorted(labels.items())))] += n


def count_items(signal_, req):
    if signal_ == "traces":
        return sum(len(s.spans) for r in req.resource_spans for s in r.scope_spans)
    if signal_ == "logs":
        return sum(len(s.log_records) for r in req.resource_logs for s in r.scope_logs)
    n = 0
    for r in req.resource_metrics:
        for s in r.scope_metrics:
            for m in s.metrics:
                k = m.WhichOneof("data")
                n += len(getattr(m, k).data_points) if k else 0
    return n


def duration(v, default):
    if v is None:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(v))
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


class Exporter:
    def __init__(self, name, cfg):
        self.name, self.kind = name, name.split("/")[0]
        self.endpoint = cfg["endpoint"]
        self.timeout = duration(cfg.get("timeout"), 5)
        r = cfg.get("retry_on_failure", {})
        self.retry = r.get("enabled", True)
        self.initial = duration(r.get("initial_interval"), 5)
        self.max_iv = duration(r.get("max_interval"), 30)
        self.max_elapsed = duration(r.get("max_elapsed_time"), 300)
        q = cfg.get("sending_queue", {})
        self.q = queue.Queue(maxsize=int(q.get("queue_size", 1000)))
        self.channel = grpc.insecure_channel(self.endpoint) if self.kind == "otlp" else None
        for _ in range(int(q.get("num_consumers", 10))):
            threading.Thread(target=self.consume, daemon=True).start()

    def enqueue(self, signal_, req):
        n = count_items(signal_, req)
        try:
            self.q.put_nowait((signal_, req))
        except queue.Full:
            inc(f"otelcol_exporter_enqueue_failed_{ITEM[signal_]}_total", n, exporter=self.name)
            return False
        return True

    def send_once(self, signal_, req):
        body = req.SerializeToString()
        if self.channel is not None:
            self.channel.unary_unary(GRPC_METHODS[signal_])(body, timeout=self.timeout)
        else:
            r = requests.post(f"{self.endpoint}/v1/{signal_}", data=body, timeout=self.timeout,
                              headers={"Content-Type": "application/x-protobuf"})
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}")

    def consume(self):
        while True:
            signal_, req = self.q.get()
            n = count_items(signal_, req)
            start, iv = time.monotonic(), self.initial
            while True:
                try:
                    self.send_once(signal_, req)
                    inc(f"otelcol_exporter_sent_{ITEM[signal_]}_total", n, exporter=self.name)
                    break
                except Exception as e:  # noqa: BLE001
                    if not self.retry or time.monotonic() - start > self.max_elapsed:
                        print(f"dropping after error: {e}", flush=True)
                        inc(f"otelcol_exporter_send_failed_{ITEM[signal_]}_total", n,
                            exporter=self.name)
                        break
                    time.sleep(iv)
                    iv = min(iv * 1.5, self.max_iv)
            self.q.task_done()


def main():
    args = sys.argv[1:]
    if args and args[0] == "validate":
        args = args[1:]
    cfg = yaml.safe_load(open(args[args.index("--config") + 1]))
    exporters = {n: Exporter(n, c) for n, c in cfg["exporters"].items()}
    routes = {s: [exporters[e] for e in p["exporters"]]
              for s, p in cfg["service"]["pipelines"].items()}

    def consume(signal_, req, transport):
        n = count_items(signal_, req)
        ok = all(e.enqueue(signal_, req) for e in routes.get(signal_, []))
        inc(f"otelcol_receiver_{'accepted' if ok else 'refused'}_{ITEM[signal_]}_total", n,
            receiver="otlp", transport=transport)
        return ok

    protos = cfg["receivers"]["otlp"]["protocols"]
    server = grpc.server(futures.ThreadPoolExecutor(8))

    def grpc_handler(signal_):
        def handle(body, ctx):
            try:
                req = REQUEST_TYPES[signal_].FromString(body)
            except Exception as e:  # noqa: BLE001
                inc("otelcol_receiver_failed_requests_total", 1, receiver="otlp",
                    transport="grpc", reason="decode")
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode request: {e}")
            if not consume(signal_, req, "grpc"):
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "sending queue is full")
            return b""
        return grpc.unary_unary_rpc_method_handler(handle)

    handlers = {}
    for s, path in GRPC_METHODS.items():
        svc, meth = path[1:].split("/")
        handlers.setdefault(svc, {})[meth] = grpc_handler(s)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(k, v) for k, v in handlers.items()])
    server.add_insecure_port(protos["grpc"]["endpoint"])
    server.start()

    class Otlp(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, body=b"", ctype="application/x-protobuf"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            s = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}.get(
                self.path)
            if s is None:
                return self.reply(404, b"not found", "text/plain")
            try:
                req = REQUEST_TYPES[s].FromString(body)
            except Exception as e:  # noqa: BLE001
                inc("otelcol_receiver_failed_requests_total", 1, receiver="otlp",
                    transport="http", reason="decode")
                return self.reply(400, f"cannot decode request: {e}".encode(), "text/plain")
            if not consume(s, req, "http"):
                return self.reply(503, b"sending queue is full", "text/plain")
            self.reply(200)

    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            if self.server.kind == "health":
                body = b'{"status":"Server available"}'
            else:
                lines = []
                with LOCK:
                    for (name, labels), v in sorted(COUNTERS.items()):
                        ls = ",".join(f'{k}="{val}"' for k, val in labels)
                        lines.append(f"{name}{{{ls}}} {v}")
                for e in exporters.values():
                    lines.append(f'otelcol_exporter_queue_size{{exporter="{e.name}"}} '
                                 f'{e.q.qsize()}')
                body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def serve(endpoint, handler, kind=None):
        host, port = endpoint.rsplit(":", 1)
        httpd = ThreadingHTTPServer((host, int(port)), handler)
        httpd.daemon_threads = True
        httpd.kind = kind
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    serve(protos["http"]["endpoint"], Otlp)
    serve(cfg["service"]["telemetry"]["metrics"]["address"], Plain, "metrics")
    serve(cfg["extensions"]["health_check"]["endpoint"], Plain, "health")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("fake sluice ready", flush=True)
    stop.wait()
    server.stop(0)
    os._exit(0)


if __name__ == "__main__":
    main()
