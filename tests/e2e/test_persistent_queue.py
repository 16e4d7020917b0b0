"""Persistent sending queue (`file_storage`): nothing the client got an OK for is lost — not
through a backend outage, not through SIGKILL of sluice mid-outage, not through a crash loop.

The client is the OpenTelemetry Python SDK (BatchSpanProcessor + OTLP/gRPC exporter) sending
steadily; a wrapper around its exporter records which spans each export returned SUCCESS for
(the SDK's own retries included): those are "acked". Delivery is at least once, so duplicates
are counted and reported, never assumed away; a span delivered that was never sent fails.

CI runs short versions (OUTAGE_S=10, KILL_ROUNDS=5). scripts/reliability.sh runs the full ones
(SLUICE_OUTAGE_S=60, SLUICE_KILL_ROUNDS=20) and prints the `RELIABILITY` lines as figures."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import Counter

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from conftest import otlp_receiver, pipelines, run_sluice, to_yaml
from otlp_sink import GRPC_METHODS, OtlpSink, make_trace_request

OUTAGE_S = float(os.environ.get("SLUICE_OUTAGE_S", "10"))
KILL_ROUNDS = int(os.environ.get("SLUICE_KILL_ROUNDS", "5"))
SPANS_PER_S = int(os.environ.get("SLUICE_SPANS_PER_S", "400"))


class AckRecorder(SpanExporter):
    """The SDK's OTLP exporter, recording the span ids of every export that returned SUCCESS."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.acked: list[str] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def export(self, spans):
        result = self.inner.export(spans)
        ids = [f"{s.context.span_id:016x}" for s in spans]
        with self._lock:
            (self.acked if result == SpanExportResult.SUCCESS else self.failed).extend(ids)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SteadyClient:
    """An SDK tracer provider making SPANS_PER_S spans a second on a thread until stop()."""

    def __init__(self, endpoint: str):
        self.run_id = uuid.uuid4().hex[:12]
        self.recorder = AckRecorder(OTLPSpanExporter(endpoint=f"http://{endpoint}",
                                                     insecure=True, timeout=10))
        self.provider = TracerProvider(resource=Resource.create(
            {"service.name": "e2e-persistent", "e2e.run_id": self.run_id}))
        self.provider.add_span_processor(BatchSpanProcessor(
            self.recorder, schedule_delay_millis=100, max_export_batch_size=100,
            max_queue_size=100_000, export_timeout_millis=15_000))
        self.made = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        tracer = self.provider.get_tracer("e2e.persistent")
        tick = 0.05
        per_tick = max(1, int(SPANS_PER_S * tick))
        while not self._stop.is_set():
            t0 = time.monotonic()
            for _ in range(per_tick):
                with tracer.start_as_current_span("op", attributes={"e2e.run_id": self.run_id,
                                                                    "i": self.made}):
                    pass
                self.made += 1
            self._stop.wait(max(0.0, tick - (time.monotonic() - t0)))

    def start(self) -> "SteadyClient":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop making spans; flush what the SDK holds (its exporter retries as usual)."""
        self._stop.set()
        self._thread.join(5)
        self.provider.force_flush(60_000)
        self.provider.shutdown()


def persistent_config(sink: OtlpSink, storage_dir) -> dict:
    # No batch processor: it would acknowledge requests before they reach the queue (see the
    # file_storage README), and this test is about what the client was told.
    return {
        "extensions": {"file_storage": {"directory": str(storage_dir),
                                        "create_directory": True}},
        "receivers": {"otlp": otlp_receiver()},
        "processors": {},
        "exporters": {"otlp": {
            "endpoint": sink.grpc_endpoint, "tls": {"insecure": True}, "timeout": "2s",
            "sending_queue": {"storage": "file_storage", "queue_size": 100_000},
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": "500ms",
                                 "max_elapsed_time": "600s"}}},
        "service": {"extensions": ["file_storage"],
                    "pipelines": pipelines(["otlp"], [], ["otlp"], signals=("traces",))},
    }


def delivered(sink: OtlpSink, run_id: str) -> Counter:
    return Counter(x["span_id"] for x in sink.spans()
                   if x["attributes"].get("e2e.run_id") == run_id)


def check_delivery(name: str, client: SteadyClient, sink: OtlpSink, timeout: float) -> Counter:
    acked = set(client.recorder.acked)
    assert acked, "the client got no OK at all"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not acked <= set(delivered(sink, client.run_id)):
        time.sleep(0.2)
    time.sleep(1.0)  # late duplicates show up here
    got = delivered(sink, client.run_id)
    missing = acked - set(got)
    duplicates = sum(n - 1 for n in got.values())
    never_acked = set(got) - acked
    print(f"RELIABILITY {name}: made={client.made} acked={len(acked)} "
          f"refused_to_client={len(client.recorder.failed)} delivered_unique={len(got)} "
          f"duplicates={duplicates} delivered_not_acked={len(never_acked)} "
          f"acked_minus_delivered={len(missing)}")
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans never arrived"
    made_ids = acked | set(client.recorder.failed)
    stray = set(got) - made_ids
    assert not stray, f"{len(stray)} spans delivered that the client never sent"
    return got


def kill(s) -> None:
    s.proc.kill()
    s.proc.wait(10)
    s.exit_reported = True


@pytest.mark.slow
@pytest.mark.timeout(120 + 3 * OUTAGE_S)
def test_outage_with_a_sigkill_midway_loses_nothing_acknowledged(sluice, tmp_path):
    """The backend is down for OUTAGE_S while the SDK sends steadily; halfway through, sluice is
    SIGKILLed and started again on the same storage. When the backend comes back every span
    the SDK got an OK for arrives; nothing is counted as dropped."""
    sink = OtlpSink()  # ports reserved, not listening: the backend is down
    client = None
    try:
        config = persistent_config(sink, tmp_path / "storage")
        s = sluice(config, name="before-kill")
        client = SteadyClient(s.grpc_endpoint).start()
        time.sleep(OUTAGE_S / 2)
        stored = s.metric("sluice_exporter_queue_storage_bytes", exporter="otlp")
        assert stored and stored > 0, "nothing in the persistent queue during the outage"
        kill(s)
        s = sluice(config, name="after-kill")
        time.sleep(OUTAGE_S / 2)
        replayed = s.metric("sluice_exporter_queue_replayed_spans_total", exporter="otlp")
        assert replayed, "nothing replayed after the restart"
        client.stop()
        assert not sink.received(), "the backend was down"
        sink.start()  # same ports
        got = check_delivery(f"outage {OUTAGE_S:.0f}s + SIGKILL", client, sink,
                             timeout=60 + OUTAGE_S)
        # Only the restarted process ever reached the backend: its sent counter is exactly
        # what the backend received, duplicates included.
        received = sum(got.values())
        sent = s.wait_metric("otelcol_exporter_sent_spans_total", lambda v: v == received,
                             exporter="otlp")
        assert sent == received, f"sent counter {sent}, backend received {received}"

        assert not s.metric("otelcol_exporter_send_failed_spans_total", exporter="otlp")
        assert not s.metric("sluice_exporter_queue_storage_corrupt_records_total",
                            exporter="otlp")
    finally:
        if client is not None:
            client._stop.set()
        sink.stop()


@pytest.mark.slow
@pytest.mark.timeout(120 + 6 * KILL_ROUNDS)
def test_crash_loop_under_load_loses_nothing_acknowledged(sluice, tmp_path):
    """KILL_ROUNDS times: SIGKILL at a random moment while the SDK sends and sluice delivers,
    then start again on the same storage. Afterwards acked − delivered = 0; duplicates (at least
    once) are counted and reported."""
    rng = random.Random(int(os.environ.get("SLUICE_KILL_SEED", "16")))
    sink = OtlpSink().start()
    client = None
    try:
        config = persistent_config(sink, tmp_path / "storage")
        s = sluice(config, name="round0")
        client = SteadyClient(s.grpc_endpoint).start()
        for r in range(KILL_ROUNDS):
            time.sleep(rng.uniform(0.2, 1.5))
            kill(s)
            s = sluice(config, name=f"round{r + 1}")
        time.sleep(1.0)
        client.stop()
        check_delivery(f"crash loop {KILL_ROUNDS} rounds", client, sink, timeout=60)
        assert not s.metric("otelcol_exporter_send_failed_spans_total", exporter="otlp")
    finally:
        if client is not None:
            client._stop.set()
        sink.stop()


def _validate(tmp_path, config: dict):
    f = tmp_path / "config.yaml"
    f.write_text(to_yaml(config) + "\n")
    return run_sluice(["validate", "--config", str(f)])


def _storage_config(tmp_path, storage="file_storage/queue", enabled=("file_storage/queue",),
                    queue_enabled=True) -> dict:
    return {
        "extensions": {"file_storage/queue": {"directory": str(tmp_path)}},
        "receivers": {"otlp": otlp_receiver()},
        "exporters": {"otlp": {"endpoint": "127.0.0.1:4317",
                               "sending_queue": {"enabled": queue_enabled,
                                                 "storage": storage}}},
        "service": {"extensions": list(enabled),
                    "pipelines": pipelines(["otlp"], [], ["otlp"])},
    }


@pytest.mark.parametrize("case,config_kwargs,message", [
    ("undefined", {"storage": "file_storage/other"}, "not defined"),
    ("not_enabled", {"enabled": ()}, "not enabled"),
    ("queue_disabled", {"queue_enabled": False}, "sending_queue.enabled"),
], ids=["undefined", "not_enabled", "queue_disabled"])
def test_a_storage_that_cannot_be_used_is_a_config_error(tmp_path, case, config_kwargs, message):
    r = _validate(tmp_path, _storage_config(tmp_path, **config_kwargs))
    assert r.returncode != 0, f"{case}: validate accepted it:\n{r.stdout}"
    assert "sending_queue.storage" in r.stdout and message in r.stdout, r.stdout


def test_a_collector_style_persistent_queue_config_validates(tmp_path):
    r = _validate(tmp_path, _storage_config(tmp_path))
    assert r.returncode == 0, r.stdout


def test_sigterm_with_the_backend_down_keeps_what_is_undelivered_and_exits_0(sluice, tmp_path):
    """SIGTERM while the backend is down: sluice drains until sending_queue.drain_timeout, then
    leaves what is undelivered in the persistent queue (nothing dropped: exit 0, a warn line
    with the count) and delivers it after the next start."""
    sink = OtlpSink()  # down
    try:
        config = persistent_config(sink, tmp_path / "storage")
        config["exporters"]["otlp"]["sending_queue"]["drain_timeout"] = "1s"
        s = sluice(config, name="first")
        run_id = uuid.uuid4().hex[:8]
        req, ids = make_trace_request(7, run_id)
        with grpc.insecure_channel(s.grpc_endpoint) as ch:
            ch.unary_unary(GRPC_METHODS["traces"])(req.SerializeToString(), timeout=10)
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(timeout=15)
        s.exit_reported = True
        log = s.log_path.read_text()
        assert rc == 0, f"exit code {rc}: nothing was dropped\n{s.log_tail()}"
        assert "7 items were still undelivered at the drain deadline; they stay in the " \
               "persistent queue" in log, s.log_tail()
        sink.start()
        s = sluice(config, name="second")
        ok = sink.wait_for(lambda k: set(ids) <= {x["span_id"] for x in k.spans()}, 30)
        assert ok, "the spans kept at shutdown were not delivered after the restart"
        assert s.wait_metric("sluice_exporter_queue_replayed_spans_total", lambda v: v == 7,
                             exporter="otlp") == 7
    finally:
        sink.stop()


def loadbalancing_config(hostnames: list[str], storage_dir) -> dict:
    """An agent whose loadbalancing exporter gives each backend a persistent queue."""
    return {
        "extensions": {"file_storage": {"directory": str(storage_dir),
                                        "create_directory": True}},
        "receivers": {"otlp": otlp_receiver()},
        "processors": {},
        "exporters": {"loadbalancing": {
            "protocol": {"otlp": {
                "tls": {"insecure": True}, "timeout": "2s",
                "sending_queue": {"storage": "file_storage", "drain_timeout": "1s"},
                "retry_on_failure": {"initial_interval": "100ms", "max_interval": "500ms",
                                     "max_elapsed_time": "600s"}}},
            "resolver": {"static": {"hostnames": hostnames}}}},
        "service": {"extensions": ["file_storage"],
                    "pipelines": pipelines(["otlp"], [], ["loadbalancing"],
                                           signals=("traces",))},
    }


def test_loadbalancing_backends_gone_while_sluice_was_down_are_routed_again(sluice, tmp_path):
    """Two gateways (down) hold an agent's data in their persistent backend queues when the
    agent is SIGKILLed; it starts again with a third gateway as its only backend (the two were
    replaced meanwhile). What the two queues held is routed again through the new ring: every
    acknowledged span arrives at the third gateway, counted as re-routed, nothing dropped."""
    a, b, c = OtlpSink(), OtlpSink(), OtlpSink().start()  # a and b down
    try:
        storage = tmp_path / "storage"
        s = sluice(loadbalancing_config([a.grpc_endpoint, b.grpc_endpoint], storage),
                   name="agent-before")
        run_id = uuid.uuid4().hex[:8]
        req, ids = make_trace_request(40, run_id)
        with grpc.insecure_channel(s.grpc_endpoint) as ch:
            ch.unary_unary(GRPC_METHODS["traces"])(req.SerializeToString(), timeout=10)
        stored = [s.metric("sluice_exporter_queue_storage_bytes",
                           exporter=f"loadbalancing/{x.grpc_endpoint}") for x in (a, b)]
        assert all(v and v > 0 for v in stored), f"each backend's queue holds its part: {stored}"
        kill(s)
        s = sluice(loadbalancing_config([c.grpc_endpoint], storage), name="agent-after")
        ok = c.wait_for(lambda k: set(ids) <= {x["span_id"] for x in k.spans()}, 30)
        assert ok, f"{len(set(ids) - {x['span_id'] for x in c.spans()})} spans never arrived"
        assert s.wait_metric("otelcol_loadbalancer_rerouted_spans_total", lambda v: v == 40,
                             exporter="loadbalancing") == 40
        assert not s.metric("otelcol_exporter_send_failed_spans_total")
        assert not a.received() and not b.received()
    finally:
        for x in (a, b, c):
            x.stop()
