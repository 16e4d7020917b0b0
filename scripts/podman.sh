#!/usr/bin/env bash
# podman with the settings scripts/image.sh builds with, so that tests and people reach the same
# images:  bash scripts/podman.sh images | run ... | rm ...
#
# Rootful, storage under $SLUICE_IMAGE_STATE (default target/image): overlay storage, its run
# root and temporary files there, not in /var/lib/containers. Runtime runc and cgroup manager
# cgroupfs (crun fails on hybrid cgroup hierarchies; no systemd here), file events (no journald).
# `run`, `create` and `build` get explicit nofile/nproc ulimits within the caller's hard limits
# (runc cannot raise them, and podman's defaults ask for more than a container sandbox allows).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${SLUICE_IMAGE_STATE:-$ROOT/target/image}"
mkdir -p "$STATE/storage" "$STATE/run" "$STATE/tmp" "$STATE/networks"
# podman and buildah put image copies and cache mounts under TMPDIR.
export TMPDIR="$STATE/tmp"

nofile="$(ulimit -Hn)"
[[ "$nofile" == unlimited ]] && nofile=1048576
nproc=4096

podman_args=(
    --root "$STATE/storage"
    --runroot "$STATE/run"
    --storage-driver overlay
    --runtime runc
    --cgroup-manager cgroupfs
    --events-backend file
    # Containers here use the host's network or none: no bridge network is configured, and an
    # empty network config directory keeps podman from validating the system's CNI files.
    --network-config-dir "$STATE/networks"
)

if [[ $# -gt 0 ]]; then
    case "$1" in
        run|create|build)
            sub="$1"; shift
            exec podman "${podman_args[@]}" "$sub" \
                --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" "$@" ;;
    esac
fi
exec podman "${podman_args[@]}" "$@"
