#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and reports what it found.
# Not part of scripts/test.sh: CI replays the committed corpus on stable instead
# (tests/fuzz_corpus.rs). See fuzz/README.md.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS each (default 60)
#   scripts/fuzz.sh otlp_json config  only these targets
#   scripts/fuzz.sh --cmin           fold what the runs found into fuzz/corpus/ and minimize it
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_RSS_MB (libFuzzer's memory limit,
# default 2048), FUZZ_TIMEOUT (seconds for one input before it counts as a hang, default 10).
#
# New inputs go to fuzz/target/corpus-work/<target>/ (not committed); crashes, hangs and
# out-of-memory inputs to fuzz/artifacts/<target>/. Exits non-zero when any target failed, after
# printing each reproducer's path and the command that replays it.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-60}
rss_mb=${FUZZ_RSS_MB:-2048}
timeout_s=${FUZZ_TIMEOUT:-10}

cmin=0
targets=()
for arg in "$@"; do
    case $arg in
        --cmin) cmin=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $arg" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

if [ $cmin -eq 1 ]; then
    for t in "${targets[@]}"; do
        work=target/corpus-work/$t
        mkdir -p "corpus/$t"
        if [ -d "$work" ]; then
            cp -n "$work"/* "corpus/$t/" 2>/dev/null || true
        fi
        before=$(find "corpus/$t" -type f | wc -l)
        cargo +nightly fuzz cmin "$t" "corpus/$t" -- -rss_limit_mb="$rss_mb" -timeout="$timeout_s" >/dev/null 2>&1
        echo "$t: $before inputs -> $(find "corpus/$t" -type f | wc -l), $(du -sh "corpus/$t" | cut -f1)"
    done
    exit 0
fi

echo "fuzz.sh: building the targets"
if ! build_log=$(cargo +nightly fuzz build 2>&1); then
    echo "$build_log" >&2
    exit 2
fi

logs=$(mktemp -d)
failed=()
printf '%-14s %8s %12s %10s %8s %8s %s\n' target seconds execs execs/s cov corpus result
for t in "${targets[@]}"; do
    work=target/corpus-work/$t
    mkdir -p "$work" "artifacts/$t" "corpus/$t"
    marker=$logs/$t.start
    touch "$marker"
    status=ok
    started=$SECONDS
    # The first corpus folder receives what the run finds; the committed one is only read.
    if ! cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout_s" \
        -print_final_stats=1 >"$logs/$t.log" 2>&1; then
        status=FAILED
        failed+=("$t")
    fi
    ran=$((SECONDS - started))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 | cut -d' ' -f2)
    corpus=$(grep -o 'corp: [0-9]*' "$logs/$t.log" | tail -1 | cut -d' ' -f2)
    printf '%-14s %8s %12s %10s %8s %8s %s\n' "$t" "$ran" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${corpus:-?}" "$status"
    if [ "$status" != ok ]; then
        cp "$logs/$t.log" "artifacts/$t/last-run.log"
        while IFS= read -r artifact; do
            echo "  reproducer: $root/fuzz/$artifact"
            echo "    replay:   (cd fuzz && cargo +nightly fuzz run $t $artifact)"
        done < <(find "artifacts/$t" -type f -newer "$marker" ! -name last-run.log)
        echo "  log: $root/fuzz/artifacts/$t/last-run.log"
        grep -m3 -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$logs/$t.log" | sed 's/^/    /' || true
    fi
done
rm -rf "$logs"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    echo "fuzz.sh: after a fix, commit each reproducer to fuzz/regressions/<target>/ (tests/fuzz_corpus.rs replays them)" >&2
    exit 1
fi
echo "fuzz.sh: no failures"
