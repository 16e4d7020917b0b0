#!/usr/bin/env python3
"""Instructions per request of a whole sluice process, socket to socket, with callgrind:
load-independent figures for A/B comparisons on a shared machine.

    python3 benches/per_request_instructions.py --config benches/e2e/forward.yaml
    python3 benches/per_request_instructions.py --config benches/e2e/forward.yaml \\
        --bin /tmp/base/sluice --bin target/release/sluice     # A/B, same load

Per binary: sluice runs under `valgrind --tool=callgrind` on the config (ports from the
environment, as benches/sidebyside.py gives them: GRPC_PORT, SINK_GRPC_PORT, TELEMETRY_PORT,
HEALTH_PORT), `sluice loadgen sink` answers its exports, and `sluice loadgen traces --batch B
--pool 1 --concurrency 4 --count N` sends N/B requests; two runs (--requests, default 1000 and
3000) so that the difference of the two totals divided by the difference of the request counts
is the cost of one request with startup and shutdown removed. Prints one line per binary and
writes the callgrind files to the work directory (for `callgrind_annotate --inclusive=yes`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402
from e2e import Proc, free_port, log, wait_port  # noqa: E402


def total_instructions(path: Path) -> int:
    for line in path.read_text().splitlines():
        m = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no totals in {path}")


def run(binary: str, config: Path, requests: int, batch: int, workdir: Path, tag: str) -> Path:
    ports = {k: free_port() for k in ("GRPC_PORT", "SINK_GRPC_PORT", "TELEMETRY_PORT",
                                      "HEALTH_PORT")}
    env = dict(os.environ, **{k: str(v) for k, v in ports.items()})
    out = workdir / f"callgrind.{tag}.{requests}"
    sink = Proc(f"sink-{tag}-{requests}", [binary, "loadgen", "sink", "--endpoint",
                                           f"127.0.0.1:{ports['SINK_GRPC_PORT']}"],
                env, workdir, capture_stdout=True)
    wait_port(ports["SINK_GRPC_PORT"], [sink])
    collector = Proc(f"sluice-{tag}-{requests}", [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
        binary, "--config", str(config)], env, workdir)
    wait_port(ports["GRPC_PORT"], [collector], timeout=300)
    time.sleep(1)
    gen = Proc(f"loadgen-{tag}-{requests}", [
        binary, "loadgen", "traces", "--endpoint", f"127.0.0.1:{ports['GRPC_PORT']}",
        "--batch", str(batch), "--pool", "1", "--concurrency", "4",
        "--count", str(requests * batch), "--duration", "600s", "--timeout", "60s",
        "--json", "--quiet"], env, workdir, capture_stdout=True)
    gen.popen.wait(timeout=900)
    rc, text = gen.stop()
    if rc != 0:
        raise RuntimeError(f"loadgen failed ({rc}): {text}")
    time.sleep(1)  # the batch timeout and the export
    collector.stop(timeout=300)
    sink.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--bin", action="append",
                    help="sluice binaries to compare (default: target/release/sluice)")
    ap.add_argument("--requests", default="1000,3000",
                    help="two request counts, comma-separated")
    ap.add_argument("--batch", type=int, default=100, help="spans per request")
    args = ap.parse_args()
    bins = args.bin or [str(e2e.ROOT / "target" / "release" / "sluice")]
    low, high = (int(x) for x in args.requests.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="sluice-callgrind-"))
    e2e.WORKDIR = workdir
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    log(f"work directory {workdir}; load average {' '.join(loadavg)}")
    results = []
    try:
        for i, binary in enumerate(bins):
            totals = []
            for n in (low, high):
                path = run(str(Path(binary).resolve()), args.config.resolve(), n, args.batch,
                           workdir, f"b{i}")
                totals.append(total_instructions(path))
            per = (totals[1] - totals[0]) / (high - low)
            results.append(per)
            print(f"[{i + 1}] {binary}: {per / 1e3:,.1f} k instructions per {args.batch}-span "
                  f"request (totals {totals[0]:,} / {totals[1]:,} for {low} / {high} requests)",
                  flush=True)
    finally:
        e2e.cleanup()
    if len(results) > 1:
        for i, per in enumerate(results[1:], start=2):
            print(f"[{i}] / [1]: {per / results[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
