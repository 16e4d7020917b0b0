#!/usr/bin/env bash
# Build sluice's container image without a registry and export it as an OCI archive.
#
#   bash scripts/image.sh                        # -> target/image/sluice.oci.tar, image localhost/sluice:<version>
#   bash scripts/image.sh --builder IMAGE        # build stage in IMAGE (e.g. docker.io/library/rust:1.95-bookworm)
#   bash scripts/image.sh --profile dist-fast    # cargo profile (default dist, the release image;
#                                                # dist-fast: no cross-crate LTO, quicker rebuilds)
#
# Non-interactive and idempotent, as root on Debian (CI runs it). It installs what it needs from
# Debian (buildah, podman, runc, debootstrap) and, unless --builder is given, makes a local
# builder image: a Debian bookworm minbase from Debian's mirror with build-essential and
# ca-certificates, plus the host's Rust toolchain (`rustc --print sysroot`), imported with
# `podman import`. The Containerfile's first stage then does a real `cargo build --profile dist`
# inside it (--network host: cargo reaches crates.io). Cold (no builder, no cargo cache) this
# is mostly the Rust build: BENCHMARKS.md, "Container image", has the times of both profiles.
#
# podman runs rootful with its own storage under $SLUICE_IMAGE_STATE (default target/image:
# overlay storage, run root, temporary files, the builder's rootfs), runtime runc and cgroup
# manager cgroupfs (crun fails on hybrid cgroup hierarchies), file events (no journald), and
# explicit nofile/nproc ulimits within the caller's hard limits (runc cannot raise them).
# scripts/podman.sh runs podman with the same settings, for tests and by hand.
#
# Environment: SLUICE_IMAGE_STATE (state directory), SLUICE_IMAGE (image name, default
# localhost/sluice:<version>), SLUICE_IMAGE_ARCHIVE (default $SLUICE_IMAGE_STATE/sluice.oci.tar),
# SLUICE_IMAGE_PROFILE (the cargo profile, as --profile),
# DEBIAN_MIRROR (default: the first deb URI this machine's apt uses, else deb.debian.org).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log()  { echo "image.sh: $*"; }
fail() { echo "image.sh: ERROR: $*" >&2; exit 1; }

BUILDER=""
PROFILE="${SLUICE_IMAGE_PROFILE:-dist}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --builder) BUILDER="${2:?--builder needs an image}"; shift 2 ;;
        --builder=*) BUILDER="${1#--builder=}"; shift ;;
        --profile) PROFILE="${2:?--profile needs a cargo profile}"; shift 2 ;;
        --profile=*) PROFILE="${1#--profile=}"; shift ;;
        -h|--help) sed -n '2,29p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) fail "unknown argument $1 (see --help)" ;;
    esac
done

case "$PROFILE" in
    dist|dist-fast) ;;
    *) fail "unknown profile $PROFILE (dist or dist-fast)" ;;
esac
[[ "$(id -u)" == 0 ]] || fail "run as root: the image is built with rootful podman"

# ---- packages --------------------------------------------------------------------------------
need=()
for tool in buildah:buildah podman:podman runc:runc debootstrap:debootstrap readelf:binutils; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [[ ${#need[@]} -gt 0 ]]; then
    command -v apt-get >/dev/null 2>&1 || fail "missing ${need[*]} and no apt-get to install them"
    log "installing Debian packages: ${need[*]}"
    apt_log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
            >"$apt_log" 2>&1; then
        tail -n 40 "$apt_log" >&2
        rm -f "$apt_log"
        fail "apt-get install ${need[*]} failed (see above)"
    fi
    rm -f "$apt_log"
fi

# ---- podman with its own storage -------------------------------------------------------------
STATE="${SLUICE_IMAGE_STATE:-$ROOT/target/image}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
export SLUICE_IMAGE_STATE="$STATE"
PODMAN=(bash "$ROOT/scripts/podman.sh")

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[[ -n "$VERSION" ]] || fail "no workspace version in Cargo.toml"
IMAGE="${SLUICE_IMAGE:-localhost/sluice:$VERSION}"
ARCHIVE="${SLUICE_IMAGE_ARCHIVE:-$STATE/sluice.oci.tar}"

# Exit 77 (scripts/test.sh reports the image step as skipped) when podman itself cannot start a
# container on this machine: no user namespaces, no cgroup access, a runtime refused by the
# kernel. Any other failure is an error.
can_run_containers() {
    local out
    if ! out="$("${PODMAN[@]}" info 2>&1)"; then
        echo "$out" >&2
        echo "image.sh: podman cannot run on this machine (podman info failed)" >&2
        exit 77
    fi
    if [[ -n "${1:-}" ]] && ! out="$("${PODMAN[@]}" run --rm --network none "$1" true 2>&1)"; then
        echo "$out" >&2
        if grep -qiE 'OCI|runc|cgroup|namespace|operation not permitted|permission denied' <<<"$out"; then
            echo "image.sh: podman cannot start containers on this machine (see above)" >&2
            exit 77
        fi
        fail "a container of $1 did not start (see above)"
    fi
}
can_run_containers

# ---- the builder image -----------------------------------------------------------------------
# Change this when make_builder makes a different image: it names the cached builder.
BUILDER_RECIPE="debootstrap bookworm minbase + build-essential ca-certificates + host toolchain bin lib; v1"
make_builder() {
    local sysroot rustc_version key image rootfs mirror tarball
    sysroot="$(rustc --print sysroot)" || fail "no rustc on PATH: the local builder copies the host's Rust toolchain"
    rustc_version="$(rustc -V)"
    [[ -x "$sysroot/bin/cargo" ]] || fail "no cargo in $sysroot/bin (the builder needs cargo beside rustc)"
    # The builder changes when the toolchain or BUILDER_RECIPE does.
    key="$( (echo "$rustc_version"; "$sysroot/bin/cargo" -V; echo "$BUILDER_RECIPE") | sha256sum | cut -c1-12)"
    image="localhost/sluice-builder:bookworm-$key"
    if "${PODMAN[@]}" image exists "$image"; then
        log "builder $image present" >&2
        can_run_containers "$image"
        echo "$image"
        return
    fi
    mirror="${DEBIAN_MIRROR:-}"
    if [[ -z "$mirror" ]]; then
        mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)"
        [[ -n "$mirror" ]] || mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -n1 || true)"
        mirror="${mirror:-http://deb.debian.org/debian}"
    fi
    rootfs="$STATE/builder-rootfs"
    tarball="$STATE/builder-$key.tar"
    rm -rf "$rootfs"
    log "debootstrap bookworm (minbase, build-essential, ca-certificates) from $mirror" >&2
    local deb_log="$STATE/debootstrap.log"
    if ! debootstrap --variant=minbase --include=build-essential,ca-certificates \
            bookworm "$rootfs" "$mirror" >"$deb_log" 2>&1; then
        tail -n 40 "$deb_log" >&2
        fail "debootstrap failed (log: $deb_log)"
    fi
    log "copying the host's Rust toolchain ($rustc_version) into the builder" >&2
    mkdir -p "$rootfs/usr/local/rust" "$rootfs/usr/local/cargo"
    # bin and lib are the toolchain; share/ (docs, ~800 MB) is left out.
    cp -a "$sysroot/bin" "$sysroot/lib" "$rootfs/usr/local/rust/"
    rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
    tar -C "$rootfs" -cf "$tarball" .
    rm -rf "$rootfs"
    "${PODMAN[@]}" import \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'WORKDIR /src' \
        "$tarball" "$image" >/dev/null
    rm -f "$tarball"
    can_run_containers "$image"
    "${PODMAN[@]}" run --rm --network none "$image" cargo -V >&2 || fail "the builder image cannot run cargo"
    log "builder $image ready" >&2
    echo "$image"
}

if [[ -z "$BUILDER" ]]; then
    start=$(date +%s)
    BUILDER="$(make_builder)"
    log "builder ready after $(( $(date +%s) - start )) s"
fi

# ---- the image -------------------------------------------------------------------------------
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then REVISION="$REVISION-dirty"; fi
CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# cargo in the build stage downloads crates with the host's trust: on a machine whose egress
# goes through a TLS-intercepting proxy, that is the proxy's CA, which Debian's bundle lacks.
HOST_CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
ca_args=()
if [[ -f "$HOST_CA" ]]; then
    ca_args=(--volume "$HOST_CA:/run/host-ca.crt:ro" --build-arg CARGO_HTTP_CAINFO=/run/host-ca.crt)
fi
log "building $IMAGE (profile $PROFILE, builder $BUILDER, revision $REVISION)"
start=$(date +%s)
"${PODMAN[@]}" build \
    --network host \
    "${ca_args[@]}" \
    --pull=never \
    --file Containerfile \
    --build-arg "BUILDER=$BUILDER" \
    --build-arg "PROFILE=$PROFILE" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.created=$CREATED" \
    --tag "$IMAGE" \
    .
log "built $IMAGE in $(( $(date +%s) - start )) s"

rm -f "$ARCHIVE"
"${PODMAN[@]}" save --format oci-archive --output "$ARCHIVE" "$IMAGE"
size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
log "image $IMAGE: $size bytes uncompressed; OCI archive $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes)"
