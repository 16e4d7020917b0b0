#!/usr/bin/env bash
# Prepare the test environment for sluice. Idempotent and non-interactive; safe on a fresh
# Debian machine as root and in CI (CI=true).
#   - .venv at the repo root with the pinned packages of tests/e2e/requirements.txt (Debian's
#     `python3-venv` is installed first if creating a venv fails for lack of it)
#   - promtool and the prometheus server (Debian's `prometheus` package), unless both are
#     already on PATH (the exporter's tests check scrapes with promtool and query a real
#     Prometheus that scrapes sluice)
#   - the openssl CLI (the TLS tests make their certificates with it)
#   - kubectl (Debian's `kubectl` package) unless on PATH: the manifests' tests render k8s/
#     with `kubectl kustomize`, offline
#   - chromium (Debian's package), unless on PATH: the replay test renders the HTML report
#     headless and checks the screenshot
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REQ="tests/e2e/requirements.txt"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"

log()  { echo "setup-test-env: $*"; }
fail() { echo "setup-test-env: ERROR: $*" >&2; exit 1; }

# Installs Debian packages with apt-get, as root or through `sudo -n`.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || fail "$* missing and no apt-get to install it"
    local sudo="" apt_log
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || fail "$* missing; need root or sudo to apt-get install it"
        sudo="sudo -n"
    fi
    log "installing Debian package(s): $*"
    apt_log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { $sudo apt-get update -qq && \
           $sudo apt-get install -y -qq --no-install-recommends "$@"; } >"$apt_log" 2>&1; then
        tail -n 40 "$apt_log" >&2
        rm -f "$apt_log"
        fail "apt-get install $* failed (see above)"
    fi
    rm -f "$apt_log"
}

# ---- Python venv -------------------------------------------------------------------------
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    for cand in python3.11 python3 python; do
        if command -v "$cand" >/dev/null 2>&1; then PYTHON="$cand"; break; fi
    done
fi
[[ -n "$PYTHON" ]] || fail "no python3 found on PATH (install python3 and python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || fail "$PYTHON is older than 3.9"

want_hash="$( (cat "$REQ"; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_hash" ]] \
    && "$VENV/bin/python" -c 'import opentelemetry.sdk, grpc, pytest' >/dev/null 2>&1; then
    log ".venv up to date"
else
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        log "creating .venv with $("$PYTHON" --version 2>&1)"
        if ! out="$("$PYTHON" -m venv "$VENV" 2>&1)"; then
            rm -rf "$VENV"
            # Debian splits venv (ensurepip) out of python3: install it, as prometheus is.
            if [[ "$out" == *ensurepip* || "$out" == *python3-venv* ]] \
                && command -v apt-get >/dev/null 2>&1; then
                apt_install python3-venv
                if ! out="$("$PYTHON" -m venv "$VENV" 2>&1)"; then
                    # A python other than Debian's default python3 has its own package.
                    rm -rf "$VENV"
                    ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
                    apt_install "python$ver-venv"
                    out="$("$PYTHON" -m venv "$VENV" 2>&1)" || { echo "$out" >&2; \
                        fail "could not create $VENV even with python3-venv installed"; }
                fi
            else
                echo "$out" >&2
                fail "could not create $VENV (on Debian: apt-get install python3-venv)"
            fi
        fi
    fi
    log "installing pinned packages from $REQ"
    pip_log="$(mktemp)"
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input -r "$REQ" >"$pip_log" 2>&1; then
        tail -n 40 "$pip_log" >&2
        rm -f "$pip_log"
        fail "pip install -r $REQ failed (see above)"
    fi
    rm -f "$pip_log"
    if ! out="$("$VENV/bin/python" -m pip check 2>&1)"; then
        echo "$out" >&2
        fail "pip check reports broken requirements in .venv"
    fi
    echo "$want_hash" >"$STAMP"
    log ".venv ready"
fi

# ---- promtool and prometheus (Debian package `prometheus`) ---------------------------------
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    log "promtool present: $(command -v promtool); prometheus present: $(command -v prometheus)"
else
    apt_install prometheus
    # The package starts a prometheus service where an init system runs; tests don't need it.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        SUDO=""
        [[ "$(id -u)" == 0 ]] || SUDO="sudo -n"
        $SUDO systemctl stop prometheus >/dev/null 2>&1 || true
        $SUDO systemctl disable prometheus >/dev/null 2>&1 || true
    fi
    command -v promtool >/dev/null 2>&1 || fail "prometheus installed but promtool is not on PATH"
    command -v prometheus >/dev/null 2>&1 || fail "prometheus package installed but the prometheus server is not on PATH"
    log "promtool installed: $(command -v promtool); prometheus: $(command -v prometheus)"
fi

# ---- openssl CLI (the TLS end-to-end tests make their certificates with it) --------------
if command -v openssl >/dev/null 2>&1; then
    log "openssl present: $(command -v openssl)"
else
    apt_install openssl
    command -v openssl >/dev/null 2>&1 || fail "openssl installed but not on PATH"
fi

# ---- kubectl (the manifests' tests render the kustomizations in k8s/ with it, offline) ----
if command -v kubectl >/dev/null 2>&1; then
    log "kubectl present: $(command -v kubectl)"
else
    apt_install kubectl
    command -v kubectl >/dev/null 2>&1 || fail "kubectl installed but not on PATH"
fi

# ---- chromium (the replay test screenshots the HTML report headless) -------------------
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    log "chromium present: $(command -v chromium || command -v chromium-browser)"
else
    # and a font for its text
    apt_install chromium fonts-dejavu-core
    command -v chromium >/dev/null 2>&1 || fail "chromium installed but not on PATH"
    log "chromium installed: $(command -v chromium)"
fi
