"""scripts/dist.sh: the shipped binary without its debug info (small), still running, and the
debug info kept beside it in sluice.debug, linked by .gnu_debuglink (where Rust's backtraces
find file and line)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO_ROOT, sluice_bin


def sections(path) -> set[str]:
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {w for line in out.splitlines() for w in line.split() if w.startswith(".")}


@pytest.mark.skipif(shutil.which("objcopy") is None or shutil.which("readelf") is None,
                    reason="binutils (objcopy, readelf) not installed")
def test_dist_splits_the_debug_info_off_the_binary(tmp_path):
    built = sluice_bin()
    assert ".debug_line" in sections(built), "the binary under test has no line tables to split"
    r = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "dist.sh"), str(built),
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shipped, debug = tmp_path / "sluice", tmp_path / "sluice.debug"
    # .debug_gdb_scripts is loaded data (a pointer to gdb's pretty-printers), not debug info.
    left = {s for s in sections(shipped) if s.startswith(".debug_")} - {".debug_gdb_scripts"}
    assert not left, left
    assert ".gnu_debuglink" in sections(shipped)
    # The section is the file name, then its CRC32 (binary, not text).
    link = subprocess.run(["readelf", "--string-dump=.gnu_debuglink", str(shipped)],
                          capture_output=True, check=True).stdout
    assert b"sluice.debug" in link, link
    assert ".debug_line" in sections(debug)
    # A release binary loses most of its size (its code is small beside the line tables); a
    # debug one, which the suite builds, less.
    assert shipped.stat().st_size < built.stat().st_size * 0.9, (
        shipped.stat().st_size, built.stat().st_size)
    v = subprocess.run([str(shipped), "--version"], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.startswith("sluice "), v
    assert "dist: " in r.stdout and "MiB" in r.stdout, r.stdout
