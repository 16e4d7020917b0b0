"""scripts/setup-test-env.sh on a machine without Debian's python3-venv: creating the venv
fails the way Debian's python3 fails (no ensurepip), and the script installs python3-venv
with apt-get, as it installs prometheus, then creates the venv.

The real script runs from a copy of the repository's scripts/ and requirements; `python3`,
`apt-get` and `sudo` are stand-ins on PATH that behave as the real ones do on such a machine
(the stand-in python delegates everything but `-m venv` and `-m pip` to the real one), and
record how they were called. Nothing is installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

FAKE_PYTHON = r"""#!/bin/sh
# Debian's python3 without python3-venv: `-m venv` fails for lack of ensurepip until the
# stand-in apt-get has "installed" python3-venv.
echo "python $*" >>"$CALLS"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    if [ ! -e "$STATE/python3-venv" ]; then
        echo "The virtual environment was not created successfully because ensurepip is not"
        echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
        echo "package using the following command."
        mkdir -p "$3/bin"   # the half-made venv Debian's python leaves behind
        exit 1
    fi
    mkdir -p "$3/bin" && ln -sf "$0" "$3/bin/python"
    exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi
exec "$REAL_PYTHON" "$@"
"""

FAKE_APT = r"""#!/bin/sh
echo "apt-get $*" >>"$CALLS"
if [ "$1" = "install" ]; then
    for p in "$@"; do touch "$STATE/$p"; done
fi
exit 0
"""

FAKE_SUDO = r"""#!/bin/sh
[ "$1" = "-n" ] && shift
exec "$@"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_setup_installs_python3_venv_when_venv_creation_needs_it(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "tests" / "e2e").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "scripts" / "setup-test-env.sh", repo / "scripts")
    shutil.copy(REPO_ROOT / "tests" / "e2e" / "requirements.txt", repo / "tests" / "e2e")
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    calls = tmp_path / "calls.log"
    _executable(bin_dir / "python3", FAKE_PYTHON)
    _executable(bin_dir / "apt-get", FAKE_APT)
    _executable(bin_dir / "sudo", FAKE_SUDO)
    # promtool, prometheus and openssl are taken as present: this test is about the venv.
    for tool in ("promtool", "prometheus", "openssl"):
        _executable(bin_dir / tool, "#!/bin/sh\nexit 0\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
               CALLS=str(calls), STATE=str(state), REAL_PYTHON=sys.executable,
               PYTHON="python3")
    r = subprocess.run(["bash", str(repo / "scripts" / "setup-test-env.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    log = calls.read_text()
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{log}"
    assert "installing Debian package(s): python3-venv" in r.stdout, r.stdout
    assert "apt-get install -y -qq --no-install-recommends python3-venv" in log, log
    # The venv was made after the install, by the retried `python3 -m venv`.
    assert log.count(f"python -m venv {repo / '.venv'}") == 2, log
    assert (repo / ".venv" / "bin" / "python").exists()
    assert ".venv ready" in r.stdout, r.stdout

    # Run again: nothing to do, nothing installed.
    calls.write_text("")
    r = subprocess.run(["bash", str(repo / "scripts" / "setup-test-env.sh")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "apt-get" not in calls.read_text()
