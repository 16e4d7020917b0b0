#!/usr/bin/env python3
"""Side by side: any OTLP collector binary under the same load, pinned to one core, measured
from /proc. One command reruns every figure of the comparison against sluice or a peer.

    python3 benches/sidebyside.py                          # sluice (target/release), every scenario
    python3 benches/sidebyside.py --scenarios nop,nop-100k --repeat 5 --duration 20
    python3 benches/sidebyside.py --scenarios nop \\
        --collector 'otelcol-contrib --config my-nop.yaml'  # a peer, with a config of its own
    python3 benches/sidebyside.py --collector 'rotel start --otlp-grpc-endpoint 127.0.0.1:{grpc_port} --exporter blackhole'
    python3 benches/sidebyside.py --collector '/tmp/a/sluice --config {config}' \
        --collector '/tmp/b/sluice --config {config}'       # A/B: runs alternate, ratios printed

Per run: a fresh collector process pinned with `taskset` to --collector-cpu, `sluice loadgen`
(and, for scenarios that export, `sluice loadgen sink`, which answers OTLP without decoding)
pinned to --loadgen-cpu; the generator replays ONE pre-encoded request (`--pool 1`; each send
gets fresh trace ids) over OTLP/gRPC for --duration seconds. A thread samples the collector's
CPU time (utime + stime, /proc/PID/stat) and RSS (/proc/PID/status VmRSS) every 100 ms.
Reported per scenario, medians of --repeat runs: spans/s accepted, CPU of the collector's core
(% over the sending time), CPU seconds per million spans, peak RSS (the largest sample, and the
kernel's VmHWM), the kernel's share of the CPU (stime), requests refused, and what reached the
sink.

Scenarios (the load; the collector's config is the scenario's file below for sluice, or yours):

- nop: receive and drop, 100-span requests, as fast as they are answered (4 in flight).
  sluice: benches/e2e/nop.yaml.
- nop-100k: the same held at --held-rate (100,000) spans/s: the CPU % of one core is the figure.
- delete-export: 1,000-span requests; decode, delete one attribute (url.full), encode, export
  OTLP/gRPC uncompressed to the sink (sluice: benches/e2e/delete-export.yaml, the default
  sending queue, no batch processor).
- forward: 100-span requests; receive, `batch`, export OTLP/gRPC uncompressed to the sink: pure
  forwarding, which sluice does without decoding (benches/e2e/forward.yaml).
- forward-1000: the same with 1,000-span requests (the generator's ceiling is higher).

With several --collector options the runs alternate (A, B, A, B, ...), so both see the same
machine, and the table gives each one's medians and the ratio of each to the first.

The collector's command line (--collector) is split like a shell's and formatted with
{sluice} (the sluice binary), {config} (the scenario's sluice config), {grpc_port} (where it
must listen for OTLP/gRPC), {sink_port} (where it exports) and {telemetry_port}; the same ports
are in its environment as GRPC_PORT, SINK_GRPC_PORT, TELEMETRY_PORT, HEALTH_PORT (so a
Collector-style config can say "127.0.0.1:${env:GRPC_PORT}"). The default is
`{sluice} --config {config}`. Ports are free loopback ports chosen per run.

Exit status: 0 done (and, for sluice's own configs, every span accepted reached the sink);
1 a check failed; 2 the harness could not run (a process died or never listened).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402  (the end-to-end harness: processes, ports, /proc readers)
from e2e import HarnessError, Proc, free_port, log, wait_port  # noqa: E402

ROOT = e2e.ROOT
E2E = e2e.E2E
DEFAULT_COLLECTOR = "{sluice} --config {config}"


class Scenario:
    def __init__(self, name: str, config: Path, batch: int, rate_arg: str | None,
                 sink: bool, what: str, batched: bool = False):
        self.name = name
        # The collector batches: requests at the sink are not the generator's, its bytes are.
        self.batched = batched
        self.config = config
        self.batch = batch
        self.rate_arg = rate_arg  # None: saturated; "held": --held-rate
        self.sink = sink
        self.what = what


SCENARIOS = {
    "nop": Scenario("nop", E2E / "nop.yaml", 100, None, False,
                    "receive → drop, 100-span requests, saturated"),
    "nop-100k": Scenario("nop-100k", E2E / "nop.yaml", 100, "held", False,
                         "receive → drop, 100-span requests, held rate"),
    "delete-export": Scenario("delete-export", E2E / "delete-export.yaml", 1000, None, True,
                              "decode + delete attribute + encode + OTLP/gRPC export, "
                              "1,000-span requests, saturated"),
    "forward": Scenario("forward", E2E / "forward.yaml", 100, None, True,
                        "receive → batch → OTLP/gRPC export, 100-span requests, saturated",
                        batched=True),
    "forward-1000": Scenario("forward-1000", E2E / "forward.yaml", 1000, None, True,
                             "receive → batch → OTLP/gRPC export, 1,000-span requests, "
                             "saturated", batched=True),
}


def sys_ticks(pid: int) -> int:
    """stime of a live process (clock ticks): the kernel's share (syscalls, page faults)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[12])


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


def run_once(args, collector: str, scenario: Scenario, workdir: Path, index: int) -> dict:
    ports = {"grpc_port": free_port(), "sink_port": free_port(),
             "telemetry_port": free_port(), "health_port": free_port()}
    env = dict(os.environ, GRPC_PORT=str(ports["grpc_port"]),
               SINK_GRPC_PORT=str(ports["sink_port"]),
               TELEMETRY_PORT=str(ports["telemetry_port"]),
               HEALTH_PORT=str(ports["health_port"]))
    fmt = dict(ports, sluice=args.bin, config=str(scenario.config))
    collector_argv = [part.format(**fmt) for part in shlex.split(collector)]
    run_dir = workdir / f"{scenario.name}-{index}"
    run_dir.mkdir()
    sink = None
    if scenario.sink:
        sink = Proc("sink", pinned(args.loadgen_cpu, [
            args.bin, "loadgen", "sink", "--endpoint", f"127.0.0.1:{ports['sink_port']}"]),
            env, run_dir, capture_stdout=True)
        wait_port(ports["sink_port"], [sink])
    collector = Proc("collector", pinned(args.collector_cpu, collector_argv), env, run_dir)
    watch = [p for p in (sink, collector) if p]
    wait_port(ports["grpc_port"], watch, timeout=args.start_timeout)
    sampler = e2e.Sampler(collector.pid)
    time.sleep(0.3)  # listening is not always serving: let it settle before the load
    before = sampler.sample()
    sys_before = sys_ticks(collector.pid)
    if before is None:
        collector.check_alive("before the load")
        raise HarnessError("cannot read the collector's /proc entries")
    gen_argv = [args.bin, "loadgen", "traces", "--endpoint", f"127.0.0.1:{ports['grpc_port']}",
                "--batch", str(scenario.batch), "--pool", "1",
                "--concurrency", str(args.concurrency), "--duration", f"{args.duration}s",
                "--json", "--quiet"]
    if scenario.rate_arg == "held":
        gen_argv += ["--rate", str(args.held_rate)]
    gen = Proc("loadgen", pinned(args.loadgen_cpu, gen_argv), env, run_dir, capture_stdout=True)
    deadline = time.monotonic() + args.duration + 60
    while gen.popen.poll() is None:
        for p in watch:
            if p.popen.poll() is not None:
                gen.popen.kill()
                p.check_alive("while the load generator was sending")
        if time.monotonic() > deadline:
            gen.popen.kill()
            raise HarnessError("the load generator did not finish")
        time.sleep(0.05)
    after = sampler.sample()
    sys_after = sys_ticks(collector.pid) if after else sys_before
    rc, out = gen.stop()
    if rc != 0 or after is None:
        collector.check_alive("at the end of the load")
        raise HarnessError(f"the load generator failed (exit {rc}):\n{out}\n{gen.log_tail()}")
    report = json.loads(out.strip().splitlines()[-1])
    # The pipeline drains (the exporter's queue) before the sink is read.
    time.sleep(0.5)
    sampler.stop()
    hwm = e2e.peak_rss_kib(collector.pid)
    collector_rc, _ = collector.stop()
    sink_counts = None
    if sink:
        _, sink_out = sink.stop()
        lines = [line for line in sink_out.splitlines() if line.startswith("{")]
        sink_counts = json.loads(lines[-1]) if lines else None
    seconds = report["elapsed_s"]
    spans = report["items_accepted"]
    cpu_s = (after[1] - before[1]) / e2e.TICKS
    refused = sum(report["refused_by_status"].values())
    return {
        "scenario": scenario.name, "spans": spans, "seconds": seconds,
        "spans_per_s": spans / seconds if seconds else 0.0,
        "cpu_percent": 100 * cpu_s / seconds if seconds else 0.0,
        "cpu_s_per_million": cpu_s / (spans / 1e6) if spans else 0.0,
        "kernel_share": (sys_after - sys_before) / max(after[1] - before[1], 1),
        "peak_rss_mib": sampler.peak_rss_kib() / 1024, "vm_hwm_mib": hwm / 1024,
        "refused_requests": refused, "requests": report["requests"],
        "sink_requests": sink_counts["grpc_requests"] if sink_counts else None,
        "sink_bytes": sink_counts["payload_bytes"] if sink_counts else None,
        "bytes_accepted": report["bytes_accepted"],
        "collector_exit": collector_rc, "samples": len(sampler.samples),
        "latency_us": report["latency_us"],
    }


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--collector", action="append",
                    help="the collector's command line (placeholders: see above); repeat it "
                         f"to compare (default: {DEFAULT_COLLECTOR})")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "sluice"),
                    help="sluice: the load generator and sink (and the default collector)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario; medians shown")
    ap.add_argument("--duration", type=float, default=20, help="seconds of load per run")
    ap.add_argument("--held-rate", type=int, default=100_000,
                    help="spans/s of the held-rate scenario")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--collector-cpu", default="0", help="taskset CPU list ('' = unpinned)")
    ap.add_argument("--loadgen-cpu", default="1", help="taskset CPU list ('' = unpinned)")
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--json", help="also write every run to this file")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    args.collector_cpu = args.collector_cpu or None
    args.loadgen_cpu = args.loadgen_cpu or None
    if (args.collector_cpu or args.loadgen_cpu) and not shutil.which("taskset"):
        log("taskset not found (util-linux): install it or pass --collector-cpu '' "
            "--loadgen-cpu ''")
        return 2
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        log(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
        return 2
    signal.signal(signal.SIGTERM, e2e._on_signal)
    signal.signal(signal.SIGINT, e2e._on_signal)
    collectors = args.collector or [DEFAULT_COLLECTOR]
    workdir = Path(tempfile.mkdtemp(prefix="sluice-sidebyside-"))
    e2e.WORKDIR = workdir
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    log(f"collectors: {collectors} (CPU {args.collector_cpu}); load generator CPU "
        f"{args.loadgen_cpu}; load average {' '.join(loadavg)}; logs in {workdir}")
    # results[collector][scenario] = runs
    results: dict[str, dict[str, list[dict]]] = {c: {} for c in collectors}
    failed = False
    try:
        for name in names:
            scenario = SCENARIOS[name]
            for i in range(args.repeat):
                for ci, collector in enumerate(collectors):
                    run = run_once(args, collector, scenario, workdir, i * len(collectors) + ci)
                    results[collector].setdefault(name, []).append(run)
                    log(f"{name} [{ci + 1}] run {i + 1}: {run['spans_per_s']:,.0f} spans/s, "
                        f"{run['cpu_percent']:.0f} % CPU, "
                        f"{run['cpu_s_per_million']:.2f} CPU-s/M, "
                        f"peak {run['peak_rss_mib']:.0f} MiB, "
                        f"refused {run['refused_requests']}, sink {run['sink_requests']}")
                    # With sluice's own configs every accepted request reaches the sink: as
                    # one request each without batching; with it, as at least the bytes
                    # accepted (a batch encodes its requests' resources appended; a split
                    # inside a resource repeats the resource's header in both parts, so a
                    # decoding collector may send a little more, never less).
                    accepted = run["requests"] - run["refused_requests"]
                    if ("{config}" in collector and scenario.sink and scenario.batched
                            and run["sink_bytes"] < run["bytes_accepted"]):
                        log(f"CHECK FAILED: {name}: the sink received {run['sink_bytes']} "
                            f"bytes, {run['bytes_accepted']} were accepted")
                        failed = True
                    elif ("{config}" in collector and scenario.sink and not scenario.batched
                            and run["sink_requests"] != accepted):
                        log(f"CHECK FAILED: {name}: the sink received {run['sink_requests']} "
                            f"requests, {accepted} were accepted")
                        failed = True
    except HarnessError as e:
        log(f"error: {e}")
        e2e.cleanup()
        return 2
    finally:
        e2e.cleanup()
    loadavg_end = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\ncollector on CPU {args.collector_cpu}, load generator on CPU {args.loadgen_cpu}; "
          f"{args.repeat} runs of {args.duration:g} s each, medians; load average "
          f"{' '.join(loadavg)} -> {' '.join(loadavg_end)}")
    for ci, collector in enumerate(collectors):
        print(f"[{ci + 1}] {collector}")
    ratio_head = " | vs [1]: spans/s, CPU-s per M" if len(collectors) > 1 else ""
    print(f"\n| scenario | collector | spans/s | CPU % of a core | CPU-s per M spans "
          f"| of it in the kernel | peak RSS MiB | refused requests "
          f"| requests at the sink{ratio_head} |")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if ratio_head else ""))
    for name in names:
        first = results[collectors[0]][name]
        for ci, collector in enumerate(collectors):
            runs = results[collector][name]
            sink = ("-" if runs[0]["sink_requests"] is None
                    else f"{median(runs, 'sink_requests'):.0f}")
            ratio = ""
            if ratio_head:
                r_rate = median(runs, "spans_per_s") / max(median(first, "spans_per_s"), 1e-9)
                r_cpu = (median(runs, "cpu_s_per_million")
                         / max(median(first, "cpu_s_per_million"), 1e-9))
                ratio = f" | {r_rate:.2f}×, {r_cpu:.2f}×"
            print(f"| {name} | [{ci + 1}] | {median(runs, 'spans_per_s'):,.0f} "
                  f"| {median(runs, 'cpu_percent'):.0f} "
                  f"| {median(runs, 'cpu_s_per_million'):.2f} "
                  f"| {100 * median(runs, 'kernel_share'):.0f} % "
                  f"| {median(runs, 'peak_rss_mib'):.0f} "
                  f"| {median(runs, 'refused_requests'):.0f} | {sink}{ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"collectors": collectors, "loadavg": [loadavg, loadavg_end], "runs": results},
            indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
