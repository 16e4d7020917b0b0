#!/usr/bin/env bash
# Keep the Kubernetes manifests' copies of the collector configs equal to k8s/config/*.yaml:
#   - k8s/base/config/{agent,gateway}.yaml   (kustomize reads files only below k8s/base)
#   - k8s/operator/otel-{agent,gateway}.yaml  (`spec.config`: the file, indented, comments kept;
#     `config:` is the last key of each resource and everything below it is replaced)
#
#   bash scripts/k8s-sync.sh           # write the copies
#   bash scripts/k8s-sync.sh --check   # exit 1, with a diff, if a copy differs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
check=false
[[ "${1:-}" == "--check" ]] && check=true

status=0
# emit TARGET < content: write it, or compare it.
emit() {
    local target="$1" tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if $check; then
        if ! diff -u "$target" "$tmp" >&2; then
            echo "k8s-sync: $target is out of date: run bash scripts/k8s-sync.sh" >&2
            status=1
        fi
        rm -f "$tmp"
    else
        mv "$tmp" "$target"
    fi
}

mkdir -p k8s/base/config
for role in agent gateway; do
    config="k8s/config/$role.yaml"
    operator="k8s/operator/otel-$role.yaml"
    emit "k8s/base/config/$role.yaml" <"$config"
    grep -q '^  config:$' "$operator" || { echo "k8s-sync: $operator has no '  config:' line" >&2; exit 1; }
    # The resource up to `  config:`, then the config indented by four spaces (empty lines stay
    # empty: no trailing whitespace).
    { sed '/^  config:$/q' "$operator"; sed 's/^\(.\)/    \1/' "$config"; } | emit "$operator"
done
exit $status
