"""Harness for whole-binary tests of sluice.

- `free_port()`: a free TCP port on 127.0.0.1.
- `sluice` fixture: a factory. `sluice(config_dict)` writes the config as Collector-format YAML
  to a temp dir, fills in the health_check extension and the self-telemetry address on free
  ports, starts `$SLUICE_BIN --config that.yaml`, waits (bounded) until health_check answers
  200 and returns a `Sluice`. At teardown every instance gets SIGTERM and must exit 0 in time.
  `sluice(overrides, base=SHIPPED_YAML)` runs a shipped config as it is, with the dict as a
  second `--config` merged over it (as the Collector merges files): listeners on free ports.
  Its log (stdout+stderr) is attached to the report of a failing test.
- `sink` fixture: a started `OtlpSink`.
- `Sluice.metric(name, **labels)`: scrape self-telemetry (Prometheus text) and sum the series
  of that name whose labels include the given ones.

SLUICE_BIN: path of the binary (default target/debug/sluice under the repo root).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from otlp_sink import OtlpSink, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = float(os.environ.get("SLUICE_E2E_STARTUP_TIMEOUT", "20"))
SHUTDOWN_TIMEOUT_S = float(os.environ.get("SLUICE_E2E_SHUTDOWN_TIMEOUT", "15"))

__all__ = ["free_port", "sluice_bin", "to_yaml", "otlp_receiver", "pipelines", "Sluice",
           "parse_prometheus", "metric_sum", "run_sluice"]


def sluice_bin() -> Path:
    p = Path(os.environ.get("SLUICE_BIN", "target/debug/sluice"))
    return p if p.is_absolute() else REPO_ROOT / p


# ------------------------------------------------------------------------------ YAML


_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*", s) and s.lower() not in _YAML_WORDS:
        return s  # plain scalar: receiver names, durations, paths
    return json.dumps(s)  # a double-quoted JSON string is a valid YAML scalar


def to_yaml(obj, indent: int = 0) -> str:
    """Block-style YAML for dicts/lists/scalars (what a person would write in a Collector
    config). Empty dicts and lists are written in flow style: `{}` / `[]`."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k if re.fullmatch(r"[A-Za-z0-9_./-]+", str(k)) else json.dumps(str(k))
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, dict):
                lines.append(f"{pad}{key}: {{}}")
            elif isinstance(v, list):
                lines.append(f"{pad}{key}: []")
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1).lstrip()
                lines.append(f"{pad}- {inner}")
            else:
                flow = "{}" if isinstance(v, dict) else "[]"
                lines.append(f"{pad}- {flow if isinstance(v, (dict, list)) else _scalar(v)}")
    else:
        lines.append(pad + _scalar(obj))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ config helpers


def otlp_receiver(grpc_port: int | None = None, http_port: int | None = None,
                  http_extra: dict | None = None, grpc_extra: dict | None = None) -> dict:
    """An `otlp` receiver on free loopback ports (both protocols)."""
    grpc_port = grpc_port or free_port()
    http_port = http_port or free_port()
    return {
        "protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{grpc_port}", **(grpc_extra or {})},
            "http": {"endpoint": f"127.0.0.1:{http_port}", **(http_extra or {})},
        }
    }


def pipelines(receivers, processors, exporters,
              signals=("traces", "metrics", "logs")) -> dict:
    return {s: {"receivers": list(receivers), "processors": list(processors),
                "exporters": list(exporters)} for s in signals}


# ------------------------------------------------------------------------------ Prometheus text

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text: str) -> list[tuple[str, dict, float]]:
    """Prometheus text exposition -> [(name, labels, value)]."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {}
        if m.group("labels"):
            for lk, lv in _LABEL.findall(m.group("labels")):
                labels[lk] = lv.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        out.append((m.group("name"), labels, value))
    return out


def metric_sum(text: str, name: str, **labels) -> float | None:
    """Sum of the series called `name` whose labels include `labels`; None if there is none."""
    vals = [v for n, l, v in parse_prometheus(text)
            if n == name and all(l.get(k) == str(want) for k, want in labels.items())]
    return sum(vals) if vals else None


# ------------------------------------------------------------------------------ the process


class Sluice:
    def __init__(self, config: dict, workdir: Path, name: str = "sluice",
                 base: Path | None = None):
        self.name = name
        self.base = base  # a config file given first, `config` merged over it
        self.workdir = workdir
        self.config = config
        ext = config.setdefault("extensions", {})
        hc = ext.setdefault("health_check", {})
        hc.setdefault("endpoint", f"127.0.0.1:{free_port()}")
        svc = config.setdefault("service", {})
        svc_ext = svc.setdefault("extensions", [])
        if "health_check" not in svc_ext:
            svc_ext.append("health_check")
        tel = svc.setdefault("telemetry", {}).setdefault("metrics", {})
        tel.setdefault("address", f"127.0.0.1:{free_port()}")
        self.health_url = f"http://{hc['endpoint']}{hc.get('path', '/')}"
        self.metrics_url = f"http://{tel['address']}/metrics"
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(to_yaml(config) + "\n")
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.exit_reported = False  # the test already failed on this exit

    # -- receiver endpoints (of the first otlp receiver) --
    def _otlp_proto(self, proto: str) -> str:
        for rname, r in self.config.get("receivers", {}).items():
            if rname.split("/")[0] == "otlp":
                return r["protocols"][proto]["endpoint"]
        raise KeyError("no otlp receiver in config")

    @property
    def grpc_endpoint(self) -> str:
        return self._otlp_proto("grpc")

    @property
    def http_endpoint(self) -> str:
        return "http://" + self._otlp_proto("http")

    # -- lifecycle --
    def start(self, wait_ready: bool = True, timeout: float = STARTUP_TIMEOUT_S) -> "Sluice":
        binary = sluice_bin()
        if not binary.exists():
            pytest.fail(f"sluice binary not found at {binary} (set SLUICE_BIN, or cargo build)")
        self._log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        configs = ([self.base] if self.base else []) + [self.config_path]
        self.proc = subprocess.Popen(
            [str(binary), *(a for c in configs for a in ("--config", str(c)))],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=env)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_reported = True
                pytest.fail(f"{self.name} exited with code {rc} before it was ready "
                            f"(health_check {self.health_url}); config {self.config_path}\n"
                            f"log tail:\n{self.log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(self.health_url, timeout=1) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.1)
        pytest.fail(f"{self.name} not ready after {timeout}s: health_check {self.health_url}: "
                    f"{last}\nlog tail:\n{self.log_tail()}", pytrace=False)

    def stop(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int | None:
        """SIGTERM, wait; SIGKILL after the timeout. Returns the exit code (None if killed)."""
        if self.proc is None:
            return 0
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                rc = None
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # -- self-telemetry --
    def scrape(self, timeout: float = 5) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=timeout) as r:
            assert r.status == 200, f"self-telemetry {self.metrics_url}: HTTP {r.status}"
            return r.read().decode()

    def metric(self, name: str, **labels) -> float | None:
        """Sum of the matching series; None when no series matches."""
        return metric_sum(self.scrape(), name, **labels)

    def wait_metric(self, name: str, predicate, timeout: float = 10, **labels):
        """Poll until predicate(value) holds (value may be None); returns the last value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, **labels)
            if predicate(v) or time.monotonic() > deadline:
                return v
            time.sleep(0.2)


def run_sluice(args: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    """Run the binary to completion (e.g. `validate`), output captured (stderr merged)."""
    return subprocess.run([str(sluice_bin()), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=timeout, text=True, errors="replace")


# ------------------------------------------------------------------------------ fixtures

_PROCS_ATTR = "_sluice_instances"


@pytest.fixture
def sluice(request, tmp_path):
    """Factory: sluice(config, name=..., wait_ready=True, base=None) -> started Sluice."""
    instances: list[Sluice] = []
    setattr(request.node, _PROCS_ATTR, instances)

    def start(config: dict, name: str | None = None, wait_ready: bool = True,
              base: Path | None = None) -> Sluice:
        s = Sluice(config, tmp_path, name or f"sluice{len(instances) + 1}", base)
        instances.append(s)
        return s.start(wait_ready=wait_ready)

    yield start

    problems = []
    for s in reversed(instances):  # downstream-last order does not matter; stop all
        if s.proc is None:
            continue
        already = s.proc.poll()
        rc = s.stop()
        if already is not None and s.exit_reported:
            continue
        if already is not None:
            problems.append(f"{s.name} had already exited (code {already}) before teardown")
        elif rc is None:
            problems.append(f"{s.name} did not exit within {SHUTDOWN_TIMEOUT_S}s of SIGTERM "
                            f"(killed)")
        elif rc != 0:
            problems.append(f"{s.name} exited with code {rc} after SIGTERM")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(
            f"--- {s.name} log tail ---\n{s.log_tail()}" for s in instances), pytrace=False)


@pytest.fixture
def sink():
    s = OtlpSink().start()
    yield s
    s.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for s in getattr(item, _PROCS_ATTR, []):
            report.sections.append((f"{s.name} log ({s.log_path})", s.log_tail(200)))
            report.sections.append((f"{s.name} config", s.config_path.read_text()))
    return report
