#!/bin/sh
# Make the Debian base images the Dockerfile starts FROM, where no container registry answers.
#
#   scripts/docker_base.sh ENGINE SUITE...      (or: make docker-base)
#
# For each SUITE (bookworm, bullseye) the image docker.io/library/debian:SUITE is
# kept when ENGINE (docker or podman) already has it, pulled when a registry
# answers, and otherwise made from Debian packages alone:
# `debootstrap --variant=minbase SUITE` into a temporary folder, cleaned of apt's
# caches, then imported (`ENGINE import`) under that name, so `FROM debian:SUITE`
# finds it.  About 30 s and 100 MB per suite.  debootstrap needs root.
# Mirror: $DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 docker|podman SUITE..." >&2
    exit 2
fi
engine=$1
shift
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

for suite in "$@"; do
    image=docker.io/library/debian:$suite
    if "$engine" image inspect "$image" >/dev/null 2>&1; then
        echo "base image $image present"
        continue
    fi
    if "$engine" pull "$image" >/dev/null 2>&1; then
        echo "base image $image pulled"
        continue
    fi
    if [ "$(id -u)" != 0 ] || ! command -v debootstrap >/dev/null 2>&1; then
        echo "error: cannot pull $image, and making it with debootstrap needs root and debootstrap" \
             "(apt-get install debootstrap)" >&2
        exit 3
    fi
    echo "no registry answers: making $image with debootstrap (minbase, $mirror)"
    dir=$(mktemp -d "${TMPDIR:-/tmp}/deepyeast-base-$suite.XXXXXX")
    trap 'rm -rf "$dir"' EXIT
    debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || {
        tail -20 "$dir.log" >&2
        rm -f "$dir.log"
        exit 1
    }
    rm -f "$dir.log"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/dev/*
    tar --numeric-owner -C "$dir" -c . | "$engine" import - "$image" >/dev/null
    rm -rf "$dir"
    trap - EXIT
    echo "base image $image made"
done
