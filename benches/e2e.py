#!/usr/bin/env python3
"""End-to-end benchmark: release sluice processes on loopback, driven by `sluice loadgen` for a
fixed count, measured from the outside and cross-checked against sluice's own self-telemetry.

    bash benches/e2e.sh [--configs ceiling-grpc,ceiling-http,ceiling-metrics,nop,passthrough,
                                   loadbalancing,agent,gateway,metrics,overload,replay,
                                   overload-gateway,hop]
                        [--spans N] [--gateway-spans N] [--points N] [--replay-spans N]
                        [--repeat R]
                        [--decision-wait 1s] [--scrape-interval 1] [--json FILE] [--quick]

Per config and run: items/s (first request to the last item out of the pipeline), CPU seconds
per million items of the process under test (utime + stime from /proc/PID/stat), its peak RSS
(VmHWM) and the load generator's own CPU per million items (rusage of its process). The table
shows the median of --repeat runs per column; every run is listed under it. Configs:

- ceiling-grpc / ceiling-http / ceiling-metrics: the generator (traces over gRPC and HTTP,
  metrics over gRPC) against `sluice loadgen sink` (answers Export without decoding): the
  generator's own ceiling, which must be well above the rates below.
- nop: sluice receives OTLP/gRPC, decodes to Arrow, drops (benches/e2e/nop.yaml).
- passthrough: receive, batch, encode, export OTLP/gRPC to a second sluice that counts and
  drops (benches/e2e/passthrough.yaml, sink.yaml).
- loadbalancing: the same with the agent's `loadbalancing` exporter: split by trace id over
  three backends (three names of the one sink), encode and send per backend
  (benches/e2e/loadbalancing.yaml).
- loadbalancing-flight (not in the default list): the agent's trace hop as it runs against a
  gateway of three pods: a `resource` upsert (so the payload is decoded, as the agent's
  enrichment leaves it), batch, `loadbalancing` over three backends with the Flight protocol,
  uncompressed (benches/e2e/loadbalancing-flight.yaml). Checked as passthrough.
- agent: k8s/config/agent.yaml as shipped plus benches/e2e/agent-overlay.yaml (loopback
  listeners, the sink sluice as the gateway, uncompressed and without retries as passthrough),
  its k8sattributes watching a fake API server (`sluice-fake-apiserver`, built in debug by
  e2e.sh: its cost is not measured) that holds this node's 100 pods, one of them at 127.0.0.1;
  the generator sends as applications do (`--resources app`: no k8s attributes), so every
  resource is enriched from the connection's address. Checked: spans in = exported = received
  by the sink, no pod lookup missed.
- gateway: k8s/config/gateway.yaml as shipped plus benches/e2e/gateway-overlay.yaml (loopback
  listeners, a shorter tail_sampling decision_wait, reported); otlp/jaeger to the sink sluice.
  Checked: spans in, spans dropped by filter/noise (= the probe spans sent), traces seen by
  tail_sampling (= the traces sent: every trace id unique), traces kept by the `errors` policy
  (= the error traces sent), kept share (50 % of the rest, within 6 sigma), spans in = dropped
  by filter + dropped by sampling + exported, exported = received by the sink.
- overload: passthrough behind a memory_limiter (benches/e2e/overload.yaml, limit 200 MiB),
  driven first unloaded (4 senders, --spans, each refused request sent again 50 ms later as an
  SDK retries: the sustainable rate) and then by --overload-senders (128) senders that go on
  to the next request at once for --overload-seconds; the row is the overload run (spans
  delivered to the sink per second), with the unloaded rate of the same run, the ratio,
  refusals, peak RSS (VmHWM) and the largest of RSS sampled every 100 ms beside it. Checked:
  nothing accepted is lost (sink = exported = accepted, in both phases).
- overload-gateway (not in the default list): the gateway's traces path behind a 150 MiB
  memory_limiter (benches/e2e/overload-gateway.yaml: filter, tail_sampling 1 s, batch; the
  pipeline of tests/e2e/test_overload.py), driven unloaded as overload is, then offered
  --overload-multiple (10) times that rate on a fixed schedule by --overload-senders senders
  for --overload-seconds (issue 16's overload: a refused request is not resent, so what is
  offered is exactly the multiple). The row is the overload phase; beside it the unloaded
  rate, the ratio, the offered rate, refusals, peak RSS (VmHWM of the phase) and RSS sampled
  every 100 ms (its largest, and how many samples were above the limit). Checked:
  nothing accepted is lost (accepted = exported + filtered, sink = exported).
- metrics: the same gateway, `sluice loadgen metrics` into its metrics pipeline, a scraper on
  the prometheus exporter every --scrape-interval seconds during the run (gzip, as Prometheus
  asks), so scrape cost is part of the CPU figure; reports scrape size and time.
- replay: the same gateway config (and overlays) run offline by `sluice replay --dry-run` over
  a capture of --replay-spans spans (`sluice loadgen traces --capture`: the generator's
  traffic with timestamps advancing at --replay-rate spans/s, length-prefixed protobuf as the
  `file` exporter writes it). No sockets: the figures are the replay process's own (wall time,
  CPU from its rusage, peak RSS), to set beside the gateway row. Checked from the replay's
  report: spans in, traces decided, error traces kept by `errors`, spans in = filtered +
  dropped by sampling + exported.

The agent -> gateway hop (not in the default list; `--configs hop` runs all five): an agent
sluice (OTLP in, a `resource` processor standing for the agent's enrichment, batch 8192 / 200
ms, one exporter) and a gateway sluice (the matching receiver, an `attributes` processor standing
for the gateway's work, nop exporter): both hold Arrow tables, as shipped agents and gateways
do. The generator at --hop-rate spans/s for --hop-duration seconds (--hop-pool distinct
requests of --hop-batch spans, so nothing repeats within a stream dictionary's life).
Between them a counting TCP proxy measures the bytes on the wire (HTTP/2 frames included), the
same way for every protocol. Configs: hop-otlp-gzip, hop-otlp-zstd (the otlp exporter and
receiver), hop-flight-zstd, hop-flight-none (the flight exporter and receiver), and hop-nop
(the same agent with a nop exporter and no gateway: the baseline). Reported in a table of its
own: bytes per span each way, CPU seconds per million spans of the agent and of the gateway,
the hop's own CPU (the agent's minus the baseline agent's, plus the gateway's: the exporter and
the receiver), and the ratios to hop-otlp-zstd. Checked: every span accepted is sent by the
agent, received by the gateway, and dropped by its nop exporter; no send failures.

Every config runs on the same machine: the figures are for the whole loopback setup. Processes
are started on free ports, stopped on exit (also on failure or Ctrl-C); a sluice that dies
stops the run with its log. Exit status: 0 all checks passed, 1 a check failed, 2 the harness
could not run a config.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E = ROOT / "benches" / "e2e"
GATEWAY = ROOT / "k8s" / "config" / "gateway.yaml"
AGENT = ROOT / "k8s" / "config" / "agent.yaml"
CONFIGS = ["ceiling-grpc", "ceiling-http", "ceiling-metrics", "nop", "passthrough",
           "loadbalancing", "agent", "gateway", "metrics", "overload", "replay"]
# Run only when named in --configs.
OPT_IN_CONFIGS = ["overload-gateway", "loadbalancing-flight"]
# The agent -> gateway hop: (exporter and receiver, compression), by config name.
HOP_CONFIGS = {"hop-otlp-gzip": ("otlp", "gzip"), "hop-otlp-zstd": ("otlp", "zstd"),
               "hop-flight-zstd": ("flight", "zstd"), "hop-flight-none": ("flight", "none"),
               "hop-nop": ("nop", "none")}
TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    """The harness could not run a config (a process died, timed out, or did not start)."""


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port free a moment ago and not handed out before by this run. The kernel
    may give the same ephemeral port to two binds in a row once the first socket is closed: a
    sink's health_check once got its own OTLP port and the run failed at start."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise HarnessError("no fresh free port after 1000 tries")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes


class Proc:
    """A child process with its output in a log file (stdout piped only for the load
    generator and its sink, which print one JSON line at the end)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path,
                 capture_stdout: bool = False):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE if capture_stdout else self._log, stderr=self._log,
            stdin=subprocess.DEVNULL,
            env=env, cwd=ROOT, start_new_session=True)
        RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 25) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:]) or "    (empty)"

    def check_alive(self, during: str) -> None:
        rc = self.popen.poll()
        if rc is not None:
            raise HarnessError(
                f"{self.name} exited with code {rc} {during}; the end of its log "
                f"({self.log_path}):\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> tuple[int | None, str]:
        """SIGTERM, wait; returns (exit code, stdout). SIGKILL if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, _ = self.popen.communicate()
            log(f"{self.name} did not exit {timeout:.0f} s after SIGTERM: killed")
        if self in RUNNING:
            RUNNING.remove(self)
        self._log.close()
        return self.popen.returncode, (out or b"").decode(errors="replace")


RUNNING: list[Proc] = []
WORKDIR: Path | None = None


def cleanup() -> None:
    # Newest first: the load generator, then the sluice under test (which may still be
    # exporting to its sink), then the sink.
    for p in list(reversed(RUNNING)):
        try:
            p.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort on the way out
            try:
                p.popen.kill()
            except OSError:
                pass


def _on_signal(signum, _frame):
    cleanup()
    if WORKDIR:
        print(f"interrupted (logs in {WORKDIR})", file=sys.stderr)
    sys.exit(128 + signum)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a live process, in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Sampler:
    """Samples a process's CPU ticks and RSS every `interval` seconds in a thread (issue 16's
    overload test samples RSS every 100 ms; VmHWM, reported beside it, is the peak of every
    page). Also used by benches/sidebyside.py."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, cpu ticks, rss KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> tuple[float, int, int] | None:
        try:
            ticks = cpu_ticks(self.pid)
            rss = 0
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        except (OSError, ValueError):
            return None
        s = (time.monotonic(), ticks, rss)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def rss_kib(self) -> list[int]:
        return [s[2] for s in self.samples]

    def peak_rss_kib(self) -> int:
        return max(self.rss_kib(), default=0)


def wait_port(port: int, procs: list[Proc], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check_alive("while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise HarnessError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s "
                                   f"({', '.join(p.name for p in procs)})")
            time.sleep(0.05)


def wait_healthy(port: int, procs: list[Proc], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check_alive("while starting")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"{procs[-1].name} not healthy on :{port} after {timeout:.0f} s")
        time.sleep(0.05)


# ------------------------------------------------------------------------------ self-telemetry

_SERIES = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """One scrape of a sluice's self-telemetry."""

    def __init__(self, text: str):
        self.series: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SERIES.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(3) or ""))
                self.series.append((m.group(1), labels, float(m.group(4))))

    def get(self, name: str, **labels: str) -> float:
        """Sum of the series named `name` whose labels include `labels` (0 if none)."""
        return sum(v for n, ls, v in self.series
                   if n == name and all(ls.get(k) == want for k, want in labels.items()))


def scrape_telemetry(port: int) -> Metrics:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return Metrics(r.read().decode())


def wait_until(what: str, cond, procs: list[Proc], timeout: float, poll: float = 0.1):
    """Polls `cond()` (returns a truthy result or None) until it holds; checks `procs` live."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check_alive(f"while waiting for {what}")
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# ------------------------------------------------------------------------------ the agent's cluster

BENCH_NODE = "ip-10-0-1-17.ec2.internal"
BENCH_PODS = 100


def bench_cluster_objects() -> list[dict]:
    """This node's pods: one Deployment's pod at 127.0.0.1 (the generator's address, so every
    resource it sends is that pod's) and 99 more, as a busy node has."""
    def pod(i: int, ip: str) -> dict:
        name = f"shop-{i:03d}-7d8f9c5b6-a1b2c"
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{i:03d}",
                         "creationTimestamp": "2026-12-06T08:00:00Z",
                         "labels": {"app.kubernetes.io/name": f"shop-{i:03d}"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": f"shop-{i:03d}-7d8f9c5b6",
                                              "uid": f"rs-{i:03d}", "controller": True}]},
            "spec": {"nodeName": BENCH_NODE,
                     "containers": [{"name": "app", "image": f"shop/app-{i:03d}:1.8.2"}]},
            "status": {"podIP": ip, "startTime": "2026-12-06T08:00:00Z"},
        }

    def replicaset(i: int) -> dict:
        return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"shop-{i:03d}-7d8f9c5b6", "namespace": "shop",
                             "uid": f"rs-{i:03d}",
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                  "name": f"shop-{i:03d}", "uid": f"d-{i:03d}",
                                                  "controller": True}]}}
    # The gateway's headless service, whose ready endpoints the agent's loadbalancing exporter
    # routes to (its k8s resolver): one, the harness's sink sluice on loopback (the overlay
    # sets the port). The agent runs in no pod: its namespace is `default`.
    gateway_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "otel-gateway-collector-headless-b2x4k", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "otel-gateway-collector-headless"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }
    return ([pod(0, "127.0.0.1")] + [pod(i, f"10.1.0.{i}") for i in range(1, BENCH_PODS)]
            + [replicaset(i) for i in range(BENCH_PODS)] + [gateway_slice])


class FakeCluster:
    """`sluice-fake-apiserver` with the bench's objects; `kubeconfig` points a client at it."""

    def __init__(self, binary: Path, workdir: Path):
        objects = workdir / "cluster.json"
        objects.write_text(json.dumps({"kind": "List", "items": bench_cluster_objects()}))
        self.proc = Proc("fake-apiserver", [str(binary), "--objects", str(objects)],
                         dict(os.environ), workdir, capture_stdout=True)
        line = self.proc.popen.stdout.readline()
        if not line:
            self.proc.check_alive("while starting")
            raise HarnessError("the fake API server printed nothing")
        self.kubeconfig = json.loads(line)["kubeconfig"]

    def stop(self) -> None:
        if self.proc in RUNNING:
            self.proc.stop()


# ------------------------------------------------------------------------------ byte counting


class CountingProxy:
    """A TCP forwarder on a free loopback port to 127.0.0.1:`target`, counting the bytes each
    way: what a protocol puts on the wire, measured the same way for every protocol."""

    def __init__(self, target: int):
        self.target = target
        self.up = 0    # client -> server
        self.down = 0  # server -> client
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "down"),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        buf = bytearray(1 << 16)
        while True:
            try:
                n = src.recv_into(buf)
            except OSError:
                n = 0
            if not n:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self._lock:
                if way == "up":
                    self.up += n
                else:
                    self.down += n
            try:
                dst.sendall(memoryview(buf)[:n])
            except OSError:
                return

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.up, self.down

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass


# ------------------------------------------------------------------------------ load generator


def run_loadgen(h: "Harness", signal_name: str, endpoint: str, count: int, watch: list[Proc],
                protocol: str = "grpc", concurrency: int = 4, duration: str = "30m",
                extra: tuple[str, ...] = (), rate: int = 0, duration_s: float = 0,
                batch: int | None = None, pool: int | None = None) -> tuple[dict, float, float]:
    """Runs `sluice loadgen` to completion (`count` items, or `duration_s` seconds at `rate`
    items/s); returns (its JSON report, its CPU seconds, the monotonic time it finished).
    Fails if a watched process dies meanwhile."""
    argv = [h.bin, "loadgen", signal_name, "--endpoint", endpoint, "--protocol", protocol,
            "--batch", str(batch or h.batch), "--pool", str(pool or h.pool),
            "--concurrency", str(concurrency), "--json", *extra]
    if duration_s:
        argv += ["--duration", f"{duration_s}s", "--rate", str(rate)]
    else:
        argv += ["--count", str(count), "--duration", duration]
    p = Proc(f"loadgen-{signal_name}-{protocol}", argv, dict(os.environ), h.workdir,
             capture_stdout=True)
    deadline = time.monotonic() + h.timeout
    while True:
        pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            finished = time.monotonic()
            break
        for w in watch:
            if w.popen.poll() is not None:
                p.popen.kill()
                p.popen.wait()
                w.check_alive("while the load generator was sending")
        if time.monotonic() > deadline:
            p.popen.kill()
            raise HarnessError(f"the load generator did not finish in {h.timeout:.0f} s")
        time.sleep(0.05)
    p.popen.returncode = os.waitstatus_to_exitcode(status)
    out = p.popen.stdout.read().decode(errors="replace") if p.popen.stdout else ""
    RUNNING.remove(p)
    p._log.close()
    if p.popen.returncode != 0:
        raise HarnessError(f"the load generator failed (exit {p.popen.returncode}):\n{out}\n"
                           f"{p.log_tail()}")
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as e:
        raise HarnessError(f"the load generator printed no JSON report: {out!r}") from e
    return report, rusage.ru_utime + rusage.ru_stime, finished


# ------------------------------------------------------------------------------ the runs


class Run:
    """One run of one config: the figures and the cross-checks."""

    def __init__(self, config: str, noun: str):
        self.config = config
        self.noun = noun
        self.items = 0
        self.seconds = 0.0
        self.cpu_s = 0.0
        self.rss_kib = 0
        self.gen_cpu_s = 0.0
        self.checks: list[tuple[str, bool, str]] = []
        self.extra: dict[str, object] = {}
        self.notes: list[str] = []

    def check(self, what: str, got, want) -> None:
        self.checks.append((what, got == want, f"{got} (want {want})"))

    def check_near(self, what: str, got: float, want: float, tolerance: float) -> None:
        ok = abs(got - want) <= tolerance
        self.checks.append((what, ok, f"{got:.0f} (want {want:.0f} ± {tolerance:.0f})"))

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_m(self) -> float:
        return self.cpu_s / (self.items / 1e6) if self.items else 0.0

    @property
    def gen_cpu_per_m(self) -> float:
        return self.gen_cpu_s / (self.items / 1e6) if self.items else 0.0

    def to_json(self) -> dict:
        return {
            "config": self.config, "noun": self.noun, "items": self.items,
            "seconds": self.seconds, "items_per_s": self.rate, "cpu_s": self.cpu_s,
            "cpu_s_per_million": self.cpu_per_m, "peak_rss_mib": self.rss_kib / 1024,
            "loadgen_cpu_s_per_million": self.gen_cpu_per_m, "extra": self.extra,
            "notes": self.notes,
            "checks": [{"check": c, "ok": ok, "detail": d} for c, ok, d in self.checks],
        }


class Harness:
    def __init__(self, args: argparse.Namespace, workdir: Path):
        # Absolute: some steps run their processes in a work directory of their own.
        self.bin = str(Path(args.bin).resolve())
        self.workdir = workdir
        self.spans = args.spans
        self.gateway_spans = args.gateway_spans
        self.points = args.points
        self.batch = args.batch
        self.pool = args.pool
        self.decision_wait = args.decision_wait
        self.scrape_interval = args.scrape_interval
        self.timeout = args.timeout
        self.overlays = [Path(o).resolve() for o in args.overlay]
        self.overload_senders = args.overload_senders
        self.overload_seconds = args.overload_seconds
        self.overload_multiple = args.overload_multiple
        self.apiserver_bin = args.apiserver_bin
        self.hop_rate = args.hop_rate
        self.hop_duration = args.hop_duration
        self.hop_batch = args.hop_batch
        self.hop_pool = args.hop_pool
        self.replay_spans = args.replay_spans
        self.replay_rate = args.replay_rate

    def sluice(self, name: str, configs: list[Path], env: dict[str, str]) -> Proc:
        argv = [self.bin]
        for c in configs:
            argv += ["--config", str(c)]
        return Proc(name, argv, dict(os.environ, **env), self.workdir)

    def sink_sluice(self) -> tuple[Proc, dict[str, str]]:
        env = {"SINK_GRPC_PORT": str(free_port()), "SINK_FLIGHT_PORT": str(free_port()),
               "SINK_HEALTH_PORT": str(free_port()), "SINK_TELEMETRY_PORT": str(free_port())}
        p = self.sluice("sink-sluice", [E2E / "sink.yaml"], env)
        wait_healthy(int(env["SINK_HEALTH_PORT"]), [p])
        return p, env

    def measured(self, proc: Proc):
        """(CPU ticks now, callable giving CPU seconds and peak RSS since then)."""
        t0 = cpu_ticks(proc.pid)

        def done() -> tuple[float, int]:
            return (cpu_ticks(proc.pid) - t0) / TICKS, peak_rss_kib(proc.pid)
        return done

    # ---- the generator's ceiling
    def ceiling(self, config: str) -> Run:
        protocol = "http" if config == "ceiling-http" else "grpc"
        signal_name, noun, count = (("metrics", "points", self.points)
                                    if config == "ceiling-metrics"
                                    else ("traces", "spans", self.spans))
        r = Run(config, noun)
        port = free_port()
        sink = Proc("loadgen-sink", [self.bin, "loadgen", "sink", "--endpoint",
                                     f"127.0.0.1:{port}"], dict(os.environ), self.workdir,
                    capture_stdout=True)
        try:
            wait_port(port, [sink])
            measure = self.measured(sink)
            report, r.gen_cpu_s, _ = run_loadgen(self, signal_name, f"127.0.0.1:{port}",
                                                  count, [sink], protocol)
            r.cpu_s, r.rss_kib = measure()
        finally:
            rc, out = sink.stop()
        if rc != 0:
            raise HarnessError(f"the sink exited with {rc}:\n{sink.log_tail()}")
        counts = json.loads(out.strip().splitlines()[-1])
        r.items, r.seconds = report["items_accepted"], report["elapsed_s"]
        r.check(f"{noun} accepted = {noun} sent", report["items_accepted"],
                report["items_sent"])
        r.check("requests received by the sink", counts[f"{protocol}_requests"],
                report["requests"])
        r.check("bytes received by the sink", counts["payload_bytes"], report["bytes_accepted"])
        r.extra["latency_us"] = report["latency_us"]
        return r

    # ---- sluice receives, decodes, drops
    def nop(self) -> Run:
        r = Run("nop", "spans")
        env = {"GRPC_PORT": str(free_port()), "HEALTH_PORT": str(free_port()),
               "TELEMETRY_PORT": str(free_port())}
        s = self.sluice("nop", [E2E / "nop.yaml"], env)
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [s])
            measure = self.measured(s)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", self.spans, [s])
            tel = int(env["TELEMETRY_PORT"])
            want = report["items_accepted"]
            m = wait_until("the nop exporter to count every span", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_spans_total", exporter="nop")
                >= want else None)(scrape_telemetry(tel)), [s], self.timeout)
            end = time.monotonic()
            r.cpu_s, r.rss_kib = measure()
        finally:
            self.stop_checked(s, r)
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        r.check("spans accepted = spans sent", want, report["items_sent"])
        r.check("receiver accepted (self-telemetry)",
                m.get("otelcol_receiver_accepted_spans_total", receiver="otlp"), want)
        r.check("nop exporter sent", m.get("otelcol_exporter_sent_spans_total", exporter="nop"),
                want)
        return r

    # ---- receive, batch, encode, export to a sink sluice (loadbalancing: split by trace id
    # over three backends first)
    def passthrough(self, name: str = "passthrough") -> Run:
        exporter = "otlp" if name == "passthrough" else None
        r = Run(name, "spans")
        sink, sink_env = self.sink_sluice()
        env = dict(sink_env, GRPC_PORT=str(free_port()), HEALTH_PORT=str(free_port()),
                   TELEMETRY_PORT=str(free_port()))
        # --overlay applies to the plain pass-through (its otlp exporter), not to the
        # loadbalancing variant.
        overlays = self.overlays if name == "passthrough" else []
        s = self.sluice(name, [E2E / f"{name}.yaml", *overlays], env)
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [sink, s])
            measure = self.measured(s)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", self.spans, [sink, s])
            want = report["items_accepted"]
            tel, sink_tel = int(env["TELEMETRY_PORT"]), int(env["SINK_TELEMETRY_PORT"])
            # Sent or failed (failures are a failed check below, not a wait for the timeout).
            sent = (lambda m: m.get("otelcol_exporter_sent_spans_total", exporter=exporter)
                    if exporter else m.get("otelcol_exporter_sent_spans_total"))
            m = wait_until("the exporter to send every span", lambda: (
                lambda m: m if sent(m)
                + m.get("otelcol_exporter_send_failed_spans_total") >= want else None)(
                scrape_telemetry(tel)), [sink, s], self.timeout)
            end = time.monotonic()
            r.cpu_s, r.rss_kib = measure()
            sm = wait_until("the sink sluice to receive every span", lambda: (
                lambda m: m if m.get("otelcol_receiver_accepted_spans_total") >= want
                else None)(scrape_telemetry(sink_tel)), [sink], 30)
        finally:
            self.stop_checked(s, r)
            self.stop_checked(sink, r)
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        r.check("spans accepted = spans sent", want, report["items_sent"])
        r.check("receiver accepted (self-telemetry)",
                m.get("otelcol_receiver_accepted_spans_total", receiver="otlp"), want)
        r.check("exporter sent", sent(m), want)
        r.check("otlp exporter send failures",
                m.get("otelcol_exporter_send_failed_spans_total"), 0)
        r.check("received by the sink sluice", sm.get("otelcol_receiver_accepted_spans_total"),
                want)
        lat = report["latency_us"]
        r.extra["request latency p50/p99 us"] = f"{lat['p50']:,.0f}/{lat['p99']:,.0f}"
        return r

    # ---- the shipped agent, traces (from applications on this node)
    def agent(self) -> Run:
        r = Run("agent", "spans")
        cluster = self.fake_cluster()
        sink, sink_env = self.sink_sluice()
        env = dict(sink_env, GRPC_PORT=str(free_port()), HTTP_PORT=str(free_port()),
                   HEALTH_PORT=str(free_port()), TELEMETRY_PORT=str(free_port()),
                   KUBECONFIG=cluster.kubeconfig, K8S_NODE_NAME=BENCH_NODE,
                   K8S_POD_NAME="otel-agent-collector-bench")
        s = self.sluice("agent", [AGENT, E2E / "agent-overlay.yaml"], env)
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [cluster.proc, sink, s])
            tel, sink_tel = int(env["TELEMETRY_PORT"]), int(env["SINK_TELEMETRY_PORT"])
            # The node's pods are cached before the first span (wait_for_metadata is off in
            # the shipped agent: a span before the first list would pass unenriched).
            wait_until("the agent to cache this node's pods", lambda: scrape_telemetry(tel).get(
                "otelcol_otelsvc_k8s_pod_added_total") >= BENCH_PODS, [s], 30)
            measure = self.measured(s)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", self.spans, [sink, s],
                extra=("--resources", "app"))
            want = report["items_accepted"]
            m = wait_until("the agent to send every span", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_spans_total")
                + m.get("otelcol_exporter_send_failed_spans_total") >= want else None)(
                scrape_telemetry(tel)), [sink, s], self.timeout)
            end = time.monotonic()
            r.cpu_s, r.rss_kib = measure()
            sm = wait_until("the sink sluice to receive every span", lambda: (
                lambda m: m if m.get("otelcol_receiver_accepted_spans_total") >= want
                else None)(scrape_telemetry(sink_tel)), [sink], 30)
        finally:
            self.stop_checked(s, r)
            self.stop_checked(sink, r)
            cluster.stop()
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        r.check("spans accepted = spans sent", want, report["items_sent"])
        r.check("receiver accepted (self-telemetry)",
                m.get("otelcol_receiver_accepted_spans_total", receiver="otlp"), want)
        r.check("exported", m.get("otelcol_exporter_sent_spans_total"), want)
        r.check("export failures", m.get("otelcol_exporter_send_failed_spans_total"), 0)
        r.check("pod lookups that missed (every resource enriched)",
                m.get("otelcol_otelsvc_k8s_ip_lookup_miss_total"), 0)
        r.check("received by the sink sluice", sm.get("otelcol_receiver_accepted_spans_total"),
                want)
        return r

    def fake_cluster(self) -> "FakeCluster":
        binary = Path(self.apiserver_bin)
        if not binary.exists():
            raise HarnessError(f"{binary} does not exist: cargo build -p sluice-k8s --features "
                               "testing --bin sluice-fake-apiserver (benches/e2e.sh does)")
        return FakeCluster(binary, self.workdir)

    def gateway_env(self) -> dict[str, str]:
        return {"GRPC_PORT": str(free_port()), "HTTP_PORT": str(free_port()),
                "FLIGHT_PORT": str(free_port()), "HEALTH_PORT": str(free_port()), "TELEMETRY_PORT": str(free_port()),
                "PROMETHEUS_PORT": str(free_port()), "DECISION_WAIT": self.decision_wait}

    # ---- the shipped gateway, traces
    def gateway(self) -> Run:
        r = Run("gateway", "spans")
        wait_s = parse_seconds(self.decision_wait)
        sink, sink_env = self.sink_sluice()
        env = dict(self.gateway_env(), JAEGER_ENDPOINT=f"127.0.0.1:{sink_env['SINK_GRPC_PORT']}")
        s = self.sluice("gateway", [GATEWAY, E2E / "gateway-overlay.yaml", *self.overlays], env)
        ts = "otelcol_processor_tail_sampling_"
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [sink, s])
            measure = self.measured(s)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", self.gateway_spans, [sink, s])
            spans_in = report["items_accepted"]
            tel, sink_tel = int(env["TELEMETRY_PORT"]), int(sink_env["SINK_TELEMETRY_PORT"])

            def accounted(m: Metrics) -> float:
                return (m.get("otelcol_processor_filter_spans_filtered_total",
                              filter="filter/noise")
                        + m.get("otelcol_processor_dropped_spans_total",
                                processor="tail_sampling", reason="not_sampled")
                        + m.get("otelcol_exporter_sent_spans_total", exporter="otlp/jaeger")
                        + m.get("otelcol_exporter_send_failed_spans_total"))
            # Every span is accounted for once tail_sampling decided the last traces (after
            # decision_wait) and the exporter sent (or failed to send: a failed check below,
            # not a wait until the timeout) what it kept.
            m = wait_until("every span to be filtered, dropped by sampling or exported",
                           lambda: (lambda m: m if accounted(m) >= spans_in else None)(
                               scrape_telemetry(tel)),
                           [sink, s], self.timeout + wait_s)
            end = time.monotonic()
            r.cpu_s, r.rss_kib = measure()
            exported = m.get("otelcol_exporter_sent_spans_total", exporter="otlp/jaeger")
            sm = wait_until("the sink sluice to receive the exported spans", lambda: (
                lambda m: m if m.get("otelcol_receiver_accepted_spans_total") >= exported
                else None)(scrape_telemetry(sink_tel)), [sink], 30)
        finally:
            self.stop_checked(s, r)
            self.stop_checked(sink, r)
        r.items = spans_in
        # The last traces wait decision_wait after their last span arrives: that wait is idle
        # time, not throughput, so it is not counted.
        r.seconds = end - (finished - report["elapsed_s"]) - wait_s
        filtered = m.get("otelcol_processor_filter_spans_filtered_total", filter="filter/noise")
        not_sampled = m.get("otelcol_processor_dropped_spans_total", processor="tail_sampling",
                            reason="not_sampled")
        traces = report["traces_accepted"] - report["noise_spans_accepted"]
        errors = report["error_traces_accepted"]
        kept_traces = m.get(ts + "global_count_traces_sampled_total", sampled="true")
        decided = kept_traces + m.get(ts + "global_count_traces_sampled_total",
                                      sampled="false")
        r.check("spans accepted = spans sent", spans_in, report["items_sent"])
        r.check("spans in (receiver accepted)",
                m.get("otelcol_receiver_accepted_spans_total", receiver="otlp"), spans_in)
        r.check("dropped by filter/noise = probe spans sent", filtered,
                report["noise_spans_accepted"])
        r.check("new trace ids at tail_sampling = traces sent", m.get(
            ts + "new_trace_id_received_total"), traces)
        r.check("traces decided", decided, traces)
        r.check("kept by the errors policy = error traces sent", m.get(
            ts + "count_traces_sampled_total", policy="errors", sampled="true"), errors)
        # Everything else is kept by the 50 % draw (no generated trace is near 2 s).
        rest = traces - errors
        r.check_near("traces kept", kept_traces, errors + rest / 2,
                     6 * (rest * 0.25) ** 0.5 + 1)
        r.check("spans in = filtered + dropped by sampling + exported",
                filtered + not_sampled + exported, spans_in)
        r.check("export failures", m.get("otelcol_exporter_send_failed_spans_total"), 0)
        r.check("exported = received by the sink sluice",
                sm.get("otelcol_receiver_accepted_spans_total"), exported)
        early = m.get(ts + "traces_decided_early_total")
        r.extra.update(ingest_s=report["elapsed_s"], drain_s=end - finished,
                       spans_exported=exported, dropped_by_filter=filtered,
                       dropped_by_sampling=not_sampled, traces=traces,
                       traces_kept=kept_traces, traces_decided_early=early,
                       decision_wait=self.decision_wait)
        if early:
            r.notes.append(f"{early:.0f} traces decided early (num_traces reached): the "
                           "buffer was capped by num_traces, not by decision_wait")
        return r

    # ---- the shipped gateway, metrics -> prometheus with a scraper
    def metrics(self) -> Run:
        r = Run("metrics", "points")
        jaeger_port = free_port()
        jaeger = Proc("loadgen-sink", [self.bin, "loadgen", "sink", "--endpoint",
                                       f"127.0.0.1:{jaeger_port}"], dict(os.environ),
                      self.workdir, capture_stdout=True)
        env = dict(self.gateway_env(), JAEGER_ENDPOINT=f"127.0.0.1:{jaeger_port}")
        s = self.sluice("gateway-metrics",
                        [GATEWAY, E2E / "gateway-overlay.yaml", *self.overlays], env)
        scraper = Scraper(int(env["PROMETHEUS_PORT"]), self.scrape_interval)
        try:
            wait_port(jaeger_port, [jaeger])
            wait_healthy(int(env["HEALTH_PORT"]), [jaeger, s])
            measure = self.measured(s)
            scraper.start()
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "metrics", f"127.0.0.1:{env['GRPC_PORT']}", self.points, [jaeger, s])
            want = report["items_accepted"]
            tel = int(env["TELEMETRY_PORT"])
            m = wait_until("the prometheus exporter to take every point", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_metric_points_total",
                                     exporter="prometheus") >= want else None)(
                scrape_telemetry(tel)), [jaeger, s], self.timeout)
            end = time.monotonic()
            scraper.stop()
            r.cpu_s, r.rss_kib = measure()
            final = scraper.scrape(count_series=True)
        finally:
            scraper.stop()
            self.stop_checked(s, r)
            jaeger.stop()
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        during = scraper.results
        r.check("points accepted = points sent", want, report["items_sent"])
        r.check("points in (receiver accepted)",
                m.get("otelcol_receiver_accepted_metric_points_total", receiver="otlp"), want)
        r.check("points taken by the prometheus exporter",
                m.get("otelcol_exporter_sent_metric_points_total", exporter="prometheus"), want)
        r.check("scrapes answered 200", sorted({x["status"] for x in during + [final]}), [200])
        r.check("final scrape has series", final["series"] > 0, True)
        times = [x["seconds"] for x in during] or [final["seconds"]]
        r.extra.update(
            scrapes_during_run=len(during), series=final["series"],
            scrape_bytes_gzip=final["bytes"], scrape_bytes=final["raw_bytes"],
            scrape_ms_median=1000 * statistics.median(times),
            scrape_ms_max=1000 * max(times), final_scrape_ms=1000 * final["seconds"])
        if not during:
            r.notes.append("the run ended before the first scrape: raise --points")
        return r

    # ---- unloaded, then overloaded, behind a memory_limiter
    def overload(self) -> Run:
        return self.overloaded("overload")

    def overloaded(self, config: str) -> Run:
        """`overload`: passthrough behind a memory_limiter, then --overload-senders senders
        sending the next request at once after a refusal. `overload-gateway`: the
        gateway-like pipeline, then --overload-multiple times the unloaded rate offered on a
        fixed schedule (refused requests are not resent: the offered rate is exactly that
        multiple)."""
        gateway = config == "overload-gateway"
        r = Run(config, "spans")
        sink, sink_env = self.sink_sluice()
        env = dict(sink_env, GRPC_PORT=str(free_port()), HEALTH_PORT=str(free_port()),
                   TELEMETRY_PORT=str(free_port()))
        s = self.sluice(config, [E2E / f"{config}.yaml"], env)
        tel, sink_tel = int(env["TELEMETRY_PORT"]), int(env["SINK_TELEMETRY_PORT"])
        endpoint = f"127.0.0.1:{env['GRPC_PORT']}"

        def out_of_pipeline(m) -> float:
            # Sent, failed (a failed check) or dropped by the filter (the health probes).
            return (m.get("otelcol_exporter_sent_spans_total")
                    + m.get("otelcol_exporter_send_failed_spans_total")
                    + m.get("otelcol_processor_filter_spans_filtered_total"))

        def drained(want: float):
            # Everything accepted so far out of the pipeline and in the sink.
            m = wait_until("the pipeline to pass on every accepted span", lambda: (
                lambda m: m if out_of_pipeline(m) >= want else None)(
                scrape_telemetry(tel)), [sink, s], self.timeout)
            sm = wait_until("the sink to receive every span", lambda: (
                lambda x: x if x.get("otelcol_receiver_accepted_spans_total")
                >= m.get("otelcol_exporter_sent_spans_total") else None)(
                scrape_telemetry(sink_tel)), [sink], 60)
            return time.monotonic(), m, sm
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [sink, s])
            # Unloaded: 4 senders, a fixed count, a refused request sent again after 50 ms
            # (as an SDK retries) so that the phase measures what the pipeline sustains. Without
            # it a refusal counted against --spans: at the limit most of the phase's requests
            # were refused at once and it ended after 2-3 s of mostly start-up.
            calm, _, calm_finished = run_loadgen(self, "traces", endpoint, self.spans,
                                                 [sink, s], extra=("--retry-refused", "50ms"))
            calm_end, _, _ = drained(calm["items_accepted"])
            calm_rate = calm["items_accepted"] / (calm_end - (calm_finished
                                                               - calm["elapsed_s"]))
            # Overloaded for a fixed time, measured from the outside.
            measure = self.measured(s)
            Path(f"/proc/{s.pid}/clear_refs").write_text("5")  # reset VmHWM for this phase
            sampler = Sampler(s.pid)
            if gateway:
                offered = int(calm_rate * self.overload_multiple)
                report, r.gen_cpu_s, finished = run_loadgen(
                    self, "traces", endpoint, 0, [sink, s], concurrency=self.overload_senders,
                    rate=offered, duration_s=self.overload_seconds)
            else:
                report, r.gen_cpu_s, finished = run_loadgen(
                    self, "traces", endpoint, 10**12, [sink, s],
                    concurrency=self.overload_senders, duration=f"{self.overload_seconds}s")
            want = calm["items_accepted"] + report["items_accepted"]
            end, m, sm = drained(want)
            sampler.stop()  # before VmHWM is read
            rss_samples = sampler.rss_kib()
            r.cpu_s, r.rss_kib = measure()
        finally:
            self.stop_checked(s, r)
            self.stop_checked(sink, r)
        r.items = report["items_accepted"]
        r.seconds = end - (finished - report["elapsed_s"])
        r.check("receiver accepted (self-telemetry) = accepted by the generators",
                m.get("otelcol_receiver_accepted_spans_total", receiver="otlp"), want)
        r.check("exported + filtered = accepted", out_of_pipeline(m), want)
        r.check("received by the sink = exported",
                sm.get("otelcol_receiver_accepted_spans_total"),
                m.get("otelcol_exporter_sent_spans_total"))
        refused = report["refused_by_status"]
        r.check("only retryable refusals",
                sorted(set(refused) - {"ResourceExhausted", "Unavailable"}), [])
        r.extra.update(unloaded_spans_per_s=calm_rate,
                       unloaded_requests_refused=sum(calm["refused_by_status"].values()),
                       unloaded_requests_resent=calm["resent"],
                       overload_vs_unloaded=r.rate / calm_rate if calm_rate else 0.0,
                       senders=self.overload_senders,
                       requests_refused=sum(refused.values()),
                       refused_by_status=json.dumps(refused),
                       memory_refusals=m.get("sluice_memory_refused_requests_total"))
        # The config's memory_limiter.limit_mib, to count the samples above it.
        limit_mib = int(re.search(r"\blimit_mib: (\d+)",
                                  (E2E / f"{config}.yaml").read_text()).group(1))
        r.extra.update(rss_sampled_max_mib=max(rss_samples, default=0) / 1024,
                       rss_samples=len(rss_samples),
                       rss_samples_over_limit=sum(k > limit_mib * 1024 for k in rss_samples))
        if gateway:
            r.extra.update(offered_spans_per_s=offered, offered_multiple=self.overload_multiple)
        return r

    # ---- the agent -> gateway hop: bytes on the wire and CPU at both ends
    def hop(self, config: str) -> Run:
        kind, compression = HOP_CONFIGS[config]
        if kind == "nop":
            return self.hop_baseline(config)
        r = Run(config, "spans")
        gw_env = {"GW_PORT": str(free_port()), "GW_HEALTH_PORT": str(free_port()),
                  "GW_TELEMETRY_PORT": str(free_port())}
        gateway = self.sluice(f"{config}-gateway", [E2E / "hop-gateway.yaml",
                                                     E2E / f"hop-gateway-{kind}.yaml"], gw_env)
        proxy = CountingProxy(int(gw_env["GW_PORT"]))
        env = {"GRPC_PORT": str(free_port()), "HEALTH_PORT": str(free_port()),
               "TELEMETRY_PORT": str(free_port()), "PROXY_PORT": str(proxy.port),
               "COMPRESSION": compression}
        agent = self.sluice(f"{config}-agent", [E2E / "hop-agent.yaml",
                                                 E2E / f"hop-agent-{kind}.yaml"], env)
        procs = [gateway, agent]
        try:
            wait_healthy(int(gw_env["GW_HEALTH_PORT"]), [gateway])
            wait_healthy(int(env["HEALTH_PORT"]), procs)
            agent_cpu, gateway_cpu = self.measured(agent), self.measured(gateway)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", 0, procs,
                rate=self.hop_rate, duration_s=self.hop_duration, batch=self.hop_batch,
                pool=self.hop_pool)
            want = report["items_accepted"]
            tel, gw_tel = int(env["TELEMETRY_PORT"]), int(gw_env["GW_TELEMETRY_PORT"])
            gm = wait_until("the gateway to drop every span", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_spans_total", exporter="nop")
                >= want else None)(scrape_telemetry(gw_tel)), procs, self.timeout)
            # The agent counts a request sent once its answer arrives, which can come a moment
            # after the gateway has passed the data on: wait for that too (the answers' bytes
            # are part of the hop).
            m = wait_until("the agent to count every span sent", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_spans_total", exporter=kind)
                >= want else None)(scrape_telemetry(tel)), procs, self.timeout)
            end = time.monotonic()
            a_cpu, a_rss = agent_cpu()
            g_cpu, g_rss = gateway_cpu()
            up, down = proxy.counts()
        finally:
            self.stop_checked(agent, r)
            self.stop_checked(gateway, r)
            proxy.close()
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        r.cpu_s, r.rss_kib = a_cpu + g_cpu, max(a_rss, g_rss)
        r.extra.update(bytes_up=up, bytes_down=down, agent_cpu_s=a_cpu, gateway_cpu_s=g_cpu,
                       agent_rss_mib=a_rss / 1024, gateway_rss_mib=g_rss / 1024,
                       requests=report["requests"])
        r.check("spans accepted = spans sent", want, report["items_sent"])
        r.check(f"{kind} exporter sent", m.get("otelcol_exporter_sent_spans_total",
                                               exporter=kind), want)
        r.check("agent send failures", m.get("otelcol_exporter_send_failed_spans_total"), 0)
        r.check(f"{kind} receiver accepted", gm.get("otelcol_receiver_accepted_spans_total",
                                                    receiver=kind), want)
        r.check("gateway nop exporter dropped", gm.get("otelcol_exporter_sent_spans_total",
                                                       exporter="nop"), want)
        return r

    def hop_baseline(self, config: str) -> Run:
        """The hop's agent with a nop exporter and no gateway: what the agent costs for every
        protocol, to subtract from the hop configs' agent CPU."""
        r = Run(config, "spans")
        env = {"GRPC_PORT": str(free_port()), "HEALTH_PORT": str(free_port()),
               "TELEMETRY_PORT": str(free_port())}
        agent = self.sluice(f"{config}-agent", [E2E / "hop-agent.yaml",
                                                 E2E / "hop-agent-nop.yaml"], env)
        try:
            wait_healthy(int(env["HEALTH_PORT"]), [agent])
            agent_cpu = self.measured(agent)
            report, r.gen_cpu_s, finished = run_loadgen(
                self, "traces", f"127.0.0.1:{env['GRPC_PORT']}", 0, [agent],
                rate=self.hop_rate, duration_s=self.hop_duration, batch=self.hop_batch,
                pool=self.hop_pool)
            want = report["items_accepted"]
            m = wait_until("the agent to drop every span", lambda: (
                lambda m: m if m.get("otelcol_exporter_sent_spans_total", exporter="nop")
                >= want else None)(scrape_telemetry(int(env["TELEMETRY_PORT"]))), [agent],
                self.timeout)
            end = time.monotonic()
            a_cpu, a_rss = agent_cpu()
        finally:
            self.stop_checked(agent, r)
        r.items = want
        r.seconds = end - (finished - report["elapsed_s"])
        r.cpu_s, r.rss_kib = a_cpu, a_rss
        r.extra.update(bytes_up=0, bytes_down=0, agent_cpu_s=a_cpu, gateway_cpu_s=0.0,
                       agent_rss_mib=a_rss / 1024, gateway_rss_mib=0, requests=report["requests"])
        r.check("spans accepted = spans sent", want, report["items_sent"])
        r.check("agent nop exporter dropped", m.get("otelcol_exporter_sent_spans_total",
                                                    exporter="nop"), want)
        return r

    # ---- the shipped gateway, offline: `sluice replay --dry-run` over a capture
    def replay(self) -> Run:
        r = Run("replay", "spans")
        cap = self.workdir / "replay-capture.bin"
        gen = subprocess.run(
            [self.bin, "loadgen", "traces", "--capture", str(cap), "--count",
             str(self.replay_spans), "--rate", str(self.replay_rate), "--batch", str(self.batch),
             "--quiet", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=self.timeout)
        if gen.returncode != 0:
            raise HarnessError(f"loadgen --capture failed ({gen.returncode}):\n{gen.stdout}")
        made = json.loads(gen.stdout.strip().splitlines()[-1])
        out = self.workdir / "replay-report.json"
        env = dict(os.environ, **self.gateway_env(), JAEGER_ENDPOINT="127.0.0.1:1")
        argv = [self.bin]
        for c in [GATEWAY, E2E / "gateway-overlay.yaml", *self.overlays]:
            argv += ["--config", str(c)]
        argv += ["replay", "--dry-run", "--quiet", "--report", str(out), str(cap)]
        log_path = self.workdir / "replay.log"
        with open(log_path, "wb") as log_file:
            started = time.monotonic()
            p = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            r.seconds = time.monotonic() - started
        if p.returncode != 0:
            raise HarnessError(f"sluice replay exited with {p.returncode}:\n"
                               f"{log_path.read_text(errors='replace')[-3000:]}")
        r.cpu_s = usage.ru_utime + usage.ru_stime
        r.rss_kib = usage.ru_maxrss
        run = json.loads(out.read_text())["runs"][0]
        cap.unlink()
        r.items = run["input"]["spans"]
        ts = run["tail_sampling"][0]
        procs = {p["id"]: p for p in run["processors"]}
        filtered = procs.get("filter/noise", {}).get("dropped", {}).get("filtered", 0)
        not_sampled = procs.get("tail_sampling", {}).get("dropped", {}).get("not_sampled", 0)
        exported = next(e for e in run["exporters"] if e["id"] == "otlp/jaeger")["sent"]["spans"]
        errors = next((p["sampled_traces"] for p in ts["policies"] if p["policy"] == "errors"), 0)
        traces = made["traces_accepted"] - made["noise_spans_accepted"]
        r.check("spans in = spans captured", r.items, made["items_sent"])
        r.check("dropped by filter/noise = probe spans captured", filtered,
                made["noise_spans_accepted"])
        r.check("traces decided", ts["traces_sampled"] + ts["traces_not_sampled"], traces)
        r.check("kept by the errors policy = error traces captured", errors,
                made["error_traces_accepted"])
        r.check("spans in = filtered + dropped by sampling + exported",
                filtered + not_sampled + exported, r.items)
        data_s = (run["info"]["data_end_unix_nano"] - run["info"]["data_start_unix_nano"]) / 1e9
        r.extra.update(data_seconds=data_s, traces=traces, traces_kept=ts["traces_sampled"],
                       traces_decided_early=ts["traces_decided_early"],
                       capture_mib=run["info"]["capture_bytes"] / 2**20,
                       decision_wait=self.decision_wait)
        return r

    def stop_checked(self, p: Proc, r: Run) -> None:
        if p not in RUNNING:
            return
        rc, _ = p.stop()
        r.check(f"{p.name} exits 0 on SIGTERM", rc, 0)


def parse_seconds(d: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", d.strip())
    if not m:
        raise SystemExit(f"--decision-wait: expected a duration like 2s or 500ms, got {d!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


class Scraper:
    """Scrapes the prometheus exporter every `interval` seconds in a thread, as Prometheus
    does (gzip), recording status, size and time of each scrape."""

    def __init__(self, port: int, interval: float):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.results: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def scrape(self, count_series: bool = False) -> dict:
        req = urllib.request.Request(self.url, headers={
            "Accept-Encoding": "gzip",
            "Accept": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                status, gz = resp.status, resp.headers.get("Content-Encoding") == "gzip"
        except urllib.error.HTTPError as e:
            return {"status": e.code, "bytes": 0, "raw_bytes": 0, "seconds": 0, "series": 0}
        seconds = time.monotonic() - t0
        result = {"status": status, "bytes": len(body), "seconds": seconds,
                  "raw_bytes": len(body), "series": 0}
        if count_series:
            text = gzip.decompress(body) if gz else body
            result["raw_bytes"] = len(text)
            result["series"] = sum(1 for line in text.split(b"\n")
                                   if line and not line.startswith(b"#"))
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.results.append(self.scrape())
            except OSError as e:
                self.results.append({"status": f"error: {e}", "bytes": 0, "raw_bytes": 0,
                                     "seconds": 0, "series": 0})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ------------------------------------------------------------------------------ output

ROW_HEADER = ("| config | items | s | items/s | CPU s per M items | peak RSS MiB "
              "| loadgen CPU s per M |\n|---|---|---|---|---|---|---|")


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def row(config: str, runs: list[Run]) -> str:
    med = lambda f: statistics.median(f(r) for r in runs)  # noqa: E731
    return (f"| {config} | {int(med(lambda r: r.items)):,} {runs[0].noun} "
            f"| {med(lambda r: r.seconds):.2f} | {fmt_rate(med(lambda r: r.rate))} "
            f"| {med(lambda r: r.cpu_per_m):.2f} | {med(lambda r: r.rss_kib) / 1024:.0f} "
            f"| {med(lambda r: r.gen_cpu_per_m):.2f} |")


HOP_HEADER = ("| config | spans | B/span agent→gateway | B/span both ways | agent CPU s/M "
              "| gateway CPU s/M | both CPU s/M | hop's own CPU s/M | bytes vs otlp-zstd "
              "| CPU vs otlp-zstd | hop's own CPU vs otlp-zstd |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def hop_table(configs: list[str], runs: dict, args) -> str:
    """Medians per hop config, with ratios to hop-otlp-zstd when it ran."""
    def med(c, f):
        return statistics.median(f(r) for r in runs[c])

    def up(r):
        return r.extra["bytes_up"] / r.items

    def both(r):
        return (r.extra["bytes_up"] + r.extra["bytes_down"]) / r.items

    def cpu(key):
        return lambda r: r.extra[key] / (r.items / 1e6)

    base = "hop-otlp-zstd" if "hop-otlp-zstd" in runs else None
    # The hop's own CPU: the agent's above the baseline agent's (hop-nop: same agent, nop
    # exporter), plus the gateway's. Without a baseline run it is not shown.
    floor = med("hop-nop", cpu("agent_cpu_s")) if "hop-nop" in runs else None

    def own(r):
        return cpu("agent_cpu_s")(r) - floor + cpu("gateway_cpu_s")(r)
    lines = [f"agent -> gateway hop: {args.hop_rate:,} spans/s for {args.hop_duration:g} s, "
             f"{args.hop_batch} spans per request\n", HOP_HEADER]
    for c in configs:
        ratio = lambda f: (f"{med(c, f) / med(base, f):.2f}×"  # noqa: E731
                           if base and c != "hop-nop" else "")
        hop_own = floor is not None and c != "hop-nop"
        lines.append(
            f"| {c} | {int(med(c, lambda r: r.items)):,} | {med(c, up):.1f} | {med(c, both):.1f} "
            f"| {med(c, cpu('agent_cpu_s')):.2f} | {med(c, cpu('gateway_cpu_s')):.2f} "
            f"| {med(c, lambda r: r.cpu_per_m):.2f} | {f'{med(c, own):.2f}' if hop_own else ''} "
            f"| {ratio(up)} | {ratio(lambda r: r.cpu_per_m)} "
            f"| {ratio(own) if hop_own else ''} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, in this order by default: {','.join(CONFIGS)}")
    ap.add_argument("--spans", type=int, default=5_000_000,
                    help="spans per run for ceiling-grpc/http, nop, passthrough (default "
                         "5,000,000)")
    ap.add_argument("--gateway-spans", type=int, default=4_000_000,
                    help="spans per gateway run (default 4,000,000)")
    ap.add_argument("--points", type=int, default=6_000_000,
                    help="data points per metrics and ceiling-metrics run (default 6,000,000)")
    ap.add_argument("--replay-spans", type=int, default=1_000_000,
                    help="spans in the replay config's capture (default 1,000,000)")
    ap.add_argument("--replay-rate", type=int, default=100_000,
                    help="spans/s of data time in the replay capture (default 100,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per config; medians shown")
    ap.add_argument("--decision-wait", default="1s",
                    help="tail_sampling decision_wait for the gateway (shipped: 30s)")
    ap.add_argument("--scrape-interval", type=float, default=1.0,
                    help="seconds between scrapes of :8889 in the metrics run")
    ap.add_argument("--overlay", action="append", default=[], metavar="FILE",
                    help="one more --config for the passthrough, gateway and metrics runs (what-if runs: "
                         "e.g. exporters: {otlp/jaeger: {compression: none}}); repeatable")
    ap.add_argument("--overload-senders", type=int, default=128,
                    help="concurrent senders in the overload phase of the overload config")
    ap.add_argument("--overload-seconds", type=float, default=20,
                    help="length of the overload phase")
    ap.add_argument("--overload-multiple", type=float, default=10,
                    help="overload-gateway: the overload phase offers this many times the "
                         "unloaded rate")
    ap.add_argument("--hop-rate", type=int, default=20_000,
                    help="spans/s the generator sends to the agent in the hop configs")
    ap.add_argument("--hop-duration", type=float, default=60,
                    help="seconds of traffic per hop run (default 60)")
    ap.add_argument("--hop-batch", type=int, default=500, help="spans per request in hop runs")
    ap.add_argument("--hop-pool", type=int, default=256,
                    help="distinct pre-generated requests in hop runs (default 256: 128,000 "
                         "spans before one repeats)")
    ap.add_argument("--batch", type=int, default=500, help="items per request")
    ap.add_argument("--pool", type=int, default=64, help="distinct pre-generated requests")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per step before failing")
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "sluice"))
    ap.add_argument("--apiserver-bin",
                    help="the fake Kubernetes API server for the agent config (default: "
                         "sluice-fake-apiserver beside --bin, else the debug build's)")
    ap.add_argument("--json", help="also write every run and check to this file")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 20,000 items per config, one run, scrapes every 0.2 s")
    args = ap.parse_args()
    if args.quick:
        args.spans = args.gateway_spans = args.points = args.replay_spans = 20_000
        args.repeat, args.scrape_interval = 1, 0.2
        args.batch, args.pool = 250, 8
        args.overload_senders, args.overload_seconds = 16, 2
        args.hop_duration, args.hop_rate, args.hop_pool = 2, 10_000, 16
    configs = []
    for c in (c.strip() for c in args.configs.split(",")):
        configs += list(HOP_CONFIGS) if c == "hop" else [c] if c else []
    known = CONFIGS + OPT_IN_CONFIGS + list(HOP_CONFIGS)
    unknown = [c for c in configs if c not in known]
    if unknown:
        ap.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(known)}, hop")
    parse_seconds(args.decision_wait)
    if not Path(args.bin).exists():
        ap.error(f"{args.bin} does not exist (build it: cargo build --release --bin sluice)")
    if not args.apiserver_bin:
        beside = Path(args.bin).parent / "sluice-fake-apiserver"
        args.apiserver_bin = str(beside if beside.exists()
                                 else ROOT / "target" / "debug" / "sluice-fake-apiserver")

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    global WORKDIR
    workdir = WORKDIR = Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    h = Harness(args, workdir)
    runs: dict[str, list[Run]] = {}
    try:
        for k in range(args.repeat):
            for c in configs:
                log(f"[{k + 1}/{args.repeat}] {c} ...")
                if c.startswith("ceiling-"):
                    r = h.ceiling(c)
                elif c in HOP_CONFIGS:
                    r = h.hop(c)
                elif c in ("loadbalancing", "loadbalancing-flight"):
                    r = h.passthrough(c)
                elif c == "overload-gateway":
                    r = h.overloaded(c)
                else:
                    r = getattr(h, c)()
                runs.setdefault(c, []).append(r)
                failed = [x for x in r.checks if not x[1]]
                log(f"    {r.items:,} {r.noun} in {r.seconds:.2f} s: {fmt_rate(r.rate)} "
                    f"{r.noun}/s, {r.cpu_per_m:.2f} CPU s per M, {r.rss_kib / 1024:.0f} MiB, "
                    f"checks {'FAILED' if failed else 'ok'}")
    except HarnessError as e:
        cleanup()
        print(f"error: {e}", file=sys.stderr)
        print(f"(logs in {workdir})", file=sys.stderr)
        return 2

    print(f"\nsluice end-to-end, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; medians of {args.repeat} run(s)\n")
    main_configs = [c for c in configs if c not in HOP_CONFIGS]
    if main_configs:
        print(ROW_HEADER)
        for c in main_configs:
            print(row(c, runs[c]))
        print()
    hops = [c for c in configs if c in HOP_CONFIGS]
    if hops:
        print(hop_table(hops, runs, args))
        print()
    for c in configs:
        for i, r in enumerate(runs[c]):
            extra = ", ".join(f"{k} {v:,.0f}" if isinstance(v, float) and abs(v) >= 10
                              else f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in r.extra.items() if k != "latency_us")
            print(f"- {c} run {i + 1}: {r.items:,} {r.noun}, {r.seconds:.2f} s, "
                  f"{fmt_rate(r.rate)}/s, {r.cpu_per_m:.2f} CPU s per M, "
                  f"{r.rss_kib / 1024:.0f} MiB, loadgen {r.gen_cpu_per_m:.2f} CPU s per M"
                  + (f"; {extra}" if extra else ""))
            for note in r.notes:
                print(f"  note: {note}")
    all_checks = [(c, x) for c in configs for r in runs[c] for x in r.checks]
    failed = [(c, x) for c, x in all_checks if not x[1]]
    print(f"\nchecks: {len(all_checks) - len(failed)} of {len(all_checks)} passed")
    for c, (what, _, detail) in failed:
        print(f"  FAILED {c}: {what}: {detail}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"configs": configs, "repeat": args.repeat, "decision_wait": args.decision_wait,
             "runs": {c: [r.to_json() for r in runs[c]] for c in configs},
             "checks_failed": len(failed)}, indent=2))
    if not failed:
        for p in workdir.iterdir():
            p.unlink()
        workdir.rmdir()
    else:
        print(f"(logs in {workdir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
