#!/usr/bin/env bash
# End-to-end load benchmark: a release sluice on loopback, driven by `sluice loadgen` for a
# fixed number of spans; reports spans/s, CPU seconds per million spans (utime+stime of the
# sluice process, from /proc) and its peak RSS (VmHWM).
#
#   bash benches/e2e.sh [SPANS]        # default 5,000,000
#
# Configs (benches/e2e/): nop (the generator's ceiling: receive, decode, drop) and passthrough
# (receive, batch, export over OTLP/gRPC to a second sluice that drops). The gateway traces
# pipeline and metrics -> Prometheus join when their processors/exporter land. Everything
# shares this machine's cores: the figures are for the whole loopback setup.
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS="${1:-5000000}"
cargo build --release --bin sluice -q
BIN=target/release/sluice
TICKS=$(getconf CLK_TCK)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() { # port
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0; sleep 0.1; done
  echo "sluice did not become healthy on :$1" >&2; return 1
}
metric() { # telemetry-port name-with-labels-regex -> value (0 if absent)
  curl -s "http://127.0.0.1:$1/metrics" | awk -v re="^$2 " '$0 ~ re {v=$NF} END {print v+0}'
}

export SINK_GRPC_PORT=$(free_port) SINK_HEALTH_PORT=$(free_port) SINK_TELEMETRY_PORT=$(free_port)
$BIN --config benches/e2e/sink.yaml 2>/dev/null & PIDS+=($!)
wait_healthy "$SINK_HEALTH_PORT"

printf '| config | spans | seconds | spans/s | CPU s per M spans | peak RSS MiB |\n|---|---|---|---|---|---|\n'
for config in nop passthrough; do
  export GRPC_PORT=$(free_port) HEALTH_PORT=$(free_port) TELEMETRY_PORT=$(free_port)
  $BIN --config "benches/e2e/$config.yaml" 2>/dev/null & pid=$!; PIDS+=($pid)
  wait_healthy "$HEALTH_PORT"
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
  start=$(date +%s.%N)
  $BIN loadgen traces --endpoint "127.0.0.1:$GRPC_PORT" --count "$SPANS" --duration 10m --quiet >/tmp/sluice-e2e-loadgen.txt
  # Wait until everything accepted has left sluice (sent by its exporter).
  want=$(metric "$TELEMETRY_PORT" 'otelcol_receiver_accepted_spans_total\{receiver="otlp",transport="grpc"\}')
  for _ in $(seq 1 600); do
    got=$(metric "$TELEMETRY_PORT" 'otelcol_exporter_sent_spans_total\{exporter="(nop|otlp)"\}')
    [ "${got%.*}" -ge "${want%.*}" ] && break; sleep 0.1
  done
  end=$(date +%s.%N)
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
  hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  awk -v c="$config" -v n="$want" -v t0="$start" -v t1="$end" -v cpu="$(( (u1 - u0) + (s1 - s0) ))" -v tk="$TICKS" -v hwm="$hwm" \
    'BEGIN { d = t1 - t0; printf "| %s | %d | %.2f | %.0f | %.2f | %.0f |\n", c, n, d, n / d, (cpu / tk) / (n / 1e6), hwm / 1024 }'
  kill -TERM "$pid"; wait "$pid" || true
done
