#!/usr/bin/env python3
"""Where one sluice process of the end-to-end benchmark spends its CPU, by pipeline stage.

  # record: runs benches/e2e.py with a wrapper as its --bin; the sluice process whose
  # arguments contain MATCH is recorded by `perf record` from --delay (1 s) after its start
  # to its exit (one process: with --repeat above 1, the last run's)
  python3 benches/profile_stages.py record --bin target/release/sluice --match gateway-overlay \\
      --out /tmp/gateway.perf -- --configs gateway --gateway-spans 3000000 --repeat 1

  # report: the share of samples per stage, and the hottest functions
  python3 benches/profile_stages.py report /tmp/gateway.perf

Each sample goes to the stage of the innermost frame of its call stack that names one
(`STAGES`, first rule first for a frame that matches several), so a processor's own work is
its stage and the processors it calls are theirs, whatever their order in a pipeline; shared
code (memcpy, hash maps, the allocator) and kernel work (system calls, page faults) go to the
stage that called them. The rules name functions, not whole modules, where a module's work
belongs to two stages (tail sampling's ingest and its decisions).

`perf` must be installed and allowed to record (`kernel.perf_event_paranoid` <= 1, or root).
The percentages are of the samples, which at a fixed frequency are of the process's CPU time:
multiply by the run's CPU seconds per million items (e2e.py's table) for CPU seconds per stage. Why a script: BENCHMARKS.md keeps the
per-stage cost of the gateway current (issue 17), and every profile before this one was folded
by hand.
"""

from __future__ import annotations

import argparse
import collections
import re
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (stage, substrings of a frame's symbol). A frame belongs to the first stage one of whose
# substrings it contains; a sample to the stage of its innermost such frame.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("compression (gzip, zstd) of exports", ("request::compress", "tonic::codec::compression::compress")),
    ("OTLP encode", ("otlp::encode::",)),
    ("Arrow Flight encode", ("flight::encode::", "flight::layout::", "flight::dict::", "arrow_ipc::writer")),
    ("Arrow Flight decode", ("flight::decode::", "flight::validate::", "arrow_ipc::reader")),
    ("tail_sampling: decide and release", ("tail_sampling::Inner::decide", "tail_sampling::Inner::fire_due",
                                           "tail_sampling::segment::take", "tail_sampling::segment::build",
                                           "tail_sampling::segment::select")),
    ("tail_sampling: ingest", ("tail_sampling::Inner::ingest", "tail_sampling::store::Shard::ingest",
                               "tail_sampling::store::Bucket::seal", "tail_sampling::segment::Segment::seal",
                               "tail_sampling::segment::encode")),
    ("spanmetrics", ("spanmetrics::",)),
    ("filter", ("processors::filter::",)),
    ("transform", ("processors::transform::",)),
    ("attributes / resource", ("processors::attributes::", "processors::resource::")),
    ("k8sattributes", ("k8sattributes::",)),
    ("resourcedetection", ("resourcedetection::",)),
    ("routing (loadbalancing split)", ("kernels::routing::", "decode::split::", "loadbalancing::")),
    ("batch", ("processors::batch::", "Payload::concat")),
    ("OTLP decode (or skim)", ("otlp::decode::",)),
    ("send (gRPC/HTTP client)", ("grpc_call::", "hyper::client", "H2ClientFuture",
                                 "flight::sender")),
    ("receive (gRPC/HTTP server)", ("h2::server", "hyper::server", "hyper::proto::h2::server",
                                    "tonic::codec::decode", "tonic::server", "ExportServer",
                                    "sluice_ingest::")),
    ("tokio scheduling and timers", ("tokio::runtime", "tokio::time")),
]


def parse_script(text: str) -> list[list[str]]:
    """`perf script -F ip,sym` output as call stacks, innermost frame first."""
    stacks: list[list[str]] = []
    cur: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            if cur:
                stacks.append(cur)
                cur = []
            continue
        parts = line.split(None, 1)
        sym = parts[1] if len(parts) > 1 else "[unknown]"
        cur.append(re.sub(r"\+0x[0-9a-f]+$", "", sym))
    if cur:
        stacks.append(cur)
    return stacks


def stage_of(stack: list[str]) -> str:
    for frame in stack:
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other"


def report(stacks: list[list[str]], top: int) -> str:
    n = len(stacks)
    if n == 0:
        return "no samples\n"
    stages = collections.Counter(stage_of(s) for s in stacks)
    own = collections.Counter(s[0] for s in stacks)
    # The kernel faulting in (and zeroing) fresh pages, by the stage that touched them first.
    faults = collections.Counter(stage_of(s) for s in stacks
                                 if any("exc_page_fault" in f for f in s))
    out = [f"{n} samples", "", "| stage | share of samples |", "|---|---|"]
    out += [f"| {stage} | {100 * k / n:.1f} % |" for stage, k in stages.most_common()]
    out += ["", f"page faults (in any stage): {100 * sum(faults.values()) / n:.1f} %"]
    out += [f"  {100 * k / n:5.1f} %  {stage}" for stage, k in faults.most_common()]
    out += ["", f"hottest functions (own samples, top {top}):"]
    out += [f"  {100 * k / n:5.1f} %  {sym[:120]}" for sym, k in own.most_common(top)]
    return "\n".join(out) + "\n"


def perf_script(data: Path) -> str:
    done = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym", "--no-inline"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"perf script could not read {data}: {done.stderr.strip()}")
    return done.stdout


WRAPPER = """#!/bin/bash
# profile_stages.py's --bin for e2e.py: records the sluice whose arguments contain the match
if [[ "$*" == *{match}* ]]; then
  ( sleep {delay}; exec perf record -F {freq} -g --call-graph dwarf,16384 -o {out} -p $$ ) \\
      > {log} 2>&1 &
  echo $! > {pid}
fi
exec {binary} "$@"
"""


def record(args: argparse.Namespace, e2e_args: list[str]) -> int:
    binary = Path(args.bin).resolve()
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "sluice"
        wrapper.write_text(WRAPPER.format(match=_quote(args.match), freq=args.freq, delay=args.delay,
                                          out=_quote(str(out)), log=_quote(str(out) + ".log"),
                                          pid=_quote(str(out) + ".pid"), binary=_quote(str(binary))))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        rc = subprocess.run([sys.executable, str(REPO / "benches" / "e2e.py"), "--bin", str(wrapper),
                             *e2e_args], cwd=REPO).returncode
    wait_for_perf(Path(str(out) + ".pid"))
    if not out.exists():
        print(f"no profile written to {out}: did a sluice's arguments contain {args.match!r}? "
              f"perf's output is in {out}.log", file=sys.stderr)
        return rc or 1
    print(f"profile: {out}; now: python3 benches/profile_stages.py report {out}")
    return rc


def wait_for_perf(pid_file: Path, timeout_s: float = 120) -> None:
    """Waits for the `perf record` the wrapper started to finish writing: it outlives the
    process it records by the time it takes to write its file."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    pid_file.unlink()
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:  # a zombie (not reaped yet) has finished writing
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return
        except OSError:
            return
        time.sleep(0.1)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run benches/e2e.py, recording one sluice process")
    rec.add_argument("--bin", default=str(REPO / "target" / "release" / "sluice"))
    rec.add_argument("--match", required=True,
                     help="a string in the recorded process's arguments (e.g. gateway-overlay)")
    rec.add_argument("--out", required=True, help="the perf.data file to write")
    rec.add_argument("--freq", type=int, default=999, help="samples per second")
    rec.add_argument("--delay", type=float, default=1.0,
                     help="seconds from the process's start to the recording's (its startup left out)")
    rep = sub.add_parser("report", help="the share of samples per stage")
    rep.add_argument("data", help="a perf.data file, or with --script a `perf script` text")
    rep.add_argument("--script", action="store_true",
                     help="DATA is `perf script -F ip,sym --no-inline` output already")
    rep.add_argument("--top", type=int, default=25)
    argv = sys.argv[1:]
    e2e_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, e2e_args = argv[:at], argv[at + 1:]
    args = ap.parse_args(argv)
    if args.command == "record":
        return record(args, e2e_args)
    data = Path(args.data)
    text = data.read_text() if args.script else perf_script(data)
    sys.stdout.write(report(parse_script(text), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
