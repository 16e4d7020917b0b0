"""resourcedetection end to end: the sluice binary detects its environment against the fake EC2
instance metadata service (`sluice-fake-imds`, the sluice-k8s crate's fake as a process),
reached through the AWS SDK's own endpoint variable, and the real Python SDK's traces, metrics
and logs reach the sink with the detected attributes on every resource. Then what happens when
IMDS never answers (start is bounded by `timeout`, data flows, the log says why) and when that
is made an error (`fail_on_missing_metadata`: sluice does not start, and says why)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from conftest import REPO_ROOT, otlp_receiver, pipelines, sluice_bin
from sdk_workload import SdkClient

INSTANCE = {
    "--region": "ap-south-1",
    "--zone": "ap-south-1a",
    "--instance-id": "i-0a1b2c3d4e5f67890",
    "--instance-type": "m6i.xlarge",
    "--account-id": "210987654321",
    "--image-id": "ami-0fedcba9876543210",
    "--hostname": "ip-192-168-4-15.ap-south-1.compute.internal",
}

# What the ec2 detector adds, from the fake's instance.
EC2_ATTRIBUTES = {
    "cloud.provider": "aws",
    "cloud.platform": "aws_ec2",
    "cloud.region": "ap-south-1",
    "cloud.availability_zone": "ap-south-1a",
    "cloud.account.id": "210987654321",
    "host.id": "i-0a1b2c3d4e5f67890",
    "host.type": "m6i.xlarge",
    "host.image.id": "ami-0fedcba9876543210",
    "host.name": "ip-192-168-4-15.ap-south-1.compute.internal",
}

SEMCONV_SCHEMA_URL = "https://opentelemetry.io/schemas/1.6.1"


def fake_imds_bin() -> Path:
    """$SLUICE_FAKE_IMDS_BIN, else next to the sluice binary, else the debug build's."""
    p = os.environ.get("SLUICE_FAKE_IMDS_BIN")
    if p:
        return Path(p)
    beside = sluice_bin().parent / "sluice-fake-imds"
    return beside if beside.exists() else REPO_ROOT / "target/debug/sluice-fake-imds"


@contextmanager
def fake_imds(mode: str):
    """Runs the fake IMDS on a free port; yields its endpoint (http://127.0.0.1:PORT)."""
    binary = fake_imds_bin()
    if not binary.exists():
        pytest.fail(f"{binary} not found: build it with `cargo build -p sluice-k8s --features "
                    f"testing --bin sluice-fake-imds` (scripts/test.sh does), or set "
                    f"SLUICE_FAKE_IMDS_BIN", pytrace=False)
    args = [str(binary), "--mode", mode]
    for flag, value in INSTANCE.items():
        args += [flag, value]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening http://"), (
            f"fake IMDS did not start: {line!r} {proc.stderr.read() if proc.poll() else ''}")
        yield line.split()[1]
    finally:
        proc.stdin.close()  # the fake serves until its stdin closes
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def imds_requests(endpoint: str) -> list[dict]:
    with urllib.request.urlopen(f"{endpoint}/_fake/requests", timeout=5) as r:
        return json.loads(r.read())


def config(sink, detection: dict, signals=("traces", "metrics", "logs")) -> dict:
    return {
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"resourcedetection": detection, "batch": {"timeout": "100ms"}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "service": {"pipelines": pipelines(["otlp"], ["resourcedetection", "batch"], ["otlp"],
                                           signals=signals)},
    }


def send_spans(endpoint: str, resource: dict, run_id: str, n: int) -> None:
    provider = TracerProvider(resource=Resource(resource))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=5)))
    tracer = provider.get_tracer("e2e.resourcedetection")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}") as span:
            span.set_attribute("e2e.run_id", run_id)
    provider.shutdown()


def test_detected_attributes_reach_every_resource_of_every_signal(sluice, sink, monkeypatch):
    with fake_imds("v2-required") as endpoint:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES",
                           "team=observability,deployment.environment.name=from%20env")
        s = sluice(config(sink, {
            # ec2 before system: the instance's host.name wins over the kernel's.
            "detectors": ["env", "ec2", "system"],
            "override": False,
            "system": {"hostname_sources": ["os"]},
        }))
        client = SdkClient("grpc", s.grpc_endpoint)
        sent = client.send_all()
        client.shutdown()
        # A second service whose SDK set its own region: `override: false` keeps it.
        run_id = sent.run_id
        send_spans(s.grpc_endpoint, {"service.name": "cart", "cloud.region": "sdk-region"},
                   run_id, 2)

        def mine(items):
            return [x for x in items if x["attributes"].get("e2e.run_id") == run_id]

        # Metrics: 8 points, again at the SDK's shutdown (cumulative readings).
        assert sink.wait_for(lambda k: len(mine(k.spans())) == 6 and len(mine(k.points())) >= 8
                             and len(mine(k.log_records())) == 3, timeout=20), (
            len(mine(sink.spans())), len(mine(sink.points())), len(mine(sink.log_records())))

        detected = {**EC2_ATTRIBUTES, "team": "observability", "os.type": "linux"}
        everything = mine(sink.spans()) + mine(sink.points()) + mine(sink.log_records())
        for item in everything:
            res = item["resource"]
            want = dict(detected)
            if res.get("service.name") == "cart":
                want["cloud.region"] = "sdk-region"
                want["deployment.environment.name"] = "from env"
            else:
                # the SDK's own value, not the environment's (override: false)
                assert res["deployment.environment.name"] == "e2e", res
                assert res["service.instance.id"] == f"instance-{run_id}", res
            assert {k: res.get(k) for k in want} == want, res
        # The schema URL is set where the SDK sent none, on every ResourceX of every signal.
        for signal, field in (("traces", "resource_spans"), ("metrics", "resource_metrics"),
                              ("logs", "resource_logs")):
            for req in sink.requests(signal):
                for r in getattr(req, field):
                    assert r.schema_url == SEMCONV_SCHEMA_URL, (signal, r.schema_url)

        # IMDSv2: a token first (with its TTL header), then every read carries it; one
        # detection serves the three pipelines.
        seen = imds_requests(endpoint)
        assert seen[0]["method"] == "PUT" and seen[0]["path"] == "/latest/api/token", seen
        assert seen[0]["ttl"] == "21600", seen
        gets = [r for r in seen if r["method"] == "GET"]
        assert [r["path"] for r in gets] == [
            "/latest/meta-data/instance-id",
            "/latest/dynamic/instance-identity/document",
            "/latest/meta-data/hostname",
        ], seen
        # IMDSv2 required: a read without the issued token would have been a 401.
        assert gets[0]["token"] and len({r["token"] for r in gets}) == 1, seen
        assert all(r["status"] == 200 for r in seen), seen

        assert s.metric("otelcol_resourcedetection_detector_results_total", detector="ec2",
                        outcome="success") == 1
        assert s.metric("otelcol_resourcedetection_attributes_detected") == len(EC2_ATTRIBUTES) + 3
        assert "detected resource information" in s.log_tail(200)


def test_imds_that_never_answers_does_not_hold_start_beyond_timeout(sluice, sink, monkeypatch):
    with fake_imds("hang") as endpoint:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=observability")
        began = time.monotonic()
        s = sluice(config(sink, {"detectors": ["env", "ec2"], "timeout": "2s"},
                          signals=["traces"]))
        took = time.monotonic() - began
        # Start waited for detection (IMDS was asked and never answered) but not past the
        # timeout; the slack covers process start on a loaded machine.
        assert 1.5 <= took < 2 + 8, took
        run_id = uuid.uuid4().hex
        send_spans(s.grpc_endpoint, {"service.name": "checkout"}, run_id, 3)
        assert sink.wait_for(
            lambda k: len([x for x in k.spans() if x["attributes"].get("e2e.run_id") == run_id])
            == 3, timeout=15)
        for sp in sink.spans():
            assert sp["resource"]["team"] == "observability", sp
            assert "cloud.provider" not in sp["resource"], sp
        log = s.log_tail(200)
        assert "not running on EC2 (no instance metadata): no ec2 attributes" in log, log
        assert endpoint in log, log
        # Not on EC2 is not a failure.
        assert s.metric("otelcol_resourcedetection_detector_results_total", detector="ec2",
                        outcome="success") == 1


def test_fail_on_missing_metadata_stops_start_with_the_reason(sluice, sink, monkeypatch):
    # Nothing listens on this port: connections are refused.
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", refused)
    s = sluice(config(sink, {"detectors": ["ec2"], "timeout": "1s",
                             "fail_on_missing_metadata": True}, signals=["traces"]),
               wait_ready=False)
    try:
        rc = s.proc.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sluice still running 15 s after a 1 s detection timeout:\n{s.log_tail()}")
    s.exit_reported = True  # the exit is what this test expects
    assert rc != 0
    log = s.log_tail(100)
    assert "resource detection failed within timeout 1s" in log, log
    assert "ec2: EC2 metadata unavailable" in log and refused in log, log
