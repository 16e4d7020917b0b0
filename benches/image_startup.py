#!/usr/bin/env python3
"""Startup and stop time of sluice's container image, and of its binary alone.

    bash scripts/image.sh                                  # builds localhost/sluice:<version>
    python3 benches/image_startup.py [--image IMAGE] [--runs 15]

Both run the gateway of the reference deployment (k8s/config/gateway.yaml, JAEGER_ENDPOINT
pointing at a closed port: the exporter retries in the background and startup does not wait for
it) with its listeners moved to free loopback ports by a second config file merged over it, as
the Kubernetes manifests run it (same config, memory limit 512 MiB as the gateway pods have).

- container: from `podman run --detach --network host` (scripts/podman.sh: rootful, runc) to
  the first 200 from health_check, then from `podman stop` (SIGTERM) to the container's exit;
- binary: the same /sluice copied out of the image, started directly on the host, from exec to
  the first 200 from health_check, then from SIGTERM to its exit.

The difference between the two is podman and runc (container setup), not sluice. Prints the
median, minimum and maximum of each over --runs runs; health_check is polled every 2 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PODMAN = ["bash", str(ROOT / "scripts" / "podman.sh")]
GATEWAY = ROOT / "k8s" / "config" / "gateway.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        sys.exit(f"podman {' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    return out


def wait_healthy(url: str, start: float, alive, timeout: float = 30) -> float:
    """Seconds from `start` to the first 200 on url."""
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=0.5) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            pass
        if not alive():
            break
        time.sleep(0.002)
    raise SystemExit(f"not healthy on {url} after {time.monotonic() - start:.1f} s")


def overrides(directory: Path) -> tuple[Path, str]:
    """A config merged over gateway.yaml: every listener on a free loopback port."""
    health = free_port()
    text = f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{free_port()}}}
      http: {{endpoint: 127.0.0.1:{free_port()}}}
exporters:
  prometheus: {{endpoint: 127.0.0.1:{free_port()}}}
extensions:
  health_check: {{endpoint: 127.0.0.1:{health}}}
service:
  telemetry:
    metrics: {{address: 127.0.0.1:{free_port()}}}
"""
    path = directory / "ports.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path, f"http://127.0.0.1:{health}/"


def run_container(image: str, work: Path, env: dict[str, str]) -> tuple[float, float]:
    ports, url = overrides(work)
    name = f"sluice-startup-{os.getpid()}"
    env_args = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
    start = time.monotonic()
    podman("run", "--detach", "--name", name, "--network", "host", "--memory", "512m",
           *env_args,
           "--volume", f"{GATEWAY}:/conf/collector.yaml:ro",
           "--volume", f"{ports}:/conf/ports.yaml:ro",
           image, "--config=/conf/collector.yaml", "--config=/conf/ports.yaml")
    try:
        def alive() -> bool:
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False)
            return state.stdout.strip() == "running"
        ready = wait_healthy(url, start, alive)
        start = time.monotonic()
        podman("stop", "--time", "10", name)
        stopped = time.monotonic() - start
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        if code != "0":
            sys.exit(f"container exited {code}:\n{podman('logs', name, check=False).stderr}")
        return ready, stopped
    finally:
        podman("rm", "--force", name, check=False)


def run_binary(binary: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    ports, url = overrides(work)
    start = time.monotonic()
    proc = subprocess.Popen([str(binary), f"--config={GATEWAY}", f"--config={ports}"],
                            env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = wait_healthy(url, start, lambda: proc.poll() is None)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        stopped = time.monotonic() - start
        if code != 0:
            sys.exit(f"sluice exited {code}")
        return ready, stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def report(label: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(f"{label:<38} median {statistics.median(ms):7.1f} ms   "
          f"min {min(ms):7.1f}   max {max(ms):7.1f}   (n={len(ms)})")


def main() -> None:
    version = next(line.split('"')[1] for line in (ROOT / "Cargo.toml").read_text().splitlines()
                   if line.startswith("version = "))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("SLUICE_IMAGE", f"localhost/sluice:{version}"))
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    # A closed port: the Jaeger exporter connects lazily and retries; startup does not wait.
    env = {"JAEGER_ENDPOINT": f"127.0.0.1:{free_port()}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        name = f"sluice-startup-copy-{os.getpid()}"
        podman("create", "--name", name, args.image)
        try:
            podman("cp", f"{name}:/sluice", str(work / "sluice"))
        finally:
            podman("rm", "--force", name, check=False)
        size = podman("image", "inspect", "--format", "{{.Size}}", args.image).stdout.strip()
        print(f"image {args.image}: {int(size) / 1e6:.1f} MB uncompressed; "
              f"/sluice {(work / 'sluice').stat().st_size / 1e6:.1f} MB")

        container = [run_container(args.image, work, env) for _ in range(args.runs)]
        binary = [run_binary(work / "sluice", work, env) for _ in range(args.runs)]
    report("container: podman run -> healthy", [r for r, _ in container])
    report("container: podman stop -> exited", [s for _, s in container])
    report("binary: exec -> healthy", [r for r, _ in binary])
    report("binary: SIGTERM -> exited", [s for _, s in binary])


if __name__ == "__main__":
    main()
