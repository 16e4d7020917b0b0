"""Config errors: `sluice validate` and `sluice --config` refuse unknown fields with a message
that names the field's path in the file."""

import subprocess
import time

import pytest

from conftest import otlp_receiver, pipelines, run_sluice, sluice_bin, to_yaml


def good_config() -> dict:
    return {
        "receivers": {"otlp": otlp_receiver()},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {"debug": {}},
        "service": {"pipelines": pipelines(["otlp"], ["batch"], ["debug"])},
    }


def _set(d: dict, path: list[str], value):
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


# unknown field -> its path in the file
TYPOS = {
    "receiver_field": ["receivers", "otlp", "protocols", "grpc", "endpiont"],
    "processor_field": ["processors", "batch", "send_batch_sise"],
    "exporter_field": ["exporters", "debug", "verbosty"],
    "service_field": ["service", "telemetry", "metrics", "adress"],
}


def bad_config_file(tmp_path, case) -> tuple:
    cfg = good_config()
    path = TYPOS[case]
    _set(cfg, path, "127.0.0.1:1" if "endpiont" in path or "adress" in path else 7)
    f = tmp_path / f"{case}.yaml"
    f.write_text(to_yaml(cfg) + "\n")
    return f, path


def assert_names_path(output: str, path: list[str], what: str):
    assert path[-1] in output, f"{what}: message does not name the field {path[-1]!r}:\n{output}"
    missing = [p for p in path[:-1] if p not in output]
    assert not missing, (f"{what}: message does not give the path {'.'.join(path)} "
                         f"(missing {missing}):\n{output}")


def test_validate_accepts_good_config(tmp_path):
    f = tmp_path / "good.yaml"
    f.write_text(to_yaml(good_config()) + "\n")
    r = run_sluice(["validate", "--config", str(f)])
    assert r.returncode == 0, f"validate refused a good config (exit {r.returncode}):\n{r.stdout}"


@pytest.mark.parametrize("case", list(TYPOS))
def test_validate_refuses_unknown_field(tmp_path, case):
    f, path = bad_config_file(tmp_path, case)
    r = run_sluice(["validate", "--config", str(f)])
    assert r.returncode != 0, f"validate accepted an unknown field {'.'.join(path)}"
    assert_names_path(r.stdout, path, "sluice validate")


@pytest.mark.parametrize("case", ["receiver_field", "exporter_field"])
def test_run_refuses_unknown_field(tmp_path, case):
    f, path = bad_config_file(tmp_path, case)
    p = subprocess.Popen([str(sluice_bin()), "--config", str(f)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                         errors="replace")
    try:
        out, _ = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=5)
        pytest.fail(f"sluice kept running with an unknown field {'.'.join(path)}:\n{out}")
    assert p.returncode != 0, f"sluice exited 0 with an unknown field:\n{out}"
    assert_names_path(out, path, "sluice --config")


def test_validate_missing_file(tmp_path):
    r = run_sluice(["validate", "--config", str(tmp_path / "nope.yaml")])
    assert r.returncode != 0
    assert "nope.yaml" in r.stdout, r.stdout
