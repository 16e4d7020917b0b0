"""`sluice replay`: captured OTLP through a config, offline, on a virtual clock.

- A gateway (the shipped gateway.yaml) captures what the OpenTelemetry Python SDK sends with a
  `file` exporter, while deciding live; replaying the capture through the same config makes
  the same decisions (the same sampled trace ids reach the exporter), the same span metrics
  and the same Prometheus series.
- A capture spanning 10 minutes of data time with `decision_wait: 30s` replays in seconds, and
  the report's timeline shows every trace decided 30-31 s of data time after its first span
  (the 1 s decision tick); a late span follows the remembered decision.
- Bad captures (truncated, a corrupt record, another format) give an error naming the file and
  the offset; `--skip-bad` goes on and counts.
- `--report out.json` matches the committed JSON Schema; `--report out.html` renders its
  charts in headless Chromium (a non-blank screenshot); `--compare` reports the differences.
- Ctrl-C stops cleanly with a partial report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import REPO_ROOT, Sluice, free_port, parse_prometheus, sluice_bin, to_yaml
from otlp_sink import OtlpSink

GATEWAY = REPO_ROOT / "k8s" / "config" / "gateway.yaml"
SCHEMA = REPO_ROOT / "src" / "replay" / "report.schema.json"
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC


def replay(args: list[str], cwd: Path, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(sluice_bin()), "replay", "--quiet", *args], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout, text=True,
                          errors="replace", env=env or dict(os.environ))


def validate_report(report: dict) -> None:
    import jsonschema
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))


# ----------------------------------------------------------------------------- live vs replay


class CapturingGateway(Sluice):
    """`sluice --config gateway.yaml --config <override>`, in its own directory."""

    def start(self, wait_ready: bool = True, timeout: float = 20) -> "CapturingGateway":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(sluice_bin()), "--config", str(GATEWAY), "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=dict(os.environ, RUST_BACKTRACE="1"))
        if wait_ready:
            self.wait_ready(timeout)
        return self


def gateway_override() -> dict:
    """Free ports, short waits (the test takes seconds), and a capture of everything the
    otlp receiver takes, before any processing, as the replay README advises."""
    return {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
            "http": {"endpoint": f"127.0.0.1:{free_port()}"},
        }}},
        "processors": {"batch": {"timeout": "100ms"},
                       "tail_sampling": {"decision_wait": "2s"}},
        "connectors": {"spanmetrics": {"metrics_flush_interval": "1s"}},
        "exporters": {
            "prometheus": {"endpoint": f"127.0.0.1:{free_port()}"},
            "file/capture": {"path": "capture.bin", "format": "proto",
                             "rotation": {"max_megabytes": 64}},
        },
        "service": {"pipelines": {"traces/capture": {
            "receivers": ["otlp"], "processors": [], "exporters": ["file/capture"]}}},
    }


def send_sdk_traffic(endpoint: str, traces: int = 240) -> dict[str, str]:
    """Request traces through the real SDK: every 9th has a failed call, every 13th is slow
    (2.5 s, with explicit timestamps), the rest ordinary. Returns {trace id: kind}."""
    provider = TracerProvider(resource=Resource.create({
        "service.name": "checkout", "k8s.pod.name": "checkout-5c9d7-abcde"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=10),
        max_export_batch_size=200, schedule_delay_millis=100))
    tracer = provider.get_tracer("replay-e2e")
    kinds = {}
    for i in range(traces):
        kind = "error" if i % 9 == 0 else "slow" if i % 13 == 0 else "ok"
        now = time.time_ns()
        start = now - (2_500_000_000 if kind == "slow" else 30_000_000)
        method = ("GET", "POST", "PUT")[i % 3]
        root = tracer.start_span(f"{method} /cart", kind=SpanKind.SERVER, start_time=start,
                                 attributes={"http.request.method": method,
                                             "http.response.status_code": 500 if kind == "error" else 200})
        ctx = __import__("opentelemetry.trace", fromlist=["set_span_in_context"]).set_span_in_context(root)
        db = tracer.start_span("SELECT carts", kind=SpanKind.CLIENT, context=ctx,
                               start_time=start + 1_000_000,
                               attributes={"db.system": "postgresql"})
        if kind == "error":
            db.set_status(Status(StatusCode.ERROR, "deadlock"))
        db.end(end_time=now - 1_000_000)
        tracer.start_span("render", kind=SpanKind.INTERNAL, context=ctx,
                          start_time=now - 900_000).end(end_time=now - 100_000)
        root.end(end_time=now)
        kinds[format(root.get_span_context().trace_id, "032x")] = kind
    provider.force_flush()
    provider.shutdown()
    return kinds


def scrape_text(endpoint: str) -> str:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as r:
        return r.read().decode()


def span_metric_totals(samples) -> dict[tuple[str, str], float]:
    """calls by (label, value) over every span-metric calls series."""
    out: dict[tuple[str, str], float] = {}
    for name, labels, value in samples:
        if name != "traces_span_metrics_calls_total":
            continue
        for k, v in labels.items():
            if k in ("job", "instance", "otel_scope_name"):
                continue
            out[(k, v)] = out.get((k, v), 0) + value
    return out


def test_a_capture_replays_to_the_live_decisions_span_metrics_and_series(tmp_path, monkeypatch):
    live_dir, replay_dir = tmp_path / "live", tmp_path / "replay"
    live_dir.mkdir()
    replay_dir.mkdir()
    live_sink, replay_sink = OtlpSink().start(), OtlpSink().start()
    try:
        monkeypatch.setenv("JAEGER_ENDPOINT", live_sink.grpc_endpoint)
        g = CapturingGateway(gateway_override(), live_dir, "gateway").start()
        try:
            kinds = send_sdk_traffic(g.grpc_endpoint)
            n_spans = 3 * len(kinds)
            assert g.wait_metric("otelcol_exporter_sent_spans_total", lambda v: v == n_spans,
                                 timeout=30, exporter="file/capture") == n_spans
            decided = lambda v: v == len(kinds)  # noqa: E731
            assert g.wait_metric(
                "otelcol_processor_tail_sampling_global_count_traces_sampled_total", decided,
                timeout=30) == len(kinds), g.log_tail()
            prom = g.config["exporters"]["prometheus"]["endpoint"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                live_totals = span_metric_totals(parse_prometheus(scrape_text(prom)))
                if live_totals.get(("service_name", "checkout")) == n_spans:
                    break
                time.sleep(0.3)
            live_scrape = parse_prometheus(scrape_text(prom))
        finally:
            assert g.stop() == 0, g.log_tail()
        live_kept = {s["trace_id"] for s in live_sink.spans()}
        # The shipped policies: every error trace, every slow one, half of the rest by hash.
        assert {t for t, k in kinds.items() if k != "ok"} <= live_kept
        assert 0 < len(live_kept) < len(kinds)

        capture = live_dir / "capture.bin"
        assert capture.stat().st_size > 0
        # The same config files, exporters for real: Jaeger is the second sink.
        override = live_dir / "gateway.yaml"
        env = dict(os.environ, JAEGER_ENDPOINT=replay_sink.grpc_endpoint)
        out = replay(["--config", str(GATEWAY), "--config", str(override),
                      "--report", str(replay_dir / "report.json"), str(capture)],
                     cwd=replay_dir, env=env)
        assert out.returncode == 0, out.stderr + out.stdout
        assert replay_sink.wait_for(lambda s: {x["trace_id"] for x in s.spans()} >= live_kept,
                                    timeout=15)
        replay_kept = {s["trace_id"] for s in replay_sink.spans()}
        assert replay_kept == live_kept, (len(replay_kept), len(live_kept))
        assert sorted((s["trace_id"], s["span_id"]) for s in replay_sink.spans()) == \
            sorted((s["trace_id"], s["span_id"]) for s in live_sink.spans())

        report = json.loads((replay_dir / "report.json").read_text())
        validate_report(report)
        run = report["runs"][0]
        assert run["input"]["spans"] == n_spans
        ts = run["tail_sampling"][0]
        assert ts["traces_new"] == len(kinds)
        assert ts["traces_sampled"] == len(live_kept)
        watched = run["watched_traces"]
        assert watched["error_traces_seen"] == sum(k == "error" for k in kinds.values())
        assert watched["error_traces_kept"] == watched["error_traces_seen"]
        assert watched["slow_traces_seen"] == sum(k == "slow" for k in kinds.values())
        assert watched["slow_traces_kept"] == watched["slow_traces_seen"]
        jaeger = next(e for e in run["exporters"] if e["id"] == "otlp/jaeger")
        assert jaeger["sent"]["spans"] == len(live_sink.spans()) and jaeger["bytes"] > 0

        # Span metrics and Prometheus series: the in-process scrape equals the live one.
        prom = run["prometheus"][0]
        assert prom["series"] == len(live_scrape)
        live_totals = span_metric_totals(live_scrape)
        replayed = {(d["dimension"], v["value"]): v["calls"]
                    for d in prom["top_span_metric_dimensions"] for v in d["top"]}
        assert replayed == live_totals
        assert replayed[("service_name", "checkout")] == n_spans
    finally:
        live_sink.stop()
        replay_sink.stop()


# ----------------------------------------------------------------------------- synthetic captures


def trace_id(trace: int) -> bytes:
    """Random-looking but fixed: the probabilistic policy hashes the id, as live."""
    return hashlib.md5(f"trace {trace}".encode()).digest()


def span(trace: int, idx: int, start: int, end: int, error: bool = False):
    sp = trace_service_pb2.ExportTraceServiceRequest().resource_spans.add() \
        .scope_spans.add().spans.add()
    sp.trace_id = trace_id(trace)
    sp.span_id = (trace * 16 + idx + 1).to_bytes(8, "big")
    sp.name = f"op-{idx}"
    sp.kind = 2
    sp.start_time_unix_nano = start
    sp.end_time_unix_nano = end
    if error:
        sp.status.code = 2
    return sp


def request(spans) -> bytes:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name",
                               value=common_pb2.AnyValue(string_value="replayed"))
    ss = rs.scope_spans.add()
    for s in spans:
        ss.spans.add().CopyFrom(s)
    return req.SerializeToString()


def ten_minutes_of_traces() -> tuple[list[bytes], int]:
    """One new trace every 20 s for 10 minutes (30 traces), each with spans ending 0.5 s,
    5 s and 12 s after it starts, in arrival (end time) order; trace 3's 5 s span arrives
    out of order (after later data, still inside the decision window); a late span of trace 0
    arrives at 100 s, long after its decision. Returns (records, trace count)."""
    events = []
    for k in range(30):
        start = T0 + k * 20 * SEC
        for idx, after in enumerate((SEC // 2, 5 * SEC, 12 * SEC)):
            events.append((start + after, span(k + 1, idx, start, start + after, error=k % 5 == 0)))
    events.sort(key=lambda e: e[0])
    records = []
    held = None
    for end, sp in events:
        if sp.trace_id == trace_id(4) and sp.name == "op-1":
            held = sp  # trace 3 (id 4): delivered out of order, below
            continue
        records.append(request([sp]))
        if held is not None and end >= T0 + 3 * 20 * SEC + 9 * SEC:
            records.append(request([held]))
            held = None
    late = span(1, 9, T0 + 99 * SEC, T0 + 100 * SEC)
    late_at = next(i for i, r in enumerate(records)
                   if trace_service_pb2.ExportTraceServiceRequest.FromString(r)
                   .resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano > T0 + 100 * SEC)
    records.insert(late_at, request([late]))
    return records, 30


def write_prefixed(path: Path, records: list[bytes]) -> None:
    with open(path, "wb") as f:
        for r in records:
            f.write(struct.pack(">I", len(r)))
            f.write(r)


def write_config(path: Path, policies: list[dict], decision_wait: str = "30s") -> Path:
    path.write_text(to_yaml({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:4317"}}}},
        "processors": {"tail_sampling": {"decision_wait": decision_wait, "policies": policies},
                       "batch": {"timeout": "200ms"}},
        "exporters": {"nop": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"],
                                             "processors": ["tail_sampling", "batch"],
                                             "exporters": ["nop"]}}},
    }) + "\n")
    return path


@pytest.fixture
def ten_minutes(tmp_path) -> tuple[Path, int]:
    records, traces = ten_minutes_of_traces()
    cap = tmp_path / "ten-minutes.bin"
    write_prefixed(cap, records)
    return cap, traces


def test_ten_minutes_of_data_replay_in_seconds_with_each_trace_decided_30s_after_it_began(
        tmp_path, ten_minutes):
    cap, traces = ten_minutes
    config = write_config(tmp_path / "keep-all.yaml",
                          [{"name": "all", "type": "always_sample"}])
    report_path = tmp_path / "r.json"
    out = replay(["--config", str(config), "--dry-run", "--timeline-step", "1s",
                  "--report", str(report_path), str(cap)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(report_path.read_text())
    validate_report(report)
    run = report["runs"][0]
    # 10 minutes of data time; live this takes 10 minutes, here seconds (a generous bound
    # that only a wall-clock wait would break, not a performance claim).
    assert run["info"]["data_end_unix_nano"] - run["info"]["data_start_unix_nano"] >= 580 * SEC
    assert run["info"]["wall_seconds"] < 60
    ts = run["tail_sampling"][0]
    assert ts["traces_new"] == traces and ts["traces_sampled"] == traces
    assert ts["late_spans_sampled"] == 1, ts  # trace 0's span at 100 s
    rows = run["timeline"]["rows"]
    news, decisions, prev = [], [], None
    for r in rows:
        new = r["traces_new"] - (prev["traces_new"] if prev else 0)
        dec = (r["traces_sampled"] + r["traces_not_sampled"]) - (
            (prev["traces_sampled"] + prev["traces_not_sampled"]) if prev else 0)
        news += [r["t"]] * new
        decisions += [r["t"]] * dec
        prev = r
    assert len(news) == len(decisions) == traces
    for first, decided in zip(news, decisions):
        # A row at t covers [t-1, t): first span at 20k+0.5 s, decided on the 100 ms tick
        # 30-30.1 s later (the row 30 or, on a boundary, 31 s later).
        assert decided - first in (30, 31), (first, decided)
    # The out-of-order span joined its trace: every span of trace 3 left in the kept trace.
    nop = next(e for e in run["exporters"] if e["id"] == "nop")
    assert nop["sent"]["spans"] == 3 * traces + 1


def test_bad_captures_name_the_file_and_offset_and_skip_bad_counts(tmp_path, ten_minutes):
    cap, _ = ten_minutes
    records, _ = ten_minutes_of_traces()
    config = write_config(tmp_path / "c.yaml", [{"name": "all", "type": "always_sample"}],
                          decision_wait="1s")
    data = cap.read_bytes()

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:-7])
    last_offset = len(data) - 4 - len(records[-1])

    corrupt = tmp_path / "corrupt.bin"
    broken = span(99, 0, T0, T0 + SEC)
    broken.span_id = b"\x01" * 5  # well-formed protobuf, but no OTLP span id is 5 bytes
    second = 4 + len(records[0])
    write_prefixed(corrupt, [records[0], request([broken]), records[1]])

    wrong = tmp_path / "notes.txt"
    wrong.write_text("these are my notes, not a capture\n")

    for path, offset, words in [(truncated, last_offset, "truncated"),
                                (corrupt, second, "invalid OTLP traces protobuf"),
                                (wrong, 0, "not a capture")]:
        out = replay(["--config", str(config), "--dry-run", str(path)], cwd=tmp_path)
        assert out.returncode == 1, out.stderr
        assert f"{path}: offset {offset}" in out.stderr and words in out.stderr, out.stderr
        assert "--skip-bad" in out.stderr

    report_path = tmp_path / "skip.json"
    out = replay(["--config", str(config), "--dry-run", "--skip-bad", "--report",
                  str(report_path), str(corrupt), str(wrong), str(truncated)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = json.loads(report_path.read_text())["runs"][0]
    assert run["info"]["bad_records"] == 3
    assert any(f"{corrupt}: offset {second}" in e for e in run["info"]["bad_record_errors"])
    # Two good records of corrupt.bin, every record of truncated.bin but its last.
    assert run["input"]["spans"] == 2 + len(records) - 1


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """A minimal PNG reader (8-bit RGB/RGBA, non-interlaced): width, height, rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def test_html_report_renders_its_charts_in_headless_chromium(tmp_path, ten_minutes):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by scripts/setup-test-env.sh"
    cap, _ = ten_minutes
    base = write_config(tmp_path / "base.yaml", [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "half", "type": "probabilistic", "probabilistic": {"sampling_percentage": 50}}])
    html = tmp_path / "report.html"
    out = replay(["--config", str(base), "--dry-run", "--report", str(html), str(cap)],
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    page = html.read_text()
    assert page.count("<svg") >= 2 and "<script" not in page
    assert "src=\"http" not in page and "href=\"http" not in page and "@import" not in page
    shot = tmp_path / "shot.png"
    profile = Path(tempfile.mkdtemp(dir=tmp_path))
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-quic", "--no-first-run", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={profile}", f"--screenshot={shot}",
                          "--window-size=1200,900", html.as_uri()],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90,
                         stdin=subprocess.DEVNULL, text=True, errors="replace")
    assert shot.exists(), run.stdout
    width, bpp, rows = png_pixels(shot)
    colors = {row[i:i + 3] for row in rows[::4] for i in range(0, width * bpp, 4 * bpp)}
    # Not blank: white page, black text and axes, and the charts' green and red lines.
    assert len(colors) > 20, len(colors)
    greenish = sum(1 for c in colors if c[1] > 100 and c[0] < 90 and c[2] < 90)
    reddish = sum(1 for c in colors if c[0] > 150 and c[1] < 80 and c[2] < 80)
    assert greenish and reddish, (greenish, reddish)


def test_compare_reports_the_differences_between_two_configs(tmp_path, ten_minutes):
    cap, traces = ten_minutes
    policies = lambda pct: [  # noqa: E731
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": pct}}]
    base = write_config(tmp_path / "p50.yaml", policies(50))
    other = write_config(tmp_path / "p10.yaml", policies(10))
    report_path = tmp_path / "diff.json"
    out = replay(["--config", str(base), "--compare", str(other), "--report",
                  str(report_path), str(cap)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "differences (base -> compare):" in out.stdout, out.stdout
    report = json.loads(report_path.read_text())
    validate_report(report)
    assert len(report["runs"]) == 2 and all(r["info"]["dry_run"] for r in report["runs"])
    diff = {d["what"]: d for d in report["differences"]}
    kept = diff["tail_sampling: traces kept"]
    assert kept["base"] > kept["other"], kept
    errors = diff["error traces kept"]
    assert errors["base"] == errors["other"] == 1.0  # every trace with an error, both times
    assert report["runs"][0]["watched_traces"]["error_traces_seen"] == 6
    assert diff["export bytes (all exporters)"]["change"] < 0
    assert diff["items in"]["base"] == diff["items in"]["other"] == 3 * traces + 1


def test_ctrl_c_stops_with_a_partial_report(tmp_path, ten_minutes):
    cap, _ = ten_minutes
    config = write_config(tmp_path / "c.yaml", [{"name": "all", "type": "always_sample"}])
    report_path = tmp_path / "partial.json"
    # Real time: 10 minutes of data would take 10 minutes; interrupted after a few seconds.
    proc = subprocess.Popen([str(sluice_bin()), "replay", "--quiet", "--config", str(config),
                             "--dry-run", "--speed", "1", "--report", str(report_path), str(cap)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "INTERRUPTED" in stdout
    run = json.loads(report_path.read_text())["runs"][0]
    assert run["info"]["interrupted"] is True
    assert 0 < run["info"]["records"] < 91
    # Whatever was accepted was decided at shutdown and reached the exporter.
    assert run["exporters"][0]["sent"]["spans"] == run["input"]["spans"] > 0
