#!/usr/bin/env bash
# End-to-end benchmark: builds a release sluice, then runs benches/e2e.py (every config,
# medians of repeated runs, self-telemetry cross-checks) and prints the table.
#
#   bash benches/e2e.sh                                  # everything, 3 runs each
#   bash benches/e2e.sh --configs gateway --repeat 1     # one config, once
#   bash benches/e2e.sh --help                           # counts, decision_wait, scrape interval
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin sluice -q
# The agent config's Kubernetes API (a test fake; its own cost is not measured: debug is fine).
cargo build -p sluice-k8s --features testing --bin sluice-fake-apiserver -q
exec python3 benches/e2e.py "$@"
