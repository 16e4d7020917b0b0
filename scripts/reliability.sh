#!/usr/bin/env bash
# The full-length reliability runs of tests/e2e/test_persistent_queue.py (CI runs a 10 s outage
# and 5 kill rounds): the OpenTelemetry Python SDK sends steadily while
#   - the backend is down for 60 s, and sluice is SIGKILLed and restarted halfway through;
#   - sluice is SIGKILLed at 20 random moments under load and restarted each time.
# Each prints a `RELIABILITY` line: spans made, acknowledged to the SDK, delivered (unique),
# duplicates, and acked − delivered (must be 0).
#
#   bash scripts/reliability.sh [outage_seconds] [kill_rounds]   # defaults 60 20
#   SLUICE_SPANS_PER_S=1000 SLUICE_KILL_SEED=7 bash scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
outage="${1:-60}"
rounds="${2:-20}"
[ -x .venv/bin/pytest ] || bash scripts/setup-test-env.sh
cargo build --bin sluice
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
SLUICE_BIN="${SLUICE_BIN:-$PWD/target/debug/sluice}" SLUICE_OUTAGE_S="$outage" \
  SLUICE_KILL_ROUNDS="$rounds" \
  .venv/bin/pytest -q -s -o timeout=0 tests/e2e/test_persistent_queue.py \
  -k "outage or crash_loop" | tee "$log"
echo
echo "== figures"
grep '^RELIABILITY' "$log" || { echo "no RELIABILITY lines: see above"; exit 1; }
