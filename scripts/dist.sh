#!/usr/bin/env bash
# The binary to ship: `target/dist/sluice` without its debug info, and beside it
# `target/dist/sluice.debug` holding that debug info (the release profile's line tables),
# linked from the binary by .gnu_debuglink. Rust's backtraces read the .debug file when it
# sits beside the binary (or in a `.debug/` folder there): function names always, file:line
# with it. An image needs only `sluice`; keep `sluice.debug` with the release to read the
# backtraces of that build.
#
#   bash scripts/dist.sh                  # cargo build --release --bin sluice, then split it
#   bash scripts/dist.sh BINARY [OUTDIR]  # split a binary already built (default target/dist)
#
# Needs objcopy (binutils, there wherever a C toolchain is).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() { echo "dist: ERROR: $*" >&2; exit 1; }

bin="${1:-}"
out="${2:-$ROOT/target/dist}"
command -v objcopy >/dev/null 2>&1 || fail "objcopy not found (Debian: apt-get install binutils)"
if [[ -z "$bin" ]]; then
    (cd "$ROOT" && cargo build --release --bin sluice)
    bin="$ROOT/target/release/sluice"
fi
[[ -f "$bin" ]] || fail "no binary at $bin"

mkdir -p "$out"
tmp="$(mktemp "$out/.sluice.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cp "$bin" "$tmp"
objcopy --only-keep-debug "$tmp" "$out/sluice.debug"
chmod a-x "$out/sluice.debug"
# --add-gnu-debuglink records the file's name (not its path) and checksum.
(cd "$out" && objcopy --strip-debug --add-gnu-debuglink=sluice.debug "$tmp" sluice)
chmod a+x "$out/sluice"
size() { stat -c %s "$1"; }
echo "dist: $out/sluice $(( $(size "$out/sluice") / 1024 / 1024 )) MiB (from $(( $(size "$bin") / 1024 / 1024 )) MiB); debug info: $out/sluice.debug $(( $(size "$out/sluice.debug") / 1024 / 1024 )) MiB"
