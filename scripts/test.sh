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
.venv/bin/pytest -q tests/e2e
