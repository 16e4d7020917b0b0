"""The prometheus exporter against a real Prometheus server.

The OpenTelemetry Python SDK, as three Kubernetes pods (resource attributes k8s.pod.name,
k8s.namespace.name, k8s.node.name, ...), sends a counter, an up-down counter, a gauge and a
histogram to sluice over OTLP/gRPC for a little over a minute. sluice serves them with two
`prometheus` exporters: text format 0.0.4 and OpenMetrics (`enable_open_metrics`). A real
Prometheus (Debian's /usr/bin/prometheus, on loopback, temporary data dir) scrapes both every
second. Then Prometheus' HTTP API must answer the PromQL of metrics-pipeline.md §10 --
`rate(...[1m])`, `sum by (...)`, label filters on `k8s_pod_name` -- with the values sent, and
every text scrape passes `promtool check metrics`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from conftest import free_port, otlp_receiver, to_yaml

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RUN_SECONDS = 64          # > the 1m rate window, so rate() sees a full minute
TICK_SECONDS = 0.5        # the workload adds to its counters every tick
SCRAPE_INTERVAL = "1s"

PODS = [
    # (pod, namespace, node, counter step per tick)
    ("checkout-7d8f9c5b6-a1", "shop", "ip-192-168-4-15.ap-south-1.compute.internal", 3),
    ("checkout-7d8f9c5b6-b2", "shop", "ip-192-168-27-137.ap-south-1.compute.internal", 1),
    ("mailer-5c4b3a2d1-c3", "jobs", "ip-192-168-4-15.ap-south-1.compute.internal", 2),
]
BOUNDS = [0.05, 0.1, 0.25, 0.5, 1.0]
LATENCIES = [0.03, 0.2, 0.2, 0.7]  # recorded in turn, one per tick


class Prometheus:
    """A Prometheus server on a free loopback port with its own data dir."""

    def __init__(self, workdir: Path, targets: dict[str, str | list[str]]):
        """targets: job name -> one `host:port` or a list of them."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [
                {"job_name": job, "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                 "static_configs": [{"targets": [target] if isinstance(target, str)
                                     else list(target)}]}
                for job, target in targets.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(to_yaml(cfg) + "\n")
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        return data["result"]

    def value(self, promql: str, at: float | None = None) -> float:
        result = self.query(promql, at)
        assert len(result) == 1, f"{promql}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


class Pod:
    """One application pod: its own MeterProvider with Kubernetes resource attributes."""

    def __init__(self, endpoint: str, pod: str, namespace: str, node: str, step: int):
        self.pod, self.namespace, self.step = pod, namespace, step
        resource = Resource.create({
            "service.name": pod.rsplit("-", 2)[0],
            "service.instance.id": pod,
            "k8s.pod.name": pod,
            "k8s.namespace.name": namespace,
            "k8s.node.name": node,
            "k8s.container.name": "app",
            "cloud.region": "ap-south-1",
            "cloud.availability_zone": "ap-south-1a",
        })
        self.reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5),
            export_interval_millis=500, export_timeout_millis=5000)
        self.provider = MeterProvider(resource=resource, metric_readers=[self.reader])
        meter = self.provider.get_meter("shop.instrumentation", "1.0.0")
        self.requests = meter.create_counter(
            "app.requests", unit="{request}", description="Requests served")
        self.queue = meter.create_up_down_counter(
            "app.queue.size", unit="{item}", description="Items waiting in the queue")
        self.memory = meter.create_gauge(
            "app.memory.usage", unit="By", description="Memory in use")
        self.latency = meter.create_histogram(
            "app.request.duration", unit="s", description="Request duration",
            explicit_bucket_boundaries_advisory=BOUNDS)
        self.total = 0
        self.queue_size = 0
        self.memory_value = 0
        self.latencies: list[float] = []
        self.history: list[tuple[float, int]] = []  # (wall time, counter total)

    def tick(self, n: int) -> None:
        attrs = {"http.route": "/cart"}
        self.requests.add(self.step, attrs)
        self.total += self.step
        self.history.append((time.time(), self.total))
        delta = 2 if n % 3 else -1
        self.queue.add(delta)
        self.queue_size += delta
        self.memory_value = 100_000_000 + n * 4096
        self.memory.set(self.memory_value)
        v = LATENCIES[n % len(LATENCIES)]
        self.latency.record(v, attrs)
        self.latencies.append(v)

    def counted_between(self, start: float, end: float) -> int:
        before = [c for t, c in self.history if t <= start]
        upto = [c for t, c in self.history if t <= end]
        return (upto[-1] if upto else 0) - (before[-1] if before else 0)

    def shutdown(self) -> None:
        self.provider.shutdown()


def scrape(url: str, accept: str) -> tuple[str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def promtool_check(text: str) -> None:
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}\n{text[:3000]}"


@pytest.mark.slow
def test_prometheus_scrapes_sluice_and_answers_promql(sluice, tmp_path):
    if not (Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()):
        pytest.fail("prometheus/promtool missing: run scripts/setup-test-env.sh")
    text_port, om_port = free_port(), free_port()
    exporter = {"resource_to_telemetry_conversion": {"enabled": True}}
    s = sluice({
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {
            "prometheus": {"endpoint": f"127.0.0.1:{text_port}", **exporter},
            "prometheus/openmetrics": {"endpoint": f"127.0.0.1:{om_port}",
                                       "enable_open_metrics": True, **exporter},
        },
        "service": {"pipelines": {"metrics": {
            "receivers": ["otlp"], "processors": ["batch"],
            "exporters": ["prometheus", "prometheus/openmetrics"]}}},
    })
    prom = Prometheus(tmp_path, {"sluice-text": f"127.0.0.1:{text_port}",
                                 "sluice-om": f"127.0.0.1:{om_port}"})
    pods = [Pod(s.grpc_endpoint, *p) for p in PODS]
    stop = threading.Event()

    def workload():
        n = 0
        while not stop.is_set():
            for p in pods:
                p.tick(n)
            n += 1
            stop.wait(TICK_SECONDS)

    worker = threading.Thread(target=workload, daemon=True)
    try:
        started = time.time()
        worker.start()
        time.sleep(RUN_SECONDS)

        # --- while the counters still grow: rate over the last minute (§10) -----------
        at = time.time()
        for job in ("sluice-text", "sluice-om"):
            for p in pods:
                # what the pod counted during the minute before `at`, per second; the SDK
                # exports every 0.5 s and Prometheus scrapes every 1 s, so allow 12%
                want = p.counted_between(at - 60, at) / 60
                got = prom.value(
                    f'rate(app_requests_total{{job="{job}",k8s_pod_name="{p.pod}"}}[1m])', at)
                assert got == pytest.approx(want, rel=0.12), (job, p.pod, got, want)
            by_ns = {r["metric"]["k8s_namespace_name"]: float(r["value"][1]) for r in prom.query(
                f'sum by (k8s_namespace_name) (rate(app_requests_total{{job="{job}"}}[1m]))', at)}
            want_ns = {}
            for p in pods:
                want_ns[p.namespace] = want_ns.get(p.namespace, 0) + p.counted_between(at - 60, at) / 60
            assert by_ns.keys() == want_ns.keys(), by_ns
            for ns, want in want_ns.items():
                assert by_ns[ns] == pytest.approx(want, rel=0.12), (job, ns, by_ns, want_ns)
        assert started < at

        # --- stop, flush, let Prometheus scrape the final values ----------------------
        stop.set()
        worker.join(5)
        for p in pods:
            assert p.reader.force_flush(10_000), "SDK flush timed out"
        time.sleep(3)  # two batch timeouts and two scrapes
        for job in ("sluice-text", "sluice-om"):
            assert prom.value(f'up{{job="{job}"}}') == 1.0
            for p in pods:
                sel = f'job="{job}",k8s_pod_name="{p.pod}"'
                # counters, up-down counters and gauges: exactly the values sent
                assert prom.value(f"app_requests_total{{{sel}}}") == p.total
                assert prom.value(f"app_queue_size{{{sel}}}") == p.queue_size
                assert prom.value(f"app_memory_usage_bytes{{{sel}}}") == p.memory_value
                # histograms: count, sum and cumulative buckets
                assert prom.value(f"app_request_duration_seconds_count{{{sel}}}") == len(p.latencies)
                assert prom.value(f"app_request_duration_seconds_sum{{{sel}}}") == \
                    pytest.approx(sum(p.latencies))
                for le in BOUNDS:
                    want = sum(1 for v in p.latencies if v <= le)
                    le_text = f"{le:g}" if job == "sluice-text" else repr(le)
                    got = prom.value(
                        f'app_request_duration_seconds_bucket{{{sel},le="{le_text}"}}')
                    assert got == want, (job, p.pod, le, got, want)
                # the resource's identity: service.* -> exported job/instance labels
                r = prom.query(f"app_requests_total{{{sel}}}")[0]["metric"]
                assert r["exported_job"] == p.pod.rsplit("-", 2)[0]
                assert r["exported_instance"] == p.pod
                assert r["k8s_node_name"] and r["cloud_region"] == "ap-south-1"
            # §10-style grouping and a quantile over the histogram
            groups = prom.query(f'group by (k8s_node_name) (app_memory_usage_bytes{{job="{job}"}})')
            assert {g["metric"]["k8s_node_name"] for g in groups} == {p[2] for p in PODS}
            assert prom.value(f'count(target_info{{job="{job}"}})') == len(PODS)

        # --- the scrapes themselves ---------------------------------------------------
        ctype, text = scrape(f"http://127.0.0.1:{text_port}/metrics", "text/plain")
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        promtool_check(text)
        ctype, om = scrape(f"http://127.0.0.1:{om_port}/metrics",
                           "application/openmetrics-text;version=1.0.0")
        assert ctype.startswith("application/openmetrics-text; version=1.0.0"), ctype
        assert om.endswith("# EOF\n") and "# TYPE app_requests counter" in om
        # Prometheus itself parsed every OpenMetrics scrape: no scrape errors on either target
        for t in prom.api("targets")["activeTargets"]:
            assert t["health"] == "up" and not t["lastError"], t
        # sluice counted what it took
        assert s.metric("otelcol_exporter_sent_metric_points_total",
                        exporter="prometheus") > 0
        assert (s.metric("otelcol_exporter_dropped_metric_points_total",
                         exporter="prometheus") or 0) == 0
    finally:
        stop.set()
        for p in pods:
            p.shutdown()
        prom.stop()
