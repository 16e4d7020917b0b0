#!/usr/bin/env bash
# The one test command: environment, build, Rust tests, end-to-end tests.
# Exits non-zero if any step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { echo; echo "==> $*"; }

step "setup test environment"
bash scripts/setup-test-env.sh

step "cargo build (sluice binary; the fake Kubernetes API server and instance metadata service the agent tests run)"
cargo build --bin sluice
cargo build -p sluice-k8s --features testing --bin sluice-fake-apiserver --bin sluice-fake-imds

step "cargo check (benchmarks and examples: not built by the tests, kept compiling)"
cargo check -p sluice-benches --benches --examples

step "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-tests=pass
else
    cargo test --workspace
fi

step "end-to-end tests (pytest)"
export SLUICE_BIN="${SLUICE_BIN:-$ROOT/target/debug/sluice}"
# test_image.py runs in the image step below, with the image it builds.
.venv/bin/pytest -q tests/e2e --ignore=tests/e2e/test_image.py

# The container image (Containerfile) built as a user would build it, then run by podman: the
# release image itself (cargo profile `dist`, fat LTO) inside a Debian builder. Cold, on 2 cores,
# that is about 15 CPU-minutes, the same as the `dist-fast` profile (no cross-crate LTO) costs:
# fat LTO only moves ~4 of them into a serial tail (BENCHMARKS.md, "Container image"), so CI
# tests what ships. SLUICE_IMAGE_PROFILE=dist-fast picks the other profile.
# SLUICE_SKIP_IMAGE=1 leaves it out of a local run; CI always runs it.
step "container image (scripts/image.sh, tests/e2e/test_image.py)"
if [[ "${SLUICE_SKIP_IMAGE:-0}" == 1 && "${CI:-}" != true ]]; then
    echo "SKIPPED: SLUICE_SKIP_IMAGE=1"
else
    export SLUICE_IMAGE="localhost/sluice:test"
    set +e
    bash scripts/image.sh --profile "${SLUICE_IMAGE_PROFILE:-dist}"
    rc=$?
    set -e
    if [[ $rc == 77 ]]; then
        echo "SKIPPED: podman cannot run containers on this machine (the reason is above);"
        echo "         the image was not built and tests/e2e/test_image.py did not run"
    elif [[ $rc != 0 ]]; then
        echo "scripts/image.sh failed (exit $rc)" >&2
        exit "$rc"
    else
        .venv/bin/pytest -q tests/e2e/test_image.py
    fi
fi
