"""sluice's container image (Containerfile, built by scripts/image.sh), run by podman.

The image is what `SLUICE_IMAGE` names, in the podman storage scripts/podman.sh uses;
scripts/test.sh's image step builds it and sets the variable. Without it these tests are
skipped (the rest of tests/e2e runs without podman).

- The image: user 65532, entrypoint /sluice, the OCI labels, and nothing but the static
  binary, the CA bundle, /etc/passwd, /etc/group and /tmp (no shell).
- A container started with `--network host` and no `--init` (sluice is PID 1) answers on
  health_check, takes OTLP from the OpenTelemetry Python SDK and exports it to a sink, and on
  SIGTERM (`podman stop`) exits 0 within 5 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, otlp_receiver, pipelines, to_yaml
from sdk_workload import SdkClient, check_all

IMAGE = os.environ.get("SLUICE_IMAGE", "")
PODMAN = ["bash", str(REPO_ROOT / "scripts" / "podman.sh")]

pytestmark = pytest.mark.skipif(
    not IMAGE, reason="SLUICE_IMAGE not set: scripts/test.sh's image step builds the image "
                      "(bash scripts/image.sh) and runs these tests with it")


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {out.returncode}:\n{out.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="module")
def inspect() -> dict:
    return json.loads(podman("image", "inspect", IMAGE).stdout)[0]


def test_image_runs_as_65532_with_oci_labels(inspect):
    config = inspect["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/sluice"]
    assert not config.get("Cmd")
    labels = config["Labels"]
    for key in ("title", "description", "licenses", "version", "revision", "created"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == "sluice"
    assert inspect["Os"] == "linux"


def test_image_holds_the_static_binary_the_ca_bundle_and_nothing_else(tmp_path):
    name = f"sluice-files-{os.getpid()}"
    podman("create", "--name", name, IMAGE)
    try:
        archive = tmp_path / "fs.tar"
        podman("export", "--output", str(archive), name)
    finally:
        podman("rm", "--force", name, check=False)
    with tarfile.open(archive) as tar:
        members = {m.name.lstrip("./").rstrip("/"): m for m in tar.getmembers()}
        files = {n for n, m in members.items() if m.isfile()}
        # podman adds the mount points it manages (/etc/hosts, /etc/resolv.conf, /proc, ...)
        # to every container; the image itself brings only these files:
        own = {n for n in files if n not in ("etc/hosts", "etc/resolv.conf", "etc/hostname",
                                             "run/.containerenv")}
        assert own == {"sluice", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group"}
        assert not any(n.startswith(("bin/", "usr/")) for n in members), "a shell or tools"
        binary = tar.extractfile(members["sluice"]).read()
        passwd = tar.extractfile(members["etc/passwd"]).read().decode()
        ca = tar.extractfile(members["etc/ssl/certs/ca-certificates.crt"]).read().decode()
        assert members["tmp"].isdir() and members["tmp"].mode & 0o1777 == 0o1777
    assert binary[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in binary, "dynamically linked: the image has no loader"
    assert "nonroot:x:65532:65532:" in passwd
    assert ca.count("BEGIN CERTIFICATE") > 100


def test_no_shell_in_the_image():
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", IMAGE, "-c", "true",
                 check=False)
    assert out.returncode != 0


def wait_healthy(url: str, container: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state in ("exited", "stopped"):
            break
        time.sleep(0.2)
    logs = podman("logs", container, check=False)
    pytest.fail(f"container not healthy on {url}: {last}\n{logs.stdout}{logs.stderr}", pytrace=False)


def test_container_serves_otlp_to_a_sink_and_stops_on_sigterm(tmp_path, sink):
    grpc_port, http_port, health_port, telemetry_port = (free_port() for _ in range(4))
    config = {
        "receivers": {"otlp": otlp_receiver(grpc_port, http_port)},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"otlp": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": pipelines(["otlp"], ["batch"], ["otlp"]),
            "telemetry": {"metrics": {"address": f"127.0.0.1:{telemetry_port}"}},
        },
    }
    config_file = tmp_path / "collector.yaml"
    config_file.write_text(to_yaml(config) + "\n")
    config_file.chmod(0o644)
    name = f"sluice-e2e-{os.getpid()}"
    # No --init: sluice itself is PID 1 and must handle SIGTERM (the kernel ignores signals
    # without a handler for PID 1). No -t: logs are plain.
    podman("run", "--detach", "--name", name, "--network", "host",
           "--volume", f"{config_file}:/conf/collector.yaml:ro",
           IMAGE, "--config=/conf/collector.yaml")
    try:
        wait_healthy(f"http://127.0.0.1:{health_port}/", name)
        host_pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        nspid = [line for line in Path(f"/proc/{host_pid}/status").read_text().splitlines()
                 if line.startswith("NSpid:")]
        assert nspid and nspid[0].split()[-1] == "1", f"sluice is not PID 1 in the container: {nspid}"
        uid = [line for line in Path(f"/proc/{host_pid}/status").read_text().splitlines()
               if line.startswith("Uid:")][0].split()[1:]
        assert set(uid) == {"65532"}

        client = SdkClient("grpc", f"127.0.0.1:{grpc_port}")
        try:
            sent = client.send_all()
        finally:
            client.shutdown()
        check_all(sent, sink, timeout=20)

        start = time.monotonic()
        # podman stop sends SIGTERM, then SIGKILL after the timeout (here 10 s, so a kill
        # would show as a non-zero exit and a longer stop).
        podman("stop", "--time", "10", name, timeout=30)
        stopped_after = time.monotonic() - start
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout)
        logs = podman("logs", name, check=False)
        assert code == 0, f"exit code {code}\n{logs.stdout}{logs.stderr}"
        assert stopped_after < 5, f"stopped {stopped_after:.1f} s after SIGTERM"
        assert "SIGTERM" in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", name, check=False)
