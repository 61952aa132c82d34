#!/usr/bin/env bash
# Prints the name of a Debian bookworm base image present in the local Docker
# engine, making one when needed (as root):
#
#   base=$(sudo scripts/base-image.sh)           # debian:bookworm-slim when it can be had
#   base=$(sudo scripts/base-image.sh --clean)   # always the locally built root file system
#
# Every writeback image (deploy/docker/*/Dockerfile, `ARG BASE_IMAGE`) starts
# from this image, and the fresh-machine test runs scripts/install-deps.sh in a
# container of it. In order:
# 1. `debian:bookworm-slim` when it is already present or can be pulled (not
#    with --clean);
# 2. otherwise `writeback-base:bookworm`, imported from a Debian root file system
#    that `debootstrap --variant=minbase` builds from the Debian mirror (no
#    container registry needed). The tarball is cached outside the checkout
#    ($WRITEBACK_CACHE_DIR, default ~/.cache/writeback) and the image in the
#    engine, so this happens once per machine (about a minute).
# Progress goes to stderr; stdout is the image name only.
set -euo pipefail
export LC_ALL=C

CACHE=${WRITEBACK_CACHE_DIR:-$HOME/.cache/writeback}
MIRROR=${WRITEBACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${WRITEBACK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
LOCAL_TAG=writeback-base:bookworm
UPSTREAM_TAG=debian:bookworm-slim
# Bump when the root file system below changes, so caches are rebuilt.
FORMAT=1
TARBALL=$CACHE/images/debian-bookworm-minbase-v$FORMAT.tar

log() { printf 'base-image: %s\n' "$*" >&2; }
die() {
    printf 'base-image: error: %s\n' "$*" >&2
    exit 1
}

clean=0
case ${1:-} in
    --clean) clean=1 ;;
    "") ;;
    *) die "usage: scripts/base-image.sh [--clean]" ;;
esac

command -v docker >/dev/null || die "docker is not installed (a Docker engine is required)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ((!clean)); then
    if have "$UPSTREAM_TAG"; then
        echo "$UPSTREAM_TAG"
        exit 0
    fi
    if timeout 30 docker pull -q "$UPSTREAM_TAG" >/dev/null 2>&1; then
        log "pulled $UPSTREAM_TAG"
        echo "$UPSTREAM_TAG"
        exit 0
    fi
    log "$UPSTREAM_TAG cannot be pulled; using the locally built $LOCAL_TAG"
fi

# One maker at a time: CI prepares the image beside the build while a test
# may ask for it too; whoever comes second waits and finds it made.
mkdir -p "$CACHE/images"
exec 9>"$CACHE/images/.lock"
flock 9

if have "$LOCAL_TAG" && [[ $(docker image inspect -f '{{index .Config.Labels "writeback.base.format"}}' "$LOCAL_TAG") == "$FORMAT" ]]; then
    echo "$LOCAL_TAG"
    exit 0
fi

if [[ ! -s $TARBALL ]]; then
    [[ $(id -u) -eq 0 ]] || die "building the base root file system needs root (debootstrap)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/install-deps.sh)"
    mkdir -p "$CACHE/images"
    work=$(mktemp -d "$CACHE/images/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log "debootstrap --variant=minbase bookworm from $MIRROR (once per machine)"
    debootstrap --variant=minbase bookworm "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed; last lines: $(tail -n 5 "$work/debootstrap.log")"
    # The same sources as the official image: the release, its updates, security.
    rm -f "$work/root/etc/apt/sources.list"
    cat >"$work/root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Like the official image: no package lists or downloaded packages kept.
    rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/archives/"*.deb
    tar -C "$work/root" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    log "cached the root file system in $TARBALL"
fi

docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL writeback.base.format=$FORMAT" \
    "$TARBALL" "$LOCAL_TAG" >/dev/null
log "imported $LOCAL_TAG from $TARBALL"
echo "$LOCAL_TAG"
