"""The side-by-side method (benches/sidebyside.py) cannot silently rot: one short run of every
scenario with the binary under test must print the table, measure the collector from /proc
(CPU and RSS sampled, spans counted by the generator), and for the export scenario find every
accepted request at the sink. Any OTLP endpoint given as a command line is measured the same way
(here `sluice loadgen sink` stands in for a peer collector), and a collector that never serves
stops the harness with a clear error, not a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, sluice_bin

HARNESS = REPO_ROOT / "benches" / "sidebyside.py"


def run_harness(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "sidebyside.json"
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--bin", str(sluice_bin()), "--json", str(out),
         "--repeat", "1", "--duration", "1", *args],
        capture_output=True, text=True, timeout=100, cwd=REPO_ROOT,
        # Its logs directory goes under the test's tmp_path (pytest cleans it), not /tmp.
        env=dict(os.environ, TMPDIR=str(tmp_path)))
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.timeout(120)
def test_every_scenario_is_measured_and_the_sink_gets_every_request(tmp_path):
    proc, result = run_harness(tmp_path, "--held-rate", "20000")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| scenario")]
    assert rows == ["nop", "nop-100k", "delete-export", "forward", "forward-1000"], report
    (collector,) = result["collectors"]
    runs = result["runs"][collector]
    for name, (run,) in runs.items():
        assert run["spans"] > 0 and run["spans_per_s"] > 0, (name, run)
        assert run["cpu_s_per_million"] > 0 and run["cpu_percent"] > 0, (name, run)
        # Sampled every 100 ms over at least the second of load.
        assert run["samples"] >= 8, (name, run)
        assert run["peak_rss_mib"] > 0 and run["vm_hwm_mib"] >= run["peak_rss_mib"] * 0.9, run
        assert run["refused_requests"] == 0, (name, run)
        assert run["collector_exit"] == 0, (name, run)
    # Forwarding (batched, sluice passing the requests on undecoded, split only between
    # resources): exactly the accepted bytes at the sink.
    for name in ("forward", "forward-1000"):
        fwd = runs[name][0]
        assert fwd["sink_bytes"] == fwd["bytes_accepted"] > 0, fwd
    export = runs["delete-export"][0]
    assert export["spans"] == export["requests"] * 1000, export
    assert export["sink_requests"] == export["requests"], export
    held = runs["nop-100k"][0]
    # The held rate is held: about 20,000 spans in one second (a send schedule, not a burst).
    assert 10_000 <= held["spans"] <= 30_000, held
    assert runs["nop"][0]["spans"] % 100 == 0


@pytest.mark.timeout(60)
def test_any_otlp_endpoint_is_measured_beside_sluice_runs_alternating(tmp_path):
    # A peer collector stand-in: `loadgen sink` answers Export without decoding.
    peer = "{sluice} loadgen sink --endpoint 127.0.0.1:{grpc_port}"
    proc, result = run_harness(tmp_path, "--scenarios", "nop", "--repeat", "2",
                               "--collector", "{sluice} --config {config}", "--collector", peer)
    assert proc.returncode == 0, proc.stderr
    assert result["collectors"] == ["{sluice} --config {config}", peer]
    for collector in result["collectors"]:
        runs = result["runs"][collector]["nop"]
        assert len(runs) == 2, runs
        assert all(r["spans"] > 0 and r["samples"] >= 8 for r in runs), runs
    # The table has both, the second with its ratios to the first.
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| nop |")]
    assert len(rows) == 2 and "×" in rows[1], proc.stdout


@pytest.mark.timeout(60)
def test_a_collector_that_never_serves_is_a_clear_error(tmp_path):
    proc, _ = run_harness(tmp_path, "--scenarios", "nop", "--collector",
                          "{sluice} --config /nonexistent/sidebyside.yaml")
    assert proc.returncode == 2, proc.stderr
    assert "collector exited with code" in proc.stderr, proc.stderr
