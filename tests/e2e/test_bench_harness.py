"""The end-to-end benchmark harness (benches/e2e.py) cannot silently rot: a tiny count through
every config, with the binary under test, must print every row of the table and pass every
self-telemetry cross-check (gateway: spans in = filtered + dropped by sampling + exported,
filter drops exactly the probe spans sent, tail_sampling sees every trace id once, ...). A sluice
that dies mid-benchmark must stop the harness with a clear error naming it, not a hang or a
half table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, sluice_bin

HARNESS = REPO_ROOT / "benches" / "e2e.py"
CONFIGS = ["ceiling-grpc", "ceiling-http", "ceiling-metrics", "nop", "passthrough",
           "loadbalancing", "agent", "gateway", "metrics", "overload", "replay"]


def run_harness(tmp_path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--bin", str(sluice_bin()), "--json", str(out), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        # The harness keeps its processes' logs in a directory of its own under TMPDIR (for a
        # person reading a failed run); under pytest that is the test's own tmp_path, which
        # pytest cleans, not the system's /tmp.
        env=dict(os.environ, TMPDIR=str(tmp_path)))
    return proc, (json.loads(out.read_text()) if out.exists() else None)


# Ten configs, some with several processes (agent: a fake API server; loadbalancing: three
# backends; overload: a fixed 2 s phase): about two minutes with a debug build on 2 cores.
@pytest.mark.timeout(330)
def test_quick_run_prints_every_row_and_passes_every_check(tmp_path):
    proc, result = run_harness(tmp_path, "--quick", timeout=300)
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    assert result is not None, report
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == CONFIGS, report
    for config in CONFIGS:
        (run,) = result["runs"][config]
        if config == "overload":  # a fixed time, not a fixed count
            assert run["items"] > 0 and run["extra"]["unloaded_spans_per_s"] > 0, run
        else:
            assert run["items"] == 20_000, (config, run)
        assert run["items_per_s"] > 0, (config, run)
        if not config.startswith("ceiling-"):
            # (the do-nothing sink may use less than one 10 ms clock tick for 20,000 spans)
            assert run["cpu_s_per_million"] > 0, (config, run)
        assert run["peak_rss_mib"] > 0, (config, run)
        assert run["checks"] and all(c["ok"] for c in run["checks"]), (config, run["checks"])
    gateway = result["runs"]["gateway"][0]
    names = {c["check"] for c in gateway["checks"]}
    assert {"dropped by filter/noise = probe spans sent",
            "new trace ids at tail_sampling = traces sent",
            "kept by the errors policy = error traces sent",
            "spans in = filtered + dropped by sampling + exported",
            "exported = received by the sink sluice"} <= names, names
    extra = gateway["extra"]
    assert extra["dropped_by_filter"] > 0 and extra["dropped_by_sampling"] > 0
    assert extra["spans_exported"] > 0
    agent = {c["check"] for c in result["runs"]["agent"][0]["checks"]}
    assert "pod lookups that missed (every resource enriched)" in agent, agent
    replay = result["runs"]["replay"][0]
    assert {"spans in = spans captured", "traces decided",
            "kept by the errors policy = error traces captured",
            "spans in = filtered + dropped by sampling + exported"} <= {
        c["check"] for c in replay["checks"]}, replay["checks"]
    assert replay["extra"]["data_seconds"] > 0
    metrics = result["runs"]["metrics"][0]["extra"]
    assert metrics["series"] > 0 and metrics["scrape_bytes_gzip"] > 0
    assert f"checks: {sum(len(result['runs'][c][0]['checks']) for c in CONFIGS)} of" in proc.stdout


def test_a_sluice_that_cannot_run_stops_the_harness_with_its_log(tmp_path):
    # An invalid decision_wait reaches the gateway's config: sluice refuses it and exits 1.
    proc, result = run_harness(tmp_path, "--quick", "--configs", "gateway",
                               "--decision-wait", "0s", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert result is None
    assert "error: gateway exited with code 1 while starting" in proc.stderr, proc.stderr
    assert "decision_wait" in proc.stderr, proc.stderr


HOP_CONFIGS = ["hop-otlp-gzip", "hop-otlp-zstd", "hop-flight-zstd", "hop-flight-none"]
HOP_BASELINE = "hop-nop"  # the same agent, nop exporter, no gateway


def test_quick_hop_run_measures_bytes_and_cpu_at_both_ends(tmp_path):
    """The agent -> gateway hop configs (`--configs hop`): every span through the counting
    proxy and both sluices, a table of bytes and CPU per span with ratios to OTLP+zstd, and the
    hop's own CPU above the baseline agent's."""
    proc, result = run_harness(tmp_path, "--quick", "--configs", "hop")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| hop-")]
    assert [r.split("|")[1].strip() for r in rows] == HOP_CONFIGS + [HOP_BASELINE], report
    # The hop's own CPU is shown for each protocol (not for the baseline itself).
    assert all(r.split("|")[8].strip() for r in rows[:-1]), report
    (baseline,) = result["runs"][HOP_BASELINE]
    assert baseline["items"] > 0 and all(c["ok"] for c in baseline["checks"]), baseline
    for config in HOP_CONFIGS:
        (run,) = result["runs"][config]
        assert run["items"] > 0, (config, run)
        assert run["checks"] and all(c["ok"] for c in run["checks"]), (config, run["checks"])
        extra = run["extra"]
        # Every span crossed the proxy: at least a few bytes each, and answers came back.
        assert extra["bytes_up"] > 10 * run["items"] and extra["bytes_down"] > 0, (config, extra)
    up = {c: result["runs"][c][0]["extra"]["bytes_up"] / result["runs"][c][0]["items"]
          for c in HOP_CONFIGS}
    # Compression works on both protocols (uncompressed Arrow is several times larger).
    assert up["hop-flight-zstd"] < up["hop-flight-none"] / 4, up
    assert up["hop-otlp-zstd"] < up["hop-flight-none"] / 4, up


def test_quick_loadbalancing_flight_delivers_every_span_over_three_flight_backends(tmp_path):
    """`--configs loadbalancing-flight`: the agent's split over three backends (three static
    hostnames of one sink, one written `http://host:port`) on the Flight protocol; every span
    reaches the sink. The `http://` hostname left the exporter without a backend at all until
    its scheme was kept apart from its port."""
    proc, result = run_harness(tmp_path, "--quick", "--configs", "loadbalancing-flight")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    (run,) = result["runs"]["loadbalancing-flight"]
    assert run["items"] == 20_000, run
    assert {"exporter sent", "received by the sink sluice"} <= {
        c["check"] for c in run["checks"]}, run["checks"]
    assert all(c["ok"] for c in run["checks"]), run["checks"]


def test_quick_overload_gateway_offers_a_multiple_of_the_unloaded_rate(tmp_path):
    """`--configs overload-gateway` (issue 16's overload): the gateway-like pipeline measured
    unloaded, then offered --overload-multiple times that rate on a schedule; nothing accepted
    is lost, and the ratio is reported."""
    proc, result = run_harness(tmp_path, "--quick", "--configs", "overload-gateway",
                               "--overload-multiple", "5")
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    (run,) = result["runs"]["overload-gateway"]
    assert {"receiver accepted (self-telemetry) = accepted by the generators",
            "exported + filtered = accepted", "received by the sink = exported",
            "only retryable refusals"} <= {c["check"] for c in run["checks"]}, run["checks"]
    assert all(c["ok"] for c in run["checks"]), run["checks"]
    extra = run["extra"]
    assert run["items"] > 0 and extra["unloaded_spans_per_s"] > 0, run
    assert extra["offered_multiple"] == 5
    assert extra["offered_spans_per_s"] == int(extra["unloaded_spans_per_s"] * 5), extra
    assert extra["overload_vs_unloaded"] == pytest.approx(
        run["items_per_s"] / extra["unloaded_spans_per_s"]), extra
    assert "overload_vs_unloaded" in proc.stdout and "| overload-gateway |" in proc.stdout
    # The unloaded phase resends what was refused (the sustainable rate, as an SDK sees it):
    # no request of it ends refused. RSS was sampled every 100 ms through the overload phase,
    # of this process: not above its VmHWM, but for a few pages (the kernel's RSS counters are
    # per-CPU approximations: one VmRSS reading passed the VmHWM read after it by 20 KiB).
    assert extra["unloaded_requests_refused"] == 0, extra
    assert isinstance(extra["unloaded_requests_resent"], int), extra
    assert extra["rss_samples"] > 0, extra
    assert 0 < extra["rss_sampled_max_mib"] <= run["peak_rss_mib"] + 1, extra
    assert isinstance(extra["rss_samples_over_limit"], int), extra


PROFILE = REPO_ROOT / "benches" / "profile_stages.py"

# `perf script -F ip,sym --no-inline` text: six samples, innermost frame first.
PERF_SCRIPT = """
    7f01 zlib_rs::deflate::longest_match::longest_match+0x1f
    7f02 sluice_egress::otlp::request::compress+0x20
    7f03 sluice_egress::otlp::grpc_call::frames

    7f30 clear_page_erms
    7f31 exc_page_fault
    7f32 asm_exc_page_fault
    7f04 __memmove_avx512_unaligned_erms
    7f05 sluice_engine::processors::tail_sampling::segment::build+0x4
    7f06 sluice_engine::processors::tail_sampling::segment::take
    7f07 sluice_engine::processors::tail_sampling::Inner::decide

    7f08 hashbrown::map::HashMap<K,V,S,A>::get
    7f09 sluice_engine::processors::tail_sampling::store::DecisionMemory::get
    7f0a sluice_engine::processors::tail_sampling::store::Shard::ingest
    7f0b <sluice_engine::processors::transform::Transform as sluice_engine::component::Consumer>::consume::{{closure}}
    7f0c <sluice_engine::processors::filter::Filter as sluice_engine::component::Consumer>::consume::{{closure}}

    7f0d sluice_engine::ottl::eval::Eval::cond
    7f0e sluice_engine::ottl::exec::any_matches
    7f0f sluice_engine::processors::filter::FilterProgram::apply
    7f10 sluice_ingest::otlp::Handler::export::{{closure}}

    7f11 sluice_engine::ottl::exec::set_attr
    7f12 <sluice_engine::processors::transform::Transform as sluice_engine::component::Consumer>::consume::{{closure}}
    7f13 <sluice_engine::processors::filter::Filter as sluice_engine::component::Consumer>::consume::{{closure}}

    7f14 [unknown]
    7f15 clone3
"""


def test_profile_stages_puts_each_sample_in_its_innermost_stage(tmp_path):
    """benches/profile_stages.py's report: a sample belongs to the innermost frame that names a
    stage — a processor's own work to it, not to the processors that called it; tail
    sampling's work split into its ingest and its decisions by function; shared code (memcpy,
    hash maps) and the kernel's page faults to its caller's stage."""
    script = tmp_path / "perf.txt"
    script.write_text(PERF_SCRIPT)
    proc = subprocess.run([sys.executable, str(PROFILE), "report", "--script", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {r.split("|")[1].strip(): r.split("|")[2].strip()
            for r in proc.stdout.splitlines() if r.startswith("| ") and "%" in r}
    share = "16.7 %"  # one sample of six
    assert rows == {
        "compression (gzip, zstd) of exports": share,
        "tail_sampling: decide and release": share,
        "tail_sampling: ingest": share,
        "filter": share,
        "transform": share,
        "other": share,
    }, proc.stdout
    assert proc.stdout.startswith("6 samples"), proc.stdout
    # The page fault is counted, under the stage whose copy touched the fresh page.
    assert "page faults (in any stage): 16.7 %\n   16.7 %  tail_sampling: decide and release\n" \
        in proc.stdout, proc.stdout


def test_profile_stages_record_names_a_match_no_sluice_had(tmp_path):
    """`record` runs e2e.py with its wrapper as --bin (the run itself passes) and says so
    plainly when no sluice process matched, rather than reporting an empty profile."""
    out = tmp_path / "nothing.perf"
    proc = subprocess.run(
        [sys.executable, str(PROFILE), "record", "--bin", str(sluice_bin()),
         "--match", "no-such-config.yaml", "--out", str(out), "--",
         "--configs", "nop", "--spans", "20000", "--repeat", "1"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
        env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert proc.returncode != 0, proc.stdout
    checks = re.search(r"checks: (\d+) of (\d+) passed", proc.stdout)
    assert checks and checks[1] == checks[2], proc.stdout
    assert "no profile written" in proc.stderr and "no-such-config.yaml" in proc.stderr, proc.stderr
    assert not out.exists()


def perf_can_record(tmp_path) -> bool:
    """Whether `perf` is installed and allowed to record here (perf_event_paranoid, capabilities)."""
    if shutil.which("perf") is None:
        return False
    probe = subprocess.run(["perf", "record", "-q", "-o", str(tmp_path / "probe.perf"), "--", "true"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def test_profile_stages_records_the_matching_sluice_and_reports_its_stages(tmp_path):
    """`record` then `report` on a real run: the nop config's sluice (OTLP/gRPC in, `nop` out)
    spends its samples receiving and skimming requests."""
    if not perf_can_record(tmp_path):
        pytest.skip("perf is not installed or may not record on this machine")
    out = tmp_path / "nop.perf"
    rec = subprocess.run(
        [sys.executable, str(PROFILE), "record", "--bin", str(sluice_bin()),
         "--match", "nop.yaml", "--delay", "0", "--freq", "499", "--out", str(out), "--",
         "--configs", "nop", "--spans", "300000", "--repeat", "1"],
        capture_output=True, text=True, timeout=180, cwd=REPO_ROOT,
        env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert rec.returncode == 0, f"stdout:\n{rec.stdout}\nstderr:\n{rec.stderr}"
    assert out.exists(), rec.stderr
    rep = subprocess.run([sys.executable, str(PROFILE), "report", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    samples = int(rep.stdout.split()[0])
    assert samples > 0, rep.stdout
    stages = {r.split("|")[1].strip() for r in rep.stdout.splitlines()
              if r.startswith("| ") and "%" in r}
    assert "receive (gRPC/HTTP server)" in stages, rep.stdout
